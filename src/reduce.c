/*
 * reduce.c: the three gradient reductions and the update (see reduce.h).
 */
#define _GNU_SOURCE
#include "mpivae/reduce.h"

#include "mpivae/comm.h"
#include "mpivae/optim.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill_terms(vae_reducer *r);

/*
 * Overlapped gradient reduction: as backward finishes each layer, its range
 * joins a pending bucket; a bucket of at least min_bucket floats (or the last
 * one) is started with MPI_Iallreduce, and the outstanding ones are tested so
 * that MPI makes progress while backward goes on. The first bucket also
 * carries the step statistics at the end of the block.
 */
struct vae_overlap {
    MPI_Comm comm;
    float *grads;
    size_t pend_hi, min_bucket;
    MPI_Request req[VAE_MAX_READY + 1];
    int nreq, rc;
    vae_reducer *r;
};

static void on_grad_ready(void *ctx, size_t lo, size_t hi)
{
    vae_overlap *o = ctx;
    (void)hi;
    fill_terms(o->r);
    if (o->pend_hi - lo >= o->min_bucket || lo == 0) {
        int rc = MPI_Iallreduce(MPI_IN_PLACE, o->grads + lo, (int)(o->pend_hi - lo), MPI_FLOAT, MPI_SUM, o->comm,
                                &o->req[o->nreq++]);
        if (rc != MPI_SUCCESS) o->rc = rc;
        o->pend_hi = lo;
    }
    int flag;
    if (o->nreq) MPI_Testall(o->nreq, o->req, &flag, MPI_STATUSES_IGNORE);
}

/*
 * Node-shared reduction and update (--allreduce shm). Every rank's gradient
 * block lives in one MPI-3 shared-memory window per node, and so do one copy
 * per node of the parameters and the Adam moments, which all the node's ranks
 * train with. A step:
 *   1. backward into the rank's own block; barrier;
 *   2. rank r of the node's n ranks sums its slice of all n blocks into the
 *      node leader's block (a reduce-scatter by direct loads and stores, in a
 *      fixed order) and squares each norm block for the gradient norm as
 *      soon as it is summed (while it is in cache); barrier;
 *      with several nodes, the leaders then sum their blocks with one
 *      MPI_Allreduce (barrier) and the slices are squared after it (barrier);
 *   3. every rank reads the norm and the step statistics, and applies Adam to
 *      its own slice of the shared parameters; barrier.
 * The slices are whole blocks of the gradient norm (optim.h), so the norm is
 * the same sum in the same order as in the other reduction modes, and Adam is
 * elementwise, so the result is bit for bit that of one rank updating all.
 * The blocks are cleared where they are read (the other ranks' slices in 2,
 * the leader's in 3), so no pass zeroes them before the next backward; each
 * rank only writes its own statistics slots at the start of a step.
 */
struct vae_shm_reduce {
    MPI_Win win, swin;
    MPI_Comm node, leaders;
    int nr, ns, nleaders, active;
    size_t n, np, nb;   /* floats in a gradient block, parameters, norm blocks of the block */
    size_t blo, bhi;    /* this rank's norm blocks */
    size_t lo, hi;      /* this rank's floats */
    float **seg;        /* seg[q]: node rank q's gradient block */
    float *state;       /* the node's parameters, Adam m and v [3 np] */
    double *part;       /* [nb] squared norms of the blocks */
    float *own[3];      /* the model's private parameters, m and v, put back at the end */
};

static void shm_sync(vae_shm_reduce *s)
{
    MPI_Win_sync(s->win);
    MPI_Win_sync(s->swin);
    MPI_Barrier(s->node);
    MPI_Win_sync(s->win);
    MPI_Win_sync(s->swin);
}

