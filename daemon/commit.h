/*
 * commit.h - group commit of store writes off the loop thread.
 *
 * Everything the loop wants written (new jobs, state changes) goes into the
 * pending batch. When no commit is running, the pending batch is handed to
 * a worker thread at the next loop turn (uv_queue_work) and a new pending
 * batch starts; everything that arrives while that commit runs shares the
 * next one. So the loop never waits for a disk flush, and each flush
 * carries as many jobs as arrived during the previous one.
 *
 * A new job's callback runs once its batch committed (then, and only then,
 * may the submit be acknowledged) or failed (then nothing of the batch is in
 * the store and the submit must get an error). A failed batch puts its
 * state changes and pauses at the front of the next one, ahead of what was
 * queued meanwhile (so they apply in the order they were made), retried
 * after a pause.
 *
 * Errors: 0 or negative errno. Threads: the loop thread, except the commit
 * itself.
 */
#ifndef AVP_COMMIT_H
#define AVP_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "queue.h"

typedef struct commit commit_t;

/*
 * rc: 0 when the batch committed, else its error (the job is not stored).
 * When rc == 0, result is the job's own result: 0 or QUEUE_EDUPLICATE (then
 * orig_id is the job holding the idempotency key).
 */
typedef void (*commit_job_cb)(int rc, int result, uint64_t orig_id, void *arg);

/* Called after every successful commit that changed the store, with the
 * number of operations (0 for a purge alone that deleted jobs); a purge
 * that found nothing to delete is not reported. */
typedef void (*commit_stat_cb)(size_t ops, double seconds, void *arg);

/* Creates a committer writing to `q` (which must outlive it). */
int commit_new(uv_loop_t *loop, queue_t *q, commit_t **out);

/* Queues a new job (copied). `cb` runs exactly once, from the loop, after
 * the commit (never inside this call). On a negative return cb never runs:
 * -ESHUTDOWN when draining, QUEUE_EFULL or -ENOSPC while the store is full
 * (see COMMIT_FULL_PROBE_MS), -ENOMEM, or the batch's QUEUE_EINVAL. */
int commit_add_job(commit_t *c, const queue_job_t *job, const void *body, size_t len,
                   commit_job_cb cb, void *arg);

/* Queues a state change (copied). */
int commit_add_update(commit_t *c, const queue_update_t *u);

/* Called once a state change is durable. */
typedef void (*commit_update_cb)(void *arg);

/* Queues a state change (copied) and calls `cb` from the loop once it is
 * committed. A failed batch carries it into the next one, so `cb` runs only
 * on success - or never, if the committer is drained while the store keeps
 * failing (then cb(arg) is not called and arg is the caller's to free via
 * the drain). On a negative return cb never runs. */
int commit_add_update_cb(commit_t *c, const queue_update_t *u, commit_update_cb cb, void *arg);

/* Called once a conditional or counted state change has its result: rc 0
 * and the operation's own result (0, QUEUE_ESTATE, QUEUE_ENOTFOUND, ...),
 * or rc < 0 when the committer gave up on it while draining. */
typedef void (*commit_result_cb)(int rc, int result, void *arg);

/* Queues a state change (copied) whose result the caller needs (cancel and
 * retry count what they changed). `cb` runs exactly once, from the loop,
 * unless this call fails: then it never runs. A failed batch carries the
 * change into the next one. */
int commit_add_update_res(commit_t *c, const queue_update_t *u, commit_result_cb cb, void *arg);
/* Queues a stored pause (paused = true, with a reason that may be NULL) or
 * its end (queue_batch_add_pause); strings are copied. `cb` (may be NULL)
 * runs like commit_add_update_cb's: once the pause is durable; a failed
 * batch carries it into the next one. */
int commit_add_pause(commit_t *c, int kind, const char *name, const char *reason, bool paused,
                     commit_update_cb cb, void *arg);
/*
 * Retention: asks for a purge of up to `limit` finished jobs whose final
 * state was recorded at or before `before` (unix seconds; see queue_purge).
 * It runs on the worker thread in the transaction of the next batch (a batch
 * of its own when nothing else is pending), so the loop never waits for it.
 * `cb` runs exactly once, from the loop, after that commit: rc 0 with the
 * number purged and whether more were due, or the batch's error (a failed
 * purge is not carried over; ask again later). At most one purge waits at a
 * time: -EBUSY while one does; -ESHUTDOWN once draining. On a negative
 * return cb never runs.
 */
typedef void (*commit_purge_cb)(int rc, size_t purged, bool more, void *arg);
int commit_add_purge(commit_t *c, double before, size_t limit, commit_purge_cb cb, void *arg);

/*
 * Storage full: after a batch failed because the store is full
 * (QUEUE_EFULL: the map at map_size_max; -ENOSPC: the disk), new jobs are
 * refused for COMMIT_FULL_PROBE_MS - commit_add_job returns that error at
 * once - so the batches in between carry only state changes and purges,
 * which need little or free space. After that a new job is let through
 * again as a probe: the committer recovers by itself when space returns.
 */
#define COMMIT_FULL_PROBE_MS 1000

/* Operations waiting for a commit (pending + running). */
size_t commit_backlog(const commit_t *c);

/* Stats hook (may be NULL). */
void commit_set_stat_cb(commit_t *c, commit_stat_cb cb, void *arg);

/* Called from the loop after each failed batch (rc < 0, `in_row` failed
 * batches so far, this one included; the batch is retried after
 * RETRY_PAUSE_MS), and once after the first successful batch that ends such
 * a run (rc 0, `in_row` the failures it ended). For the daemon's log: the
 * committer itself says nothing. */
typedef void (*commit_fail_cb)(int rc, unsigned in_row, void *arg);

/* Failure hook (may be NULL). */
void commit_set_fail_cb(commit_t *c, commit_fail_cb cb, void *arg);

/* Commits everything queued, then calls `done` (from the loop). After this
 * call nothing may be added. When commits keep failing while draining
 * (three in a row), what is left is given up: see commit_lost. */
void commit_drain(commit_t *c, void (*done)(void *arg), void *arg);

/* Operations given up by a drain whose commits kept failing (0: everything
 * queued reached the store). Never fails. */
size_t commit_lost(const commit_t *c);

/* Frees the committer; only after commit_drain's callback ran, or if nothing
 * was ever queued. Accepts NULL. */
void commit_free(commit_t *c);

#endif
