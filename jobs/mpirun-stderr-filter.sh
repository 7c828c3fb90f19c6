#!/usr/bin/env bash
# jobs/mpirun-stderr-filter.sh: copies mpirun's stderr (stdin) to stdout
# without the two notes Open MPI prints when a rank exits with mpivae's
# status 75 (stopped after a checkpoint, as asked by a signal):
#
#   --------------------------------------------------------------------------
#   Primary job  terminated normally, but 1 process returned
#   a non-zero exit code. Per user-direction, the job has been aborted.
#   --------------------------------------------------------------------------
#   --------------------------------------------------------------------------
#   mpirun detected that one or more processes exited with non-zero status, thus causing
#   the job to be terminated. The first process to do so was:
#
#     Process name: [[20427,1],1]
#     Exit code:    75
#   --------------------------------------------------------------------------
#
# They read like a crash where nothing crashed. Only that pair, line for line
# and with exit code 75, is removed; every other line passes unchanged and in
# order, so a real failure keeps both its notes (exit code 1, or "mpirun
# noticed that process rank 1 ... exited on signal 9 (Killed)" after the first
# note). Lines are held back only while they still match the pair.
#
# Used by jobs/local.sh and, through jobs/common.sh, by jobs/train.sbatch and
# jobs/train-multinode.sbatch:
#   mpirun ... 2> >(bash jobs/mpirun-stderr-filter.sh >&2) &
# It ignores SIGINT, SIGTERM and SIGUSR1: the signals meant for the launcher
# (Ctrl-C, Slurm's) must not end it before it has passed on mpirun's last lines.
trap '' INT TERM USR1

# The pair, one pattern per line (bash regular expressions).
rule='^-{20,}$'
pair=(
    "$rule"
    '^Primary job .*terminated normally, but [0-9]+ process(es)? returned$'
    '^(a )?non-zero exit codes?\. Per user-direction, the job has been aborted\.$'
    "$rule"
    "$rule"
    '^[^ ]+ detected that one or more processes exited with non-zero status, thus causing$'
    '^the job to be terminated\. The first process to do so was:$'
    '^$'
    '^ *Process name: '
    '^ *Exit code: *75$'
    "$rule"
)
held=() # the lines that match the pair so far

while IFS= read -r line || [ -n "$line" ]; do
    if ! [[ $line =~ ${pair[${#held[@]}]} ]]; then
        # not the pair: pass on what was held; the line may begin the pair
        [ ${#held[@]} -eq 0 ] || printf '%s\n' "${held[@]}"
        held=()
        if ! [[ $line =~ ${pair[0]} ]]; then
            printf '%s\n' "$line"
            continue
        fi
    fi
    held+=("$line")
    if [ ${#held[@]} -eq ${#pair[@]} ]; then held=(); fi # the whole pair: dropped
done
[ ${#held[@]} -eq 0 ] || printf '%s\n' "${held[@]}"
