/*
 * http_pool.c - HTTP engines on threads of their own (see http_pool.h).
 *
 * Locks: each worker's `mu` guards its inbox, its command and its published
 * counters; the pool's `mu` guards the list of finished requests. No thread
 * holds two locks at once, and no lock is held across a callback or a call
 * into libcurl.
 */
#include "http_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    CMD_TOKEN = 1u << 0,
    CMD_CONCURRENCY = 1u << 1,
    CMD_CANCEL = 1u << 2,
    CMD_STOP = 1u << 3,
};

typedef struct worker worker_t;

/* One request, from http_pool_post to its callback. */
typedef struct preq {
    struct preq *next;
    worker_t *w;
    const char *body; /* borrowed from the caller; NULL for GET */
    size_t len;
    http_done_cb cb;
    void *user;
    /* The outcome, written by the worker before it queues the record: the
     * engine's result without its pointers (body_len kept), and the bytes
     * they pointed to. */
    http_result_t res;
    char *answer; /* body, then NUL, then detail, then NUL; NULL if out of memory */
    char path[];  /* copied */
} preq_t;

/* Appends the chain first..last to the list head/tail. */
static void preq_append(preq_t **head, preq_t **tail, preq_t *first, preq_t *last)
{
    if (*tail != NULL)
        (*tail)->next = first;
    else
        *head = first;
    *tail = last;
}

struct worker {
    http_pool_t *p;
    int index;
    uv_thread_t tid;
    bool started;
    uv_loop_t loop;
    bool loop_ok;
    uv_async_t wake;
    http_engine_t *e; /* the worker thread's alone once it runs */
    /* Guarded by mu. */
    uv_mutex_t mu;
    uv_cond_t cond;
    preq_t *in_head, *in_tail;
    unsigned cmd;
    const char *cmd_token; /* the caller's, valid while it waits */
    long cmd_n;
    int cmd_rc;
    bool cmd_done;
    http_stats_t published;
    /* The caller's thread only. */
    size_t inflight;
};

struct http_pool {
    uv_loop_t *loop;
    http_engine_t *direct; /* threads == 0 */
    int nworkers;
    worker_t *workers;
    size_t inflight;
    bool closing; /* http_pool_close has begun: new requests are refused */
    uv_async_t done_async;
    bool async_ok;
    /* Guarded by mu: finished requests, in order. */
    uv_mutex_t mu;
    bool mu_ok;
    preq_t *done_head, *done_tail;
    /* The caller's thread only: taken from the list, not yet delivered. */
    preq_t *ready_head, *ready_tail;
};

/* ------------------------------------------------------- worker thread */

/* Queues a finished request for the caller's loop with a copy of its
 * outcome (the engine's buffers are valid during its callback only). */
static void worker_finish(worker_t *w, preq_t *q, const http_result_t *res)
{
    http_pool_t *p = w->p;
    size_t bl = res->body != NULL ? res->body_len : 0;
    size_t dl = res->detail != NULL ? strlen(res->detail) : 0;

    q->res = *res;
    q->res.body = NULL;
    q->res.body_len = bl;
    q->res.detail = NULL;
    q->answer = malloc(bl + dl + 2);
    if (q->answer != NULL) {
        if (bl > 0)
            memcpy(q->answer, res->body, bl);
        q->answer[bl] = '\0';
        if (dl > 0)
            memcpy(q->answer + bl + 1, res->detail, dl);
        q->answer[bl + 1 + dl] = '\0';
    }
    q->next = NULL;
    uv_mutex_lock(&p->mu);
    preq_append(&p->done_head, &p->done_tail, q, q);
    uv_mutex_unlock(&p->mu);
    (void)uv_async_send(&p->done_async);
}

/* Fails a request that never reached libcurl. */
static void worker_fail(worker_t *w, preq_t *q, int error, const char *detail)
{
    http_result_t r = {.error = error, .retry_after = -1, .body = "", .detail = detail};

    worker_finish(w, q, &r);
}

static void worker_publish(worker_t *w)
{
    http_stats_t st;

    http_engine_stats(w->e, &st);
    uv_mutex_lock(&w->mu);
    w->published = st;
    uv_mutex_unlock(&w->mu);
}

/* The engine's callback, on the worker thread. */
static void worker_done_cb(const http_result_t *res, void *user)
{
    preq_t *q = user;

    /* Counters current to the last completion (stats read them at any time). */
    worker_publish(q->w);
    worker_finish(q->w, q, res);
}

/*
 * Everything the caller sent since the last wake-up: requests first (in
 * order), then the settings, then cancel or stop, so a cancel covers every
 * request posted before it.
 */
