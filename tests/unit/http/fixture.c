/*
 * fixture.c - see fixture.h.
 */
#include "fixture.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>

int fx_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    CHECK(d != NULL);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static void watchdog_cb(uv_timer_t *t)
{
    fx_t *f = t->data;
    f->expired = true;
}

static void wake_cb(uv_async_t *a)
{
    fx_t *f = a->data;
    f->server_total = stub_total(f->stub);
}

static void notify_loop(void *arg)
{
    uv_async_send(arg);
}

void fx_engine(fx_t *f, const char *token, long timeout_ms)
{
    http_options_t o = {.api_base = f->base, .token = token, .timeout_ms = timeout_ms};
    CHECK(http_engine_new(&f->loop, &o, &f->eng) == 0);
    CHECK(f->eng != NULL);
}

/* threads: see stub_start. */
void fx_init(fx_t *f, unsigned threads, const char *token, long timeout_ms)
{
    memset(f, 0, sizeof(*f));
    f->fds_before = fx_fd_count();
    f->loop_thread = uv_thread_self();
    CHECK(uv_loop_init(&f->loop) == 0);
    CHECK(uv_timer_init(&f->loop, &f->watchdog) == 0);
    f->watchdog.data = f;
    CHECK(uv_prepare_init(&f->loop, &f->until) == 0);
    f->until.data = f;
    CHECK(stub_start(threads, &f->stub) == 0);
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%u/", (unsigned)stub_port(f->stub));
    if (token != NULL)
        fx_engine(f, token, timeout_ms);
}

void fx_wake_on_server(fx_t *f)
{
    CHECK(uv_async_init(&f->loop, &f->wake, wake_cb) == 0);
    f->wake.data = f;
    f->has_wake = true;
    stub_set_notify(f->stub, notify_loop, &f->wake);
}

/* Closes everything and checks that the loop ends with no handle left. */
void fx_fini(fx_t *f)
{
    /* The server first: after it is stopped nothing calls uv_async_send. */
    stub_stop(f->stub);
    f->stub = NULL;
    http_engine_close(f->eng);
    f->eng = NULL;
    http_pool_close(f->pool); /* its last handle closes in the uv_run below */
    f->pool = NULL;
    if (f->has_wake)
        uv_close((uv_handle_t *)&f->wake, NULL);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_close((uv_handle_t *)&f->until, NULL);
    CHECK(uv_run(&f->loop, UV_RUN_DEFAULT) == 0);
    CHECK(uv_loop_close(&f->loop) == 0);
    CHECK(fx_fd_count() == f->fds_before);
}

/* Stops the loop before it blocks for I/O once the awaited count is
 * reached (a completion may run in the timer phase of the iteration). */
static void until_prepare_cb(uv_prepare_t *p)
{
    fx_t *f = p->data;
    if (*f->counter >= f->target || f->expired)
        uv_stop(&f->loop);
}

void run_until(fx_t *f, const unsigned long *counter, unsigned long target)
{
    f->expired = false;
    f->counter = counter;
    f->target = target;
    CHECK(uv_timer_start(&f->watchdog, watchdog_cb, WATCHDOG_MS, 0) == 0);
    CHECK(uv_prepare_start(&f->until, until_prepare_cb) == 0);
    while (*counter < target && !f->expired)
        uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_prepare_stop(&f->until);
    uv_timer_stop(&f->watchdog);
    if (f->expired)
        fprintf(stderr, "watchdog: %lu of %lu\n", *counter, target);
    CHECK(!f->expired);
}

void rec_cb(const http_result_t *r, void *user)
{
    rec_t *rc = user;
    uv_thread_t self = uv_thread_self();

    CHECK(uv_thread_equal(&self, &rc->f->loop_thread));
    CHECK(!rc->f->in_call);
    CHECK(r->body != NULL && r->detail != NULL);
    CHECK(r->body[r->body_len] == '\0');
    rc->done++;
    rc->error = r->error;
    rc->status = r->status;
    rc->retry_after = r->retry_after;
    rc->total_time = r->total_time;
    rc->sent_at = r->sent_at;
    rc->body_len = r->body_len;
    snprintf(rc->body, sizeof(rc->body), "%s", r->body);
    snprintf(rc->detail, sizeof(rc->detail), "%s", r->detail);
    if (rc->expect != NULL)
        rc->expect_ok =
            r->body_len == strlen(rc->expect) && memcmp(r->body, rc->expect, r->body_len) == 0;
}

