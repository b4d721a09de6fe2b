/*
 * daemon.h - the daemon's own state, shared by the files of daemon/ only.
 *
 * One struct daemon holds the loop and every module; nothing is global.
 * main.c owns its life (start-up, signals, shutdown), handlers.c answers
 * socket requests, dispatch.c moves jobs from the scheduler to the HTTP
 * engine and records their outcomes. Loop thread only.
 */
#ifndef AVP_DAEMON_H
#define AVP_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "classify.h"
#include "commit.h"
#include "config.h"
#include "http.h"
#include "ipc.h"
#include "queue.h"
#include "scheduler.h"

/* Jobs the scheduler holds in memory; the rest wait in the store. */
#define ACTIVE_SET_MAX 100000

typedef struct daemon_stats {
    unsigned long long submitted;
    unsigned long long duplicates;
    unsigned long long sends;
    unsigned long long maybe_duplicates; /* transport failure after the request left */
    unsigned long long by_action[CLASSIFY_RESCHEDULE_DAY + 1];
    unsigned long long commits;
    unsigned long long commit_ops;
    unsigned long long purged; /* finished jobs deleted after retention_s */
} daemon_stats_t;

typedef struct daemon {
    uv_loop_t *loop;
    config_t cfg;
    char *token;
    queue_t *q;
    commit_t *commit;
    ipc_server_t *ipc;
    http_engine_t *http;
    sched_t *sched;
    uv_signal_t sig_int, sig_term, sig_hup;
    uv_timer_t wake;       /* next due job or rate token */
    uv_idle_t pump_idle;   /* runs the pump once at the next loop turn */
    uv_timer_t stop_timer; /* bound on in-flight requests at shutdown */
    bool spill;            /* the store holds due jobs not in the active set */
    uint64_t unfinished;   /* queued + retrying + sending, as of the last commit */
    bool stopping;
    bool stop_finishing;
    bool closing;
    int exit_code;
    daemon_stats_t stats;

    /* Durability: retention (retention.c) and failed commits (handlers.c). */
    uv_timer_t purge_timer;   /* periodic purge of finished jobs */
    bool purge_running;       /* a purge waits in the committer */
    double commit_err_logged; /* last log line about a failed commit (one a second) */
} daemon_t;

/* log.c: one line on stderr with an sd-daemon priority prefix, if `level`
 * is within the configured log level. */
void daemon_log(const daemon_t *d, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define dlog daemon_log

/* Wall-clock time in unix seconds (due times are stored as wall time). */
double daemon_now(void);

/* handlers.c: the ipc request callback. */
void daemon_request_cb(ipc_req_t *req, void *user);
/* Recomputes d->unfinished from the store's counters. */
void daemon_refresh_unfinished(daemon_t *d);

/* dispatch.c */
/* Puts a newly committed job into the active set (or marks the store as
 * holding more than the active set). */
void dispatch_activate(daemon_t *d, const sched_job_t *tmpl, const char *phone_number_id);
/* Runs the scheduler once at the next loop turn. */
void dispatch_pump_soon(daemon_t *d);
/* Commit statistics hook (refreshes counters, resumes a waiting refill). */
void dispatch_on_commit_stat(size_t ops, double seconds, void *arg);

/* retention.c: purges finished jobs older than retention_s in small
 * batches on the committer's worker thread. retention_init once with the
 * other handles (the timer is closed with them); retention_start after the
 * committer exists; retention_stop when stopping. */
void retention_init(daemon_t *d);
void retention_start(daemon_t *d);
void retention_stop(daemon_t *d);

/* main.c: completes a stop once nothing is in flight. */
void daemon_finish_stop(daemon_t *d);

#endif
