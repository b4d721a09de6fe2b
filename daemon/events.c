/*
 * events.c - what the daemon tells the outside without being asked each
 * time: `watch` streams of job state changes, and the metrics file.
 *
 * Backpressure of watch streams is ipc's: each stream buffers at most
 * WATCH_BUFFER bytes unsent, then drops events and sends a counted gap
 * marker once the peer reads again. So a slow watcher costs dispatch one
 * small JSON rendering per event and never more memory than that bound.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon.h"
#include "jsonnum.h"

#define WATCH_BUFFER ((size_t)256 << 10)

/* --- watch -------------------------------------------------------------- */

static void watcher_drop(daemon_t *d, size_t i);

void daemon_watch_add(daemon_t *d, ipc_req_t *req, const char *campaign)
{
    daemon_watcher_t *w;
    char *filter = NULL;
    ipc_stream_t *st;

    /* Watchers whose peer left are otherwise dropped at the next event
     * they match, which may never come: clients that open and close watch
     * while nothing is sent would pile them up. */
    for (size_t i = 0; i < d->n_watchers;) {
        if (ipc_stream_closed(d->watchers[i].st))
            watcher_drop(d, i);
        else
            i++;
    }

    if (d->n_watchers == d->cap_watchers) {
        size_t cap = d->cap_watchers ? d->cap_watchers * 2 : 8;
        daemon_watcher_t *nw = realloc(d->watchers, cap * sizeof(*nw));
        if (nw == NULL) {
            ipc_req_reply_error(req, IPC_ERR_INTERNAL, "out of memory");
            return;
        }
        d->watchers = nw;
        d->cap_watchers = cap;
    }
    if (campaign != NULL && (filter = strdup(campaign)) == NULL) {
        ipc_req_reply_error(req, IPC_ERR_INTERNAL, "out of memory");
        return;
    }
    st = ipc_req_reply_stream(req, WATCH_BUFFER);
    if (st == NULL) { /* the peer has gone */
        free(filter);
        return;
    }
    w = &d->watchers[d->n_watchers++];
    w->st = st;
    w->campaign = filter;
}

/* Moves the last watcher into slot i and clears the last slot, so no slot
 * at or past n_watchers keeps a pointer that was released here. */
static void watcher_drop(daemon_t *d, size_t i)
{
    size_t last = --d->n_watchers;

    ipc_stream_release(d->watchers[i].st);
    free(d->watchers[i].campaign);
    d->watchers[i] = d->watchers[last];
    memset(&d->watchers[last], 0, sizeof(d->watchers[last]));
}

void daemon_watchers_close(daemon_t *d)
{
    while (d->n_watchers > 0)
        watcher_drop(d, d->n_watchers - 1);
    free(d->watchers);
    d->watchers = NULL;
    d->cap_watchers = 0;
    /* Events whose state change a failed drain gave up on: never sent. */
    for (daemon_event_t *ev = d->events_pending, *next; ev != NULL; ev = next) {
        next = ev->next;
        free(ev);
    }
    d->events_pending = NULL;
}

/* The event line of a job's state change (cJSON_free it), NULL when out
 * of memory. */
static char *event_render(uint64_t id, int state, const char *campaign, const char *wamid,
                          const queue_error_info_t *err)
{
    char ids[24], *line;
    cJSON *o = cJSON_CreateObject();

    if (o == NULL)
        return NULL;
    snprintf(ids, sizeof(ids), "%llu", (unsigned long long)id);
    cJSON_AddStringToObject(o, "event", "job");
    cJSON_AddStringToObject(o, "job", ids);
    cJSON_AddStringToObject(o, "state", queue_state_name(state));
    if (campaign)
        cJSON_AddStringToObject(o, "campaign", campaign);
    else
        cJSON_AddNullToObject(o, "campaign");
    if (wamid)
        cJSON_AddStringToObject(o, "wamid", wamid);
    else
        cJSON_AddNullToObject(o, "wamid");
    daemon_error_json(o, "error", err);
    jsonnum_add(o, "time", daemon_now());
    line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return line;
}

/* Whether a watcher wants the events of `campaign` (NULL: none). */
static bool event_wanted(const daemon_t *d, const char *campaign)
{
    for (size_t i = 0; i < d->n_watchers; i++) {
        const char *want = d->watchers[i].campaign;
        if (want == NULL || (campaign != NULL && strcmp(want, campaign) == 0))
            return true;
    }
    return false;
}

/* Sends an event line to the watchers it concerns. */
static void event_fan_out(daemon_t *d, const char *campaign, const char *line, size_t len)
{
    for (size_t i = 0; i < d->n_watchers;) {
        daemon_watcher_t *w = &d->watchers[i];
        if (w->campaign != NULL && (campaign == NULL || strcmp(w->campaign, campaign) != 0)) {
            i++;
            continue;
        }
        if (ipc_stream_send(w->st, line, len) == IPC_ECLOSED) {
            watcher_drop(d, i); /* moves the last one here: look at i again */
            continue;
        }
        i++;
    }
}

