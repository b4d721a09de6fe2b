/*
 * sdnotify.c - sd_notify, sd_listen_fds and sd_watchdog_enabled, through
 * libsystemd when built with it, else spoken directly (see sdnotify.h).
 */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef AVP_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

bool sdnotify_enabled(void)
{
    const char *e = getenv("NOTIFY_SOCKET");

    return e != NULL && *e != '\0';
}

bool sdnotify_is_unix_listener(int fd)
{
    int domain = 0, type = 0, listening = 0;
    socklen_t len;

    len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX)
        return false;
    len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return false;
    len = sizeof(listening);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening != 0;
}

#ifdef AVP_HAVE_SYSTEMD

int sdnotify_send(const char *state)
{
    return sd_notify(0, state);
}

int sdnotify_listen_fds(void)
{
    return sd_listen_fds(1);
}

int sdnotify_watchdog_usec(uint64_t *usec)
{
    return sd_watchdog_enabled(0, usec);
}

#else /* the protocol spoken directly */

/* Parses a whole decimal string into [0, max]. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int sdnotify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t sa_len;
    size_t path_len;
    ssize_t n;
    int fd, rc;

    if (path == NULL || *path == '\0')
        return 0;
    if (state == NULL)
        return -EINVAL;
    /* A file system path, or '@' for an abstract address (sd_notify(3)). */
    if (path[0] != '/' && path[0] != '@')
        return -EAFNOSUPPORT;
    path_len = strlen(path);
    if (path_len >= sizeof(sa.sun_path))
        return -E2BIG;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, path_len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    /* An abstract name is exactly its bytes; a path may carry its NUL. */
    sa_len =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + (path[0] == '@' ? 0 : 1));

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sa_len);
    rc = n < 0 ? -errno : 1;
    close(fd);
    return rc;
}

int sdnotify_listen_fds(void)
{
    uint64_t pid, n;
    int rc = 0;

    if (getenv("LISTEN_PID") == NULL)
        goto out;
    if (parse_u64(getenv("LISTEN_PID"), INT_MAX, &pid) != 0 ||
        parse_u64(getenv("LISTEN_FDS"), INT_MAX - SDNOTIFY_LISTEN_FDS_START, &n) != 0) {
        rc = -EINVAL;
        goto out;
    }
    if ((pid_t)pid != getpid())
        goto out; /* meant for another process (we are a child of the receiver) */
    for (int fd = SDNOTIFY_LISTEN_FDS_START; fd < SDNOTIFY_LISTEN_FDS_START + (int)n; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
            rc = -errno;
            goto out;
        }
    }
    rc = (int)n;
out:
    /* Not inherited by anything this process starts. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return rc;
}

int sdnotify_watchdog_usec(uint64_t *usec)
{
    const char *pid_s = getenv("WATCHDOG_PID");
    uint64_t v, pid;

    if (getenv("WATCHDOG_USEC") == NULL)
        return 0;
    if (parse_u64(getenv("WATCHDOG_USEC"), UINT64_MAX - 1, &v) != 0 || v == 0)
        return -EINVAL;
    if (pid_s != NULL) {
        if (parse_u64(pid_s, INT_MAX, &pid) != 0)
            return -EINVAL;
        if ((pid_t)pid != getpid())
            return 0;
    }
    if (usec != NULL)
        *usec = v;
    return 1;
}

#endif
