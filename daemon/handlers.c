/*
 * handlers.c - answers to socket requests: submits (answered after their
 * group commit), get, stats, ping, and the campaign operations list,
 * campaign, cancel, retry, watch.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon.h"
#include "jsonnum.h"

/* --- submits ---------------------------------------------------------- */

/* What a submit needs between its group commit and its answer. Small on
 * purpose: one is held per submit in flight (tens of thousands in a burst),
 * and the request's own strings stay valid until it is answered, which is
 * why the job is activated before the answer. */
typedef struct submit_ctx {
    daemon_t *d;
    ipc_req_t *req;
    uint64_t id;
    double due;
    double expires_at;
    uint16_t max_attempts;
    uint8_t type;
    uint8_t priority;
} submit_ctx_t;

static void submit_committed_cb(int rc, int result, uint64_t orig_id, void *arg)
{
    submit_ctx_t *ctx = arg;
    daemon_t *d = ctx->d;

    if (rc != 0) {
        bool full = queue_err_full(rc);
        double now = daemon_now();
        /* Every submit of the failed batch lands here: one line a second. */
        if (now - d->commit_err_logged >= 1.0) {
            d->commit_err_logged = now;
            dlog(d, CONFIG_LOG_ERROR, "store commit failed: %s; its submits were refused",
                 queue_strerror(rc));
        }
        ipc_req_reply_error(ctx->req, full ? IPC_ERR_QUEUE_FULL : IPC_ERR_INTERNAL, "%s: %s",
                            full ? "store full" : "job not stored", queue_strerror(rc));
    } else if (result == QUEUE_EDUPLICATE) {
        d->stats.duplicates++;
        ipc_req_reply_submit(ctx->req, orig_id, true);
    } else {
        const ipc_submit_t *s = &ipc_req_request(ctx->req)->submit;
        sched_job_t tmpl = {.id = ctx->id,
                            .due = ctx->due,
                            .expires_at = ctx->expires_at,
                            .max_attempts = ctx->max_attempts,
                            .type = ctx->type,
                            .priority = ctx->priority};
        char okey[QUEUE_ORDER_KEY_MAX + 1];
        sched_keys_t k;

        d->stats.submitted++;
        daemon_event_job_in(d, ctx->id, QUEUE_STATE_QUEUED, s->campaign, NULL, NULL);
        k.phone_number_id = s->phone_number_id;
        k.to = s->to;
        k.campaign = s->campaign;
        k.order_key =
            queue_order_key(s->order_key, s->phone_number_id, s->to, okey, sizeof(okey)) > 0 ? okey
                                                                                             : NULL;
        /* Before the answer, which frees the request's strings: the FIFO
         * copies them (the scheduler copies or hashes what it keeps). */
        if (dispatch_activate_later(d, &tmpl, &k) != 0)
            dispatch_activate(d, &tmpl, &k);
        ipc_req_reply_submit(ctx->req, ctx->id, false);
    }
    free(ctx);
}

/* Unfinished jobs in the store, refreshed after every commit: the bound
 * check on each submit must not cost a read transaction. */
void daemon_refresh_unfinished(daemon_t *d)
{
    uint64_t counts[QUEUE_STATE_MAX + 1] = {0};

    if (queue_counts(d->q, counts) == 0)
        d->unfinished =
            counts[QUEUE_STATE_QUEUED] + counts[QUEUE_STATE_RETRYING] + counts[QUEUE_STATE_SENDING];
}

/* A submit refused for space (max_queued, a full store) whose idempotency
 * key is already taken in the store gets the duplicate answer it would get
 * with space: a client resubmitting after a lost answer must learn that
 * its job is queued, not that it was refused. */
static bool answer_duplicate(daemon_t *d, ipc_req_t *req, const ipc_submit_t *s)
{
    queue_job_t j;

    if (s->idempotency_key == NULL || queue_job_get_by_key(d->q, s->idempotency_key, &j) != 0)
        return false;
    d->stats.duplicates++;
    ipc_req_reply_submit(req, j.id, true);
    queue_job_clear(&j);
    return true;
}

