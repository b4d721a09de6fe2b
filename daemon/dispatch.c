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

static void note_paused_expiry(daemon_t *d, double expires_at)
{
    if (expires_at > 0 && (d->paused_expiry == 0 || expires_at < d->paused_expiry))
        d->paused_expiry = expires_at;
}

static int older_found_cb(const queue_due_entry_t *e, void *arg)
{
    (void)e;
    *(bool *)arg = true;
    return 1;
}

/*
 * Whether an older unfinished job of the key is out of memory (paused in
 * the store, or left there while the active set was full): then the new job
 * must not go in before it. The store holds no unfinished job of a key older
 * than its newest in memory that is not in memory too (the order invariant
 * of scheduler.h, kept by the refill and, for new jobs, by this), so only
 * the ids after the key's newest in memory need a look, and any entry there
 * is out of memory: one index entry, however many jobs the key has. (The
 * key's first ACTIVE_FAIR_MIN jobs from id 0 were looked at instead: with
 * 1,000 older jobs in memory, one more in the store was missed and the new
 * job went before it.) A read error says yes (the refill decides).
 */
static bool older_left(daemon_t *d, const sched_job_t *tmpl, const sched_keys_t *keys)
{
    bool found = false;

    if (keys->order_key == NULL)
        return false;
    if (queue_order_scan(d->q, keys->order_key, sched_order_last_id(d->sched, keys->order_key),
                         tmpl->id, 1, older_found_cb, &found) != 0)
        return true;
    return found;
}

/*
 * While the store holds jobs the active set does not, a new job may still
 * come in - within ACTIVE_SET_RESERVE, for a campaign with fewer than
 * ACTIVE_FAIR_MIN jobs in memory - if every older unfinished job of its
 * order key is in memory, so it cannot overtake one. The key's newest job
 * that left memory while the store still shows it unfinished (its final
 * state waits for a commit) makes this say no: safe, it only means the
 * refill brings the job in.
 */
static bool activate_fair(daemon_t *d, const sched_job_t *tmpl, const sched_keys_t *keys)
{
    if (!sched_has_room(d->sched) ||
        sched_campaign_jobs(d->sched, keys->campaign) >= ACTIVE_FAIR_MIN ||
        older_left(d, tmpl, keys) || sched_job_add(d->sched, tmpl, keys) != 0)
        return false;
    dispatch_pump_soon(d);
    return true;
}

/* A job (due, id) stays in the store for a later refill. After the refill
 * cursor, a refill from the cursor finds it; before it, the next refill
 * starts from the beginning. The due index orders by whole milliseconds. */
static void spill_job(daemon_t *d, double due, uint64_t id)
{
    uint64_t ms = (uint64_t)(due * 1000.0 + 0.5), cms = (uint64_t)(d->refill_due * 1000.0 + 0.5);

    if (ms > cms || (ms == cms && id > d->refill_id))
        d->spill_new = true;
    else
        d->spill = true;
}

void dispatch_activate(daemon_t *d, const sched_job_t *tmpl, const sched_keys_t *keys)
{
    int rc;

    if (tmpl->id > d->activated_id)
        d->activated_id = tmpl->id;

    /* A paused job stays in the store; the resume brings it in, or a refill
     * records it expired when its time comes first. */
    if (sched_keys_paused(d->sched, keys->phone_number_id, keys->campaign)) {
        note_paused_expiry(d, tmpl->expires_at);
        d->paused_left = true;
        return;
    }
    /* Behind a job of its key that waits in the store (paused): the refill
     * brings both in, the older one first (refill_pred_cb). */
    if (d->paused_left && older_left(d, tmpl, keys)) {
        spill_job(d, tmpl->due, tmpl->id);
        dispatch_pump_soon(d);
        return;
    }
    if (d->spill || d->spill_new || sched_jobs(d->sched) >= ACTIVE_SET_MAX) {
        /* The store has it; a refill brings it in when there is room. A
         * job of a campaign with few jobs in memory may take the reserve. */
        if (!activate_fair(d, tmpl, keys))
            spill_job(d, tmpl->due, tmpl->id);
        return;
    }
    rc = sched_job_add(d->sched, tmpl, keys);
    if (rc != 0 && rc != -EEXIST)
        spill_job(d, tmpl->due, tmpl->id);
    dispatch_pump_soon(d);
}

/* --- activation later ----------------------------------------------------- */

/* Jobs activated per loop turn: a sixteenth of those waiting, at least
 * ACT_CHUNK_MIN (the input of the turn is read between chunks), and enough
 * that no more than ACT_WAIT_MAX wait after it, so that under a steady
 * stream of submits the FIFO stays bounded. */
#define ACT_CHUNK_MIN 64
#define ACT_WAIT_MAX 4096
/* Only the jobs of a batch at least this large wait (or of any batch while
 * others wait, to keep their order): a small batch is latency, not volume,
 * and goes into memory at once as before. */
#define ACT_BATCH_MIN 256
#define NOSTR UINT16_MAX

/* One waiting job: its template as given, its strings after it. */
typedef struct pending_act {
    struct pending_act *next;
    sched_job_t tmpl;
    uint16_t phone, to, campaign, okey; /* offsets into str, or NOSTR */
    char str[];
} pending_act_t;

