/*
 * queue_test.c - unit tests of the LMDB job store. One binary; the case to
 * run is argv[1] (ctest registers one test per case). Each case works in a
 * temp dir of its own and removes it when it passes.
 */
#include "queue.h"
#include "queue_int.h"
#include "qtest.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_self[4096]; /* absolute path of this binary, for fork+exec */

/* --- helpers ------------------------------------------------------------- */

static void dir_make(void)
{
    qtest_dir_make("avpq");
}

static queue_t *open_q(const queue_options_t *opt)
{
    queue_t *q = NULL;
    CHECK_OK(queue_open(g_dir, opt, &q));
    CHECK(q != NULL);
    return q;
}

/* A queued job with defaults, due at `due`. */
static queue_job_t job_make(uint64_t id, double due)
{
    queue_job_t j;
    memset(&j, 0, sizeof j);
    j.id = id;
    j.state = QUEUE_STATE_QUEUED;
    j.type = QUEUE_TYPE_TEXT;
    j.priority = QUEUE_PRIO_NORMAL;
    j.created_at = 1700000000.0;
    j.updated_at = 1700000000.0;
    j.next_attempt_at = due;
    j.phone_number_id = "1000001";
    j.to = "+15551234567";
    return j;
}

/* Commits one job with a small body; returns its op result. */
static int put_one(queue_t *q, const queue_job_t *j, uint64_t *orig)
{
    queue_batch_t *b = queue_batch_new();
    int rc;
    CHECK(b != NULL);
    CHECK_RC(queue_batch_add_job(b, j, "{}", 2), 0);
    CHECK_OK(queue_batch_commit(q, b));
    rc = queue_batch_result(b, 0, orig);
    queue_batch_free(b);
    return rc;
}

/* A state change of job `id` (first attempt, at 1700000100). */
static queue_update_t update_make(uint64_t id, int state, double next, const char *wamid,
                                  const queue_error_info_t *err)
{
    queue_update_t u;
    memset(&u, 0, sizeof u);
    u.id = id;
    u.state = (uint8_t)state;
    u.attempts = 1;
    u.updated_at = 1700000100.0;
    u.next_attempt_at = next;
    u.wamid = wamid;
    u.last_error = err;
    return u;
}

static int update_one(queue_t *q, uint64_t id, int state, double next, const char *wamid,
                      const queue_error_info_t *err)
{
    queue_update_t u = update_make(id, state, next, wamid, err);
    queue_batch_t *b = queue_batch_new();
    int rc;
    CHECK(b != NULL);
    CHECK_RC(queue_batch_add_update(b, &u), 0);
    CHECK_OK(queue_batch_commit(q, b));
    rc = queue_batch_result(b, 0, NULL);
    queue_batch_free(b);
    return rc;
}

static int get_state(queue_t *q, uint64_t id)
{
    queue_job_t j;
    int rc = queue_job_get(q, id, &j);
    int st = rc == 0 ? j.state : rc;
    queue_job_clear(&j);
    return st;
}

/* queue_recover with the daemon's usual options: `flags` marks requeued
 * jobs, no cancel marks. */
static int recover(queue_t *q, bool amo, double now, uint8_t flags, size_t *n)
{
    queue_recover_options_t o;

    memset(&o, 0, sizeof o);
    o.at_most_once = amo;
    o.now = now;
    o.requeue_flags = flags;
    return queue_recover(q, &o, n);
}

/* Collects due entries (ids, dues) for checks. */
typedef struct collect {
    size_t n, stop_after;
    uint64_t ids[256];
    double dues[256];
    queue_due_entry_t first;
    char first_phone[80], first_to[80], first_order[256], first_campaign[256];
    bool first_order_null, first_campaign_null;
} collect_t;

static int collect_cb(const queue_due_entry_t *e, void *user)
{
    collect_t *c = user;
    CHECK(c->n < 256);
    if (c->n == 0) {
        c->first = *e;
        snprintf(c->first_phone, sizeof c->first_phone, "%s", e->phone_number_id);
        snprintf(c->first_to, sizeof c->first_to, "%s", e->to);
        c->first_order_null = e->order_key == NULL;
        c->first_campaign_null = e->campaign == NULL;
        if (e->order_key)
            snprintf(c->first_order, sizeof c->first_order, "%s", e->order_key);
        if (e->campaign)
            snprintf(c->first_campaign, sizeof c->first_campaign, "%s", e->campaign);
    }
    c->ids[c->n] = e->id;
    c->dues[c->n] = e->due;
    c->n++;
    return c->stop_after != 0 && c->n >= c->stop_after;
}

static size_t scan(queue_t *q, double after_due, uint64_t after_id, double until, size_t limit,
                   collect_t *c)
{
    memset(c, 0, sizeof *c);
    CHECK_OK(queue_due_scan(q, after_due, after_id, until, limit, collect_cb, c));
    return c->n;
}

static void counts_of(queue_t *q, uint64_t c[QUEUE_STATE_MAX + 1])
{
    CHECK_OK(queue_counts(q, c));
}

/* --- cases --------------------------------------------------------------- */

static void t_roundtrip(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    queue_job_t a, n, g, lng;
    char phone[QUEUE_MAX_ID_LEN + 1], camp[QUEUE_MAX_KEY_LEN + 1], wamid[QUEUE_MAX_WAMID_LEN + 1];
    char toolong[QUEUE_MAX_KEY_LEN + 2];

    memset(&a, 0, sizeof a);
    a.id = queue_id_next(q);
    CHECK(a.id == 1);
    a.state = QUEUE_STATE_QUEUED;
    a.type = QUEUE_TYPE_MEDIA;
    a.priority = QUEUE_PRIO_BULK;
    a.attempts = 3;
    a.max_attempts = 7;
    a.created_at = 1700000000.123456;
    a.updated_at = 1700000001.5;
    a.next_attempt_at = 1700000002.25;
    a.not_before = 1700000003.0625;
    a.expires_at = 1700086400.875;
    a.phone_number_id = "1000001";
    a.to = "+15551234567";
    a.campaign = "spring-promo";
    a.order_key = "1000001:15551234567";
    a.idempotency_key = "order-42";
    a.wamid = "wamid.HBgLMTU1NTEyMzQ1Njc=";
    a.last_error.status = 429;
    a.last_error.meta_code = 131056;
    a.last_error.has_meta = true;
    snprintf(a.last_error.code, sizeof a.last_error.code, "RATE_LIMITED");
    snprintf(a.last_error.message, sizeof a.last_error.message, "pair rate limit hit");

    memset(&n, 0, sizeof n); /* every string absent except an empty campaign */
    n.id = queue_id_next(q);
    n.state = QUEUE_STATE_QUEUED;
    n.type = QUEUE_TYPE_TEMPLATE;
    n.priority = QUEUE_PRIO_HIGH;
    n.campaign = "";
    n.last_error.meta_code = 0; /* Meta's code 0 (AuthException), not "none" */
    n.last_error.has_meta = true;

    memset(phone, '7', QUEUE_MAX_ID_LEN);
    phone[QUEUE_MAX_ID_LEN] = '\0';
    memset(camp, 'c', QUEUE_MAX_KEY_LEN);
    camp[QUEUE_MAX_KEY_LEN] = '\0';
    memset(wamid, 'w', QUEUE_MAX_WAMID_LEN);
    wamid[QUEUE_MAX_WAMID_LEN] = '\0';
    lng = job_make(queue_id_next(q), 5.0);
    lng.phone_number_id = phone;
    lng.to = phone;
    lng.campaign = camp;
    lng.order_key = camp;
    lng.idempotency_key = camp;
    lng.wamid = wamid;
    memset(lng.last_error.code, 'x', sizeof lng.last_error.code); /* no NUL: cut to 63 */
    memset(lng.last_error.message, 'm', sizeof lng.last_error.message);

    CHECK(b != NULL);
    CHECK_RC(queue_batch_add_job(b, &a, "A", 1), 0);
    CHECK_RC(queue_batch_add_job(b, &n, NULL, 0), 1);
    CHECK_RC(queue_batch_add_job(b, &lng, "L", 1), 2);
    CHECK(queue_batch_count(b) == 3);
    CHECK_OK(queue_batch_commit(q, b));
    for (size_t i = 0; i < 3; i++)
        CHECK_RC(queue_batch_result(b, i, NULL), 0);

    CHECK_OK(queue_job_get(q, a.id, &g));
    CHECK(g.id == a.id && g.state == a.state && g.type == a.type && g.priority == a.priority);
    CHECK(g.attempts == 3 && g.max_attempts == 7);
    CHECK(g.created_at == a.created_at && g.updated_at == a.updated_at);
    CHECK(g.next_attempt_at == a.next_attempt_at && g.not_before == a.not_before);
    CHECK(g.expires_at == a.expires_at);
    CHECK(strcmp(g.phone_number_id, a.phone_number_id) == 0);
    CHECK(strcmp(g.to, a.to) == 0);
    CHECK(strcmp(g.campaign, a.campaign) == 0);
    CHECK(strcmp(g.order_key, a.order_key) == 0);
    CHECK(strcmp(g.idempotency_key, a.idempotency_key) == 0);
    CHECK(strcmp(g.wamid, a.wamid) == 0);
    CHECK(g.last_error.status == 429 && g.last_error.meta_code == 131056);
    CHECK(g.last_error.has_meta);
    CHECK(strcmp(g.last_error.code, "RATE_LIMITED") == 0);
    CHECK(strcmp(g.last_error.message, "pair rate limit hit") == 0);
    queue_job_clear(&g);
    CHECK(g.priv_ == NULL && g.to == NULL && g.id == 0);
    queue_job_clear(&g); /* a zeroed job is fine */
    queue_job_clear(NULL);

    CHECK_OK(queue_job_get(q, n.id, &g));
    CHECK(g.type == QUEUE_TYPE_TEMPLATE && g.priority == QUEUE_PRIO_HIGH);
    CHECK(g.phone_number_id == NULL && g.to == NULL && g.order_key == NULL);
    CHECK(g.idempotency_key == NULL && g.wamid == NULL);
    CHECK(g.campaign != NULL && g.campaign[0] == '\0');
    CHECK(g.last_error.status == 0 && g.last_error.meta_code == 0 && g.last_error.has_meta);
    CHECK(g.last_error.code[0] == '\0' && g.last_error.message[0] == '\0');
    queue_job_clear(&g);

    CHECK_OK(queue_job_get(q, lng.id, &g));
    CHECK(strcmp(g.phone_number_id, phone) == 0 && strcmp(g.campaign, camp) == 0);
    CHECK(strcmp(g.wamid, wamid) == 0);
    CHECK(strlen(g.last_error.code) == QUEUE_ERR_CODE_LEN - 1);
    CHECK(strlen(g.last_error.message) == QUEUE_ERR_MSG_LEN - 1);
    CHECK(!g.last_error.has_meta && g.last_error.meta_code == 0);
    queue_job_clear(&g);

    CHECK_OK(queue_job_get_by_key(q, "order-42", &g));
    CHECK(g.id == a.id && g.attempts == 3);
    queue_job_clear(&g);
    CHECK_RC(queue_job_get_by_key(q, "nope", &g), QUEUE_ENOTFOUND);
    CHECK(g.priv_ == NULL);
    CHECK_RC(queue_job_get_by_key(q, "", &g), QUEUE_EINVAL);
    CHECK_RC(queue_job_get(q, 999, &g), QUEUE_ENOTFOUND);

    /* Limits are enforced when adding. */
    memset(toolong, 'k', sizeof toolong - 1);
    toolong[sizeof toolong - 1] = '\0';
    lng.id = queue_id_next(q);
    lng.campaign = toolong;
    CHECK_RC(queue_batch_add_job(b, &lng, NULL, 0), QUEUE_EINVAL);
    queue_batch_free(b);
    queue_close(q);
}

static void t_body(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    size_t big_len = 2u << 20, len;
    char *big = malloc(big_len), *out;
    queue_job_t j1 = job_make(queue_id_next(q), 1.0);
    queue_job_t j2 = job_make(queue_id_next(q), 1.0);
    queue_job_t j3 = job_make(queue_id_next(q), 1.0);
    static const char with_nul[] = {'a', '\0', 'b'};

    CHECK(big != NULL && b != NULL);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + (i * 7919) % 26);
    CHECK(queue_batch_add_job(b, &j1, big, big_len) == 0);
    CHECK(queue_batch_add_job(b, &j2, NULL, 0) == 1);
    CHECK(queue_batch_add_job(b, &j3, with_nul, sizeof with_nul) == 2);
    CHECK_OK(queue_batch_commit(q, b));

    CHECK_OK(queue_job_body(q, j1.id, &out, &len));
    CHECK(len == big_len && memcmp(out, big, big_len) == 0 && out[len] == '\0');
    free(out);
    CHECK_OK(queue_job_body(q, j2.id, &out, &len));
    CHECK(len == 0 && out != NULL && out[0] == '\0');
    free(out);
    CHECK_OK(queue_job_body(q, j3.id, &out, &len));
    CHECK(len == 3 && memcmp(out, with_nul, 3) == 0);
    free(out);
    CHECK_RC(queue_job_body(q, 12345, &out, &len), QUEUE_ENOTFOUND);
    CHECK(out == NULL && len == 0);

    /* A state update leaves the body alone. */
    CHECK_RC(update_one(q, j1.id, QUEUE_STATE_SENT, 0, "wamid.x", NULL), 0);
    queue_close(q);
    q = open_q(NULL);
    CHECK_OK(queue_job_body(q, j1.id, &out, &len));
    CHECK(len == big_len && memcmp(out, big, big_len) == 0);
    free(out);
    free(big);
    queue_batch_free(b);
    queue_close(q);
}

/* A batch of body reads through one reader: in order, out of order, a
 * missing id, and another read of the same thread meanwhile. */