static void handle_submit(daemon_t *d, ipc_req_t *req, const ipc_submit_t *s)
{
    double now = daemon_now();
    queue_job_t job;
    submit_ctx_t *ctx;
    int rc;

    if (d->stopping) {
        ipc_req_reply_error(req, IPC_ERR_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    if (d->cfg.max_queued > 0 &&
        d->unfinished + commit_backlog(d->commit) >= (uint64_t)d->cfg.max_queued) {
        if (!answer_duplicate(d, req, s))
            ipc_req_reply_error(req, IPC_ERR_QUEUE_FULL,
                                "more than max_queued = %ld unfinished jobs", d->cfg.max_queued);
        return;
    }
    ctx = malloc(sizeof(*ctx));
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
    job.next_attempt_at = s->not_before > now ? s->not_before : now;
    /* The default expiry is now + job_ttl_s (socket-protocol.md), also for
     * a job whose notBefore lies beyond it: such a job expires at that
     * time, unsent (the scheduler expires it without waiting for its
     * notBefore). A client that schedules further ahead gives expiresAt. */
    job.expires_at = s->expires_at > 0 ? s->expires_at : now + (double)d->cfg.job_ttl_s;
    job.phone_number_id = (char *)s->phone_number_id;
    job.to = (char *)s->to;
    job.campaign = (char *)s->campaign;
    job.order_key = (char *)s->order_key;
    job.idempotency_key = (char *)s->idempotency_key;

    ctx->d = d;
    ctx->req = req;
    ctx->id = job.id;
    ctx->due = job.next_attempt_at;
    ctx->expires_at = job.expires_at;
    ctx->max_attempts = job.max_attempts;
    ctx->type = job.type;
    ctx->priority = job.priority;

    rc = commit_add_job(d->commit, &job, s->body, s->body_len, submit_committed_cb, ctx);
    if (queue_err_full(rc)) {
        /* A recent batch found the store full: refused at once until the
         * committer's next probe (commit.h). */
        if (!answer_duplicate(d, req, s))
            ipc_req_reply_error(req, IPC_ERR_QUEUE_FULL, "store full: %s", queue_strerror(rc));
        free(ctx);
    } else if (rc != 0) {
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
    jsonnum_add(o, "attempts", j->attempts);
    jsonnum_add(o, "createdAt", j->created_at);
    jsonnum_add(o, "updatedAt", j->updated_at);
    if (queue_state_is_final(j->state))
        cJSON_AddNullToObject(o, "nextAttemptAt");
    else
        jsonnum_add(o, "nextAttemptAt", j->next_attempt_at);
    if (j->expires_at > 0)
        jsonnum_add(o, "expiresAt", j->expires_at);
    if (j->wamid)
        cJSON_AddStringToObject(o, "wamid", j->wamid);
    else
        cJSON_AddNullToObject(o, "wamid");
    daemon_error_json(o, "lastError", &j->last_error);
    return o;
}

void daemon_error_json(cJSON *o, const char *name, const queue_error_info_t *err)
{
    cJSON *e;

    if (err == NULL || (err->status == 0 && err->code[0] == '\0')) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    e = cJSON_AddObjectToObject(o, name);
    jsonnum_add(e, "status", err->status);
    cJSON_AddStringToObject(e, "code", err->code);
    cJSON_AddStringToObject(e, "message", err->message);
    if (err->has_meta)
        jsonnum_add(e, "metaCode", (double)err->meta_code);
    else
        cJSON_AddNullToObject(e, "metaCode");
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
        ipc_req_reply_error(req, IPC_ERR_NOT_FOUND, IPC_MSG_NO_SUCH_JOB);
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
    jsonnum_add(o, "queued", (double)s->queued);
    jsonnum_add(o, "inflight", s->inflight);
    jsonnum_add(o, "rate", s->rate);
    jsonnum_add(o, "maxRate", s->max_rate);
    cJSON_AddBoolToObject(o, "paused", s->paused);
    if (s->reason)
        cJSON_AddStringToObject(o, "reason", s->reason);
    else
        cJSON_AddNullToObject(o, "reason");
    cJSON_AddItemToArray(arg, o);
}

/* The account's state: "paused" (breaker, or the operator's `all`),
 * "throttled" (Graph API throttling: everything waits until `until`), or
 * "ok". */
static void account_json(const daemon_t *d, cJSON *acct)
{
    const char *why = sched_account_reason(d->sched);
    double until = sched_hold_all_until(d->sched);

    if (why != NULL) {
        cJSON_AddStringToObject(acct, "state", "paused");
        cJSON_AddStringToObject(acct, "reason", why);
    } else if (sched_all_paused(d->sched)) {
        cJSON_AddStringToObject(acct, "state", "paused");
        cJSON_AddStringToObject(acct, "reason", "all sending paused by the operator");
    } else if (until > daemon_now()) {
        cJSON_AddStringToObject(acct, "state", "throttled");
        cJSON_AddStringToObject(acct, "reason",
                                d->throttle_reason[0] != '\0' ? d->throttle_reason
                                                              : "Graph API throttling");
        jsonnum_add(acct, "until", until);
    } else {
        cJSON_AddStringToObject(acct, "state", "ok");
        cJSON_AddNullToObject(acct, "reason");
    }
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
    http_stats_t hs;
    int s;

    (void)queue_counts(d->q, counts);
    for (s = 1; s <= QUEUE_STATE_MAX; s++)
        jsonnum_add(c, queue_state_name(s), (double)counts[s]);
    sched_senders_each(d->sched, daemon_now(), sender_json_cb, senders);
    account_json(d, acct);
    jsonnum_add(st, "inflight", sched_inflight(d->sched));
    jsonnum_add(st, "httpInflight", (double)http_pool_inflight(d->http));
    jsonnum_add(st, "active", (double)sched_jobs(d->sched));
    jsonnum_add(st, "commitBacklog", (double)commit_backlog(d->commit));
    jsonnum_add(st, "submitted", (double)d->stats.submitted);
    jsonnum_add(st, "duplicates", (double)d->stats.duplicates);
    jsonnum_add(st, "requests", (double)d->stats.sends);
    jsonnum_add(st, "possibleDuplicates", (double)d->stats.maybe_duplicates);
    jsonnum_add(st, "throttled", (double)d->stats.by_action[CLASSIFY_THROTTLE_SENDER]);
    jsonnum_add(st, "pairLimited", (double)d->stats.by_action[CLASSIFY_RETRY_PAIR]);
    jsonnum_add(st, "commits", (double)d->stats.commits);
    jsonnum_add(st, "commitFailures", (double)d->stats.commit_failures);
    jsonnum_add(st, "purged", (double)d->stats.purged);
    jsonnum_add(st, "unreadableJobs", (double)d->stats.unreadable);
    jsonnum_add(st, "connections", ipc_server_connections(d->ipc));
    http_pool_stats(d->http, &hs);
    jsonnum_add(st, "httpConnects", (double)hs.connects);
    jsonnum_add(st, "tlsHandshakes", (double)hs.handshakes);
    if (queue_space(d->q, &map, &used) == 0) {
        jsonnum_add(st, "storeMapBytes", (double)map);
        jsonnum_add(st, "storeUsedBytes", (double)used);
    }
    ipc_req_reply_ok(req, fields);
}

/* --- campaigns -------------------------------------------------------- */

/* Jobs walked per read transaction by cancel and retry of a campaign: reads
 * stay short (pitfalls: long reads pin pages) whatever the campaign's size.
 * A walk goes on at the next loop turn after at most BULK_PAGES_PER_TURN
 * pages, or once the changes of the pages walked so far are committed when
 * they reach BULK_PAGE: the loop is never held for long, and a campaign of
 * millions does not put millions of changes in the commit backlog at once. */
#define BULK_PAGE 1000
#define BULK_PAGES_PER_TURN 8
/* The index in bulk_t.states of a campaign cancel's second pass. */
#define BULK_CANCEL_PASS 3

/* A job id from the protocol's decimal string; 0 when it is not one. */
static uint64_t job_id_parse(const char *s)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' ? (uint64_t)v : 0;
}

/* The campaign's pause state and current send rate (sends/s over the
 * scheduler's last few seconds), for `campaign`. */
static void campaign_live(const daemon_t *d, const char *campaign, bool *paused, double *rate)
{
    *paused = sched_campaign_paused(d->sched, campaign);
    *rate = sched_campaign_rate(d->sched, campaign, daemon_now());
}

/* The campaign's counts by state, [0] the total. A campaign without jobs
 * that the operator paused (before its import: docs/protocol.md) is known,
 * with zero counts and *empty set, instead of QUEUE_ENOTFOUND. */
static int campaign_counts(const daemon_t *d, const char *campaign, uint64_t *counts, bool *empty)
{
    int rc = queue_campaign_counts(d->q, campaign, counts);

    *empty = false;
    if (rc == QUEUE_ENOTFOUND && sched_campaign_paused(d->sched, campaign)) {
        memset(counts, 0, sizeof(uint64_t) * (QUEUE_STATE_MAX + 1));
        *empty = true;
        rc = 0;
    }
    return rc;
}

static void handle_campaign(daemon_t *d, ipc_req_t *req, const ipc_request_t *r)
{
    uint64_t counts[QUEUE_STATE_MAX + 1];
    cJSON *fields, *c, *cnt;
    bool paused, empty;
    double rate;
    int rc;

    rc = campaign_counts(d, r->campaign, counts, &empty);
    if (rc == QUEUE_ENOTFOUND) {
        ipc_req_reply_error(req, IPC_ERR_NOT_FOUND, "no such campaign");
        return;
    }
    if (rc != 0) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "store: %s", queue_strerror(rc));
        return;
    }
    campaign_live(d, r->campaign, &paused, &rate);
    fields = cJSON_CreateObject();
    c = cJSON_AddObjectToObject(fields, "campaign");
    cJSON_AddStringToObject(c, "name", r->campaign);
    jsonnum_add(c, "total", (double)counts[0]);
    cnt = cJSON_AddObjectToObject(c, "counts");
    for (int s = 1; s <= QUEUE_STATE_MAX; s++)
        jsonnum_add(cnt, queue_state_name(s), (double)counts[s]);
    cJSON_AddBoolToObject(c, "paused", paused);
    jsonnum_add(c, "ratePerSecond", rate);
    ipc_req_reply_ok(req, fields);
}

