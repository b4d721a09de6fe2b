/*
 * handlers.c - answers to socket requests: submits (answered after their
 * group commit), get, stats, ping.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon.h"

/* --- submits ---------------------------------------------------------- */

typedef struct submit_ctx {
    daemon_t *d;
    ipc_req_t *req;
    sched_job_t tmpl;
    char phone_number_id[QUEUE_MAX_ID_LEN + 1];
} submit_ctx_t;

static void submit_committed_cb(int rc, int result, uint64_t orig_id, void *arg)
{
    submit_ctx_t *ctx = arg;
    daemon_t *d = ctx->d;

    if (rc != 0) {
        bool full = rc == QUEUE_EFULL || rc == -ENOSPC;
        double now = daemon_now();
        /* Every submit of the failed batch lands here: one line a second. */
        if (now - d->commit_err_logged >= 1.0) {
            d->commit_err_logged = now;
            dlog(d, CONFIG_LOG_ERROR, "store commit failed: %s; its submits were refused",
                 queue_strerror(rc));
        }
        ipc_req_reply_error(ctx->req, full ? IPC_ERR_QUEUE_FULL : IPC_ERR_INTERNAL,
                            "job not stored: %s", queue_strerror(rc));
    } else if (result == QUEUE_EDUPLICATE) {
        d->stats.duplicates++;
        ipc_req_reply_submit(ctx->req, orig_id, true);
    } else {
        d->stats.submitted++;
        ipc_req_reply_submit(ctx->req, ctx->tmpl.id, false);
        dispatch_activate(d, &ctx->tmpl, ctx->phone_number_id);
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
    if (rc == QUEUE_EFULL || rc == -ENOSPC) {
        /* A recent batch found the store full: refused at once until the
         * committer's next probe (commit.h). */
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
    cJSON_AddNumberToObject(st, "purged", (double)d->stats.purged);
    cJSON_AddNumberToObject(st, "connections", ipc_server_connections(d->ipc));
    if (queue_space(d->q, &map, &used) == 0) {
        cJSON_AddNumberToObject(st, "storeMapBytes", (double)map);
        cJSON_AddNumberToObject(st, "storeUsedBytes", (double)used);
    }
    ipc_req_reply_ok(req, fields);
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
