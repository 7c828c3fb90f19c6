#!/usr/bin/env bash
# Installs what mpivae needs on Debian 12: build tools, Open MPI, OpenBLAS,
# HDF5, libpng, zlib, the Fashion-MNIST package, and the test dependencies
# (PyTorch, h5py and SciPy from Debian, the reference implementations for tests; Chromium,
# which renders the report pages headless for tests/report/; munge and Slurm for the
# job-script tests, which start their own one-node Slurm).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y build-essential cmake pkg-config \
  openmpi-bin libopenmpi-dev libopenblas-dev libhdf5-dev hdf5-tools \
  libpng-dev zlib1g-dev dataset-fashion-mnist
$SUDO apt-get install -y --no-install-recommends python3 python3-torch python3-h5py python3-numpy python3-scipy chromium
$SUDO apt-get install -y --no-install-recommends munge slurmctld slurmd slurm-client
