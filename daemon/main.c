/*
 * main.c - avenpingd: start-up, signals and shutdown.
 *
 * The path of a job: ipc (validated request) -> handlers.c -> commit (group
 * commit on a worker thread) -> answer + scheduler -> dispatch.c -> http ->
 * classify -> commit (state change) -> scheduler (finish or retry). See
 * docs/architecture.md.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "daemon.h"
#include "sdnotify.h"

/* Longest gap between STATUS= updates, and the window of the sends/s
 * figure in them. */
#define STATUS_PERIOD_MS 1000
/* What a stop needs beyond shutdown_timeout_ms: the drain's last commits
 * and the answers owed to clients (at most 2 s each). Asked of the service
 * manager at SIGTERM (EXTEND_TIMEOUT_USEC), so that a shutdown_timeout_ms
 * longer than TimeoutStopSec= is waited for, not cut by SIGKILL. */
#define STOP_MARGIN_MS 20000
/* Start time asked for before an index rebuild (store_check): ten minutes
 * from then, where systemd's default start timeout is 90 s. */
#define STORE_REPAIR_EXTEND_USEC "600000000"

/* --- service manager -------------------------------------------------- */

/* Sends `state` to the service manager; a failure is logged at debug
 * level only (the manager may be gone at shutdown, and the daemon works
 * the same without it). */
static void notify(daemon_t *d, const char *state)
{
    int rc = sdnotify_send(state);

    if (rc < 0)
        dlog(d, CONFIG_LOG_DEBUG, "notify: %s", strerror(-rc));
}

/* "STATUS=<what>: <queue depth>, <requests in flight>, <rate>, <connections>"
 * (requests on the wire, at most max_inflight; not the jobs picked, whose
 * `sending` commits run ahead of a free request slot). */
static void format_status(const daemon_t *d, const char *what, char *buf, size_t size)
{
    snprintf(buf, size, "STATUS=%s: %llu unfinished, %zu in flight, %.1f sends/s, %u connections",
             what, (unsigned long long)d->unfinished, d->http ? http_pool_inflight(d->http) : 0,
             d->status_rate, ipc_server_connections(d->ipc));
}

static void notify_timer_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;
    uint64_t now = uv_now(d->loop);
    char buf[256];

    if (d->watchdog_usec > 0)
        notify(d, "WATCHDOG=1");
    if (now - d->status_ms < STATUS_PERIOD_MS)
        return;
    d->status_rate =
        (double)(d->stats.sends - d->status_sends) * 1000.0 / (double)(now - d->status_ms);
    d->status_sends = d->stats.sends;
    d->status_ms = now;
    format_status(d, d->stopping ? "Stopping" : "Running", buf, sizeof(buf));
    notify(d, buf);
}

/* Starts the STATUS=/WATCHDOG=1 timer when a service manager listens: every
 * STATUS_PERIOD_MS, or every half watchdog interval if that is shorter (a
 * stuck loop then misses its pings and systemd restarts the service). */
static void notify_start(daemon_t *d)
{
    uint64_t period = STATUS_PERIOD_MS;
    int rc;

    if (!sdnotify_enabled())
        return;
    rc = sdnotify_watchdog_usec(&d->watchdog_usec);
    if (rc < 0)
        dlog(d, CONFIG_LOG_WARN, "watchdog: bad WATCHDOG_USEC/WATCHDOG_PID: %s", strerror(-rc));
    if (rc <= 0)
        d->watchdog_usec = 0;
    if (d->watchdog_usec > 0 && d->watchdog_usec / 2000 < period)
        period = d->watchdog_usec / 2000 > 0 ? d->watchdog_usec / 2000 : 1;
    d->status_ms = uv_now(d->loop);
    d->status_sends = d->stats.sends;
    uv_timer_start(&d->notify_timer, notify_timer_cb, period, period);
}

