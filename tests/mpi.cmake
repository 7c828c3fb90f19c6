# MPI tests of the promises of DESIGN.md (tests/mpi/*.sh), label `mpi`:
#   ctest --test-dir BUILD -L mpi --output-on-failure
# Each script takes the executable, the source folder and the MPI launcher as
# FindMPI gives it (MPIEXEC_EXECUTABLE, MPIEXEC_NUMPROC_FLAG, MPIEXEC_PREFLAGS),
# runs up to 4 ranks (oversubscribed on smaller machines) in its own mktemp -d
# folder and exits non-zero on the first failed assertion. Needs bash,
# coreutils, procps (pgrep), h5diff (hdf5-tools) and Debian's /usr/bin/python3
# with python3-h5py and python3-numpy (a failure if missing).
#   mpi_rank_independence  P = 1, 2, 4 give the same parameters and losses
#   mpi_resume_exact       stop (test hook, SIGUSR1) and resume: bit-identical
#   mpi_checkpoint_faults  crash while saving, damaged checkpoints: fallback
#   mpi_kill_rank          SIGKILL of one rank ends the job within seconds
#   mpi_bad_input          bad input under mpirun: one message, no hang
#   mpi_nonfinite          NaN on one rank: the step is skipped everywhere; too many stop
#   mpi_conv               --model conv: P = 1, 2, 4 agree, exact resume, PyTorch load, tools
#   mpi_run_dir            metrics.h5 readers never stop a run, rows 1..N after a stop and resume,
#                          no silent restart over a run, a finished run's lock names no holder
#   mpi_family_plugin      a family defined in tests/ trains, resumes bit for bit, evaluates, samples
#   mpi_mpirun_signals     SIGUSR1, Ctrl-C, SIGTERM to a bare mpirun: the statuses and checkpoints the README gives
#   mpi_hvae               --model hvae: P = 1, 2, 4 agree, exact resume, PyTorch twin, skip-threshold, free bits, IW
#   mpi_vaegan             --model vaegan: P = 1, 2, 3 agree, equilibrium counts, exact resume, PyTorch twin, tools
#   mpi_classify           mpivae classify: P = 1, 2, 3 agree, exact resume, eval against the PyTorch twin, bad labels
#   mpi_fid                mpivae fid (test family lingauss): 0 on itself, P = 1, 2, 3 print the same, SciPy agrees
set(MPIVAE_MPI_TESTS mpi_rank_independence mpi_resume_exact mpi_checkpoint_faults mpi_kill_rank mpi_bad_input
    mpi_nonfinite mpi_conv mpi_run_dir mpi_mpirun_signals mpi_hvae mpi_vaegan mpi_classify)
if(MPIEXEC_EXECUTABLE)
  set(MPIVAE_MPI_LAUNCHER ${MPIEXEC_EXECUTABLE})
else()
  set(MPIVAE_MPI_LAUNCHER mpirun)
endif()
if(MPIEXEC_NUMPROC_FLAG)
  set(MPIVAE_MPI_NPFLAG ${MPIEXEC_NUMPROC_FLAG})
else()
  set(MPIVAE_MPI_NPFLAG -n)
endif()
foreach(t IN LISTS MPIVAE_MPI_TESTS)
  add_test(NAME ${t}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/${t}.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                   ${MPIVAE_MPI_LAUNCHER} ${MPIVAE_MPI_NPFLAG} ${MPIEXEC_PREFLAGS})
  # Up to 4 ranks each: with ctest -j, do not run them beside each other's ranks.
  set_tests_properties(${t} PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS mpi TIMEOUT 240
                                       PROCESSORS 4 RESOURCE_LOCK mpivae_mpi_ranks)
endforeach()
# The test family's program instead of mpivae (tests/family_lingauss.c).
add_test(NAME mpi_family_plugin
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_family_plugin.sh $<TARGET_FILE:mpivae_lingauss> ${CMAKE_SOURCE_DIR}
                 ${MPIVAE_MPI_LAUNCHER} ${MPIVAE_MPI_NPFLAG} ${MPIEXEC_PREFLAGS})
set_tests_properties(mpi_family_plugin PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS mpi TIMEOUT 240
                                       PROCESSORS 4 RESOURCE_LOCK mpivae_mpi_ranks)
# mpivae fid on the test family's features (tests/mpi/mpi_fid.sh): 0 on itself, the same output at
# 1, 2, 3 ranks, numpy and SciPy's FID on the same features, bad input refused.
add_test(NAME mpi_fid
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_fid.sh $<TARGET_FILE:mpivae_lingauss> ${CMAKE_SOURCE_DIR}
                 ${MPIVAE_MPI_LAUNCHER} ${MPIVAE_MPI_NPFLAG} ${MPIEXEC_PREFLAGS})
set_tests_properties(mpi_fid PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS mpi TIMEOUT 240
                             PROCESSORS 3 RESOURCE_LOCK mpivae_mpi_ranks)
