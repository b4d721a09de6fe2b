/*
 * http.c - libcurl multi driven by libuv. See http.h for the contract.
 *
 * Structure:
 * - Lanes: one CURLM with its uv_timer_t per lane, and one http_sock_t
 *   (holding a uv_poll_t) per socket, whichever lane it serves. Over
 *   HTTP/1.x http_engine_set_concurrency(n) runs ceil(n / HTTP_LANE_CONNS)
 *   lanes, each with a connection cache of its share: libcurl 7.88 walks
 *   the cache's connections on every request (to find an idle one, and
 *   again when the handle is removed), so with one multi the cost per
 *   request grew with n (callgrind, 256 connections on one loop: 72,000
 *   instructions per request, 60,600 in 8 lanes, 63,300 with 64 connections
 *   in one). A request goes to the lane with the fewest running, so each
 *   lane runs at most ceil(n / lanes) and keeps its connections. HTTP/2
 *   keeps one lane: its one multiplexed connection would become one per lane.
 *   Each socket context records the lane whose socket callback announced it.
 * - Sockets are opened and closed by our own
 *   CURLOPT_OPENSOCKETFUNCTION / CURLOPT_CLOSESOCKETFUNCTION, so the engine
 *   knows every fd's life: a poll handle is stopped and uv_close'd before
 *   its fd is closed (the fd is closed in the poll's close callback), and
 *   since the fd stays open until then the kernel cannot hand the same
 *   number to a new socket while an old poll handle still exists.
 * - The fd-indexed table `socks` is the authority for fd -> context. The
 *   socketp libcurl passes to the socket callback is not used: after a
 *   close that libcurl reports out of order (curl #14976) it can name a
 *   context that is already on its way out, while the table never does;
 *   and some libcurl versions refuse curl_multi_assign from inside the
 *   socket callback (CURLM_RECURSIVE_API_CALL).
 * - A CURL_POLL_REMOVE of one of our sockets leaves the context in the
 *   table, so that a re-add of the same fd reuses the same uv_poll_t (never
 *   two poll handles on one fd); the context goes when libcurl closes the
 *   socket. The poll is stopped lazily: a keep-alive connection is removed
 *   after every transfer and re-added for the next with the same events, and
 *   each uv_poll_stop/uv_poll_start pair costs epoll_ctl calls. If an event
 *   arrives while removed, the poll is stopped then and libcurl not called;
 *   on an idle HTTP/1.x connection that is the server closing it, which
 *   libcurl must see before it reuses it (sock_idle_readable).
 * - libcurl 7.88 closes a socket whose connect has not completed (a
 *   request cancelled or timed out while connecting) with close(2) instead
 *   of the close-socket callback (curl PR #11439, fixed in 8.2), and says
 *   CURL_POLL_REMOVE afterwards. So a REMOVE of one of our sockets that
 *   was not waiting to read checks that the number still names the socket
 *   we opened (device and inode, recorded at open) and otherwise drops the
 *   context without touching the number, which another thread may own by
 *   now; the close of the engine checks the same before closing an fd.
 * - Sockets libcurl creates without the open callback (the threaded
 *   resolver's wake-up socketpair) get a "foreign" context whose fd we never
 *   close; it is dropped on CURL_POLL_REMOVE.
 * - Completions are drained with curl_multi_info_read after every
 *   curl_multi_socket_action; user callbacks run from that drain, outside
 *   any libcurl callback, so they may call http_engine_post/cancel/close.
 *   http_engine_post never drives the multi itself: libcurl asks for a 0 ms
 *   timeout when a handle is added, and the transfer starts from the loop.
 * - Request structs each own one easy handle whose constant options are set
 *   once; finished ones go to a free list and are reused (connections and
 *   the DNS cache live in the multi handle).
 * - A request is written at most once over HTTP/1.x. libcurl re-sends a
 *   request on a fresh connection by itself when a reused keep-alive
 *   connection closes without any answer (Curl_retry_request); the first
 *   copy may have reached the API, which takes no idempotency key, so that
 *   silent resend could deliver a message twice even under at-most-once.
 *   CURLOPT_PREREQFUNCTION runs before every write of the request: the
 *   second run aborts the transfer, which then fails as HTTP_EMAYBESENT
 *   (or HTTP_ENOTSENT when nothing had been written) and the caller's
 *   delivery policy decides. Over HTTP/2 (an https engine offering it,
 *   until an answer comes over HTTP/1.x) the resend is left to libcurl:
 *   7.88 re-sends there only a stream the server refused (REFUSED_STREAM,
 *   or above a GOAWAY's last stream), which the protocol guarantees was not
 *   processed; a connection that dies under HTTP/2 fails its streams.
 * - The header list (with the token) is refcounted: each running request
 *   holds a reference, so set_token never frees a list a transfer uses.
 * - Opening connections (HTTP/1.x, several lanes or one without a cap): a
 *   server's listen backlog can be small (Python's http.server: 5). When
 *   a burst of connects finds its accept queue full, the kernel drops the
 *   SYN (a retry a second later) or the handshake's last ACK: the client
 *   then counts the connection as open and writes the request, which the
 *   server never reads - 30 s lost to request_timeout_ms and a "maybe
 *   sent" for a request that never arrived (measured: 38 of 2,000 jobs
 *   `uncertain` with 64 connects at once). So a request whose lane has no
 *   idle connection (it will open one) is an "opener", and at most
 *   open_burst openers run that have neither their answer nor open_age_ms
 *   behind them; further requests wait in the engine's park list, in
 *   order, and start as answers come or openers age. Against a server
 *   that answers in a millisecond the connections still open at once; one
 *   that answers slowly gets open_burst new connections per open_age_ms.
 *   HTTP/2 opens one connection, and a connection cap is libcurl's own
 *   queue: no gate there.
 */
#include "http.h"
#include "http_int.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HTTP_BASE_MAX 1024        /* api_base length */
#define HTTP_URL_MAX 4096         /* api_base + path */
#define HTTP_TOKEN_MAX 4096       /* token length */
#define HTTP_IDLE_MAX 1024        /* idle request structs kept for reuse */
#define HTTP_BUF_FIRST 4096       /* first response buffer size */
#define HTTP_BUF_KEEP (64 * 1024) /* bigger response buffers are freed on reuse */
/* How long a looked-up address of the API host is used for new
 * connections: libcurl's default, about a load balancer's DNS TTL. The
 * addresses of such an API change, and with a long cache the new
 * connections and the probes of an "unreachable" pause kept going to an
 * address that was gone (an hour's outage with 3600 s). A lookup happens
 * only when a connection is opened after that, on an HTTP thread, so the
 * stall of a handle removed during a stuck lookup (curl #8515) stays rare
 * and off the event loop unless http_threads = 0. */
#define HTTP_DNS_CACHE_S 60L
#define HTTP_RETRY_AFTER_MAX (86400.0 * 365) /* clamp for absurd delta-seconds */
#define HTTP_ROUTES_MAX 16                   /* paths parsed once; more go by string */
/* Over HTTP/1.x an engine splits its connections over lanes of about this
 * many, each a multi handle of its own (see "Lanes" at the top). */
#define HTTP_LANE_CONNS 32
#define HTTP_LANES_MAX 16
/* Answer bytes read at most (kept: HTTP_MAX_RESPONSE). An answer that goes
 * on and on (no length, a broken proxy) is abandoned here instead of being
 * read - a core's worth of CPU - until request_timeout_ms; it still counts
 * as an answer with its status (req_complete). */
#define HTTP_READ_MAX ((size_t)8 * HTTP_MAX_RESPONSE)

/* A header list shared by the engine (current token) and running requests. */
typedef struct http_hdrs {
    struct curl_slist *list;
    unsigned long refs;
} http_hdrs_t;