static int shm_init(vae_shm_reduce *s, MPI_Comm comm, size_t np, size_t extra)
{
    int rank;
    memset(s, 0, sizeof *s);
    s->node = s->leaders = MPI_COMM_NULL;
    s->win = s->swin = MPI_WIN_NULL;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &s->node);
    MPI_Comm_rank(s->node, &s->nr);
    /* Test hook: MPIVAE_TEST_RANKS_PER_NODE=k splits a node into groups of k ranks, as if they were nodes. */
    const char *k_env = getenv("MPIVAE_TEST_RANKS_PER_NODE");
    int k = k_env ? atoi(k_env) : 0;
    if (k > 0) {
        MPI_Comm sub;
        MPI_Comm_split(s->node, s->nr / k, s->nr, &sub);
        MPI_Comm_free(&s->node);
        s->node = sub;
        MPI_Comm_rank(s->node, &s->nr);
    }
    MPI_Comm_size(s->node, &s->ns);
    MPI_Comm_split(comm, s->nr == 0 ? 0 : MPI_UNDEFINED, rank, &s->leaders);
    s->nleaders = 0;
    if (s->leaders != MPI_COMM_NULL) MPI_Comm_size(s->leaders, &s->nleaders);
    MPI_Bcast(&s->nleaders, 1, MPI_INT, 0, s->node);
    s->np = np;
    s->n = np + extra;
    s->nb = vae_norm_nblocks(s->n);
    s->blo = s->nb * (size_t)s->nr / (size_t)s->ns;
    s->bhi = s->nb * (size_t)(s->nr + 1) / (size_t)s->ns;
    s->lo = s->blo * VAE_NORM_BLOCK < s->n ? s->blo * VAE_NORM_BLOCK : s->n;
    s->hi = s->bhi * VAE_NORM_BLOCK < s->n ? s->bhi * VAE_NORM_BLOCK : s->n;
    float *base = NULL;
    s->seg = calloc((size_t)s->ns, sizeof(float *));
    int rc = s->seg ? MPI_Win_allocate_shared((MPI_Aint)(s->n * sizeof(float)), sizeof(float), MPI_INFO_NULL, s->node,
                                              &base, &s->win)
                    : MPI_ERR_NO_MEM;
    /* The leader's part of the second window: parameters, m, v, then the norm partials (8-byte aligned). */
    size_t pbytes = (3 * np * sizeof(float) + 7) / 8 * 8;
    if (rc == MPI_SUCCESS) {
        rc = MPI_Win_allocate_shared((MPI_Aint)(s->nr == 0 ? pbytes + s->nb * sizeof(double) : 0), 1, MPI_INFO_NULL,
                                     s->node, &base, &s->swin);
        if (rc != MPI_SUCCESS) MPI_Win_free(&s->win);
    }
    if (rc != MPI_SUCCESS)
        return vae_error(VAE_ENOMEM, "cannot allocate the node's shared gradient and parameter blocks (%zu floats)",
                         s->n * (size_t)(s->ns + 3));
    for (int q = 0; q < s->ns; q++) {
        MPI_Aint size;
        int disp;
        MPI_Win_shared_query(s->win, q, &size, &disp, &s->seg[q]);
    }
    {
        MPI_Aint size;
        int disp;
        char *sbase;
        MPI_Win_shared_query(s->swin, 0, &size, &disp, &sbase);
        s->state = (float *)sbase;
        s->part = (double *)(sbase + pbytes);
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win);
    MPI_Win_lock_all(MPI_MODE_NOCHECK, s->swin);
    s->active = 1;
    return VAE_OK;
}

/* Moves the model onto the node's shared parameters and moments (every rank holds the same values). */
static void shm_bind(vae_shm_reduce *s, vae_model *m)
{
    float **blk[3] = { &m->params, &m->m, &m->v };
    for (int i = 0; i < 3; i++) {
        if (s->nr == 0) memcpy(s->state + (size_t)i * s->np, *blk[i], s->np * sizeof(float));
        s->own[i] = *blk[i];
    }
    shm_sync(s);
    for (int i = 0; i < 3; i++) *blk[i] = s->state + (size_t)i * s->np;
}

/* Gives the model its own blocks back (their contents are stale: only freeing follows). */
static void shm_unbind(vae_shm_reduce *s, vae_model *m)
{
    if (!s->own[0]) return;
    m->params = s->own[0];
    m->m = s->own[1];
    m->v = s->own[2];
    s->own[0] = NULL;
}

static void shm_free(vae_shm_reduce *s)
{
    if (s->active) {
        MPI_Win_unlock_all(s->swin);
        MPI_Win_unlock_all(s->win);
        MPI_Win_free(&s->swin);
        MPI_Win_free(&s->win);
    }
    if (s->leaders != MPI_COMM_NULL) MPI_Comm_free(&s->leaders);
    if (s->node != MPI_COMM_NULL) MPI_Comm_free(&s->node);
    free(s->seg);
    memset(s, 0, sizeof *s);
}

/* Squares this rank's slice of the summed block into the norm partials. */
static void shm_square(vae_shm_reduce *s)
{
    size_t b1 = s->bhi < vae_norm_nblocks(s->np) ? s->bhi : vae_norm_nblocks(s->np);
    for (size_t b = s->blo; b < s->bhi; b++) s->part[b] = 0.0;
    if (s->blo < b1) vae_sumsq_blocks(s->seg[0], s->np, s->blo, b1, s->part);
}