/* --- shutdown --------------------------------------------------------- */

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void drained_cb(void *arg)
{
    daemon_t *d = arg;

    size_t lost = commit_lost(d->commit);

    /* A stop that gave up state changes is not a clean one: the exit
     * status says so (systemd shows the unit failed, not stopped). */
    if (lost > 0) {
        dlog(d, CONFIG_LOG_ERROR,
             "store NOT flushed: %zu operations could not be written (see the commit errors "
             "above); the jobs keep their last stored state and are picked up from it at the "
             "next start (one in flight is sent again under at-least-once); exiting with "
             "status 1",
             lost);
        d->exit_code = 1;
    } else
        dlog(d, CONFIG_LOG_INFO, "store flushed; exiting");
    d->closing = true;
    daemon_metrics_write(d); /* the final counts */
    daemon_watchers_close(d);
    ipc_server_close(d->ipc);
    d->ipc = NULL;
    http_pool_close(d->http);
    d->http = NULL;
    commit_free(d->commit);
    d->commit = NULL;
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->wake, NULL);
    uv_close((uv_handle_t *)&d->pump_idle, NULL);
    uv_close((uv_handle_t *)&d->act_idle, NULL);
    uv_close((uv_handle_t *)&d->stop_timer, NULL);
    uv_close((uv_handle_t *)&d->notify_timer, NULL);
    uv_close((uv_handle_t *)&d->metrics_timer, NULL);
    uv_close((uv_handle_t *)&d->probe, NULL);
    uv_close((uv_handle_t *)&d->purge_timer, NULL);
}

void daemon_finish_stop(daemon_t *d)
{
    if (d->stop_finishing)
        return;
    d->stop_finishing = true;
    uv_timer_stop(&d->stop_timer);
    uv_timer_stop(&d->wake);
    uv_timer_stop(&d->probe);
    /* Whatever is still in flight is cancelled; its callback records the
     * job as due again, so it is sent after the restart. */
    d->cancelling_all = true;
    http_pool_cancel_all(d->http);
    d->cancelling_all = false;
    if (d->stop_uncertain > 0)
        dlog(d, CONFIG_LOG_WARN,
             "jobs made uncertain by cancelling their requests on the wire: %llu (at-most-once: "
             "not sent again; `avenpingctl retry --campaign NAME --state uncertain`), the first "
             "job %llu",
             d->stop_uncertain, (unsigned long long)d->stop_uncertain_first);
    commit_drain(d->commit, drained_cb, d);
}

static void stop_timer_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    dlog(d, CONFIG_LOG_WARN, "%zu requests still in flight after %ldms; cancelling them",
         http_pool_inflight(d->http), d->cfg.shutdown_timeout_ms);
    daemon_finish_stop(d);
}

static void begin_stop(daemon_t *d, const char *why)
{
    char buf[256];

    if (d->stopping) {
        /* A second signal (Ctrl-C twice, systemctl kill) asks for now: the
         * requests still in flight are cancelled as at the timeout. */
        if (!d->stop_finishing) {
            dlog(d, CONFIG_LOG_WARN, "%s again: cancelling the requests in flight (%zu)", why,
                 http_pool_inflight(d->http));
            daemon_finish_stop(d);
        } else if (!d->closing) {
            /* Nothing is left to cut short: the last commits are what an
             * acknowledged job's durability and its client's answer wait
             * for. Said, so that the operator knows it is not ignored. */
            dlog(d, CONFIG_LOG_WARN,
                 "%s again: the store is being written (%zu operations left); exiting once it "
                 "is",
                 why, commit_backlog(d->commit));
        }
        return;
    }
    d->stopping = true;
    dlog(d, CONFIG_LOG_INFO, "%s: stopping (requests in flight: %zu)", why,
         http_pool_inflight(d->http));
    /* EXTEND_TIMEOUT_USEC only ever lengthens TimeoutStopSec=, never
     * shortens it. */
    snprintf(buf, sizeof(buf), "STOPPING=1\nEXTEND_TIMEOUT_USEC=%llu\n",
             ((unsigned long long)d->cfg.shutdown_timeout_ms + STOP_MARGIN_MS) * 1000ULL);
    format_status(d, "Stopping", buf + strlen(buf), sizeof(buf) - strlen(buf));
    notify(d, buf);
    ipc_server_stop_accepting(d->ipc);
    uv_timer_stop(&d->wake);
    retention_stop(d);
    dispatch_release_waiting(d);
    uv_timer_start(&d->stop_timer, stop_timer_cb, (uint64_t)d->cfg.shutdown_timeout_ms, 0);
    if (sched_inflight(d->sched) == 0)
        daemon_finish_stop(d);
}

/* --- reload ----------------------------------------------------------- */

static void sched_opts(const daemon_t *d, sched_options_t *o);

/* Appends ", key" (or "key" first) to buf, cutting at its size. */
static void append_key(char *buf, size_t size, const char *key)
{
    size_t len = strlen(buf);

    if (len + 1 < size)
        snprintf(buf + len, size - len, "%s%s", len ? ", " : "", key);
}

/* Descriptors the daemon holds besides client and HTTP connections: the
 * store, loops and their wake-ups, the listening socket, signals, the log. */
#define FD_RESERVE 64

