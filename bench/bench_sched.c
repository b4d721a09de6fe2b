/*
 * bench_sched.c - the scheduler's cost per decision against the number of
 * queued jobs, and its memory per job.
 *
 * Fills a scheduler with N jobs over S senders (campaigns, one order key
 * and one pair per recipient, three priorities, pair pacing on, as the
 * daemon runs it), then takes every job out with sched_next +
 * sched_job_finish and reports the mean cost of one decision per slice of
 * the drain: with no scans proportional to the queue, the cost stays flat
 * from N queued down to a few. The same is done for a queue 100 times
 * smaller, and the ratio printed.
 *
 * Usage: avp-bench-sched [N [SENDERS]]   (default 1000000 1000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scheduler.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

typedef struct result {
    double add_ns;   /* per job */
    double first_ns; /* per decision, first tenth of the drain (queue full) */
    double last_ns;  /* per decision, last tenth (queue nearly empty) */
    double mean_ns;
    double bytes_per_job;
    double promote_ms;
} result_t;

static int run(size_t n, size_t senders, bool verbose, result_t *out)
{
    sched_options_t o;
    sched_t *s;
    size_t i, done = 0, slice = n / 10 ? n / 10 : 1;
    double t0, t1, now = 1000.0, slice_t0;
    size_t rss0, rss1;
    int rc;

    memset(&o, 0, sizeof(o));
    o.max_inflight = 1u << 30;
    o.max_inflight_per_number = 1u << 30;
    o.max_jobs = n;
    o.pair_interval = 6.0; /* Meta's pair limit */
    o.pair_burst = 45;
    if ((rc = sched_new(&o, &s)) != 0)
        return rc;
    rss0 = rss_bytes();
    t0 = mono();
    for (i = 0; i < n; i++) {
        char sender[32], campaign[32], to[32], okey[80];
        sched_keys_t k;
        sched_job_t t;
        size_t rcpt = i / 3; /* three messages per recipient */

        snprintf(sender, sizeof(sender), "%zu", 1000000 + rcpt % senders);
        snprintf(campaign, sizeof(campaign), "campaign-%zu", rcpt % 7);
        snprintf(to, sizeof(to), "+1555%08zu", rcpt);
        snprintf(okey, sizeof(okey), "%s:1555%08zu", sender, rcpt);
        memset(&t, 0, sizeof(t));
        t.id = i + 1;
        t.due = now - (double)(n - i) * 1e-6;
        t.priority = (uint8_t)(i % 3);
        t.expires_at = now + 86400;
        k.phone_number_id = sender;
        k.campaign = (i % 11 == 0) ? NULL : campaign;
        k.order_key = okey;
        k.to = to;
        if ((rc = sched_job_add(s, &t, &k)) != 0) {
            fprintf(stderr, "add %zu: %d\n", i, rc);
            sched_free(s);
            return rc;
        }
    }
    t1 = mono();
    rss1 = rss_bytes();
    out->add_ns = (t1 - t0) / (double)n * 1e9;
    out->bytes_per_job = (double)(rss1 - rss0) / (double)n;
    if (verbose) {
        sched_counts_t c;
        sched_object_counts(s, &c);
        printf("queued %zu jobs over %zu senders: %.0f ns/add, %.0f bytes/job (RSS), "
               "%zu order keys, %zu pairs, %zu lanes, %zu campaigns\n",
               n, senders, out->add_ns, out->bytes_per_job, c.okeys, c.pairs, c.lanes, c.campaigns);
    }
    /* The first call moves every due job from the waiting heap to the ready
     * lanes (once per job in its life: O(log n) each); timed apart. */
    t0 = mono();
    {
        sched_job_t *j = sched_next(s, now, NULL);
        if (j != NULL) {
            sched_job_finish(s, j);
            done++;
        }
    }
    out->promote_ms = (mono() - t0) * 1e3;
    if (verbose)
        printf("  first call (promotes all %zu due jobs once): %.0f ms\n", n, out->promote_ms);
    t0 = slice_t0 = mono();
    while (done < n) {
        sched_job_t *j = sched_next(s, now, NULL);
        if (j == NULL) {
            now += 6.0; /* pair buckets refill */
            continue;
        }
        sched_job_finish(s, j);
        done++;
        if (done % slice == 0 || done == n) {
            double t = mono(), ns = (t - slice_t0) / (double)slice * 1e9;
            if (done <= slice)
                out->first_ns = ns;
            out->last_ns = ns;
            if (verbose)
                printf("  decisions %7zu..%7zu (%7zu queued before): %6.0f ns each\n", done - slice,
                       done, n - done + slice, ns);
            slice_t0 = t;
        }
    }
    out->mean_ns = (mono() - t0) / (double)(n - 1) * 1e9;
    sched_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    size_t senders = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000;
    result_t big, small;

    if (n < 1000 || senders == 0) {
        fprintf(stderr, "usage: avp-bench-sched [N >= 1000 [SENDERS]]\n");
        return 2;
    }
    if (run(n, senders, true, &big) != 0)
        return 1;
    if (run(n / 100, senders, false, &small) != 0)
        return 1;
    printf("mean decision (next + finish): %.0f ns with %zu queued, %.0f ns with %zu queued; "
           "ratio %.2f\n",
           big.mean_ns, n, small.mean_ns, n / 100, big.mean_ns / small.mean_ns);
    printf("within the big run: first tenth %.0f ns, last tenth %.0f ns\n", big.first_ns,
           big.last_ns);
    return 0;
}
