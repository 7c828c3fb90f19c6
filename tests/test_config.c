/*
 * test_config.c: the configuration table (config.h), in process.
 *
 * (a) Round trip: every field is set from command-line text to a value other
 *     than its default; the configuration goes into a checkpoint
 *     (vae_ckpt_save) and back (vae_ckpt_read_meta), and a resume that
 *     gives nothing (vae_config_merge_resume) ends with it: every stored
 *     field reads back the same, and prints as the text given (numbers in
 *     their shortest form). Fields of one command only (--allreduce,
 *     --data-in-memory, --out) come from the resuming command line.
 * (b) Resume: for every field, a command line that gives a value other than
 *     the checkpoint's is refused (VAE_EINVAL, naming the flag) when the
 *     field may not change, and taken when it may; the same value given is
 *     never refused.
 * (c) A checkpoint whose 'model' names no family of this build is refused
 *     (VAE_EDATA) with a message naming the file, the attribute and the
 *     value; so is an unknown 'loss'.
 * (d) Every field's default parses, --help lists every flag, and a bad value
 *     of each numeric field is refused with a message naming the flag.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/checkpoint.h"
#include "mpivae/config.h"
#include "mpivae/model.h"
#include "mpivae/status.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static char g_dir[256];

/* A value of field f other than its default, as command-line text, and what it prints as. */
static void other_value(int f, char *text, size_t len)
{
    const vae_field *F = &vae_config_fields[f];
    switch (F->type) {
    case VAE_FT_INT:
    case VAE_FT_LONG:
    case VAE_FT_SEED: snprintf(text, len, "%ld", F->ilo + 7 <= F->ihi ? F->ilo + 7 : F->ihi); break;
    case VAE_FT_DOUBLE: snprintf(text, len, "%.17g", F->dlo + (F->dhi - F->dlo) * 0.37); break;
    case VAE_FT_CHOICE: snprintf(text, len, "%s", F->choices[1]); break;
    case VAE_FT_FAMILY: snprintf(text, len, "conv"); break;
    case VAE_FT_HIDDEN: snprintf(text, len, "7,5"); break;
    case VAE_FT_GROUPS: snprintf(text, len, "1,3"); break;
    case VAE_FT_CAPACITY: snprintf(text, len, "3.5:77"); break;
    case VAE_FT_DATA: snprintf(text, len, "some/where.h5:/a/b"); break;
    case VAE_FT_TESTDATA: snprintf(text, len, "else/where.h5:/c"); break;
    case VAE_FT_LABELS: snprintf(text, len, "its/labels.h5:/l/%s", F->flag); break;
    default: snprintf(text, len, "%s/run", g_dir); break;
    }
}

/* The message of a failing call made between vae_defer_begin and here. */
static void take(char *msg, size_t len)
{
    msg[0] = '\0';
    vae_defer_take(msg, len);
    vae_defer_end(0);
}

static int save(const vae_config *c, char *path, size_t len)
{
    vae_model m;
    int rc = vae_model_init(&m, &c->arch, 2);
    CHECK_EQ(rc, 0);
    if (rc) return rc;
    vae_model_init_params(&m, 3);
    vae_train_state st = { .step = 12, .epoch = 1, .epoch_step = 2, .adam_t = 11, .skips = 0, .world_size = 2, .data_rows = 40 };
    rc = vae_ckpt_save(c->out, &m, c, &st, 3, path, len);
    CHECK_EQ(rc, 0);
    vae_model_free(&m);
    return rc;
}