typedef struct list_ctx {
    cJSON *arr;
    uint64_t last;
} list_ctx_t;

static int list_cb(const queue_job_t *job, void *arg)
{
    list_ctx_t *l = arg;

    cJSON_AddItemToArray(l->arr, job_to_json(job));
    l->last = job->id;
    return 0;
}

static void handle_list(daemon_t *d, ipc_req_t *req, const ipc_request_t *r)
{
    uint64_t counts[QUEUE_STATE_MAX + 1];
    int state = r->state ? queue_state_parse(r->state) : 0;
    uint64_t after = r->after ? job_id_parse(r->after) : 0;
    list_ctx_t l;
    cJSON *fields;
    bool more = false, empty;
    int rc;

    rc = campaign_counts(d, r->campaign, counts, &empty);
    if (rc == QUEUE_ENOTFOUND) {
        ipc_req_reply_error(req, IPC_ERR_NOT_FOUND, "no such campaign");
        return;
    }
    fields = cJSON_CreateObject();
    l.arr = cJSON_AddArrayToObject(fields, "jobs");
    l.last = 0;
    if (rc == 0 && !empty)
        rc = queue_campaign_jobs(d->q, r->campaign, state < 0 ? 0 : state, after, (size_t)r->limit,
                                 list_cb, &l, &more);
    if (rc != 0) {
        cJSON_Delete(fields);
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "store: %s", queue_strerror(rc));
        return;
    }
    if (more) {
        char next[24];
        snprintf(next, sizeof(next), "%llu", (unsigned long long)l.last);
        cJSON_AddStringToObject(fields, "next", next);
    } else {
        cJSON_AddNullToObject(fields, "next");
    }
    ipc_req_reply_ok(req, fields);
}

