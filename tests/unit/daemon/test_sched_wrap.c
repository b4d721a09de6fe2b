/*
 * test_sched_wrap.c - the scheduler's rate windows across 2^32 picks. White
 * box: it includes daemon/scheduler.c to start a window's pick counter just
 * below 2^32 (reaching it by picking takes 50 days at 1,000/s), and counts
 * the sends of a full bucket through the public API.
 */
#include "../../../daemon/scheduler.c" // NOLINT(bugprone-suspicious-include): white box

#include "check.h"

/* The most sends in any SCHED_RATE_WINDOW of 5 s of picks at `rate` (per
 * sender, or global when `global`), each finished at once, with the pick
 * counter starting at `start`. */
static int max_in_window(uint64_t start, double rate, bool global)
{
    enum { JOBS = 100000 };
    sched_options_t o;
    sched_keys_t k = {"S", NULL, NULL, NULL};
    double now = 1000.0, *times = malloc(sizeof(double) * JOBS);
    int n = 0, most = 0;
    sched_t *s;

    CHECK(times != NULL);
    memset(&o, 0, sizeof(o));
    o.rate_per_number = global ? 0 : rate;
    o.burst_per_number = global ? 0 : rate;
    o.global_rate = global ? rate : 0;
    o.max_inflight = JOBS;
    o.max_inflight_per_number = JOBS;
    o.max_jobs = 1000000;
    CHECK_EQ(sched_new(&o, &s), 0);
    for (uint64_t id = 1; id <= JOBS; id++) {
        sched_job_t t;
        memset(&t, 0, sizeof(t));
        t.id = id;
        CHECK_EQ(sched_job_add(s, &t, &k), 0);
    }
    if (global)
        s->gwin.next = start;
    else
        sender_find(s, "S")->win.next = start;
    for (int step = 0; step < 5000; step++, now += 0.001) {
        sched_job_t *j;
        while ((j = sched_next(s, now, NULL)) != NULL) {
            sched_job_posted(s, j, now);
            sched_job_finish(s, j);
            CHECK(n < JOBS);
            times[n++] = now;
        }
    }
    for (int a = 0, b = 0; b < n; b++) {
        while (times[b] - times[a] >= SCHED_RATE_WINDOW - 1e-9)
            a++;
        if (b - a + 1 > most)
            most = b - a + 1;
    }
    sched_free(s);
    free(times);
    return most;
}

/* With the counter 32 bits wide, the pick after 2^32 - 1 used slot 0 of a
 * window of 80 or 1,000 out of turn: 121 and 1,501 sends in one window. */
static void t_sender_wrap(void)
{
    CHECK_EQ(max_in_window(0, 1000, false), 1000);
    CHECK_EQ(max_in_window(UINT32_MAX - 500, 1000, false), 1000);
    CHECK_EQ(max_in_window(UINT32_MAX - 40, 80, false), 80);
    CHECK_EQ(max_in_window(UINT32_MAX - 10, 80, false), 80);
}

static void t_global_wrap(void)
{
    CHECK_EQ(max_in_window(0, 1000, true), 1000);
    CHECK_EQ(max_in_window(UINT32_MAX - 500, 1000, true), 1000);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"sender_wrap", t_sender_wrap},
        {"global_wrap", t_global_wrap},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
