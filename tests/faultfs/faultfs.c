/*
 * faultfs.c - an LD_PRELOAD shim that makes writes and syncs of an LMDB data
 * file (any file named data.mdb) fail on command. Test-only.
 *
 * Control: $AVP_FAULTFS names a control file, re-read whenever it changes
 * (checked on every intercepted call). Its first line is
 *
 *     off
 *     <what> <ERRNO> [probability] [count]
 *
 * <what> is one of
 *     sync   fsync and fdatasync
 *     data   writes of data pages (write, writev, pwritev at any offset, and
 *            pwrite at an offset past the two meta pages)
 *     meta   pwrite at an offset inside the two meta pages (LMDB's meta write)
 *     write  data and meta
 *     all    sync and write
 * <ERRNO> is EIO, ENOSPC, EDQUOT or EROFS. probability (default 1) fails
 * that share of matching calls; count (default: unlimited) stops after that
 * many failures. A missing or empty file means off. Every failure injected
 * is appended as one line to "<control file>.log" ("fdatasync EIO").
 *
 *     <what> SLOW <ms> [count]
 *
 * makes matching calls wait <ms> milliseconds and then succeed (a slow disk:
 * every group commit takes at least that long); not logged.
 *
 * A failed call does nothing: no byte is written, nothing is flushed.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { W_SYNC = 1, W_DATA = 2, W_META = 4 };

/* The shim's state: an LD_PRELOAD library has no handle to hang it on, so
 * it is file-static, guarded by one mutex. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    bool loaded;
    struct timespec mtime;
    off_t size;
    ino_t ino;
    int what;
    int err;
    double prob;
    long count;   /* -1: unlimited */
    long slow_ms; /* SLOW: matching calls wait this long, then succeed */
    unsigned seed;
} g;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void resolve(void)
{
    if (real_write != NULL)
        return;
    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    real_pwritev = (ssize_t(*)(int, const struct iovec *, int, off_t))dlsym(RTLD_NEXT, "pwritev");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
}

static int parse_errno(const char *s)
{
    if (strcmp(s, "EIO") == 0)
        return EIO;
    if (strcmp(s, "ENOSPC") == 0)
        return ENOSPC;
    if (strcmp(s, "EDQUOT") == 0)
        return EDQUOT;
    if (strcmp(s, "EROFS") == 0)
        return EROFS;
    return 0;
}

/* Re-reads the control file if it changed. Called with g_mu held. */
static void control_load(const char *path)
{
    struct stat st;
    char line[256];
    FILE *f;

    if (stat(path, &st) != 0) {
        g.what = 0;
        g.loaded = false;
        return;
    }
    if (g.loaded && st.st_mtim.tv_sec == g.mtime.tv_sec && st.st_mtim.tv_nsec == g.mtime.tv_nsec &&
        st.st_size == g.size && st.st_ino == g.ino)
        return;
    g.loaded = true;
    g.mtime = st.st_mtim;
    g.size = st.st_size;
    g.ino = st.st_ino;
    g.what = 0;
    f = fopen(path, "re");
    if (f == NULL)
        return;
    if (fgets(line, sizeof line, f) != NULL) {
        char what[32], err[32];
        double prob = 1.0;
        long count = -1;
        int n = sscanf(line, "%31s %31s %lf %ld", what, err, &prob, &count);
        if (n >= 2) {
            g.err = parse_errno(err);
            g.prob = prob;
            g.count = count;
            g.slow_ms = 0;
            if (strcmp(err, "SLOW") == 0 && n >= 3 && prob > 0) {
                /* The third field is the wait; the call always waits. */
                g.slow_ms = (long)prob;
                g.prob = 1.0;
                g.err = -1;
            }
            if (strcmp(what, "sync") == 0)
                g.what = W_SYNC;
            else if (strcmp(what, "data") == 0)
                g.what = W_DATA;
            else if (strcmp(what, "meta") == 0)
                g.what = W_META;
            else if (strcmp(what, "write") == 0)
                g.what = W_DATA | W_META;
            else if (strcmp(what, "all") == 0)
                g.what = W_SYNC | W_DATA | W_META;
            if (g.err == 0)
                g.what = 0;
        }
    }
    fclose(f);
}

static bool is_lmdb_data(int fd)
{
    char link[64], target[4096];
    ssize_t n;

    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n < 9)
        return false;
    target[n] = '\0';
    return strcmp(target + n - 9, "/data.mdb") == 0;
}

static void note(const char *path, const char *call, int err)
{
    char log[4200], line[128];
    int fd, len;

    snprintf(log, sizeof log, "%s.log", path);
    fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    len = snprintf(line, sizeof line, "%s %s\n", call, strerrorname_np(err));
    /* The raw system call: the shim must not intercept itself. */
    (void)syscall(SYS_write, fd, line, (size_t)len);
    close(fd);
}

/* Decides whether this call fails; returns its errno or 0. */
static int should_fail(int fd, int kind, const char *call)
{
    const char *path = getenv("AVP_FAULTFS");
    int err = 0;
    long slow_ms = 0;

    if (path == NULL || *path == '\0')
        return 0;
    pthread_mutex_lock(&g_mu);
    control_load(path);
    if ((g.what & kind) != 0 && g.count != 0 && is_lmdb_data(fd)) {
        if (g.prob >= 1.0 || (double)rand_r(&g.seed) / RAND_MAX < g.prob) {
            err = g.err;
            slow_ms = g.slow_ms;
            if (g.count > 0)
                g.count--;
        }
    }
    pthread_mutex_unlock(&g_mu);
    if (slow_ms > 0) {
        struct timespec ts = {slow_ms / 1000, (slow_ms % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        return 0;
    }
    if (err != 0)
        note(path, call, err);
    return err;
}

/* LMDB's two meta pages are the first two pages of the file (its page
 * size is the OS page size). */
static int write_kind(off_t off)
{
    long ps = sysconf(_SC_PAGESIZE);
    return off < 2 * (ps > 0 ? ps : 4096) ? W_META : W_DATA;
}

ssize_t write(int fd, const void *buf, size_t len)
{
    int err;
    resolve();
    if ((err = should_fail(fd, W_DATA, "write")) != 0) {
        errno = err;
        return -1;
    }
    return real_write(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    int err;
    resolve();
    if ((err = should_fail(fd, write_kind(off), "pwrite")) != 0) {
        errno = err;
        return -1;
    }
    return real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    int err;
    resolve();
    if ((err = should_fail(fd, write_kind(off), "pwrite64")) != 0) {
        errno = err;
        return -1;
    }
    return real_pwrite64(fd, buf, len, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    int err;
    resolve();
    if ((err = should_fail(fd, W_DATA, "writev")) != 0) {
        errno = err;
        return -1;
    }
    return real_writev(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    int err;
    resolve();
    if ((err = should_fail(fd, write_kind(off), "pwritev")) != 0) {
        errno = err;
        return -1;
    }
    return real_pwritev(fd, iov, n, off);
}

int fsync(int fd)
{
    int err;
    resolve();
    if ((err = should_fail(fd, W_SYNC, "fsync")) != 0) {
        errno = err;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    int err;
    resolve();
    if ((err = should_fail(fd, W_SYNC, "fdatasync")) != 0) {
        errno = err;
        return -1;
    }
    return real_fdatasync(fd);
}
