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
#include "http_pool.h"
#include "ipc.h"
#include "metrics.h"
#include "queue.h"
#include "scheduler.h"

/* Jobs the scheduler holds in memory; the rest wait in the store. */
#define ACTIVE_SET_MAX 100000
/* Room beyond ACTIVE_SET_MAX for new jobs of campaigns that have fewer than
 * ACTIVE_FAIR_MIN jobs in memory: a campaign bigger than the active set
 * fills it in due order, and without this a message submitted after it
 * would wait in the store behind all of it. */
#define ACTIVE_SET_RESERVE 10000
#define ACTIVE_FAIR_MIN 1000

/* Jobs the scheduler may hand out beyond the max_inflight request slots:
 * their `sending` state is being committed, or is durable and they wait
 * for a slot. Sending at R jobs/s while a commit takes C seconds needs
 * about 1.5 * R * C of them (40,000/s at 20 ms: 1,200). dispatch.c picks
 * nothing more while max_inflight durable attempts already wait, so when
 * the API is the bottleneck few jobs are `sending` without a request. */
#define DISPATCH_AHEAD 2048

/* Operator pauses of distinct senders and campaigns at once: each is an
 * object in memory and a record in the store, and the names are the
 * client's, so their number is bounded; a pause beyond it is refused
 * (QUEUE_FULL). Automatic sender pauses (the API refused the sender) are
 * neither refused nor counted: counted, 10,000 jobs of numbers not in the
 * account (a file whose columns were swapped) refused every operator
 * pause from then on, a campaign's in an emergency too, restarts
 * included. */
#define DAEMON_MAX_PAUSES 10000
/* The reason stored with an operator's sender or campaign pause. */
#define OPERATOR_PAUSE_REASON "paused by the operator"

struct attempt;

/* The daemon's marks on a job: sched_job_t.marks in memory, the record's
 * flags in the store (queue_job_t.flags, queue_update_t.set_flags). */
#define DAEMON_JOB_DAY_RESCHEDULED 0x01 /* 131049: rescheduled 24 h once */
#define DAEMON_JOB_MAYBE_SENT 0x02      /* in flight at a crash: may have been delivered */
/* Cancelled while its attempt was picked or in flight: the attempt ends as
 * it ends (sent, failed, uncertain) but is never retried. Stored too (a
 * flags-only update), so that a restart that finds the job `sending`
 * cancels it instead of sending it again; `retry` clears it. */
#define DAEMON_JOB_CANCEL 0x80
/* In memory only: its due time is the end of a hold (a 429's Retry-After
 * or maintenance of its sender; also set when a hold of any kind sends a
 * picked job back), so an operator's resume of the sender makes it due at
 * once unless another hold still binds (dispatch.c: release_held). Cleared
 * when its request leaves. */
#define DAEMON_JOB_HELD 0x04
/* In memory only, with DAEMON_JOB_HELD: the hold sent the job back before
 * its request left, so its record says `queued` (a held answer's retry says
 * `retrying`); the release records the state the job already shows. */
#define DAEMON_JOB_HELD_QUEUED 0x08

#define DAEMON_UNREADABLE_RING 64

typedef struct daemon_stats {
    unsigned long long submitted;
    unsigned long long duplicates;
    unsigned long long sends;
    unsigned long long maybe_duplicates; /* transport failure after the request left */
    unsigned long long by_action[CLASSIFY_RESCHEDULE_DAY + 1];
    unsigned long long commits;
    unsigned long long commit_ops;
    unsigned long long commit_failures; /* failed batches (each retried) */
    metrics_hist_t http_latency;        /* every send request that got an answer or failed */
    unsigned long long purged;          /* finished jobs deleted after retention_s */
    /* Jobs the due index names whose stored record cannot be read
     * (damage): left in the store, never sent, each logged once. The ring
     * remembers the last DAEMON_UNREADABLE_RING reported, so more than that
     * many can be counted and logged again on a later pass. */
    unsigned long long unreadable;
    uint64_t unreadable_ids[DAEMON_UNREADABLE_RING];
    unsigned unreadable_next;
} daemon_stats_t;

/* A `watch` stream and its filter (NULL: every campaign). */
/* events.c: a job's state change rendered for the watch streams when it
 * is recorded and sent once the change is durable (daemon_event_job_new).
 * `settle_id` is dispatch.c's (see daemon_t.settling). */
typedef struct daemon_event {
    struct daemon *d;
    struct daemon_event *prev, *next; /* daemon_t.events_pending */
    uint64_t settle_id;               /* 0: none */
    char *campaign;                   /* NULL: none; points into data */
    size_t len;                       /* of the line at data */
    char data[];                      /* the line, then the campaign's name with its NUL */
} daemon_event_t;

