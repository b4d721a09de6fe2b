/*
 * retention_test.c - unit tests of the done index and the purge of finished
 * jobs (queue/retention.c), and of the schema upgrade (to 3) that builds the
 * index. One binary; the case is argv[1]; each case works in a temp dir of
 * its own, removed when it passes.
 */
#include "queue.h"
#include "queue_int.h"
#include "qtest.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void dir_make(void)
{
    qtest_dir_make("avpr");
}

static queue_t *open_q(void)
{
    queue_t *q = NULL;
    CHECK_OK(queue_open(g_dir, NULL, &q));
    return q;
}

/* Commits `n` queued jobs (keys "<prefix>-<i>" when prefix is not NULL);
 * writes their ids to ids[]. */
static void add_jobs(queue_t *q, size_t n, const char *prefix, uint64_t *ids, size_t body_len)
{
    queue_batch_t *b = queue_batch_new();
    char *body = malloc(body_len + 1);

    CHECK(b != NULL && body != NULL);
    memset(body, 'b', body_len);
    for (size_t i = 0; i < n; i++) {
        queue_job_t j;
        char key[64];
        memset(&j, 0, sizeof j);
        j.id = queue_id_next(q);
        j.state = QUEUE_STATE_QUEUED;
        j.type = QUEUE_TYPE_TEXT;
        j.created_at = j.updated_at = 1000.0;
        j.next_attempt_at = 1000.0;
        j.phone_number_id = "1000001";
        j.to = "+15550001";
        if (prefix != NULL) {
            snprintf(key, sizeof key, "%s-%zu", prefix, i);
            j.idempotency_key = key;
        }
        CHECK(queue_batch_add_job(b, &j, body, body_len) == (int)i);
        ids[i] = j.id;
    }
    CHECK_OK(queue_batch_commit(q, b));
    for (size_t i = 0; i < n; i++)
        CHECK_OK(queue_batch_result(b, i, NULL));
    queue_batch_free(b);
    free(body);
}

/* Moves job `id` to `state` at time `t`. */
static void set_state(queue_t *q, uint64_t id, int state, double t)
{
    queue_batch_t *b = queue_batch_new();
    queue_update_t u;

    CHECK(b != NULL);
    memset(&u, 0, sizeof u);
    u.id = id;
    u.state = (uint8_t)state;
    u.attempts = 1;
    u.updated_at = t;
    u.next_attempt_at = t;
    CHECK(queue_batch_add_update(b, &u) == 0);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_batch_result(b, 0, NULL));
    queue_batch_free(b);
}

/* A queued job with a new id and idempotency key `key`, to submit. */
static queue_job_t keyed_job(queue_t *q, char *key)
{
    queue_job_t j;

    memset(&j, 0, sizeof j);
    j.id = queue_id_next(q);
    j.state = QUEUE_STATE_QUEUED;
    j.type = QUEUE_TYPE_TEXT;
    j.phone_number_id = "1";
    j.to = "2";
    j.idempotency_key = key;
    return j;
}

static bool exists(queue_t *q, uint64_t id)
{
    queue_job_t j;
    int rc = queue_job_get(q, id, &j);
    CHECK(rc == 0 || rc == QUEUE_ENOTFOUND);
    queue_job_clear(&j);
    return rc == 0;
}

