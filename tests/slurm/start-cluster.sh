#!/usr/bin/env bash
# start-cluster.sh: starts a real one-node Slurm on this machine for the tests
# of the job scripts (tests/slurm/*.sh), and waits until its node is idle.
# With MPIVAE_SLURM_NODES=2 (or more) it starts a cluster of that many
# pretend hosts instead (see "Several nodes" below).
#
#   bash tests/slurm/start-cluster.sh      # then: source "$MPIVAE_SLURM_DIR/env.sh"
#   bash tests/slurm/stop-cluster.sh       # stops exactly what this script started
#
# What it does, in order:
#   1. installs Debian's munge, slurmctld, slurmd and slurm-client when one is
#      missing (apt-get --no-install-recommends; tests/deps.sh installs them in CI);
#   2. writes a munge key, a slurm.conf and everything else under one folder,
#      $MPIVAE_SLURM_DIR: nothing goes to /etc and nothing to systemd (the
#      daemons are started by hand, so it works where PID 1 is not systemd);
#   3. starts munged, slurmctld and slurmd and records each PID with its start
#      time in $MPIVAE_SLURM_DIR/run/pids (stop-cluster.sh signals only those);
#   4. waits until the node is idle and prints `export SLURM_CONF=...` on
#      stdout (progress goes to stderr).
#
# Several nodes (MPIVAE_SLURM_NODES=N, N >= 2): nodes n1 .. nN, one slurmd
# each (`slurmd -N nI`), all at 127.0.0.1 on ports SLURMD_PORT, +1, ... Each
# slurmd runs in its own UTS namespace (`unshare --uts`) whose host name is
# its node name, so every process of a job step on node nI (the batch shell,
# srun's tasks, mpirun's daemons) sees the host name nI and MPI counts N
# hosts. The rest is per node through %n: SlurmdSpoolDir, the PID and log
# files (run/slurmd-nI.pid, log/slurmd-nI.log) and TmpFS (tmp/nI), where
# srun --mpi=pmix makes spmix_appdir_<uid>_<job>.<step>: with one TmpFS for
# all, the second node's step fails ("Cannot create directory
# .../spmix_appdir_0_1.0: File exists"). The file system, the CPUs and the
# loopback interface stay shared: Open MPI's traffic between the pretend
# hosts must be told to use lo (OMPI_MCA_oob_tcp_if_include=lo,
# OMPI_MCA_btl_tcp_if_include=lo), and ranks of different nodes must not be
# bound to the same cores (OMPI_MCA_hwloc_base_binding_policy=none): that is
# the test's environment, not the cluster's.
#
# The configuration is made for tests: a short credential lifetime
# (cred_expire, which is also how long a requeued job is held before it may
# run again; Slurm accepts no less than 5), a short KillWait, a scheduler that
# looks at pending jobs every second or two, no accounting database
# (`scontrol show job` and log/jobcomp.log tell how a job ended), and
# MpiDefault=pmix so that `srun` starts Debian's Open MPI ranks directly.
# Everything runs as root (SlurmUser=root; jobs run as the submitting user).
#
# A folder that already holds a running cluster is refused (stop it first).
# On any failure it prints why, the last lines of the daemons' logs, stops
# what it had started and exits 1.
#
# Settings (environment variables, with defaults):
#   MPIVAE_SLURM_DIR=/tmp/mpivae-slurm  config, key, state, logs, sockets, PIDs
#   MPIVAE_SLURM_CTLD_PORT, MPIVAE_SLURM_SLURMD_PORT
#                                the ports; by default the first free pair
#                                from 6817 and 6818 upwards
#   MPIVAE_SLURM_CPUS            CPUs of each node (default: what `slurmd -C`
#                                finds; more are announced with config_overrides)
#   MPIVAE_SLURM_NODES=1         1: one node named after this host; N >= 2:
#                                nodes n1 .. nN in their own UTS namespaces
#                                (their slurmd ports: SLURMD_PORT + 0 .. N-1)
#   MPIVAE_SLURM_CRED_EXPIRE=10  seconds (5 or more)
#   MPIVAE_SLURM_KILLWAIT=5      seconds between SIGTERM and SIGKILL
#   MPIVAE_SLURM_TIMEOUT=60      seconds to wait for each daemon and the node
#   MPIVAE_SLURM_NO_INSTALL=1    never run apt-get (fail if packages are missing)
set -euo pipefail