static size_t str_size(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static uint16_t str_put(pending_act_t *a, size_t *used, const char *s)
{
    size_t n = str_size(s);
    uint16_t off = (uint16_t)*used;

    if (s == NULL)
        return NOSTR;
    memcpy(a->str + *used, s, n);
    *used += n;
    return off;
}

static const char *str_get(const pending_act_t *a, uint16_t off)
{
    return off == NOSTR ? NULL : a->str + off;
}

/* Activates up to `max` waiting jobs, oldest first. */
static void act_run(daemon_t *d, size_t max)
{
    while (d->act_first != NULL && max-- > 0) {
        pending_act_t *a = d->act_first;
        sched_keys_t k = {.phone_number_id = str_get(a, a->phone),
                          .to = str_get(a, a->to),
                          .campaign = str_get(a, a->campaign),
                          .order_key = str_get(a, a->okey)};

        d->act_first = a->next;
        if (d->act_first == NULL)
            d->act_last = NULL;
        d->act_count--;
        dispatch_activate(d, &a->tmpl, &k);
        free(a);
    }
    if (d->act_first == NULL)
        uv_idle_stop(&d->act_idle);
}

static void act_idle_cb(uv_idle_t *h)
{
    daemon_t *d = h->data;
    size_t waiting = d->act_count, chunk = waiting / 16;

    if (d->stopping) {
        /* Stored and due: sent after the restart. */
        dispatch_pending_free(d);
        return;
    }
    if (chunk < ACT_CHUNK_MIN)
        chunk = ACT_CHUNK_MIN;
    if (waiting > chunk + ACT_WAIT_MAX)
        chunk = waiting - ACT_WAIT_MAX;
    act_run(d, chunk);
}

int dispatch_activate_later(daemon_t *d, const sched_job_t *tmpl, const sched_keys_t *keys)
{
    size_t len = str_size(keys->phone_number_id) + str_size(keys->to) + str_size(keys->campaign) +
                 str_size(keys->order_key);
    size_t used = 0;
    pending_act_t *a;

    if (d->closing || len >= NOSTR || (d->act_first == NULL && d->last_commit_ops < ACT_BATCH_MIN))
        return -EINVAL; /* the caller activates at once */
    a = malloc(sizeof(*a) + len);
    if (a == NULL)
        return -ENOMEM;
    a->next = NULL;
    a->tmpl = *tmpl;
    a->phone = str_put(a, &used, keys->phone_number_id);
    a->to = str_put(a, &used, keys->to);
    a->campaign = str_put(a, &used, keys->campaign);
    a->okey = str_put(a, &used, keys->order_key);
    if (d->act_last != NULL)
        d->act_last->next = a;
    else
        d->act_first = a;
    d->act_last = a;
    d->act_count++;
    uv_idle_start(&d->act_idle, act_idle_cb);
    return 0;
}

void dispatch_activate_pending(daemon_t *d)
{
    if (d->act_first != NULL && !d->stopping)
        act_run(d, SIZE_MAX);
}

void dispatch_pending_free(daemon_t *d)
{
    while (d->act_first != NULL) {
        pending_act_t *a = d->act_first;
        d->act_first = a->next;
        free(a);
    }
    d->act_last = NULL;
    d->act_count = 0;
    if (uv_is_active((uv_handle_t *)&d->act_idle))
        uv_idle_stop(&d->act_idle);
}

/* --- attempts --------------------------------------------------------- */

typedef struct attempt {
    daemon_t *d;
    uint64_t id;
    const char *path;
    char *body;
    size_t len;
    uint64_t posted;      /* uv_hrtime() when its request started */
    unsigned token_gen;   /* d->token_gen when its request started */
    struct attempt *next; /* in d->post_head's FIFO */
} attempt_t;

/* --- jobs settling ------------------------------------------------------- */

struct daemon_settle_slot {
    uint64_t id; /* 0: free */
    uint32_t n;  /* writes pending */
};

#define SETTLE_CAP_MIN 64

static size_t settle_slot(size_t cap, uint64_t id)
{
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

/* The slot of `id`, or the free slot where it would go. */
static struct daemon_settle_slot *settle_find(const daemon_t *d, uint64_t id)
{
    size_t i = settle_slot(d->settling_cap, id);

    while (d->settling[i].id != 0 && d->settling[i].id != id)
        i = (i + 1) & (d->settling_cap - 1);
    return &d->settling[i];
}

static bool settle_has(const daemon_t *d, uint64_t id)
{
    return d->settling_n > 0 && settle_find(d, id)->id == id;
}

static int settle_grow(daemon_t *d)
{
    struct daemon_settle_slot *old = d->settling;
    size_t cap = d->settling_cap, ncap = cap ? cap * 2 : SETTLE_CAP_MIN;

    d->settling = calloc(ncap, sizeof(*d->settling));
    if (d->settling == NULL) {
        d->settling = old;
        return -ENOMEM;
    }
    d->settling_cap = ncap;
    for (size_t i = 0; i < cap; i++)
        if (old[i].id != 0)
            *settle_find(d, old[i].id) = old[i];
    free(old);
    return 0;
}

void dispatch_settle_begin(daemon_t *d, uint64_t id)
{
    struct daemon_settle_slot *sl;

    if ((d->settling_n + 1) * 2 > d->settling_cap && settle_grow(d) != 0) {
        d->settling_untracked++; /* no refill until it ends */
        return;
    }
    sl = settle_find(d, id);
    if (sl->id == 0) {
        sl->id = id;
        d->settling_n++;
    }
    sl->n++;
}

void dispatch_settle_end(daemon_t *d, uint64_t id)
{
    struct daemon_settle_slot *sl;
    size_t i, j, k;

    if (!settle_has(d, id)) {
        if (d->settling_untracked > 0)
            d->settling_untracked--;
        goto done;
    }
    sl = settle_find(d, id);
    if (--sl->n > 0)
        return;
    /* Deleted by shifting back the entries of its probe run behind it. */
    i = (size_t)(sl - d->settling);
    d->settling[i].id = 0;
    d->settling_n--;
    for (j = (i + 1) & (d->settling_cap - 1); d->settling[j].id != 0;
         j = (j + 1) & (d->settling_cap - 1)) {
        k = settle_slot(d->settling_cap, d->settling[j].id);
        if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
            d->settling[i] = d->settling[j];
            d->settling[j].id = 0;
            i = j;
        }
    }
done:
    if (d->spill || d->spill_new)
        dispatch_pump_soon(d); /* a refill may have waited */
}

void dispatch_settle_free(daemon_t *d)
{
    free(d->settling);
    d->settling = NULL;
    d->settling_cap = d->settling_n = d->settling_untracked = 0;
}

typedef struct settle_arg {
    daemon_t *d;
    uint64_t id;
} settle_arg_t;

static void settled_cb(void *arg)
{
    settle_arg_t *s = arg;

    dispatch_settle_end(s->d, s->id);
    free(s);
}

/* A recorded state change is durable: its watch event goes out, then a
 * settle ends. */
static void recorded_cb(void *arg)
{
    daemon_event_t *ev = arg;
    daemon_t *d = ev->d;
    uint64_t settle_id = ev->settle_id;

    daemon_event_send(d, ev);
    if (settle_id != 0)
        dispatch_settle_end(d, settle_id);
}

/* Records a state change. `settle`: the job left the active set while the
 * store shows it queued or retrying; refills leave it alone until this is
 * durable (see daemon_t.settling). Watchers hear of it once it is durable:
 * a `sent` they saw is never lost by a crash (and so never sent again). */
static void record_ex(daemon_t *d, uint64_t id, int state, uint16_t attempts, double due,
                      const char *wamid, const queue_error_info_t *err, bool settle,
                      uint8_t set_flags)
{
    /* A send's event carries no error. */
    daemon_event_t *ev =
        daemon_event_job_new(d, id, state, wamid, state == QUEUE_STATE_SENT ? NULL : err);
    settle_arg_t *sa = NULL;
    queue_update_t u;
    int rc;

    memset(&u, 0, sizeof(u));
    u.set_flags = set_flags;
    u.id = id;
    u.state = (uint8_t)state;
    u.attempts = attempts;
    u.updated_at = daemon_now();
    u.next_attempt_at = due;
    u.wamid = wamid;
    u.last_error = err;
    if (ev != NULL) {
        ev->settle_id = settle ? id : 0;
        rc = commit_add_update_cb(d->commit, &u, recorded_cb, ev);
    } else if (settle && (sa = malloc(sizeof(*sa))) != NULL) {
        sa->d = d;
        sa->id = id;
        rc = commit_add_update_cb(d->commit, &u, settled_cb, sa);
    } else {
        rc = settle ? -ENOMEM : commit_add_update(d->commit, &u);
    }
    if (rc == 0 && settle)
        dispatch_settle_begin(d, id);
    if (rc != 0) {
        free(sa);
        daemon_event_free(d, ev);
        dlog(d, CONFIG_LOG_ERROR, "job %llu: state change to %s not recorded: %s",
             (unsigned long long)id, queue_state_name(state), queue_strerror(rc));
    }
}

static void record(daemon_t *d, uint64_t id, int state, uint16_t attempts, double due,
                   const char *wamid, const queue_error_info_t *err)
{
    record_ex(d, id, state, attempts, due, wamid, err, false, 0);
}

/* A job cancelled while its attempt was picked or in flight (handlers.c:
 * cancel_one) is cancelled now instead of waiting for another attempt;
 * `err` (may be NULL) is the attempt's outcome. Returns whether it was (the
 * job is finished then). */
static bool cancel_instead(daemon_t *d, sched_job_t *job, const queue_error_info_t *err)
{
    if (!(job->marks & DAEMON_JOB_CANCEL))
        return false;
    record(d, job->id, QUEUE_STATE_CANCELLED, job->attempts, 0, NULL, err);
    sched_job_finish(d->sched, job);
    return true;
}

/* The expiry of a job with `marks` (sched_job_t.marks or the store's
 * flags): `expired`, "not sent" - unless a restart found it in flight
 * (DAEMON_JOB_MAYBE_SENT): then it may have been delivered before the
 * crash, and it ends `uncertain`, saying so. */
static void record_expiry(daemon_t *d, uint64_t id, uint16_t attempts, uint8_t marks,
                          const queue_error_info_t *err, bool settle)
{
    queue_error_info_t e;

    if (!(marks & DAEMON_JOB_MAYBE_SENT)) {
        record_ex(d, id, QUEUE_STATE_EXPIRED, attempts, 0, NULL, err, settle, 0);
        return;
    }
    memset(&e, 0, sizeof(e));
    snprintf(e.code, sizeof(e.code), "EXPIRED");
    snprintf(e.message, sizeof(e.message),
             "expired before it could be sent again; a restart found its request in flight, "
             "so it may have been delivered then");
    record_ex(d, id, QUEUE_STATE_UNCERTAIN, attempts, 0, NULL, &e, settle, 0);
}

/* A job that never had its request in flight expired: it leaves the active
 * set (if it was there) while the store still shows it due. */
static void record_expired(daemon_t *d, uint64_t id, uint16_t attempts, uint8_t marks)
{
    record_expiry(d, id, attempts, marks, NULL, true);
}

/* The backoff before attempt `attempts` + 1, its nominal delay at most
 * backoff_max_ms and `cap` seconds. */
static double backoff_upto(const daemon_t *d, unsigned attempts, double cap)
{
    double base = (double)d->cfg.backoff_base_ms / 1000.0;
    double max = fmin((double)d->cfg.backoff_max_ms / 1000.0, cap);
    double delay = base * pow(2.0, attempts > 0 ? attempts - 1 : 0);

    if (delay > max)
        delay = max;
    /* "Equal jitter": half fixed, half random, so retries of a burst spread
     * out but never come sooner than half the nominal delay. */
    return delay / 2 + delay / 2 * ((double)rand() / RAND_MAX);
}

static double backoff(const daemon_t *d, unsigned attempts)
{
    return backoff_upto(d, attempts, INFINITY);
}

/* --- pauses and the account breaker --------------------------------------- */

static void probe_cb(uv_timer_t *t);

/* The longest wait between two probes of a paused account, whatever
 * backoff_max_ms says (10 minutes by default): a probe is one GET, and an
 * account that works again (a plan renewed, a token restored) should not
 * wait up to backoff_max_ms more before its jobs go. */
#define PROBE_MAX_S 30.0

static void probe_schedule(daemon_t *d)
{
    double delay = backoff_upto(d, d->probe_failures + 1, PROBE_MAX_S);

    if (d->stopping || d->closing)
        return;
    uv_timer_start(&d->probe, probe_cb, (uint64_t)ceil(delay * 1000.0), 0);
}

/*
 * Whether an answer of GET /v2/me says nothing about the account. The v2
 * API lists the route, but an API need not serve it to a dispatcher (a
 * stand-in that serves the send routes only, a gateway in front of it): its
 * 404 "Route not found", a web server's 404 page, a 405 or 501 for the
 * method, a 400, a 403 FORBIDDEN. Only the account-level answers (401,
 * PLAN_EXPIRED, DEVELOPER_PLAN_REQUIRED, "WhatsApp account not found", a
 * redirect) say it still fails, and no answer, a 5xx or a throttle that
 * the API is in trouble: the probes go on. Before, the other answers were
 * probed for ever and a paused account never resumed, however well its
 * sends would have gone.
 */
static bool probe_cannot_judge(const http_result_t *res, const classify_result_t *c)
{
    if (res->error != 0)
        return false;
    if (res->status == 405 || res->status == 501)
        return true;
    if (res->status >= 500 || res->status == 429 || res->status == 408 ||
        (res->status >= 300 && res->status < 400))
        return false;
    if (res->status == 404)
        return strstr(c->error.message, "WhatsApp account not found") == NULL;
    return c->action != CLASSIFY_PAUSE_ACCOUNT;
}

static void probe_done(const http_result_t *res, void *arg)
{
    daemon_t *d = arg;
    classify_result_t c;
    bool ok;

    d->probing = false;
    if (res->error == 0) {
        d->not_sent_run = 0;
        d->last_answer = uv_hrtime();
    }
    if (d->stopping || d->closing || sched_account_reason(d->sched) == NULL || d->account_operator)
        return;
    classify_answer(res, &c);
    classify_result_redact(&c, d->token);
    /* Any 2xx of GET /v2/me (its body carries no wamid to judge by), or an
     * answer that cannot tell: resumed, but one send first (dispatch_pump).
     * A send into an account that still fails its checks pauses it again
     * (nothing reaches Meta, no attempt counts), and the probes go on
     * backing off as after any resume that did not last; an API whose GET
     * /v2/me answers 200 while its sends still fail (a stand-in, a
     * gateway) had every queued job, up to max_inflight, go into the 401
     * at each probe. It costs a resume one round trip. */
    ok = res->error == 0 && res->status >= 200 && res->status < 300;
    if (!ok && !probe_cannot_judge(res, &c)) {
        if (d->probe_token_gen != d->token_gen) {
            /* It went with the token a reload replaced (which found it in
             * flight): the new one is probed now, not a backoff later. */
            uv_timer_start(&d->probe, probe_cb, 0, 0);
            return;
        }
        d->probe_failures++;
        dlog(d, CONFIG_LOG_DEBUG, "account probe: %d %s", c.error.status, c.error.code);
        probe_schedule(d);
        return;
    }
    if (ok)
        dlog(d, CONFIG_LOG_WARN,
             "GET /v2/me answered %d: sending resumes, one send first to confirm", res->status);
    else
        dlog(d, CONFIG_LOG_WARN,
             "GET /v2/me cannot tell whether the account works (it answered %d %s: %s); one "
             "send goes as the probe",
             c.error.status, c.error.code, c.error.message);
    sched_account_pause(d->sched, false, NULL);
    d->account_trial = true;
    /* A 2xx classified as sent: {"success": true} (classify_answer). */
    d->probe_envelope = ok && c.action == CLASSIFY_SENT;
    d->probe_failures++; /* kept if the account pauses again soon */
    d->account_resumed_at = daemon_now();
    d->spill = true; /* jobs left in the store while paused */
    dispatch_pump_soon(d);
}

static void probe_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;
    int rc;

    if (d->stopping || d->probing || sched_account_reason(d->sched) == NULL)
        return;
    rc = http_pool_get(d->http, "/v2/me", probe_done, d);
    if (rc != 0) {
        d->probe_failures++;
        probe_schedule(d);
        return;
    }
    d->probing = true;
    d->probe_token_gen = d->token_gen;
}

