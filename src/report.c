/*
 * report.c: the run report, one self-contained HTML page (report.h), and
 * the metrics as CSV.
 *
 * The page is built in memory: the facts of each run (its sessions in
 * metrics.h5 and its newest checkpoint's configuration), one inline SVG
 * chart per curve with axes, ticks and units, the sample grids of the run
 * directory as data: URIs with a slider, the checkpoints, and the tool
 * outputs found beside them. Curves keep at most VAE_REPORT_MAX_POINTS
 * points (largest-triangle-three-buckets, which keeps the spikes a mean
 * would hide); the smoothed curve is an exponential moving average over all
 * rows, taken before the downsampling.
 */
#define _GNU_SOURCE
#include "mpivae/report.h"

#include "mpivae/checkpoint.h"
#include "mpivae/config.h"
#include "mpivae/family.h"
#include "mpivae/rundir.h"
#include "mpivae/status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- a growing string; an allocation failure is remembered and reported once ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* Text as HTML: & < > " ' escaped. */
static void sb_html(sbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_puts(b, "&amp;"); break;
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '"': sb_puts(b, "&quot;"); break;
        case '\'': sb_puts(b, "&#39;"); break;
        default: sb_put(b, s, 1);
        }
    }
}

static void sb_base64(sbuf *b, const unsigned char *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        q[0] = tab[v >> 18 & 63];
        q[1] = tab[v >> 12 & 63];
        q[2] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        sb_put(b, q, 4);
    }
}

