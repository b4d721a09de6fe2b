/*
 * timeshift.c - an LD_PRELOAD shim that moves the wall clock of one process
 * forward by $AVP_TIME_SHIFT_S seconds (gettimeofday, time, and
 * clock_gettime of the realtime clocks; the monotonic clocks are left
 * alone, so libuv's timers run as usual). The policy tests use it to see a
 * job due a day later without waiting a day: the daemon is restarted under
 * the shift and finds the job due.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long shift_s(void)
{
    const char *s = getenv("AVP_TIME_SHIFT_S");

    return s != NULL ? strtol(s, NULL, 10) : 0;
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    static int (*next)(clockid_t, struct timespec *);
    int rc;

    if (next == NULL)
        *(void **)&next = dlsym(RTLD_NEXT, "clock_gettime");
    rc = next(clk, ts);
    if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE || clk == CLOCK_TAI))
        ts->tv_sec += shift_s();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    struct timespec ts;

    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *t)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (t != NULL)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