/*
 * Steps 1 and 2: sums every rank's block; afterwards seg[0] of each node holds
 * the global sum and *sumsq its squared norm (over the parameters).
 */
static int shm_allreduce(vae_shm_reduce *s, size_t fail_slot, double *sumsq)
{
    shm_sync(s);
    float *dst = s->seg[0];
    int fused = s->nleaders <= 1;
    for (size_t b = s->blo; b < s->bhi; b++) {
        size_t lo = b * VAE_NORM_BLOCK, hi = lo + VAE_NORM_BLOCK < s->n ? lo + VAE_NORM_BLOCK : s->n;
        /* One node: the block is final after the last rank's add, squared as it is stored (0 past the parameters). */
        size_t sq = s->np > lo ? (hi < s->np ? hi : s->np) - lo : 0;
        for (int q = 1; q < s->ns; q++) {
            float *src = s->seg[q];
            if (fused && q == s->ns - 1) {
                s->part[b] = vae_add_clear_sumsq(dst + lo, src + lo, hi - lo, sq);
                continue;
            }
            vae_add_clear_sumsq(dst + lo, src + lo, hi - lo, 0); /* sums nothing: add and clear only */
        }
        if (fused && s->ns == 1) vae_sumsq_blocks(dst, s->np, b, b + 1, s->part);
    }
    shm_sync(s);
    int rc = MPI_SUCCESS;
    if (!fused) {
        if (s->nr == 0) {
            rc = MPI_Allreduce(MPI_IN_PLACE, dst, (int)s->n, MPI_FLOAT, MPI_SUM, s->leaders);
            if (rc != MPI_SUCCESS) dst[fail_slot] = 1.0f; /* the node's other ranks stop too */
        }
        shm_sync(s);
        shm_square(s);
        shm_sync(s);
    }
    *sumsq = vae_sum_parts(s->part, s->nb);
    return rc;
}

/*
 * Step 3: Adam on this rank's slice of the node's parameters, group by group
 * (apply[g] == 0 or apply NULL: the group's part of the slice is only
 * cleared); the caller then synchronises.
 */
static void shm_adam(vae_shm_reduce *s, const vae_model *m, const unsigned char *apply)
{
    size_t hi = s->hi < s->np ? s->hi : s->np;
    for (int g = 0; g < m->n_groups; g++) {
        const vae_param_group *G = &m->groups[g];
        size_t a = s->lo > G->lo ? s->lo : G->lo, e = hi < G->hi ? hi : G->hi;
        if (a >= e) continue;
        if (apply && apply[g])
            vae_adam_update_clear(s->state + a, s->seg[0] + a, s->state + s->np + a, s->state + 2 * s->np + a, e - a,
                                  &G->adam, G->t);
        else
            memset(s->seg[0] + a, 0, (e - a) * sizeof(float));
    }
}

/* The terms registered for the step go into the tail, once, when the first range is sent or at the sum. */
static void fill_terms(vae_reducer *r)
{
    if (r->terms_done) return;
    r->terms_done = 1;
    float *gx = r->tail;
    const int nt = r->m->n_terms;
    int bad = 0;
    for (int i = 0; i < nt && r->terms; i++) {
        gx[VAE_GX_TERMS + i] = (float)r->terms[i];
        bad |= !isfinite(r->terms[i]);
    }
    gx[VAE_GX_BAD] = bad ? 1.0f : 0.0f;
}

int vae_reducer_init(vae_reducer *r, int mode, vae_model *m, MPI_Comm comm)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
    r->comm = comm;
    r->m = m;
    r->np = m->n_params;
    r->n = m->n_params + m->grad_extra;
    r->own_grads = m->grads;
    vae_defer_begin();
    r->part = malloc(vae_norm_nblocks(r->np) * sizeof(double));
    if (mode == VAE_AR_OVERLAP) r->ov = calloc(1, sizeof *r->ov);
    if (mode == VAE_AR_SHM && (r->shm = calloc(1, sizeof *r->shm))) r->shm->node = r->shm->leaders = MPI_COMM_NULL;
    int rc = !r->part || (mode == VAE_AR_OVERLAP && !r->ov) || (mode == VAE_AR_SHM && !r->shm)
                 ? vae_error(VAE_ENOMEM, "cannot allocate the gradient reduction's state")
                 : VAE_OK;
    rc = vae_agree(rc, comm);
    if (rc) return rc;
    if (r->ov) {
        r->ov->comm = comm;
        r->ov->grads = m->grads;
        r->ov->min_bucket = 1 << 16;
        r->ov->r = r;
        m->grad_ready = on_grad_ready;
        m->grad_ctx = r->ov;
    }
    if (r->shm) {
        vae_defer_begin();
        rc = vae_agree(shm_init(r->shm, comm, r->np, m->grad_extra), comm);
        if (rc) return rc;
        m->grads = r->shm->seg[r->shm->nr];
        memset(m->grads, 0, r->n * sizeof(float)); /* then cleared as it is read */
        shm_bind(r->shm, m);
    }
    return VAE_OK;
}