/* An element id from any text: letters, digits, '-' and '_' kept, the rest '_'. */
static void safe_id(char *id)
{
    for (char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')) *p = '_';
}

/* ---- numbers on axes ---- */

/*
 * A tick label: on a linear axis with ticks `step` apart, as many decimals as
 * the step needs (trailing zeros dropped); powers of ten and large values in
 * the shortest form.
 */
static void fmt_tick(double v, double step, char *buf, size_t len)
{
    double a = fabs(v);
    if (v == 0.0) snprintf(buf, len, "0");
    else if (a >= 1e6 || step <= 0) snprintf(buf, len, "%g", v); /* 1e+06, 0.001, 2e-05, 500 */
    else {
        int dec = (int)ceil(-log10(step) - 1e-9);
        if (dec < 0) dec = 0;
        if (dec > 12) dec = 12;
        snprintf(buf, len, "%.*f", dec, v);
        if (strchr(buf, '.')) {
            char *e = buf + strlen(buf) - 1;
            while (*e == '0') *e-- = '\0';
            if (*e == '.') *e = '\0';
        }
    }
}

/* A "nice" number near x (1, 2 or 5 times a power of ten), rounded or at least x. */
static double nice_num(double x, int round)
{
    double e = floor(log10(x)), f = x / pow(10.0, e), nf;
    if (round) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
    return nf * pow(10.0, e);
}

/* An axis over [lo, hi] (in log10 units when log): its ends and tick values. */
typedef struct axis {
    double lo, hi;
    double ticks[32];
    int nt;
    int log;
    double step;  /* between linear ticks */
} axis;

static void axis_make(axis *a, double lo, double hi, int log)
{
    a->log = log;
    a->nt = 0;
    a->step = 0;
    if (log) {
        double l = floor(log10(lo)), h = ceil(log10(hi));
        if (h <= l) h = l + 1;
        a->lo = l;
        a->hi = h;
        int decades = (int)(h - l), step = decades > 8 ? (decades + 7) / 8 : 1;
        for (double e = l; e <= h + 1e-9 && a->nt < 30; e += step) {
            a->ticks[a->nt++] = e;
            if (decades <= 2 && e < h) {
                a->ticks[a->nt++] = e + log10(2.0);
                a->ticks[a->nt++] = e + log10(5.0);
            }
        }
        return;
    }
    if (!(hi - lo > 1e-9 * fmax(fabs(lo), fabs(hi)))) { /* a constant (up to rounding): a band around it */
        double d = lo != 0.0 ? fabs(lo) * 0.1 : 1.0;
        hi = lo;
        lo -= d;
        hi += d;
    }
    double range = nice_num(hi - lo, 0), step = nice_num(range / 5.0, 1);
    a->step = step;
    a->lo = floor(lo / step) * step;
    a->hi = ceil(hi / step) * step;
    for (double t = a->lo; t <= a->hi + step * 1e-6 && a->nt < 30; t += step) a->ticks[a->nt++] = fabs(t) < step * 1e-9 ? 0.0 : t;
}

static double axis_pos(const axis *a, double v, double p0, double p1)
{
    double t = a->log ? log10(v) : v;
    return p0 + (t - a->lo) / (a->hi - a->lo) * (p1 - p0);
}

/* ---- curves ---- */

/*
 * Largest-triangle-three-buckets: the m (< n) points of x, y that keep the
 * shape, the first and last among them. Writes ox, oy; returns m.
 */
static int lttb(const double *x, const double *y, int n, int m, double *ox, double *oy)
{
    if (n <= m) {
        memcpy(ox, x, (size_t)n * sizeof *x);
        memcpy(oy, y, (size_t)n * sizeof *y);
        return n;
    }
    double every = (double)(n - 2) / (m - 2);
    int a = 0, k = 0;
    ox[k] = x[0];
    oy[k++] = y[0];
    for (int i = 0; i < m - 2; i++) {
        int s = (int)floor((i + 1) * every) + 1, e = (int)floor((i + 2) * every) + 1;
        if (e > n) e = n;
        double ax = 0, ay = 0; /* the next bucket's mean */
        for (int j = s; j < e; j++) {
            ax += x[j];
            ay += y[j];
        }
        if (e > s) {
            ax /= e - s;
            ay /= e - s;
        } else {
            ax = x[n - 1];
            ay = y[n - 1];
        }
        int cs = (int)floor(i * every) + 1, ce = (int)floor((i + 1) * every) + 1, best = cs;
        double bestarea = -1;
        for (int j = cs; j < ce && j < n - 1; j++) {
            double area = fabs((x[a] - ax) * (y[j] - y[a]) - (x[a] - x[j]) * (ay - y[a]));
            if (area > bestarea) {
                bestarea = area;
                best = j;
            }
        }
        ox[k] = x[best];
        oy[k++] = y[best];
        a = best;
    }
    ox[k] = x[n - 1];
    oy[k++] = y[n - 1];
    return k;
}

/* A curve on a chart. */
typedef struct series {
    const char *kind;   /* raw, smooth, eval, hist */
    int run;
    double *x, *y;      /* n points (owned by the caller) */
    int n;
    const char *color;
    double opacity, width;
    int dots;           /* a dot on each vertex */
    const char *label;  /* legend text */
} series;

typedef struct marker {
    const char *cls;    /* "resume" or "skip" */
    long step;
    int run;
    const char *why;    /* skip: nonfinite, threshold */
    const char *title;
} marker;

/*
 * The rows of column c of t whose value is finite (positive when log), as
 * points (step, value), at most VAE_REPORT_MAX_POINTS of them; smooth: the
 * exponential moving average of those values over about n/40 rows instead.
 * x, y hold VAE_REPORT_MAX_POINTS; returns the count, or -1 when out of memory.
 */
static int curve(const vae_metrics_table *t, int c, int log, int smooth, double *x, double *y)
{
    long n = t->n;
    double *fx = malloc(((size_t)n + 1) * sizeof(double)), *fy = malloc(((size_t)n + 1) * sizeof(double));
    if (!fx || !fy) {
        free(fx);
        free(fy);
        return -1;
    }
    int k = 0;
    double span = n / 40.0 < 1 ? 1 : n / 40.0 > 500 ? 500 : n / 40.0, alpha = 2.0 / (span + 1.0), ema = 0, wsum = 0;
    for (long r = 0; r < n; r++) {
        double v = t->rows[(size_t)r * (size_t)t->nf + (size_t)c], st = t->rows[(size_t)r * (size_t)t->nf];
        /* Drawable values only: a range of two of them must be a finite double. */
        if (!(fabs(v) < 1e300) || !(fabs(st) < 1e300) || (log && v <= 0)) continue;
        if (smooth) { /* debiased, as TensorBoard's: the first values are not pulled towards 0 */
            ema = (1 - alpha) * ema + alpha * v;
            wsum = (1 - alpha) * wsum + alpha;
            v = ema / wsum;
        }
        fx[k] = st;
        fy[k++] = v;
    }
    int m = lttb(fx, fy, k, VAE_REPORT_MAX_POINTS, x, y);
    free(fx);
    free(fy);
    return m;
}

#define CW 600
#define CH 270
#define ML 66
#define MR 14
#define MT 12
#define MB 40

/*
 * One chart: <figure class="chart"> with a title, a legend, and an SVG with
 * axes, ticks, tick labels, axis titles, the series and the markers.
 */
static void chart(sbuf *b, const char *id, const char *title, const char *xlabel, const char *ylabel, int log, const series *s,
                  int ns, const marker *mk, int nm)
{
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int j = 0; j < s[i].n; j++) {
            if (s[i].x[j] < xlo) xlo = s[i].x[j];
            if (s[i].x[j] > xhi) xhi = s[i].x[j];
            if (s[i].y[j] < ylo) ylo = s[i].y[j];
            if (s[i].y[j] > yhi) yhi = s[i].y[j];
        }
    for (int i = 0; i < nm; i++) {
        if (mk[i].step < xlo) xlo = (double)mk[i].step;
        if (mk[i].step > xhi) xhi = (double)mk[i].step;
    }
    if (!(xlo <= xhi)) xlo = 0, xhi = 1;
    if (!(ylo <= yhi)) ylo = log ? 1 : 0, yhi = log ? 10 : 1;
    axis ax, ay;
    axis_make(&ax, xlo, xhi, 0);
    axis_make(&ay, ylo, yhi, log);
    const double x0 = ML, x1 = CW - MR, y0 = CH - MB, y1 = MT;
    sb_printf(b, "<figure class=\"chart\" id=\"chart-%s\" data-series=\"%d\" data-log=\"%d\">\n<figcaption>", id, ns, log);
    sb_html(b, title);
    sb_puts(b, "<span class=\"legend\">");
    for (int i = 0; i < ns; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= !strcmp(s[j].label, s[i].label) && !strcmp(s[j].color, s[i].color);
        if (dup) continue;
        sb_printf(b, "<span><i style=\"background:%s;opacity:%.2f\"></i>", s[i].color, s[i].opacity < 0.6 ? 0.6 : s[i].opacity);
        sb_html(b, s[i].label);
        sb_puts(b, "</span>");
    }
    sb_puts(b, "</span></figcaption>\n");
    sb_printf(b, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\">\n", CW, CH, CW, CH);
    /* Grid lines and ticks. */
    char lab[64];
    for (int i = 0; i < ay.nt; i++) {
        double py = y0 + (ay.ticks[i] - ay.lo) / (ay.hi - ay.lo) * (y1 - y0);
        fmt_tick(ay.log ? pow(10.0, ay.ticks[i]) : ay.ticks[i], ay.log ? 0 : ay.step, lab, sizeof lab);
        int major = !ay.log || fabs(ay.ticks[i] - round(ay.ticks[i])) < 1e-9;
        sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", x0, x1, py, py);
        sb_printf(b, "<text class=\"tick%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", major ? "" : " minor", x0 - 5, py + 4,
                  lab);
    }
    for (int i = 0; i < ax.nt; i++) {
        double px = x0 + (ax.ticks[i] - ax.lo) / (ax.hi - ax.lo) * (x1 - x0);
        fmt_tick(ax.ticks[i], ax.step, lab, sizeof lab);
        sb_printf(b, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", px, px, y0, y1);
        sb_printf(b, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px, y0 + 16, lab);
    }
    sb_printf(b, "<path class=\"axis\" d=\"M%.1f,%.1f L%.1f,%.1f L%.1f,%.1f\"/>\n", x0, y1, x0, y0, x1, y0);
    sb_printf(b, "<text class=\"label\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, CH - 4);
    sb_html(b, xlabel);
    sb_printf(b, "</text><text class=\"label\" transform=\"translate(13,%.1f) rotate(-90)\" text-anchor=\"middle\">", (y0 + y1) / 2);
    sb_html(b, ylabel);
    if (log) sb_puts(b, " (log scale)");
    sb_puts(b, "</text>\n");
    /* Markers under the curves. */
    for (int i = 0; i < nm; i++) {
        double px = axis_pos(&ax, (double)mk[i].step, x0, x1);
        int resume = !strcmp(mk[i].cls, "resume");
        sb_printf(b, "<g class=\"marker %s\" data-step=\"%ld\" data-run=\"%d\"", mk[i].cls, mk[i].step, mk[i].run);
        if (mk[i].why) sb_printf(b, " data-why=\"%s\"", mk[i].why);
        sb_puts(b, "><title>");
        sb_html(b, mk[i].title ? mk[i].title : "");
        sb_puts(b, "</title>");
        if (resume)
            sb_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text x=\"%.1f\" y=\"%.1f\">resumed</text>", px, px, y0,
                      y1, px + 3, y1 + 10);
        else
            sb_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><path d=\"M%.1f,%.1f l-4,-7 l8,0 z\"/>", px, px, y0, y1,
                      px, y1 + 7);
        sb_puts(b, "</g>\n");
    }
    sb_printf(b, "<clipPath id=\"clip-%s\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n", id, x0 - 4,
              y1 - 4, x1 - x0 + 8, y0 - y1 + 8);
    for (int i = 0; i < ns; i++) {
        if (s[i].n == 0) continue;
        sb_printf(b, "<path class=\"series\" data-kind=\"%s\" data-run=\"%d\" data-points=\"%d\" clip-path=\"url(#clip-%s)\" "
                     "stroke=\"%s\" stroke-opacity=\"%.2f\" stroke-width=\"%.1f\"%s",
                  s[i].kind, s[i].run, s[i].n, id, s[i].color, s[i].opacity, s[i].width, "");
        if (s[i].dots) /* a dot of the series' colour on each vertex (defs of the page: dot-RRGGBB) */
            sb_printf(b, " marker-start=\"url(#dot-%s)\" marker-mid=\"url(#dot-%s)\" marker-end=\"url(#dot-%s)\"", s[i].color + 1,
                      s[i].color + 1, s[i].color + 1);
        sb_puts(b, " d=\"");
        for (int j = 0; j < s[i].n; j++)
            sb_printf(b, "%s%.1f,%.1f", j ? " L" : "M", axis_pos(&ax, s[i].x[j], x0, x1), axis_pos(&ay, s[i].y[j], y0, y1));
        sb_puts(b, "\"><title>");
        sb_html(b, s[i].label);
        sb_puts(b, "</title></path>\n");
    }
    sb_puts(b, "</svg></figure>\n");
}

