/*
 * scheduler.h - the dispatch scheduler: which job may go to the API now.
 *
 * A pure data structure driven by the caller's clock: no I/O, no libuv,
 * no LMDB, so unit tests run it with a fake clock. It holds a bounded
 * "active set" of jobs (Postfix's active queue) that the daemon fills from
 * the store; the store stays the source of truth.
 *
 * The delivery policy it applies (docs/policy.md):
 * - Order keys: jobs of one key leave in id (= submission) order, one at a
 *   time. Only the first job of a key in the active set may be ready; the
 *   others wait behind it, also while it waits for a retry. The daemon keeps
 *   the invariant that makes this exact: for every key in the active set, the
 *   store holds no unfinished job of that key older than the newest one in
 *   memory that is not in memory too (see sched_order_last_id).
 * - Priorities: high > normal > bulk within a sender.
 * - Fairness: round robin across senders, and within a sender and a
 *   priority, round robin across campaigns ("lanes"), so one big campaign
 *   cannot starve the others or transactional sends (campaign NULL is a lane
 *   of its own).
 * - Rates: a token bucket per sender whose rate adapts (multiplicative
 *   decrease on a throttle, additive increase per success up to the
 *   configured rate) with a sliding window over its departures
 *   (SCHED_RATE_WINDOW), an optional global bucket, in-flight caps in all and
 *   per sender, and a token bucket per (sender, recipient) pair (Meta's pair
 *   limit) with 4^X s holds after a pair-limit answer.
 * - Pauses: per campaign, per sender (with a reason), all (operator), the
 *   account (automatic, with a reason), and timed holds (throttling,
 *   maintenance). Paused jobs stay in the set; in-flight ones complete.
 * - Expiry: jobs whose expires_at passed are handed back by
 *   sched_next_expired, whatever blocks them.
 *
 * Cost: every decision is O(log n) in the jobs of the active set (heaps,
 * hash tables, intrusive lists); nothing scans the queue. The only O(n)
 * function is sched_evict_paused, run once per pause.
 *
 * Memory: senders, campaigns, order keys, lanes and pairs are interned
 * objects shared by their jobs. Order keys and lanes are freed with their
 * last job; campaigns and pairs when they also hold no state worth keeping
 * (recent sends for the rate, a pause, a pair bucket that is not full or a
 * pair hold); idle pairs are bounded (SCHED_IDLE_PAIRS_MAX) by forgetting
 * the ones closest to full first. Senders are forgotten likewise once no
 * job, pair entry or pause refers to them and their bucket, departure
 * window, hold and adapted rate carry nothing a new entry would not
 * (SCHED_IDLE_SENDERS_MAX, SCHED_SENDER_ADAPT_MEMORY). Order keys and recipients are kept as
 * 64-bit hashes: a collision only makes two keys share a FIFO (or two
 * recipients a pair bucket), which is never less safe.
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

/*
 * Besides its token bucket, a sender never sends more than floor(rate) jobs
 * within SCHED_RATE_WINDOW seconds, counted at departure (the time the
 * caller reports with sched_job_posted; until then a picked job counts as
 * departing at any moment, so it blocks the window): a full bucket
 * after an idle spell cannot add its burst to a second that already carries
 * the full rate, so no second at the API holds more than the rate. The
 * window is 1% longer than a second so that jitter of up to 10 ms between
 * departure and arrival (the `sending` commit, the network) does not move a
 * send into a second that is already full; the sustained rate is therefore
 * about 1% under the configured one. Rates above SCHED_WINDOW_RATE_MAX rely
 * on the bucket alone (the window keeps one departure time per allowed
 * send). The global rate (sched_options_t.global_rate) has a window of its
 * own over all senders, with the same rules.
 */
#define SCHED_RATE_WINDOW 1.01
#define SCHED_WINDOW_RATE_MAX 4096

/* Most pair entries kept for pairs without jobs in the active set. */
#define SCHED_IDLE_PAIRS_MAX (1u << 20)
/* Most senders kept without jobs, pair entries or a pause (the ones whose
 * state would soonest be that of a new entry are forgotten first), and how
 * long a sender that has none keeps a rate it adapted down after throttles,
 * seconds (a new entry starts at the configured rate). */
#define SCHED_IDLE_SENDERS_MAX (1u << 14)
#define SCHED_SENDER_ADAPT_MEMORY 600.0
/* Longest pause reason kept, bytes (longer ones are cut). */
#define SCHED_REASON_MAX 200

/* A job in the active set. Owned by the scheduler from sched_job_add until
 * sched_job_finish; the daemon may read every public field and use `user`. */