static void round_trip(void)
{
    vae_config given, back, merged;
    vae_train_state st;
    char text[VAE_FIELD_TEXT_MAX], got[VAE_FIELD_TEXT_MAX], why[512], path[2048];
    vae_config_defaults(&given);
    uint64_t set = 0;
    for (int f = 0; f < vae_config_nfields; f++) {
        other_value(f, text, sizeof text);
        int rc = vae_config_set(&given, f, text, why, sizeof why);
        CHECK_EQ(rc, 0);
        if (rc) printf("--%s %s: %s\n", vae_config_fields[f].flag, text, why);
        set |= vae_config_bit(f);
    }
    given.arch.C = 1;
    given.arch.Hh = 8;
    given.arch.W = 12;
    /* Each field prints as given (the data specs, normalised, as given too). */
    for (int f = 0; f < vae_config_nfields; f++) {
        other_value(f, text, sizeof text);
        vae_config_format(&given, f, got, sizeof got);
        if (vae_config_fields[f].type == VAE_FT_DOUBLE || vae_config_fields[f].type == VAE_FT_CAPACITY) {
            vae_config tmp = given;
            CHECK_EQ(vae_config_set(&tmp, f, got, why, sizeof why), 0);
            CHECK(vae_config_same(&tmp, &given, f));
        } else if (strcmp(text, got)) {
            printf("--%s: given '%s', prints '%s'\n", vae_config_fields[f].flag, text, got);
            CHECK(0);
        }
    }
    if (save(&given, path, sizeof path)) return;
    CHECK_EQ(vae_ckpt_read_meta(path, &back, &st), 0);
    CHECK_EQ(back.arch.C, 1);
    CHECK_EQ(back.arch.Hh, 8);
    CHECK_EQ(back.arch.W, 12);
    int stored = 0;
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        if (!F->attr) continue;
        stored++;
        if (!vae_config_same(&given, &back, f)) {
            vae_config_format(&given, f, text, sizeof text);
            vae_config_format(&back, f, got, sizeof got);
            printf("field --%s (attribute %s): saved '%s', read '%s'\n", F->flag, F->attr, text, got);
            CHECK(0);
        }
    }
    CHECK(stored >= vae_config_nfields - 1); /* only --allreduce is not stored */
    /* A resume that gives nothing but --out and --resume auto: the checkpoint's configuration. */
    vae_config cmd;
    vae_config_defaults(&cmd);
    snprintf(cmd.out, sizeof cmd.out, "%s", given.out);
    merged = cmd;
    vae_config_merge_resume(&merged, &back, vae_config_bit(vae_config_field("out")), "auto");
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        const vae_config *want = F->resume == VAE_RESUME_RUN ? &cmd : &given;
        if (!vae_config_same(&merged, want, f)) {
            vae_config_format(want, f, text, sizeof text);
            vae_config_format(&merged, f, got, sizeof got);
            printf("resume: --%s is '%s', expected '%s'\n", F->flag, got, text);
            CHECK(0);
        }
    }
}

static void resume_rules(void)
{
    vae_config ck, given;
    char text[VAE_FIELD_TEXT_MAX], msg[1024], why[512];
    vae_config_defaults(&ck);
    ck.arch.C = 1;
    ck.arch.Hh = 8;
    ck.arch.W = 8;
    snprintf(ck.data, sizeof ck.data, "%s/gone.h5:/train/images", g_dir); /* gone: other --data is taken */
    int refused = 0, taken = 0;
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        given = ck;
        other_value(f, text, sizeof text);
        CHECK_EQ(vae_config_set(&given, f, text, why, sizeof why), 0);
        /* The same value given is never refused. */
        vae_defer_begin();
        CHECK_EQ(vae_config_check_resume(&ck, &ck, vae_config_bit(f), "ck.h5"), 0);
        take(msg, sizeof msg);
        vae_defer_begin();
        int rc = vae_config_check_resume(&given, &ck, vae_config_bit(f), "ck.h5");
        take(msg, sizeof msg);
        if (F->resume == VAE_RESUME_FIXED) {
            CHECK_EQ(rc, VAE_EINVAL);
            char want[64];
            snprintf(want, sizeof want, "--%s ", F->flag);
            CHECK(strstr(msg, want) != NULL && strstr(msg, "ck.h5") != NULL);
            if (!strstr(msg, want)) printf("--%s: message '%s'\n", F->flag, msg);
            refused++;
        } else if (F->resume == VAE_RESUME_CHANGE || F->resume == VAE_RESUME_RUN) {
            CHECK_EQ(rc, 0);
            vae_config merged = given;
            vae_config_merge_resume(&merged, &ck, vae_config_bit(f), "auto");
            CHECK(vae_config_same(&merged, &given, f));
            taken++;
        }
    }
    printf("resume: %d fields refused when changed, %d taken\n", refused, taken);
    CHECK(refused >= 10);
    CHECK(taken >= 10);
}

/* Rewrites string attribute name of the checkpoint at path. */
static void set_string_attr(const char *path, const char *name, const char *value)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    H5Adelete(f, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, t, value) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

