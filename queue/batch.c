/*
 * batch.c - write batches (group commit).
 *
 * A batch copies everything it is given into one growing arena and an array
 * of fixed-size operations, so adding a job costs no allocation once the
 * batch has warmed up. Offsets, not pointers, refer into the arena because
 * it moves when it grows. Job records are encoded when added (loop thread),
 * leaving the commit (writer thread) only LMDB work.
 */
#include "queue_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "prefault.h"
#include "utf8.h"

/* On reset, an arena grown past this is released rather than kept, so one
 * burst of large bodies does not pin memory for the life of the batch. */
#define ARENA_KEEP_MAX ((size_t)16 << 20)
#define ARENA_MIN ((size_t)64 << 10)

enum { OP_JOB = 1, OP_UPDATE = 2, OP_PAUSE = 3 };
enum { OPF_WAMID = 1, OPF_ERR = 2, OPF_FLAGS_ONLY = 4 };

typedef struct batch_op {
    uint64_t id;
    uint64_t orig_id; /* result: holder of a duplicate key */
    int result;
    uint8_t kind;
    uint8_t state;
    uint8_t flags; /* updates: OPF_* */
    uint16_t attempts;
    int32_t err_status;
    int64_t err_meta_code;
    double updated_at;
    double next_attempt_at;
    double expires_at;   /* updates: > 0 replaces the expiry */
    uint16_t only_from;  /* updates: QUEUE_STATE_BIT mask, 0: any */
    uint8_t set_flags;   /* updates: OR-ed into the job's flags */
    uint8_t clear_flags; /* updates: cleared from them first */
    /* Arena slices. Job: record, body, idempotency key (c_len 0: none).
     * Update: wamid, error code, error message. Pause: name, reason (state
     * holds the kind, flags 1 when paused). */
    size_t a_off, a_len;
    size_t b_off, b_len;
    size_t c_off, c_len;
} batch_op_t;

struct queue_batch {
    batch_op_t *ops;
    size_t n, cap;
    unsigned char *arena;
    size_t used, size;
    uint64_t max_job_id; /* largest id of the jobs added: the new high water mark */
    bool committed;
    /* Retention: an optional purge run after the operations. */
    bool purge;
    uint64_t purge_before_ms;
    size_t purge_limit;
    size_t purged;   /* result */
    bool purge_more; /* result */
};

queue_batch_t *queue_batch_new(void)
{
    return calloc(1, sizeof(queue_batch_t));
}

void queue_batch_free(queue_batch_t *b)
{
    if (b == NULL)
        return;
    free(b->ops);
    free(b->arena);
    free(b);
}

void queue_batch_reset(queue_batch_t *b)
{
    if (b == NULL)
        return;
    b->n = 0;
    b->used = 0;
    b->max_job_id = 0;
    b->committed = false;
    b->purge = false;
    b->purged = 0;
    b->purge_more = false;
    if (b->size > ARENA_KEEP_MAX) {
        free(b->arena);
        b->arena = NULL;
        b->size = 0;
    }
}

size_t queue_batch_count(const queue_batch_t *b)
{
    return b != NULL ? b->n : 0;
}

/* Makes room for `more` more ops. */
static int ops_reserve(queue_batch_t *b, size_t more)
{
    if (b->n + more > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 256;
        batch_op_t *nops;
        while (ncap < b->n + more)
            ncap *= 2;
        nops = realloc(b->ops, ncap * sizeof *nops);
        if (nops == NULL)
            return -ENOMEM;
        b->ops = nops;
        b->cap = ncap;
    }
    return 0;
}

/* Makes room for `extra` more arena bytes. */
static int arena_reserve(queue_batch_t *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->used)
        return -ENOMEM;
    if (b->used + extra > b->size) {
        size_t nsize = b->size ? b->size : ARENA_MIN;
        unsigned char *na;
        while (nsize < b->used + extra)
            nsize *= 2;
        /* A batch grows only until it reaches its peak size (commit.c
         * recycles them), but then by megabytes at a time: the copy goes to
         * pages mapped in one call (prefault.h). */
        na = malloc(nsize);
        if (na == NULL)
            return -ENOMEM;
        if (b->used > 0) {
            avp_prefault(na, b->used);
            memcpy(na, b->arena, b->used);
        }
        free(b->arena);
        b->arena = na;
        b->size = nsize;
    }
    return 0;
}

