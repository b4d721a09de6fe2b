/*
 * bench_submit.c - load generator for avenpingd's socket: C clients, each
 * pipelining submits with a bounded window, counting acknowledged jobs.
 *
 * usage: avp-bench-submit --socket PATH [--clients N] [--jobs N] [--window N]
 *                         [--senders N] [--not-before UNIX] [--first N]
 * Prints one JSON object: {"clients":..,"jobs":..,"acked":..,"errors":..,"seconds":..,"rate":..}
 */
#include <errno.h>
#include <pthread.h>
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
    double not_before;
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

static int format_job(char *buf, size_t size, long i, long senders, double not_before)
{
    char nb[64] = "";

    if (not_before > 0)
        snprintf(nb, sizeof(nb), ",\"notBefore\":%.3f", not_before);
    if (i % 2 == 0)
        return snprintf(buf, size,
                        "{\"op\":\"send\",\"type\":\"text\"%s,\"message\":{\"phoneNumberId\":"
                        "\"10000%02ld\",\"to\":\"+1555%07ld\",\"text\":\"job-%ld\"}}\n",
                        nb, i % senders + 1, i, i);
    return snprintf(buf, size,
                    "{\"op\":\"template_send\"%s,\"message\":{\"phoneNumberId\":\"10000%02ld\","
                    "\"to\":\"1555%07ld\",\"templateName\":\"promo\",\"language\":\"en_US\","
                    "\"components\":[{\"type\":\"body\",\"parameters\":[{\"type\":\"text\","
                    "\"text\":\"job-%ld\"}]}]}}\n",
                    nb, i % senders + 1, i, i);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    struct sockaddr_un sa;
    char *out = NULL, in[1 << 16];
    size_t out_cap = 1 << 20;
    long sent = 0, answered = 0;
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
    while (answered < c->count) {
        size_t len = 0;
        ssize_t n;

        while (sent < c->count && sent - answered < c->window && len + 1024 < out_cap) {
            len += (size_t)format_job(out + len, out_cap - len, c->first + sent, c->senders,
                                      c->not_before);
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
    double not_before = 0, t0, t1;
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
        else
            break;
    }
    if (path == NULL || i < argc || clients < 1 || jobs < clients || window < 1 || senders < 1 ||
        senders > 99) {
        fprintf(stderr, "usage: avp-bench-submit --socket PATH [--clients N] [--jobs N] "
                        "[--window N] [--senders 1..99] [--not-before UNIX] [--first N]\n");
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
        cs[i].not_before = not_before;
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
