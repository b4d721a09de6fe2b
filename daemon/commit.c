/*
 * commit.c - group commit on a libuv worker thread.
 */
#include "commit.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_PAUSE_MS 500
/* A batch is sealed at this size and the next one starts: one LMDB write
 * transaction must stay well inside LMDB's dirty-page limit (about 512 MiB
 * with 4 KiB pages), and a huge commit would delay every answer in it. */
#define BATCH_MAX_OPS 50000
#define BATCH_MAX_BYTES (64u << 20)

typedef struct op {
    commit_job_cb cb;     /* a new job's callback; NULL for an update */
    commit_update_cb ucb; /* an update's callback, or NULL */
    commit_result_cb rcb; /* an update's result callback, or NULL */
    void *arg;
    queue_update_t u; /* updates: a copy to re-queue after a failed batch */
    char *wamid;
    queue_error_info_t *err;
    struct pause_copy *pause; /* pauses: a copy to re-queue after a failed batch */
} op_t;

typedef struct pause_copy {
    int kind;
    bool paused;
    char *name;
    char *reason;
} pause_copy_t;

/* One batch and the operations in it, in the order they were added. */
typedef struct side {
    queue_batch_t *batch;
    op_t *ops;
    size_t n, cap;
    size_t bytes;
    bool has_purge; /* a purge rides in this batch */
    commit_purge_cb pcb;
    void *parg;
    struct side *next;
} side_t;

struct commit {
    uv_loop_t *loop;
    queue_t *q;
    side_t *head, *tail; /* FIFO of batches; the tail takes new operations */
    side_t *spare;       /* recycled batches */
    size_t backlog;      /* operations in all batches */
    int rc;              /* result of the running commit */
    int failures;        /* failed commits in a row */
    double seconds;
    bool work_active; /* the head is being committed */
    bool draining;
    bool purge_pending;  /* a purge waits in some batch */
    int full_rc;         /* QUEUE_EFULL or -ENOSPC of the last full batch */
    uint64_t full_until; /* loop ms: new jobs refused until then */
    uv_work_t work;
    uv_idle_t idle;   /* starts a commit at the next loop turn */
    uv_timer_t retry; /* pause after a failed commit */
    void (*drained)(void *);
    void *drained_arg;
    commit_stat_cb stat_cb;
    void *stat_arg;
    commit_fail_cb fail_cb;
    void *fail_arg;
    int handles_open;
    size_t lost; /* operations fail_all gave up */
};

static void start_soon(commit_t *c);

/* Nothing to commit in this batch. */
static bool side_empty(const side_t *s)
{
    return s->n == 0 && !s->has_purge;
}

static void side_reset(side_t *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        free(s->ops[i].wamid);
        free(s->ops[i].err);
        if (s->ops[i].pause) {
            free(s->ops[i].pause->name);
            free(s->ops[i].pause->reason);
            free(s->ops[i].pause);
        }
    }
    s->n = 0;
    s->bytes = 0;
    s->has_purge = false;
    s->pcb = NULL;
    s->parg = NULL;
    s->next = NULL;
    queue_batch_reset(s->batch);
}

static void side_free(side_t *s)
{
    if (s == NULL)
        return;
    side_reset(s);
    queue_batch_free(s->batch);
    free(s->ops);
    free(s);
}

static side_t *side_get(commit_t *c)
{
    side_t *s = c->spare;

    if (s != NULL) {
        c->spare = s->next;
        s->next = NULL;
        return s;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->batch = queue_batch_new();
    if (s->batch == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

/* The batch new operations go into: the tail, unless it is being committed
 * or full, in which case a new one is appended. */
static side_t *open_side(commit_t *c)
{
    side_t *t = c->tail;

    if (t != NULL && !(c->work_active && t == c->head) && t->n < BATCH_MAX_OPS &&
        t->bytes < BATCH_MAX_BYTES)
        return t;
    t = side_get(c);
    if (t == NULL)
        return NULL;
    if (c->tail)
        c->tail->next = t;
    else
        c->head = t;
    c->tail = t;
    return t;
}

static int side_push(side_t *s, op_t **out)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        op_t *ops = realloc(s->ops, cap * sizeof(*ops));
        if (ops == NULL)
            return -ENOMEM;
        s->ops = ops;
        s->cap = cap;
    }
    *out = &s->ops[s->n];
    memset(*out, 0, sizeof(**out));
    return 0;
}

int commit_new(uv_loop_t *loop, queue_t *q, commit_t **out)
{
    commit_t *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (c == NULL)
        return -ENOMEM;
    c->loop = loop;
    c->q = q;
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->retry);
    c->idle.data = c;
    c->retry.data = c;
    c->handles_open = 2;
    *out = c;
    return 0;
}