/* Makes room for `extra` more arena bytes and one more op. */
static int batch_reserve(queue_batch_t *b, size_t extra)
{
    int rc;

    if (b->n >= (size_t)INT_MAX)
        return -E2BIG;
    if ((rc = ops_reserve(b, 1)) != 0)
        return rc;
    return arena_reserve(b, extra);
}

/* Copies `len` bytes into reserved arena space; returns their offset. */
static size_t arena_copy(queue_batch_t *b, const void *p, size_t len)
{
    size_t off = b->used;
    if (len > 0)
        memcpy(b->arena + off, p, len);
    b->used += len;
    return off;
}

int queue_batch_add_job(queue_batch_t *b, const queue_job_t *job, const void *body, size_t len)
{
    queue__record_t r;
    batch_op_t *op;
    size_t rlen, need;
    int rc;

    if (b == NULL || job == NULL || job->id == 0 || (body == NULL && len > 0) ||
        len > QUEUE__MAX_BODY_LEN)
        return QUEUE_EINVAL;
    rc = queue__record_from_job(job, &r);
    if (rc != 0)
        return rc;
    /* LMDB has no empty keys; the ipc layer rejects an empty key anyway. */
    if (r.s[QUEUE__REC_IDEM].p != NULL && r.s[QUEUE__REC_IDEM].len == 0)
        return QUEUE_EINVAL;
    rlen = queue__record_size(&r);
    need = rlen + len + r.s[QUEUE__REC_IDEM].len;
    rc = batch_reserve(b, need);
    if (rc != 0)
        return rc;

    op = &b->ops[b->n];
    memset(op, 0, sizeof *op);
    op->kind = OP_JOB;
    op->id = job->id;
    op->state = job->state;
    op->updated_at = job->updated_at;
    op->next_attempt_at = job->next_attempt_at;
    /* from_job validated r and rlen bytes are reserved: encode once,
     * without checking and sizing it again. */
    op->a_off = b->used;
    op->a_len = queue__record_write(&r, b->arena + b->used);
    b->used += op->a_len;
    op->b_off = arena_copy(b, body, len);
    op->b_len = len;
    if (r.s[QUEUE__REC_IDEM].p != NULL) {
        op->c_len = r.s[QUEUE__REC_IDEM].len;
        op->c_off = arena_copy(b, r.s[QUEUE__REC_IDEM].p, op->c_len);
    }
    if (job->id > b->max_job_id)
        b->max_job_id = job->id;
    b->committed = false;
    return (int)b->n++;
}

int queue_batch_append(queue_batch_t *dst, queue_batch_t *src)
{
    size_t base;
    int rc;

    if (dst == NULL || src == NULL || dst == src)
        return QUEUE_EINVAL;
    if (src->n > (size_t)INT_MAX - dst->n || src->used > SIZE_MAX / 2 - dst->used)
        return -E2BIG;
    if ((rc = ops_reserve(dst, src->n)) != 0 || (rc = arena_reserve(dst, src->used)) != 0)
        return rc;
    /* Offsets are into the arena, which src's bytes join at `base`. */
    base = arena_copy(dst, src->arena, src->used);
    for (size_t i = 0; i < src->n; i++) {
        batch_op_t *op = &dst->ops[dst->n + i];
        *op = src->ops[i];
        op->a_off += base;
        op->b_off += base;
        op->c_off += base;
    }
    dst->n += src->n;
    if (src->max_job_id > dst->max_job_id)
        dst->max_job_id = src->max_job_id;
    if (src->purge) {
        dst->purge = true;
        dst->purge_before_ms = src->purge_before_ms;
        dst->purge_limit = src->purge_limit;
    }
    dst->committed = false;
    queue_batch_reset(src);
    return 0;
}

