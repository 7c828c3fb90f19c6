/*
 * fuzz_common.h: what the three fuzz harnesses share (tests/fuzz/fuzz_*.c).
 *
 * An input is read front to back as a stream of choices: fz_pick(in, n) takes
 * one byte modulo n, fz_u64 eight bytes; an exhausted input reads as zeros,
 * so every byte string decodes to some description and the first choice of
 * each list is the plain case. Each harness works in one mkdtemp folder
 * (removed at exit) and sends the library's messages to nowhere unless
 * MPIVAE_FUZZ_VERBOSE=1. An oracle failure (a promise of DESIGN.md broken
 * without a crash) calls fz_fail, which prints the case and aborts, so
 * libFuzzer and the replay driver count it like a crash.
 * Included by one source file per program (static state).
 */
#ifndef MPIVAE_TESTS_FUZZ_COMMON_H
#define MPIVAE_TESTS_FUZZ_COMMON_H

#include <ftw.h>
#include <mpi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FZ_ASAN 1
#endif
#endif
#ifdef FZ_ASAN
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#define FZ_LSAN_DISABLE() __lsan_disable()
#define FZ_LSAN_ENABLE() __lsan_enable()
#else
#define FZ_LSAN_DISABLE() ((void)0)
#define FZ_LSAN_ENABLE() ((void)0)
#endif

/* Defined only when libFuzzer is linked in. */
extern size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size) __attribute__((weak));

typedef struct fz_in {
    const uint8_t *p; /* [n] the rest of the input */
    size_t n;
} fz_in;

static inline unsigned fz_byte(fz_in *in)
{
    if (in->n == 0) return 0;
    in->n--;
    return *in->p++;
}

/* A choice among n (n >= 1). */
static inline unsigned fz_pick(fz_in *in, unsigned n) { return fz_byte(in) % n; }

static inline uint64_t fz_u64(fz_in *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)fz_byte(in) << (8 * i);
    return v;
}

static int fz_verbose;
static char fz_dir[256];
static FILE *fz_null;

__attribute__((unused)) static int fz_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes everything under path, path included. */
__attribute__((unused)) static void fz_rm_tree(const char *path) { nftw(path, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

__attribute__((unused)) static void fz_cleanup(void)
{
    if (fz_dir[0]) fz_rm_tree(fz_dir);
}

/*
 * Once per process: the work folder, and the library's messages (stdout,
 * stderr) sent to /dev/null unless MPIVAE_FUZZ_VERBOSE=1. Only the FILE
 * pointers move: file descriptor 2 stays, so sanitizer reports still show.
 */
__attribute__((unused)) static void fz_setup(const char *name)
{
    const char *v = getenv("MPIVAE_FUZZ_VERBOSE");
    fz_verbose = v && v[0] == '1';
    const char *tmp = getenv("TMPDIR");
    snprintf(fz_dir, sizeof fz_dir, "%s/mpivae-%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", name);
    if (!mkdtemp(fz_dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(fz_cleanup);
#ifdef FZ_ASAN
    /* A sanitizer report skips atexit; under libFuzzer its own death callback (which saves the case) stays. */
    if (!fz_verbose && !LLVMFuzzerMutate) __sanitizer_set_death_callback(fz_cleanup);
#endif
    fz_null = fopen("/dev/null", "w");
    if (!fz_null) abort();
    if (!fz_verbose) {
        stdout = fz_null;
        stderr = fz_null;
    }
}


/*
 * Starts MPI (once per process) for a harness. Open MPI's own handlers of
 * SIGSEGV, SIGBUS, SIGFPE and SIGABRT are switched off (opal_signal), so that
 * the sanitizers' and libFuzzer's stay in place and a crash leaves its report
 * and its test case.
 */
__attribute__((unused)) static void fz_mpi_init(int *argc, char ***argv)
{
    int up = 0;
    MPI_Initialized(&up);
    if (up) return;
    setenv("OMPI_MCA_opal_signal", "", 1);
    /* What Open MPI allocates for good in MPI_Init is not a leak of the code under test. */
    FZ_LSAN_DISABLE();
    MPI_Init(argc, argv);
    FZ_LSAN_ENABLE();
}

/* An oracle failed: says what, on the real stderr, and aborts. */
static void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn, unused));
static void fz_fail(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dprintf(2, "fuzz oracle: %s\n", msg);
    if (!fz_verbose) fz_cleanup(); /* abort() skips atexit; MPIVAE_FUZZ_VERBOSE=1 keeps the files */
    abort();
}

#ifdef H5_VERS_MAJOR
/*
 * HDF5 identifiers open, by kind (files, groups, datatypes, dataspaces,
 * datasets, attributes, property lists): a harness takes them before and
 * after a case, and an identifier the case left open is a leak (STYLE.md:
 * whoever opens a handle closes it on every path).
 */
#define FZ_N_ID_TYPES 7
static const H5I_type_t fz_id_types[FZ_N_ID_TYPES] = { H5I_FILE, H5I_GROUP, H5I_DATATYPE, H5I_DATASPACE,
                                                       H5I_DATASET, H5I_ATTR, H5I_GENPROP_LST };
static const char *const fz_id_names[FZ_N_ID_TYPES] = { "file", "group", "datatype", "dataspace", "dataset",
                                                        "attribute", "property list" };

__attribute__((unused)) static void fz_count_ids(hsize_t *n)
{
    for (int i = 0; i < FZ_N_ID_TYPES; i++) {
        n[i] = 0;
        H5Inmembers(fz_id_types[i], &n[i]);
    }
}

__attribute__((unused)) static void fz_check_ids(const hsize_t *before, const char *what)
{
    hsize_t after[FZ_N_ID_TYPES];
    fz_count_ids(after);
    for (int i = 0; i < FZ_N_ID_TYPES; i++)
        if (after[i] > before[i])
            fz_fail("%s left %llu HDF5 %s identifier(s) open", what, (unsigned long long)(after[i] - before[i]),
                    fz_id_names[i]);
}
#endif

/* Prints to the real stderr when MPIVAE_FUZZ_VERBOSE=1 (the decoded case). */
static void fz_note(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void fz_note(const char *fmt, ...)
{
    if (!fz_verbose) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dprintf(2, "case: %s\n", msg);
}

#endif