/* ---- a run as the page sees it ---- */

#define MAX_CKPT 64
#define MAX_TOOLS 12

typedef struct run_view {
    const char *dir;
    char name[256];             /* the directory's last component */
    vae_metrics own;            /* read from the file */
    const vae_metrics *mt;      /* own, or the live table */
    int have_cfg;               /* the newest checkpoint's configuration was read */
    vae_config cfg;
    vae_train_state st;
    char ckpt_note[512];        /* why no configuration was read */
    long ck[MAX_CKPT];          /* checkpoint steps, newest first */
    int nck;
    long *grid[2];              /* steps of prior-step-N.png and recon-step-N.png, ascending */
    int ngrid[2];
} run_view;

static const char *const grid_kinds[2] = { "prior", "recon" };

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* The steps N of DIR/samples/KIND-step-N.png, ascending. */
static void find_grids(run_view *v)
{
    char path[VAE_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/samples", v->dir);
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    int cap[2] = { 0, 0 };
    while ((e = readdir(d))) {
        for (int k = 0; k < 2; k++) {
            char pre[32];
            snprintf(pre, sizeof pre, "%s-step-", grid_kinds[k]);
            size_t pl = strlen(pre), l = strlen(e->d_name);
            char *end;
            if (strncmp(e->d_name, pre, pl) || l < pl + 5 || strcmp(e->d_name + l - 4, ".png")) continue;
            long step = strtol(e->d_name + pl, &end, 10);
            if (end != e->d_name + l - 4 || step < 0) continue;
            if (v->ngrid[k] == cap[k]) {
                int nc = cap[k] ? 2 * cap[k] : 64;
                long *g = nc <= (1 << 24) ? realloc(v->grid[k], (size_t)nc * sizeof(long)) : NULL;
                if (!g) break; /* the grids found so far */
                v->grid[k] = g;
                cap[k] = nc;
            }
            v->grid[k][v->ngrid[k]++] = step;
        }
    }
    closedir(d);
    for (int k = 0; k < 2; k++)
        if (v->ngrid[k]) qsort(v->grid[k], (size_t)v->ngrid[k], sizeof(long), cmp_long);
}

/* The newest checkpoint whose attributes read: its configuration and state. */
static void read_config(run_view *v)
{
    v->nck = vae_rundir_list_checkpoints(v->dir, v->ck, MAX_CKPT);
    if (v->nck < 0) v->nck = 0;
    for (int i = 0; i < v->nck && !v->have_cfg; i++) {
        char path[VAE_PATH_LEN + 64];
        snprintf(path, sizeof path, "%s/checkpoints/step-%ld.h5", v->dir, v->ck[i]);
        /* A checkpoint that does not read is a note on the page, not an error; a caller's deferral goes on. */
        int outer = vae_defer_active();
        vae_defer_begin();
        int rc = vae_ckpt_read_meta(path, &v->cfg, &v->st);
        if (rc && !v->ckpt_note[0]) {
            char msg[400] = "";
            vae_defer_take(msg, sizeof msg);
            snprintf(v->ckpt_note, sizeof v->ckpt_note, "%s", msg);
        }
        if (outer) vae_defer_begin(); /* the caller's, with no message yet (it had none, or it would not be here) */
        else vae_defer_end(0);
        v->have_cfg = rc == 0;
    }
    if (!v->nck) snprintf(v->ckpt_note, sizeof v->ckpt_note, "no checkpoint yet");
}

static int view_open(run_view *v, const char *dir, const vae_metrics *live)
{
    memset(v, 0, sizeof *v);
    v->dir = dir;
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/') l--;
    size_t s = l;
    while (s > 0 && dir[s - 1] != '/') s--;
    snprintf(v->name, sizeof v->name, "%.*s", (int)(l - s), dir + s);
    if (live) v->mt = live;
    else {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return vae_error(VAE_EIO, "cannot read the run directory '%s': %s", dir,
                             stat(dir, &sb) != 0 ? strerror(errno) : "not a directory");
        char p[VAE_PATH_LEN + 16];
        snprintf(p, sizeof p, "%s/metrics.h5", dir);
        if (stat(p, &sb) != 0) return vae_error(VAE_EIO, "'%s' is not a run directory: it has no metrics.h5", dir);
        int rc = vae_metrics_read(dir, &v->own);
        if (rc) return rc;
        v->mt = &v->own;
    }
    read_config(v);
    find_grids(v);
    return VAE_OK;
}

static void view_close(run_view *v)
{
    if (v->mt == &v->own) vae_metrics_close(&v->own);
    free(v->grid[0]);
    free(v->grid[1]);
}

/* The last value of a column (NAN when the table is empty). */
static double last_value(const vae_metrics_table *t, const char *name)
{
    int c = vae_metrics_col(t, name);
    return c >= 0 && t->n > 0 ? t->rows[(size_t)(t->n - 1) * (size_t)t->nf + (size_t)c] : NAN;
}

/* The resume markers: from the sessions, or (files of earlier versions) where the time column starts again. */
static int resume_markers(const run_view *v, int run, marker *mk, int max, char (*titles)[160])
{
    int n = 0;
    const vae_metrics *mt = v->mt;
    if (mt->n_sessions > 0) {
        for (int i = 0; i < mt->n_sessions && n < max; i++) {
            if (mt->sessions[i].step <= 0) continue;
            snprintf(titles[n], 160, "step %ld: resumed from its checkpoint with %ld ranks", mt->sessions[i].step, mt->sessions[i].ranks);
            mk[n] = (marker){ "resume", mt->sessions[i].step, run, NULL, titles[n] };
            n++;
        }
        return n;
    }
    const vae_metrics_table *t = &mt->t[0];
    int ct = vae_metrics_col(t, "time");
    for (long r = 1; ct >= 0 && r < t->n && n < max; r++)
        if (t->rows[(size_t)r * (size_t)t->nf + (size_t)ct] < t->rows[(size_t)(r - 1) * (size_t)t->nf + (size_t)ct]) {
            long step = (long)t->rows[(size_t)r * (size_t)t->nf] - 1;
            snprintf(titles[n], 160, "step %ld: resumed (seen where the run's clock starts again)", step);
            mk[n] = (marker){ "resume", step, run, NULL, titles[n] };
            n++;
        }
    return n;
}

static int skip_markers(const run_view *v, int run, marker *mk, int max, char (*titles)[160])
{
    const vae_metrics_table *t = &v->mt->t[0];
    int cs = vae_metrics_col(t, "skipped"), n = 0;
    for (long r = 0; cs >= 0 && r < t->n && n < max; r++) {
        double w = t->rows[(size_t)r * (size_t)t->nf + (size_t)cs];
        if (w == 0.0) continue;
        long step = (long)t->rows[(size_t)r * (size_t)t->nf];
        snprintf(titles[n], 160, "step %ld: %s", step,
                 w == 1.0 ? "skipped (a non-finite value)" : "update skipped (gradient norm over --skip-threshold)");
        mk[n] = (marker){ "skip", step, run, w == 1.0 ? "nonfinite" : "threshold", titles[n] };
        n++;
    }
    return n;
}

/* The family's kind of a term (VAE_TERM_ONE when unknown). */
static int term_kind(const run_view *v, const char *name)
{
    const vae_family *f = v->have_cfg ? vae_family_get(v->cfg.arch.kind) : NULL;
    for (int i = 0; f && i < f->n_terms; i++)
        if (!strcmp(f->terms[i].name, name)) return f->terms[i].kind;
    return VAE_TERM_ONE;
}

/* What a column means and its unit. */
static void column_text(const run_view *v, const char *name, char *title, size_t tl, char *unit, size_t ul)
{
    const char *loss_unit = v->have_cfg && v->cfg.arch.loss == VAE_LOSS_MSE ? "per sample" : "nats per sample";
    if (!strcmp(name, "loss")) snprintf(title, tl, "loss (the training objective)"), snprintf(unit, ul, "%s", loss_unit);
    else if (!strcmp(name, "beta")) snprintf(title, tl, "beta (KL weight)"), snprintf(unit, ul, "beta");
    else if (!strcmp(name, "lr")) snprintf(title, tl, "learning rate"), snprintf(unit, ul, "lr");
    else if (!strcmp(name, "grad_norm")) snprintf(title, tl, "gradient norm (global)"), snprintf(unit, ul, "L2 norm");
    else if (!strcmp(name, "samples_per_s")) snprintf(title, tl, "throughput"), snprintf(unit, ul, "samples/s");
    else if (term_kind(v, name) == VAE_TERM_STAT) snprintf(title, tl, "%s (a statistic, not in the loss)", name), snprintf(unit, ul, "mean");
    else snprintf(title, tl, "%s", name), snprintf(unit, ul, "%s", !strcmp(name, "recon") && v->have_cfg && v->cfg.arch.loss == VAE_LOSS_MSE ? "squared error per sample" : loss_unit);
}

/* A column's values all positive and spread over more than a factor 20 (or a norm): a log axis. */
static int wants_log(run_view *const *vs, int nv, const char *name)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < nv; k++) {
        const vae_metrics_table *t = &vs[k]->mt->t[0];
        int c = vae_metrics_col(t, name);
        for (long r = 0; c >= 0 && r < t->n; r++) {
            double x = t->rows[(size_t)r * (size_t)t->nf + (size_t)c];
            if (!isfinite(x)) continue;
            if (x <= 0) return 0;
            if (x < lo) lo = x;
            if (x > hi) hi = x;
        }
    }
    if (!(lo <= hi)) return 0;
    return !strcmp(name, "grad_norm") || hi / lo > 20.0;
}

