# Multi-host tests (tests/multihost/*.sh), label `multihost`: two pretend
# hosts on this machine (a UTS namespace and host name each; Open MPI's
# daemons started by tests/multihost/agent.sh; TCP on the loopback interface),
#   ctest --test-dir BUILD -L multihost --output-on-failure
# Needs root (unshare --uts), iproute2's ss, h5py and numpy.
#   mh_two_hosts   2 hosts x 2 ranks against 1 host x 4: node detection, every
#                  --allreduce mode, TCP between hosts, SIGUSR1 and exact resume,
#                  a dead host ends the job
add_test(NAME mh_two_hosts
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/multihost/mh_two_hosts.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                 ${MPIVAE_MPI_LAUNCHER} ${MPIVAE_MPI_NPFLAG} ${MPIEXEC_PREFLAGS})
set_tests_properties(mh_two_hosts PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS "multihost;mpi" TIMEOUT 300
                     PROCESSORS 4 RESOURCE_LOCK mpivae_mpi_ranks)
