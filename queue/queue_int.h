/*
 * queue_int.h - internals shared by the files of the queue module.
 *
 * Not installed and not included outside queue/ except by the module's own
 * tests and fuzz targets. Names here use the `queue__` prefix.
 */
#ifndef AVP_QUEUE_INT_H
#define AVP_QUEUE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lmdb.h>
#include <pthread.h>

#include "queue.h"

/* --- Layout of the environment ----------------------------------------- */

/* Named databases. `meta` holds the keys below; `jobs` maps the 8-byte
 * big-endian id to a record; `bodies` maps the id to the request body (kept
 * apart so a state change never rewrites a large body); `due` holds one
 * empty-valued key (8-byte BE due ms, 8-byte BE id) per job in state queued,
 * retrying or sending; `idem` maps an idempotency key to the 8-byte BE id. */
#define QUEUE__DB_META "meta"
#define QUEUE__DB_JOBS "jobs"
#define QUEUE__DB_BODIES "bodies"
#define QUEUE__DB_DUE "due"
#define QUEUE__DB_IDEM "idem"
/* Campaigns (campaign.c): `camp` maps a campaign name to its record (u32 BE
 * campaign number, then QUEUE_STATE_MAX u64 BE job counts by state);
 * `cjobs` holds one empty-valued key (u32 BE campaign number, u64 BE job id)
 * per job of a campaign; `cstate` one key (u32 BE campaign number, u8 state,
 * u64 BE job id) per job, moved on every state change. Numbers instead of
 * names keep the index keys at 12/13 bytes whatever the name's length. */
#define QUEUE__DB_CAMP "camp"
#define QUEUE__DB_CJOBS "cjobs"
#define QUEUE__DB_CSTATE "cstate"
/* `order` holds one empty-valued key (order key bytes, 0x00, 8-byte BE id)
 * per unfinished job (queued, retrying, sending): the store's answer to "is
 * this the oldest unfinished job of its key?". Order keys hold no NUL, so
 * the 0x00 ends the key and sorts a key's entries together, by id.
 * `pauses` maps (kind byte, name) to a reason (see queue_pause_kind_t). */
#define QUEUE__DB_ORDER "order"
#define QUEUE__DB_PAUSES "pauses"
/* `done` (schema 3): one empty-valued key (8-byte BE ms of the time the job
 * reached its final state, i.e. its updated_at, 8-byte BE id) per job in a
 * final state; retention.c purges from its start. */
#define QUEUE__DB_DONE "done"
/* Room for later indexes without reopening. */
#define QUEUE__MAX_DBS 12

/* Keys of `meta`. schema: u32 BE; hwm: u64 BE, the highest job id ever used
 * by a committed batch; counts: QUEUE_STATE_MAX u64 BE, jobs per state 1..N. */
#define QUEUE__META_SCHEMA "schema"
#define QUEUE__META_HWM "hwm"
#define QUEUE__META_COUNTS "counts"
/* u32 BE: the last campaign number handed out. */
#define QUEUE__META_CAMPSEQ "campseq"
/* retention.c: u64 BE ms of the purge that last wrote it (see purge_fn). */
#define QUEUE__META_PURGE "purge"
/* repair.c: u64 BE, the due entries the last queue_store_repair kept
 * because their record could not be decoded (the counters cannot count
 * those jobs). queue_due_check adds it to the unfinished jobs; absent: 0.
 * Written only by a repair: the write path never changes such a job. */
#define QUEUE__META_UNREADABLE "unreadable"

/* Store-level bound on one body; the daemon's own limit is far below. */
#define QUEUE__MAX_BODY_LEN ((size_t)64 << 20)

/* --- Big-endian helpers ------------------------------------------------ */