void dispatch_token_changed(daemon_t *d)
{
    if (d->stopping || d->closing || sched_account_reason(d->sched) == NULL || d->account_operator)
        return;
    d->probe_failures = 0;
    /* A probe in flight went with the old token: a failure it answers
     * probes the new one at once (probe_done). */
    if (d->probing)
        return;
    dlog(d, CONFIG_LOG_INFO, "new token: probing GET /v2/me now");
    uv_timer_start(&d->probe, probe_cb, 0, 0);
}

/* An account-level answer pauses all sending; no job fails. Errors GET
 * /v2/me shows (401, plan, no account) are probed until it answers 200.
 * Meta 0 and 190 are not visible there (the AvenPing token is fine, Meta's
 * side of the account is not): a probe would resume into the same error,
 * so they pause until an operator's `resume all`, stored so that a
 * restart does not send into them again. */
static void pause_account_for(daemon_t *d, const char *reason, bool needs_operator)
{
    int rc;

    sched_account_pause(d->sched, true, reason);
    d->account_trial = false; /* the next probe decides again */
    if (needs_operator) {
        /* It may replace a probed pause (unreachable, 401): no more probes,
         * a 200 of GET /v2/me says nothing about Meta's side. */
        d->account_operator = true;
        uv_timer_stop(&d->probe);
        sched_pause_all(d->sched, true);
        rc = commit_add_pause(d->commit, QUEUE_PAUSE_ALL, "", reason, true, NULL, NULL);
        if (rc != 0)
            dlog(d, CONFIG_LOG_ERROR, "account pause not recorded: %s", queue_strerror(rc));
        dlog(d, CONFIG_LOG_ERROR,
             "account-level error (%s): all sending paused, no job fails; an operator must "
             "act, then resume (avenpingctl resume --all)",
             reason);
        return;
    }
    /* Paused again soon after a probe resumed it: the probes back off
     * further instead of starting over. */
    if (d->account_resumed_at == 0 || daemon_now() - d->account_resumed_at > 60)
        d->probe_failures = 0;
    dlog(d, CONFIG_LOG_ERROR,
         "account-level error (%s): all sending paused, no job fails; probing GET /v2/me", reason);
    probe_schedule(d);
}

static void pause_account(daemon_t *d, const classify_result_t *c)
{
    char reason[512]; /* cut to QUEUE_PAUSE_REASON_MAX when stored */

    /* Paused already: only a cause that needs an operator replaces one a
     * probe would lift (else the probe's 200 resumes into Meta 190). */
    if (sched_account_reason(d->sched) != NULL && (!c->needs_operator || d->account_operator))
        return;
    if (c->error.has_meta)
        snprintf(reason, sizeof(reason), "%d %s (Meta %ld): %s", c->error.status, c->error.code,
                 c->error.meta_code, c->error.message);
    else
        snprintf(reason, sizeof(reason), "%d %s: %s", c->error.status, c->error.code,
                 c->error.message);
    pause_account_for(d, reason, c->needs_operator);
}

