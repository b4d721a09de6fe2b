/*
 * ipc.c - the socket server: listener, connections, NDJSON framing, the
 * per-connection answer FIFO, backpressure and event streams.
 *
 * Lifetimes (the part that must survive any answer order):
 * - A connection (struct ipc_conn) is reference counted: one reference for
 *   its open libuv handle, one per request block that belongs to it (in the
 *   FIFO or held by the daemon), one per stream reference the daemon holds.
 *   It is freed when the count reaches zero, which may be long after its
 *   handle closed and after the server itself was freed.
 * - Once the handle's close callback ran, the connection no longer refers
 *   to the server (srv is NULL) and answers to it only free.
 * - The server counts its open handles (listener, idle, connections) and
 *   is freed by the last close callback after ipc_server_close.
 *
 * Writes: at most one uv_write per connection is in flight. Answers are
 * encoded straight into the connection's output buffer when they are next
 * in line (the common case); an answer that overtakes an earlier one is
 * encoded into its own buffer and waits in its FIFO slot. Output is flushed
 * at the end of the read callback that produced it, or from an idle handle
 * (one flush per loop turn, however many answers came in that turn).
 */
#include "ipc_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_INITIAL (16u * 1024u)   /* first read buffer of a connection */
#define READ_MIN_FREE (16u * 1024u)  /* least free space offered to one read */
#define READ_KEEP_MAX (256u * 1024u) /* larger idle read buffers are released */
#define WRITE_KEEP_MAX (1024u * 1024u)
/* Reading pauses while this much output waits to be written, or while the
 * requests in flight take this much memory - per connection at most, and
 * a share of a server-wide budget when many connections are open (so a
 * thousand clients that pipeline and never read cannot make the daemon
 * hold gigabytes): the budget divided by the open connections, within
 * [floor, most]. */
#define WRITE_PAUSE_BYTES (8u * 1024u * 1024u)
#define WRITE_BUDGET (128u * 1024u * 1024u)
#define WRITE_PAUSE_FLOOR (64u * 1024u)
/* The part of WRITE_BUDGET that the shares leave to large answers
 * (BIG_ANSWER_ROOM): with the shares cut from all of it, twenty clients
 * that pipelined and never read filled the budget, and `stats` and `list`
 * waited for every other client until they left. */
#define WRITE_BIG_RESERVE (16u * 1024u * 1024u)
#define FIFO_PAUSE_BYTES (32u * 1024u * 1024u)
#define FIFO_BUDGET (256u * 1024u * 1024u)
#define FIFO_PAUSE_FLOOR (256u * 1024u)
/* Read buffers of all connections together (default of
 * ipc_server_options_t.read_budget): a buffer grows past READ_KEEP_MAX (a
 * line longer than that arriving) only while the total stays within this;
 * else the line is refused. Bounds what clients that send long unfinished
 * lines and stop can hold. */
#define READ_BUDGET (256u * 1024u * 1024u)
/* A request whose answer can be large (a `list` page of up to 1,000 jobs,
 * `stats` with every sender) is taken only while the unsent answers of all
 * connections leave this much of WRITE_BUDGET free. The shares above bound
 * what a connection holds before it stops being read, but each may still
 * hold one answer past its share: a thousand connections asking for a
 * ~1 MB page and never reading held about a gigabyte. A request that waits
 * for room keeps its connection from parsing further lines (order is kept)
 * until answers drain or connections close. */
#define BIG_ANSWER_ROOM (2u * 1024u * 1024u)
#define STREAM_FLUSH_BYTES (64u * 1024u) /* a stream flushes at once from here */
/* Event streams of all connections together: each may buffer its own
 * max_buffered, or this divided by the open streams when that is less (at
 * least STREAM_FLOOR), so that a thousand watchers that never read hold
 * tens of MiB, not a quarter of a GiB. */
#define STREAM_BUDGET (32u * 1024u * 1024u)
#define STREAM_FLOOR (16u * 1024u)
#define GAP_MAX 64       /* longest gap event, its newline included */
#define MAX_REJECTING 64 /* refused connections still being told why */
/* A refused connection (conn_reject) answers the peer's first request with
 * the error and its id; a peer that sends nothing within REJECT_WAIT_MS is
 * told without an id. Its first line may be at most REJECT_LINE_MAX. */
#define REJECT_WAIT_MS 1000
#define REJECT_LINE_MAX (64u * 1024u)
/* The lock file that makes a socket path ours: "<path>.lock" (lock_take). */
#define LOCK_SUFFIX ".lock"
/* Opens of the lock file whose flock succeeded on a file the path no
 * longer named (its holder had stopped and unlinked it): each one means
 * another process took and gave up the path meanwhile; after this many the
 * path counts as in use. */
#define LOCK_TRIES 8
#define ERR_MSG_MAX 1024 /* longest error message sent */
/* ipc_server_close writes the answers connections have before closing
 * them, for at most this long (a client that does not read holds the exit
 * no longer). */
#define CLOSE_FLUSH_MS 2000
/* A connection that has taken none of a write for this long while a large
 * answer waits for room is closed (ipc_server_options_t.stall_ms). */
#define STALL_MS_DEFAULT 10000

enum conn_state { CONN_OPEN, CONN_CLOSING, CONN_CLOSED };

struct ipc_stream {
    struct ipc_conn *conn;
    size_t max_buffered;
    uint64_t dropped;
};

struct ipc_conn {
    uv_pipe_t pipe;
    ipc_server_t *srv;              /* NULL once the handle is closed */
    struct ipc_conn *prev, *next;   /* server's list of unclosed handles */
    struct ipc_conn *dprev, *dnext; /* server's list of connections to kick */
    unsigned refs;
    enum conn_state state;
    uid_t uid;
    bool dirty;
    bool counted;         /* counts against max_connections */
    bool rejecting;       /* refused: only the error line is written */
    bool reject_answered; /* ... and it has been */
    const char *reject_code;
    char reject_msg[64];
    uint64_t reject_deadline; /* uv_now() after which it is told without an id */
    bool reading;
    bool paused; /* reading stopped for backpressure */
    bool eof;
    bool stop_lines;        /* no further lines are parsed */
    bool close_after_flush; /* close once everything is written */
    bool streaming;
    bool backlog;          /* parsing stopped for backpressure with data left */
    struct ipc_req *gated; /* parsed, waiting (gate_closed); not in the FIFO */
    bool writing;
    bool in_kick;
    unsigned stream_refs;
    /* Read buffer: [rpos, rlen) is unparsed; [rpos, rscan) is known to hold
     * no '\n', so a long line arriving in pieces is scanned once. */
    char *rbuf;
    size_t rcap, rlen, rpos, rscan;
    /* Answer FIFO: requests not yet written out, in arrival order. */
    struct ipc_req *head, *tail;
    unsigned n_fifo;
    size_t fifo_bytes;
    ipc__buf_t obuf; /* next write */
    ipc__buf_t wbuf; /* the write in flight */
    ipc__buf_t held; /* stream events waiting for the FIFO to drain */
    uv_write_t wreq;
    uint64_t write_at; /* loop time the write in flight started */
    struct ipc_stream stream;
    size_t max_line;
    unsigned max_pending;
};

