/*
 * test_http.c - unit tests of the HTTP engine against the stub server.
 *
 * One case per process: `test_http <case>` (ctest registers each case).
 * Waiting is always on an event (a completion, or the server telling the
 * loop through a uv_async that it received something), guarded by a
 * watchdog timer that fails the test instead of hanging.
 */
#include "fixture.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ cases */

/* 200 with a body; the server sees the bearer token, the body, POST. */
static void t_basic(void)
{
    fx_t f;
    rec_t r = {0};
    stub_seen_t seen;
    http_stats_t st;

    fx_init(&f, 1, "tok-basic", 0);
    route(&f, "/v2/messages/send/text", 200, "{\"success\":true,\"data\":{\"id\":\"x\"}}", NULL, 0,
          false);
    r.expect = "{\"success\":true,\"data\":{\"id\":\"x\"}}";
    CHECK(fx_rec_post(&f, "/v2/messages/send/text", "{\"to\":\"123\",\"text\":\"hi\"}", &r) == 0);
    CHECK(r.done == 0); /* never from inside the call */
    CHECK(http_engine_inflight(f.eng) == 1);
    run_until(&f, &r.done, 1);
    CHECK(r.done == 1);
    CHECK(r.error == 0);
    CHECK(r.status == 200);
    CHECK(r.expect_ok);
    CHECK(r.retry_after == -1);
    CHECK(strcmp(r.detail, "") == 0);
    CHECK(r.total_time > 0);
    /* Wall clock, the daemon's: it left within this test's few seconds. */
    /* time() is the coarse clock, a tick behind gettimeofday() (which
     * sent_at is taken from): 2 s of room at a second's boundary. */
    CHECK(r.sent_at > (double)time(NULL) - 10 && r.sent_at <= (double)time(NULL) + 2);
    CHECK(http_engine_inflight(f.eng) == 0);
    stub_seen_get(f.stub, "/v2/messages/send/text", &seen);
    CHECK(seen.hits == 1);
    CHECK(strcmp(seen.auth, "Bearer tok-basic") == 0);
    CHECK(strcmp(seen.api_token, "") == 0);
    CHECK(strcmp(seen.method, "POST") == 0);
    CHECK(strcmp(seen.body, "{\"to\":\"123\",\"text\":\"hi\"}") == 0);
    CHECK(strcmp(seen.content_type, "application/json") == 0);
    CHECK(!seen.has_accept); /* not sent: libcurl's default would cost per request */
    http_engine_stats(f.eng, &st);
    CHECK(st.requests == 1);
    CHECK(st.connects == 1);
    CHECK(st.handshakes == 0);
    fx_fini(&f);
}

/* GET, and POST/GET alternating on reused easy handles. */
static void t_get(void)
{
    fx_t f;
    rec_t r1 = {0}, r2 = {0}, r3 = {0};
    stub_seen_t seen;

    fx_init(&f, 1, "tok", 0);
    route(&f, "/v2/me", 200, "{\"me\":1}", NULL, 0, false);
    CHECK(fx_rec_post(&f, "/p1", "{\"n\":1}", &r1) == 0);
    run_until(&f, &r1.done, 1);
    CHECK(fx_rec_get(&f, "/v2/me", &r2) == 0);
    run_until(&f, &r2.done, 1);
    CHECK(r2.error == 0 && r2.status == 200);
    CHECK(strcmp(r2.body, "{\"me\":1}") == 0);
    stub_seen_get(f.stub, "/v2/me", &seen);
    CHECK(strcmp(seen.method, "GET") == 0);
    CHECK(seen.body_len == 0);
    CHECK(strcmp(seen.auth, "Bearer tok") == 0);
    CHECK(fx_rec_post(&f, "/p3", "{\"n\":3}", &r3) == 0);
    run_until(&f, &r3.done, 1);
    stub_seen_get(f.stub, "/p3", &seen);
    CHECK(strcmp(seen.method, "POST") == 0);
    CHECK(strcmp(seen.body, "{\"n\":3}") == 0);
    CHECK(r3.status == 200);
    fx_fini(&f);
}

/* Many requests, a window in flight, callbacks submit the next. */
static void t_many(void)
{
    fx_t f;
    fx_many_t m;
    size_t window = 200;
    const char *env = getenv("AVP_HTTP_MANY_N");
    uint64_t t0, t1;
    http_stats_t st;

    fx_init(&f, 1, "tok", 0);
    route(&f, "/v2/messages/send/text", 200, "{\"success\":true,\"data\":{}}", NULL, 0, false);
    t0 = uv_hrtime();
    fx_many_start(&m, &f, env ? strtoul(env, NULL, 10) : 2000, window, NULL);
    run_until(&f, &m.completed, m.n);
    t1 = uv_hrtime();
    fx_many_check(&m);
    http_engine_stats(f.eng, &st);
    CHECK(st.requests == m.n);
    CHECK(st.connects >= 1 && st.connects <= 2 * window);
    printf("many: %zu requests, %zu in flight, %llu connections, %.0f requests/s\n", m.n, window,
           st.connects, (double)m.n / ((double)(t1 - t0) / 1e9));
    fx_fini(&f);
}

typedef struct chain {
    fx_t *f;
    unsigned long done, bad, n;
    const char *path;
} chain_t;

static void chain_cb(const http_result_t *r, void *user)
{
    chain_t *c = user;

    CHECK(!c->f->in_call);
    if (r->error != 0 || r->status != 200)
        c->bad++;
    if (++c->done < c->n) {
        c->f->in_call = true;
        CHECK(http_engine_get(c->f->eng, c->path, chain_cb, c) == 0);
        c->f->in_call = false;
    }
}

