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