void daemon_event_job_in(daemon_t *d, uint64_t id, int state, const char *campaign,
                         const char *wamid, const queue_error_info_t *err)
{
    char *line;

    if (!event_wanted(d, campaign))
        return;
    line = event_render(id, state, campaign, wamid, err);
    if (line == NULL)
        return;
    event_fan_out(d, campaign, line, strlen(line));
    cJSON_free(line);
}

void daemon_event_job(daemon_t *d, uint64_t id, int state, const char *wamid,
                      const queue_error_info_t *err)
{
    daemon_event_send(d, daemon_event_job_new(d, id, state, wamid, err));
}

daemon_event_t *daemon_event_job_new(daemon_t *d, uint64_t id, int state, const char *wamid,
                                     const queue_error_info_t *err)
{
    daemon_event_t *ev = NULL;
    const sched_job_t *sj;
    const char *campaign;
    queue_job_t job;
    char *line = NULL;
    size_t len, clen;

    if (d->n_watchers == 0)
        return NULL;
    memset(&job, 0, sizeof(job));
    /* The campaign never changes: the active set's copy, else the committed
     * record's (which has it while this state change is still pending).
     * Events no watcher wants cost no store read - a watcher of a small
     * campaign beside a bulk one read the store for each of the bulk one's
     * state changes. */
    if ((sj = sched_job_find(d->sched, id)) != NULL) {
        campaign = sched_job_campaign(sj);
    } else {
        if (queue_job_get(d->q, id, &job) != 0)
            memset(&job, 0, sizeof(job));
        campaign = job.campaign;
    }
    if (!event_wanted(d, campaign))
        goto out;
    line = event_render(id, state, campaign, wamid, err);
    if (line == NULL)
        goto out;
    len = strlen(line);
    clen = campaign != NULL ? strlen(campaign) + 1 : 0;
    /* One block: the event, its line, its campaign. */
    ev = malloc(sizeof(*ev) + len + clen);
    if (ev == NULL)
        goto out;
    memset(ev, 0, sizeof(*ev));
    ev->d = d;
    ev->len = len;
    memcpy(ev->data, line, len);
    if (clen > 0) {
        ev->campaign = ev->data + len;
        memcpy(ev->campaign, campaign, clen);
    }
    ev->next = d->events_pending;
    if (ev->next != NULL)
        ev->next->prev = ev;
    d->events_pending = ev;
out:
    cJSON_free(line);
    queue_job_clear(&job);
    return ev;
}

void daemon_event_free(daemon_t *d, daemon_event_t *ev)
{
    if (ev == NULL)
        return;
    if (ev->prev != NULL)
        ev->prev->next = ev->next;
    else
        d->events_pending = ev->next;
    if (ev->next != NULL)
        ev->next->prev = ev->prev;
    free(ev);
}

void daemon_event_send(daemon_t *d, daemon_event_t *ev)
{
    if (ev == NULL)
        return;
    event_fan_out(d, ev->campaign, ev->data, ev->len);
    daemon_event_free(d, ev);
}

/* --- metrics ------------------------------------------------------------ */

typedef struct senders_acc {
    metrics_sender_t *v;
    size_t n, cap;
    bool oom;
} senders_acc_t;

static void sender_cb(const sched_sender_info_t *s, void *arg)
{
    senders_acc_t *a = arg;

    if (a->oom)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        metrics_sender_t *nv = realloc(a->v, cap * sizeof(*nv));
        if (nv == NULL) {
            a->oom = true;
            return;
        }
        a->v = nv;
        a->cap = cap;
    }
    /* The name is the scheduler's and lives as long as the sender, which
     * outlasts this rendering (nothing runs on the loop meanwhile). */
    a->v[a->n].phone_number_id = s->phone_number_id;
    a->v[a->n].rate = s->rate;
    a->v[a->n].max_rate = s->max_rate;
    a->v[a->n].queued = s->queued;
    a->v[a->n].inflight = s->inflight;
    a->v[a->n].paused = s->paused;
    a->n++;
}

typedef struct oldest_ctx {
    double due;
} oldest_ctx_t;

/* The first due entry that is not in flight: the job that has waited
 * longest for its turn. */
static int oldest_cb(const queue_due_entry_t *e, void *arg)
{
    oldest_ctx_t *o = arg;

    if (e->state == QUEUE_STATE_SENDING || e->problem != 0)
        return 0;
    o->due = e->due;
    return 1;
}

/* One replacement of the metrics file, on the thread pool: the path and
 * text are the job's own (the loop may reload the configuration meanwhile),
 * and nothing of the daemon is touched off the loop. */
typedef struct metrics_job {
    uv_work_t work;
    daemon_t *d;
    char *path;
    char *text;
    size_t len;
    int rc;
} metrics_job_t;

/* One line when writing starts to fail and one when it works again, not one
 * every interval. */
static void metrics_report(daemon_t *d, int rc)
{
    if (rc != 0 && !d->metrics_failing)
        dlog(d, CONFIG_LOG_WARN, "metrics file %s: %s", d->cfg.metrics_file, strerror(-rc));
    else if (rc == 0 && d->metrics_failing)
        dlog(d, CONFIG_LOG_INFO, "metrics file %s written again", d->cfg.metrics_file);
    d->metrics_failing = rc != 0;
}

