/*
 * queue.c - the LMDB environment: open/close, map growth, the write-txn
 * runner, job updates, reads and crash recovery. Batches are in batch.c,
 * the record format in record.c.
 */
#include "queue_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((uint64_t)1 << 30)
#define DEFAULT_MAP_MAX ((uint64_t)64 << 30)
#define DEFAULT_READERS 126u

/* --- Errors -------------------------------------------------------------- */

int queue__err_map(int rc)
{
    if (rc == 0)
        return 0;
    if (rc > 0)
        return -rc; /* errno from LMDB's system calls */
    if (rc < MDB_KEYEXIST || rc > MDB_LAST_ERRCODE)
        return rc; /* already ours: negative errno or QUEUE_E* */
    switch (rc) {
    case MDB_NOTFOUND:
        return QUEUE_ENOTFOUND;
    case MDB_KEYEXIST:
        return QUEUE_EDUPLICATE;
    case MDB_MAP_FULL:
        return QUEUE_EFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INCOMPATIBLE:
        return QUEUE_ECORRUPT;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        /* The file, not our schema: LMDB's own format or byte order. */
        return QUEUE_EFORMAT;
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
        return -E2BIG;
    case MDB_READERS_FULL:
    case MDB_TLS_FULL:
    case MDB_MAP_RESIZED:
        return -EAGAIN;
    case MDB_BAD_VALSIZE:
    case MDB_BAD_RSLOT:
    case MDB_BAD_TXN:
    case MDB_BAD_DBI:
    case MDB_DBS_FULL:
        return QUEUE_EINVAL;
    default: /* MDB_PANIC, MDB_PAGE_FULL: fatal inside LMDB */
        return -EIO;
    }
}

/* --- Reads: the shared lock and the cached read txn ---------------------- */

int queue__rd_begin(queue_t *q, queue__rd_t *r)
{
    int rc;

    r->txn = NULL;
    r->cached = false;
    r->nested = false;
    /* Inside a read of this thread's: its txn, and its hold on the lock.
     * (A txn per nested read cost a reader slot under LMDB's process-shared
     * mutex and two allocations: refills did it once per job.) */
    if (pthread_equal(atomic_load_explicit(&q->rtxn_owner, memory_order_relaxed), pthread_self())) {
        r->txn = q->rtxn;
        r->nested = true;
        return 0;
    }
    rc = pthread_rwlock_rdlock(&q->rwlock);
    if (rc != 0)
        return -rc;
    if (q->broken) {
        rc = -EIO;
        goto fail;
    }
    if (!atomic_flag_test_and_set(&q->rtxn_busy)) {
        /* We own q->rtxn until rd_end. */
        if (q->rtxn != NULL && mdb_txn_renew(q->rtxn) != 0) {
            mdb_txn_abort(q->rtxn);
            q->rtxn = NULL;
        }
        if (q->rtxn == NULL) {
            rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &q->rtxn);
            if (rc != 0) {
                q->rtxn = NULL;
                atomic_flag_clear(&q->rtxn_busy);
                rc = queue__err_map(rc);
                goto fail;
            }
        }
        r->txn = q->rtxn;
        r->cached = true;
        atomic_store_explicit(&q->rtxn_owner, pthread_self(), memory_order_relaxed);
        return 0;
    }
    /* Another thread holds the cached txn (or this read nests in one that
     * had to open its own): a txn of its own (fine with MDB_NOTLS). */
    rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &r->txn);
    if (rc != 0) {
        r->txn = NULL;
        rc = queue__err_map(rc);
        goto fail;
    }
    return 0;
fail:
    pthread_rwlock_unlock(&q->rwlock);
    return rc;
}

void queue__rd_end(queue_t *q, queue__rd_t *r)
{
    if (r->nested) {
        r->txn = NULL; /* the enclosing read ends it */
        return;
    }
    if (r->cached) {
        atomic_store_explicit(&q->rtxn_owner, (pthread_t)0, memory_order_relaxed);
        mdb_txn_reset(r->txn);
        atomic_flag_clear(&q->rtxn_busy);
    } else {
        mdb_txn_abort(r->txn);
    }
    r->txn = NULL;
    pthread_rwlock_unlock(&q->rwlock);
}

/* --- Map growth and the write runner ------------------------------------- */

static size_t page_round(uint64_t n)
{
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t p = ps > 0 ? (uint64_t)ps : 4096;
    n = (n + p - 1) / p * p;
    return n > SIZE_MAX ? (size_t)(SIZE_MAX / p * p) : (size_t)n;
}

/* Sets the map to `size` (LMDB raises it to the pages in use if smaller)
 * and records what it became. Called with no txn of ours open on this
 * thread; waits for reads on other threads to end. */
static int map_set(queue_t *q, size_t size)
{
    MDB_envinfo info;
    int rc;

    rc = pthread_rwlock_wrlock(&q->rwlock);
    if (rc != 0)
        return -rc;
    rc = mdb_env_set_mapsize(q->env, size);
    if (rc == 0 && mdb_env_info(q->env, &info) == 0) {
        q->map_size = info.me_mapsize;
    } else if (rc != 0) {
        /* LMDB unmaps before it remaps: a failed remap leaves no map. The
         * next write reopens the environment (env_reopen). */
        q->broken = true;
    }
    pthread_rwlock_unlock(&q->rwlock);
    return queue__err_map(rc);
}

/* Doubles the map up to `limit`. */
static int map_grow(queue_t *q, size_t limit)
{
    if (q->map_size >= limit)
        return QUEUE_EFULL;
    return map_set(q, q->map_size > limit / 2 ? limit : page_round((uint64_t)q->map_size * 2));
}

/* Room one unfinished job may need to finish: its record grows (a wamid,
 * a last error), a retention entry is added, and pages split on the way
 * (an audit measured 77-85 bytes per job; this leaves half again). */
#define FINISH_BYTES 192
/* An EIO from a write with less than this free on the disk is ENOSPC. */
#define DISK_FULL_BELOW ((size_t)4 << 20)

