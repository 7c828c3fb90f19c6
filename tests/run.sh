#!/usr/bin/env bash
# Installs the dependencies, builds with warnings as errors, and runs the
# whole test suite. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMPIVAE_WERROR=ON
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j 2