float *vae_reducer_begin(vae_reducer *r)
{
    vae_model *m = r->m;
    if (r->shm) memset(m->grads + r->np, 0, m->grad_extra * sizeof(float));
    else memset(m->grads, 0, r->n * sizeof(float));
    r->tail = m->grads + r->np;
    r->terms = NULL;
    r->terms_done = 0;
    if (r->ov) {
        r->ov->pend_hi = r->n;
        r->ov->nreq = 0;
        r->ov->rc = MPI_SUCCESS;
    }
    return r->tail;
}

void vae_reducer_set_terms(vae_reducer *r, const double *terms) { r->terms = terms; }

void vae_reducer_no_rows(vae_reducer *r)
{
    const vae_model *m = r->m;
    if (!r->ov) return;
    /* The same sequence of buckets as a rank with rows issues. */
    if (m->n_ready == 0) on_grad_ready(r->ov, 0, r->np);
    for (int i = 0; i < m->n_ready; i++) on_grad_ready(r->ov, m->ready_lo[i], 0);
}

int vae_reducer_sum(vae_reducer *r, const float **sum, double *sumsq)
{
    int mrc;
    fill_terms(r);
    if (r->ov) {
        mrc = MPI_Waitall(r->ov->nreq, r->ov->req, MPI_STATUSES_IGNORE);
        if (r->ov->rc != MPI_SUCCESS) mrc = r->ov->rc;
    } else if (r->shm) {
        mrc = shm_allreduce(r->shm, r->np + VAE_GX_FAIL, sumsq);
    } else {
        mrc = MPI_Allreduce(MPI_IN_PLACE, r->m->grads, (int)r->n, MPI_FLOAT, MPI_SUM, r->comm);
    }
    r->sum = r->shm ? r->shm->seg[0] : r->m->grads;
    *sum = r->sum;
    if (mrc == MPI_SUCCESS && !r->shm) {
        size_t nb = vae_norm_nblocks(r->np);
        vae_sumsq_blocks(r->sum, r->np, 0, nb, r->part);
        *sumsq = vae_sum_parts(r->part, nb);
    }
    return mrc;
}

void vae_reducer_update(vae_reducer *r, const unsigned char *apply)
{
    vae_model *m = r->m;
    if (r->shm) {
        shm_adam(r->shm, m, apply);
        return;
    }
    for (int g = 0; g < m->n_groups && apply; g++) {
        const vae_param_group *G = &m->groups[g];
        if (apply[g])
            vae_adam_update(m->params + G->lo, r->sum + G->lo, m->m + G->lo, m->v + G->lo, G->hi - G->lo, &G->adam,
                            G->t);
    }
}

void vae_reducer_end(vae_reducer *r)
{
    if (r->shm) shm_sync(r->shm); /* the node's parameters are updated, and its blocks free again */
}

void vae_reducer_describe(const vae_reducer *r, char *buf, size_t len)
{
    if (r->mode == VAE_AR_OVERLAP) snprintf(buf, len, "overlap: MPI_Iallreduce buckets during backward");
    else if (r->mode == VAE_AR_BLOCKING) snprintf(buf, len, "blocking: one MPI_Allreduce");
    else {
        int nl = r->shm ? r->shm->nleaders : 1;
        snprintf(buf, len, "shm: node shared memory, %d node%s%s", nl, nl == 1 ? "" : "s",
                 nl > 1 ? ", MPI_Allreduce across nodes" : "");
    }
}

void vae_reducer_free(vae_reducer *r)
{
    vae_model *m = r->m;
    if (m) {
        if (r->own_grads) m->grads = r->own_grads; /* the model frees its own blocks */
        if (r->shm) shm_unbind(r->shm, m);
        if (r->ov) {
            m->grad_ready = NULL;
            m->grad_ctx = NULL;
        }
    }
    if (r->shm) {
        shm_free(r->shm);
        free(r->shm);
    }
    free(r->ov);
    free(r->part);
    memset(r, 0, sizeof *r);
}
