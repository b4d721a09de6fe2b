/*
 * config.c - defaults, config file, flags and token loading.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#define CONFIG_MAX_LINE 4096
#define TOKEN_MAX 4095 /* characters: the HTTP engine's limit (http.c, HTTP_TOKEN_MAX - 1) */
/* Bytes read of a token file: the longest token with a CRLF after it, and
 * one more to see that a file is longer. */
#define TOKEN_FILE_READ (TOKEN_MAX + 3)

static void set_err(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

/*
 * What an error may quote of what the operator typed. The token is never
 * echoed (config.h), also when it was typed in the wrong place: a path
 * (--config TOKEN, token_file = TOKEN), a key (a line "TOKEN" with
 * base64's "==", rate.TOKEN) or an option (-tTOKEN).
 *
 * key_like: a config key or option name as they are spelt - lowercase
 * letters, digits, '_', '.', '-', at most 40 bytes, and at most 3 digits
 * unless it starts with "rate." (a lowercase hex token would pass
 * otherwise); anything else is shown by its length only. path_hidden: a path the daemon cannot open
 * that has no '/' and 20 bytes or more, or a part longer than a file name can be, looks like a
 * token, not a file name.
 */
static bool key_like(const char *s, size_t n)
{
    bool rate = n > 5 && strncmp(s, "rate.", 5) == 0;
    size_t digits = 0;

    if (n == 0 || n > 40)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= '0' && ch <= '9')
            digits++;
        else if (!((ch >= 'a' && ch <= 'z') || ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return rate || digits <= 3;
}

static bool path_hidden(const char *path)
{
    if (strchr(path, '/') == NULL && strlen(path) >= 20)
        return true;
    /* A part longer than any file name can be (NAME_MAX) is no path
     * either: a long token with '/' in it (base64). */
    for (const char *p = path; *p != '\0'; p += strcspn(p, "/") + (p[strcspn(p, "/")] == '/')) {
        if (strcspn(p, "/") > NAME_MAX)
            return true;
    }
    return false;
}

/* Whether libcurl's URL parser, which the HTTP engine uses for every
 * request, takes `v` with a port in 1-65535 (or none): a bad port or host
 * would otherwise pass the start, and every send fail to connect and be
 * retried until its job expires. */
static bool api_base_parses(const char *v)
{
    CURLU *u = curl_url();
    char *port = NULL;
    bool ok;

    if (u == NULL)
        return false;
    ok = curl_url_set(u, CURLUPART_URL, v, 0) == CURLUE_OK;
    if (ok && curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
        ok = strtol(port, NULL, 10) > 0;
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

/* api_base: "http://" or "https://" (any case), a host, then optionally a
 * port and a path; no spaces or control characters; and a URL libcurl
 * parses. */
static bool api_base_ok(const char *v)
{
    size_t n = strncasecmp(v, "https://", 8) == 0 ? 8 : strncasecmp(v, "http://", 7) == 0 ? 7 : 0;

    size_t len = strlen(v);

    if (n == 0 || v[n] == '\0' || v[n] == '/' || v[n] == ':')
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#')
            return false;
    /* user:password@ would be a credential in the config, in logs and in
     * every error that names the URL; the API takes the token only. */
    if (memchr(v + n, '@', strcspn(v + n, "/")) != NULL)
        return false;
    /* The daemon adds /v2/...: a base copied with it would make every send
     * a 404 "route not found", which fails the job for good. */
    while (len > n && v[len - 1] == '/')
        len--;
    if (len >= n + 3 && strncasecmp(v + len - 3, "/v2", 3) == 0)
        return false;
    return api_base_parses(v);
}

#define API_BASE_WANTED                                                                            \
    "expected an http:// or https:// URL with a host (and a port in 1-65535), without /v2 (the "   \
    "daemon adds the routes), "                                                                    \
    "a query, a fragment or user:password@ (the token goes in token_file)"

static int set_str(char **dst, const char *src)
{
    char *copy = strdup(src);

    if (copy == NULL)
        return -ENOMEM;
    free(*dst);
    *dst = copy;
    return 0;
}

int config_init(config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->log_level = CONFIG_LOG_INFO;
    c->rate_per_number = 80;
    c->burst_per_number = 0;
    c->global_rate = 0;
    c->pair_rate_interval_ms = 6000;
    c->pair_burst = 45;
    c->max_inflight = 256;
    c->max_inflight_per_number = 64;
    c->request_timeout_ms = 30000;
    c->connect_timeout_ms = 10000;
    c->max_attempts = 10;
    c->backoff_base_ms = 1000;
    c->backoff_max_ms = 600000;
    c->job_ttl_s = 86400;
    c->retention_s = 604800;
    c->at_most_once = false;
    c->socket_mode = 0660;
    c->shutdown_timeout_ms = 10000;
    c->max_connections = 1024;
    c->metrics_interval_ms = 5000;
    c->max_queued = 10000000;
    c->map_size_max = (size_t)64 << 30;
    c->disk_min_free = (size_t)64 << 20;
    c->http2 = true;
    c->http_threads = CONFIG_HTTP_THREADS_AUTO;
    if (set_str(&c->socket, "/run/avenpingd/avenpingd.sock") != 0 ||
        set_str(&c->state_dir, "/var/lib/avenpingd") != 0 ||
        set_str(&c->api_base, "https://api.avenping.com") != 0) {
        config_free(c);
        return -ENOMEM;
    }
    return 0;
}

void config_free(config_t *c)
{
    if (c == NULL)
        return;
    free(c->socket);
    free(c->state_dir);
    free(c->api_base);
    free(c->token_file);
    free(c->config_file);
    free(c->metrics_file);
    free(c->ca_file);
    memset(c, 0, sizeof(*c));
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Parses a whole-string integer within [lo, hi]. */
static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi)
        return -EINVAL;
    *out = n;
    return 0;
}

/* A plain decimal number ("80", "0.5"): strtod's hex, exponents, inf and
 * nan would let a typo pass as a rate. */
static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    double n;
    int digits = 0, dots = 0;

    for (const char *p = v; *p; p++) {
        if (isdigit((unsigned char)*p))
            digits++;
        else if (*p == '.' && dots++ == 0)
            continue;
        else
            return -EINVAL;
    }
    if (digits == 0)
        return -EINVAL;
    errno = 0;
    n = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !isfinite(n) || n < lo || n > hi)
        return -EINVAL;
    *out = n;
    return 0;
}

static int parse_level(const char *v)
{
    if (strcmp(v, "error") == 0)
        return CONFIG_LOG_ERROR;
    if (strcmp(v, "warn") == 0)
        return CONFIG_LOG_WARN;
    if (strcmp(v, "info") == 0)
        return CONFIG_LOG_INFO;
    if (strcmp(v, "debug") == 0)
        return CONFIG_LOG_DEBUG;
    return -1;
}

const char *config_log_level_name(int level)
{
    switch (level) {
    case CONFIG_LOG_ERROR:
        return "error";
    case CONFIG_LOG_WARN:
        return "warn";
    case CONFIG_LOG_INFO:
        return "info";
    case CONFIG_LOG_DEBUG:
        return "debug";
    default:
        return "unknown";
    }
}

static bool is_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* A comma list of uids; an empty item ("0,,1", "0,") is an error, not
 * skipped: it is more likely a uid lost in editing. -ENOSPC for more than
 * CONFIG_MAX_UIDS. */
static int parse_uids(config_t *c, const char *v)
{
    char buf[CONFIG_MAX_LINE];
    char *tok, *next;
    long n;

    snprintf(buf, sizeof(buf), "%s", v);
    c->n_allowed_uids = 0;
    for (tok = buf; tok != NULL; tok = next) {
        next = strchr(tok, ',');
        if (next != NULL)
            *next++ = '\0';
        tok = trim(tok);
        if (parse_long(tok, 0, (long)INT_MAX, &n) != 0)
            return -EINVAL;
        if (c->n_allowed_uids == CONFIG_MAX_UIDS)
            return -ENOSPC;
        c->allowed_uids[c->n_allowed_uids++] = (uid_t)n;
    }
    return 0;
}

/* A numeric bound as a string literal, for messages that name it. */
#define BOUND_STR_(x) #x
#define BOUND_STR(x) BOUND_STR_(x)

static int set_rate_override(config_t *c, const char *id, double rate)
{
    size_t i;

    for (i = 0; i < c->n_rate_overrides; i++) {
        if (strcmp(c->rate_overrides[i].phone_number_id, id) == 0) {
            c->rate_overrides[i].rate = rate;
            return 0;
        }
    }
    if (c->n_rate_overrides == CONFIG_MAX_RATE_OVERRIDES)
        return -ENOSPC;
    snprintf(c->rate_overrides[i].phone_number_id, sizeof(c->rate_overrides[i].phone_number_id),
             "%s", id);
    c->rate_overrides[i].rate = rate;
    c->n_rate_overrides++;
    return 0;
}

/* One key = value. Returns 0, -ENOENT for an unknown key, -EINVAL for a bad
 * value (with a hint in *why). */
static int apply_key(config_t *c, const char *k, const char *v, const char **why)
{
    long n;
    double d;

    *why = "bad value";
#define LONG_KEY(name, lo, hi)                                                                     \
    if (strcmp(k, #name) == 0) {                                                                   \
        *why = "expected an integer in [" #lo ", " #hi "]";                                        \
        if (parse_long(v, lo, hi, &n) != 0)                                                        \
            return -EINVAL;                                                                        \
        c->name = n;                                                                               \
        return 0;                                                                                  \
    }
#define RATE_KEY(name)                                                                             \
    if (strcmp(k, #name) == 0) {                                                                   \
        *why = "expected a number in [0, 1000000]";                                                \
        if (parse_double(v, 0, 1e6, &d) != 0)                                                      \
            return -EINVAL;                                                                        \
        c->name = d;                                                                               \
        return 0;                                                                                  \
    }
#define STR_KEY(name)                                                                              \
    if (strcmp(k, #name) == 0) {                                                                   \
        *why = "expected a non-empty value";                                                       \
        if (*v == '\0')                                                                            \
            return -EINVAL;                                                                        \
        return set_str(&c->name, v);                                                               \
    }
    STR_KEY(socket)
    STR_KEY(state_dir)
    if (strcmp(k, "api_base") == 0) {
        *why = API_BASE_WANTED;
        if (!api_base_ok(v))
            return -EINVAL;
        return set_str(&c->api_base, v);
    }
    STR_KEY(token_file)
    STR_KEY(metrics_file)
    STR_KEY(ca_file)
    RATE_KEY(rate_per_number)
    RATE_KEY(burst_per_number)
    RATE_KEY(global_rate)
    LONG_KEY(pair_rate_interval_ms, 0, 86400000)
    LONG_KEY(pair_burst, 1, 100000)
    LONG_KEY(max_inflight, 1, 100000)
    LONG_KEY(max_inflight_per_number, 1, 100000)
    LONG_KEY(request_timeout_ms, 100, 3600000)
    LONG_KEY(connect_timeout_ms, 100, 3600000)
    LONG_KEY(max_attempts, 1, 1000)
    LONG_KEY(backoff_base_ms, 1, 86400000)
    LONG_KEY(backoff_max_ms, 1, 86400000)
    LONG_KEY(job_ttl_s, 1, 31536000)
    LONG_KEY(retention_s, 0, 315360000)
    LONG_KEY(shutdown_timeout_ms, 0, 3600000)
    LONG_KEY(max_connections, 1, 65536)
    LONG_KEY(max_queued, 1, 1000000000)
    LONG_KEY(metrics_interval_ms, 100, 3600000)
#undef LONG_KEY
#undef RATE_KEY
#undef STR_KEY
    if (strcmp(k, "log_level") == 0) {
        int lvl = parse_level(v);
        *why = "expected error, warn, info or debug";
        if (lvl < 0)
            return -EINVAL;
        c->log_level = lvl;
        return 0;
    }
    if (strcmp(k, "delivery") == 0) {
        *why = "expected at-least-once or at-most-once";
        if (strcmp(v, "at-least-once") == 0)
            c->at_most_once = false;
        else if (strcmp(v, "at-most-once") == 0)
            c->at_most_once = true;
        else
            return -EINVAL;
        return 0;
    }
    if (strcmp(k, "http_threads") == 0) {
        *why = "expected auto or an integer in [0, 16]";
        if (strcmp(v, "auto") == 0) {
            c->http_threads = CONFIG_HTTP_THREADS_AUTO;
            return 0;
        }
        if (parse_long(v, 0, 16, &n) != 0)
            return -EINVAL;
        c->http_threads = n;
        return 0;
    }
    if (strcmp(k, "http2") == 0) {
        *why = "expected yes or no";
        if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0)
            c->http2 = true;
        else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0)
            c->http2 = false;
        else
            return -EINVAL;
        return 0;
    }
    if (strcmp(k, "socket_mode") == 0) {
        char *end;
        unsigned long m;
        *why = "expected an octal mode such as 0660";
        errno = 0;
        m = strtoul(v, &end, 8);
        if (errno != 0 || end == v || *end != '\0' || m > 0777)
            return -EINVAL;
        *why = "0 would let no one but root connect; expected an octal mode such as 0660";
        if (m == 0)
            return -EINVAL;
        c->socket_mode = (unsigned)m;
        return 0;
    }
    if (strcmp(k, "allowed_uids") == 0) {
        int r = parse_uids(c, v);
        *why = r == -ENOSPC ? "too many uids (at most " BOUND_STR(CONFIG_MAX_UIDS) ")"
                            : "expected a comma list of numeric uids";
        return r == 0 ? 0 : -EINVAL;
    }
    if (strcmp(k, "disk_min_free_mb") == 0) {
        *why = "expected an integer in [0, 1048576]";
        if (parse_long(v, 0, 1048576, &n) != 0)
            return -EINVAL;
        c->disk_min_free = (size_t)n << 20;
        return 0;
    }
    if (strcmp(k, "map_size_max_mb") == 0) {
        *why = "expected an integer in [16, 16777216]";
        if (parse_long(v, 16, 16777216, &n) != 0)
            return -EINVAL;
        c->map_size_max = (size_t)n << 20;
        return 0;
    }
    if (strncmp(k, "rate.", 5) == 0) {
        *why = "expected rate.<digits> = number in (0, 1000000]";
        if (!is_digits(k + 5) || strlen(k + 5) > 64 || parse_double(v, 0, 1e6, &d) != 0)
            return -EINVAL;
        /* 0 is "no limit" for rate_per_number; for one sender it is more
         * likely meant to stop it, which a limit cannot do. */
        *why = "0 would lift this sender's limit; to stop a sender, pause it (avenpingctl pause "
               "--phone-number-id ID)";
        if (d == 0)
            return -EINVAL;
        if (set_rate_override(c, k + 5, d) != 0) {
            /* The bound is named: "too many" alone left the operator to
             * guess how many to drop. */
            *why =
                "too many rate.<id> overrides (at most " BOUND_STR(CONFIG_MAX_RATE_OVERRIDES) ")";
            return -EINVAL;
        }
        return 0;
    }
    return -ENOENT;
}

/* Keys a file has set, with their lines: a key given twice is an error
 * (which of two values an operator meant is not for the daemon to guess). */
typedef struct seen_keys {
    struct seen_key {
        char *key;
        unsigned line;
    } * k;
    size_t n, cap;
} seen_keys_t;

/* 0 and records `key`; 1 with *first set if it was seen; -ENOMEM. */
static int seen_add(seen_keys_t *sk, const char *key, unsigned line, unsigned *first)
{
    for (size_t i = 0; i < sk->n; i++) {
        if (strcmp(sk->k[i].key, key) == 0) {
            *first = sk->k[i].line;
            return 1;
        }
    }
    if (sk->n == sk->cap) {
        size_t cap = sk->cap ? sk->cap * 2 : 32;
        struct seen_key *nk = realloc(sk->k, cap * sizeof(*nk));
        if (nk == NULL)
            return -ENOMEM;
        sk->k = nk;
        sk->cap = cap;
    }
    sk->k[sk->n].key = strdup(key);
    if (sk->k[sk->n].key == NULL)
        return -ENOMEM;
    sk->k[sk->n++].line = line;
    return 0;
}

static void seen_free(seen_keys_t *sk)
{
    for (size_t i = 0; i < sk->n; i++)
        free(sk->k[i].key);
    free(sk->k);
}

/* Why the file open on fd cannot be read as a file: the fstat error, -EISDIR
 * for a directory, -ENOTSUP for anything else that is not a regular file. */
static int file_kind_error(int fd, struct stat *st)
{
    if (fstat(fd, st) != 0)
        return -errno;
    return S_ISDIR(st->st_mode) ? -EISDIR : -ENOTSUP;
}

/* Opens a config file for reading; NULL with *rc = -errno, or -ENOTSUP for
 * anything but a regular file (a FIFO with no writer would block the
 * daemon: at start with no word, at a reload the whole loop). */
static FILE *open_regular(const char *path, int *rc)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    FILE *f;

    if (fd < 0) {
        *rc = -errno;
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *rc = file_kind_error(fd, &st);
        close(fd);
        return NULL;
    }
    f = fdopen(fd, "r");
    if (f == NULL) {
        *rc = -errno;
        close(fd);
    }
    return f;
}

/* Whether `k` in lower case is one of the fixed keys (a line
 * "Max_Inflight = 64"); then `low` holds that key. Tried on a scratch
 * config with an empty value, so that apply_key stays the one list of keys.
 * "rate.<id>" is not a fixed key: its tail is what was typed (it could be
 * the token in the wrong place), never shown. */
static bool key_known_lowercased(const char *k, char *low, size_t cap)
{
    size_t n = strlen(k);
    config_t scratch;
    const char *why;
    bool known;

    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)k[i]);
    if (strncmp(low, "rate.", 5) == 0 || !key_like(low, n) || config_init(&scratch) != 0) {
        explicit_bzero(low, cap);
        return false;
    }
    known = apply_key(&scratch, low, "", &why) != -ENOENT;
    config_free(&scratch);
    if (!known)
        explicit_bzero(low, cap);
    return known;
}