int queue_batch_add_update(queue_batch_t *b, const queue_update_t *u)
{
    size_t wlen = 0, clen = 0, mlen = 0;
    batch_op_t *op;
    int rc;

    if (b == NULL || u == NULL || u->id == 0)
        return QUEUE_EINVAL;
    if (!u->flags_only && (u->state < 1 || u->state > QUEUE_STATE_MAX))
        return QUEUE_EINVAL;
    if (u->wamid != NULL) {
        wlen = strnlen(u->wamid, QUEUE_MAX_WAMID_LEN + 1);
        if (wlen > QUEUE_MAX_WAMID_LEN)
            return QUEUE_EINVAL;
    }
    if (u->last_error != NULL) {
        /* Fixed arrays: text past the limit is cut, not refused. */
        clen = strnlen(u->last_error->code, QUEUE_ERR_CODE_LEN - 1);
        mlen = strnlen(u->last_error->message, QUEUE_ERR_MSG_LEN - 1);
    }
    rc = batch_reserve(b, wlen + clen + mlen);
    if (rc != 0)
        return rc;

    op = &b->ops[b->n];
    memset(op, 0, sizeof *op);
    op->kind = OP_UPDATE;
    op->id = u->id;
    op->state = u->state;
    op->attempts = u->attempts;
    op->updated_at = u->updated_at;
    op->next_attempt_at = u->next_attempt_at;
    op->only_from = u->only_from;
    op->set_flags = u->set_flags;
    op->clear_flags = u->clear_flags;
    if (u->flags_only)
        op->flags |= OPF_FLAGS_ONLY;
    op->expires_at = u->expires_at;
    if (u->wamid != NULL) {
        op->flags |= OPF_WAMID;
        op->a_off = arena_copy(b, u->wamid, wlen);
        op->a_len = wlen;
    }
    if (u->last_error != NULL) {
        op->flags |= OPF_ERR;
        op->err_status = u->last_error->status;
        op->err_meta_code = queue__meta_enc(u->last_error);
        op->b_off = arena_copy(b, u->last_error->code, clen);
        op->b_len = clen;
        op->c_off = arena_copy(b, u->last_error->message, mlen);
        op->c_len = mlen;
    }
    b->committed = false;
    return (int)b->n++;
}

int queue_batch_add_pause(queue_batch_t *b, int kind, const char *name, const char *reason,
                          bool paused)
{
    size_t nlen, rlen;
    batch_op_t *op;
    int rc;

    if (b == NULL || name == NULL ||
        (kind != QUEUE_PAUSE_ALL && kind != QUEUE_PAUSE_SENDER && kind != QUEUE_PAUSE_CAMPAIGN))
        return QUEUE_EINVAL;
    nlen = strnlen(name, QUEUE_MAX_KEY_LEN + 1);
    if (nlen > QUEUE_MAX_KEY_LEN)
        return QUEUE_EINVAL;
    /* Cut between characters: the reason is the API's text, shown as JSON. */
    rlen = reason ? utf8_cut(reason, strnlen(reason, QUEUE_PAUSE_REASON_MAX + 1),
                             QUEUE_PAUSE_REASON_MAX)
                  : 0;
    rc = batch_reserve(b, nlen + rlen);
    if (rc != 0)
        return rc;
    op = &b->ops[b->n];
    memset(op, 0, sizeof *op);
    op->kind = OP_PAUSE;
    op->state = (uint8_t)kind;
    op->flags = paused ? 1 : 0;
    op->a_off = arena_copy(b, name, nlen);
    op->a_len = nlen;
    op->b_off = arena_copy(b, reason ? reason : "", rlen);
    op->b_len = rlen;
    b->committed = false;
    return (int)b->n++;
}

/* Puts a key that is normally the largest so far (ids grow) with
 * MDB_APPEND, which fills pages densely; falls back to an ordinary insert
 * for an id out of order. An existing id is the caller's bug. */