static void worker_wake_cb(uv_async_t *a)
{
    worker_t *w = a->data;
    preq_t *list, *q;
    unsigned cmd;
    const char *token;
    long n;
    int rc = 0;

    uv_mutex_lock(&w->mu);
    list = w->in_head;
    w->in_head = w->in_tail = NULL;
    cmd = w->cmd;
    w->cmd = 0;
    token = w->cmd_token;
    n = w->cmd_n;
    uv_mutex_unlock(&w->mu);

    while ((q = list) != NULL) {
        int prc;

        list = q->next;
        q->next = NULL;
        if (cmd & (CMD_CANCEL | CMD_STOP)) {
            worker_fail(w, q, HTTP_ECANCELLED, "cancelled");
            continue;
        }
        if (q->body != NULL)
            prc = http_engine_post(w->e, q->path, q->body, q->len, worker_done_cb, q);
        else
            prc = http_engine_get(w->e, q->path, worker_done_cb, q);
        if (prc != 0)
            worker_fail(w, q, HTTP_ENOTSENT, http_strerror(prc));
    }
    if (cmd & CMD_TOKEN)
        rc = http_engine_set_token(w->e, token);
    if ((cmd & CMD_CONCURRENCY) && rc == 0)
        rc = http_engine_set_concurrency(w->e, n);
    if (cmd & CMD_CANCEL)
        http_engine_cancel_all(w->e);
    worker_publish(w);
    if (cmd & CMD_STOP) {
        /* Cancels what runs (callbacks now), then the engine and this
         * handle close and uv_run returns. */
        http_engine_close(w->e);
        w->e = NULL;
        uv_close((uv_handle_t *)&w->wake, NULL);
        return;
    }
    if (cmd != 0) {
        uv_mutex_lock(&w->mu);
        w->cmd_rc = rc;
        w->cmd_done = true;
        uv_cond_signal(&w->cond);
        uv_mutex_unlock(&w->mu);
    }
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    char name[16];

    snprintf(name, sizeof(name), "avp-http-%d", w->index);
    (void)pthread_setname_np(pthread_self(), name);
    (void)uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* ---------------------------------------------------- the caller's side */

static void pool_deliver_one(http_pool_t *p, preq_t *q)
{
    http_result_t r = q->res;
    static const char empty[] = "";

    if (q->answer != NULL) {
        r.body = q->answer;
        r.detail = q->answer + r.body_len + 1;
    } else {
        /* The worker could not copy the answer: what arrived is unknown. */
        r.error = r.error == 0 ? HTTP_EMAYBESENT : r.error;
        r.status = r.error != 0 ? 0 : r.status;
        r.body = empty;
        r.body_len = 0;
        r.cut = false;
        r.detail = "out of memory copying the answer";
    }
    q->w->inflight--;
    p->inflight--;
    q->cb(&r, q->user);
    free(q->answer);
    free(q);
}

/* Delivers every finished request. A callback may start requests or cancel
 * (which delivers the rest of the list itself): the list lives in the pool
 * so nothing is delivered twice or skipped. */
static void pool_deliver(http_pool_t *p)
{
    preq_t *q;

    uv_mutex_lock(&p->mu);
    q = p->done_head;
    p->done_head = p->done_tail = NULL;
    uv_mutex_unlock(&p->mu);
    if (q != NULL) {
        preq_t *last = q;

        while (last->next != NULL)
            last = last->next;
        preq_append(&p->ready_head, &p->ready_tail, q, last);
    }
    while ((q = p->ready_head) != NULL) {
        p->ready_head = q->next;
        if (p->ready_head == NULL)
            p->ready_tail = NULL;
        pool_deliver_one(p, q);
    }
}

static void pool_done_cb(uv_async_t *a)
{
    pool_deliver(a->data);
}

/* Sends `cmd` to every worker and waits until each has carried it out.
 * Returns the first error. */
static int pool_command(http_pool_t *p, unsigned cmd, const char *token, long n)
{
    int rc = 0;

    for (int i = 0; i < p->nworkers; i++) {
        worker_t *w = &p->workers[i];
        long share = n > 0 ? (n + p->nworkers - 1) / p->nworkers : n;

        uv_mutex_lock(&w->mu);
        w->cmd |= cmd;
        w->cmd_token = token;
        w->cmd_n = share;
        w->cmd_done = false;
        uv_mutex_unlock(&w->mu);
        (void)uv_async_send(&w->wake);
    }
    for (int i = 0; i < p->nworkers; i++) {
        worker_t *w = &p->workers[i];

        uv_mutex_lock(&w->mu);
        while (!w->cmd_done)
            uv_cond_wait(&w->cond, &w->mu);
        if (rc == 0)
            rc = w->cmd_rc;
        w->cmd_token = NULL;
        uv_mutex_unlock(&w->mu);
    }
    return rc;
}

static int pool_start(http_pool_t *p, const char *path, const char *body, size_t len,
                      http_done_cb cb, void *user)
{
    worker_t *w;
    preq_t *q;
    size_t plen;

    if (p == NULL || path == NULL || path[0] != '/' || cb == NULL)
        return HTTP_EINVAL;
    if (p->closing)
        return -ESHUTDOWN;
    if (p->direct != NULL) {
        return body != NULL ? http_engine_post(p->direct, path, body, len, cb, user)
                            : http_engine_get(p->direct, path, cb, user);
    }
    plen = strlen(path);
    if (plen > 2048)
        return HTTP_EINVAL;
    q = malloc(sizeof(*q) + plen + 1);
    if (q == NULL)
        return -ENOMEM;
    memset(q, 0, sizeof(*q));
    memcpy(q->path, path, plen + 1);
    q->body = body;
    q->len = len;
    q->cb = cb;
    q->user = user;
    /* The least busy thread: with max_inflight split evenly, no thread
     * runs more than its share, so its connection cache always fits. */
    w = &p->workers[0];
    for (int i = 1; i < p->nworkers; i++) {
        if (p->workers[i].inflight < w->inflight)
            w = &p->workers[i];
    }
    q->w = w;
    w->inflight++;
    p->inflight++;
    uv_mutex_lock(&w->mu);
    preq_append(&w->in_head, &w->in_tail, q, q);
    uv_mutex_unlock(&w->mu);
    (void)uv_async_send(&w->wake);
    return 0;
}

/* ---------------------------------------------------------------- public */

int http_pool_post(http_pool_t *p, const char *path, const char *body, size_t len, http_done_cb cb,
                   void *user)
{
    if (body == NULL) {
        if (len != 0)
            return HTTP_EINVAL;
        body = "";
    }
    return pool_start(p, path, body, len, cb, user);
}

int http_pool_get(http_pool_t *p, const char *path, http_done_cb cb, void *user)
{
    return pool_start(p, path, NULL, 0, cb, user);
}

size_t http_pool_inflight(const http_pool_t *p)
{
    if (p == NULL)
        return 0;
    return p->direct != NULL ? http_engine_inflight(p->direct) : p->inflight;
}

int http_pool_threads(const http_pool_t *p)
{
    return p != NULL ? p->nworkers : 0;
}

int http_pool_set_concurrency(http_pool_t *p, long n)
{
    if (p == NULL)
        return HTTP_EINVAL;
    if (p->direct != NULL)
        return http_engine_set_concurrency(p->direct, n);
    return pool_command(p, CMD_CONCURRENCY, NULL, n);
}

int http_pool_set_token(http_pool_t *p, const char *token)
{
    if (p == NULL)
        return HTTP_EINVAL;
    if (p->direct != NULL)
        return http_engine_set_token(p->direct, token);
    /* Checked here so that the threads can only fail for memory (and then
     * some may have the new token while the caller keeps the old one). */
    if (token != NULL && http_token_check(token) != 0)
        return HTTP_EINVAL;
    return pool_command(p, CMD_TOKEN, token, 0);
}

void http_pool_cancel_all(http_pool_t *p)
{
    if (p == NULL)
        return;
    if (p->direct != NULL) {
        http_engine_cancel_all(p->direct);
        return;
    }
    (void)pool_command(p, CMD_CANCEL, NULL, 0);
    pool_deliver(p);
}

void http_pool_stats(const http_pool_t *p, http_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (p == NULL)
        return;
    if (p->direct != NULL) {
        http_engine_stats(p->direct, out);
        return;
    }
    for (int i = 0; i < p->nworkers; i++) {
        worker_t *w = &p->workers[i];

        uv_mutex_lock(&w->mu);
        out->requests += w->published.requests;
        out->connects += w->published.connects;
        out->handshakes += w->published.handshakes;
        out->lanes += w->published.lanes;
        uv_mutex_unlock(&w->mu);
    }
}

static void pool_free(http_pool_t *p)
{
    if (p->workers != NULL) {
        for (int i = 0; i < p->nworkers; i++) {
            worker_t *w = &p->workers[i];

            if (w->loop_ok) {
                uv_mutex_destroy(&w->mu);
                uv_cond_destroy(&w->cond);
            }
        }
    }
    free(p->workers);
    if (p->mu_ok)
        uv_mutex_destroy(&p->mu);
    free(p);
}

static void pool_closed_cb(uv_handle_t *h)
{
    pool_free(h->data);
}

/* Stops the threads that run, then closes what was set up; shared by close
 * and by a failed http_pool_new. */
static void pool_shutdown(http_pool_t *p)
{
    for (int i = 0; i < p->nworkers; i++) {
        worker_t *w = &p->workers[i];

        if (!w->started)
            continue;
        uv_mutex_lock(&w->mu);
        w->cmd |= CMD_STOP;
        uv_mutex_unlock(&w->mu);
        (void)uv_async_send(&w->wake);
    }
    for (int i = 0; i < p->nworkers; i++) {
        worker_t *w = &p->workers[i];

        if (w->started) {
            (void)uv_thread_join(&w->tid);
            w->started = false;
        } else if (w->loop_ok) {
            /* Never ran: close its engine and handle on its own loop here. */
            http_engine_close(w->e);
            w->e = NULL;
            uv_close((uv_handle_t *)&w->wake, NULL);
            (void)uv_run(&w->loop, UV_RUN_DEFAULT);
        }
        if (w->loop_ok)
            (void)uv_loop_close(&w->loop);
    }
}

void http_pool_close(http_pool_t *p)
{
    if (p == NULL)
        return;
    p->closing = true;
    if (p->direct != NULL) {
        http_engine_close(p->direct);
        pool_free(p);
        return;
    }
    pool_shutdown(p);
    pool_deliver(p); /* what the stopping threads cancelled */
    uv_close((uv_handle_t *)&p->done_async, pool_closed_cb);
}

static int worker_init(http_pool_t *p, worker_t *w, int index, const http_options_t *opt)
{
    int rc;

    w->p = p;
    w->index = index;
    if ((rc = uv_loop_init(&w->loop)) != 0)
        return rc;
    if ((rc = uv_mutex_init(&w->mu)) != 0) {
        (void)uv_loop_close(&w->loop);
        return rc;
    }
    if ((rc = uv_cond_init(&w->cond)) != 0) {
        uv_mutex_destroy(&w->mu);
        (void)uv_loop_close(&w->loop);
        return rc;
    }
    if ((rc = uv_async_init(&w->loop, &w->wake, worker_wake_cb)) != 0) {
        uv_cond_destroy(&w->cond);
        uv_mutex_destroy(&w->mu);
        (void)uv_loop_close(&w->loop);
        return rc;
    }
    w->wake.data = w;
    w->loop_ok = true;
    /* From here on pool_shutdown closes the handle and the loop. */
    if ((rc = http_engine_new(&w->loop, opt, &w->e)) != 0)
        return rc;
    worker_publish(w);
    return 0;
}

int http_pool_new(uv_loop_t *loop, const http_options_t *opt, int threads, http_pool_t **out)
{
    http_options_t wopt;
    http_pool_t *p;
    int rc;

    *out = NULL;
    if (loop == NULL || opt == NULL || threads < 0 || threads > HTTP_POOL_MAX_THREADS)
        return HTTP_EINVAL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->loop = loop;
    if (threads == 0) {
        rc = http_engine_new(loop, opt, &p->direct);
        if (rc != 0) {
            free(p);
            return rc;
        }
        *out = p;
        return 0;
    }
    if ((rc = uv_mutex_init(&p->mu)) != 0) {
        free(p);
        return rc;
    }
    p->mu_ok = true;
    p->workers = calloc((size_t)threads, sizeof(*p->workers));
    if (p->workers == NULL) {
        rc = -ENOMEM;
        goto fail_free;
    }
    if ((rc = uv_async_init(loop, &p->done_async, pool_done_cb)) != 0)
        goto fail_free;
    p->done_async.data = p;
    p->nworkers = threads;
    /* The threads' engines open connections to one server: they share the
     * burst of new ones (http_options_t.open_burst). */
    wopt = *opt;
    wopt.open_burst = (opt->open_burst > 0 ? opt->open_burst : HTTP_OPEN_BURST) / threads;
    if (wopt.open_burst < 1)
        wopt.open_burst = 1;
    for (int i = 0; i < threads; i++) {
        if ((rc = worker_init(p, &p->workers[i], i, &wopt)) != 0)
            goto fail_close;
    }
    for (int i = 0; i < threads; i++) {
        worker_t *w = &p->workers[i];

        if ((rc = uv_thread_create(&w->tid, worker_main, w)) != 0)
            goto fail_close;
        w->started = true;
    }
    *out = p;
    return 0;

fail_close:
    pool_shutdown(p);
    pool_deliver(p);
    uv_close((uv_handle_t *)&p->done_async, pool_closed_cb);
    return rc;
fail_free:
    pool_free(p);
    return rc;
}