/*
 * cancel and retry change many jobs and answer how many changed. Each change
 * is a conditional store update (only_from), so a job that moved on meanwhile
 * (sent by a request in flight, say) is left alone and not counted; the
 * answer waits for every result.
 */
typedef struct bulk {
    daemon_t *d;
    ipc_req_t *req;
    const char *field; /* "cancelled" or "requeued" */
    int to_state;
    size_t pending; /* updates without a result yet */
    bool sealed;    /* every update is queued */
    uint64_t changed;
    int err; /* first store error */
    /* A campaign walk: the states still to walk, from states[si], jobs
     * after id `last`. */
    uv_timer_t turn; /* the next step at the next loop turn */
    char *campaign;
    int states[5];
    size_t nstates, si;
    uint64_t last;
    queue_job_cb cb;
    bool stepping; /* in bulk_step: results arriving now do not start one */
    /* A campaign cancel holds the campaign in the scheduler while it walks
     * (sched_campaign_hold): a job of a page not walked yet was picked and
     * sent meanwhile, and one picked without a request slot was cancelled
     * outside the answer's count (a cancel of 150,000 jobs answered
     * 127,167 of the 142,585 it cancelled, and 49-77 requests left after
     * it was asked). */
    bool held;
} bulk_t;

typedef struct bulk_op {
    bulk_t *b;
    uint64_t id;
    char *campaign; /* for the event */
    bool mark;      /* a flags-only update: not a change the answer counts */
} bulk_op_t;

static void bulk_closed_cb(uv_handle_t *h)
{
    bulk_t *b = h->data;

    free(b->campaign);
    free(b);
}

static void bulk_step(bulk_t *b);

/* Answers once every update is queued and has its result; `b` is gone
 * when this returns true. */
