#!/usr/bin/env bash
# First run on a fresh machine (after tests/deps.sh): builds mpivae, imports
# Fashion-MNIST from Debian's dataset-fashion-mnist into data/, and trains the
# default Linear VAE (784-400-20, BCE, Adam 1e-3, global batch 128) for
# EPOCHS (default 3) epochs on all cores, leaving checkpoints, metrics and
# sample grids in RUN_DIR (default runs/quickstart-<date-time>, a new one each time).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-3}
RUN_DIR=${RUN_DIR:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
mkdir -p data
if [ ! -f data/fashion-mnist.h5 ]; then
  build/mpivae data fashion-mnist --out data/fashion-mnist.h5
fi
RUN_DIR="$RUN_DIR" bash jobs/local.sh --data data/fashion-mnist.h5 --epochs "$EPOCHS" \
  --log-every 100 --eval-every 469 --sample-every 469 --ckpt-every 469
echo
echo "run directory: $(pwd)/$RUN_DIR"
ls -R "$RUN_DIR" | sed 's/^/  /'
echo "open $(pwd)/$RUN_DIR/report.html in a browser: curves, sample grids over time, the facts of the run"