/* Entries of one of the store's databases. */
static size_t db_entries(queue_t *q, MDB_dbi dbi)
{
    MDB_txn *txn;
    MDB_stat st;
    CHECK(mdb_txn_begin(q->env, NULL, MDB_RDONLY, &txn) == 0);
    CHECK(mdb_stat(txn, dbi, &st) == 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

static size_t done_entries(queue_t *q)
{
    return db_entries(q, q->db_done);
}

/* Finished jobs go after their retention, unfinished ones never; bodies,
 * keys and counters go with them; a key is free again after its purge. */
static void t_purge(void)
{
    queue_t *q = open_q();
    uint64_t ids[10], c[QUEUE_STATE_MAX + 1], orig;
    size_t purged;
    bool more;
    char *body;
    size_t len;
    queue_job_t j;

    add_jobs(q, 10, "k", ids, 100);
    /* 0..4 finish at 2000 + i in five final states; 5 is sending, 6
     * retrying, 7..9 stay queued. */
    set_state(q, ids[0], QUEUE_STATE_SENT, 2000.0);
    set_state(q, ids[1], QUEUE_STATE_FAILED, 2001.0);
    set_state(q, ids[2], QUEUE_STATE_EXPIRED, 2002.0);
    set_state(q, ids[3], QUEUE_STATE_CANCELLED, 2003.0);
    set_state(q, ids[4], QUEUE_STATE_UNCERTAIN, 2004.0);
    set_state(q, ids[5], QUEUE_STATE_SENDING, 1500.0);
    set_state(q, ids[6], QUEUE_STATE_RETRYING, 1500.0);
    CHECK(done_entries(q) == 5);

    /* Nothing is old enough yet. */
    CHECK_OK(queue_purge(q, 1999.0, 100, &purged, &more));
    CHECK(purged == 0 && !more);
    /* Up to 2002 with a limit of 2: two go, more are due. */
    CHECK_OK(queue_purge(q, 2002.0, 2, &purged, &more));
    CHECK(purged == 2 && more);
    CHECK(!exists(q, ids[0]) && !exists(q, ids[1]) && exists(q, ids[2]));
    CHECK_RC(queue_job_body(q, ids[0], &body, &len), QUEUE_ENOTFOUND);
    CHECK_RC(queue_job_get_by_key(q, "k-0", &j), QUEUE_ENOTFOUND);
    CHECK_OK(queue_job_get_by_key(q, "k-2", &j));
    CHECK(j.id == ids[2]);
    queue_job_clear(&j);
    CHECK_OK(queue_purge(q, 2002.0, 2, &purged, &more));
    CHECK(purged == 1 && !more);
    CHECK_OK(queue_counts(q, c));
    CHECK(c[QUEUE_STATE_SENT] == 0 && c[QUEUE_STATE_FAILED] == 0 && c[QUEUE_STATE_EXPIRED] == 0);
    CHECK(c[QUEUE_STATE_CANCELLED] == 1 && c[QUEUE_STATE_UNCERTAIN] == 1);
    CHECK(c[QUEUE_STATE_QUEUED] == 3 && c[QUEUE_STATE_SENDING] == 1 &&
          c[QUEUE_STATE_RETRYING] == 1);

    /* A final job taken back out (a retry) leaves the index and stays. */
    set_state(q, ids[4], QUEUE_STATE_QUEUED, 2100.0);
    CHECK(done_entries(q) == 1);
    /* A final job finishing again later moves in the index. */
    set_state(q, ids[3], QUEUE_STATE_CANCELLED, 3000.0);
    CHECK_OK(queue_purge(q, 2999.0, 100, &purged, &more));
    CHECK(purged == 0 && exists(q, ids[3]) && exists(q, ids[4]));
    CHECK_OK(queue_purge(q, 1e12, 100, &purged, &more));
    CHECK(purged == 1 && !exists(q, ids[3]) && exists(q, ids[4]));
    CHECK(done_entries(q) == 0);
    for (int i = 4; i < 10; i++)
        CHECK(exists(q, ids[i]));

    /* The purged key "k-0" is free: a new job takes it. Key "k-5" (job
     * still there) is a duplicate. */
    {
        queue_batch_t *b = queue_batch_new();
        queue_job_t n1 = keyed_job(q, "k-0"), n2 = keyed_job(q, "k-5");
        CHECK(queue_batch_add_job(b, &n1, "{}", 2) == 0);
        CHECK(queue_batch_add_job(b, &n2, "{}", 2) == 1);
        CHECK_OK(queue_batch_commit(q, b));
        CHECK_OK(queue_batch_result(b, 0, NULL));
        CHECK_RC(queue_batch_result(b, 1, &orig), QUEUE_EDUPLICATE);
        CHECK(orig == ids[5]);
        CHECK_OK(queue_job_get_by_key(q, "k-0", &j));
        CHECK(j.id == n1.id);
        queue_job_clear(&j);
        queue_batch_free(b);
    }
    CHECK_RC(queue_purge(q, 1.0, 0, NULL, NULL), QUEUE_EINVAL);
    queue_close(q);
}

/* A purge attached to a batch runs in its transaction; a job finishing in
 * the same batch is purged too when it is old enough. */
static void t_purge_batch(void)
{
    queue_t *q = open_q();
    queue_batch_t *b = queue_batch_new();
    uint64_t ids[4];
    queue_update_t u;
    size_t purged;
    bool more;

    CHECK(b != NULL);
    add_jobs(q, 4, NULL, ids, 10);
    set_state(q, ids[0], QUEUE_STATE_SENT, 100.0);
    set_state(q, ids[1], QUEUE_STATE_SENT, 200.0);
    CHECK_RC(queue_batch_purge_result(b, &purged, &more), QUEUE_EINVAL);
    memset(&u, 0, sizeof u);
    u.id = ids[2];
    u.state = QUEUE_STATE_FAILED;
    u.updated_at = 150.0;
    CHECK(queue_batch_add_update(b, &u) == 0);
    CHECK_OK(queue_batch_set_purge(b, 160.0, 10));
    CHECK_RC(queue_batch_purge_result(b, &purged, &more), QUEUE_EINVAL);
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_batch_purge_result(b, &purged, &more));
    CHECK(purged == 2 && !more);
    CHECK(!exists(q, ids[0]) && exists(q, ids[1]) && !exists(q, ids[2]) && exists(q, ids[3]));
    /* A batch holding only a purge is committed too. */
    queue_batch_reset(b);
    CHECK_RC(queue_batch_purge_result(b, NULL, NULL), QUEUE_EINVAL);
    CHECK_OK(queue_batch_set_purge(b, 1000.0, 10));
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_batch_purge_result(b, &purged, &more));
    CHECK(purged == 1 && !exists(q, ids[1]));
    queue_batch_free(b);
    queue_close(q);
}

