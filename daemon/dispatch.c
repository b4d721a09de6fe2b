/*
 * dispatch.c - from the scheduler to the API and back: the pump, one
 * attempt per job (durable `sending` first), classification of the answer,
 * the recorded outcome, and refilling the active set from the store.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon.h"

/* --- routes ----------------------------------------------------------- */

static const char *route_for(int type)
{
    switch (type) {
    case QUEUE_TYPE_TEXT:
        return "/v2/messages/send/text";
    case QUEUE_TYPE_MEDIA:
        return "/v2/messages/send/media";
    case QUEUE_TYPE_LOCATION:
        return "/v2/messages/send/location";
    case QUEUE_TYPE_INTERACTIVE:
        return "/v2/messages/send/interactive";
    case QUEUE_TYPE_SMART:
        return "/v2/messages/send";
    case QUEUE_TYPE_TEMPLATE:
        return "/v2/templates/send";
    default:
        return NULL;
    }
}

void dispatch_activate(daemon_t *d, const sched_job_t *tmpl, const char *phone_number_id)
{
    int rc;

    if (d->spill || !sched_has_room(d->sched)) {
        /* The store has it; a refill brings it in when there is room. */
        d->spill = true;
        return;
    }
    rc = sched_job_add(d->sched, tmpl, phone_number_id);
    if (rc != 0 && rc != -EEXIST)
        d->spill = true;
    dispatch_pump_soon(d);
}

/* --- attempts --------------------------------------------------------- */

typedef struct attempt {
    daemon_t *d;
    uint64_t id;
    const char *path;
    char *body;
    size_t len;
} attempt_t;

static void record(daemon_t *d, uint64_t id, int state, uint16_t attempts, double due,
                   const char *wamid, const queue_error_info_t *err)
{
    queue_update_t u;
    int rc;

    memset(&u, 0, sizeof(u));
    u.id = id;
    u.state = (uint8_t)state;
    u.attempts = attempts;
    u.updated_at = daemon_now();
    u.next_attempt_at = due;
    u.wamid = wamid;
    u.last_error = err;
    rc = commit_add_update(d->commit, &u);
    if (rc != 0)
        dlog(d, CONFIG_LOG_ERROR, "job %llu: state change to %s not recorded: %s",
             (unsigned long long)id, queue_state_name(state), queue_strerror(rc));
    else
        daemon_event_job(d, id, state, wamid, err); /* watch streams (events.c) */
}

static double backoff(const daemon_t *d, unsigned attempts)
{
    double base = (double)d->cfg.backoff_base_ms / 1000.0;
    double max = (double)d->cfg.backoff_max_ms / 1000.0;
    double delay = base * pow(2.0, attempts > 0 ? attempts - 1 : 0);

    if (delay > max)
        delay = max;
    /* "Equal jitter": half fixed, half random, so retries of a burst spread
     * out but never come sooner than half the nominal delay. */
    return delay / 2 + delay / 2 * ((double)rand() / RAND_MAX);
}