static void t_reader(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    queue_reader_t *rd = NULL;
    uint64_t ids[50];
    char body[64], *out;
    size_t len;
    queue_job_t got;

    CHECK(b != NULL);
    for (int i = 0; i < 50; i++) {
        queue_job_t j = job_make(queue_id_next(q), 1.0);
        int n = snprintf(body, sizeof body, "{\"n\":%d,\"pad\":\"%0*d\"}", i, 20 + i % 7, 0);
        ids[i] = j.id;
        CHECK(queue_batch_add_job(b, &j, body, (size_t)n) == i);
    }
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(queue_reader_open(NULL, &rd), QUEUE_EINVAL);
    CHECK(rd == NULL);
    CHECK_OK(queue_reader_open(q, &rd));
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < 50; k++) {
            int i = pass == 0 ? k : (k * 17) % 50; /* in order, then scattered */
            int n = snprintf(body, sizeof body, "{\"n\":%d,\"pad\":\"%0*d\"}", i, 20 + i % 7, 0);
            CHECK_OK(queue_reader_body(rd, ids[i], &out, &len));
            CHECK(len == (size_t)n && memcmp(out, body, len) == 0 && out[len] == '\0');
            free(out);
        }
    }
    /* A read of this thread inside the reader's: the same snapshot. */
    CHECK_OK(queue_job_get(q, ids[7], &got));
    CHECK(got.id == ids[7]);
    queue_job_clear(&got);
    CHECK_RC(queue_reader_body(rd, 987654, &out, &len), QUEUE_ENOTFOUND);
    CHECK(out == NULL && len == 0);
    CHECK_OK(queue_reader_body(rd, ids[49], &out, &len)); /* still usable after a miss */
    free(out);
    queue_reader_close(rd);
    queue_reader_close(NULL);
    /* Reads after the close set up their own snapshot again. */
    CHECK_OK(queue_job_body(q, ids[0], &out, &len));
    free(out);
    queue_batch_free(b);
    queue_close(q);
}

static void t_ids_reopen(void)
{
    queue_t *q = open_q(NULL);
    queue_job_t j;
    uint64_t orig, a, c;

    CHECK(queue_id_next(q) == 1);
    CHECK(queue_id_next(q) == 2);
    j = job_make(2, 1.0);
    CHECK_RC(put_one(q, &j, NULL), 0);
    CHECK(queue_id_next(q) == 3);
    queue_close(q);

    q = open_q(NULL);
    a = queue_id_next(q);
    CHECK(a == 3);
    c = queue_id_next(q);                /* 4, never used */
    j = job_make(queue_id_next(q), 1.0); /* 5 */
    CHECK(j.id == 5 && c == 4);
    j.idempotency_key = "k";
    CHECK_RC(put_one(q, &j, NULL), 0);
    queue_close(q);

    /* The high water mark counts a duplicate's id even though no job was
     * stored under it: an id is never handed out twice. */
    q = open_q(NULL);
    j = job_make(queue_id_next(q), 1.0);
    CHECK(j.id == 6);
    j.idempotency_key = "k";
    CHECK_RC(put_one(q, &j, &orig), QUEUE_EDUPLICATE);
    CHECK(orig == 5);
    CHECK_RC(get_state(q, 6), QUEUE_ENOTFOUND);
    queue_close(q);
    q = open_q(NULL);
    CHECK(queue_id_next(q) == 7);
    queue_close(q);
}

static void t_idem(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    queue_job_t a = job_make(queue_id_next(q), 1.0), x, y, z, g;
    uint64_t orig, counts[QUEUE_STATE_MAX + 1];
    collect_t c;
    char *body;
    size_t len;

    a.idempotency_key = "k1";
    CHECK_RC(put_one(q, &a, NULL), 0);

    x = job_make(queue_id_next(q), 2.0);
    x.idempotency_key = "k1"; /* taken in the store */
    y = job_make(queue_id_next(q), 3.0);
    y.idempotency_key = "k2";
    z = job_make(queue_id_next(q), 4.0);
    z.idempotency_key = "k2"; /* taken earlier in this batch */
    CHECK(b != NULL);
    CHECK(queue_batch_add_job(b, &x, "x", 1) == 0);
    CHECK(queue_batch_add_job(b, &y, "y", 1) == 1);
    CHECK(queue_batch_add_job(b, &z, "z", 1) == 2);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(queue_batch_result(b, 0, &orig), QUEUE_EDUPLICATE);
    CHECK(orig == a.id);
    CHECK_RC(queue_batch_result(b, 1, &orig), 0);
    CHECK(orig == 0);
    CHECK_RC(queue_batch_result(b, 2, &orig), QUEUE_EDUPLICATE);
    CHECK(orig == y.id);

    CHECK_RC(get_state(q, x.id), QUEUE_ENOTFOUND);
    CHECK_RC(get_state(q, z.id), QUEUE_ENOTFOUND);
    CHECK_RC(queue_job_body(q, z.id, &body, &len), QUEUE_ENOTFOUND);
    CHECK_OK(queue_job_get_by_key(q, "k2", &g));
    CHECK(g.id == y.id);
    queue_job_clear(&g);
    CHECK(scan(q, 0, 0, INFINITY, 100, &c) == 2);
    CHECK(c.ids[0] == a.id && c.ids[1] == y.id);
    counts_of(q, counts);
    CHECK(counts[QUEUE_STATE_QUEUED] == 2);
    queue_batch_free(b);
    queue_close(q);
}

static void t_due(void)
{
    static const double dues[] = {5, 3, 3, 1, 7, 2, 10.002, 10.001};
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    collect_t c;
    uint64_t id[8];

    CHECK(b != NULL);
    for (int i = 0; i < 8; i++) {
        queue_job_t j = job_make(queue_id_next(q), dues[i]);
        id[i] = j.id;
        if (i == 3) {
            j.type = QUEUE_TYPE_SMART;
            j.priority = QUEUE_PRIO_HIGH;
            j.attempts = 2;
            j.max_attempts = 4;
            j.expires_at = 99.5;
            j.order_key = "ok-1";
            j.campaign = "camp";
        }
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == i);
    }
    CHECK_OK(queue_batch_commit(q, b));

    /* Order by due then id. */
    CHECK(scan(q, 0, 0, INFINITY, 100, &c) == 8);
    {
        const uint64_t want[] = {id[3], id[5], id[1], id[2], id[0], id[4], id[7], id[6]};
        for (int i = 0; i < 8; i++)
            CHECK(c.ids[i] == want[i]);
    }
    CHECK(c.dues[0] == 1.0 && c.dues[6] == 10.001);
    CHECK(c.first.type == QUEUE_TYPE_SMART && c.first.priority == QUEUE_PRIO_HIGH);
    CHECK(c.first.attempts == 2 && c.first.max_attempts == 4 && c.first.expires_at == 99.5);
    CHECK(c.first.state == QUEUE_STATE_QUEUED);
    CHECK(strcmp(c.first_phone, "1000001") == 0 && strcmp(c.first_to, "+15551234567") == 0);
    CHECK(!c.first_order_null && strcmp(c.first_order, "ok-1") == 0);
    CHECK(!c.first_campaign_null && strcmp(c.first_campaign, "camp") == 0);

    /* after: strictly after (3, id[1]); limit; until; callback stop. */
    CHECK(scan(q, 3, id[1], INFINITY, 100, &c) == 5);
    CHECK(c.ids[0] == id[2]);
    CHECK(scan(q, 3, id[2], INFINITY, 2, &c) == 2);
    CHECK(c.ids[0] == id[0] && c.ids[1] == id[4]);
    CHECK(scan(q, 0, 0, 3.0, 100, &c) == 4);
    CHECK(c.ids[3] == id[2]);
    CHECK(scan(q, 0, 0, 0.5, 100, &c) == 0);
    CHECK(scan(q, 0, 0, INFINITY, 0, &c) == 0);
    memset(&c, 0, sizeof c);
    c.stop_after = 3;
    CHECK_OK(queue_due_scan(q, 0, 0, INFINITY, 100, collect_cb, &c));
    CHECK(c.n == 3);

    /* Updates move entries; final states leave the index. */
    CHECK_RC(update_one(q, id[4], QUEUE_STATE_SENT, 0, "wamid.1", NULL), 0);
    CHECK_RC(update_one(q, id[0], QUEUE_STATE_RETRYING, 0.5, NULL, NULL), 0);
    CHECK_RC(update_one(q, id[1], QUEUE_STATE_SENDING, 3, NULL, NULL), 0);
    CHECK_RC(update_one(q, id[3], QUEUE_STATE_FAILED, 0, NULL, NULL), 0);
    CHECK_RC(update_one(q, id[6], QUEUE_STATE_SENDING, 20, NULL, NULL), 0);
    CHECK(scan(q, 0, 0, INFINITY, 100, &c) == 6);
    {
        const uint64_t want[] = {id[0], id[5], id[1], id[2], id[7], id[6]};
        for (int i = 0; i < 6; i++)
            CHECK(c.ids[i] == want[i]);
    }
    CHECK(c.dues[0] == 0.5 && c.dues[5] == 20.0);
    /* A final job keeps its last due time on record but is off the index. */
    CHECK(get_state(q, id[4]) == QUEUE_STATE_SENT);
    /* Requeue of a final job puts it back. */
    CHECK_RC(update_one(q, id[3], QUEUE_STATE_QUEUED, 0.25, NULL, NULL), 0);
    CHECK(scan(q, 0, 0, INFINITY, 100, &c) == 7);
    CHECK(c.ids[0] == id[3] && c.dues[0] == 0.25);
    queue_batch_free(b);
    queue_close(q);
}

static void t_counts(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    uint64_t c[QUEUE_STATE_MAX + 1], ids[6];
    queue_update_t u;

    CHECK(b != NULL);
    counts_of(q, c);
    for (int s = 0; s <= QUEUE_STATE_MAX; s++)
        CHECK(c[s] == 0);
    for (int i = 0; i < 6; i++) {
        queue_job_t j = job_make(queue_id_next(q), 1.0 + i);
        ids[i] = j.id;
        j.idempotency_key = i == 5 ? "dup" : NULL;
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == i);
    }
    {
        queue_job_t d = job_make(queue_id_next(q), 1.0);
        d.idempotency_key = "dup"; /* duplicate: must not count */
        CHECK(queue_batch_add_job(b, &d, "{}", 2) == 6);
    }
    memset(&u, 0, sizeof u);
    u.id = ids[0];
    u.state = QUEUE_STATE_SENDING;
    u.next_attempt_at = 1.0;
    CHECK(queue_batch_add_update(b, &u) == 7); /* update of a job of this batch */
    u.id = 424242;
    CHECK(queue_batch_add_update(b, &u) == 8); /* missing: ENOTFOUND, not counted */
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(queue_batch_result(b, 6, NULL), QUEUE_EDUPLICATE);
    CHECK_RC(queue_batch_result(b, 7, NULL), 0);
    CHECK_RC(queue_batch_result(b, 8, NULL), QUEUE_ENOTFOUND);

    CHECK_RC(update_one(q, ids[1], QUEUE_STATE_SENDING, 2, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[1], QUEUE_STATE_SENT, 0, "w", NULL), 0);
    CHECK_RC(update_one(q, ids[2], QUEUE_STATE_FAILED, 0, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[3], QUEUE_STATE_RETRYING, 9, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[3], QUEUE_STATE_RETRYING, 10, NULL, NULL), 0); /* same state */
    CHECK_RC(update_one(q, ids[4], QUEUE_STATE_CANCELLED, 0, NULL, NULL), 0);

    counts_of(q, c);
    CHECK(c[QUEUE_STATE_QUEUED] == 1 && c[QUEUE_STATE_SENDING] == 1);
    CHECK(c[QUEUE_STATE_RETRYING] == 1 && c[QUEUE_STATE_SENT] == 1);
    CHECK(c[QUEUE_STATE_FAILED] == 1 && c[QUEUE_STATE_CANCELLED] == 1);
    CHECK(c[QUEUE_STATE_EXPIRED] == 0 && c[QUEUE_STATE_UNCERTAIN] == 0);
    queue_close(q);

    q = open_q(NULL);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_QUEUED] == 1 && c[QUEUE_STATE_SENDING] == 1);
    CHECK(c[QUEUE_STATE_RETRYING] == 1 && c[QUEUE_STATE_SENT] == 1);
    CHECK(c[QUEUE_STATE_FAILED] == 1 && c[QUEUE_STATE_CANCELLED] == 1);
    {
        size_t n;
        CHECK_OK(recover(q, true, 50.0, 0x80, &n));
        CHECK(n == 1);
    }
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_SENDING] == 0 && c[QUEUE_STATE_UNCERTAIN] == 1);
    queue_batch_free(b);
    queue_close(q);
}

/* Three sending jobs among others; recover in mode `amo`. */
static void recover_case(bool amo)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    uint64_t ids[6], c[QUEUE_STATE_MAX + 1];
    collect_t col;
    size_t n = 99;
    queue_job_t g;

    CHECK(b != NULL);
    for (int i = 0; i < 6; i++) {
        queue_job_t j = job_make(queue_id_next(q), 100.0 + i);
        ids[i] = j.id;
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == i);
    }
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(update_one(q, ids[0], QUEUE_STATE_SENDING, 100, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[2], QUEUE_STATE_SENDING, 102, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[5], QUEUE_STATE_SENDING, 105, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[3], QUEUE_STATE_SENT, 0, "w", NULL), 0);
    queue_close(q); /* "crash" */

    q = open_q(NULL);
    CHECK_OK(recover(q, amo, 500.0, 0x80, &n));
    CHECK(n == 3);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_SENDING] == 0 && c[QUEUE_STATE_SENT] == 1);
    if (amo) {
        CHECK(c[QUEUE_STATE_UNCERTAIN] == 3 && c[QUEUE_STATE_QUEUED] == 2);
        CHECK(scan(q, 0, 0, INFINITY, 100, &col) == 2);
        CHECK(col.ids[0] == ids[1] && col.ids[1] == ids[4]);
        CHECK(get_state(q, ids[0]) == QUEUE_STATE_UNCERTAIN);
        CHECK(get_state(q, ids[5]) == QUEUE_STATE_UNCERTAIN);
    } else {
        CHECK(c[QUEUE_STATE_QUEUED] == 5 && c[QUEUE_STATE_UNCERTAIN] == 0);
        CHECK(scan(q, 0, 0, INFINITY, 100, &col) == 5);
        CHECK(col.ids[0] == ids[1] && col.ids[1] == ids[4]);
        CHECK(col.ids[2] == ids[0] && col.ids[3] == ids[2] && col.ids[4] == ids[5]);
        CHECK(col.dues[2] == 500.0);
        CHECK_OK(queue_job_get(q, ids[2], &g));
        CHECK(g.state == QUEUE_STATE_QUEUED && g.next_attempt_at == 500.0);
        CHECK(g.updated_at == 500.0 && g.attempts == 1);
        CHECK(g.flags == 0x80); /* the caller's "may have been delivered" */
        queue_job_clear(&g);
        CHECK_OK(queue_job_get(q, ids[1], &g));
        CHECK(g.flags == 0); /* was not in flight */
        queue_job_clear(&g);
    }
    CHECK_OK(recover(q, amo, 600.0, 0x80, &n));
    CHECK(n == 0);
    CHECK_OK(recover(q, amo, 600.0, 0x80, NULL));
    queue_batch_free(b);
    queue_close(q);
}

