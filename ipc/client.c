/*
 * client.c - the blocking protocol client of ipc_client.h.
 */
#include "ipc_client.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define WBUF_FLUSH_AT ((size_t)64 << 10)
#define RBUF_CHUNK ((size_t)64 << 10)

struct ipc_client {
    int fd;
    char *w; /* queued output */
    size_t wlen, wcap;
    char *r; /* input; r[roff..rlen) not yet returned */
    size_t roff, rlen, rcap;
    size_t lines;   /* complete lines in r[roff..rlen) */
    size_t scanned; /* bytes of r[roff..rlen) already counted for '\n' */
    bool eof;
};

const char *ipc_client_strerror(int err)
{
    if (err == IPC_CLIENT_ECLOSED)
        return "the daemon closed the connection";
    if (err == -EMSGSIZE)
        return "line from the daemon too long";
    if (err == -EBADMSG)
        return "answer is not JSON";
    if (err < 0)
        return strerror(-err);
    return "success";
}

int ipc_client_connect(const char *path, ipc_client_t **out)
{
    struct sockaddr_un sa;
    ipc_client_t *c;
    int rc;

    *out = NULL;
    if (path == NULL || strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        rc = -errno;
        free(c);
        return rc;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        rc = -errno;
        ipc_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void ipc_client_close(ipc_client_t *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->w);
    free(c->r);
    free(c);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Milliseconds left before `deadline` (< 0: none) for poll. */
static int left_ms(double deadline)
{
    double l;
    if (deadline < 0)
        return -1;
    l = deadline - mono_ms();
    return l <= 0 ? 0 : (int)(l + 0.999);
}

/* Counts newly arrived line ends. */
static void count_lines(ipc_client_t *c)
{
    const char *p = c->r + c->roff + c->scanned, *end = c->r + c->rlen;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            p = end;
            break;
        }
        c->lines++;
        p = nl + 1;
    }
    c->scanned = (size_t)(p - (c->r + c->roff));
}

/* One read(2) into the buffer. Returns 0, IPC_CLIENT_ECLOSED at EOF, -EAGAIN, or
 * a negative errno. An incomplete line over the limit is -EMSGSIZE. */
static int read_some(ipc_client_t *c)
{
    ssize_t n;

    if (c->eof)
        return IPC_CLIENT_ECLOSED;
    if (c->roff > 0 && (c->roff == c->rlen || c->rcap - c->rlen < RBUF_CHUNK)) {
        memmove(c->r, c->r + c->roff, c->rlen - c->roff);
        c->rlen -= c->roff;
        c->roff = 0;
    }
    if (c->rcap - c->rlen < RBUF_CHUNK) {
        size_t cap = c->rcap ? c->rcap * 2 : 2 * RBUF_CHUNK;
        char *nr = realloc(c->r, cap);
        if (nr == NULL)
            return -ENOMEM;
        c->r = nr;
        c->rcap = cap;
    }
    n = recv(c->fd, c->r + c->rlen, c->rcap - c->rlen - 1, MSG_DONTWAIT);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (n == 0) {
        c->eof = true;
        return IPC_CLIENT_ECLOSED;
    }
    c->rlen += (size_t)n;
    count_lines(c);
    if (c->lines == 0 && c->rlen - c->roff > IPC_CLIENT_MAX_LINE)
        return -EMSGSIZE;
    return 0;
}

int ipc_client_flush(ipc_client_t *c, int timeout_ms)
{
    double deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    size_t off = 0;
    int rc = 0;

    while (off < c->wlen) {
        struct pollfd p = {c->fd, POLLIN | POLLOUT, 0};
        int pr = poll(&p, 1, left_ms(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            rc = -errno;
            break;
        }
        if (pr == 0) {
            rc = -ETIMEDOUT;
            break;
        }
        if (p.revents & POLLIN) {
            /* Keep the daemon's answers flowing while we cannot write. */
            rc = read_some(c);
            if (rc == -EAGAIN)
                rc = 0;
            if (rc != 0)
                break;
        }
        if (p.revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t n = send(c->fd, c->w + off, c->wlen - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n < 0) {
                rc = errno == EPIPE || errno == ECONNRESET ? IPC_CLIENT_ECLOSED : -errno;
                break;
            }
            off += (size_t)n;
        }
    }
    if (rc == IPC_CLIENT_ECLOSED) {
        /* The daemon is gone for writing: what is left unsent never goes,
         * and the answers it wrote before it closed must still be
         * readable (a refused line is answered, then the connection
         * closes): the next ipc_client_recv has nothing to flush. */
        c->wlen = 0;
        return rc;
    }
    if (off > 0) {
        memmove(c->w, c->w + off, c->wlen - off);
        c->wlen -= off;
    }
    return rc;
}

int ipc_client_send(ipc_client_t *c, const char *json, size_t len)
{
    if (len > SIZE_MAX / 2 - c->wlen)
        return -ENOMEM;
    if (c->wlen + len + 1 > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 4096;
        char *nw;
        while (cap < c->wlen + len + 1)
            cap *= 2;
        nw = realloc(c->w, cap);
        if (nw == NULL)
            return -ENOMEM;
        c->w = nw;
        c->wcap = cap;
    }
    memcpy(c->w + c->wlen, json, len);
    c->wlen += len;
    c->w[c->wlen++] = '\n';
    if (c->wlen >= WBUF_FLUSH_AT)
        return ipc_client_flush(c, -1);
    return 0;
}

int ipc_client_send_json(ipc_client_t *c, const cJSON *req)
{
    char *s = cJSON_PrintUnformatted(req);
    int rc;

    if (s == NULL)
        return -ENOMEM;
    rc = ipc_client_send(c, s, strlen(s));
    cJSON_free(s);
    return rc;
}

size_t ipc_client_buffered(const ipc_client_t *c)
{
    return c->lines;
}

int ipc_client_recv(ipc_client_t *c, int timeout_ms, const char **line, size_t *len)
{
    double deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    char *start, *nl;
    int rc;

    *line = NULL;
    *len = 0;
    rc = ipc_client_flush(c, timeout_ms);
    if (rc != 0)
        return rc;
    while (c->lines == 0) {
        struct pollfd p = {c->fd, POLLIN, 0};
        int pr = poll(&p, 1, left_ms(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return -errno;
        if (pr == 0)
            return -ETIMEDOUT;
        rc = read_some(c);
        if (rc != 0 && rc != -EAGAIN)
            return rc;
    }
    start = c->r + c->roff;
    nl = memchr(start, '\n', c->rlen - c->roff);
    *nl = '\0';
    *len = (size_t)(nl - start);
    if (*len > 0 && start[*len - 1] == '\r')
        start[--*len] = '\0';
    c->roff += (size_t)(nl - start) + 1;
    c->scanned -= (size_t)(nl - start) + 1;
    c->lines--;
    *line = start;
    return 0;
}

int ipc_client_call(ipc_client_t *c, const cJSON *req, int timeout_ms, cJSON **answer)
{
    const char *line;
    size_t len;
    int rc;

    *answer = NULL;
    rc = ipc_client_send_json(c, req);
    if (rc == 0)
        rc = ipc_client_recv(c, timeout_ms, &line, &len);
    if (rc != 0)
        return rc;
    *answer = cJSON_ParseWithLength(line, len);
    return *answer != NULL ? 0 : -EBADMSG;
}