struct ipc_server {
    uv_loop_t *loop;
    ipc_request_cb cb;
    void *user;
    size_t max_line;
    unsigned max_connections;
    unsigned max_pending;
    unsigned socket_mode;
    uid_t *uids;
    size_t n_uids;
    bool check_uids;
    uv_pipe_t listener;
    bool listening;
    bool listener_closed;
    uv_idle_t idle;
    uv_timer_t reject_timer; /* runs while refused connections wait to be told */
    uv_timer_t close_timer;  /* bounds the flush of ipc_server_close */
    uv_timer_t stall_timer;  /* runs while a large answer waits for room */
    uint64_t stall_ms;
    bool handles_closing; /* idle and timers closed: the last connection went */
    char *path;           /* the socket file we created; unlinked when we stop */
    dev_t path_dev;       /* ... if it is still that file (st_dev, st_ino after bind) */
    ino_t path_ino;
    int lock_fd; /* flock held on lock_path while the path is ours, or -1 */
    /* "<path>.lock"; path is shorter than sun_path, which sockaddr_un holds */
    char lock_path[sizeof(struct sockaddr_un) + sizeof LOCK_SUFFIX];
    struct ipc_conn *conns;
    struct ipc_conn *dirty;
    unsigned n_conns;
    unsigned n_rejecting;
    unsigned n_gated;   /* connections with a gated list/stats (may wait for room) */
    unsigned n_streams; /* open connections that are event streams */
    size_t rbuf_total;  /* read buffer bytes of all open connections */
    /* What event streams read lands here and is dropped: a watcher keeps
     * no read buffer of its own (800 idle watchers held 16 KiB each). The
     * loop reads one connection at a time, so one buffer serves all. */
    char discard[4096];
    size_t read_budget; /* most rbuf_total may grow to past READ_KEEP_MAX buffers */
    unsigned handles;   /* initialised handles whose close callback has not run */
    bool closing;
    ipc__counters_t ctr;
};

struct answer {
    ipc__buf_t *b;
    ipc__buf_t tmp;
    size_t mark;
};

static void conn_kick(struct ipc_conn *c);
static void on_idle(uv_idle_t *h);
static void stall_watch(ipc_server_t *s);
static void wake_gated(ipc_server_t *s);
static bool req_big_answer(const struct ipc_req *r);
static size_t stream_bound(const struct ipc_stream *st);
static void reject_answer(struct ipc_conn *c, const char *id, size_t id_len);

/* ---- lifetimes ---- */

static void server_maybe_free(ipc_server_t *s)
{
    if (!s->closing || s->handles > 0)
        return;
    free(s->uids);
    free(s->path);
    free(s);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    ipc_server_t *s = h->data;
    s->handles--;
    server_maybe_free(s);
}

/* Once ipc_server_close has let every connection go: the server's own
 * handles close (the idle handle flushes until then). */
static void server_close_handles(ipc_server_t *s)
{
    if (!s->closing || s->handles_closing || s->conns != NULL)
        return;
    s->handles_closing = true;
    uv_close((uv_handle_t *)&s->idle, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->reject_timer, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->close_timer, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->stall_timer, on_server_handle_closed);
}

/* Gives back c's read buffer, counted in the server's read budget; the
 * unparsed bytes it held are dropped (the caller knows there are none, or
 * wants none). */
static void conn_rbuf_release(struct ipc_conn *c)
{
    c->srv->rbuf_total -= c->rcap;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = c->rlen = c->rpos = c->rscan = 0;
}

/* What c's output buffers take from the allocator. */
static size_t conn_out_cap(const struct ipc_conn *c)
{
    return c->obuf.cap + c->wbuf.cap + c->held.cap;
}

static void conn_unref(struct ipc_conn *c)
{
    if (--c->refs > 0)
        return;
    free(c->rbuf);
    ipc__buf_free(&c->obuf);
    ipc__buf_free(&c->wbuf);
    ipc__buf_free(&c->held);
    free(c);
}

/* Frees a request block and drops its reference on the connection. */
static void req_free(struct ipc_req *r)
{
    struct ipc_conn *c = r->conn;
    if (r->answer_owned)
        free(r->answer);
    free(r);
    if (c)
        conn_unref(c);
}

static void dirty_unlink(struct ipc_conn *c)
{
    if (!c->dirty)
        return;
    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        c->srv->dirty = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    c->dprev = c->dnext = NULL;
    c->dirty = false;
}

/* Schedules conn_kick for the next idle phase (flush, resume reading). A
 * connection being kicked needs none: the kick flushes at its end. */
static void mark_dirty(struct ipc_conn *c)
{
    if (c->state != CONN_OPEN || c->dirty || c->in_kick)
        return;
    ipc_server_t *s = c->srv;
    c->dirty = true;
    c->dprev = NULL;
    c->dnext = s->dirty;
    if (s->dirty)
        s->dirty->dprev = c;
    s->dirty = c;
    if (!uv_is_active((uv_handle_t *)&s->idle))
        (void)uv_idle_start(&s->idle, on_idle); /* cannot fail with a callback */
}

static void on_conn_closed(uv_handle_t *h)
{
    struct ipc_conn *c = h->data;
    ipc_server_t *s = c->srv;

    /* Answered slots go now; unanswered ones belong to the daemon, whose
     * answer will free them. */
    struct ipc_req *r = c->head;
    while (r) {
        struct ipc_req *next = r->next;
        r->next = NULL;
        if (r->answered)
            req_free(r); /* cannot free c: the handle reference is still held */
        r = next;
    }
    c->head = c->tail = NULL;
    c->n_fifo = 0;
    c->fifo_bytes = 0;
    c->state = CONN_CLOSED;
    if (c->gated != NULL) {
        if (req_big_answer(c->gated))
            s->n_gated--;
        free(c->gated);
        c->gated = NULL;
    }
    if (c->streaming)
        s->n_streams--;

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    server_close_handles(s); /* when closing and this was the last */
    if (c->counted)
        s->n_conns--;
    if (c->rejecting)
        s->n_rejecting--;
    conn_rbuf_release(c);
    /* Nothing more is written: the output buffers go now, not when the
     * last reference does (an event stream's holder may keep the struct
     * until it next looks). */
    ipc__buf_free(&c->obuf);
    ipc__buf_free(&c->wbuf);
    ipc__buf_free(&c->held);
    c->rcap = c->rlen = c->rpos = c->rscan = 0;
    c->srv = NULL;
    s->handles--;
    if (s->n_gated > 0) /* its answers are gone: room for a waiting one */
        wake_gated(s);
    server_maybe_free(s);
    conn_unref(c);
}

