/*
 * stub_server.c - see stub_server.h.
 */
#include "stub_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STUB_ROUTES_MAX 32
#define STUB_BODY_MAX (4 * 1024 * 1024) /* request bodies kept while reading */

typedef struct stub_path {
    char path[128];
    bool scripted;
    int status;
    char *body;
    size_t body_len;
    char *retry_after;
    long delay_ms;
    bool drop;
    bool unlisten;
    stub_seen_t seen;
} stub_path_t;

struct stub {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on stop, wakes delayed handlers */
    bool stopping;
    stub_path_t paths[STUB_ROUTES_MAX];
    size_t npaths;
    stub_path_t other; /* paths beyond the table */
    unsigned long total;
    void (*notify)(void *);
    void *notify_arg;
};

/* One request being read. */
typedef struct stub_conn {
    char *body;
    size_t len;
} stub_conn_t;

/* Finds or adds the entry of `path`; caller holds the mutex. */
static stub_path_t *stub_path_find(stub_t *s, const char *path)
{
    for (size_t i = 0; i < s->npaths; i++) {
        if (strcmp(s->paths[i].path, path) == 0)
            return &s->paths[i];
    }
    if (s->npaths == STUB_ROUTES_MAX || strlen(path) >= sizeof(s->paths[0].path))
        return &s->other;
    stub_path_t *p = &s->paths[s->npaths++];
    memset(p, 0, sizeof(*p));
    snprintf(p->path, sizeof p->path, "%s", path);
    return p;
}

static void copy_header(struct MHD_Connection *c, const char *name, char *dst, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    snprintf(dst, cap, "%s", v ? v : "");
}

static void stub_wait(stub_t *s, long ms)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&s->mu);
}