D=${MPIVAE_SLURM_DIR:-/tmp/mpivae-slurm}
TIMEOUT=${MPIVAE_SLURM_TIMEOUT:-60}
NODES=${MPIVAE_SLURM_NODES:-1}
CRED_EXPIRE=${MPIVAE_SLURM_CRED_EXPIRE:-10}
KILLWAIT=${MPIVAE_SLURM_KILLWAIT:-5}
PKGS="munge slurmctld slurmd slurm-client"
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$D"
D=$(cd "$D" && pwd)
CONF=$D/etc/slurm.conf
SOCK=$D/munge/munge.socket
PIDS=$D/run/pids
export SLURM_CONF=$CONF

say() { printf '[start-cluster %(%T)T] %s\n' -1 "$*" >&2; }
STARTED=0
die() {
    printf '[start-cluster] ERROR: the local Slurm cannot start: %s\n' "$*" >&2
    local f
    for f in "$D/munge/munged.log" "$D/log/slurmctld.log" "$D"/log/slurmd*.log; do
        if [ -s "$f" ]; then
            printf -- '--- last lines of %s:\n' "$f" >&2
            tail -n 15 "$f" >&2
        fi
    done
    if [ "$STARTED" = 1 ]; then MPIVAE_SLURM_DIR=$D bash "$HERE/stop-cluster.sh" >&2 || true; fi
    exit 1
}

if ! [[ "$NODES" =~ ^[1-9][0-9]?$ ]]; then
    echo "[start-cluster] ERROR: MPIVAE_SLURM_NODES='$NODES' is not a number of nodes from 1 to 99" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || die "it needs root (munged, slurmctld and slurmd run as root here); run the slurm tests as root"

# ------------------------------------------------------------------ 1. packages
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    [ "${MPIVAE_SLURM_NO_INSTALL:-0}" = 1 ] && die "packages missing:$missing (and MPIVAE_SLURM_NO_INSTALL=1)"
    command -v apt-get >/dev/null || die "packages missing:$missing, and there is no apt-get to install them"
    say "installing$missing (apt-get install --no-install-recommends)"
    export DEBIAN_FRONTEND=noninteractive
    # Without systemd the packages' scripts cannot start the services: we do below.
    if ! apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends $PKGS >&2; then
        apt-get -o DPkg::Lock::Timeout=300 update >&2 || die "apt-get update failed"
        apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends $PKGS >&2 ||
            die "apt-get install$missing failed"
    fi
fi
for b in munged munge unmunge slurmctld slurmd sinfo scontrol sbatch $([ "$NODES" = 1 ] || echo unshare hostname); do
    command -v "$b" >/dev/null || die "'$b' is not on PATH after installing$PKGS"
done

# ------------------------------------------------------------------ PIDs
# starttime PID: field 22 of /proc/PID/stat (empty when gone or a zombie).
starttime() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    [ "$1" = Z ] || [ "$1" = X ] || echo "${20}"
}
# record NAME PIDFILE: waits for the daemon's PID file and records "NAME PID START".
record() {
    local pid="" i
    for i in $(seq 1 100); do
        if [ -s "$2" ]; then
            pid=$(cat "$2")
            [ -n "$pid" ] && [ -n "$(starttime "$pid")" ] && break
        fi
        pid=""
        sleep 0.1
    done
    [ -n "$pid" ] || die "$1 wrote no live PID to $2"
    echo "$1 $pid $(starttime "$pid")" >>"$PIDS"
    STARTED=1
    say "$1 started, pid $pid"
}
if [ -s "$PIDS" ]; then
    while read -r name pid st; do
        if [ -n "$pid" ] && [ "$(starttime "$pid")" = "$st" ]; then
            echo "[start-cluster] ERROR: $name (pid $pid) of a cluster in $D is still running; stop it first:" \
                "MPIVAE_SLURM_DIR=$D bash $HERE/stop-cluster.sh" >&2
            exit 1
        fi
    done <"$PIDS"
fi

