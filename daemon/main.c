/*
 * main.c - avenpingd: the daemon that ties the modules together.
 *
 * One struct daemon holds the loop and every module; nothing else is
 * global. The path of a job: ipc (validated request) -> handle_submit ->
 * commit (group commit on a worker thread) -> answer + sched -> pump ->
 * http -> classify -> commit (state change) -> sched (finish or retry).
 * See docs/architecture.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <uv.h>

#include "classify.h"
#include "commit.h"
#include "config.h"
#include "http.h"
#include "ipc.h"
#include "queue.h"
#include "scheduler.h"

#define ACTIVE_SET_MAX 100000

typedef struct daemon_stats {
    unsigned long long submitted;
    unsigned long long duplicates;
    unsigned long long sends;
    unsigned long long maybe_duplicates; /* transport failure after the request left */
    unsigned long long by_action[CLASSIFY_RESCHEDULE_DAY + 1];
    unsigned long long commits;
    unsigned long long commit_ops;
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
} daemon_t;

/* --- logging: stderr with sd-daemon priority prefixes ------------------ */

static void dlog(const daemon_t *d, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void dlog(const daemon_t *d, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    if (level > d->cfg.log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "<%d>%s\n", level, buf);
}

static double now_s(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void pump_soon(daemon_t *d);
static void finish_stop(daemon_t *d);

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

/* --- submits ---------------------------------------------------------- */

typedef struct submit_ctx {
    daemon_t *d;
    ipc_req_t *req;
    sched_job_t tmpl;
    char phone_number_id[QUEUE_MAX_ID_LEN + 1];
} submit_ctx_t;

static void activate(daemon_t *d, const sched_job_t *tmpl, const char *phone_number_id)
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
    pump_soon(d);
}

static void submit_committed_cb(int rc, int result, uint64_t orig_id, void *arg)
{
    submit_ctx_t *ctx = arg;
    daemon_t *d = ctx->d;

    if (rc != 0) {
        bool full = rc == QUEUE_EFULL || rc == -ENOSPC;
        dlog(d, CONFIG_LOG_ERROR, "store commit failed: %s", queue_strerror(rc));
        ipc_req_reply_error(ctx->req, full ? IPC_ERR_QUEUE_FULL : IPC_ERR_INTERNAL,
                            "job not stored: %s", queue_strerror(rc));
    } else if (result == QUEUE_EDUPLICATE) {
        d->stats.duplicates++;
        ipc_req_reply_submit(ctx->req, orig_id, true);
    } else {
        d->stats.submitted++;
        ipc_req_reply_submit(ctx->req, ctx->tmpl.id, false);
        activate(d, &ctx->tmpl, ctx->phone_number_id);
    }
    free(ctx);
}

/* Unfinished jobs in the store, refreshed after every commit: the bound
 * check on each submit must not cost a read transaction. */
static void refresh_unfinished(daemon_t *d)
{
    uint64_t counts[QUEUE_STATE_MAX + 1] = {0};

    if (queue_counts(d->q, counts) == 0)
        d->unfinished =
            counts[QUEUE_STATE_QUEUED] + counts[QUEUE_STATE_RETRYING] + counts[QUEUE_STATE_SENDING];
}

static void handle_submit(daemon_t *d, ipc_req_t *req, const ipc_submit_t *s)
{
    double now = now_s();
    queue_job_t job;
    submit_ctx_t *ctx;
    int rc;

    if (d->stopping) {
        ipc_req_reply_error(req, IPC_ERR_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    if (d->cfg.max_queued > 0 &&
        d->unfinished + commit_backlog(d->commit) >= (uint64_t)d->cfg.max_queued) {
        ipc_req_reply_error(req, IPC_ERR_QUEUE_FULL, "more than max_queued = %ld unfinished jobs",
                            d->cfg.max_queued);
        return;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "out of memory");
        return;
    }
    memset(&job, 0, sizeof(job));
    job.id = queue_id_next(d->q);
    job.state = QUEUE_STATE_QUEUED;
    job.type = (uint8_t)s->type;
    job.priority = (uint8_t)s->priority;
    job.max_attempts = (uint16_t)s->max_attempts;
    job.created_at = now;
    job.updated_at = now;
    job.not_before = s->not_before;
    job.expires_at = s->expires_at > 0 ? s->expires_at : now + (double)d->cfg.job_ttl_s;
    job.next_attempt_at = s->not_before > now ? s->not_before : now;
    job.phone_number_id = (char *)s->phone_number_id;
    job.to = (char *)s->to;
    job.campaign = (char *)s->campaign;
    job.order_key = (char *)s->order_key;
    job.idempotency_key = (char *)s->idempotency_key;

    ctx->d = d;
    ctx->req = req;
    ctx->tmpl.id = job.id;
    ctx->tmpl.due = job.next_attempt_at;
    ctx->tmpl.expires_at = job.expires_at;
    ctx->tmpl.max_attempts = job.max_attempts;
    ctx->tmpl.type = job.type;
    ctx->tmpl.priority = job.priority;
    snprintf(ctx->phone_number_id, sizeof(ctx->phone_number_id), "%s", s->phone_number_id);

    rc = commit_add_job(d->commit, &job, s->body, s->body_len, submit_committed_cb, ctx);
    if (rc != 0) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "cannot queue the job: %s", queue_strerror(rc));
        free(ctx);
    }
}

