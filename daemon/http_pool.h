/*
 * http_pool.h - HTTP engines on threads of their own.
 *
 * The daemon's loop thread runs the scheduler, the socket, the answers and
 * the commits' results; libcurl's work per request (formatting, parsing and
 * four system calls) is most of its time at a high send rate. A pool moves
 * that work to `threads` threads, each running an http_engine (http.h) on a
 * loop of its own with its own connections, and hands every completion back
 * to the caller's loop. The interface is the engine's: callbacks run on the
 * caller's loop thread, never inside the call that started the request.
 *
 * What crosses threads: a request record (path copied, body borrowed: it
 * must stay valid and unchanged until the callback) goes to the worker with
 * the fewest requests in flight; the worker copies the answer's body and
 * libcurl's error text into the record and queues it back. Each side wakes
 * the other with a uv_async_t, which coalesces, so under load one wake-up
 * carries many records.
 *
 * threads == 0 runs one engine on the caller's loop, as before pools
 * existed (tests, valgrind, the lowest latency at low rates).
 *
 * Ordering: requests are unordered between each other, as on one engine;
 * the scheduler keeps one request per recipient in flight, so per-number
 * order does not depend on which thread sends.
 */
#ifndef AVP_HTTP_POOL_H
#define AVP_HTTP_POOL_H

#include "http.h"

#define HTTP_POOL_MAX_THREADS 16

typedef struct http_pool http_pool_t;

/*
 * Creates the pool and its engines (on this thread, so the proxy environment
 * and the options are read here) and starts the threads. Completions are
 * delivered on `loop`. `opt` is copied. On failure nothing is left running.
 * curl_global_init is the caller's, once per process, before this call.
 */
int http_pool_new(uv_loop_t *loop, const http_options_t *opt, int threads, http_pool_t **out);

/*
 * Starts POST api_base+path. `path` is copied; `body` is not: it must stay
 * valid until `cb` runs. `cb` runs exactly once, on the caller's loop, on a
 * later turn, unless this call fails (then never). A failure the worker meets
 * when it hands the request to libcurl arrives as HTTP_ENOTSENT.
 */
int http_pool_post(http_pool_t *p, const char *path, const char *body, size_t len, http_done_cb cb,
                   void *user);
/* Starts GET api_base+path. Same rules. */
int http_pool_get(http_pool_t *p, const char *path, http_done_cb cb, void *user);
/* Requests started whose callback has not run yet. */
size_t http_pool_inflight(const http_pool_t *p);
/* The caller's max_inflight, split over the threads (http_engine_set_concurrency).
 * Waits for the threads to apply it. */
int http_pool_set_concurrency(http_pool_t *p, long n);
/* Replaces the token for requests started from now on, on every thread; on
 * an error no thread changed. Waits for the threads. */
int http_pool_set_token(http_pool_t *p, const char *token);
/*
 * Aborts every running request and delivers, before returning, every
 * callback that has not run yet (HTTP_ECANCELLED for the aborted ones; an
 * answer that had already arrived is delivered as it is). Blocks until the
 * threads have done so (they cancel at once).
 */
void http_pool_cancel_all(http_pool_t *p);
/* Counters summed over the engines (the threads' last published values). */
void http_pool_stats(const http_pool_t *p, http_stats_t *out);
/* 0 when the engine runs on the caller's loop. */
int http_pool_threads(const http_pool_t *p);
/*
 * Cancels what runs (callbacks with HTTP_ECANCELLED, from this call), stops
 * and joins the threads, and frees the pool once its handle on `loop` is
 * closed (the loop must keep running until then). Not from a callback.
 * Accepts NULL.
 */
void http_pool_close(http_pool_t *p);

#endif