/* Requests in a row that got no HTTP answer (never left, or left and met
 * a reset or a timeout) before the API counts as down. One refused
 * connection is a blip; this many, with no answer between, is an outage
 * (API down, DNS, network, a TLS setup that cannot work, an API that
 * accepts and answers nothing): retrying each job on its own would hammer
 * the API and use up the jobs' attempts while nothing can be sent. */
#define DISPATCH_UNREACHABLE_AFTER 16

/* Such an outage pauses the account like an account-level answer: no job
 * fails, nothing is attempted, GET /v2/me is probed with backoff until it
 * answers 200. */
static void pause_unreachable(daemon_t *d, const classify_result_t *c)
{
    char reason[512];

    if (sched_account_reason(d->sched) != NULL)
        return;
    snprintf(reason, sizeof(reason), "API unreachable: %u requests in a row got no answer (%s: %s)",
             d->not_sent_run, c->error.code, c->error.message);
    pause_account_for(d, reason, false);
}

static void evict_paused(daemon_t *d)
{
    size_t n = sched_evict_paused(d->sched);

    if (n > 0) {
        /* They stay unfinished in the store; a resume reloads them. */
        d->spill = true;
        d->paused_left = true;
        dlog(d, CONFIG_LOG_DEBUG, "%zu paused jobs left the active set", n);
    }
}

static void pause_sender(daemon_t *d, sched_job_t *job, const classify_result_t *c)
{
    char reason[512]; /* cut to QUEUE_PAUSE_REASON_MAX when stored */
    const char *id = sched_sender_id(job->sender);
    int rc;

    if (sched_sender_paused(d->sched, id))
        return;
    if (c->error.has_meta)
        snprintf(reason, sizeof(reason), "%d %s (Meta %ld): %s", c->error.status, c->error.code,
                 c->error.meta_code, c->error.message);
    else
        snprintf(reason, sizeof(reason), "%d %s: %s", c->error.status, c->error.code,
                 c->error.message);
    if (sched_sender_pause(d->sched, id, true, reason) != 0)
        return;
    rc = commit_add_pause(d->commit, QUEUE_PAUSE_SENDER, id, reason, true, NULL, NULL);
    if (rc != 0)
        dlog(d, CONFIG_LOG_ERROR, "sender %s: pause not recorded: %s", id, queue_strerror(rc));
    dlog(d, CONFIG_LOG_ERROR, "sender %s paused (%s); its jobs wait for an operator's resume", id,
         reason);
}

typedef struct release_ctx {
    daemon_t *d;
    double now;
} release_ctx_t;

/* A job whose due time was its sender's hold's end (DAEMON_JOB_HELD) is
 * due now that an operator's resume lifted the hold. Its notBefore is past
 * (it was sent or picked). */
static void release_held(sched_job_t *job, void *arg)
{
    const release_ctx_t *r = arg;

    bool queued = (job->marks & DAEMON_JOB_HELD_QUEUED) != 0;

    job->marks &= (uint8_t) ~(DAEMON_JOB_HELD | DAEMON_JOB_HELD_QUEUED);
    /* Still held by what the resume does not lift (its pair's 131056,
     * Graph throttling of the account): it keeps its time. */
    if (job->due <= r->now || sched_job_held_until(r->d->sched, job) > r->now)
        return;
    record(r->d, job->id, queued ? QUEUE_STATE_QUEUED : QUEUE_STATE_RETRYING, job->attempts, r->now,
           NULL, NULL);
    sched_job_retry(r->d->sched, job, r->now);
}

/* Whether a sender pause with this reason (NULL: none stored) is the
 * operator's: only those count against DAEMON_MAX_PAUSES. An automatic
 * pause carries the API's answer as its reason (pause_sender). */
static bool operator_reason(const char *reason)
{
    return reason == NULL || reason[0] == '\0' || strcmp(reason, OPERATOR_PAUSE_REASON) == 0;
}

/* Whether the operator paused this sender or campaign (campaign pauses are
 * the operator's alone). */
static bool operator_paused(const daemon_t *d, int kind, const char *name)
{
    const char *why;

    if (kind == QUEUE_PAUSE_CAMPAIGN)
        return sched_campaign_paused(d->sched, name);
    return kind == QUEUE_PAUSE_SENDER && sched_sender_pause_reason(d->sched, name, &why) &&
           operator_reason(why);
}

int dispatch_set_pause(daemon_t *d, int kind, const char *name, bool paused, commit_update_cb done,
                       void *arg)
{
    const char *reason = paused ? OPERATOR_PAUSE_REASON : NULL;
    /* Counted: operator pauses only. An operator's pause of a sender the
     * API paused makes it the operator's (and counts); a resume of such a
     * sender frees no place it did not take. */
    bool was = operator_paused(d, kind, name);
    int rc;

    if (kind != QUEUE_PAUSE_ALL && paused && !was && d->pauses >= DAEMON_MAX_PAUSES)
        return -ENOSPC;
    switch (kind) {
    case QUEUE_PAUSE_ALL:
        sched_pause_all(d->sched, paused);
        if (!paused && sched_account_reason(d->sched) != NULL) {
            /* "resume all" also retries an account the breaker paused. */
            sched_account_pause(d->sched, false, NULL);
            uv_timer_stop(&d->probe);
        }
        if (!paused) {
            d->account_trial = false;
            d->account_operator = false;
        }
        break;
    case QUEUE_PAUSE_SENDER:
        rc = sched_sender_pause(d->sched, name, paused, reason);
        if (rc != 0)
            return rc;
        if (!paused) {
            /* The resume lifted the sender's hold: the jobs whose due time
             * is that hold's end go now too. */
            release_ctx_t r = {d, daemon_now()};
            (void)sched_sender_waiting_each(d->sched, name, DAEMON_JOB_HELD, release_held, &r);
        }
        break;
    case QUEUE_PAUSE_CAMPAIGN:
        rc = sched_campaign_pause(d->sched, name, paused);
        if (rc != 0)
            return rc;
        break;
    default:
        return -EINVAL;
    }
    if (kind != QUEUE_PAUSE_ALL && paused != was)
        d->pauses = paused ? d->pauses + 1 : d->pauses - (d->pauses > 0);
    dlog(d, CONFIG_LOG_INFO, "operator %s %s%s", paused ? "paused" : "resumed",
         kind == QUEUE_PAUSE_ALL      ? "all sending"
         : kind == QUEUE_PAUSE_SENDER ? "sender "
                                      : "campaign ",
         kind == QUEUE_PAUSE_ALL ? "" : name);
    if (paused)
        evict_paused(d);
    else
        d->spill = true; /* its jobs may be in the store only */
    dispatch_pump_soon(d);
    return commit_add_pause(d->commit, kind, kind == QUEUE_PAUSE_ALL ? "" : name, reason, paused,
                            done, arg);
}

static int load_pause_cb(int kind, const char *name, const char *reason, void *arg)
{
    daemon_t *d = arg;

    if (kind == QUEUE_PAUSE_ALL) {
        sched_pause_all(d->sched, true);
        /* An account pause that waits for an operator (Meta 0, 190)
         * keeps its reason; the operator's own has none worth showing. */
        if (reason[0] != '\0' && strcmp(reason, OPERATOR_PAUSE_REASON) != 0) {
            sched_account_pause(d->sched, true, reason);
            d->account_operator = true;
        }
    } else if ((kind == QUEUE_PAUSE_SENDER &&
                sched_sender_pause(d->sched, name, true, reason[0] ? reason : NULL) == 0 &&
                operator_reason(reason)) ||
               (kind == QUEUE_PAUSE_CAMPAIGN && sched_campaign_pause(d->sched, name, true) == 0))
        d->pauses++; /* the operator's (operator_paused) */
    dlog(d, CONFIG_LOG_INFO, "stored pause: %s %s%s%s",
         kind == QUEUE_PAUSE_ALL      ? "all"
         : kind == QUEUE_PAUSE_SENDER ? "sender"
                                      : "campaign",
         name, reason[0] ? ": " : "", reason);
    return 0;
}

