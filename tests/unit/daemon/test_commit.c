/*
 * test_commit.c - the committer's retention and storage-full paths
 * (daemon/commit.c) on a real store in a temp dir and a real libuv loop:
 * purges riding on batches, one purge at a time, the refusal of new
 * jobs after a full batch followed by a probe that recovers, the order of
 * what a failed batch carries over, and giving up while draining.
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
/* White box: t_drain_fail damages a campaign record the way a disk could. */
#include "../../../queue/queue_int.h"

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

/* Queues a new job (of `campaign`, may be NULL) with `body`. */
static int add_job_in(env_t *e, uint64_t *id, char *campaign, const char *body, size_t len,
                      job_res_t *res)
{
    queue_job_t j;

    memset(&j, 0, sizeof(j));
    j.id = queue_id_next(e->q);
    j.state = QUEUE_STATE_QUEUED;
    j.type = QUEUE_TYPE_TEXT;
    j.created_at = j.updated_at = j.next_attempt_at = 100.0;
    j.phone_number_id = "1000001";
    j.to = "15550001";
    j.campaign = campaign;
    *id = j.id;
    memset(res, 0, sizeof(*res));
    return commit_add_job(e->c, &j, body, len, job_cb, res);
}

static int add_job(env_t *e, uint64_t *id, const char *body, size_t len, job_res_t *res)
{
    return add_job_in(e, id, NULL, body, len, res);
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

static void count_commit(size_t ops, double seconds, void *arg)
{
    (void)ops;
    (void)seconds;
    ++*(int *)arg;
}

/* A purge runs in a batch of its own or with others; one waits at a time;
 * `more` says when the limit left some due. A purge alone that found
 * nothing is no commit for the stats hook (an idle daemon's retention
 * timer made the `commits` counter move each second). */
static void t_purge(void)
{
    env_t e = {0};
    uint64_t ids[5];
    job_res_t jr[5];
    purge_res_t p;
    queue_job_t g;
    int commits = 0;

    env_open(&e, (size_t)64 << 20);
    commit_set_stat_cb(e.c, count_commit, &commits);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(add_job(&e, &ids[i], "{}", 2, &jr[i]), 0);
    run_until(&e, &jr[4].done);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(jr[i].rc, 0);
    for (int i = 0; i < 4; i++)
        finish(&e, ids[i], 200.0 + i);

    /* Nothing finished before 100: no commit reported. */
    memset(&p, 0, sizeof(p));
    commits = 0;
    CHECK_EQ(commit_add_purge(e.c, 100.0, 2, purge_cb, &p), 0);
    run_until(&e, &p.done);
    CHECK(p.rc == 0 && p.purged == 0);
    CHECK_EQ(commits, 0);

    memset(&p, 0, sizeof(p));
    CHECK_EQ(commit_add_purge(e.c, 202.0, 2, purge_cb, &p), 0);
    CHECK_EQ(commit_add_purge(e.c, 202.0, 2, purge_cb, &p), -EBUSY);
    run_until(&e, &p.done);
    CHECK_EQ(p.rc, 0);
    CHECK_EQ(p.purged, 2);
    CHECK(p.more);
    CHECK_EQ(commits, 1);
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

typedef struct res_res {
    bool done;
    int rc;
    int result;
} res_res_t;

static void res_cb(int rc, int result, void *arg)
{
    res_res_t *r = arg;
    r->done = true;
    r->rc = rc;
    r->result = result;
}

/* Holds the store's writer on a thread of its own until released: a batch
 * handed to the pool meanwhile waits for it, so the test can queue more
 * operations behind that batch before its result comes back (without it, a
 * batch refused at once could be done within the same loop turn). */
typedef struct writer_hold {
    queue_t *q;
    uv_thread_t t;
    uv_sem_t held, release;
} writer_hold_t;

static int hold_fn(queue__wtxn_t *w, void *arg)
{
    writer_hold_t *h = arg;

    (void)w;
    uv_sem_post(&h->held);
    uv_sem_wait(&h->release);
    return 0;
}

static void hold_thread(void *arg)
{
    writer_hold_t *h = arg;

    CHECK_EQ(queue__write_run(h->q, hold_fn, h), 0);
}

static void writer_hold(env_t *e, writer_hold_t *h)
{
    h->q = e->q;
    CHECK_EQ(uv_sem_init(&h->held, 0), 0);
    CHECK_EQ(uv_sem_init(&h->release, 0), 0);
    CHECK_EQ(uv_thread_create(&h->t, hold_thread, h), 0);
    uv_sem_wait(&h->held);
}

static void writer_release(writer_hold_t *h)
{
    uv_sem_post(&h->release);
    CHECK_EQ(uv_thread_join(&h->t), 0);
    uv_sem_destroy(&h->held);
    uv_sem_destroy(&h->release);
}

/* Fills the store (map_size_max 32 MiB) with a job too big for it,
 * returning its result holder: the batch it is in fails QUEUE_EFULL. */
static void add_too_big(env_t *e, job_res_t *jr, char **body)
{
    enum { BIG = 31 << 20 };
    uint64_t id;

    *body = malloc(BIG);
    CHECK(*body != NULL);
    memset(*body, 'x', BIG);
    CHECK_EQ(add_job(e, &id, *body, BIG, jr), 0);
}

/* A failed batch's state change is carried ahead of what was queued while
 * it was being committed: here the `sending` record of job X fails with a
 * batch the store refuses (a new job too big for it), while a cancel of X
 * waits in the next batch. Applied in that order, X ends cancelled; carried
 * behind the cancel, `sending` overwrote it and X stayed `sending` with
 * nobody sending it (and was sent after a restart). */
static void t_carry_order(void)
{
    env_t e = {0};
    uint64_t x;
    job_res_t jr, big;
    res_res_t cancel = {0};
    bool sending_done = false;
    writer_hold_t hold;
    queue_update_t u;
    queue_job_t g;
    char *body;
    uint64_t counts[QUEUE_STATE_MAX + 1];

    env_open(&e, (size_t)32 << 20);
    CHECK_EQ(add_job(&e, &x, "{}", 2, &jr), 0);
    run_until(&e, &jr.done);
    CHECK_EQ(jr.rc, 0);

    writer_hold(&e, &hold);
    add_too_big(&e, &big, &body);
    memset(&u, 0, sizeof(u));
    u.id = x;
    u.state = QUEUE_STATE_SENDING;
    u.attempts = 1;
    u.updated_at = 101.0;
    u.next_attempt_at = 100.0;
    CHECK_EQ(commit_add_update_cb(e.c, &u, update_done_cb, &sending_done), 0);
    /* One turn: the batch goes to the pool; what follows is the next one. */
    uv_run(&e.loop, UV_RUN_NOWAIT);
    memset(&u, 0, sizeof(u));
    u.id = x;
    u.state = QUEUE_STATE_CANCELLED;
    u.updated_at = 102.0;
    u.only_from = QUEUE_STATE_BIT(QUEUE_STATE_QUEUED) | QUEUE_STATE_BIT(QUEUE_STATE_RETRYING) |
                  QUEUE_STATE_BIT(QUEUE_STATE_SENDING);
    CHECK_EQ(commit_add_update_res(e.c, &u, res_cb, &cancel), 0);
    writer_release(&hold);
    run_until(&e, &big.done);
    CHECK_EQ(big.rc, QUEUE_EFULL);
    run_until(&e, &cancel.done);
    CHECK(sending_done);
    CHECK_EQ(cancel.rc, 0);
    CHECK_EQ(cancel.result, 0);
    CHECK_EQ(queue_job_get(e.q, x, &g), 0);
    CHECK_EQ(g.state, QUEUE_STATE_CANCELLED);
    queue_job_clear(&g);
    CHECK_EQ(queue_counts(e.q, counts), 0);
    CHECK_EQ(counts[QUEUE_STATE_SENDING], 0);
    CHECK_EQ(counts[QUEUE_STATE_CANCELLED], 1);
    free(body);
    env_close(&e);
}

static int pause_seen_cb(int kind, const char *name, const char *reason, void *user)
{
    (void)reason;
    if (kind == QUEUE_PAUSE_CAMPAIGN && strcmp(name, "c1") == 0)
        *(bool *)user = true;
    return 0;
}

/* The same for a pause: carried ahead of the resume that followed it, the
 * campaign ends resumed, as its `resume` was answered. */
static void t_carry_pause(void)
{
    env_t e = {0};
    job_res_t big;
    bool paused_done = false, resumed_done = false, paused = false;
    writer_hold_t hold;
    char *body;

    env_open(&e, (size_t)32 << 20);
    writer_hold(&e, &hold);
    add_too_big(&e, &big, &body);
    CHECK_EQ(commit_add_pause(e.c, QUEUE_PAUSE_CAMPAIGN, "c1", "operator", true, update_done_cb,
                              &paused_done),
             0);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    CHECK_EQ(commit_add_pause(e.c, QUEUE_PAUSE_CAMPAIGN, "c1", NULL, false, update_done_cb,
                              &resumed_done),
             0);
    writer_release(&hold);
    run_until(&e, &resumed_done);
    CHECK(paused_done);
    CHECK_EQ(big.rc, QUEUE_EFULL);
    CHECK_EQ(queue_pauses_each(e.q, pause_seen_cb, &paused), 0);
    CHECK(!paused);
    free(body);
    env_close(&e);
}

static int cut_camp_fn(queue__wtxn_t *w, void *arg)
{
    MDB_val k = {2, "c1"}, v = {3, "abc"};

    (void)arg;
    return mdb_put(w->txn, w->q->db_camp, &k, &v, 0);
}

typedef struct fails {
    unsigned calls;
    unsigned in_row[8];
} fails_t;

static void fail_cb(int rc, unsigned in_row, void *arg)
{
    fails_t *f = arg;

    CHECK(rc != 0);
    if (f->calls < 8)
        f->in_row[f->calls] = in_row;
    f->calls++;
}

/* Stores a job of campaign c1, damages c1's record and queues the job's
 * move to `sent`: a state change whose every batch fails. */
static void queue_failing_update(env_t *e)
{
    static char c1[] = "c1";
    queue_update_t u;
    job_res_t jr;
    uint64_t id;

    CHECK_EQ(add_job_in(e, &id, c1, "{}", 2, &jr), 0);
    run_until(e, &jr.done);
    CHECK_EQ(jr.rc, 0);
    CHECK_EQ(queue__write_run(e->q, cut_camp_fn, NULL), 0);
    memset(&u, 0, sizeof(u));
    u.id = id;
    u.state = QUEUE_STATE_SENT;
    u.updated_at = 101.0;
    CHECK_EQ(commit_add_update(e->c, &u), 0);
}

/* A new job queued behind a state change that keeps failing (its campaign
 * record damaged) is not held back forever: the carried change and the next
 * batch are one batch, and the job's submitter is told it failed. */
static void t_carry_fails_next(void)
{
    env_t e = {0};
    job_res_t next;
    writer_hold_t hold;
    uint64_t id2;

    env_open(&e, (size_t)64 << 20);
    queue_failing_update(&e);
    /* Held before the loop hands that batch to the pool. */
    writer_hold(&e, &hold);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    CHECK_EQ(add_job(&e, &id2, "{}", 2, &next), 0);
    writer_release(&hold);
    run_until(&e, &next.done);
    CHECK_EQ(next.rc, QUEUE_ECORRUPT);
    env_close(&e);
}

/* Draining, a store that keeps failing is given up on after three failed
 * commits in a row, each reported with its place in the row (the first
 * was counted twice: given up after two, reported as 2 and 3). */
static void t_drain_fail(void)
{
    env_t e = {0};
    fails_t f = {0};
    bool drained = false;

    env_open(&e, (size_t)64 << 20);
    commit_set_fail_cb(e.c, fail_cb, &f);
    queue_failing_update(&e);
    commit_drain(e.c, drained_cb, &drained);
    run_until(&e, &drained);
    CHECK_EQ(f.calls, 3);
    CHECK_EQ(f.in_row[0], 1);
    CHECK_EQ(f.in_row[1], 2);
    CHECK_EQ(f.in_row[2], 3);
    CHECK_EQ(commit_lost(e.c), 1);
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
        {"carry_order", t_carry_order},
        {"carry_pause", t_carry_pause},
        {"drain_fail", t_drain_fail},
        {"carry_fails_next", t_carry_fails_next},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
