/*
 * queue.h - the durable job store of avenpingd, on LMDB.
 *
 * The store knows jobs, their records, their state machine and their
 * indexes. It knows nothing of sockets, HTTP, JSON framing or libuv.
 *
 * Threads: one queue_t is shared by two threads at most - the loop thread,
 * which reads (queue_job_get, queue_due_scan, ...) and allocates ids, and one
 * writer thread, which calls queue_batch_commit. Reads and a commit may run
 * at the same time (LMDB MVCC, MDB_NOTLS). Two commits never run at once:
 * the caller serialises them. Growing the map on MDB_MAP_FULL waits for open
 * read transactions to end; reads are short, so the wait is short.
 *
 * Errors: every int-returning function returns 0 or a negative code: a
 * negative errno (-ENOMEM, -EIO, -ENOSPC, ...) or one of QUEUE_E* below.
 * queue_strerror() names all of them.
 *
 * On-disk format (bump procedure): records start with a version byte
 * (QUEUE_RECORD_VERSION). A reader accepts every version it knows and
 * rewrites old records in the current version when it next updates them.
 * An incompatible change of layout bumps QUEUE_SCHEMA_VERSION, which is
 * stored under the "schema" key of the meta database; queue_open refuses an
 * environment whose schema is newer than its own (QUEUE_ESCHEMA).
 */
#ifndef AVP_QUEUE_H
#define AVP_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Schema history: 1 the first layout; 2 adds the campaign index and counters;
 * 3 adds the `done` index (retention); 4 writes records of version 2 (a
 * flags byte), which a build of schema 3 cannot read (so it refuses the
 * environment instead of meeting them). queue_open upgrades an older
 * environment step by step, each step building its index from the jobs
 * (3 -> 4 builds nothing: version 1 records stay readable). */
#define QUEUE_SCHEMA_VERSION 4
#define QUEUE_RECORD_VERSION 2

/* Project error codes, in their own band below every errno value. */
enum {
    QUEUE_ENOTFOUND = -30001,  /* no such job or key */
    QUEUE_EDUPLICATE = -30002, /* idempotency key already taken (batch result) */
    QUEUE_ELOCKED = -30003,    /* another process holds the state dir */
    QUEUE_ESCHEMA = -30004,    /* state dir written by an incompatible version */
    QUEUE_ECORRUPT = -30005,   /* a record could not be decoded */
    QUEUE_EFULL = -30006,      /* map at its configured maximum size */
    QUEUE_EINVAL = -30007,     /* bad argument (a programmer error at the caller) */
    QUEUE_ESTATE = -30008,     /* transition not allowed from the job's state */
    QUEUE_ELOWDISK = -30009,   /* new jobs refused: the disk is below disk_min_free */
    QUEUE_EFORMAT = -30010,    /* data.mdb is no LMDB file this build's LMDB can read */
};

/* Job states of the contract (socket-protocol.md). Values are on disk. */
typedef enum queue_state {
    QUEUE_STATE_QUEUED = 1,
    QUEUE_STATE_SENDING = 2,
    QUEUE_STATE_RETRYING = 3,
    QUEUE_STATE_SENT = 4,
    QUEUE_STATE_FAILED = 5,
    QUEUE_STATE_EXPIRED = 6,
    QUEUE_STATE_CANCELLED = 7,
    QUEUE_STATE_UNCERTAIN = 8,
} queue_state_t;
#define QUEUE_STATE_MAX 8
/* A state as a bit of a mask (queue_update_t.only_from). */
#define QUEUE_STATE_BIT(s) ((uint16_t)(1u << (s)))

/* Job types; each maps to one v2 route. Values are on disk. */
typedef enum queue_type {
    QUEUE_TYPE_TEXT = 1,
    QUEUE_TYPE_MEDIA = 2,
    QUEUE_TYPE_LOCATION = 3,
    QUEUE_TYPE_INTERACTIVE = 4,
    QUEUE_TYPE_SMART = 5,
    QUEUE_TYPE_TEMPLATE = 6,
} queue_type_t;
#define QUEUE_TYPE_MAX 6