int dispatch_load_pauses(daemon_t *d)
{
    return queue_pauses_each(d->q, load_pause_cb, d);
}

/* --- outcomes ---------------------------------------------------------------- */

/* Reschedules a job whose attempt did not succeed, due at `due` - or, when
 * that is after its expiresAt, expires it now with the answer that asked
 * for the wait as its lastError, instead of holding its order key until
 * then (a 131049's 24 h against the default job_ttl_s of 24 h, a long
 * Retry-After). Either way the caller must not use `job` after. `counts`:
 * whether the attempt counts against maxAttempts (answers that are not the
 * job's fault - pauses, throttles, the pair limit, a request that never
 * left - do not). */
static void retry_job_flags(daemon_t *d, sched_job_t *job, const classify_result_t *c, double due,
                            bool counts, uint8_t set_flags)
{
    if (!counts && job->attempts > 0)
        job->attempts--;
    /* A cancel walking the job's campaign (handlers.c) may have passed
     * the state the job would take now: it walks `retrying` before
     * `sending`, so a job answered meanwhile would move from a state not
     * walked yet into one walked already and stay outside the cancel. The
     * attempt ended: the job ends cancelled, outside the cancel's count,
     * as a job whose request was in flight at the cancel. */
    if (sched_job_campaign_held(d->sched, job))
        job->marks |= DAEMON_JOB_CANCEL;
    if (cancel_instead(d, job, &c->error))
        return;
    /* Its pair's pacing may hold it past the wait (each attempt is a
     * message to the pair): the stored nextAttemptAt is when it can go. */
    due = sched_pair_ready(d->sched, job, due);
    if (job->expires_at > 0 && due > job->expires_at && !d->cancelling_all) {
        record_expiry(d, job->id, job->attempts, job->marks, &c->error, false);
        sched_job_finish(d->sched, job);
        return;
    }
    /* A request the stop cancelled is due at once after the restart. An
     * answer that came while stopping keeps its wait (131049's day, a
     * Retry-After, 4^X s for a pair): the stored due time is what the next
     * start goes by. */
    if (d->cancelling_all)
        due = daemon_now();
    record_ex(d, job->id, QUEUE_STATE_RETRYING, job->attempts, due, NULL, &c->error, false,
              set_flags);
    sched_job_retry(d->sched, job, due);
}

static void retry_job(daemon_t *d, sched_job_t *job, const classify_result_t *c, double due,
                      bool counts)
{
    retry_job_flags(d, job, c, due, counts, 0);
}

/* sched_job_t.marks and queue_job_t.flags (the store's): rescheduled for
 * 131049 already. */
#define MARK_DAY_RESCHEDULED DAEMON_JOB_DAY_RESCHEDULED

/* 131049 (per-user marketing cap): once, not before 24 h; the second time
 * the job fails, also when other errors came between and across restarts.
 * Whether this is the second: the job's mark in memory (set at once), else
 * the store's flag (a job loaded from the store has no mark), else the
 * store's last error (a job whose record predates the flag). */
static bool rescheduled_before(daemon_t *d, const sched_job_t *job)
{
    uint64_t id = job->id;
    queue_job_t j;
    bool again = false;

    if (job->marks & MARK_DAY_RESCHEDULED)
        return true;
    if (queue_job_get(d->q, id, &j) == 0) {
        again = (j.flags & MARK_DAY_RESCHEDULED) != 0 || j.last_error.meta_code == 131049;
        queue_job_clear(&j);
    }
    return again;
}

static void post_waiting(daemon_t *d);

