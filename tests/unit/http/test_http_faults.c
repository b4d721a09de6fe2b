/*
 * test_http_faults.c - the HTTP engine (daemon/http.c) when libuv cannot
 * watch a socket, and how a failed transfer is counted (sent or not).
 *
 * Linked with -Wl,--wrap=uv_poll_init_socket: the engine's calls go to
 * __wrap_uv_poll_init_socket below, which fails the next `poll_failures`
 * calls as an exhausted epoll (max_user_watches) or memory would.
 */
#include "fixture.h"
#include "http_int.h"

#include <string.h>

static int poll_failures; /* the next this many watches fail with UV_ENOSPC */

int __real_uv_poll_init_socket(uv_loop_t *loop, uv_poll_t *handle, uv_os_sock_t socket);
int __wrap_uv_poll_init_socket(uv_loop_t *loop, uv_poll_t *handle, uv_os_sock_t socket);

int __wrap_uv_poll_init_socket(uv_loop_t *loop, uv_poll_t *handle, uv_os_sock_t socket)
{
    if (poll_failures > 0) {
        poll_failures--;
        return UV_ENOSPC;
    }
    return __real_uv_poll_init_socket(loop, handle, socket);
}

/* A connection libuv cannot watch fails its request, once and at once
 * (not sent: it never got to write), and the engine goes on: the next
 * request is answered. Before, the socket callback's -1 marked the multi
 * handle dead: the request never finished, not even by its timeout, and
 * every later one was refused (HTTP_ECURL). */
static void t_watch_fail(void)
{
    fx_t f;
    rec_t r1 = {0}, r2 = {0};
    stub_seen_t seen;

    fx_init(&f, 1, "tok", 2000);
    route(&f, "/a", 200, "{}", NULL, 0, false);
    poll_failures = 1;
    CHECK(fx_rec_post(&f, "/a", "{}", &r1) == 0);
    run_until(&f, &r1.done, 1);
    CHECK(r1.error == HTTP_ENOTSENT);
    CHECK(strstr(r1.detail, "cannot watch the connection's socket") != NULL);
    CHECK(poll_failures == 0);
    CHECK(fx_rec_post(&f, "/a", "{}", &r2) == 0);
    run_until(&f, &r2.done, 1);
    CHECK(r2.error == 0 && r2.status == 200);
    CHECK(r1.done == 1);
    stub_seen_get(f.stub, "/a", &seen);
    CHECK(seen.hits == 1);
    fx_fini(&f);
}

/* Closing the engine while a failed watch waits to be reported: the
 * request is cancelled by the close, its callback runs once. */
static void t_watch_fail_close(void)
{
    fx_t f;
    rec_t r1 = {0};

    fx_init(&f, 1, "tok", 2000);
    route(&f, "/a", 200, "{}", NULL, 0, false);
    poll_failures = 1;
    CHECK(fx_rec_post(&f, "/a", "{}", &r1) == 0);
    /* One turn: the connect asks for its socket to be watched. */
    uv_run(&f.loop, UV_RUN_NOWAIT);
    fx_close(&f);
    CHECK(r1.done == 1);
    CHECK(r1.error == HTTP_ECANCELLED || r1.error == HTTP_ENOTSENT);
    fx_fini(&f);
}

/* Which failures may have reached the server. */
static void t_failure_class(void)
{
    static const char died[] = "Connection died, tried 5 times before giving up";

    CHECK(http__failure_class(false, CURLE_COULDNT_CONNECT, "", 0, 0, false) == HTTP_ENOTSENT);
    CHECK(http__failure_class(false, CURLE_COULDNT_CONNECT, "", 0, 180, false) == HTTP_ENOTSENT);
    CHECK(http__failure_class(false, CURLE_OPERATION_TIMEDOUT, "", 0, 0, false) == HTTP_ENOTSENT);
    /* A reused handle's size is the last transfer's until this one writes. */
    CHECK(http__failure_class(false, CURLE_OPERATION_TIMEDOUT, "", 0, 180, false) == HTTP_ENOTSENT);
    CHECK(http__failure_class(false, CURLE_OPERATION_TIMEDOUT, "", 1, 180, false) ==
          HTTP_EMAYBESENT);
    CHECK(http__failure_class(false, CURLE_SEND_ERROR, died, 1, 180, false) == HTTP_EMAYBESENT);
    /* HTTP/1.x: written on a reused connection that closed without an
     * answer, then libcurl's resend could not connect: the first copy may
     * have been processed. */
    CHECK(http__failure_class(false, CURLE_COULDNT_CONNECT, "", 1, 180, true) == HTTP_EMAYBESENT);
    CHECK(http__failure_class(false, CURLE_COULDNT_RESOLVE_HOST, "", 1, 180, true) ==
          HTTP_EMAYBESENT);
    /* HTTP/2: libcurl gave up on a stream refused each time. */
    CHECK(http__failure_class(true, CURLE_SEND_ERROR, died, 6, 180, false) == HTTP_ENOTSENT);
    CHECK(http__failure_class(true, CURLE_RECV_ERROR, died, 1, 180, false) == HTTP_ENOTSENT);
    /* HTTP/2: a refused stream's resend failed on the new connection before
     * it was written there (connect, TLS handshake timing out). */
    CHECK(http__failure_class(true, CURLE_OPERATION_TIMEDOUT, "SSL connection timeout", 1, 180,
                              true) == HTTP_ENOTSENT);
    CHECK(http__failure_class(true, CURLE_COULDNT_CONNECT, "", 2, 180, true) == HTTP_ENOTSENT);
    /* ... but once written there, a failure may follow its processing. */
    CHECK(http__failure_class(true, CURLE_OPERATION_TIMEDOUT, "", 2, 180, false) ==
          HTTP_EMAYBESENT);
    /* Sent again after a refusal, then the connection broke: the second
     * copy may have been processed (it was counted as not sent, and the job
     * sent a third time). */
    CHECK(http__failure_class(true, CURLE_SEND_ERROR, "Send failure: Connection reset by peer", 2,
                              180, false) == HTTP_EMAYBESENT);
    CHECK(http__failure_class(true, CURLE_RECV_ERROR, NULL, 2, 180, false) == HTTP_EMAYBESENT);
}

static const fx_case_t cases[] = {
    {"watch_fail", t_watch_fail},
    {"watch_fail_close", t_watch_fail_close},
    {"failure_class", t_failure_class},
};

int main(int argc, char **argv)
{
    return fx_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
