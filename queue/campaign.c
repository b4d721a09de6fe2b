/*
 * campaign.c - the campaign index: per-campaign job counters by state and
 * the (campaign, id) and (campaign, state, id) indexes, all kept in the
 * write transactions that change the jobs (see queue_int.h for the layout).
 *
 * Counters of the campaigns a transaction touches are cached in the
 * transaction's state and written once before its commit, so a batch of
 * 50,000 jobs of one campaign costs one counter read and one write, not
 * 50,000 of each.
 */
#include "queue_int.h"

#include <errno.h>
#include <stdlib.h>

/* Campaigns cached per transaction; when more are touched, the cache is
 * written back and starts over (correct, only slower). */
#define CAMP_CACHE_MAX 32
#define CAMP_REC_LEN (4 + 8 * QUEUE_STATE_MAX)

typedef struct camp_entry {
    char name[QUEUE_MAX_KEY_LEN];
    size_t len;
    uint32_t cid;
    bool dirty;
    uint64_t counts[QUEUE_STATE_MAX + 1];
} camp_entry_t;

struct queue__camp_cache {
    size_t n;
    camp_entry_t e[CAMP_CACHE_MAX];
};

static void cjobs_key(unsigned char k[12], uint32_t cid, uint64_t id)
{
    queue__be32_put(k, cid);
    queue__be64_put(k + 4, id);
}

static void cstate_key(unsigned char k[13], uint32_t cid, int state, uint64_t id)
{
    queue__be32_put(k, cid);
    k[4] = (unsigned char)state;
    queue__be64_put(k + 5, id);
}

/* Stores a campaign's counters; a campaign left with no jobs at all (the
 * last ones purged) is deleted, so campaign names that come and go (one per
 * day, one per order) do not pile up in the store. Its jobs' index entries
 * went with them; the name gets a new number if it is used again. */
static int entry_store(queue__wtxn_t *w, const camp_entry_t *e)
{
    unsigned char buf[CAMP_REC_LEN];
    MDB_val k = {e->len, (void *)e->name}, v = {sizeof buf, buf};
    bool empty = true;

    for (int i = 1; i <= QUEUE_STATE_MAX; i++)
        empty = empty && e->counts[i] == 0;
    if (empty) {
        int rc = mdb_del(w->txn, w->q->db_camp, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }

    queue__be32_put(buf, e->cid);
    for (int i = 1; i <= QUEUE_STATE_MAX; i++)
        queue__be64_put(buf + 4 + 8 * (i - 1), e->counts[i]);
    return mdb_put(w->txn, w->q->db_camp, &k, &v, 0);
}

int queue__campaign_flush(queue__wtxn_t *w)
{
    struct queue__camp_cache *c = w->camp;

    if (c == NULL)
        return 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->e[i].dirty) {
            int rc = entry_store(w, &c->e[i]);
            if (rc != 0)
                return rc;
            c->e[i].dirty = false;
        }
    }
    return 0;
}

void queue__campaign_cache_free(queue__wtxn_t *w)
{
    free(w->camp);
    w->camp = NULL;
}

/* A new campaign number: one past the last handed out. */
static int cid_next(queue__wtxn_t *w, uint32_t *out)
{
    MDB_val k = {sizeof QUEUE__META_CAMPSEQ - 1, QUEUE__META_CAMPSEQ}, v;
    unsigned char b[4];
    uint32_t last = 0;
    int rc;

    rc = mdb_get(w->txn, w->q->db_meta, &k, &v);
    if (rc == 0 && v.mv_size != 4)
        return QUEUE_ECORRUPT;
    if (rc == 0)
        last = queue__be32_get(v.mv_data);
    else if (rc != MDB_NOTFOUND)
        return rc;
    if (last == UINT32_MAX)
        return QUEUE_EFULL;
    queue__be32_put(b, last + 1);
    v.mv_size = sizeof b;
    v.mv_data = b;
    rc = mdb_put(w->txn, w->q->db_meta, &k, &v, 0);
    if (rc == 0)
        *out = last + 1;
    return rc;
}