/* The colours of runs (the first also of a single run's train curves), and of a single run's evaluations. */
#define EVAL_COLOR "#ff7f0e"
static const char *const palette[] = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf" };

/* The charts, one per column of /train: loss, the terms, beta, lr, grad_norm, samples_per_s. */
static int charts(sbuf *b, run_view *const *vs, int nv)
{
    /* The columns to draw: those of the first run, then the others' that it lacks. */
    const char *cols[VAE_METRICS_MAX_FIELDS * VAE_REPORT_MAX_RUNS];
    int nc = 0;
    static const char *const skip[] = { "step", "epoch", "skipped", "time" };
    for (int k = 0; k < nv; k++) {
        const vae_metrics_table *t = &vs[k]->mt->t[0];
        for (int f = 0; f < t->nf; f++) {
            int drop = 0;
            for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++) drop |= !strcmp(t->names[f], skip[i]);
            for (int i = 0; i < nc; i++) drop |= !strcmp(cols[i], t->names[f]);
            if (!drop) cols[nc++] = t->names[f];
        }
    }
    const int maxs = 3 * VAE_REPORT_MAX_RUNS, maxm = 1024;
    series *s = calloc((size_t)maxs, sizeof *s);
    marker *mk = calloc((size_t)maxm, sizeof *mk);
    char (*titles)[160] = calloc((size_t)maxm, sizeof *titles);
    double *buf = malloc((size_t)maxs * 2 * VAE_REPORT_MAX_POINTS * sizeof(double));
    char (*labels)[300] = calloc((size_t)maxs, sizeof *labels);
    int rc = s && mk && titles && buf && labels ? VAE_OK : VAE_ENOMEM;
    int nm = 0;
    for (int k = 0; k < nv && !rc; k++) {
        nm += resume_markers(vs[k], k, mk + nm, maxm - nm, titles + nm);
        nm += skip_markers(vs[k], k, mk + nm, maxm - nm, titles + nm);
    }
    for (int c = 0; c < nc && !rc; c++) {
        int log = wants_log(vs, nv, cols[c]), ns = 0;
        char title[128], unit[128];
        column_text(vs[0], cols[c], title, sizeof title, unit, sizeof unit);
        for (int k = 0; k < nv && !rc; k++) {
            for (int g = 0; g < 2; g++) {
                const vae_metrics_table *t = &vs[k]->mt->t[g];
                int col = vae_metrics_col(t, cols[c]);
                if (col < 0 || t->n == 0) continue;
                for (int smooth = nv > 1 || g == 1 ? 1 : 0; smooth < 2; smooth++) {
                    series *q = &s[ns];
                    q->x = buf + (size_t)ns * 2 * VAE_REPORT_MAX_POINTS;
                    q->y = q->x + VAE_REPORT_MAX_POINTS;
                    q->n = curve(t, col, log, g == 0 && smooth, q->x, q->y);
                    if (q->n < 0) {
                        rc = VAE_ENOMEM;
                        break;
                    }
                    if (q->n == 0) continue;
                    q->run = k;
                    q->kind = g == 1 ? "eval" : smooth ? "smooth" : "raw";
                    q->color = nv > 1 ? palette[k % 8] : g == 1 ? EVAL_COLOR : palette[0];
                    q->opacity = g == 0 && !smooth ? 0.3 : 1.0;
                    q->width = g == 1 ? 1.2 : smooth ? 1.8 : 1.0;
                    q->dots = g == 1;
                    if (nv > 1) snprintf(labels[ns], sizeof labels[ns], "%s%s", vs[k]->name, g == 1 ? " (eval)" : "");
                    else snprintf(labels[ns], sizeof labels[ns], "%s", g == 1 ? "eval (held-out)" : smooth ? "train (smoothed)" : "train");
                    q->label = labels[ns];
                    ns++;
                }
            }
        }
        if (rc || ns == 0) continue;
        char id[64];
        snprintf(id, sizeof id, "%s", cols[c]);
        safe_id(id);
        chart(b, id, title, "step", unit, log, s, ns, mk, nm);
    }
    free(s);
    free(mk);
    free(titles);
    free(buf);
    free(labels);
    return rc;
}

/* ---- images ---- */