typedef struct sched_job {
    uint64_t id;
    double due;        /* next attempt time */
    double expires_at; /* 0: none */
    uint16_t attempts;
    uint16_t max_attempts; /* 0: the daemon's default */
    uint8_t type;
    uint8_t priority;
    bool inflight;
    bool late_; /* scheduler-private: it had its turn, or its key held it (lane_append) */
    sched_sender_t *sender;
    void *user; /* the daemon's per-attempt state while in flight */
    /* scheduler-private */
    uint8_t where_;
    bool win_pending_;                 /* its departure is not in the window yet */
    bool win_slot_;                    /* this attempt has a place in the window (win_seq_) */
    uint8_t marks;                     /* the caller's (copied at add) */
    uint32_t wait_idx_;                /* in the waiting set (heap or FIFO) */
    uint32_t exp_idx_;                 /* in the expiry set (heap or FIFO) */
    uint32_t win_seq_;                 /* its place in the sender's window (low 32 bits) */
    struct sched_job *next_, *prev_;   /* lane ready list or pair park list */
    struct sched_job *knext_, *kprev_; /* order key list, by id */
    struct sched_okey *okey_;
    struct sched_campaign *camp_;
    struct sched_lane *lane_; /* while ready */
    struct sched_pair *pair_;
} sched_job_t;

/* What a job belongs to, given when it is added. Strings are copied or
 * hashed; none is kept by reference. */
typedef struct sched_keys {
    const char *phone_number_id; /* required */
    const char *campaign;        /* NULL: none */
    const char *order_key;       /* the effective key (queue_order_key); NULL: the job's id */
    const char *to;              /* recipient as given (digits are used); NULL: no pair */
} sched_keys_t;

typedef struct sched_options {
    double rate_per_number;  /* tokens per second per sender; 0: unlimited */
    double burst_per_number; /* bucket depth; 0: = rate (at least 1) */
    double global_rate;      /* 0: none */
    unsigned max_inflight;
    unsigned max_inflight_per_number;
    size_t max_jobs;      /* size of the active set */
    double pair_interval; /* seconds between sends to one pair on average; 0: no pacing */
    double pair_burst;    /* pair bucket depth (>= 1) */
    /* Per-sender rate override; NULL: rate_per_number for all. */
    double (*rate_for)(const char *phone_number_id, void *user);
    void *rate_user;
} sched_options_t;

/* Creates a scheduler; `opt` is copied. */
int sched_new(const sched_options_t *opt, sched_t **out);

/* Frees the scheduler and every job still in it. Accepts NULL. */
void sched_free(sched_t *s);

/* Re-reads every option (config reload): rates (overrides included; a
 * sender's adapted rate is clamped to its new maximum), bursts, the global
 * rate, the caps, the active-set size (jobs over a smaller size stay) and
 * pair pacing. Buckets keep their tokens, clamped to the new depth. */
void sched_reconfigure(sched_t *s, const sched_options_t *opt);

/* True when the active set has room for another job. */
bool sched_has_room(const sched_t *s);

/* True when job `id` is in the active set. */
bool sched_contains(const sched_t *s, uint64_t id);

/*
 * Adds a job (copying the fields given in *tmpl: id, due, expires_at,
 * attempts, max_attempts, type, priority) with its keys. A job older than
 * the first one of its order key in the set becomes the key's first.
 * Returns -EEXIST if the id is already there, -ENOSPC when the active set is
 * full, -EINVAL without a phoneNumberId, -ENOMEM.
 */
int sched_job_add(sched_t *s, const sched_job_t *tmpl, const sched_keys_t *keys);

/*
 * The next job that may be sent at `now`, or NULL. The returned job is
 * marked in flight and counted against its sender's cap and rate, the
 * global rate, its pair bucket and its campaign's send rate. When NULL is
 * returned, *wake (if not NULL) is the earliest time at which a call may
 * return a job (INFINITY if none is known; a completion may come sooner).
 */
sched_job_t *sched_next(sched_t *s, double now, double *wake);

/* The request of in-flight `job` left at `now`: its departure enters the
 * sender's rate window (SCHED_RATE_WINDOW). A job whose attempt ends
 * without this call counts as departed when it ends. */
void sched_job_posted(sched_t *s, sched_job_t *job, double now);

/*
 * The request of in-flight `job` really left at `when`, as the HTTP engine
 * tells at its answer: when that is later than what sched_job_posted
 * recorded (the request waited between the hand-over and the wire, on an
 * HTTP thread or a busy loop), the window counts the later time, so the
 * next sends keep their distance from when this one really left. Never
 * makes a departure earlier. After sched_job_posted, before the attempt ends.
 */