/*
 * Makes room for what the config may open: max_connections clients,
 * max_inflight HTTP connections and FD_RESERVE. Raises the soft
 * RLIMIT_NOFILE (up to the hard one) when it is short, at start and when a
 * reload raises max_inflight. When even the hard limit is short, client
 * connections get what is left (at least 8), so that idle clients can never
 * take the descriptors the HTTP engine needs: sending would stop, looking
 * like an unreachable API. Returns the number of client connections to
 * accept; logs when that is below max_connections.
 */
static unsigned fd_fit(daemon_t *d, bool warn)
{
    struct rlimit rl;
    rlim_t own = (rlim_t)d->cfg.max_inflight + FD_RESERVE;
    rlim_t want = own + (rlim_t)d->cfg.max_connections;
    unsigned conns = (unsigned)d->cfg.max_connections;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return conns;
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > rl.rlim_cur) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    if (rl.rlim_cur >= want)
        return conns;
    if (rl.rlim_cur >= own + 8 && rl.rlim_cur - own < conns)
        conns = (unsigned)(rl.rlim_cur - own);
    else if (rl.rlim_cur < own + 8)
        conns = 8;
    if (warn)
        dlog(d, CONFIG_LOG_WARN,
             "open files limit %llu is below max_connections %u + max_inflight %ld + %d for "
             "the daemon itself: accepting at most %u client connections (raise LimitNOFILE= or "
             "ulimit -n)",
             (unsigned long long)rl.rlim_cur, (unsigned)d->cfg.max_connections,
             (long)d->cfg.max_inflight, FD_RESERVE, conns);
    return conns;
}

/* Replaces the token when the re-read one differs. Returns true if it
 * changed. Takes ownership of `token` (wiped and freed here or kept). */
static bool swap_token(daemon_t *d, char *token)
{
    int rc;

    if (strcmp(token, d->token) == 0) {
        explicit_bzero(token, strlen(token));
        free(token);
        return false;
    }
    if ((rc = http_pool_set_token(d->http, token)) != 0) {
        dlog(d, CONFIG_LOG_ERROR, "reload: the new token was refused (%s); keeping the current one",
             http_strerror(rc));
        explicit_bzero(token, strlen(token));
        free(token);
        return false;
    }
    d->token_gen++; /* requests posted from now on carry the new token */
    explicit_bzero(d->token, strlen(d->token));
    free(d->token);
    d->token = token;
    return true;
}

/*
 * SIGHUP: re-reads the config file (then the command line again, so flags
 * keep winning) and the token. Live keys apply at once without touching a
 * job or a connection: rates and caps through sched_reconfigure, the rest
 * are read where they are used. Keys that need a restart are named in the
 * log and keep their running values. A config that does not load changes
 * nothing.
 */