static void conn_close(struct ipc_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    dirty_unlink(c);
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

/* ---- output ---- */

static size_t unsent_bytes(const struct ipc_conn *c)
{
    return c->obuf.len + c->held.len +
           uv_stream_get_write_queue_size((const uv_stream_t *)&c->pipe);
}

/* This connection's share of `budget`: budget / open connections, within
 * [floor, most]. */
static size_t conn_share(const struct ipc_conn *c, size_t budget, size_t floor, size_t most)
{
    unsigned n = c->srv != NULL && c->srv->n_conns > 0 ? c->srv->n_conns : 1;
    size_t v = budget / n;

    return v < floor ? floor : v > most ? most : v;
}

/* Unsent answers of all open connections. O(connections): asked only for
 * requests with large answers and while one of them waits. */
static size_t server_unsent(const ipc_server_t *s)
{
    size_t n = 0;

    for (const struct ipc_conn *c = s->conns; c != NULL; c = c->next)
        if (c->state == CONN_OPEN)
            n += unsent_bytes(c);
    return n;
}

static bool big_answer_room(const ipc_server_t *s)
{
    return server_unsent(s) + BIG_ANSWER_ROOM <= WRITE_BUDGET;
}

static bool req_big_answer(const struct ipc_req *r)
{
    return r->request.op == IPC_OP_LIST || r->request.op == IPC_OP_STATS;
}

/* A request that reads or changes jobs sees the effects of the requests
 * before it on its connection: it is taken only once they are answered (a
 * submit is answered when durable), so a pipelined `send` then `campaign`
 * finds the job, and `cancel` then `stats` counts it cancelled. Submits
 * are taken at once, so a pipeline of them still shares group commits. */
static bool req_waits_for_earlier(const struct ipc_req *r)
{
    return r->request.op != IPC_OP_SEND && r->request.op != IPC_OP_TEMPLATE_SEND &&
           r->request.op != IPC_OP_PING;
}

/* Whether the connection's parsed request must wait: for answer room (a
 * large answer) or for the answers to the requests before it. */
static bool gate_closed(const struct ipc_conn *c, const struct ipc_req *r)
{
    return (req_big_answer(r) && !big_answer_room(c->srv)) ||
           (req_waits_for_earlier(r) && c->n_fifo > 0);
}

/* Kicks the connections whose request may wait for answer room, once there
 * is room. (One that waits for its own earlier answers is kicked when they
 * are answered: fifo_pop marks it dirty.) */
static void wake_gated(ipc_server_t *s)
{
    if (!big_answer_room(s))
        return;
    for (struct ipc_conn *c = s->conns; c != NULL; c = c->next)
        if (c->gated != NULL && req_big_answer(c->gated))
            mark_dirty(c);
}

static bool conn_saturated(const struct ipc_conn *c)
{
    if (c->gated != NULL && gate_closed(c, c->gated))
        return true;
    return c->n_fifo >= c->max_pending ||
           c->fifo_bytes >= conn_share(c, FIFO_BUDGET, FIFO_PAUSE_FLOOR, FIFO_PAUSE_BYTES) ||
           unsent_bytes(c) > conn_share(c, WRITE_BUDGET - WRITE_BIG_RESERVE, WRITE_PAUSE_FLOOR,
                                        WRITE_PAUSE_BYTES);
}

static bool stream_put_gap(struct ipc_conn *c, ipc__buf_t *b);
static bool stream_reserve(struct ipc_conn *c, ipc__buf_t *b, size_t need);

static void on_write(uv_write_t *w, int status)
{
    struct ipc_conn *c = w->data;
    c->writing = false;
    c->wbuf.len = 0;
    /* A stream's buffers together stay within its bound (stream_reserve),
     * and a written buffer kept for reuse counts against it while empty:
     * one kept at the whole bound (the bound shrinks as watchers join)
     * would leave the other no room and drop every later event for good.
     * Kept only while it takes at most half. */
    if (c->wbuf.cap > WRITE_KEEP_MAX ||
        (c->streaming && c->wbuf.cap > stream_bound(&c->stream) / 2))
        ipc__buf_free(&c->wbuf);
    if (status < 0) {
        conn_close(c); /* a no-op when the write was cancelled by a close */
        return;
    }
    /* A stream that dropped events tells its reader as soon as there is
     * room again, not only with the next event (which may never come). */
    if (c->streaming && c->stream_refs > 0 && c->stream.dropped > 0 && c->head == NULL &&
        stream_reserve(c, &c->obuf, GAP_MAX) && stream_put_gap(c, &c->obuf))
        c->stream.dropped = 0;
    if (c->srv->n_gated > 0)
        wake_gated(c->srv);
    conn_kick(c);
}

static void conn_flush(struct ipc_conn *c)
{
    if (c->state != CONN_OPEN || c->writing || c->obuf.len == 0)
        return;
    if (c->obuf.len > UINT_MAX) {
        conn_close(c);
        return;
    }
    ipc__buf_t t = c->wbuf;
    c->wbuf = c->obuf;
    c->obuf = t;
    c->obuf.len = 0;
    uv_buf_t b = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write) != 0) {
        conn_close(c);
        return;
    }
    c->writing = true;
    c->write_at = uv_now(c->srv->loop);
}

/* Moves answered requests at the head of the FIFO into the output. */
static void conn_pop(struct ipc_conn *c)
{
    struct ipc_req *r;
    while ((r = c->head) && r->answered) {
        if (r->answer && ipc__buf_put(&c->obuf, r->answer, r->answer_len)) {
            conn_close(c);
            return;
        }
        c->head = r->next;
        if (!c->head)
            c->tail = NULL;
        c->n_fifo--;
        c->fifo_bytes -= r->block_size;
        req_free(r);
    }
    if (!c->head && c->held.len) {
        if (ipc__buf_put(&c->obuf, c->held.p, c->held.len)) {
            conn_close(c);
            return;
        }
        ipc__buf_free(&c->held);
    }
    mark_dirty(c);
}

static void fifo_push(struct ipc_conn *c, struct ipc_req *r)
{
    r->conn = c;
    r->next = NULL;
    c->refs++;
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->n_fifo++;
    c->fifo_bytes += r->block_size;
}

static int put_str(ipc__buf_t *b, const char *s)
{
    return ipc__buf_put(b, s, strlen(s));
}

/* Appends `{"id":<id>,` or `{`. */
static int put_head(ipc__buf_t *b, const char *id, size_t id_len)
{
    if (!id)
        return ipc__buf_put(b, "{", 1);
    int rc = ipc__buf_reserve(b, id_len + 7);
    if (rc)
        return rc;
    memcpy(b->p + b->len, "{\"id\":", 6);
    memcpy(b->p + b->len + 6, id, id_len);
    b->p[b->len + 6 + id_len] = ',';
    b->len += id_len + 7;
    return 0;
}

static int put_json_str(ipc__buf_t *b, const char *s)
{
    size_t n = strlen(s);
    size_t need = ipc__json_escape(NULL, s, n);
    int rc = ipc__buf_reserve(b, need);
    if (rc)
        return rc;
    ipc__json_escape(b->p + b->len, s, n);
    b->len += need;
    return 0;
}

static int encode_error(ipc__buf_t *b, const char *id, size_t id_len, const char *code,
                        const char *msg)
{
    size_t mark = b->len;
    int rc = put_head(b, id, id_len);
    if (!rc)
        rc = put_str(b, "\"ok\":false,\"error\":");
    if (!rc)
        rc = put_json_str(b, code);
    if (!rc)
        rc = put_str(b, ",\"message\":");
    if (!rc)
        rc = put_json_str(b, msg);
    if (!rc)
        rc = ipc__buf_put(b, "}\n", 2);
    if (rc)
        b->len = mark;
    return rc;
}