int commit_add_job(commit_t *c, const queue_job_t *job, const void *body, size_t len,
                   commit_job_cb cb, void *arg)
{
    side_t *s;
    op_t *op;
    int rc;

    if (c->draining)
        return -ESHUTDOWN;
    if (c->full_rc != 0 && uv_now(c->loop) < c->full_until)
        return c->full_rc;
    if ((s = open_side(c)) == NULL)
        return -ENOMEM;
    if ((rc = side_push(s, &op)) != 0)
        return rc;
    rc = queue_batch_add_job(s->batch, job, body, len);
    if (rc < 0)
        return rc;
    op->cb = cb;
    op->arg = arg;
    s->n++;
    s->bytes += len + 256;
    c->backlog++;
    start_soon(c);
    return 0;
}

/* Adds a state change to batch `s` (NULL: the open one). */
static int add_update(commit_t *c, side_t *s, const queue_update_t *u, commit_update_cb ucb,
                      commit_result_cb rcb, void *arg)
{
    op_t *op;
    int rc;

    if (s == NULL && (s = open_side(c)) == NULL)
        return -ENOMEM;
    if ((rc = side_push(s, &op)) != 0)
        return rc;
    op->u = *u;
    op->ucb = ucb;
    op->rcb = rcb;
    op->arg = arg;
    op->u.wamid = NULL;
    op->u.last_error = NULL;
    if (u->wamid && (op->wamid = strdup(u->wamid)) == NULL)
        return -ENOMEM;
    if (u->last_error) {
        op->err = malloc(sizeof(*op->err));
        if (op->err == NULL) {
            free(op->wamid);
            return -ENOMEM;
        }
        *op->err = *u->last_error;
    }
    op->u.wamid = op->wamid;
    op->u.last_error = op->err;
    rc = queue_batch_add_update(s->batch, &op->u);
    if (rc < 0) {
        free(op->wamid);
        free(op->err);
        return rc;
    }
    s->n++;
    s->bytes += 128;
    c->backlog++;
    return 0;
}

/* Adds a pause or its end to batch `s` (NULL: the open one). */
static int add_pause(commit_t *c, side_t *s, int kind, const char *name, const char *reason,
                     bool paused, commit_update_cb ucb, void *arg)
{
    pause_copy_t *pc;
    op_t *op;
    int rc;

    if (s == NULL && (s = open_side(c)) == NULL)
        return -ENOMEM;
    if ((rc = side_push(s, &op)) != 0)
        return rc;
    pc = calloc(1, sizeof(*pc));
    if (pc == NULL)
        return -ENOMEM;
    pc->kind = kind;
    pc->paused = paused;
    pc->name = strdup(name);
    pc->reason = strdup(reason ? reason : "");
    rc = pc->name == NULL || pc->reason == NULL ? -ENOMEM : 0;
    if (rc == 0)
        rc = queue_batch_add_pause(s->batch, kind, name, reason, paused);
    if (rc < 0) {
        free(pc->name);
        free(pc->reason);
        free(pc);
        return rc;
    }
    op->pause = pc;
    op->ucb = ucb;
    op->arg = arg;
    s->n++;
    s->bytes += 128;
    c->backlog++;
    return 0;
}

int commit_add_pause(commit_t *c, int kind, const char *name, const char *reason, bool paused,
                     commit_update_cb cb, void *arg)
{
    int rc = add_pause(c, NULL, kind, name, reason, paused, cb, arg);

    if (rc == 0)
        start_soon(c);
    return rc;
}

int commit_add_update(commit_t *c, const queue_update_t *u)
{
    return commit_add_update_cb(c, u, NULL, NULL);
}

int commit_add_update_cb(commit_t *c, const queue_update_t *u, commit_update_cb cb, void *arg)
{
    int rc = add_update(c, NULL, u, cb, NULL, arg);

    if (rc == 0)
        start_soon(c);
    return rc;
}

int commit_add_update_res(commit_t *c, const queue_update_t *u, commit_result_cb cb, void *arg)
{
    int rc = add_update(c, NULL, u, NULL, cb, arg);

    if (rc == 0)
        start_soon(c);
    return rc;
}

int commit_add_purge(commit_t *c, double before, size_t limit, commit_purge_cb cb, void *arg)
{
    side_t *s;
    int rc;

    if (c->draining)
        return -ESHUTDOWN;
    if (c->purge_pending)
        return -EBUSY;
    if ((s = open_side(c)) == NULL)
        return -ENOMEM;
    rc = queue_batch_set_purge(s->batch, before, limit);
    if (rc != 0)
        return rc;
    s->has_purge = true;
    s->pcb = cb;
    s->parg = arg;
    c->purge_pending = true;
    start_soon(c);
    return 0;
}

