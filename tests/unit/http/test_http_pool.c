/*
 * test_http_pool.c - unit tests of http_pool (engines on threads of their
 * own) against the stub server: the engine's contract must hold across
 * threads. Callbacks run on the caller's loop thread (never inside the call
 * that started the request), exactly once; answers, errors and details
 * arrive intact; tokens, cancel and close reach every thread; nothing is
 * left behind (handles, descriptors, memory under ASan).
 */
#include "fixture.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static void pool_open(fx_t *f, int threads, const char *token, long timeout_ms)
{
    http_options_t o = {.api_base = f->base, .token = token, .timeout_ms = timeout_ms};

    CHECK(http_pool_new(&f->loop, &o, threads, &f->pool) == 0);
    CHECK(f->pool != NULL);
    CHECK(http_pool_threads(f->pool) == threads);
}

/* POST and GET with 0 (the caller's loop), 1 and 2 threads: the answer,
 * the token, the body and the counters. */
static void t_basic(void)
{
    static const char answer[] = "{\"success\":true,\"data\":{\"id\":\"x\"}}";

    for (int threads = 0; threads <= 2; threads++) {
        fx_t f;
        rec_t r = {0}, g = {0};
        stub_seen_t seen;
        http_stats_t st;

        fx_init(&f, 1, NULL, 0);
        pool_open(&f, threads, "tok-basic", 0);
        route(&f, "/v2/messages/send/text", 200, answer, NULL, 0, false);
        route(&f, "/v2/me", 200, "{\"me\":1}", NULL, 0, false);
        r.expect = answer;
        CHECK(fx_rec_post(&f, "/v2/messages/send/text", "{\"to\":\"123\",\"text\":\"hi\"}", &r) ==
              0);
        CHECK(r.done == 0);
        CHECK(http_pool_inflight(f.pool) == 1);
        run_until(&f, &r.done, 1);
        CHECK(r.error == 0 && r.status == 200 && r.expect_ok);
        CHECK(r.retry_after == -1);
        CHECK(strcmp(r.detail, "") == 0);
        CHECK(r.total_time > 0);
        /* time() is the coarse clock, a tick behind gettimeofday() (which
         * sent_at is taken from): 2 s of room at a second's boundary. */
        CHECK(r.sent_at > (double)time(NULL) - 10 && r.sent_at <= (double)time(NULL) + 2);
        CHECK(http_pool_inflight(f.pool) == 0);
        CHECK(fx_rec_get(&f, "/v2/me", &g) == 0);
        run_until(&f, &g.done, 1);
        CHECK(g.status == 200 && strcmp(g.body, "{\"me\":1}") == 0);
        stub_seen_get(f.stub, "/v2/messages/send/text", &seen);
        CHECK(seen.hits == 1);
        CHECK(strcmp(seen.auth, "Bearer tok-basic") == 0);
        CHECK(strcmp(seen.method, "POST") == 0);
        CHECK(strcmp(seen.body, "{\"to\":\"123\",\"text\":\"hi\"}") == 0);
        stub_seen_get(f.stub, "/v2/me", &seen);
        CHECK(strcmp(seen.method, "GET") == 0 && seen.body_len == 0);
        http_pool_stats(f.pool, &st);
        CHECK(st.requests == 2);
        CHECK(st.connects >= 1 && st.connects <= 2);
        fx_fini(&f);
    }
}

/* Thousands of requests over 3 threads, a window in flight, callbacks start
 * the next: each completes exactly once, on the loop thread. */
static void t_many(void)
{
    fx_t f;
    fx_many_t m;
    size_t window = 96;
    http_stats_t st;

    fx_init(&f, 2, NULL, 0);
    pool_open(&f, 3, "tok", 0);
    CHECK(http_pool_set_concurrency(f.pool, (long)window) == 0);
    route(&f, "/v2/messages/send/text", 200, "{\"success\":true}", NULL, 0, false);
    fx_many_start(&m, &f, 3000, window, "{\"success\":true}");
    run_until(&f, &m.completed, m.n);
    fx_many_check(&m);
    http_pool_stats(f.pool, &st);
    CHECK(st.requests == m.n);
    /* Each thread keeps its share of the window: 32 connections each. */
    CHECK(st.connects >= 3 && st.connects <= window);
    fx_fini(&f);
}

/* Errors and their details cross threads intact; an answer bigger than the
 * cap arrives cut, byte for byte. */
static void t_errors(void)
{
    fx_t f;
    rec_t drop = {0}, slow = {0}, ra = {0}, big = {0};
    size_t n = HTTP_MAX_RESPONSE + 100;
    char *body = malloc(n + 1);
    stub_route_t rt;

    CHECK(body != NULL);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + i % 26);
    body[n] = '\0';
    fx_init(&f, 0, NULL, 0);
    pool_open(&f, 2, "tok-secret", 300);
    route(&f, "/drop", 200, NULL, NULL, 0, true);
    route(&f, "/slow", 200, "{}", NULL, 10000, false);
    route(&f, "/ra", 429, "{\"success\":false}", "7", 0, false);
    rt = (stub_route_t){.status = 200, .body = body, .body_len = n};
    CHECK(stub_route_set(f.stub, "/big", &rt) == 0);
    CHECK(fx_rec_post(&f, "/drop", "{\"a\":1}", &drop) == 0);
    CHECK(fx_rec_post(&f, "/slow", "{\"a\":2}", &slow) == 0);
    CHECK(fx_rec_post(&f, "/ra", "{}", &ra) == 0);
    CHECK(fx_rec_get(&f, "/big", &big) == 0);
    run_until(&f, &drop.done, 1);
    run_until(&f, &slow.done, 1);
    run_until(&f, &ra.done, 1);
    run_until(&f, &big.done, 1);
    CHECK(drop.error == HTTP_EMAYBESENT && drop.status == 0 && drop.detail[0] != '\0');
    CHECK(drop.sent_at == 0);
    CHECK(slow.error == HTTP_EMAYBESENT && slow.detail[0] != '\0');
    CHECK(strstr(slow.detail, "tok-secret") == NULL);
    CHECK(slow.total_time >= 0.25);
    CHECK(ra.error == 0 && ra.status == 429 && ra.retry_after == 7.0);
    CHECK(strcmp(ra.body, "{\"success\":false}") == 0);
    CHECK(big.error == 0 && big.status == 200 && big.body_len == HTTP_MAX_RESPONSE);
    CHECK(memcmp(big.body, body, sizeof(big.body) - 1) == 0);
    free(body);
    fx_fini(&f);
}

