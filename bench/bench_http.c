/*
 * bench_http.c - the ceiling of the daemon's HTTP stack alone: its engines
 * (daemon/http_pool.c over daemon/http.c: libcurl multi driven by libuv,
 * on the loop thread or on engine threads) keeping N POSTs in flight to a
 * URL for a while, with no scheduler, store or classification. The dispatch
 * benchmark is compared with it; wrk against the same server shows what the
 * server and the kernel allow at all.
 *
 * usage: avp-bench-http API_BASE PATH [inflight] [seconds] [threads]
 * threads: as the daemon's http_threads (default 0: the loop thread).
 * Prints one JSON object:
 *   {"requests":..,"ok":..,"failed":..,"seconds":..,"rate":..,"connects":..}
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http_pool.h"

#define BODY "{\"phoneNumberId\":\"1000001\",\"to\":\"+15551234567\",\"text\":\"hello\"}"

typedef struct bench {
    uv_loop_t *loop;
    http_pool_t *e;
    const char *path;
    uint64_t end_ms; /* loop time at which no new request starts */
    unsigned long long ok, failed;
    int inflight;
    int rc;
} bench_t;

static void done_cb(const http_result_t *res, void *user);

static int start_one(bench_t *b)
{
    int rc = http_pool_post(b->e, b->path, BODY, sizeof(BODY) - 1, done_cb, b);

    if (rc == 0)
        b->inflight++;
    return rc;
}

static void done_cb(const http_result_t *res, void *user)
{
    bench_t *b = user;

    b->inflight--;
    if (res->error == 0 && res->status == 200)
        b->ok++;
    else
        b->failed++;
    if (uv_now(b->loop) < b->end_ms && b->rc == 0)
        b->rc = start_one(b);
}

int main(int argc, char **argv)
{
    uv_loop_t loop;
    http_options_t opt;
    http_stats_t st;
    bench_t b;
    long n = argc > 3 ? strtol(argv[3], NULL, 10) : 64;
    double secs = argc > 4 ? strtod(argv[4], NULL) : 5.0, t0, t1;
    long threads = argc > 5 ? strtol(argv[5], NULL, 10) : 0;
    int rc;

    if (argc < 3 || n <= 0 || secs <= 0 || threads < 0 || threads > HTTP_POOL_MAX_THREADS) {
        fprintf(stderr, "usage: avp-bench-http API_BASE PATH [inflight] [seconds] [threads]\n");
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || uv_loop_init(&loop) != 0)
        return 1;
    memset(&opt, 0, sizeof(opt));
    opt.api_base = argv[1];
    opt.token = "bench-token";
    memset(&b, 0, sizeof(b));
    b.loop = &loop;
    b.path = argv[2];
    rc = http_pool_new(&loop, &opt, (int)threads, &b.e);
    if (rc == 0)
        rc = http_pool_set_concurrency(b.e, n);
    if (rc != 0) {
        fprintf(stderr, "avp-bench-http: %s\n", http_strerror(rc));
        return 1;
    }
    uv_update_time(&loop);
    t0 = (double)uv_hrtime() / 1e9;
    b.end_ms = uv_now(&loop) + (uint64_t)(secs * 1000.0);
    for (long i = 0; i < n && b.rc == 0; i++)
        b.rc = start_one(&b);
    while (b.inflight > 0 && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    t1 = (double)uv_hrtime() / 1e9;
    http_pool_stats(b.e, &st);
    http_pool_close(b.e);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    curl_global_cleanup();
    if (b.rc != 0) {
        fprintf(stderr, "avp-bench-http: %s\n", http_strerror(b.rc));
        return 1;
    }
    printf("{\"requests\":%llu,\"ok\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"rate\":%.1f,"
           "\"connects\":%llu}\n",
           b.ok + b.failed, b.ok, b.failed, t1 - t0, (double)b.ok / (t1 - t0), st.connects);
    return b.failed == 0 ? 0 : 1;
}