/* One multi handle with its timer: its own connection cache and sockets. */
typedef struct http_lane {
    http_engine_t *e;
    CURLM *multi;
    uv_timer_t timer;
    size_t inflight; /* requests added to this multi and not yet detached */
    size_t conns;    /* connections (our sockets) this multi watches */
} http_lane_t;

typedef struct http_sock {
    http_engine_t *e;
    http_lane_t *lane; /* the multi that watches it (set by its socket callback) */
    uv_poll_t poll;
    curl_socket_t fd;
    dev_t dev; /* identity of our socket (close_fd): see sock_is_ours */
    ino_t ino;
    int events;    /* UV_READABLE/UV_WRITABLE being watched, 0: poll stopped */
    bool has_poll; /* poll initialised: it must be uv_close'd, freed in close cb */
    bool close_fd; /* we close the fd once the poll handle is closed */
    bool removed;  /* libcurl said CURL_POLL_REMOVE; poll still running (lazy) */
    bool conn;     /* opened by engine_opensocket_cb: a connection (counted in lane->conns) */
} http_sock_t;

/* One path of the API, parsed once: libcurl copies a CURLU per transfer
 * (curl_url_dup) instead of parsing the URL string again. */
typedef struct http_route {
    char *path; /* as the caller gave it */
    CURLU *cu;  /* api_base + path, parsed; lives as long as the engine */
} http_route_t;

typedef struct http_req {
    http_engine_t *e;
    http_lane_t *lane; /* while running: the multi it was added to */
    CURL *easy;
    /* What the easy handle was last given, so that a reused handle is only
     * told what changed. Pointer equality is enough for the header list:
     * libcurl keeps the pointer, so the same pointer is the same setting
     * even if an old list was freed and its address reused. */
    const http_route_t *route; /* NULL: none yet, or a URL string was set */
    const struct curl_slist *headers;
    struct http_req *prev, *next;   /* active list, or idle list (next only) */
    struct http_req *gprev, *gnext; /* park list while parked, opener list while an opener */
    uint64_t opened_ms;             /* loop time at which an opener was added */
    bool parked;                    /* waiting for the gate: not added to a multi */
    bool opener;                    /* added without an idle connection, still fresh */
    unsigned long long seq;         /* start order, for cancel_all */
    http_done_cb cb;
    void *user;
    http_hdrs_t *hdrs; /* reference held while running */
    char *buf;         /* response body, NUL-terminated on completion */
    size_t len, cap;
    double retry_after;
    double started;  /* wall clock at engine_start */
    unsigned sends;  /* times libcurl was about to write the request */
    size_t read;     /* answer body bytes seen, kept or not */
    bool resend_cut; /* the prereq callback refused a second write */
    bool reconnect;  /* a connection was opened for it after its last write */
    int watch_err;   /* a socket of its transfer could not be watched (uv error) */
    char errbuf[CURL_ERROR_SIZE];
} http_req_t;

struct http_engine {
    uv_loop_t *loop;
    http_lane_t *lanes[HTTP_LANES_MAX]; /* lanes[0] always; more over HTTP/1.x */
    size_t nlanes;
    bool one_lane; /* HTTP/2 (one multiplexed connection) or a connection cap */
    long max_host_connections;
    char *base; /* api_base without a trailing '/' */
    size_t base_len;
    char *ca_file;
    char *proxy;   /* from the environment at creation; NULL: no proxy */
    char *noproxy; /* from the environment at creation; used with `proxy` */
    http_route_t routes[HTTP_ROUTES_MAX];
    size_t nroutes;
    long timeout_ms, connect_timeout_ms;
    bool https, http2, closing;
    bool h1_seen;      /* HTTP/2 offered, but the last answer came over HTTP/1.x */
    http_hdrs_t *hdrs; /* current list; the engine holds one reference */
    http_req_t *active_head, *active_tail;
    size_t inflight;
    http_req_t *idle;
    size_t nidle;
    /* The gate for new connections (see "Opening connections"). */
    bool gate;
    size_t open_burst;
    uint64_t open_age_ms;
    http_req_t *park_head, *park_tail;
    http_req_t *open_head, *open_tail; /* fresh openers, oldest first */
    size_t nopen;
    uv_timer_t unpark;
    unsigned long long seq;
    http_sock_t **socks; /* indexed by fd */
    size_t nsocks;
    size_t open_handles; /* uv handles whose close callback has not run yet */
    uv_timer_t reap;     /* fails requests whose socket could not be watched */
    http_stats_t stats;
    /* The socket's own error (SO_ERROR) while the action for an error
     * libuv reported runs, 0 otherwise: libcurl, told CURL_CSELECT_ERR,
     * fails the transfer as "select/poll returned error", which says
     * nothing; req_complete names this instead. */
    int poll_errno;
};

/* ---------------------------------------------------------------- headers */

/* The token must fit in one header line: no CR, LF or other control bytes. */
int http_token_check(const char *token)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)token; *p; p++, n++) {
        if (*p < 0x20 || *p == 0x7f || n >= HTTP_TOKEN_MAX)
            return HTTP_EINVAL;
    }
    return 0;
}