/* Queues an answer that ipc gives itself (a bad line), in order. */
static void push_error(struct ipc_conn *c, const char *id, size_t id_len, const char *code,
                       const char *msg)
{
    ipc__buf_t t = {0};
    struct ipc_req *r = calloc(1, sizeof *r);
    if (!r || encode_error(&t, id, id_len, code, msg)) {
        free(r);
        ipc__buf_free(&t);
        conn_close(c);
        return;
    }
    r->block_size = sizeof *r + t.cap;
    r->answer = t.p;
    r->answer_len = t.len;
    r->answer_owned = true;
    r->answered = true;
    fifo_push(c, r);
    if (c->head == r)
        conn_pop(c);
}

/* Starts answering r. Returns false when the answer is to be dropped (the
 * connection is gone; r is freed or left for the close callback). */
static bool answer_begin(struct ipc_req *r, struct answer *a)
{
    struct ipc_conn *c = r->conn;
    if (c->state == CONN_CLOSED) {
        req_free(r);
        return false;
    }
    if (c->state == CONN_CLOSING) {
        r->answered = true; /* on_conn_closed frees it */
        return false;
    }
    memset(a, 0, sizeof *a);
    a->b = r == c->head ? &c->obuf : &a->tmp;
    a->mark = a->b->len;
    return true;
}

static void answer_end(struct ipc_req *r, struct answer *a, int rc)
{
    struct ipc_conn *c = r->conn;
    r->answered = true;
    if (rc) {
        /* Without this answer the order cannot be kept: give up on the
         * connection (only on out of memory). */
        a->b->len = a->mark;
        ipc__buf_free(&a->tmp);
        conn_close(c);
        return;
    }
    if (a->b == &a->tmp) {
        r->answer = a->tmp.p;
        r->answer_len = a->tmp.len;
        r->answer_owned = true;
        return;
    }
    conn_pop(c);
}

/* ---- input ---- */

/* Answers an over-long line (its first bytes at `line`, at least
 * max_line of them) and ends the connection's input. Its id is echoed when
 * it can be read within the first max_line bytes: only those, so that the
 * answer does not depend on how much of the rest a read brought. */
static void line_too_long(struct ipc_conn *c, const char *line)
{
    char msg[80];
    size_t eid_len = 0;
    char *eid = ipc__recover_id(line, c->max_line, &eid_len);
    if (c->rejecting) {
        reject_answer(c, eid, eid_len);
        free(eid);
        c->rpos = c->rscan = c->rlen;
        return;
    }
    snprintf(msg, sizeof msg, "line longer than %zu bytes", c->max_line);
    push_error(c, eid, eid_len, IPC_ERR_BAD_REQUEST, msg);
    free(eid);
    /* Keep reading (and discarding) until the answer is out, so that the
     * peer's unsent rest does not turn our close into a reset. */
    c->stop_lines = true;
    c->close_after_flush = true;
    c->rpos = c->rscan = c->rlen;
}

/* Whether a line of n bytes, its '\n' not counted, is over the limit. The
 * limit counts the line without its ending: a '\r' before the '\n' is
 * stripped (handle_line) and counts no more than the '\n' does, so
 * max_line + 1 bytes pass when the last is a '\r'. That holds for an
 * unfinished line too, whose '\n' may come with the next read; any other
 * byte after that '\r' makes it max_line + 2, too long. So the read buffer
 * holds at most max_line + 1 bytes of an unfinished line (on_alloc). */
static bool line_over_limit(const struct ipc_conn *c, const char *line, size_t n)
{
    return n > c->max_line && !(n == c->max_line + 1 && line[n - 1] == '\r');
}

/* Every line is answered, an empty one ("\n", "\r\n") too: a client that
 * waits for the answer to each line it sent must get one, and a line that
 * holds no request is a bad line like a line of blanks (socket-protocol.md:
 * "any other bad line is answered"). */
#define EMPTY_LINE_MSG "empty line: a request is one JSON object on one line"

static void handle_line(struct ipc_conn *c, char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    line[len] = '\0'; /* the '\n', the '\r' or the spare byte after the data */

    struct ipc_req *r;
    char *eid;
    size_t eid_len;
    const char *code;
    char msg[256];
    if (len == 0) {
        if (c->rejecting)
            reject_answer(c, NULL, 0);
        else
            push_error(c, NULL, 0, IPC_ERR_BAD_REQUEST, EMPTY_LINE_MSG);
        return;
    }
    if (ipc__parse(line, len, true, &r, &eid, &eid_len, &code, msg, sizeof msg)) {
        if (c->rejecting)
            reject_answer(c, eid, eid_len);
        else
            push_error(c, eid, eid_len, code, msg);
        free(eid);
        return;
    }
    if (c->rejecting) { /* refused whatever it asks, with its id */
        reject_answer(c, r->id_json, r->id_len);
        free(r);
        return;
    }
    const bool no_room = req_big_answer(r) && !big_answer_room(c->srv);
    if (no_room || (req_waits_for_earlier(r) && c->n_fifo > 0)) { /* gate_closed */
        c->gated = r; /* conn_process takes it once the gate opens */
        if (req_big_answer(r))
            c->srv->n_gated++;
        if (no_room) {
            c->srv->ctr.gated++;
            stall_watch(c->srv);
        }
        return;
    }
    fifo_push(c, r);
    c->srv->cb(r, c->srv->user);
}

/* Parses complete lines while the connection may take more requests. */
static void conn_process(struct ipc_conn *c)
{
    c->backlog = false;
    if (c->srv->closing)
        return; /* closing: no request is taken any more (the rest is dropped) */
    while (c->state == CONN_OPEN && !c->stop_lines && !c->streaming &&
           (c->gated != NULL || c->rpos < c->rlen)) {
        if (conn_saturated(c)) {
            c->backlog = true;
            break;
        }
        if (c->gated != NULL) { /* the gate is open now (not saturated) */
            struct ipc_req *r = c->gated;
            c->gated = NULL;
            if (req_big_answer(r))
                c->srv->n_gated--;
            fifo_push(c, r);
            c->srv->cb(r, c->srv->user);
            continue;
        }
        char *base = c->rbuf;
        char *nl = memchr(base + c->rscan, '\n', c->rlen - c->rscan);
        char *line = base + c->rpos;
        size_t len;
        if (!nl) {
            c->rscan = c->rlen;
            if (line_over_limit(c, line, c->rlen - c->rpos)) {
                line_too_long(c, line);
                break;
            }
            if (!c->eof)
                break;
            /* The last line of a half-closed connection may lack its '\n';
             * on_alloc always leaves a spare byte after the data for '\0'. */
            len = c->rlen - c->rpos;
            c->rpos = c->rscan = c->rlen;
        } else {
            len = (size_t)(nl - line);
            if (line_over_limit(c, line, len)) {
                line_too_long(c, line);
                break;
            }
            c->rpos = c->rscan = (size_t)(nl - base) + 1;
        }
        handle_line(c, line, len);
    }
}

/* A line refused because the read buffers of all connections hold
 * READ_BUDGET: answered like an over-long one (the connection closes after
 * the answer, with the line's id when its bytes so far - more than
 * READ_KEEP_MAX of them - show it), its bytes so far dropped. */
