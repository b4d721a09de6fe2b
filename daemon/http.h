/*
 * http.h - the HTTP engine of avenpingd: libcurl's multi interface driven
 * by a libuv loop.
 *
 * "Submit a request, get a completion callback": the scheduler decides what
 * may start now and hands it here; nothing waits inside libcurl for a
 * connection slot (connection caps are not rate limits). The one wait is
 * the engine's own, while it opens connections a few at a time
 * (http_options_t.open_burst): a request waiting there has not been
 * written (a cancel or a close ends it as not sent).
 *
 * Integration follows libcurl's documented event-driven API:
 * CURLMOPT_SOCKETFUNCTION + CURLMOPT_TIMERFUNCTION, curl_multi_socket_action,
 * one uv_poll_t per socket, completions drained with curl_multi_info_read
 * after every action, sockets opened and closed through
 * CURLOPT_OPENSOCKETFUNCTION / CURLOPT_CLOSESOCKETFUNCTION so that a poll
 * handle is always stopped and closed before its fd, poll contexts freed in
 * their close callbacks. Completion callbacks run from the loop, never from
 * inside a libcurl callback, so they may submit new requests.
 *
 * The token is copied into the engine's own header list and never appears
 * in a result, an error message or anything the engine returns.
 *
 * Proxy: the environment is read once, by http_engine_new, the way libcurl
 * reads it (for an http:// api_base http_proxy, never HTTP_PROXY; for
 * https:// https_proxy or HTTPS_PROXY; then all_proxy or ALL_PROXY; no_proxy
 * or NO_PROXY), and handed to libcurl as CURLOPT_PROXY / CURLOPT_NOPROXY.
 * Changing these variables later (setenv) has no effect on that engine;
 * libcurl alone would read them again for every request.
 *
 * Paths: the first 16 distinct paths are parsed once with api_base into a
 * URL handle each (CURLOPT_CURLU); later ones are passed as strings, which
 * works the same and costs a URL parse per request.
 *
 * Errors: 0 or negative (errno-style or HTTP_E* below); http_strerror().
 * Threads: loop thread only.
 */
#ifndef AVP_HTTP_H
#define AVP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

enum {
    HTTP_ENOTSENT = -32001,   /* failed before the request left (connect, DNS) */
    HTTP_EMAYBESENT = -32002, /* failed after it may have left (timeout, reset) */
    HTTP_ECANCELLED = -32003, /* aborted by http_engine_cancel_all */
    HTTP_EINVAL = -32004,
    HTTP_ECURL = -32005, /* libcurl refused a setup call */
};

#define HTTP_MAX_RESPONSE (1024 * 1024) /* response bodies are cut here */

typedef struct http_options {
    const char *api_base;      /* "http://127.0.0.1:8080" or "https://api.avenping.com"; copied */
    const char *token;         /* sent as "Authorization: Bearer"; copied, never logged */
    long timeout_ms;           /* whole request; 0: 30000 */
    long connect_timeout_ms;   /* 0: 10000 */
    const char *ca_file;       /* NULL: system CAs; copied */
    bool http2;                /* offer HTTP/2 (multiplexing, PIPEWAIT) */
    long max_host_connections; /* 0: no cap */
    /* New connections over HTTP/1.x: at most open_burst requests that need
     * one (no idle connection in their lane) run before an earlier such
     * request has its answer or has run open_age_ms; the others wait in
     * the engine, not on the wire (see "Opening connections" in http.c).
     * 0: HTTP_OPEN_BURST and HTTP_OPEN_AGE_MS. Engines of one pool share
     * the burst (http_pool_new divides it). */
    long open_burst;
    long open_age_ms;
} http_options_t;

#define HTTP_OPEN_BURST 4
#define HTTP_OPEN_AGE_MS 10

