# Fuzzing (tests/fuzz/), label `fuzz`. Three harnesses, each for a parser of
# untrusted input: fuzz_data (the data-set reader, dataset.h), fuzz_ckpt (the
# checkpoint reader, checkpoint.h) and fuzz_cli (the command line, src/cli/
# compiled in, main.c with -Dmain=mpivae_cli_main). Each file says what its inputs
# mean and which oracles it checks.
#
# Always built: a replay driver per harness (the harness with
# tests/fuzz/replay_main.c), registered as the tests fuzz_<t>_replay that run
# every case of the regression corpus tests/fuzz/corpus/<t>/ and name each
# case that crashes, hangs or breaks an oracle:
#   ctest --test-dir BUILD -L fuzz --output-on-failure
#
# With -DMPIVAE_FUZZ=ON and clang (Debian's clang-14 with libclang-rt-14-dev)
# also the libFuzzer programs fuzz_data, fuzz_ckpt and fuzz_cli, built with
# -fsanitize=fuzzer,address,undefined against vae_fuzz, a copy of the library
# compiled with coverage and the same sanitizers (the flags stay on these
# targets; the README gives the commands).
set(MPIVAE_FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
option(MPIVAE_FUZZ "Build the libFuzzer programs (needs clang)" OFF)

# fuzz_cli needs the command line's test hook MPIVAE_TEST_PARSE_ONLY (every
# subcommand returns after checking its arguments); without it the harness
# would run the commands themselves.
get_target_property(MPIVAE_CLI_SOURCES mpivae SOURCES)
list(TRANSFORM MPIVAE_CLI_SOURCES PREPEND ${PROJECT_SOURCE_DIR}/)
set(MPIVAE_MAIN_HOOK -1)
foreach(f IN LISTS MPIVAE_CLI_SOURCES)
  file(READ ${f} text)
  string(FIND "${text}" "MPIVAE_TEST_PARSE_ONLY" at)
  if(at GREATER -1)
    set(MPIVAE_MAIN_HOOK ${at})
  endif()
endforeach()
set(MPIVAE_FUZZ_HARNESSES data ckpt)
if(MPIVAE_MAIN_HOOK GREATER -1)
  list(APPEND MPIVAE_FUZZ_HARNESSES cli)
else()
  message(WARNING "src/cli/ has no MPIVAE_TEST_PARSE_ONLY hook: fuzz_cli is not built and the test "
                  "fuzz_cli_replay fails")
  add_test(NAME fuzz_cli_replay
           COMMAND sh -c "echo 'src/cli/ has no MPIVAE_TEST_PARSE_ONLY hook: fuzz_cli is not built' >&2; exit 1")
  set_tests_properties(fuzz_cli_replay PROPERTIES LABELS fuzz)
endif()
# The command line inside a harness: its main() becomes mpivae_cli_main (this folder's targets only).
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/cli/main.c PROPERTIES COMPILE_DEFINITIONS main=mpivae_cli_main)

function(mpivae_fuzz_sources out t)
  set(srcs ${MPIVAE_FUZZ_DIR}/fuzz_${t}.c)
  if(t STREQUAL "cli")
    list(APPEND srcs ${MPIVAE_CLI_SOURCES})
  endif()
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()

foreach(t IN LISTS MPIVAE_FUZZ_HARNESSES)
  mpivae_fuzz_sources(srcs ${t})
  add_executable(fuzz_${t}_replay ${srcs} ${MPIVAE_FUZZ_DIR}/replay_main.c)
  target_link_libraries(fuzz_${t}_replay PRIVATE vae)
  mpivae_warnings(fuzz_${t}_replay)
  add_test(NAME fuzz_${t}_replay COMMAND fuzz_${t}_replay ${MPIVAE_FUZZ_DIR}/corpus/${t})
  set_tests_properties(fuzz_${t}_replay PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS fuzz TIMEOUT 300)
endforeach()

if(MPIVAE_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MPIVAE_FUZZ needs clang (libFuzzer): configure with CC=clang-14")
  endif()
  set(MPIVAE_FUZZ_CFLAGS -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
                         -fno-sanitize-recover=undefined)
  # The library again, with coverage and sanitizers, for the fuzz programs only.
  get_target_property(vae_srcs vae SOURCES)
  list(TRANSFORM vae_srcs PREPEND ${PROJECT_SOURCE_DIR}/)
  add_library(vae_fuzz STATIC ${vae_srcs})
  get_target_property(v vae INTERFACE_INCLUDE_DIRECTORIES)
  target_include_directories(vae_fuzz PUBLIC ${v})
  get_target_property(v vae INTERFACE_COMPILE_DEFINITIONS)
  target_compile_definitions(vae_fuzz PUBLIC ${v})
  get_target_property(v vae INTERFACE_LINK_LIBRARIES)
  target_link_libraries(vae_fuzz PUBLIC ${v})
  target_compile_options(vae_fuzz PRIVATE ${MPIVAE_FUZZ_CFLAGS})
  foreach(t IN LISTS MPIVAE_FUZZ_HARNESSES)
    mpivae_fuzz_sources(srcs ${t})
    add_executable(fuzz_${t} ${srcs})
    target_link_libraries(fuzz_${t} PRIVATE vae_fuzz)
    target_compile_options(fuzz_${t} PRIVATE ${MPIVAE_FUZZ_CFLAGS})
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,address,undefined)
  endforeach()
endif()