/* Posts to /<prefix><i> for i in [from, to) at once (the least busy thread
 * takes each, so both send), waits for all, and checks what the stub saw:
 * each path's authorization, and with `once`, a single hit. */
static void post_batch_auth(fx_t *f, rec_t *r, const char *prefix, int from, int to,
                            const char *auth, bool once)
{
    stub_seen_t seen;
    char path[16];

    for (int i = from; i < to; i++) {
        snprintf(path, sizeof(path), "/%s%d", prefix, i);
        CHECK(fx_rec_post(f, path, "{}", &r[i]) == 0);
    }
    for (int i = from; i < to; i++)
        run_until(f, &r[i].done, 1);
    for (int i = from; i < to; i++) {
        snprintf(path, sizeof(path), "/%s%d", prefix, i);
        stub_seen_get(f->stub, path, &seen);
        CHECK((!once || seen.hits == 1) && strcmp(seen.auth, auth) == 0);
    }
}

/* A new token reaches every thread; a refused one changes none. */
static void t_set_token(void)
{
    fx_t f;
    rec_t r[8];

    memset(r, 0, sizeof(r));
    fx_init(&f, 2, NULL, 0);
    pool_open(&f, 2, "tok-A", 0);
    CHECK(http_pool_set_token(f.pool, "tok-B") == 0);
    post_batch_auth(&f, r, "b", 0, 4, "Bearer tok-B", true);
    CHECK(http_pool_set_token(f.pool, "x\r\nX-Evil: 1") == HTTP_EINVAL);
    post_batch_auth(&f, r, "c", 4, 8, "Bearer tok-B", false);
    fx_fini(&f);
}

/* Cancel reaches requests on the wire in every thread and delivers their
 * callbacks before it returns. */
static void t_cancel_all(void)
{
    fx_t f;

    fx_init(&f, 0, NULL, 0);
    pool_open(&f, 2, "tok", 0);
    fx_check_cancel_all(&f);
    fx_fini(&f);
}

/* Close with requests on the wire (after the threads took them) and before
 * the threads could take them: every callback runs once, from the close;
 * threads, handles and descriptors are gone afterwards (fx_fini). */
static void t_close(void)
{
    for (int on_wire = 0; on_wire <= 1; on_wire++) {
        fx_t f;

        fx_init(&f, 0, NULL, 0);
        pool_open(&f, 2, "tok", 0);
        fx_check_close(&f, 20, on_wire);
        fx_fini(&f);
    }
}

static void nop_cb(const http_result_t *r, void *user)
{
    (void)r;
    (void)user;
    CHECK(0);
}

static void t_invalid(void)
{
    fx_t f;
    http_options_t o = {.api_base = "http://127.0.0.1:1", .token = "t"};
    http_pool_t *p = NULL;
    http_stats_t st;
    char longpath[5000];

    fx_init(&f, 0, NULL, 0);
    CHECK(http_pool_new(&f.loop, &o, -1, &p) == HTTP_EINVAL && p == NULL);
    CHECK(http_pool_new(&f.loop, &o, HTTP_POOL_MAX_THREADS + 1, &p) == HTTP_EINVAL && p == NULL);
    CHECK(http_pool_new(NULL, &o, 1, &p) == HTTP_EINVAL && p == NULL);
    o.token = "bad\ntoken"; /* the engines refuse it: nothing is left running */
    CHECK(http_pool_new(&f.loop, &o, 2, &p) == HTTP_EINVAL && p == NULL);
    o.token = "t";
    CHECK(http_pool_new(&f.loop, &o, 2, &p) == 0 && p != NULL);
    CHECK(http_pool_post(p, "/x", "{}", 2, NULL, NULL) == HTTP_EINVAL);
    CHECK(http_pool_post(p, "x", "{}", 2, nop_cb, NULL) == HTTP_EINVAL);
    CHECK(http_pool_post(p, "/x", NULL, 5, nop_cb, NULL) == HTTP_EINVAL);
    CHECK(http_pool_get(p, NULL, nop_cb, NULL) == HTTP_EINVAL);
    memset(longpath, 'a', sizeof(longpath));
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    CHECK(http_pool_get(p, longpath, nop_cb, NULL) == HTTP_EINVAL);
    CHECK(http_pool_inflight(p) == 0);
    http_pool_stats(p, &st);
    CHECK(st.requests == 0);
    CHECK(http_pool_inflight(NULL) == 0 && http_pool_threads(NULL) == 0);
    http_pool_close(NULL);
    f.pool = p; /* fx_fini closes it */
    fx_fini(&f);
}

static const fx_case_t cases[] = {
    {"basic", t_basic},           {"many", t_many},
    {"errors", t_errors},         {"set_token", t_set_token},
    {"cancel_all", t_cancel_all}, {"close", t_close},
    {"invalid", t_invalid},
};

int main(int argc, char **argv)
{
    return fx_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