/* --- queries ---------------------------------------------------------- */

static cJSON *job_to_json(const queue_job_t *j)
{
    cJSON *o = cJSON_CreateObject();
    char id[24];

    snprintf(id, sizeof(id), "%llu", (unsigned long long)j->id);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "state", queue_state_name(j->state));
    cJSON_AddStringToObject(o, "kind", j->type == QUEUE_TYPE_TEMPLATE ? "template_send" : "send");
    cJSON_AddStringToObject(o, "type", queue_type_name(j->type));
    cJSON_AddStringToObject(o, "phoneNumberId", j->phone_number_id ? j->phone_number_id : "");
    cJSON_AddStringToObject(o, "to", j->to ? j->to : "");
    if (j->campaign)
        cJSON_AddStringToObject(o, "campaign", j->campaign);
    else
        cJSON_AddNullToObject(o, "campaign");
    if (j->idempotency_key)
        cJSON_AddStringToObject(o, "idempotencyKey", j->idempotency_key);
    if (j->order_key)
        cJSON_AddStringToObject(o, "orderKey", j->order_key);
    cJSON_AddStringToObject(o, "priority", queue_priority_name(j->priority));
    cJSON_AddNumberToObject(o, "attempts", j->attempts);
    cJSON_AddNumberToObject(o, "createdAt", j->created_at);
    cJSON_AddNumberToObject(o, "updatedAt", j->updated_at);
    if (queue_state_is_final(j->state))
        cJSON_AddNullToObject(o, "nextAttemptAt");
    else
        cJSON_AddNumberToObject(o, "nextAttemptAt", j->next_attempt_at);
    if (j->expires_at > 0)
        cJSON_AddNumberToObject(o, "expiresAt", j->expires_at);
    if (j->wamid)
        cJSON_AddStringToObject(o, "wamid", j->wamid);
    else
        cJSON_AddNullToObject(o, "wamid");
    if (j->last_error.status != 0 || j->last_error.code[0] != '\0') {
        cJSON *e = cJSON_AddObjectToObject(o, "lastError");
        cJSON_AddNumberToObject(e, "status", j->last_error.status);
        cJSON_AddStringToObject(e, "code", j->last_error.code);
        cJSON_AddStringToObject(e, "message", j->last_error.message);
        if (j->last_error.meta_code != 0)
            cJSON_AddNumberToObject(e, "metaCode", (double)j->last_error.meta_code);
        else
            cJSON_AddNullToObject(e, "metaCode");
    } else {
        cJSON_AddNullToObject(o, "lastError");
    }
    return o;
}

