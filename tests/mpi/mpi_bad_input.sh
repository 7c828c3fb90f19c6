#!/bin/bash
# mpi_bad_input.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# Promise 5 of DESIGN.md under mpirun: bad input gets one clear message and a
# non-zero exit, never a hang, whichever rank meets it.
#  (a) more ranks than samples in a batch (-np 4 --batch 2): non-zero, exactly
#      one 'error:' line, naming --batch; no checkpoint left behind;
#  (b) a data file only one rank cannot read (MPMD: rank 0 gets good.h5, rank
#      1 missing.h5): non-zero within 60 s, an error naming missing.h5;
#  (c) a resume whose flags contradict the checkpoint (--hidden 64 on a
#      --hidden 32 run): non-zero, the message names --hidden;
#  (d) a second run on a run directory in use: it fails with a message saying
#      the directory is in use, while the first keeps training (its log
#      advances) and then stops on SIGUSR1 with status 75.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out good.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
TINY=(--hidden 32 --latent 4)

# --- (a) fewer samples per global batch than ranks
mpi_cmd 4
expect_fail_with nonzero "--batch" -- "${MPI[@]}" "$M" train --data good.h5 "${TINY[@]}" --batch 2 --steps 4 --out a
expect_absent a/checkpoints

# --- (b) one rank cannot read its data file (MPMD launch)
args=("${TINY[@]}" --batch 16 --steps 20 --out b)
t0=$(now)
expect_fail_with nonzero "missing.h5" -- "$MPIEXEC" --oversubscribe \
    "$NPFLAG" 1 "${PREFLAGS[@]}" "$M" train --data good.h5 "${args[@]}" : \
    "$NPFLAG" 1 "${PREFLAGS[@]}" "$M" train --data missing.h5 "${args[@]}"
note "(b) MPMD with a missing file on rank 1: failed in $(elapsed "$t0") s"
expect_absent b/checkpoints

# --- (c) a resume that contradicts the checkpoint
mpi_cmd 2
run_ok "${MPI[@]}" "$M" train --data good.h5 --hidden 32 --latent 4 --batch 16 --steps 10 --out c
expect_file c/checkpoints/step-10.h5
# The named behaviour first (non-zero, not a hang or a signal, --hidden named);
# "exactly one 'error:' line" is checked at the end, so (d) runs either way.
cmd=("${MPI[@]}" "$M" train --resume auto --out c --hidden 64 --steps 20)
run_status "${cmd[@]}"
cp last.err c.err
[ "$RC" -ne 0 ] || fail "(c) $(show_cmd "${cmd[@]}"): expected a non-zero exit status, found 0"
if [ "$RC" -eq 124 ] || [ "$RC" -ge 128 ]; then
    _dump last.out last.err
    fail "(c) $(show_cmd "${cmd[@]}"): expected a clean failure, found status $RC (hang or signal)"
fi
grep 'error:' c.err | grep -qF -- "--hidden" || { _dump last.out last.err; fail "(c) $(show_cmd "${cmd[@]}"): expected an 'error:' line naming --hidden, found none"; }
expect_absent c/checkpoints/step-20.h5
n_err=$(grep -c 'error:' c.err || true)
note "(c) status $RC: $(grep 'error:' c.err | tr '\n' '|')"
late_fail=""
[ "$n_err" -eq 1 ] || late_fail="(c) $(show_cmd "${cmd[@]}"): expected exactly one line containing 'error:' on stderr (promise 5: one clear message), found $n_err: $(grep 'error:' c.err | tr '\n' '|')"

# --- (d) two runs on one run directory at the same time
bg_start first.log "${MPI[@]}" "$M" train --data good.h5 "${TINY[@]}" --batch 16 --epochs 1000000 --log-every 20 --out d
pid=$BG_PID
wait_for_line "$pid" first.log '^step [0-9]+/' 60
expect_fail_with nonzero "in use" "'d'" -- "${MPI[@]}" "$M" train --data good.h5 "${TINY[@]}" --batch 16 --steps 10 --out d
is_alive "$pid" || { tail -n 20 first.log >&2; fail "(d) expected the first run to keep running after the second was refused, found it ended"; }
lines=$(grep -c '^step ' first.log)
sleep 1
is_alive "$pid" || { tail -n 20 first.log >&2; fail "(d) expected the first run to keep running, found it ended"; }
lines2=$(grep -c '^step ' first.log)
[ "$lines2" -gt "$lines" ] || fail "(d) expected the first run to keep logging steps, found $lines step lines before and $lines2 one second later"
kill -USR1 "$pid"
bg_wait "$pid" 60
expect_status "(d) SIGUSR1 to the first run" 75 "$BG_RC" first.log
expect_grep "(d) first run stopped by SIGUSR1" "stopped by SIGUSR1 at step" first.log
ck=$(newest_ckpt d)
note "(d) the first run stopped with $ck"

[ -z "$late_fail" ] || fail "$late_fail"

cli_done