/* How far batches that add jobs may take the map: map_max less a reserve
 * kept for state changes and purges, so the jobs already accepted can
 * always move on and be purged - which is how space returns - even while
 * new jobs get QUEUE_EFULL. The reserve is 1/32 of the map (1 MiB to
 * 256 MiB) plus FINISH_BYTES for every unfinished job, rounded up to MiB
 * (fewer remaps), at most half the map. A fixed reserve alone ran out: a
 * 16 MiB store full of small queued jobs could not finish them, and a
 * restart did not help. */
static size_t job_limit(const queue_t *q)
{
    const size_t mib = (size_t)1 << 20;
    size_t max = q->map_cfg < q->map_max ? q->map_cfg : q->map_max;
    size_t r = max / 32;
    uint64_t finish = q->unfinished * FINISH_BYTES;

    if (r < mib)
        r = mib;
    if (r > 256 * mib)
        r = 256 * mib;
    if (finish > max / 2)
        finish = max / 2;
    r += (size_t)finish;
    r = (r + mib - 1) / mib * mib;
    if (r > max / 2)
        r = max / 2;
    return page_round(max - r);
}

static void unfinished_set(queue_t *q, const uint64_t *counts)
{
    q->unfinished =
        counts[QUEUE_STATE_QUEUED] + counts[QUEUE_STATE_SENDING] + counts[QUEUE_STATE_RETRYING];
}

/* The per-state counters in `txn`'s snapshot into counts[1..QUEUE_STATE_MAX]
 * (counts[0] = 0). 0, QUEUE_ECORRUPT when missing or short, or an LMDB code. */
static int counts_read(const queue_t *q, MDB_txn *txn, uint64_t counts[QUEUE_STATE_MAX + 1])
{
    MDB_val k = {sizeof QUEUE__META_COUNTS - 1, QUEUE__META_COUNTS}, v;
    int rc = mdb_get(txn, q->db_meta, &k, &v);

    if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size < 8 * QUEUE_STATE_MAX))
        return QUEUE_ECORRUPT;
    if (rc != 0)
        return rc;
    counts[0] = 0;
    for (int i = 1; i <= QUEUE_STATE_MAX; i++)
        counts[i] = queue__be64_get((const unsigned char *)v.mv_data + 8 * (i - 1));
    return 0;
}

int queue__counts_load(queue__wtxn_t *w)
{
    int rc;

    if (w->counts_loaded)
        return 0;
    rc = counts_read(w->q, w->txn, w->counts);
    if (rc != 0)
        return rc;
    w->counts_loaded = true;
    return 0;
}

static int counts_store(queue__wtxn_t *w)
{
    unsigned char buf[8 * QUEUE_STATE_MAX];
    MDB_val k = {sizeof QUEUE__META_COUNTS - 1, QUEUE__META_COUNTS}, v = {sizeof buf, buf};

    for (int i = 1; i <= QUEUE_STATE_MAX; i++)
        queue__be64_put(buf + 8 * (i - 1), w->counts[i]);
    return mdb_put(w->txn, w->q->db_meta, &k, &v, 0);
}

int queue__counts_move(queue__wtxn_t *w, int from, int to)
{
    int rc = queue__counts_load(w);
    if (rc != 0)
        return rc;
    if (from >= 1 && from <= QUEUE_STATE_MAX && w->counts[from] > 0)
        w->counts[from]--;
    if (to >= 1 && to <= QUEUE_STATE_MAX)
        w->counts[to]++;
    w->counts_dirty = true;
    return 0;
}

static int write_once(queue_t *q, queue__write_fn fn, void *arg)
{
    queue__wtxn_t w;
    int rc;

    memset(&w, 0, sizeof w);
    w.q = q;
    rc = mdb_txn_begin(q->env, NULL, 0, &w.txn);
    if (rc != 0)
        return rc;
    rc = fn(&w, arg);
    if (rc == 0 && w.counts_dirty)
        rc = counts_store(&w);
    if (rc == 0)
        rc = queue__campaign_flush(&w);
    queue__campaign_cache_free(&w);
    if (rc != 0) {
        mdb_txn_abort(w.txn);
        return rc;
    }
    /* Syncs data, then meta (no MDB_NOSYNC/NOMETASYNC); frees the txn
     * whether it succeeds or not. */
    rc = mdb_txn_commit(w.txn);
    if (rc == 0 && w.counts_loaded)
        unfinished_set(q, w.counts);
    if (rc == 0 && w.purge_freed_set)
        q->purge_freed = w.purge_freed;
    return rc;
}

static int env_reopen(queue_t *q);
static bool env_panicked(queue_t *q);

/* Bytes free for us on the state dir's filesystem; SIZE_MAX when unknown. */
static size_t disk_free(const queue_t *q)
{
    struct statvfs sv;

    if (statvfs(q->dir, &sv) != 0)
        return SIZE_MAX;
    if ((uint64_t)sv.f_bavail > SIZE_MAX / (sv.f_frsize ? sv.f_frsize : 1))
        return SIZE_MAX;
    return (size_t)sv.f_bavail * sv.f_frsize;
}

/* queue_options_t.disk_min_free: may new jobs be written? */
static bool disk_room_for_jobs(const queue_t *q)
{
    uint64_t need;

    if (q->disk_min_free == 0)
        return true;
    need = (uint64_t)q->disk_min_free + q->unfinished * FINISH_BYTES;
    return disk_free(q) >= need;
}