/* The cache entry of campaign `name`, loaded or created in the store. */
static int entry_get(queue__wtxn_t *w, queue__str_t name, camp_entry_t **out)
{
    struct queue__camp_cache *c = w->camp;
    MDB_val k = {name.len, (void *)name.p}, v;
    camp_entry_t *e;
    int rc;

    if (c == NULL) {
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return -ENOMEM;
        w->camp = c;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (c->e[i].len == name.len && memcmp(c->e[i].name, name.p, name.len) == 0) {
            *out = &c->e[i];
            return 0;
        }
    }
    if (c->n == CAMP_CACHE_MAX) {
        rc = queue__campaign_flush(w);
        if (rc != 0)
            return rc;
        c->n = 0;
    }
    e = &c->e[c->n];
    memset(e, 0, sizeof *e);
    memcpy(e->name, name.p, name.len);
    e->len = name.len;
    rc = mdb_get(w->txn, w->q->db_camp, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rc = cid_next(w, &e->cid);
        if (rc != 0)
            return rc;
        e->dirty = true;
    } else if (rc != 0) {
        return rc;
    } else if (v.mv_size < CAMP_REC_LEN) {
        return QUEUE_ECORRUPT;
    } else {
        const unsigned char *p = v.mv_data;
        e->cid = queue__be32_get(p);
        for (int i = 1; i <= QUEUE_STATE_MAX; i++)
            e->counts[i] = queue__be64_get(p + 4 + 8 * (i - 1));
    }
    c->n++;
    *out = e;
    return 0;
}

int queue__campaign_move(queue__wtxn_t *w, queue__str_t name, uint64_t id, int from, int to)
{
    unsigned char kb[13];
    MDB_val k, v = {0, NULL};
    camp_entry_t *e;
    int rc;

    if (name.p == NULL || name.len == 0 || name.len > QUEUE_MAX_KEY_LEN || from == to)
        return 0;
    rc = entry_get(w, name, &e);
    if (rc != 0)
        return rc;
    if (from >= 1 && from <= QUEUE_STATE_MAX) {
        if (e->counts[from] > 0)
            e->counts[from]--;
        cstate_key(kb, e->cid, from, id);
        k.mv_size = 13;
        k.mv_data = kb;
        rc = queue__idx_del(w, &w->cstate_cur[from], w->q->db_cstate, &k);
        if (rc != 0)
            return rc;
    }
    if (to >= 1 && to <= QUEUE_STATE_MAX) {
        e->counts[to]++;
        cstate_key(kb, e->cid, to, id);
        k.mv_size = 13;
        k.mv_data = kb;
        rc = queue__idx_put(w, &w->cstate_cur[to], w->q->db_cstate, &k, &v);
        if (rc != 0)
            return rc;
    }
    e->dirty = true;
    if (from == 0 || to == 0) {
        cjobs_key(kb, e->cid, id);
        k.mv_size = 12;
        k.mv_data = kb;
        rc = from == 0 ? queue__idx_put(w, &w->cjobs_cur, w->q->db_cjobs, &k, &v)
                       : queue__idx_del(w, &w->cjobs_cur, w->q->db_cjobs, &k);
    }
    return rc;
}

int queue__campaign_open(queue__wtxn_t *w)
{
    queue_t *q = w->q;
    int rc;

    if ((rc = mdb_dbi_open(w->txn, QUEUE__DB_CAMP, MDB_CREATE, &q->db_camp)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_CJOBS, MDB_CREATE, &q->db_cjobs)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_CSTATE, MDB_CREATE, &q->db_cstate)) != 0)
        return rc;
    return 0;
}

static int rebuild_one(queue__wtxn_t *w, uint64_t id, const queue__record_t *r, void *user)
{
    (void)user;
    return queue__campaign_move(w, r->s[QUEUE__REC_CAMPAIGN], id, 0, r->state);
}

int queue__campaign_rebuild(queue__wtxn_t *w)
{
    int rc;

    /* Start from empty: a half-built index cannot exist (one txn), but an
     * environment may have been written by a build that had one. */
    if ((rc = mdb_drop(w->txn, w->q->db_camp, 0)) != 0 ||
        (rc = mdb_drop(w->txn, w->q->db_cjobs, 0)) != 0 ||
        (rc = mdb_drop(w->txn, w->q->db_cstate, 0)) != 0)
        return rc;
    return queue__jobs_each(w, rebuild_one, NULL);
}

/* --- reads --------------------------------------------------------------- */

int queue__campaign_unreadable(queue_t *q, MDB_txn *txn, uint64_t *n)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    *n = 0;
    if ((rc = mdb_cursor_open(txn, q->db_camp, &cur)) != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size < CAMP_REC_LEN)
            (*n)++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int name_check(const char *name, size_t *len)
{
    if (name == NULL)
        return QUEUE_EINVAL;
    *len = strnlen(name, QUEUE_MAX_KEY_LEN + 1);
    return *len == 0 || *len > QUEUE_MAX_KEY_LEN ? QUEUE_EINVAL : 0;
}