static void unknown_names(void)
{
    vae_config c, back;
    vae_train_state st;
    char path[2048], msg[1024];
    vae_config_defaults(&c);
    c.arch.C = 1;
    c.arch.Hh = 4;
    c.arch.W = 4;
    c.arch.hidden[0] = 5;
    c.arch.latent = 2;
    snprintf(c.out, sizeof c.out, "%s/names", g_dir);
    if (save(&c, path, sizeof path)) return;
    CHECK_EQ(vae_ckpt_read_meta(path, &back, &st), 0);
    set_string_attr(path, "model", "hierarchical-9");
    vae_defer_begin();
    CHECK_EQ(vae_ckpt_read_meta(path, &back, &st), VAE_EDATA);
    take(msg, sizeof msg);
    CHECK(strstr(msg, path) && strstr(msg, "'model'") && strstr(msg, "'hierarchical-9'") && strstr(msg, "mlp, conv"));
    printf("unknown model: %s\n", msg);
    set_string_attr(path, "model", "mlp");
    set_string_attr(path, "loss", "huber");
    vae_defer_begin();
    CHECK_EQ(vae_ckpt_read_meta(path, &back, &st), VAE_EDATA);
    take(msg, sizeof msg);
    CHECK(strstr(msg, path) && strstr(msg, "'loss'") && strstr(msg, "'huber'"));
    printf("unknown loss: %s\n", msg);
}

static void parsing(void)
{
    vae_config c;
    char why[512];
    vae_config_defaults(&c);
    CHECK_EQ(c.arch.kind, VAE_MODEL_MLP);
    CHECK_EQ(c.arch.hidden[0], 400);
    CHECK_EQ(c.arch.latent, 20);
    CHECK_CMP_DBL(c.lr, ==, 1e-3);
    CHECK_CMP_DBL(c.capacity_max, ==, -1.0);
    CHECK_EQ(c.in_memory, -1);
    /* conv's own defaults when --hidden and --latent are not given. */
    CHECK_EQ(vae_config_set(&c, vae_config_field("model"), "conv", why, sizeof why), 0);
    vae_config_family_defaults(&c, vae_config_bit(vae_config_field("model")));
    CHECK_EQ(c.arch.n_hidden, 2);
    CHECK_EQ(c.arch.hidden[1], 64);
    CHECK_EQ(c.arch.latent, 16);
    CHECK_CMP_DBL(c.ema, ==, 0.0);
    CHECK_CMP_DBL(c.beta, ==, 1.0);
    /* vaegan's own training options (option_defaults) unless given: --beta given keeps its value. */
    CHECK_EQ(vae_config_set(&c, vae_config_field("model"), "vaegan", why, sizeof why), 0);
    CHECK_EQ(vae_config_set(&c, vae_config_field("beta"), "2", why, sizeof why), 0);
    vae_config_family_defaults(&c, vae_config_bit(vae_config_field("model")) | vae_config_bit(vae_config_field("beta")));
    CHECK_CMP_DBL(c.ema, ==, 0.999);
    CHECK_CMP_DBL(c.disc_lr, ==, 3e-4);
    CHECK_CMP_DBL(c.beta, ==, 2.0);
    vae_config_family_defaults(&c, vae_config_bit(vae_config_field("model")));
    CHECK_CMP_DBL(c.beta, ==, 0.5);
    CHECK_EQ(vae_config_set(&c, vae_config_field("model"), "nosuch", why, sizeof why), VAE_EINVAL);
    CHECK(strstr(why, "--model 'nosuch'") && strstr(why, "mlp, conv"));
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        if (F->type != VAE_FT_INT && F->type != VAE_FT_LONG && F->type != VAE_FT_DOUBLE && F->type != VAE_FT_SEED) continue;
        vae_config t = c;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", F->flag);
        CHECK_EQ(vae_config_set(&t, f, "12x", why, sizeof why), VAE_EINVAL);
        CHECK(strstr(why, flag) != NULL);
        CHECK_EQ(vae_config_set(&t, f, "-5", why, sizeof why), VAE_EINVAL);
        CHECK(strstr(why, flag) != NULL && strstr(why, "out of range") != NULL);
    }
    /* --help names every flag. */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    vae_config_help(mem);
    fclose(mem);
    for (int f = 0; f < vae_config_nfields; f++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s ", vae_config_fields[f].flag);
        CHECK(strstr(buf, flag) != NULL);
    }
    free(buf);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/test_config.XXXXXX");
    if (!mkdtemp(g_dir)) return 2;
    round_trip();
    resume_rules();
    unknown_names();
    parsing();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) printf("could not remove %s\n", g_dir);
    printf("test_config: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures != 0;
}