static int put_new_id(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    int rc = mdb_put(txn, dbi, k, v, MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        rc = mdb_put(txn, dbi, k, v, MDB_NOOVERWRITE);
    return rc == MDB_KEYEXIST ? QUEUE_EINVAL : rc;
}

static int commit_job(queue__wtxn_t *w, queue_batch_t *b, batch_op_t *op)
{
    queue_t *q = w->q;
    unsigned char kb[8];
    MDB_val k = {sizeof kb, kb}, v;
    queue__record_t r;
    int rc;

    /* The indexes read the order key and campaign back from the encoded
     * record (the batch keeps no separate copy): parsed once, here. */
    if (queue__record_parse_own(b->arena + op->a_off, op->a_len, &r) != 0)
        return QUEUE_EINVAL; /* we encoded it: cannot happen */
    queue__be64_put(kb, op->id);
    if (op->c_len > 0) {
        MDB_val ik = {op->c_len, b->arena + op->c_off};
        v.mv_size = sizeof kb;
        v.mv_data = kb;
        /* Also catches a key taken earlier in this batch: same txn. */
        rc = mdb_put(w->txn, q->db_idem, &ik, &v, MDB_NOOVERWRITE);
        if (rc == MDB_KEYEXIST) {
            uint64_t orig = v.mv_size == 8 ? queue__be64_get(v.mv_data) : 0;
            unsigned char ob[8];
            MDB_val ok = {sizeof ob, ob}, ov;

            /* A key whose job is gone (which a purge never leaves, but a
             * damaged store might) is free again: take it over. */
            queue__be64_put(ob, orig);
            rc = orig != 0 ? mdb_get(w->txn, q->db_jobs, &ok, &ov) : MDB_NOTFOUND;
            if (rc == 0) {
                op->result = QUEUE_EDUPLICATE;
                op->orig_id = orig;
                return 0;
            }
            if (rc != MDB_NOTFOUND)
                return rc;
            v.mv_size = sizeof kb;
            v.mv_data = kb;
            rc = mdb_put(w->txn, q->db_idem, &ik, &v, 0);
        }
        if (rc != 0)
            return rc;
    }
    v.mv_size = op->a_len;
    v.mv_data = b->arena + op->a_off;
    rc = put_new_id(w->txn, q->db_jobs, &k, &v);
    if (rc != 0)
        return rc;
    v.mv_size = op->b_len;
    v.mv_data = b->arena + op->b_off;
    rc = put_new_id(w->txn, q->db_bodies, &k, &v);
    if (rc != 0)
        return rc;
    if (queue__state_is_due(op->state)) {
        char okey[QUEUE_ORDER_KEY_MAX + 1];
        rc = queue__due_put(w, queue__due_ms(op->next_attempt_at), op->id);
        if (rc != 0)
            return rc;
        rc = queue__order_put(w, okey, queue__record_order_key(&r, okey, sizeof okey), op->id);
        if (rc != 0)
            return rc;
    }
    /* Campaign index (campaign.c). */
    rc = queue__campaign_move(w, r.s[QUEUE__REC_CAMPAIGN], op->id, 0, op->state);
    if (rc != 0)
        return rc;
    rc = queue__counts_move(w, 0, op->state);
    if (rc != 0)
        return rc;
    /* Retention hook (a job is normally new in a non-final state). */
    return queue__done_track(w, op->id, 0, 0, op->state, op->updated_at);
}

static int commit_update(queue__wtxn_t *w, queue_batch_t *b, batch_op_t *op)
{
    queue__patch_t p;

    memset(&p, 0, sizeof p);
    p.state = op->state;
    p.attempts = op->attempts;
    p.updated_at = op->updated_at;
    p.next_attempt_at = op->next_attempt_at;
    p.only_from = op->only_from;
    p.expires_at = op->expires_at;
    p.set_flags = op->set_flags;
    p.clear_flags = op->clear_flags;
    p.flags_only = (op->flags & OPF_FLAGS_ONLY) != 0;
    if (op->flags & OPF_WAMID) {
        /* A non-NULL pointer even for "": present-and-empty, not "keep". */
        p.wamid.p = (const char *)b->arena + op->a_off;
        p.wamid.len = op->a_len;
    }
    if (op->flags & OPF_ERR) {
        p.has_err = true;
        p.err_status = op->err_status;
        p.err_meta_code = op->err_meta_code;
        p.err_code.p = (const char *)b->arena + op->b_off;
        p.err_code.len = op->b_len;
        p.err_msg.p = (const char *)b->arena + op->c_off;
        p.err_msg.len = op->c_len;
    }
    return queue__job_update(w, op->id, &p, &op->result);
}

static int hwm_raise(queue__wtxn_t *w, uint64_t id)
{
    MDB_val k = {sizeof QUEUE__META_HWM - 1, QUEUE__META_HWM}, v;
    unsigned char vb[8];
    int rc;

    rc = mdb_get(w->txn, w->q->db_meta, &k, &v);
    if (rc == 0 && v.mv_size == 8 && queue__be64_get(v.mv_data) >= id)
        return 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    queue__be64_put(vb, id);
    v.mv_size = sizeof vb;
    v.mv_data = vb;
    return mdb_put(w->txn, w->q->db_meta, &k, &v, 0);
}

/* The purge runs after the operations, so a submit may have been found a
 * duplicate of a job that the purge then deleted: its answer would name a
 * job that is gone once the batch is durable, and the key would name
 * nothing. Such a submit is committed again after the purge and takes the
 * key over (commit_job), as it would have after the purge; a later submit
 * of the same key in the batch is then a duplicate of that new job. */
static int redo_purged_duplicates(queue__wtxn_t *w, queue_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        batch_op_t *op = &b->ops[i];
        unsigned char kb[8];
        MDB_val k = {sizeof kb, kb}, v;
        int rc;

        if (op->kind != OP_JOB || op->result != QUEUE_EDUPLICATE)
            continue;
        queue__be64_put(kb, op->orig_id);
        rc = mdb_get(w->txn, w->q->db_jobs, &k, &v);
        if (rc == 0)
            continue;
        if (rc != MDB_NOTFOUND)
            return rc;
        op->result = 0;
        op->orig_id = 0;
        rc = commit_job(w, b, op);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int commit_fn(queue__wtxn_t *w, void *arg)
{
    queue_batch_t *b = arg;
    int rc = 0;

    /* May be a rerun after map growth: results start over. */
    for (size_t i = 0; i < b->n; i++) {
        b->ops[i].result = 0;
        b->ops[i].orig_id = 0;
    }
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        batch_op_t *op = &b->ops[i];
        if (op->kind == OP_JOB)
            rc = commit_job(w, b, op);
        else if (op->kind == OP_UPDATE)
            rc = commit_update(w, b, op);
        else
            rc = queue__pause_write(w, op->state, (const char *)b->arena + op->a_off, op->a_len,
                                    (const char *)b->arena + op->b_off, op->b_len, op->flags != 0);
    }
    if (rc == 0 && b->max_job_id != 0)
        rc = hwm_raise(w, b->max_job_id);
    if (rc == 0 && b->purge)
        rc = queue__purge_txn(w, b->purge_before_ms, b->purge_limit, &b->purged, &b->purge_more);
    if (rc == 0 && b->purged > 0)
        rc = redo_purged_duplicates(w, b);
    return rc;
}

int queue_batch_commit(queue_t *q, queue_batch_t *b)
{
    int rc;

    if (q == NULL || b == NULL)
        return QUEUE_EINVAL;
    b->committed = false;
    if (b->n == 0 && !b->purge) {
        b->committed = true;
        return 0;
    }
    rc = queue__write_run_ex(q, commit_fn, b, b->max_job_id != 0);
    if (rc == 0)
        b->committed = true;
    return rc;
}

int queue_batch_result(const queue_batch_t *b, size_t i, uint64_t *orig_id)
{
    if (orig_id != NULL)
        *orig_id = 0;
    if (b == NULL || i >= b->n || !b->committed)
        return QUEUE_EINVAL;
    if (orig_id != NULL && b->ops[i].result == QUEUE_EDUPLICATE)
        *orig_id = b->ops[i].orig_id;
    return b->ops[i].result;
}

int queue_batch_set_purge(queue_batch_t *b, double before, size_t limit)
{
    if (b == NULL || limit == 0)
        return QUEUE_EINVAL;
    b->purge = true;
    b->purge_before_ms = queue__due_ms(before);
    b->purge_limit = limit;
    b->purged = 0;
    b->purge_more = false;
    b->committed = false;
    return 0;
}

int queue_batch_purge_result(const queue_batch_t *b, size_t *purged, bool *more)
{
    if (purged != NULL)
        *purged = 0;
    if (more != NULL)
        *more = false;
    if (b == NULL || !b->purge || !b->committed)
        return QUEUE_EINVAL;
    if (purged != NULL)
        *purged = b->purged;
    if (more != NULL)
        *more = b->purge_more;
    return 0;
}
