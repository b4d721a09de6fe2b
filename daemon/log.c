/*
 * log.c - the daemon's log lines and clock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "daemon.h"

void daemon_log_init(daemon_t *d)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char end;

    d->log_journal = js != NULL && sscanf(js, "%llu:%llu%c", &dev, &ino, &end) == 2 &&
                     fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
                     (unsigned long long)st.st_ino == ino;
}

/* One event, one line: text from outside (an API's error message, a
 * client's sender id) could otherwise end the line and start one of its
 * own, with a priority prefix journald would believe. Control bytes are
 * written as \xNN. */
static void emit(const daemon_t *d, int level, const char *name, const char *fmt, va_list ap)
{
    static const char *const words[8] = {
        "emergency: ", "alert: ", "critical: ", "error: ", "warning: ", "notice: ", "", "debug: "};
    char buf[1024], out[4 * sizeof(buf)];
    size_t o = 0;

    vsnprintf(buf, sizeof(buf), fmt, ap);
    for (const unsigned char *p = (const unsigned char *)buf; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    out[o] = '\0';
    if (d->log_journal)
        fprintf(stderr, "<%d>%s%s\n", level, name, out);
    else
        fprintf(stderr, "%s%s%s\n", name, name[0] != '\0' ? "" : words[level & 7], out);
}

void daemon_log(const daemon_t *d, int level, const char *fmt, ...)
{
    va_list ap;

    if (level > d->cfg.log_level)
        return;
    va_start(ap, fmt);
    emit(d, level, "", fmt, ap);
    va_end(ap);
}

void daemon_fatal(const daemon_t *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(d, 3, "avenpingd: ", fmt, ap);
    va_end(ap);
}

double daemon_now(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}