void sched_job_departed(sched_t *s, sched_job_t *job, double when);

/* A job (not in flight) whose expires_at is <= now, or NULL. The caller
 * records it as expired and calls sched_job_finish. */
sched_job_t *sched_next_expired(sched_t *s, double now);

/* An in-flight job's attempt ended and it goes back to waiting until
 * `due`. It stays the first of its order key, so later jobs of the key wait
 * for it. Never fails. */
void sched_job_retry(sched_t *s, sched_job_t *job, double due);

/* Removes a job for good (final state, or handed back to the store) and
 * frees it. Works for in-flight and waiting jobs. The next job of its order
 * key may go. */
void sched_job_finish(sched_t *s, sched_job_t *job);

/* Calls fn(job, arg) for each job of sender `phone_number_id` that waits
 * for its due time (not ready, not in flight) and has any of `marks`. fn
 * may move the job's due time (sched_job_retry), nothing else. Returns the
 * number of calls. O(active set): for operator actions. */
size_t sched_sender_waiting_each(sched_t *s, const char *phone_number_id, uint8_t marks,
                                 void (*fn)(sched_job_t *job, void *arg), void *arg);

/* Looks up a job of the active set. */
sched_job_t *sched_job_find(const sched_t *s, uint64_t id);

/* Largest id of the active set's jobs of order key `order_key`, 0 if none
 * (the refill loads the store's unfinished jobs of the key between this and
 * the job it brings in, and a new job stays in the store if there is one,
 * to keep the order invariant). */
uint64_t sched_order_last_id(const sched_t *s, const char *order_key);

/* --- Outcomes that steer the policy ------------------------------------ */

/* A successful send of `job` (call before sched_job_finish): the sender's
 * rate grows back by one additive step; the pair's 4^X counter resets. */
void sched_job_sent(sched_t *s, sched_job_t *job, double now);

/* The sender of `job` was throttled (429 / 130429): its rate is cut by half
 * (at most once per second), its bucket emptied, and it sends nothing
 * before now + hold (Retry-After; 0: none). */
void sched_sender_throttled(sched_t *s, sched_job_t *job, double now, double hold);

/* Holds in a row that double the hold's length (base, 2, 4, 8 times). */
#define SCHED_HOLD_STRIKES_MAX 4

/* The sender of `job` is in maintenance (131057, 2494100): it sends nothing
 * for `base` seconds, doubled for each such hold in a row (an answer to a
 * request sent after the previous hold ended, with no success between; at
 * most 2^(SCHED_HOLD_STRIKES_MAX-1) times `base`), or for `at_least`
 * seconds when that is longer (the answer's Retry-After: honoured as given,
 * never doubled). Answers to requests already in flight when a hold began
 * do not lengthen it. A success or an operator's resume of the sender
 * starts the count over. `reason` is shown in stats while the hold lasts.
 * Returns the hold's end. */
double sched_sender_hold(sched_t *s, sched_job_t *job, double now, double base, double at_least,
                         const char *reason);

/* The pair of `job` hit Meta's pair limit (131056): the pair sends nothing
 * for 4^X seconds (X = 0, 1, 2 ... for consecutive hits), or `at_least`
 * seconds when that is longer (the answer's Retry-After). Returns the time
 * the hold ends (the job's next due time). */
double sched_pair_limited(sched_t *s, sched_job_t *job, double now, double at_least);

/* The earliest time at or after `from` at which the pair pacing and a
 * pair-limit hold let `job`'s pair send one more, as things stand (the
 * pair sending nothing else meanwhile); `from` when nothing holds it back.
 * For the due time a retry is stored with: the backoff's end alone was a
 * nextAttemptAt that could lie long before the attempt. */
double sched_pair_ready(const sched_t *s, const sched_job_t *job, double from);

/* The last attempt of `job` never reached Meta: it never left (picked,
 * then paused, held, cancelled or without a request; a connect failure),
 * or AvenPing refused it itself (401, its plan, its validation, its own
 * 429). Meta's pair limit counts what arrives there, so the pair gets back
 * the send the pick took (its average and, within the same burst, its
 * burst); the wait of jobs parked behind it is not shortened (they wake as
 * planned). */
void sched_pair_refund(sched_t *s, sched_job_t *job, double now);

/* Timed hold of everything (Graph app/account throttling). */
void sched_hold_all(sched_t *s, double until);

/* The end of the hold of everything, or 0 when none was set. */
double sched_hold_all_until(const sched_t *s);

/* --- Pauses ---------------------------------------------------------------- */

