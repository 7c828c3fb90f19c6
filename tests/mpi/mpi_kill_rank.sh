#!/bin/bash
# mpi_kill_rank.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# Promise 4 of DESIGN.md: one rank's failure stops every rank within seconds,
# never a hang. For P = 2 and P = 4: an open-ended training run under mpirun
# in the background; once it logs step lines, rank 1 (found among mpirun's
# children by OMPI_COMM_WORLD_RANK, or as a child whose command line has the
# run's --out folder and is not rank 0) is killed with SIGKILL. Asserts that
# mpirun exits non-zero within 30 s of the kill (the time is printed), and
# that afterwards no mpivae process of that run is left.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4

# procs_of_run DIR: pids of live mpivae processes (argv[0] is mpivae; not the
# launcher) whose command line has DIR.
procs_of_run() {
    local p cl a0
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" != "$$" ] || continue
        cl=$( { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
        a0=${cl%% *}
        [ "${a0##*/}" = mpivae ] || continue
        case " $cl " in
            *" $1 "*) is_alive "$p" && echo "$p" ;;
        esac
    done
    return 0
}

# rank_pid MPIRUN_PID DIR R: pid of rank R among mpirun's children (by
# OMPI_COMM_WORLD_RANK, or PMI_RANK / PMIX_RANK for other launchers).
rank_pid() {
    local c env
    for c in $(pgrep -P "$1" || true); do
        { tr '\0' ' ' <"/proc/$c/cmdline"; } 2>/dev/null | grep -F -- " $2 " >/dev/null || continue
        env=$( { tr '\0' '\n' <"/proc/$c/environ"; } 2>/dev/null) || continue
        if printf '%s\n' "$env" | grep -xE "(OMPI_COMM_WORLD_RANK|PMI_RANK|PMIX_RANK)=$3" >/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 0
}

for P in 2 4; do
    out="run$P"
    mpi_cmd "$P"
    bg_start "run$P.log" "${MPI[@]}" "$M" train --data s.h5 --hidden 32 --latent 4 --batch 16 \
        --epochs 1000000 --log-every 20 --out "$out"
    pid=$BG_PID
    wait_for_line "$pid" "run$P.log" '^step [0-9]+/' 60
    victim=$(rank_pid "$pid" "$out" 1)
    [ -n "$victim" ] || fail "P=$P: expected a child of mpirun (pid $pid) running rank 1 with --out $out, found none: $(pgrep -P "$pid" | tr '\n' ' ')"
    n_before=$(procs_of_run "$out" | wc -l)
    expect_eq "P=$P: mpivae processes of the run before the kill" "$P" "$n_before"
    t_kill=$(now)
    kill -KILL "$victim"
    bg_wait "$pid" 30
    t=$(elapsed "$t_kill")
    note "P=$P: killed rank 1 (pid $victim); mpirun exited with status $BG_RC $t s after the kill"
    [ "$BG_RC" -ne 0 ] || { tail -n 20 "run$P.log" >&2; fail "P=$P: expected mpirun to exit non-zero after a rank was killed, found 0"; }
    awk -v t="$t" 'BEGIN { exit !(t <= 30) }' || fail "P=$P: expected mpirun to exit within 30 s of the kill, found $t s"
    left=""
    for _ in $(seq 1 30); do      # up to 3 s for the last exits to be reaped
        left=$(procs_of_run "$out" | tr '\n' ' ')
        [ -z "$left" ] && break
        sleep 0.1
    done
    [ -z "$left" ] || fail "P=$P: expected no mpivae process of the run left after mpirun exited, found: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo " (pid $p)"; done)"
done

cli_done