/* Reads a whole file (at most max bytes). */
static unsigned char *slurp(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK); /* a FIFO named *.png must not block the run */
    if (fd < 0) return NULL;
    unsigned char *p = NULL;
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 && (size_t)sb.st_size <= max &&
        (p = malloc((size_t)sb.st_size))) {
        size_t got = 0;
        while (got < (size_t)sb.st_size) {
            ssize_t r = read(fd, p + got, (size_t)sb.st_size - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (got != (size_t)sb.st_size) {
            free(p);
            p = NULL;
        } else *len = got;
    }
    close(fd);
    return p;
}

/*
 * <img> of a PNG file as a data: URI, shown at scale times its size (at
 * most maxw wide); attrs go into the tag. 0, or -1 when the file is not a
 * readable PNG (nothing written).
 */
static int embed_png(sbuf *b, const char *path, const char *attrs, double scale, int maxw)
{
    size_t len = 0;
    unsigned char *p = slurp(path, 8u << 20, &len);
    static const unsigned char sig[8] = { 137, 'P', 'N', 'G', 13, 10, 26, 10 };
    if (!p || len < 24 || memcmp(p, sig, 8)) {
        free(p);
        return -1;
    }
    unsigned w = (unsigned)p[16] << 24 | (unsigned)p[17] << 16 | (unsigned)p[18] << 8 | p[19];
    unsigned h = (unsigned)p[20] << 24 | (unsigned)p[21] << 16 | (unsigned)p[22] << 8 | p[23];
    double dw = w * scale, dh = h * scale;
    if (dw > maxw) {
        dh *= maxw / dw;
        dw = maxw;
    }
    sb_printf(b, "<img %s width=\"%.0f\" height=\"%.0f\" alt=\"\" src=\"data:image/png;base64,", attrs, dw, dh);
    sb_base64(b, p, len);
    sb_puts(b, "\">");
    free(p);
    return 0;
}

/* The sample grids of a run: for each kind, up to VAE_REPORT_MAX_GRIDS steps evenly spaced, the newest among them. */
static void grids(sbuf *b, const run_view *v, int run)
{
    for (int k = 0; k < 2; k++) {
        int n = v->ngrid[k];
        if (n == 0) continue;
        int m = n < VAE_REPORT_MAX_GRIDS ? n : VAE_REPORT_MAX_GRIDS;
        sb_printf(b, "<div class=\"grids\"><h3>%s</h3>\n", k == 0 ? "Prior samples" : "Test images (odd rows) over their reconstructions (even rows)");
        sb_printf(b, "<input type=\"range\" class=\"grid-slider\" min=\"0\" max=\"%d\" value=\"%d\" step=\"1\"> <span class=\"grid-step\"></span><br>\n",
                  m - 1, m - 1);
        for (int i = 0; i < m; i++) {
            int j = m == 1 ? n - 1 : (int)((long)i * (n - 1) / (m - 1));
            char path[VAE_PATH_LEN + 64], attrs[128];
            snprintf(path, sizeof path, "%s/samples/%s-step-%06ld.png", v->dir, grid_kinds[k], v->grid[k][j]);
            struct stat sb;
            if (stat(path, &sb) != 0) snprintf(path, sizeof path, "%s/samples/%s-step-%ld.png", v->dir, grid_kinds[k], v->grid[k][j]);
            snprintf(attrs, sizeof attrs, "class=\"grid\" data-kind=\"%s\" data-step=\"%ld\" data-run=\"%d\"", grid_kinds[k], v->grid[k][j], run);
            embed_png(b, path, attrs, 2.0, 560);
        }
        sb_puts(b, "</div>\n");
    }
}

/* ---- the run's facts ---- */

/* The line of text starting with key in a banner (without the key), or "". */
static void banner_line(const char *banner, const char *key, char *out, size_t len)
{
    out[0] = '\0';
    for (const char *p = banner; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (!strncmp(p, key, strlen(key))) {
            snprintf(out, len, "%.*s", (int)(l - strlen(key)), p + strlen(key));
            return;
        }
        p = e ? e + 1 : NULL;
    }
}

static void fmt_time(double t, char *buf, size_t len)
{
    struct tm tm;
    time_t tt = isfinite(t) && t >= 0 && t < 1e11 ? (time_t)t : 0;
    if (!(isfinite(t) && t >= 0 && t < 1e11) || !gmtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm))
        snprintf(buf, len, "unknown");
}

static void fact_row(sbuf *b, const char *key, run_view *const *vs, int nv, void (*val)(sbuf *, const run_view *))
{
    sb_puts(b, "<tr><th>");
    sb_html(b, key);
    sb_puts(b, "</th>");
    for (int k = 0; k < nv; k++) {
        sb_puts(b, "<td>");
        val(b, vs[k]);
        sb_puts(b, "</td>");
    }
    sb_puts(b, "</tr>\n");
}

static const vae_metrics_session *newest(const run_view *v)
{
    return v->mt->n_sessions ? &v->mt->sessions[v->mt->n_sessions - 1] : NULL;
}

static void f_dir(sbuf *b, const run_view *v) { sb_html(b, v->dir); }

static void f_model(sbuf *b, const run_view *v)
{
    const vae_family *f = v->have_cfg ? vae_family_get(v->cfg.arch.kind) : NULL;
    if (!f) {
        sb_puts(b, "unknown: ");
        sb_html(b, v->ckpt_note);
        return;
    }
    char d[512];
    f->describe(&v->cfg.arch, d, sizeof d);
    sb_html(b, f->name);
    sb_html(b, d);
    if (f->labeled) sb_printf(b, " features %d, %d classes", v->cfg.arch.latent, v->cfg.arch.classes);
    else sb_printf(b, " latent %d, loss %s, beta %g", v->cfg.arch.latent, v->cfg.arch.loss == VAE_LOSS_MSE ? "mse" : "bce", v->cfg.beta);
    sb_printf(b, "; data %dx%dx%d", v->cfg.arch.C, v->cfg.arch.Hh, v->cfg.arch.W);
}

static void f_options(sbuf *b, const run_view *v)
{
    if (!v->have_cfg) {
        sb_puts(b, "unknown (no readable checkpoint)");
        return;
    }
    char opts[4096];
    vae_config_describe(&v->cfg, opts, sizeof opts);
    sb_puts(b, "<code>");
    sb_html(b, opts);
    sb_puts(b, "</code>");
}

static void f_progress(sbuf *b, const run_view *v)
{
    const vae_metrics_table *t = &v->mt->t[0], *e = &v->mt->t[1];
    if (t->n == 0) {
        sb_puts(b, "no step yet");
        return;
    }
    sb_printf(b, "step %.0f, epoch %.0f; train loss %.4g", last_value(t, "step"), last_value(t, "epoch"), last_value(t, "loss"));
    if (e->n) sb_printf(b, "; eval loss %.4g at step %.0f", last_value(e, "loss"), last_value(e, "step"));
    int cs = vae_metrics_col(t, "skipped");
    long sk[3] = { 0, 0, 0 };
    for (long r = 0; cs >= 0 && r < t->n; r++) {
        double w = t->rows[(size_t)r * (size_t)t->nf + (size_t)cs];
        if (w >= 0 && w <= 2) sk[(int)w]++;
    }
    sb_printf(b, "; %ld steps skipped (non-finite), %ld updates skipped (--skip-threshold)", sk[1], sk[2]);
}

static void f_ranks(sbuf *b, const run_view *v)
{
    const vae_metrics_session *s = newest(v);
    if (s) {
        sb_printf(b, "%ld rank%s on %ld node%s: ", s->ranks, s->ranks == 1 ? "" : "s", s->nodes, s->nodes == 1 ? "" : "s");
        sb_html(b, s->hosts);
    } else if (v->have_cfg) sb_printf(b, "%d ranks at the newest checkpoint (hosts not recorded by this run's version)", v->st.world_size);
    else sb_puts(b, "not recorded");
}

