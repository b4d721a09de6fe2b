/*
 * commit.c - group commit on a libuv worker thread.
 */
#include "commit.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_PAUSE_MS 500

typedef struct op {
    commit_job_cb cb; /* NULL for an update */
    commit_update_cb ucb; /* an update's callback, or NULL */
    void *arg;
    queue_update_t u; /* updates: a copy to re-queue after a failed batch */
    char *wamid;
    queue_error_info_t *err;
} op_t;

typedef struct side {
    queue_batch_t *batch;
    op_t *ops;
    size_t n, cap;
} side_t;

struct commit {
    uv_loop_t *loop;
    queue_t *q;
    side_t sides[2];
    side_t *pending, *running;
    int rc; /* result of the running commit */
    int failures; /* failed commits in a row */
    double seconds;
    bool work_active;
    bool draining;
    uv_work_t work;
    uv_idle_t idle;  /* starts a commit at the next loop turn */
    uv_timer_t retry; /* pause after a failed commit */
    void (*drained)(void *);
    void *drained_arg;
    commit_stat_cb stat_cb;
    void *stat_arg;
    int handles_open;
};

static void start_soon(commit_t *c);

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

static void side_reset(side_t *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        free(s->ops[i].wamid);
        free(s->ops[i].err);
    }
    s->n = 0;
    queue_batch_reset(s->batch);
}

int commit_new(uv_loop_t *loop, queue_t *q, commit_t **out)
{
    commit_t *c = calloc(1, sizeof(*c));
    int i;

    *out = NULL;
    if (c == NULL)
        return -ENOMEM;
    c->loop = loop;
    c->q = q;
    for (i = 0; i < 2; i++) {
        c->sides[i].batch = queue_batch_new();
        if (c->sides[i].batch == NULL) {
            commit_free(c);
            return -ENOMEM;
        }
    }
    c->pending = &c->sides[0];
    c->running = &c->sides[1];
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
    op_t *op;
    int rc;

    if (c->draining)
        return -ESHUTDOWN;
    if ((rc = side_push(c->pending, &op)) != 0)
        return rc;
    rc = queue_batch_add_job(c->pending->batch, job, body, len);
    if (rc < 0)
        return rc;
    op->cb = cb;
    op->arg = arg;
    c->pending->n++;
    start_soon(c);
    return 0;
}

static int add_update(commit_t *c, const queue_update_t *u, commit_update_cb ucb, void *arg)
{
    op_t *op;
    int rc;

    if ((rc = side_push(c->pending, &op)) != 0)
        return rc;
    op->u = *u;
    op->ucb = ucb;
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
    rc = queue_batch_add_update(c->pending->batch, &op->u);
    if (rc < 0) {
        free(op->wamid);
        free(op->err);
        return rc;
    }
    c->pending->n++;
    return 0;
}

int commit_add_update(commit_t *c, const queue_update_t *u)
{
    return commit_add_update_cb(c, u, NULL, NULL);
}

int commit_add_update_cb(commit_t *c, const queue_update_t *u, commit_update_cb cb, void *arg)
{
    int rc = add_update(c, u, cb, arg);

    if (rc == 0)
        start_soon(c);
    return rc;
}

size_t commit_backlog(const commit_t *c)
{
    return c->pending->n + (c->work_active ? c->running->n : 0);
}

void commit_set_stat_cb(commit_t *c, commit_stat_cb cb, void *arg)
{
    c->stat_cb = cb;
    c->stat_arg = arg;
}

static void work_cb(uv_work_t *w)
{
    commit_t *c = w->data;
    uv_timeval64_t t0, t1;

    uv_gettimeofday(&t0);
    c->rc = queue_batch_commit(c->q, c->running->batch);
    uv_gettimeofday(&t1);
    c->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
}

static void check_drained(commit_t *c)
{
    if (c->draining && !c->work_active && c->pending->n == 0 && c->drained) {
        void (*cb)(void *) = c->drained;
        c->drained = NULL;
        cb(c->drained_arg);
    }
}

static void retry_cb(uv_timer_t *h);

static void fail_pending(commit_t *c, int rc)
{
    size_t i;

    for (i = 0; i < c->pending->n; i++)
        if (c->pending->ops[i].cb)
            c->pending->ops[i].cb(rc, 0, 0, c->pending->ops[i].arg);
    side_reset(c->pending);
}

static void after_work_cb(uv_work_t *w, int status)
{
    commit_t *c = w->data;
    side_t *done = c->running;
    int rc = status != 0 ? -ECANCELED : c->rc;
    size_t i;

    c->work_active = false;
    if (rc == 0 && c->stat_cb)
        c->stat_cb(done->n, c->seconds, c->stat_arg);
    for (i = 0; i < done->n; i++) {
        op_t *op = &done->ops[i];
        if (op->cb) {
            uint64_t orig = 0;
            int res = rc == 0 ? queue_batch_result(done->batch, i, &orig) : 0;
            op->cb(rc, res, orig, op->arg);
        } else if (rc != 0) {
            /* The state change is not in the store: carry it into the next
             * batch. Failing to queue it (no memory) loses only a state
             * change; the job stays due in the store and is sent again. */
            (void)add_update(c, &op->u, op->ucb, op->arg);
        } else if (op->ucb) {
            op->ucb(op->arg);
        }
    }
    side_reset(done);
    if (rc == 0) {
        c->failures = 0;
        start_soon(c);
    } else if (c->draining && ++c->failures >= 3) {
        /* Stopping and the store keeps failing: give up on what is left.
         * Submits get the error; lost state changes only mean their jobs
         * are sent again after the restart (at-least-once). */
        fail_pending(c, rc);
    } else {
        c->failures++;
        uv_timer_start(&c->retry, retry_cb, RETRY_PAUSE_MS, 0);
    }
    check_drained(c);
}

static void start_now(commit_t *c)
{
    side_t *t;

    if (c->work_active || c->pending->n == 0)
        return;
    t = c->pending;
    c->pending = c->running;
    c->running = t;
    c->work.data = c;
    c->work_active = true;
    if (uv_queue_work(c->loop, &c->work, work_cb, after_work_cb) != 0) {
        /* Cannot happen with valid arguments; keep the ops pending. */
        c->work_active = false;
        c->running = c->pending;
        c->pending = t;
    }
}

static void idle_cb(uv_idle_t *h)
{
    commit_t *c = h->data;

    uv_idle_stop(h);
    start_now(c);
}

static void retry_cb(uv_timer_t *h)
{
    start_now(h->data);
}

static void start_soon(commit_t *c)
{
    if (c->work_active || c->pending->n == 0 || uv_is_active((uv_handle_t *)&c->retry))
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
        int i;
        for (i = 0; i < 2; i++) {
            side_reset(&c->sides[i]);
            queue_batch_free(c->sides[i].batch);
            free(c->sides[i].ops);
        }
        free(c);
    }
}

void commit_free(commit_t *c)
{
    int i;

    if (c == NULL)
        return;
    if (c->handles_open == 0) { /* half-built by commit_new */
        for (i = 0; i < 2; i++)
            queue_batch_free(c->sides[i].batch);
        free(c);
        return;
    }
    uv_close((uv_handle_t *)&c->idle, handle_closed_cb);
    uv_close((uv_handle_t *)&c->retry, handle_closed_cb);
}