/* Pauses or resumes a sender; `reason` (copied, may be NULL) is shown in
 * stats. Creates the sender if it is unknown (a pause loaded at start-up).
 * Returns -ENOMEM. */
int sched_sender_pause(sched_t *s, const char *phone_number_id, bool paused, const char *reason);

/* Pauses or resumes a campaign (may be unknown yet). Returns -ENOMEM. */
int sched_campaign_pause(sched_t *s, const char *campaign, bool paused);

/* Takes (hold true) or releases a hold on a campaign: while one is held,
 * none of its jobs is picked, as when it is paused, but the operator's
 * pause (sched_campaign_paused) is not changed. Holds count: each take is
 * released once. For a cancel that walks the campaign page by page, so
 * that no job of a page not walked yet leaves meanwhile. -ENOMEM. */
int sched_campaign_hold(sched_t *s, const char *campaign, bool hold);

/* Pauses or resumes everything (operator `all`). */
void sched_pause_all(sched_t *s, bool paused);

/* Pauses or resumes the account (automatic, with a reason). */
void sched_account_pause(sched_t *s, bool paused, const char *reason);

/* Whether a cancel walks `job`'s campaign now (sched_campaign_hold). */
bool sched_job_campaign_held(const sched_t *s, const sched_job_t *job);

/* Paused by the operator (sched_campaign_pause); a hold is not a pause. */
bool sched_campaign_paused(const sched_t *s, const char *campaign);
bool sched_sender_paused(const sched_t *s, const char *phone_number_id);
/* As sched_sender_paused; *reason gets the pause's reason as given to
 * sched_sender_pause (NULL: none, or not paused). */
bool sched_sender_pause_reason(const sched_t *s, const char *phone_number_id, const char **reason);
bool sched_all_paused(const sched_t *s);
/* The account's pause reason, NULL when it is not paused. */
const char *sched_account_reason(const sched_t *s);

/* True when a job with these keys may not be sent now because of a pause
 * (all, account, its sender or its campaign): the refill leaves such jobs in
 * the store. */
bool sched_keys_paused(const sched_t *s, const char *phone_number_id, const char *campaign);

/* Whether `job` may not be sent now for a pause: all, the account, its
 * sender or its campaign (a job already picked stays picked; the caller
 * decides). */
bool sched_job_paused(const sched_t *s, const sched_job_t *job);

/* Until when a hold keeps `job` back: all sending (Graph throttling), its
 * sender (429, maintenance) or its pair (131056); in the past when none. */
double sched_job_held_until(const sched_t *s, const sched_job_t *job);

/* Removes from the active set every job that cannot go because of a pause
 * (not in flight), with the later jobs of its order key, so paused jobs do
 * not take the room of others. Returns how many were removed (they stay
 * unfinished in the store). O(active set); run once per pause. */
size_t sched_evict_paused(sched_t *s);

/* --- Statistics ---------------------------------------------------------- */

/* Sends per second of a campaign over the last few seconds (0 when unknown). */
double sched_campaign_rate(const sched_t *s, const char *campaign, double now);

/* Jobs of a campaign in the active set (NULL: jobs without a campaign). */
size_t sched_campaign_jobs(const sched_t *s, const char *campaign);

/* Sender statistics for `stats`. */
typedef struct sched_sender_info {
    const char *phone_number_id;
    size_t queued; /* in the active set, not in flight */
    unsigned inflight;
    double rate;        /* current (adapted) rate, sends/s; 0: unlimited */
    double max_rate;    /* configured rate */
    bool paused;        /* operator or automatic pause, or a hold in force */
    const char *reason; /* why, or NULL */
} sched_sender_info_t;

/* Calls cb for every sender known to the scheduler; `now` decides whether a
 * hold is still in force. */
void sched_senders_each(const sched_t *s, double now,
                        void (*cb)(const sched_sender_info_t *, void *), void *user);

/* The phoneNumberId of a sender (lives while the sender has a job in the
 * active set). */
const char *sched_sender_id(const sched_sender_t *sd);
/* The campaign `job` was added with (NULL: none); the string lives as long
 * as the job is in the active set. */
const char *sched_job_campaign(const sched_job_t *job);

/* Totals. */
size_t sched_jobs(const sched_t *s);
unsigned sched_inflight(const sched_t *s);
/* Interned objects (for benchmarks and tests). */
typedef struct sched_counts {
    size_t senders, campaigns, okeys, lanes, pairs, idle_pairs, idle_senders;
} sched_counts_t;
void sched_object_counts(const sched_t *s, sched_counts_t *out);

#endif