int queue__write_run_ex(queue_t *q, queue__write_fn fn, void *arg, bool adds_jobs)
{
    size_t limit;
    int rc;

    if (q->broken && (rc = env_reopen(q)) != 0)
        return rc;
    if (adds_jobs && !disk_room_for_jobs(q))
        return QUEUE_ELOWDISK;
    limit = adds_jobs ? job_limit(q) : q->map_max;
    /* A batch without jobs may have grown the map into the reserve; new
     * jobs stay below it (LMDB keeps the map at least at what is used). */
    if (q->map_size > limit && (rc = map_set(q, limit)) != 0)
        return rc;
    for (;;) {
        rc = write_once(q, fn, arg);
        if (rc == MDB_MAP_FULL) {
            rc = map_grow(q, limit);
            if (rc != 0)
                return rc;
            continue;
        }
        /* This batch failed either way; make the store usable for the
         * next one right away (reads too) if LMDB gave up on the env. */
        if (rc != 0 && env_panicked(q))
            (void)env_reopen(q);
        /* A full disk shows as a short write, which LMDB reports as EIO:
         * name it for what it is when the filesystem has no room left. */
        if (rc == EIO && disk_free(q) < DISK_FULL_BELOW)
            rc = ENOSPC;
        return queue__err_map(rc);
    }
}

int queue__write_run(queue_t *q, queue__write_fn fn, void *arg)
{
    return queue__write_run_ex(q, fn, arg, false);
}

/* --- Due index and job updates ------------------------------------------ */

int queue__idx_put(queue__wtxn_t *w, MDB_cursor **cur, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    int rc;

    if (*cur == NULL && (rc = mdb_cursor_open(w->txn, dbi, cur)) != 0)
        return rc;
    return mdb_cursor_put(*cur, k, v, 0);
}