static void on_http_done(const http_result_t *res, void *arg)
{
    static const queue_error_info_t no_error;
    attempt_t *a = arg;
    daemon_t *d = a->d;
    sched_job_t *job = sched_job_find(d->sched, a->id);
    classify_result_t c;
    unsigned max_attempts;
    double now = daemon_now(), delay;
    uint64_t posted = a->posted;
    bool old_token = a->token_gen != d->token_gen;

    free(a->body);
    free(a);
    if (job == NULL) { /* removed meanwhile (cancel) */
        post_waiting(d);
        return;
    }
    job->user = NULL;
    if (res->error != HTTP_ECANCELLED)
        metrics_hist_observe(&d->stats.http_latency, res->total_time);
    /* When it really left (after the hand-over to an HTTP thread, say):
     * the rate window keeps the next sends a window away from that. */
    if (res->sent_at > 0)
        sched_job_departed(d->sched, job, fmin(res->sent_at, now));
    classify_answer(res, &c);
    classify_result_redact(&c, d->token);
    if (res->error == 0) {
        d->not_sent_run = 0; /* the API answered */
        d->last_answer = uv_hrtime();
        /* A web server's 400 or 404 page pauses the account (api_base names
         * something else), but the trial's probe just got the v2 API's own
         * envelope from GET /v2/me: api_base is right, and the page is about
         * this request (a filter in front of the API refusing it, a route
         * missing for a while). The job retries with its backoff, counting
         * attempts, and the account resumes: paused again without an
         * attempt, the job would be the next trial again, and the account
         * would stay paused for ever. */
        if (c.bare_page && d->account_trial && d->probe_envelope) {
            c.action = CLASSIFY_RETRY;
            c.bare_page = false;
            snprintf(c.error.message, sizeof(c.error.message),
                     "a %d that is not the v2 API's error envelope, for this request alone "
                     "(GET /v2/me answered the v2 API's own): retried",
                     res->status);
        }
        /* The first send after a probe's resume got past the account's
         * checks: all of the jobs may go again. */
        if (d->account_trial && c.action != CLASSIFY_PAUSE_ACCOUNT) {
            d->account_trial = false;
            dlog(d, CONFIG_LOG_WARN, "account works again (a send answered %d); sending resumes",
                 res->status);
            dispatch_pump_soon(d);
        }
    }
    d->stats.by_action[c.action]++;
    if (c.maybe_sent)
        d->stats.maybe_duplicates++;
    /* Meta's pair limit counts what reaches Meta: a request that never
     * left, or one AvenPing answered itself (a 4xx without Meta's code:
     * its auth, plan, validation or own rate limit), took nothing there. */
    if (c.not_sent || (c.action != CLASSIFY_SENT && !c.error.has_meta && c.error.status >= 400 &&
                       c.error.status < 500))
        sched_pair_refund(d->sched, job, now);
    max_attempts = job->max_attempts ? job->max_attempts : (unsigned)d->cfg.max_attempts;

    switch (c.action) {
    case CLASSIFY_SENT:
        if (c.no_wamid && !d->warned_no_wamid) {
            d->warned_no_wamid = true;
            dlog(d, CONFIG_LOG_WARN,
                 "job %llu: the API took it (\"success\":true) without a wamid "
                 "(data.messages[0].id); it is sent with none. Not logged again.",
                 (unsigned long long)job->id);
        }
        sched_job_sent(d->sched, job, now);
        /* lastError is kept until the next outcome: a send is one (a sent
         * job with an old 400 in its record read as an error in reports). */
        record_ex(d, job->id, QUEUE_STATE_SENT, job->attempts, 0, c.wamid[0] ? c.wamid : NULL,
                  &no_error, false, 0);
        sched_job_finish(d->sched, job);
        break;
    case CLASSIFY_FAIL:
        dlog(d, CONFIG_LOG_DEBUG, "job %llu failed: %d %s %s", (unsigned long long)job->id,
             c.error.status, c.error.code, c.error.message);
        record(d, job->id, QUEUE_STATE_FAILED, job->attempts, 0, NULL, &c.error);
        sched_job_finish(d->sched, job);
        break;
    case CLASSIFY_PAUSE_ACCOUNT:
        /* Never the job's fault: it waits, first of its key, for the resume.
         * A 401 to a token replaced since (SIGHUP) says nothing of the new
         * one: the job goes again with it, the account is not paused (it
         * was, until the next probe, also right after a probe's resume). */
        if (!old_token || (c.error.status != 401 && strcmp(c.error.code, "UNAUTHORIZED") != 0))
            pause_account(d, &c);
        retry_job(d, job, &c, now, false);
        break;
    case CLASSIFY_PAUSE_SENDER:
        pause_sender(d, job, &c);
        retry_job(d, job, &c, now, false);
        evict_paused(d);
        break;
    case CLASSIFY_THROTTLE_SENDER:
        sched_sender_throttled(d->sched, job, now, c.min_delay);
        job->marks |= DAEMON_JOB_HELD;
        retry_job(d, job, &c, now + fmax(c.min_delay, 0.001), false);
        break;
    case CLASSIFY_THROTTLE_ACCOUNT:
        sched_hold_all(d->sched, now + c.min_delay);
        snprintf(d->throttle_reason, sizeof(d->throttle_reason),
                 "Graph API throttling (Meta %ld): all sending waits", c.error.meta_code);
        dlog(d, CONFIG_LOG_WARN, "Graph API throttling (Meta %ld): all sending waits %.0fs",
             c.error.meta_code, c.min_delay);
        retry_job(d, job, &c, now + c.min_delay, false);
        break;
    case CLASSIFY_RETRY_PAIR:
        /* 4^X s, or the answer's Retry-After when that is longer. */
        retry_job(d, job, &c, sched_pair_limited(d->sched, job, now, c.min_delay), false);
        break;
    case CLASSIFY_RESCHEDULE_DAY:
        if (rescheduled_before(d, job) || job->attempts >= max_attempts) {
            record(d, job->id, QUEUE_STATE_FAILED, job->attempts, 0, NULL, &c.error);
            sched_job_finish(d->sched, job);
        } else {
            job->marks |= MARK_DAY_RESCHEDULED;
            retry_job_flags(d, job, &c, now + 86400, true, MARK_DAY_RESCHEDULED);
        }
        break;
    default: /* CLASSIFY_RETRY */
        /* No answer at all (a reset, a timeout: the request may have
         * arrived) counts towards the outage like a request that never
         * left: an API that takes connections and answers nothing (a
         * balancer without backends, a server crash-looping) failed every
         * job after its attempts, one minute apart at last, while the
         * account stayed `ok` (black-box audit). */
        if (res->error == HTTP_EMAYBESENT && d->last_answer < posted &&
            ++d->not_sent_run >= DISPATCH_UNREACHABLE_AFTER)
            pause_unreachable(d, &c);
        if (c.maybe_sent && d->cfg.at_most_once) {
            /* The request may have arrived (a timeout, a reset or a cancel
             * after it was written): under at-most-once it is not sent
             * again, it waits for an operator's retry (as after a crash). */
            if (d->cancelling_all) {
                if (d->stop_uncertain++ == 0)
                    d->stop_uncertain_first = job->id;
            } else {
                dlog(d, CONFIG_LOG_WARN, "job %llu uncertain: %s %s", (unsigned long long)job->id,
                     c.error.code, c.error.message);
            }
            record(d, job->id, QUEUE_STATE_UNCERTAIN, job->attempts, 0, NULL, &c.error);
            sched_job_finish(d->sched, job);
            break;
        }
        if (c.not_sent) {
            /* The request never left: free to retry, soon, unless the
             * API looks down. */
            /* Only while nothing answers: a request that could not
             * connect while other requests got answers after it started
             * met a busy API (at its connection limit, its listen queue
             * full), not a down one; such failures come in bursts, a
             * pool's worth of connects timing out together. */
            /* The stop's own cancels say nothing about the API. */
            if (!d->cancelling_all && d->last_answer < posted &&
                ++d->not_sent_run >= DISPATCH_UNREACHABLE_AFTER)
                pause_unreachable(d, &c);
            retry_job(d, job, &c, now + backoff(d, 1), false);
            break;
        }
        /* Maintenance is the sender's, not the job's: the sender waits
         * (longer each time it is still in maintenance after a wait) and
         * the attempt does not count - a maintenance longer than
         * maxAttempts waits failed every job that walked into it. The
         * job's wait is the hold, so a resume of the sender lets it go. */
        if (c.hold_sender) {
            double until = sched_sender_hold(d->sched, job, now, CLASSIFY_MAINTENANCE_S,
                                             c.min_delay, "sender in maintenance");
            job->marks |= DAEMON_JOB_HELD;
            retry_job(d, job, &c, until, false);
            break;
        }
        /* Its last attempt fails the job also while stopping (the restart
         * would send it once more than maxAttempts allow); only a request
         * the stop cancelled is left for the restart. */
        if (job->attempts >= max_attempts && !d->cancelling_all) {
            dlog(d, CONFIG_LOG_DEBUG, "job %llu failed after %u attempts: %d %s %s",
                 (unsigned long long)job->id, max_attempts, c.error.status, c.error.code,
                 c.error.message);
            record(d, job->id, QUEUE_STATE_FAILED, job->attempts, 0, NULL, &c.error);
            sched_job_finish(d->sched, job);
            break;
        }
        /* The answer's Retry-After (min_delay) counts for every retry. */
        delay = backoff(d, job->attempts);
        if (c.min_delay > delay)
            delay = c.min_delay;
        retry_job(d, job, &c, now + delay, true);
        break;
    }
    if (d->stopping) {
        if (sched_inflight(d->sched) == 0)
            daemon_finish_stop(d);
        return;
    }
    post_waiting(d);
    dispatch_pump_soon(d);
}

static void retry_later(daemon_t *d, sched_job_t *job, double due)
{
    if (cancel_instead(d, job, NULL))
        return;
    record(d, job->id, QUEUE_STATE_QUEUED, job->attempts, due, NULL, NULL);
    sched_job_retry(d->sched, job, due);
}

/* The attempt's job, if it is still this attempt's (a cancel or a finish
 * may have removed it meanwhile); else frees the attempt and returns NULL. */
static sched_job_t *attempt_job(attempt_t *a)
{
    sched_job_t *job = sched_job_find(a->d->sched, a->id);

    if (job == NULL || job->user != a) {
        free(a->body);
        free(a);
        return NULL;
    }
    return job;
}

/* The attempt never left: it does not count, its pick's pair send is
 * given back, and it is freed. */
static void attempt_drop(attempt_t *a, sched_job_t *job)
{
    sched_pair_refund(a->d->sched, job, daemon_now());
    job->user = NULL;
    job->attempts--;
    free(a->body);
    free(a);
}

/* The attempt never left (stopping, or no request could start): it does not
 * count, and the job is due again at `due`. */
static void attempt_unsent(attempt_t *a, sched_job_t *job, double due)
{
    daemon_t *d = a->d;

    attempt_drop(a, job);
    retry_later(d, job, due);
}

/* Posts a durable attempt - unless the job was paused, held or expired
 * since it was picked (its `sending` commit and the wait for a request slot
 * can take seconds under load): a paused or held job waits again, one past
 * its expiresAt is not sent. */
static void post(daemon_t *d, attempt_t *a, sched_job_t *job)
{
    double now = daemon_now(), held;
    int rc;

    if ((job->marks & DAEMON_JOB_CANCEL) || sched_job_paused(d->sched, job)) {
        /* Paused since it was picked (its `sending` commit and the wait
         * for a slot): it goes back to wait, the attempt never left; one
         * cancelled since ends cancelled (retry_later). */
        attempt_unsent(a, job, now);
        return;
    }
    if ((held = sched_job_held_until(d->sched, job)) > now) {
        /* Likewise held since (a 429 of its sender, Graph throttling, its
         * pair's limit): it waits for the hold's end instead of adding a
         * request to the overload. */
        job->marks |= DAEMON_JOB_HELD | DAEMON_JOB_HELD_QUEUED;
        attempt_unsent(a, job, held);
        dispatch_pump_soon(d);
        return;
    }
    if (job->expires_at > 0 && now > job->expires_at) {
        attempt_drop(a, job);
        record_expiry(d, job->id, job->attempts, job->marks, NULL, false);
        sched_job_finish(d->sched, job);
        dispatch_pump_soon(d);
        return;
    }
    a->posted = uv_hrtime();
    a->token_gen = d->token_gen;
    rc = http_pool_post(d->http, a->path, a->body, a->len, on_http_done, a);

    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "cannot start a request: %s", http_strerror(rc));
        attempt_unsent(a, job, daemon_now() + 1);
        dispatch_pump_soon(d);
        return;
    }
    job->marks &= (uint8_t) ~(DAEMON_JOB_HELD | DAEMON_JOB_HELD_QUEUED);
    sched_job_posted(d->sched, job, daemon_now());
    d->stats.sends++;
}

