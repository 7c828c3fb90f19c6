/*
 * opts.c: the option parser of the subcommands (cli_parse, from a table of
 * cli_opt) and its parts: usage errors ("[rank 0] error: ... (see 'mpivae
 * CMD --help')"), strict numbers with ranges, names from a list, getopt's
 * unknown options and missing values, stray arguments, required options.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- strict values ---- */

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

/* The separator before item i of n in a list as a sentence reads it: "a", "a or b", "a, b or c" (last: " or "). */
static const char *list_sep(int i, int n, const char *last)
{
    return i == 0 ? "" : i == n - 1 ? last : ", ";
}

/* s is one of names[]: *out = values[i] (or i); else "FLAG 's' is not a, b or c". */
int cli_parse_enum(const char *cmd, const char *flag, const char *s, const char *const *names, const int *values, int *out)
{
    int n = 0;
    for (; names[n]; n++)
        if (!strcmp(s, names[n])) {
            *out = values ? values[n] : n;
            return 0;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list_sep(i, n, " or "), names[i]);
    return cli_usage_error(cmd, "%s '%s' is not %s", flag, s, list);
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
static int no_stray(const char *cmd, int argc, char **argv)
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

/* ---- the option tables ---- */

/* getopt_long returns OPT_VAL + i for option i of a table (beyond every character, so never '?' or ':'). */
#define OPT_VAL 256

/* Parses one option's value into its target. Returns 0 or EXIT_USAGE (after the message). */
static int set_option(const char *cmd, cli_opt *o, const char *arg)
{
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", o->name);
    switch (o->kind) {
    case CLI_INT: return cli_parse_int(cmd, flag, arg, o->lo, o->hi, o->target);
    case CLI_LONG: return cli_parse_long(cmd, flag, arg, o->lo, o->hi, o->target);
    case CLI_DOUBLE: return cli_parse_double(cmd, flag, arg, o->dlo, o->dhi, o->target);
    case CLI_ENUM: return cli_parse_enum(cmd, flag, arg, o->names, o->values, o->target);
    case CLI_CUSTOM: return o->parse(cmd, arg, o->target);
    case CLI_STRING: *(const char **)o->target = arg; return 0;
    case CLI_FLAG: *(int *)o->target = 1; return 0;
    }
    return 0;
}

/* The required options, when one is missing: "--ckpt FILE, --from I, --to J and --out OUT.png are required". */
static int check_required(const cli_cmd *c)
{
    int n = 0, missing = 0;
    for (const cli_opt *o = c->opts; o->name; o++)
        if (o->required) {
            n++;
            missing |= !o->set;
        }
    if (!missing) return 0;
    char list[256] = "";
    int i = 0;
    for (const cli_opt *o = c->opts; o->name; o++)
        if (o->required)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s--%s %s", list_sep(i++, n, " and "), o->name, o->metavar);
    return cli_usage_error(c->name, "%s %s required", list, n > 1 ? "are" : "is");
}

int cli_parse(const cli_cmd *c, int argc, char **argv)
{
    /* getopt_long's table: the command's options, then --help. */
    struct option longopts[CLI_MAX_OPTS + 2];
    int n = 0;
    for (cli_opt *o = c->opts; o->name; o++, n++) {
        if (n == CLI_MAX_OPTS) return cli_usage_error(c->name, "the parser takes at most %d options", CLI_MAX_OPTS);
        longopts[n] = (struct option){ o->name, o->kind == CLI_FLAG ? no_argument : required_argument, NULL, OPT_VAL + n };
        o->set = 0;
    }
    longopts[n] = (struct option){ "help", no_argument, NULL, 'h' };
    longopts[n + 1] = (struct option){ 0 };
    optind = 1;
    opterr = 0;
    int ch, rc = 0;
    while (!rc && (ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (ch == 'h') {
            if (cli_rank == 0) fputs(c->help, stdout);
            return CLI_HELP;
        }
        if (ch < OPT_VAL || ch >= OPT_VAL + n) return cli_bad_option(c->name, ch, argv);
        cli_opt *o = &c->opts[ch - OPT_VAL];
        rc = set_option(c->name, o, optarg);
        o->set = !rc;
    }
    if (rc) return rc;
    if (!c->operands && no_stray(c->name, argc, argv)) return EXIT_USAGE;
    return check_required(c);
}
