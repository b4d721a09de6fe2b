/*
 * main.c - avenpingd: start-up, signals and shutdown.
 *
 * The path of a job: ipc (validated request) -> handlers.c -> commit (group
 * commit on a worker thread) -> answer + scheduler -> dispatch.c -> http ->
 * classify -> commit (state change) -> scheduler (finish or retry). See
 * docs/architecture.md.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "daemon.h"

/* --- shutdown --------------------------------------------------------- */

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void drained_cb(void *arg)
{
    daemon_t *d = arg;

    dlog(d, CONFIG_LOG_INFO, "store flushed; exiting");
    d->closing = true;
    ipc_server_close(d->ipc);
    d->ipc = NULL;
    http_engine_close(d->http);
    d->http = NULL;
    commit_free(d->commit);
    d->commit = NULL;
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->wake, NULL);
    uv_close((uv_handle_t *)&d->pump_idle, NULL);
    uv_close((uv_handle_t *)&d->stop_timer, NULL);
    uv_close((uv_handle_t *)&d->purge_timer, NULL);
}

void daemon_finish_stop(daemon_t *d)
{
    if (d->stop_finishing)
        return;
    d->stop_finishing = true;
    uv_timer_stop(&d->stop_timer);
    uv_timer_stop(&d->wake);
    /* Whatever is still in flight is cancelled; its callback records the
     * job as due again, so it is sent after the restart. */
    http_engine_cancel_all(d->http);
    commit_drain(d->commit, drained_cb, d);
}

static void stop_timer_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    dlog(d, CONFIG_LOG_WARN, "%zu requests still in flight after %ldms; cancelling them",
         http_engine_inflight(d->http), d->cfg.shutdown_timeout_ms);
    daemon_finish_stop(d);
}

