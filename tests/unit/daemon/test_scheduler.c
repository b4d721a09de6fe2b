/* test_scheduler.c - the scheduler driven by a fake clock. */
#include <errno.h>
#include <math.h>

#include "check.h"
#include "scheduler.h"

static sched_t *make(double rate, unsigned inflight, unsigned per_number, size_t max_jobs)
{
    sched_options_t o;
    sched_t *s;

    memset(&o, 0, sizeof(o));
    o.rate_per_number = rate;
    o.max_inflight = inflight;
    o.max_inflight_per_number = per_number;
    o.max_jobs = max_jobs;
    CHECK_EQ(sched_new(&o, &s), 0);
    return s;
}

static void add(sched_t *s, uint64_t id, double due, int prio, const char *sender)
{
    sched_job_t t;

    memset(&t, 0, sizeof(t));
    t.id = id;
    t.due = due;
    t.priority = (uint8_t)prio;
    t.type = 1;
    CHECK_EQ(sched_job_add(s, &t, sender), 0);
}

static void test_due_order(void)
{
    sched_t *s = make(0, 100, 100, 100);
    double wake;
    sched_job_t *j;

    add(s, 3, 10.0, 1, "a");
    add(s, 1, 20.0, 1, "a");
    add(s, 2, 10.0, 1, "a");
    CHECK(sched_next(s, 5.0, &wake) == NULL);
    CHECK(wake == 10.0);
    j = sched_next(s, 10.0, &wake);
    CHECK(j && j->id == 2); /* same due: lower id first */
    j = sched_next(s, 10.0, &wake);
    CHECK(j && j->id == 3);
    CHECK(sched_next(s, 10.0, &wake) == NULL);
    CHECK(wake == 20.0);
    j = sched_next(s, 25.0, &wake);
    CHECK(j && j->id == 1 && j->inflight);
    CHECK_EQ(sched_inflight(s), 3);
    sched_free(s);
}

static void test_priority_within_sender(void)
{
    sched_t *s = make(0, 100, 100, 100);
    sched_job_t *j;

    add(s, 1, 0, 2, "a"); /* bulk */
    add(s, 2, 0, 1, "a"); /* normal */
    add(s, 3, 0, 0, "a"); /* high */
    j = sched_next(s, 1, NULL);
    CHECK_EQ(j->id, 3);
    j = sched_next(s, 1, NULL);
    CHECK_EQ(j->id, 2);
    j = sched_next(s, 1, NULL);
    CHECK_EQ(j->id, 1);
    sched_free(s);
}

static void test_round_robin_senders(void)
{
    sched_t *s = make(0, 100, 100, 100);
    int counts[2] = {0, 0}, i;

    /* Sender a has 20 jobs queued first; b's 5 still get every other turn. */
    for (i = 0; i < 20; i++)
        add(s, (uint64_t)i + 1, 0, 1, "a");
    for (i = 0; i < 5; i++)
        add(s, (uint64_t)i + 100, 0, 1, "b");
    for (i = 0; i < 10; i++) {
        sched_job_t *j = sched_next(s, 1, NULL);
        CHECK(j != NULL);
        counts[j->id >= 100]++;
    }
    CHECK_EQ(counts[0], 5);
    CHECK_EQ(counts[1], 5);
    sched_free(s);
}

static void test_inflight_caps(void)
{
    sched_t *s = make(0, 3, 2, 100);
    sched_job_t *a1, *a2, *b1;
    double wake;
    int i;

    for (i = 0; i < 5; i++)
        add(s, (uint64_t)i + 1, 0, 1, "a");
    for (i = 0; i < 5; i++)
        add(s, (uint64_t)i + 10, 0, 1, "b");
    a1 = sched_next(s, 1, NULL);
    b1 = sched_next(s, 1, NULL);
    a2 = sched_next(s, 1, NULL);
    CHECK(a1 && b1 && a2);
    CHECK(sched_next(s, 1, &wake) == NULL); /* global cap 3 */
    CHECK(isinf(wake));
    sched_job_finish(s, b1);
    b1 = sched_next(s, 1, NULL); /* a is at its cap of 2: b goes */
    CHECK(b1 && b1->sender != a1->sender);
    sched_job_retry(s, a1, 5.0);
    CHECK(sched_next(s, 1, NULL) != NULL); /* a freed a slot */
    CHECK_EQ(sched_inflight(s), 3);
    sched_free(s);
}

static void test_token_bucket(void)
{
    sched_t *s = make(10, 1000, 1000, 1000); /* 10/s, burst 10 */
    double now = 100, wake = 0;
    int sent = 0, i;

    for (i = 0; i < 100; i++)
        add(s, (uint64_t)i + 1, 0, 1, "a");
    while (sched_next(s, now, &wake) != NULL)
        sent++;
    CHECK_EQ(sent, 10); /* the burst */
    CHECK(fabs(wake - (now + 0.1)) < 1e-9);
    /* Over 2 simulated seconds, 20 more and never faster. */
    for (now = 100; now <= 102.0 + 1e-9; now += 0.01)
        while (sched_next(s, now, &wake) != NULL)
            sent++;
    CHECK(sent >= 29 && sent <= 31);
    sched_free(s);
}

static void test_retry_and_finish(void)
{
    sched_t *s = make(0, 10, 10, 2);
    sched_job_t *j, t;

    add(s, 1, 0, 1, "a");
    add(s, 2, 0, 1, "a");
    memset(&t, 0, sizeof(t));
    t.id = 3;
    CHECK_EQ(sched_job_add(s, &t, "a"), -ENOSPC);
    t.id = 1;
    CHECK_EQ(sched_job_add(s, &t, "a"), -EEXIST);
    j = sched_next(s, 1, NULL);
    CHECK_EQ(j->id, 1);
    sched_job_retry(s, j, 50);
    j = sched_next(s, 1, NULL);
    CHECK_EQ(j->id, 2);
    CHECK(sched_next(s, 1, NULL) == NULL);
    sched_job_finish(s, j);
    CHECK(!sched_contains(s, 2));
    CHECK(sched_contains(s, 1));
    j = sched_next(s, 50, NULL);
    CHECK(j && j->id == 1 && j->attempts == 0);
    sched_job_finish(s, j);
    CHECK_EQ(sched_jobs(s), 0);
    CHECK(sched_has_room(s));
    sched_free(s);
}

static void test_many_jobs(void)
{
    /* The hash table grows and rehashes past tombstones. */
    sched_t *s = make(0, 1u << 20, 1u << 20, 200000);
    uint64_t i;
    size_t n = 0;
    sched_job_t *j;

    for (i = 1; i <= 100000; i++)
        add(s, i, (double)(i % 97), 1, i % 2 ? "a" : "b");
    while ((j = sched_next(s, 1000, NULL)) != NULL) {
        n++;
        sched_job_finish(s, j);
    }
    CHECK_EQ(n, 100000);
    CHECK_EQ(sched_jobs(s), 0);
    for (i = 1; i <= 1000; i++)
        add(s, i, 0, 1, "c");
    CHECK_EQ(sched_jobs(s), 1000);
    sched_free(s);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"due_order", test_due_order},
        {"priority_within_sender", test_priority_within_sender},
        {"round_robin_senders", test_round_robin_senders},
        {"inflight_caps", test_inflight_caps},
        {"token_bucket", test_token_bucket},
        {"retry_and_finish", test_retry_and_finish},
        {"many_jobs", test_many_jobs},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
