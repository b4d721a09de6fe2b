/*
 * avp-fakeapi - a fake AvenPing v2 API server for the tests, the demo and the
 * benchmarks of avenpingd. See README.md beside this file for the command
 * line, the routes and the control interface.
 *
 * This file is the process: options, the listening socket, the
 * libmicrohttpd glue and signals. The API's behaviour is in fake_logic.c.
 *
 * Threading: libmicrohttpd runs a poll() thread pool (--threads). Not epoll:
 * twice a test saw the epoll threads take no request for 30 s (the
 * daemon's request timeout) after a burst of new connections, and then
 * log the waiting requests when the daemon's timeouts and resends brought
 * new events - a lost edge, suspected; level-triggered poll cannot lose
 * one. The tests use at most a few hundred connections. Latency is
 * simulated without blocking a worker: the request is decided at once (so an
 * accepted send is logged when it "reaches Meta"), its connection is
 * suspended, and a timer thread resumes it when the delay is over; the
 * answer (or the dropped connection) goes out then.
 */
#include "fake_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define DISCARD_MAX (64ull * 1024 * 1024) /* past this much oversized body, drop the connection */
#define MAX_CONNECTIONS 10000u

/* One timer entry: resume `conn` at `due` (CLOCK_MONOTONIC ns). */
typedef struct delay_item {
    uint64_t due;
    uint64_t seq; /* ties keep arrival order */
    struct MHD_Connection *conn;
} delay_item_t;

/* The timer thread and its min-heap. The heap holds at most one entry per connection (a
 * suspended connection sends nothing more), so MAX_CONNECTIONS bounds it. */
typedef struct delayer {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    delay_item_t *heap;
    size_t n, cap;
    uint64_t seq;
    bool stopping;
    bool started;
    pthread_t thread;
} delayer_t;

typedef struct app {
    fake_server_t *srv;
    delayer_t delay;
} app_t;

/* Per-request state, freed in completed_cb. */
typedef struct req {
    char *body;
    size_t len, cap;
    uint64_t discarded; /* bytes beyond FAKE_BODY_MAX, not kept */
    bool too_big;
    bool delayed; /* suspended, `ans` waits for the timer */
    fake_answer_t ans;
} req_t;

/* ---- the timer thread ------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool item_before(const delay_item_t *a, const delay_item_t *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_pop(delayer_t *d, delay_item_t *out)
{
    *out = d->heap[0];
    d->heap[0] = d->heap[--d->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < d->n && item_before(&d->heap[l], &d->heap[m]))
            m = l;
        if (r < d->n && item_before(&d->heap[r], &d->heap[m]))
            m = r;
        if (m == i)
            break;
        delay_item_t t = d->heap[i];
        d->heap[i] = d->heap[m];
        d->heap[m] = t;
        i = m;
    }
}

/* Caller holds d->mu. -ENOMEM when the heap cannot grow. */
static int heap_push(delayer_t *d, const delay_item_t *it)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        delay_item_t *h = realloc(d->heap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        d->heap = h;
        d->cap = cap;
    }
    size_t i = d->n++;
    d->heap[i] = *it;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_before(&d->heap[i], &d->heap[p]))
            break;
        delay_item_t t = d->heap[i];
        d->heap[i] = d->heap[p];
        d->heap[p] = t;
        i = p;
    }
    return 0;
}

/* Resumes connections when due; on stop, resumes every one left so that libmicrohttpd can be
 * stopped (it must not be stopped with suspended connections). MHD_resume_connection only
 * flags the connection and wakes its worker, so calling it under d->mu is cheap and safe. */