static void metrics_job_free(metrics_job_t *job)
{
    free(job->path);
    free(job->text);
    free(job);
}

static void metrics_work_cb(uv_work_t *w)
{
    metrics_job_t *job = w->data;

    job->rc = metrics_write_file(job->path, job->text, job->len);
}

static void metrics_after_cb(uv_work_t *w, int status)
{
    metrics_job_t *job = w->data;
    daemon_t *d = job->d;

    d->metrics_job = NULL;
    metrics_report(d, status != 0 ? status : job->rc);
    metrics_job_free(job);
    if (d->metrics_again) {
        d->metrics_again = false;
        daemon_metrics_write(d);
    }
}

/* Hands the rendered text (taken over) to the thread pool. */
static int metrics_write_start(daemon_t *d, char *text, size_t len)
{
    metrics_job_t *job = calloc(1, sizeof(*job));
    int rc;

    if (job == NULL) {
        free(text);
        return -ENOMEM;
    }
    job->text = text;
    job->len = len;
    job->d = d;
    job->work.data = job;
    job->path = strdup(d->cfg.metrics_file);
    rc = job->path == NULL ? -ENOMEM
                           : uv_queue_work(d->loop, &job->work, metrics_work_cb, metrics_after_cb);
    if (rc != 0) {
        metrics_job_free(job);
        return rc;
    }
    d->metrics_job = job;
    return 0;
}

void daemon_metrics_write(daemon_t *d)
{
    metrics_outcome_t outcomes[CLASSIFY_RESCHEDULE_DAY];
    metrics_snapshot_t s;
    senders_acc_t acc = {NULL, 0, 0, false};
    oldest_ctx_t old = {NAN};
    double now = daemon_now();
    char *text = NULL;
    size_t len = 0, scan;
    int rc;

    if (d->cfg.metrics_file == NULL)
        return;
    if (d->metrics_job != NULL) { /* rendered when that write ends */
        d->metrics_again = true;
        return;
    }
    memset(&s, 0, sizeof(s));
    (void)queue_counts(d->q, s.jobs);
    for (int a = CLASSIFY_SENT; a <= CLASSIFY_RESCHEDULE_DAY; a++) {
        outcomes[a - 1].name = classify_action_name(a);
        outcomes[a - 1].n = d->stats.by_action[a];
    }
    s.outcomes = outcomes;
    s.n_outcomes = CLASSIFY_RESCHEDULE_DAY;
    s.latency = &d->stats.http_latency;
    if (d->sched != NULL)
        sched_senders_each(d->sched, now, sender_cb, &acc);
    s.senders = acc.v;
    s.n_senders = acc.n;
    s.inflight = d->sched ? sched_inflight(d->sched) : 0;
    s.commit_backlog = d->commit ? commit_backlog(d->commit) : 0;
    /* Entries due up to now. The jobs that are `sending` in the store come
     * first in due order (they were picked first) and are skipped: the
     * walk may pass over all of them - the jobs picked and not finished,
     * those whose change out of `sending` waits for a commit, and the
     * unreadable ones - and a few hundred more. A fixed 512 read 0 ("none
     * due") exactly when more than 512 were in flight: under saturation. */
    scan = 512 + (size_t)s.inflight + s.commit_backlog + (size_t)d->stats.unreadable;
    (void)queue_due_scan(d->q, 0, 0, now, scan, oldest_cb, &old);
    s.oldest_due_age = isnan(old.due) || old.due > now ? 0 : now - old.due;
    s.submitted = d->stats.submitted;
    s.duplicates = d->stats.duplicates;
    s.requests = d->stats.sends;
    s.possible_duplicates = d->stats.maybe_duplicates;
    s.commits = d->stats.commits;
    s.commit_failures = d->stats.commit_failures;
    s.purged = d->stats.purged;
    s.unreadable_jobs = d->stats.unreadable;
    if (d->http != NULL) {
        http_stats_t hs;

        http_pool_stats(d->http, &hs);
        s.http_connects = hs.connects;
        s.tls_handshakes = hs.handshakes;
    }
    s.http_inflight = d->http ? (unsigned)http_pool_inflight(d->http) : 0;
    s.active = d->sched ? sched_jobs(d->sched) : 0;
    s.connections = d->ipc ? ipc_server_connections(d->ipc) : 0;
    s.watchers = d->n_watchers;
    (void)queue_space(d->q, &s.store_map_bytes, &s.store_used_bytes);
    s.version = AVP_VERSION;

    rc = metrics_render(&s, &text, &len);
    free(acc.v);
    if (rc == 0)
        rc = metrics_write_start(d, text, len);
    if (rc != 0)
        metrics_report(d, rc);
}

static void metrics_timer_cb(uv_timer_t *t)
{
    daemon_metrics_write(t->data);
}

void daemon_metrics_start(daemon_t *d)
{
    uint64_t ms = (uint64_t)d->cfg.metrics_interval_ms;

    if (d->cfg.metrics_file == NULL)
        return;
    daemon_metrics_write(d);
    uv_timer_start(&d->metrics_timer, metrics_timer_cb, ms, ms);
}