/* Lower value goes first. Values are on disk. */
typedef enum queue_priority {
    QUEUE_PRIO_HIGH = 0,
    QUEUE_PRIO_NORMAL = 1,
    QUEUE_PRIO_BULK = 2,
} queue_priority_t;

/* Limits of what a record may hold; the ipc layer validates before this. */
#define QUEUE_MAX_KEY_LEN 200 /* idempotency key, campaign, order key */
#define QUEUE_MAX_ID_LEN 64   /* phoneNumberId, to */
#define QUEUE_MAX_WAMID_LEN 256
#define QUEUE_ERR_CODE_LEN 64 /* lastError.code incl. NUL, truncated */
#define QUEUE_ERR_MSG_LEN 256 /* lastError.message incl. NUL, truncated */

/* The last error of a job. status == 0 means "no error recorded". */
typedef struct queue_error_info {
    int status;                      /* HTTP status, 0 for a transport error */
    long meta_code;                  /* Meta's code from details (valid when has_meta) */
    bool has_meta;                   /* details carried a Meta code (0 is one: AuthException) */
    char code[QUEUE_ERR_CODE_LEN];   /* AvenPing error code or transport tag */
    char message[QUEUE_ERR_MSG_LEN]; /* human text, never contains the token */
} queue_error_info_t;

/*
 * A job as the store returns it. String fields are NULL when absent. All
 * strings of a job returned by the store live in one allocation owned by the
 * job: release it with queue_job_clear(). When a caller fills a queue_job_t
 * to hand to queue_batch_add_job, the strings are the caller's and are
 * copied by the batch.
 */
typedef struct queue_job {
    uint64_t id;
    uint8_t state;         /* queue_state_t */
    uint8_t type;          /* queue_type_t */
    uint8_t priority;      /* queue_priority_t */
    uint16_t attempts;     /* HTTP attempts made so far */
    uint16_t max_attempts; /* 0: the daemon's default */
    uint8_t flags;         /* the caller's marks (queue_update_t.set_flags); 0 when added */
    double created_at;     /* unix seconds */
    double updated_at;
    double next_attempt_at; /* due time while queued/retrying/sending */
    double not_before;      /* 0: none */
    double expires_at;      /* 0: none */
    char *phone_number_id;
    char *to;
    char *campaign;
    char *order_key;
    char *idempotency_key;
    char *wamid;
    queue_error_info_t last_error;
    void *priv_; /* the allocation behind the strings; store-owned */
} queue_job_t;

/* A state change of one job, recorded by queue_batch_add_update. */
typedef struct queue_update {
    uint64_t id;
    uint8_t state;     /* new state */
    uint16_t attempts; /* new attempt count */
    double updated_at;
    double next_attempt_at;               /* used when the new state is queued/retrying/sending */
    const char *wamid;                    /* NULL: keep; copied by the batch */
    const queue_error_info_t *last_error; /* NULL: keep; copied by the batch */
    /* Conditional change: when non-zero, a mask of QUEUE_STATE_BIT(state);
     * the change applies only if the job's stored state (as of its place in
     * the batch) is one of them, else its result is QUEUE_ESTATE and the job
     * is left alone. 0: unconditional. */
    uint16_t only_from;
    double expires_at;   /* > 0: replaces the job's expiry (a retry of an expired job) */
    uint8_t set_flags;   /* OR-ed into the job's flags (queue_job_t.flags) */
    uint8_t clear_flags; /* cleared from them first */
    /* true: only the flags change (set_flags, clear_flags; only_from still
     * applies); state, attempts, times, wamid and last error are kept. */
    bool flags_only;
} queue_update_t;

/* Batches that add jobs get QUEUE_EFULL already at map_size_max less a
 * reserve: 1/32 of it (1 MiB to 256 MiB) plus 192 bytes per unfinished
 * job, rounded up to MiB, at most half the map. The reserve is kept for
 * state changes and purges, so accepted jobs can always be moved on,
 * finished and purged. */