/* A flags-only update changes the flags and nothing else, from the states
 * it names; recovery cancels a `sending` job with a cancel flag instead of
 * requeueing it (at-least-once), with the given last error; clear_flags
 * takes a flag away. */
static void t_recover_cancel_mark(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    uint64_t ids[3], c[QUEUE_STATE_MAX + 1];
    queue_recover_options_t o;
    queue_error_info_t e;
    queue_update_t u;
    queue_job_t g;
    size_t n = 0;

    CHECK(b != NULL);
    for (int i = 0; i < 3; i++) {
        queue_job_t j = job_make(queue_id_next(q), 100.0 + i);
        ids[i] = j.id;
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == i);
    }
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_reset(b);
    CHECK_RC(update_one(q, ids[0], QUEUE_STATE_SENDING, 100, NULL, NULL), 0);
    CHECK_RC(update_one(q, ids[1], QUEUE_STATE_SENDING, 101, NULL, NULL), 0);
    memset(&u, 0, sizeof u);
    u.id = ids[0];
    u.flags_only = true;
    u.set_flags = 0x40;
    u.only_from = QUEUE_STATE_BIT(QUEUE_STATE_SENDING);
    CHECK(queue_batch_add_update(b, &u) == 0);
    u.id = ids[2]; /* queued: not from there */
    CHECK(queue_batch_add_update(b, &u) == 1);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(queue_batch_result(b, 0, NULL), 0);
    CHECK_RC(queue_batch_result(b, 1, NULL), QUEUE_ESTATE);
    CHECK_OK(queue_job_get(q, ids[0], &g));
    CHECK(g.state == QUEUE_STATE_SENDING && g.flags == 0x40 && g.attempts == 1);
    CHECK(g.next_attempt_at == 100.0);
    queue_job_clear(&g);
    CHECK_OK(queue_job_get(q, ids[2], &g));
    CHECK(g.flags == 0);
    queue_job_clear(&g);
    queue_close(q); /* "crash" */

    q = open_q(NULL);
    memset(&o, 0, sizeof o);
    memset(&e, 0, sizeof e);
    snprintf(e.code, sizeof e.code, "CANCELLED");
    snprintf(e.message, sizeof e.message, "was in flight");
    o.now = 500.0;
    o.requeue_flags = 0x02;
    o.cancel_flags = 0x40;
    o.cancel_error = &e;
    CHECK_OK(queue_recover(q, &o, &n));
    CHECK(n == 2);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_SENDING] == 0 && c[QUEUE_STATE_CANCELLED] == 1);
    CHECK(c[QUEUE_STATE_QUEUED] == 2);
    CHECK_OK(queue_job_get(q, ids[0], &g));
    CHECK(g.state == QUEUE_STATE_CANCELLED && g.updated_at == 500.0);
    CHECK(strcmp(g.last_error.code, "CANCELLED") == 0);
    CHECK(strcmp(g.last_error.message, "was in flight") == 0);
    queue_job_clear(&g);
    CHECK_OK(queue_job_get(q, ids[1], &g));
    CHECK(g.state == QUEUE_STATE_QUEUED && g.flags == 0x02);
    queue_job_clear(&g);
    /* Off the due index: only the two queued ones are due. */
    {
        collect_t col;
        CHECK(scan(q, 0, 0, INFINITY, 100, &col) == 2);
    }
    /* clear_flags with a state change */
    queue_batch_reset(b);
    memset(&u, 0, sizeof u);
    u.id = ids[1];
    u.state = QUEUE_STATE_QUEUED;
    u.updated_at = 501.0;
    u.next_attempt_at = 501.0;
    u.clear_flags = 0x02;
    u.set_flags = 0x01;
    CHECK(queue_batch_add_update(b, &u) == 0);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_job_get(q, ids[1], &g));
    CHECK(g.flags == 0x01);
    queue_job_clear(&g);
    queue_batch_free(b);
    queue_close(q);
}

typedef struct pauses_seen {
    int n;
    char reason[QUEUE_PAUSE_REASON_MAX + 1];
    int kind;
} pauses_seen_t;

static int pause_cb(int kind, const char *name, const char *reason, void *user)
{
    pauses_seen_t *p = user;

    (void)name;
    p->n++;
    p->kind = kind;
    snprintf(p->reason, sizeof p->reason, "%s", reason);
    return 0;
}

/* Pauses are stored and ended; a long reason (the API's text) is cut to
 * QUEUE_PAUSE_REASON_MAX between characters, so it stays UTF-8. */
static void t_pauses(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    char reason[400];
    pauses_seen_t seen;
    size_t o = 0;

    CHECK(b != NULL);
    reason[o++] = 'x'; /* an odd start: a byte cut at 200 splits a character */
    while (o + 2 < sizeof reason) {
        reason[o++] = '\xC3';
        reason[o++] = '\xA9';
    }
    reason[o] = '\0';
    CHECK(queue_batch_add_pause(b, QUEUE_PAUSE_SENDER, "15550001", reason, true) == 0);
    CHECK(queue_batch_add_pause(b, QUEUE_PAUSE_CAMPAIGN, "c1", NULL, true) == 1);
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_reset(b);
    CHECK(queue_batch_add_pause(b, QUEUE_PAUSE_CAMPAIGN, "c1", NULL, false) == 0);
    CHECK_OK(queue_batch_commit(q, b));
    queue_close(q);
    q = open_q(NULL);
    memset(&seen, 0, sizeof seen);
    CHECK_OK(queue_pauses_each(q, pause_cb, &seen));
    CHECK(seen.n == 1 && seen.kind == QUEUE_PAUSE_SENDER);
    CHECK(strlen(seen.reason) == QUEUE_PAUSE_REASON_MAX - 1); /* 'x' + 99 whole characters */
    CHECK(strncmp(seen.reason, reason, QUEUE_PAUSE_REASON_MAX - 1) == 0);
    queue_batch_free(b);
    queue_close(q);
}

static void t_recover_requeue(void)
{
    recover_case(false);
}

static void t_recover_uncertain(void)
{
    recover_case(true);
}

/* Child side of t_locked: exit 0 if the dir is locked, 3 if it opened. */
static int lock_child(const char *dir)
{
    queue_t *q = NULL;
    int rc = queue_open(dir, NULL, &q);
    if (rc == QUEUE_ELOCKED && q == NULL)
        return 0;
    if (rc == 0) {
        queue_close(q);
        return 3;
    }
    return 4;
}

static int run_child(void)
{
    int st;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl(g_self, g_self, "lock_child", g_dir, (char *)NULL);
        _exit(127);
    }
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void t_locked(void)
{
    queue_t *q = open_q(NULL), *q2 = (queue_t *)&q;
    queue_job_t j = job_make(queue_id_next(q), 1.0);

    CHECK_RC(put_one(q, &j, NULL), 0);
    /* Same process: flock is per open file description. */
    CHECK_RC(queue_open(g_dir, NULL, &q2), QUEUE_ELOCKED);
    CHECK(q2 == NULL);
    CHECK(run_child() == 0);
    /* The first handle is unharmed. */
    CHECK(get_state(q, j.id) == QUEUE_STATE_QUEUED);
    queue_close(q);
    CHECK(run_child() == 3);
    q = open_q(NULL);
    CHECK(get_state(q, j.id) == QUEUE_STATE_QUEUED);
    queue_close(q);
}

/* queue_dir_sync: a directory syncs, anything else is an error. */
static void t_dir_sync(void)
{
    char file[600];

    CHECK_RC(queue_dir_sync(g_dir), 0);
    snprintf(file, sizeof file, "%s/nope", g_dir);
    CHECK_RC(queue_dir_sync(file), -ENOENT);
    {
        FILE *f = fopen(file, "w");
        CHECK(f != NULL);
        fclose(f);
    }
    CHECK_RC(queue_dir_sync(file), -ENOTDIR);
    unlink(file);
}

static void t_growth(void)
{
    queue_options_t opt = {256 << 10, 64 << 20, 0, 0};
    queue_t *q = open_q(&opt);
    queue_batch_t *b = queue_batch_new();
    size_t map0, map1, used, len;
    enum { NB = 40, PER = 100, BODY = 4000 };
    char body[BODY], *out;
    uint64_t first = 0, c[QUEUE_STATE_MAX + 1];

    CHECK(b != NULL);
    CHECK_OK(queue_space(q, &map0, &used));
    CHECK(map0 == 256 << 10 && used > 0 && used <= map0);
    for (int i = 0; i < NB; i++) {
        queue_batch_reset(b);
        for (int k = 0; k < PER; k++) {
            queue_job_t j = job_make(queue_id_next(q), 1000.0 + k);
            char key[32];
            if (first == 0)
                first = j.id;
            snprintf(key, sizeof key, "key-%llu", (unsigned long long)j.id);
            j.idempotency_key = key;
            memset(body, 'a' + (int)(j.id % 26), sizeof body);
            CHECK(queue_batch_add_job(b, &j, body, sizeof body) == k);
        }
        CHECK_OK(queue_batch_commit(q, b));
        for (int k = 0; k < PER; k++)
            CHECK_RC(queue_batch_result(b, (size_t)k, NULL), 0);
    }
    CHECK_OK(queue_space(q, &map1, &used));
    /* 16 MB of bodies: at least six doublings from 256 KiB. */
    CHECK(map1 >= (size_t)16 << 20 && map1 <= (size_t)64 << 20);
    CHECK(used > (size_t)NB * PER * BODY);
    for (uint64_t id = first; id < first + NB * PER; id++) {
        queue_job_t g;
        char key[32];
        CHECK_OK(queue_job_body(q, id, &out, &len));
        CHECK(len == BODY && out[0] == 'a' + (int)(id % 26) && out[BODY - 1] == out[0]);
        free(out);
        snprintf(key, sizeof key, "key-%llu", (unsigned long long)id);
        CHECK_OK(queue_job_get_by_key(q, key, &g));
        CHECK(g.id == id);
        queue_job_clear(&g);
    }
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_QUEUED] == NB * PER);
    queue_close(q);
    /* Reopen with the small initial size: LMDB keeps the grown size. */
    q = open_q(&opt);
    /* Reopen with the small initial size: the map gets headroom over what
     * the data uses (LMDB alone would map just the used pages). */
    CHECK_OK(queue_space(q, &map0, &used));
    CHECK(map0 >= 2 * used && map0 >= (size_t)16 << 20);
    CHECK_OK(queue_job_body(q, first, &out, &len));
    CHECK(len == BODY);
    free(out);
    queue_batch_free(b);
    queue_close(q);
}

static void t_full(void)
{
    queue_options_t opt = {256 << 10, 4 << 20, 0, 0};
    queue_t *q = open_q(&opt);
    queue_batch_t *b = queue_batch_new();
    enum { PER = 8, BODY = 32 << 10 };
    char *body = malloc(BODY), *out;
    uint64_t last_ok = 0, failed_first = 0, c[QUEUE_STATE_MAX + 1];
    size_t committed = 0, map, len;
    int rc = 0, i;

    CHECK(b != NULL && body != NULL);
    memset(body, 'z', BODY);
    for (i = 0; i < 100; i++) {
        uint64_t first = 0;
        queue_batch_reset(b);
        for (int k = 0; k < PER; k++) {
            queue_job_t j = job_make(queue_id_next(q), 1.0);
            if (k == 0)
                first = j.id;
            CHECK(queue_batch_add_job(b, &j, body, BODY) == k);
        }
        rc = queue_batch_commit(q, b);
        if (rc != 0) {
            failed_first = first;
            break;
        }
        committed += PER;
        last_ok = first + PER - 1;
    }
    CHECK_RC(rc, QUEUE_EFULL);
    CHECK(committed > 0 && i > 1);
    CHECK(strcmp(queue_strerror(rc), "unknown error") != 0);
    CHECK_OK(queue_space(q, &map, NULL));
    CHECK(map == 2 << 20); /* 4 MiB less the reserve for finishing them */
    /* Nothing of the failed batch, everything before it. */
    CHECK_RC(get_state(q, failed_first), QUEUE_ENOTFOUND);
    CHECK_RC(queue_job_body(q, failed_first, &out, &len), QUEUE_ENOTFOUND);
    CHECK(get_state(q, last_ok) == QUEUE_STATE_QUEUED);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_QUEUED] == committed);
    /* A small batch still fits into what the big one could not use. */
    {
        queue_job_t j = job_make(queue_id_next(q), 1.0);
        CHECK_RC(put_one(q, &j, NULL), 0);
        CHECK(get_state(q, j.id) == QUEUE_STATE_QUEUED);
        committed++;
    }
    queue_close(q);
    q = open_q(&opt);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_QUEUED] == committed);
    CHECK_OK(queue_job_body(q, last_ok, &out, &len));
    CHECK(len == BODY && out[BODY - 1] == 'z');
    free(out);
    free(body);
    queue_batch_free(b);
    queue_close(q);
}

/* A store filled to QUEUE_EFULL with small jobs can still finish every one
 * of them: the reserve kept from new jobs grows with the unfinished jobs
 * (a fixed 1/32 ran out: a 16 MiB store stopped sending for good). */
