/*
 * log.c - the daemon's log lines and clock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>

#include "daemon.h"

void daemon_log(const daemon_t *d, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    if (level > d->cfg.log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "<%d>%s\n", level, buf);
}

double daemon_now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}