typedef struct queue_options {
    size_t map_size;      /* initial map size in bytes; 0: 1 GiB */
    size_t map_size_max;  /* growth stops here (QUEUE_EFULL); 0: 64 GiB */
    unsigned max_readers; /* 0: 126 */
    /* New jobs are refused (QUEUE_ELOWDISK, nothing written) while the
     * state dir's filesystem has less free space than this plus 192 bytes
     * per unfinished job, so that the jobs already accepted can always
     * finish: a disk filled by new jobs left no room for their state
     * changes. 0: no check. */
    size_t disk_min_free;
} queue_options_t;

typedef struct queue queue_t;
typedef struct queue_batch queue_batch_t;

/* A light view of a due job, handed to queue_due_scan's callback. Pointers
 * are valid only during the callback. */
typedef struct queue_due_entry {
    uint64_t id;
    double due; /* next_attempt_at */
    /* 0, or QUEUE_ECORRUPT: the index names a job whose record cannot be
     * read (missing, cut short, of a record version this build does not
     * know). Only id and due (the index's) are set then, the rest is zero;
     * the record is left as it is and the scan goes on past it. */
    int problem;
    uint8_t state;
    uint8_t type;
    uint8_t priority;
    uint16_t attempts;
    uint16_t max_attempts;
    uint8_t flags; /* queue_job_t.flags */
    double expires_at;
    const char *phone_number_id;
    const char *to;
    const char *order_key; /* NULL: default key */
    const char *campaign;
} queue_due_entry_t;

/* Return 0 to continue the scan, non-zero to stop it. */
typedef int (*queue_due_cb)(const queue_due_entry_t *e, void *user);

/*
 * Opens (creating if needed) the store in directory `dir`, which must exist.
 * Takes an exclusive lock on `dir`/lock for the life of the handle; a second
 * opener gets QUEUE_ELOCKED. Checks the schema version (QUEUE_ESCHEMA), runs
 * mdb_reader_check. `opt` may be NULL. On success *out owns everything; free
 * it with queue_close. On failure *out is NULL and nothing is left open.
 */
int queue_open(const char *dir, const queue_options_t *opt, queue_t **out);

/* What a store directory holds, for the caller to report before
 * queue_open creates or opens it: */
enum {
    QUEUE_FOUND_NONE = 0, /* no data file: queue_open creates a new store */
    QUEUE_FOUND_EMPTY,    /* a data file of zero bytes: queue_open starts a new
                             store in it, whatever the file held before (a
                             file cut to nothing, a failed restore) */
    QUEUE_FOUND_STORE,    /* a data file with contents */
};
/* One of QUEUE_FOUND_* for directory `dir`, or -errno when the data file
 * cannot be looked at (other than not being there). Opens nothing. */
int queue_store_found(const char *dir);

/* fsyncs directory `dir`, so that entries created or renamed in it survive
 * a power cut (queue_open does it for the store's own directory; a caller
 * that creates the state directory syncs its parent). 0 or -errno. */
int queue_dir_sync(const char *dir);

/* Closes the environment and releases the lock. Accepts NULL. No commit may
 * be running. */
void queue_close(queue_t *q);

/* Next job id, strictly increasing across restarts. Loop thread only. The id
 * is only reserved in memory; it becomes durable with the batch that uses
 * it. */
uint64_t queue_id_next(queue_t *q);
/* The last id queue_id_next gave (at open: the largest the store knows). */
uint64_t queue_id_last(const queue_t *q);

/* What queue_recover does with the jobs it finds in state `sending`. */
typedef struct queue_recover_options {
    bool at_most_once;     /* true: they become `uncertain` (off the due index) */
    double now;            /* at-least-once: they become `queued`, due now */
    uint8_t requeue_flags; /* OR-ed into the requeued ones' flags: the caller's
                            * mark for "may have been delivered" */
    /* At-least-once: one with any of these flags (the caller's mark for "its
     * attempt was cancelled") becomes `cancelled` instead, with
     * cancel_error as its last error (NULL: the stored one is kept). */
    uint8_t cancel_flags;
    const queue_error_info_t *cancel_error; /* the caller's; copied */
    /* At-most-once: the last error of the ones made `uncertain` (NULL: the
     * stored one is kept). The caller's; copied. */
    const queue_error_info_t *uncertain_error;
} queue_recover_options_t;