void route(fx_t *f, const char *path, int status, const char *body, const char *retry,
           long delay_ms, bool drop)
{
    stub_route_t r = {
        .status = status, .body = body, .retry_after = retry, .delay_ms = delay_ms, .drop = drop};
    CHECK(stub_route_set(f->stub, path, &r) == 0);
}

int fx_post(fx_t *f, const char *path, const char *body, size_t len, http_done_cb cb, void *user)
{
    return f->pool != NULL ? http_pool_post(f->pool, path, body, len, cb, user)
                           : http_engine_post(f->eng, path, body, len, cb, user);
}

int fx_get(fx_t *f, const char *path, http_done_cb cb, void *user)
{
    return f->pool != NULL ? http_pool_get(f->pool, path, cb, user)
                           : http_engine_get(f->eng, path, cb, user);
}

size_t fx_inflight(const fx_t *f)
{
    return f->pool != NULL ? http_pool_inflight(f->pool) : http_engine_inflight(f->eng);
}

void fx_cancel_all(fx_t *f)
{
    if (f->pool != NULL)
        http_pool_cancel_all(f->pool);
    else
        http_engine_cancel_all(f->eng);
}

void fx_close(fx_t *f)
{
    if (f->pool != NULL)
        http_pool_close(f->pool);
    else
        http_engine_close(f->eng);
    f->pool = NULL;
    f->eng = NULL;
}

int fx_rec_post(fx_t *f, const char *path, const char *body, rec_t *rc)
{
    int err;

    rc->f = f;
    f->in_call = true;
    err = fx_post(f, path, body, body ? strlen(body) : 0, rec_cb, rc);
    f->in_call = false;
    return err;
}

int fx_rec_get(fx_t *f, const char *path, rec_t *rc)
{
    int err;

    rc->f = f;
    f->in_call = true;
    err = fx_get(f, path, rec_cb, rc);
    f->in_call = false;
    return err;
}

static const char many_body[] = "{\"phoneNumberId\":\"1\",\"to\":\"15550001\",\"text\":\"hello\"}";

static void many_cb(const http_result_t *r, void *user);

static void many_submit(fx_many_t *m)
{
    fx_many_slot_t *s = &m->slots[m->next];

    s->m = m;
    s->id = m->next++;
    m->f->in_call = true;
    CHECK(fx_post(m->f, "/v2/messages/send/text", many_body, sizeof(many_body) - 1, many_cb, s) ==
          0);
    m->f->in_call = false;
}

static void many_cb(const http_result_t *r, void *user)
{
    fx_many_slot_t *s = user;
    fx_many_t *m = s->m;
    uv_thread_t self = uv_thread_self();

    CHECK(uv_thread_equal(&self, &m->f->loop_thread));
    CHECK(!m->f->in_call);
    m->hits[s->id]++;
    if (r->error != 0 || r->status != 200 || (m->answer != NULL && strcmp(r->body, m->answer) != 0))
        m->bad++;
    m->completed++;
    if (m->next < m->n)
        many_submit(m);
}

void fx_many_start(fx_many_t *m, fx_t *f, size_t n, size_t window, const char *answer)
{
    memset(m, 0, sizeof(*m));
    CHECK(n >= window);
    m->f = f;
    m->n = n;
    m->answer = answer;
    m->server_before = stub_total(f->stub);
    m->hits = calloc(n, 1);
    m->slots = calloc(n, sizeof(*m->slots));
    CHECK(m->hits != NULL && m->slots != NULL);
    for (size_t i = 0; i < window; i++)
        many_submit(m);
    CHECK(fx_inflight(f) == window);
}