static void hdrs_unref(http_hdrs_t *h)
{
    if (h == NULL || --h->refs > 0)
        return;
    /* Wipe the token before the memory goes back to the allocator. */
    for (struct curl_slist *l = h->list; l != NULL; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(h->list);
    free(h);
}

/* Builds the fixed request headers for `token` (NULL or "": no
 * Authorization). Returns a list with one reference, or NULL (ENOMEM). */
static http_hdrs_t *hdrs_new(const char *token)
{
    http_hdrs_t *h = calloc(1, sizeof(*h));
    char line[sizeof("Authorization: Bearer ") + HTTP_TOKEN_MAX];
    struct curl_slist *l;

    if (h == NULL)
        return NULL;
    h->refs = 1;
    l = curl_slist_append(NULL, "Content-Type: application/json");
    if (l == NULL)
        goto fail;
    h->list = l;
    /* An empty "Expect:" stops libcurl from waiting for 100-continue. */
    l = curl_slist_append(h->list, "Expect:");
    if (l == NULL)
        goto fail;
    /* No "Accept" line: the API answers JSON whatever it is told, and
     * libcurl writes each header through its printf, a byte at a time
     * (~120 instructions per byte, 3% of the engine's work per request). */
    l = curl_slist_append(h->list, "Accept:");
    if (l == NULL)
        goto fail;
    if (token != NULL && token[0] != '\0') {
        int n = snprintf(line, sizeof(line), "Authorization: Bearer %s", token);
        l = NULL;
        if (n > 0 && (size_t)n < sizeof(line))
            l = curl_slist_append(h->list, line);
        explicit_bzero(line, sizeof(line));
        if (l == NULL)
            goto fail;
    }
    return h;
fail:
    hdrs_unref(h);
    return NULL;
}

/* ----------------------------------------------------------------- routes */

/* Frees what a route holds and zeroes it. */
static void route_clear(http_route_t *rt)
{
    curl_url_cleanup(rt->cu);
    free(rt->path);
    memset(rt, 0, sizeof(*rt));
}

/* ---------------------------------------------------------------- sockets */

static void engine_free(http_engine_t *e);
static int lane_add(http_engine_t *e);

/* A uv handle of the engine finished closing; the last one frees a closing
 * engine. */
static void engine_handle_closed(http_engine_t *e)
{
    e->open_handles--;
    if (e->closing && e->open_handles == 0)
        engine_free(e);
}

static http_sock_t *sock_get(const http_engine_t *e, curl_socket_t fd)
{
    if (fd < 0 || (size_t)fd >= e->nsocks)
        return NULL;
    return e->socks[fd];
}

static int sock_put(http_engine_t *e, http_sock_t *s)
{
    size_t need = (size_t)s->fd + 1;

    if (need > e->nsocks) {
        size_t n = e->nsocks ? e->nsocks : 64;
        http_sock_t **t;
        while (n < need)
            n *= 2;
        t = realloc(e->socks, n * sizeof(http_sock_t *));
        if (t == NULL)
            return -ENOMEM;
        memset(t + e->nsocks, 0, (n - e->nsocks) * sizeof(http_sock_t *));
        e->socks = t;
        e->nsocks = n;
    }
    e->socks[s->fd] = s;
    return 0;
}

static void sock_close_cb(uv_handle_t *h)
{
    http_sock_t *s = h->data;
    http_engine_t *e = s->e;

    if (s->close_fd)
        close(s->fd);
    free(s);
    engine_handle_closed(e);
}

/* Takes `s` out of the table and disposes of it: a poll handle is stopped
 * and closed first, the fd (when ours) closed after it. */
static void sock_release(http_engine_t *e, http_sock_t *s)
{
    if (e->socks[s->fd] == s)
        e->socks[s->fd] = NULL;
    if (s->conn && s->lane != NULL)
        s->lane->conns--;
    s->lane = NULL;
    if (s->has_poll) {
        uv_poll_stop(&s->poll);
        uv_close((uv_handle_t *)&s->poll, sock_close_cb);
        return;
    }
    if (s->close_fd)
        close(s->fd);
    free(s);
}

static http_sock_t *sock_new(http_engine_t *e, curl_socket_t fd, bool owned)
{
    http_sock_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->e = e;
    s->fd = fd;
    s->close_fd = owned;
    if (sock_put(e, s) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* Whether s->fd still names the socket we opened: false once libcurl
 * closed it behind our back (see the top), whatever the number names now. */
static bool sock_is_ours(const http_sock_t *s)
{
    struct stat st;

    return fstat(s->fd, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino;
}

/* Drops the context of a socket libcurl closed behind our back. The number
 * may name another thread's file by now: it is not closed, and the poll's
 * epoll_ctl(DEL) on it finds nothing (the kernel removed the registration
 * with the old file). tests/tsan.supp names this function and
 * sock_is_ours: both look at a number that may have been reused. */
static void sock_forget(http_engine_t *e, http_sock_t *s)
{
    s->close_fd = false;
    sock_release(e, s);
}

static curl_socket_t engine_opensocket_cb(void *clientp, curlsocktype purpose,
                                          struct curl_sockaddr *addr)
{
    http_engine_t *e = clientp;
    http_sock_t *stale, *s;
    struct stat st;
    int fd;

    (void)purpose;
    fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    /* A context can only be left on this number if its fd was closed
     * behind our back (a foreign one, or ours closed by libcurl before any
     * CURL_POLL_REMOVE: see the top); its poll must go, the number is the
     * new socket's. */
    stale = sock_get(e, fd);
    if (stale != NULL)
        sock_forget(e, stale);
    if (fstat(fd, &st) != 0 || (s = sock_new(e, fd, true)) == NULL) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->conn = true;
    return fd;
}

static int engine_closesocket_cb(void *clientp, curl_socket_t fd)
{
    http_engine_t *e = clientp;
    http_sock_t *s = sock_get(e, fd);

    if (s == NULL)
        return close(fd);
    s->close_fd = true;
    sock_release(e, s);
    return 0;
}

/* ---------------------------------------------------- opening connections */

static void engine_unpark_cb(uv_timer_t *t);
static double wall_now(void);

static void glist_push(http_req_t **head, http_req_t **tail, http_req_t *r)
{
    r->gnext = NULL;
    r->gprev = *tail;
    if (*tail != NULL)
        (*tail)->gnext = r;
    else
        *head = r;
    *tail = r;
}

static void glist_unlink(http_req_t **head, http_req_t **tail, http_req_t *r)
{
    if (r->gprev != NULL)
        r->gprev->gnext = r->gnext;
    else
        *head = r->gnext;
    if (r->gnext != NULL)
        r->gnext->gprev = r->gprev;
    else
        *tail = r->gprev;
    r->gprev = r->gnext = NULL;
}

/* `r` no longer counts against the burst (its answer came, it ended, or it
 * aged). */
static void opener_end(http_engine_t *e, http_req_t *r)
{
    if (!r->opener)
        return;
    glist_unlink(&e->open_head, &e->open_tail, r);
    r->opener = false;
    e->nopen--;
}

/* Whether a request may be added to `lane` now; *opener says that it will
 * open a connection (every connection of the lane is busy). */
static bool gate_admits(http_engine_t *e, const http_lane_t *lane, bool *opener)
{
    uint64_t now;

    *opener = false;
    if (!e->gate || lane->inflight < lane->conns)
        return true;
    *opener = true;
    now = uv_now(e->loop);
    while (e->open_head != NULL && now - e->open_head->opened_ms >= e->open_age_ms)
        opener_end(e, e->open_head);
    return e->nopen < e->open_burst;
}

/* Runs engine_unpark_cb when the oldest opener ages (on the next loop turn
 * when there is none, or with `now_too`), unless it is due sooner already. */
static void unpark_arm(http_engine_t *e, bool now_too)
{
    uint64_t delay = 0, now = uv_now(e->loop);

    if (!now_too && e->open_head != NULL && e->open_head->opened_ms + e->open_age_ms > now)
        delay = e->open_head->opened_ms + e->open_age_ms - now;
    if (uv_is_active((uv_handle_t *)&e->unpark) && uv_timer_get_due_in(&e->unpark) <= delay)
        return;
    uv_timer_start(&e->unpark, engine_unpark_cb, delay, 0);
}

/* Hands `r` to `lane`'s multi. 0 or HTTP_ECURL. Adding makes libcurl ask
 * for a 0 ms timeout; the transfer starts from that timer, so no libcurl
 * callback runs inside this call. */
static int req_add(http_engine_t *e, http_req_t *r, http_lane_t *lane, bool opener)
{
    r->started = wall_now();
    if (curl_multi_add_handle(lane->multi, r->easy) != CURLM_OK)
        return HTTP_ECURL;
    r->lane = lane;
    lane->inflight++;
    if (opener) {
        r->opener = true;
        r->opened_ms = uv_now(e->loop);
        glist_push(&e->open_head, &e->open_tail, r);
        e->nopen++;
    }
    return 0;
}

/* ------------------------------------------------------------- completion */

static void req_destroy(http_req_t *r)
{
    if (r == NULL)
        return;
    curl_easy_cleanup(r->easy);
    free(r->buf);
    free(r);
}

/* Puts a finished request back on the free list (or frees it). */
static void req_recycle(http_engine_t *e, http_req_t *r)
{
    r->cb = NULL;
    r->user = NULL;
    if (e->closing || e->nidle >= HTTP_IDLE_MAX) {
        req_destroy(r);
        return;
    }
    if (r->cap > HTTP_BUF_KEEP) {
        free(r->buf);
        r->buf = NULL;
        r->cap = 0;
    }
    r->len = 0;
    r->prev = NULL;
    r->next = e->idle;
    e->idle = r;
    e->nidle++;
}

/* Detaches a running request from libcurl and from the active list. */
static void req_detach(http_engine_t *e, http_req_t *r)
{
    if (r->lane != NULL) {
        if (r->lane->multi != NULL)
            curl_multi_remove_handle(r->lane->multi, r->easy);
        r->lane->inflight--;
        r->lane = NULL;
    }
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        e->active_head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        e->active_tail = r->prev;
    r->prev = r->next = NULL;
    e->inflight--;
    hdrs_unref(r->hdrs);
    r->hdrs = NULL;
    if (r->parked) {
        glist_unlink(&e->park_head, &e->park_tail, r);
        r->parked = false;
    }
    opener_end(e, r);
    /* An answer frees a connection or a place in the burst. */
    if (e->park_head != NULL && !e->closing)
        unpark_arm(e, true);
}

/* Whether the engine's connections speak HTTP/2: what an https engine
 * that offers it gets (ALPN) unless an answer showed HTTP/1.x - decided
 * before the first answer too, when a GOAWAY can refuse streams of the
 * first burst. */
static bool engine_h2(const http_engine_t *e)
{
    return e->http2 && e->https && !e->h1_seen;
}

/* Where a 3xx answer points (libcurl's CURLINFO_REDIRECT_URL: redirects
 * are never followed), cut before its query, in r's error buffer (free once
 * the transfer is done); "" when it names none. */
static const char *redirect_target(http_req_t *r)
{
    char *url = NULL;
    size_t n;

    if (curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &url) != CURLE_OK || url == NULL)
        return "";
    n = strcspn(url, "?#");
    if (n >= sizeof(r->errbuf))
        n = sizeof(r->errbuf) - 1;
    memcpy(r->errbuf, url, n);
    r->errbuf[n] = '\0';
    return r->errbuf;
}

int http__failure_class(bool h2, CURLcode rc, const char *errbuf, unsigned sends, long reqsize,
                        bool reconnect)
{
    /* Nothing written: the prereq callback runs before every write, and the
     * request size of a reused easy handle is the previous transfer's until
     * this one reaches its first write. A connect or resolve failure after a
     * write is libcurl's resend failing: the copy written before may have
     * been processed (HTTP/1.x: the reused connection closed without an
     * answer). */
    if (sends == 0 || reqsize == 0)
        return HTTP_ENOTSENT;
    /* HTTP/2: libcurl opened a connection to send a refused stream again
     * (see below) and failed before its prereq callback ran there - while
     * connecting or in the TLS handshake: every copy so far was refused,
     * unprocessed. */
    if (h2 && reconnect)
        return HTTP_ENOTSENT;
    /* Over HTTP/2 libcurl sends a request again only for a stream the
     * server refused, unprocessed (REFUSED_STREAM, GOAWAY), and gives up
     * after several with "Connection died, tried 5 times before giving up"
     * (CURLE_SEND_ERROR, or CURLE_RECV_ERROR): then every copy was refused.
     * libcurl counts those tries per easy handle, not per request (handles
     * are reused here): a request refused once can meet the limit. Any other
     * failure after a resend may follow a copy the server processed. */
    if (h2 && (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR) && errbuf != NULL &&
        strncmp(errbuf, "Connection died, tried", 22) == 0)
        return HTTP_ENOTSENT;
    return HTTP_EMAYBESENT;
}

/* Runs the callback of a request libcurl reported done. */
static void req_complete(http_engine_t *e, http_req_t *r, CURLcode rc)
{
    http_result_t res = {.retry_after = -1, .body = "", .detail = ""};
    long status = 0, connects = 0, reqsize = 0;
    double total = 0, pretransfer = 0;
    http_done_cb cb = r->cb;
    char detail[CURL_ERROR_SIZE + 128];

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    /* An answer abandoned past HTTP_READ_MAX is still an answer: its status
     * came, and its first HTTP_MAX_RESPONSE bytes are kept. */
    if (rc == CURLE_WRITE_ERROR && r->read > HTTP_READ_MAX && status >= 100)
        rc = CURLE_OK;
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &connects);
    if (rc != CURLE_OK) /* only a failure needs to know whether bytes left */
        curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &reqsize);
    curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &total);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(r->easy, CURLINFO_PRETRANSFER_TIME, &pretransfer);
        if (e->http2 && e->https) { /* what ALPN chose, for the next resend decision */
            long ver = 0;
            curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &ver);
            e->h1_seen = ver < CURL_HTTP_VERSION_2_0;
        }
    }
    req_detach(e, r);

    if (connects > 0) {
        e->stats.connects += (unsigned long long)connects;
        if (e->https)
            e->stats.handshakes += (unsigned long long)connects;
    }
    res.total_time = total;
    if (rc == CURLE_OK) {
        res.status = (int)status;
        res.retry_after = r->retry_after;
        res.sent_at = r->started + pretransfer;
        if (r->buf != NULL) {
            r->buf[r->len] = '\0';
            res.body = r->buf;
            res.body_len = r->len;
        }
        res.cut = r->read > r->len;
        if (status >= 300 && status < 400)
            res.detail = redirect_target(r);
    } else {
        res.error =
            http__failure_class(engine_h2(e), rc, r->errbuf, r->sends, reqsize, r->reconnect);
        if (res.error == HTTP_EMAYBESENT && status >= 200 && status < 300 && r->buf != NULL &&
            r->len > 0) {
            r->buf[r->len] = '\0';
            res.status = (int)status;
            res.body = r->buf;
            res.body_len = r->len;
            res.cut = true;
        }
        /* libcurl's error buffer names hosts and reasons, never headers. */
        res.detail = r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(rc);
        if (e->poll_errno != 0 && strcmp(r->errbuf, "select/poll returned error") == 0) {
            snprintf(r->errbuf, sizeof(r->errbuf), "the connection failed: %s",
                     strerror(e->poll_errno));
            res.detail = r->errbuf;
        }
        /* libcurl says "Failed to resolve host 'H' with timeout after 0 ms"
         * when the request's whole request_timeout_ms ran out before it
         * came to the lookup: it waited for a connection (over HTTP/2
         * behind one being set up, PIPEWAIT, whose connect or TLS handshake
         * never completed). No lookup failed, so the text must not send an
         * operator after DNS. */
        if (rc == CURLE_OPERATION_TIMEDOUT && r->sends == 0 &&
            strncmp(r->errbuf, "Failed to resolve ", 18) == 0 &&
            strstr(r->errbuf, " with timeout after ") != NULL) {
            snprintf(r->errbuf, sizeof(r->errbuf),
                     "no connection within request_timeout_ms (%ld ms): connect or TLS "
                     "handshake not completing",
                     e->timeout_ms);
            res.detail = r->errbuf;
        }
        /* OpenSSL's "wrong version number" in the handshake: what came back
         * was no TLS record, most often a plain HTTP answer; OpenSSL's text
         * alone does not say so. */
        if (rc == CURLE_SSL_CONNECT_ERROR && r->sends == 0 &&
            strstr(r->errbuf, "wrong version number") != NULL) {
            res.detail = "TLS handshake: wrong version number, the server does not speak TLS "
                         "there (an https:// api_base naming a plain http port?)";
        }
        if (res.error == HTTP_ENOTSENT && engine_h2(e) && r->sends > 0 && reqsize > 0 &&
            !r->reconnect)
            res.detail = "HTTP/2 stream refused by the server each time it was sent "
                         "(GOAWAY, REFUSED_STREAM): not processed";
        if (rc == CURLE_WRITE_ERROR && r->read > HTTP_READ_MAX)
            res.detail = "an answer longer than 8 MiB: not read further";
        if (rc == CURLE_ABORTED_BY_CALLBACK && r->resend_cut)
            res.detail = res.error == HTTP_EMAYBESENT
                             ? "the reused connection closed without an answer after the "
                               "request was written; not re-sent"
                             : "the reused connection was closed before the request was written";
        else if (res.error == HTTP_EMAYBESENT && r->reconnect && !engine_h2(e)) {
            snprintf(detail, sizeof(detail),
                     "the reused connection closed without an answer after the request was "
                     "written; sending it again failed: %s",
                     res.detail);
            res.detail = detail;
        }
    }
    cb(&res, r->user);
    req_recycle(e, r);
}

