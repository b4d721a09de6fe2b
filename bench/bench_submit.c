/*
 * bench_submit.c - load generator for avenpingd's socket: C clients, each
 * pipelining submits with a bounded window, counting acknowledged jobs.
 *
 * usage: avp-bench-submit --socket PATH [--clients N] [--jobs N] [--window N]
 *                         [--senders N] [--not-before UNIX] [--first N]
 *                         [--template 0|1] [--campaign NAME] [--stamp 0|1]
 *                         [--rate JOBS_PER_S]
 * Prints one JSON object: {"clients":..,"jobs":..,"acked":..,"errors":..,"seconds":..,"rate":..}
 *
 * Job i goes to sender 10000NN (NN = i % senders + 1) and recipient
 * +1555<i>: every job has its own order key and pair. --template 1 makes
 * every job a template send (else they alternate text / template);
 * --stamp 1 writes the submit time into the job's marker text
 * ("t<unix seconds>-<i>") so a server log can give submit-to-request
 * latency; --rate paces the clients together to that many jobs per second
 * (open loop within the window) instead of as fast as the answers come.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct client {
    const char *path;
    long first, count, window, senders;
    bool template_only, stamp;
    char nb[64];    /* ,"notBefore":... or "" */
    char camp[256]; /* ,"campaign":"..." or "" */
    double rate;    /* this client's jobs per second; 0: unpaced */
    long acked, errors;
    int rc;
    pthread_t thread;
} client_t;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Appends `s` at *p. */
static void put_str(char **p, const char *s)
{
    size_t n = strlen(s);
    memcpy(*p, s, n);
    *p += n;
}

/* Appends v in decimal, zero-padded to at least `width` digits. */
static void put_num(char **p, long v, int width)
{
    char tmp[24];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && n < (int)sizeof(tmp));
    while (n < width && n < (int)sizeof(tmp))
        tmp[n++] = '0';
    while (n > 0)
        *(*p)++ = tmp[--n];
}

/* Formats job i into buf, which has room for at least JOB_MAX bytes; returns
 * its length. The constant parts (notBefore, campaign) are formatted once
 * per client (c->nb, c->camp): a printf of a float per job made the client
 * take 0.4-0.5 us per job, a tenth of what it measures. */
#define JOB_MAX 1024
static int format_job(char *buf, const client_t *c, long i, double now)
{
    bool text = i % 2 == 0 && !c->template_only;
    char *p = buf;

    put_str(&p, text ? "{\"op\":\"send\",\"type\":\"text\"" : "{\"op\":\"template_send\"");
    put_str(&p, c->nb);
    put_str(&p, c->camp);
    put_str(&p, ",\"message\":{\"phoneNumberId\":\"10000");
    put_num(&p, i % c->senders + 1, 2);
    put_str(&p, text ? "\",\"to\":\"+1555" : "\",\"to\":\"1555");
    put_num(&p, i, 7);
    put_str(&p, text ? "\",\"text\":\""
                     : "\",\"templateName\":\"promo\",\"language\":\"en_US\","
                       "\"components\":[{\"type\":\"body\",\"parameters\":[{\"type\":\"text\","
                       "\"text\":\"");
    /* The marker: job-<i>, or t<submit time>-<i> when stamped. */
    if (c->stamp)
        p += snprintf(p, 64, "t%.6f-%ld", now, i);
    else {
        put_str(&p, "job-");
        put_num(&p, i, 1);
    }
    put_str(&p, text ? "\"}}\n" : "\"}]}]}}\n");
    return (int)(p - buf);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    struct sockaddr_un sa;
    char *out = NULL, in[1 << 16];
    size_t out_cap = 1 << 20;
    long sent = 0, answered = 0;
    double t0;
    int fd;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        c->rc = -errno;
        goto out;
    }
    out = malloc(out_cap);
    if (out == NULL) {
        c->rc = -ENOMEM;
        goto out;
    }
    t0 = now_s();
    while (answered < c->count) {
        size_t len = 0;
        ssize_t n;
        long allowed = c->count;
        double now = now_s();

        if (c->rate > 0) {
            allowed = (long)((now - t0) * c->rate) + 1;
            if (allowed > c->count)
                allowed = c->count;
        }
        while (sent < allowed && sent - answered < c->window && len + JOB_MAX < out_cap) {
            len += (size_t)format_job(out + len, c, c->first + sent, now);
            sent++;
        }
        for (size_t off = 0; off < len;) {
            n = write(fd, out + off, len - off);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                c->rc = -errno;
                goto out;
            }
            off += (size_t)n;
        }
        if (c->rate > 0 && sent < c->count) {
            /* Paced: wait for answers only until the next job is due, but
             * at least 1 ms (jobs due meanwhile go together): never spin. */
            struct pollfd p = {.fd = fd, .events = POLLIN};
            double next = t0 + (double)sent / c->rate;
            int ms = (int)ceil((next - now_s()) * 1000.0);
            if (poll(&p, 1, ms > 1 ? ms : 1) <= 0)
                continue;
        }
        n = read(fd, in, sizeof(in));
        if (n <= 0) {
            c->rc = n == 0 ? -ECONNRESET : -errno;
            goto out;
        }
        for (ssize_t k = 0; k < n; k++) {
            if (in[k] != '\n')
                continue;
            answered++;
        }
        /* Count errors cheaply: an answer line with "ok":false. */
        for (char *p = in; (p = memmem(p, (size_t)(in + n - p), "\"ok\":false", 10)) != NULL;
             p += 10)
            c->errors++;
    }
