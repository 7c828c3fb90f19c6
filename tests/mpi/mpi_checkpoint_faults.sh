#!/bin/bash
# mpi_checkpoint_faults.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# Promise 4 of DESIGN.md (nothing is lost) and the fallback of --resume auto,
# all under mpirun with 2 ranks:
#  (a) a crash while writing: rank 0 aborts after writing the temporary
#      step-30 checkpoint and before renaming it (MPIVAE_TEST_CRASH_BEFORE_RENAME):
#      mpirun exits non-zero within 30 s; step-20.h5 is intact (`mpivae eval`
#      works on it) and there is no step-30.h5; `--resume auto --steps 40` then
#      resumes from step 20 (the log says so), removes the stale
#      .step-30.h5.tmp (the log says so) and finishes; its step-40.h5 equals bit
#      for bit (h5diff /params, /optimizer) an uninterrupted 40-step run;
#  (b) a truncated newest checkpoint and (c) a newest checkpoint with one byte
#      flipped inside the chunk of /params/fc1.weight: `--resume auto` skips it
#      with a message naming the file and resumes from the next newest (the
#      "resumed from" line names step-20.h5), and again ends bit-identical to
#      the uninterrupted run;
#  (d) the two newest damaged: both skipped, each named with its reason, the
#      resume starts from step-10.h5 and ends bit-identical as well.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
CFG=(train --data s.h5 --hidden 32 --latent 4 --batch 16 --seed 5 --epochs 100 --ckpt-every 10 --log-every 5)
mpi_cmd 2

# The reference: 40 steps without a stop.
run_ok "${MPI[@]}" "$M" "${CFG[@]}" --steps 40 --out ref
expect_file ref/checkpoints/step-40.h5

# --- (a) crash between writing and publishing the step-30 checkpoint
run_ok "${MPI[@]}" "$M" "${CFG[@]}" --steps 20 --out crash
expect_file crash/checkpoints/step-10.h5
expect_file crash/checkpoints/step-20.h5
cp crash/checkpoints/step-20.h5 step-20.before
bg_start crash.log env MPIVAE_TEST_CRASH_BEFORE_RENAME=1 "${MPI[@]}" "$M" train --resume auto --out crash --steps 40
bg_wait "$BG_PID" 30
note "crash before rename: mpirun exited with status $BG_RC, $BG_WAITED s after start"
[ "$BG_RC" -ne 0 ] || { tail -n 20 crash.log >&2; fail "crash before rename: expected mpirun to exit non-zero, found 0"; }
expect_grep "crash before rename (the hook fired)" "MPIVAE_TEST_CRASH_BEFORE_RENAME" crash.log
expect_absent crash/checkpoints/step-30.h5
expect_absent crash/checkpoints/step-40.h5
expect_file crash/checkpoints/.step-30.h5.tmp   # what the crash left, for the resume to clean up
cmp -s step-20.before crash/checkpoints/step-20.h5 || fail "crash before rename: expected step-20.h5 unchanged by the crashed run, found it changed"
run_ok "$M" eval --mean --ckpt crash/checkpoints/step-20.h5 --data s.h5:/test/images
loss_of last.out >/dev/null
note "step-20.h5 after the crash: $(grep '^eval:' last.out)"

run_ok "${MPI[@]}" "$M" train --resume auto --out crash --steps 40
cp last.out resume_crash.out
cat last.err >>resume_crash.out
expect_grep "resume after the crash: resumed from step 20" "resumed from crash/checkpoints/step-20.h5 at step 20" resume_crash.out
expect_grep "resume after the crash: the stale temporary file is removed and the log says so" \
    "removed .*crash/checkpoints/\.step-30\.h5\.tmp" resume_crash.out
expect_absent crash/checkpoints/.step-30.h5.tmp
expect_file crash/checkpoints/step-30.h5
expect_identical "crashed at the step-30 save, resumed from step 20, against uninterrupted" \
    crash/checkpoints/step-40.h5 ref/checkpoints/step-40.h5

# --- (b), (c): a damaged newest checkpoint is skipped
run_ok "${MPI[@]}" "$M" "${CFG[@]}" --steps 30 --out base
expect_file base/checkpoints/step-30.h5
expect_file base/checkpoints/step-20.h5
cp -a base trunc
cp -a base flip

