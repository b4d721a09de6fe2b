/*
 * retention.c - the `done` index and the purge of finished jobs.
 *
 * Every job in a final state has one key (done ms, id) in `done`; the write
 * path keeps it through queue__done_track (called wherever a job's state is
 * written). A purge walks `done` from its start, so its cost is proportional
 * to what it deletes, never to the size of the store, and a bounded purge
 * is a bounded transaction.
 */
#include "queue_int.h"

#include <errno.h>
#include <stdlib.h>

static void done_key(unsigned char key[16], uint64_t ms, uint64_t id)
{
    queue__be64_put(key, ms);
    queue__be64_put(key + 8, id);
}

static int done_put(queue__wtxn_t *w, uint64_t ms, uint64_t id)
{
    unsigned char kb[16];
    MDB_val k = {sizeof kb, kb}, v = {0, NULL};

    done_key(kb, ms, id);
    return queue__idx_put(w, &w->done_cur, w->q->db_done, &k, &v);
}

static int done_del(queue__wtxn_t *w, uint64_t ms, uint64_t id)
{
    unsigned char kb[16];
    MDB_val k = {sizeof kb, kb};

    done_key(kb, ms, id);
    return queue__idx_del(w, &w->done_cur, w->q->db_done, &k);
}

int queue__done_track(queue__wtxn_t *w, uint64_t id, int old_state, double old_updated,
                      int new_state, double new_updated)
{
    bool was = queue_state_is_final(old_state), is = queue_state_is_final(new_state);
    uint64_t old_ms = queue__due_ms(old_updated), new_ms = queue__due_ms(new_updated);

    if (was && (!is || old_ms != new_ms)) {
        int rc = done_del(w, old_ms, id);
        if (rc != 0)
            return rc;
    }
    if (is && (!was || old_ms != new_ms))
        return done_put(w, new_ms, id);
    return 0;
}

typedef struct done_ent {
    uint64_t ms;
    uint64_t id;
} done_ent_t;

/* Deletes job `id` (listed in `done` at `ms`) if it is still final with
 * that done time; otherwise only the stale index key goes. Sets *deleted. */
