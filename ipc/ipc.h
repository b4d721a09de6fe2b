/*
 * ipc.h - the socket server of avenpingd on libuv.
 *
 * Owns the Unix stream socket, NDJSON framing (one JSON object per line),
 * parsing and validation of requests into plain C structs, and the encoding
 * of answers. Knows nothing of LMDB or HTTP: the daemon gets a validated
 * request through a callback and answers it, now or later.
 *
 * Ordering: requests of one connection may be pipelined; answers go out in
 * request order whatever order the daemon answers them in (ipc holds early
 * answers until the ones before them are given).
 *
 * Bounds: line length (default 4 MiB, counted without the line's "\n" or
 * "\r\n": an over-long line is answered BAD_REQUEST and the connection is
 * closed), JSON nesting depth, message body size (2 MB), connections, and
 * unanswered requests per connection (the server stops reading a
 * connection while it has too many in flight, so a fast client cannot grow
 * memory without bound).
 *
 * Errors: int, 0 or a negative errno-style code (libuv's UV_E* values are
 * negative errnos) or IPC_E* below; ipc_strerror() names them.
 * Threads: everything here runs on the loop thread.
 *
 * Input: a trailing '\r' is stripped; an empty line is answered
 * BAD_REQUEST like any other bad line. A JSON null counts as an absent
 * field, but for "id": a null id is echoed as null; unknown top-level
 * fields are ignored. A numeric "id" is echoed exactly as written. A peer that shuts
 * down its sending side still gets every answer (a last line without '\n'
 * counts), then the connection is closed. The process must ignore SIGPIPE:
 * answers may be written to a peer that has gone.
 */
#ifndef AVP_IPC_H
#define AVP_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include <cjson/cJSON.h>

enum {
    IPC_EINVAL = -31001,  /* bad option or argument */
    IPC_ECLOSED = -31002, /* server closing */
};

/* Error codes of the protocol (socket-protocol.md). */
#define IPC_ERR_BAD_REQUEST "BAD_REQUEST"
#define IPC_ERR_VALIDATION "VALIDATION_ERROR"
#define IPC_ERR_NOT_FOUND "NOT_FOUND"
#define IPC_ERR_FORBIDDEN "FORBIDDEN"
#define IPC_ERR_QUEUE_FULL "QUEUE_FULL"
#define IPC_ERR_SHUTTING_DOWN "SHUTTING_DOWN"
#define IPC_ERR_INTERNAL "INTERNAL_ERROR"
/* The message of NOT_FOUND for a job id that names no job. The request
 * layer answers it itself for a string that cannot be one of the daemon's
 * ids ("abc": a job id is a string, opaque to clients); the daemon answers
 * an unknown id of its form (daemon/handlers.c) in the same words: one
 * answer for an id that names no job, whatever its form. */
#define IPC_MSG_NO_SUCH_JOB "no such job"

#define IPC_MAX_LINE_DEFAULT (4u * 1024u * 1024u)
#define IPC_MAX_BODY (2u * 1000u * 1000u) /* serialized `message`, bytes */
#define IPC_MAX_DEPTH 64                  /* JSON nesting of one request */
/* JSON structure of one request line (its ',', ':', '[' and '{' outside
 * strings, about two per value): the tree the parser builds costs ~30
 * times a wide line's bytes, and a 4 MiB line of 2 million elements held
 * 130 MB and the loop for half a second. */
#define IPC_MAX_STRUCTURE 200000
#define IPC_MAX_KEY_LEN 200       /* idempotencyKey, campaign, orderKey */
#define IPC_MAX_ID_LEN 64         /* phoneNumberId, to */
#define IPC_TIME_MAX 4102444800.0 /* notBefore, expiresAt: 2100-01-01 */

typedef enum ipc_op {
    IPC_OP_SEND = 1,
    IPC_OP_TEMPLATE_SEND,
    IPC_OP_GET,
    IPC_OP_LIST,
    IPC_OP_CAMPAIGN,
    IPC_OP_CANCEL,
    IPC_OP_PAUSE,
    IPC_OP_RESUME,
    IPC_OP_RETRY,
    IPC_OP_STATS,
    IPC_OP_WATCH,
    IPC_OP_PING,
} ipc_op_t;

/* Message types; the same numbering as queue_type_t (1 text .. 6 template). */
typedef enum ipc_type {
    IPC_TYPE_TEXT = 1,
    IPC_TYPE_MEDIA = 2,
    IPC_TYPE_LOCATION = 3,
    IPC_TYPE_INTERACTIVE = 4,
    IPC_TYPE_SMART = 5,
    IPC_TYPE_TEMPLATE = 6,
} ipc_type_t;

