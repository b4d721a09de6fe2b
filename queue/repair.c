/*
 * repair.c - queue_store_repair: the counters and indexes rebuilt from the
 * job records, for a store whose due index and counters disagree at start
 * (queue_due_check). The records are the truth; everything derived from
 * them is checked against them or rebuilt, in one write transaction.
 */
#include "queue_int.h"

#include <string.h>

typedef struct repair_ctx {
    queue_repair_report_t *rep;
    uint64_t counts[QUEUE_STATE_MAX + 1]; /* recounted from the records */
    uint64_t decodable;
} repair_ctx_t;

/* Whether due entry k, which names a job whose record is r (NULL: cannot
 * be decoded), is that job's entry: well-formed, the job in a due state and
 * due at the entry's time. */
static bool due_fits(const MDB_val *k, const queue__record_t *r)
{
    if (k->mv_size != 16)
        return false;
    return r == NULL || (queue__state_is_due(r->state) &&
                         queue__due_ms(r->next_attempt_at) == queue__be64_get(k->mv_data));
}

/* Deletes the entries of index `dbi` that no job accounts for. Every key
 * of the due and order indexes ends with the 8-byte id of the job it names;
 * an entry whose record is missing goes, one whose record cannot be decoded
 * stays if `fits` finds it well-formed (counted in *unreadable: the due
 * scan reports that job by id), and for the others `fits` decides. Entries
 * missing are added by the walk of the records afterwards (repair_one). */
static int idx_prune(queue__wtxn_t *w, MDB_dbi dbi,
                     bool (*fits)(const MDB_val *, const queue__record_t *), uint64_t *removed,
                     uint64_t *unreadable)
{
    MDB_cursor *cur = NULL, *jobs = NULL;
    MDB_val k, v;
    int rc, op;

    if ((rc = mdb_cursor_open(w->txn, dbi, &cur)) != 0 ||
        (rc = mdb_cursor_open(w->txn, w->q->db_jobs, &jobs)) != 0)
        goto out;
    for (op = MDB_FIRST;; op = MDB_NEXT) {
        unsigned char idb[8];
        MDB_val jk = {sizeof idb, idb}, jv;
        queue__record_t r;
        bool keep = false;

        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc != 0)
            break;
        if (k.mv_size >= sizeof idb) {
            memcpy(idb, (const unsigned char *)k.mv_data + k.mv_size - sizeof idb, sizeof idb);
            rc = mdb_cursor_get(jobs, &jk, &jv, MDB_SET_KEY);
            if (rc != 0 && rc != MDB_NOTFOUND)
                break;
            if (rc == 0 && queue__record_parse(jv.mv_data, jv.mv_size, &r) != 0) {
                keep = fits(&k, NULL);
                *unreadable += keep;
            } else if (rc == 0) {
                keep = fits(&k, &r);
            }
        }
        if (keep)
            continue;
        /* The cursor then stands on the next entry, which MDB_NEXT gives. */
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0)
            break;
        (*removed)++;
    }
out:
    if (jobs != NULL)
        mdb_cursor_close(jobs);
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* One decodable record: counted, and its due and order entries put back if
 * missing (queue__job_fn; user: the repair_ctx_t). */
static int repair_one(queue__wtxn_t *w, uint64_t id, const queue__record_t *r, void *user)
{
    repair_ctx_t *ctx = user;
    unsigned char kb[16];
    MDB_val k = {sizeof kb, kb};
    bool added;
    int rc;

    ctx->decodable++;
    if (r->state >= 1 && r->state <= QUEUE_STATE_MAX)
        ctx->counts[r->state]++;
    if (!queue__state_is_due(r->state))
        return 0;
    queue__due_key(kb, queue__due_ms(r->next_attempt_at), id);
    rc = queue__idx_add(w, &w->due_cur, w->q->db_due, &k, &added);
    if (rc != 0)
        return rc;
    ctx->rep->due_added += added;
    rc = queue__order_add(w, r, id, &added);
    if (rc != 0)
        return rc;
    ctx->rep->order_added += added;
    return 0;
}

/* The recounted counters replace the stored ones (written back by the
 * write runner before the commit, which also updates q->unfinished). */
static int counts_replace(queue__wtxn_t *w, const repair_ctx_t *ctx)
{
    int rc = queue__counts_load(w);

    if (rc != 0)
        return rc;
    ctx->rep->counts_changed =
        memcmp(w->counts + 1, ctx->counts + 1, sizeof(uint64_t) * QUEUE_STATE_MAX) != 0;
    memcpy(w->counts, ctx->counts, sizeof w->counts);
    w->counts_dirty = true;
    return 0;
}

/* The due entries kept for unreadable records, for queue_due_check. */
static int unreadable_store(queue__wtxn_t *w, uint64_t n)
{
    MDB_val k = {sizeof QUEUE__META_UNREADABLE - 1, QUEUE__META_UNREADABLE}, v;
    unsigned char b[8];
    int rc;

    if (n == 0) {
        rc = mdb_del(w->txn, w->q->db_meta, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    queue__be64_put(b, n);
    v.mv_size = sizeof b;
    v.mv_data = b;
    return mdb_put(w->txn, w->q->db_meta, &k, &v, 0);
}

/* The write step; it may run again after map growth, so it starts from a
 * zeroed report each time. */
static int repair_fn(queue__wtxn_t *w, void *arg)
{
    repair_ctx_t ctx;
    uint64_t order_unreadable = 0; /* kept, not reported: the due entries name those jobs */
    MDB_stat st;
    int rc;

    memset(&ctx, 0, sizeof ctx);
    ctx.rep = arg;
    memset(ctx.rep, 0, sizeof *ctx.rep);
    /* The wholesale rebuilds first: their drops then meet no cursor of
     * this txn. */
    if ((rc = mdb_drop(w->txn, w->q->db_done, 0)) != 0 || (rc = queue__done_build(w)) != 0 ||
        (rc = queue__campaign_rebuild(w)) != 0)
        return rc;
    if ((rc = mdb_stat(w->txn, w->q->db_due, &st)) != 0)
        return rc;
    ctx.rep->due_before = st.ms_entries;
    if ((rc = idx_prune(w, w->q->db_due, due_fits, &ctx.rep->due_removed,
                        &ctx.rep->due_unreadable)) != 0 ||
        (rc = idx_prune(w, w->q->db_order, queue__order_fits, &ctx.rep->order_removed,
                        &order_unreadable)) != 0 ||
        (rc = queue__jobs_each(w, repair_one, &ctx)) != 0 || (rc = counts_replace(w, &ctx)) != 0 ||
        (rc = unreadable_store(w, ctx.rep->due_unreadable)) != 0)
        return rc;
    if ((rc = mdb_stat(w->txn, w->q->db_due, &st)) != 0)
        return rc;
    ctx.rep->due_after = st.ms_entries;
    if ((rc = mdb_stat(w->txn, w->q->db_jobs, &st)) != 0)
        return rc;
    ctx.rep->records = st.ms_entries;
    ctx.rep->unreadable = st.ms_entries - ctx.decodable;
    return 0;
}

int queue_store_repair(queue_t *q, queue_repair_report_t *rep)
{
    queue_repair_report_t mine;

    if (q == NULL)
        return QUEUE_EINVAL;
    if (rep == NULL)
        rep = &mine;
    return queue__write_run(q, repair_fn, rep);
}