static int purge_one(queue__wtxn_t *w, uint64_t ms, uint64_t id, bool *deleted)
{
    queue_t *q = w->q;
    unsigned char kb[8];
    char idem[QUEUE_MAX_KEY_LEN];
    char camp[QUEUE_MAX_KEY_LEN];
    queue__str_t campaign = {NULL, 0};
    size_t idem_len = 0;
    bool has_idem = false;
    MDB_val k = {sizeof kb, kb}, v;
    queue__record_t r;
    int rc, state;

    *deleted = false;
    queue__be64_put(kb, id);
    rc = mdb_get(w->txn, q->db_jobs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return done_del(w, ms, id);
    if (rc != 0)
        return rc;
    /* An undecodable record is never deleted blind (its idempotency key
     * could not be removed with it); only its index key goes, so the purge
     * does not stop at it. */
    if (queue__record_parse(v.mv_data, v.mv_size, &r) != 0 || !queue_state_is_final(r.state) ||
        queue__due_ms(r.updated_at) != ms)
        return done_del(w, ms, id);
    state = r.state;
    /* Copy what is needed: r's views point into a page that the deletes
     * below may change. */
    if (r.s[QUEUE__REC_IDEM].p != NULL && r.s[QUEUE__REC_IDEM].len > 0 &&
        r.s[QUEUE__REC_IDEM].len <= sizeof idem) {
        idem_len = r.s[QUEUE__REC_IDEM].len;
        memcpy(idem, r.s[QUEUE__REC_IDEM].p, idem_len);
        has_idem = true;
    }
    if (r.s[QUEUE__REC_CAMPAIGN].p != NULL && r.s[QUEUE__REC_CAMPAIGN].len > 0 &&
        r.s[QUEUE__REC_CAMPAIGN].len <= sizeof camp) {
        memcpy(camp, r.s[QUEUE__REC_CAMPAIGN].p, r.s[QUEUE__REC_CAMPAIGN].len);
        campaign.p = camp;
        campaign.len = r.s[QUEUE__REC_CAMPAIGN].len;
    }

    if (has_idem) {
        MDB_val ik = {idem_len, idem}, iv;
        rc = mdb_get(w->txn, q->db_idem, &ik, &iv);
        /* Only if the key still names this job. */
        if (rc == 0 && iv.mv_size == 8 && queue__be64_get(iv.mv_data) == id)
            rc = mdb_del(w->txn, q->db_idem, &ik, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return rc;
    }
    /* The campaign index and counters forget the job (finished jobs are
     * not in the order index). */
    rc = queue__campaign_move(w, campaign, id, state, 0);
    if (rc != 0)
        return rc;
    k.mv_size = sizeof kb;
    k.mv_data = kb;
    rc = mdb_del(w->txn, q->db_bodies, &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    rc = mdb_del(w->txn, q->db_jobs, &k, NULL);
    if (rc != 0)
        return rc;
    rc = done_del(w, ms, id);
    if (rc != 0)
        return rc;
    *deleted = true;
    return queue__counts_move(w, state, 0);
}

int queue__purge_txn(queue__wtxn_t *w, uint64_t before_ms, size_t limit, size_t *purged, bool *more)
{
    MDB_cursor *cur = NULL;
    done_ent_t *list;
    size_t n = 0;
    MDB_val k, v;
    int rc, op;

    *purged = 0;
    *more = false;
    list = malloc((limit ? limit : 1) * sizeof *list);
    if (list == NULL)
        return -ENOMEM;
    /* Collect first, then delete: the cursor never walks a changing tree. */
    rc = mdb_cursor_open(w->txn, w->q->db_done, &cur);
    if (rc != 0)
        goto out;
    for (op = MDB_FIRST;; op = MDB_NEXT) {
        uint64_t ms;
        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            goto out;
        if (k.mv_size != 16) {
            /* Damage: no build writes such an entry, and it would end every
             * purge here (retention off for good, the store only growing,
             * and each purge failing the batch it rides in). Dropped; the
             * cursor then stands on the next entry (MDB_NEXT gives it). */
            rc = mdb_cursor_del(cur, 0);
            if (rc != 0)
                goto out;
            continue;
        }
        ms = queue__be64_get(k.mv_data);
        if (ms > before_ms)
            break;
        if (n == limit) {
            *more = true;
            break;
        }
        list[n].ms = ms;
        list[n].id = queue__be64_get((const unsigned char *)k.mv_data + 8);
        n++;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    for (size_t i = 0; i < n; i++) {
        bool deleted;
        rc = purge_one(w, list[i].ms, list[i].id, &deleted);
        if (rc != 0)
            goto out;
        if (deleted)
            (*purged)++;
    }
    /* LMDB lets a txn reuse only the pages freed by txns before the last
     * committed one (that snapshot must stay intact), and a txn that
     * changes nothing does not commit. So after a purge that freed pages,
     * a purge with nothing to do writes a small marker anyway: the space
     * becomes usable even when nothing else is written - a full store
     * whose jobs were all purged would otherwise refuse jobs for good. */
    if (*purged > 0) {
        w->purge_freed_set = true;
        w->purge_freed = true;
    } else if (w->q->purge_freed) {
        unsigned char vb[8];
        MDB_val mk = {sizeof QUEUE__META_PURGE - 1, QUEUE__META_PURGE}, mv = {sizeof vb, vb};
        queue__be64_put(vb, before_ms);
        rc = mdb_put(w->txn, w->q->db_meta, &mk, &mv, 0);
        if (rc == 0) {
            w->purge_freed_set = true;
            w->purge_freed = false;
        }
    }
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    free(list);
    return rc;
}

static int done_build_one(queue__wtxn_t *w, uint64_t id, const queue__record_t *r, void *user)
{
    (void)user;
    if (!queue_state_is_final(r->state))
        return 0;
    return done_put(w, queue__due_ms(r->updated_at), id);
}

int queue__done_build(queue__wtxn_t *w)
{
    return queue__jobs_each(w, done_build_one, NULL);
}

/* --- Public entry points --------------------------------------------- */

typedef struct purge_ctx {
    uint64_t before_ms;
    size_t limit;
    size_t purged;
    bool more;
} purge_ctx_t;

static int purge_fn(queue__wtxn_t *w, void *arg)
{
    purge_ctx_t *p = arg;
    return queue__purge_txn(w, p->before_ms, p->limit, &p->purged, &p->more);
}

int queue_purge(queue_t *q, double before, size_t limit, size_t *purged, bool *more)
{
    purge_ctx_t p = {queue__due_ms(before), limit, 0, false};
    int rc;

    if (purged != NULL)
        *purged = 0;
    if (more != NULL)
        *more = false;
    if (q == NULL || limit == 0)
        return QUEUE_EINVAL;
    rc = queue__write_run(q, purge_fn, &p);
    if (rc != 0)
        return rc;
    if (purged != NULL)
        *purged = p.purged;
    if (more != NULL)
        *more = p.more;
    return 0;
}
