# shellcheck shell=bash
# jobs/common.sh: the code the job scripts share (train.sbatch,
# train-multinode.sbatch, eval.sbatch, local.sh). It is sourced, never run:
#
#   . "$jobs_dir/common.sh" NAME     # NAME (train.sbatch, ...) heads the log lines
#
# Slurm runs a copy of a batch script from its spool folder, so the sbatch
# scripts look for this file beside the submitted script (`scontrol show
# job`'s Command, relative to the submit directory), then in the submit
# directory's jobs/; local.sh finds it beside itself. The files it uses
# (mpirun-stderr-filter.sh) are the ones beside it. Sourcing it defines the
# functions below and, when run as root, exports OMPI_ALLOW_RUN_AS_ROOT*
# (Open MPI refuses to run as root without them: containers, test clusters).
# Settings (MPIVAE, LAUNCHER, ...) stay in each script, which documents them.
#
#   log MSG...         prints "[NAME date time] MSG" on stdout
#   slurm_setup        TASKS and CPUS from the allocation (1 outside one),
#                      OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = CPUS, the
#                      launch commands for LAUNCHER: launch=(every task),
#                      one=(one task); exits with 2 after a message on a bad
#                      LAUNCHER or when MPIVAE is not an executable
#   catch_signals SIG...  traps each SIG: forward asks the ranks to checkpoint
#   wait_launcher      waits for the launcher (pid $child) to end, signals
#                      or not, and sets rc to its exit status
#   train_job ARGS...  the whole of train.sbatch and train-multinode.sbatch
#                      after their settings: train, then requeue or not

script_name=${1:?usage: . common.sh NAME}
jobs_dir=$(dirname "${BASH_SOURCE[0]}")

log() { printf '[%s %(%F %T)T] %s\n' "$script_name" -1 "$*"; }

if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

slurm_setup() {
    TASKS=${SLURM_NTASKS:-1}
    CPUS=${SLURM_CPUS_PER_TASK:-1}
    # One BLAS/OpenMP thread per CPU that Slurm gave each rank: more would make
    # the ranks fight over the cores.
    export OMP_NUM_THREADS=$CPUS OPENBLAS_NUM_THREADS=$CPUS
    # mpirun reads the allocation from Slurm's environment; srun needs
    # --cpus-per-task explicitly (Slurm 22.05 and later do not pass sbatch's
    # on). With more than one CPU a rank is not bound to one core, so that its
    # threads can use all of its CPUs.
    case $LAUNCHER in
    mpirun)
        launch=(mpirun -np "$TASKS")
        one=(mpirun -np 1)
        if [ "$CPUS" -gt 1 ]; then launch+=(--bind-to none) one+=(--bind-to none); fi
        ;;
    srun)
        launch=(srun --mpi=pmix --kill-on-bad-exit=1 --ntasks="$TASKS" --cpus-per-task="$CPUS")
        one=(srun --mpi=pmix --ntasks=1 --cpus-per-task="$CPUS")
        ;;
    *)
        log "error: LAUNCHER='$LAUNCHER' is neither mpirun nor srun"
        exit 2
        ;;
    esac
    if ! command -v "$MPIVAE" >/dev/null 2>&1; then
        log "error: no executable mpivae at MPIVAE='$MPIVAE' (looked from $(pwd)); build it or set MPIVAE"
        exit 2
    fi
}

# Signals. Bash runs a trap only between commands, so the launcher runs in
# the background while the shell waits for it; `wait` returns early when a
# trapped signal arrives, and wait_launcher goes back to waiting. The first
# signal is forwarded to the launcher as SIGUSR1, which it passes on to every
# rank: each finishes its step, rank 0 writes a checkpoint, and mpivae exits
# with status 75. A second SIGINT (local.sh: Ctrl-C twice) stops the launcher
# at once.
got=""
child=""
forward() {
    if [ -n "$got" ] && [ "$1" = INT ] && [ -n "$child" ]; then
        log "second SIGINT: stopping $LAUNCHER at once"
        kill -TERM "$child" 2>/dev/null
        return
    fi
    got=$1
    log "got SIG$1: asking the ranks to checkpoint and stop (SIGUSR1 to $LAUNCHER${child:+ pid $child})"
    if [ -n "$child" ]; then kill -USR1 "$child" 2>/dev/null; fi
}
catch_signals() {
    local s
    for s; do
        # shellcheck disable=SC2064  # $s is meant to expand now
        trap "forward $s" "$s"
    done
}

wait_launcher() {
    local r
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break
    done
    if [ "$rc" -gt 128 ] && [ -n "$got" ]; then
        # the signal may have cut short the last wait just as the launcher ended
        wait "$child"
        r=$?
        if [ "$r" != 127 ]; then rc=$r; fi
    fi
}