# ------------------------------------------------------------------ ports
# listening TCP ports, from /proc (no tools needed)
busy_ports() {
    local sl local_addr rest
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r sl local_addr _ st rest; do
        if [ "$st" = 0A ]; then echo $((16#${local_addr##*:})); fi
    done
    return 0
}
BUSY=" $(busy_ports | tr '\n' ' ') "
is_busy() { [[ "$BUSY" == *" $1 "* ]]; }
CTLD_PORT=${MPIVAE_SLURM_CTLD_PORT:-}
SLURMD_PORT=${MPIVAE_SLURM_SLURMD_PORT:-}
# free_from BASE: ports BASE .. BASE+NODES (slurmctld, then each slurmd) are free.
free_from() {
    local p
    for p in $(seq "$1" $(($1 + NODES))); do ! is_busy "$p" || return 1; done
}
if [ -z "$CTLD_PORT" ] || [ -z "$SLURMD_PORT" ]; then
    for base in $(seq 6817 2 6917); do
        if free_from "$base"; then
            CTLD_PORT=${CTLD_PORT:-$base}
            SLURMD_PORT=${SLURMD_PORT:-$((base + 1))}
            break
        fi
    done
fi
[ -n "$CTLD_PORT" ] && [ -n "$SLURMD_PORT" ] || die "no $((NODES + 1)) free TCP ports in a row between 6817 and $((6917 + NODES))"
is_busy "$CTLD_PORT" && die "TCP port $CTLD_PORT (slurmctld) is in use"
for p in $(seq "$SLURMD_PORT" $((SLURMD_PORT + NODES - 1))); do
    is_busy "$p" && die "TCP port $p (slurmd) is in use"
done

# ------------------------------------------------------------------ files
rm -rf "$D/etc" "$D/munge" "$D/spool" "$D/run" "$D/log" "$D/tmp"
mkdir -p "$D/etc" "$D/munge" "$D/spool/ctld" "$D/run" "$D/log"
if [ "$NODES" = 1 ]; then
    NODE_NAMES=$(hostname -s)
    mkdir -p "$D/spool/d"
else
    NODE_NAMES=$(seq -f 'n%g' 1 "$NODES" | tr '\n' ' ')
    for n in $NODE_NAMES; do mkdir -p "$D/spool/$n" "$D/tmp/$n"; done
fi
chmod 755 "$D" "$D/munge"
# munged refuses a socket in a folder that not everyone can enter
p=$D
while [ "$p" != / ]; do
    p=$(dirname "$p")
    [ "$(( 0$(stat -c %a "$p") & 1 ))" = 1 ] ||
        die "munged needs every folder above its socket open to all (o+x), and $p is not ($(stat -c %A "$p")); choose another MPIVAE_SLURM_DIR"
done
: >"$PIDS"
dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$D/munge/munge.key"

HW=$(slurmd -C 2>/dev/null | head -n 1)
hw() { printf '%s\n' "$HW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS_FOUND=$(hw CPUs)
MEM=$(hw RealMemory)
[ -n "$CPUS_FOUND" ] && [ -n "$MEM" ] || die "slurmd -C did not tell the CPUs and memory (it said: $HW)"
MEM=$((MEM * 95 / 100))
CPUS=${MPIVAE_SLURM_CPUS:-$CPUS_FOUND}
if [ "$CPUS" = "$CPUS_FOUND" ]; then
    NODE_HW="CPUs=$CPUS Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore)"
    OVERRIDES=""
else
    NODE_HW="CPUs=$CPUS"
    OVERRIDES="SlurmdParameters=config_overrides"
fi
if [ "$NODES" = 1 ]; then
    NODE_PATHS="SlurmdSpoolDir=$D/spool/d
SlurmdPidFile=$D/run/slurmd.pid
SlurmdLogFile=$D/log/slurmd.log"
    NODE_LINES="NodeName=$NODE_NAMES NodeAddr=127.0.0.1 $NODE_HW RealMemory=$MEM State=UNKNOWN"
    KIND=one-node
else
    NODE_PATHS="SlurmdSpoolDir=$D/spool/%n
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmdLogFile=$D/log/slurmd-%n.log
TmpFS=$D/tmp/%n"
    NODE_LINES=""
    port=$SLURMD_PORT
    for n in $NODE_NAMES; do
        NODE_LINES="$NODE_LINES${NODE_LINES:+
}NodeName=$n NodeAddr=127.0.0.1 Port=$port $NODE_HW RealMemory=$MEM State=UNKNOWN"
        port=$((port + 1))
    done
    KIND="$NODES-node"
fi
NODE_LIST=${NODE_NAMES% }
NODE_LIST=${NODE_LIST// /,}
cat >"$CONF" <<CONF
# Written by tests/slurm/start-cluster.sh: a $KIND Slurm for the tests.
ClusterName=mpivae-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$D/spool/ctld
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmctldLogFile=$D/log/slurmctld.log
$NODE_PATHS
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
JobRequeue=1
KillWait=$KILLWAIT
MinJobAge=3600
InactiveLimit=0
$OVERRIDES
$NODE_LINES
PartitionName=test Nodes=$NODE_LIST Default=YES MaxTime=INFINITE State=UP
CONF
echo "export SLURM_CONF=$CONF" >"$D/env.sh"

# ------------------------------------------------------------------ daemons
deadline() { echo $((SECONDS + TIMEOUT)); }
munged --key-file="$D/munge/munge.key" --socket="$SOCK" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" || die "munged failed to start"
record munged "$D/munge/munged.pid"
end=$(deadline)
until munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1; do
    [ $SECONDS -lt "$end" ] || die "munge cannot encode and decode a credential through $SOCK"
    sleep 0.1
done

slurmctld -f "$CONF" -c -i || die "slurmctld failed to start"
record slurmctld "$D/run/slurmctld.pid"
CTLD_PID=$(cat "$D/run/slurmctld.pid")
end=$(deadline)
until scontrol ping 2>/dev/null | grep -q 'is UP'; do
    [ -n "$(starttime "$CTLD_PID")" ] || die "slurmctld exited"
    [ $SECONDS -lt "$end" ] || die "slurmctld does not answer 'scontrol ping' after ${TIMEOUT} s"
    sleep 0.2
done

SLURMD_PIDS=""
if [ "$NODES" = 1 ]; then
    slurmd -f "$CONF" -N "$NODE_NAMES" || die "slurmd failed to start"
    record slurmd "$D/run/slurmd.pid"
    SLURMD_PIDS=$(cat "$D/run/slurmd.pid")
else
    for n in $NODE_NAMES; do
        # its own host name for the daemon and everything it starts
        # shellcheck disable=SC2016  # $1 and $2 are the inner shell's
        unshare --uts sh -c 'hostname "$1" && exec slurmd -f "$2" -N "$1"' sh "$n" "$CONF" ||
            die "slurmd -N $n (in its own UTS namespace) failed to start"
        record "slurmd-$n" "$D/run/slurmd-$n.pid"
        SLURMD_PIDS="$SLURMD_PIDS $(cat "$D/run/slurmd-$n.pid")"
    done
fi
end=$(deadline)
while :; do
    for pid in $SLURMD_PIDS; do
        [ -n "$(starttime "$pid")" ] || die "slurmd (pid $pid) exited"
    done
    states=$(sinfo -h -N -n "$NODE_LIST" -o '%N=%T' 2>/dev/null | sort -u | tr '\n' ' ' || true)
    [ "$(grep -o '=idle' <<<"$states" | wc -l)" = "$NODES" ] && break
    [ $SECONDS -lt "$end" ] ||
        die "nodes $NODE_LIST are not all idle after ${TIMEOUT} s (states '${states:-none}', reasons '$(sinfo -h -N -n "$NODE_LIST" -o '%N: %E' 2>/dev/null | tr '\n' ' ' || true)')"
    sleep 0.2
done
if [ "$NODES" = 1 ]; then
    say "node $NODE_NAMES idle: $CPUS CPUs, slurmctld port $CTLD_PORT, slurmd port $SLURMD_PORT, SLURM_CONF=$CONF"
else
    say "nodes $NODE_LIST idle: $CPUS CPUs each, slurmctld port $CTLD_PORT, slurmd ports $SLURMD_PORT-$((SLURMD_PORT + NODES - 1)), SLURM_CONF=$CONF"
fi
echo "export SLURM_CONF=$CONF"