/* Same numbering as queue_priority_t. */
typedef enum ipc_priority {
    IPC_PRIO_HIGH = 0,
    IPC_PRIO_NORMAL = 1,
    IPC_PRIO_BULK = 2,
} ipc_priority_t;

/* A validated send/template_send. Strings are NUL-terminated, owned by the
 * request, NULL when absent. */
typedef struct ipc_submit {
    ipc_type_t type;
    const char *phone_number_id; /* message.phoneNumberId */
    const char *to;              /* message.to, as given */
    const char *idempotency_key;
    const char *campaign;
    const char *order_key;
    ipc_priority_t priority;
    double not_before; /* 0: absent */
    double expires_at; /* 0: absent */
    int max_attempts;  /* 0: absent; else 1..1000 */
    const char *body;  /* `message` as given (its text, compact): the body to send */
    size_t body_len;
} ipc_submit_t;

/*
 * A validated request. Only the fields of its op are set; the rest are
 * zero/NULL. Strings are owned by the request and live until it is
 * answered.
 */
typedef struct ipc_request {
    ipc_op_t op;
    ipc_submit_t submit;         /* send, template_send */
    const char *job;             /* get, cancel, retry: job id, 1..20 digits, <= UINT64_MAX */
    const char *idempotency_key; /* get */
    const char *campaign;        /* list, campaign, cancel, pause, resume, retry, watch */
    const char *state;           /* list, retry: a state name (validated) */
    const char *after;           /* list: cursor, a job id as `job` */
    int limit;                   /* list: 1..1000, default 100 */
    const char *phone_number_id; /* pause, resume */
    bool all;                    /* pause, resume */
} ipc_request_t;

typedef struct ipc_server ipc_server_t;
typedef struct ipc_req ipc_req_t;

/*
 * Called on the loop thread for every valid request, in arrival order. The
 * daemon must answer each request exactly once with one of the
 * ipc_req_reply_* functions (now or later); the answer frees it. If the
 * connection is gone by then, the answer is dropped silently. Bad lines never
 * reach the callback: ipc answers them itself.
 */
typedef void (*ipc_request_cb)(ipc_req_t *req, void *user);

typedef struct ipc_server_options {
    size_t max_line;           /* 0: IPC_MAX_LINE_DEFAULT */
    unsigned max_connections;  /* 0: 1024; more are accepted and closed at once */
    unsigned max_pending;      /* unanswered requests per connection before reading
                                  pauses; 0: 4096 */
    unsigned socket_mode;      /* permissions of the socket file; 0: 0660 */
    const uid_t *allowed_uids; /* SO_PEERCRED check; NULL: any uid. Root is not
                                  special: refused unless listed. A refused peer
                                  gets one FORBIDDEN line, then EOF. */
    size_t n_allowed_uids;
    size_t read_budget; /* read buffers of all connections together (bytes); a line that
                           would grow them past it is refused with BAD_REQUEST and its
                           connection closed; 0: 256 MiB (tests set it small) */
    uint64_t stall_ms;  /* while a `list`/`stats` answer waits for room in the answer
                           budget, a connection whose client has taken none of a write for
                           this long is closed (its answers dropped); 0: 10 s */
} ipc_server_options_t;

/* Creates a server on `loop`; nothing listens yet. `opt` may be NULL; it is
 * copied (allowed_uids too). `cb`/`user` receive requests. */
int ipc_server_new(uv_loop_t *loop, const ipc_server_options_t *opt, ipc_request_cb cb, void *user,
                   ipc_server_t **out);

/*
 * Binds and listens on `path` (shorter than sun_path: 107 bytes; else
 * UV_ENAMETOOLONG), which the server owns from then until its listener
 * closes (ipc_server_stop_accepting, ipc_server_close).
 *
 * Ownership is an exclusive flock on the lock file "<path>.lock" (created
 * 0600 beside the socket, so its directory must be writable), taken before
 * anything is done to `path` and held until the listener closes. While
 * another process holds it - a server listening there, or one between its
 * bind and its listen - this gives UV_EADDRINUSE and leaves `path` alone.
 * Holding it, a stale socket file (nobody accepting on it) is replaced; a
 * live one gives UV_EADDRINUSE (a listener that takes no lock, such as a
 * systemd socket unit's), a file that is not a socket UV_ENOTSOCK (it is
 * never removed). On any failure nothing is left of ours.
 *
 * When the listener closes, the socket file is unlinked (if it is still the
 * one we bound), then the lock file (if still ours), then the lock is
 * released: a clean stop leaves neither file; after a crash both stay,
 * unlocked, and the next server takes them over. Other processes must not
 * remove the lock file of a running server: a new one would then be
 * created and locked beside it.
 *
 * Sets the socket's mode (bound under umask 0177 first, so it is never
 * wider; the lock file is created under the same umask). umask is
 * process-wide: listen before starting threads that create files. The
 * lock file descriptor is O_CLOEXEC; a forked child would share the lock.
 */