static void t_full_finish(void)
{
    queue_options_t opt = {1 << 20, 16 << 20, 0, 0};
    queue_t *q = open_q(&opt);
    queue_batch_t *b = queue_batch_new();
    enum { PER = 500 };
    static char keys[PER][48];
    const char *body = "{\"phoneNumberId\":\"1000001\",\"to\":\"+1555\",\"text\":\"hello there\"}";
    const char *wamid = "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QUNFNjM3RDc2QjJFRTZGMjkA";
    uint64_t first = 0, next = 0, c[QUEUE_STATE_MAX + 1];
    int rc = 0;

    CHECK(b != NULL);
    for (int i = 0; i < 10000 && rc == 0; i++) {
        queue_batch_reset(b);
        for (int k = 0; k < PER; k++) {
            queue_job_t j = job_make(queue_id_next(q), 1.0);
            if (first == 0)
                first = j.id;
            snprintf(keys[k], sizeof keys[k], "1000001:1555%07llu", (unsigned long long)j.id);
            j.order_key = keys[k];
            CHECK(queue_batch_add_job(b, &j, body, strlen(body)) == k);
        }
        rc = queue_batch_commit(q, b);
    }
    CHECK_RC(rc, QUEUE_EFULL);
    counts_of(q, c);
    next = first + c[QUEUE_STATE_QUEUED];
    CHECK(c[QUEUE_STATE_QUEUED] > 10000);
    /* Every accepted job goes through sending to sent, with a wamid. */
    for (int st = QUEUE_STATE_SENDING; st <= QUEUE_STATE_SENT;
         st += QUEUE_STATE_SENT - QUEUE_STATE_SENDING) {
        for (uint64_t id = first; id < next;) {
            size_t n = 0;
            queue_batch_reset(b);
            for (; id < next && n < PER; id++, n++) {
                queue_update_t u =
                    update_make(id, st, 0, st == QUEUE_STATE_SENT ? wamid : NULL, NULL);
                CHECK_RC(queue_batch_add_update(b, &u), (int)n);
            }
            CHECK_OK(queue_batch_commit(q, b));
        }
    }
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_SENT] == next - first && c[QUEUE_STATE_QUEUED] == 0);
    queue_batch_free(b);
    queue_close(q);
}

/* disk_min_free: new jobs are refused (nothing written) while the disk has
 * less free space than that plus 192 bytes per unfinished job; state
 * changes of accepted jobs still go. */
static void t_low_disk(void)
{
    queue_options_t small = {1 << 20, 16 << 20, 0, 1};
    queue_options_t huge = {1 << 20, 16 << 20, 0, (size_t)1 << 60};
    queue_t *q = open_q(&small);
    queue_job_t j = job_make(queue_id_next(q), 1.0), k;
    uint64_t c[QUEUE_STATE_MAX + 1];

    CHECK_RC(put_one(q, &j, NULL), 0);
    queue_close(q);
    q = open_q(&huge);
    k = job_make(queue_id_next(q), 1.0);
    {
        queue_batch_t *b = queue_batch_new();
        CHECK(b != NULL);
        CHECK(queue_batch_add_job(b, &k, "{}", 2) == 0);
        CHECK_RC(queue_batch_commit(q, b), QUEUE_ELOWDISK);
        queue_batch_free(b);
    }
    CHECK(strstr(queue_strerror(QUEUE_ELOWDISK), "disk_min_free_mb") != NULL);
    CHECK_RC(get_state(q, k.id), QUEUE_ENOTFOUND);
    CHECK_RC(update_one(q, j.id, QUEUE_STATE_SENT, 0, "wamid.X", NULL), 0);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_SENT] == 1 && c[QUEUE_STATE_QUEUED] == 0);
    queue_close(q);
}

/* xorshift64*, deterministic. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void t_decoder(void)
{
    queue_job_t j = job_make(7, 123.5), out;
    queue__record_t r, r2;
    unsigned char buf[QUEUE__REC_MAX_LEN], buf2[QUEUE__REC_MAX_LEN + 8], junk[600];
    size_t len, len2;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int ok = 0;

    j.campaign = "c";
    j.wamid = "w";
    j.idempotency_key = "idem";
    snprintf(j.last_error.code, sizeof j.last_error.code, "E");
    CHECK_OK(queue__record_from_job(&j, &r));
    CHECK_OK(queue__record_encode(&r, buf, sizeof buf, &len));
    CHECK(len == queue__record_size(&r));
    CHECK_RC(queue__record_encode(&r, buf2, len - 1, &len2), -ENOBUFS);

    CHECK_OK(queue__record_decode(buf, len, &out));
    CHECK(out.id == 0 && out.next_attempt_at == 123.5 && strcmp(out.campaign, "c") == 0);
    CHECK(out.order_key == NULL && strcmp(out.last_error.code, "E") == 0);
    queue_job_clear(&out);
    /* parse -> encode reproduces the bytes */
    CHECK_OK(queue__record_parse(buf, len, &r2));
    CHECK_OK(queue__record_encode(&r2, buf2, sizeof buf2, &len2));
    CHECK(len2 == len && memcmp(buf, buf2, len) == 0);

    /* Version 2 keeps the flags; version 1 (no flags byte) reads as flags
     * 0 and is rewritten as version 2. */
    j.flags = 0x5a;
    CHECK_OK(queue__record_from_job(&j, &r));
    CHECK_OK(queue__record_encode(&r, buf2, sizeof buf2, &len2));
    CHECK(buf2[0] == QUEUE_RECORD_VERSION && buf2[0] == 2);
    CHECK_OK(queue__record_decode(buf2, len2, &out));
    CHECK(out.flags == 0x5a && strcmp(out.campaign, "c") == 0);
    queue_job_clear(&out);
    {
        unsigned char v1[QUEUE__REC_MAX_LEN];
        size_t n1 = len2 - 1;

        memcpy(v1, buf2, QUEUE__REC_FIXED_LEN_V1);
        memcpy(v1 + QUEUE__REC_FIXED_LEN_V1, buf2 + QUEUE__REC_FIXED_LEN,
               len2 - QUEUE__REC_FIXED_LEN);
        v1[0] = 1;
        CHECK_OK(queue__record_decode(v1, n1, &out));
        CHECK(out.flags == 0 && out.next_attempt_at == 123.5 && strcmp(out.campaign, "c") == 0);
        CHECK(strcmp(out.idempotency_key, "idem") == 0 && strcmp(out.last_error.code, "E") == 0);
        queue_job_clear(&out);
        CHECK_OK(queue__record_parse(v1, n1, &r2));
        CHECK_OK(queue__record_encode(&r2, buf2, sizeof buf2, &len2));
        CHECK(buf2[0] == 2 && len2 == n1 + 1 && buf2[60] == 0);
    }
    j.flags = 0;

    /* Every truncation, and one extra byte. */
    for (size_t n = 0; n < len; n++) {
        CHECK_RC(queue__record_decode(buf, n, &out), QUEUE_ECORRUPT);
        CHECK(out.priv_ == NULL && out.to == NULL);
    }
    memcpy(buf2, buf, len);
    buf2[len] = 0;
    CHECK_RC(queue__record_decode(buf2, len + 1, &out), QUEUE_ECORRUPT);
    CHECK_RC(queue__record_decode(NULL, 0, &out), QUEUE_ECORRUPT);

    /* Single-field damage. */
    {
        struct {
            size_t off;
            unsigned char v;
        } bad[] = {
            {0, 3},                           /* newer record version */
            {0, 0},                           /* no version 0 */
            {0, 0xff},                        /* far future */
            {1, 0},                           /* state 0 */
            {1, QUEUE_STATE_MAX + 1},         /* state out of range */
            {2, 0},                           /* type 0 */
            {2, QUEUE_TYPE_MAX + 1},          /* type out of range */
            {3, 3},                           /* priority out of range */
            {QUEUE__REC_FIXED_LEN, 0x7f},     /* phone length past the end */
            {QUEUE__REC_FIXED_LEN + 2, '\0'}, /* NUL inside phone */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            memcpy(buf2, buf, len);
            buf2[bad[i].off] = bad[i].v;
            CHECK_RC(queue__record_decode(buf2, len, &out), QUEUE_ECORRUPT);
        }
    }
    /* Well-framed strings at and past their limit. */
    {
        unsigned char big[QUEUE__REC_FIXED_LEN + 2 * QUEUE__REC_NSTR + 100];
        for (size_t plen = QUEUE_MAX_ID_LEN; plen <= QUEUE_MAX_ID_LEN + 1; plen++) {
            size_t off = QUEUE__REC_FIXED_LEN;
            memcpy(big, buf, QUEUE__REC_FIXED_LEN);
            big[off++] = 0;
            big[off++] = (unsigned char)plen;
            memset(big + off, '1', plen);
            off += plen;
            for (int i = 1; i < QUEUE__REC_NSTR; i++) {
                big[off++] = 0xff;
                big[off++] = 0xff;
            }
            if (plen == QUEUE_MAX_ID_LEN) {
                CHECK_OK(queue__record_decode(big, off, &out));
                CHECK(strlen(out.phone_number_id) == QUEUE_MAX_ID_LEN && out.to == NULL);
                CHECK(out.last_error.code[0] == '\0');
                queue_job_clear(&out);
            } else {
                CHECK_RC(queue__record_decode(big, off, &out), QUEUE_ECORRUPT);
            }
        }
    }
    /* Random garbage and random mutations: never a crash, only 0/ECORRUPT. */
    for (int it = 0; it < 200000; it++) {
        size_t n;
        int rc;
        if (it & 1) {
            n = rnd(&seed) % sizeof junk;
            for (size_t i = 0; i < n; i++)
                junk[i] = (unsigned char)rnd(&seed);
            if (n > 0 && (it & 2))
                junk[0] = 1; /* get past the version check */
        } else {
            n = len;
            memcpy(junk, buf, len);
            for (int m = 0; m < 1 + (int)(rnd(&seed) % 3); m++)
                junk[rnd(&seed) % len] = (unsigned char)rnd(&seed);
        }
        rc = queue__record_decode(junk, n, &out);
        CHECK(rc == 0 || rc == QUEUE_ECORRUPT);
        if (rc == 0) {
            ok++;
            CHECK(out.state >= 1 && out.state <= QUEUE_STATE_MAX);
            CHECK(out.to == NULL || strlen(out.to) <= QUEUE_MAX_ID_LEN);
            CHECK(strlen(out.last_error.message) < QUEUE_ERR_MSG_LEN);
        }
        queue_job_clear(&out);
    }
    CHECK(ok > 0); /* mutations of doubles etc. still decode */
}

static void t_schema(void)
{
    queue_t *q = open_q(NULL), *q2 = (queue_t *)&q;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    unsigned char v2[4] = {0, 0, 0, QUEUE_SCHEMA_VERSION + 1};
    MDB_val k = {6, "schema"}, v = {4, v2};
    queue_job_t j = job_make(queue_id_next(q), 1.0);

    CHECK_RC(put_one(q, &j, NULL), 0);
    queue_close(q);
    /* Pretend a newer build wrote the environment. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, 0, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);

    CHECK_RC(queue_open(g_dir, NULL, &q2), QUEUE_ESCHEMA);
    CHECK(q2 == NULL);
    /* Nothing was left open: the lock is free for the next try. */
    CHECK_RC(queue_open(g_dir, NULL, &q2), QUEUE_ESCHEMA);

    /* A malformed schema value is corruption, not a version. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, 0, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    v.mv_size = 3;
    CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    CHECK_RC(queue_open(g_dir, NULL, &q2), QUEUE_ECORRUPT);

    /* Our own version opens again. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, 0, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    v2[3] = QUEUE_SCHEMA_VERSION;
    v.mv_size = 4;
    v.mv_data = v2;
    CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    q = open_q(NULL);
    CHECK(get_state(q, j.id) == QUEUE_STATE_QUEUED);
    queue_close(q);
}

static void t_updates(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    queue_job_t j = job_make(queue_id_next(q), 1.0), g;
    queue_error_info_t e;
    queue_update_t u;

    CHECK(b != NULL);
    CHECK_RC(put_one(q, &j, NULL), 0);
    memset(&e, 0, sizeof e);
    e.status = 500;
    e.meta_code = 2;
    e.has_meta = true;
    snprintf(e.code, sizeof e.code, "SERVER_ERROR");
    snprintf(e.message, sizeof e.message, "boom");
    CHECK_RC(update_one(q, j.id, QUEUE_STATE_RETRYING, 5, NULL, &e), 0);
    CHECK_RC(update_one(q, j.id, QUEUE_STATE_SENDING, 5, NULL, NULL), 0); /* keep error */
    CHECK_OK(queue_job_get(q, j.id, &g));
    CHECK(g.state == QUEUE_STATE_SENDING && g.attempts == 1 && g.updated_at == 1700000100.0);
    CHECK(g.last_error.status == 500 && g.last_error.meta_code == 2 && g.last_error.has_meta);
    CHECK(strcmp(g.last_error.code, "SERVER_ERROR") == 0 && g.wamid == NULL);
    queue_job_clear(&g);
    CHECK_RC(update_one(q, j.id, QUEUE_STATE_SENT, 99, "wamid.A", NULL), 0);
    CHECK_OK(queue_job_get(q, j.id, &g));
    /* next_attempt_at is kept for a final state; wamid set; error kept */
    CHECK(g.state == QUEUE_STATE_SENT && g.next_attempt_at == 5.0);
    CHECK(strcmp(g.wamid, "wamid.A") == 0 && strcmp(g.last_error.message, "boom") == 0);
    queue_job_clear(&g);
    memset(&e, 0, sizeof e); /* an explicit "no error" clears it */
    CHECK_RC(update_one(q, j.id, QUEUE_STATE_SENT, 0, NULL, &e), 0);
    CHECK_OK(queue_job_get(q, j.id, &g));
    CHECK(g.last_error.status == 0 && g.last_error.code[0] == '\0');
    CHECK(strcmp(g.wamid, "wamid.A") == 0);
    CHECK(g.flags == 0);
    queue_job_clear(&g);
    /* set_flags is OR-ed in and kept by later updates without it. */
    memset(&u, 0, sizeof u);
    u.id = j.id;
    u.state = QUEUE_STATE_RETRYING;
    u.attempts = 2;
    u.updated_at = 1700000200.0;
    u.next_attempt_at = 9.0;
    u.set_flags = 0x01;
    CHECK(queue_batch_add_update(b, &u) == 0);
    u.set_flags = 0x04;
    CHECK(queue_batch_add_update(b, &u) == 1);
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_reset(b);
    CHECK_RC(update_one(q, j.id, QUEUE_STATE_SENDING, 9, NULL, NULL), 0);
    CHECK_OK(queue_job_get(q, j.id, &g));
    CHECK(g.flags == 0x05 && g.state == QUEUE_STATE_SENDING);
    queue_job_clear(&g);

    /* Bad updates are refused when added. */
    memset(&u, 0, sizeof u);
    u.id = j.id;
    u.state = 0;
    CHECK_RC(queue_batch_add_update(b, &u), QUEUE_EINVAL);
    u.state = QUEUE_STATE_MAX + 1;
    CHECK_RC(queue_batch_add_update(b, &u), QUEUE_EINVAL);
    u.state = QUEUE_STATE_QUEUED;
    u.id = 0;
    CHECK_RC(queue_batch_add_update(b, &u), QUEUE_EINVAL);
    {
        char w[QUEUE_MAX_WAMID_LEN + 2];
        memset(w, 'w', sizeof w - 1);
        w[sizeof w - 1] = '\0';
        u.id = j.id;
        u.wamid = w;
        CHECK_RC(queue_batch_add_update(b, &u), QUEUE_EINVAL);
    }
    CHECK(queue_batch_count(b) == 0);
    queue_batch_free(b);
    queue_close(q);
}