static void f_blas(sbuf *b, const run_view *v)
{
    const vae_metrics_session *s = newest(v);
    char l[512];
    banner_line(s ? s->banner : NULL, "threads: ", l, sizeof l);
    sb_html(b, l[0] ? l : "not recorded");
}

static void f_slurm(sbuf *b, const run_view *v)
{
    const vae_metrics_session *s = newest(v);
    if (!s) sb_puts(b, "not recorded");
    else if (s->slurm_job) sb_printf(b, "job %ld, restart count %ld", s->slurm_job, s->slurm_restart);
    else sb_puts(b, "not under Slurm");
}

static void f_sessions(sbuf *b, const run_view *v)
{
    int resumes = 0;
    for (int i = 0; i < v->mt->n_sessions; i++) resumes += v->mt->sessions[i].step > 0;
    if (v->mt->n_sessions) sb_printf(b, "%d (resumed %d time%s)", v->mt->n_sessions, resumes, resumes == 1 ? "" : "s");
    else sb_puts(b, "not recorded");
}

static void f_version(sbuf *b, const run_view *v)
{
    const vae_metrics_session *s = newest(v);
    char l[256] = "";
    if (s && !strncmp(s->banner, "mpivae ", 7)) snprintf(l, sizeof l, "%.*s", (int)strcspn(s->banner + 7, ":"), s->banner + 7);
    sb_html(b, l[0] ? l : "not recorded");
}

static void facts(sbuf *b, run_view *const *vs, int nv)
{
    sb_puts(b, "<table id=\"facts\">\n");
    if (nv > 1) {
        sb_puts(b, "<tr><th></th>");
        for (int k = 0; k < nv; k++) sb_printf(b, "<th><i class=\"swatch\" style=\"background:%s\"></i>", palette[k % 8]), sb_html(b, vs[k]->name), sb_puts(b, "</th>");
        sb_puts(b, "</tr>\n");
    }
    fact_row(b, "run directory", vs, nv, f_dir);
    fact_row(b, "model", vs, nv, f_model);
    fact_row(b, "options", vs, nv, f_options);
    fact_row(b, "progress", vs, nv, f_progress);
    fact_row(b, "ranks and hosts", vs, nv, f_ranks);
    fact_row(b, "OpenBLAS", vs, nv, f_blas);
    fact_row(b, "Slurm", vs, nv, f_slurm);
    fact_row(b, "processes", vs, nv, f_sessions);
    fact_row(b, "mpivae", vs, nv, f_version);
    sb_puts(b, "</table>\n");
}

static void sessions_table(sbuf *b, const run_view *v)
{
    const vae_metrics *mt = v->mt;
    if (mt->n_sessions == 0) {
        sb_puts(b, "<p>This run's metrics.h5 was written by an earlier version, which did not record its processes; "
                   "resumes are found where the run's clock starts again.</p>\n");
        return;
    }
    sb_puts(b, "<table id=\"sessions\">\n<tr><th>#</th><th>started</th><th>from step</th><th>ranks</th><th>nodes</th><th>hosts</th>"
               "<th>Slurm job</th><th>restart count</th></tr>\n");
    for (int i = 0; i < mt->n_sessions; i++) {
        const vae_metrics_session *s = &mt->sessions[i];
        char t[64];
        fmt_time(s->start, t, sizeof t);
        sb_printf(b, "<tr><td>%d</td><td>%s</td><td>%ld</td><td>%ld</td><td>%ld</td><td>", i + 1, t, s->step, s->ranks, s->nodes);
        sb_html(b, s->hosts);
        if (s->slurm_job) sb_printf(b, "</td><td>%ld</td><td>%ld</td></tr>\n", s->slurm_job, s->slurm_restart);
        else sb_puts(b, "</td><td>none</td><td></td></tr>\n");
    }
    sb_puts(b, "</table>\n");
    const vae_metrics_session *s = newest(v);
    sb_puts(b, "<details><summary>What the newest process printed at its start</summary><pre>");
    sb_html(b, s->banner);
    sb_puts(b, "</pre></details>\n");
}

static void checkpoints_table(sbuf *b, const run_view *v)
{
    if (v->nck == 0) {
        sb_puts(b, "<p>No checkpoint yet.</p>\n");
        return;
    }
    const vae_metrics_table *e = &v->mt->t[1];
    int cl = vae_metrics_col(e, "loss");
    sb_puts(b, "<table id=\"checkpoints\">\n<tr><th>step</th><th>file</th><th>size</th><th>eval loss</th></tr>\n");
    for (int i = 0; i < v->nck; i++) {
        char path[VAE_PATH_LEN + 64];
        snprintf(path, sizeof path, "%s/checkpoints/step-%ld.h5", v->dir, v->ck[i]);
        struct stat sb;
        double size = stat(path, &sb) == 0 ? (double)sb.st_size : -1;
        sb_printf(b, "<tr><td>%ld</td><td>checkpoints/step-%ld.h5</td><td>", v->ck[i], v->ck[i]);
        if (size < 0) sb_puts(b, "gone");
        else if (size >= 1 << 20) sb_printf(b, "%.1f MiB", size / (1 << 20));
        else sb_printf(b, "%.1f KiB", size / 1024);
        sb_puts(b, "</td><td>");
        const char *ev = "no eval at this step";
        for (long r = 0; cl >= 0 && r < e->n; r++)
            if ((long)e->rows[(size_t)r * (size_t)e->nf] == v->ck[i]) {
                sb_printf(b, "%.4f", e->rows[(size_t)r * (size_t)e->nf + (size_t)cl]);
                ev = NULL;
            }
        if (ev) sb_puts(b, ev);
        sb_puts(b, "</td></tr>\n");
    }
    sb_puts(b, "</table>\n");
}

/* ---- tool outputs found in the run directory ---- */

/* A float dataset of an HDF5 file, all of it (NULL when absent). */
/* Opens an HDF5 file to read without HDF5's file locks (a tool may be writing beside it), quietly. */
static hid_t open_quiet(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return fid;
}

static float *read_floats(const char *path, const char *name, long *n)
{
    hid_t fid = open_quiet(path);
    if (fid < 0) return NULL;
    float *v = NULL;
    if (H5Lexists(fid, name, H5P_DEFAULT) > 0) {
        hid_t ds = H5Dopen2(fid, name, H5P_DEFAULT);
        hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
        hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        if (np > 0 && np < (1 << 26) && (v = malloc((size_t)np * sizeof(float)))) {
            if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
                free(v);
                v = NULL;
            } else *n = (long)np;
        }
        if (sp >= 0) H5Sclose(sp);
        if (ds >= 0) H5Dclose(ds);
    }
    H5Fclose(fid);
    return v;
}

static int h5_has(const char *path, const char *name)
{
    hid_t fid = open_quiet(path);
    if (fid < 0) return 0;
    int has = H5Lexists(fid, name, H5P_DEFAULT) > 0;
    H5Fclose(fid);
    return has;
}