bool dispatch_attempt_started(const sched_job_t *job)
{
    const attempt_t *a = job->user;

    return a != NULL && a->posted != 0;
}

/* Posts waiting attempts while request slots are free. */
static void post_waiting(daemon_t *d)
{
    while (d->post_head != NULL && !d->stopping &&
           http_pool_inflight(d->http) < (size_t)d->cfg.max_inflight) {
        attempt_t *a = d->post_head;
        sched_job_t *job;

        d->post_head = a->next;
        if (d->post_head == NULL)
            d->post_tail = NULL;
        d->post_waiting--;
        a->next = NULL;
        if ((job = attempt_job(a)) != NULL)
            post(d, a, job);
    }
}

void dispatch_release_waiting(daemon_t *d)
{
    double now = daemon_now();

    while (d->post_head != NULL) {
        attempt_t *a = d->post_head;
        sched_job_t *job;

        d->post_head = a->next;
        d->post_waiting--;
        if ((job = attempt_job(a)) != NULL)
            attempt_unsent(a, job, now);
    }
    d->post_tail = NULL;
}

/*
 * The job's `sending` state is durable: now the request may leave - at once
 * when one of the max_inflight request slots is free, else in FIFO order as
 * requests complete. Waiting for that commit is what makes the crash
 * promise exact: after a crash the only jobs that may have reached the API
 * without a recorded outcome are the ones the store shows as `sending` (sent
 * again under at-least-once, `uncertain` under at-most-once).
 */
static void on_sending_durable(void *arg)
{
    attempt_t *a = arg;
    daemon_t *d = a->d;
    sched_job_t *job;

    daemon_event_job(d, a->id, QUEUE_STATE_SENDING, NULL, NULL); /* durable now */
    job = attempt_job(a);

    if (job == NULL) /* removed meanwhile */
        return;
    if (d->stopping) {
        /* Never left: the attempt does not count. */
        attempt_unsent(a, job, daemon_now());
        if (sched_inflight(d->sched) == 0)
            daemon_finish_stop(d);
        return;
    }
    if (d->post_head != NULL || http_pool_inflight(d->http) >= (size_t)d->cfg.max_inflight) {
        if (d->post_tail != NULL)
            d->post_tail->next = a;
        else
            d->post_head = a;
        d->post_tail = a;
        d->post_waiting++;
        return;
    }
    post(d, a, job);
}

/* A job just picked cannot start its attempt now (out of memory, a read
 * error): its pick's pair send goes back, and it is due again in a second. */
static void unpicked_later(daemon_t *d, sched_job_t *job, double now)
{
    sched_pair_refund(d->sched, job, now);
    retry_later(d, job, now + 1);
}

/* Starts one attempt of `job`: records it as `sending`, and sends once that
 * is durable. Jobs past their expiry or gone from the store leave the
 * active set instead. The body is read through *rd, the pump's reader,
 * opened here on first use; the caller closes it. */
static void dispatch(daemon_t *d, sched_job_t *job, double now, queue_reader_t **rd)
{
    const char *path = route_for(job->type);
    queue_update_t u;
    attempt_t *a;
    int rc;

    if (job->expires_at > 0 && now > job->expires_at) {
        record_expired(d, job->id, job->attempts, job->marks);
        sched_job_finish(d->sched, job);
        return;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        unpicked_later(d, job, now);
        return;
    }
    a->d = d;
    a->id = job->id;
    a->path = path;
    rc = *rd != NULL ? 0 : queue_reader_open(d->q, rd);
    if (rc == 0)
        rc = queue_reader_body(*rd, job->id, &a->body, &a->len);
    if (rc == QUEUE_ENOTFOUND || path == NULL) {
        /* Purged, or a type this version cannot route: nothing to send
         * (its pick's pair send goes back). */
        sched_pair_refund(d->sched, job, now);
        free(a->body);
        free(a);
        sched_job_finish(d->sched, job);
        return;
    }
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "job %llu: reading its body: %s", (unsigned long long)job->id,
             queue_strerror(rc));
        free(a);
        unpicked_later(d, job, now);
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
        unpicked_later(d, job, now);
        return;
    }
    job->user = a;
}

/* Entries a refill may read beyond the room it fills: paused jobs are read
 * and left in the store. */
#define REFILL_SKIP_MAX 200000

/* Jobs one refill loads at most: each costs a few microseconds of loop
 * time, so a refill stays in the tens of milliseconds; under sustained
 * load refills run whenever this much room is free. */
#define REFILL_CHUNK 20000
#define REFILL_MIN 5000

typedef struct refill_ctx {
    daemon_t *d;
    double now;
    size_t added;
    size_t room;
    size_t skipped;
    size_t finishing; /* `sending` in the store, not in memory: outcome pending */
    size_t deferred;  /* left for the next pass: an older job of the key is finishing */
    bool pred_finishing;
    bool stopped;
    double last_due; /* the last entry consumed (loaded or skipped): the cursor */
    uint64_t last_id;
} refill_ctx_t;

static void keys_of(const queue_due_entry_t *e, sched_keys_t *k, char *okey, size_t size)
{
    k->phone_number_id = e->phone_number_id;
    k->campaign = e->campaign;
    k->to = e->to;
    k->order_key =
        queue_order_key(e->order_key, e->phone_number_id, e->to, okey, size) > 0 ? okey : NULL;
}

static int refill_add(refill_ctx_t *r, const queue_due_entry_t *e, const sched_keys_t *k)
{
    sched_job_t t;

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
    t.marks = e->flags;
    t.type = e->type;
    t.priority = e->priority;
    if (e->phone_number_id == NULL || sched_job_add(r->d->sched, &t, k) != 0) {
        r->stopped = true;
        return 1;
    }
    r->added++;
    return 0;
}

/* An older unfinished job of the key being loaded: it comes in too, paused
 * or not, so the key's first job in memory is its first in the store. */
static int refill_pred_cb(const queue_due_entry_t *e, void *arg)
{
    char okey[QUEUE_ORDER_KEY_MAX + 1];
    sched_keys_t k;

    refill_ctx_t *r = arg;

    if (sched_contains(r->d->sched, e->id))
        return 0;
    /* As in refill_entry_cb: a `sending` job not in memory has had its
     * answer and its outcome is not durable yet - loading it would send it
     * again. Its outcome may be a retry (its sender was paused and the job
     * evicted with the later ones of its key, say), so the job being
     * loaded waits for the next pass, when the store shows the outcome. */
    /* Likewise one whose expiry or cancel is not durable yet: it leaves
     * the due index then, or, a cancel not applied after all, a refill
     * brings it in first. */
    if (e->state == QUEUE_STATE_SENDING || settle_has(r->d, e->id)) {
        r->pred_finishing = true;
        return 1;
    }
    keys_of(e, &k, okey, sizeof(okey));
    return refill_add(arg, e, &k);
}

/* A job the due index names but whose record cannot be read: it cannot be
 * sent (its body, sender and recipient are in that record), and the jobs
 * due after it must not wait for it. Said once per job, not per pass. */
static void unreadable_job(daemon_t *d, const queue_due_entry_t *e)
{
    daemon_stats_t *st = &d->stats;

    for (unsigned i = 0; i < DAEMON_UNREADABLE_RING; i++)
        if (st->unreadable_ids[i] == e->id)
            return;
    st->unreadable_ids[st->unreadable_next] = e->id;
    st->unreadable_next = (st->unreadable_next + 1) % DAEMON_UNREADABLE_RING;
    st->unreadable++;
    dlog(d, CONFIG_LOG_ERROR,
         "job %llu: its stored record cannot be read (%s; damaged, or written by a newer "
         "avenpingd); it stays in the store and is not sent, the jobs after it go on",
         (unsigned long long)e->id, queue_strerror(e->problem));
}

