/*
 * scheduler.h - the dispatch scheduler: which job may go to the API now.
 *
 * A pure data structure driven by the caller's clock: no I/O, no libuv,
 * no LMDB, so unit tests run it with a fake clock. It holds a bounded
 * "active set" of jobs (Postfix's active queue) that the daemon fills from
 * the store; the store stays the source of truth.
 *
 * Structure (every decision is O(log n), never a scan of the queue):
 * - a min-heap of waiting jobs by (due time, id);
 * - per sender (phoneNumberId) three FIFO ready lists, one per priority;
 * - a round-robin ring of senders that have ready jobs and may send now;
 * - a min-heap of senders waiting for rate tokens; senders at their
 *   in-flight cap leave the ring until a request of theirs completes.
 * Rate limits: a token bucket per sender (rate, burst) and an optional
 * global bucket.
 *
 * Errors: 0 or negative errno. Threads: one (the loop's).
 */
#ifndef AVP_SCHEDULER_H
#define AVP_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sched sched_t;
typedef struct sched_sender sched_sender_t;

/* A job in the active set. Owned by the scheduler from sched_job_add until
 * sched_job_finish; the daemon may read every field and use `user`. */
typedef struct sched_job {
    uint64_t id;
    double due;        /* next attempt time */
    double expires_at; /* 0: none */
    uint16_t attempts;
    uint16_t max_attempts; /* 0: the daemon's default */
    uint8_t type;
    uint8_t priority;
    bool inflight;
    sched_sender_t *sender;
    void *user; /* the daemon's per-attempt state while in flight */
    /* scheduler-private */
    size_t heap_idx_;
    struct sched_job *next_;
} sched_job_t;

typedef struct sched_options {
    double rate_per_number;  /* tokens per second per sender; 0: unlimited */
    double burst_per_number; /* bucket depth; 0: = rate (at least 1) */
    double global_rate;      /* 0: none */
    unsigned max_inflight;
    unsigned max_inflight_per_number;
    size_t max_jobs; /* size of the active set */
    /* Per-sender rate override; NULL: rate_per_number for all. */
    double (*rate_for)(const char *phone_number_id, void *user);
    void *rate_user;
} sched_options_t;

/* Creates a scheduler; `opt` is copied. */
int sched_new(const sched_options_t *opt, sched_t **out);

/* Frees the scheduler and every job still in it. Accepts NULL. */
void sched_free(sched_t *s);

/* Re-reads rates and caps (config reload). Existing buckets keep their
 * tokens, clamped to the new depth. */
void sched_reconfigure(sched_t *s, const sched_options_t *opt);

/* True when the active set has room for another job. */
bool sched_has_room(const sched_t *s);

/* True when job `id` is in the active set. */
bool sched_contains(const sched_t *s, uint64_t id);

/*
 * Adds a job (copying the fields given in *tmpl: id, due, expires_at,
 * attempts, max_attempts, type, priority) for sender `phone_number_id`.
 * Returns -EEXIST if the id is already there, -ENOSPC when the active set is
 * full, -ENOMEM.
 */
int sched_job_add(sched_t *s, const sched_job_t *tmpl, const char *phone_number_id);

/*
 * The next job that may be sent at `now`, or NULL. The returned job is
 * marked in flight and counted against its sender's cap and rate. When NULL
 * is returned, *wake (if not NULL) is the earliest time at which a call may
 * return a job (INFINITY if none is known; a completion may come sooner).
 */
sched_job_t *sched_next(sched_t *s, double now, double *wake);

/* An in-flight job's attempt ended and it goes back to waiting until
 * `due`. */
void sched_job_retry(sched_t *s, sched_job_t *job, double due);

/* Removes a job for good (final state, or handed back to the store) and
 * frees it. Works for in-flight and waiting jobs. */
void sched_job_finish(sched_t *s, sched_job_t *job);

/* Looks up a job of the active set. */
sched_job_t *sched_job_find(const sched_t *s, uint64_t id);

/* Sender statistics for `stats`. */
typedef struct sched_sender_info {
    const char *phone_number_id;
    size_t queued; /* in the active set, not in flight */
    unsigned inflight;
    double rate;
} sched_sender_info_t;

/* Calls cb for every sender known to the scheduler. */
void sched_senders_each(const sched_t *s, void (*cb)(const sched_sender_info_t *, void *),
                        void *user);

/* Totals. */
size_t sched_jobs(const sched_t *s);
unsigned sched_inflight(const sched_t *s);

#endif
