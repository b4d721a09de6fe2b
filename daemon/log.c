/*
 * log.c - the daemon's log lines and clock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>

#include "daemon.h"

/* One event, one line: text from outside (an API's error message, a
 * client's sender id) could otherwise end the line and start one of its
 * own, with a priority prefix journald would believe. Control bytes are
 * written as \xNN. */
void daemon_log(const daemon_t *d, int level, const char *fmt, ...)
{
    char buf[1024], out[4 * sizeof(buf)];
    size_t o = 0;
    va_list ap;

    if (level > d->cfg.log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (const unsigned char *p = (const unsigned char *)buf; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    out[o] = '\0';
    fprintf(stderr, "<%d>%s\n", level, out);
}

double daemon_now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}
