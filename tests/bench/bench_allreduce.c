/*
 * bench_allreduce.c: the time of MPI_Allreduce (float sum, in place) over
 * the ranks of MPI_COMM_WORLD for message sizes from 4 bytes to the gradient
 * block of the default MLP (652,824 floats, 2.6 MB) and beyond, median of
 * repeats after a warm-up; then the latency alpha and bandwidth beta of the
 * ring model T(n) = 2 (P - 1) alpha + 2 (P - 1) / P * 4 n / beta that
 * tests/bench/scaling_model.py uses (alpha from the smallest message, beta
 * from the largest). Rank 0 prints; run it as mpivae is run:
 *
 *   mpirun -np 2 build/tests/bench_allreduce [REPEATS]
 *   tests/bench/multihost.sh   (the same across two pretend hosts)
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    int reps = argc > 1 ? atoi(argv[1]) : 50;
    if (reps < 3) reps = 3;
    static const long sizes[] = { 1, 16, 256, 4096, 65536, 262144, 652824, 2097152 };
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    float *buf = malloc((size_t)sizes[ns - 1] * sizeof(float));
    double *t = malloc((size_t)reps * sizeof(double)), med[8];
    if (!buf || !t) MPI_Abort(MPI_COMM_WORLD, 1);
    for (long i = 0; i < sizes[ns - 1]; i++) buf[i] = 1e-3f * (float)(i % 1000);
    char name[MPI_MAX_PROCESSOR_NAME];
    int len;
    MPI_Get_processor_name(name, &len);
    if (rank == 0) printf("MPI_Allreduce over %d ranks (rank 0 on %s), median of %d\n%12s %12s %10s\n", P, name, reps, "floats", "bytes", "ms");
    for (int s = 0; s < ns; s++) {
        int n = (int)sizes[s];
        for (int w = 0; w < 5; w++) MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        for (int r = 0; r < reps; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            t[r] = MPI_Wtime() - t0;
            for (int i = 0; i < n && i < 16; i++) buf[i] = 1e-3f; /* keep values finite */
        }
        MPI_Allreduce(MPI_IN_PLACE, t, reps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD); /* the slowest rank's */
        qsort(t, (size_t)reps, sizeof(double), cmp_double);
        med[s] = t[reps / 2];
        if (rank == 0) printf("%12d %12ld %10.4f\n", n, 4L * n, 1e3 * med[s]);
    }
    if (rank == 0 && P > 1) {
        double alpha = med[0] / (2.0 * (P - 1));
        double beta = 2.0 * (P - 1) / P * 4.0 * (double)sizes[ns - 1] / (med[ns - 1] - 2.0 * (P - 1) * alpha);
        printf("ring model: alpha %.1f us, beta %.2f GB/s (--alpha-us %.1f --beta-gbs %.2f)\n", 1e6 * alpha, beta / 1e9,
               1e6 * alpha, beta / 1e9);
    }
    free(buf);
    free(t);
    MPI_Finalize();
    return 0;
}
