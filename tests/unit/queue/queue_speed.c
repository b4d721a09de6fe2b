/*
 * queue_speed.c - throughput printout of the job store (not a ctest test).
 *
 *   queue_speed [dir] [jobs] [per_batch]
 *
 * Defaults: a new temp dir, 200000 jobs, 1000 per batch. Each job is a
 * realistic text job (sender, recipient, campaign, idempotency key, ~180
 * byte body). Two runs: "serial" builds and commits on one thread;
 * "pipelined" builds batch N+1 on the main thread while a writer thread
 * commits batch N, as the daemon does.
 */
#include "queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill(queue_t *q, queue_batch_t *b, size_t per, unsigned run)
{
    char key[64], to[32], body[256];
    queue_batch_reset(b);
    for (size_t i = 0; i < per; i++) {
        queue_job_t j;
        int n;
        memset(&j, 0, sizeof j);
        j.id = queue_id_next(q);
        j.state = QUEUE_STATE_QUEUED;
        j.type = QUEUE_TYPE_TEXT;
        j.priority = QUEUE_PRIO_NORMAL;
        j.created_at = j.updated_at = j.next_attempt_at = 1700000000.0 + (double)j.id / 1000.0;
        j.expires_at = j.created_at + 86400.0;
        snprintf(to, sizeof to, "+1555%07llu", (unsigned long long)(j.id % 10000000));
        snprintf(key, sizeof key, "run%u-order-%llu", run, (unsigned long long)j.id);
        j.phone_number_id = "1000001";
        j.to = to;
        j.campaign = "spring-promo";
        j.idempotency_key = key;
        n = snprintf(body, sizeof body,
                     "{\"phoneNumberId\":\"1000001\",\"to\":\"%s\",\"text\":\"Hello, your order "
                     "%llu has shipped and will arrive on Thursday. Reply STOP to opt out.\"}",
                     to, (unsigned long long)j.id);
        if (queue_batch_add_job(b, &j, body, (size_t)n) < 0) {
            fprintf(stderr, "add_job failed\n");
            exit(1);
        }
    }
}

typedef struct pipe_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queue_t *q;
    queue_batch_t *slot; /* handed to the writer; NULL when empty */
    queue_batch_t *done; /* handed back */
    bool stop;
    int err;
    double commit_time;
} pipe_state_t;

static void *writer(void *arg)
{
    pipe_state_t *p = arg;
    for (;;) {
        queue_batch_t *b;
        double t0;
        int rc;
        pthread_mutex_lock(&p->mu);
        while (p->slot == NULL && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->slot == NULL) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        b = p->slot;
        p->slot = NULL;
        pthread_mutex_unlock(&p->mu);
        t0 = now_s();
        rc = queue_batch_commit(p->q, b);
        pthread_mutex_lock(&p->mu);
        p->commit_time += now_s() - t0;
        if (rc != 0)
            p->err = rc;
        p->done = b;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

int main(int argc, char **argv)
{
    bool own_dir = false;
    const char *dir = argc > 1 ? argv[1] : NULL;
    size_t jobs = argc > 2 ? strtoul(argv[2], NULL, 10) : 200000;
    size_t per = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
    queue_batch_t *b[2] = {queue_batch_new(), queue_batch_new()};
    pipe_state_t p;
    pthread_t th;
    queue_t *q;
    double t0, t, commit = 0;
    size_t nb, map, used;
    int rc;

    if (dir == NULL) {
        static char tmpl[256]; /* static: dir points here after the block */
        const char *td = getenv("TMPDIR");
        snprintf(tmpl, sizeof tmpl, "%s/avpq-speed-XXXXXX", td && *td ? td : "/tmp");
        dir = mkdtemp(tmpl);
        if (dir == NULL) {
            perror("mkdtemp");
            return 1;
        }
        own_dir = true;
    }
    if (per == 0 || b[0] == NULL || b[1] == NULL)
        return 1;
    nb = jobs / per;
    rc = queue_open(dir, NULL, &q);
    if (rc != 0) {
        fprintf(stderr, "queue_open: %s\n", queue_strerror(rc));
        return 1;
    }

    /* Serial: build, commit, repeat. */
    t0 = now_s();
    for (size_t i = 0; i < nb; i++) {
        double c0;
        fill(q, b[0], per, 1);
        c0 = now_s();
        rc = queue_batch_commit(q, b[0]);
        commit += now_s() - c0;
        if (rc != 0) {
            fprintf(stderr, "commit: %s\n", queue_strerror(rc));
            return 1;
        }
    }
    t = now_s() - t0;
    printf("serial:    %zu jobs in %zu batches of %zu: %.3f s, %.0f jobs/s (commit alone %.0f "
           "jobs/s, %.2f ms/commit)\n",
           nb * per, nb, per, t, (double)(nb * per) / t, (double)(nb * per) / commit,
           commit * 1000.0 / (double)nb);

    /* Pipelined: the main thread fills one batch while the writer commits
     * the other. */
    memset(&p, 0, sizeof p);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    p.q = q;
    p.done = b[1];
    pthread_create(&th, NULL, writer, &p);
    t0 = now_s();
    {
        queue_batch_t *cur = b[0];
        for (size_t i = 0; i < nb; i++) {
            fill(q, cur, per, 2);
            pthread_mutex_lock(&p.mu);
            while (p.done == NULL)
                pthread_cond_wait(&p.cv, &p.mu);
            p.slot = cur;
            cur = p.done;
            p.done = NULL;
            pthread_cond_broadcast(&p.cv);
            pthread_mutex_unlock(&p.mu);
        }
        pthread_mutex_lock(&p.mu);
        while (p.done == NULL)
            pthread_cond_wait(&p.cv, &p.mu);
        p.stop = true;
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.mu);
    }
    pthread_join(th, NULL);
    t = now_s() - t0;
    if (p.err != 0) {
        fprintf(stderr, "commit: %s\n", queue_strerror(p.err));
        return 1;
    }
    printf("pipelined: %zu jobs in %zu batches of %zu: %.3f s, %.0f jobs/s (%.2f ms/commit)\n",
           nb * per, nb, per, t, (double)(nb * per) / t, p.commit_time * 1000.0 / (double)nb);
    if (queue_space(q, &map, &used) == 0)
        printf("store: %zu MiB used of a %zu MiB map\n", used >> 20, map >> 20);
    queue_batch_free(b[0]);
    queue_batch_free(b[1]);
    queue_close(q);
    if (own_dir) {
        /* Remove what this run created: the env files, the lock, the dir. */
        static const char *const files[] = {"data.mdb", "lock.mdb", "lock"};
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            char path[300];
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    return 0;
}
