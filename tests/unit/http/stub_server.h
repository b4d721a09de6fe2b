/*
 * stub_server.h - a scriptable HTTP server for the HTTP engine's tests
 * (libmicrohttpd on its own threads, 127.0.0.1, ephemeral port).
 *
 * Each path can be told what to answer: status, body, Retry-After, a delay
 * before answering, or to drop the connection after reading the request.
 * The server records per path what it received (hits, last Authorization,
 * X-API-Token, method, body). Unknown paths answer 200 "{}".
 *
 * Threads: every function may be called from any thread; the notify
 * callback runs on a server thread.
 */
#ifndef AVP_TEST_STUB_SERVER_H
#define AVP_TEST_STUB_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct stub stub_t;

/* What a path answers. body may be NULL (empty); strings are copied. */
typedef struct stub_route {
    int status;
    const char *body;
    size_t body_len;         /* 0 with body != NULL: strlen(body) */
    const char *retry_after; /* Retry-After header value, or NULL */
    long delay_ms;           /* wait before answering (interrupted by stub_stop) */
    bool drop;               /* close the connection instead of answering */
    bool unlisten;           /* first stop listening: connects are refused from then on */
} stub_route_t;

/* What a path received. */
typedef struct stub_seen {
    unsigned long hits;
    char auth[256];        /* last Authorization header, "" if none */
    char api_token[256];   /* last X-API-Token header, "" if none */
    char content_type[64]; /* last Content-Type header, "" if none */
    bool has_accept;       /* the last request carried an Accept header */
    char method[16];
    char body[256]; /* last body (cut), NUL-terminated */
    size_t body_len;
} stub_seen_t;

/* threads == 0: one thread per connection (needed for delay_ms);
 * threads > 0: a pool of epoll threads (fast; delays would block it). */
int stub_start(unsigned threads, stub_t **out);

/* The same on IPv4 address `addr` (network byte order) instead of
 * 127.0.0.1: another loopback address such as Debian's 127.0.1.1 for the
 * machine's own name. */
int stub_start_at(unsigned threads, uint32_t addr, stub_t **out);
uint16_t stub_port(const stub_t *s);
int stub_route_set(stub_t *s, const char *path, const stub_route_t *r);
void stub_seen_get(stub_t *s, const char *path, stub_seen_t *out);
/* Total requests fully read by the server (all paths). */
unsigned long stub_total(stub_t *s);
/* `fn(arg)` runs on a server thread after each request is recorded, before
 * it is answered. NULL to stop. */
void stub_set_notify(stub_t *s, void (*fn)(void *), void *arg);
/* Wakes delayed handlers, stops the daemon and frees everything. NULL ok. */
void stub_stop(stub_t *s);

#endif
