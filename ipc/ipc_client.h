/*
 * ipc_client.h - a small blocking client of avenpingd's socket protocol,
 * used by avenpingctl and usable by any C program.
 *
 * One client is one connection. Requests are JSON objects, one per line;
 * answers come back in request order. Pipelining: queue several requests
 * with ipc_client_send, then read their answers with ipc_client_recv; the
 * client keeps reading incoming lines into its buffer while it waits to
 * write, so a pipelining caller cannot deadlock against a server that
 * stops reading until its answers are read. The caller bounds how many
 * answers may be outstanding (its window), which bounds that buffer.
 *
 * No libuv, no threads: plain poll(2) on one socket. The process should
 * ignore SIGPIPE, or writes to a daemon that went away kill it (the client
 * sends with MSG_NOSIGNAL, so only its own writes are covered).
 *
 * Errors: 0 or a negative errno (-ECONNREFUSED, -ENOENT, -ETIMEDOUT, ...),
 * IPC_CLIENT_ECLOSED when the daemon closed the connection, -EMSGSIZE for an
 * incoming line longer than IPC_CLIENT_MAX_LINE. ipc_client_strerror()
 * names them.
 */
#ifndef AVP_IPC_CLIENT_H
#define AVP_IPC_CLIENT_H

#include <stddef.h>
#include <cjson/cJSON.h>

/* The daemon closed the connection (the value of ipc.h's IPC_ECLOSED). */
enum { IPC_CLIENT_ECLOSED = -31002 };

/* The longest line accepted from the daemon (its own limit for requests). */
#define IPC_CLIENT_MAX_LINE (4u * 1024u * 1024u + 1024u)

/* The daemon's default socket, as in socket-protocol.md. */
#define IPC_CLIENT_DEFAULT_SOCKET "/run/avenpingd/avenpingd.sock"

typedef struct ipc_client ipc_client_t;

/* Connects to the Unix socket at `path`. On success *out owns the
 * connection (free with ipc_client_close); on failure *out is NULL. */
int ipc_client_connect(const char *path, ipc_client_t **out);

/* Closes the connection and frees the client. Accepts NULL. */
void ipc_client_close(ipc_client_t *c);

/* Queues one request line: `json` (len bytes, one JSON object, no newline;
 * a newline is added). It is written by ipc_client_flush, by
 * ipc_client_recv, or here once 64 KiB are queued. Copies `json`. */
int ipc_client_send(ipc_client_t *c, const char *json, size_t len);

/* Same, for a cJSON object (rendered compact). */
int ipc_client_send_json(ipc_client_t *c, const cJSON *req);

/* Writes everything queued, reading incoming lines into the buffer while
 * the socket is not writable. timeout_ms < 0 waits without limit. On
 * IPC_CLIENT_ECLOSED what was not written is dropped, and the lines already
 * received stay readable with ipc_client_recv. */
int ipc_client_flush(ipc_client_t *c, int timeout_ms);

/*
 * Flushes, then returns the next line from the daemon (an answer or a
 * watch event) without its newline, NUL-terminated: *line stays valid until
 * the next call on this client. timeout_ms < 0 waits without limit;
 * -ETIMEDOUT when nothing complete arrived in time.
 */
int ipc_client_recv(ipc_client_t *c, int timeout_ms, const char **line, size_t *len);

/* Number of complete lines already buffered (readable without waiting). */
size_t ipc_client_buffered(const ipc_client_t *c);

/*
 * One request, one answer: sends `req` and parses the next line into
 * *answer (caller frees with cJSON_Delete). Only when nothing else is
 * outstanding on the connection. -EBADMSG when the answer is not JSON.
 */
int ipc_client_call(ipc_client_t *c, const cJSON *req, int timeout_ms, cJSON **answer);

/* A static description of any code above. */
const char *ipc_client_strerror(int err);

#endif