static void reload(daemon_t *d)
{
    config_change_t ch[64];
    sched_options_t so;
    config_t fresh;
    char err[512], applied[512] = "", restart[512] = "", buf[320];
    char *token = NULL;
    bool token_changed;
    size_t n, i;
    struct timespec ts;

    if (d->stopping) {
        dlog(d, CONFIG_LOG_INFO, "SIGHUP while stopping: ignored");
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify(d, buf);
    if (config_init(&fresh) != 0) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    if (d->flags.config && config_load_file(&fresh, d->flags.config, err, sizeof(err)) != 0)
        goto fail;
    if (config_flags_apply(&fresh, &d->flags, err, sizeof(err)) != 0)
        goto fail;
    if (config_token_load(&fresh, &token, err, sizeof(err)) != 0)
        goto fail;
    n = config_diff(&d->cfg, &fresh, ch, sizeof(ch) / sizeof(ch[0]));
    if (config_apply_live(&d->cfg, &fresh) != 0) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    token_changed = swap_token(d, token);
    token = NULL;
    sched_opts(d, &so);
    sched_reconfigure(d->sched, &so);
    (void)fd_fit(d, false); /* a larger max_inflight needs more descriptors */
    (void)http_pool_set_concurrency(d->http, d->cfg.max_inflight);
    for (i = 0; i < n && i < sizeof(ch) / sizeof(ch[0]); i++) {
        if (ch[i].live)
            append_key(applied, sizeof(applied), ch[i].key);
        else
            append_key(restart, sizeof(restart), ch[i].key);
    }
    if (token_changed)
        append_key(applied, sizeof(applied), "token");
    dlog(d, CONFIG_LOG_INFO, "SIGHUP: reloaded %s; applied: %s",
         d->flags.config ? d->flags.config : "(no config file)",
         applied[0] ? applied : "nothing changed");
    if (restart[0])
        dlog(d, CONFIG_LOG_WARN,
             "SIGHUP: changed but only applied by a restart (running values kept): %s", restart);
    /* New rates or caps may let jobs go now that waited for a later wake. */
    dispatch_reconfigured(d);
    if (token_changed)
        dispatch_token_changed(d);
    goto out;
fail:
    dlog(d, CONFIG_LOG_ERROR, "SIGHUP: reload failed, configuration unchanged: %s", err);
out:
    if (token) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
    config_free(&fresh);
    snprintf(buf, sizeof(buf), "READY=1\n");
    format_status(d, "Running", buf + strlen(buf), sizeof(buf) - strlen(buf));
    notify(d, buf);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;

    if (signum == SIGHUP) {
        reload(d);
        return;
    }
    begin_stop(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* --- start-up --------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: avenpingd [--config FILE] [--socket PATH] [--state-dir DIR] [--api-base URL]\n"
          "                 [--token-file FILE] [--log-level error|warn|info|debug]\n"
          "                 [--version] [--help]\n"
          "\n"
          "Dispatches WhatsApp messages submitted on a Unix socket to the AvenPing v2 API.\n"
          "The API token is read from --token-file, token_file in the config,\n"
          "$CREDENTIALS_DIRECTORY/avenping-token or $AVENPING_TOKEN; never from argv.\n"
          "See avenpingd(8) and docs/config.md.\n",
          f);
}

static double rate_for_cb(const char *id, void *arg)
{
    return config_rate_for(arg, id);
}

/* http_threads, with auto resolved: two engine threads when the daemon may
 * run on two cores or more (they gain 10-30% where the loop thread is the
 * limit: docs/performance.md, item 12), else the engine on the loop. */
static int http_threads(const config_t *c)
{
    if (c->http_threads != CONFIG_HTTP_THREADS_AUTO)
        return (int)c->http_threads;
    return uv_available_parallelism() >= 2 ? 2 : 0;
}

static void sched_opts(const daemon_t *d, sched_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->rate_per_number = d->cfg.rate_per_number;
    o->burst_per_number = d->cfg.burst_per_number;
    o->global_rate = d->cfg.global_rate;
    /* Picked jobs include those whose `sending` is being committed:
     * DISPATCH_AHEAD more than the request slots, so the disk flush of one
     * group overlaps the requests of the previous one (dispatch.c keeps
     * the requests themselves at max_inflight). Not under at-most-once:
     * there every job found `sending` after a crash becomes `uncertain`
     * and waits for an operator, so no job may be `sending` that is not
     * about to leave. */
    o->max_inflight = (unsigned)d->cfg.max_inflight + (d->cfg.at_most_once ? 0 : DISPATCH_AHEAD);
    o->max_inflight_per_number = (unsigned)d->cfg.max_inflight_per_number;
    o->max_jobs = ACTIVE_SET_MAX + ACTIVE_SET_RESERVE;
    o->pair_interval = (double)d->cfg.pair_rate_interval_ms / 1000.0;
    o->pair_burst = (double)d->cfg.pair_burst;
    o->rate_for = rate_for_cb;
    o->rate_user = (void *)&d->cfg;
}

static int load_config(daemon_t *d, int argc, char **argv, bool *exit_now)
{
    config_flags_t *f = &d->flags;
    char err[512];
    int rc;

    *exit_now = false;
    if ((rc = config_init(&d->cfg)) != 0) {
        daemon_fatal(d, "out of memory");
        return rc;
    }
    if (config_flags_parse(argc, argv, f, err, sizeof(err)) != 0) {
        daemon_fatal(d, "%s", err);
        return -EINVAL;
    }
    if (f->help) {
        usage(stdout);
        *exit_now = true;
        return 0;
    }
    if (f->version) {
        printf("avenpingd %s\n", AVP_VERSION);
        *exit_now = true;
        return 0;
    }
    if (f->config && config_load_file(&d->cfg, f->config, err, sizeof(err)) != 0) {
        daemon_fatal(d, "config: %s", err);
        return -EINVAL;
    }
    if (config_flags_apply(&d->cfg, f, err, sizeof(err)) != 0) {
        daemon_fatal(d, "%s", err);
        return -EINVAL;
    }
    if (config_token_load(&d->cfg, &d->token, err, sizeof(err)) != 0) {
        daemon_fatal(d, "%s", err);
        return -EINVAL;
    }
    if (config_ca_file_check(&d->cfg, err, sizeof(err)) != 0) {
        daemon_fatal(d, "config: %s", err);
        return -EINVAL;
    }
    return 0;
}

/* Creates directory `dir` (for `path`, named with `what` in a failure's
 * line) with `mode` whatever the umask (systemd's UMask=0077, say: the
 * socket's own mode, socket_mode, decides who may connect), its entry
 * synced in its parent. An existing one is left as it is. */
static int make_dir(daemon_t *d, const char *what, const char *path, const char *dir, mode_t mode)
{
    char parent[PATH_MAX];
    int rc;

    if (mkdir(dir, mode) != 0) {
        if (errno == EEXIST)
            return 0;
        rc = -errno;
        if (strcmp(dir, path) == 0)
            daemon_fatal(d, "%s %s: %s", what, path, strerror(-rc));
        else
            daemon_fatal(d, "%s %s: creating %s: %s", what, path, dir, strerror(-rc));
        return rc;
    }
    (void)chmod(dir, mode);
    snprintf(parent, sizeof(parent), "%s", dir);
    if ((rc = queue_dir_sync(dirname(parent))) != 0) {
        daemon_fatal(d, "%s %s: syncing %s: %s", what, path, parent, strerror(-rc));
        return rc;
    }
    return 0;
}

/* Creates the missing directories above `path` (mode 0755). */
static int make_parents(daemon_t *d, const char *what, const char *path)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);
    int rc;

    if (n >= sizeof(dir))
        return 0; /* the open or bind that follows names the problem */
    memcpy(dir, path, n + 1);
    while (n > 0 && dir[n - 1] == '/') /* "a/b/" is in "a" */
        dir[--n] = '\0';
    while (n > 0 && dir[n - 1] != '/')
        n--;
    if (n <= 1)
        return 0; /* in "/" or the working directory */
    dir[n - 1] = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if ((rc = make_dir(d, what, path, dir, 0755)) != 0)
            return rc;
        *p = c;
        if (c == '\0')
            return 0;
    }
}