static void handle_get(daemon_t *d, ipc_req_t *req, const ipc_request_t *r)
{
    queue_job_t job;
    cJSON *fields;
    int rc;

    memset(&job, 0, sizeof(job));
    if (r->job) {
        char *end;
        unsigned long long id = strtoull(r->job, &end, 10);
        rc = (*end == '\0' && end != r->job) ? queue_job_get(d->q, id, &job) : QUEUE_ENOTFOUND;
    } else {
        rc = queue_job_get_by_key(d->q, r->idempotency_key, &job);
    }
    if (rc == QUEUE_ENOTFOUND) {
        ipc_req_reply_error(req, IPC_ERR_NOT_FOUND, "no such job");
        return;
    }
    if (rc != 0) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "store: %s", queue_strerror(rc));
        return;
    }
    fields = cJSON_CreateObject();
    cJSON_AddItemToObject(fields, "job", job_to_json(&job));
    queue_job_clear(&job);
    ipc_req_reply_ok(req, fields);
}

static void sender_json_cb(const sched_sender_info_t *s, void *arg)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "phoneNumberId", s->phone_number_id);
    cJSON_AddNumberToObject(o, "queued", (double)s->queued);
    cJSON_AddNumberToObject(o, "inflight", s->inflight);
    cJSON_AddNumberToObject(o, "rate", s->rate);
    cJSON_AddBoolToObject(o, "paused", false);
    cJSON_AddNullToObject(o, "reason");
    cJSON_AddItemToArray(arg, o);
}

static void handle_stats(daemon_t *d, ipc_req_t *req)
{
    uint64_t counts[QUEUE_STATE_MAX + 1] = {0};
    cJSON *fields = cJSON_CreateObject();
    cJSON *st = cJSON_AddObjectToObject(fields, "stats");
    cJSON *c = cJSON_AddObjectToObject(st, "counts");
    cJSON *senders = cJSON_AddArrayToObject(st, "senders");
    cJSON *acct = cJSON_AddObjectToObject(st, "account");
    size_t map = 0, used = 0;
    int s;

    (void)queue_counts(d->q, counts);
    for (s = 1; s <= QUEUE_STATE_MAX; s++)
        cJSON_AddNumberToObject(c, queue_state_name(s), (double)counts[s]);
    sched_senders_each(d->sched, sender_json_cb, senders);
    cJSON_AddStringToObject(acct, "state", "ok");
    cJSON_AddNullToObject(acct, "reason");
    cJSON_AddNumberToObject(st, "inflight", sched_inflight(d->sched));
    cJSON_AddNumberToObject(st, "active", (double)sched_jobs(d->sched));
    cJSON_AddNumberToObject(st, "commitBacklog", (double)commit_backlog(d->commit));
    cJSON_AddNumberToObject(st, "submitted", (double)d->stats.submitted);
    cJSON_AddNumberToObject(st, "duplicates", (double)d->stats.duplicates);
    cJSON_AddNumberToObject(st, "requests", (double)d->stats.sends);
    cJSON_AddNumberToObject(st, "possibleDuplicates", (double)d->stats.maybe_duplicates);
    cJSON_AddNumberToObject(st, "commits", (double)d->stats.commits);
    cJSON_AddNumberToObject(st, "connections", ipc_server_connections(d->ipc));
    if (queue_space(d->q, &map, &used) == 0) {
        cJSON_AddNumberToObject(st, "storeMapBytes", (double)map);
        cJSON_AddNumberToObject(st, "storeUsedBytes", (double)used);
    }
    ipc_req_reply_ok(req, fields);
}

static void request_cb(ipc_req_t *req, void *user)
{
    daemon_t *d = user;
    const ipc_request_t *r = ipc_req_request(req);

    switch (r->op) {
    case IPC_OP_SEND:
    case IPC_OP_TEMPLATE_SEND:
        handle_submit(d, req, &r->submit);
        break;
    case IPC_OP_GET:
        handle_get(d, req, r);
        break;
    case IPC_OP_STATS:
        handle_stats(d, req);
        break;
    case IPC_OP_PING: {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "version", AVP_VERSION);
        ipc_req_reply_ok(req, f);
        break;
    }
    default:
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "op not supported by this version");
        break;
    }
}

