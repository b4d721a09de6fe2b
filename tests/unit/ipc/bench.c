/*
 * bench.c - throughput of parse -> callback -> answer through a real
 * socket: N client threads each keep a window of `send` requests in flight;
 * the server answers each at once with ipc_req_reply_submit.
 *
 * Usage: test_ipc_bench [clients=8] [requests per client=200000] [window=512]
 * Not a ctest test (timing depends on the machine).
 */
#include "ipc.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct bench {
    uv_loop_t loop;
    ipc_server_t *srv;
    uv_async_t done;
    char path[108];
    int clients;
    long per_client;
    int window;
    uint64_t next_job;
};

static void on_req(ipc_req_t *r, void *user)
{
    struct bench *b = user;
    ipc_req_reply_submit(r, ++b->next_job, false);
}

static void on_done(uv_async_t *a)
{
    struct bench *b = a->data;
    ipc_server_close(b->srv);
    uv_close((uv_handle_t *)a, NULL);
}

static void *client(void *arg)
{
    struct bench *b = arg;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, b->path, strlen(b->path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(1);
    }
    /* One window's worth of requests, built once. */
    size_t cap = (size_t)b->window * 256, n = 0;
    char *req = malloc(cap);
    for (int i = 0; i < b->window; i++)
        n += (size_t)snprintf(req + n, cap - n,
                              "{\"op\":\"send\",\"id\":%d,\"type\":\"text\",\"campaign\":\"bench\","
                              "\"message\":{\"phoneNumberId\":\"1000001\",\"to\":\"+1555123%04d\","
                              "\"text\":\"Hello from the benchmark\"}}\n",
                              i, i);
    char *rbuf = malloc(1 << 20);
    long done = 0;
    while (done < b->per_client) {
        for (size_t off = 0; off < n;) {
            ssize_t w = write(fd, req + off, n - off);
            if (w <= 0) {
                perror("write");
                exit(1);
            }
            off += (size_t)w;
        }
        long want = b->window, got = 0;
        while (got < want) {
            ssize_t r = read(fd, rbuf, 1 << 20);
            if (r <= 0) {
                perror("read");
                exit(1);
            }
            for (char *p = rbuf; (p = memchr(p, '\n', (size_t)(rbuf + r - p))) != NULL; p++)
                got++;
        }
        done += want;
    }
    close(fd);
    free(req);
    free(rbuf);
    return NULL;
}

static void *clients_main(void *arg)
{
    struct bench *b = arg;
    pthread_t th[256];
    for (int i = 0; i < b->clients; i++)
        pthread_create(&th[i], NULL, client, b);
    for (int i = 0; i < b->clients; i++)
        pthread_join(th[i], NULL);
    uv_async_send(&b->done);
    return NULL;
}

int main(int argc, char **argv)
{
    struct bench b;
    memset(&b, 0, sizeof b);
    b.clients = argc > 1 ? atoi(argv[1]) : 8;
    b.per_client = argc > 2 ? atol(argv[2]) : 200000;
    b.window = argc > 3 ? atoi(argv[3]) : 512;
    if (b.clients < 1 || b.clients > 256 || b.window < 1 || b.per_client < b.window)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    snprintf(b.path, sizeof b.path, "/tmp/ipc-bench-%ld.sock", (long)getpid());
    uv_loop_init(&b.loop);
    uv_async_init(&b.loop, &b.done, on_done);
    b.done.data = &b;
    ipc_server_options_t opt;
    memset(&opt, 0, sizeof opt);
    if (ipc_server_new(&b.loop, &opt, on_req, &b, &b.srv) || ipc_server_listen(b.srv, b.path)) {
        fprintf(stderr, "listen failed\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th;
    pthread_create(&th, NULL, clients_main, &b);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    uv_loop_close(&b.loop);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%d clients x %ld requests (window %d): %.2f s, %.0f requests/s\n", b.clients,
           b.per_client, b.window, secs, (double)b.next_job / secs);
    return 0;
}