int config_load_file(config_t *c, const char *path, char *err, size_t err_size)
{
    char line[CONFIG_MAX_LINE + 2];
    FILE *f;
    unsigned lineno = 0, first, backoff_line = 0;
    seen_keys_t seen = {0};
    int rc = 0;

    f = open_regular(path, &rc);
    if (f == NULL) {
        const char *why = rc == -ENOTSUP ? "not a regular file" : strerror(-rc);
        if (path_hidden(path) || rc == -ENAMETOOLONG)
            set_err(err, err_size,
                    "the file given (%zu characters, not shown: is it the token itself?): %s",
                    strlen(path), why);
        else
            set_err(err, err_size, "%s: %s", path, why);
        return rc;
    }
    errno = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *s, *eq, *key, *val, *hash;
        const char *why;
        int r;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            /* fgets stops at a full buffer; a shorter string means a NUL
             * byte ended it early. */
            if (strlen(line) < sizeof(line) - 1)
                set_err(err, err_size, "%s:%u: contains a NUL byte (not a text file?)", path,
                        lineno);
            else
                set_err(err, err_size, "%s:%u: line longer than %d bytes", path, lineno,
                        CONFIG_MAX_LINE);
            rc = -EINVAL;
            goto out;
        }
        /* '#' starts a comment anywhere: no value needs one. */
        hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        s = line;
        if (lineno == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
            s += 3; /* a UTF-8 byte order mark, as some editors write */
        s = trim(s);
        if (*s == '\0')
            continue;
        eq = strchr(s, '=');
        if (eq == NULL) {
            set_err(err, err_size, "%s:%u: expected \"key = value\"", path, lineno);
            rc = -EINVAL;
            goto out;
        }
        *eq = '\0';
        key = trim(s);
        val = trim(eq + 1);
        if (!key_like(key, strlen(key))) {
            char low[41];
            if (key_known_lowercased(key, low, sizeof(low)))
                set_err(err, err_size, "%s:%u: unknown key: keys are spelt in lower case (%s)",
                        path, lineno, low);
            else
                set_err(err, err_size,
                        "%s:%u: unknown key (%zu characters, not shown: a value in a key's "
                        "place?)",
                        path, lineno, strlen(key));
            rc = -EINVAL;
            goto out;
        }
        r = seen_add(&seen, key, lineno, &first);
        if (r == 1) {
            set_err(err, err_size, "%s:%u: %s: given twice (first on line %u)", path, lineno, key,
                    first);
            rc = -EINVAL;
            goto out;
        }
        if (r < 0) {
            set_err(err, err_size, "%s:%u: out of memory", path, lineno);
            rc = r;
            goto out;
        }
        r = apply_key(c, key, val, &why);
        if (r == 0 && (strcmp(key, "backoff_base_ms") == 0 || strcmp(key, "backoff_max_ms") == 0))
            backoff_line = lineno; /* the later of the two names the pair's conflict */
        if (r == -ENOENT) {
            set_err(err, err_size, "%s:%u: %s: unknown key", path, lineno, key);
            rc = -EINVAL;
            goto out;
        }
        if (r != 0) {
            set_err(err, err_size, "%s:%u: %s: %s", path, lineno, key,
                    r == -ENOMEM ? "out of memory" : why);
            rc = r == -ENOMEM ? r : -EINVAL;
            goto out;
        }
    }
    if (ferror(f)) {
        rc = errno != 0 ? -errno : -EIO;
        set_err(err, err_size, "%s: %s", path, strerror(-rc));
        goto out;
    }
    if (c->backoff_base_ms > c->backoff_max_ms) {
        set_err(err, err_size, "%s:%u: backoff_base_ms (%ld) is above backoff_max_ms (%ld)", path,
                backoff_line, c->backoff_base_ms, c->backoff_max_ms);
        rc = -EINVAL;
        goto out;
    }
    rc = set_str(&c->config_file, path);