/* The anomaly scores of base.h5 as a histogram chart with axes. */
static void score_histogram(sbuf *b, const char *h5, const char *name)
{
    long n = 0;
    float *v = read_floats(h5, "/score", &n);
    if (!v) return;
    enum { NB = 50 };
    double lo = INFINITY, hi = -INFINITY;
    for (long i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (v[i] < lo) lo = v[i];
            if (v[i] > hi) hi = v[i];
        }
    if (!(lo <= hi) || !isfinite(hi - lo)) { /* no finite score, or a range a double cannot hold */
        free(v);
        return;
    }
    if (!(hi > lo)) hi = lo + fmax(1.0, fabs(lo) * 1e-6);
    double cnt[NB] = { 0 }, x[2 * NB], y[2 * NB];
    for (long i = 0; i < n; i++)
        if (isfinite(v[i])) {
            double k = floor((v[i] - lo) / (hi - lo) * NB);
            cnt[k < 0 ? 0 : k > NB - 1 ? NB - 1 : (int)k] += 1;
        }
    for (int k = 0; k < NB; k++) {
        x[2 * k] = lo + (hi - lo) * k / NB;
        x[2 * k + 1] = lo + (hi - lo) * (k + 1) / NB;
        y[2 * k] = y[2 * k + 1] = cnt[k];
    }
    series s = { "hist", 0, x, y, 2 * NB, "#1f77b4", 1.0, 1.5, 0, "rows per bin" };
    char id[320], title[420];
    snprintf(id, sizeof id, "anomaly-%s", name);
    safe_id(id);
    snprintf(title, sizeof title, "anomaly scores of %s.h5: %ld rows", name, n);
    chart(b, id, title, "score (negative ELBO, nats)", "rows", 0, &s, 1, NULL, 0);
    free(v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void tools(sbuf *b, const run_view *v)
{
    DIR *d = opendir(v->dir);
    if (!d) return;
    char *names[1024]; /* at most 1024 PNG files are looked at */
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] != '.' && l > 4 && !strcmp(e->d_name + l - 4, ".png") && (names[n] = strdup(e->d_name))) n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    sb_puts(b, "<section id=\"tools\"><h2>Tool outputs in the run directory</h2>\n");
    int shown = 0;
    for (int i = 0; i < n; i++) {
        char png[VAE_PATH_LEN + 300], h5[VAE_PATH_LEN + 300], base[300];
        size_t l = strlen(names[i]);
        snprintf(png, sizeof png, "%s/%s", v->dir, names[i]);
        if (shown >= MAX_TOOLS) { /* counted, not opened */
            shown++;
            continue;
        }
        const char *tool = "image";
        int hist = l > 9 && !strcmp(names[i] + l - 9, "-hist.png"), top = l > 8 && !strcmp(names[i] + l - 8, "-top.png");
        snprintf(base, sizeof base, "%.*s", (int)(l - (hist ? 9 : top ? 8 : 4)), names[i]);
        snprintf(h5, sizeof h5, "%s/%s.h5", v->dir, base);
        if ((hist || top) && h5_has(h5, "/score")) {
            if (hist) { /* the PNG has no axes: drawn again from the scores */
                shown++;
                score_histogram(b, h5, base);
                continue;
            }
            tool = "anomaly-top";
        } else if (h5_has(h5, "/values") && h5_has(h5, "/dims")) tool = "traverse";
        else if (h5_has(h5, "/inputs")) tool = "interpolate";
        else if (h5_has(h5, "/z")) tool = "sample";
        else if (h5_has(h5, "/images")) tool = "reconstruct";
        shown++;
        char attrs[128];
        snprintf(attrs, sizeof attrs, "class=\"tool\" data-tool=\"%s\"", tool);
        sb_puts(b, "<figure class=\"tool\">");
        if (embed_png(b, png, attrs, 2.0, 900) == 0) {
            sb_printf(b, "<figcaption>%s: ", tool);
            sb_html(b, names[i]);
            sb_puts(b, "</figcaption>");
        } else {
            sb_puts(b, "<figcaption>");
            sb_html(b, names[i]);
            sb_puts(b, ": not a readable PNG</figcaption>");
        }
        sb_puts(b, "</figure>\n");
    }
    if (shown == 0) sb_puts(b, "<p>None yet: <code>mpivae traverse --ckpt DIR --out DIR/traverse.png</code>, and the other tools, "
                              "show here when their output is in the run directory.</p>\n");
    else if (shown > MAX_TOOLS) sb_printf(b, "<p>%d more not shown.</p>\n", shown - MAX_TOOLS);
    sb_puts(b, "</section>\n");
    for (int i = 0; i < n; i++) free(names[i]);
}

/* ---- the page ---- */

static const char css[] =
    "body{font:14px/1.4 system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:20px;color:#222;max-width:1300px}"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #ddd}h3{font-size:14px;margin:8px 0}"
    ".status{color:#555;margin-bottom:12px}table{border-collapse:collapse;margin:4px 0}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f6f6f6;font-weight:600}"
    "code{font-size:12px}pre{font-size:12px;background:#f6f6f6;padding:8px;overflow-x:auto}"
    ".charts{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figure.chart{border:1px solid #e4e4e4;padding:6px}"
    "figcaption{font-weight:600;font-size:13px}.legend{font-weight:400;margin-left:10px;font-size:12px}"
    ".legend span{margin-right:10px}.legend i,.swatch{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}"
    "svg text{font-size:11px;fill:#333}svg .tick.minor{fill:#999}svg .label{font-size:12px;fill:#222}"
    "svg .grid{stroke:#eee}svg .axis{stroke:#444;fill:none}svg path.series{fill:none;stroke-linejoin:round}"
    "svg .resume line{stroke:#2ca02c;stroke-dasharray:4 3}svg .resume text{fill:#2ca02c}"
    "svg .skip line{stroke:#d62728;stroke-opacity:.5}svg .skip path{fill:#d62728}"
    ".grids{display:inline-block;vertical-align:top;margin-right:24px}img.grid,img.tool{image-rendering:pixelated;display:block;margin-top:4px}"
    "figure.tool{display:inline-block;margin:0 16px 16px 0;vertical-align:top}";

static const char script[] =
    "document.querySelectorAll('.grids').forEach(function(g){"
    "var im=g.querySelectorAll('img.grid'),s=g.querySelector('input.grid-slider'),c=g.querySelector('.grid-step');"
    "function show(i){im.forEach(function(x,j){x.style.display=j==i?'block':'none';});"
    "c.textContent='step '+im[i].dataset.step+' ('+(i+1)+' of '+im.length+')';}"
    "s.addEventListener('input',function(){show(+s.value);});show(+s.value);});";