int queue__idx_add(queue__wtxn_t *w, MDB_cursor **cur, MDB_dbi dbi, MDB_val *k, bool *added)
{
    MDB_val v = {0, NULL};
    int rc;

    *added = false;
    if (*cur == NULL && (rc = mdb_cursor_open(w->txn, dbi, cur)) != 0)
        return rc;
    /* LMDB answers MDB_KEYEXIST from its search, before it makes the page
     * dirty: a key that is already there costs no write. */
    rc = mdb_cursor_put(*cur, k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return 0;
    *added = rc == 0;
    return rc;
}

int queue__idx_del(queue__wtxn_t *w, MDB_cursor **cur, MDB_dbi dbi, MDB_val *k)
{
    MDB_val v;
    int rc;

    if (*cur == NULL && (rc = mdb_cursor_open(w->txn, dbi, cur)) != 0)
        return rc;
    rc = mdb_cursor_get(*cur, k, &v, MDB_SET);
    if (rc == 0)
        rc = mdb_cursor_del(*cur, 0);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int queue__due_put(queue__wtxn_t *w, uint64_t due_ms, uint64_t id)
{
    unsigned char kb[16];
    MDB_val k = {sizeof kb, kb}, v = {0, NULL};

    queue__due_key(kb, due_ms, id);
    return queue__idx_put(w, &w->due_cur, w->q->db_due, &k, &v);
}

int queue__due_del(queue__wtxn_t *w, uint64_t due_ms, uint64_t id)
{
    unsigned char kb[16];
    MDB_val k = {sizeof kb, kb};

    queue__due_key(kb, due_ms, id);
    return queue__idx_del(w, &w->due_cur, w->q->db_due, &k);
}

int queue__job_update(queue__wtxn_t *w, uint64_t id, const queue__patch_t *p, int *result)
{
    unsigned char kb[8], buf[QUEUE__REC_MAX_LEN];
    MDB_val k = {sizeof kb, kb}, v;
    queue__record_t r;
    char okey[QUEUE_MAX_KEY_LEN + 1];
    size_t okey_len = 0;
    uint64_t old_ms, new_ms;
    uint8_t old_state;
    double old_updated;
    size_t len;
    int rc;

    *result = 0;
    queue__be64_put(kb, id);
    /* Through a cursor: the put below replaces the record where the get
     * found it, one B-tree search instead of two. */
    if (w->jobs_cur == NULL && (rc = mdb_cursor_open(w->txn, w->q->db_jobs, &w->jobs_cur)) != 0)
        return rc;
    rc = mdb_cursor_get(w->jobs_cur, &k, &v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND) {
        *result = QUEUE_ENOTFOUND;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (queue__record_parse(v.mv_data, v.mv_size, &r) != 0) {
        *result = QUEUE_ECORRUPT;
        return 0;
    }
    if (p->only_from != 0 && (p->only_from & QUEUE_STATE_BIT(r.state)) == 0) {
        *result = QUEUE_ESTATE;
        return 0;
    }
    if (p->flags_only) {
        r.flags = (uint8_t)((r.flags & ~p->clear_flags) | p->set_flags);
        rc = queue__record_encode(&r, buf, sizeof buf, &len);
        if (rc != 0)
            return rc;
        v.mv_data = buf;
        v.mv_size = len;
        k.mv_data = kb;
        k.mv_size = sizeof kb;
        return mdb_cursor_put(w->jobs_cur, &k, &v, MDB_CURRENT);
    }
    if (p->expires_at > 0)
        r.expires_at = p->expires_at;
    r.flags = (uint8_t)((r.flags & ~p->clear_flags) | p->set_flags);
    old_state = r.state;
    old_updated = r.updated_at;
    old_ms = queue__due_ms(r.next_attempt_at);
    /* The order key, copied now: r's views point into the page replaced
     * below. */
    if (queue__state_is_due(old_state) != queue__state_is_due(p->state))
        okey_len = queue__record_order_key(&r, okey, sizeof okey);
    r.state = p->state;
    r.attempts = p->attempts;
    r.updated_at = p->updated_at;
    if (queue__state_is_due(p->state))
        r.next_attempt_at = p->next_attempt_at;
    if (p->wamid.p != NULL)
        r.s[QUEUE__REC_WAMID] = p->wamid;
    if (p->has_err) {
        r.err_status = p->err_status;
        r.err_meta_code = p->err_meta_code;
        r.s[QUEUE__REC_ERR_CODE] = p->err_code;
        r.s[QUEUE__REC_ERR_MSG] = p->err_msg;
    }
    new_ms = queue__due_ms(r.next_attempt_at);
    /* Encode before the put: r's views point into the page being replaced. */
    rc = queue__record_encode(&r, buf, sizeof buf, &len);
    if (rc != 0)
        return rc;
    /* The campaign index first, while r's views are still valid; the
     * campaign is copied into the txn's cache before any write. */
    if (old_state != p->state) {
        rc = queue__campaign_move(w, r.s[QUEUE__REC_CAMPAIGN], id, old_state, p->state);
        if (rc != 0)
            return rc;
    }
    v.mv_data = buf;
    v.mv_size = len;
    k.mv_data = kb; /* the get pointed it into the page */
    k.mv_size = sizeof kb;
    rc = mdb_cursor_put(w->jobs_cur, &k, &v, MDB_CURRENT);
    if (rc != 0)
        return rc;
    if (queue__state_is_due(old_state) && queue__state_is_due(p->state) && old_ms == new_ms) {
        /* Same index key: nothing to move. */
    } else {
        if (queue__state_is_due(old_state)) {
            rc = queue__due_del(w, old_ms, id);
            if (rc != 0)
                return rc;
        }
        if (queue__state_is_due(p->state)) {
            rc = queue__due_put(w, new_ms, id);
            if (rc != 0)
                return rc;
        }
    }
    /* Unfinished jobs are in the order index; finished ones leave it. */
    if (okey_len > 0) {
        rc = queue__state_is_due(p->state) ? queue__order_put(w, okey, okey_len, id)
                                           : queue__order_del(w, okey, okey_len, id);
        if (rc != 0)
            return rc;
    }
    if (old_state != p->state) {
        rc = queue__counts_move(w, old_state, p->state);
        if (rc != 0)
            return rc;
    }
    /* Retention hook: the done index follows final states. */
    return queue__done_track(w, id, old_state, old_updated, p->state, p->updated_at);
}

/* --- Open and close ------------------------------------------------------ */

typedef struct open_ctx {
    uint32_t schema;  /* out: the schema found (before any upgrade) */
    uint64_t hwm;     /* out: high water mark from meta */
    uint64_t last_id; /* out: largest key of jobs */
} open_ctx_t;

int queue__jobs_each(queue__wtxn_t *w, queue__job_fn fn, void *user)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc, op;

    rc = mdb_cursor_open(w->txn, w->q->db_jobs, &cur);
    if (rc != 0)
        return rc;
    for (op = MDB_FIRST;; op = MDB_NEXT) {
        queue__record_t r;

        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if (k.mv_size != 8 || queue__record_parse(v.mv_data, v.mv_size, &r) != 0)
            continue;
        rc = fn(w, queue__be64_get(k.mv_data), &r, user);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc;
}

/* Brings an environment from schema `from` to `from + 1`, inside the
 * opening txn. A new schema adds its step here. */
static int schema_upgrade_step(queue__wtxn_t *w, uint32_t from)
{
    switch (from) {
    case 1: /* 2 adds the campaign index and counters */
        return queue__campaign_rebuild(w);
    case 2: /* 3 adds the done index of finished jobs */
        return queue__done_build(w);
    case 3: /* 4 writes records of version 2; version 1 ones stay readable */
        return 0;
    default:
        return QUEUE_ECORRUPT;
    }
}

static int open_dbs_fn(queue__wtxn_t *w, void *arg)
{
    open_ctx_t *oc = arg;
    queue_t *q = w->q;
    MDB_val k = {sizeof QUEUE__META_SCHEMA - 1, QUEUE__META_SCHEMA}, v, lk;
    MDB_cursor *cur = NULL;
    unsigned char sb[4];
    int rc;

    oc->schema = 0;
    oc->hwm = 0;
    oc->last_id = 0;
    if ((rc = mdb_dbi_open(w->txn, QUEUE__DB_META, MDB_CREATE, &q->db_meta)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_JOBS, MDB_CREATE, &q->db_jobs)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_BODIES, MDB_CREATE, &q->db_bodies)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_DUE, MDB_CREATE, &q->db_due)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_IDEM, MDB_CREATE, &q->db_idem)) != 0 ||
        (rc = queue__campaign_open(w)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_ORDER, MDB_CREATE, &q->db_order)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_PAUSES, MDB_CREATE, &q->db_pauses)) != 0 ||
        (rc = mdb_dbi_open(w->txn, QUEUE__DB_DONE, MDB_CREATE, &q->db_done)) != 0)
        return rc;
    /* A store written before the order index existed: index its unfinished
     * jobs now (once; afterwards the index is never empty while they are). */
    if ((rc = queue__order_build(w)) != 0)
        return rc;

    rc = mdb_cursor_open(w->txn, q->db_jobs, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &lk, &v, MDB_LAST);
    if (rc == 0 && lk.mv_size == 8)
        oc->last_id = queue__be64_get(lk.mv_data);
    else if (rc == 0)
        rc = QUEUE_ECORRUPT;
    else if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    if (rc != 0)
        return rc;

    rc = mdb_get(w->txn, q->db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        /* A new environment, or one that is not ours. */
        unsigned char zero[8 * QUEUE_STATE_MAX];
        MDB_val ck = {sizeof QUEUE__META_COUNTS - 1, QUEUE__META_COUNTS};
        MDB_val cv = {sizeof zero, zero};
        if (oc->last_id != 0)
            return QUEUE_ECORRUPT;
        memset(zero, 0, sizeof zero);
        queue__be32_put(sb, QUEUE_SCHEMA_VERSION);
        v.mv_data = sb;
        v.mv_size = sizeof sb;
        rc = mdb_put(w->txn, q->db_meta, &k, &v, 0);
        if (rc == 0)
            rc = mdb_put(w->txn, q->db_meta, &ck, &cv, 0);
        return rc;
    }
    if (rc != 0)
        return rc;
    if (v.mv_size != 4 || queue__be32_get(v.mv_data) == 0)
        return QUEUE_ECORRUPT;
    oc->schema = queue__be32_get(v.mv_data);
    if (oc->schema > QUEUE_SCHEMA_VERSION)
        return QUEUE_ESCHEMA;
    rc = queue__counts_load(w); /* present and well-formed, or ECORRUPT now */
    if (rc != 0)
        return rc;
    if (oc->schema < QUEUE_SCHEMA_VERSION) {
        /* Upgrade in this txn, one step per version. */
        for (uint32_t from = oc->schema; from < QUEUE_SCHEMA_VERSION; from++)
            if ((rc = schema_upgrade_step(w, from)) != 0)
                return rc;
        k.mv_data = QUEUE__META_SCHEMA;
        k.mv_size = sizeof QUEUE__META_SCHEMA - 1;
        queue__be32_put(sb, QUEUE_SCHEMA_VERSION);
        v.mv_data = sb;
        v.mv_size = sizeof sb;
        rc = mdb_put(w->txn, q->db_meta, &k, &v, 0);
        if (rc != 0)
            return rc;
    }
    k.mv_data = QUEUE__META_HWM;
    k.mv_size = sizeof QUEUE__META_HWM - 1;
    rc = mdb_get(w->txn, q->db_meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return QUEUE_ECORRUPT;
    oc->hwm = queue__be64_get(v.mv_data);
    return 0;
}