/* Creates the state dir if it is missing (mode 0700; the directories
 * above it 0755). */
static int make_state_dir(daemon_t *d)
{
    int rc;

    if ((rc = make_parents(d, "state dir", d->cfg.state_dir)) != 0)
        return rc;
    return make_dir(d, "state dir", d->cfg.state_dir, d->cfg.state_dir, 0700);
}

/* At start, before anything reads the due index: the O(1) check of the
 * index against the counters, and on a mismatch the rebuild of both from
 * the job records (queue_store_repair), so that a job the index lost is
 * sent instead of never. A failed repair leaves the store as it was: the
 * start goes on with the damage logged, as without a repair. */
static void store_check(daemon_t *d)
{
    queue_repair_report_t rep;
    queue_due_count_t c;
    int rc;

    if (queue_due_check(d->q, &c) != 0 || c.agree)
        return;
    if (c.camp_unreadable > 0)
        dlog(d, CONFIG_LOG_WARN,
             "the store has %llu unreadable campaign records (no job of theirs could change "
             "state); rebuilding the indexes from the job records",
             (unsigned long long)c.camp_unreadable);
    else
        dlog(d, CONFIG_LOG_WARN,
             "the store's indexes disagree with its counters (due index: %llu entries for %llu "
             "unfinished jobs); rebuilding them from the job records",
             (unsigned long long)c.due_entries, (unsigned long long)c.unfinished);
    /* The rebuild reads every job record: ask for start time beyond a
     * default TimeoutStartSec= (90 s), which a big store's could outlast -
     * killed, and restarted by Restart=on-failure, it would start over for
     * good. Only ever lengthens the timeout. */
    notify(d, "STATUS=Rebuilding the store's indexes from the job records\n"
              "EXTEND_TIMEOUT_USEC=" STORE_REPAIR_EXTEND_USEC);
    rc = queue_store_repair(d->q, &rep);
    if (rc != 0) {
        dlog(d, CONFIG_LOG_ERROR, "rebuilding the store's indexes failed: %s", queue_strerror(rc));
    } else {
        dlog(d, CONFIG_LOG_WARN,
             "the store's indexes were rebuilt: %llu job records (%llu unreadable); due index "
             "%llu -> %llu entries (%llu added, %llu removed, %llu of unreadable records kept); "
             "order index %llu added, %llu removed; counters %s",
             (unsigned long long)rep.records, (unsigned long long)rep.unreadable,
             (unsigned long long)rep.due_before, (unsigned long long)rep.due_after,
             (unsigned long long)rep.due_added, (unsigned long long)rep.due_removed,
             (unsigned long long)rep.due_unreadable, (unsigned long long)rep.order_added,
             (unsigned long long)rep.order_removed,
             rep.counts_changed ? "corrected" : "were right");
    }
    if (queue_due_check(d->q, &c) == 0 && !c.agree)
        dlog(d, CONFIG_LOG_ERROR,
             "the store is damaged: its due index holds %llu entries for %llu unfinished jobs "
             "and %llu kept for unreadable records, and %llu campaign records are unreadable; "
             "jobs missing from the index are not sent (docs/operations.md)",
             (unsigned long long)c.due_entries, (unsigned long long)c.unfinished,
             (unsigned long long)c.unreadable, (unsigned long long)c.camp_unreadable);
}

