#!/bin/bash
# mpi_nonfinite.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# Non-finite values on ONE rank (the test hook MPIVAE_TEST_NAN_STEPS=A:B makes
# the last rank's loss and gradients NaN during global steps A..B), 2 ranks:
#  (a) two bad steps with the default --max-skips: both steps are skipped on
#      every rank (a warning per step naming the step and the term), training
#      goes on and finishes, and the final parameters equal those of a run
#      whose steps 5 and 6 were skipped the same way on a single rank;
#      every logged loss in metrics.h5 is finite after the skipped steps;
#  (b) --max-skips K at its boundary (K = 3): bad during steps 5..7 (K skips
#      in a row) the run finishes with status 0 and 3 skips; bad from step 5 on,
#      the fourth bad step (step 8) stops the run with status 1 and one error
#      line naming step 8 and --max-skips 3, within 60 s, with no final checkpoint.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
ARGS=(train --data s.h5 --hidden 32 --latent 4 --batch 32 --steps 20 --log-every 10)

# --- (a) two bad steps, skipped on every rank
mpi_cmd 2
MPIVAE_TEST_NAN_STEPS=5:6 run_ok "${MPI[@]}" "$M" "${ARGS[@]}" --out a
for s in 5 6; do
    grep -q "step $s: non-finite reconstruction loss" last.err ||
        { cat last.err >&2; fail "(a) expected a warning naming step $s and the reconstruction term"; }
done
n=$(grep -c "step skipped" last.err)
expect_eq "(a) number of skipped steps reported" 2 "$n"
expect_file a/checkpoints/step-20.h5
# The same skips on one rank: the parameters agree within float summation noise.
mpi_cmd 1
MPIVAE_TEST_NAN_STEPS=5:6 run_ok "${MPI[@]}" "$M" "${ARGS[@]}" --out b
py_check "(a) finite parameters and metrics, P=2 equals P=1 with the same skips" <<'PY'
import h5py, numpy as np, sys
a = h5py.File("a/checkpoints/step-20.h5", "r"); b = h5py.File("b/checkpoints/step-20.h5", "r")
for name in a["params"]:
    x, y = a["params"][name][()], b["params"][name][()]
    if not np.all(np.isfinite(x)):
        sys.exit(f"non-finite parameter in {name}")
    tol = 1e-4 * max(1e-12, float(np.abs(y).max()))
    if float(np.abs(x - y).max()) > tol:
        sys.exit(f"{name}: P=2 and P=1 differ by {float(np.abs(x - y).max())} > {tol}")
if int(a.attrs["adam_t"]) != 18:
    sys.exit(f"adam_t is {int(a.attrs['adam_t'])}, expected 18 (20 steps, 2 skipped)")
loss = h5py.File("a/metrics.h5", "r")["/train/loss"][()]
if len(loss) != 20 or not np.all(np.isfinite(loss[6:])):
    sys.exit(f"metrics: {len(loss)} rows, losses {loss}")
PY

# --- (b) too many consecutive skips stop the run
mpi_cmd 2
MPIVAE_TEST_NAN_STEPS=5:7 run_ok "${MPI[@]}" "$M" "${ARGS[@]}" --max-skips 3 --out k3
expect_eq "(b) --max-skips 3 with 3 bad steps in a row: steps skipped" 3 "$(grep -c "step skipped" last.err)"
expect_file k3/checkpoints/step-20.h5
MPIVAE_TEST_NAN_STEPS=5:100 expect_fail_with 1 \
    "stopping at step 8: 4 consecutive steps skipped, this one for non-finite values, more than --max-skips 3 allows" -- \
    "${MPI[@]}" "$M" "${ARGS[@]}" --max-skips 3 --out c
expect_eq "(b) --max-skips 3 with bad steps from 5 on: steps skipped before the stop" 4 "$(grep -c "step skipped" last.err)"
expect_absent c/checkpoints/step-20.h5

cli_done