void fx_many_check(fx_many_t *m)
{
    CHECK(m->completed == m->n);
    CHECK(m->bad == 0);
    for (size_t i = 0; i < m->n; i++)
        CHECK(m->hits[i] == 1);
    CHECK(fx_inflight(m->f) == 0);
    CHECK(stub_total(m->f->stub) - m->server_before == m->n);
    free(m->hits);
    free(m->slots);
    m->hits = NULL;
    m->slots = NULL;
}

void fx_cancel_cb(const http_result_t *r, void *user)
{
    fx_cancel_t *c = user;

    CHECK(r->error == HTTP_ECANCELLED);
    CHECK(r->status == 0 && r->body != NULL && r->body_len == 0);
    if (!c->in_cancel)
        c->outside++;
    c->cancelled++;
    /* Requests started from a cancelled callback are not cancelled. */
    if (c->resubmitted < 2) {
        rec_t *fr = &c->fresh[c->resubmitted++];
        fr->f = c->f;
        CHECK(fx_post(c->f, "/fast", "{}", 2, rec_cb, fr) == 0);
    }
}

void fx_close_cb(const http_result_t *r, void *user)
{
    fx_close_t *c = user;

    if (r->error == HTTP_ECANCELLED)
        c->cancelled++;
    else
        c->other++;
    /* Closing: new requests are refused. */
    if (fx_post(c->f, "/x", "{}", 2, fx_close_cb, c) == -ESHUTDOWN)
        c->post_refused++;
}

void fx_check_cancel_all(fx_t *f)
{
    fx_cancel_t c = {0};
    rec_t after = {0};

    if (!f->has_wake)
        fx_wake_on_server(f);
    c.f = f;
    route(f, "/slow", 200, "{}", NULL, 10000, false);
    for (int i = 0; i < 10; i++)
        CHECK(fx_post(f, "/slow", "{}", 2, fx_cancel_cb, &c) == 0);
    run_until(f, &f->server_total, 10); /* all ten are on the wire */
    c.in_cancel = true;                 /* read by fx_cancel_cb through &c */
    fx_cancel_all(f);
    /* cppcheck-suppress redundantAssignment */
    c.in_cancel = false;
    CHECK(c.cancelled == 10);
    CHECK(c.outside == 0);
    CHECK(fx_inflight(f) == 2); /* the two started from callbacks */
    run_until(f, &c.fresh[0].done, 1);
    run_until(f, &c.fresh[1].done, 1);
    CHECK(c.fresh[0].error == 0 && c.fresh[0].status == 200);
    CHECK(c.fresh[1].error == 0 && c.fresh[1].status == 200);
    CHECK(fx_rec_post(f, "/fast", "{}", &after) == 0);
    run_until(f, &after.done, 1);
    CHECK(after.status == 200);
    fx_cancel_all(f); /* nothing runs: no callback */
    CHECK(c.cancelled == 10);
}

void fx_check_close(fx_t *f, int n, bool on_wire)
{
    fx_close_t c = {0};

    if (on_wire && !f->has_wake)
        fx_wake_on_server(f);
    c.f = f;
    route(f, "/slow", 200, "{}", NULL, 10000, false);
    for (int i = 0; i < n; i++)
        CHECK(fx_post(f, "/slow", "{}", 2, fx_close_cb, &c) == 0);
    if (on_wire)
        run_until(f, &f->server_total, (unsigned long)n);
    /* fx_close_cb posts through f while the close runs: refused. */
    fx_close(f);
    CHECK(c.cancelled == (unsigned long)n && c.other == 0 && c.post_refused == (unsigned long)n);
}

int fx_main(int argc, char **argv, const fx_case_t *cases, size_t n)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <case>\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[1], cases[i].name) == 0) {
            uv_loop_t warm;
            CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
            /* libuv's first loop opens process-wide descriptors (the signal
             * lock pipe): open them now so fx_fd_count() baselines hold. */
            CHECK(uv_loop_init(&warm) == 0);
            CHECK(uv_loop_close(&warm) == 0);
            cases[i].fn();
            curl_global_cleanup();
            printf("%s: ok\n", argv[1]);
            return 0;
        }
    }
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}