/* Sequential requests reuse one connection. */
static void t_keepalive(void)
{
    fx_t f;
    chain_t c = {.n = 50, .path = "/k"};
    http_stats_t st;

    fx_init(&f, 1, "tok", 0);
    c.f = &f;
    CHECK(http_engine_get(f.eng, c.path, chain_cb, &c) == 0);
    run_until(&f, &c.done, c.n);
    CHECK(c.bad == 0);
    http_engine_stats(f.eng, &st);
    CHECK(st.requests == 50);
    CHECK(st.connects == 1);
    CHECK(stub_total(f.stub) == 50);
    fx_fini(&f);
}

/* A completion callback submits the next request (and never runs inside
 * the submitting call: chain_cb checks in_call). */
static void t_chain(void)
{
    fx_t f;
    chain_t c = {.n = 10, .path = "/c"};
    stub_seen_t seen;

    fx_init(&f, 1, "tok", 0);
    c.f = &f;
    f.in_call = true; /* read by chain_cb through c.f */
    CHECK(http_engine_get(f.eng, c.path, chain_cb, &c) == 0);
    /* cppcheck-suppress redundantAssignment */
    f.in_call = false;
    run_until(&f, &c.done, c.n);
    CHECK(c.done == 10 && c.bad == 0);
    stub_seen_get(f.stub, "/c", &seen);
    CHECK(seen.hits == 10);
    fx_fini(&f);
}

static void t_retry_after(void)
{
    fx_t f;
    rec_t r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0}, r5 = {0}, r6 = {0}, r7 = {0};
    char date[64];
    time_t when = time(NULL) + 30;
    struct tm tm;

    fx_init(&f, 1, "tok", 0);
    gmtime_r(&when, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    route(&f, "/r1", 429, "{\"success\":false}", "7", 0, false);
    route(&f, "/r2", 503, NULL, date, 0, false);
    route(&f, "/r3", 429, NULL, "soon", 0, false);
    route(&f, "/r4", 429, NULL, NULL, 0, false);
    route(&f, "/r5", 429, NULL, "0x10", 0, false);
    route(&f, "/r6", 429, NULL, "99999999999999999999999", 0, false);
    route(&f, "/r7", 429, NULL, "1e3", 0, false);
    CHECK(fx_rec_post(&f, "/r5", "{}", &r5) == 0);
    CHECK(fx_rec_post(&f, "/r6", "{}", &r6) == 0);
    CHECK(fx_rec_post(&f, "/r7", "{}", &r7) == 0);
    CHECK(fx_rec_post(&f, "/r1", "{}", &r1) == 0);
    CHECK(fx_rec_post(&f, "/r2", "{}", &r2) == 0);
    CHECK(fx_rec_post(&f, "/r3", "{}", &r3) == 0);
    CHECK(fx_rec_post(&f, "/r4", "{}", &r4) == 0);
    run_until(&f, &r1.done, 1);
    run_until(&f, &r2.done, 1);
    run_until(&f, &r3.done, 1);
    run_until(&f, &r4.done, 1);
    CHECK(r1.error == 0 && r1.status == 429 && r1.retry_after == 7.0);
    CHECK(strcmp(r1.body, "{\"success\":false}") == 0);
    CHECK(r2.error == 0 && r2.status == 503);
    CHECK(r2.retry_after >= 27 && r2.retry_after <= 31);
    CHECK(r3.status == 429 && r3.retry_after == -1);
    CHECK(r4.status == 429 && r4.retry_after == -1);
    /* delta-seconds are digits only; too many of them are a year. */
    run_until(&f, &r5.done, 1);
    run_until(&f, &r6.done, 1);
    run_until(&f, &r7.done, 1);
    CHECK(r5.status == 429 && r5.retry_after == -1);
    CHECK(r6.status == 429 && r6.retry_after == 86400.0 * 365);
    CHECK(r7.status == 429 && r7.retry_after == -1);
    CHECK(r2.body_len == 0 && strcmp(r2.body, "") == 0);
    fx_fini(&f);
}

/* Bodies beyond HTTP_MAX_RESPONSE are cut, not failed. */
static void t_body_cap(void)
{
    fx_t f;
    size_t n = HTTP_MAX_RESPONSE + 1000;
    char *big = malloc(n + 1);
    rec_t r = {0};

    CHECK(big != NULL);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    big[HTTP_MAX_RESPONSE] = '\0'; /* `expect` is the first HTTP_MAX_RESPONSE bytes */
    fx_init(&f, 1, "tok", 0);
    {
        stub_route_t rt = {.status = 200, .body = big, .body_len = n};
        big[HTTP_MAX_RESPONSE] = 'a' + HTTP_MAX_RESPONSE % 26;
        CHECK(stub_route_set(f.stub, "/big", &rt) == 0);
        big[HTTP_MAX_RESPONSE] = '\0';
    }
    r.expect = big;
    CHECK(fx_rec_post(&f, "/big", "{}", &r) == 0);
    run_until(&f, &r.done, 1);
    CHECK(r.error == 0 && r.status == 200);
    CHECK(r.body_len == HTTP_MAX_RESPONSE);
    CHECK(r.expect_ok);
    free(big);
    fx_fini(&f);
}

/* An answer that goes on past HTTP_READ_MAX is abandoned there, not read
 * to its end; it is still an answer with its status and the first
 * HTTP_MAX_RESPONSE bytes (a 401 must pause the account, a 400 fail the
 * job; it was a transport error, maybe sent, before). */
static void t_body_endless(void)
{
    static const int statuses[] = {200, 401};
    size_t n = 9 * HTTP_MAX_RESPONSE;
    char *big = malloc(n);

    CHECK(big != NULL);
    memset(big, 'x', n);
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        fx_t f;
        rec_t r = {0};

        fx_init(&f, 1, "tok", 0);
        {
            stub_route_t rt = {.status = statuses[i], .body = big, .body_len = n};
            CHECK(stub_route_set(f.stub, "/endless", &rt) == 0);
        }
        CHECK(fx_rec_post(&f, "/endless", "{}", &r) == 0);
        run_until(&f, &r.done, 1);
        CHECK_EQ(r.error, 0);
        CHECK_EQ(r.status, statuses[i]);
        CHECK_EQ(r.body_len, HTTP_MAX_RESPONSE);
        fx_fini(&f);
    }
    free(big);
}