/*
 * Crash recovery, called once after queue_open and before anything else:
 * moves every job in state `sending` on as `opt` says. *n_recovered (may be
 * NULL) receives how many were changed. One synced txn.
 */
int queue_recover(queue_t *q, const queue_recover_options_t *opt, size_t *n_recovered);

/* --- Write batches (group commit) ------------------------------------- */

/* A new empty batch, or NULL on ENOMEM. */
queue_batch_t *queue_batch_new(void);

/* Frees the batch and everything it copied. Accepts NULL. */
void queue_batch_free(queue_batch_t *b);

/* Empties the batch for reuse, keeping its memory. */
void queue_batch_reset(queue_batch_t *b);

/* Number of operations in the batch. */
size_t queue_batch_count(const queue_batch_t *b);

/*
 * Adds a new job: `job` (id from queue_id_next, state QUEUED, times set) and
 * its request body (`body`, `len` bytes, the JSON sent to the API). Both are
 * copied. Returns the index of the operation (>= 0) or a negative error.
 * If the job has an idempotency key that is already taken - in the store or
 * by an earlier job of the same batch - the commit writes nothing for it and
 * its result is QUEUE_EDUPLICATE with the original job's id.
 */
int queue_batch_add_job(queue_batch_t *b, const queue_job_t *job, const void *body, size_t len);

/* Adds a state change; *u and its strings are copied. Returns the index of
 * the operation or a negative error. At commit, an update of a job that no
 * longer exists has result QUEUE_ENOTFOUND and does not fail the batch. */
int queue_batch_add_update(queue_batch_t *b, const queue_update_t *u);

/* Moves src's operations, and its purge if it has one, behind dst's, in
 * their order: src's operation i becomes dst's operation (count before) + i,
 * and its result is read there. src is left empty, as after
 * queue_batch_reset; neither may be committed meanwhile. Returns 0, or
 * -ENOMEM / -E2BIG with both batches unchanged. */
int queue_batch_append(queue_batch_t *dst, queue_batch_t *src);

/*
 * Writes the whole batch in one write transaction and commits it with sync
 * (fdatasync of data, then meta). Keeps the due index (queued, retrying and
 * sending jobs, keyed by big-endian (due ms, id)), the idempotency index and
 * the per-state counters in the same transaction. On MDB_MAP_FULL it grows
 * the map (doubling, up to map_size_max) and retries.
 *
 * Returns 0 when the transaction committed: then every operation's own
 * result is in queue_batch_result. Returns a negative error when it did not
 * (-EIO, -ENOSPC, QUEUE_EFULL, ...): then nothing of the batch is in the
 * store, and the store stays usable for the next batch.
 * Writer thread (or loop thread when no writer thread exists); never two at
 * once.
 */
int queue_batch_commit(queue_t *q, queue_batch_t *b);

/* Result of operation `i` after a successful commit: 0, QUEUE_EDUPLICATE
 * (then *orig_id, if not NULL, is the job that holds the key),
 * QUEUE_ENOTFOUND for an update of a missing job, QUEUE_ESTATE for a
 * conditional update (only_from) that did not apply, or QUEUE_ECORRUPT for an
 * update of a job whose stored record cannot be decoded (left unchanged; the
 * batch is not failed for it). QUEUE_EINVAL before a successful commit. */
int queue_batch_result(const queue_batch_t *b, size_t i, uint64_t *orig_id);

/* --- Retention -------------------------------------------------------- */