static bool bulk_finish_if_done(bulk_t *b)
{
    daemon_t *d = b->d;
    cJSON *f;

    if (!b->sealed || b->pending > 0)
        return false;
    if (b->to_state == QUEUE_STATE_QUEUED && b->changed > 0) {
        /* Requeued jobs are in the due index again: a refill brings them
         * into the active set in due order. */
        d->spill = true;
        dispatch_pump_soon(d);
    }
    if (b->held) {
        /* Jobs the walk left (moved on, or an error) go on; those a refill
         * left in the store meanwhile come back. */
        (void)sched_campaign_hold(d->sched, b->campaign, false);
        d->spill = true;
        dispatch_pump_soon(d);
    }
    if (b->campaign != NULL) /* the name is the client's text: not logged */
        dlog(d, CONFIG_LOG_INFO, "%s of a campaign: %llu jobs %s",
             b->to_state == QUEUE_STATE_CANCELLED ? "cancel" : "retry",
             (unsigned long long)b->changed, b->field);
    if (b->campaign != NULL && b->si < b->nstates && b->err == 0) {
        /* The stop ended the walk before the campaign's end (bulk_step):
         * "ok" with the count so far read as the whole campaign done, and
         * the jobs not walked were sent after the restart. Not done: the
         * client sends it again once the daemon is back (both are
         * idempotent). */
        ipc_req_reply_error(b->req, IPC_ERR_SHUTTING_DOWN,
                            "the daemon is stopping: the campaign was not walked to its end "
                            "(%llu jobs %s so far, the rest unchanged); send the request again "
                            "once the daemon is back",
                            (unsigned long long)b->changed, b->field);
    } else if (b->err != 0 && b->campaign != NULL && b->changed > 0) {
        /* Likewise for a store error: not "ok", but what did change is
         * said. */
        ipc_req_reply_error(b->req, IPC_ERR_INTERNAL,
                            "store: %s (%llu jobs %s before it; the rest of the campaign may be "
                            "unchanged)",
                            queue_strerror(b->err), (unsigned long long)b->changed, b->field);
    } else if (b->err != 0 && b->changed == 0) {
        ipc_req_reply_error(b->req, IPC_ERR_INTERNAL, "store: %s", queue_strerror(b->err));
    } else {
        f = cJSON_CreateObject();
        jsonnum_add(f, b->field, (double)b->changed);
        ipc_req_reply_ok(b->req, f);
    }
    uv_close((uv_handle_t *)&b->turn, bulk_closed_cb);
    return true;
}

static int bulk_add(bulk_t *b, const queue_update_t *u, const char *campaign);

/* Queues the stored cancel mark of job `id`, whose `sending` is committed
 * or queued before it (cancel_one). */
static int bulk_add_cancel_mark(bulk_t *b, uint64_t id)
{
    queue_update_t u;

    memset(&u, 0, sizeof(u));
    u.id = id;
    u.flags_only = true;
    u.set_flags = DAEMON_JOB_CANCEL;
    u.only_from = QUEUE_STATE_BIT(QUEUE_STATE_SENDING);
    return bulk_add(b, &u, NULL);
}

static void bulk_result_cb(int rc, int result, void *arg)
{
    bulk_op_t *op = arg;
    bulk_t *b = op->b;

    if (rc != 0 && b->err == 0)
        b->err = rc;
    if (!op->mark && b->to_state == QUEUE_STATE_CANCELLED)
        dispatch_settle_end(b->d, op->id); /* see bulk_add */
    if (op->mark) {
        /* Not counted. QUEUE_ESTATE: the job's attempt ended before the
         * mark committed (it needs none), or its `sending` record was not
         * in the store yet: while the attempt lasts, mark it again (a
         * failed commit's changes go ahead of the mark, commit.c). */
        sched_job_t *sj = result == QUEUE_ESTATE ? sched_job_find(b->d->sched, op->id) : NULL;
        if (rc == 0 && sj != NULL && (sj->marks & DAEMON_JOB_CANCEL) &&
            (sj->inflight || sj->user != NULL) && bulk_add_cancel_mark(b, op->id) != 0 &&
            b->err == 0)
            b->err = -ENOMEM;
    } else if (rc == 0 && result == 0) {
        b->changed++;
        daemon_event_job_in(b->d, op->id, b->to_state, op->campaign, NULL, NULL);
        if (b->to_state == QUEUE_STATE_QUEUED && !b->d->spill) {
            /* Requeued: due again in the store, older than any job
             * submitted from now on. With the store marked as holding
             * jobs the active set does not, a new job of the same order
             * key waits behind it (dispatch_activate) instead of going
             * first while the walk goes on. */
            b->d->spill = true;
            dispatch_pump_soon(b->d);
        }
    } else if (b->to_state == QUEUE_STATE_CANCELLED) {
        /* Not cancelled after all (or not recorded): if it left the active
         * set for the cancel and is still due, a refill brings it back. */
        b->d->spill = true;
        dispatch_pump_soon(b->d);
    }
    b->pending--;
    free(op->campaign);
    free(op);
    if (!bulk_finish_if_done(b) && !b->sealed && !b->stepping && b->pending == 0)
        bulk_step(b); /* the pages walked so far are durable: walk on */
}

/* Queues one conditional update of `b`; a flags-only one (`u->flags_only`)
 * is waited for but not counted. */