static int refill_entry_cb(const queue_due_entry_t *e, void *arg)
{
    refill_ctx_t *r = arg;
    daemon_t *d = r->d;
    char okey[QUEUE_ORDER_KEY_MAX + 1];
    sched_keys_t k;
    uint64_t last;
    int rc;

    if (e->problem != 0) {
        unreadable_job(d, e);
        goto consumed;
    }
    /* A new job not activated yet (its batch's callbacks are to come, or
     * it waits in the FIFO): its activation brings it in, a second load
     * would put it in twice - sent or expired twice. */
    if (e->id > d->activated_id || sched_contains(d->sched, e->id))
        goto consumed;
    /* It left memory and its expiry or cancel is not durable yet: loaded
     * again, it would be sent or expired twice. A cancel not applied after
     * all asks for a full pass (handlers.c: bulk_result_cb). */
    if (settle_has(d, e->id))
        goto consumed;
    if (e->state == QUEUE_STATE_SENDING) {
        /* Its request ended and its outcome is not durable yet (jobs in
         * flight are in memory; recovery leaves no `sending` behind). */
        r->finishing++;
        goto consumed;
    }
    if (e->phone_number_id == NULL ||
        sched_keys_paused(d->sched, e->phone_number_id, e->campaign)) {
        /* Left in the store, but a pause does not stop its expiry. */
        if (e->expires_at > 0 && e->expires_at <= r->now && e->state != QUEUE_STATE_SENDING)
            record_expired(d, e->id, e->attempts, e->flags);
        else
            note_paused_expiry(d, e->expires_at);
        if (++r->skipped > REFILL_SKIP_MAX) {
            r->stopped = true;
            return 1;
        }
        goto consumed;
    }
    keys_of(e, &k, okey, sizeof(okey));
    if (k.order_key != NULL && (last = sched_order_last_id(d->sched, k.order_key)) < e->id) {
        r->pred_finishing = false;
        rc = queue_order_scan(d->q, k.order_key, last, e->id, r->room - r->added + 1,
                              refill_pred_cb, r);
        if (rc != 0) {
            dlog(d, CONFIG_LOG_ERROR, "reading the order index: %s", queue_strerror(rc));
            r->stopped = true;
            return 1;
        }
        if (r->stopped)
            return 1;
        if (r->pred_finishing) {
            r->deferred++;
            goto consumed;
        }
    }
    if (refill_add(r, e, &k) != 0)
        return 1;
consumed:
    r->last_due = e->due;
    r->last_id = e->id;
    return 0;
}

/*
 * Brings due jobs from the store into the active set, earliest due first,
 * each with the older unfinished jobs of its order key, at most
 * REFILL_CHUNK per call. A job the active set let go whose new state is not
 * durable yet is still in the due index and must not be loaded again: after
 * a request the store shows it `sending` (skipped here); after an expiry or
 * a cancel it does not, so its id is in d->settling until then (skipped
 * here too, and a job of its key behind it waits for the next pass).
 * Waiting for no write to be pending at all, as before, could wait for ever
 * under a steady stream of expiries or cancels and slow commits. Paused
 * jobs stay in the store.
 *
 * `spill` walks from the start of the due index; `spill_new` alone (new jobs
 * that did not fit, all due after the cursor) walks from the cursor, so a
 * refill under sustained load does not walk the active set's own entries
 * again each time.
 */
static void refill(daemon_t *d)
{
    refill_ctx_t r = {.d = d, .now = daemon_now()};
    size_t jobs = sched_jobs(d->sched), limit;
    bool full = d->spill;
    int rc;

    if (!(d->spill || d->spill_new) || d->stopping || d->settling_untracked != 0 ||
        jobs + REFILL_MIN > ACTIVE_SET_MAX)
        return;
    if (full) {
        d->paused_expiry = 0; /* this pass notes the paused jobs again */
        d->refill_due = 0;
        d->refill_id = 0;
    }
    r.last_due = d->refill_due;
    r.last_id = d->refill_id;
    r.room = ACTIVE_SET_MAX - jobs;
    if (r.room > REFILL_CHUNK)
        r.room = REFILL_CHUNK;
    limit = jobs + r.room + 1 + REFILL_SKIP_MAX;
    rc = queue_due_scan(d->q, d->refill_due, d->refill_id, INFINITY, limit, refill_entry_cb, &r);
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "reading due jobs: %s", queue_strerror(rc));
        return;
    }
    if (r.stopped) {
        /* More to load: the next refill goes on from here. */
        d->refill_due = r.last_due;
        d->refill_id = r.last_id;
        d->spill = r.deferred > 0; /* those are behind the cursor */
        d->spill_new = true;
    } else {
        /* Done when the store has nothing more that may go now: before the
         * cursor is only what is in memory, paused (a resume sets spill
         * again) or finishing (`sending`: its outcome takes it out of the
         * due index, or its retry keeps it in memory). Jobs deferred behind
         * a finishing one of their key: a full pass again soon. */
        d->spill = r.deferred > 0;
        d->spill_new = false;
        d->refill_due = 0;
        d->refill_id = 0;
        if (full && r.skipped == 0)
            d->paused_left = false;
    }
    if (r.skipped > 0)
        d->paused_left = true;
    dlog(d, CONFIG_LOG_DEBUG,
         "refill: %zu jobs loaded, %zu paused left in the store, %zu finishing, %s", r.added,
         r.skipped, r.finishing, d->spill || d->spill_new ? "more in the store" : "store drained");
}

static void wake_cb(uv_timer_t *t)
{
    dispatch_pump_soon(t->data);
}

static void pump(daemon_t *d)
{
    double now = daemon_now(), wake = INFINITY;
    queue_reader_t *rd = NULL;
    sched_job_t *job;

    if (d->paused_expiry > 0 && now >= d->paused_expiry)
        d->spill = true; /* a paused job in the store is due to expire */
    refill(d);
    if (d->stopping)
        return;
    while ((job = sched_next_expired(d->sched, now)) != NULL) {
        record_expired(d, job->id, job->attempts, job->marks);
        sched_job_finish(d->sched, job);
    }
    /* When max_inflight durable attempts already wait for a request slot,
     * the API is the bottleneck: committing `sending` further ahead would
     * gain nothing and leave more jobs `sending` without a request. */
    /* A send that probes the account (account_trial) goes alone. */
    while (d->post_waiting < (size_t)d->cfg.max_inflight &&
           !(d->account_trial && sched_inflight(d->sched) > 0) &&
           (job = sched_next(d->sched, now, &wake)) != NULL)
        dispatch(d, job, now, &rd);
    queue_reader_close(rd); /* a read txn: not beyond this pump */
    uv_timer_stop(&d->wake);
    if (d->spill || d->spill_new) /* come back for the refill */
        wake = fmin(wake, now + 0.05);
    if (d->paused_expiry > now) /* (when past, spill brings the refill) */
        wake = fmin(wake, d->paused_expiry);
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

void dispatch_reconfigured(daemon_t *d)
{
    post_waiting(d); /* a larger max_inflight has free request slots now */
    dispatch_pump_soon(d);
}

void dispatch_pump_soon(daemon_t *d)
{
    if (!d->closing)
        uv_idle_start(&d->pump_idle, pump_idle_cb);
}

void dispatch_on_commit_fail(int rc, unsigned in_row, void *arg)
{
    daemon_t *d = arg;
    double now = daemon_now();

    if (rc == 0) {
        dlog(d, CONFIG_LOG_WARN, "store commits work again after %u failed", in_row);
        return;
    }
    d->stats.commit_failures++;
    if (in_row == 1 || now - d->commit_err_logged >= 1.0) {
        d->commit_err_logged = now;
        dlog(d, CONFIG_LOG_ERROR,
             "store commit failed (%u in a row): %s; retried every 500 ms, nothing is "
             "acknowledged or sent until it succeeds",
             in_row, queue_strerror(rc));
    }
}

void dispatch_on_commit_stat(size_t ops, double seconds, void *arg)
{
    daemon_t *d = arg;

    d->stats.commits++;
    d->stats.commit_ops += ops;
    d->last_commit_ops = ops; /* read by dispatch_activate_later, for this batch */
    daemon_refresh_unfinished(d);
    if (seconds > 1.0)
        dlog(d, CONFIG_LOG_WARN, "slow store commit: %zu operations took %.2fs", ops, seconds);
    dispatch_pump_soon(d); /* a refill may have been waiting for the backlog to clear */
}