/* Runs (and clears) the purge callback of a batch that is done. */
static void purge_done(commit_t *c, side_t *s, int rc)
{
    commit_purge_cb cb = s->pcb;
    size_t purged = 0;
    bool more = false;

    if (!s->has_purge)
        return;
    s->has_purge = false;
    s->pcb = NULL;
    c->purge_pending = false;
    if (rc == 0)
        rc = queue_batch_purge_result(s->batch, &purged, &more);
    if (cb)
        cb(rc, purged, more, s->parg);
}

size_t commit_backlog(const commit_t *c)
{
    return c->backlog;
}

void commit_set_stat_cb(commit_t *c, commit_stat_cb cb, void *arg)
{
    c->stat_cb = cb;
    c->stat_arg = arg;
}

size_t commit_lost(const commit_t *c)
{
    return c->lost;
}

void commit_set_fail_cb(commit_t *c, commit_fail_cb cb, void *arg)
{
    c->fail_cb = cb;
    c->fail_arg = arg;
}

static void work_cb(uv_work_t *w)
{
    commit_t *c = w->data;
    uv_timeval64_t t0, t1;

    uv_gettimeofday(&t0);
    c->rc = queue_batch_commit(c->q, c->head->batch);
    uv_gettimeofday(&t1);
    c->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
}

static void check_drained(commit_t *c)
{
    if (c->draining && !c->work_active && c->backlog == 0 && !c->purge_pending && c->drained) {
        void (*cb)(void *) = c->drained;
        c->drained = NULL;
        cb(c->drained_arg);
    }
}

static void retry_cb(uv_timer_t *h);

/* Takes the head batch off the FIFO into the spare list. */
static void pop_head(commit_t *c)
{
    side_t *s = c->head;

    c->head = s->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->backlog -= s->n;
    side_reset(s);
    s->next = c->spare;
    c->spare = s;
}

/* Stopping and the store keeps failing: give up on what is left. Submits
 * get the error; lost state changes only mean their jobs are sent again
 * after the restart (at-least-once). */
static void fail_all(commit_t *c, int rc)
{
    while (c->head != NULL) {
        side_t *s = c->head;
        size_t i;
        c->lost += s->n;
        for (i = 0; i < s->n; i++) {
            if (s->ops[i].cb)
                s->ops[i].cb(rc, 0, 0, s->ops[i].arg);
            else if (s->ops[i].rcb)
                s->ops[i].rcb(rc, 0, s->ops[i].arg);
        }
        purge_done(c, s, rc);
        pop_head(c);
    }
}

/* The batch a failed batch's state changes and pauses are carried into
 * (created on first use). NULL when there is no memory for it: the carry
 * then goes to the open batch, at the end, as the lesser of two losses. */
static side_t *carry_side(commit_t *c, side_t **carry)
{
    if (*carry == NULL)
        *carry = side_get(c);
    return *carry;
}

/* Moves src's operations (and purge) behind dst's; src is left empty. */
static int side_merge(side_t *dst, side_t *src)
{
    int rc;

    if (dst->n + src->n > dst->cap) {
        size_t cap = dst->n + src->n;
        op_t *ops = realloc(dst->ops, cap * sizeof(*ops));
        if (ops == NULL)
            return -ENOMEM;
        dst->ops = ops;
        dst->cap = cap;
    }
    if ((rc = queue_batch_append(dst->batch, src->batch)) != 0)
        return rc;
    if (src->n > 0)
        memcpy(dst->ops + dst->n, src->ops, src->n * sizeof(*src->ops));
    dst->n += src->n;
    dst->bytes += src->bytes;
    if (src->has_purge) {
        dst->has_purge = true;
        dst->pcb = src->pcb;
        dst->parg = src->parg;
    }
    src->n = 0; /* the copies moved with the operations: not freed here */
    side_reset(src);
    return 0;
}

/* Puts what a failed batch carries over ahead of everything queued while it
 * was being committed, so a later change of the same job (a cancel after
 * its `sending` record) or a later resume is applied after it, not
 * overwritten by it. The next batch's operations are moved in behind it:
 * when the store keeps failing, they fail together (the submitters of new
 * jobs are told) instead of waiting behind a batch that never commits. */
static void carry_link(commit_t *c, side_t *carry)
{
    side_t *next = c->head;

    if (next != NULL && side_merge(carry, next) == 0) {
        carry->next = next->next;
        if (c->tail == next)
            c->tail = carry;
        next->next = c->spare;
        c->spare = next;
    } else {
        carry->next = next;
    }
    c->head = carry;
    if (c->tail == NULL)
        c->tail = carry;
}

