#!/bin/bash
# mh_two_hosts.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# The multi-node path for real, on two pretend hosts hA and hB of this machine
# (mhlib.sh: a UTS namespace and host name each, Open MPI's daemons started by
# agent.sh, TCP on the loopback interface between them), 2 hosts x 2 ranks
# against 1 host x 4 ranks (issue 21):
#  (a) node detection: the banner says "world size 4, 2 ranks per node, hosts:
#      hA hB", the reduction's summary "2 nodes", and --data-in-memory auto
#      holds "2 copies: one per node" (each host its own node-shared copy);
#  (b) in every --allreduce mode (shm, blocking, overlap) the parameters and
#      losses after 60 steps agree with 1 host x 4 ranks within 1e-4 (the
#      rank-equivalence tolerance of mpi_rank_independence), and so do three
#      hosts of 1, 1 and 2 ranks (three leaders, uneven nodes);
#  (c) the reduction crosses TCP: with Open MPI's TCP transport excluded
#      (btl self,vader) the 2-host job cannot start ("unable to reach each
#      other"), and during a 2-host run ss(8) shows an established TCP
#      connection between an mpivae rank of hA and one of hB;
#  (d) SIGUSR1 to mpirun stops the 2-host run with status 75 and a checkpoint;
#      resumed on the same 2 hosts, its final checkpoint equals bit for bit
#      that of an uninterrupted 2-host run;
#  (e) killing every process of host hB (its daemon and its ranks, SIGKILL)
#      ends the job within 30 s, non-zero, with Open MPI's message; the newest
#      checkpoint evaluates.
source "$(dirname "$0")/mhlib.sh"
mh_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
A=(--data s.h5 --hidden 32 --latent 4 --batch 16 --log-every 20)
STEPS=60

# ------------------------------------------------- (a), (b) 2 hosts x 2 against 1 host x 4, each mode
for mode in shm blocking overlap; do
    mh_cmd hA:2,hB:2 4
    run_ok "${MPI[@]}" "$M" train "${A[@]}" --steps $STEPS --allreduce $mode --out "h2$mode"
    cp "$WORK/last.out" "h2$mode.log"
    expect_grep "($mode) 2 hosts: the banner" "^mpivae .*: world size 4, 2 ranks per node, hosts: hA hB$" "h2$mode.log"
    mpi_cmd 4
    run_ok "${MPI[@]}" "$M" train "${A[@]}" --steps $STEPS --allreduce $mode --out "h1$mode"
    cp "$WORK/last.out" "h1$mode.log"
    expect_grep "($mode) 1 host: the banner" "^mpivae .*: world size 4, 4 ranks per node, hosts: [^ ]+$" "h1$mode.log"
    h5cmp params "h1$mode/checkpoints/step-$STEPS.h5" "h2$mode/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp loss h1$mode/metrics.h5 "h2$mode/metrics.h5" 1e-4 "$STEPS"
    grep -E "^allreduce|^step on rank 0" "h2$mode.log" | sed "s/^/[2 hosts, $mode] /"
    grep -E "^allreduce|^step on rank 0" "h1$mode.log" | sed "s/^/[1 host, $mode] /"
done
# Three hosts of uneven size (1, 1 and 2 ranks): three leaders, a node of one rank.
mh_cmd hA:1,hB:1,hC:2 4
run_ok "${MPI[@]}" "$M" train "${A[@]}" --steps $STEPS --out h3
cp "$WORK/last.out" h3.log
expect_grep "(a) 3 hosts: the banner" "^mpivae .*: world size 4, 1 to 2 ranks per node, hosts: hA hB hC$" h3.log
expect_grep "(a) 3 hosts: the reduction" "^allreduce \(shm: node shared memory, 3 nodes, MPI_Allreduce across nodes\)" h3.log
h5cmp params "h1shm/checkpoints/step-$STEPS.h5" "h3/checkpoints/step-$STEPS.h5" 1e-4
h5cmp loss h1shm/metrics.h5 h3/metrics.h5 1e-4 "$STEPS"
expect_grep "(a) the shm reduction sees the hosts as nodes" "^allreduce \(shm: node shared memory, 2 nodes, MPI_Allreduce across nodes\)" h2shm.log
expect_grep "(a) one copy of the data per host" "in shared memory, 2 copies: one per node" h2shm.log
expect_grep "(a) one copy of the data on 1 host" "in shared memory, 1 copy: one per node" h1shm.log