static void t_batch_api(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    queue_job_t j = job_make(queue_id_next(q), 1.0), k;
    uint64_t orig = 77;

    CHECK(b != NULL);
    CHECK(queue_batch_count(NULL) == 0);
    queue_batch_free(NULL);
    queue_batch_reset(NULL);
    CHECK_OK(queue_batch_commit(q, b)); /* empty: nothing to do */
    CHECK_RC(queue_batch_result(b, 0, &orig), QUEUE_EINVAL);
    CHECK(orig == 0);
    CHECK(queue_batch_add_job(b, &j, "{}", 2) == 0);
    CHECK_RC(queue_batch_result(b, 0, NULL), QUEUE_EINVAL); /* not committed yet */

    k = j;
    k.id = 0;
    CHECK_RC(queue_batch_add_job(b, &k, NULL, 0), QUEUE_EINVAL);
    k = j;
    k.state = 0;
    CHECK_RC(queue_batch_add_job(b, &k, NULL, 0), QUEUE_EINVAL);
    k = j;
    k.type = QUEUE_TYPE_MAX + 1;
    CHECK_RC(queue_batch_add_job(b, &k, NULL, 0), QUEUE_EINVAL);
    k = j;
    k.priority = 3;
    CHECK_RC(queue_batch_add_job(b, &k, NULL, 0), QUEUE_EINVAL);
    k = j;
    k.idempotency_key = "";
    CHECK_RC(queue_batch_add_job(b, &k, NULL, 0), QUEUE_EINVAL);
    CHECK_RC(queue_batch_add_job(b, &j, NULL, 5), QUEUE_EINVAL);
    CHECK(queue_batch_count(b) == 1);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(queue_batch_result(b, 0, NULL), 0);
    CHECK_RC(queue_batch_result(b, 1, NULL), QUEUE_EINVAL);

    /* Reuse after reset; an id already stored fails the whole batch and
     * leaves nothing of it behind. */
    queue_batch_reset(b);
    CHECK(queue_batch_count(b) == 0);
    k = job_make(queue_id_next(q), 2.0);
    CHECK(queue_batch_add_job(b, &k, "{}", 2) == 0);
    CHECK(queue_batch_add_job(b, &j, "{}", 2) == 1); /* j.id reused */
    CHECK_RC(queue_batch_commit(q, b), QUEUE_EINVAL);
    CHECK_RC(get_state(q, k.id), QUEUE_ENOTFOUND);
    queue_batch_reset(b);
    CHECK(queue_batch_add_job(b, &k, "{}", 2) == 0);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK(get_state(q, k.id) == QUEUE_STATE_QUEUED);
    /* An id below the largest stored one still goes in (no APPEND). */
    queue_batch_reset(b);
    k = job_make(j.id + 1000, 3.0);
    CHECK(queue_batch_add_job(b, &k, "{}", 2) == 0);
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_reset(b);
    k = job_make(j.id + 500, 3.0);
    CHECK(queue_batch_add_job(b, &k, "{}", 2) == 0);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK(get_state(q, j.id + 500) == QUEUE_STATE_QUEUED);
    queue_batch_free(b);
    queue_close(q);

    queue_close(NULL);
    CHECK_RC(queue_open(NULL, NULL, &q), QUEUE_EINVAL);
    CHECK_RC(queue_open("/nonexistent/dir/x", NULL, &q), -ENOENT);
    CHECK(q == NULL);
}

/* queue_batch_append: src's operations run after dst's, with their bodies,
 * keys, results and purge; src is left empty. */
static void t_batch_append(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *a = queue_batch_new(), *b = queue_batch_new();
    queue_job_t j1 = job_make(queue_id_next(q), 1.0), j2, j3;
    queue_update_t u;
    uint64_t orig = 0;
    char *body = NULL;
    size_t len = 0;

    CHECK(a != NULL && b != NULL);
    CHECK_RC(queue_batch_append(a, a), QUEUE_EINVAL);
    CHECK_RC(queue_batch_append(NULL, b), QUEUE_EINVAL);
    CHECK_OK(queue_batch_append(a, b)); /* both empty */
    CHECK(queue_batch_count(a) == 0);
    j1.idempotency_key = "key-1";
    CHECK(queue_batch_add_job(a, &j1, "{\"a\":1}", 7) == 0);
    j2 = job_make(queue_id_next(q), 2.0);
    j2.idempotency_key = "key-2";
    CHECK(queue_batch_add_job(b, &j2, "{\"bb\":22}", 9) == 0);
    /* In b: j1 (added by a, before it) to sent, then a duplicate of key-1. */
    memset(&u, 0, sizeof u);
    u.id = j1.id;
    u.state = QUEUE_STATE_SENT;
    u.updated_at = 1700000001.0;
    u.wamid = "wamid.X";
    CHECK(queue_batch_add_update(b, &u) == 1);
    j3 = job_make(queue_id_next(q), 3.0);
    j3.idempotency_key = "key-1";
    CHECK(queue_batch_add_job(b, &j3, "{}", 2) == 2);
    CHECK_OK(queue_batch_set_purge(b, 1.0, 10));
    CHECK_OK(queue_batch_append(a, b));
    CHECK(queue_batch_count(a) == 4);
    CHECK(queue_batch_count(b) == 0);
    CHECK_OK(queue_batch_commit(q, a));
    CHECK_RC(queue_batch_result(a, 0, NULL), 0);
    CHECK_RC(queue_batch_result(a, 1, NULL), 0);
    CHECK_RC(queue_batch_result(a, 2, NULL), 0);
    CHECK_RC(queue_batch_result(a, 3, &orig), QUEUE_EDUPLICATE);
    CHECK(orig == j1.id);
    CHECK_OK(queue_batch_purge_result(a, NULL, NULL));
    CHECK(get_state(q, j1.id) == QUEUE_STATE_SENT);
    CHECK(get_state(q, j2.id) == QUEUE_STATE_QUEUED);
    CHECK_RC(get_state(q, j3.id), QUEUE_ENOTFOUND);
    CHECK_OK(queue_job_body(q, j2.id, &body, &len));
    CHECK(len == 9 && memcmp(body, "{\"bb\":22}", 9) == 0);
    free(body);
    CHECK_OK(queue_job_body(q, j1.id, &body, &len));
    CHECK(len == 7 && memcmp(body, "{\"a\":1}", 7) == 0);
    free(body);
    /* b is usable as new. */
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_free(a);
    queue_batch_free(b);
    queue_close(q);
}

static void t_names(void)
{
    static const int codes[] = {QUEUE_ENOTFOUND,
                                QUEUE_EDUPLICATE,
                                QUEUE_ELOCKED,
                                QUEUE_ESCHEMA,
                                QUEUE_ECORRUPT,
                                QUEUE_EFULL,
                                QUEUE_EINVAL,
                                QUEUE_ESTATE,
                                -EIO,
                                -ENOSPC,
                                -ENOMEM,
                                QUEUE_EFORMAT,
                                0};
    for (int s = 1; s <= QUEUE_STATE_MAX; s++)
        CHECK(queue_state_parse(queue_state_name(s)) == s);
    for (int t = 1; t <= QUEUE_TYPE_MAX; t++)
        CHECK(queue_type_parse(queue_type_name(t)) == t);
    for (int p = 0; p <= QUEUE_PRIO_BULK; p++)
        CHECK(queue_priority_parse(queue_priority_name(p)) == p);
    CHECK(strcmp(queue_state_name(0), "unknown") == 0);
    CHECK(strcmp(queue_state_name(99), "unknown") == 0);
    CHECK(strcmp(queue_type_name(-1), "unknown") == 0);
    CHECK(strcmp(queue_priority_name(3), "unknown") == 0);
    CHECK(strcmp(queue_state_name(QUEUE_STATE_UNCERTAIN), "uncertain") == 0);
    CHECK(strcmp(queue_type_name(QUEUE_TYPE_TEMPLATE), "template") == 0);
    CHECK(queue_state_parse("unknown") == -1 && queue_state_parse(NULL) == -1);
    CHECK(queue_type_parse("TEXT") == -1 && queue_priority_parse("") == -1);
    CHECK(!queue_state_is_final(QUEUE_STATE_QUEUED) && !queue_state_is_final(QUEUE_STATE_SENDING));
    CHECK(!queue_state_is_final(QUEUE_STATE_RETRYING) && queue_state_is_final(QUEUE_STATE_SENT));
    CHECK(queue_state_is_final(QUEUE_STATE_UNCERTAIN) && !queue_state_is_final(0));
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK(strcmp(queue_strerror(codes[i]), "unknown error") != 0);
    CHECK(strcmp(queue_strerror(-29999), "unknown error") == 0);
    CHECK(strcmp(queue_strerror(5), "unknown error") == 0);
    CHECK(queue__err_map(MDB_MAP_FULL) == QUEUE_EFULL);
    CHECK(queue__err_map(MDB_CORRUPTED) == QUEUE_ECORRUPT);
    CHECK(queue__err_map(MDB_INVALID) == QUEUE_EFORMAT);
    CHECK(queue__err_map(MDB_VERSION_MISMATCH) == QUEUE_EFORMAT);
    CHECK(queue__err_map(EIO) == -EIO && queue__err_map(ENOSPC) == -ENOSPC);
    CHECK(queue__err_map(MDB_NOTFOUND) == QUEUE_ENOTFOUND);
    CHECK(queue__err_map(QUEUE_ELOCKED) == QUEUE_ELOCKED && queue__err_map(-ENOMEM) == -ENOMEM);
}

/* A scan callback that reads: nested reads must work. */
typedef struct nested {
    queue_t *q;
    size_t n;
} nested_t;

static int nested_cb(const queue_due_entry_t *e, void *user)
{
    nested_t *nd = user;
    queue_job_t g;
    char *body;
    size_t len;
    uint64_t c[QUEUE_STATE_MAX + 1];
    CHECK_OK(queue_job_get(nd->q, e->id, &g));
    CHECK(g.id == e->id && g.next_attempt_at == e->due);
    queue_job_clear(&g);
    CHECK_OK(queue_job_body(nd->q, e->id, &body, &len));
    CHECK(len == 2);
    free(body);
    CHECK_OK(queue_counts(nd->q, c));
    nd->n++;
    return 0;
}

static void t_nested_read(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    nested_t nd = {q, 0};
    CHECK(b != NULL);
    for (int i = 0; i < 10; i++) {
        queue_job_t j = job_make(queue_id_next(q), 10.0 - i);
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == i);
    }
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_due_scan(q, 0, 0, INFINITY, 100, nested_cb, &nd));
    CHECK(nd.n == 10);
    queue_batch_free(b);
    queue_close(q);
}

/* --- concurrency --------------------------------------------------------- */

enum { CC_BATCHES = 150, CC_PER = 100 };

typedef struct cc {
    queue_t *q;
    uint64_t *ids;           /* allocated by the main ("loop") thread */
    atomic_size_t committed; /* jobs whose batch has committed */
    atomic_int error;
} cc_t;

static void *cc_writer(void *arg)
{
    cc_t *cc = arg;
    queue_batch_t *b = queue_batch_new();
    char body[600];
    memset(body, 'b', sizeof body);
    if (b == NULL) {
        atomic_store(&cc->error, -ENOMEM);
        return NULL;
    }
    for (size_t i = 0; i < CC_BATCHES; i++) {
        size_t base = i * CC_PER;
        queue_batch_reset(b);
        for (size_t k = 0; k < CC_PER; k++) {
            queue_job_t j = job_make(cc->ids[base + k], (double)((base + k) % 997));
            if (queue_batch_add_job(b, &j, body, sizeof body) < 0)
                atomic_store(&cc->error, 1);
        }
        /* Move some earlier jobs along. */
        for (size_t k = 0; base > 0 && k < CC_PER / 4; k++) {
            queue_update_t u;
            memset(&u, 0, sizeof u);
            u.id = cc->ids[base - CC_PER + k * 4];
            u.state = k % 2 ? QUEUE_STATE_SENT : QUEUE_STATE_SENDING;
            u.next_attempt_at = (double)k;
            u.wamid = "wamid.c";
            if (queue_batch_add_update(b, &u) < 0)
                atomic_store(&cc->error, 2);
        }
        int rc = queue_batch_commit(cc->q, b);
        if (rc != 0) {
            atomic_store(&cc->error, rc);
            break;
        }
        atomic_store(&cc->committed, base + CC_PER);
    }
    queue_batch_free(b);
    return NULL;
}

typedef struct order_chk {
    uint64_t last_ms, last_id;
    size_t n;
    bool bad;
} order_chk_t;

static int order_cb(const queue_due_entry_t *e, void *user)
{
    order_chk_t *o = user;
    uint64_t ms = queue__due_ms(e->due);
    if (o->n > 0 && (ms < o->last_ms || (ms == o->last_ms && e->id <= o->last_id)))
        o->bad = true;
    if (!queue__state_is_due(e->state) || e->to == NULL || strcmp(e->to, "+15551234567") != 0)
        o->bad = true;
    o->last_ms = ms;
    o->last_id = e->id;
    o->n++;
    return 0;
}