/* --- dispatch --------------------------------------------------------- */

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
    u.updated_at = now_s();
    u.next_attempt_at = due;
    u.wamid = wamid;
    u.last_error = err;
    rc = commit_add_update(d->commit, &u);
    if (rc != 0)
        dlog(d, CONFIG_LOG_ERROR, "job %llu: state change to %s not recorded: %s",
             (unsigned long long)id, queue_state_name(state), queue_strerror(rc));
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
    double delay, now = now_s();

    free(a->body);
    free(a);
    if (job == NULL)
        return; /* removed meanwhile (cancel) */
    job->user = NULL;
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
            finish_stop(d);
        return;
    }
    pump_soon(d);
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
        retry_later(d, job, now_s());
        if (sched_inflight(d->sched) == 0)
            finish_stop(d);
        return;
    }
    rc = http_engine_post(d->http, a->path, a->body, a->len, on_http_done, a);
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "cannot start a request: %s", http_strerror(rc));
        job->user = NULL;
        job->attempts--;
        free(a->body);
        free(a);
        retry_later(d, job, now_s() + 1);
        pump_soon(d);
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
    pump_soon(t->data);
}

static void pump(daemon_t *d)
{
    double now = now_s(), wake = INFINITY;
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

static void pump_soon(daemon_t *d)
{
    if (!d->closing)
        uv_idle_start(&d->pump_idle, pump_idle_cb);
}

static void on_commit_stat(size_t ops, double seconds, void *arg)
{
    daemon_t *d = arg;

    d->stats.commits++;
    d->stats.commit_ops += ops;
    refresh_unfinished(d);
    if (seconds > 1.0)
        dlog(d, CONFIG_LOG_WARN, "slow store commit: %zu operations took %.2fs", ops, seconds);
    pump_soon(d); /* a refill may have been waiting for the backlog to clear */
}

/* --- shutdown --------------------------------------------------------- */

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void drained_cb(void *arg)
{
    daemon_t *d = arg;

    dlog(d, CONFIG_LOG_INFO, "store flushed; exiting");
    d->closing = true;
    ipc_server_close(d->ipc);
    d->ipc = NULL;
    http_engine_close(d->http);
    d->http = NULL;
    commit_free(d->commit);
    d->commit = NULL;
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->wake, NULL);
    uv_close((uv_handle_t *)&d->pump_idle, NULL);
    uv_close((uv_handle_t *)&d->stop_timer, NULL);
}

static void finish_stop(daemon_t *d)
{
    if (d->stop_finishing)
        return;
    d->stop_finishing = true;
    uv_timer_stop(&d->stop_timer);
    uv_timer_stop(&d->wake);
    /* Whatever is still in flight is cancelled; its callback records the
     * job as due again, so it is sent after the restart. */
    http_engine_cancel_all(d->http);
    commit_drain(d->commit, drained_cb, d);
}

static void stop_timer_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    dlog(d, CONFIG_LOG_WARN, "%zu requests still in flight after %ldms; cancelling them",
         http_engine_inflight(d->http), d->cfg.shutdown_timeout_ms);
    finish_stop(d);
}

