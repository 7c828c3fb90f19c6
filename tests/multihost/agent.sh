#!/bin/bash
# agent.sh HOST COMMAND...: Open MPI's remote agent (plm_rsh_agent) for the
# pretend hosts of tests/multihost/. Where ssh would log into HOST and run
# the daemon's command there, this starts the command in a new UTS namespace
# whose host name is HOST, on this machine: the daemon and every rank it
# starts see HOST as their host name, and Open MPI treats them as one node.
# The network is this machine's (the loopback interface); nothing else is
# shared by name. It records its process id in $MH_DIR/HOST.pid, so that a
# test can find every process of that host (those in its namespace).
# Open MPI passes the daemon's command as shell words in one string, which
# can start with assignments (PATH=...; export PATH; ...) when mpirun was
# called by its full path: the string is run by bash as it is.
set -u
host=$1
shift
case $host in
    *[!A-Za-z0-9-]* | "") echo "agent.sh: refusing host name '$host'" >&2; exit 1 ;;
esac
if [ -n "${MH_DIR:-}" ]; then echo $$ >"$MH_DIR/$host.pid"; fi
# unshare execs bash in the new namespace: this process id is the host's first process.
exec unshare --uts /bin/bash -c "hostname $host || exit 1; $*"