out:
    c->acked = answered - c->errors;
    free(out);
    if (fd >= 0)
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    long clients = 1, jobs = 100000, window = 1000, senders = 5, first = 0;
    double not_before = 0, rate = 0, t0, t1;
    bool template_only = false, stamp = false;
    const char *campaign = NULL;
    client_t *cs;
    long acked = 0, errors = 0, per;
    int i, rc = 0;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--socket") == 0)
            path = argv[i + 1];
        else if (strcmp(argv[i], "--clients") == 0)
            clients = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--jobs") == 0)
            jobs = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--window") == 0)
            window = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--senders") == 0)
            senders = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--not-before") == 0)
            not_before = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--first") == 0)
            first = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--template") == 0)
            template_only = atoi(argv[i + 1]) != 0;
        else if (strcmp(argv[i], "--stamp") == 0)
            stamp = atoi(argv[i + 1]) != 0;
        else if (strcmp(argv[i], "--campaign") == 0)
            campaign = argv[i + 1];
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
        else
            break;
    }
    if (path == NULL || i < argc || clients < 1 || jobs < clients || window < 1 || senders < 1 ||
        senders > 99 || rate < 0 || (campaign != NULL && strlen(campaign) > 200)) {
        fprintf(stderr, "usage: avp-bench-submit --socket PATH [--clients N] [--jobs N] "
                        "[--window N] [--senders 1..99] [--not-before UNIX] [--first N] "
                        "[--template 0|1] [--campaign NAME] [--stamp 0|1] [--rate N]\n");
        return 2;
    }
    cs = calloc((size_t)clients, sizeof(*cs));
    if (cs == NULL)
        return 1;
    per = jobs / clients;
    t0 = now_s();
    for (i = 0; i < clients; i++) {
        cs[i].path = path;
        cs[i].first = first + i * per;
        cs[i].count = i == clients - 1 ? jobs - i * per : per;
        cs[i].window = window;
        cs[i].senders = senders;
        cs[i].template_only = template_only;
        cs[i].stamp = stamp;
        if (not_before > 0)
            snprintf(cs[i].nb, sizeof(cs[i].nb), ",\"notBefore\":%.3f", not_before);
        if (campaign != NULL)
            snprintf(cs[i].camp, sizeof(cs[i].camp), ",\"campaign\":\"%s\"", campaign);
        cs[i].rate = rate / (double)clients;
        pthread_create(&cs[i].thread, NULL, client_main, &cs[i]);
    }
    for (i = 0; i < clients; i++) {
        pthread_join(cs[i].thread, NULL);
        acked += cs[i].acked;
        errors += cs[i].errors;
        if (cs[i].rc != 0)
            rc = 1;
    }
    t1 = now_s();
    printf("{\"clients\":%ld,\"jobs\":%ld,\"acked\":%ld,\"errors\":%ld,\"seconds\":%.3f,"
           "\"rate\":%.0f}\n",
           clients, jobs, acked, errors, t1 - t0, (double)acked / (t1 - t0));
    free(cs);
    return rc;
}