static void t_concurrent(void)
{
    /* A small map so that growth (exclusive lock) happens under reads. */
    queue_options_t opt = {256 << 10, 1u << 30, 0, 0};
    cc_t cc;
    pthread_t th;
    uint64_t seed = 12345, c[QUEUE_STATE_MAX + 1];
    size_t reads = 0, scans = 0, map;

    memset(&cc, 0, sizeof cc);
    cc.q = open_q(&opt);
    cc.ids = malloc(sizeof(uint64_t) * CC_BATCHES * CC_PER);
    CHECK(cc.ids != NULL);
    for (size_t i = 0; i < (size_t)CC_BATCHES * CC_PER; i++)
        cc.ids[i] = queue_id_next(cc.q);
    atomic_init(&cc.committed, 0);
    atomic_init(&cc.error, 0);
    CHECK(pthread_create(&th, NULL, cc_writer, &cc) == 0);
    for (;;) {
        size_t done = atomic_load(&cc.committed);
        order_chk_t o;
        uint64_t total = 0;

        if (done > 0) {
            queue_job_t g;
            size_t i = rnd(&seed) % done;
            CHECK_OK(queue_job_get(cc.q, cc.ids[i], &g));
            CHECK(g.id == cc.ids[i] && g.to != NULL);
            queue_job_clear(&g);
            reads++;
        }
        memset(&o, 0, sizeof o);
        CHECK_OK(queue_due_scan(cc.q, (double)(rnd(&seed) % 500), 0, INFINITY, 500, order_cb, &o));
        CHECK(!o.bad);
        scans++;
        CHECK_OK(queue_counts(cc.q, c));
        for (int s = 1; s <= QUEUE_STATE_MAX; s++)
            total += c[s];
        CHECK(total >= done && total <= (uint64_t)CC_BATCHES * CC_PER);
        if (done == (size_t)CC_BATCHES * CC_PER || atomic_load(&cc.error) != 0)
            break;
    }
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_RC(atomic_load(&cc.error), 0);
    CHECK_OK(queue_space(cc.q, &map, NULL));
    CHECK(map > (size_t)(256 << 10)); /* it did grow */
    counts_of(cc.q, c);
    CHECK(c[QUEUE_STATE_QUEUED] + c[QUEUE_STATE_SENDING] + c[QUEUE_STATE_SENT] ==
          (uint64_t)CC_BATCHES * CC_PER);
    CHECK(reads > 0 && scans > 0);
    free(cc.ids);
    queue_close(cc.q);
}

/* --- campaigns ------------------------------------------------------------ */

typedef struct ids {
    size_t n;
    uint64_t id[64];
    int state[64];
} ids_t;

static int ids_cb(const queue_job_t *j, void *user)
{
    ids_t *x = user;
    CHECK(x->n < 64);
    CHECK(j->campaign != NULL);
    x->id[x->n] = j->id;
    x->state[x->n] = j->state;
    x->n++;
    return 0;
}

static size_t camp_list(queue_t *q, const char *name, int state, uint64_t after, size_t limit,
                        ids_t *x, bool *more)
{
    memset(x, 0, sizeof *x);
    CHECK_OK(queue_campaign_jobs(q, name, state, after, limit, ids_cb, x, more));
    return x->n;
}

/* Counters and indexes follow submits and state changes, in the same txn. */
static void t_campaign(void)
{
    queue_t *q = open_q(NULL);
    uint64_t c[QUEUE_STATE_MAX + 1], ids[10];
    queue_batch_t *b = queue_batch_new();
    ids_t x;
    bool more;

    CHECK(b != NULL);
    /* 10 jobs: 0..5 in "spring", 6..7 in "spring2" (a name with "spring"
     * as prefix), 8..9 without a campaign. */
    for (int i = 0; i < 10; i++) {
        queue_job_t j = job_make(queue_id_next(q), 10.0 + i);
        j.campaign = i < 6 ? "spring" : i < 8 ? "spring2" : NULL;
        ids[i] = j.id;
        CHECK(queue_batch_add_job(b, &j, "{}", 2) >= 0);
    }
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_free(b);

    CHECK_RC(queue_campaign_counts(q, "nope", c), QUEUE_ENOTFOUND);
    CHECK_RC(queue_campaign_counts(q, "", c), QUEUE_EINVAL);
    CHECK_OK(queue_campaign_counts(q, "spring", c));
    CHECK(c[0] == 6 && c[QUEUE_STATE_QUEUED] == 6);
    CHECK_OK(queue_campaign_counts(q, "spring2", c));
    CHECK(c[0] == 2 && c[QUEUE_STATE_QUEUED] == 2);

    CHECK(update_one(q, ids[0], QUEUE_STATE_SENDING, 10.0, NULL, NULL) == 0);
    CHECK(update_one(q, ids[0], QUEUE_STATE_SENT, 0, "wamid.1", NULL) == 0);
    CHECK(update_one(q, ids[1], QUEUE_STATE_FAILED, 0, NULL, NULL) == 0);
    CHECK(update_one(q, ids[2], QUEUE_STATE_RETRYING, 50.0, NULL, NULL) == 0);
    CHECK(update_one(q, ids[8], QUEUE_STATE_SENT, 0, NULL, NULL) == 0); /* no campaign */
    CHECK_OK(queue_campaign_counts(q, "spring", c));
    CHECK(c[0] == 6);
    CHECK(c[QUEUE_STATE_QUEUED] == 3 && c[QUEUE_STATE_SENT] == 1 && c[QUEUE_STATE_FAILED] == 1 &&
          c[QUEUE_STATE_RETRYING] == 1 && c[QUEUE_STATE_SENDING] == 0);

    /* Listing: all, by state, paginated with `after`, `more`. */
    CHECK(camp_list(q, "spring", 0, 0, 100, &x, &more) == 6 && !more);
    for (int i = 0; i < 6; i++)
        CHECK(x.id[i] == ids[i]);
    CHECK(camp_list(q, "spring", 0, 0, 4, &x, &more) == 4 && more);
    CHECK(camp_list(q, "spring", 0, x.id[3], 4, &x, &more) == 2 && !more);
    CHECK(x.id[0] == ids[4] && x.id[1] == ids[5]);
    CHECK(camp_list(q, "spring", 0, 0, 6, &x, &more) == 6 && !more);
    CHECK(camp_list(q, "spring", QUEUE_STATE_QUEUED, 0, 100, &x, &more) == 3);
    CHECK(x.id[0] == ids[3] && x.id[1] == ids[4] && x.id[2] == ids[5]);
    CHECK(camp_list(q, "spring", QUEUE_STATE_QUEUED, ids[3], 1, &x, &more) == 1 && more);
    CHECK(x.id[0] == ids[4]);
    CHECK(camp_list(q, "spring", QUEUE_STATE_SENT, 0, 100, &x, &more) == 1 && x.id[0] == ids[0]);
    CHECK(x.state[0] == QUEUE_STATE_SENT);
    CHECK(camp_list(q, "spring", QUEUE_STATE_CANCELLED, 0, 100, &x, &more) == 0);
    CHECK(camp_list(q, "spring2", 0, 0, 100, &x, &more) == 2);
    CHECK(x.id[0] == ids[6] && x.id[1] == ids[7]);
    CHECK(camp_list(q, "sprin", 0, 0, 100, &x, &more) == 0);
    CHECK(camp_list(q, "nope", 0, 0, 100, &x, &more) == 0);

    /* Crash recovery moves campaign jobs too, and the counts survive a
     * reopen. */
    CHECK(update_one(q, ids[3], QUEUE_STATE_SENDING, 10.0, NULL, NULL) == 0);
    queue_close(q);
    q = open_q(NULL);
    CHECK_OK(recover(q, true, 100.0, 0x80, NULL));
    CHECK_OK(queue_campaign_counts(q, "spring", c));
    CHECK(c[QUEUE_STATE_UNCERTAIN] == 1 && c[QUEUE_STATE_QUEUED] == 2 && c[0] == 6);
    CHECK(camp_list(q, "spring", QUEUE_STATE_UNCERTAIN, 0, 100, &x, &more) == 1);
    CHECK(x.id[0] == ids[3]);
    queue_close(q);
}

/* Many campaigns in one txn overflow the per-txn cache; counts stay exact. */
static void t_campaign_many(void)
{
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    uint64_t c[QUEUE_STATE_MAX + 1];
    char name[32];

    CHECK(b != NULL);
    for (int i = 0; i < 500; i++) {
        queue_job_t j = job_make(queue_id_next(q), 1.0);
        snprintf(name, sizeof name, "c%d", i % 100);
        j.campaign = name;
        CHECK(queue_batch_add_job(b, &j, "{}", 2) >= 0);
    }
    for (uint64_t id = 1; id <= 500; id += 2) {
        queue_update_t u;
        memset(&u, 0, sizeof u);
        u.id = id;
        u.state = QUEUE_STATE_CANCELLED;
        CHECK(queue_batch_add_update(b, &u) >= 0);
    }
    CHECK_OK(queue_batch_commit(q, b));
    queue_batch_free(b);
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "c%d", i);
        CHECK_OK(queue_campaign_counts(q, name, c));
        CHECK(c[0] == 5);
        /* ids 1..500 in order: job id k has campaign (k-1) % 100; odd ids
         * were cancelled, i.e. even campaign numbers. */
        CHECK(c[QUEUE_STATE_CANCELLED] == (i % 2 == 0 ? 5u : 0u));
    }
    queue_close(q);
}

/* --- index churn ---------------------------------------------------------
 * The indexes are written through cursors kept in the write txn (one per
 * index, one per campaign state run): many state changes per batch, in
 * random order, moving keys within and between runs, page splits and
 * merges included. After each batch every index must equal a model. */

enum { CH_JOBS = 3000, CH_CAMPS = 3, CH_KEYS = 40, CH_BATCHES = 25, CH_PER = 600 };

typedef struct ch_model {
    uint8_t state[CH_JOBS + 1];
    double due[CH_JOBS + 1];
    uint64_t seen[CH_JOBS + 1]; /* scan visits in this check */
    uint64_t visits;
    int bad;
    double last_due;
    uint64_t last_id;
} ch_model_t;

static const char *ch_camp(uint64_t id)
{
    static const char *names[CH_CAMPS] = {"churn-a", "churn-b", "churn-c"};
    return id % 7 == 0 ? NULL : names[id % CH_CAMPS];
}

static int ch_due_cb(const queue_due_entry_t *e, void *user)
{
    ch_model_t *m = user;
    if (e->id == 0 || e->id > CH_JOBS || !queue__state_is_due(m->state[e->id]) ||
        queue__due_ms(m->due[e->id]) != queue__due_ms(e->due) ||
        (queue__due_ms(e->due) == queue__due_ms(m->last_due) && e->id <= m->last_id) ||
        queue__due_ms(e->due) < queue__due_ms(m->last_due))
        m->bad++;
    m->last_due = e->due;
    m->last_id = e->id;
    m->visits++;
    return 0;
}

static int ch_camp_cb(const queue_job_t *j, void *user)
{
    ch_model_t *m = user;
    if (j->id == 0 || j->id > CH_JOBS || m->seen[j->id]++ != 0 || j->id <= m->last_id)
        m->bad++;
    m->last_id = j->id;
    m->visits++;
    return 0;
}

static int ch_order_cb(const queue_due_entry_t *e, void *user)
{
    ch_model_t *m = user;
    if (e->id == 0 || e->id > CH_JOBS || !queue__state_is_due(m->state[e->id]) ||
        e->id <= m->last_id)
        m->bad++;
    m->last_id = e->id;
    m->visits++;
    return 0;
}

static void ch_check(queue_t *q, ch_model_t *m)
{
    uint64_t n_due = 0, c[QUEUE_STATE_MAX + 1];
    char to[32], okey[QUEUE_ORDER_KEY_MAX + 1];

    for (uint64_t id = 1; id <= CH_JOBS; id++)
        n_due += queue__state_is_due(m->state[id]);
    m->bad = 0;
    m->visits = 0;
    m->last_due = -1;
    m->last_id = 0;
    CHECK_OK(queue_due_scan(q, -1, 0, INFINITY, CH_JOBS + 10, ch_due_cb, m));
    CHECK(m->bad == 0 && m->visits == n_due);
    for (int ci = 0; ci < CH_CAMPS; ci++) {
        const char *name = ch_camp((uint64_t)ci + 1 == 7 ? 8 : (uint64_t)ci + 1);
        CHECK_OK(queue_campaign_counts(q, name, c));
        for (int st = 1; st <= QUEUE_STATE_MAX; st++) {
            uint64_t want = 0;
            bool more = true;
            for (uint64_t id = 1; id <= CH_JOBS; id++)
                want += ch_camp(id) == name && m->state[id] == st;
            memset(m->seen, 0, sizeof m->seen);
            m->bad = 0;
            m->visits = 0;
            m->last_id = 0;
            while (more) {
                uint64_t before = m->visits;
                CHECK_OK(queue_campaign_jobs(q, name, st, m->last_id, 1000, ch_camp_cb, m, &more));
                CHECK(m->visits > before || !more);
            }
            for (uint64_t id = 1; id <= CH_JOBS; id++)
                if (m->seen[id] && (ch_camp(id) != name || m->state[id] != st))
                    m->bad++;
            CHECK(m->bad == 0 && m->visits == want && c[st] == want);
        }
    }
    for (int k = 0; k < CH_KEYS; k++) {
        uint64_t want = 0;
        snprintf(to, sizeof to, "+1555000%04d", k);
        CHECK(queue_order_key(NULL, "1000001", to, okey, sizeof okey) > 0);
        for (uint64_t id = 1; id <= CH_JOBS; id++)
            want += id % CH_KEYS == (uint64_t)k && queue__state_is_due(m->state[id]);
        m->bad = 0;
        m->visits = 0;
        m->last_id = 0;
        CHECK_OK(queue_order_scan(q, okey, 0, UINT64_MAX, CH_JOBS, ch_order_cb, m));
        CHECK(m->bad == 0 && m->visits == want);
    }
}