static void on_http_done(const http_result_t *res, void *arg)
{
    attempt_t *a = arg;
    daemon_t *d = a->d;
    sched_job_t *job = sched_job_find(d->sched, a->id);
    classify_result_t c;
    unsigned max_attempts;
    double delay, now = daemon_now();

    free(a->body);
    free(a);
    if (job == NULL)
        return; /* removed meanwhile (cancel) */
    job->user = NULL;
    if (res->error != HTTP_ECANCELLED)
        metrics_hist_observe(&d->stats.http_latency, res->total_time);
    classify_answer(res, &c);
    d->stats.by_action[c.action]++;
    if (c.maybe_sent)
        d->stats.maybe_duplicates++;
    max_attempts = job->max_attempts ? job->max_attempts : (unsigned)d->cfg.max_attempts;

    switch (c.action) {
    case CLASSIFY_SENT:
        record(d, job->id, QUEUE_STATE_SENT, job->attempts, 0, c.wamid[0] ? c.wamid : NULL, NULL);
        sched_job_finish(d->sched, job);
        break;
    case CLASSIFY_FAIL:
        dlog(d, CONFIG_LOG_DEBUG, "job %llu failed: %d %s %s", (unsigned long long)job->id,
             c.error.status, c.error.code, c.error.message);
        record(d, job->id, QUEUE_STATE_FAILED, job->attempts, 0, NULL, &c.error);
        sched_job_finish(d->sched, job);
        break;
    case CLASSIFY_PAUSE_SENDER:
    case CLASSIFY_PAUSE_ACCOUNT:
        /* Not the job's fault: the attempt does not count and the job never
         * fails for it. The sender/account breaker refines this. */
        if (job->attempts > 0)
            job->attempts--;
        delay = backoff(d, 3);
        if (delay < c.min_delay)
            delay = c.min_delay;
        if (d->stopping)
            delay = 0;
        dlog(d, CONFIG_LOG_WARN, "job %llu: %s (%d %s), retry in %.1fs",
             (unsigned long long)job->id, classify_action_name(c.action), c.error.status,
             c.error.code, delay);
        record(d, job->id, QUEUE_STATE_RETRYING, job->attempts, now + delay, NULL, &c.error);
        sched_job_retry(d->sched, job, now + delay);
        break;
    default:
        if (job->attempts >= max_attempts && !d->stopping) {
            record(d, job->id, QUEUE_STATE_FAILED, job->attempts, 0, NULL, &c.error);
            sched_job_finish(d->sched, job);
            break;
        }
        if (c.action == CLASSIFY_RETRY_PAIR)
            delay = pow(4.0, job->attempts > 0 ? job->attempts - 1 : 0);
        else if (c.action == CLASSIFY_RESCHEDULE_DAY)
            delay = 86400;
        else
            delay = backoff(d, job->attempts);
        if (delay < c.min_delay)
            delay = c.min_delay;
        if (d->stopping)
            delay = 0;
        record(d, job->id, QUEUE_STATE_RETRYING, job->attempts, now + delay, NULL, &c.error);
        sched_job_retry(d->sched, job, now + delay);
        break;
    }
    if (d->stopping) {
        if (sched_inflight(d->sched) == 0)
            daemon_finish_stop(d);
        return;
    }
    dispatch_pump_soon(d);
}

static void retry_later(daemon_t *d, sched_job_t *job, double due)
{
    record(d, job->id, QUEUE_STATE_QUEUED, job->attempts, due, NULL, NULL);
    sched_job_retry(d->sched, job, due);
}

/*
 * The job's `sending` state is durable: now the request may leave. Waiting
 * for that commit is what makes the crash promise exact: after a crash the
 * only jobs that may have reached the API without a recorded outcome are
 * the ones the store shows as `sending` (sent again under at-least-once,
 * `uncertain` under at-most-once).
 */
static void on_sending_durable(void *arg)
{
    attempt_t *a = arg;
    daemon_t *d = a->d;
    sched_job_t *job = sched_job_find(d->sched, a->id);
    int rc;

    if (job == NULL || job->user != a) { /* removed meanwhile */
        free(a->body);
        free(a);
        return;
    }
    if (d->stopping) {
        /* Never left: the attempt does not count. */
        job->user = NULL;
        job->attempts--;
        free(a->body);
        free(a);
        retry_later(d, job, daemon_now());
        if (sched_inflight(d->sched) == 0)
            daemon_finish_stop(d);
        return;
    }
    rc = http_engine_post(d->http, a->path, a->body, a->len, on_http_done, a);
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "cannot start a request: %s", http_strerror(rc));
        job->user = NULL;
        job->attempts--;
        free(a->body);
        free(a);
        retry_later(d, job, daemon_now() + 1);
        dispatch_pump_soon(d);
        return;
    }
    d->stats.sends++;
}

/* Starts one attempt of `job`: records it as `sending`, and sends once that
 * is durable. Jobs past their expiry or gone from the store leave the
 * active set instead. */