/* *e with `code` and `message` (no status, no Meta code); returns e. */
static const queue_error_info_t *error_info(queue_error_info_t *e, const char *code,
                                            const char *message)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->code, sizeof(e->code), "%s", code);
    snprintf(e->message, sizeof(e->message), "%s", message);
    return e;
}

static int open_store(daemon_t *d)
{
    queue_options_t qo;
    queue_recover_options_t ro;
    queue_error_info_t cancel_err, uncertain_err;
    size_t n = 0, map = 0, used = 0;
    int rc, found;

    if ((rc = make_state_dir(d)) != 0)
        return rc;
    memset(&qo, 0, sizeof(qo));
    qo.map_size_max = d->cfg.map_size_max;
    qo.disk_min_free = d->cfg.disk_min_free;
    found = queue_store_found(d->cfg.state_dir);
    rc = queue_open(d->cfg.state_dir, &qo, &d->q);
    if (rc == QUEUE_ELOCKED) {
        daemon_fatal(d, "state dir %s is in use by another avenpingd", d->cfg.state_dir);
        return rc;
    }
    if (rc == QUEUE_ESCHEMA) {
        /* Never touch a store this build does not understand. */
        daemon_fatal(d,
                     "the store in %s was written by a newer, incompatible version of "
                     "avenpingd (this build reads store schema %d or older); refusing to open it",
                     d->cfg.state_dir, QUEUE_SCHEMA_VERSION);
        return rc;
    }
    if (rc != 0) {
        daemon_fatal(d, "cannot open the store in %s: %s", d->cfg.state_dir, queue_strerror(rc));
        return rc;
    }
    /* A store created now is said once; one found empty loudly: a data
     * file cut to nothing (a failed restore, a disk that lost it) held
     * jobs that are gone, and LMDB starts a new store in it silently. */
    if (found == QUEUE_FOUND_NONE)
        dlog(d, CONFIG_LOG_INFO, "a new store was created in %s", d->cfg.state_dir);
    else if (found == QUEUE_FOUND_EMPTY)
        dlog(d, CONFIG_LOG_ERROR,
             "the store's data file in %s was empty: a new store was started in it. If it held "
             "jobs they are gone; restore data.mdb from a copy (mdb_copy) with the daemon "
             "stopped (docs/operations.md)",
             d->cfg.state_dir);
    if (queue_space(d->q, &map, &used) == 0 && used > d->cfg.map_size_max)
        dlog(d, CONFIG_LOG_WARN,
             "the store holds %zu MiB, more than map_size_max_mb = %zu: its jobs finish and are "
             "purged, and new jobs do not make it grow until it is below that",
             used >> 20, d->cfg.map_size_max >> 20);
    memset(&ro, 0, sizeof(ro));
    ro.at_most_once = d->cfg.at_most_once;
    ro.now = daemon_now();
    ro.requeue_flags = DAEMON_JOB_MAYBE_SENT;
    /* Cancelled while its request was on the wire (handlers.c: cancel_one):
     * a retry is what the cancel stopped. */
    ro.cancel_flags = DAEMON_JOB_CANCEL;
    ro.cancel_error = error_info(&cancel_err, "CANCELLED",
                                 "cancelled while its request was in flight or about to leave; a "
                                 "restart found it so: it may have been delivered");
    ro.uncertain_error = error_info(&uncertain_err, "INTERRUPTED",
                                    "its request was in flight when the daemon stopped (a crash, "
                                    "a kill or a power cut): it may have been delivered");
    /* Before the recovery: it finds the jobs to recover through the due
     * index and the `sending` counter, so both must be right first. */
    store_check(d);
    rc = queue_recover(d->q, &ro, &n);
    if (rc != 0) {
        daemon_fatal(d, "recovering the store: %s", queue_strerror(rc));
        return rc;
    }
    if (n > 0)
        dlog(d, CONFIG_LOG_WARN, "%zu jobs were in flight at the last stop; now %s", n,
             d->cfg.at_most_once ? "uncertain (delivery = at-most-once)" : "due again");
    return 0;
}