/* A submit whose key is held by a job that the same batch's purge deletes
 * makes a new job: a duplicate answer must name a job that is still there
 * once the batch is durable. A second submit of that key in the batch is
 * a duplicate of the new job. Before, both were answered as duplicates of
 * the purged job (the purge runs after the operations), so the key named
 * nothing and `get` of the answered job was NOT_FOUND. */
static void t_purge_key_same_batch(void)
{
    queue_t *q = open_q();
    queue_batch_t *b = queue_batch_new();
    uint64_t ids[2], orig = 0, nid[2];
    size_t purged;
    bool more;
    queue_job_t j;

    CHECK(b != NULL);
    add_jobs(q, 2, "s", ids, 10);
    set_state(q, ids[0], QUEUE_STATE_SENT, 100.0);
    set_state(q, ids[1], QUEUE_STATE_SENT, 300.0); /* kept: finished after `before` */
    for (int i = 0; i < 3; i++) {
        queue_job_t n = keyed_job(q, i < 2 ? "s-0" : "s-1");
        if (i < 2)
            nid[i] = n.id;
        CHECK(queue_batch_add_job(b, &n, "{}", 2) == i);
    }
    CHECK_OK(queue_batch_set_purge(b, 200.0, 10));
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_batch_purge_result(b, &purged, &more));
    CHECK(purged == 1 && !more && !exists(q, ids[0]));
    CHECK_OK(queue_batch_result(b, 0, NULL));
    CHECK(exists(q, nid[0]));
    CHECK_RC(queue_batch_result(b, 1, &orig), QUEUE_EDUPLICATE);
    CHECK(orig == nid[0] && !exists(q, nid[1]));
    CHECK_RC(queue_batch_result(b, 2, &orig), QUEUE_EDUPLICATE);
    CHECK(orig == ids[1]);
    CHECK_OK(queue_job_get_by_key(q, "s-0", &j));
    CHECK(j.id == nid[0]);
    queue_job_clear(&j);
    queue_batch_free(b);
    queue_close(q);
}