static void line_over_budget(struct ipc_conn *c)
{
    char msg[160];
    size_t eid_len = 0;
    char *eid = ipc__recover_id(c->rbuf + c->rpos, c->rlen - c->rpos, &eid_len);

    snprintf(msg, sizeof msg,
             "line refused: unfinished lines of all connections hold the daemon's input budget "
             "(%zu KiB); send it again later",
             c->srv->read_budget >> 10);
    push_error(c, eid, eid_len, IPC_ERR_BAD_REQUEST, msg);
    free(eid);
    c->stop_lines = true;
    c->close_after_flush = true;
    c->rpos = c->rscan = c->rlen = 0;
    mark_dirty(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ipc_conn *c = h->data;
    if (c->streaming) {
        *buf = uv_buf_init(c->srv->discard, sizeof c->srv->discard);
        return;
    }
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = c->rscan = 0;
        if (c->rcap > READ_KEEP_MAX)
            conn_rbuf_release(c);
    }
    if (c->rcap - c->rlen < READ_MIN_FREE + 1 && c->rpos > 0) {
        /* Moves only the unfinished line, which is at most max_line + 1
         * (line_over_limit). */
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rscan -= c->rpos;
        c->rpos = 0;
    }
    if (c->rcap - c->rlen < READ_MIN_FREE + 1) {
        /* Unparsed data never exceeds max_line + 1 here (a longer line
         * ended parsing; the one more is a '\r' whose '\n' has not come),
         * so this bound always leaves room for one read. */
        size_t limit = c->max_line + 1 + READ_MIN_FREE + 1;
        size_t ncap = c->rcap ? c->rcap * 2 : READ_INITIAL;
        if (ncap < c->rlen + READ_MIN_FREE + 1)
            ncap = c->rlen + READ_MIN_FREE + 1;
        if (ncap > limit)
            ncap = limit;
        if (ncap > READ_KEEP_MAX && c->rcap > 0 &&
            c->srv->rbuf_total - c->rcap + ncap > c->srv->read_budget) {
            /* Drops the unfinished line: the buffer is free for the rest,
             * which is read and discarded (stop_lines). */
            line_over_budget(c);
            *buf = uv_buf_init(c->rbuf, (unsigned)(c->rcap - 1));
            return;
        }
        char *np = ncap > c->rcap ? realloc(c->rbuf, ncap) : NULL;
        if (!np) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        c->srv->rbuf_total += ncap - c->rcap;
        c->rbuf = np;
        c->rcap = ncap;
    }
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen - 1));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct ipc_conn *c = st->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && !c->streaming) {
            /* Half-closed: answer what was asked, then close. */
            c->eof = true;
            c->reading = false; /* libuv stopped reading */
            conn_kick(c);
            return;
        }
        conn_close(c);
        return;
    }
    if (c->stop_lines || c->streaming)
        return; /* discarding */
    c->rlen += (size_t)nread;
    c->srv->ctr.bytes_read += (unsigned long long)nread;
    conn_kick(c);
}

static void conn_update_reading(struct ipc_conn *c)
{
    ipc_server_t *s = c->srv;
    bool want;
    if (c->eof || s->closing)
        want = false;
    else if (c->rejecting || c->streaming || c->stop_lines)
        want = true; /* discard input, notice the peer leaving */
    else
        want = !c->backlog && !conn_saturated(c);

    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
        if (c->paused) {
            c->paused = false;
            s->ctr.read_resumes++;
        }
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
        if (!c->eof && !c->rejecting) {
            c->paused = true;
            s->ctr.read_pauses++;
        }
    }
}

static void conn_maybe_finish(struct ipc_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->rejecting && !c->reject_answered && c->eof && c->rpos == c->rlen) {
        reject_answer(c, NULL, 0); /* half-closed without a request */
        conn_flush(c);
        if (c->state != CONN_OPEN)
            return;
    }
    bool done_reading = c->close_after_flush ||
                        (c->eof && (c->stop_lines || (c->rpos == c->rlen && c->gated == NULL)));
    if (!done_reading || c->head || c->obuf.len || c->held.len || c->writing)
        return;
    conn_close(c);
}

/* Brings a connection up to date: parse what can be parsed, write what is
 * ready, pause or resume reading, close when finished. */
static void conn_kick(struct ipc_conn *c)
{
    if (c->state != CONN_OPEN || c->in_kick)
        return;
    c->in_kick = true;
    dirty_unlink(c);
    conn_process(c);
    conn_flush(c);
    /* The flush may have made room (output handed to libuv); parse on
     * while it does. Each round parses at least one line. */
    while (c->state == CONN_OPEN && c->backlog && !conn_saturated(c)) {
        conn_process(c);
        conn_flush(c);
    }
    c->in_kick = false;
    if (c->state != CONN_OPEN)
        return;
    if (c->streaming && c->rbuf != NULL)
        conn_rbuf_release(c);
    /* A buffer grown for a long line goes back once the line is parsed,
     * not at the next read: an idle connection kept it counted in the read
     * budget, and enough of them refused every other long line. */
    if (c->rpos == c->rlen && c->rcap > READ_KEEP_MAX)
        conn_rbuf_release(c);
    conn_update_reading(c);
    conn_maybe_finish(c);
}

static void on_idle(uv_idle_t *h)
{
    ipc_server_t *s = h->data;
    struct ipc_conn *c;
    while ((c = s->dirty) != NULL) {
        dirty_unlink(c);
        conn_kick(c);
    }
    uv_idle_stop(h);
}

/* While a large answer waits for room, the answers that fill the budget
 * may be held by clients that read nothing (pipelined `list`s, never
 * read): each connection can pass its share by one large answer, and
 * enough of them would make every other client's `list` and `stats` wait
 * for as long as they stay. A connection whose write has not been taken for
 * stall_ms then is closed: its answers go, and the waiting ones get room. */
static void on_stall_timer(uv_timer_t *t)
{
    ipc_server_t *s = t->data;
    uint64_t now = uv_now(s->loop);

    if (s->n_gated == 0 || big_answer_room(s)) {
        uv_timer_stop(t);
        return;
    }
    /* conn_close keeps c in the list until its close callback. */
    for (struct ipc_conn *c = s->conns; c != NULL; c = c->next) {
        if (c->state == CONN_OPEN && c->writing && now - c->write_at >= s->stall_ms) {
            s->ctr.stalled++;
            conn_close(c);
        }
    }
}

static void stall_watch(ipc_server_t *s)
{
    uint64_t period = s->stall_ms / 4 > 0 ? s->stall_ms / 4 : 1;

    if (!s->closing && !uv_is_active((uv_handle_t *)&s->stall_timer))
        (void)uv_timer_start(&s->stall_timer, on_stall_timer, period, period);
}

/* ---- accepting ---- */

static void on_reject_timer(uv_timer_t *t);