# ------------------------------------------------- (c) the traffic between hosts is TCP
mh_cmd hA:2,hB:2 4
RC=0
"${MPI[@]}" --mca btl self,vader "$M" train "${A[@]}" --steps 5 --out notcp >notcp.log 2>&1 || RC=$?
[ "$RC" -ne 0 ] || fail "(c) expected the 2-host job without the TCP transport to fail, found status 0"
expect_grep "(c) without TCP the hosts cannot reach each other" "unable to reach each other" notcp.log
note "(c) without btl tcp: status $RC, 'unable to reach each other'"
bg_start tcp.log env MPIVAE_TEST_STEP_DELAY_MS=50 "${MPI[@]}" "$M" train "${A[@]}" --steps 400 --out tcp
TCP=$BG_PID
wait_for_line "$TCP" tcp.log "^step 20/" 60
ss -tnpH state established >ss.txt 2>&1 || true
for h in hA hB; do host_pids "$h" >"$h.pids"; done
py_check "(c) a TCP connection between a rank of hA and a rank of hB" <<'PYEOF'
import re, sys
pids = {h: set(open(f"{h}.pids").read().split()) for h in ("hA", "hB")}
owner = {}  # (local, peer) -> (process name, pid)
for line in open("ss.txt"):
    f = line.split()
    m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
    if len(f) >= 4 and m:
        owner[(f[2], f[3])] = (m.group(1), m.group(2))
pairs = []
for (loc, peer), (name, pid) in owner.items():
    other = owner.get((peer, loc))
    if name == "mpivae" and other and other[0] == "mpivae" and pid in pids["hA"] and other[1] in pids["hB"]:
        pairs.append(f"{loc} (pid {pid}, hA) <-> {peer} (pid {other[1]}, hB)")
if not pairs:
    sys.exit(f"expected an established TCP connection between an mpivae rank of hA {sorted(pids['hA'])} and one of hB "
             f"{sorted(pids['hB'])}, found none among {len(owner)} sockets")
print(f"{len(pairs)} TCP connections between ranks of hA and hB, e.g. {pairs[0]}")
PYEOF
kill -USR1 "$TCP"
bg_wait "$TCP" 60
expect_status "(c) the run stopped by SIGUSR1" 75 "$BG_RC" tcp.log

# ------------------------------------------------- (d) SIGUSR1 and exact resume on 2 hosts
mh_cmd hA:2,hB:2 4
bg_start sig.log env MPIVAE_TEST_STEP_DELAY_MS=20 "${MPI[@]}" "$M" train "${A[@]}" --epochs 1000000 --log-every 5 --out sig
SIG=$BG_PID
wait_for_line "$SIG" sig.log '^step [0-9]+/' 60
kill -USR1 "$SIG"
bg_wait "$SIG" 60
expect_status "(d) SIGUSR1 to mpirun of the 2-host run" 75 "$BG_RC" sig.log
expect_grep "(d) SIGUSR1" "stopped by SIGUSR1 at step [0-9]+" sig.log
k=$(ckpt_attr "$(newest_ckpt sig)" step)
n=$((k + 23))
note "(d) SIGUSR1 stopped the 2-host run at step $k (in $BG_WAITED s); resuming to step $n"
run_ok "${MPI[@]}" "$M" train --resume auto --out sig --steps "$n"
expect_grep "(d) the resume" "resumed from sig/checkpoints/step-$k.h5 at step $k" "$WORK/last.out"
run_ok "${MPI[@]}" "$M" train "${A[@]}" --epochs 1000000 --steps "$n" --out sigfull
expect_identical "(d) stopped at $k by SIGUSR1 and resumed on 2 hosts, against uninterrupted" \
    "sig/checkpoints/step-$n.h5" "sigfull/checkpoints/step-$n.h5"

# ------------------------------------------------- (e) a host dies
mh_cmd hA:2,hB:2 4
bg_start dead.log env MPIVAE_TEST_STEP_DELAY_MS=30 "${MPI[@]}" "$M" train "${A[@]}" --epochs 1000000 --log-every 5 \
    --ckpt-every 10 --out dead
DEAD=$BG_PID
wait_for_line "$DEAD" dead.log '^checkpoint dead/checkpoints/step-20\.h5' 60
victims=$(host_pids hB | tr '\n' ' ')
others=$(host_pids hA | tr '\n' ' ')
nv=$(echo "$victims" | wc -w)
[ "$nv" -ge 3 ] || fail "(e) expected host hB's daemon and 2 ranks (3 processes or more), found $nv: $victims"
t_kill=$(now)
# shellcheck disable=SC2086
kill -KILL $victims
bg_wait "$DEAD" 60
t=$(elapsed "$t_kill")
note "(e) killed host hB ($nv processes: $victims); mpirun exited with status $BG_RC after $t s"
[ "$BG_RC" -ne 0 ] || fail "(e) expected mpirun to exit non-zero after host hB died, found 0"
awk -v t="$t" 'BEGIN { exit !(t <= 30) }' || fail "(e) expected the job to end within 30 s of host hB's death, found $t s"
grep -iE "lost communication|daemon|terminated|died|killed|aborted" dead.log | head -n 3 | sed 's/^/[mpirun] /'
grep -qiE "lost communication|daemon|terminated|died|killed|aborted" dead.log ||
    fail "(e) expected a message from mpirun about the lost host in dead.log, found: $(tail -n 5 dead.log)"
for p in $others; do
    ! is_alive "$p" || fail "(e) expected host hA's processes ($others) to end with the job, found $p alive"
done
run_ok "$M" eval --ckpt dead
grep -E "^(checkpoint|eval)" "$WORK/last.out" | sed 's/^/[eval] /'

cli_done