/* Aborts a running request and runs its callback with HTTP_ECANCELLED. */
static void req_cancel(http_engine_t *e, http_req_t *r)
{
    http_result_t res = {
        .error = HTTP_ECANCELLED, .body = "", .retry_after = -1, .detail = "cancelled"};
    http_done_cb cb = r->cb;
    long reqsize = 0;

    /* Bytes libcurl has written for this transfer so far (headers, body);
     * before its first write, the size is still the previous transfer's of
     * this (reused) handle. */
    curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &reqsize);
    res.left = http__failure_class(engine_h2(e), CURLE_ABORTED_BY_CALLBACK, NULL, r->sends, reqsize,
                                   r->reconnect) == HTTP_EMAYBESENT;
    req_detach(e, r);
    if (cb != NULL) /* always set while the request is on the active list */
        cb(&res, r->user);
    req_recycle(e, r);
}

/* Fails the requests whose socket could not be watched (see
 * engine_watch_failed), one at a time from the head: a callback may start
 * requests or close the engine. */
static void engine_reap_cb(uv_timer_t *t)
{
    http_engine_t *e = t->data;

    while (!e->closing) {
        http_result_t res = {.retry_after = -1, .body = ""};
        http_req_t *r = e->active_head;
        http_done_cb cb;
        long reqsize = 0;

        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): recycled requests are unlinked first */
        while (r != NULL && r->watch_err == 0)
            r = r->next;
        if (r == NULL)
            break;
        curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &reqsize);
        res.error = http__failure_class(engine_h2(e), CURLE_ABORTED_BY_CALLBACK, NULL, r->sends,
                                        reqsize, r->reconnect);
        snprintf(r->errbuf, sizeof(r->errbuf), "cannot watch the connection's socket: %s",
                 uv_strerror(r->watch_err));
        res.detail = r->errbuf;
        cb = r->cb;
        req_detach(e, r);
        if (cb != NULL)
            cb(&res, r->user);
        req_recycle(e, r);
    }
}