static void t_index_churn(void)
{
    static ch_model_t m;
    static const uint8_t next[][3] = {
        /* from state: the states it may move to */
        [QUEUE_STATE_QUEUED] = {QUEUE_STATE_SENDING, QUEUE_STATE_CANCELLED, QUEUE_STATE_QUEUED},
        [QUEUE_STATE_SENDING] = {QUEUE_STATE_SENT, QUEUE_STATE_RETRYING, QUEUE_STATE_FAILED},
        [QUEUE_STATE_RETRYING] = {QUEUE_STATE_SENDING, QUEUE_STATE_EXPIRED, QUEUE_STATE_QUEUED},
        [QUEUE_STATE_SENT] = {QUEUE_STATE_SENT, QUEUE_STATE_SENT, QUEUE_STATE_SENT},
        [QUEUE_STATE_FAILED] = {QUEUE_STATE_QUEUED, QUEUE_STATE_FAILED, QUEUE_STATE_FAILED},
        [QUEUE_STATE_EXPIRED] = {QUEUE_STATE_EXPIRED, QUEUE_STATE_EXPIRED, QUEUE_STATE_EXPIRED},
        [QUEUE_STATE_CANCELLED] = {QUEUE_STATE_QUEUED, QUEUE_STATE_CANCELLED,
                                   QUEUE_STATE_CANCELLED},
    };
    queue_t *q = open_q(NULL);
    queue_batch_t *b = queue_batch_new();
    uint64_t seed = 12345;
    char to[CH_JOBS + 1][32], camp[16];

    CHECK(b != NULL);
    memset(&m, 0, sizeof m);
    for (uint64_t id = 1; id <= CH_JOBS; id++) {
        queue_job_t j = job_make(queue_id_next(q), 100.0 + (double)(rnd(&seed) % 50));
        CHECK(j.id == id);
        snprintf(to[id], sizeof to[id], "+1555000%04d", (int)(id % CH_KEYS));
        j.to = to[id];
        if (ch_camp(id) != NULL) {
            snprintf(camp, sizeof camp, "%s", ch_camp(id));
            j.campaign = camp;
        }
        m.state[id] = QUEUE_STATE_QUEUED;
        m.due[id] = j.next_attempt_at;
        CHECK(queue_batch_add_job(b, &j, "{}", 2) >= 0);
    }
    CHECK_OK(queue_batch_commit(q, b));
    ch_check(q, &m);
    for (int bi = 0; bi < CH_BATCHES; bi++) {
        queue_batch_reset(b);
        for (int k = 0; k < CH_PER; k++) {
            /* Mostly ascending ids (as a dispatch finishes them), some not. */
            uint64_t id = k % 5 == 0 ? 1 + rnd(&seed) % CH_JOBS
                                     : 1 + ((uint64_t)bi * CH_PER + (uint64_t)k) % CH_JOBS;
            uint8_t st = next[m.state[id]][rnd(&seed) % 3];
            queue_update_t u;
            memset(&u, 0, sizeof u);
            u.id = id;
            u.state = st;
            u.attempts = 1;
            u.updated_at = 1700000000.0 + bi + k / 1000.0;
            u.next_attempt_at =
                queue__state_is_due(st) && rnd(&seed) % 2 ? m.due[id] + 1.0 : m.due[id];
            CHECK(queue_batch_add_update(b, &u) >= 0);
            m.state[id] = st;
            if (queue__state_is_due(st))
                m.due[id] = u.next_attempt_at;
        }
        CHECK_OK(queue_batch_commit(q, b));
        for (int k = 0; k < CH_PER; k++)
            CHECK(queue_batch_result(b, (size_t)k, NULL) == 0);
        ch_check(q, &m);
    }
    queue_batch_free(b);
    queue_close(q);
}

/* Conditional updates (only_from) and expiry replacement. */
static void t_conditional(void)
{
    queue_t *q = open_q(NULL);
    queue_job_t j = job_make(queue_id_next(q), 5.0), g;
    queue_batch_t *b = queue_batch_new();
    queue_update_t u;

    j.campaign = "k";
    CHECK(b != NULL);
    CHECK_RC(put_one(q, &j, NULL), 0);
    memset(&u, 0, sizeof u);
    u.id = j.id;
    u.state = QUEUE_STATE_SENT;
    CHECK(queue_batch_add_update(b, &u) == 0);
    /* Cancel only if still queued/retrying: the earlier op of the same
     * batch made it sent, so this one must not apply. */
    u.state = QUEUE_STATE_CANCELLED;
    u.only_from = QUEUE_STATE_BIT(QUEUE_STATE_QUEUED) | QUEUE_STATE_BIT(QUEUE_STATE_RETRYING);
    CHECK(queue_batch_add_update(b, &u) == 1);
    /* Requeue only from sent, with a new expiry. */
    u.state = QUEUE_STATE_QUEUED;
    u.only_from = QUEUE_STATE_BIT(QUEUE_STATE_SENT);
    u.next_attempt_at = 7.0;
    u.expires_at = 1e9;
    CHECK(queue_batch_add_update(b, &u) == 2);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_RC(queue_batch_result(b, 0, NULL), 0);
    CHECK_RC(queue_batch_result(b, 1, NULL), QUEUE_ESTATE);
    CHECK_RC(queue_batch_result(b, 2, NULL), 0);
    queue_batch_free(b);
    CHECK_OK(queue_job_get(q, j.id, &g));
    CHECK(g.state == QUEUE_STATE_QUEUED && g.expires_at == 1e9 && g.next_attempt_at == 7.0);
    queue_job_clear(&g);
    {
        uint64_t c[QUEUE_STATE_MAX + 1];
        CHECK_OK(queue_campaign_counts(q, "k", c));
        CHECK(c[QUEUE_STATE_QUEUED] == 1 && c[0] == 1);
    }
    queue_close(q);
}