int ipc_server_listen(ipc_server_t *s, const char *path);

/* Listens on an already bound and listening socket `fd` (socket
 * activation). The server owns fd from the call on: it is closed on
 * failure too (IPC_EINVAL if fd is not a listening socket). The socket
 * file, if any, is not the server's and is never unlinked; no lock file
 * is taken (the service manager owns the path). */
int ipc_server_adopt_fd(ipc_server_t *s, int fd);

/* Stops accepting new connections (closes the listener, unlinks the
 * socket file it created and gives up the path: see ipc_server_listen);
 * open connections keep working. */
void ipc_server_stop_accepting(ipc_server_t *s);

/* Number of open connections. */
unsigned ipc_server_connections(const ipc_server_t *s);

/*
 * Closes the listener at once, and each connection once the answers it has
 * are written (within 2 s; an event stream whose every reference is
 * released likewise, once its events are written; a stream still held and
 * refused connections at once):
 * no request is read or taken any more. Frees the server once all its
 * handles are closed (the loop must keep running until then). Requests
 * not yet answered stay valid: an answer that comes while its connection
 * is still open is written, and answering is still required (later ones
 * only free them). Unlinks the socket file it created and gives up the
 * path (ipc_server_listen). Accepts NULL.
 */
void ipc_server_close(ipc_server_t *s);

/* The parsed request. Valid until the request is answered. */
const ipc_request_t *ipc_req_request(const ipc_req_t *r);

/* Peer credentials of the request's connection (SO_PEERCRED). */
uid_t ipc_req_uid(const ipc_req_t *r);

/* Answers a submit: {"id":..,"ok":true,"job":"<job_id>","duplicate":..}. */
void ipc_req_reply_submit(ipc_req_t *r, uint64_t job_id, bool duplicate);

/* Answers {"id":..,"ok":true, <members of fields>}. Takes ownership of
 * `fields` (a cJSON object, or NULL); it must not have "id" or "ok". */
void ipc_req_reply_ok(ipc_req_t *r, cJSON *fields);

/* Answers {"id":..,"ok":false,"error":code,"message":<formatted>}. `code`
 * is one of IPC_ERR_*. The message is JSON-escaped and cut at 1024 bytes. */
void ipc_req_reply_error(ipc_req_t *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Turns the request's connection into an event stream (for `watch`): answers
 * {"id":..,"ok":true} and returns a stream handle; the request is freed. The
 * connection reads no further requests. Events are sent with
 * ipc_stream_send; when more than `max_buffered` bytes are queued unsent
 * (or the stream's share of 32 MiB over all open streams, at least 16 KiB,
 * when that is less),
 * events are dropped and counted, and the next event that fits is preceded
 * by {"event":"gap","dropped":n} (the marker may exceed max_buffered by its
 * own size). Events wait behind answers still owed on the connection.
 * Returns NULL if the connection is gone. A second watch on the same
 * connection returns the same stream; each returned reference is released
 * on its own.
 */
typedef struct ipc_stream ipc_stream_t;
ipc_stream_t *ipc_req_reply_stream(ipc_req_t *r, size_t max_buffered);

/* Sends one event line (a compact JSON object, no newline); copies it.
 * Returns 0 (also when the event was dropped), or IPC_ECLOSED once the
 * peer or the server has gone (then release the stream). */
int ipc_stream_send(ipc_stream_t *st, const char *json, size_t len);

/* True once the stream's connection is closed (the peer left): its events
 * are dropped and the holder should release it. Never fails. */
bool ipc_stream_closed(const ipc_stream_t *st);

/* Releases the daemon's reference to the stream. When the last reference
 * goes while the peer is still there, the connection is closed once its
 * output is written. Accepts NULL. */
void ipc_stream_release(ipc_stream_t *st);

/* Parses and validates one line (without its '\n') into a request, as the
 * server does; for tests and fuzzing. On failure returns IPC_EINVAL and
 * fills code (an IPC_ERR_*) and msg. On success *out is owned by the caller
 * and freed with ipc_request_free. *id_json (if not NULL) receives the
 * request's "id" as compact JSON, or NULL; caller frees. */
int ipc_request_parse(const char *line, size_t len, ipc_request_t **out, char **id_json,
                      const char **code, char *msg, size_t msg_size);
void ipc_request_free(ipc_request_t *req);

const char *ipc_strerror(int err);

#endif
