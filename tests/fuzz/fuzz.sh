#!/usr/bin/env bash
# Runs one libFuzzer program for a given time, going on after each finding.
#
#   bash tests/fuzz/fuzz.sh BUILD TARGET SECONDS [WORKDIR]
#
# BUILD is a build folder configured with CC=clang-14 -DMPIVAE_FUZZ=ON; TARGET
# is data, ckpt or cli. WORKDIR (default /tmp/mpivae-fuzz-TARGET) keeps the
# growing corpus (started from tests/fuzz/corpus/TARGET) and the findings
# (artifacts/crash-*, leak-*, oom-*, timeout-*), so a second run goes on from
# the first. libFuzzer stops at a finding; this script starts it again with
# the time left, and at the end prints the executions, the coverage and the
# findings. Minimize a finding before committing it to the corpus:
#   BUILD/tests/fuzz_TARGET -minimize_crash=1 -runs=2000 -exact_artifact_path=OUT FINDING
# Limits: -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=30. One process:
# run the targets one after another on a small machine.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 BUILD data|ckpt|cli SECONDS [WORKDIR]" >&2
  exit 2
fi
build=$1 target=$2 seconds=$3
src=$(cd "$(dirname "$0")" && pwd)
work=${4:-/tmp/mpivae-fuzz-$target}
bin=$build/tests/fuzz_$target
[ -x "$bin" ] || { echo "$0: no $bin (configure with CC=clang-14 -DMPIVAE_FUZZ=ON)" >&2; exit 2; }
mkdir -p "$work/corpus" "$work/artifacts"
cp -n "$src/corpus/$target/"* "$work/corpus/" 2>/dev/null || true
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export LSAN_OPTIONS=suppressions=$src/lsan.supp:print_suppressions=0
opts=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=30 -print_final_stats=1
      -artifact_prefix="$work/artifacts/")
case $target in
  cli) opts+=(-max_len=4096 -dict="$src/cli.dict") ;;
  *) opts+=(-max_len=512) ;;
esac
start=$(date +%s) runs=0 execs=0
while :; do
  left=$(( seconds - ($(date +%s) - start) ))
  [ "$left" -gt 5 ] || break
  runs=$((runs + 1))
  log=$work/run-$runs.log
  "$bin" "${opts[@]}" -max_total_time="$left" "$work/corpus" >"$log" 2>&1 || true
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=$((execs + ${n:-0}))
  grep -m1 -E "^==[0-9]+==ERROR|^SUMMARY|fuzz oracle:|^==[0-9]+== ERROR: libFuzzer" "$log" || true
  if ! grep -q INITED "$log"; then
    # A case of the corpus fails as it is loaded: set it aside (named seed-*) and start again.
    art=$(sed -n "s/.*Test unit written to //p" "$log" | tail -1)
    [ -n "$art" ] || break
    sum=${art##*-}
    moved=0
    for f in "$work/corpus"/*; do
      if [ "$(sha1sum <"$f" | cut -d' ' -f1)" = "$sum" ]; then
        mv "$f" "$work/artifacts/seed-$(basename "$f")"
        moved=1
      fi
    done
    [ "$moved" = 1 ] || break
  fi
done
cov=$(grep -E "^#[0-9]+" "$work"/run-*.log | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' | sort -n | tail -1)
echo "fuzz_$target: $seconds s in $runs runs, $execs executions, coverage (cov ft) $cov," \
     "corpus $(ls "$work/corpus" | wc -l) files; findings in $work/artifacts:"
ls "$work/artifacts"