static void *delayer_main(void *arg)
{
    delayer_t *d = arg;
    delay_item_t it;
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        if (d->n == 0) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        uint64_t now = now_ns();
        if (d->heap[0].due <= now) {
            heap_pop(d, &it);
            MHD_resume_connection(it.conn);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(d->heap[0].due / 1000000000ull),
                              .tv_nsec = (long)(d->heap[0].due % 1000000000ull)};
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
    }
    while (d->n > 0) {
        heap_pop(d, &it);
        MHD_resume_connection(it.conn);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Initialises the lock and the condition; delayer_free undoes it. */
static void delayer_init(delayer_t *d)
{
    pthread_condattr_t ca;
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static int delayer_start(delayer_t *d)
{
    int rc = pthread_create(&d->thread, NULL, delayer_main, d);
    if (rc != 0)
        return -rc;
    d->started = true;
    return 0;
}

/* Stops the thread after resuming every waiting connection; later delays resume at once. */
static void delayer_stop(delayer_t *d)
{
    if (!d->started)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    d->started = false;
}

static void delayer_free(delayer_t *d)
{
    free(d->heap);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
}

/* Suspends `conn` (we are inside its access handler) until `ms` from now. When the timer thread
 * is stopping or out of memory, the connection is resumed at once: the answer is not lost, only
 * not delayed. */
static void delayer_add(delayer_t *d, struct MHD_Connection *conn, long ms)
{
    delay_item_t it = {.due = now_ns() + (uint64_t)ms * 1000000ull, .conn = conn};
    bool ok = false;
    MHD_suspend_connection(conn);
    pthread_mutex_lock(&d->mu);
    if (!d->stopping) {
        it.seq = d->seq++;
        ok = heap_push(d, &it) == 0;
        if (ok && d->heap[0].conn == conn)
            pthread_cond_signal(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    if (!ok)
        MHD_resume_connection(conn);
}

/* ---- libmicrohttpd glue ----------------------------------------------- */

/* Keeps at most FAKE_BODY_MAX bytes; the rest is counted and dropped so memory stays bounded.
 * -1: so much was sent that the connection should be dropped. */
static int body_append(struct MHD_Connection *conn, req_t *rq, const char *data, size_t n)
{
    if (rq->too_big || rq->len + n > FAKE_BODY_MAX) {
        if (!rq->too_big) {
            rq->discarded = rq->len;
            free(rq->body);
            rq->body = NULL;
            rq->len = rq->cap = 0;
            rq->too_big = true;
        }
        rq->discarded += n;
        return rq->discarded > DISCARD_MAX ? -1 : 0;
    }
    if (rq->len + n > rq->cap) {
        size_t cap = rq->cap;
        if (cap == 0) {
            /* Size the buffer from Content-Length when it is sane, to avoid regrowing. */
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            unsigned long long hint = cl ? strtoull(cl, NULL, 10) : 0;
            cap = hint > 0 && hint <= FAKE_BODY_MAX ? (size_t)hint : 4096;
        }
        while (cap < rq->len + n)
            cap = cap * 2 > FAKE_BODY_MAX ? FAKE_BODY_MAX : cap * 2;
        char *b = realloc(rq->body, cap);
        if (!b)
            return -1;
        rq->body = b;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    return 0;
}

/* A body that ends early (fake_answer_t.cut): its bytes, then an error,
 * on which libmicrohttpd closes the connection short of the length it
 * declared. */
typedef struct cut_body {
    char *p;
    size_t len;
} cut_body_t;

static ssize_t cut_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    cut_body_t *b = cls;
    if (pos >= b->len)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t n = b->len - (size_t)pos < max ? b->len - (size_t)pos : max;
    memcpy(buf, b->p + pos, n);
    return (ssize_t)n;
}

static void cut_free(void *cls)
{
    cut_body_t *b = cls;
    free(b->p);
    free(b);
}

static struct MHD_Response *cut_response(fake_answer_t *a)
{
    cut_body_t *b = malloc(sizeof(*b));
    if (!b)
        return NULL;
    b->p = a->body;
    b->len = a->body_len;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(a->body_len + 64, 4096, cut_read, b, cut_free);
    if (!resp)
        free(b);
    return resp;
}

/* Sends the decided answer, or drops the connection. */
static enum MHD_Result deliver(struct MHD_Connection *conn, req_t *rq)
{
    fake_answer_t *a = &rq->ans;
    if (a->drop)
        return MHD_NO;
    struct MHD_Response *resp =
        a->cut ? cut_response(a)
               : MHD_create_response_from_buffer(a->body_len, a->body, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO; /* a->body is still ours: completed_cb frees it */
    a->body = NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (a->location[0] != '\0')
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, a->location);
    if (a->retry_after >= 0) {
        char v[16];
        snprintf(v, sizeof(v), "%d", a->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)a->status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    app_t *app = cls;
    req_t *rq = *con_cls;

    if (!rq) {
        /* First call, headers only: returning without a response lets the body come (and
         * libmicrohttpd answers "Expect: 100-continue" itself). */
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        return MHD_YES;
    }
    if (rq->delayed) {
        rq->delayed = false;
        return deliver(conn, rq);
    }
    if (*upload_data_size != 0) {
        int rc = body_append(conn, rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }

    fake_request_t in = {
        .method = method,
        .path = url,
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .api_token = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-API-Token"),
        .body = rq->len ? rq->body : NULL,
        .body_len = rq->len,
        .body_too_big = rq->too_big,
    };
    fake_server_handle(app->srv, &in, &rq->ans);
    free(rq->body);
    rq->body = NULL;
    rq->len = rq->cap = 0;

    if (rq->ans.delay_ms > 0) {
        rq->delayed = true;
        delayer_add(&app->delay, conn, rq->ans.delay_ms);
        return MHD_YES;
    }
    return deliver(conn, rq);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req_t *rq = *con_cls;
    if (!rq)
        return;
    free(rq->body);
    free(rq->ans.body);
    free(rq);
    *con_cls = NULL;
}

/* ---- process ---------------------------------------------------------- */

typedef struct cli {
    long port;
    const char *port_file;
    const char *tokens[FAKE_MAX_TOKENS];
    size_t ntokens;
    char *numbers_buf; /* strdup of --phone-numbers, cut at the commas */
    const char *numbers[FAKE_MAX_NUMBERS];
    size_t nnumbers;
    long threads;
    fake_options_t opt;
} cli_t;

static void usage(FILE *f)
{
    fputs("usage: avp-fakeapi [--port N] [--port-file FILE] [--token T]...\n"
          "                   [--phone-numbers ID,ID,...] [--log FILE] [--latency-ms N]\n"
          "                   [--fail-rate P] [--fail-meta-code C] [--rate-limit N]\n"
          "                   [--pair-interval-ms N --pair-burst N] [--reset-before P]\n"
          "                   [--reset-after P] [--seed S] [--threads N]\n",
          f);
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static int parse_numbers(cli_t *c, const char *arg)
{
    free(c->numbers_buf);
    c->numbers_buf = strdup(arg);
    if (!c->numbers_buf)
        return -ENOMEM;
    c->nnumbers = 0;
    char *save = NULL;
    for (char *t = strtok_r(c->numbers_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (c->nnumbers == FAKE_MAX_NUMBERS)
            return -EINVAL;
        c->numbers[c->nnumbers++] = t;
    }
    return c->nnumbers ? 0 : -EINVAL;
}

/* 0, 1 for --help, -EINVAL after printing what is wrong. */
static int parse_cli(cli_t *c, int argc, char **argv)
{
    enum {
        O_PORT = 256,
        O_PORT_FILE,
        O_TOKEN,
        O_NUMBERS,
        O_LOG,
        O_LATENCY,
        O_FAIL_RATE,
        O_FAIL_CODE,
        O_RATE,
        O_PAIR_INTERVAL,
        O_PAIR_BURST,
        O_RESET_BEFORE,
        O_RESET_AFTER,
        O_SEED,
        O_THREADS,
    };
    static const struct option longopts[] = {
        {"port", required_argument, NULL, O_PORT},
        {"port-file", required_argument, NULL, O_PORT_FILE},
        {"token", required_argument, NULL, O_TOKEN},
        {"phone-numbers", required_argument, NULL, O_NUMBERS},
        {"log", required_argument, NULL, O_LOG},
        {"latency-ms", required_argument, NULL, O_LATENCY},
        {"fail-rate", required_argument, NULL, O_FAIL_RATE},
        {"fail-meta-code", required_argument, NULL, O_FAIL_CODE},
        {"rate-limit", required_argument, NULL, O_RATE},
        {"pair-interval-ms", required_argument, NULL, O_PAIR_INTERVAL},
        {"pair-burst", required_argument, NULL, O_PAIR_BURST},
        {"reset-before", required_argument, NULL, O_RESET_BEFORE},
        {"reset-after", required_argument, NULL, O_RESET_AFTER},
        {"seed", required_argument, NULL, O_SEED},
        {"threads", required_argument, NULL, O_THREADS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    fake_config_t *cfg = &c->opt.config;
    bool seeded = false;
    int o;
    long v = 0;

    while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        bool ok = true;
        switch (o) {
        case O_PORT:
            ok = parse_long(optarg, 0, 65535, &c->port);
            break;
        case O_PORT_FILE:
            c->port_file = optarg;
            break;
        case O_TOKEN:
            ok = c->ntokens < FAKE_MAX_TOKENS && optarg[0] != '\0' &&
                 strlen(optarg) <= FAKE_MAX_TOKEN_LEN;
            if (ok)
                c->tokens[c->ntokens++] = optarg;
            break;
        case O_NUMBERS:
            ok = parse_numbers(c, optarg) == 0;
            break;
        case O_LOG:
            c->opt.log_path = optarg;
            break;
        case O_LATENCY:
            ok = parse_long(optarg, 0, FAKE_MAX_LATENCY_MS, &cfg->latency_ms);
            break;
        case O_FAIL_RATE:
            ok = parse_double(optarg, 0, 1, &cfg->fail_rate);
            break;
        case O_FAIL_CODE:
            ok = parse_long(optarg, 1, LONG_MAX, &cfg->fail_meta_code);
            break;
        case O_RATE:
            ok = parse_double(optarg, 0, 1e9, &cfg->rate_limit);
            break;
        case O_PAIR_INTERVAL:
            ok = parse_long(optarg, 0, 86400000, &cfg->pair_interval_ms);
            break;
        case O_PAIR_BURST:
            ok = parse_long(optarg, 1, 1000000, &cfg->pair_burst);
            break;
        case O_RESET_BEFORE:
            ok = parse_double(optarg, 0, 1, &cfg->reset_before);
            break;
        case O_RESET_AFTER:
            ok = parse_double(optarg, 0, 1, &cfg->reset_after);
            break;
        case O_SEED:
            ok = parse_long(optarg, 0, LONG_MAX, &v);
            c->opt.seed = (uint64_t)v;
            seeded = true;
            break;
        case O_THREADS:
            ok = parse_long(optarg, 1, 64, &c->threads);
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
        if (!ok) {
            fprintf(stderr, "avp-fakeapi: bad value for --%s: %s\n", longopts[o - O_PORT].name,
                    optarg);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return -EINVAL;
    }
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        c->opt.seed =
            ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ (uint64_t)getpid();
    }
    if (c->ntokens) {
        c->opt.tokens = c->tokens;
        c->opt.ntokens = c->ntokens;
    }
    if (c->nnumbers) {
        c->opt.numbers = c->numbers;
        c->opt.nnumbers = c->nnumbers;
    }
    return 0;
}

/* Listening socket on 127.0.0.1:port; the bound port in *bound. Returns the fd or -errno. */
static int listen_local(long port, unsigned *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    *bound = ntohs(sa.sin_port);
    return fd;
}

/* Writes the port to `path` through a temporary file and rename, so a reader never sees a
 * partial number. */
static int write_port_file(const char *path, unsigned port)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -errno;
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0) {
        int err = -errno;
        unlink(tmp);
        return err;
    }
    if (rename(tmp, path) < 0) {
        int err = -errno;
        unlink(tmp);
        return err;
    }
    return 0;
}

/* Raises the open-files limit towards what MAX_CONNECTIONS needs; returns the connection cap. */
static unsigned connection_cap(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1000;
    rlim_t want = MAX_CONNECTIONS + 64;
    if (rl.rlim_cur < want && rl.rlim_cur != RLIM_INFINITY) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return MAX_CONNECTIONS;
    return rl.rlim_cur > 128 ? (unsigned)(rl.rlim_cur - 64) : 64;
}

int main(int argc, char **argv)
{
    cli_t cli = {.threads = 2};
    app_t app = {0};
    struct MHD_Daemon *mhd = NULL;
    int lfd = -1;
    int status = 1;
    unsigned port = 0;
    sigset_t sigs;

    fake_config_defaults(&cli.opt.config);
    delayer_init(&app.delay);
    int rc = parse_cli(&cli, argc, argv);
    if (rc != 0) {
        free(cli.numbers_buf);
        delayer_free(&app.delay);
        return rc > 0 ? 0 : 2;
    }

    /* Block the stop signals in every thread (the mask is inherited) and take them with
     * sigwait in main, so no handler and no global flag is needed. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = fake_server_new(&cli.opt, &app.srv);
    if (rc != 0) {
        fprintf(stderr, "avp-fakeapi: cannot start: %s%s\n", strerror(-rc),
                rc == -EINVAL ? " (phone numbers must be unique [A-Za-z0-9._-]{1,63})" : "");
        goto out;
    }
    unsigned cap = connection_cap();
    lfd = listen_local(cli.port, &port);
    if (lfd < 0) {
        fprintf(stderr, "avp-fakeapi: cannot listen on 127.0.0.1:%ld: %s\n", cli.port,
                strerror(-lfd));
        goto out;
    }
    rc = delayer_start(&app.delay);
    if (rc != 0) {
        fprintf(stderr, "avp-fakeapi: cannot start the timer thread: %s\n", strerror(-rc));
        goto out;
    }

    struct MHD_OptionItem pool[] = {
        {MHD_OPTION_THREAD_POOL_SIZE, cli.threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    mhd = MHD_start_daemon(MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL,
                           access_cb, &app, MHD_OPTION_LISTEN_SOCKET, lfd,
                           MHD_OPTION_CONNECTION_LIMIT, cap, MHD_OPTION_NOTIFY_COMPLETED,
                           completed_cb, &app, MHD_OPTION_ARRAY, cli.threads > 1 ? pool : pool + 1,
                           MHD_OPTION_END);
    if (!mhd) {
        fprintf(stderr, "avp-fakeapi: libmicrohttpd failed to start\n");
        goto out;
    }

    /* The port file first: a reader of the PORT line may rely on the file being there. */
    if (cli.port_file) {
        rc = write_port_file(cli.port_file, port);
        if (rc != 0) {
            fprintf(stderr, "avp-fakeapi: cannot write %s: %s\n", cli.port_file, strerror(-rc));
            goto out;
        }
    }
    printf("PORT %u\n", port);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    status = 0;

out:
    if (mhd) {
        /* Stop accepting, let the delayed answers go, then stop the workers. After a
         * successful quiesce the listening socket is ours again to close. */
        MHD_socket q = MHD_quiesce_daemon(mhd);
        delayer_stop(&app.delay);
        MHD_stop_daemon(mhd);
        if (q != MHD_INVALID_SOCKET)
            close(q);
    } else {
        delayer_stop(&app.delay);
        if (lfd >= 0)
            close(lfd);
    }
    delayer_free(&app.delay);
    fake_server_free(app.srv); /* closes the log: every line is already written */
    free(cli.numbers_buf);
    return status;
}