out:
    seen_free(&seen);
    fclose(f);
    return rc;
}

int config_flags_parse(int argc, char **argv, config_flags_t *f, char *err, size_t err_size)
{
    static const struct {
        const char *name;
        size_t off;
    } valued[] = {
        {"--config", offsetof(config_flags_t, config)},
        {"--socket", offsetof(config_flags_t, socket)},
        {"--state-dir", offsetof(config_flags_t, state_dir)},
        {"--api-base", offsetof(config_flags_t, api_base)},
        {"--token-file", offsetof(config_flags_t, token_file)},
        {"--log-level", offsetof(config_flags_t, log_level)},
    };
    int i;

    memset(f, 0, sizeof(*f));
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        size_t j, n;
        bool matched = false;

        if (strcmp(a, "--version") == 0) {
            f->version = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            f->help = true;
            continue;
        }
        for (j = 0; j < sizeof(valued) / sizeof(valued[0]); j++) {
            const char **slot = (const char **)((char *)f + valued[j].off);
            n = strlen(valued[j].name);
            if (strncmp(a, valued[j].name, n) != 0)
                continue;
            if (a[n] == '=') {
                *slot = a + n + 1;
            } else if (a[n] == '\0') {
                /* "--config --token-file x": the next option is not a
                 * value (a path starting with "--" can be given as
                 * --config=--path or ./--path). */
                if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                    set_err(err, err_size, "%s needs a value", valued[j].name);
                    return -EINVAL;
                }
                *slot = argv[++i];
            } else {
                continue;
            }
            matched = true;
            break;
        }
        if (!matched) {
            /* Named without its value, and a bare word not at all: what
             * follows could be a token someone typed here (never echoed). */
            size_t name_len = strcspn(a, "=");
            if (a[0] == '-' && a[1] == '-' && key_like(a + 2, name_len - 2))
                set_err(err, err_size, "unknown option \"%.*s\" (see --help)", (int)name_len, a);
            else if (a[0] == '-')
                set_err(err, err_size,
                        "unknown option (%zu characters, not shown; options are spelt "
                        "--name or --name=value, see --help)",
                        strlen(a));
            else
                set_err(err, err_size,
                        "unexpected argument #%d: avenpingd takes options only "
                        "(see --help)",
                        i);
            return -EINVAL;
        }
    }
    return 0;
}