static void conn_reject(struct ipc_conn *c, const char *code, const char *msg)
{
    ipc_server_t *s = c->srv;
    s->ctr.rejected++;
    if (s->n_rejecting >= MAX_REJECTING) {
        conn_close(c); /* a flood: no explanations */
        return;
    }
    c->rejecting = true;
    s->n_rejecting++;
    /* Told in answer to its first request: a peer that writes first and
     * reads then would find the connection closed under its write (EPIPE,
     * or SIGPIPE) if the error were written and the connection closed at
     * once. */
    c->reject_code = code;
    snprintf(c->reject_msg, sizeof c->reject_msg, "%s", msg);
    if (c->max_line > REJECT_LINE_MAX)
        c->max_line = REJECT_LINE_MAX;
    c->reject_deadline = uv_now(s->loop) + REJECT_WAIT_MS;
    if (!uv_is_active((uv_handle_t *)&s->reject_timer))
        (void)uv_timer_start(&s->reject_timer, on_reject_timer, REJECT_WAIT_MS / 4,
                             REJECT_WAIT_MS / 4); /* cannot fail with a callback */
    conn_kick(c);
}

/* The refusal, once: with the first request's id (NULL: none); then the
 * connection closes when it is written. */
static void reject_answer(struct ipc_conn *c, const char *id, size_t id_len)
{
    if (c->reject_answered)
        return;
    c->reject_answered = true;
    c->stop_lines = true;
    c->close_after_flush = true;
    push_error(c, id, id_len, c->reject_code, c->reject_msg);
}

/* Tells refused connections that sent no request in time; stops when none
 * waits. */
static void on_reject_timer(uv_timer_t *t)
{
    ipc_server_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    bool waiting = false;
    struct ipc_conn *c, *next;

    for (c = s->conns; c; c = next) {
        next = c->next;
        if (c->state != CONN_OPEN || !c->rejecting || c->reject_answered)
            continue;
        if (now >= c->reject_deadline) {
            reject_answer(c, NULL, 0);
            mark_dirty(c);
        } else {
            waiting = true;
        }
    }
    if (!waiting)
        uv_timer_stop(t);
}

static bool uid_allowed(const ipc_server_t *s, uid_t uid)
{
    if (!s->check_uids)
        return true;
    for (size_t i = 0; i < s->n_uids; i++)
        if (s->uids[i] == uid)
            return true;
    return false;
}

static void on_connection(uv_stream_t *ls, int status)
{
    ipc_server_t *s = ls->data;
    if (status < 0 || s->closing)
        return;
    /* Out of memory here leaves the connection in libuv's hands, which
     * stops accepting until the next uv_accept; nothing better is possible
     * without memory. */
    struct ipc_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->wreq.data = c;
    c->srv = s;
    c->refs = 1;
    c->state = CONN_OPEN;
    c->uid = (uid_t)-1;
    c->max_line = s->max_line;
    c->max_pending = s->max_pending;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->handles++;
    if (uv_accept(ls, (uv_stream_t *)&c->pipe) != 0) {
        conn_close(c);
        return;
    }

    uv_os_fd_t fd;
    struct ucred cr;
    socklen_t crlen = sizeof cr;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0 && crlen == sizeof cr)
        c->uid = cr.uid;

    if (!uid_allowed(s, c->uid)) {
        char msg[64];
        snprintf(msg, sizeof msg, "uid %ld not allowed", c->uid == (uid_t)-1 ? -1L : (long)c->uid);
        conn_reject(c, IPC_ERR_FORBIDDEN, msg);
        return;
    }
    if (s->n_conns >= s->max_connections) {
        conn_reject(c, IPC_ERR_QUEUE_FULL, "too many connections");
        return;
    }
    c->counted = true;
    s->n_conns++;
    conn_update_reading(c);
}

/* ---- server ---- */

int ipc_server_new(uv_loop_t *loop, const ipc_server_options_t *opt, ipc_request_cb cb, void *user,
                   ipc_server_t **out)
{
    ipc_server_options_t o;
    if (!out)
        return IPC_EINVAL;
    *out = NULL;
    if (!loop || !cb)
        return IPC_EINVAL;
    if (opt)
        o = *opt;
    else
        memset(&o, 0, sizeof o);
    if ((o.socket_mode & ~0777u) || (!o.allowed_uids && o.n_allowed_uids > 0) ||
        o.max_line > SIZE_MAX / 4)
        return IPC_EINVAL;

    ipc_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return UV_ENOMEM;
    if (o.allowed_uids) {
        s->check_uids = true;
        s->n_uids = o.n_allowed_uids;
        if (s->n_uids > 0) {
            s->uids = malloc(s->n_uids * sizeof *s->uids);
            if (!s->uids) {
                free(s);
                return UV_ENOMEM;
            }
            memcpy(s->uids, o.allowed_uids, s->n_uids * sizeof *s->uids);
        }
    }
    s->loop = loop;
    s->cb = cb;
    s->user = user;
    s->max_line = o.max_line ? o.max_line : IPC_MAX_LINE_DEFAULT;
    s->read_budget = o.read_budget ? o.read_budget : READ_BUDGET;
    s->max_connections = o.max_connections ? o.max_connections : 1024;
    s->max_pending = o.max_pending ? o.max_pending : 4096;
    s->socket_mode = o.socket_mode ? o.socket_mode : 0660;
    uv_pipe_init(loop, &s->listener, 0);
    s->listener.data = s;
    uv_idle_init(loop, &s->idle);
    s->idle.data = s;
    uv_timer_init(loop, &s->reject_timer);
    s->reject_timer.data = s;
    uv_timer_init(loop, &s->close_timer);
    s->close_timer.data = s;
    uv_timer_init(loop, &s->stall_timer);
    s->stall_timer.data = s;
    s->stall_ms = o.stall_ms ? o.stall_ms : STALL_MS_DEFAULT;
    s->lock_fd = -1;
    s->handles = 5;
    *out = s;
    return 0;
}

/* Removes a socket file nobody accepts on; a live one is UV_EADDRINUSE.
 * Only with the path's lock held (lock_take): a socket bound by a server
 * that has not called listen() yet refuses connections too. */
static int clear_stale(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return UV_ENOTSOCK; /* never remove what is not a socket */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* Non-blocking: a live listener with a full backlog gives EAGAIN
     * instead of blocking us. */
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    int err = rc == 0 ? 0 : errno;
    close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
        return UV_EADDRINUSE;
    if (err != ECONNREFUSED)
        return -err;
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/*
 * Makes the socket path ours: an exclusive flock on its lock file
 * (s->lock_path, created 0600), taken before anything is done to the path
 * and held as long as the listener. Only its holder removes, binds or
 * unlinks the socket file, so a server never takes the socket of another
 * that is between its bind() and listen() (it refuses connections like a
 * stale one) for stale, and two servers never both replace a stale one. A
 * held lock is UV_EADDRINUSE.
 *
 * The holder unlinks the lock file when it stops, before it releases the
 * lock (lock_release), so that a clean stop leaves nothing behind. A file
 * opened before that unlink can be locked after it, and that lock guards
 * a file no path names while a third process creates and locks a new one:
 * so once locked, the path must still name the file we hold (lstat against
 * fstat), else we open the path again.
 */
static int lock_take(ipc_server_t *s)
{
    for (int i = 0; i < LOCK_TRIES; i++) {
        /* umask as for the socket (ipc_server_listen): exactly 0600. */
        mode_t old = umask(0177);
        int fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        int err = errno;
        umask(old);
        if (fd < 0)
            return -err;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            err = errno;
            close(fd);
            return err == EWOULDBLOCK ? UV_EADDRINUSE : -err;
        }
        struct stat held, named;
        if (fstat(fd, &held) != 0) {
            err = errno;
            close(fd);
            return -err;
        }
        if (lstat(s->lock_path, &named) == 0) {
            if (named.st_dev == held.st_dev && named.st_ino == held.st_ino) {
                s->lock_fd = fd;
                return 0;
            }
        } else if (errno != ENOENT) {
            err = errno;
            close(fd);
            return -err;
        }
        close(fd); /* its holder unlinked (or replaced) it: try the one there now */
    }
    return UV_EADDRINUSE;
}