/*
 * Finished jobs (sent, failed, expired, cancelled, uncertain) are indexed by
 * the time they reached their final state (their updated_at). A purge deletes
 * up to `limit` of them whose final state was recorded at or before `before`
 * (unix seconds), oldest first, together with their bodies and idempotency
 * keys: afterwards `get` answers QUEUE_ENOTFOUND and a submit with the same
 * key creates a new job. A job moved out of a final state (a retry) leaves
 * the index. *purged (may be NULL) receives how many were deleted, *more
 * (may be NULL) whether further jobs were already due when the limit was
 * reached. Freed pages are reused by later writes (the file stops growing
 * under steady churn; it never shrinks).
 *
 * queue_purge runs its own synced write transaction (writer thread, never
 * at the same time as queue_batch_commit). queue_batch_set_purge instead
 * attaches the purge to a batch: it runs in the batch's transaction after
 * its operations (one purge per batch; a second call replaces the first),
 * sharing its flush; the results are read with queue_batch_purge_result
 * after a successful commit (QUEUE_EINVAL before, or when none was set).
 * Keep `limit` small (hundreds to a few thousand) so one transaction stays
 * short. limit 0 is QUEUE_EINVAL.
 */
int queue_purge(queue_t *q, double before, size_t limit, size_t *purged, bool *more);
int queue_batch_set_purge(queue_batch_t *b, double before, size_t limit);
int queue_batch_purge_result(const queue_batch_t *b, size_t *purged, bool *more);

/* --- Reads (short read transactions) ---------------------------------- */

/* Fills *out with job `id`; release with queue_job_clear. QUEUE_ENOTFOUND
 * when absent. */
int queue_job_get(queue_t *q, uint64_t id, queue_job_t *out);

/* Same, by idempotency key. */
int queue_job_get_by_key(queue_t *q, const char *idempotency_key, queue_job_t *out);

/* Releases what the store allocated for *job and zeroes it. Accepts NULL and
 * a zeroed job. */
void queue_job_clear(queue_job_t *job);

/* Copies job `id`'s request body into a new malloc'd buffer (*body, *len),
 * NUL-terminated for convenience (the NUL is not counted). Caller frees. */
int queue_job_body(queue_t *q, uint64_t id, char **body, size_t *len);

/* A batch of body reads in one read snapshot: the loop reads the bodies of
 * the jobs one pump dispatches through one, so ids in ascending order find
 * their page without a descent from the root, and the batch pays for one
 * read txn instead of one per body. It holds a read txn: close it when the
 * batch ends (within the same loop callback), on the thread that opened
 * it. Other reads of that thread meanwhile share its snapshot. */
typedef struct queue_reader queue_reader_t;

/* Opens a reader on *out; queue_reader_close releases it. */
int queue_reader_open(queue_t *q, queue_reader_t **out);

/* As queue_job_body, through rd. */
int queue_reader_body(queue_reader_t *rd, uint64_t id, char **body, size_t *len);

/* Ends rd's snapshot and frees it. Accepts NULL. */
void queue_reader_close(queue_reader_t *rd);

/*
 * Walks the due index in order (earliest due first, then by id), starting at
 * the first entry whose (due, id) is greater than (after_due, after_id) - pass
 * (0, 0) to start at the beginning - and stops after `limit` entries, when
 * the callback returns non-zero, or at the first entry due after `until`.
 * The walk uses one read transaction; keep `limit` modest (a few thousand).
 * An entry whose job cannot be read is handed over with `problem` set (one
 * damaged record must not hide the jobs due after it). The callback may call
 * this store's read functions; it must not wait for a commit to finish (a map
 * growth in that commit waits for this walk).
 */
int queue_due_scan(queue_t *q, double after_due, uint64_t after_id, double until, size_t limit,
                   queue_due_cb cb, void *user);

/* Number of jobs in each state: counts[state] for state 1..QUEUE_STATE_MAX
 * (counts[0] unused). Kept as counters in the store: O(1). */
int queue_counts(queue_t *q, uint64_t counts[QUEUE_STATE_MAX + 1]);

