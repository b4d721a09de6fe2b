/*
 * fixture.h - what the HTTP unit tests share: a loop with a watchdog, the
 * in-process stub server (stub_server.h), a wait for an event that fails
 * instead of hanging, and a callback that records one request's outcome.
 */
#ifndef AVP_TEST_HTTP_FIXTURE_H
#define AVP_TEST_HTTP_FIXTURE_H

#include "http.h"
#include "http_pool.h"
#include "stub_server.h"
#include "../daemon/check.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define WATCHDOG_MS 10000

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t watchdog;
    bool expired;
    uv_prepare_t until; /* stops the loop once *counter >= target */
    const unsigned long *counter;
    unsigned long target;
    uv_async_t wake; /* the server's notify lands here */
    bool has_wake;
    unsigned long server_total; /* stub_total() as seen by the loop */
    stub_t *stub;
    http_engine_t *eng;
    http_pool_t *pool;       /* test_http_pool's cases: fx_post and the rest use it when set */
    uv_thread_t loop_thread; /* the one that runs the loop: every callback's */
    char base[320];
    bool in_call; /* inside http_engine_post/get: a callback must not run now */
    int fds_before;
} fx_t;

/* One request's outcome. */
typedef struct rec {
    fx_t *f;
    unsigned long done;
    int error, status;
    double retry_after, total_time, sent_at;
    size_t body_len;
    char body[256];
    char detail[CURL_ERROR_SIZE + 64];
    const char *expect; /* when set: the whole body must equal it */
    bool expect_ok;
} rec_t;

/* Open descriptors of this process: every socket must be closed at the end. */
int fx_fd_count(void);
/* A loop, a watchdog and a stub server with `threads` threads (see
 * stub_start); then, unless token is NULL, an engine (fx_engine). */
void fx_init(fx_t *f, unsigned threads, const char *token, long timeout_ms);
/* An engine on f's loop for f->base (f->eng). */
void fx_engine(fx_t *f, const char *token, long timeout_ms);
/* f->server_total follows stub_total(), updated on the loop. */
void fx_wake_on_server(fx_t *f);
/* Stops the server, closes the engine and the pool, checks that the loop
 * ends with no handle and no descriptor left. */
void fx_fini(fx_t *f);
/* Runs the loop until *counter >= target; fails after WATCHDOG_MS. */
void run_until(fx_t *f, const unsigned long *counter, unsigned long target);
/* An http_done_cb recording into the rec_t `user`. */
void rec_cb(const http_result_t *r, void *user);
/* Sets the stub's answer for `path`. */
void route(fx_t *f, const char *path, int status, const char *body, const char *retry,
           long delay_ms, bool drop);

/* A request through the pool when f->pool is set, else through the engine
 * (cases written once run against both). */
int fx_post(fx_t *f, const char *path, const char *body, size_t len, http_done_cb cb, void *user);
int fx_get(fx_t *f, const char *path, http_done_cb cb, void *user);
size_t fx_inflight(const fx_t *f);
void fx_cancel_all(fx_t *f);
/* Closes the pool or the engine (callbacks run from this call) and forgets it. */
void fx_close(fx_t *f);
/* A request recording into rc (rec_cb); checks that no callback runs
 * inside the call. */
int fx_rec_post(fx_t *f, const char *path, const char *body, rec_t *rc);
int fx_rec_get(fx_t *f, const char *path, rec_t *rc);

/* Many requests, `window` in flight, each callback starting the next: every
 * one must complete exactly once, with 200 and `answer` if set. */
typedef struct fx_many fx_many_t;
typedef struct fx_many_slot {
    fx_many_t *m;
    size_t id;
} fx_many_slot_t;
struct fx_many {
    fx_t *f;
    size_t n, next;
    const char *answer;
    unsigned long completed, bad;
    unsigned long server_before; /* stub_total() at the start */
    unsigned char *hits;
    fx_many_slot_t *slots;
};
/* Starts the first `window` of m->n requests to /v2/messages/send/text. */
void fx_many_start(fx_many_t *m, fx_t *f, size_t n, size_t window, const char *answer);
/* After run_until(&m->completed, m->n): all done once, none bad; frees. */
void fx_many_check(fx_many_t *m);

/* Requests cancelled by a cancel_all: the callback checks the cancelled
 * shape, counts those delivered outside the cancel call, and starts two
 * fresh requests to /fast (which the cancel must not touch). */
typedef struct fx_cancel {
    fx_t *f;
    bool in_cancel;
    unsigned long cancelled, outside, resubmitted;
    rec_t fresh[2];
} fx_cancel_t;
void fx_cancel_cb(const http_result_t *r, void *user);

/* Requests ended by a close: counts cancelled and other outcomes, and
 * checks that a request started from the callback is refused. */
typedef struct fx_close {
    fx_t *f;
    unsigned long cancelled, other, post_refused;
} fx_close_t;
void fx_close_cb(const http_result_t *r, void *user);

/* The cases the engine and the pool share, on a fixture whose stub runs a
 * thread per connection (stub_start(0)) and that has its engine or pool:
 * cancel_all with ten requests on the wire; close with `n` requests on the
 * wire (on_wire) or not yet started. */
void fx_check_cancel_all(fx_t *f);
void fx_check_close(fx_t *f, int n, bool on_wire);

typedef struct fx_case {
    const char *name;
    void (*fn)(void);
} fx_case_t;

/* `prog <case>`: runs that case (one per process, as ctest registers them);
 * 0 when it passed (a failed CHECK exits 1), 2 on a usage error. */
int fx_main(int argc, char **argv, const fx_case_t *cases, size_t n);

#endif