static void begin_stop(daemon_t *d, const char *why)
{
    if (d->stopping)
        return;
    d->stopping = true;
    dlog(d, CONFIG_LOG_INFO, "%s: stopping (%zu requests in flight)", why,
         http_engine_inflight(d->http));
    ipc_server_stop_accepting(d->ipc);
    uv_timer_stop(&d->wake);
    uv_timer_start(&d->stop_timer, stop_timer_cb, (uint64_t)d->cfg.shutdown_timeout_ms, 0);
    if (sched_inflight(d->sched) == 0)
        finish_stop(d);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;

    if (signum == SIGHUP) {
        dlog(d, CONFIG_LOG_INFO, "SIGHUP: reload is not supported yet; configuration unchanged");
        return;
    }
    begin_stop(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* --- start-up --------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: avenpingd [--config FILE] [--socket PATH] [--state-dir DIR] [--api-base URL]\n"
          "                 [--token-file FILE] [--log-level error|warn|info|debug]\n"
          "                 [--version] [--help]\n"
          "\n"
          "Dispatches WhatsApp messages submitted on a Unix socket to the AvenPing v2 API.\n"
          "The API token is read from --token-file, token_file in the config,\n"
          "$CREDENTIALS_DIRECTORY/avenping-token or $AVENPING_TOKEN; never from argv.\n"
          "See avenpingd(8) and docs/config.md.\n",
          f);
}

static double rate_for_cb(const char *id, void *arg)
{
    return config_rate_for(arg, id);
}

static void sched_opts(const daemon_t *d, sched_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->rate_per_number = d->cfg.rate_per_number;
    o->burst_per_number = d->cfg.burst_per_number;
    o->global_rate = d->cfg.global_rate;
    o->max_inflight = (unsigned)d->cfg.max_inflight;
    o->max_inflight_per_number = (unsigned)d->cfg.max_inflight_per_number;
    o->max_jobs = ACTIVE_SET_MAX;
    o->rate_for = rate_for_cb;
    o->rate_user = (void *)&d->cfg;
}