/* Listens on the socket the service manager passed (socket activation),
 * or else on the configured path. */
static int start_listening(daemon_t *d, int n_passed)
{
    const int fd = SDNOTIFY_LISTEN_FDS_START;
    int rc;

    if (n_passed == 0) {
        if ((rc = ipc_server_listen(d->ipc, d->cfg.socket)) == UV_EADDRINUSE) {
            /* A live socket there, or its lock file held: another daemon
             * listens there or is about to (between its bind and listen). */
            daemon_fatal(d, "socket %s: another process listens on it (or holds %s.lock)",
                         d->cfg.socket, d->cfg.socket);
            return rc;
        }
        if (rc != 0) {
            daemon_fatal(d, "socket %s: %s", d->cfg.socket,
                         rc == UV_ENOTSOCK
                             ? "a file that is not a socket is in the way (left alone)"
                             : ipc_strerror(rc));
            return rc;
        }
        return 0;
    }
    if (n_passed != 1 || !sdnotify_is_unix_listener(fd)) {
        daemon_fatal(d,
                     "socket activation: expected one listening Unix stream socket, "
                     "got %d descriptor(s)%s",
                     n_passed, n_passed == 1 ? " of another kind" : "");
        for (int i = 0; i < n_passed; i++)
            close(fd + i);
        return -EINVAL;
    }
    if ((rc = ipc_server_adopt_fd(d->ipc, fd)) != 0) {
        daemon_fatal(d, "socket activation: %s", ipc_strerror(rc));
        return rc;
    }
    d->socket_activated = true;
    return 0;
}

/* Creates the IPC server and listens, before the store is opened: a daemon
 * whose socket is taken by another one stops without creating anything in
 * its state dir. Requests are read only once the loop runs. */
static int start_ipc(daemon_t *d, int n_passed)
{
    ipc_server_options_t io;
    size_t sl = strlen(d->cfg.state_dir);
    int rc;

    /* A socket in the state dir needs the dir first; elsewhere its
     * directory is made if missing (0755: socket_mode guards the socket),
     * such as the default /run/avenpingd outside systemd. */
    if (n_passed == 0 && strncmp(d->cfg.socket, d->cfg.state_dir, sl) == 0 &&
        d->cfg.socket[sl] == '/' && (rc = make_state_dir(d)) != 0)
        return rc;
    if (n_passed == 0 && (rc = make_parents(d, "socket", d->cfg.socket)) != 0)
        return rc;

    memset(&io, 0, sizeof(io));
    io.max_connections = fd_fit(d, true);
    io.socket_mode = d->cfg.socket_mode;
    io.allowed_uids = d->cfg.n_allowed_uids ? d->cfg.allowed_uids : NULL;
    io.n_allowed_uids = d->cfg.n_allowed_uids;
    if ((rc = ipc_server_new(d->loop, &io, daemon_request_cb, d, &d->ipc)) != 0)
        return rc;
    return start_listening(d, n_passed);
}

/* The HTTP engines, the commit worker and the scheduler; needs the store. */
static int start_modules(daemon_t *d)
{
    http_options_t ho;
    sched_options_t so;
    int rc;

    memset(&ho, 0, sizeof(ho));
    ho.api_base = d->cfg.api_base;
    ho.token = d->token;
    ho.timeout_ms = d->cfg.request_timeout_ms;
    ho.connect_timeout_ms = d->cfg.connect_timeout_ms;
    ho.ca_file = d->cfg.ca_file;
    ho.http2 = d->cfg.http2;
    if ((rc = http_pool_new(d->loop, &ho, http_threads(&d->cfg), &d->http)) != 0) {
        daemon_fatal(d, "HTTP engine: %s", http_strerror(rc));
        return rc;
    }
    (void)http_pool_set_concurrency(d->http, d->cfg.max_inflight);
    if ((rc = commit_new(d->loop, d->q, &d->commit)) != 0)
        return rc;
    commit_set_stat_cb(d->commit, dispatch_on_commit_stat, d);
    commit_set_fail_cb(d->commit, dispatch_on_commit_fail, d);
    sched_opts(d, &so);
    return sched_new(&so, &d->sched);
}