/* Creates and opens q->env in q->dir with q->map_size (raised to leave
 * room over the data). Returns 0 or a raw LMDB/errno code; on failure
 * q->env may be set and is released by queue_close or env_reopen. */
static int env_setup(queue_t *q)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc, dead;

    rc = mdb_env_create(&q->env);
    if (rc != 0) {
        q->env = NULL;
        return rc;
    }
    if ((rc = mdb_env_set_maxdbs(q->env, QUEUE__MAX_DBS)) != 0 ||
        (rc = mdb_env_set_maxreaders(q->env, q->readers)) != 0 ||
        (rc = mdb_env_set_mapsize(q->env, q->map_size)) != 0)
        return rc;
    /* Durable commits: no NOSYNC, NOMETASYNC or WRITEMAP. NOTLS because the
     * cached read txn and reads may move between threads. */
    rc = mdb_env_open(q->env, q->dir, MDB_NOTLS, 0600);
    if (rc != 0)
        return rc;
    rc = mdb_reader_check(q->env, &dead);
    if (rc != 0)
        return rc;
    /* LMDB raises a configured size below the data to exactly the used
     * pages, which would make the first commit grow the map. Start with room
     * instead: at least twice what is used (within the maximum). */
    rc = mdb_env_info(q->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(q->env, &st);
    if (rc != 0)
        return rc;
    q->map_size = info.me_mapsize;
    {
        uint64_t used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
        size_t want = page_round(used * 2);

        /* A store bigger than the configured maximum (it was lowered):
         * room by half again for its state changes and purges - at exactly
         * the pages in use not one job could move on; new jobs are refused
         * by job_limit until purges bring it below map_cfg. */
        if (used > q->map_cfg && q->map_max < page_round(used + used / 2))
            q->map_max = page_round(used + used / 2);
        if (q->map_max < q->map_size)
            q->map_max = q->map_size;
        if (want > q->map_max)
            want = q->map_max;
        if (want > q->map_size) {
            rc = mdb_env_set_mapsize(q->env, want);
            if (rc != 0)
                return rc;
            q->map_size = want;
        }
    }
    return 0;
}

/*
 * Closes and reopens the environment in place. Needed after LMDB declared
 * it unusable - a failed write of a meta page sets its fatal flag, and every
 * later transaction then fails with MDB_PANIC - or after a failed remap.
 * What is committed on disk is intact: a commit whose data or meta write
 * failed is never referenced by a valid meta page. Writer thread; holds the
 * lock exclusive, so no read is open meanwhile. On failure the store stays
 * `broken` (reads and writes get -EIO) and the next write tries again.
 */
static int env_reopen(queue_t *q)
{
    open_ctx_t oc;
    int rc;

    rc = pthread_rwlock_wrlock(&q->rwlock);
    if (rc != 0)
        return -rc;
    q->broken = true;
    if (q->rtxn != NULL) {
        mdb_txn_abort(q->rtxn);
        q->rtxn = NULL;
    }
    if (q->env != NULL) {
        mdb_env_close(q->env);
        q->env = NULL;
    }
    rc = env_setup(q);
    if (rc == 0)
        rc = write_once(q, open_dbs_fn, &oc);
    if (rc != 0 && q->env != NULL) {
        mdb_env_close(q->env);
        q->env = NULL;
    }
    if (rc == 0)
        q->broken = false;
    pthread_rwlock_unlock(&q->rwlock);
    return queue__err_map(rc);
}

/* True when LMDB refuses every transaction of this environment. */
static bool env_panicked(queue_t *q)
{
    MDB_txn *t;
    int rc = mdb_txn_begin(q->env, NULL, MDB_RDONLY, &t);

    if (rc == 0)
        mdb_txn_abort(t);
    return rc == MDB_PANIC;
}

