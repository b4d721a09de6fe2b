/*
 * sdnotify.h - the three pieces of the systemd service protocol avenpingd
 * speaks: status notifications (sd_notify), socket activation
 * (sd_listen_fds) and the watchdog interval (sd_watchdog_enabled).
 *
 * Built with libsystemd (AVP_HAVE_SYSTEMD) these call libsystemd. Without
 * it, the same protocol is spoken here directly: it is small and stable
 * (a datagram of "KEY=value\n" lines to $NOTIFY_SOCKET; $LISTEN_PID /
 * $LISTEN_FDS for passed sockets; $WATCHDOG_USEC / $WATCHDOG_PID), see
 * sd_notify(3), sd_listen_fds(3), sd_watchdog_enabled(3). Both variants
 * behave the same and pass the same unit tests.
 *
 * Outside systemd (no $NOTIFY_SOCKET, no $LISTEN_FDS, no $WATCHDOG_USEC)
 * every function is a cheap no-op, so the daemon runs the same way by hand.
 *
 * Errors: 0 / positive as documented, or a negative errno.
 * Threads: any, but the daemon calls them from the loop thread only.
 * No state is kept here: the environment is the state.
 */
#ifndef AVP_SDNOTIFY_H
#define AVP_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* The first passed file descriptor (SD_LISTEN_FDS_START). */
#define SDNOTIFY_LISTEN_FDS_START 3

/* True when $NOTIFY_SOCKET is set: a service manager listens for
 * notifications, so periodic STATUS= updates are worth sending. */
bool sdnotify_enabled(void);

/*
 * Sends `state` (newline-separated "KEY=value" assignments, e.g.
 * "READY=1\nSTATUS=ready") to the service manager. Returns 1 when sent, 0
 * when no manager listens ($NOTIFY_SOCKET unset), a negative errno on
 * failure. $NOTIFY_SOCKET is left in the environment.
 */
int sdnotify_send(const char *state);

/*
 * Returns how many sockets the service manager passed to this process
 * (starting at SDNOTIFY_LISTEN_FDS_START), 0 if none or if they were meant
 * for another process ($LISTEN_PID differs), or a negative errno. The
 * passed descriptors get FD_CLOEXEC; $LISTEN_PID, $LISTEN_FDS and
 * $LISTEN_FDNAMES are removed from the environment (call it once, before
 * starting threads).
 */
int sdnotify_listen_fds(void);

/*
 * If the service manager expects keep-alive pings (WatchdogSec=), writes
 * the interval in microseconds to *usec and returns 1: send "WATCHDOG=1"
 * well within it (half is customary). Returns 0 when no watchdog is
 * expected of this process, or a negative errno when $WATCHDOG_USEC or
 * $WATCHDOG_PID is malformed.
 */
int sdnotify_watchdog_usec(uint64_t *usec);

/* True when fd is a listening AF_UNIX stream socket (the only kind the
 * daemon adopts). */
bool sdnotify_is_unix_listener(int fd);

#endif