static void after_work_cb(uv_work_t *w, int status)
{
    commit_t *c = w->data;
    side_t *done = c->head;
    side_t *carry = NULL;
    int rc = status != 0 ? -ECANCELED : c->rc;
    bool had_jobs = false;
    size_t i;

    c->work_active = false;
    /* Detach the batch first: callbacks may add operations, which must go
     * into a later batch. */
    c->head = done->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->backlog -= done->n;
    if (rc == 0 && c->stat_cb) {
        /* A purge that found nothing (the retention timer's, each second
         * on an idle daemon) wrote nothing: not a commit to report. */
        size_t purged = 0;
        bool more = false;

        if (done->has_purge)
            (void)queue_batch_purge_result(done->batch, &purged, &more);
        if (done->n > 0 || purged > 0)
            c->stat_cb(done->n, c->seconds, c->stat_arg);
    }
    for (i = 0; i < done->n; i++) {
        op_t *op = &done->ops[i];
        had_jobs = had_jobs || op->cb != NULL;
        if (op->pause) {
            if (rc != 0) /* carried into a later batch, like an update */
                (void)add_pause(c, carry_side(c, &carry), op->pause->kind, op->pause->name,
                                op->pause->reason, op->pause->paused, op->ucb, op->arg);
            else if (op->ucb)
                op->ucb(op->arg);
        } else if (op->cb) {
            uint64_t orig = 0;
            int res = rc == 0 ? queue_batch_result(done->batch, i, &orig) : 0;
            op->cb(rc, res, orig, op->arg);
        } else if (rc != 0) {
            /* The state change is not in the store: carry it into a later
             * batch. Failing to queue it (no memory) loses only a state
             * change; the job stays due in the store and is sent again. */
            if (add_update(c, carry_side(c, &carry), &op->u, op->ucb, op->rcb, op->arg) != 0 &&
                op->rcb)
                op->rcb(-ENOMEM, 0, op->arg);
        } else if (op->ucb) {
            op->ucb(op->arg);
        } else if (op->rcb) {
            op->rcb(0, queue_batch_result(done->batch, i, NULL), op->arg);
        }
    }
    if (carry != NULL)
        carry_link(c, carry);
    purge_done(c, done, rc);
    side_reset(done);
    done->next = c->spare;
    c->spare = done;
    if (queue_err_full(rc)) {
        /* Keep new jobs out for a while: see COMMIT_FULL_PROBE_MS. */
        c->full_rc = rc;
        c->full_until = uv_now(c->loop) + COMMIT_FULL_PROBE_MS;
    }
    if (rc == 0) {
        if (c->failures > 0 && c->fail_cb)
            c->fail_cb(0, (unsigned)c->failures, c->fail_arg);
        c->failures = 0;
        start_soon(c);
    } else if (++c->failures >= 3 && c->draining) {
        if (c->fail_cb)
            c->fail_cb(rc, (unsigned)c->failures, c->fail_arg);
        fail_all(c, rc);
    } else {
        /* A full batch with new jobs is the store refusing them (their
         * submitters are told); one with only state changes and purges
         * failing full means sending stands still: reported. */
        if (c->fail_cb && (!queue_err_full(rc) || !had_jobs))
            c->fail_cb(rc, (unsigned)c->failures, c->fail_arg);
        uv_timer_start(&c->retry, retry_cb, RETRY_PAUSE_MS, 0);
    }
    check_drained(c);
}

static void start_now(commit_t *c)
{
    if (c->work_active)
        return;
    while (c->head != NULL && side_empty(c->head) && c->head != c->tail)
        pop_head(c); /* left empty by a failed add */
    if (c->head == NULL || side_empty(c->head))
        return;
    c->work.data = c;
    c->work_active = true;
    if (uv_queue_work(c->loop, &c->work, work_cb, after_work_cb) != 0)
        c->work_active = false; /* cannot happen with valid arguments */
}

static void idle_cb(uv_idle_t *h)
{
    uv_idle_stop(h);
    start_now(h->data);
}

static void retry_cb(uv_timer_t *h)
{
    start_now(h->data);
}

static void start_soon(commit_t *c)
{
    if (c->work_active || (c->backlog == 0 && !c->purge_pending) ||
        uv_is_active((uv_handle_t *)&c->retry))
        return;
    uv_idle_start(&c->idle, idle_cb);
}

void commit_drain(commit_t *c, void (*done)(void *), void *arg)
{
    c->draining = true;
    c->drained = done;
    c->drained_arg = arg;
    start_soon(c);
    check_drained(c);
}

static void handle_closed_cb(uv_handle_t *h)
{
    commit_t *c = h->data;

    if (--c->handles_open == 0) {
        while (c->head) {
            side_t *s = c->head;
            c->head = s->next;
            side_free(s);
        }
        while (c->spare) {
            side_t *s = c->spare;
            c->spare = s->next;
            side_free(s);
        }
        free(c);
    }
}

void commit_free(commit_t *c)
{
    if (c == NULL)
        return;
    uv_close((uv_handle_t *)&c->idle, handle_closed_cb);
    uv_close((uv_handle_t *)&c->retry, handle_closed_cb);
}