int queue_open(const char *dir, const queue_options_t *opt, queue_t **out)
{
    char path[PATH_MAX];
    pthread_rwlockattr_t attr;
    uint64_t map_size = DEFAULT_MAP_SIZE, map_max = DEFAULT_MAP_MAX;
    unsigned readers = DEFAULT_READERS;
    open_ctx_t oc = {0};
    queue_t *q;
    int rc;

    if (out == NULL)
        return QUEUE_EINVAL;
    *out = NULL;
    if (dir == NULL || *dir == '\0')
        return QUEUE_EINVAL;
    if (opt != NULL) {
        if (opt->map_size != 0)
            map_size = opt->map_size;
        if (opt->map_size_max != 0)
            map_max = opt->map_size_max;
        if (opt->max_readers != 0)
            readers = opt->max_readers;
    }
    rc = snprintf(path, sizeof path, "%s/lock", dir);
    if (rc < 0 || (size_t)rc >= sizeof path)
        return -ENAMETOOLONG;

    q = calloc(1, sizeof *q);
    if (q == NULL)
        return -ENOMEM;
    q->lock_fd = -1;
    atomic_flag_clear(&q->rtxn_busy);
    atomic_init(&q->rtxn_owner, (pthread_t)0);

    /* The lock comes first: LMDB must never be opened twice in a process,
     * and flock is per open file description, so even a second open in this
     * process fails here. */
    q->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (q->lock_fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (flock(q->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? QUEUE_ELOCKED : -errno;
        goto fail;
    }

    rc = pthread_rwlockattr_init(&attr);
    if (rc != 0) {
        rc = -rc;
        goto fail;
    }
    /* Reader-preferring (see struct queue): nested reads must not block. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_READER_NP);
    rc = pthread_rwlock_init(&q->rwlock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        rc = -rc;
        goto fail;
    }
    q->rwlock_ok = true;

    /* The initial map never exceeds the configured maximum. */
    if (map_size > map_max)
        map_size = map_max;
    q->map_size = page_round(map_size);
    q->map_max = page_round(map_max);
    q->map_cfg = q->map_max;
    q->disk_min_free = opt != NULL ? opt->disk_min_free : 0;
    q->readers = readers;
    /* Unknown: the last txn of the previous run may have been a purge that
     * freed pages (stopped before its marker). Nothing else may write after
     * this open - a full store whose jobs that purge took - so the first
     * purge writes the marker. */
    q->purge_freed = true;
    q->dir = strdup(dir);
    if (q->dir == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = env_setup(q);
    if (rc != 0)
        goto fail_mdb;

    rc = queue__write_run(q, open_dbs_fn, &oc);
    if (rc != 0)
        goto fail;
    /* The files' names: a synced commit makes data.mdb's contents durable,
     * not its directory entry (POSIX; the lock files were just created). */
    rc = queue_dir_sync(dir);
    if (rc != 0)
        goto fail;
    q->next_id = (oc.hwm > oc.last_id ? oc.hwm : oc.last_id) + 1;
    {
        uint64_t counts[QUEUE_STATE_MAX + 1];
        rc = queue_counts(q, counts);
        if (rc != 0)
            goto fail;
        unfinished_set(q, counts);
    }
    *out = q;
    return 0;

fail_mdb:
    rc = queue__err_map(rc);
fail:
    queue_close(q);
    return rc;
}

int queue_store_found(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    int n;

    if (dir == NULL)
        return QUEUE_EINVAL;
    /* LMDB's data file, as mdb_env_open names it in a directory. */
    n = snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? QUEUE_FOUND_NONE : -errno;
    return st.st_size == 0 ? QUEUE_FOUND_EMPTY : QUEUE_FOUND_STORE;
}

int queue_dir_sync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0 && errno != EINVAL) /* EINVAL: a filesystem without it */
        rc = -errno;
    close(fd);
    return rc;
}

void queue_close(queue_t *q)
{
    if (q == NULL)
        return;
    if (q->rtxn != NULL)
        mdb_txn_abort(q->rtxn);
    if (q->env != NULL)
        mdb_env_close(q->env);
    if (q->rwlock_ok)
        pthread_rwlock_destroy(&q->rwlock);
    /* Closing the descriptor releases the flock. */
    if (q->lock_fd >= 0)
        close(q->lock_fd);
    free(q->dir);
    free(q);
}

uint64_t queue_id_next(queue_t *q)
{
    return q->next_id++;
}

uint64_t queue_id_last(const queue_t *q)
{
    return q->next_id - 1;
}

/* --- Recovery ------------------------------------------------------------ */

typedef struct recover_ctx {
    const queue_recover_options_t *opt;
    size_t n;
} recover_ctx_t;

typedef struct sending_job {
    uint64_t id;
    uint16_t attempts;
    uint8_t flags;
} sending_job_t;

static int recover_fn(queue__wtxn_t *w, void *arg)
{
    recover_ctx_t *ctx = arg;
    sending_job_t *list = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint64_t want;
    int rc, op;

    ctx->n = 0;
    rc = queue__counts_load(w);
    if (rc != 0)
        return rc;
    want = w->counts[QUEUE_STATE_SENDING];
    if (want == 0)
        return 0;
    /* Every sending job is in the due index; collect them first, then
     * change them, so the cursor never walks a tree being modified. */
    rc = mdb_cursor_open(w->txn, w->q->db_due, &cur);
    if (rc != 0)
        return rc;
    for (op = MDB_FIRST; n < want; op = MDB_NEXT) {
        unsigned char idb[8];
        MDB_val jk = {sizeof idb, idb}, jv;
        queue__record_t r;

        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            goto out;
        if (k.mv_size != 16)
            continue;
        memcpy(idb, (const unsigned char *)k.mv_data + 8, 8);
        rc = mdb_get(w->txn, w->q->db_jobs, &jk, &jv);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc != 0)
            goto out;
        if (queue__record_parse(jv.mv_data, jv.mv_size, &r) != 0 || r.state != QUEUE_STATE_SENDING)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            sending_job_t *nl = realloc(list, ncap * sizeof *nl);
            if (nl == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            list = nl;
            cap = ncap;
        }
        list[n].id = queue__be64_get(idb);
        list[n].attempts = r.attempts;
        list[n].flags = r.flags;
        n++;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    for (size_t i = 0; i < n; i++) {
        const queue_recover_options_t *o = ctx->opt;
        queue__patch_t p;
        int res;

        memset(&p, 0, sizeof p);
        p.attempts = list[i].attempts;
        p.updated_at = o->now;
        p.next_attempt_at = o->now;
        const queue_error_info_t *e = NULL;

        if (o->at_most_once) {
            p.state = QUEUE_STATE_UNCERTAIN;
            e = o->uncertain_error;
        } else if (list[i].flags & o->cancel_flags) {
            p.state = QUEUE_STATE_CANCELLED;
            e = o->cancel_error;
        } else {
            p.state = QUEUE_STATE_QUEUED;
            p.set_flags = o->requeue_flags;
        }
        if (e != NULL) {
            p.has_err = true;
            p.err_status = e->status;
            p.err_meta_code = queue__meta_enc(e);
            p.err_code.p = e->code;
            p.err_code.len = strnlen(e->code, QUEUE_ERR_CODE_LEN - 1);
            p.err_msg.p = e->message;
            p.err_msg.len = strnlen(e->message, QUEUE_ERR_MSG_LEN - 1);
        }
        rc = queue__job_update(w, list[i].id, &p, &res);
        if (rc != 0)
            goto out;
        if (res == 0)
            ctx->n++;
    }
out:
    if (cur != NULL)
        mdb_cursor_close(cur);
    free(list);
    return rc;
}

int queue_recover(queue_t *q, const queue_recover_options_t *opt, size_t *n_recovered)
{
    recover_ctx_t ctx = {opt, 0};
    int rc;

    if (n_recovered != NULL)
        *n_recovered = 0;
    if (q == NULL || opt == NULL)
        return QUEUE_EINVAL;
    rc = queue__write_run(q, recover_fn, &ctx);
    if (rc == 0 && n_recovered != NULL)
        *n_recovered = ctx.n;
    return rc;
}

/* --- Reads --------------------------------------------------------------- */

static int job_get_txn(queue_t *q, MDB_txn *txn, uint64_t id, queue_job_t *out)
{
    unsigned char kb[8];
    MDB_val k = {sizeof kb, kb}, v;
    int rc;

    queue__be64_put(kb, id);
    rc = mdb_get(txn, q->db_jobs, &k, &v);
    if (rc != 0)
        return queue__err_map(rc);
    rc = queue__record_decode(v.mv_data, v.mv_size, out);
    if (rc == 0)
        out->id = id;
    return rc;
}

int queue_job_get(queue_t *q, uint64_t id, queue_job_t *out)
{
    queue__rd_t r;
    int rc;

    if (out == NULL)
        return QUEUE_EINVAL;
    memset(out, 0, sizeof *out);
    if (q == NULL)
        return QUEUE_EINVAL;
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = job_get_txn(q, r.txn, id, out);
    queue__rd_end(q, &r);
    return rc;
}

int queue_job_get_by_key(queue_t *q, const char *idempotency_key, queue_job_t *out)
{
    MDB_val k, v;
    size_t len;
    queue__rd_t r;
    int rc;

    if (out == NULL)
        return QUEUE_EINVAL;
    memset(out, 0, sizeof *out);
    if (q == NULL || idempotency_key == NULL)
        return QUEUE_EINVAL;
    len = strnlen(idempotency_key, QUEUE_MAX_KEY_LEN + 1);
    if (len == 0 || len > QUEUE_MAX_KEY_LEN)
        return QUEUE_EINVAL;
    k.mv_data = (void *)idempotency_key;
    k.mv_size = len;
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = mdb_get(r.txn, q->db_idem, &k, &v);
    if (rc == 0 && v.mv_size != 8)
        rc = QUEUE_ECORRUPT;
    if (rc == 0)
        rc = job_get_txn(q, r.txn, queue__be64_get(v.mv_data), out);
    queue__rd_end(q, &r);
    return queue__err_map(rc);
}

void queue_job_clear(queue_job_t *job)
{
    if (job == NULL)
        return;
    free(job->priv_);
    memset(job, 0, sizeof *job);
}

int queue_job_body(queue_t *q, uint64_t id, char **body, size_t *len)
{
    queue_reader_t *rd;
    int rc;

    if (body == NULL || len == NULL)
        return QUEUE_EINVAL;
    *body = NULL;
    *len = 0;
    rc = queue_reader_open(q, &rd);
    if (rc != 0)
        return rc;
    rc = queue_reader_body(rd, id, body, len);
    queue_reader_close(rd);
    return rc;
}

struct queue_reader {
    queue_t *q;
    queue__rd_t r;
    MDB_cursor *bodies;
};

int queue_reader_open(queue_t *q, queue_reader_t **out)
{
    queue_reader_t *rd;
    int rc;

    if (out == NULL)
        return QUEUE_EINVAL;
    *out = NULL;
    if (q == NULL)
        return QUEUE_EINVAL;
    rd = calloc(1, sizeof(*rd));
    if (rd == NULL)
        return -ENOMEM;
    rd->q = q;
    rc = queue__rd_begin(q, &rd->r);
    if (rc != 0)
        goto fail;
    rc = mdb_cursor_open(rd->r.txn, q->db_bodies, &rd->bodies);
    if (rc != 0) {
        queue__rd_end(q, &rd->r);
        rc = queue__err_map(rc);
        goto fail;
    }
    *out = rd;
    return 0;
fail:
    free(rd);
    return rc;
}

int queue_reader_body(queue_reader_t *rd, uint64_t id, char **body, size_t *len)
{
    unsigned char kb[8];
    MDB_val k = {sizeof kb, kb}, v;
    char *copy;
    int rc;

    if (body == NULL || len == NULL)
        return QUEUE_EINVAL;
    *body = NULL;
    *len = 0;
    if (rd == NULL)
        return QUEUE_EINVAL;
    queue__be64_put(kb, id);
    rc = mdb_cursor_get(rd->bodies, &k, &v, MDB_SET_KEY);
    if (rc != 0)
        return queue__err_map(rc);
    copy = malloc(v.mv_size + 1);
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, v.mv_data, v.mv_size);
    copy[v.mv_size] = '\0';
    *body = copy;
    *len = v.mv_size;
    return 0;
}