/* A schema-1 environment (no done index) is upgraded on open: the jobs
 * already final are indexed and purged like the others. */
static void t_schema_upgrade(void)
{
    queue_t *q = open_q();
    uint64_t ids[3];
    unsigned char v1[4] = {0, 0, 0, 1};
    MDB_val k = {6, "schema"}, v = {4, v1};
    MDB_txn *txn;
    MDB_env *env;
    MDB_dbi dbi;
    size_t purged;
    bool more;

    add_jobs(q, 3, "u", ids, 10);
    set_state(q, ids[0], QUEUE_STATE_SENT, 100.0);
    set_state(q, ids[1], QUEUE_STATE_FAILED, 100.0);
    queue_close(q);
    /* Make it look like schema 1: no `done`, schema key 1. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, 0, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_DONE, 0, &dbi) == 0);
    CHECK(mdb_drop(txn, dbi, 1) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);

    q = open_q();
    CHECK(done_entries(q) == 2);
    CHECK_OK(queue_purge(q, 100.0, 10, &purged, &more));
    CHECK(purged == 2 && exists(q, ids[2]));
    queue_close(q);
    /* The schema key now says 2, so a schema-1 build would refuse it. */
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, QUEUE__MAX_DBS) == 0);
    CHECK(mdb_env_open(env, g_dir, MDB_RDONLY, 0600) == 0);
    CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0);
    CHECK(mdb_dbi_open(txn, QUEUE__DB_META, 0, &dbi) == 0);
    CHECK(mdb_get(txn, dbi, &k, &v) == 0);
    CHECK(v.mv_size == 4 && queue__be32_get(v.mv_data) == QUEUE_SCHEMA_VERSION);
    mdb_txn_abort(txn);
    mdb_env_close(env);
}

static size_t last_txnid(queue_t *q)
{
    MDB_envinfo info;
    CHECK(mdb_env_info(q->env, &info) == 0);
    return info.me_last_txnid;
}

/* After a purge that freed pages, the next purge commits even with nothing
 * to purge (LMDB reuses freed pages only after one more commit); then
 * empty purges write nothing. */
static void t_purge_marker(void)
{
    queue_t *q = open_q();
    uint64_t ids[2];
    size_t purged, t0;

    add_jobs(q, 2, NULL, ids, 10);
    set_state(q, ids[0], QUEUE_STATE_SENT, 100.0);
    t0 = last_txnid(q);
    CHECK_OK(queue_purge(q, 50.0, 10, &purged, NULL));
    /* The first after an open: the run before it may have ended with a
     * purge (purge_marker_reopen). */
    CHECK(purged == 0 && last_txnid(q) == ++t0);
    CHECK_OK(queue_purge(q, 50.0, 10, &purged, NULL));
    CHECK(purged == 0 && last_txnid(q) == t0); /* nothing freed since: no write */
    CHECK_OK(queue_purge(q, 100.0, 10, &purged, NULL));
    CHECK(purged == 1 && last_txnid(q) == t0 + 1);
    CHECK_OK(queue_purge(q, 100.0, 10, &purged, NULL));
    CHECK(purged == 0 && last_txnid(q) == t0 + 2); /* the marker */
    CHECK_OK(queue_purge(q, 100.0, 10, &purged, NULL));
    CHECK(purged == 0 && last_txnid(q) == t0 + 2); /* once */
    queue_close(q);
}

/* A restart between a purge that freed pages and the marker after it: the
 * first txn after the open cannot reuse those pages either, so the first
 * purge after an open writes the marker too. A full store whose jobs were
 * all purged by one purge otherwise refused every new job for good, across
 * restarts (nothing else writes when no job is left). */
