# shellcheck disable=SC2034  # variables set here are read by the sourcing tests
# mhlib.sh: pretend hosts on this machine for the multi-host tests
# (tests/multihost/*.sh), on top of tests/mpi/mpilib.sh.
#
# A host is a process tree in its own UTS namespace with its own host name:
# mpirun --host hA:2,hB:2 starts one Open MPI daemon per host through
# agent.sh (plm_rsh_agent), which runs the daemon under `unshare --uts` after
# setting the name. MPI_Comm_split_type and Open MPI's node detection then
# see one node per name, ranks of one host talk through shared memory and
# ranks of different hosts through TCP. All traffic stays on the loopback
# interface: oob_tcp_if_include and btl_tcp_if_include are lo. Needs root
# (unshare --uts) and iproute2's ss.
#
# Two settings make pretend hosts behave as real ones on a machine they
# share: --bind-to none (each daemon would bind its ranks to cores 0, 1, ...
# of the same CPUs as the other host's) and mpi_yield_when_idle 1 (each
# daemon thinks its ranks have cores of their own, so they would busy-poll
# each other off the CPUs). Neither applies to real hosts.

source "$(dirname "${BASH_SOURCE[0]}")/../mpi/mpilib.sh"
MH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# mh_init MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
mh_init() {
    mpi_init "$@"
    [ "$(id -u)" = 0 ] || fail "expected root: pretend hosts need 'unshare --uts'"
    unshare --uts true 2>/dev/null || fail "expected 'unshare --uts true' to work (a UTS namespace per pretend host), found it fails"
    command -v ss >/dev/null || fail "expected ss (apt install iproute2), found none"
    MH_DIR=$WORK/hosts
    mkdir -p "$MH_DIR"
    export MH_DIR
}

# mh_cmd HOSTSPEC NP: the launcher for NP ranks on pretend hosts (hA:2,hB:2), in MPI.
mh_cmd() {
    MPI=("$MPIEXEC" --host "$1" "$NPFLAG" "$2" --oversubscribe --bind-to none
         --mca plm_rsh_agent "$MH_LIB_DIR/agent.sh" --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo
         --mca mpi_yield_when_idle 1 "${PREFLAGS[@]}")
}

# host_pids HOST: the processes in HOST's namespace (its daemon and its ranks), one per line.
host_pids() {
    local pid ns p
    pid=$(cat "$MH_DIR/$1.pid" 2>/dev/null) || return 0
    ns=$(readlink "/proc/$pid/ns/uts" 2>/dev/null) || return 0
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/ns/uts" 2>/dev/null)" = "$ns" ] && echo "${p#/proc/}"
    done
    return 0
}