void queue_reader_close(queue_reader_t *rd)
{
    if (rd == NULL)
        return;
    mdb_cursor_close(rd->bodies);
    queue__rd_end(rd->q, &rd->r);
    free(rd);
}

int queue__due_entry_read(MDB_cursor *jobs, uint64_t id, char *sbuf, queue_due_entry_t *e)
{
    static const int idx[4] = {QUEUE__REC_PHONE, QUEUE__REC_TO, QUEUE__REC_ORDER_KEY,
                               QUEUE__REC_CAMPAIGN};
    const char *sp[4];
    unsigned char idb[8];
    MDB_val jk = {sizeof idb, idb}, jv;
    queue__record_t rec;
    char *w = sbuf;
    int rc;

    queue__be64_put(idb, id);
    rc = mdb_cursor_get(jobs, &jk, &jv, MDB_SET_KEY);
    if (rc != 0)
        return queue__err_map(rc);
    rc = queue__record_parse(jv.mv_data, jv.mv_size, &rec);
    if (rc != 0)
        return rc;
    /* Strings copied out so the callback gets NUL-terminated text. */
    for (int i = 0; i < 4; i++) {
        const queue__str_t *s = &rec.s[idx[i]];
        if (s->p == NULL) {
            sp[i] = NULL;
            continue;
        }
        memcpy(w, s->p, s->len);
        w[s->len] = '\0';
        sp[i] = w;
        w += s->len + 1;
    }
    e->id = id;
    e->due = rec.next_attempt_at;
    e->problem = 0;
    e->state = rec.state;
    e->type = rec.type;
    e->priority = rec.priority;
    e->attempts = rec.attempts;
    e->max_attempts = rec.max_attempts;
    e->flags = rec.flags;
    e->expires_at = rec.expires_at;
    e->phone_number_id = sp[0];
    e->to = sp[1];
    e->order_key = sp[2];
    e->campaign = sp[3];
    return 0;
}