static void t_purge_marker_reopen(void)
{
    /* A reserve of 1/32 of 40 MiB (1.25 MiB) plus the unfinished jobs'
     * rounds up to 2 MiB with or without them: their purge leaves no room
     * below the jobs' limit other than the pages it freed. */
    queue_options_t opt = {1 << 20, 40 << 20, 0, 0};
    queue_batch_t *b = queue_batch_new();
    enum { PER = 4, BODY = 64 << 10 };
    char *body = malloc(BODY);
    uint64_t first = 0, next, again, c[QUEUE_STATE_MAX + 1];
    size_t purged;
    queue_t *q = NULL;
    int rc = 0;

    CHECK(b != NULL && body != NULL);
    memset(body, 'b', BODY);
    CHECK_OK(queue_open(g_dir, &opt, &q));
    while (rc == 0) {
        queue_batch_reset(b);
        for (int k = 0; k < PER; k++) {
            queue_job_t j = keyed_job(q, NULL);
            if (first == 0)
                first = j.id;
            CHECK(queue_batch_add_job(b, &j, body, BODY) == k);
        }
        rc = queue_batch_commit(q, b);
    }
    CHECK_RC(rc, QUEUE_EFULL);
    CHECK_OK(queue_counts(q, c));
    next = first + c[QUEUE_STATE_QUEUED];
    CHECK(c[QUEUE_STATE_QUEUED] > 400);
    queue_batch_reset(b);
    for (uint64_t id = first; id < next; id++) {
        queue_update_t u;
        memset(&u, 0, sizeof u);
        u.id = id;
        u.state = QUEUE_STATE_SENT;
        u.attempts = 1;
        u.updated_at = 100.0;
        CHECK(queue_batch_add_update(b, &u) >= 0);
    }
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_purge(q, 100.0, 100000, &purged, NULL));
    CHECK(purged == next - first);
    /* Stopped (or killed) before the next purge. */
    queue_close(q);
    q = NULL;
    CHECK_OK(queue_open(g_dir, &opt, &q));
    CHECK_OK(queue_purge(q, 100.0, 1000, &purged, NULL));
    CHECK(purged == 0);
    /* The space of the purged jobs is there for new ones: about as many
     * fit as before (not only what the smaller reserve left over). */
    for (rc = 0, again = 0; rc == 0; again += PER) {
        queue_batch_reset(b);
        for (int k = 0; k < PER; k++) {
            queue_job_t j = keyed_job(q, NULL);
            CHECK(queue_batch_add_job(b, &j, body, BODY) == k);
        }
        rc = queue_batch_commit(q, b);
    }
    CHECK_RC(rc, QUEUE_EFULL);
    CHECK(again >= (next - first) / 2);
    queue_batch_free(b);
    free(body);
    queue_close(q);
}

static size_t camp_entries(queue_t *q)
{
    return db_entries(q, q->db_camp);
}

/* A campaign whose last job is purged leaves nothing behind: names that
 * come and go (a campaign a day, one per order) do not pile up. The name
 * can be used again. */
static void t_campaign_gone(void)
{
    enum { N = 50 };
    queue_t *q = open_q();
    queue_batch_t *b = queue_batch_new();
    uint64_t ids[N], c[QUEUE_STATE_MAX + 1];
    char names[N][16];
    size_t purged;

    CHECK(b != NULL);
    for (size_t i = 0; i < N; i++) {
        queue_job_t j;
        memset(&j, 0, sizeof j);
        j.id = ids[i] = queue_id_next(q);
        j.state = QUEUE_STATE_QUEUED;
        j.type = QUEUE_TYPE_TEXT;
        j.created_at = j.updated_at = j.next_attempt_at = 1000.0;
        j.phone_number_id = "1000001";
        j.to = "+15550001";
        snprintf(names[i], sizeof names[i], "day-%zu", i);
        j.campaign = names[i];
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == (int)i);
    }
    CHECK_OK(queue_batch_commit(q, b));
    CHECK(camp_entries(q) == N);
    for (size_t i = 0; i < N; i++)
        set_state(q, ids[i], QUEUE_STATE_SENT, 2000.0);
    CHECK(camp_entries(q) == N); /* finished, not yet purged: still reported */
    CHECK_OK(queue_campaign_counts(q, "day-3", c));
    CHECK(c[QUEUE_STATE_SENT] == 1);
    CHECK_OK(queue_purge(q, 1e12, 1000, &purged, NULL));
    CHECK(purged == N);
    CHECK(camp_entries(q) == 0);
    CHECK_RC(queue_campaign_counts(q, "day-3", c), QUEUE_ENOTFOUND);
    /* Used again: a campaign like a new one. */
    queue_batch_reset(b);
    {
        queue_job_t j;
        memset(&j, 0, sizeof j);
        j.id = queue_id_next(q);
        j.state = QUEUE_STATE_QUEUED;
        j.type = QUEUE_TYPE_TEXT;
        j.created_at = j.updated_at = j.next_attempt_at = 3000.0;
        j.phone_number_id = "1000001";
        j.to = "+15550001";
        j.campaign = "day-3";
        CHECK(queue_batch_add_job(b, &j, "{}", 2) == 0);
    }
    CHECK_OK(queue_batch_commit(q, b));
    CHECK_OK(queue_campaign_counts(q, "day-3", c));
    CHECK(c[QUEUE_STATE_QUEUED] == 1 && c[QUEUE_STATE_SENT] == 0);
    queue_batch_free(b);
    queue_close(q);
}