/* What queue_due_check found. */
typedef struct queue_due_count {
    uint64_t due_entries;     /* entries of the due index */
    uint64_t unfinished;      /* queued + sending + retrying, by the counters */
    uint64_t unreadable;      /* due entries the last queue_store_repair kept for
                               * records it could not decode (not in the counters) */
    uint64_t camp_unreadable; /* campaign records too short to read */
    bool agree;               /* due_entries == unfinished + unreadable, camp_unreadable == 0 */
} queue_due_count_t;

/* In one snapshot: the due index's entries against the unfinished jobs the
 * counters hold (O(1)), and the campaign records (a walk of one entry per
 * campaign). Every unfinished job has exactly one due entry, and the only
 * other entries are those a repair kept for records it could not read; a
 * campaign record that cannot be read fails the batch of every state change
 * of its jobs. So !out->agree means the store was damaged (a job the index
 * lost is never sent; a job of that campaign never changes state):
 * queue_store_repair rebuilds both. For a check at start. *out is zeroed on
 * error. */
int queue_due_check(queue_t *q, queue_due_count_t *out);

/* What queue_store_repair found and did (index entries in number of keys). */
typedef struct queue_repair_report {
    uint64_t records;        /* job records walked */
    uint64_t unreadable;     /* of them, records that could not be decoded */
    uint64_t due_before;     /* due index entries before the repair */
    uint64_t due_after;      /* and after it */
    uint64_t due_added;      /* written for due jobs the index had lost */
    uint64_t due_removed;    /* of a missing record, a job not due, a stale due time,
                              * or malformed */
    uint64_t due_unreadable; /* kept: their record exists but cannot be decoded */
    uint64_t order_added;    /* the same for the order index */
    uint64_t order_removed;
    bool counts_changed; /* the per-state counters were not those of the records */
} queue_repair_report_t;

/*
 * Rebuilds what the store derives from its job records, in one synced
 * write transaction (the map grows on MDB_MAP_FULL as for a batch):
 * - the per-state counters, recounted from the decodable records;
 * - the due index: an entry for every decodable job in a due state (at its
 *   next_attempt_at), none for a missing record, a finished job or a stale
 *   due time; an entry whose record exists but cannot be decoded (damage, a
 *   record version of a newer build) is kept as it is, so queue_due_scan
 *   still reports that job (queue_due_entry_t.problem), and counted for
 *   queue_due_check;
 * - the order index likewise (an unreadable record's entries kept);
 * - the done index and the campaign index and counters, rebuilt from the
 *   decodable records (an unreadable record leaves its campaign).
 * Records themselves, bodies and idempotency keys are not changed. The
 * transaction touches every job record's indexes: its time and size grow
 * with the store (a start-up repair, not a routine). `rep` (may be NULL)
 * gets what was found; a second repair reports nothing added, removed or
 * changed. Writer thread (or before the writer starts); never with a commit.
 */
int queue_store_repair(queue_t *q, queue_repair_report_t *rep);

/* Current map size and bytes in use (for stats and tests). */
int queue_space(queue_t *q, size_t *map_size, size_t *used);

/* --- Campaigns ------------------------------------------------------ */

/*
 * A campaign is the set of jobs submitted with the same `campaign` string.
 * The store keeps, in the same write transactions as the job changes, the
 * number of a campaign's jobs in each state and an index of its jobs by id
 * and by (state, id): reading a campaign's counters is O(1) and listing
 * its jobs is a range walk, never a scan of the store.
 */

/* counts[state] for state 1..QUEUE_STATE_MAX (counts[0] = the total) of
 * campaign `name`. QUEUE_ENOTFOUND when no job ever had that campaign. */
int queue_campaign_counts(queue_t *q, const char *name, uint64_t counts[QUEUE_STATE_MAX + 1]);

/* Called for each job of a listing. `job` and its strings are the store's
 * and valid during the call only. Return 0 to go on, non-zero to stop. */
typedef int (*queue_job_cb)(const queue_job_t *job, void *user);