typedef struct daemon_watcher {
    ipc_stream_t *st;
    char *campaign;
} daemon_watcher_t;

typedef struct daemon {
    uv_loop_t *loop;
    config_t cfg;
    char *token;
    queue_t *q;
    commit_t *commit;
    ipc_server_t *ipc;
    http_pool_t *http;
    sched_t *sched;
    uv_signal_t sig_int, sig_term, sig_hup;
    uv_timer_t wake;       /* next due job or rate token */
    uv_idle_t pump_idle;   /* runs the pump once at the next loop turn */
    uv_timer_t stop_timer; /* bound on in-flight requests at shutdown */
    uv_timer_t probe;      /* account breaker: next GET /v2/me while the account is paused */
    unsigned probe_failures;
    /* Bumped by each token change, as the HTTP engines take it (main.c:
     * swap_token): a send's answer is judged against the token it carried
     * (dispatch.c). */
    unsigned token_gen;
    /* Requests in a row that got no HTTP answer (never left: connect, DNS,
     * TLS handshake; or a reset or timeout after they left), no answer
     * between: DISPATCH_UNREACHABLE_AFTER of them pause the
     * account as unreachable (dispatch.c). A request counts only when no
     * answer arrived since it started (last_answer, uv_hrtime(): the
     * monotonic clock, so that a step of the wall clock changes nothing). */
    unsigned not_sent_run;
    uint64_t last_answer;
    bool warned_no_wamid; /* a 2xx {"success":true} without a wamid was logged once */
    bool probing;         /* a probe request is in flight */
    bool spill;           /* the store holds due jobs not in the active set */
    /* New jobs did not fit and wait in the store, all after the refill
     * cursor (refill_due, refill_id): the next refill may start there
     * instead of walking the active set's own entries again. `spill` asks
     * for a walk from the start. */
    bool spill_new;
    /* Paused jobs were left in the store (at activation, by an eviction or
     * a refill) since the last full refill that found none: a new job then
     * goes into memory only if no older unfinished job of its order key is
     * out of memory (dispatch_activate). */
    bool paused_left;
    double refill_due;
    uint64_t refill_id;
    /* The newest job id dispatch_activate was given (at start: the store's
     * newest). New jobs reach it in id order; a refill leaves newer ones to
     * it: committed, they are in the store before their batch's callbacks
     * run and while they wait in the FIFO (dispatch_activate_later). */
    uint64_t activated_id;
    /* The jobs with store writes pending that take them out of the due
     * index after they left the active set while the store still shows them
     * queued or retrying (expiry, cancel): a refill would load them again,
     * so it skips them (dispatch_settle_begin). An id counts once per write
     * (open addressing, id 0: a free slot). Outcomes after a request need
     * no such entry: the store shows those jobs `sending`, which a refill
     * skips. `settling_untracked`: such writes whose id found no room in
     * the set; no refill runs while there are any. */
    struct daemon_settle_slot *settling;
    size_t settling_cap, settling_n, settling_untracked;
    double paused_expiry; /* earliest expiresAt of a paused job left in the store; 0: none */
    /* dispatch.c: attempts whose `sending` is durable, waiting for one of
     * the max_inflight request slots, in FIFO order (at most
     * DISPATCH_AHEAD of them). */
    struct attempt *post_head, *post_tail;
    size_t post_waiting;
    /* dispatch.c: committed new jobs on their way into the active set
     * (dispatch_activate_later), a FIFO drained a chunk per loop turn from
     * act_idle, so that the next submits are read and committed between
     * chunks. */
    struct pending_act *act_first, *act_last;
    size_t act_count;
    size_t last_commit_ops; /* operations of the batch whose callbacks run now */
    uv_idle_t act_idle;
    uint64_t unfinished; /* queued + retrying + sending, as of the last commit */
    unsigned long long stop_uncertain;
    uint64_t stop_uncertain_first;
    size_t pauses; /* senders and campaigns paused now (DAEMON_MAX_PAUSES) */
    bool stopping;
    /* While daemon_finish_stop cancels what is on the wire: jobs made
     * uncertain by it are counted (stop_uncertain*; one log line for all,
     * not one each). */
    bool cancelling_all;
    bool stop_finishing;
    bool closing;
    int exit_code;
    daemon_stats_t stats;
    /* Life cycle under a service manager (main.c): the command line, kept
     * for reloads (its strings point into argv); STATUS= and WATCHDOG=1
     * pings (sdnotify.h). */
    config_flags_t flags;
    uv_timer_t notify_timer;         /* runs only when $NOTIFY_SOCKET is set */
    uint64_t watchdog_usec;          /* 0: no watchdog expected */
    uint64_t status_ms;              /* loop time of the last rate sample */
    unsigned long long status_sends; /* stats.sends at that sample */
    double status_rate;              /* sends per second over the last sample */
    /* events.c: watch streams (at most one per connection, so bounded by
     * max_connections), the metrics file's timer, its write in progress on
     * the thread pool (NULL: none) and whether to write again after it. */
    daemon_watcher_t *watchers;
    size_t n_watchers, cap_watchers;
    uv_timer_t metrics_timer;
    struct metrics_job *metrics_job;
    bool metrics_again;
    /* Events waiting for their state change's commit (bounded by the
     * commit backlog); freed by daemon_watchers_close if never sent. */
    daemon_event_t *events_pending;

    /* Durability: retention (retention.c) and failed commits (handlers.c). */
    uv_timer_t purge_timer;   /* periodic purge of finished jobs */
    bool purge_running;       /* a purge waits in the committer */
    bool socket_activated;    /* the listener came from the service manager */
    bool metrics_failing;     /* the metrics file's last write failed: log again only on recovery */
    double commit_err_logged; /* last log line about a failed commit (one a second) */

    /* The account (dispatch.c): when a probe last resumed it (0: never),
     * whether its pause waits for an operator (Meta 0, 190: no probe), and
     * the last Graph throttling, shown in stats while its hold lasts. */
    double account_resumed_at;
    bool account_operator;
    /* A probe resumed the account (GET /v2/me answered 2xx, or could not
     * tell: not served): one job at a time goes until a send's answer
     * shows the account's checks pass. */
    bool account_trial;
    /* The probe that started the trial got the v2 API's success envelope
     * from GET /v2/me: api_base names the API itself. */
    bool probe_envelope;
    unsigned probe_token_gen; /* token_gen of the probe in flight */
    char throttle_reason[160];

    /* stderr is the journal's stream (daemon_log_init): lines carry an
     * sd-daemon priority prefix instead of a level word. */
    bool log_journal;
} daemon_t;