static size_t file_size(void)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", g_dir);
    CHECK(stat(path, &st) == 0);
    return (size_t)st.st_size;
}

/* Steady churn: rounds of new jobs that finish and are purged. After a
 * warm-up the file and the used pages stop growing: freed pages are
 * reused. */
static void t_churn(void)
{
    enum { ROUNDS = 300, WARM = 30, PER = 200, BODY = 1500 };
    queue_t *q = open_q();
    uint64_t ids[PER];
    size_t used_warm = 0, file_warm = 0, used, purged;
    double t = 10000.0;
    bool more;

    for (int r = 0; r < ROUNDS; r++) {
        queue_batch_t *b = queue_batch_new();
        CHECK(b != NULL);
        add_jobs(q, PER, NULL, ids, BODY);
        for (int i = 0; i < PER; i++) {
            queue_update_t u;
            memset(&u, 0, sizeof u);
            u.id = ids[i];
            u.state = QUEUE_STATE_SENT;
            u.updated_at = t;
            u.wamid = "wamid.HBgLMTU1NTAwMDAwMDEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";
            CHECK(queue_batch_add_update(b, &u) == i);
        }
        /* Retention of two rounds: what finished two rounds ago goes. */
        CHECK_OK(queue_batch_set_purge(b, t - 2.0, 10 * PER));
        CHECK_OK(queue_batch_commit(q, b));
        CHECK_OK(queue_batch_purge_result(b, &purged, &more));
        CHECK(!more);
        CHECK(r < 2 || purged == PER);
        queue_batch_free(b);
        t += 1.0;
        CHECK_OK(queue_space(q, NULL, &used));
        if (r == WARM) {
            used_warm = used;
            file_warm = file_size();
        }
    }
    CHECK_OK(queue_space(q, NULL, &used));
    printf("churn: %d jobs; used %zu KiB after %d rounds, %zu KiB after %d; file %zu -> %zu KiB\n",
           ROUNDS * PER, used_warm >> 10, WARM, used >> 10, ROUNDS, file_warm >> 10,
           file_size() >> 10);
    /* Ten times the jobs of the warm-up went through; the store may not
     * grow by more than a few pages of fragmentation. */
    CHECK(used <= used_warm + used_warm / 10);
    CHECK(file_size() <= file_warm + file_warm / 10);
    queue_close(q);
}

static const qtest_case_t cases[] = {
    {"purge", t_purge},
    {"purge_batch", t_purge_batch},
    {"purge_marker", t_purge_marker},
    {"purge_marker_reopen", t_purge_marker_reopen},
    {"purge_key_same_batch", t_purge_key_same_batch},
    {"schema_upgrade", t_schema_upgrade},
    {"churn", t_churn},
    {"campaign_gone", t_campaign_gone},
};

int main(int argc, char **argv)
{
    return qtest_run(argc, argv, cases, sizeof cases / sizeof cases[0], dir_make);
}