typedef struct http_result {
    int error;        /* 0: an HTTP answer arrived; else HTTP_ENOTSENT, HTTP_EMAYBESENT,
                         HTTP_ECANCELLED */
    int status;       /* HTTP status, 0 when error != 0 (but see `cut`) */
    const char *body; /* response body (NUL-terminated), valid during the callback only */
    size_t body_len;
    double retry_after; /* seconds from a Retry-After header, -1 when absent */
    double total_time;  /* seconds, from libcurl */
    double sent_at;     /* wall-clock seconds (gettimeofday) at which the request was about to
                           leave: its start plus libcurl's pretransfer time; 0 when unknown
                           (error != 0) */
    const char *detail; /* libcurl's error text or "", for logs; for a 3xx answer the URL it
                           redirects to without its query, "" when none (never followed);
                           never holds the token */
    bool left;          /* error == HTTP_ECANCELLED: some of the request had been written to
                           its connection, so the server may have it (for the other errors,
                           HTTP_ENOTSENT and HTTP_EMAYBESENT say it) */
    bool cut;           /* body is only the start of the answer: it was longer than
                           HTTP_MAX_RESPONSE (error 0), or the transfer failed after a 2xx
                           status and some of the body came (error HTTP_EMAYBESENT, with
                           status and body set: a success answer whose connection broke
                           before its end, by its framing, still names the message id) */
} http_result_t;

typedef void (*http_done_cb)(const http_result_t *res, void *user);

typedef struct http_engine http_engine_t;

/* Creates an engine on `loop` (curl_global_init is the caller's, once per
 * process). `opt` is copied. */
int http_engine_new(uv_loop_t *loop, const http_options_t *opt, http_engine_t **out);

/*
 * Starts POST api_base+path with a JSON body. `body` is not copied: it must
 * stay valid until `cb` runs. `cb` runs exactly once, on a later loop turn
 * (never inside this call), unless this call fails: then it never runs.
 * The request is written at most once over HTTP/1.x: when the reused
 * connection it went out on closes without an answer, libcurl's own resend
 * on a new connection is refused and `cb` gets HTTP_EMAYBESENT (or
 * HTTP_ENOTSENT when nothing had been written); whether to send it again
 * is the caller's decision. Over HTTP/2, a stream the server refused
 * (REFUSED_STREAM, GOAWAY), which it has not processed, is re-sent.
 */
int http_engine_post(http_engine_t *e, const char *path, const char *body, size_t len,
                     http_done_cb cb, void *user);

/* Starts GET api_base+path (e.g. "/v2/me" to probe the token). Same rules. */
int http_engine_get(http_engine_t *e, const char *path, http_done_cb cb, void *user);

/* Requests started and not yet completed. */
size_t http_engine_inflight(const http_engine_t *e);

/*
 * Tells the engine how many requests the caller may run at once (its
 * max_inflight; at start and after a reload). The connection pool keeps that
 * many connections open (libcurl's default of 4 per added handle shrinks
 * with the load and closes keep-alive connections that the next burst must
 * open again), and over HTTP/2 one connection may carry that many streams
 * (the server's SETTINGS_MAX_CONCURRENT_STREAMS still caps it; beyond it
 * libcurl 7.88 opens more connections, up to one per request over it while
 * they are being set up, and keeps them: docs/config.md, http2). 0 or
 * negative: libcurl's defaults. Over HTTP/1.x (no HTTP/2 offered, no max_host_connections) the
 * connections are split over ceil(n / 32) multi handles, at most 16 ("lanes"; added, never
 * removed): libcurl walks a handle's whole connection cache on every request, so one handle's cost
 * per request grows with n. Errors: HTTP_EINVAL (NULL or closing engine), -ENOMEM, HTTP_ECURL.
 */
int http_engine_set_concurrency(http_engine_t *e, long n);

/* Replaces the token for requests started from now on. */
int http_engine_set_token(http_engine_t *e, const char *token);

/* 0 when `token` can go into a header (no control characters, not too
 * long), else HTTP_EINVAL. */
int http_token_check(const char *token);
/* Aborts every running request; each callback runs with HTTP_ECANCELLED
 * (from this call). */
void http_engine_cancel_all(http_engine_t *e);

/* Counters for stats and benchmarks. */
typedef struct http_stats {
    unsigned long long requests;   /* started */
    unsigned long long connects;   /* new connections made (CURLINFO_NUM_CONNECTS summed) */
    unsigned long long handshakes; /* TLS handshakes (new connections over https) */
    unsigned long long lanes;      /* multi handles the connections are split over */
} http_stats_t;
void http_engine_stats(const http_engine_t *e, http_stats_t *out);

/*
 * Cancels what runs (callbacks with HTTP_ECANCELLED), closes every handle and
 * frees the engine once they are closed (the loop must keep running until
 * then). Accepts NULL.
 */
void http_engine_close(http_engine_t *e);

const char *http_strerror(int err);

#endif
