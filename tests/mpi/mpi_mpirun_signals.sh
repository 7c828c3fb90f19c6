#!/bin/bash
# mpi_mpirun_signals.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# What a user gets from signals to a bare `mpirun -np 2 mpivae train` (the
# README's "Resume, signals and failures"). Each case is an open-ended 2-rank
# run started in its own process group, as a shell starts a command, and
# signalled once its log shows a step. MPIVAE_TEST_STEP_DELAY_MS=D makes every
# rank sleep D ms after each step: 2 ms for a short step, 2000 ms for a step
# longer than mpirun's 1 s between SIGTERM and SIGKILL. Asserts:
#   usr1       SIGUSR1 to mpirun: status 75, "stopped by SIGUSR1 at step N",
#              checkpoint step-N.h5 of step N; mpirun prints Open MPI's two
#              notes ("Primary job ... terminated normally", "Exit code: 75");
#   int, term  SIGINT to the process group (what Ctrl-C in a terminal does)
#              or SIGTERM to mpirun: status 1; the ranks got SIGTERM from
#              mpirun ("stopped by SIGTERM at step N") and checkpointed step N;
#   int-long   SIGINT, 2000 ms steps: status 1, and no checkpoint (mpirun's
#              SIGKILL came first);
#   int-long-timeout  the same with --mca odls_base_sigkill_timeout 5: status
#              1, and the checkpoint of the "stopped by SIGTERM" step;
#   kill       rank 1 killed with SIGKILL: a non-zero status other than 75 and
#              "mpirun noticed that process rank 1 ... exited on signal 9"
#              (the launcher's name first: mpiexec when CMake found that one);
#   q-usr1, q-kill  the same under `mpirun -q`: status 75 and neither note;
#              a non-zero status other than 75 and no "mpirun noticed" line.
# Prints the time from each signal to mpirun's exit.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
TRAIN=(train --data s.h5 --hidden 32 --latent 4 --batch 16 --epochs 1000000)

# rank_of MPIRUN_PID R: the pid of rank R among mpirun's children.
rank_of() {
    local c
    for c in $(pgrep -P "$1" || true); do
        if { tr '\0' '\n' <"/proc/$c/environ"; } 2>/dev/null | grep -x "OMPI_COMM_WORLD_RANK=$2" >/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 0
}

# signalled NAME SIGNAL DELAY_MS LOG_EVERY [MPIRUN OPTIONS...]: runs the case
# NAME (log NAME.log, run directory NAME) and delivers SIGNAL: INT to the
# process group, KILL to rank 1, any other to mpirun. Sets BG_RC, STOP (the
# step of the "stopped by" line, or empty) and T (seconds to mpirun's exit).
signalled() {
    local name=$1 sig=$2 delay=$3 every=$4 pid victim t0
    shift 4
    mpi_cmd 2
    set -m # its own process group, as a shell gives each command
    bg_start "$name.log" env MPIVAE_TEST_STEP_DELAY_MS="$delay" "${MPI[@]}" "$@" "$M" "${TRAIN[@]}" \
        --log-every "$every" --out "$name"
    set +m
    pid=$BG_PID
    wait_for_line "$pid" "$name.log" '^step [0-9]+/' 60
    t0=$(now)
    case $sig in
    INT) kill -INT -- "-$pid" ;;
    KILL)
        victim=$(rank_of "$pid" 1)
        [ -n "$victim" ] || fail "$name: expected rank 1 among the children of mpirun (pid $pid), found none"
        kill -KILL "$victim"
        ;;
    *) kill -"$sig" "$pid" ;;
    esac
    bg_wait "$pid" 60
    T=$(elapsed "$t0")
    STOP=$(sed -n 's/^stopped by SIG[A-Z0-9]* at step \([0-9]*\) .*/\1/p' "$name.log" | head -n 1)
    note "$name: SIG$sig ${*:+(mpirun $*) }-> status $BG_RC after $T s${STOP:+, stopped at step $STOP}"
}

# checkpointed NAME SIGNAL: the run stopped by SIGNAL at step STOP after
# writing the checkpoint of that step.
checkpointed() {
    expect_grep "$1" "^stopped by SIG$2 at step [0-9]+ after writing a checkpoint" "$1.log"
    expect_eq "$1: the step of the checkpoint step-$STOP.h5" "$STOP" "$(ckpt_attr "$1/checkpoints/step-$STOP.h5" step)"
}

no_line() {
    if grep -qE -- "$2" "$3"; then
        tail -n 20 "$3" >&2
        fail "$1: expected no line matching '$2' in $3, found: $(grep -E -- "$2" "$3" | head -n 1)"
    fi
}

PRIMARY='^Primary job .*terminated normally, but [0-9]+ process(es)? returned'
EXIT75='^ *Exit code: *75$'
NOTICED='^[^ ]+ noticed that process rank 1 .* exited on signal 9'

signalled usr1 USR1 2 20
expect_status "usr1: SIGUSR1 to mpirun" 75 "$BG_RC" usr1.log
checkpointed usr1 USR1
expect_grep "usr1: Open MPI's first note" "$PRIMARY" usr1.log
expect_grep "usr1: Open MPI's second note" "$EXIT75" usr1.log

signalled int INT 2 20
expect_status "int: SIGINT to mpirun's process group" 1 "$BG_RC" int.log
checkpointed int TERM

signalled term TERM 2 20
expect_status "term: SIGTERM to mpirun" 1 "$BG_RC" term.log
checkpointed term TERM

signalled int-long INT 2000 1
expect_status "int-long: SIGINT, 2000 ms steps" 1 "$BG_RC" int-long.log
no_line "int-long" '^stopped by ' int-long.log
[ -z "$(ls -A int-long/checkpoints 2>/dev/null)" ] ||
    fail "int-long: expected no checkpoint (SIGKILL 1 s after SIGTERM, in a 2 s step), found: $(ls int-long/checkpoints)"

signalled int-long-timeout INT 2000 1 --mca odls_base_sigkill_timeout 5
expect_status "int-long-timeout: SIGINT, 2000 ms steps, odls_base_sigkill_timeout 5" 1 "$BG_RC" int-long-timeout.log
checkpointed int-long-timeout TERM

signalled kill KILL 2 20
case $BG_RC in 0 | 75) fail "kill: expected a non-zero status other than 75, found $BG_RC" ;; esac
expect_grep "kill: the launcher's message" "$NOTICED" kill.log

signalled q-usr1 USR1 2 20 -q
expect_status "q-usr1: SIGUSR1 to mpirun -q" 75 "$BG_RC" q-usr1.log
checkpointed q-usr1 USR1
no_line "q-usr1" "$PRIMARY" q-usr1.log
no_line "q-usr1" 'Exit code' q-usr1.log

signalled q-kill KILL 2 20 -q
case $BG_RC in 0 | 75) fail "q-kill: expected a non-zero status other than 75, found $BG_RC" ;; esac
no_line "q-kill" "$NOTICED" q-kill.log

cli_done
