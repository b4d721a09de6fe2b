/*
 * test_sdnotify.c - the service-manager protocol (sdnotify.h). Built twice:
 * against libsystemd (when found) and against the built-in implementation,
 * so both variants are held to the same behaviour.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "sdnotify.h"

/* Binds a datagram socket at `addr` ('@' prefix: abstract) and returns it. */
static int bind_dgram(const char *addr)
{
    struct sockaddr_un sa;
    socklen_t len;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    CHECK(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    CHECK(strlen(addr) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, addr, strlen(addr));
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(addr));
    if (addr[0] == '@')
        sa.sun_path[0] = '\0';
    else
        unlink(addr);
    CHECK(bind(fd, (struct sockaddr *)&sa, len) == 0);
    return fd;
}

/* Receives one datagram (without blocking: it was sent before). */
static void expect_datagram(int fd, const char *want)
{
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

    CHECK(n >= 0);
    buf[n] = '\0';
    CHECK_STR(buf, want);
}

static void test_notify_none(void)
{
    unsetenv("NOTIFY_SOCKET");
    CHECK(!sdnotify_enabled());
    CHECK_EQ(sdnotify_send("READY=1"), 0);
}

static void test_notify_path(void)
{
    char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/avp-sdnotify-%d.sock", (int)getpid());
    fd = bind_dgram(path);
    setenv("NOTIFY_SOCKET", path, 1);
    CHECK(sdnotify_enabled());
    CHECK_EQ(sdnotify_send("READY=1\nSTATUS=ready: 0 queued"), 1);
    expect_datagram(fd, "READY=1\nSTATUS=ready: 0 queued");
    CHECK_EQ(sdnotify_send("WATCHDOG=1"), 1);
    expect_datagram(fd, "WATCHDOG=1");
    /* The variable stays for the next notification. */
    CHECK(getenv("NOTIFY_SOCKET") != NULL);
    close(fd);
    unlink(path);
    /* Nobody listening any more: an error, not a crash or a hang. */
    CHECK(sdnotify_send("WATCHDOG=1") < 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_notify_abstract(void)
{
    char addr[64];
    int fd;

    snprintf(addr, sizeof(addr), "@avp-sdnotify-%d", (int)getpid());
    fd = bind_dgram(addr);
    setenv("NOTIFY_SOCKET", addr, 1);
    CHECK_EQ(sdnotify_send("STOPPING=1"), 1);
    expect_datagram(fd, "STOPPING=1");
    close(fd);
    /* Neither a path nor an abstract name: refused. */
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    CHECK(sdnotify_send("READY=1") < 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_listen_fds(void)
{
    char pid[32];
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    int dgram = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa;
    char path[64];

    CHECK(s >= 0 && dgram >= 0);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    CHECK_EQ(sdnotify_listen_fds(), 0);

    snprintf(path, sizeof(path), "/tmp/avp-sdlisten-%d.sock", (int)getpid());
    unlink(path);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    CHECK(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(!sdnotify_is_unix_listener(s)); /* bound, not listening yet */
    CHECK(listen(s, 8) == 0);
    CHECK(sdnotify_is_unix_listener(s));
    CHECK(!sdnotify_is_unix_listener(dgram));
    CHECK(!sdnotify_is_unix_listener(-1));
    CHECK(dup2(s, SDNOTIFY_LISTEN_FDS_START) == SDNOTIFY_LISTEN_FDS_START);

    /* Meant for another process: not ours, and the variables go. */
    snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    CHECK_EQ(sdnotify_listen_fds(), 0);
    CHECK(getenv("LISTEN_FDS") == NULL);

    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "avenpingd.socket", 1);
    CHECK_EQ(sdnotify_listen_fds(), 1);
    CHECK(fcntl(SDNOTIFY_LISTEN_FDS_START, F_GETFD) & FD_CLOEXEC);
    CHECK(getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
          getenv("LISTEN_FDNAMES") == NULL);
    /* Called again: nothing more to take. */
    CHECK_EQ(sdnotify_listen_fds(), 0);

    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "many", 1);
    CHECK(sdnotify_listen_fds() < 0);

    close(SDNOTIFY_LISTEN_FDS_START);
    close(s);
    close(dgram);
    unlink(path);
}

static void test_watchdog(void)
{
    char pid[32];
    uint64_t usec = 0;

    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    CHECK_EQ(sdnotify_watchdog_usec(&usec), 0);
    setenv("WATCHDOG_USEC", "200000", 1);
    CHECK_EQ(sdnotify_watchdog_usec(&usec), 1);
    CHECK_EQ(usec, 200000);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    usec = 0;
    CHECK_EQ(sdnotify_watchdog_usec(&usec), 1);
    CHECK_EQ(usec, 200000);
    /* For another process (we would be its child): no watchdog for us. */
    snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    CHECK_EQ(sdnotify_watchdog_usec(&usec), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "soon", 1);
    CHECK(sdnotify_watchdog_usec(&usec) < 0);
    unsetenv("WATCHDOG_USEC");
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"notify_none", test_notify_none},
        {"notify_path", test_notify_path},
        {"notify_abstract", test_notify_abstract},
        {"listen_fds", test_listen_fds},
        {"watchdog", test_watchdog},
    };

    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