/* log.c: sets d->log_journal from $JOURNAL_STREAM, which the service
 * manager sets to the device and inode of the stream it connected stdout
 * and stderr to: true only when stderr is that stream (not a terminal, a
 * file or a pipe that a child of the service redirected it to). */
void daemon_log_init(daemon_t *d);

/* log.c: one line on stderr, if `level` is within the configured log
 * level: to the journal "<level>text" (journald keeps the level), else
 * "error: text", "warning: text", "text" (info), "debug: text". */
void daemon_log(const daemon_t *d, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define dlog daemon_log

/* log.c: the line of a start that fails, whatever the log level:
 * "avenpingd: text" (with the "<3>" prefix to the journal). */
void daemon_fatal(const daemon_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wall-clock time in unix seconds (due times are stored as wall time). */
double daemon_now(void);

/* handlers.c: adds `name` to `o`: {status, code, message, metaCode (null
 * without one)}, or null when `err` is NULL or holds no error. The same
 * shape in `get`'s lastError and in `watch` events. */
void daemon_error_json(cJSON *o, const char *name, const queue_error_info_t *err);

/* handlers.c: the ipc request callback. */
void daemon_request_cb(ipc_req_t *req, void *user);
/* Recomputes d->unfinished from the store's counters. */
void daemon_refresh_unfinished(daemon_t *d);

/* dispatch.c */
/* Puts a newly committed job into the active set (or marks the store as
 * holding more than the active set). keys->order_key is the effective key
 * (queue_order_key). */
void dispatch_activate(daemon_t *d, const sched_job_t *tmpl, const sched_keys_t *keys);
/*
 * The same, for a job whose submit is being answered now: the job goes into
 * a FIFO (its strings copied) and into the active set within the next loop
 * turns, a chunk per turn, so the loop reads the client's next submits, and
 * the committer writes them, between chunks instead of after the whole
 * batch (putting a job into the scheduler is the loop's largest cost per
 * new job). Only a batch of many jobs (ACT_BATCH_MIN) waits like this, and
 * any while others wait (their order); a small batch goes into memory at
 * once, so a lone submit is not delayed. Until then the job is in the store
 * but not in memory: whatever changes a job it finds in the store only if
 * it is not in memory (cancel) must call dispatch_activate_pending first.
 * On an error nothing is queued and the caller activates at once.
 */
int dispatch_activate_later(daemon_t *d, const sched_job_t *tmpl, const sched_keys_t *keys);
/* Activates every job dispatch_activate_later still holds (a barrier). */
void dispatch_activate_pending(daemon_t *d);
/* Drops the jobs dispatch_activate_later holds (they stay in the store). */
void dispatch_pending_free(daemon_t *d);
/* A store write that takes job `id` out of the due index (an expiry, a
 * cancel) is queued for a job that left the active set (or never was
 * there): until dispatch_settle_end with the same id, refills leave the
 * job alone. Each begin is ended once, when the write has its result. */
void dispatch_settle_begin(daemon_t *d, uint64_t id);
void dispatch_settle_end(daemon_t *d, uint64_t id);
/* Frees the set of dispatch_settle_begin. */
void dispatch_settle_free(daemon_t *d);
/* Loads the stored pauses into the scheduler (start-up). */
int dispatch_load_pauses(daemon_t *d);
/* Applies an operator's pause or resume (kind: queue_pause_kind_t) in memory
 * and records it in the store; `done(arg)` runs once it is durable. */
int dispatch_set_pause(daemon_t *d, int kind, const char *name, bool paused, commit_update_cb done,
                       void *arg);
/* Whether the attempt of `job`, which is picked (job->user set), has
 * started its request: false while its `sending` record is being committed
 * or it waits for a request slot (then it has not left and, once the job
 * leaves the scheduler, never will: the attempt is dropped when its turn
 * comes). */
bool dispatch_attempt_started(const sched_job_t *job);
/* Stopping: the attempts waiting for a request slot never left; they are
 * recorded as due again and leave the in-flight count. */
void dispatch_release_waiting(daemon_t *d);
/* Runs the scheduler once at the next loop turn. */
void dispatch_pump_soon(daemon_t *d);
/* After a reload: requests that wait for a slot start in the slots a
 * larger max_inflight opened (they waited for a request in flight to
 * end: up to request_timeout_ms against a hanging API), and the
 * scheduler runs for new rates and caps. */
void dispatch_reconfigured(daemon_t *d);
/* After a reload that changed the token: an account pause a probe would
 * lift (401, plan, no account, unreachable; not one waiting for an
 * operator) is probed now, and the probes' backoff starts over. The new
 * token is what such a pause most often waits for (a token regenerated in
 * the dashboard revokes the old one at once), and the next scheduled probe
 * may be up to backoff_max_ms away. */
void dispatch_token_changed(daemon_t *d);
/* Commit statistics hook (refreshes counters, resumes a waiting refill). */
void dispatch_on_commit_stat(size_t ops, double seconds, void *arg);
/* Commit failure hook: counts failed batches and logs them (the first of a
 * run at once, then at most one line a second) and their end. */
void dispatch_on_commit_fail(int rc, unsigned in_row, void *arg);

/* events.c: job state changes for `watch` streams. Each costs nothing when
 * nobody watches. For state changes already durable: daemon_event_job
 * looks the job's campaign up in the store; daemon_event_job_in is given it
 * (NULL: none). `wamid`, `err` may be NULL. */
void daemon_event_job(daemon_t *d, uint64_t id, int state, const char *wamid,
                      const queue_error_info_t *err);
void daemon_event_job_in(daemon_t *d, uint64_t id, int state, const char *campaign,
                         const char *wamid, const queue_error_info_t *err);
/* The same event, rendered now (with the campaign read from the store) to
 * be sent by daemon_event_send once the state change is durable, so that a
 * watcher never hears of a state the store may still lose. NULL when
 * nobody watches or out of memory (then there is no event). The event is
 * d's until daemon_event_send or daemon_event_free (which accepts NULL);
 * daemon_watchers_close frees those never sent. */
daemon_event_t *daemon_event_job_new(daemon_t *d, uint64_t id, int state, const char *wamid,
                                     const queue_error_info_t *err);
/* Sends `ev` to the watch streams it concerns and frees it. NULL: nothing. */
void daemon_event_send(daemon_t *d, daemon_event_t *ev);
void daemon_event_free(daemon_t *d, daemon_event_t *ev);
/* Answers a `watch` request: the connection becomes an event stream. */
void daemon_watch_add(daemon_t *d, ipc_req_t *req, const char *campaign);
/* Releases every watch stream (shutdown). */
void daemon_watchers_close(daemon_t *d);
/* Starts rewriting cfg.metrics_file every cfg.metrics_interval_ms (nothing
 * when no file is configured); the timer handle is initialised either way so
 * shutdown can close it. */
void daemon_metrics_start(daemon_t *d);
/* Renders the metrics now and replaces the file on the libuv thread pool
 * (file system calls may wait for the disk; the loop does not). While a
 * write is in progress, the next one is rendered when it ends. Also the
 * last time, at shutdown: the loop runs until that write has ended. */
void daemon_metrics_write(daemon_t *d);
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
