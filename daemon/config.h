/*
 * config.h - avenpingd's configuration: built-in defaults, the config file
 * (`key = value` lines), command-line flags, and the API token.
 *
 * Precedence: flags > config file > defaults (socket-protocol.md). The
 * token is never taken from argv: --token-file, token_file, then
 * $CREDENTIALS_DIRECTORY/avenping-token, then $AVENPING_TOKEN.
 *
 * Errors: 0 or a negative errno-style code; the functions that can fail on
 * user input also fill a message buffer naming the file, line and key.
 */
#ifndef AVP_CONFIG_H
#define AVP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define CONFIG_MAX_RATE_OVERRIDES 256
#define CONFIG_MAX_UIDS 64

typedef struct config_rate_override {
    char phone_number_id[65];
    double rate;
} config_rate_override_t;

typedef enum config_log_level {
    CONFIG_LOG_ERROR = 3, /* values are sd-daemon priorities */
    CONFIG_LOG_WARN = 4,
    CONFIG_LOG_INFO = 6,
    CONFIG_LOG_DEBUG = 7,
} config_log_level_t;

/* http_threads = auto (the default). */
#define CONFIG_HTTP_THREADS_AUTO (-1)

typedef struct config {
    char *socket;
    char *state_dir;
    char *api_base;
    char *token_file;
    char *config_file; /* the file loaded, or NULL */
    char *metrics_file;
    char *ca_file;
    int log_level; /* config_log_level_t */
    double rate_per_number;
    double burst_per_number; /* 0: = rate */
    config_rate_override_t rate_overrides[CONFIG_MAX_RATE_OVERRIDES];
    size_t n_rate_overrides;
    double global_rate;
    long pair_rate_interval_ms;
    long pair_burst;
    long max_inflight;
    long max_inflight_per_number;
    long request_timeout_ms;
    long connect_timeout_ms; /* a connection's setup, TLS included */
    long max_attempts;
    long backoff_base_ms;
    long backoff_max_ms;
    long job_ttl_s;
    long retention_s;
    bool at_most_once; /* delivery */
    unsigned socket_mode;
    uid_t allowed_uids[CONFIG_MAX_UIDS];
    size_t n_allowed_uids;
    /* Additions beyond the contract's table (documented in docs/config.md). */
    long shutdown_timeout_ms; /* bound on waiting for in-flight requests at stop */
    long max_connections;     /* socket connections */
    long max_queued;          /* jobs not yet final; over it submits get QUEUE_FULL */
    size_t map_size_max;      /* LMDB map growth limit, bytes */
    size_t disk_min_free;     /* new jobs need this much free disk (+192 B per unfinished) */
    long metrics_interval_ms; /* how often metrics_file is rewritten */
    bool http2;
    long http_threads; /* HTTP engine threads; 0: on the loop thread; CONFIG_HTTP_THREADS_AUTO:
                          the daemon picks (2 with two cores or more, else 0) */
} config_t;

/* Fills *c with the built-in defaults. Strings are malloc'd; release with
 * config_free. Returns -ENOMEM on allocation failure. */
int config_init(config_t *c);

/* Frees the strings of *c. Accepts NULL. */
void config_free(config_t *c);

/*
 * Reads `path` into *c, overriding what it sets. On error returns
 * -EINVAL (bad line, unknown key, bad value) or -errno (cannot read) and
 * writes "FILE:LINE: key: problem" into err. *c may then be partly
 * updated.
 */
int config_load_file(config_t *c, const char *path, char *err, size_t err_size);

/* Which command-line flags were given, so they can be re-applied over a
 * config file loaded later. */
typedef struct config_flags {
    const char *config;
    const char *socket;
    const char *state_dir;
    const char *api_base;
    const char *token_file;
    const char *log_level;
    bool version;
    bool help;
} config_flags_t;

/* Parses argv into *f (pointers into argv). Returns -EINVAL with a message
 * in err on an unknown flag or a missing value. */
int config_flags_parse(int argc, char **argv, config_flags_t *f, char *err, size_t err_size);

/* Applies the flags in *f over *c. Returns -EINVAL with a message on a
 * bad value (log level). */
int config_flags_apply(config_t *c, const config_flags_t *f, char *err, size_t err_size);

/*
 * Loads the API token by the contract's order. On success *token is a
 * malloc'd NUL-terminated string without surrounding whitespace; the caller
 * wipes and frees it. On failure returns -ENOENT (no source) or -errno /
 * -EINVAL (source unreadable or empty) with a message in err that names the
 * source but never contains the token.
 */
int config_token_load(const config_t *c, char **token, char *err, size_t err_size);

/* Checks that ca_file, when set, is a regular file this process can read
 * with a PEM certificate in it (libcurl reads it at every TLS connect: a
 * missing or empty one fails every send). Returns 0, or -errno / -ENOTSUP
 * / -EINVAL (no certificate) with "FILE: ca_file PATH: problem" in
 * err. Run at start, after the token: an example config with every key
 * uncommented still gets as far as the token. */
int config_ca_file_check(const config_t *c, char *err, size_t err_size);

/* The rate for one sender: its override or rate_per_number. */
double config_rate_for(const config_t *c, const char *phone_number_id);

/* Static name of a log level ("error", "warn", "info", "debug"). */
const char *config_log_level_name(int level);

/*
 * Reload (SIGHUP). The daemon re-reads the config file into a fresh
 * config_t (defaults, file, then the original flags again, so flags keep
 * winning), then:
 *
 *   n = config_diff(&running, &fresh, changes, max);   report
 *   config_apply_live(&running, &fresh);                apply
 *
 * Every key is either "live" (read where it is used, or pushed to the
 * scheduler by the caller after the apply: rates, bursts, rate.<id>,
 * global_rate, pair pacing, in-flight caps, retry policy, job_ttl_s,
 * retention_s, max_queued, shutdown_timeout_ms, log_level, token_file) or
 * "restart" (consumed once at start-up: socket, state_dir, api_base,
 * ca_file, http2, http_threads, request_timeout_ms, connect_timeout_ms,
 * socket_mode, allowed_uids, max_connections, map_size_max_mb, delivery,
 * metrics_file). A restart key
 * keeps its running value until the daemon restarts, so every reload
 * reports it again. Adding a key to config_t: add it to the reload table
 * in config.c too, or a reload neither applies nor reports it.
 */
typedef struct config_change {
    const char *key; /* the config file's key name (static); "rate.<id>" for overrides */
    bool live;       /* true: config_apply_live applies it; false: needs a restart */
} config_change_t;

/* Writes the keys whose values differ between `running` and `fresh` into
 * out[0 .. max) in a fixed order and returns how many differ (which may be
 * more than max; out may be NULL when max is 0). */
size_t config_diff(const config_t *running, const config_t *fresh, config_change_t *out,
                   size_t max);

/* Copies the value of every live key from `fresh` into `running`; restart
 * keys keep their running values. `fresh` is not changed. Returns 0, or
 * -ENOMEM with `running` unchanged. */
int config_apply_live(config_t *running, const config_t *fresh);

#endif
