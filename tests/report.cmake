# The report page harness (tests/report/): headless Chromium renders a page and
# a standard-library DevTools client (cdp.py) reads its DOM; check_page.py holds
# the checks every report page must pass. report_harness (selftest.py) proves
# the harness reads handcrafted pages right and that each check can fail.
# Label `report`:
#   ctest --test-dir BUILD -L report --output-on-failure
# Needs Debian's /usr/bin/python3 and chromium (tests/deps.sh). Tests that start
# Chromium take RESOURCE_LOCK chromium, so ctest -j runs one at a time.
add_test(NAME report_harness COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/report/selftest.py)
set_tests_properties(report_harness PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS report TIMEOUT 300
                     RESOURCE_LOCK chromium)

# mpi_report (tests/mpi/mpi_report.sh): the pages of real runs (resumed, with a
# skipped step, while running, of an earlier version's run directory, two runs
# overlaid, a 100-epoch-sized run), the CSV against metrics.h5, and bad input.
add_test(NAME mpi_report
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_report.sh $<TARGET_FILE:mpivae> ${CMAKE_SOURCE_DIR}
                 ${MPIVAE_MPI_LAUNCHER} ${MPIVAE_MPI_NPFLAG} ${MPIEXEC_PREFLAGS})
set_tests_properties(mpi_report PROPERTIES ENVIRONMENT "${MPIVAE_TEST_ENV}" LABELS "mpi;report" TIMEOUT 300
                     PROCESSORS 2 RESOURCE_LOCK "mpivae_mpi_ranks;chromium")