static int bulk_add(bulk_t *b, const queue_update_t *u, const char *campaign)
{
    bulk_op_t *op = calloc(1, sizeof(*op));
    int rc;

    if (op == NULL)
        return -ENOMEM;
    op->b = b;
    op->id = u->id;
    op->mark = u->flags_only;
    if (campaign != NULL && (op->campaign = strdup(campaign)) == NULL) {
        free(op);
        return -ENOMEM;
    }
    rc = commit_add_update_res(b->d->commit, u, bulk_result_cb, op);
    if (rc != 0) {
        free(op->campaign);
        free(op);
        return rc;
    }
    b->pending++;
    /* A cancelled job left the active set but stays in the due index until
     * this commits: refills leave it alone until then (dispatch.c). */
    if (b->to_state == QUEUE_STATE_CANCELLED && !op->mark)
        dispatch_settle_begin(b->d, u->id);
    return 0;
}

static bulk_t *bulk_new(daemon_t *d, ipc_req_t *req, const char *field, int to_state)
{
    bulk_t *b = calloc(1, sizeof(*b));

    if (b == NULL) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    b->d = d;
    b->req = req;
    b->field = field;
    b->to_state = to_state;
    uv_timer_init(d->loop, &b->turn);
    b->turn.data = b;
    return b;
}

/*
 * Cancels one job that the store shows in `state` (queued, retrying or
 * sending). A job of the active set that is in flight, or whose `sending`
 * is being committed, is not cancelled now: it is marked, finishes its
 * attempt and is then cancelled instead of retried (DAEMON_JOB_CANCEL,
 * not counted in the answer); any other leaves the active set now
 * so it cannot start, and its store state changes only if it is still
 * queued or retrying when the change commits. A job outside the active set
 * whose store state is `sending` is finishing (its outcome is pending).
 */
/* `attempts`: the job's count in the store (kept: a cancel does not undo
 * the requests already made). `flags`: the store's; a job a restart found
 * in flight (DAEMON_JOB_MAYBE_SENT) is cancelled with a last error saying
 * it may have been delivered then. */
static int cancel_one(bulk_t *b, uint64_t id, int state, const char *campaign, uint16_t attempts,
                      uint8_t flags)
{
    daemon_t *d = b->d;
    sched_job_t *sj;
    queue_update_t u;
    queue_error_info_t e;
    bool unsent;

    /* "Not in memory" must mean "only in the store": a committed job still
     * on its way into memory would be cancelled in the store only, then go
     * into memory and be sent (dispatch_activate_later). */
    dispatch_activate_pending(d);
    sj = sched_job_find(d->sched, id);
    /* Picked, its request not started (its `sending` record being
     * committed, or a request slot awaited): it never left, so it is
     * cancelled now and counted (it was cancelled later, outside the
     * answer's count). The update follows the `sending` record in the
     * commit queue; the attempt, which does not count, is dropped when its
     * turn comes (dispatch.c: attempt_job). */
    unsent = sj != NULL && sj->user != NULL && !dispatch_attempt_started(sj);
    if (!unsent && sj != NULL && (sj->inflight || sj->user != NULL)) {
        /* Its attempt is picked or on the wire: it finishes (a request
         * that left may have been delivered), then the job is cancelled
         * instead of retried, and one still waiting for a request slot
         * never leaves (dispatch.c: post, cancel_instead). */
        if (sj->marks & DAEMON_JOB_CANCEL)
            return 0; /* marked by an earlier cancel */
        sj->marks |= DAEMON_JOB_CANCEL;
        /* The mark is stored too, in the job's `sending` record (committed
         * before this: the commit queue keeps its order), so that a restart
         * before the attempt ends cancels the job instead of sending it
         * again (main.c: open_store). The answer waits for it. */
        return bulk_add_cancel_mark(b, id);
    }
    if (sj == NULL && state == QUEUE_STATE_SENDING)
        return 0;
    if (sj != NULL) {
        attempts = (uint16_t)(unsent && sj->attempts > 0 ? sj->attempts - 1 : sj->attempts);
        /* Its pick took a send from its pair that never reaches Meta. */
        if (unsent)
            sched_pair_refund(d->sched, sj, daemon_now());
        sched_job_finish(d->sched, sj);
    }
    memset(&u, 0, sizeof(u));
    u.id = id;
    u.state = QUEUE_STATE_CANCELLED;
    u.attempts = attempts;
    if (flags & DAEMON_JOB_MAYBE_SENT) {
        memset(&e, 0, sizeof(e));
        snprintf(e.code, sizeof(e.code), "CANCELLED");
        snprintf(e.message, sizeof(e.message),
                 "cancelled before it was sent again; a restart found its request in flight, "
                 "so it may have been delivered then");
        u.last_error = &e;
    }
    u.updated_at = daemon_now();
    u.only_from = QUEUE_STATE_BIT(QUEUE_STATE_QUEUED) | QUEUE_STATE_BIT(QUEUE_STATE_RETRYING) |
                  (unsent ? QUEUE_STATE_BIT(QUEUE_STATE_SENDING) : 0);
    return bulk_add(b, &u, campaign);
}