static int load_config(daemon_t *d, int argc, char **argv, bool *exit_now)
{
    config_flags_t f;
    char err[512];
    int rc;

    *exit_now = false;
    if ((rc = config_init(&d->cfg)) != 0) {
        fprintf(stderr, "avenpingd: out of memory\n");
        return rc;
    }
    if (config_flags_parse(argc, argv, &f, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: %s\n", err);
        return -EINVAL;
    }
    if (f.help) {
        usage(stdout);
        *exit_now = true;
        return 0;
    }
    if (f.version) {
        printf("avenpingd %s\n", AVP_VERSION);
        *exit_now = true;
        return 0;
    }
    if (f.config && config_load_file(&d->cfg, f.config, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: config: %s\n", err);
        return -EINVAL;
    }
    if (config_flags_apply(&d->cfg, &f, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: %s\n", err);
        return -EINVAL;
    }
    if (config_token_load(&d->cfg, &d->token, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: %s\n", err);
        return -EINVAL;
    }
    return 0;
}

static int open_store(daemon_t *d)
{
    queue_options_t qo;
    size_t n = 0;
    int rc;

    if (mkdir(d->cfg.state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "avenpingd: state dir %s: %s\n", d->cfg.state_dir, strerror(errno));
        return -errno;
    }
    memset(&qo, 0, sizeof(qo));
    qo.map_size_max = d->cfg.map_size_max;
    rc = queue_open(d->cfg.state_dir, &qo, &d->q);
    if (rc == QUEUE_ELOCKED) {
        fprintf(stderr, "avenpingd: state dir %s is in use by another avenpingd\n",
                d->cfg.state_dir);
        return rc;
    }
    if (rc != 0) {
        fprintf(stderr, "avenpingd: cannot open the store in %s: %s\n", d->cfg.state_dir,
                queue_strerror(rc));
        return rc;
    }
    rc = queue_recover(d->q, d->cfg.at_most_once, now_s(), &n);
    if (rc != 0) {
        fprintf(stderr, "avenpingd: recovering the store: %s\n", queue_strerror(rc));
        return rc;
    }
    if (n > 0)
        dlog(d, CONFIG_LOG_WARN, "%zu jobs were in flight at the last stop; now %s", n,
             d->cfg.at_most_once ? "uncertain (delivery = at-most-once)" : "due again");
    return 0;
}

static int start_modules(daemon_t *d)
{
    http_options_t ho;
    ipc_server_options_t io;
    sched_options_t so;
    int rc;

    memset(&ho, 0, sizeof(ho));
    ho.api_base = d->cfg.api_base;
    ho.token = d->token;
    ho.timeout_ms = d->cfg.request_timeout_ms;
    ho.ca_file = d->cfg.ca_file;
    ho.http2 = d->cfg.http2;
    if ((rc = http_engine_new(d->loop, &ho, &d->http)) != 0) {
        fprintf(stderr, "avenpingd: HTTP engine: %s\n", http_strerror(rc));
        return rc;
    }
    if ((rc = commit_new(d->loop, d->q, &d->commit)) != 0)
        return rc;
    commit_set_stat_cb(d->commit, on_commit_stat, d);
    sched_opts(d, &so);
    if ((rc = sched_new(&so, &d->sched)) != 0)
        return rc;

    memset(&io, 0, sizeof(io));
    io.max_connections = (unsigned)d->cfg.max_connections;
    io.socket_mode = d->cfg.socket_mode;
    io.allowed_uids = d->cfg.n_allowed_uids ? d->cfg.allowed_uids : NULL;
    io.n_allowed_uids = d->cfg.n_allowed_uids;
    if ((rc = ipc_server_new(d->loop, &io, request_cb, d, &d->ipc)) != 0)
        return rc;
    if ((rc = ipc_server_listen(d->ipc, d->cfg.socket)) != 0) {
        fprintf(stderr, "avenpingd: socket %s: %s\n", d->cfg.socket, ipc_strerror(rc));
        return rc;
    }
    return 0;
}

static void init_handles(daemon_t *d)
{
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_hup);
    uv_timer_init(d->loop, &d->wake);
    uv_idle_init(d->loop, &d->pump_idle);
    uv_timer_init(d->loop, &d->stop_timer);
    d->sig_int.data = d->sig_term.data = d->sig_hup.data = d;
    d->wake.data = d->stop_timer.data = d;
    d->pump_idle.data = d;
}

int main(int argc, char **argv)
{
    daemon_t d;
    bool exit_now;
    int rc = 1;

    memset(&d, 0, sizeof(d));
    if (load_config(&d, argc, argv, &exit_now) != 0)
        goto out;
    if (exit_now) {
        rc = 0;
        goto out;
    }
    /* The token lives in this process's memory: keep it out of core dumps
     * and away from ptrace by other users. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(now_s() * 1e6) ^ (unsigned)getpid());

    if (open_store(&d) != 0)
        goto out;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "avenpingd: libcurl initialisation failed\n");
        goto out;
    }
    d.loop = uv_default_loop();
    init_handles(&d);
    if (start_modules(&d) != 0)
        goto out_loop;
    uv_signal_start(&d.sig_int, signal_cb, SIGINT);
    uv_signal_start(&d.sig_term, signal_cb, SIGTERM);
    uv_signal_start(&d.sig_hup, signal_cb, SIGHUP);
    d.spill = true; /* load what the store holds */
    refresh_unfinished(&d);
    pump_soon(&d);
    dlog(&d, CONFIG_LOG_INFO, "avenpingd %s ready: socket %s, state %s, api %s", AVP_VERSION,
         d.cfg.socket, d.cfg.state_dir, d.cfg.api_base);

    uv_run(d.loop, UV_RUN_DEFAULT);
    rc = d.exit_code;
out_loop:
    if (rc != 0 && d.loop) {
        /* Start-up failed half way: close whatever was opened. */
        ipc_server_close(d.ipc);
        http_engine_close(d.http);
        commit_free(d.commit);
        uv_walk(d.loop, close_walk_cb, NULL);
        uv_run(d.loop, UV_RUN_DEFAULT);
    }
    if (d.loop)
        uv_loop_close(d.loop);
    sched_free(d.sched);
    curl_global_cleanup();
out:
    queue_close(d.q);
    if (d.token) {
        explicit_bzero(d.token, strlen(d.token));
        free(d.token);
    }
    config_free(&d.cfg);
    return rc;
}
