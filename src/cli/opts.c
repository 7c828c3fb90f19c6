/*
 * opts.c: option parsing shared by the subcommands: strict numbers with
 * ranges, usage errors ("[rank 0] error: ... (see 'mpivae CMD --help')"),
 * getopt's unknown options and missing values, stray arguments.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Prints a usage error once (rank 0) and returns the usage exit status. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    if (cli_rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "[rank 0] error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see 'mpivae %s --help')\n", cmd);
        va_end(ap);
    }
    return EXIT_USAGE;
}

/* ---- strict number parsing ---- */

int cli_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return cli_usage_error(cmd, "%s '%s' is not an integer", flag, s);
    if (v < lo || v > hi) return cli_usage_error(cmd, "%s %ld is out of range %ld..%ld", flag, v, lo, hi);
    *out = v;
    return 0;
}

int cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out)
{
    long v = 0;
    int rc = cli_parse_long(cmd, flag, s, lo, hi, &v);
    if (!rc) *out = (int)v;
    return rc;
}

int cli_parse_double(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return cli_usage_error(cmd, "%s '%s' is not a number", flag, s);
    if (v < lo || v > hi) return cli_usage_error(cmd, "%s %g is out of range [%g, %g]", flag, v, lo, hi);
    *out = v;
    return 0;
}

/*
 * Test hook of the command-line fuzzer (tests/fuzz): with MPIVAE_TEST_PARSE_ONLY=1
 * every command returns after checking its arguments, before it reads or writes a file.
 */
int cli_parse_only(void)
{
    const char *e = getenv("MPIVAE_TEST_PARSE_ONLY");
    return e && e[0] == '1';
}

/* Every argument is an option: a stray one (a second checkpoint, a file name) is an error, not ignored. */
int cli_no_stray(const char *cmd, int argc, char **argv)
{
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* Handles getopt's '?' and ':' results with one clear message. */
int cli_bad_option(const char *cmd, int c, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':') return cli_usage_error(cmd, "option '%s' needs a value", arg);
    return cli_usage_error(cmd, "unknown option '%s' for 'mpivae %s'", arg, cmd);
}