static void dispatch(daemon_t *d, sched_job_t *job, double now)
{
    const char *path = route_for(job->type);
    queue_update_t u;
    attempt_t *a;
    int rc;

    if (job->expires_at > 0 && now > job->expires_at) {
        record(d, job->id, QUEUE_STATE_EXPIRED, job->attempts, 0, NULL, NULL);
        sched_job_finish(d->sched, job);
        return;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        retry_later(d, job, now + 1);
        return;
    }
    a->d = d;
    a->id = job->id;
    a->path = path;
    rc = queue_job_body(d->q, job->id, &a->body, &a->len);
    if (rc == QUEUE_ENOTFOUND || path == NULL) {
        /* Purged, or a type this version cannot route: nothing to send. */
        free(a);
        sched_job_finish(d->sched, job);
        return;
    }
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "job %llu: reading its body: %s", (unsigned long long)job->id,
             queue_strerror(rc));
        free(a);
        retry_later(d, job, now + 1);
        return;
    }
    job->attempts++;
    memset(&u, 0, sizeof(u));
    u.id = job->id;
    u.state = QUEUE_STATE_SENDING;
    u.attempts = job->attempts;
    u.updated_at = now;
    u.next_attempt_at = job->due;
    rc = commit_add_update_cb(d->commit, &u, on_sending_durable, a);
    if (rc != 0) {
        job->attempts--;
        free(a->body);
        free(a);
        retry_later(d, job, now + 1);
        return;
    }
    job->user = a;
    daemon_event_job(d, job->id, QUEUE_STATE_SENDING, NULL, NULL);
}

typedef struct refill_ctx {
    daemon_t *d;
    size_t added;
    size_t room;
    bool stopped;
} refill_ctx_t;

static int refill_entry_cb(const queue_due_entry_t *e, void *arg)
{
    refill_ctx_t *r = arg;
    sched_job_t t;

    if (sched_contains(r->d->sched, e->id))
        return 0;
    if (r->added >= r->room) {
        r->stopped = true;
        return 1;
    }
    memset(&t, 0, sizeof(t));
    t.id = e->id;
    t.due = e->due;
    t.expires_at = e->expires_at;
    t.attempts = e->attempts;
    t.max_attempts = e->max_attempts;
    t.type = e->type;
    t.priority = e->priority;
    if (sched_job_add(r->d->sched, &t, e->phone_number_id) != 0) {
        r->stopped = true;
        return 1;
    }
    r->added++;
    return 0;
}

/*
 * Brings due jobs from the store into the active set. Only while no write
 * is pending: a job whose final state is not committed yet is still in the
 * due index and must not be picked up again.
 */
static void refill(daemon_t *d)
{
    refill_ctx_t r = {d, 0, 0, false};
    size_t limit;
    int rc;

    if (!d->spill || d->stopping || commit_backlog(d->commit) != 0 ||
        sched_jobs(d->sched) > ACTIVE_SET_MAX / 2)
        return;
    r.room = ACTIVE_SET_MAX - sched_jobs(d->sched);
    limit = sched_jobs(d->sched) + r.room + 1;
    rc = queue_due_scan(d->q, 0, 0, INFINITY, limit, refill_entry_cb, &r);
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "reading due jobs: %s", queue_strerror(rc));
        return;
    }
    if (!r.stopped)
        d->spill = false;
    dlog(d, CONFIG_LOG_DEBUG, "refill: %zu jobs loaded, %s", r.added,
         d->spill ? "more in the store" : "store drained");
}

static void wake_cb(uv_timer_t *t)
{
    dispatch_pump_soon(t->data);
}

static void pump(daemon_t *d)
{
    double now = daemon_now(), wake = INFINITY;
    sched_job_t *job;

    refill(d);
    if (d->stopping)
        return;
    while ((job = sched_next(d->sched, now, &wake)) != NULL)
        dispatch(d, job, now);
    uv_timer_stop(&d->wake);
    if (d->spill) /* come back for the refill */
        wake = fmin(wake, now + 0.05);
    if (isfinite(wake)) {
        double ms = ceil((wake - now) * 1000.0);
        uv_timer_start(&d->wake, wake_cb, ms > 0 ? (uint64_t)ms : 0, 0);
    }
}

static void pump_idle_cb(uv_idle_t *h)
{
    uv_idle_stop(h);
    pump(h->data);
}

void dispatch_pump_soon(daemon_t *d)
{
    if (!d->closing)
        uv_idle_start(&d->pump_idle, pump_idle_cb);
}

void dispatch_on_commit_stat(size_t ops, double seconds, void *arg)
{
    daemon_t *d = arg;

    d->stats.commits++;
    d->stats.commit_ops += ops;
    daemon_refresh_unfinished(d);
    if (seconds > 1.0)
        dlog(d, CONFIG_LOG_WARN, "slow store commit: %zu operations took %.2fs", ops, seconds);
    dispatch_pump_soon(d); /* a refill may have been waiting for the backlog to clear */
}