/* Runs the callbacks of every finished transfer of the lane. A callback may
 * close the engine: then the multi handles are gone and draining stops. */
static void engine_drain(http_lane_t *lane)
{
    http_engine_t *e = lane->e;
    CURLMsg *m;
    int left;

    while (!e->closing && (m = curl_multi_info_read(lane->multi, &left)) != NULL) {
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        char *priv = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        req_complete(e, (http_req_t *)(void *)priv, rc);
    }
}

/* ------------------------------------------------------- libuv -> libcurl */

/* Reads at most this much of what an idle connection's server sent
 * (sock_idle_readable): a close is a few dozen bytes. */
#define HTTP_IDLE_DRAIN_MAX (64 * 1024)

/*
 * An idle HTTP/1.x connection in libcurl's cache became readable. A server
 * sends nothing before a request, so this is its close of the connection
 * (its keep-alive timeout, a reload): over TLS a close_notify alert ahead
 * of the FIN, or an answer to no request (a 408). libcurl 7.88 looks at a
 * cached connection before it reuses it with a 1-byte MSG_PEEK, and bytes
 * waiting read as "alive": over TLS it wrote the next request into the
 * closed connection, which failed as maybe sent (`uncertain` under
 * at-most-once) although the server never read it. What waits is read and
 * dropped and the reading side shut, so that peek finds the end and
 * libcurl closes the connection instead of reusing it.
 */
static void sock_idle_readable(http_sock_t *s)
{
    char buf[4096];
    size_t total = 0;
    ssize_t n;

    if (!s->close_fd || !sock_is_ours(s))
        return;
    do {
        n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            total += (size_t)n;
    } while ((n > 0 && total < HTTP_IDLE_DRAIN_MAX) || (n < 0 && errno == EINTR));
    if (n < 0 && total == 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return; /* nothing came after all */
    shutdown(s->fd, SHUT_RD);
}

static void engine_timeout_cb(uv_timer_t *t)
{
    http_lane_t *lane = t->data;
    int running;

    curl_multi_socket_action(lane->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    engine_drain(lane);
}

static void sock_poll_cb(uv_poll_t *p, int status, int events)
{
    http_sock_t *s = p->data;
    http_engine_t *e = s->e;
    http_lane_t *lane = s->lane;
    int flags = 0, running;

    if (s->removed) {
        /* libcurl is not interested (e.g. the peer closed an idle pooled
         * connection): stop watching until it asks again. Over HTTP/2 a
         * server may speak on an idle connection (PING, SETTINGS, GOAWAY),
         * which libcurl reads itself when it next uses it. */
        if (s->conn && (status < 0 || (events & UV_READABLE)) && !engine_h2(e))
            sock_idle_readable(s);
        uv_poll_stop(p);
        s->events = 0;
        s->removed = false;
        return;
    }
    /* `s` may be released during the action: read what we need first. */
    if (status < 0) {
        int err = 0;
        socklen_t len = sizeof(err);

        s->events = 0; /* libuv stopped the handle on the error */
        flags = CURL_CSELECT_ERR;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
            e->poll_errno = err;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(lane->multi, s->fd, flags, &running);
    engine_drain(lane);
    e->poll_errno = 0;
}

/* ------------------------------------------------------- libcurl -> libuv */

static int engine_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    http_lane_t *lane = userp;

    (void)multi;
    if (timeout_ms < 0) {
        uv_timer_stop(&lane->timer);
        return 0;
    }
    /* 0 is fine as is: the timer fires on the next loop turn (curl #17144). */
    return uv_timer_start(&lane->timer, engine_timeout_cb, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

static void engine_reap_cb(uv_timer_t *t);

/* A socket libcurl asked to watch could not be (no memory, no room left in
 * epoll): the transfer that asked fails on the next loop turn, outside
 * libcurl's callbacks, instead of waiting for events that never come.
 * (Returning -1 from the socket callback would make libcurl 7.88 mark the
 * whole multi handle dead: its running transfers never finish, not even by
 * their timeout, and it refuses new ones.) */
static void engine_watch_failed(http_engine_t *e, CURL *easy, int err)
{
    for (http_req_t *r = e->active_head; r != NULL; r = r->next) {
        if (r->easy == easy) {
            if (r->watch_err == 0)
                r->watch_err = err;
            break;
        }
    }
    if (!uv_is_active((uv_handle_t *)&e->reap))
        uv_timer_start(&e->reap, engine_reap_cb, 0, 0);
}

static int engine_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    http_lane_t *lane = userp;
    http_engine_t *e = lane->e;
    http_sock_t *s = sock_get(e, fd);
    int events = 0, rc;

    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s == NULL)
            return 0;
        if (!s->close_fd)
            sock_release(e, s);
        else if ((s->events & UV_READABLE) == 0 && !sock_is_ours(s))
            sock_forget(e, s); /* closed by libcurl without our callback */
        else
            s->removed = s->events != 0; /* ours: stopped lazily, see top */
        return 0;
    }
    if (s == NULL) {
        s = sock_new(e, fd, false);
        if (s == NULL) {
            engine_watch_failed(e, easy, UV_ENOMEM);
            return 0;
        }
    }
    if (s->conn && s->lane == NULL)
        lane->conns++;
    s->lane = lane;
    if (!s->has_poll) {
        if ((rc = uv_poll_init_socket(e->loop, &s->poll, fd)) != 0) {
            engine_watch_failed(e, easy, rc);
            return 0;
        }
        s->poll.data = s;
        s->has_poll = true;
        e->open_handles++;
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    s->removed = false;
    if (events == s->events)
        return 0; /* already watching exactly this */
    if ((rc = uv_poll_start(&s->poll, events, sock_poll_cb)) != 0) {
        uv_poll_stop(&s->poll);
        s->events = 0;
        engine_watch_failed(e, easy, rc);
        return 0;
    }
    s->events = events;
    return 0;
}

/* --------------------------------------------------------------- requests */

static size_t req_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    http_req_t *r = userp;
    size_t n = size * nmemb;
    size_t take = HTTP_MAX_RESPONSE - r->len;

    r->read += n;
    if (r->read > HTTP_READ_MAX)
        return 0; /* aborts the transfer (CURLE_WRITE_ERROR): see HTTP_READ_MAX */
    if (take > n)
        take = n;
    if (take == 0)
        return n; /* beyond the cap: discarded, not an error */
    if (r->len + take + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : HTTP_BUF_FIRST;
        char *b;
        while (cap < r->len + take + 1)
            cap *= 2;
        if (cap > HTTP_MAX_RESPONSE + 1)
            cap = HTTP_MAX_RESPONSE + 1;
        b = realloc(r->buf, cap);
        if (b == NULL)
            return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, take);
    r->len += take;
    return n;
}

/* Parses a Retry-After value: delta-seconds, or an HTTP-date turned into
 * seconds from now. -1 when it is neither. */
static double parse_retry_after(const char *v, size_t n)
{
    char tmp[64];
    time_t when, now;

    while (n > 0 && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    if (tmp[0] >= '0' && tmp[0] <= '9') {
        /* delta-seconds = 1*DIGIT (RFC 9110, 10.2.3): no sign, fraction,
         * exponent or hex; a huge value is clamped, not dropped. */
        double d = 0;
        for (size_t i = 0; i < n; i++) {
            if (tmp[i] < '0' || tmp[i] > '9')
                return -1;
            if (d < HTTP_RETRY_AFTER_MAX)
                d = d * 10 + (tmp[i] - '0');
        }
        return d > HTTP_RETRY_AFTER_MAX ? HTTP_RETRY_AFTER_MAX : d;
    }
    when = curl_getdate(tmp, NULL);
    if (when == (time_t)-1)
        return -1;
    now = time(NULL);
    return when > now ? (double)(when - now) : 0;
}

static size_t req_header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    static const char name[] = "retry-after:";
    http_req_t *r = userp;
    size_t n = size * nmemb;

    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        r->retry_after = -1; /* a new response (after a 1xx) starts */
    else if (n >= sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0)
        r->retry_after = parse_retry_after(data + sizeof(name) - 1, n - (sizeof(name) - 1));
    return n;
}

/* Runs before each write of a request (libcurl's DO state). A second run
 * is libcurl re-sending it on a new connection; see the header comment. */
static int req_prereq_cb(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                         int local_port)
{
    http_req_t *r = clientp;

    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    r->reconnect = false;
    if (++r->sends > 1 && !engine_h2(r->e)) {
        r->resend_cut = true;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* Runs for each socket libcurl opens for this request's transfer. After a
 * write, that is libcurl sending the request again on a new connection:
 * until the prereq callback runs there, nothing went over it. */
static int req_sockopt_cb(void *clientp, curl_socket_t fd, curlsocktype purpose)
{
    http_req_t *r = clientp;

    (void)fd;
    if (purpose == CURLSOCKTYPE_IPCXN && r->sends > 0)
        r->reconnect = true;
    return CURL_SOCKOPT_OK;
}

/* Allocates a request with its easy handle and every option that does not
 * change between requests. */
static http_req_t *req_new(http_engine_t *e)
{
    http_req_t *r = calloc(1, sizeof(*r));
    CURLcode c = CURLE_OK;

    if (r == NULL)
        return NULL;
    r->e = e;
    r->easy = curl_easy_init();
    if (r->easy == NULL)
        goto fail;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (c == CURLE_OK)                                                                         \
            c = curl_easy_setopt(r->easy, opt, val);                                               \
    } while (0)
    SET(CURLOPT_PRIVATE, (void *)r);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_WRITEFUNCTION, req_write_cb);
    SET(CURLOPT_WRITEDATA, (void *)r);
    SET(CURLOPT_HEADERFUNCTION, req_header_cb);
    SET(CURLOPT_HEADERDATA, (void *)r);
    SET(CURLOPT_PREREQFUNCTION, req_prereq_cb);
    SET(CURLOPT_PREREQDATA, (void *)r);
    SET(CURLOPT_SOCKOPTFUNCTION, req_sockopt_cb);
    SET(CURLOPT_SOCKOPTDATA, (void *)r);
    SET(CURLOPT_OPENSOCKETFUNCTION, engine_opensocket_cb);
    SET(CURLOPT_OPENSOCKETDATA, (void *)e);
    SET(CURLOPT_CLOSESOCKETFUNCTION, engine_closesocket_cb);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)e);
    SET(CURLOPT_TIMEOUT_MS, e->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, e->connect_timeout_ms);
    SET(CURLOPT_DNS_CACHE_TIMEOUT, HTTP_DNS_CACHE_S);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    if (e->http2 && e->https) {
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        /* Wait for the first connection's ALPN instead of opening one
         * connection per transfer while it is pending (curl #736). Only
         * over TLS: on plain http there is no ALPN, and a waiting transfer
         * would sit behind the first one's whole answer. */
        SET(CURLOPT_PIPEWAIT, 1L);
    } else {
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    }
    if (e->ca_file != NULL)
        SET(CURLOPT_CAINFO, e->ca_file);
    /* The proxy as the environment said at engine creation; without one,
     * "*" turns libcurl's own reading of the environment (five or six
     * getenv and copies per request) off. */
    if (e->proxy != NULL) {
        SET(CURLOPT_PROXY, e->proxy);
        SET(CURLOPT_NOPROXY, e->noproxy != NULL ? e->noproxy : "");
    } else {
        SET(CURLOPT_NOPROXY, "*");
    }