static void page(sbuf *b, run_view *const *vs, int nv, int refresh_s)
{
    char now[64];
    fmt_time((double)time(NULL), now, sizeof now);
    sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    if (refresh_s > 0) sb_printf(b, "<meta http-equiv=\"refresh\" content=\"%d\">\n", refresh_s);
    sb_puts(b, "<title>");
    if (nv == 1) sb_html(b, vs[0]->name), sb_puts(b, ": mpivae run report");
    else sb_printf(b, "mpivae: %d runs compared", nv);
    sb_printf(b, "</title>\n<style>%s</style></head><body>\n", css);
    sb_puts(b, "<svg width=\"0\" height=\"0\" style=\"position:absolute\"><defs>");
    for (int k = 0; k < 9; k++) {
        const char *c = k < 8 ? palette[k] : EVAL_COLOR;
        sb_printf(b, "<marker id=\"dot-%s\" viewBox=\"0 0 6 6\" refX=\"3\" refY=\"3\" markerWidth=\"5\" markerHeight=\"5\">"
                     "<circle cx=\"3\" cy=\"3\" r=\"2.5\" fill=\"%s\"/></marker>", c + 1, c);
    }
    sb_puts(b, "</defs></svg>\n");
    if (nv == 1) {
        sb_puts(b, "<h1>");
        sb_html(b, vs[0]->name);
        sb_puts(b, "</h1>\n");
    } else {
        sb_printf(b, "<h1>%d runs compared</h1>\n", nv);
    }
    if (refresh_s > 0)
        sb_printf(b, "<div class=\"status\"><b>The run is going on</b>: the training writes this page again after each "
                     "evaluation, and the page reloads itself every %d s.</div>\n", refresh_s);
    sb_printf(b, "<div class=\"status\">Written %s by mpivae %s. Curves: %s; at most %d points each (downsampled by "
                 "largest-triangle-three-buckets, which keeps spikes).</div>\n",
              now, MPIVAE_VERSION, nv == 1 ? "train values faint, smoothed (exponential moving average) strong, held-out evaluations dotted"
                                            : "each run's smoothed train values, and its held-out evaluations dotted",
              VAE_REPORT_MAX_POINTS);
    sb_puts(b, "<h2>The run</h2>\n");
    facts(b, vs, nv);
    if (nv == 1) sessions_table(b, vs[0]);
    sb_puts(b, "<h2>Curves</h2>\n<p>Green dashed lines: a process resumed from the checkpoint of that step. Red lines with a "
               "triangle: a skipped step.</p>\n<div class=\"charts\">\n");
    if (charts(b, vs, nv)) b->oom = 1;
    sb_puts(b, "</div>\n<h2>Samples over time</h2>\n");
    for (int k = 0; k < nv; k++) {
        if (nv > 1) {
            sb_puts(b, "<h3>");
            sb_html(b, vs[k]->name);
            sb_puts(b, "</h3>\n");
        }
        if (vs[k]->ngrid[0] + vs[k]->ngrid[1] == 0) sb_puts(b, "<p>No sample grids yet (written every --sample-every steps).</p>\n");
        grids(b, vs[k], k);
    }
    if (nv == 1) {
        sb_puts(b, "<h2>Checkpoints</h2>\n");
        checkpoints_table(b, vs[0]);
        tools(b, vs[0]);
    }
    sb_printf(b, "<script>%s</script>\n</body></html>\n", script);
}

/* Writes data to path through a temporary name, fsync and rename. */
static int publish(const char *path, const char *data, size_t n)
{
    char tmp[VAE_PATH_LEN + 64];
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path + 1) : 0;
    snprintf(tmp, sizeof tmp, "%.*s.%s.tmp-%ld", dl, path, path + dl, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return vae_error(VAE_EIO, "cannot write '%s': %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    int err = off < n ? errno : 0;
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) {
        unlink(tmp);
        return vae_error(VAE_EIO, "cannot write '%s': %s", path, strerror(err ? err : EIO));
    }
    char dir[VAE_PATH_LEN + 64];
    snprintf(dir, sizeof dir, "%.*s", dl ? dl : 1, dl ? path : ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0) { /* the rename is done; a lost directory entry is the old page's */ }
        close(dfd);
    }
    return VAE_OK;
}

int vae_report_write(const char *out, const char *const *dirs, int n, const vae_metrics *live, int refresh_s)
{
    if (n < 1 || n > VAE_REPORT_MAX_RUNS)
        return vae_error(VAE_EINVAL, "a report shows 1 to %d runs, not %d", VAE_REPORT_MAX_RUNS, n);
    run_view *v = calloc((size_t)n, sizeof *v);
    run_view *vs[VAE_REPORT_MAX_RUNS];
    if (!v) return vae_error(VAE_ENOMEM, "cannot hold %d runs for the report", n);
    int rc = VAE_OK, opened = 0;
    for (int k = 0; k < n && !rc; k++, opened++) {
        rc = view_open(&v[k], dirs[k], k == 0 ? live : NULL);
        vs[k] = &v[k];
    }
    sbuf b = { 0 };
    if (!rc) page(&b, vs, n, refresh_s);
    if (!rc && b.oom) rc = vae_error(VAE_ENOMEM, "cannot hold the report page '%s'", out);
    if (!rc) rc = publish(out, b.p, b.n);
    free(b.p);
    for (int k = 0; k < opened; k++) view_close(&v[k]);
    free(v);
    return rc;
}

/* The CSV of a group with values to `digits` significant digits. */
static int write_csv(const char *dir, const char *group, FILE *f, int digits)
{
    vae_metrics mt;
    int rc = vae_metrics_read(dir, &mt);
    if (rc) return rc;
    const vae_metrics_table *t = !strcmp(group, "/eval") ? &mt.t[1] : &mt.t[0];
    for (int c = 0; c < t->nf; c++) fprintf(f, "%s%s", c ? "," : "", t->names[c]);
    fputc('\n', f);
    for (long r = 0; r < t->n; r++) {
        for (int c = 0; c < t->nf; c++) {
            double x = t->rows[(size_t)r * (size_t)t->nf + (size_t)c];
            const char *n = t->names[c];
            if (!strcmp(n, "step") || !strcmp(n, "epoch") || !strcmp(n, "skipped")) fprintf(f, "%s%lld", c ? "," : "", (long long)x);
            else fprintf(f, "%s%.*g", c ? "," : "", digits, x);
        }
        fputc('\n', f);
    }
    vae_metrics_close(&mt);
    if (fflush(f) != 0 || ferror(f)) return vae_error(VAE_EIO, "cannot write the CSV of '%s/metrics.h5': %s", dir, strerror(errno));
    return VAE_OK;
}

int vae_report_csv(const char *dir, const char *group, FILE *f) { return write_csv(dir, group, f, 17); }

/* Prints CSV text as right-aligned columns. */
static int align(const char *csv, FILE *f)
{
    int width[VAE_METRICS_MAX_FIELDS] = { 0 };
    for (int pass = 0; pass < 2; pass++) {
        int c = 0;
        for (const char *p = csv; *p;) {
            size_t l = strcspn(p, ",\n");
            if (c < VAE_METRICS_MAX_FIELDS) {
                if (pass == 0 && (int)l > width[c]) width[c] = (int)l;
                if (pass == 1) fprintf(f, "%s%*.*s", c ? "  " : "", width[c], (int)l, p);
            }
            p += l;
            if (*p == ',') c++, p++;
            else if (*p == '\n') {
                if (pass == 1) fputc('\n', f);
                c = 0;
                p++;
            }
        }
    }
    if (fflush(f) != 0 || ferror(f)) return vae_error(VAE_EIO, "cannot write the metrics: %s", strerror(errno));
    return VAE_OK;
}

int vae_report_table(const char *dir, const char *group, FILE *f)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    int rc = mem ? write_csv(dir, group, mem, 6) : vae_error(VAE_ENOMEM, "cannot hold the metrics of '%s'", dir);
    if (mem) fclose(mem);
    if (!rc) rc = align(buf, f);
    free(buf);
    return rc;
}