/*
 * Walks the jobs of campaign `name` by increasing id, starting after
 * `after_id` (0: from the first), only those in `state` (0: any), calling
 * `cb` for at most `limit` jobs. *more (may be NULL) is set when jobs remain
 * after the last one given (the caller's next cursor is that job's id).
 * One read transaction per call: keep `limit` to a page (the protocol's is
 * at most 1000). An unknown campaign walks nothing and returns 0. A job
 * whose record is missing or cannot be read (damage) is left out.
 */
int queue_campaign_jobs(queue_t *q, const char *name, int state, uint64_t after_id, size_t limit,
                        queue_job_cb cb, void *user, bool *more);

/* --- Order keys (order.c) -------------------------------------------- */

/*
 * The order index holds every unfinished job (queued, retrying, sending)
 * under (effective order key, id), written in the same transaction as the
 * job's state changes, so the daemon can load the older unfinished jobs of
 * a key with the job it brings into memory (per-key FIFO across retries).
 */

/* Longest effective order key: an orderKey, or "<phoneNumberId>:<digits>". */
#define QUEUE_ORDER_KEY_MAX QUEUE_MAX_KEY_LEN

/*
 * Writes the effective order key of a job into buf (NUL-terminated; size
 * at least QUEUE_ORDER_KEY_MAX + 1): `order_key` if not NULL, else
 * "<phone_number_id>:<the digits of to>". Returns its length, or 0 when it
 * does not fit or phone_number_id is NULL.
 */
size_t queue_order_key(const char *order_key, const char *phone_number_id, const char *to,
                       char *buf, size_t size);

/*
 * Calls cb, in id order, for the unfinished jobs of order key `key` whose
 * id is in (after_id, before_id), at most `limit` of them, in one read
 * transaction; stops when cb returns non-zero. Entries are as in
 * queue_due_scan, except that a job whose record is missing or cannot be
 * read is left out (it holds nothing back: it can never be sent; the due
 * scan reports it). The callback may call this store's read functions.
 */
int queue_order_scan(queue_t *q, const char *key, uint64_t after_id, uint64_t before_id,
                     size_t limit, queue_due_cb cb, void *user);

/* --- Pauses (order.c) ---------------------------------------------------- */

/* What an operator or the daemon paused; values are on disk. */
typedef enum queue_pause_kind {
    QUEUE_PAUSE_ALL = 'a',      /* name "" */
    QUEUE_PAUSE_SENDER = 's',   /* name: phoneNumberId */
    QUEUE_PAUSE_CAMPAIGN = 'c', /* name: campaign */
} queue_pause_kind_t;

/* Longest pause reason stored (longer ones are cut). */
#define QUEUE_PAUSE_REASON_MAX 200

/* Records a pause (paused = true, with `reason`, may be NULL) or its end
 * (paused = false) in the batch; strings are copied. Returns the index of
 * the operation or a negative error (QUEUE_EINVAL: bad kind, name longer
 * than QUEUE_MAX_KEY_LEN). Its result after the commit is 0. */
int queue_batch_add_pause(queue_batch_t *b, int kind, const char *name, const char *reason,
                          bool paused);

/* Calls cb for every stored pause (kind, name, reason or ""), in one read
 * transaction; stops when cb returns non-zero. */
typedef int (*queue_pause_cb)(int kind, const char *name, const char *reason, void *user);
int queue_pauses_each(queue_t *q, queue_pause_cb cb, void *user);

/* --- Names ------------------------------------------------------------ */

/* Static strings; "unknown" for values out of range. */
const char *queue_state_name(int state);
const char *queue_type_name(int type);
const char *queue_priority_name(int prio);

/* Parse the names above; return the value or -1. */
int queue_state_parse(const char *s);
int queue_type_parse(const char *s);
int queue_priority_parse(const char *s);

/* True for sent, failed, expired, cancelled, uncertain. */
bool queue_state_is_final(int state);

/* True for the errors that mean "no room": the map at its maximum
 * (QUEUE_EFULL), the disk full (-ENOSPC) or below disk_min_free
 * (QUEUE_ELOWDISK). Submitters get QUEUE_FULL for these. */
bool queue_err_full(int err);

/* A static description of any code these functions return. */
const char *queue_strerror(int err);

#endif