int queue_due_scan(queue_t *q, double after_due, uint64_t after_id, double until, size_t limit,
                   queue_due_cb cb, void *user)
{
    unsigned char start[16];
    MDB_cursor *cur = NULL, *jcur = NULL;
    MDB_val k = {sizeof start, start}, v;
    uint64_t until_ms = queue__due_ms(until);
    size_t seen = 0;
    queue__rd_t r;
    int rc;

    if (q == NULL || cb == NULL)
        return QUEUE_EINVAL;
    if (limit == 0)
        return 0;
    queue__due_key(start, queue__due_ms(after_due), after_id);
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(r.txn, q->db_due, &cur);
    if (rc == 0)
        rc = mdb_cursor_open(r.txn, q->db_jobs, &jcur);
    if (rc != 0)
        goto out;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    /* Strictly after (after_due, after_id): skip an exact match. */
    if (rc == 0 && k.mv_size == sizeof start && memcmp(k.mv_data, start, sizeof start) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    while (rc == 0 && seen < limit) {
        char sbuf[QUEUE__DUE_SBUF];
        queue_due_entry_t e;

        if (k.mv_size != 16) {
            rc = QUEUE_ECORRUPT;
            break;
        }
        if (queue__be64_get(k.mv_data) > until_ms)
            break;
        rc = queue__due_entry_read(jcur, queue__be64_get((const unsigned char *)k.mv_data + 8),
                                   sbuf, &e);
        if (rc == QUEUE_ENOTFOUND || rc == QUEUE_ECORRUPT) {
            /* Damage (an index entry without its job, a record this build
             * cannot read): reported, and the jobs after it still go. */
            memset(&e, 0, sizeof(e));
            e.id = queue__be64_get((const unsigned char *)k.mv_data + 8);
            e.due = (double)queue__be64_get(k.mv_data) / 1000.0;
            e.problem = QUEUE_ECORRUPT;
            rc = 0;
        }
        if (rc != 0)
            break;
        seen++;
        if (cb(&e, user) != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
out:
    if (jcur != NULL)
        mdb_cursor_close(jcur);
    if (cur != NULL)
        mdb_cursor_close(cur);
    queue__rd_end(q, &r);
    return queue__err_map(rc);
}

/* The due entries the last repair kept for undecodable records, in txn's
 * snapshot (0 when no repair kept any). */
static int due_unreadable_read(const queue_t *q, MDB_txn *txn, uint64_t *n)
{
    MDB_val k = {sizeof QUEUE__META_UNREADABLE - 1, QUEUE__META_UNREADABLE}, v;
    int rc = mdb_get(txn, q->db_meta, &k, &v);

    *n = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && v.mv_size != 8)
        return QUEUE_ECORRUPT;
    if (rc == 0)
        *n = queue__be64_get(v.mv_data);
    return rc;
}

int queue_due_check(queue_t *q, queue_due_count_t *out)
{
    uint64_t counts[QUEUE_STATE_MAX + 1];
    MDB_stat st;
    queue__rd_t r;
    int rc;

    if (q == NULL || out == NULL)
        return QUEUE_EINVAL;
    memset(out, 0, sizeof *out);
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = mdb_stat(r.txn, q->db_due, &st);
    if (rc == 0)
        rc = counts_read(q, r.txn, counts);
    if (rc == 0)
        rc = due_unreadable_read(q, r.txn, &out->unreadable);
    if (rc == 0)
        rc = queue__campaign_unreadable(q, r.txn, &out->camp_unreadable);
    if (rc == 0) {
        out->due_entries = st.ms_entries;
        for (int i = 1; i <= QUEUE_STATE_MAX; i++)
            if (queue__state_is_due(i))
                out->unfinished += counts[i];
        out->agree =
            out->due_entries == out->unfinished + out->unreadable && out->camp_unreadable == 0;
    }
    queue__rd_end(q, &r);
    return queue__err_map(rc);
}

int queue_counts(queue_t *q, uint64_t counts[QUEUE_STATE_MAX + 1])
{
    queue__rd_t r;
    int rc;

    if (q == NULL || counts == NULL)
        return QUEUE_EINVAL;
    memset(counts, 0, sizeof(uint64_t) * (QUEUE_STATE_MAX + 1));
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = counts_read(q, r.txn, counts);
    if (rc != 0)
        memset(counts, 0, sizeof(uint64_t) * (QUEUE_STATE_MAX + 1));
    queue__rd_end(q, &r);
    return queue__err_map(rc);
}

int queue_space(queue_t *q, size_t *map_size, size_t *used)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc;

    if (q == NULL)
        return QUEUE_EINVAL;
    rc = pthread_rwlock_rdlock(&q->rwlock);
    if (rc != 0)
        return -rc;
    rc = q->broken ? -EIO : mdb_env_info(q->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(q->env, &st);
    pthread_rwlock_unlock(&q->rwlock);
    if (rc != 0)
        return queue__err_map(rc);
    if (map_size != NULL)
        *map_size = info.me_mapsize;
    if (used != NULL)
        *used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    return 0;
}
