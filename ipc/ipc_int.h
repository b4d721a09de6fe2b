/*
 * ipc_int.h - private to ipc/: what request.c and ipc.c share, and the
 * test-only counters. Not installed, not for the daemon.
 */
#ifndef AVP_IPC_INT_H
#define AVP_IPC_INT_H

#include "ipc.h"

/* A growable byte buffer. Zero-initialised is empty and valid. */
typedef struct ipc__buf {
    char *p;
    size_t len;
    size_t cap;
} ipc__buf_t;

/* Makes room for `extra` more bytes. 0 or UV_ENOMEM (buffer unchanged). */
int ipc__buf_reserve(ipc__buf_t *b, size_t extra);
/* Like ipc__buf_reserve, but the capacity stays at most max_cap (growth
 * stops there instead of doubling past it): UV_ENOBUFS when len + extra
 * exceeds max_cap. For buffers whose allocation, not only their content,
 * is bounded. */
int ipc__buf_reserve_max(ipc__buf_t *b, size_t extra, size_t max_cap);
/* Appends n bytes. 0 or UV_ENOMEM (buffer unchanged). */
int ipc__buf_put(ipc__buf_t *b, const void *d, size_t n);
/* Frees the storage; the buffer is empty afterwards. */
void ipc__buf_free(ipc__buf_t *b);

/*
 * Writes s[0..n) as a JSON string literal, quotes included, into dst (which
 * must have room for the returned length) or, with dst NULL, only measures.
 * Escapes '"', '\\' and control bytes; other bytes pass through unchanged.
 */
size_t ipc__json_escape(char *dst, const char *s, size_t n);

struct ipc_conn;

/*
 * One request of a connection, and its slot in the connection's answer
 * FIFO. Allocated as one block: this header, then the strings the request
 * points to (and the compact `id` JSON). A bad line gets a block too, with
 * its answer stored inline and `answered` set at once.
 */
struct ipc_req {
    struct ipc_req *next;  /* FIFO order */
    struct ipc_conn *conn; /* NULL for blocks of ipc_request_parse */
    char *answer;          /* encoded answer line waiting for its turn, or NULL */
    size_t answer_len;
    size_t block_size;   /* bytes of this block, for the connection's bound */
    const char *id_json; /* compact JSON of "id" inside the block, or NULL */
    size_t id_len;
    bool answered;     /* the daemon (or ipc itself) answered it */
    bool answer_owned; /* `answer` is a separate allocation */
    ipc_request_t request;
    /* strings follow */
};

/*
 * Parses and validates one line. `line` need not be NUL-terminated unless
 * `nul_terminated` is set, in which case line[len] must be '\0' (the server
 * terminates lines in its read buffer so that no copy is needed).
 *
 * Success: returns 0 and *out is a malloc'ed block (conn NULL, not
 * answered), owned by the caller, freed with free().
 * Failure: returns IPC_EINVAL (bad request; *code is IPC_ERR_BAD_REQUEST or
 * IPC_ERR_VALIDATION) or UV_ENOMEM (*code IPC_ERR_INTERNAL); msg holds the
 * human text; *err_id (malloc'ed, caller frees) is the compact "id" JSON
 * when the line parsed and had a usable id, else NULL.
 */
int ipc__parse(const char *line, size_t len, bool nul_terminated, struct ipc_req **out,
               char **err_id, size_t *err_id_len, const char **code, char *msg, size_t msg_size);

/*
 * The "id" of a line refused before it is parsed - nested deeper than
 * IPC_MAX_DEPTH, more structure than IPC_MAX_STRUCTURE, or longer than the
 * line limit (then line[0..len) is its first max_line bytes) - so that its
 * BAD_REQUEST answer carries it. One linear pass without recursion: the
 * line must open as an object whose first top-level member named "id" (as
 * cJSON picks it, the name compared decoded) is a string, number or null,
 * valid and complete in line[0..len) with a ',' or '}' after it; strings
 * before it must be valid too. Returns its compact JSON as a parsed id is
 * echoed (malloc'ed, *out_len set), or NULL: none found, or no memory.
 */
char *ipc__recover_id(const char *line, size_t len, size_t *out_len);

/* The general path of ipc__parse (cJSON), with the same contract. Every
 * error of ipc__parse comes from here. */
int ipc__parse_slow(const char *line, size_t len, bool nul_terminated, struct ipc_req **out,
                    char **err_id, size_t *err_id_len, const char **code, char *msg,
                    size_t msg_size);

/*
 * The fast path of ipc__parse (fastreq.c): a valid send/template_send of
 * the common shape, scanned in one pass. Returns the block ipc__parse_slow
 * would return for line[0..len) (malloc'ed, caller frees), or NULL when it
 * is not sure (any other op or shape, any invalid line, out of memory):
 * then the line goes to ipc__parse_slow. Never reads outside line[0..len).
 */
struct ipc_req *ipc__parse_fast(const char *line, size_t len);

/* Test-only view of a server's counters. */
typedef struct ipc__counters {
    unsigned long read_pauses;     /* times reading stopped for backpressure */
    unsigned long read_resumes;    /* times it started again */
    unsigned long rejected;        /* connections refused (uid, too many) */
    unsigned long gated;           /* list/stats requests that waited for answer room */
    unsigned long stalled;         /* connections closed for taking no answers meanwhile */
    unsigned long long bytes_read; /* request bytes read, all connections */
    size_t unsent;                 /* answer bytes not yet written, all connections (now) */
    size_t buffered;               /* bytes allocated for the buffers of all connections (now) */
} ipc__counters_t;

void ipc__server_counters(const ipc_server_t *s, ipc__counters_t *out);

#endif