# ---------------------------------------------------------------- training
# train_job ARGS...: runs `mpivae train --data $DATA --out $RUN_DIR --resume
# auto $TRAIN_ARGS ARGS...` over the job's ranks, forwards Slurm's SIGUSR1
# and SIGTERM, and on a checkpointed stop requeues the job (at most
# MAX_RESTARTS times). Exits with the status that train.sbatch documents.
train_job() {
    if [ -z "${SLURM_JOB_ID:-}" ]; then
        log "error: not in a Slurm job; submit it with sbatch (on a workstation use jobs/local.sh)"
        exit 2
    fi
    JOB=$SLURM_JOB_ID
    RESTARTS=${SLURM_RESTART_COUNT:-0} # unset in the first run, 1, 2, ... after requeues
    slurm_setup

    log "job $JOB on ${SLURM_JOB_NODELIST:-$(hostname)}: restart $RESTARTS (at most $MAX_RESTARTS);" \
        "$TASKS ranks x $CPUS threads, launcher $LAUNCHER, data $DATA, run directory $RUN_DIR"
    catch_signals USR1 TERM

    # A copy of the launcher's output (rank 0's log) tells whether mpivae really
    # finished: srun can exit with 0 when it failed to start the step (Slurm
    # 22.05 does when a requeued job's step collides with the previous run's
    # step that is still being cleaned up).
    copy=$(mktemp "${TMPDIR:-/tmp}/mpivae-train-$JOB.XXXXXX") || exit 1
    trap 'rm -f "$copy"' EXIT

    # Open MPI's two notes on a status-75 stop ("Primary job terminated normally,
    # but 1 process returned a non-zero exit code ...", "... Exit code: 75") read
    # like a crash: jobs/mpirun-stderr-filter.sh, beside this file, removes
    # exactly them from mpirun's stderr; without it the notes stay (errf=cat
    # passes all through).
    local f
    errf=(cat)
    if [ "$LAUNCHER" = mpirun ]; then
        f=$jobs_dir/mpirun-stderr-filter.sh
        if [ -f "$f" ]; then
            errf=(bash "$f")
        else
            log "note: no $f beside the submitted script: Open MPI's notes on a stop (status 75) stay in the output"
        fi
    fi

    rc=75
    local attempt=1
    while [ -z "$got" ]; do # (a signal before the launch: nothing to save)
        : >"$copy"
        # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
        "${launch[@]}" "$MPIVAE" train --data "$DATA" --out "$RUN_DIR" --resume auto $TRAIN_ARGS "$@" \
            > >(trap '' INT TERM USR1; exec tee -a "$copy") 2> >(trap '' INT TERM USR1; exec "${errf[@]}" >&2) &
        child=$!
        wait_launcher
        if [ "$rc" = 0 ] && [ -z "$got" ] && ! train_finished; then
            if [ "$attempt" -lt 3 ]; then
                log "$LAUNCHER exited with 0 but mpivae did not report 'finished' (the launch failed?); trying again in 5 s"
                attempt=$((attempt + 1))
                child=""
                sleep 5
                continue
            fi
            log "$LAUNCHER exited with 0 but mpivae did not report 'finished', $attempt times"
            rc=1
        fi
        break
    done
    trap '' USR1 TERM

    if [ "$got" = TERM ]; then
        local info state reason
        info=$(scontrol show job -o "$JOB" 2>/dev/null | tr ' ' '\n')
        state=$(sed -n 's/^JobState=//p' <<<"$info")
        reason=$(sed -n 's/^Reason=//p' <<<"$info")
        log "Slurm is ending the job (state ${state:-unknown}, reason ${reason:-unknown}); launcher exit status $rc"
        # While the job completes, its state reads COMPLETING with Reason=TimeLimit.
        if [ "$state" = TIMEOUT ] || [ "$reason" = TimeLimit ]; then train_requeue; fi
        exit "$rc"
    fi
    case $rc in
    0)
        log "training finished (exit status 0)"
        exit 0
        ;;
    75)
        log "mpivae checkpointed and stopped (exit status 75)"
        train_requeue
        exit 75
        ;;
    *)
        log "mpivae failed (exit status $rc); not requeued"
        exit "$rc"
        ;;
    esac
}

# train_finished: rank 0 printed its `finished:` line into the copy.
train_finished() {
    local _
    for _ in $(seq 30); do # tee may be a moment behind
        grep -q '^finished: ' "$copy" && return 0
        sleep 0.1
    done
    return 1
}

# train_requeue: puts the job back in the queue (bounded by MAX_RESTARTS) and
# waits for Slurm to end this run; returns only when it did not requeue.
train_requeue() {
    if [ "$RESTARTS" -ge "$MAX_RESTARTS" ]; then
        log "not requeued: restart limit reached ($RESTARTS of MAX_RESTARTS=$MAX_RESTARTS); submit the job again to continue"
        return
    fi
    log "requeueing job $JOB (restart $((RESTARTS + 1)) of at most $MAX_RESTARTS)"
    rm -f "$copy" # (the EXIT trap will not run: Slurm ends this shell)
    if ! scontrol requeue "$JOB"; then
        log "scontrol requeue $JOB failed; submit the job again to continue"
        return
    fi
    # Slurm now ends this run (SIGTERM to the job's processes): wait for it.
    trap - TERM
    sleep 300 &
    wait $!
    exit 0
}