size=$(stat -c %s trunc/checkpoints/step-30.h5)
truncate -s $((size / 2)) trunc/checkpoints/step-30.h5

py_check "flipping a byte inside the chunk of /params/fc1.weight" <<'EOF'
import h5py
p = "flip/checkpoints/step-30.h5"
with h5py.File(p, "r") as f:
    info = f["/params/fc1.weight"].id.get_chunk_info(0)
off = info.byte_offset + info.size // 2
with open(p, "r+b") as fh:
    fh.seek(off)
    b = fh.read(1)[0]
    fh.seek(off)
    fh.write(bytes([b ^ 0x5A]))
with open(p, "rb") as a, open("base/checkpoints/step-30.h5", "rb") as g:
    x, y = a.read(), g.read()
assert len(x) == len(y) and sum(p != q for p, q in zip(x, y)) == 1, "expected exactly one byte changed"
EOF

for d in trunc flip; do
    run_ok "${MPI[@]}" "$M" train --resume auto --out "$d" --steps 40
    cat last.out last.err >"resume_$d.out"
    if ! grep -i "skip" "resume_$d.out" | grep -qF "$d/checkpoints/step-30.h5"; then
        tail -n 20 "resume_$d.out" >&2
        fail "$d: expected a message that skips '$d/checkpoints/step-30.h5', naming it, found none"
    fi
    note "$d: $(grep -iF "$d/checkpoints/step-30.h5" "resume_$d.out" | head -n 3 | tr '\n' '|')"
    expect_grep "$d: resumed from the next newest checkpoint" \
        "resumed from $d/checkpoints/step-20.h5 at step 20" "resume_$d.out"
    expect_identical "$d: newest checkpoint damaged, resumed from step 20, against uninterrupted" \
        "$d/checkpoints/step-40.h5" ref/checkpoints/step-40.h5
done

# --- (d) the two newest damaged (step-30 truncated, step-20 with the flipped
# byte): both skipped, each named, the resume starts from step-10.h5. README:
# --resume auto says "which ones it skipped and why": each skip line names the
# file and gives its own reason (truncation for step-30, the checksum for step-20),
# and no error: line appears in a run that succeeds.
cp -a base two
truncate -s $((size / 2)) two/checkpoints/step-30.h5
expect_file two/checkpoints/step-10.h5
py_check "flipping a byte of step-20's /params/fc1.weight" <<'EOF2'
import h5py
p = "two/checkpoints/step-20.h5"
with h5py.File(p, "r") as f:
    info = f["/params/fc1.weight"].id.get_chunk_info(0)
off = info.byte_offset + info.size // 2
with open(p, "r+b") as fh:
    fh.seek(off)
    b = fh.read(1)[0]
    fh.seek(off)
    fh.write(bytes([b ^ 0x5A]))
EOF2
run_ok "${MPI[@]}" "$M" train --resume auto --out two --steps 40
cat last.out last.err >resume_two.out
cp last.err resume_two.err   # skip messages and reasons; stdout names re-written checkpoints
late_fail=""
for s in 30 20; do
    f="two/checkpoints/step-$s.h5"
    grep -i "skip" resume_two.out | grep -qF "$f" ||
        { tail -n 20 resume_two.out >&2; fail "two damaged: expected a message that skips '$f', naming it, found none"; }
    case $s in 30) why="truncated or damaged" ;; 20) why="fails its checksum" ;; esac
    grep -i "skip" resume_two.err | grep -F "$f" | grep -qF "$why" ||
        late_fail+="two damaged: expected the skip line of '$f' to give its reason ('$why'), found only: $(grep -F "$f" resume_two.out | tr '\n' '|') "
done
if grep -q "error:" resume_two.err; then
    late_fail+="two damaged: a successful resume printed an error: line: $(grep 'error:' resume_two.err | tr '\n' '|') "
fi
note "two damaged: $(grep -E 'skip|error' resume_two.out | tr '\n' '|')"
expect_grep "two damaged: resumed from step 10" "resumed from two/checkpoints/step-10.h5 at step 10" resume_two.out
expect_identical "two newest checkpoints damaged, resumed from step 10, against uninterrupted" \
    two/checkpoints/step-40.h5 ref/checkpoints/step-40.h5
[ -z "$late_fail" ] || fail "$late_fail"

cli_done