int config_flags_apply(config_t *c, const config_flags_t *f, char *err, size_t err_size)
{
    int rc = 0;

    if (f->socket && (rc = set_str(&c->socket, f->socket)) != 0)
        return rc;
    if (f->state_dir && (rc = set_str(&c->state_dir, f->state_dir)) != 0)
        return rc;
    if (f->api_base && !api_base_ok(f->api_base)) {
        set_err(err, err_size, "--api-base: " API_BASE_WANTED);
        return -EINVAL;
    }
    if (f->api_base && (rc = set_str(&c->api_base, f->api_base)) != 0)
        return rc;
    if (f->token_file && (rc = set_str(&c->token_file, f->token_file)) != 0)
        return rc;
    if (f->log_level) {
        int lvl = parse_level(f->log_level);
        if (lvl < 0) {
            set_err(err, err_size, "--log-level: expected error, warn, info or debug");
            return -EINVAL;
        }
        c->log_level = lvl;
    }
    return 0;
}

/* Reads a whole small file into a NUL-terminated buffer; the token is
 * wiped from every intermediate buffer. */
static int read_token_file(const char *path, char **out)
{
    char buf[TOKEN_FILE_READ + 1];
    ssize_t n;
    size_t len = 0;
    int fd, rc = 0;
    char *start, *end;

    /* Non-blocking, and a regular file only: a FIFO with no writer would
     * block here - at start with no word, at a reload the whole loop. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    {
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            rc = file_kind_error(fd, &st);
            goto out;
        }
    }
    for (;;) {
        n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == sizeof(buf) - 1) {
            rc = -EFBIG;
            goto out;
        }
    }
    buf[len] = '\0';
    start = trim(buf);
    end = start + strlen(start);
    if (start == end) {
        rc = -ENODATA;
        goto out;
    }
    if (end - start > TOKEN_MAX) {
        rc = -EFBIG;
        goto out;
    }
    /* A token is one line of printable characters; anything else would
     * break the Authorization header. */
    for (const char *p = start; p < end; p++) {
        if (!isgraph((unsigned char)*p)) {
            rc = -EINVAL;
            goto out;
        }
    }
    *out = strdup(start);
    if (*out == NULL)
        rc = -ENOMEM;
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

static const char *token_problem(int rc)
{
    switch (rc) {
    case -ENODATA:
        return "empty";
    case -EFBIG:
        return "longer than 4095 characters";
    case -EINVAL:
        return "contains whitespace or control characters";
    case -ENOTSUP:
        return "not a regular file";
    default:
        return strerror(-rc);
    }
}

int config_token_load(const config_t *c, char **token, char *err, size_t err_size)
{
    char path[PATH_MAX];
    const char *src = NULL;
    const char *cred = getenv("CREDENTIALS_DIRECTORY");
    const char *env;
    int rc;

    *token = NULL;
    if (c->token_file != NULL) {
        src = c->token_file;
    } else if (cred != NULL && *cred != '\0') {
        snprintf(path, sizeof(path), "%s/avenping-token", cred);
        /* Only a credential that is not there lets the environment's
         * token in: one that cannot be looked at (a directory the user may
         * not search) is reported, not passed over. */
        if (access(path, F_OK) == 0 || errno != ENOENT)
            src = path;
    }
    if (src != NULL) {
        rc = read_token_file(src, token);
        if (rc != 0) {
            /* A name too long for a path (a long token: JWTs run to
             * hundreds of bytes, with or without '/') is never shown. */
            if ((rc == -ENOENT && path_hidden(src)) || rc == -ENAMETOOLONG)
                set_err(err, err_size,
                        "token file (%zu characters, not shown: is it the token itself?): %s",
                        strlen(src), token_problem(rc));
            else
                set_err(err, err_size, "token file %s: %s", src, token_problem(rc));
        }
        return rc;
    }
    env = getenv("AVENPING_TOKEN");
    if (env != NULL && *env != '\0') {
        /* Surrounding whitespace is dropped, as from a token file
         * (`export AVENPING_TOKEN=$(cat file)` keeps no newline, but an
         * env file or a here-string may). */
        size_t len;
        while (isspace((unsigned char)*env))
            env++;
        len = strlen(env);
        while (len > 0 && isspace((unsigned char)env[len - 1]))
            len--;
        if (len == 0) {
            set_err(err, err_size, "AVENPING_TOKEN: %s", token_problem(-ENODATA));
            return -ENODATA;
        }
        if (len > TOKEN_MAX) {
            set_err(err, err_size, "AVENPING_TOKEN: %s", token_problem(-EFBIG));
            return -EFBIG;
        }
        for (size_t i = 0; i < len; i++) {
            if (!isgraph((unsigned char)env[i])) {
                set_err(err, err_size, "AVENPING_TOKEN: %s", token_problem(-EINVAL));
                return -EINVAL;
            }
        }
        *token = strndup(env, len);
        return *token ? 0 : -ENOMEM;
    }
    set_err(err, err_size,
            "no API token: set token_file, --token-file, a systemd credential "
            "\"avenping-token\" or AVENPING_TOKEN");
    return -ENOENT;
}

/* Whether `f` holds a PEM certificate: a line that begins one, as
 * OpenSSL's reader (libcurl's CAINFO) looks for. */
static bool has_pem_certificate(FILE *f)
{
    static const char *const begins[] = {"-----BEGIN CERTIFICATE-----",
                                         "-----BEGIN TRUSTED CERTIFICATE-----",
                                         "-----BEGIN X509 CERTIFICATE-----"};
    char line[256];

    while (fgets(line, sizeof(line), f) != NULL) {
        for (size_t i = 0; i < sizeof(begins) / sizeof(begins[0]); i++)
            if (strncmp(line, begins[i], strlen(begins[i])) == 0)
                return true;
    }
    return false;
}

int config_ca_file_check(const config_t *c, char *err, size_t err_size)
{
    const char *cfg = c->config_file ? c->config_file : "config";
    int rc = 0;
    FILE *f;

    if (c->ca_file == NULL)
        return 0;
    f = open_regular(c->ca_file, &rc);
    if (f == NULL) {
        set_err(err, err_size, "%s: ca_file %s: %s", cfg, c->ca_file,
                rc == -ENOTSUP ? "not a regular file" : strerror(-rc));
        return rc;
    }
    /* An empty file or one of another kind (a key, DER) passed the start,
     * and every connect failed with "error setting certificate file". */
    if (!has_pem_certificate(f)) {
        rc = ferror(f) ? -EIO : -EINVAL;
        set_err(err, err_size, "%s: ca_file %s: %s", cfg, c->ca_file,
                rc == -EIO ? strerror(EIO)
                           : "no PEM certificate in it (a \"-----BEGIN CERTIFICATE-----\" line)");
    }
    fclose(f);
    return rc;
}

double config_rate_for(const config_t *c, const char *phone_number_id)
{
    size_t i;

    for (i = 0; i < c->n_rate_overrides; i++)
        if (strcmp(c->rate_overrides[i].phone_number_id, phone_number_id) == 0)
            return c->rate_overrides[i].rate;
    return c->rate_per_number;
}

/* --- reload ----------------------------------------------------------- */

typedef enum field_kind {
    FIELD_STR,   /* char * */
    FIELD_PLAIN, /* a scalar compared and copied by its bytes */
    FIELD_RATES, /* rate_overrides + n_rate_overrides, order not significant */
    FIELD_UIDS,  /* allowed_uids + n_allowed_uids, order not significant */
} field_kind_t;

typedef struct reload_field {
    const char *key;
    size_t off, size;
    field_kind_t kind;
    bool live;
} reload_field_t;

#define PLAIN(k, m, l)                                                                             \
    {                                                                                              \
        .key = (k), .off = offsetof(config_t, m), .size = sizeof(((config_t *)0)->m),              \
        .kind = FIELD_PLAIN, .live = (l)                                                           \
    }
#define STR(k, m, l)                                                                               \
    {                                                                                              \
        .key = (k), .off = offsetof(config_t, m), .size = sizeof(char *), .kind = FIELD_STR,       \
        .live = (l)                                                                                \
    }

/* Every config key, with whether a running daemon can take a new value.
 * "live" keys are read where they are used (or given to the scheduler by
 * the caller after config_apply_live); the others were consumed at
 * start-up by a module that has no setter. */
static const reload_field_t reload_fields[] = {
    STR("socket", socket, false),
    STR("state_dir", state_dir, false),
    STR("api_base", api_base, false),
    STR("token_file", token_file, true), /* the daemon re-reads the token on reload */
    STR("metrics_file", metrics_file, false),
    PLAIN("metrics_interval_ms", metrics_interval_ms, false), /* the metrics timer's period */
    STR("ca_file", ca_file, false),
    PLAIN("log_level", log_level, true),
    PLAIN("rate_per_number", rate_per_number, true),
    PLAIN("burst_per_number", burst_per_number, true),
    {.key = "rate.<phoneNumberId>", .kind = FIELD_RATES, .live = true},
    PLAIN("global_rate", global_rate, true),
    PLAIN("pair_rate_interval_ms", pair_rate_interval_ms, true),
    PLAIN("pair_burst", pair_burst, true),
    PLAIN("max_inflight", max_inflight, true),
    PLAIN("max_inflight_per_number", max_inflight_per_number, true),
    PLAIN("request_timeout_ms", request_timeout_ms, false), /* fixed in the HTTP engine */
    PLAIN("connect_timeout_ms", connect_timeout_ms, false),
    PLAIN("max_attempts", max_attempts, true),
    PLAIN("backoff_base_ms", backoff_base_ms, true),
    PLAIN("backoff_max_ms", backoff_max_ms, true),
    PLAIN("job_ttl_s", job_ttl_s, true),
    PLAIN("retention_s", retention_s, true),
    PLAIN("delivery", at_most_once, false), /* start-up recovery, maybe-sent failures */
    PLAIN("socket_mode", socket_mode, false),
    {.key = "allowed_uids", .kind = FIELD_UIDS, .live = false},
    PLAIN("shutdown_timeout_ms", shutdown_timeout_ms, true),
    PLAIN("max_connections", max_connections, false),
    PLAIN("max_queued", max_queued, true),
    PLAIN("map_size_max_mb", map_size_max, false),
    PLAIN("disk_min_free_mb", disk_min_free, false),
    PLAIN("http2", http2, false),
    PLAIN("http_threads", http_threads, false), /* the pool is made at start */
};

#undef PLAIN
#undef STR

static bool rates_equal(const config_t *a, const config_t *b)
{
    size_t i, j;

    if (a->n_rate_overrides != b->n_rate_overrides)
        return false;
    /* Ids are unique within one config, so equal counts plus every id of a
     * found in b with the same rate means equal sets. */
    for (i = 0; i < a->n_rate_overrides; i++) {
        const config_rate_override_t *o = &a->rate_overrides[i];
        for (j = 0; j < b->n_rate_overrides; j++)
            if (strcmp(o->phone_number_id, b->rate_overrides[j].phone_number_id) == 0)
                break;
        if (j == b->n_rate_overrides || b->rate_overrides[j].rate != o->rate)
            return false;
    }
    return true;
}

static bool uid_listed(const config_t *c, uid_t uid)
{
    for (size_t i = 0; i < c->n_allowed_uids; i++)
        if (c->allowed_uids[i] == uid)
            return true;
    return false;
}

static bool uids_equal(const config_t *a, const config_t *b)
{
    size_t i;

    /* As sets: a list may repeat a uid, so check both directions. */
    for (i = 0; i < a->n_allowed_uids; i++)
        if (!uid_listed(b, a->allowed_uids[i]))
            return false;
    for (i = 0; i < b->n_allowed_uids; i++)
        if (!uid_listed(a, b->allowed_uids[i]))
            return false;
    return true;
}

static bool field_equal(const reload_field_t *f, const config_t *a, const config_t *b)
{
    const char *pa = (const char *)a + f->off;
    const char *pb = (const char *)b + f->off;

    switch (f->kind) {
    case FIELD_STR: {
        const char *sa = *(char *const *)(const void *)pa;
        const char *sb = *(char *const *)(const void *)pb;
        if (sa == NULL || sb == NULL)
            return sa == sb;
        return strcmp(sa, sb) == 0;
    }
    case FIELD_PLAIN:
        return memcmp(pa, pb, f->size) == 0;
    case FIELD_RATES:
        return rates_equal(a, b);
    case FIELD_UIDS:
        return uids_equal(a, b);
    }
    return true;
}

size_t config_diff(const config_t *running, const config_t *fresh, config_change_t *out, size_t max)
{
    size_t i, n = 0;

    for (i = 0; i < sizeof(reload_fields) / sizeof(reload_fields[0]); i++) {
        const reload_field_t *f = &reload_fields[i];
        if (field_equal(f, running, fresh))
            continue;
        if (n < max) {
            out[n].key = f->key;
            out[n].live = f->live;
        }
        n++;
    }
    return n;
}

int config_apply_live(config_t *running, const config_t *fresh)
{
    enum { N_FIELDS = sizeof(reload_fields) / sizeof(reload_fields[0]) };
    char *copies[N_FIELDS] = {NULL};
    size_t i;

    /* Copy the live strings first, the only step that can fail, so that a
     * failure leaves `running` untouched. */
    for (i = 0; i < N_FIELDS; i++) {
        const reload_field_t *f = &reload_fields[i];
        const char *src;

        if (!f->live || f->kind != FIELD_STR)
            continue;
        src = *(char *const *)(const void *)((const char *)fresh + f->off);
        if (src != NULL && (copies[i] = strdup(src)) == NULL) {
            while (i-- > 0)
                free(copies[i]);
            return -ENOMEM;
        }
    }
    for (i = 0; i < N_FIELDS; i++) {
        const reload_field_t *f = &reload_fields[i];
        char *dst = (char *)running + f->off;
        const char *src = (const char *)fresh + f->off;

        if (!f->live)
            continue;
        switch (f->kind) {
        case FIELD_STR:
            free(*(char **)(void *)dst);
            *(char **)(void *)dst = copies[i];
            break;
        case FIELD_PLAIN:
            memcpy(dst, src, f->size);
            break;
        case FIELD_RATES:
            memcpy(running->rate_overrides, fresh->rate_overrides,
                   fresh->n_rate_overrides * sizeof(fresh->rate_overrides[0]));
            running->n_rate_overrides = fresh->n_rate_overrides;
            break;
        case FIELD_UIDS:
            memcpy(running->allowed_uids, fresh->allowed_uids,
                   fresh->n_allowed_uids * sizeof(fresh->allowed_uids[0]));
            running->n_allowed_uids = fresh->n_allowed_uids;
            break;
        }
    }
    return 0;
}