#undef SET
    if (c != CURLE_OK)
        goto fail;
    return r;
fail:
    req_destroy(r);
    return NULL;
}

/* The route of `path`, parsed on first use; NULL when the table is full or
 * libcurl's URL parser refuses it (the caller then sets the URL string, as
 * before, and libcurl reports the problem). `url` holds api_base + path. */
static const http_route_t *engine_route(http_engine_t *e, const char *path, const char *url)
{
    http_route_t *rt;

    for (size_t i = 0; i < e->nroutes; i++) {
        if (strcmp(e->routes[i].path, path) == 0)
            return &e->routes[i];
    }
    if (e->nroutes == HTTP_ROUTES_MAX)
        return NULL;
    rt = &e->routes[e->nroutes];
    rt->path = strdup(path);
    rt->cu = curl_url();
    if (rt->path == NULL || rt->cu == NULL ||
        curl_url_set(rt->cu, CURLUPART_URL, url, 0) != CURLUE_OK) {
        route_clear(rt);
        return NULL;
    }
    e->nroutes++;
    return rt;
}

/* Points the easy handle at `url`, through its route when there is one.
 * Both the string and the CURLU are set: the CURLU spares the parse, the
 * string keeps libcurl's idea of the current URL (state.url, used for
 * CURLINFO_EFFECTIVE_URL and messages) right on libcurl < 8.12, which does
 * not refresh it when only CURLOPT_CURLU changes (curl #15984). */
static CURLcode req_set_url(http_req_t *r, const http_route_t *rt, const char *url)
{
    CURLcode c;

    if (rt != NULL && rt == r->route)
        return CURLE_OK;
    r->route = NULL;
    c = curl_easy_setopt(r->easy, CURLOPT_URL, url);
    if (c == CURLE_OK)
        c = curl_easy_setopt(r->easy, CURLOPT_CURLU, rt != NULL ? rt->cu : NULL);
    if (c == CURLE_OK)
        r->route = rt;
    return c;
}

/* The clock of http_result_t.sent_at (the daemon's: gettimeofday). */
static double wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The lane with the fewest requests running (the first of equals): each
 * lane then runs at most ceil(n / lanes) of the caller's n, which its
 * connection cache keeps open (http_engine_set_concurrency). */
static http_lane_t *engine_lane_pick(const http_engine_t *e)
{
    http_lane_t *best = e->lanes[0];

    for (size_t i = 1; i < e->nlanes && best->inflight > 0; i++) {
        if (e->lanes[i]->inflight < best->inflight)
            best = e->lanes[i];
    }
    return best;
}