/* Requeues one job in `state` (failed, expired or uncertain): attempts start
 * over, it is due now (at its notBefore when that is still ahead), and an
 * expiry already past is renewed by job_ttl_s from then. */
static int retry_one(bulk_t *b, const queue_job_t *job)
{
    daemon_t *d = b->d;
    double now = daemon_now();
    queue_update_t u;

    memset(&u, 0, sizeof(u));
    u.id = job->id;
    u.state = QUEUE_STATE_QUEUED;
    u.attempts = 0;
    u.updated_at = now;
    u.next_attempt_at = job->not_before > now ? job->not_before : now;
    u.only_from = QUEUE_STATE_BIT(job->state);
    u.clear_flags = DAEMON_JOB_CANCEL; /* a cancel of an attempt that ended */
    if (job->expires_at > 0 && job->expires_at <= u.next_attempt_at + 1)
        u.expires_at = u.next_attempt_at + (double)d->cfg.job_ttl_s;
    return bulk_add(b, &u, job->campaign);
}

static bool retryable(int state)
{
    return state == QUEUE_STATE_FAILED || state == QUEUE_STATE_EXPIRED ||
           state == QUEUE_STATE_UNCERTAIN;
}

typedef struct walk_ctx {
    bulk_t *b;
    uint64_t last;
    int rc;
} walk_ctx_t;

static int cancel_walk_cb(const queue_job_t *job, void *arg)
{
    walk_ctx_t *w = arg;

    w->last = job->id;
    w->rc = cancel_one(w->b, job->id, job->state, job->campaign, job->attempts, job->flags);
    return w->rc != 0;
}

static int retry_walk_cb(const queue_job_t *job, void *arg)
{
    walk_ctx_t *w = arg;

    w->last = job->id;
    w->rc = retry_one(w->b, job);
    return w->rc != 0;
}

static void bulk_turn_cb(uv_timer_t *t)
{
    bulk_step(t->data);
}

/* Walks a few pages of the campaign, then comes back: at the next loop turn
 * when nothing it queued awaits a result, else when the results are in
 * (bulk_result_cb). Seals the walk when every state is walked, on an error,
 * or when the daemon stops; a walk sealed before the campaign's end is
 * answered with an error saying what changed (bulk_finish_if_done). */
static void bulk_step(bulk_t *b)
{
    daemon_t *d = b->d;
    int pages = 0, rc = 0;

    b->stepping = true;
    while (b->si < b->nstates && b->pending < BULK_PAGE && pages < BULK_PAGES_PER_TURN &&
           !d->stopping) {
        walk_ctx_t w = {b, b->last, 0};
        bool more = false;

        if (b->si >= BULK_CANCEL_PASS && b->pending > 0)
            break; /* the second pass reads what the first one changed */

        rc = queue_campaign_jobs(d->q, b->campaign, b->states[b->si], b->last, BULK_PAGE, b->cb, &w,
                                 &more);
        if (rc == 0)
            rc = w.rc;
        if (rc != 0)
            break;
        pages++;
        b->last = w.last;
        if (!more) {
            b->si++;
            b->last = 0;
        }
    }
    b->stepping = false;
    if (rc != 0) {
        /* What was queued still happens and is counted; the error is
         * reported if nothing changed. */
        dlog(d, CONFIG_LOG_ERROR, "%s: %s",
             b->to_state == QUEUE_STATE_CANCELLED ? "cancel" : "retry", queue_strerror(rc));
        b->err = rc;
    }
    if (rc != 0 || b->si >= b->nstates || d->stopping) {
        b->sealed = true;
        bulk_finish_if_done(b);
    } else if (b->pending == 0) {
        uv_timer_start(&b->turn, bulk_turn_cb, 0, 0);
    }
}