static int camp_lookup(queue_t *q, MDB_txn *txn, const char *name, size_t len, uint32_t *cid,
                       uint64_t counts[QUEUE_STATE_MAX + 1])
{
    MDB_val k = {len, (void *)name}, v;
    const unsigned char *p;
    int rc;

    rc = mdb_get(txn, q->db_camp, &k, &v);
    if (rc != 0)
        return rc;
    if (v.mv_size < CAMP_REC_LEN)
        return QUEUE_ECORRUPT;
    p = v.mv_data;
    *cid = queue__be32_get(p);
    if (counts != NULL) {
        counts[0] = 0;
        for (int i = 1; i <= QUEUE_STATE_MAX; i++) {
            counts[i] = queue__be64_get(p + 4 + 8 * (i - 1));
            counts[0] += counts[i];
        }
    }
    return 0;
}

int queue_campaign_counts(queue_t *q, const char *name, uint64_t counts[QUEUE_STATE_MAX + 1])
{
    MDB_txn *txn;
    uint32_t cid;
    size_t len;
    queue__rd_t rd;
    int rc;

    if (q == NULL || counts == NULL)
        return QUEUE_EINVAL;
    memset(counts, 0, sizeof(uint64_t) * (QUEUE_STATE_MAX + 1));
    if ((rc = name_check(name, &len)) != 0)
        return rc;
    rc = queue__rd_begin(q, &rd);
    txn = rd.txn;
    if (rc != 0)
        return rc;
    rc = camp_lookup(q, txn, name, len, &cid, counts);
    queue__rd_end(q, &rd);
    return queue__err_map(rc);
}

int queue_campaign_jobs(queue_t *q, const char *name, int state, uint64_t after_id, size_t limit,
                        queue_job_cb cb, void *user, bool *more)
{
    unsigned char start[13];
    MDB_cursor *cur = NULL;
    MDB_dbi dbi;
    MDB_val k, v;
    MDB_txn *txn;
    size_t len, klen, plen, seen = 0;
    uint32_t cid;
    queue__rd_t rd;
    int rc;

    if (more != NULL)
        *more = false;
    if (q == NULL || cb == NULL || state < 0 || state > QUEUE_STATE_MAX)
        return QUEUE_EINVAL;
    if ((rc = name_check(name, &len)) != 0)
        return rc;
    if (limit == 0)
        return 0;
    rc = queue__rd_begin(q, &rd);
    txn = rd.txn;
    if (rc != 0)
        return rc;
    rc = camp_lookup(q, txn, name, len, &cid, NULL);
    if (rc == MDB_NOTFOUND) {
        rc = 0;
        goto out;
    }
    if (rc != 0)
        goto out;
    if (state == 0) {
        dbi = q->db_cjobs;
        plen = 4;
        klen = 12;
        cjobs_key(start, cid, after_id);
    } else {
        dbi = q->db_cstate;
        plen = 5;
        klen = 13;
        cstate_key(start, cid, state, after_id);
    }
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        goto out;
    k.mv_size = klen;
    k.mv_data = start;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && k.mv_size == klen && memcmp(k.mv_data, start, klen) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* strictly after after_id */
    while (rc == 0) {
        unsigned char jb[8];
        MDB_val jk = {sizeof jb, jb}, jv;
        queue_job_t job;

        if (k.mv_size != klen || memcmp(k.mv_data, start, plen) != 0)
            break; /* past this campaign (and state) */
        if (seen == limit) {
            if (more != NULL)
                *more = true;
            break;
        }
        memcpy(jb, (const unsigned char *)k.mv_data + plen, 8);
        rc = mdb_get(txn, q->db_jobs, &jk, &jv);
        if (rc == 0)
            rc = queue__record_decode(jv.mv_data, jv.mv_size, &job);
        if (rc == MDB_NOTFOUND || rc == QUEUE_ECORRUPT) {
            /* Damage (an index entry without its job, a record this build
             * cannot read): left out, so the campaign's other jobs can
             * still be listed, cancelled and retried. */
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if (rc != 0)
            break;
        job.id = queue__be64_get(jb);
        seen++;
        rc = cb(&job, user);
        queue_job_clear(&job);
        if (rc != 0) {
            rc = 0;
            break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    queue__rd_end(q, &rd);
    return queue__err_map(rc);
}