/* Gives the path up: unlinks the lock file (only ours: see lock_take), then
 * releases the lock. The socket file must be unlinked before. */
static void lock_release(ipc_server_t *s)
{
    if (s->lock_fd < 0)
        return;
    struct stat held, named;
    if (fstat(s->lock_fd, &held) == 0 && lstat(s->lock_path, &named) == 0 &&
        named.st_dev == held.st_dev && named.st_ino == held.st_ino)
        unlink(s->lock_path);
    close(s->lock_fd);
    s->lock_fd = -1;
}

static void listener_close(ipc_server_t *s)
{
    if (s->listener_closed)
        return;
    s->listener_closed = true;
    s->listening = false;
    /* Unlink before closing the fd, so we never remove a socket someone
     * else bound after our close; and only our own file: when ours was
     * removed and another daemon bound the path since, the file is its.
     * The lock goes last: until then, nobody else binds the path. */
    if (s->path) {
        struct stat st;
        if (lstat(s->path, &st) == 0 && st.st_dev == s->path_dev && st.st_ino == s->path_ino)
            unlink(s->path);
    }
    lock_release(s);
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
}

/* Opens the listener on a listening fd; closes fd on failure. */
static int listener_open(ipc_server_t *s, int fd)
{
    int rc = uv_pipe_open(&s->listener, fd);
    if (rc) {
        close(fd);
        return rc;
    }
    rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, on_connection);
    if (rc) {
        listener_close(s); /* the handle owns fd now */
        return rc;
    }
    s->listening = true;
    return 0;
}

int ipc_server_listen(ipc_server_t *s, const char *path)
{
    struct sockaddr_un sa;
    int fd = -1, rc;
    char *copy = NULL;

    if (!s || !path || !*path)
        return IPC_EINVAL;
    if (s->closing || s->listener_closed)
        return IPC_ECLOSED;
    if (s->listening)
        return IPC_EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path)
        return UV_ENAMETOOLONG;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n + 1);
    /* Fits: n < sizeof sa.sun_path (and a name of at most 107 + 5 bytes
     * is within NAME_MAX). */
    memcpy(s->lock_path, path, n);
    memcpy(s->lock_path + n, LOCK_SUFFIX, sizeof LOCK_SUFFIX);
    copy = strdup(path);
    if (!copy)
        return UV_ENOMEM;

    /* The path is ours from here (lock_take), so what clear_stale finds
     * refusing connections is stale: no server is between bind and listen. */
    if ((rc = lock_take(s)) != 0 || (rc = clear_stale(path, &sa)) != 0)
        goto fail;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    /* Bind under a restrictive umask so that the file never exists with a
     * wider mode than asked; chmod then sets the asked mode. The umask is
     * process-wide: call this before starting threads that create files. */
    mode_t old = umask(0177);
    rc = bind(fd, (const struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    umask(old);
    if (rc != 0) {
        rc = -err;
        goto fail;
    }
    struct stat st;
    if (chmod(path, (mode_t)s->socket_mode) != 0 || lstat(path, &st) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        rc = -errno;
        unlink(path);
        goto fail;
    }
    s->path_dev = st.st_dev;
    s->path_ino = st.st_ino;
    s->path = copy;
    /* A failed uv_listen closes the listener: listener_close unlinks the
     * socket file, then releases the lock. A failed uv_pipe_open leaves
     * both to us, in that order. */
    rc = listener_open(s, fd);
    if (rc && !s->listener_closed) {
        unlink(path);
        free(s->path);
        s->path = NULL;
        lock_release(s);
    }
    return rc;

fail:
    if (fd >= 0)
        close(fd);
    lock_release(s);
    free(copy);
    return rc;
}

int ipc_server_adopt_fd(ipc_server_t *s, int fd)
{
    int v = 0;
    socklen_t vl = sizeof v;
    if (!s || fd < 0 || s->listening || s->closing || s->listener_closed) {
        if (fd >= 0)
            close(fd);
        return !s || fd < 0 || s->listening ? IPC_EINVAL : IPC_ECLOSED;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) != 0 || !v) {
        close(fd);
        return IPC_EINVAL;
    }
    return listener_open(s, fd);
}

void ipc_server_stop_accepting(ipc_server_t *s)
{
    if (s)
        listener_close(s);
}

unsigned ipc_server_connections(const ipc_server_t *s)
{
    return s ? s->n_conns : 0;
}

static void on_close_timer(uv_timer_t *t)
{
    ipc_server_t *s = t->data;

    /* conn_close keeps c in the list until its close callback. */
    for (struct ipc_conn *c = s->conns; c; c = c->next)
        conn_close(c);
}

void ipc_server_close(ipc_server_t *s)
{
    if (!s || s->closing)
        return;
    s->closing = true;
    listener_close(s);
    /* Each connection stops reading and closes once what it has answered
     * is written (a submit answered in the drain's last commit, say): its
     * client must not be left without the answer to a job that is stored.
     * So does an event stream its holder has released (the daemon's
     * watchers at a stop): the events of the last commits are written
     * before it closes. Refused connections, and streams still held (their
     * holder could send on), go at once. */
    for (struct ipc_conn *c = s->conns; c; c = c->next) {
        if (c->rejecting || (c->streaming && c->stream_refs > 0)) {
            conn_close(c);
        } else {
            c->close_after_flush = true;
            mark_dirty(c);
        }
    }
    if (s->conns != NULL)
        (void)uv_timer_start(&s->close_timer, on_close_timer, CLOSE_FLUSH_MS, 0);
    server_close_handles(s);
}

void ipc__server_counters(const ipc_server_t *s, ipc__counters_t *out)
{
    *out = s->ctr;
    out->unsent = server_unsent(s);
    out->buffered = 0;
    for (const struct ipc_conn *c = s->conns; c; c = c->next)
        out->buffered += c->rcap + conn_out_cap(c);
}

/* ---- answers ---- */

const ipc_request_t *ipc_req_request(const ipc_req_t *r)
{
    return &r->request;
}

uid_t ipc_req_uid(const ipc_req_t *r)
{
    return r->conn ? r->conn->uid : (uid_t)-1;
}

