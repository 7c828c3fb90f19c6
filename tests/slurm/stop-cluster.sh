#!/usr/bin/env bash
# stop-cluster.sh: stops the Slurm that start-cluster.sh started in
# $MPIVAE_SLURM_DIR (default /tmp/mpivae-slurm), of one node or several.
#
# It cancels the cluster's jobs through Slurm while the daemons are up and
# waits for them to leave, then stops the slurmd (one, or one per node:
# slurmd-n1, slurmd-n2, ...), slurmctld and munged: only the
# PIDs recorded in $MPIVAE_SLURM_DIR/run/pids, and each only while
# /proc/PID/stat still shows the recorded start time (a reused PID is never
# hit). SIGTERM first, SIGKILL after MPIVAE_SLURM_STOP_TIMEOUT (20) seconds.
# It never kills by name. Safe to run twice, or when nothing was started.
# MPIVAE_SLURM_PURGE=1 also removes the folder. Exit status 0 when every
# recorded daemon is gone.
set -uo pipefail

D=${MPIVAE_SLURM_DIR:-/tmp/mpivae-slurm}
T=${MPIVAE_SLURM_STOP_TIMEOUT:-20}
PIDS=$D/run/pids
export SLURM_CONF=$D/etc/slurm.conf

say() { printf '[stop-cluster %(%T)T] %s\n' -1 "$*" >&2; }
starttime() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    [ "$1" = Z ] || [ "$1" = X ] || echo "${20}"
}
ours() { [ -n "$1" ] && [ -n "$2" ] && [ "$(starttime "$1")" = "$2" ]; }
entry() { awk -v n="$1" '$1 == n { print $2, $3 }' "$PIDS"; }

if [ ! -s "$PIDS" ]; then
    say "nothing was started in $D"
    [ "${MPIVAE_SLURM_PURGE:-0}" = 1 ] && rm -rf "$D"
    exit 0
fi

SLURMDS=$(awk '$1 == "slurmd" || $1 ~ /^slurmd-/ { print $1 }' "$PIDS" | tr '\n' ' ')
# all daemons up: Slurm can cancel the jobs and clean their steps up
up=1
[ -n "$SLURMDS" ] || up=0
for name in slurmctld $SLURMDS; do
    read -r pid st < <(entry "$name"; echo)
    ours "${pid:-}" "${st:-}" || up=0
done
if [ $up = 1 ]; then
    jobs=$(squeue -h -o '%i' 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs $jobs"
        timeout "$T" scancel $jobs 2>/dev/null || true
        end=$((SECONDS + T))
        while [ -n "$(squeue -h -o '%i' 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
    fi
fi

rc=0
for name in $SLURMDS slurmctld munged; do
    read -r pid st < <(entry "$name"; echo)
    [ -n "${pid:-}" ] || continue
    ours "$pid" "$st" || continue
    kill -TERM "$pid" 2>/dev/null
    end=$((SECONDS + T))
    while ours "$pid" "$st" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    if ours "$pid" "$st"; then
        say "$name (pid $pid) ignored SIGTERM for $T s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    if ours "$pid" "$st"; then
        say "ERROR: $name (pid $pid) is still running"
        rc=1
    else
        say "$name (pid $pid) stopped"
    fi
done
if [ $rc = 0 ]; then
    : >"$PIDS"
    [ "${MPIVAE_SLURM_PURGE:-0}" = 1 ] && rm -rf "$D"
fi
exit $rc