static void init_handles(daemon_t *d)
{
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_hup);
    uv_timer_init(d->loop, &d->wake);
    uv_idle_init(d->loop, &d->pump_idle);
    uv_idle_init(d->loop, &d->act_idle);
    uv_timer_init(d->loop, &d->stop_timer);
    uv_timer_init(d->loop, &d->notify_timer);
    uv_timer_init(d->loop, &d->metrics_timer);
    uv_timer_init(d->loop, &d->probe);
    d->sig_int.data = d->sig_term.data = d->sig_hup.data = d;
    d->wake.data = d->stop_timer.data = d->notify_timer.data = d;
    d->metrics_timer.data = d->probe.data = d;
    d->pump_idle.data = d;
    d->act_idle.data = d;
    retention_init(d);
}

int main(int argc, char **argv)
{
    daemon_t d;
    bool exit_now;
    char ready[320];
    int rc = 1, n_passed;

    memset(&d, 0, sizeof(d));
    /* The token will live in this process's memory (load_config reads it):
     * keep it out of core dumps and away from ptrace by other users, from
     * before it is read. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* Non-dumpable still dumps, readable by root, where fs.suid_dumpable
     * is 2 (apport's systems); libcurl's copies of the Authorization header
     * cannot be kept out of such a core. A core size limit of 0 stops the
     * kernel's core files, and systemd-coredump and apport honour it. */
    {
        const struct rlimit no_core = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &no_core);
    }
    daemon_log_init(&d);
    if (load_config(&d, argc, argv, &exit_now) != 0)
        goto out;
    if (exit_now) {
        rc = 0;
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(daemon_now() * 1e6) ^ (unsigned)getpid());
    /* Sockets passed by the service manager, taken before any thread runs
     * (this edits the environment). */
    n_passed = sdnotify_listen_fds();
    if (n_passed < 0) {
        if (n_passed == -EBADF)
            daemon_fatal(&d, "socket activation: LISTEN_FDS names descriptors from 3 "
                             "on that are not open in this process");
        else
            daemon_fatal(&d, "socket activation: bad LISTEN_PID/LISTEN_FDS: %s",
                         strerror(-n_passed));
        goto out;
    }

    d.loop = uv_default_loop();
    init_handles(&d);
    /* Caught from here on: a SIGTERM while the store recovers (clients
     * can connect from the bind on) stops the daemon cleanly once it is up,
     * instead of killing it. */
    uv_signal_start(&d.sig_int, signal_cb, SIGINT);
    uv_signal_start(&d.sig_term, signal_cb, SIGTERM);
    uv_signal_start(&d.sig_hup, signal_cb, SIGHUP);
    if (start_ipc(&d, n_passed) != 0 || open_store(&d) != 0)
        goto out_loop;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        daemon_fatal(&d, "libcurl initialisation failed");
        goto out_loop;
    }
    if (start_modules(&d) != 0)
        goto out_loop;
    if ((rc = dispatch_load_pauses(&d)) != 0) {
        daemon_fatal(&d, "reading stored pauses: %s", queue_strerror(rc));
        rc = 1;
        goto out_loop;
    }
    d.spill = true; /* load what the store holds */
    d.activated_id = queue_id_last(d.q);
    daemon_refresh_unfinished(&d);
    daemon_metrics_start(&d);
    dispatch_pump_soon(&d);
    retention_start(&d);
    dlog(&d, CONFIG_LOG_INFO, "avenpingd %s ready: socket %s, state %s, api %s, %d HTTP thread%s",
         AVP_VERSION, d.socket_activated ? "passed by the service manager" : d.cfg.socket,
         d.cfg.state_dir, d.cfg.api_base, http_pool_threads(d.http),
         http_pool_threads(d.http) == 1 ? "" : "s");
    /* The store is open and recovered, and the socket listens. */
    snprintf(ready, sizeof(ready), "READY=1\n");
    format_status(&d, "Running", ready + strlen(ready), sizeof(ready) - strlen(ready));
    notify(&d, ready);
    notify_start(&d);

    uv_run(d.loop, UV_RUN_DEFAULT);
    rc = d.exit_code;
out_loop:
    if (rc != 0 && d.loop) {
        /* Start-up failed half way: close whatever was opened. */
        ipc_server_close(d.ipc);
        http_pool_close(d.http);
        commit_free(d.commit);
        uv_walk(d.loop, close_walk_cb, NULL);
        uv_run(d.loop, UV_RUN_DEFAULT);
    }
    if (d.loop)
        uv_loop_close(d.loop);
    daemon_watchers_close(&d);
    sched_free(d.sched);
    dispatch_pending_free(&d);
    dispatch_settle_free(&d);
    curl_global_cleanup();
out:
    queue_close(d.q);
    if (d.token) {
        explicit_bzero(d.token, strlen(d.token));
        free(d.token);
    }
    config_free(&d.cfg);
    return rc;
}
