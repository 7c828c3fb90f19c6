# Shell tests of the mpivae command line (tests/cli/*.sh), label `cli`:
#   ctest --test-dir BUILD -L cli --output-on-failure
# Each script takes the executable and the source folder (cli_bad_input,
# cli_latent and cli_tool_args also the MPI launcher), works in its own
# mktemp -d folder and exits non-zero on the first failed assertion. Needs
# bash, coreutils and Debian's /usr/bin/python3 with python3-h5py and
# python3-torch (a failure if missing).
set(MPIVAE_CLI_TESTS cli_bad_input cli_train_loss_falls cli_pytorch_load cli_tools cli_latent cli_tool_args cli_data_spec cli_hostile
    cli_old_checkpoint cli_iw cli_binarize)
if(MPIEXEC_EXECUTABLE)
  set(MPIVAE_CLI_MPIEXEC ${MPIEXEC_EXECUTABLE})
else()
  set(MPIVAE_CLI_MPIEXEC mpirun)
endif()
foreach(t IN LISTS MPIVAE_CLI_TESTS)
  add_test(NAME ${t}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/${t}.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                   ${MPIVAE_CLI_MPIEXEC})
  set_tests_properties(${t} PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS cli TIMEOUT 180)
endforeach()