static void handle_cancel_retry(daemon_t *d, ipc_req_t *req, const ipc_request_t *r)
{
    bool cancel = r->op == IPC_OP_CANCEL;
    uint64_t counts[QUEUE_STATE_MAX + 1];
    queue_job_t job;
    bulk_t *b;
    int rc = 0;

    if (d->stopping) {
        ipc_req_reply_error(req, IPC_ERR_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    memset(&job, 0, sizeof(job));
    if (r->job != NULL) {
        uint64_t id = job_id_parse(r->job);
        rc = id != 0 ? queue_job_get(d->q, id, &job) : QUEUE_ENOTFOUND;
    } else {
        bool empty;

        rc = campaign_counts(d, r->campaign, counts, &empty);
        if (rc == 0 && empty) {
            /* Paused before its import: known, nothing to change. */
            cJSON *f = cJSON_CreateObject();

            jsonnum_add(f, cancel ? "cancelled" : "requeued", 0);
            ipc_req_reply_ok(req, f);
            return;
        }
    }
    if (rc == QUEUE_ENOTFOUND) {
        ipc_req_reply_error(req, IPC_ERR_NOT_FOUND,
                            r->job ? IPC_MSG_NO_SUCH_JOB : "no such campaign");
        return;
    }
    if (rc != 0) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "store: %s", queue_strerror(rc));
        return;
    }
    b = bulk_new(d, req, cancel ? "cancelled" : "requeued",
                 cancel ? QUEUE_STATE_CANCELLED : QUEUE_STATE_QUEUED);
    if (b == NULL) {
        queue_job_clear(&job);
        return;
    }
    if (r->job != NULL) {
        if (cancel && (job.state == QUEUE_STATE_QUEUED || job.state == QUEUE_STATE_RETRYING ||
                       job.state == QUEUE_STATE_SENDING))
            rc = cancel_one(b, job.id, job.state, job.campaign, job.attempts, job.flags);
        else if (!cancel && retryable(job.state))
            rc = retry_one(b, &job);
        queue_job_clear(&job);
        if (rc != 0) {
            dlog(d, CONFIG_LOG_ERROR, "%s: %s", cancel ? "cancel" : "retry", queue_strerror(rc));
            b->err = rc;
        }
        b->sealed = true;
        bulk_finish_if_done(b);
        return;
    }
    b->campaign = strdup(r->campaign);
    if (b->campaign == NULL) {
        b->err = -ENOMEM;
        b->sealed = true;
        bulk_finish_if_done(b);
        return;
    }
    if (cancel) {
        /* Without memory for the hold the walk still cancels; jobs picked
         * meanwhile finish their attempt (cancel_one marks them). */
        b->held = sched_campaign_hold(d->sched, b->campaign, true) == 0;
        b->states[0] = QUEUE_STATE_QUEUED;
        b->states[1] = QUEUE_STATE_RETRYING;
        b->states[2] = QUEUE_STATE_SENDING;
        /* A second pass, once the first one's changes are durable (and so
         * every change recorded before the cancel): a job whose outcome was
         * recorded but not durable when the walk read its new state's pages
         * (a retry answered just before, an attempt that never left) moved
         * behind the walk, and the `sending` pass no longer found it. */
        b->states[3] = QUEUE_STATE_QUEUED;
        b->states[4] = QUEUE_STATE_RETRYING;
        b->nstates = 5;
        b->cb = cancel_walk_cb;
    } else {
        b->states[0] = queue_state_parse(r->state);
        b->nstates = 1;
        b->cb = retry_walk_cb;
    }
    bulk_step(b);
}

/* --- pause / resume ------------------------------------------------------- */

static void pause_durable_cb(void *arg)
{
    ipc_req_reply_ok(arg, NULL);
}

static void handle_pause(daemon_t *d, ipc_req_t *req, const ipc_request_t *r, bool paused)
{
    int kind, rc;
    const char *name;

    if (r->all) {
        kind = QUEUE_PAUSE_ALL;
        name = "";
    } else if (r->campaign) {
        kind = QUEUE_PAUSE_CAMPAIGN;
        name = r->campaign;
    } else if (r->phone_number_id) {
        kind = QUEUE_PAUSE_SENDER;
        name = r->phone_number_id;
    } else {
        ipc_req_reply_error(req, IPC_ERR_VALIDATION,
                            "one of campaign, phoneNumberId or all:true is required");
        return;
    }
    if (d->stopping) {
        ipc_req_reply_error(req, IPC_ERR_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    /* Answered once the pause is durable: it survives a restart. */
    rc = dispatch_set_pause(d, kind, name, paused, pause_durable_cb, req);
    if (rc == -ENOSPC)
        ipc_req_reply_error(req, IPC_ERR_QUEUE_FULL,
                            "%d senders and campaigns are paused by the operator already; "
                            "resume some first",
                            DAEMON_MAX_PAUSES);
    else if (rc != 0)
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "cannot record the %s: %s",
                            paused ? "pause" : "resume", queue_strerror(rc));
}

void daemon_request_cb(ipc_req_t *req, void *user)
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
    case IPC_OP_LIST:
        handle_list(d, req, r);
        break;
    case IPC_OP_CAMPAIGN:
        handle_campaign(d, req, r);
        break;
    case IPC_OP_CANCEL:
    case IPC_OP_RETRY:
        handle_cancel_retry(d, req, r);
        break;
    case IPC_OP_WATCH:
        daemon_watch_add(d, req, r->campaign);
        break;
    case IPC_OP_PAUSE:
    case IPC_OP_RESUME:
        handle_pause(d, req, r, r->op == IPC_OP_PAUSE);
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
