/*
 * retention.c - finished jobs stay queryable for retention_s, then go.
 *
 * Once a second the daemon asks the committer for a purge of at most
 * PURGE_BATCH finished jobs older than retention_s. The purge runs in the
 * next group commit's transaction on the worker thread, so the loop never
 * waits for it; while a purge reports that more are due, the next one is
 * asked for at once, so a backlog drains in a series of short transactions
 * interleaved with the regular batches instead of one long one.
 */
#include <errno.h>

#include "daemon.h"

#define PURGE_INTERVAL_MS 1000
/* Jobs per purge: each costs four B-tree deletes; a few milliseconds. */
#define PURGE_BATCH 1000

static void request_purge(daemon_t *d);

static void purge_done_cb(int rc, size_t purged, bool more, void *arg)
{
    daemon_t *d = arg;

    d->purge_running = false;
    if (rc != 0) {
        dlog(d, CONFIG_LOG_WARN, "purging finished jobs failed: %s (tried again later)",
             queue_strerror(rc));
        return;
    }
    d->stats.purged += purged;
    if (purged > 0)
        dlog(d, CONFIG_LOG_DEBUG, "purged %zu finished jobs%s", purged, more ? ", more due" : "");
    if (more && !d->stopping)
        request_purge(d);
}

static void request_purge(daemon_t *d)
{
    double before = daemon_now() - (double)d->cfg.retention_s;
    int rc;

    if (d->purge_running || d->stopping || d->commit == NULL)
        return;
    rc = commit_add_purge(d->commit, before, PURGE_BATCH, purge_done_cb, d);
    if (rc == 0)
        d->purge_running = true;
    else if (rc != -EBUSY && rc != -ESHUTDOWN)
        dlog(d, CONFIG_LOG_WARN, "cannot queue a purge: %s", queue_strerror(rc));
}

static void purge_timer_cb(uv_timer_t *t)
{
    request_purge(t->data);
}

void retention_init(daemon_t *d)
{
    uv_timer_init(d->loop, &d->purge_timer);
    d->purge_timer.data = d;
}

void retention_start(daemon_t *d)
{
    uv_timer_start(&d->purge_timer, purge_timer_cb, PURGE_INTERVAL_MS, PURGE_INTERVAL_MS);
}

void retention_stop(daemon_t *d)
{
    uv_timer_stop(&d->purge_timer);
}