/* Starts one request; `body` NULL means GET. */
static int engine_start(http_engine_t *e, const char *path, const char *body, size_t len,
                        http_done_cb cb, void *user)
{
    char url[HTTP_URL_MAX];
    size_t plen;
    const http_route_t *rt;
    http_lane_t *lane;
    http_req_t *r;
    CURLcode c;
    bool opener;

    if (e == NULL || path == NULL || path[0] != '/' || cb == NULL)
        return HTTP_EINVAL;
    if (e->closing)
        return -ESHUTDOWN;
    plen = strlen(path);
    if (e->base_len + plen >= sizeof(url))
        return HTTP_EINVAL;
    memcpy(url, e->base, e->base_len);
    memcpy(url + e->base_len, path, plen + 1); /* libcurl copies the URL */
    rt = engine_route(e, path, url);

    if (e->idle != NULL) {
        r = e->idle;
        e->idle = r->next;
        e->nidle--;
        r->next = NULL;
    } else {
        r = req_new(e);
        if (r == NULL)
            return -ENOMEM;
    }

    c = req_set_url(r, rt, url);
    if (c == CURLE_OK && r->headers != e->hdrs->list) {
        c = curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, e->hdrs->list);
        r->headers = c == CURLE_OK ? e->hdrs->list : NULL;
    }
    if (c == CURLE_OK && body != NULL) {
        /* The size first: setting it may reset a previous POSTFIELDS. */
        c = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        if (c == CURLE_OK)
            c = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, body);
    } else if (c == CURLE_OK) {
        c = curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
    }
    if (c != CURLE_OK) {
        req_recycle(e, r);
        return HTTP_ECURL;
    }
    r->cb = cb;
    r->user = user;
    r->len = 0;
    r->retry_after = -1;
    r->errbuf[0] = '\0';
    r->sends = 0;
    r->read = 0;
    r->resend_cut = false;
    r->reconnect = false;
    r->watch_err = 0;

    /* Behind the ones waiting already, in order. */
    lane = engine_lane_pick(e);
    if (e->park_head == NULL && gate_admits(e, lane, &opener)) {
        if (req_add(e, r, lane, opener) != 0) {
            r->cb = NULL;
            req_recycle(e, r);
            return HTTP_ECURL;
        }
    } else {
        r->parked = true;
        glist_push(&e->park_head, &e->park_tail, r);
        unpark_arm(e, false);
    }
    r->hdrs = e->hdrs;
    r->hdrs->refs++;
    r->seq = ++e->seq;
    r->prev = e->active_tail;
    r->next = NULL;
    if (e->active_tail != NULL)
        e->active_tail->next = r;
    else
        e->active_head = r;
    e->active_tail = r;
    e->inflight++;
    e->stats.requests++;
    return 0;
}

/* Starts parked requests, oldest first, while the gate admits them. A
 * request libcurl refuses ends as not sent; its callback may start
 * requests (parked behind the others) or close the engine. */
static void engine_unpark_cb(uv_timer_t *t)
{
    http_engine_t *e = t->data;

    while (!e->closing && e->park_head != NULL) {
        http_req_t *r = e->park_head;
        http_lane_t *lane = engine_lane_pick(e);
        http_result_t res = {.error = HTTP_ENOTSENT,
                             .retry_after = -1,
                             .body = "",
                             .detail = "libcurl refused the transfer (curl_multi_add_handle)"};
        http_done_cb cb;
        bool opener;

        if (!gate_admits(e, lane, &opener)) {
            unpark_arm(e, false);
            return;
        }
        glist_unlink(&e->park_head, &e->park_tail, r);
        r->parked = false;
        if (req_add(e, r, lane, opener) == 0)
            continue;
        cb = r->cb;
        req_detach(e, r);
        if (cb != NULL)
            cb(&res, r->user);
        req_recycle(e, r);
    }
}

/* ----------------------------------------------------------------- public */

int http_engine_post(http_engine_t *e, const char *path, const char *body, size_t len,
                     http_done_cb cb, void *user)
{
    if (body == NULL) {
        if (len != 0)
            return HTTP_EINVAL;
        body = "";
    }
    return engine_start(e, path, body, len, cb, user);
}

int http_engine_get(http_engine_t *e, const char *path, http_done_cb cb, void *user)
{
    return engine_start(e, path, NULL, 0, cb, user);
}

size_t http_engine_inflight(const http_engine_t *e)
{
    return e != NULL ? e->inflight : 0;
}

int http_engine_set_token(http_engine_t *e, const char *token)
{
    http_hdrs_t *h;

    if (e == NULL)
        return HTTP_EINVAL;
    if (token != NULL && http_token_check(token) != 0)
        return HTTP_EINVAL;
    h = hdrs_new(token);
    if (h == NULL)
        return -ENOMEM;
    /* Running requests keep their own reference to the old list. */
    hdrs_unref(e->hdrs);
    e->hdrs = h;
    return 0;
}

int http_engine_set_concurrency(http_engine_t *e, long n)
{
    CURLMcode mc = CURLM_OK;
    size_t want;
    long per;
    int rc = 0;

    if (e == NULL || e->closing)
        return HTTP_EINVAL;
    if (n <= 0)
        return 0;
    /* Lanes are added, never taken away: a smaller n shrinks each lane's
     * cache instead, and libcurl closes what it holds beyond that as the
     * connections come back. */
    want = e->one_lane ? 1 : ((size_t)n + HTTP_LANE_CONNS - 1) / HTTP_LANE_CONNS;
    if (want > HTTP_LANES_MAX)
        want = HTTP_LANES_MAX;
    while (e->nlanes < want && rc == 0)
        rc = lane_add(e);
    /* A lane runs at most ceil(n / lanes) requests (engine_lane_pick); one
     * more is slack for a caller that runs one over its n. */
    per = e->nlanes > 1 ? (n + (long)e->nlanes - 1) / (long)e->nlanes + 1 : n;
    for (size_t i = 0; i < e->nlanes && mc == CURLM_OK; i++) {
        mc = curl_multi_setopt(e->lanes[i]->multi, CURLMOPT_MAXCONNECTS, per);
        if (mc == CURLM_OK && e->http2)
            mc = curl_multi_setopt(e->lanes[i]->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, n);
    }
    if (rc != 0)
        return rc;
    return mc == CURLM_OK ? 0 : HTTP_ECURL;
}

void http_engine_cancel_all(http_engine_t *e)
{
    unsigned long long last;

    if (e == NULL)
        return;
    /* Requests a callback starts from here are not cancelled; the list is in
     * start order, so stop at the first one newer than `last`. Callbacks may
     * cancel or close re-entrantly: always take the current head. */
    last = e->seq;
    /* req_cancel unlinks the head before it may free it. */
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc) */
    while (e->active_head != NULL && e->active_head->seq <= last)
        req_cancel(e, e->active_head);
}

void http_engine_stats(const http_engine_t *e, http_stats_t *out)
{
    if (out == NULL)
        return;
    if (e == NULL) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = e->stats;
    out->lanes = e->nlanes;
}

static void engine_free(http_engine_t *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nlanes; i++)
        free(e->lanes[i]);
    hdrs_unref(e->hdrs);
    /* After every easy handle: they point at the routes' CURLU. */
    for (size_t i = 0; i < e->nroutes; i++)
        route_clear(&e->routes[i]);
    free(e->socks);
    free(e->base);
    free(e->ca_file);
    free(e->proxy);
    free(e->noproxy);
    free(e);
}

static void engine_timer_close_cb(uv_handle_t *h)
{
    http_lane_t *lane = h->data;

    engine_handle_closed(lane->e);
}

/* The close callback of the engine's own timers (reap, unpark). */
static void engine_reap_close_cb(uv_handle_t *h)
{
    engine_handle_closed(h->data);
}