static inline void queue__be64_put(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static inline uint64_t queue__be64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void queue__be32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t queue__be32_get(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Due-index time: unix seconds to whole milliseconds, rounded to nearest.
 * NaN and values <= 0 give 0; values past the range give UINT64_MAX. The due
 * index (ordering, `until`, `after_due`) has millisecond resolution. */
static inline uint64_t queue__due_ms(double t)
{
    if (!(t > 0.0))
        return 0;
    double ms = t * 1000.0 + 0.5;
    if (ms >= 18446744073709549568.0) /* largest double below 2^64 */
        return UINT64_MAX;
    return (uint64_t)ms;
}

/* The due-index key of (due_ms, id): both big-endian, so keys sort by due
 * time, then id. */
static inline void queue__due_key(unsigned char key[16], uint64_t due_ms, uint64_t id)
{
    queue__be64_put(key, due_ms);
    queue__be64_put(key + 8, id);
}

static inline bool queue__state_is_due(int state)
{
    return state == QUEUE_STATE_QUEUED || state == QUEUE_STATE_RETRYING ||
           state == QUEUE_STATE_SENDING;
}

/* --- Records ------------------------------------------------------------ */

/*
 * Record format, version 1 (all integers big-endian):
 *   u8 version, u8 state, u8 type, u8 priority, u16 attempts,
 *   u16 max_attempts, f64 created_at, f64 updated_at, f64 next_attempt_at,
 *   f64 not_before, f64 expires_at (IEEE-754 bits), i32 last_error.status,
 *   i64 last_error.meta_code, then QUEUE__REC_NSTR strings in the order of
 *   the enum below, each a u16 length (0xFFFF: absent) and that many bytes
 *   (no NUL, none inside). Nothing may follow the last string.
 */
enum {
    QUEUE__REC_PHONE,
    QUEUE__REC_TO,
    QUEUE__REC_CAMPAIGN,
    QUEUE__REC_ORDER_KEY,
    QUEUE__REC_IDEM,
    QUEUE__REC_WAMID,
    QUEUE__REC_ERR_CODE,
    QUEUE__REC_ERR_MSG,
    QUEUE__REC_NSTR
};

/* Fixed part of a record: 60 bytes in version 1, 61 in version 2 (the
 * flags byte at offset 60). */
#define QUEUE__REC_FIXED_LEN_V1 60
#define QUEUE__REC_FIXED_LEN 61
#define QUEUE__REC_ABSENT 0xFFFFu
/* Upper bound of an encoded record: fixed part, prefixes, longest strings. */
#define QUEUE__REC_MAX_LEN                                                                         \
    (QUEUE__REC_FIXED_LEN + 2 * QUEUE__REC_NSTR + 2 * QUEUE_MAX_ID_LEN + 3 * QUEUE_MAX_KEY_LEN +   \
     QUEUE_MAX_WAMID_LEN + QUEUE_ERR_CODE_LEN + QUEUE_ERR_MSG_LEN)

/* A string view: p == NULL means absent. Not NUL-terminated. */
typedef struct queue__str {
    const char *p;
    size_t len;
} queue__str_t;

/* A decoded record as views into the buffer it was parsed from (or into the
 * caller's strings when built from a job). Lives no longer than those. */
typedef struct queue__record {
    uint8_t state;
    uint8_t type;
    uint8_t priority;
    uint16_t attempts;
    uint16_t max_attempts;
    double created_at;
    double updated_at;
    double next_attempt_at;
    double not_before;
    double expires_at;
    int32_t err_status;
    int64_t err_meta_code; /* queue__meta_enc: 0 none, INT64_MIN Meta's 0 */
    uint8_t flags;         /* version 2; 0 when read from version 1 */
    queue__str_t s[QUEUE__REC_NSTR];
} queue__record_t;

/* Longest allowed length of string `i` of a record. */
size_t queue__record_str_max(int i);

/*
 * Parses `len` bytes at `buf` (any bytes at all) into views. Returns 0, or
 * QUEUE_ECORRUPT for anything that is not a well-formed record of a version
 * this build knows (truncated, trailing bytes, newer version, values out of
 * range, over-long strings, embedded NUL). `r` is unspecified on error.
 */
int queue__record_parse(const void *buf, size_t len, queue__record_t *r);

/* queue__record_parse for a record this process encoded itself moments
 * ago (a batch's arena), whose fields are valid by construction: only the
 * layout is walked (still bounded by len), the field checks are skipped. */
int queue__record_parse_own(const void *buf, size_t len, queue__record_t *r);

/* Bytes that queue__record_encode will write for `r`. */
size_t queue__record_size(const queue__record_t *r);

/*
 * Encodes `r` in the current version into `buf` (`cap` bytes). Returns 0 and
 * sets *out_len, or QUEUE_EINVAL when a field is out of range or a string too
 * long, or -ENOBUFS when `cap` is too small.
 */
int queue__record_encode(const queue__record_t *r, void *buf, size_t cap, size_t *out_len);

/*
 * queue__record_encode without its checks, for a record that
 * queue__record_from_job accepted (so valid) into a buffer of at least
 * queue__record_size(r) bytes: the same bytes, written once. Returns the
 * length written.
 */
size_t queue__record_write(const queue__record_t *r, void *buf);

/* Builds views of `job` (its strings are borrowed). QUEUE_EINVAL when a
 * field is out of range or a string longer than its limit. */
int queue__record_from_job(const queue_job_t *job, queue__record_t *r);

/*
 * Decodes arbitrary bytes into *out (safe on any input; the fuzz entry
 * point). On success the strings live in one allocation owned by *out
 * (release with queue_job_clear) and out->id is 0: the id is the key, not
 * part of the record. On failure (QUEUE_ECORRUPT, -ENOMEM) *out is zeroed.
 */
int queue__record_decode(const void *buf, size_t len, queue_job_t *out);

/* --- The handle and its write path ------------------------------------- */

struct queue {
    MDB_env *env;
    MDB_dbi db_meta;
    MDB_dbi db_jobs;
    MDB_dbi db_bodies;
    MDB_dbi db_due;
    MDB_dbi db_idem;
    MDB_dbi db_camp;
    MDB_dbi db_cjobs;
    MDB_dbi db_cstate;
    MDB_dbi db_order;
    MDB_dbi db_pauses;
    MDB_dbi db_done;
    int lock_fd;
    bool rwlock_ok;
    /* Reads hold it shared for the life of their txn; map growth holds it
     * exclusive, because mdb_env_set_mapsize needs no txn open anywhere in
     * the process. Reader-preferring, so a read nested in a scan callback
     * cannot deadlock against a waiting grower. */
    pthread_rwlock_t rwlock;
    /* Set (under the exclusive lock) when a remap or a reopen failed and
     * the env is not usable; reads fail with -EIO until the next write
     * reopens it (queue.c env_reopen). */
    bool broken;
    /* Writer-thread state of retention.c: the last purge freed pages that
     * the next write txn cannot reuse yet (see queue__purge_txn). True at
     * open: the last txn before it may have been such a purge (a stop
     * between a purge and its marker). */
    bool purge_freed;
    char *dir;        /* the state dir, for reopening */
    unsigned readers; /* max readers, for reopening */
    /* A read txn kept reset between reads to skip reader-slot setup. Whoever
     * wins rtxn_busy owns it until the read ends; others open their own. */
    MDB_txn *rtxn;
    atomic_flag rtxn_busy;
    /* The thread holding rtxn, while it does (zero otherwise); only that
     * thread stores its own id here, so the thread that finds itself is the
     * owner. A read nested in its own (a scan's callback reading more)
     * shares the snapshot instead of setting up a txn of its own. */
    _Atomic pthread_t rtxn_owner;
    /* Writer-thread state. */
    size_t map_size;
    /* The map's growth limit: map_cfg, or above it for a store found
     * bigger than that at open (a lowered map_size_max_mb), so that its
     * jobs can still finish and be purged. New jobs keep to map_cfg. */
    size_t map_max;
    size_t map_cfg;       /* queue_options_t.map_size_max, page-rounded */
    uint64_t unfinished;  /* queued + sending + retrying after the last commit (job_limit) */
    size_t disk_min_free; /* queue_options_t.disk_min_free */
    /* Loop-thread state. */
    uint64_t next_id;
};

/* State of one write transaction, passed to the write callbacks. */
typedef struct queue__wtxn {
    queue_t *q;
    MDB_txn *txn;
    bool counts_loaded;
    bool counts_dirty;
    uint64_t counts[QUEUE_STATE_MAX + 1];
    /* Campaign counters touched by this txn (campaign.c), written back
     * before the commit; NULL until the first campaign job is touched. */
    struct queue__camp_cache *camp;
    /* A cursor on jobs for state changes (queue__job_update), opened at the
     * first; LMDB closes it with the txn. */
    MDB_cursor *jobs_cur;
    /* The same for the index writes (queue__idx_put/del). */
    MDB_cursor *due_cur;
    MDB_cursor *order_cur;
    MDB_cursor *done_cur;
    /* One per state: a campaign's jobs in one state are a run of keys
     * (cid, state, id), and a state change deletes in one run and inserts
     * in another; one cursor per run stays on its pages. */
    MDB_cursor *cstate_cur[QUEUE_STATE_MAX + 1];
    MDB_cursor *cjobs_cur;
    /* retention.c: the value q->purge_freed takes when this txn commits
     * (purge_freed_set: its purge freed pages or wrote the marker); one
     * that does not commit leaves it, so a failed marker is written again. */
    bool purge_freed_set;
    bool purge_freed;
} queue__wtxn_t;

/* Index writes through the txn's cursor on the index (*cur, opened at the
 * first use; LMDB closes it with the txn): the keys of a batch mostly come
 * in order (a dispatch finishes jobs in due and id order), and a cursor
 * finds a key on the leaf page it is on without a descent from the root.
 * Same results as mdb_put(flags 0) and mdb_del; a missing key is not an
 * error for the delete. */
int queue__idx_put(queue__wtxn_t *w, MDB_cursor **cur, MDB_dbi dbi, MDB_val *k, MDB_val *v);
int queue__idx_del(queue__wtxn_t *w, MDB_cursor **cur, MDB_dbi dbi, MDB_val *k);
/* As queue__idx_put with an empty value, but a key already present is left
 * as it is (its page is not touched): returns 0 and sets *added, or an
 * error. For rebuilds that mostly meet keys that are already right. */
int queue__idx_add(queue__wtxn_t *w, MDB_cursor **cur, MDB_dbi dbi, MDB_val *k, bool *added);

/* A write step: returns 0, a raw LMDB code, or a negative queue/errno code.
 * It may run more than once (after map growth) and must start from scratch
 * each time. */
typedef int (*queue__write_fn)(queue__wtxn_t *w, void *arg);

/* Runs `fn` in one synced write txn, growing the map and rerunning on
 * MDB_MAP_FULL. The per-state counters loaded through w are written back
 * before the commit. Returns 0 or a mapped negative code. */
int queue__write_run(queue_t *q, queue__write_fn fn, void *arg);

/* The same; with adds_jobs the map is kept below map_max by a reserve for
 * state changes and purges (queue.c job_limit): QUEUE_EFULL there. */
int queue__write_run_ex(queue_t *q, queue__write_fn fn, void *arg, bool adds_jobs);

/* Loads the stored per-state counters into w->counts once per txn (a
 * no-op when loaded). 0, QUEUE_ECORRUPT when missing or short, or an LMDB
 * code. */
int queue__counts_load(queue__wtxn_t *w);

/* Adjusts the counters of w: one job leaves `from` (0: none) for `to`
 * (0: none). Returns 0 or an error code of the write path. */
int queue__counts_move(queue__wtxn_t *w, int from, int to);

/* Puts or deletes the due-index key of (due_ms, id) in w's txn. A missing
 * key on delete is not an error. */
int queue__due_put(queue__wtxn_t *w, uint64_t due_ms, uint64_t id);
int queue__due_del(queue__wtxn_t *w, uint64_t due_ms, uint64_t id);

/* A state change to apply to one job (views borrowed from the caller). */
typedef struct queue__patch {
    uint8_t state;
    uint16_t attempts;
    double updated_at;
    double next_attempt_at; /* applied only when `state` is a due state */
    queue__str_t wamid;     /* p == NULL: keep the stored one */
    bool has_err;           /* false: keep the stored last error */
    int32_t err_status;
    int64_t err_meta_code;
    queue__str_t err_code; /* at most QUEUE_ERR_CODE_LEN - 1 bytes */
    queue__str_t err_msg;  /* at most QUEUE_ERR_MSG_LEN - 1 bytes */
    uint16_t only_from;    /* QUEUE_STATE_BIT mask; 0: from any state */
    double expires_at;     /* > 0: replaces the job's expiry */
    uint8_t set_flags;     /* OR-ed into the record's flags */
    uint8_t clear_flags;   /* cleared from them first */
    bool flags_only;       /* only the flags change (queue_update_t.flags_only) */
} queue__patch_t;

/* Read-modify-write of job `id` in w's txn, rewriting the record in the
 * current version; keeps the due index and the counters. *result gets 0,
 * QUEUE_ENOTFOUND, or QUEUE_ECORRUPT (an undecodable record is left alone).
 * The return value is non-zero only for errors that must abort the txn. */
int queue__job_update(queue__wtxn_t *w, uint64_t id, const queue__patch_t *p, int *result);

/* Calls cb for every decodable job record in w's txn, by id, with `user`
 * (schema upgrades and queue_store_repair build indexes with it).
 * Undecodable records are skipped, left for the readers to report. The
 * record's strings are views into the page: cb may write to other
 * databases, never to `jobs`. A non-zero return of cb stops the walk and
 * is returned. */
typedef int (*queue__job_fn)(queue__wtxn_t *w, uint64_t id, const queue__record_t *r, void *user);
int queue__jobs_each(queue__wtxn_t *w, queue__job_fn fn, void *user);

/* --- Campaign index (campaign.c) --------------------------------------- */

/*
 * The campaign side of one job's change, in w's txn: job `id` of campaign
 * `name` (p == NULL or len 0: no campaign, nothing to do) leaves state
 * `from` for state `to`. from == 0: a new job (indexed); to == 0: the job is
 * deleted from the store (unindexed; for purges). Returns 0 or an error code
 * of the write path. Every write of a job record must call this when the
 * state changes, so the counters never need a scan.
 */
int queue__campaign_move(queue__wtxn_t *w, queue__str_t name, uint64_t id, int from, int to);

/* Writes the cached campaign counters of w back (queue__write_run calls it
 * before every commit). */
int queue__campaign_flush(queue__wtxn_t *w);

/* Releases w's campaign cache. Accepts a w without one. */
void queue__campaign_cache_free(queue__wtxn_t *w);

/* Opens (creating) the campaign databases in w's txn. */
int queue__campaign_open(queue__wtxn_t *w);

/* Counts, in *n, the campaign records of txn too short to read. */
int queue__campaign_unreadable(queue_t *q, MDB_txn *txn, uint64_t *n);

/* Schema 1 -> 2: builds the campaign index and counters from every job
 * record, in w's txn. */
int queue__campaign_rebuild(queue__wtxn_t *w);

/* A short read transaction (the cached one when free); see queue.c. */
typedef struct queue__rd {
    MDB_txn *txn;
    bool cached;
    bool nested; /* txn is the enclosing read's, on this thread */
} queue__rd_t;
int queue__rd_begin(queue_t *q, queue__rd_t *r);
void queue__rd_end(queue_t *q, queue__rd_t *r);

/* --- Order index (order.c) ------------------------------------------------ */

/* Writes the order key of record `r` (its orderKey, or the default
 * "<phoneNumberId>:<digits of to>") NUL-terminated into buf; returns its
 * length (0 if it does not fit or the record has no phoneNumberId). */
size_t queue__record_order_key(const queue__record_t *r, char *buf, size_t size);

/* Puts or deletes the order-index entry of (key, id) in w's txn. A missing
 * entry on delete is not an error. */
int queue__order_put(queue__wtxn_t *w, const char *key, size_t len, uint64_t id);
int queue__order_del(queue__wtxn_t *w, const char *key, size_t len, uint64_t id);

/* Fills the order index from the due index if the index is empty and the
 * due index is not (a store from before the index). */
int queue__order_build(queue__wtxn_t *w);

/* queue_store_repair's part of the order index. _fits: whether entry k,
 * which names a job whose record is r, is that job's entry (well-formed,
 * the job unfinished, under its order key); r == NULL for a record that
 * cannot be decoded: whether k is well-formed (its key cannot be checked).
 * _add puts record r's entry in w's txn if it is missing and sets *added
 * (a record without an order key: nothing). */
bool queue__order_fits(const MDB_val *k, const queue__record_t *r);
int queue__order_add(queue__wtxn_t *w, const queue__record_t *r, uint64_t id, bool *added);

/* Fills *e from job `id`'s record, read through `jobs` (a cursor on the
 * jobs DB, which it moves: a scan keeps one, so ids read in order find
 * their leaf page without a descent from the root); strings are copied
 * into sbuf (QUEUE__DUE_SBUF bytes) and valid as long as it. */
#define QUEUE__DUE_SBUF (2 * (QUEUE_MAX_ID_LEN + 1) + 2 * (QUEUE_MAX_KEY_LEN + 1))
int queue__due_entry_read(MDB_cursor *jobs, uint64_t id, char *sbuf, queue_due_entry_t *e);

/* Writes (paused) or deletes a pause in w's txn. */
int queue__pause_write(queue__wtxn_t *w, int kind, const char *name, size_t name_len,
                       const char *reason, size_t reason_len, bool paused);

/* --- Retention (retention.c) --------------------------------------------- */

/* The write-path hook of the done index: called for every state change of
 * job `id` (old_state 0 for a new job) with the record's updated_at before
 * and after. Puts, moves or deletes the job's `done` key. */
int queue__done_track(queue__wtxn_t *w, uint64_t id, int old_state, double old_updated,
                      int new_state, double new_updated);

/* Deletes up to `limit` finished jobs whose done time is <= before_ms, with
 * their bodies, idempotency keys and index entries, in w's txn. *purged gets
 * how many; *more whether more are due. */
int queue__purge_txn(queue__wtxn_t *w, uint64_t before_ms, size_t limit, size_t *purged,
                     bool *more);

/* Schema 2 -> 3: fills the done index from the jobs already final. */
int queue__done_build(queue__wtxn_t *w);

/* Maps an LMDB return code, a positive errno, or an already negative code to
 * the module's negative codes. */
int queue__err_map(int rc);

/* lastError's Meta code on disk: 0 means none (as in every record written
 * before a code 0 could be kept), so Meta's own code 0 is stored as
 * INT64_MIN, a value no Meta code takes. */
static inline int64_t queue__meta_enc(const queue_error_info_t *e)
{
    if (!e->has_meta)
        return 0;
    return e->meta_code == 0 ? INT64_MIN : (int64_t)e->meta_code;
}

static inline void queue__meta_dec(int64_t v, queue_error_info_t *e)
{
    e->has_meta = v != 0;
    e->meta_code = v == INT64_MIN ? 0 : (long)v;
}

#endif