void ipc_req_reply_submit(ipc_req_t *r, uint64_t job_id, bool duplicate)
{
    struct answer a;
    if (!answer_begin(r, &a))
        return;
    /* Written by hand: one per submit, on the loop thread. */
    static const char ok[] = "\"ok\":true,\"job\":\"";
    static const char dup_true[] = "\",\"duplicate\":true}\n";
    static const char dup_false[] = "\",\"duplicate\":false}\n";
    char digits[20];
    size_t nd = 0;
    do {
        digits[sizeof digits - 1 - nd++] = (char)('0' + job_id % 10);
        job_id /= 10;
    } while (job_id > 0);
    const char *tail = duplicate ? dup_true : dup_false;
    size_t tail_len = duplicate ? sizeof dup_true - 1 : sizeof dup_false - 1;
    int rc = put_head(a.b, r->id_json, r->id_len);
    if (!rc)
        rc = ipc__buf_reserve(a.b, sizeof ok - 1 + nd + tail_len);
    if (!rc) {
        char *w = a.b->p + a.b->len;
        memcpy(w, ok, sizeof ok - 1);
        w += sizeof ok - 1;
        memcpy(w, digits + sizeof digits - nd, nd);
        w += nd;
        memcpy(w, tail, tail_len);
        a.b->len += sizeof ok - 1 + nd + tail_len;
    }
    answer_end(r, &a, rc);
}

void ipc_req_reply_ok(ipc_req_t *r, cJSON *fields)
{
    struct answer a;
    char *txt = NULL;
    int rc = 0;
    if (!answer_begin(r, &a)) {
        cJSON_Delete(fields);
        return;
    }
    if (cJSON_IsObject(fields) && fields->child) {
        txt = cJSON_PrintUnformatted(fields);
        if (!txt)
            rc = UV_ENOMEM;
    }
    if (!rc)
        rc = put_head(a.b, r->id_json, r->id_len);
    if (!rc)
        rc = put_str(a.b, "\"ok\":true");
    if (!rc && txt) {
        /* "{a,b}" -> ",a,b" */
        size_t n = strlen(txt);
        txt[0] = ',';
        rc = ipc__buf_put(a.b, txt, n - 1);
    }
    if (!rc)
        rc = ipc__buf_put(a.b, "}\n", 2);
    cJSON_free(txt);
    cJSON_Delete(fields);
    answer_end(r, &a, rc);
}

void ipc_req_reply_error(ipc_req_t *r, const char *code, const char *fmt, ...)
{
    struct answer a;
    char small[256];
    char *msg = small;
    va_list ap;

    if (!answer_begin(r, &a))
        return;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        small[0] = '\0';
    } else if ((size_t)n >= sizeof small) {
        size_t cap = (size_t)n < ERR_MSG_MAX ? (size_t)n + 1 : ERR_MSG_MAX + 1;
        char *big = malloc(cap);
        if (big) {
            va_start(ap, fmt);
            vsnprintf(big, cap, fmt, ap);
            va_end(ap);
            msg = big;
        }
    }
    int rc = encode_error(a.b, r->id_json, r->id_len, code ? code : IPC_ERR_INTERNAL, msg);
    if (msg != small)
        free(msg);
    answer_end(r, &a, rc);
}

/* ---- streams ---- */

ipc_stream_t *ipc_req_reply_stream(ipc_req_t *r, size_t max_buffered)
{
    struct ipc_conn *c = r->conn;
    struct answer a;
    if (!answer_begin(r, &a))
        return NULL;
    int rc = put_head(a.b, r->id_json, r->id_len);
    if (!rc)
        rc = put_str(a.b, "\"ok\":true}\n");
    answer_end(r, &a, rc); /* may free r */
    if (c->state != CONN_OPEN)
        return NULL;
    /* A second watch on the same connection shares the stream; each
     * returned reference is released on its own. */
    if (!c->streaming) {
        c->streaming = true;
        c->srv->n_streams++;
        c->rpos = c->rscan = c->rlen; /* pipelined lines after watch are dropped */
        c->stream.conn = c;
        c->stream.max_buffered = max_buffered;
        c->stream.dropped = 0;
    }
    c->refs++;
    c->stream_refs++;
    mark_dirty(c); /* keeps reading, to notice the peer leaving */
    return &c->stream;
}

/* Appends the gap marker for the events the stream dropped to b; false
 * without memory. */
static bool stream_put_gap(struct ipc_conn *c, ipc__buf_t *b)
{
    char gap[GAP_MAX];
    int n = snprintf(gap, sizeof gap, "{\"event\":\"gap\",\"dropped\":%" PRIu64 "}\n",
                     c->stream.dropped);
    return ipc__buf_put(b, gap, (size_t)n) == 0;
}

/* What a stream may hold unsent: its own bound, or its share of
 * STREAM_BUDGET when that is less. */
static size_t stream_bound(const struct ipc_stream *st)
{
    const ipc_server_t *s = st->conn->srv;
    size_t share = s != NULL && s->n_streams > 0 ? STREAM_BUDGET / s->n_streams : STREAM_BUDGET;

    if (share < STREAM_FLOOR)
        share = STREAM_FLOOR;
    return share < st->max_buffered ? share : st->max_buffered;
}

/* Makes room for `need` more bytes in b, one of c's buffers, within the
 * stream's bound; false when that would take the buffers past it. */
static bool stream_reserve(struct ipc_conn *c, ipc__buf_t *b, size_t need)
{
    size_t bound = stream_bound(&c->stream);
    size_t others = conn_out_cap(c) - b->cap;

    return others < bound && ipc__buf_reserve_max(b, need, bound - others) == 0;
}

int ipc_stream_send(ipc_stream_t *st, const char *json, size_t len)
{
    struct ipc_conn *c = st->conn;
    if (c->state != CONN_OPEN)
        return IPC_ECLOSED;
    /* The bound is on what the connection's buffers take from the
     * allocator, not on their content: doubling buffers (one being
     * written, one filling) held twice the content, and 800 watchers took
     * 53 MiB, not the 32 MiB of STREAM_BUDGET. The buffer written to may
     * grow only into what the other two leave. */
    ipc__buf_t *b = c->head ? &c->held : &c->obuf;
    if (!stream_reserve(c, b, len + 1 + (st->dropped ? GAP_MAX : 0))) {
        st->dropped++;
        return 0;
    }
    size_t mark = b->len;
    int rc = 0;
    if (st->dropped && !stream_put_gap(c, b))
        rc = -1;
    if (!rc)
        rc = ipc__buf_put(b, json, len);
    if (!rc)
        rc = ipc__buf_put(b, "\n", 1);
    if (rc) {
        b->len = mark;
        st->dropped++;
        return 0;
    }
    st->dropped = 0;
    /* Small writes when the stream's bound is small: the buffer handed to
     * a write stays allocated until the reader takes it. */
    size_t flush_at = stream_bound(st) / 4;
    if (!c->writing &&
        c->obuf.len >= (flush_at < STREAM_FLUSH_BYTES ? flush_at : STREAM_FLUSH_BYTES))
        conn_flush(c);
    else
        mark_dirty(c);
    return 0;
}

bool ipc_stream_closed(const ipc_stream_t *st)
{
    return st->conn->state != CONN_OPEN;
}

void ipc_stream_release(ipc_stream_t *st)
{
    if (!st)
        return;
    struct ipc_conn *c = st->conn;
    if (--c->stream_refs == 0 && c->state == CONN_OPEN) {
        /* Nobody will send events any more: finish the connection. */
        c->close_after_flush = true;
        mark_dirty(c);
    }
    conn_unref(c);
}

const char *ipc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case IPC_EINVAL:
        return "invalid argument or option";
    case IPC_ECLOSED:
        return "server closing";
    default:
        break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}
