# lib.sh: what the Fashion-MNIST benchmarks share (sourced, not run).
#
#   ROOT=... OUT=...; . "$ROOT/tests/bench/lib.sh"; bench_setup NAME
#
# bench_setup exports one thread per rank and Open MPI's settings for root and
# oversubscription, defines die (messages prefixed by NAME), and sets M
# (MPIVAE, default build/mpivae of the repository), DATA (default
# data/fashion-mnist.h5, imported when missing) and OUT (created) to absolute
# paths, and MPIEXEC (default mpirun).

die() { echo "${BENCH_NAME:-bench}: $*" >&2; exit 1; }

bench_setup() {
    BENCH_NAME=$1
    M=${MPIVAE:-$ROOT/build/mpivae}
    DATA=${DATA:-$ROOT/data/fashion-mnist.h5}
    MPIEXEC=${MPIEXEC:-mpirun}
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    [ -x "$M" ] || die "no executable mpivae at '$M' (build it, or set MPIVAE)"
    M=$(cd "$(dirname "$M")" && pwd)/$(basename "$M")
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    if [ ! -f "$DATA" ]; then
        echo "importing Fashion-MNIST into $DATA"
        mkdir -p "$(dirname "$DATA")"
        "$M" data fashion-mnist --out "$DATA"
    fi
    DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
}