static enum MHD_Result stub_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *upload,
                                    size_t *upload_size, void **con_cls)
{
    stub_t *s = cls;
    stub_conn_t *sc = *con_cls;
    stub_path_t *p;
    int status = 200;
    char *body = NULL, *retry = NULL;
    size_t body_len = 0;
    long delay = 0;
    bool drop = false, unlisten = false;
    void (*notify)(void *);
    void *notify_arg;
    struct MHD_Response *resp;
    enum MHD_Result ret;

    (void)version;
    if (sc == NULL) {
        sc = calloc(1, sizeof(*sc));
        if (sc == NULL)
            return MHD_NO;
        *con_cls = sc;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (sc->len + *upload_size <= STUB_BODY_MAX) {
            char *b = realloc(sc->body, sc->len + *upload_size + 1);
            if (b == NULL)
                return MHD_NO;
            memcpy(b + sc->len, upload, *upload_size);
            sc->body = b;
            sc->len += *upload_size;
            b[sc->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }

    pthread_mutex_lock(&s->mu);
    p = stub_path_find(s, url);
    p->seen.hits++;
    copy_header(c, "Authorization", p->seen.auth, sizeof(p->seen.auth));
    copy_header(c, "X-API-Token", p->seen.api_token, sizeof(p->seen.api_token));
    copy_header(c, "Content-Type", p->seen.content_type, sizeof(p->seen.content_type));
    p->seen.has_accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept") != NULL;
    snprintf(p->seen.method, sizeof(p->seen.method), "%s", method);
    snprintf(p->seen.body, sizeof(p->seen.body), "%s", sc->body ? sc->body : "");
    p->seen.body_len = sc->len;
    s->total++;
    if (p->scripted) {
        status = p->status;
        /* Copies: the route may be replaced while we answer. */
        if (p->body_len > 0) {
            body = malloc(p->body_len);
            if (body != NULL)
                memcpy(body, p->body, p->body_len);
            body_len = body ? p->body_len : 0;
        }
        retry = p->retry_after ? strdup(p->retry_after) : NULL;
        delay = p->delay_ms;
        drop = p->drop;
        unlisten = p->unlisten;
    } else {
        body = strdup("{}");
        body_len = body ? 2 : 0;
    }
    notify = s->notify;
    notify_arg = s->notify_arg;
    pthread_mutex_unlock(&s->mu);

    if (unlisten) {
        /* The listening socket is the caller's once quiesced. shutdown
         * ends its listening at once (Linux); a close alone could leave it
         * listening while MHD's thread still holds the file in its poll,
         * and a connect in that window would be queued, not refused. */
        MHD_socket fd = MHD_quiesce_daemon(s->d);

        if (fd != MHD_INVALID_SOCKET) {
            shutdown(fd, SHUT_RDWR);
            close(fd);
        }
    }
    if (notify != NULL)
        notify(notify_arg);
    if (delay > 0)
        stub_wait(s, delay);
    if (drop) {
        free(body);
        free(retry);
        return MHD_NO;
    }
    resp = MHD_create_response_from_buffer(body_len, body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        free(retry);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (retry != NULL)
        MHD_add_response_header(resp, "Retry-After", retry);
    free(retry);
    ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void stub_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    stub_conn_t *sc = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (sc != NULL) {
        free(sc->body);
        free(sc);
        *con_cls = NULL;
    }
}

int stub_start(unsigned threads, stub_t **out)
{
    return stub_start_at(threads, htonl(INADDR_LOOPBACK), out);
}

int stub_start_at(unsigned threads, uint32_t addr, stub_t **out)
{
    stub_t *s = calloc(1, sizeof(*s));
    struct sockaddr_in sa;
    pthread_condattr_t ca;
    const union MHD_DaemonInfo *info;
    unsigned flags;

    if (s == NULL)
        return -ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = addr;
    sa.sin_port = 0;
    if (threads == 0)
        flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    else
        flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    flags |= MHD_USE_ITC; /* MHD_quiesce_daemon needs it in these modes */
    s->d =
        MHD_start_daemon(flags, 0, NULL, NULL, stub_handler, s, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_NOTIFY_COMPLETED, stub_completed, s,
                         MHD_OPTION_CONNECTION_TIMEOUT, 0u, MHD_OPTION_CONNECTION_LIMIT, 4000u,
                         MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0u, MHD_OPTION_END);
    if (s->d == NULL)
        goto fail;
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0)
        goto fail;
    s->port = info->port;
    *out = s;
    return 0;
fail:
    stub_stop(s);
    return -EIO;
}

uint16_t stub_port(const stub_t *s)
{
    return s->port;
}

int stub_route_set(stub_t *s, const char *path, const stub_route_t *r)
{
    stub_path_t *p;
    size_t blen = r->body ? (r->body_len ? r->body_len : strlen(r->body)) : 0;
    char *body = NULL, *retry = NULL;

    if (blen > 0) {
        body = malloc(blen);
        if (body == NULL)
            return -ENOMEM;
        memcpy(body, r->body, blen);
    }
    if (r->retry_after != NULL) {
        retry = strdup(r->retry_after);
        if (retry == NULL) {
            free(body);
            return -ENOMEM;
        }
    }
    pthread_mutex_lock(&s->mu);
    p = stub_path_find(s, path);
    free(p->body);
    free(p->retry_after);
    p->scripted = true;
    p->status = r->status;
    p->body = body;
    p->body_len = blen;
    p->retry_after = retry;
    p->delay_ms = r->delay_ms;
    p->drop = r->drop;
    p->unlisten = r->unlisten;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void stub_seen_get(stub_t *s, const char *path, stub_seen_t *out)
{
    pthread_mutex_lock(&s->mu);
    *out = stub_path_find(s, path)->seen;
    pthread_mutex_unlock(&s->mu);
}

unsigned long stub_total(stub_t *s)
{
    unsigned long n;

    pthread_mutex_lock(&s->mu);
    n = s->total;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void stub_set_notify(stub_t *s, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&s->mu);
    s->notify = fn;
    s->notify_arg = arg;
    pthread_mutex_unlock(&s->mu);
}

void stub_stop(stub_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->notify = NULL;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->d != NULL)
        MHD_stop_daemon(s->d);
    for (size_t i = 0; i < s->npaths; i++) {
        free(s->paths[i].body);
        free(s->paths[i].retry_after);
    }
    free(s->other.body);
    free(s->other.retry_after);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