/* The server read the request and never answers: maybe sent. */
static void t_timeout(void)
{
    fx_t f;
    rec_t r = {0};
    stub_seen_t seen;

    /* 2 s, not 200 ms: the stub counts the request once its thread has
     * read it, which took longer than 200 ms under ASan on busy cores (the
     * client had written it, hits was 0). */
    fx_init(&f, 0, "tok-secret", 2000);
    route(&f, "/slow", 200, "{}", NULL, 10000, false);
    CHECK(fx_rec_post(&f, "/slow", "{\"a\":1}", &r) == 0);
    run_until(&f, &r.done, 1);
    CHECK(r.error == HTTP_EMAYBESENT);
    CHECK(r.status == 0);
    CHECK(r.detail[0] != '\0');
    CHECK(strstr(r.detail, "tok-secret") == NULL);
    CHECK(r.total_time >= 1.5);
    stub_seen_get(f.stub, "/slow", &seen);
    CHECK(seen.hits == 1);
    fx_fini(&f);
}

/* Nothing listens: not sent. */
static void t_refused(void)
{
    fx_t f;
    rec_t r = {0};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    http_stats_t st;

    /* Bound but not listening: the port is ours and refuses connections. */
    CHECK(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    fx_init(&f, 1, "tok", 0);
    http_engine_close(f.eng);
    snprintf(f.base, sizeof(f.base), "http://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    fx_engine(&f, "tok", 0);
    CHECK(fx_rec_post(&f, "/v2/x", "{}", &r) == 0);
    run_until(&f, &r.done, 1);
    CHECK(r.error == HTTP_ENOTSENT);
    CHECK(r.status == 0);
    CHECK(r.detail[0] != '\0');
    http_engine_stats(f.eng, &st);
    CHECK(st.requests == 1);
    fx_fini(&f);
    close(fd);
}

/*
 * A connect that times out: libcurl 7.88 closes a socket whose connect never
 * completed without calling the close-socket callback (curl PR #11439, fixed
 * in 8.2), so the engine must notice by itself that the number is no longer
 * its socket. Here the number is reused by a file of the test's own, which
 * an engine closing it as its own would take away.
 */
static void t_connect_timeout_fd(void)
{
    fx_t f;
    rec_t r = {0};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int lfd, fill[4], mine[8];

    /* Listening with a full accept queue: the kernel drops further SYNs,
     * so a new connect stays pending. */
    fx_init(&f, 0, NULL, 0);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(lfd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(lfd, 0) == 0);
    CHECK(getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
    for (size_t i = 0; i < sizeof(fill) / sizeof(fill[0]); i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        CHECK(fill[i] >= 0);
        (void)connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
    }
    snprintf(f.base, sizeof(f.base), "http://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    fx_engine(&f, "tok", 300);
    CHECK(fx_rec_post(&f, "/v2/x", "{}", &r) == 0);
    run_until(&f, &r.done, 1);
    CHECK(r.error == HTTP_ENOTSENT); /* timed out before the connect completed */
    /* The lowest free numbers, the engine's old socket's among them. */
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
        CHECK((mine[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0);
    http_engine_close(f.eng);
    f.eng = NULL;
    for (int i = 0; i < 4; i++) /* the engine's close callbacks */
        uv_run(&f.loop, UV_RUN_NOWAIT);
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
        if (fcntl(mine[i], F_GETFD) < 0)
            fprintf(stderr, "fd %d closed by the engine\n", mine[i]);
        CHECK(fcntl(mine[i], F_GETFD) >= 0);
        close(mine[i]);
    }
    for (size_t i = 0; i < sizeof(fill) / sizeof(fill[0]); i++)
        close(fill[i]);
    close(lfd);
    fx_fini(&f);
}

/* The server reads the request and closes the connection: maybe sent. */
static void t_drop(void)
{
    fx_t f;
    rec_t r = {0};
    stub_seen_t seen;

    fx_init(&f, 0, "tok", 0);
    route(&f, "/drop", 200, NULL, NULL, 0, true);
    CHECK(fx_rec_post(&f, "/drop", "{\"a\":1}", &r) == 0);
    run_until(&f, &r.done, 1);
    CHECK(r.error == HTTP_EMAYBESENT);
    CHECK(r.status == 0);
    stub_seen_get(f.stub, "/drop", &seen);
    CHECK(seen.hits == 1);
    CHECK(strcmp(seen.body, "{\"a\":1}") == 0);
    fx_fini(&f);
}

/* A reused keep-alive connection closes without an answer after the
 * request reached the server, and libcurl's resend on a new connection is
 * refused at connect: the first copy may have been processed, so the
 * request counts as maybe sent (it counted as not sent, and a job under
 * at-most-once went out a second time once the server listened again). */
static void t_drop_reconnect_refused(void)
{
    fx_t f;
    rec_t r = {0};
    stub_seen_t seen;
    stub_route_t gone = {.status = 200, .drop = true, .unlisten = true};

    fx_init(&f, 0, "tok", 0);
    CHECK(fx_rec_post(&f, "/first", "{}", &r) == 0);
    run_until(&f, &r.done, 1);
    CHECK(r.error == 0 && r.status == 200);
    CHECK(stub_route_set(f.stub, "/gone", &gone) == 0);
    CHECK(fx_rec_post(&f, "/gone", "{\"a\":2}", &r) == 0);
    run_until(&f, &r.done, 2);
    CHECK(r.error == HTTP_EMAYBESENT);
    if (strstr(r.detail, "sending it again failed") == NULL)
        fprintf(stderr, "detail: %s\n", r.detail);
    CHECK(strstr(r.detail, "sending it again failed") != NULL);
    stub_seen_get(f.stub, "/gone", &seen);
    CHECK(seen.hits == 1);
    fx_fini(&f);
}

/* New requests carry the new token; a request started before keeps the
 * old one even though its headers are sent after the change. */
static void t_set_token(void)
{
    fx_t f;
    rec_t ra = {0}, rb = {0}, rc = {0}, rd = {0}, re = {0};
    stub_seen_t seen;

    fx_init(&f, 1, "tok-A", 0);
    CHECK(fx_rec_post(&f, "/a", "{}", &ra) == 0);
    CHECK(http_engine_set_token(f.eng, "tok-B") == 0);
    CHECK(fx_rec_post(&f, "/b", "{}", &rb) == 0);
    run_until(&f, &ra.done, 1);
    run_until(&f, &rb.done, 1);
    stub_seen_get(f.stub, "/a", &seen);
    CHECK(strcmp(seen.auth, "Bearer tok-A") == 0);
    stub_seen_get(f.stub, "/b", &seen);
    CHECK(strcmp(seen.auth, "Bearer tok-B") == 0);

    CHECK(fx_rec_post(&f, "/c", "{}", &rc) == 0);
    run_until(&f, &rc.done, 1);
    stub_seen_get(f.stub, "/c", &seen);
    CHECK(strcmp(seen.auth, "Bearer tok-B") == 0);

    /* A token that would inject a header is refused; the old one stays. */
    CHECK(http_engine_set_token(f.eng, "x\r\nX-Evil: 1") == HTTP_EINVAL);
    CHECK(fx_rec_post(&f, "/d", "{}", &rd) == 0);
    run_until(&f, &rd.done, 1);
    stub_seen_get(f.stub, "/d", &seen);
    CHECK(strcmp(seen.auth, "Bearer tok-B") == 0);

    CHECK(http_engine_set_token(f.eng, NULL) == 0);
    CHECK(fx_rec_get(&f, "/e", &re) == 0);
    run_until(&f, &re.done, 1);
    stub_seen_get(f.stub, "/e", &seen);
    CHECK(strcmp(seen.auth, "") == 0);
    fx_fini(&f);
}

static void t_cancel_all(void)
{
    fx_t f;

    fx_init(&f, 0, "tok", 0);
    fx_check_cancel_all(&f);
    fx_fini(&f);
}

typedef struct left_rec {
    unsigned long done;
    int error;
    bool left;
} left_rec_t;

static void left_cb(const http_result_t *r, void *user)
{
    left_rec_t *l = user;

    l->done++;
    l->error = r->error;
    l->left = r->left;
}

/* A request cancelled or closed before it reached its first write says
 * nothing of it left, also on a reused handle whose previous request did
 * (libcurl's request size is that request's until this one starts). */
static void t_cancel_fresh(void)
{
    fx_t f;
    left_rec_t a = {0}, b = {0}, c = {0};
    stub_seen_t seen;

    fx_init(&f, 1, "tok", 0);
    route(&f, "/a", 200, "{}", NULL, 0, false);
    CHECK(http_engine_post(f.eng, "/a", "{\"x\":1}", 7, left_cb, &a) == 0);
    run_until(&f, &a.done, 1);
    CHECK(a.error == 0);
    CHECK(http_engine_post(f.eng, "/a", "{\"x\":2}", 7, left_cb, &b) == 0);
    http_engine_cancel_all(f.eng);
    CHECK(b.done == 1 && b.error == HTTP_ECANCELLED && !b.left);
    CHECK(http_engine_post(f.eng, "/a", "{\"x\":3}", 7, left_cb, &c) == 0);
    fx_close(&f);
    CHECK(c.done == 1 && c.error == HTTP_ECANCELLED && !c.left);
    stub_seen_get(f.stub, "/a", &seen);
    CHECK(seen.hits == 1);
    fx_fini(&f);
}

/* Close with requests on the wire: every callback runs once, everything is
 * freed (ASan's leak check), the loop ends with no handle. */
static void t_close_inflight(void)
{
    fx_t f;

    fx_init(&f, 0, "tok", 0);
    fx_check_close(&f, 20, true);
    fx_fini(&f);
}

/* Close before the loop ever started the transfers. */
static void t_close_early(void)
{
    fx_t f;

    fx_init(&f, 0, "tok", 0);
    fx_check_close(&f, 5, false);
    fx_fini(&f);
}

typedef struct cfc {
    fx_t *f;
    unsigned long fast_done, cancelled;
} cfc_t;

static void cfc_slow_cb(const http_result_t *r, void *user)
{
    cfc_t *c = user;
    CHECK(r->error == HTTP_ECANCELLED);
    c->cancelled++;
}

static void cfc_fast_cb(const http_result_t *r, void *user)
{
    cfc_t *c = user;

    CHECK(r->error == 0 && r->status == 200);
    c->fast_done++;
    /* Closing from a completion callback, during the engine's drain. */
    http_engine_close(c->f->eng);
    c->f->eng = NULL;
    CHECK(c->cancelled == 5);
}

static void t_close_from_cb(void)
{
    fx_t f;
    cfc_t c = {0};

    fx_init(&f, 0, "tok", 0);
    c.f = &f;
    route(&f, "/slow", 200, "{}", NULL, 10000, false);
    for (int i = 0; i < 5; i++)
        CHECK(http_engine_post(f.eng, "/slow", "{}", 2, cfc_slow_cb, &c) == 0);
    CHECK(http_engine_get(f.eng, "/fast", cfc_fast_cb, &c) == 0);
    run_until(&f, &c.fast_done, 1);
    CHECK(c.cancelled == 5);
    fx_fini(&f);
}

/* max_host_connections caps the connections libcurl opens to the host. */
static void t_max_conn(void)
{
    fx_t f;
    rec_t r[20];
    unsigned long done = 0;
    http_options_t o = {.token = "tok", .max_host_connections = 2};
    http_stats_t st;

    memset(r, 0, sizeof(r));
    fx_init(&f, 1, "tok", 0);
    http_engine_close(f.eng);
    o.api_base = f.base;
    CHECK(http_engine_new(&f.loop, &o, &f.eng) == 0);
    for (size_t i = 0; i < 20; i++)
        CHECK(fx_rec_post(&f, "/m", "{}", &r[i]) == 0);
    for (size_t i = 0; i < 20; i++) {
        run_until(&f, &r[i].done, 1);
        CHECK(r[i].error == 0 && r[i].status == 200);
        done += r[i].done;
    }
    CHECK(done == 20);
    http_engine_stats(f.eng, &st);
    CHECK(st.requests == 20);
    CHECK(st.connects >= 1 && st.connects <= 2);
    fx_fini(&f);
}

/* Over HTTP/1.x a concurrency of n splits the connections over
 * ceil(n / 32) lanes (multi handles) that each keep theirs: 100 in flight
 * run on 4 lanes and, round after round, on the same connections; a smaller
 * concurrency keeps the lanes and still sends everything. */
static void t_lanes(void)
{
    fx_t f;
    fx_many_t m;
    http_stats_t st;
    unsigned long long first;
    /* No gate on new connections (t_open_burst): all 100 open at once. */
    http_options_t o = {.token = "tok", .open_burst = 1000};

    fx_init(&f, 0, "tok", 0);
    http_engine_close(f.eng);
    o.api_base = f.base;
    CHECK(http_engine_new(&f.loop, &o, &f.eng) == 0);
    http_engine_stats(f.eng, &st);
    CHECK(st.lanes == 1);
    CHECK(http_engine_set_concurrency(f.eng, 100) == 0);
    http_engine_stats(f.eng, &st);
    CHECK(st.lanes == 4);
    route(&f, "/v2/messages/send/text", 200, "{\"success\":true,\"data\":{}}", NULL, 2, false);
    fx_many_start(&m, &f, 1000, 100, NULL);
    run_until(&f, &m.completed, m.n);
    fx_many_check(&m);
    http_engine_stats(f.eng, &st);
    first = st.connects;
    /* 100 in flight: at most 25 per lane, one connection each. */
    CHECK(first >= 90 && first <= 100);
    CHECK(http_engine_inflight(f.eng) == 0);
    fx_many_start(&m, &f, 1000, 100, NULL);
    run_until(&f, &m.completed, m.n);
    fx_many_check(&m);
    http_engine_stats(f.eng, &st);
    CHECK(st.connects == first); /* no lane closed one it needs again */
    CHECK(st.requests == 2000);
    /* Lanes stay; each caches ceil(8 / 4) + 1 = 3 connections now. */
    CHECK(http_engine_set_concurrency(f.eng, 8) == 0);
    fx_many_start(&m, &f, 200, 8, NULL);
    run_until(&f, &m.completed, m.n);
    fx_many_check(&m);
    http_engine_stats(f.eng, &st);
    CHECK(st.lanes == 4);
    CHECK(st.connects == first); /* 8 in flight fit in what stayed open */
    fx_fini(&f);
}

/* Requests on several lanes: cancel_all, a timeout and a close reach every
 * lane's transfers (each lane has its own multi handle and timer). */
static void t_lanes_cancel_close(void)
{
    fx_t f;
    rec_t r[40];
    unsigned long done = 0;
    http_stats_t st;

    fx_init(&f, 0, "tok", 300);
    CHECK(http_engine_set_concurrency(f.eng, 64) == 0);
    http_engine_stats(f.eng, &st);
    CHECK(st.lanes == 2);
    fx_check_cancel_all(&f);
    /* 40 requests over both lanes, each timing out on its lane's timer. */
    memset(r, 0, sizeof(r));
    route(&f, "/hang", 200, "{}", NULL, 10000, false);
    for (size_t i = 0; i < 40; i++)
        CHECK(fx_rec_post(&f, "/hang", "{}", &r[i]) == 0);
    for (size_t i = 0; i < 40; i++) {
        run_until(&f, &r[i].done, 1);
        CHECK(r[i].error == HTTP_EMAYBESENT);
        done += r[i].done;
    }
    CHECK(done == 40);
    fx_check_close(&f, 40, true);
    fx_fini(&f);
}

/* HTTP/2 offered (https) or a cap on connections: one lane whatever n. */
static void t_lanes_one(void)
{
    fx_t f;
    http_engine_t *e = NULL;
    http_options_t o = {.token = "tok", .max_host_connections = 2};
    http_stats_t st;

    fx_init(&f, 1, NULL, 0);
    o.api_base = f.base;
    CHECK(http_engine_new(&f.loop, &o, &e) == 0);
    CHECK(http_engine_set_concurrency(e, 256) == 0);
    http_engine_stats(e, &st);
    CHECK(st.lanes == 1);
    http_engine_close(e);
    o.max_host_connections = 0;
    o.api_base = "https://127.0.0.1:1";
    o.http2 = true;
    CHECK(http_engine_new(&f.loop, &o, &e) == 0);
    CHECK(http_engine_set_concurrency(e, 256) == 0);
    http_engine_stats(e, &st);
    CHECK(st.lanes == 1);
    http_engine_close(e);
    fx_fini(&f);
}

/* A host name goes through libcurl's threaded resolver, whose wake-up
 * socket is not opened through our open-socket callback ("foreign").
 * ("localhost" would not do: libcurl resolves it without the resolver.)
 * Needs the machine's own name to resolve to a loopback address (/etc/hosts:
 * 127.0.1.1 on Debian, 127.0.0.1 elsewhere), where the stub then listens;
 * skipped otherwise. */
static void t_resolve(void)
{
    fx_t f;
    rec_t r1 = {0}, r2 = {0};
    char host[256];
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    uint32_t addr;

    CHECK(gethostname(host, sizeof(host)) == 0);
    if (getaddrinfo(host, NULL, &hints, &ai) != 0)
        exit(77);
    addr = ((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr.s_addr;
    freeaddrinfo(ai);
    if ((ntohl(addr) >> 24) != 127)
        exit(77);
    fx_init(&f, 1, NULL, 0);
    stub_stop(f.stub);
    CHECK(stub_start_at(1, addr, &f.stub) == 0);
    snprintf(f.base, sizeof(f.base), "http://%s:%u", host, (unsigned)stub_port(f.stub));
    fx_engine(&f, "tok", 0);
    CHECK(fx_rec_post(&f, "/n1", "{}", &r1) == 0);
    run_until(&f, &r1.done, 1);
    CHECK(r1.error == 0 && r1.status == 200);
    CHECK(fx_rec_post(&f, "/n2", "{}", &r2) == 0); /* DNS cache and connection reused */
    run_until(&f, &r2.done, 1);
    CHECK(r2.error == 0 && r2.status == 200);
    fx_fini(&f);
}

/* ------------------------------------------------------ routes and proxy */

#define ROUTES_N 20 /* more paths than the engine parses once (16) */

typedef struct routes {
    fx_t *f;
    unsigned long done, bad, n;
    char paths[ROUTES_N][64];
    char bodies[ROUTES_N][64];
} routes_t;

/* Sends request `i` of the walk: path i % ROUTES_N, POST or GET in turn. */
static void routes_send(routes_t *w, unsigned long i);

static void routes_cb(const http_result_t *r, void *user)
{
    routes_t *w = user;

    CHECK(!w->f->in_call);
    if (r->error != 0 || r->status != 200)
        w->bad++;
    if (++w->done < w->n)
        routes_send(w, w->done);
}

static void routes_send(routes_t *w, unsigned long i)
{
    size_t k = i % ROUTES_N;
    int rc;

    w->f->in_call = true;
    if ((i / ROUTES_N) % 2 == 0)
        rc = http_engine_post(w->f->eng, w->paths[k], w->bodies[k], strlen(w->bodies[k]), routes_cb,
                              w);
    else
        rc = http_engine_get(w->f->eng, w->paths[k], routes_cb, w);
    w->f->in_call = false;
    CHECK(rc == 0);
}

/* Different paths (per phone number id, and paths that are prefixes of
 * each other) reach exactly their URL: one at a time on one reused easy
 * handle, so its URL changes between every two transfers, and then all at
 * once on many handles. */
static void t_routes(void)
{
    fx_t f;
    routes_t w = {.n = 3 * ROUTES_N};
    rec_t recs[ROUTES_N];
    stub_seen_t seen;
    http_stats_t st;

    fx_init(&f, 1, "tok", 0);
    w.f = &f;
    for (size_t k = 0; k < ROUTES_N; k++) {
        if (k % 4 == 2) /* a prefix of the path after it */
            snprintf(w.paths[k], sizeof(w.paths[k]), "/v2/numbers/%zu", 1000 + k + 1);
        else
            snprintf(w.paths[k], sizeof(w.paths[k]), "/v2/numbers/%zu/messages", 1000 + k);
        snprintf(w.bodies[k], sizeof(w.bodies[k]), "{\"k\":%zu}", k);
    }
    routes_send(&w, 0);
    run_until(&f, &w.done, w.n);
    CHECK(w.bad == 0);
    /* Each path: POST, GET, POST; the last POST's body is its own. */
    for (size_t k = 0; k < ROUTES_N; k++) {
        stub_seen_get(f.stub, w.paths[k], &seen);
        CHECK(seen.hits == 3);
        CHECK(strcmp(seen.method, "POST") == 0);
        CHECK(strcmp(seen.body, w.bodies[k]) == 0);
        CHECK(strcmp(seen.auth, "Bearer tok") == 0);
    }
    CHECK(stub_total(f.stub) == w.n);
    http_engine_stats(f.eng, &st);
    CHECK(st.connects == 1); /* one handle and one connection all along */

    /* All at once, in reverse order, after a token change (new headers on
     * reused handles). */
    CHECK(http_engine_set_token(f.eng, "tok2") == 0);
    memset(recs, 0, sizeof(recs));
    for (size_t k = ROUTES_N; k-- > 0;)
        CHECK(fx_rec_get(&f, w.paths[k], &recs[k]) == 0);
    for (size_t k = 0; k < ROUTES_N; k++)
        run_until(&f, &recs[k].done, 1);
    for (size_t k = 0; k < ROUTES_N; k++) {
        CHECK(recs[k].error == 0 && recs[k].status == 200);
        stub_seen_get(f.stub, w.paths[k], &seen);
        CHECK(seen.hits == 4);
        CHECK(strcmp(seen.method, "GET") == 0);
        CHECK(strcmp(seen.auth, "Bearer tok2") == 0);
    }
    CHECK(stub_total(f.stub) == w.n + ROUTES_N);
    fx_fini(&f);
}

static void proxy_env_clear(void)
{
    static const char *const names[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                        "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        CHECK(unsetenv(names[i]) == 0);
}

/* http_proxy is read when the engine is created: the stub, acting as the
 * proxy, receives the absolute URL of an API host that does not resolve,
 * also after the variable is gone. */
static void t_proxy_env(void)
{
    fx_t f;
    rec_t r1 = {0}, r2 = {0};
    stub_seen_t seen;
    char proxy[64];
    static const char api[] = "http://avp-no-such-host.invalid:8081";

    proxy_env_clear();
    fx_init(&f, 1, "tok", 0);
    http_engine_close(f.eng);
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%u", (unsigned)stub_port(f.stub));
    CHECK(setenv("http_proxy", proxy, 1) == 0);
    snprintf(f.base, sizeof(f.base), "%s", api);
    fx_engine(&f, "tok", 0);
    CHECK(unsetenv("http_proxy") == 0); /* read already */

    CHECK(fx_rec_post(&f, "/v2/p", "{\"p\":1}", &r1) == 0);
    run_until(&f, &r1.done, 1);
    CHECK(r1.error == 0 && r1.status == 200);
    CHECK(fx_rec_get(&f, "/v2/q", &r2) == 0);
    run_until(&f, &r2.done, 1);
    CHECK(r2.error == 0 && r2.status == 200);
    stub_seen_get(f.stub, "http://avp-no-such-host.invalid:8081/v2/p", &seen);
    CHECK(seen.hits == 1);
    CHECK(strcmp(seen.body, "{\"p\":1}") == 0);
    CHECK(strcmp(seen.auth, "Bearer tok") == 0);
    stub_seen_get(f.stub, "http://avp-no-such-host.invalid:8081/v2/q", &seen);
    CHECK(seen.hits == 1);
    CHECK(stub_total(f.stub) == 2);
    fx_fini(&f);
}

/* no_proxy is honoured (the proxy would refuse the connection), and a proxy
 * set after the engine's creation is not used. */
static void t_no_proxy_env(void)
{
    fx_t f;
    rec_t r1 = {0}, r2 = {0};
    stub_seen_t seen;

    proxy_env_clear();
    CHECK(setenv("http_proxy", "http://127.0.0.1:1", 1) == 0);
    CHECK(setenv("NO_PROXY", "localhost,127.0.0.1", 1) == 0);
    fx_init(&f, 1, "tok", 0);
    CHECK(fx_rec_post(&f, "/v2/direct", "{}", &r1) == 0);
    run_until(&f, &r1.done, 1);
    CHECK(r1.error == 0 && r1.status == 200);
    stub_seen_get(f.stub, "/v2/direct", &seen);
    CHECK(seen.hits == 1);

    /* A new engine without proxy variables, then a dead proxy appears. */
    proxy_env_clear();
    http_engine_close(f.eng);
    fx_engine(&f, "tok", 0);
    CHECK(setenv("http_proxy", "http://127.0.0.1:1", 1) == 0);
    CHECK(setenv("all_proxy", "http://127.0.0.1:1", 1) == 0);
    CHECK(fx_rec_post(&f, "/v2/direct", "{}", &r2) == 0);
    run_until(&f, &r2.done, 1);
    CHECK(r2.error == 0 && r2.status == 200);
    stub_seen_get(f.stub, "/v2/direct", &seen);
    CHECK(seen.hits == 2);
    fx_fini(&f);
}

static void nop_cb(const http_result_t *r, void *user)
{
    (void)r;
    (void)user;
    CHECK(0);
}

static void t_invalid(void)
{
    uv_loop_t loop;
    http_engine_t *e = NULL;
    http_options_t o = {.api_base = "ftp://127.0.0.1", .token = "t"};
    http_stats_t st;

    CHECK(uv_loop_init(&loop) == 0);
    CHECK(http_engine_new(&loop, &o, &e) == HTTP_EINVAL && e == NULL);
    o.api_base = "http://127.0.0.1:1";
    o.token = "bad\ntoken";
    CHECK(http_engine_new(&loop, &o, &e) == HTTP_EINVAL && e == NULL);
    o.token = "t";
    CHECK(http_engine_new(NULL, &o, &e) == HTTP_EINVAL);
    CHECK(http_engine_new(&loop, &o, &e) == 0 && e != NULL);
    CHECK(http_engine_post(e, "/x", "{}", 2, NULL, NULL) == HTTP_EINVAL);
    CHECK(http_engine_post(e, "x", "{}", 2, nop_cb, NULL) == HTTP_EINVAL);
    CHECK(http_engine_post(e, "/x", NULL, 5, nop_cb, NULL) == HTTP_EINVAL);
    CHECK(http_engine_get(e, NULL, nop_cb, NULL) == HTTP_EINVAL);
    {
        char longpath[5000];
        memset(longpath, 'a', sizeof(longpath));
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = '\0';
        CHECK(http_engine_get(e, longpath, nop_cb, NULL) == HTTP_EINVAL);
    }
    CHECK(http_engine_inflight(e) == 0);
    http_engine_stats(e, &st);
    CHECK(st.requests == 0);
    CHECK(http_engine_inflight(NULL) == 0);
    http_engine_close(NULL);
    http_engine_close(e);
    CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
    CHECK(uv_loop_close(&loop) == 0);
    {
        const int codes[] = {0,           HTTP_ENOTSENT, HTTP_EMAYBESENT, HTTP_ECANCELLED,
                             HTTP_EINVAL, HTTP_ECURL,    -ENOMEM,         -ESHUTDOWN,
                             -EIO};
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
            CHECK(http_strerror(codes[i]) != NULL && http_strerror(codes[i])[0] != '\0');
        CHECK(strcmp(http_strerror(HTTP_ENOTSENT), http_strerror(HTTP_EMAYBESENT)) != 0);
    }
}

/* ------------------------------------------------- opening connections */

/* A server of the test's own on the loop: a listener whose accept queue
 * the tick samples (TCP_INFO of a listener: tcpi_unacked), and, once
 * `serve` is set, accepts and answers every request "200 {}" keep-alive. */
#define BS_CONNS 64
typedef struct bsrv {
    int lfd;
    int conns[BS_CONNS];
    char buf[BS_CONNS][2048];
    size_t len[BS_CONNS], nconns;
    bool serve;
    unsigned long q_want, q_hits, q_max;
    uv_timer_t tick;
} bsrv_t;

static unsigned long bs_queue(int lfd)
{
    struct tcp_info ti;
    socklen_t n = sizeof(ti);

    CHECK(getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &n) == 0);
    return ti.tcpi_unacked; /* a listener's: connections waiting for accept() */
}

/* Answers every whole request in connection i's buffer. */
static void bs_answer(bsrv_t *s, size_t i)
{
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

    for (;;) {
        char *end = memmem(s->buf[i], s->len[i], "\r\n\r\n", 4);
        char *cl = memmem(s->buf[i], s->len[i], "Content-Length: ", 16);
        size_t head, need;

        if (end == NULL || cl == NULL)
            return;
        head = (size_t)(end - s->buf[i]) + 4;
        need = head + strtoul(cl + 16, NULL, 10);
        if (s->len[i] < need)
            return;
        CHECK(write(s->conns[i], ans, sizeof(ans) - 1) == (ssize_t)sizeof(ans) - 1);
        memmove(s->buf[i], s->buf[i] + need, s->len[i] - need);
        s->len[i] -= need;
    }
}

static void bs_tick_cb(uv_timer_t *t)
{
    bsrv_t *s = t->data;
    unsigned long q = bs_queue(s->lfd);
    int fd;

    if (q > s->q_max)
        s->q_max = q;
    if (q >= s->q_want)
        s->q_hits++;
    if (!s->serve)
        return;
    while ((fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        CHECK(s->nconns < BS_CONNS);
        s->conns[s->nconns] = fd;
        s->len[s->nconns++] = 0;
    }
    for (size_t i = 0; i < s->nconns; i++) {
        ssize_t n = read(s->conns[i], s->buf[i] + s->len[i], sizeof(s->buf[i]) - s->len[i]);
        if (n > 0) {
            s->len[i] += (size_t)n;
            bs_answer(s, i);
        }
    }
}

static void bs_start(bsrv_t *s, fx_t *f, long burst, long age_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    http_options_t o = {.token = "tok", .open_burst = burst, .open_age_ms = age_ms};

    memset(s, 0, sizeof(*s));
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(s->lfd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(s->lfd, 128) == 0);
    CHECK(getsockname(s->lfd, (struct sockaddr *)&sa, &sl) == 0);
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    o.api_base = f->base;
    CHECK(http_engine_new(&f->loop, &o, &f->eng) == 0);
    CHECK(uv_timer_init(&f->loop, &s->tick) == 0);
    s->tick.data = s;
    CHECK(uv_timer_start(&s->tick, bs_tick_cb, 1, 1) == 0);
}

static void bs_stop(bsrv_t *s)
{
    uv_close((uv_handle_t *)&s->tick, NULL);
    for (size_t i = 0; i < s->nconns; i++)
        close(s->conns[i]);
    close(s->lfd);
}

static void bs_window_cb(uv_timer_t *t)
{
    (*(unsigned long *)t->data)++;
}

typedef struct bs_count {
    unsigned long done, ok;
} bs_count_t;

static void bs_count_cb(const http_result_t *r, void *user)
{
    bs_count_t *c = user;

    c->done++;
    if (r->error == 0 && r->status == 200)
        c->ok++;
}

/*
 * A server's accept queue can be small (Python's http.server listens with a
 * backlog of 5); connects beyond it in one burst lose their SYN or the
 * handshake's last ACK, and a request written into such a connection waits
 * for request_timeout_ms. So the engine opens at most open_burst connections
 * that have neither answered nor aged: 16 requests posted at once leave 2
 * connections in the unaccepted queue, not 16, and the others start as the
 * answers come (on the connections that answered, or new ones). With a
 * short age they all start although nothing answers.
 */
static void t_open_burst(void)
{
    fx_t f;
    bsrv_t s, s2; /* s2: s's tick is closing */
    bs_count_t c = {0};
    unsigned long window = 0;
    uv_timer_t w;
    http_stats_t st;

    fx_init(&f, 1, "tok", 0);
    http_engine_close(f.eng);
    f.eng = NULL;
    bs_start(&s, &f, 2, 600000);
    s.q_want = 2;
    for (int i = 0; i < 16; i++)
        CHECK(http_engine_post(f.eng, "/m", "{}", 2, bs_count_cb, &c) == 0);
    run_until(&f, &s.q_hits, 1);
    /* Nothing answers for 200 ms: no further connection may be opened. */
    CHECK(uv_timer_init(&f.loop, &w) == 0);
    w.data = &window;
    CHECK(uv_timer_start(&w, bs_window_cb, 200, 0) == 0);
    run_until(&f, &window, 1);
    CHECK(s.q_max == 2);
    CHECK(c.done == 0);
    CHECK(http_engine_inflight(f.eng) == 16);
    s.serve = true;
    run_until(&f, &c.done, 16);
    CHECK(c.ok == 16);
    CHECK(s.q_max == 2);
    http_engine_stats(f.eng, &st);
    CHECK(st.requests == 16 && st.connects >= 2 && st.connects <= 16);
    http_engine_close(f.eng);
    f.eng = NULL;
    bs_stop(&s);

    /* Aging: a server that accepts nothing still gets every request. */
    c.done = 0;
    bs_start(&s2, &f, 2, 20);
    s2.q_want = 8;
    for (int i = 0; i < 8; i++)
        CHECK(http_engine_post(f.eng, "/m", "{}", 2, bs_count_cb, &c) == 0);
    run_until(&f, &s2.q_hits, 1);
    http_engine_close(f.eng); /* cancels the 8 */
    f.eng = NULL;
    CHECK(c.done == 8);
    bs_stop(&s2);
    uv_close((uv_handle_t *)&w, NULL);
    fx_fini(&f);
}

static const fx_case_t cases[] = {
    {"basic", t_basic},
    {"get", t_get},
    {"many", t_many},
    {"keepalive", t_keepalive},
    {"chain", t_chain},
    {"retry_after", t_retry_after},
    {"body_cap", t_body_cap},
    {"body_endless", t_body_endless},
    {"timeout", t_timeout},
    {"refused", t_refused},
    {"connect_timeout_fd", t_connect_timeout_fd},
    {"drop", t_drop},
    {"drop_reconnect_refused", t_drop_reconnect_refused},
    {"set_token", t_set_token},
    {"cancel_all", t_cancel_all},
    {"cancel_fresh", t_cancel_fresh},
    {"close_inflight", t_close_inflight},
    {"close_early", t_close_early},
    {"close_from_cb", t_close_from_cb},
    {"invalid", t_invalid},
    {"resolve", t_resolve},
    {"max_conn", t_max_conn},
    {"lanes", t_lanes},
    {"lanes_cancel_close", t_lanes_cancel_close},
    {"lanes_one", t_lanes_one},
    {"routes", t_routes},
    {"proxy_env", t_proxy_env},
    {"no_proxy_env", t_no_proxy_env},
    {"open_burst", t_open_burst},
};

int main(int argc, char **argv)
{
    return fx_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
