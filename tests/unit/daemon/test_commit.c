/*
 * test_commit.c - the committer's retention and storage-full paths
 * (daemon/commit.c) on a real store in a temp dir and a real libuv loop:
 * purges riding on batches, one purge at a time, and the refusal of new
 * jobs after a full batch followed by a probe that recovers.
 */
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "check.h"
#include "commit.h"
#include "queue.h"

typedef struct env {
    char dir[256];
    uv_loop_t loop;
    queue_t *q;
    commit_t *c;
} env_t;

static void env_open(env_t *e, size_t map_max)
{
    queue_options_t o;
    const char *t = getenv("TMPDIR");

    snprintf(e->dir, sizeof(e->dir), "%s/avpc-XXXXXX", t && *t ? t : "/tmp");
    CHECK(mkdtemp(e->dir) != NULL);
    memset(&o, 0, sizeof(o));
    o.map_size = 1 << 20;
    o.map_size_max = map_max;
    CHECK_EQ(queue_open(e->dir, &o, &e->q), 0);
    CHECK_EQ(uv_loop_init(&e->loop), 0);
    CHECK_EQ(commit_new(&e->loop, e->q, &e->c), 0);
}

static void drained_cb(void *arg)
{
    *(bool *)arg = true;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void env_close(env_t *e)
{
    bool drained = false;

    commit_drain(e->c, drained_cb, &drained);
    while (!drained)
        uv_run(&e->loop, UV_RUN_ONCE);
    commit_free(e->c);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&e->loop), 0);
    queue_close(e->q);
    nftw(e->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* Runs the loop until *flag is set. */
static void run_until(env_t *e, const bool *flag)
{
    while (!*flag)
        uv_run(&e->loop, UV_RUN_ONCE);
}

typedef struct job_res {
    bool done;
    int rc;
} job_res_t;

static void job_cb(int rc, int result, uint64_t orig_id, void *arg)
{
    job_res_t *r = arg;
    r->done = true;
    r->rc = rc;
}

static int add_job(env_t *e, uint64_t *id, const char *body, size_t len, job_res_t *res)
{
    queue_job_t j;

    memset(&j, 0, sizeof(j));
    j.id = queue_id_next(e->q);
    j.state = QUEUE_STATE_QUEUED;
    j.type = QUEUE_TYPE_TEXT;
    j.created_at = j.updated_at = j.next_attempt_at = 100.0;
    j.phone_number_id = "1000001";
    j.to = "15550001";
    *id = j.id;
    memset(res, 0, sizeof(*res));
    return commit_add_job(e->c, &j, body, len, job_cb, res);
}

static void update_done_cb(void *arg)
{
    *(bool *)arg = true;
}

/* Moves job `id` to `sent` at `t` and waits for the commit. */
static void finish(env_t *e, uint64_t id, double t)
{
    queue_update_t u;
    bool done = false;

    memset(&u, 0, sizeof(u));
    u.id = id;
    u.state = QUEUE_STATE_SENT;
    u.updated_at = t;
    CHECK_EQ(commit_add_update_cb(e->c, &u, update_done_cb, &done), 0);
    run_until(e, &done);
}

typedef struct purge_res {
    bool done;
    int rc;
    size_t purged;
    bool more;
} purge_res_t;

static void purge_cb(int rc, size_t purged, bool more, void *arg)
{
    purge_res_t *p = arg;
    p->done = true;
    p->rc = rc;
    p->purged = purged;
    p->more = more;
}

/* A purge runs in a batch of its own or with others; one waits at a time;
 * `more` says when the limit left some due. */
static void t_purge(void)
{
    env_t e = {0};
    uint64_t ids[5];
    job_res_t jr[5];
    purge_res_t p;
    queue_job_t g;

    env_open(&e, (size_t)64 << 20);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(add_job(&e, &ids[i], "{}", 2, &jr[i]), 0);
    run_until(&e, &jr[4].done);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(jr[i].rc, 0);
    for (int i = 0; i < 4; i++)
        finish(&e, ids[i], 200.0 + i);

    memset(&p, 0, sizeof(p));
    CHECK_EQ(commit_add_purge(e.c, 202.0, 2, purge_cb, &p), 0);
    CHECK_EQ(commit_add_purge(e.c, 202.0, 2, purge_cb, &p), -EBUSY);
    run_until(&e, &p.done);
    CHECK_EQ(p.rc, 0);
    CHECK_EQ(p.purged, 2);
    CHECK(p.more);
    CHECK_EQ(queue_job_get(e.q, ids[0], &g), QUEUE_ENOTFOUND);

    /* This one shares its batch with a new job. */
    memset(&p, 0, sizeof(p));
    CHECK_EQ(add_job(&e, &ids[4], "{}", 2, &jr[4]), 0);
    CHECK_EQ(commit_add_purge(e.c, 202.0, 2, purge_cb, &p), 0);
    run_until(&e, &p.done);
    CHECK(jr[4].done && jr[4].rc == 0);
    CHECK_EQ(p.purged, 1);
    CHECK(!p.more);
    CHECK_EQ(queue_job_get(e.q, ids[3], &g), 0); /* finished at 203: kept */
    queue_job_clear(&g);
    env_close(&e);
}

typedef struct wait_timer {
    uv_timer_t t;
    bool fired;
} wait_timer_t;

static void timer_cb(uv_timer_t *t)
{
    ((wait_timer_t *)t->data)->fired = true;
}

static void timer_closed_cb(uv_handle_t *h)
{
    ((wait_timer_t *)h->data)->fired = true;
}

/* Waits `ms` of loop time (the probe period), running the loop meanwhile. */
static void wait_ms(env_t *e, uint64_t ms)
{
    wait_timer_t w = {.fired = false};

    uv_timer_init(&e->loop, &w.t);
    w.t.data = &w;
    uv_timer_start(&w.t, timer_cb, ms, 0);
    run_until(e, &w.fired);
    w.fired = false;
    uv_close((uv_handle_t *)&w.t, timer_closed_cb);
    run_until(e, &w.fired);
}

/* A full batch makes new jobs fail at once with the same error for
 * COMMIT_FULL_PROBE_MS; then a probe goes through; once finished jobs are
 * purged (possible thanks to the reserve), jobs are accepted again. */
static void t_full_probe(void)
{
    enum { BODY = 512 << 10, MAX = 200 };
    env_t e = {0};
    char *body = malloc(BODY);
    uint64_t ids[MAX], probe_id;
    job_res_t jr, probe;
    purge_res_t p;
    int n = 0;

    CHECK(body != NULL);
    memset(body, 'b', BODY);
    env_open(&e, (size_t)32 << 20);
    for (;;) {
        CHECK(n < MAX);
        CHECK_EQ(add_job(&e, &ids[n], body, BODY, &jr), 0);
        run_until(&e, &jr.done);
        if (jr.rc != 0)
            break;
        n++;
    }
    CHECK_EQ(jr.rc, QUEUE_EFULL);
    /* 32 MiB less a 1 MiB reserve: about 60 bodies of 512 KiB fit. */
    CHECK(n >= 50 && n < 62);
    /* Refused at once, no callback. */
    CHECK_EQ(add_job(&e, &probe_id, "{}", 2, &probe), QUEUE_EFULL);
    wait_ms(&e, 50);
    CHECK(!probe.done);
    /* Meanwhile state changes and a purge still commit (the reserve). */
    for (int i = 0; i < n; i++)
        finish(&e, ids[i], 300.0);
    /* After the probe period a job goes through as a probe. */
    wait_ms(&e, COMMIT_FULL_PROBE_MS);
    memset(&p, 0, sizeof(p));
    CHECK_EQ(commit_add_purge(e.c, 1e12, 1000, purge_cb, &p), 0);
    run_until(&e, &p.done);
    CHECK_EQ(p.rc, 0);
    CHECK_EQ(p.purged, n);
    /* LMDB reuses the pages a txn freed only after one more commit (the
     * last committed snapshot stays intact): the next purge, with nothing
     * to purge, still commits for that (queue/retention.c). Without it
     * the probe below fails. */
    memset(&p, 0, sizeof(p));
    CHECK_EQ(commit_add_purge(e.c, 1e12, 1000, purge_cb, &p), 0);
    run_until(&e, &p.done);
    CHECK_EQ(add_job(&e, &probe_id, body, BODY, &probe), 0);
    run_until(&e, &probe.done);
    CHECK_EQ(probe.rc, 0);
    free(body);
    env_close(&e);
}

/* Draining waits for a pending purge, whose callback runs first. */
static void t_drain_purge(void)
{
    env_t e = {0};
    purge_res_t p;
    bool drained = false;

    env_open(&e, (size_t)64 << 20);
    memset(&p, 0, sizeof(p));
    CHECK_EQ(commit_add_purge(e.c, 1e12, 10, purge_cb, &p), 0);
    commit_drain(e.c, drained_cb, &drained);
    CHECK_EQ(commit_add_purge(e.c, 1e12, 10, purge_cb, &p), -ESHUTDOWN);
    run_until(&e, &drained);
    CHECK(p.done && p.rc == 0 && p.purged == 0);
    commit_free(e.c);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&e.loop), 0);
    queue_close(e.q);
    nftw(e.dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"purge", t_purge},
        {"full_probe", t_full_probe},
        {"drain_purge", t_drain_purge},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
