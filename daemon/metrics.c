/*
 * metrics.c - Prometheus text exposition (format 0.0.4) of a snapshot.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* From a fast local answer to the request timeout's order of magnitude. */
static const double latency_bounds[METRICS_LATENCY_BOUNDS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                              0.5,   1,    2.5,   5,    10};

double metrics_hist_bound(int i)
{
    return i >= 0 && i < METRICS_LATENCY_BOUNDS ? latency_bounds[i] : INFINITY;
}

void metrics_hist_observe(metrics_hist_t *h, double seconds)
{
    int i;

    if (!(seconds > 0))
        seconds = 0;
    for (i = 0; i < METRICS_LATENCY_BOUNDS && seconds > latency_bounds[i]; i++)
        ;
    h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}

/* A label value with \, " and newline escaped as the format requires. */
static void put_label(FILE *f, const char *v)
{
    for (; v != NULL && *v; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

/* A sample value and the line end: Prometheus spells NaN and the
 * infinities its own way, where printf would write nan and inf. */
static void put_value(FILE *f, double v)
{
    if (isnan(v))
        fputs(" NaN\n", f);
    else if (isinf(v))
        fputs(v > 0 ? " +Inf\n" : " -Inf\n", f);
    else
        fprintf(f, " %.17g\n", v);
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP avenping_%s %s\n# TYPE avenping_%s %s\n", name, help, name, type);
}

static void scalar(FILE *f, const char *name, const char *type, const char *help, double v)
{
    head(f, name, type, help);
    fprintf(f, "avenping_%s", name);
    put_value(f, v);
}

static void senders(FILE *f, const metrics_snapshot_t *s, const char *name, const char *help,
                    int which)
{
    head(f, name, "gauge", help);
    for (size_t i = 0; i < s->n_senders; i++) {
        const metrics_sender_t *p = &s->senders[i];
        double v = which == 0   ? p->rate
                   : which == 1 ? (p->paused ? 1 : 0)
                   : which == 2 ? (double)p->queued
                   : which == 3 ? (double)p->inflight
                                : p->max_rate;
        fprintf(f, "avenping_%s{phone_number_id=\"", name);
        put_label(f, p->phone_number_id);
        fputs("\"}", f);
        put_value(f, v);
    }
}

int metrics_render(const metrics_snapshot_t *s, char **out, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f;
    int rc = 0;

    *out = NULL;
    *len = 0;
    f = open_memstream(&buf, &n);
    if (f == NULL)
        return -errno;

    head(f, "build_info", "gauge", "Version of the running avenpingd.");
    fputs("avenping_build_info{version=\"", f);
    put_label(f, s->version ? s->version : "");
    fputs("\"} 1\n", f);

    head(f, "jobs", "gauge", "Jobs in the store by state.");
    for (int st = 1; st <= QUEUE_STATE_MAX; st++)
        fprintf(f, "avenping_jobs{state=\"%s\"} %llu\n", queue_state_name(st),
                (unsigned long long)s->jobs[st]);

    /* classify_answer() turns a request without an answer (connect error,
     * timeout, cut transfer) into a retry: counted here too. */
    head(f, "sends_total", "counter",
         "Finished send requests by the classification of their result (one that got no HTTP "
         "answer, a connect error or timeout, counts as retry).");
    for (size_t i = 0; i < s->n_outcomes; i++) {
        fputs("avenping_sends_total{outcome=\"", f);
        put_label(f, s->outcomes[i].name);
        fprintf(f, "\"} %llu\n", (unsigned long long)s->outcomes[i].n);
    }

    if (s->latency != NULL) {
        const metrics_hist_t *h = s->latency;
        uint64_t cum = 0;
        head(f, "http_request_duration_seconds", "histogram",
             "Duration of send requests to the API, from libcurl.");
        for (int i = 0; i <= METRICS_LATENCY_BOUNDS; i++) {
            cum += h->buckets[i];
            if (i < METRICS_LATENCY_BOUNDS)
                fprintf(f, "avenping_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        latency_bounds[i], (unsigned long long)cum);
            else
                fprintf(f, "avenping_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                        (unsigned long long)cum);
        }
        fputs("avenping_http_request_duration_seconds_sum", f);
        put_value(f, h->sum);
        fprintf(f, "avenping_http_request_duration_seconds_count %llu\n",
                (unsigned long long)h->count);
    }

    /* The scheduler's rate, not the configured one: it is cut on every
     * throttle and climbs back, which is what an operator watches; the
     * configured one is beside it. */
    senders(f, s, "sender_rate",
            "Current send rate limit of a sender number, per second: lowered by throttles, back "
            "up to sender_max_rate with successes (0: unlimited).",
            0);
    senders(f, s, "sender_max_rate",
            "Configured send rate limit of a sender number, per second (0: unlimited).", 4);
    senders(f, s, "sender_paused", "1 when sending from this number is paused.", 1);
    senders(f, s, "sender_queued", "Jobs of this sender waiting in the active set.", 2);
    senders(f, s, "sender_inflight", "Jobs of this sender picked and not finished.", 3);

    /* The totals and gauges of the `stats` op. */
    const struct {
        const char *name, *type, *help;
        double v;
    } scalars[] = {
        {"oldest_due_job_age_seconds", "gauge",
         "How long the earliest due job has been waiting (0: none due).", s->oldest_due_age},
        {"submitted_total", "counter", "Jobs accepted since start.", (double)s->submitted},
        {"duplicates_total", "counter", "Submits answered as duplicates since start.",
         (double)s->duplicates},
        {"http_requests_total", "counter", "Send requests started since start.",
         (double)s->requests},
        {"possible_duplicates_total", "counter",
         "Requests that failed after they may have reached the API.",
         (double)s->possible_duplicates},
        {"commits_total", "counter", "Store commits since start.", (double)s->commits},
        {"commit_failures_total", "counter",
         "Store commits that failed since start (each retried; nothing is acknowledged or "
         "sent meanwhile).",
         (double)s->commit_failures},
        {"purged_total", "counter",
         "Finished jobs deleted from the store after retention_s since start.", (double)s->purged},
        {"unreadable_jobs", "gauge",
         "Jobs the store's due index names whose record cannot be read (damage, or written by "
         "a newer avenpingd): left in the store, never sent, each logged with its id.",
         (double)s->unreadable_jobs},
        {"http_connects_total", "counter",
         "Connections the HTTP engine opened since start (keep-alive reuses none).",
         (double)s->http_connects},
        {"tls_handshakes_total", "counter",
         "TLS handshakes the HTTP engine did since start (connections over https).",
         (double)s->tls_handshakes},
        {"inflight", "gauge",
         "Jobs picked and not finished: requests on the wire plus those whose sending record "
         "is being committed (so up to max_inflight plus a commit's worth).",
         s->inflight},
        {"http_inflight", "gauge", "Requests on the wire (at most max_inflight).",
         s->http_inflight},
        {"active_jobs", "gauge", "Jobs in the scheduler's active set.", (double)s->active},
        {"commit_backlog", "gauge", "Store operations waiting for a commit.",
         (double)s->commit_backlog},
        {"connections", "gauge", "Open socket connections.", s->connections},
        {"watchers", "gauge", "Open watch streams.", (double)s->watchers},
        {"store_map_bytes", "gauge", "Size of the LMDB map.", (double)s->store_map_bytes},
        {"store_used_bytes", "gauge", "Bytes of the LMDB map in use.", (double)s->store_used_bytes},
    };

    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++)
        scalar(f, scalars[i].name, scalars[i].type, scalars[i].help, scalars[i].v);

    if (ferror(f))
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

int metrics_write_file(const char *path, const char *text, size_t len)
{
    char tmp[PATH_MAX];
    size_t off = 0;
    int fd, rc = 0, n;

    n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    /* Readable by the collector (node_exporter runs as another user)
     * whatever the umask: the unit's UMask=0077 would make it 0600. The
     * file holds counters only, nothing secret. */
    if (fchmod(fd, 0644) != 0)
        rc = -errno;
    while (rc == 0 && off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}
