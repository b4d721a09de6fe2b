/*
 * metrics.h - the Prometheus text-format metrics file (metrics_file), for
 * node_exporter's textfile collector.
 *
 * Pure: the daemon fills a snapshot of its counters (events.c) and this
 * module renders it and replaces the file atomically (temporary file in the
 * same directory, then rename), so a scraper never reads half a file. No
 * fsync: the file is a gauge of the present, rewritten every few seconds;
 * after a crash a stale or missing file is harmless.
 *
 * Series (all prefixed avenping_): jobs{state} (gauge, from the store's
 * counters), sends_total{outcome} (counter, one per finished send request by
 * the classification of its result; no answer counts as retry), http_request_duration_seconds
 * (histogram), sender_rate / sender_max_rate / sender_paused / sender_queued / sender_inflight
 * {phone_number_id} (gauges), oldest_due_job_age_seconds, and the totals of the `stats` op
 * (throttled and pairLimited are sends_total's throttle_sender and retry_pair).
 *
 * Errors: 0 or negative errno. Threads: any (no shared state).
 */
#ifndef AVP_METRICS_H
#define AVP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"

/* Upper bounds (seconds) of the latency histogram's buckets; one more
 * bucket, +Inf, follows. */
#define METRICS_LATENCY_BOUNDS 11

/* A histogram of request durations. Zero-initialised is empty. */
typedef struct metrics_hist {
    uint64_t buckets[METRICS_LATENCY_BOUNDS + 1]; /* per bucket, not cumulative; last: +Inf */
    uint64_t count;
    double sum;
} metrics_hist_t;

/* Adds one observation (seconds; negative or NaN counts as 0). */
void metrics_hist_observe(metrics_hist_t *h, double seconds);

/* The upper bound of bucket i (0 <= i < METRICS_LATENCY_BOUNDS). */
double metrics_hist_bound(int i);

typedef struct metrics_sender {
    const char *phone_number_id;
    double rate;     /* current sends per second: lowered by throttles, 0: unlimited */
    double max_rate; /* configured sends per second, 0: unlimited */
    size_t queued;
    unsigned inflight;
    bool paused;
} metrics_sender_t;

typedef struct metrics_outcome {
    const char *name;
    uint64_t n;
} metrics_outcome_t;

/* Everything one rendering shows. Pointers are borrowed for the call. */
typedef struct metrics_snapshot {
    uint64_t jobs[QUEUE_STATE_MAX + 1]; /* by state, [0] unused */
    const metrics_outcome_t *outcomes;
    size_t n_outcomes;
    const metrics_hist_t *latency;
    const metrics_sender_t *senders;
    size_t n_senders;
    double oldest_due_age; /* seconds the earliest due job has waited; 0: none */
    uint64_t submitted, duplicates, requests, possible_duplicates, commits, commit_failures;
    uint64_t purged, unreadable_jobs, http_connects, tls_handshakes;
    unsigned inflight;      /* jobs picked and not finished */
    unsigned http_inflight; /* requests on the wire */
    size_t active;
    size_t commit_backlog;
    unsigned connections;
    size_t watchers;
    size_t store_map_bytes, store_used_bytes;
    const char *version;
} metrics_snapshot_t;

/* Renders *s as Prometheus text format into a new malloc'd buffer
 * (*out, *len; NUL-terminated). Label values are escaped. */
int metrics_render(const metrics_snapshot_t *s, char **out, size_t *len);

/* Replaces `path` with `len` bytes of `text` atomically (write to
 * "<path>.tmp", rename). The file is created 0644. */
int metrics_write_file(const char *path, const char *text, size_t len);

#endif