static void begin_stop(daemon_t *d, const char *why)
{
    if (d->stopping)
        return;
    d->stopping = true;
    dlog(d, CONFIG_LOG_INFO, "%s: stopping (%zu requests in flight)", why,
         http_engine_inflight(d->http));
    ipc_server_stop_accepting(d->ipc);
    uv_timer_stop(&d->wake);
    retention_stop(d);
    uv_timer_start(&d->stop_timer, stop_timer_cb, (uint64_t)d->cfg.shutdown_timeout_ms, 0);
    if (sched_inflight(d->sched) == 0)
        daemon_finish_stop(d);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;

    if (signum == SIGHUP) {
        dlog(d, CONFIG_LOG_INFO, "SIGHUP: reload is not supported yet; configuration unchanged");
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

static void sched_opts(const daemon_t *d, sched_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->rate_per_number = d->cfg.rate_per_number;
    o->burst_per_number = d->cfg.burst_per_number;
    o->global_rate = d->cfg.global_rate;
    o->max_inflight = (unsigned)d->cfg.max_inflight;
    o->max_inflight_per_number = (unsigned)d->cfg.max_inflight_per_number;
    o->max_jobs = ACTIVE_SET_MAX;
    o->rate_for = rate_for_cb;
    o->rate_user = (void *)&d->cfg;
}

static int load_config(daemon_t *d, int argc, char **argv, bool *exit_now)
{
    config_flags_t f;
    char err[512];
    int rc;

    *exit_now = false;
    if ((rc = config_init(&d->cfg)) != 0) {
        fprintf(stderr, "avenpingd: out of memory\n");
        return rc;
    }
    if (config_flags_parse(argc, argv, &f, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: %s\n", err);
        return -EINVAL;
    }
    if (f.help) {
        usage(stdout);
        *exit_now = true;
        return 0;
    }
    if (f.version) {
        printf("avenpingd %s\n", AVP_VERSION);
        *exit_now = true;
        return 0;
    }
    if (f.config && config_load_file(&d->cfg, f.config, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: config: %s\n", err);
        return -EINVAL;
    }
    if (config_flags_apply(&d->cfg, &f, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: %s\n", err);
        return -EINVAL;
    }
    if (config_token_load(&d->cfg, &d->token, err, sizeof(err)) != 0) {
        fprintf(stderr, "avenpingd: %s\n", err);
        return -EINVAL;
    }
    return 0;
}

static int open_store(daemon_t *d)
{
    queue_options_t qo;
    size_t n = 0;
    int rc;

    if (mkdir(d->cfg.state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "avenpingd: state dir %s: %s\n", d->cfg.state_dir, strerror(errno));
        return -errno;
    }
    memset(&qo, 0, sizeof(qo));
    qo.map_size_max = d->cfg.map_size_max;
    rc = queue_open(d->cfg.state_dir, &qo, &d->q);
    if (rc == QUEUE_ELOCKED) {
        fprintf(stderr, "avenpingd: state dir %s is in use by another avenpingd\n",
                d->cfg.state_dir);
        return rc;
    }
    if (rc == QUEUE_ESCHEMA) {
        /* Never touch a store this build does not understand. */
        fprintf(stderr,
                "avenpingd: the store in %s was written by a newer, incompatible version of "
                "avenpingd (this build reads store schema %d or older); refusing to open it\n",
                d->cfg.state_dir, QUEUE_SCHEMA_VERSION);
        return rc;
    }
    if (rc != 0) {
        fprintf(stderr, "avenpingd: cannot open the store in %s: %s\n", d->cfg.state_dir,
                queue_strerror(rc));
        return rc;
    }
    rc = queue_recover(d->q, d->cfg.at_most_once, daemon_now(), &n);
    if (rc != 0) {
        fprintf(stderr, "avenpingd: recovering the store: %s\n", queue_strerror(rc));
        return rc;
    }
    if (n > 0)
        dlog(d, CONFIG_LOG_WARN, "%zu jobs were in flight at the last stop; now %s", n,
             d->cfg.at_most_once ? "uncertain (delivery = at-most-once)" : "due again");
    return 0;
}

static int start_modules(daemon_t *d)
{
    http_options_t ho;
    ipc_server_options_t io;
    sched_options_t so;
    int rc;

    memset(&ho, 0, sizeof(ho));
    ho.api_base = d->cfg.api_base;
    ho.token = d->token;
    ho.timeout_ms = d->cfg.request_timeout_ms;
    ho.ca_file = d->cfg.ca_file;
    ho.http2 = d->cfg.http2;
    if ((rc = http_engine_new(d->loop, &ho, &d->http)) != 0) {
        fprintf(stderr, "avenpingd: HTTP engine: %s\n", http_strerror(rc));
        return rc;
    }
    if ((rc = commit_new(d->loop, d->q, &d->commit)) != 0)
        return rc;
    commit_set_stat_cb(d->commit, dispatch_on_commit_stat, d);
    sched_opts(d, &so);
    if ((rc = sched_new(&so, &d->sched)) != 0)
        return rc;

    memset(&io, 0, sizeof(io));
    io.max_connections = (unsigned)d->cfg.max_connections;
    io.socket_mode = d->cfg.socket_mode;
    io.allowed_uids = d->cfg.n_allowed_uids ? d->cfg.allowed_uids : NULL;
    io.n_allowed_uids = d->cfg.n_allowed_uids;
    if ((rc = ipc_server_new(d->loop, &io, daemon_request_cb, d, &d->ipc)) != 0)
        return rc;
    if ((rc = ipc_server_listen(d->ipc, d->cfg.socket)) != 0) {
        fprintf(stderr, "avenpingd: socket %s: %s\n", d->cfg.socket, ipc_strerror(rc));
        return rc;
    }
    return 0;
}

static void init_handles(daemon_t *d)
{
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_hup);
    uv_timer_init(d->loop, &d->wake);
    uv_idle_init(d->loop, &d->pump_idle);
    uv_timer_init(d->loop, &d->stop_timer);
    d->sig_int.data = d->sig_term.data = d->sig_hup.data = d;
    d->wake.data = d->stop_timer.data = d;
    d->pump_idle.data = d;
    retention_init(d);
}

int main(int argc, char **argv)
{
    daemon_t d;
    bool exit_now;
    int rc = 1;

    memset(&d, 0, sizeof(d));
    if (load_config(&d, argc, argv, &exit_now) != 0)
        goto out;
    if (exit_now) {
        rc = 0;
        goto out;
    }
    /* The token lives in this process's memory: keep it out of core dumps
     * and away from ptrace by other users. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)(daemon_now() * 1e6) ^ (unsigned)getpid());

    if (open_store(&d) != 0)
        goto out;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "avenpingd: libcurl initialisation failed\n");
        goto out;
    }
    d.loop = uv_default_loop();
    init_handles(&d);
    if (start_modules(&d) != 0)
        goto out_loop;
    uv_signal_start(&d.sig_int, signal_cb, SIGINT);
    uv_signal_start(&d.sig_term, signal_cb, SIGTERM);
    uv_signal_start(&d.sig_hup, signal_cb, SIGHUP);
    d.spill = true; /* load what the store holds */
    daemon_refresh_unfinished(&d);
    dispatch_pump_soon(&d);
    retention_start(&d);
    dlog(&d, CONFIG_LOG_INFO, "avenpingd %s ready: socket %s, state %s, api %s", AVP_VERSION,
         d.cfg.socket, d.cfg.state_dir, d.cfg.api_base);

    uv_run(d.loop, UV_RUN_DEFAULT);
    rc = d.exit_code;
out_loop:
    if (rc != 0 && d.loop) {
        /* Start-up failed half way: close whatever was opened. */
        ipc_server_close(d.ipc);
        http_engine_close(d.http);
        commit_free(d.commit);
        uv_walk(d.loop, close_walk_cb, NULL);
        uv_run(d.loop, UV_RUN_DEFAULT);
    }
    if (d.loop)
        uv_loop_close(d.loop);
    sched_free(d.sched);
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