/* A schema-1 environment (no campaign index) gets one built at open. */
static void t_campaign_migrate(void)
{
    queue_t *q = open_q(NULL);
    unsigned char v1[4] = {0, 0, 0, 1};
    MDB_val k = {6, "schema"}, v = {4, v1};
    uint64_t c[QUEUE_STATE_MAX + 1];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ids_t x;

    for (int i = 0; i < 5; i++) {
        queue_job_t j = job_make(queue_id_next(q), 1.0);
        j.campaign = i < 3 ? "old" : NULL;
        CHECK_RC(put_one(q, &j, NULL), 0);
    }
    CHECK(update_one(q, 2, QUEUE_STATE_FAILED, 0, NULL, NULL) == 0);
    queue_close(q);
    /* Make it look like schema 1: version 1, campaign databases empty. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, 0, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_CAMP, 0, &dbi) == 0);
    CHECK(mdb_drop(txn, dbi, 0) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_CJOBS, 0, &dbi) == 0);
    CHECK(mdb_drop(txn, dbi, 0) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_CSTATE, 0, &dbi) == 0);
    CHECK(mdb_drop(txn, dbi, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);

    q = open_q(NULL);
    CHECK_OK(queue_campaign_counts(q, "old", c));
    CHECK(c[0] == 3 && c[QUEUE_STATE_QUEUED] == 2 && c[QUEUE_STATE_FAILED] == 1);
    CHECK(camp_list(q, "old", QUEUE_STATE_FAILED, 0, 10, &x, NULL) == 1 && x.id[0] == 2);
    CHECK(camp_list(q, "old", 0, 0, 10, &x, NULL) == 3);
    queue_close(q);
    /* The schema was raised: the rebuild runs once. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, MDB_RDONLY, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    CHECK(mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size == 4);
    CHECK(queue__be32_get(v.mv_data) == QUEUE_SCHEMA_VERSION);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

/* --- order scan ranges -------------------------------------------------- */

typedef struct os_seen {
    uint64_t ids[16];
    size_t n;
} os_seen_t;

static int os_cb(const queue_due_entry_t *e, void *user)
{
    os_seen_t *o = user;
    if (o->n < 16)
        o->ids[o->n] = e->id;
    o->n++;
    return 0;
}

static size_t os_scan(queue_t *q, const char *key, uint64_t after, uint64_t before, size_t limit,
                      os_seen_t *o)
{
    memset(o, 0, sizeof *o);
    CHECK_OK(queue_order_scan(q, key, after, before, limit, os_cb, o));
    return o->n;
}

/* queue_order_scan visits exactly the key's jobs with after < id < before,
 * by id, skipping finished ones; an empty range (the refill's usual case: a
 * key with no older job) visits nothing. */
static void t_order_scan(void)
{
    queue_t *q = open_q(NULL);
    char key[QUEUE_ORDER_KEY_MAX + 1], other[QUEUE_ORDER_KEY_MAX + 1];
    os_seen_t o;

    for (uint64_t id = 1; id <= 6; id++) {
        queue_job_t j = job_make(id, 1700000100.0 - (double)id); /* due order != id order */
        j.to = id == 6 ? "+15559999999" : "+15551234567";
        CHECK_RC(put_one(q, &j, NULL), 0);
    }
    CHECK_OK(update_one(q, 3, QUEUE_STATE_SENT, 0, "wamid.3", NULL)); /* off the index */
    CHECK(queue_order_key(NULL, "1000001", "+15551234567", key, sizeof key) > 0);
    CHECK(queue_order_key(NULL, "1000001", "+15559999999", other, sizeof other) > 0);

    CHECK(os_scan(q, key, 0, 1, 10, &o) == 0); /* nothing before the first */
    CHECK(os_scan(q, key, 0, 2, 10, &o) == 1 && o.ids[0] == 1);
    CHECK(os_scan(q, key, 0, 5, 10, &o) == 3 && o.ids[0] == 1 && o.ids[1] == 2 && o.ids[2] == 4);
    CHECK(os_scan(q, key, 2, 5, 10, &o) == 1 && o.ids[0] == 4); /* 3 is sent */
    CHECK(os_scan(q, key, 0, UINT64_MAX, 2, &o) == 2);          /* limit */
    CHECK(os_scan(q, key, 5, UINT64_MAX, 10, &o) == 0);         /* past the key's last */
    CHECK(os_scan(q, other, 0, 6, 10, &o) == 0);                /* its only job is 6 */
    CHECK(os_scan(q, other, 0, 7, 10, &o) == 1 && o.ids[0] == 6);
    CHECK(os_scan(q, "1000001:15550000000", 0, UINT64_MAX, 10, &o) == 0); /* unknown key */
    queue_close(q);
}

/* Sets bit id in *user for each entry marked unreadable; such an entry has
 * only its id and due. */
static int nested_problem_cb(const queue_due_entry_t *e, void *user)
{
    size_t *bits = user;
    if (e->problem != 0) {
        CHECK(e->problem == QUEUE_ECORRUPT && e->phone_number_id == NULL && e->state == 0);
        *bits |= (size_t)1 << e->id;
    } else {
        CHECK(e->phone_number_id != NULL && strcmp(e->phone_number_id, "1000001") == 0);
    }
    return 0;
}

/* A write txn on the store's environment behind its back (the store is
 * closed), as damage or another build would leave it. */
typedef struct raw {
    MDB_env *env;
    MDB_txn *txn;
} raw_t;

static void raw_begin(raw_t *r)
{
    CHECK(mdb_env_create(&r->env) == 0);
    CHECK(mdb_env_set_maxdbs(r->env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(r->env, g_dir, 0, 0600) == 0);
    CHECK(mdb_txn_begin(r->env, NULL, 0, &r->txn) == 0);
}

static MDB_dbi raw_db(raw_t *r, const char *name)
{
    MDB_dbi dbi;
    CHECK(mdb_dbi_open(r->txn, name, 0, &dbi) == 0);
    return dbi;
}

static void raw_commit(raw_t *r)
{
    CHECK(mdb_txn_commit(r->txn) == 0);
    mdb_env_close(r->env);
}

/* Rewrites (or with ver 0 deletes) job `id`'s record behind the store's
 * back, as damage or a newer build would leave it. The store is closed. */
static void record_damage(uint64_t id, unsigned char ver)
{
    unsigned char kb[8], buf[4096];
    MDB_val k = {sizeof kb, kb}, v;
    raw_t r;
    MDB_dbi dbi;

    queue__be64_put(kb, id);
    raw_begin(&r);
    dbi = raw_db(&r, QUEUE__DB_JOBS);
    if (ver == 0) {
        CHECK(mdb_del(r.txn, dbi, &k, NULL) == 0);
    } else {
        CHECK(mdb_get(r.txn, dbi, &k, &v) == 0 && v.mv_size <= sizeof buf);
        memcpy(buf, v.mv_data, v.mv_size);
        buf[0] = ver;
        v.mv_data = buf;
        CHECK(mdb_put(r.txn, dbi, &k, &v, 0) == 0);
    }
    raw_commit(&r);
}

static int campaign_ids_cb(const queue_job_t *job, void *user)
{
    os_seen_t *o = user;
    if (o->n < 16)
        o->ids[o->n] = job->id;
    o->n++;
    return 0;
}

/* Jobs whose record cannot be read (a newer record version, a record gone
 * while the indexes name it) do not stop the walks: the due scan hands them
 * over marked (problem) and goes on, the order scan and the campaign walk
 * leave them out. Before, the first one ended each walk with ECORRUPT. */
static void t_damaged(void)
{
    queue_t *q = open_q(NULL);
    char key[QUEUE_ORDER_KEY_MAX + 1];
    collect_t c;
    os_seen_t o;
    size_t bad = 0;

    for (uint64_t id = 1; id <= 6; id++) {
        queue_job_t j = job_make(id, 1700000100.0 + (double)id);
        j.campaign = "c";
        CHECK_RC(put_one(q, &j, NULL), 0);
    }
    queue_close(q);
    record_damage(2, 9);
    record_damage(4, 0);
    q = open_q(NULL);
    CHECK(scan(q, 0, 0, INFINITY, 100, &c) == 6);
    for (size_t i = 0; i < c.n; i++)
        CHECK(c.ids[i] == i + 1 && c.dues[i] == 1700000100.0 + (double)(i + 1));
    memset(&c, 0, sizeof c);
    CHECK_OK(queue_due_scan(q, 0, 0, INFINITY, 100, nested_problem_cb, &bad));
    CHECK(bad == ((1u << 2) | (1u << 4)));
    CHECK(queue_order_key(NULL, "1000001", "+15551234567", key, sizeof key) > 0);
    CHECK(os_scan(q, key, 0, UINT64_MAX, 10, &o) == 4);
    CHECK(o.ids[0] == 1 && o.ids[1] == 3 && o.ids[2] == 5 && o.ids[3] == 6);
    memset(&o, 0, sizeof o);
    CHECK_OK(queue_campaign_jobs(q, "c", 0, 0, 10, campaign_ids_cb, &o, NULL));
    CHECK(o.n == 4 && o.ids[0] == 1 && o.ids[1] == 3 && o.ids[2] == 5 && o.ids[3] == 6);
    /* The records' damage leaves index and counters agreeing; a state
     * change keeps them so. */
    {
        queue_due_count_t dc;
        CHECK_OK(queue_due_check(q, &dc));
        CHECK(dc.due_entries == 6 && dc.unfinished == 6 && dc.unreadable == 0 && dc.agree);
        CHECK_OK(update_one(q, 5, QUEUE_STATE_SENDING, 0, NULL, NULL));
        CHECK_OK(update_one(q, 1, QUEUE_STATE_SENDING, 0, NULL, NULL));
        CHECK_OK(update_one(q, 1, QUEUE_STATE_SENT, 0, "w", NULL));
        CHECK_OK(queue_due_check(q, &dc));
        CHECK(dc.due_entries == 5 && dc.unfinished == 5 && dc.agree);
    }
    queue_close(q);
}

/* Deletes key (a, alen) + (b, blen) from database `db`; it must exist. */
static void raw_del(raw_t *r, const char *db, const void *a, size_t alen, const void *b,
                    size_t blen)
{
    unsigned char kb[512];
    MDB_val k = {alen + blen, kb};

    CHECK(alen + blen <= sizeof kb);
    memcpy(kb, a, alen);
    if (blen > 0)
        memcpy(kb + alen, b, blen);
    CHECK(mdb_del(r->txn, raw_db(r, db), &k, NULL) == 0);
}

/* The 16-byte key (ms, id) of the due and done indexes. */
static void ms_id_key(unsigned char kb[16], double t, uint64_t id)
{
    queue__be64_put(kb, queue__due_ms(t));
    queue__be64_put(kb + 8, id);
}

/* queue_store_repair rebuilds a damaged store from its records: a due entry
 * lost (job 2; job 9, sending, which the recovery then finds) is put back, a stale one of a deleted
 * record (3) and one of an old due time (6) go, an unreadable record's (4) stays and is counted for
 * the check, a counter that drifted is recounted, a lost order entry (5) and a lost retention entry
 * (7) come back. A second repair finds nothing; the check agrees, also after a reopen. Before,
 * nothing repaired the store: job 2 was never due again and the check disagreed forever. */
static void t_repair(void)
{
    const double due0 = 1700000100.0;
    queue_repair_report_t rep;
    queue_due_count_t dc;
    char key[QUEUE_ORDER_KEY_MAX + 1];
    unsigned char kb[16], idb[8];
    uint64_t c[QUEUE_STATE_MAX + 1];
    size_t klen, bad = 0, purged = 0;
    queue_t *q = open_q(NULL);
    collect_t col;
    os_seen_t o;
    raw_t r;

    for (uint64_t id = 1; id <= 9; id++) {
        queue_job_t j = job_make(id, due0 + (double)id);
        j.campaign = "c";
        CHECK_RC(put_one(q, &j, NULL), 0);
    }
    CHECK_OK(update_one(q, 7, QUEUE_STATE_SENDING, 0, NULL, NULL));
    CHECK_OK(update_one(q, 7, QUEUE_STATE_SENT, 0, "w", NULL));     /* done at 1700000100 */
    CHECK_OK(update_one(q, 9, QUEUE_STATE_SENDING, 0, NULL, NULL)); /* due at 0 */
    queue_close(q);

    klen = queue_order_key(NULL, "1000001", "+15551234567", key, sizeof key);
    CHECK(klen > 0);
    record_damage(3, 0);
    record_damage(4, 9);
    raw_begin(&r);
    ms_id_key(kb, due0 + 2, 2);
    raw_del(&r, QUEUE__DB_DUE, kb, 16, NULL, 0);
    ms_id_key(kb, 0, 9);
    raw_del(&r, QUEUE__DB_DUE, kb, 16, NULL, 0);
    ms_id_key(kb, 1700000100.0, 7);
    raw_del(&r, QUEUE__DB_DONE, kb, 16, NULL, 0);
    queue__be64_put(idb, 5);
    raw_del(&r, QUEUE__DB_ORDER, key, klen + 1, idb, 8);
    {
        MDB_val k = {16, kb}, v = {0, NULL};
        ms_id_key(kb, due0 + 60, 6); /* a second, stale entry of job 6 */
        CHECK(mdb_put(r.txn, raw_db(&r, QUEUE__DB_DUE), &k, &v, 0) == 0);
    }
    {
        MDB_dbi meta = raw_db(&r, QUEUE__DB_META);
        MDB_val k = {sizeof QUEUE__META_COUNTS - 1, QUEUE__META_COUNTS}, v;
        unsigned char cb[8 * QUEUE_STATE_MAX];
        CHECK(mdb_get(r.txn, meta, &k, &v) == 0 && v.mv_size == sizeof cb);
        memcpy(cb, v.mv_data, sizeof cb);
        queue__be64_put(cb, queue__be64_get(cb) + 5); /* queued drifts by 5 */
        v.mv_data = cb;
        CHECK(mdb_put(r.txn, meta, &k, &v, 0) == 0);
    }
    raw_commit(&r);

    q = open_q(NULL);
    CHECK_OK(queue_due_check(q, &dc));
    CHECK(dc.due_entries == 7 && dc.unfinished == 13 && dc.unreadable == 0 && !dc.agree);
    CHECK_OK(queue_store_repair(q, &rep));
    CHECK(rep.records == 8 && rep.unreadable == 1);
    CHECK(rep.due_before == 7 && rep.due_after == 7);
    CHECK(rep.due_added == 2 && rep.due_removed == 2 && rep.due_unreadable == 1);
    CHECK(rep.order_added == 1 && rep.order_removed == 1 && rep.counts_changed);
    CHECK_OK(queue_due_check(q, &dc));
    CHECK(dc.due_entries == 7 && dc.unfinished == 6 && dc.unreadable == 1 && dc.agree);
    counts_of(q, c);
    CHECK(c[QUEUE_STATE_QUEUED] == 5 && c[QUEUE_STATE_SENT] == 1 && c[QUEUE_STATE_SENDING] == 1);
    /* The recovery finds job 9 through the rebuilt index (the daemon
     * repairs before it recovers). */
    {
        size_t n = 0;
        CHECK_OK(recover(q, false, due0 + 100, 0, &n));
        CHECK(n == 1 && get_state(q, 9) == QUEUE_STATE_QUEUED);
    }

    /* Jobs 2 and 9 are due again; the unreadable job 4 is still reported
     * by id. */
    CHECK(scan(q, 0, 0, INFINITY, 100, &col) == 7);
    CHECK(col.ids[0] == 1 && col.ids[1] == 2 && col.ids[2] == 4 && col.ids[3] == 5 &&
          col.ids[4] == 6 && col.ids[5] == 8 && col.ids[6] == 9 && col.dues[1] == due0 + 2);
    CHECK_OK(queue_due_scan(q, 0, 0, INFINITY, 100, nested_problem_cb, &bad));
    CHECK(bad == (1u << 4));
    CHECK(os_scan(q, key, 0, UINT64_MAX, 10, &o) == 6);
    CHECK(o.ids[0] == 1 && o.ids[1] == 2 && o.ids[2] == 5 && o.ids[3] == 6 && o.ids[4] == 8 &&
          o.ids[5] == 9);
    CHECK_OK(queue_campaign_counts(q, "c", c));
    CHECK(c[0] == 7 && c[QUEUE_STATE_QUEUED] == 6 && c[QUEUE_STATE_SENT] == 1);

    /* Nothing left to repair. */
    CHECK_OK(queue_store_repair(q, &rep));
    CHECK(rep.records == 8 && rep.unreadable == 1 && rep.due_before == 7 && rep.due_after == 7);
    CHECK(rep.due_added == 0 && rep.due_removed == 0 && rep.due_unreadable == 1);
    CHECK(rep.order_added == 0 && rep.order_removed == 0 && !rep.counts_changed);
    CHECK_OK(queue_store_repair(q, NULL));

    /* The state machine goes on from the repaired store; job 7 is in the
     * retention index again. */
    CHECK_OK(update_one(q, 2, QUEUE_STATE_SENDING, 0, NULL, NULL));
    CHECK_OK(update_one(q, 2, QUEUE_STATE_SENT, 0, "w2", NULL));
    CHECK_OK(queue_purge(q, INFINITY, 100, &purged, NULL));
    CHECK(purged == 2 && get_state(q, 7) == QUEUE_ENOTFOUND && get_state(q, 2) == QUEUE_ENOTFOUND);
    queue_close(q);
    q = open_q(NULL);
    CHECK_OK(queue_due_check(q, &dc));
    CHECK(dc.due_entries == 6 && dc.unfinished == 5 && dc.unreadable == 1 && dc.agree);
    queue_close(q);
}

/* A campaign record too short to read fails every batch that changes a job
 * of that campaign; the start-up check finds it (before, it agreed: nothing
 * repaired it and those jobs could never change state) and the repair
 * rebuilds it from the job records. */
static void t_camp_damaged(void)
{
    queue_due_count_t dc;
    queue_update_t u;
    queue_batch_t *b;
    uint64_t c[QUEUE_STATE_MAX + 1];
    queue_t *q = open_q(NULL);
    raw_t r;

    for (uint64_t id = 1; id <= 3; id++) {
        queue_job_t j = job_make(id, 1700000100.0);
        j.campaign = id == 3 ? "other" : "c";
        CHECK_RC(put_one(q, &j, NULL), 0);
    }
    CHECK_OK(queue_due_check(q, &dc));
    CHECK(dc.agree && dc.camp_unreadable == 0);
    queue_close(q);
    raw_begin(&r);
    {
        MDB_val k = {1, "c"}, v = {3, "abc"};
        CHECK(mdb_put(r.txn, raw_db(&r, QUEUE__DB_CAMP), &k, &v, 0) == 0);
    }
    raw_commit(&r);

    q = open_q(NULL);
    CHECK_OK(queue_due_check(q, &dc));
    CHECK(dc.camp_unreadable == 1 && dc.due_entries == 3 && dc.unfinished == 3 && !dc.agree);
    u = update_make(1, QUEUE_STATE_SENDING, 0, NULL, NULL);
    b = queue_batch_new();
    CHECK(b != NULL);
    CHECK_RC(queue_batch_add_update(b, &u), 0);
    CHECK_RC(queue_batch_commit(q, b), QUEUE_ECORRUPT);
    queue_batch_free(b);
    CHECK_OK(queue_store_repair(q, NULL));
    CHECK_OK(queue_due_check(q, &dc));
    CHECK(dc.camp_unreadable == 0 && dc.agree);
    CHECK_OK(update_one(q, 1, QUEUE_STATE_SENDING, 0, NULL, NULL));
    CHECK_OK(queue_campaign_counts(q, "c", c));
    CHECK(c[0] == 2 && c[QUEUE_STATE_QUEUED] == 1 && c[QUEUE_STATE_SENDING] == 1);
    CHECK_OK(queue_campaign_counts(q, "other", c));
    CHECK(c[0] == 1 && c[QUEUE_STATE_QUEUED] == 1);
    queue_close(q);
}

/* A store that was lowered below its size by map_size_max still lets its
 * jobs finish: the map may grow above the configured maximum for state
 * changes (new jobs keep to it). Before, it was held at exactly the pages
 * in use and the first batch of state changes failed full. */
static void t_map_lowered(void)
{
    queue_options_t small = {.map_size_max = (size_t)4 << 20};
    char path[PATH_MAX];
    queue_t *q = open_q(NULL), *q2 = NULL;
    static char body[16384];
    queue_batch_t *b;
    struct stat st;
    uint64_t id;

    memset(body, 'x', sizeof body - 1);
    for (int n = 0; n < 8; n++) {
        b = queue_batch_new();
        CHECK(b != NULL);
        for (int i = 0; i < 64; i++) {
            queue_job_t j = job_make(queue_id_next(q), 1700000100.0);
            CHECK(queue_batch_add_job(b, &j, body, sizeof body - 1) == i);
        }
        CHECK_OK(queue_batch_commit(q, b));
        queue_batch_free(b);
    }
    id = queue_id_next(q) - 1;
    queue_close(q);
    snprintf(path, sizeof path, "%s/data.mdb", g_dir);
    CHECK(stat(path, &st) == 0 && st.st_size > ((off_t)6 << 20));

    /* 8 MiB of jobs in a store now limited to 4 MiB: the jobs finish. */
    CHECK_OK(queue_open(g_dir, &small, &q2));
    for (int state = QUEUE_STATE_SENDING; state != 0;
         state = state == QUEUE_STATE_SENDING ? QUEUE_STATE_SENT : 0) {
        b = queue_batch_new();
        CHECK(b != NULL);
        for (uint64_t i = 1; i <= id; i++) {
            queue_update_t u =
                update_make(i, state, 0, state == QUEUE_STATE_SENT ? "w" : NULL, NULL);
            CHECK(queue_batch_add_update(b, &u) == (int)(i - 1));
        }
        CHECK_OK(queue_batch_commit(q2, b));
        for (size_t i = 0; i < id; i++)
            CHECK_RC(queue_batch_result(b, i, NULL), 0);
        queue_batch_free(b);
    }
    queue_close(q2);
}

/* --- runner -------------------------------------------------------------- */

static const qtest_case_t cases[] = {
    {"roundtrip", t_roundtrip},
    {"body", t_body},
    {"reader", t_reader},
    {"ids_reopen", t_ids_reopen},
    {"idem", t_idem},
    {"due", t_due},
    {"counts", t_counts},
    {"recover_requeue", t_recover_requeue},
    {"recover_cancel_mark", t_recover_cancel_mark},
    {"pauses", t_pauses},
    {"recover_uncertain", t_recover_uncertain},
    {"locked", t_locked},
    {"dir_sync", t_dir_sync},
    {"growth", t_growth},
    {"full", t_full},
    {"full_finish", t_full_finish},
    {"low_disk", t_low_disk},
    {"decoder", t_decoder},
    {"schema", t_schema},
    {"updates", t_updates},
    {"batch_api", t_batch_api},
    {"batch_append", t_batch_append},
    {"names", t_names},
    {"nested_read", t_nested_read},
    {"concurrent", t_concurrent},
    {"campaign", t_campaign},
    {"campaign_many", t_campaign_many},
    {"index_churn", t_index_churn},
    {"conditional", t_conditional},
    {"campaign_migrate", t_campaign_migrate},
    {"order_scan", t_order_scan},
    {"damaged", t_damaged},
    {"map_lowered", t_map_lowered},
    {"repair", t_repair},
    {"camp_damaged", t_camp_damaged},
};

int main(int argc, char **argv)
{
    /* argv[0], not /proc/self/exe, which names valgrind under valgrind. */
    if (realpath(argv[0], g_self) == NULL)
        snprintf(g_self, sizeof g_self, "/proc/self/exe");
    if (argc == 3 && strcmp(argv[1], "lock_child") == 0)
        return lock_child(argv[2]);
    return qtest_run(argc, argv, cases, sizeof cases / sizeof cases[0], dir_make);
}