void http_engine_close(http_engine_t *e)
{
    if (e == NULL || e->closing)
        return;
    e->closing = true; /* from here on, new requests are refused */
    while (e->active_head != NULL)
        req_cancel(e, e->active_head); /* NOLINT(clang-analyzer-unix.Malloc): unlinked first */
    while (e->idle != NULL) {
        http_req_t *r = e->idle;
        e->idle = r->next;
        req_destroy(r);
    }
    e->nidle = 0;
    /* Closes the pooled connections through our close-socket callback. */
    for (size_t i = 0; i < e->nlanes; i++) {
        curl_multi_cleanup(e->lanes[i]->multi);
        e->lanes[i]->multi = NULL;
    }
    for (size_t i = 0; i < e->nsocks; i++) {
        http_sock_t *s = e->socks[i];

        if (s == NULL)
            continue;
        if (s->close_fd && !sock_is_ours(s))
            sock_forget(e, s); /* closed by libcurl without our callback */
        else
            sock_release(e, s);
    }
    /* The last close callback frees the engine: count them all first. */
    for (size_t i = 0; i < e->nlanes; i++)
        uv_close((uv_handle_t *)&e->lanes[i]->timer, engine_timer_close_cb);
    uv_close((uv_handle_t *)&e->reap, engine_reap_close_cb);
    uv_close((uv_handle_t *)&e->unpark, engine_reap_close_cb);
}

/* Adds a lane: a multi handle set up like the others, and its timer. */
static int lane_add(http_engine_t *e)
{
    http_lane_t *lane;
    CURLMcode mc;

    if (e->nlanes >= HTTP_LANES_MAX)
        return HTTP_EINVAL;
    lane = calloc(1, sizeof(*lane));
    if (lane == NULL)
        return -ENOMEM;
    lane->e = e;
    lane->multi = curl_multi_init();
    if (lane->multi == NULL)
        goto fail;
    mc = curl_multi_setopt(lane->multi, CURLMOPT_SOCKETFUNCTION, engine_socket_cb);
    if (mc == CURLM_OK)
        mc = curl_multi_setopt(lane->multi, CURLMOPT_SOCKETDATA, (void *)lane);
    if (mc == CURLM_OK)
        mc = curl_multi_setopt(lane->multi, CURLMOPT_TIMERFUNCTION, engine_timer_cb);
    if (mc == CURLM_OK)
        mc = curl_multi_setopt(lane->multi, CURLMOPT_TIMERDATA, (void *)lane);
    if (mc == CURLM_OK)
        mc = curl_multi_setopt(lane->multi, CURLMOPT_PIPELINING,
                               e->http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
    if (mc == CURLM_OK && e->max_host_connections > 0)
        mc = curl_multi_setopt(lane->multi, CURLMOPT_MAX_HOST_CONNECTIONS, e->max_host_connections);
    if (mc != CURLM_OK)
        goto fail;
    /* Cannot fail; from here the lane is the engine's, closed with it. */
    uv_timer_init(e->loop, &lane->timer);
    lane->timer.data = lane;
    e->lanes[e->nlanes++] = lane;
    e->open_handles++;
    return 0;
fail:
    curl_multi_cleanup(lane->multi); /* accepts NULL */
    free(lane);
    return HTTP_ECURL;
}

static int base_check(const char *base, size_t n)
{
    if (n >= HTTP_BASE_MAX)
        return HTTP_EINVAL;
    if (strncasecmp(base, "http://", 7) != 0 && strncasecmp(base, "https://", 8) != 0)
        return HTTP_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)base[i];
        if (ch <= 0x20 || ch == 0x7f)
            return HTTP_EINVAL;
    }
    return 0;
}

/* The first of `names` set in the environment (even to ""), or NULL. */
static const char *env_first(const char *const *names)
{
    for (; *names != NULL; names++) {
        const char *v = getenv(*names);
        if (v != NULL)
            return v;
    }
    return NULL;
}

/*
 * Reads the proxy settings once, the way libcurl would per request: for an
 * http:// base only lower-case http_proxy (an upper-case HTTP_PROXY may come
 * from a CGI request header), for https:// https_proxy or HTTPS_PROXY, then
 * all_proxy or ALL_PROXY; no_proxy or NO_PROXY. An empty proxy is no proxy.
 */
static int engine_proxy_from_env(http_engine_t *e)
{
    static const char *const http_names[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
    static const char *const https_names[] = {"https_proxy", "HTTPS_PROXY", "all_proxy",
                                              "ALL_PROXY", NULL};
    static const char *const no_names[] = {"no_proxy", "NO_PROXY", NULL};
    const char *proxy = env_first(e->https ? https_names : http_names);
    const char *noproxy = env_first(no_names);

    if (proxy == NULL || proxy[0] == '\0')
        return 0;
    e->proxy = strdup(proxy);
    if (e->proxy == NULL)
        return -ENOMEM;
    if (noproxy != NULL) {
        e->noproxy = strdup(noproxy);
        if (e->noproxy == NULL)
            return -ENOMEM;
    }
    return 0;
}

int http_engine_new(uv_loop_t *loop, const http_options_t *opt, http_engine_t **out)
{
    http_engine_t *e = NULL;
    size_t blen;
    int rc = HTTP_EINVAL;

    if (out != NULL)
        *out = NULL;
    if (loop == NULL || opt == NULL || out == NULL || opt->api_base == NULL ||
        opt->timeout_ms < 0 || opt->connect_timeout_ms < 0 || opt->max_host_connections < 0 ||
        opt->open_burst < 0 || opt->open_age_ms < 0)
        return HTTP_EINVAL;
    if (opt->token != NULL && http_token_check(opt->token) != 0)
        return HTTP_EINVAL;
    blen = strlen(opt->api_base);
    while (blen > 0 && opt->api_base[blen - 1] == '/')
        blen--;
    if (base_check(opt->api_base, blen) != 0)
        return HTTP_EINVAL;

    rc = -ENOMEM;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto fail;
    e->loop = loop;
    e->base = strndup(opt->api_base, blen);
    if (e->base == NULL)
        goto fail;
    e->base_len = blen;
    e->https = strncasecmp(e->base, "https://", 8) == 0;
    e->http2 = opt->http2;
    e->timeout_ms = opt->timeout_ms ? opt->timeout_ms : 30000;
    e->connect_timeout_ms = opt->connect_timeout_ms ? opt->connect_timeout_ms : 10000;
    if (opt->ca_file != NULL) {
        e->ca_file = strdup(opt->ca_file);
        if (e->ca_file == NULL)
            goto fail;
    }
    e->hdrs = hdrs_new(opt->token);
    if (e->hdrs == NULL)
        goto fail;
    if (engine_proxy_from_env(e) != 0)
        goto fail;

    /* One multiplexed connection over HTTP/2 (the lanes would each open
     * one); a cap on connections is the whole engine's. */
    e->max_host_connections = opt->max_host_connections;
    e->one_lane = (e->http2 && e->https) || e->max_host_connections > 0;
    e->gate = !e->one_lane;
    e->open_burst = (size_t)(opt->open_burst > 0 ? opt->open_burst : HTTP_OPEN_BURST);
    e->open_age_ms = (uint64_t)(opt->open_age_ms > 0 ? opt->open_age_ms : HTTP_OPEN_AGE_MS);
    /* Last: from here on the engine must be closed. */
    rc = lane_add(e);
    if (rc != 0)
        goto fail;
    uv_timer_init(loop, &e->reap); /* cannot fail; closed with the engine */
    e->reap.data = e;
    e->open_handles++;
    uv_timer_init(loop, &e->unpark);
    e->unpark.data = e;
    e->open_handles++;
    *out = e;
    return 0;
fail:
    engine_free(e);
    return rc;
}

const char *http_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case HTTP_ENOTSENT:
        return "request not sent (connect or name resolution failed)";
    case HTTP_EMAYBESENT:
        return "request failed after it may have been sent";
    case HTTP_ECANCELLED:
        return "request cancelled";
    case HTTP_EINVAL:
        return "invalid argument";
    case HTTP_ECURL:
        return "libcurl refused a setup call";
    case -ENOMEM:
        return "out of memory";
    case -ESHUTDOWN:
        return "engine is closing";
    default:
        return err < 0 ? strerror(-err) : "unknown error";
    }
}
