/*
 * avenpingctl - the command-line client of avenpingd (socket-protocol.md,
 * "avenpingctl"; manual: docs/man/avenpingctl.1).
 *
 * Every command is one or more requests on the socket through the client
 * library (ipc_client.h). Exit status: 0 success, 1 a request failed (or the
 * daemon could not be reached), 2 a usage error. --json prints the daemon's
 * answers (without "id") instead of text, one JSON object per line.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "csv.h"
#include "ipc_client.h"
#include "json_scan.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define MAX_OPTS 128
#define MAX_POS 8
#define KEY_MAX 200 /* idempotency keys, campaigns (protocol limit) */
/* The daemon's longest request line (protocol.md): a longer JSON Lines row
 * or request is refused here, without reading it whole into memory. */
#define LINE_MAX_BYTES ((size_t)4 * 1024 * 1024)
/* How far into an import of no known format (import_sniff) the first byte
 * that is not whitespace is looked for: past it, the input is CSV. */
#define SNIFF_MAX_BYTES ((size_t)64 * 1024)

/* --- options ---------------------------------------------------------- */

typedef struct opts {
    const char *name[MAX_OPTS];
    const char *value[MAX_OPTS]; /* NULL for a flag */
    size_t n;
    const char *pos[MAX_POS];
    size_t npos;
} opts_t;

typedef struct ctx {
    const char *socket;
    bool json;
    int timeout_ms;
    ipc_client_t *cl;
} ctx_t;

typedef struct command {
    const char *name;
    int (*fn)(ctx_t *c, const opts_t *o);
    const char *options; /* "name:" takes a value, "name" is a flag, comma separated */
    int min_pos, max_pos;
    const char *usage;
    const char *help;
} command_t;

static const char global_opts[] = "socket:,json,timeout:,help";

/* Is `name` in the comma list `list`? *arg: whether it takes a value. */
static bool opt_known(const char *list, const char *name, size_t len, bool *arg)
{
    const char *p = list;

    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool a = n > 0 && p[n - 1] == ':';
        size_t k = a ? n - 1 : n;
        if (k == len && strncmp(p, name, len) == 0) {
            *arg = a;
            return true;
        }
        if (e == NULL)
            break;
        p = e + 1;
    }
    return false;
}

static const char *opt_get(const opts_t *o, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->name[i], name) == 0)
            v = o->value[i] ? o->value[i] : "";
    return v;
}

static bool opt_has(const opts_t *o, const char *name)
{
    return opt_get(o, name) != NULL;
}

static void usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void usage_err(const char *fmt, ...)
{
    va_list ap;
    fputs("avenpingctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see avenpingctl --help)\n", stderr);
}

/* Parses argv[i..] against `list` (plus the global options) into *o.
 * "--name=value" and "--name value" both work; "--" ends options. */
static int opts_parse(int argc, char **argv, int i, const char *list, opts_t *o)
{
    bool only_pos = false;

    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        /* -h as before the command: "avenpingctl send -h" was a usage
         * error (a positional argument send does not take). */
        if (!only_pos && strcmp(a, "-h") == 0)
            a = "--help";
        if (!only_pos && a[0] == '-' && a[1] == '-' && a[2] != '\0') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            bool arg;
            if (!opt_known(list, name, len, &arg) && !opt_known(global_opts, name, len, &arg)) {
                usage_err("unknown option --%.*s", (int)len, name);
                return -1;
            }
            if (o->n == MAX_OPTS) {
                usage_err("too many options");
                return -1;
            }
            /* Counted at once, so that opts_free frees it on any error. */
            size_t k = o->n;
            o->value[k] = NULL;
            if ((o->name[k] = strndup(name, len)) == NULL) {
                fputs("avenpingctl: out of memory\n", stderr);
                return -1;
            }
            o->n++;
            if (arg) {
                if (eq) {
                    o->value[k] = eq + 1;
                } else if (i + 1 < argc) {
                    o->value[k] = argv[++i];
                } else {
                    usage_err("--%.*s needs a value", (int)len, name);
                    return -1;
                }
            } else if (eq) {
                usage_err("--%.*s takes no value", (int)len, name);
                return -1;
            }
            continue;
        }
        if (o->npos == MAX_POS) {
            usage_err("too many arguments");
            return -1;
        }
        o->pos[o->npos++] = a;
    }
    return 0;
}

static void opts_free(opts_t *o)
{
    for (size_t i = 0; i < o->n; i++)
        free((char *)o->name[i]);
}

/* A decimal number option in [min, max]; `def` when absent. -1 on error. */
static int opt_long(const opts_t *o, const char *name, long min, long max, long def, long *out)
{
    const char *v = opt_get(o, name);
    char *end;
    long x;

    *out = def;
    if (v == NULL)
        return 0;
    errno = 0;
    x = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x < min || x > max) {
        usage_err("--%s must be a whole number from %ld to %ld", name, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

static int opt_double(const opts_t *o, const char *name, double min, double max, double def,
                      double *out)
{
    const char *v = opt_get(o, name);
    char *end;
    double x;

    *out = def;
    if (v == NULL)
        return 0;
    errno = 0;
    x = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(x >= min && x <= max)) {
        usage_err("--%s must be a number from %g to %g", name, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

/* --- talking to the daemon -------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts;
    if (s <= 0)
        return;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int connect_daemon(ctx_t *c)
{
    int rc;

    if (c->cl != NULL)
        return 0;
    rc = ipc_client_connect(c->socket, &c->cl);
    if (rc != 0) {
        fprintf(stderr, "avenpingctl: cannot connect to %s: %s%s\n", c->socket,
                ipc_client_strerror(rc),
                rc == -EACCES ? " (connecting takes the socket's group, avenpingd in the "
                                "packaged service: add this user to it, or use sudo)"
                : rc == -ENOENT || rc == -ECONNREFUSED
                    ? " (is avenpingd running? systemctl status avenpingd)"
                    : "");
        return -1;
    }
    return 0;
}

/* Prints an error answer; returns EXIT_FAIL. */
static int print_error_answer(const cJSON *ans)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(ans, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ans, "message");

    fprintf(stderr, "avenpingctl: %s: %s\n", cJSON_IsString(code) ? code->valuestring : "ERROR",
            cJSON_IsString(msg) ? msg->valuestring : "request failed");
    return EXIT_FAIL;
}

static bool answer_ok(const cJSON *ans)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ans, "ok"));
}

/*
 * Gives every fractional number under `item` its shortest spelling that
 * reads back as the same double, as a raw value. cJSON writes one that 15
 * digits do not hold with 17, so a time the daemon sent as
 * 4000003600.654321 came out as 4000003600.6543212: not the daemon's
 * answer, and past the microsecond its times are given to.
 */
static void shortest_numbers(cJSON *item)
{
    cJSON *ch;

    if (cJSON_IsNumber(item) && isfinite(item->valuedouble) &&
        item->valuedouble != (double)item->valueint) {
        char buf[32];
        cJSON *raw;
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*g", prec, item->valuedouble);
            if (strtod(buf, NULL) == item->valuedouble)
                break;
        }
        raw = cJSON_CreateRaw(buf);
        if (raw == NULL)
            return; /* cJSON's own spelling then */
        item->valuestring = raw->valuestring;
        item->type = cJSON_Raw;
        raw->valuestring = NULL;
        cJSON_Delete(raw);
        return;
    }
    cJSON_ArrayForEach(ch, item)
    {
        shortest_numbers(ch);
    }
}

/* `item` as one compact JSON line (numbers as shortest_numbers spells
 * them: `item` is changed); NULL without memory. Free with cJSON_free. */
static char *json_line(cJSON *item)
{
    shortest_numbers(item);
    return cJSON_PrintUnformatted(item);
}

/* Prints `ans` as one compact JSON line without its "id". */
static void print_json(const cJSON *ans)
{
    cJSON *copy = cJSON_Duplicate(ans, 1);
    char *s;

    if (copy == NULL)
        return;
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "id");
    s = json_line(copy);
    if (s != NULL)
        puts(s);
    cJSON_free(s);
    cJSON_Delete(copy);
}

/*
 * Sends `req` (consumed) and waits for its answer. Returns 0 with *ans (an
 * ok answer; caller frees), or an exit code after printing why.
 */
static int call(ctx_t *c, cJSON *req, cJSON **ans)
{
    int rc;

    *ans = NULL;
    if (connect_daemon(c) != 0) {
        cJSON_Delete(req);
        return EXIT_FAIL;
    }
    rc = ipc_client_call(c->cl, req, c->timeout_ms, ans);
    cJSON_Delete(req);
    if (rc == -ETIMEDOUT) {
        fprintf(stderr, "avenpingctl: no answer from %s within %.1f s (--timeout)\n", c->socket,
                c->timeout_ms / 1000.0);
        return EXIT_FAIL;
    }
    if (rc != 0) {
        fprintf(stderr, "avenpingctl: %s: %s\n", c->socket, ipc_client_strerror(rc));
        return EXIT_FAIL;
    }
    if (!answer_ok(*ans)) {
        if (c->json)
            print_json(*ans);
        rc = print_error_answer(*ans);
        cJSON_Delete(*ans);
        *ans = NULL;
        return rc;
    }
    return 0;
}

static cJSON *request(const char *op)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "op", op);
    return r;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *const states[] = {"queued", "sending", "retrying",  "sent",
                                     "failed", "expired", "cancelled", "uncertain"};
#define N_STATES 8

static bool state_valid(const char *s)
{
    for (int i = 0; i < N_STATES; i++)
        if (strcmp(states[i], s) == 0)
            return true;
    return false;
}

/*
 * Whether standard output's reader has gone: a pipe whose reading end was
 * closed (`avenpingctl watch | head -1`) polls POLLERR, a socket or
 * terminal that hung up POLLHUP. A file, a terminal or a pipe still read
 * has not gone.
 */
static bool output_gone(void)
{
    struct pollfd p = {STDOUT_FILENO, 0, 0};

    return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
}

/*
 * For a command that prints until it is stopped (watch, campaign --follow):
 * flushes standard output. 0 while it can be written; EXIT_FAIL when a write
 * failed or its reader has gone (said on stderr unless the reader went away:
 * EPIPE or output_gone), so that the command ends instead of running on with
 * nobody reading (it ignores SIGPIPE and waited for ever behind `| head -1`).
 */
static int output_check(void)
{
    errno = 0; /* an earlier call's errno is no reason for this failure */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int e = errno != 0 ? errno : EIO;
        if (e != EPIPE && !output_gone())
            fprintf(stderr, "avenpingctl: writing the output: %s\n", strerror(e));
        return EXIT_FAIL;
    }
    return output_gone() ? EXIT_FAIL : 0;
}

/*
 * After each page of a listing that pages on by itself (report, list
 * --all): 0 while `f` (standard output, or the file `path`) takes what is
 * written, else EXIT_FAIL (said, unless its reader went away), so that the
 * rest of the campaign is not asked for with nowhere to write it: behind
 * `| head` (SIGPIPE is ignored) or on a full disk every page was fetched
 * and dropped.
 */
static int page_written(FILE *f, const char *path)
{
    if (f == stdout)
        return output_check();
    errno = 0;
    if (fflush(f) != 0 || ferror(f)) {
        fprintf(stderr, "avenpingctl: %s: %s\n", path, strerror(errno != 0 ? errno : EIO));
        return EXIT_FAIL;
    }
    return 0;
}

static void fmt_time(double t, char *buf, size_t n)
{
    time_t s = (time_t)t;
    struct tm tm;

    if (t <= 0 || localtime_r(&s, &tm) == NULL) {
        snprintf(buf, n, "-");
        return;
    }
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
}

/* A duration as [h:]mm:ss; "--:--" when there is no estimate: not a
 * number, negative, or over about three years (a rate that decayed
 * towards 0 while nothing moved gives any size, and the hours of one
 * past 2^31 hours do not fit the int they are printed as). */
static void fmt_duration(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0 || s >= 1e8) {
        snprintf(buf, n, "--:--");
        return;
    }
    if (s >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", (int)(s / 3600), (int)fmod(s / 60, 60), (int)fmod(s, 60));
    else
        snprintf(buf, n, "%d:%02d", (int)(s / 60), (int)fmod(s, 60));
}

/* --- bodies as written ------------------------------------------------ */

/*
 * The daemon sends `message` on "as given" (socket-protocol.md): numbers
 * keep their spelling (9007199254740993, 1.0, 1e400), strings their
 * escapes, members their order, repeated names included. A body that
 * avenpingctl parsed (send --message, template --components, a JSON Lines
 * import line) must reach the daemon as written too, not as cJSON prints
 * it again (9007199254740992, 1, null). These take the text cJSON has
 * already accepted as JSON and keep it: whitespace between tokens is taken
 * out (a pretty-printed body would break the request line), and a body
 * gets members added or dropped by name without touching the others.
 */

/* The text [p, p+n) without whitespace between tokens (util/json_scan.h,
 * as the daemon compacts a body), in a new buffer; NULL when out of memory
 * or when a raw control byte is left: outside strings the compaction took
 * the whitespace out, so such a byte is inside a string, which no JSON has
 * and which could split the request line. *outlen: its length. */
static char *ctl_json_compact(const char *p, size_t n, size_t *outlen)
{
    char *out = malloc(n + 1);
    size_t k;

    if (out == NULL)
        return NULL;
    k = json_compact(out, p, n);
    for (size_t i = 0; i < k; i++) {
        if ((unsigned char)out[i] < 0x20) {
            free(out);
            return NULL;
        }
    }
    out[k] = '\0';
    *outlen = k;
    return out;
}

/* The end of the compact JSON value that starts at p (before e). */
static const char *json_skip(const char *p, const char *e)
{
    int depth = 0;
    bool in_str = false, esc = false;

    for (; p < e; p++) {
        char ch = *p;
        if (in_str) {
            if (esc)
                esc = false;
            else if (ch == '\\')
                esc = true;
            else if (ch == '"') {
                in_str = false;
                if (depth == 0)
                    return p + 1;
            }
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0)
                return p; /* the end of a scalar before its container's end */
            if (--depth == 0)
                return p + 1;
        } else if (ch == ',' && depth == 0) {
            return p;
        }
    }
    return e;
}

/* One member of a compact JSON object: its name (quotes included) and
 * value, both as written. */
typedef struct jmember {
    const char *name, *name_end, *val, *val_end;
} jmember_t;

/* The next member of the compact object whose text continues at *pos
 * (just after its '{' at first); false after the last. */
static bool jmember_next(const char **pos, const char *e, jmember_t *m)
{
    const char *p = *pos;

    if (p < e && *p == ',')
        p++;
    if (p >= e || *p != '"')
        return false;
    m->name = p;
    m->name_end = json_skip(p, e);
    p = m->name_end;
    if (p >= e || *p != ':')
        return false;
    m->val = p + 1;
    m->val_end = json_skip(m->val, e);
    *pos = m->val_end;
    return true;
}

/* Whether the member's name, as JSON reads it (escapes decoded), is `name`. */
static bool jmember_is(const jmember_t *m, const char *name)
{
    size_t len = (size_t)(m->name_end - m->name);
    cJSON *s;
    bool is;

    if (memchr(m->name, '\\', len) == NULL)
        return len == strlen(name) + 2 && memcmp(m->name + 1, name, len - 2) == 0;
    s = cJSON_ParseWithLength(m->name, len);
    is = cJSON_IsString(s) && strcmp(s->valuestring, name) == 0;
    cJSON_Delete(s);
    return is;
}

/*
 * The compact object text `obj` with the members of `add` (printed by
 * cJSON: avenpingctl's own values) first, then its own members as written,
 * without those named in `drop` (NULL-terminated; with drop_null_only,
 * only those whose value is null). NULL when out of memory.
 */
static char *json_splice(const char *obj, size_t len, const cJSON *add, const char *const *drop,
                         bool drop_null_only)
{
    char *added = add != NULL ? cJSON_PrintUnformatted(add) : NULL;
    size_t alen = added != NULL ? strlen(added) : 0;
    char *out = malloc(len + alen + 3);
    const char *pos = obj + 1, *e = obj + len;
    size_t k = 0;
    jmember_t m;

    if (out == NULL || (add != NULL && added == NULL)) {
        free(out);
        cJSON_free(added);
        return NULL;
    }
    out[k++] = '{';
    if (alen > 2) { /* the members of "{...}" */
        memcpy(out + k, added + 1, alen - 2);
        k += alen - 2;
    }
    cJSON_free(added);
    while (jmember_next(&pos, e, &m)) {
        bool dropped = false;
        for (size_t i = 0; drop != NULL && drop[i] != NULL && !dropped; i++)
            dropped =
                jmember_is(&m, drop[i]) &&
                (!drop_null_only || (m.val_end - m.val == 4 && memcmp(m.val, "null", 4) == 0));
        if (dropped)
            continue;
        if (k > 1)
            out[k++] = ',';
        memcpy(out + k, m.name, (size_t)(m.val_end - m.name));
        k += (size_t)(m.val_end - m.name);
    }
    out[k++] = '}';
    out[k] = '\0';
    return out;
}

/* A cJSON item that prints as `raw` (taken), named as `item`, in its place
 * in `parent`. False when out of memory (`raw` freed). */
static bool json_put_raw(cJSON *parent, cJSON *item, char *raw)
{
    cJSON *r = raw != NULL ? cJSON_CreateRaw(raw) : NULL;

    free(raw);
    if (r == NULL)
        return false;
    if (item->string != NULL && (r->string = strdup(item->string)) == NULL) {
        cJSON_Delete(r);
        return false;
    }
    return cJSON_ReplaceItemViaPointer(parent, item, r) != 0;
}

/* --- send, template --------------------------------------------------- */

/* Adds the optional job fields of the submit options to `req`. */
static int add_job_fields(const opts_t *o, cJSON *req)
{
    const char *v;
    double t;
    long n;

    if ((v = opt_get(o, "campaign")))
        cJSON_AddStringToObject(req, "campaign", v);
    if ((v = opt_get(o, "key")))
        cJSON_AddStringToObject(req, "idempotencyKey", v);
    if ((v = opt_get(o, "order-key")))
        cJSON_AddStringToObject(req, "orderKey", v);
    if ((v = opt_get(o, "priority"))) {
        if (strcmp(v, "high") != 0 && strcmp(v, "normal") != 0 && strcmp(v, "bulk") != 0) {
            usage_err("--priority must be high, normal or bulk");
            return -1;
        }
        cJSON_AddStringToObject(req, "priority", v);
    }
    if (opt_double(o, "not-before", 0, 1e11, 0, &t) != 0)
        return -1;
    if (t > 0)
        cJSON_AddNumberToObject(req, "notBefore", t);
    if (opt_double(o, "expires-at", 0, 1e11, 0, &t) != 0)
        return -1;
    if (t > 0)
        cJSON_AddNumberToObject(req, "expiresAt", t);
    if (opt_long(o, "max-attempts", 1, 1000, 0, &n) != 0)
        return -1;
    if (n > 0)
        cJSON_AddNumberToObject(req, "maxAttempts", (double)n);
    return 0;
}

static int submit_and_print(ctx_t *c, cJSON *req)
{
    cJSON *ans;
    int rc = call(c, req, &ans);

    if (rc != 0)
        return rc;
    if (c->json)
        print_json(ans);
    else
        printf("job %s%s\n", jstr(ans, "job") ? jstr(ans, "job") : "?",
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ans, "duplicate"))
                   ? " (duplicate: already submitted with this key)"
                   : "");
    cJSON_Delete(ans);
    return 0;
}

static int cmd_send(ctx_t *c, const opts_t *o)
{
    const char *from = opt_get(o, "from"), *to = opt_get(o, "to"), *text = opt_get(o, "text");
    const char *type = opt_get(o, "type"), *raw = opt_get(o, "message");
    cJSON *req, *msg;

    if (type == NULL)
        type = "text";
    /* The send types of the protocol: another is the caller's mistake. */
    if (strcmp(type, "text") != 0 && strcmp(type, "media") != 0 && strcmp(type, "location") != 0 &&
        strcmp(type, "interactive") != 0 && strcmp(type, "smart") != 0) {
        usage_err("--type must be one of text, media, location, interactive, smart");
        return EXIT_USAGE;
    }
    if (raw != NULL) {
        const char *drop[4];
        size_t nd = 0;
        cJSON *add;
        char *compact, *body;
        size_t clen;
        msg = cJSON_ParseWithOpts(raw, NULL, true); /* nothing after it */
        compact = cJSON_IsObject(msg) ? ctl_json_compact(raw, strlen(raw), &clen) : NULL;
        cJSON_Delete(msg);
        if (compact == NULL) {
            usage_err("--message must be a JSON object");
            return EXIT_USAGE;
        }
        /* Sent as written (the daemon sends it on so); --from, --to and
         * --text replace those fields of it (added beside them, a field
         * appeared twice and the daemon refused the request). */
        add = cJSON_CreateObject();
        if (from) {
            cJSON_AddStringToObject(add, "phoneNumberId", from);
            drop[nd++] = "phoneNumberId";
        }
        if (to) {
            cJSON_AddStringToObject(add, "to", to);
            drop[nd++] = "to";
        }
        if (text) {
            cJSON_AddStringToObject(add, "text", text);
            drop[nd++] = "text";
        }
        drop[nd] = NULL;
        body = json_splice(compact, clen, add, drop, false);
        cJSON_Delete(add);
        free(compact);
        msg = body != NULL ? cJSON_CreateRaw(body) : NULL;
        free(body);
        if (msg == NULL) {
            fputs("avenpingctl: out of memory\n", stderr);
            return EXIT_FAIL;
        }
    } else {
        if (from == NULL || to == NULL || (strcmp(type, "text") == 0 && text == NULL)) {
            usage_err("send needs --from, --to and --text (or --message JSON)");
            return EXIT_USAGE;
        }
        msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "phoneNumberId", from);
        cJSON_AddStringToObject(msg, "to", to);
        if (text)
            cJSON_AddStringToObject(msg, "text", text);
    }
    req = request("send");
    cJSON_AddStringToObject(req, "type", type);
    cJSON_AddItemToObject(req, "message", msg);
    if (add_job_fields(o, req) != 0) {
        cJSON_Delete(req);
        return EXIT_USAGE;
    }
    return submit_and_print(c, req);
}

/* {"type":"body","parameters":[{"type":"text","text":v}...]} */
static cJSON *body_component(const char *const *params, size_t n)
{
    cJSON *comp = cJSON_CreateObject(), *arr;

    cJSON_AddStringToObject(comp, "type", "body");
    arr = cJSON_AddArrayToObject(comp, "parameters");
    for (size_t i = 0; i < n; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "text");
        cJSON_AddStringToObject(p, "text", params[i]);
        cJSON_AddItemToArray(arr, p);
    }
    return comp;
}

static int cmd_template(ctx_t *c, const opts_t *o)
{
    const char *from = opt_get(o, "from"), *to = opt_get(o, "to"), *name = opt_get(o, "name");
    const char *lang = opt_get(o, "language"), *comps = opt_get(o, "components");
    const char *params[MAX_OPTS];
    size_t np = 0;
    cJSON *req, *msg;

    if (from == NULL || to == NULL || name == NULL) {
        usage_err("template needs --from, --to and --name");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->name[i], "param") == 0)
            params[np++] = o->value[i];
    msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "phoneNumberId", from);
    cJSON_AddStringToObject(msg, "to", to);
    cJSON_AddStringToObject(msg, "templateName", name);
    cJSON_AddStringToObject(msg, "language", lang ? lang : "en_US");
    if (comps != NULL) {
        cJSON *arr = cJSON_ParseWithOpts(comps, NULL, true);
        size_t clen;
        /* Sent as written, as the daemon sends the body on. */
        char *compact =
            cJSON_IsArray(arr) && np == 0 ? ctl_json_compact(comps, strlen(comps), &clen) : NULL;
        cJSON_Delete(arr);
        if (compact == NULL) {
            cJSON_Delete(msg);
            usage_err("--components must be a JSON array (and excludes --param)");
            return EXIT_USAGE;
        }
        arr = cJSON_CreateRaw(compact);
        free(compact);
        if (arr == NULL) {
            cJSON_Delete(msg);
            fputs("avenpingctl: out of memory\n", stderr);
            return EXIT_FAIL;
        }
        cJSON_AddItemToObject(msg, "components", arr);
    } else if (np > 0) {
        cJSON *arr = cJSON_AddArrayToObject(msg, "components");
        cJSON_AddItemToArray(arr, body_component(params, np));
    }
    req = request("template_send");
    cJSON_AddItemToObject(req, "message", msg);
    if (add_job_fields(o, req) != 0) {
        cJSON_Delete(req);
        return EXIT_USAGE;
    }
    return submit_and_print(c, req);
}

/* --- import ----------------------------------------------------------- */

/* FNV-1a, 64 bits: short stable names for over-long campaign names. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* What a reader error means for the person who wrote the file. */
static const char *csv_problem(int rc)
{
    if (rc == -EINVAL)
        return "malformed CSV (an unterminated or stray quote, or a broken byte order mark)";
    if (rc == -E2BIG)
        return "a field over 1 MiB or more than 1024 fields in a row";
    return strerror(-rc);
}

/*
 * The idempotency key of one row: "<campaign>:<suffix>", where the suffix
 * is the --key-column value or the row's content hash (row_content_key).
 * Keys are at most 200 bytes: a part that does not fit is replaced by its
 * 64-bit hash.
 */
static void row_key(const char *campaign, const char *suffix, char *out, size_t n)
{
    char ch[24], sh[24];
    const char *cp = campaign, *sp = suffix;

    if (strlen(campaign) + 1 + strlen(suffix) > KEY_MAX) {
        snprintf(ch, sizeof(ch), "h%016llx", (unsigned long long)fnv1a(campaign));
        cp = ch;
        if (strlen(cp) + 1 + strlen(suffix) > KEY_MAX) {
            snprintf(sh, sizeof(sh), "h%016llx", (unsigned long long)fnv1a(suffix));
            sp = sh;
        }
    }
    snprintf(out, n, "%s:%s", cp, sp);
}

/*
 * The idempotency keys an import has used, so that a key given twice in
 * one file (a --key-column value that repeats, or one idempotencyKey on two
 * JSON Lines) is named instead of being answered as a silent duplicate.
 * Keys are kept as 64-bit hashes with the row that first used them (16
 * bytes per row); two different keys of one file share a hash with a
 * probability of about n^2 / 2^65 (3e-8 for a million rows).
 */
typedef struct keyset {
    struct keyslot {
        uint64_t h; /* 0: empty (hashes of 0 are stored as 1) */
        size_t row;
    } * slot;
    size_t cap, n;
} keyset_t;

/* The slot of hash `h`, taken for it if new (*fresh set then, the slot's
 * row 0). NULL: out of memory. */
static struct keyslot *keyset_find(keyset_t *ks, uint64_t h, bool *fresh)
{
    size_t i;

    if (h == 0)
        h = 1;
    if ((ks->n + 1) * 4 > ks->cap * 3) { /* load <= 3/4, power-of-two size */
        size_t cap = ks->cap ? ks->cap * 2 : 1024;
        struct keyslot *ns = calloc(cap, sizeof(*ns));
        if (ns == NULL)
            return NULL;
        for (size_t k = 0; k < ks->cap; k++) {
            if (ks->slot[k].h == 0)
                continue;
            for (i = ks->slot[k].h & (cap - 1); ns[i].h != 0; i = (i + 1) & (cap - 1))
                ;
            ns[i] = ks->slot[k];
        }
        free(ks->slot);
        ks->slot = ns;
        ks->cap = cap;
    }
    for (i = h & (ks->cap - 1); ks->slot[i].h != 0; i = (i + 1) & (ks->cap - 1)) {
        if (ks->slot[i].h == h) {
            *fresh = false;
            return &ks->slot[i];
        }
    }
    ks->slot[i] = (struct keyslot){.h = h, .row = 0};
    ks->n++;
    *fresh = true;
    return &ks->slot[i];
}

/* Records `key` for `row`. Returns 0 if new, 1 if an earlier row used it
 * (*first: that row), -ENOMEM. */
static int keyset_add(keyset_t *ks, const char *key, size_t row, size_t *first)
{
    bool fresh;
    struct keyslot *k = keyset_find(ks, fnv1a(key), &fresh);

    if (k == NULL)
        return -ENOMEM;
    if (!fresh) {
        *first = k->row;
        return 1;
    }
    k->row = row;
    return 0;
}

/*
 * FNV-1a, 128 bits, over a row's content: the derived idempotency key of a
 * row (row_content_key). 128 bits, because two different rows of one
 * campaign that shared a key would drop the second as a duplicate: for a
 * million rows the chance is about 2^-88.
 */
typedef struct {
    unsigned __int128 h;
} rowhash_t;

static void rowhash_init(rowhash_t *r)
{
    r->h = ((unsigned __int128)0x6c62272e07bb0142ULL << 64) | 0x62b821756295c58dULL;
}

static void rowhash_add(rowhash_t *r, const void *p, size_t n)
{
    const unsigned __int128 prime = ((unsigned __int128)1 << 88) | 0x13b;
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++) {
        r->h ^= b[i];
        r->h *= prime;
    }
}

typedef struct import_src {
    bool jsonl;
    FILE *f;
    csv_reader_t *csv;
    /* CSV mapping */
    char **header;
    size_t n_header;
    int col_to, col_from, col_text, col_key;
    int col_params[64];
    size_t n_params;
    const char *from;     /* fixed sender */
    const char *text_tpl; /* --text with {column} placeholders */
    const char *tpl_name, *language, *priority;
    const char *campaign;
    /* JSON Lines */
    char *line;
    size_t line_cap;
    size_t lineno;
    /* CSV: the line of the file the current row starts on (a quoted field
     * may hold line ends, and the header and blank lines take lines but no
     * row number); 0 for JSON Lines, whose row number is its line. */
    size_t row_line;
    size_t other_campaign; /* rows naming a campaign other than the import's */
    char *compact;         /* the current line, compact (ctl_json_compact) */
    size_t compact_len;
    /* Derived keys: how often each row content came so far (by the low 64
     * bits of its hash; the row's slot .row is the count). */
    keyset_t seen;
    bool key_derived; /* the last request's key is row_content_key's */
} import_src_t;

/*
 * The derived idempotency key of a row: "<campaign>:<hash of the row's
 * content>", and "-<n>" after it for the n-th row of the file with the
 * same content (n >= 2), so that a file's rows that are alike are all
 * sent. A key made of the content, not the row's place: another file
 * imported into the same campaign gets keys of its own (row numbers
 * matched the first file's rows, which dropped the second file's rows as
 * duplicates), and a row added, deleted or moved does not change the keys
 * of the others (which sent them all again). Returns 0 or -ENOMEM.
 */
static int row_content_key(import_src_t *s, const rowhash_t *r, char *key, size_t n)
{
    char suffix[64];
    bool fresh;
    struct keyslot *k = keyset_find(&s->seen, (uint64_t)r->h, &fresh);
    int len;

    if (k == NULL)
        return -ENOMEM;
    k->row++;
    len = snprintf(suffix, sizeof(suffix), "%016llx%016llx", (unsigned long long)(r->h >> 64),
                   (unsigned long long)r->h);
    if (k->row > 1)
        snprintf(suffix + len, sizeof(suffix) - (size_t)len, "-%zu", k->row);
    row_key(s->campaign, suffix, key, n);
    s->key_derived = true;
    return 0;
}

/* Whether header cell `h` names `name` but for case and the blanks around
 * it ("To", " phoneNumberId" after "to, "). */
static bool col_loose_eq(const char *h, const char *name)
{
    size_t n = strlen(name);

    h += strspn(h, " \t");
    if (strncasecmp(h, name, n) != 0)
        return false;
    return h[n + strspn(h + n, " \t")] == '\0';
}

/* The column called `name` in the header: the exact name, else the first
 * equal to it but for case and surrounding blanks (spreadsheets write
 * "To", hand-written files "to, text"); -1 when none. */
static int col_index(const import_src_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_header; i++)
        if (strcmp(s->header[i], name) == 0)
            return (int)i;
    for (size_t i = 0; i < s->n_header; i++)
        if (col_loose_eq(s->header[i], name))
            return (int)i;
    return -1;
}

/* Checks the {column} placeholders of the --text template. */
static int text_tpl_check(const import_src_t *s)
{
    const char *p = s->text_tpl;

    while ((p = strchr(p, '{')) != NULL) {
        const char *e = strchr(p, '}');
        char name[256];
        if (e == NULL || (size_t)(e - p - 1) >= sizeof(name)) {
            usage_err("--text: unclosed or over-long {column}");
            return -1;
        }
        memcpy(name, p + 1, (size_t)(e - p - 1));
        name[e - p - 1] = '\0';
        if (col_index(s, name) < 0) {
            usage_err("--text: no column named \"%s\" in the header", name);
            return -1;
        }
        p = e + 1;
    }
    return 0;
}

/* The --text template with each {column} replaced by the row's value. */
static char *text_expand(const import_src_t *s, char **row, size_t n)
{
    size_t cap = strlen(s->text_tpl) + 64, len = 0;
    char *out = malloc(cap);
    const char *p = s->text_tpl;

    if (out == NULL)
        return NULL;
    while (*p) {
        const char *add = p;
        size_t alen = 1;
        if (*p == '{' && strchr(p, '}')) {
            const char *e = strchr(p, '}');
            char name[256];
            int ci;
            memcpy(name, p + 1, (size_t)(e - p - 1));
            name[e - p - 1] = '\0';
            ci = col_index(s, name);
            add = ci >= 0 && (size_t)ci < n ? row[ci] : "";
            alen = strlen(add);
            p = e + 1;
        } else {
            p++;
        }
        if (len + alen + 1 > cap) {
            char *no;
            while (len + alen + 1 > cap)
                cap *= 2;
            no = realloc(out, cap);
            if (no == NULL) {
                free(out);
                return NULL;
            }
            out = no;
        }
        memcpy(out + len, add, alen);
        len += alen;
    }
    out[len] = '\0';
    return out;
}

static int import_setup_csv(import_src_t *s, const opts_t *o)
{
    const char *v;
    char **h;
    size_t n;
    int rc;

    if (csv_new(s->f, &s->csv) != 0)
        return EXIT_FAIL;
    /* Blank lines before the header are skipped as between rows (the
     * row count, count_rows, skips them too). */
    while ((rc = csv_next(s->csv, &h, &n)) > 0 && n == 1 && h[0][0] == '\0')
        ;
    if (rc <= 0) {
        if (rc == 0)
            fprintf(stderr, "avenpingctl: import: the file is empty (a header row is required)\n");
        else
            fprintf(stderr, "avenpingctl: import: line %zu (the header): %s\n",
                    csv_line(s->csv) > 0 ? csv_line(s->csv) : 1, csv_problem(rc));
        return EXIT_FAIL;
    }
    s->header = calloc(n, sizeof(char *));
    if (s->header == NULL)
        return EXIT_FAIL;
    for (size_t i = 0; i < n; i++)
        if ((s->header[i] = strdup(h[i])) == NULL)
            return EXIT_FAIL;
    s->n_header = n;
    v = opt_get(o, "to-column");
    s->col_to = col_index(s, v ? v : "to");
    if (s->col_to < 0 && v == NULL)
        s->col_to = col_index(s, "phone");
    if (s->col_to < 0) {
        usage_err("no recipient column \"%s\" in the header (--to-column)", v ? v : "to");
        return EXIT_USAGE;
    }
    s->from = opt_get(o, "from");
    v = opt_get(o, "from-column");
    s->col_from = col_index(s, v ? v : "phoneNumberId");
    if (v != NULL && s->col_from < 0) {
        usage_err("no sender column \"%s\" in the header", v);
        return EXIT_USAGE;
    }
    if (s->from == NULL && s->col_from < 0) {
        usage_err("no sender: give --from ID or --from-column COLUMN");
        return EXIT_USAGE;
    }
    v = opt_get(o, "key-column");
    s->col_key = v ? col_index(s, v) : -1;
    if (v != NULL && s->col_key < 0) {
        usage_err("no key column \"%s\" in the header", v);
        return EXIT_USAGE;
    }
    s->tpl_name = opt_get(o, "template");
    s->language = opt_get(o, "language");
    s->text_tpl = opt_get(o, "text");
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->name[i], "param") != 0)
            continue;
        if (s->n_params == sizeof(s->col_params) / sizeof(s->col_params[0])) {
            usage_err("too many --param");
            return EXIT_USAGE;
        }
        s->col_params[s->n_params] = col_index(s, o->value[i]);
        if (s->col_params[s->n_params] < 0) {
            usage_err("--param: no column \"%s\" in the header", o->value[i]);
            return EXIT_USAGE;
        }
        s->n_params++;
    }
    if (s->tpl_name != NULL && s->text_tpl != NULL) {
        usage_err("--text and --template exclude each other");
        return EXIT_USAGE;
    }
    if (s->tpl_name == NULL && s->n_params > 0) {
        usage_err("--param needs --template");
        return EXIT_USAGE;
    }
    /* A text has no language: with --text or a text column it was
     * dropped without a word (as --param is refused). */
    if (s->tpl_name == NULL && s->language != NULL) {
        usage_err("--language needs --template");
        return EXIT_USAGE;
    }
    s->col_text = -1;
    if (s->tpl_name == NULL && s->text_tpl == NULL) {
        s->col_text = col_index(s, "text");
        if (s->col_text < 0) {
            usage_err("no message: give --text TEXT, --template NAME, or a \"text\" column");
            return EXIT_USAGE;
        }
    }
    if (s->text_tpl != NULL && text_tpl_check(s) != 0)
        return EXIT_USAGE;
    return 0;
}

/*
 * Drops a UTF-8 byte order mark from the start of line 1 of a JSON Lines
 * file, as the CSV reader does for CSV: editors write one, and line 1
 * would not parse with it (or, alone on its line, not be blank). Returns
 * the line's new length.
 */
static size_t jsonl_drop_bom(char *line, size_t n)
{
    if (n < 3 || memcmp(line, "\xEF\xBB\xBF", 3) != 0)
        return n;
    memmove(line, line + 3, n - 3 + 1); /* with the NUL */
    return n - 3;
}

/*
 * Reads the next line of f into *buf (NUL-terminated, without its '\n'),
 * keeping at most `max` bytes: the rest of a longer line is read and
 * dropped, and *too_long set. Returns the bytes kept, or -1 at the end of
 * the file.
 */
static ssize_t read_line_max(FILE *f, char **buf, size_t *cap, size_t max, bool *too_long)
{
    size_t n = 0;
    int ch = EOF;

    *too_long = false;
    while ((ch = getc_unlocked(f)) != EOF && ch != '\n') {
        if (n == max) {
            *too_long = true;
            continue;
        }
        if (*buf == NULL || n + 2 > *cap) {
            size_t ncap = *cap ? *cap * 2 : 4096;
            char *nb = realloc(*buf, ncap);
            if (nb == NULL) {
                *too_long = true; /* treated as too long for the memory there is */
                continue;
            }
            *buf = nb;
            *cap = ncap;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0 && !*too_long)
        return -1;
    if (*buf != NULL)
        (*buf)[n] = '\0';
    return (ssize_t)n;
}

/* A JSON Lines line of nothing but blanks: not a row (as an empty one),
 * neither sent nor failed; it still takes its line number. */
static bool jsonl_blank(const char *line, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (line[i] != ' ' && line[i] != '\t')
            return false;
    return true;
}

/*
 * Puts the "message" members of the line (s->compact) into the request `o`
 * parsed from it as written: the daemon sends `message` on as given, and
 * cJSON printing it again changed its numbers (9007199254740993, 1.0 and
 * 1e400 reached the API as 9007199254740992, 1 and null) and escapes.
 * need_from: the first gets --from as its phoneNumberId (it had none, or
 * null). False when out of memory.
 */
static bool import_raw_messages(import_src_t *s, cJSON *o, bool need_from)
{
    static const char *const pnid[] = {"phoneNumberId", NULL};
    const char *pos = s->compact + 1, *e = s->compact + s->compact_len;
    cJSON *item = o->child;
    jmember_t m;

    while (jmember_next(&pos, e, &m)) {
        char *raw;
        if (!jmember_is(&m, "message"))
            continue;
        while (item != NULL && (item->string == NULL || strcmp(item->string, "message") != 0))
            item = item->next;
        if (item == NULL)
            break;
        if (need_from && *m.val == '{') {
            cJSON *add = cJSON_CreateObject();
            cJSON_AddStringToObject(add, "phoneNumberId", s->from);
            raw = json_splice(m.val, (size_t)(m.val_end - m.val), add, pnid, true);
            cJSON_Delete(add);
        } else {
            raw = strndup(m.val, (size_t)(m.val_end - m.val));
        }
        need_from = false;
        {
            cJSON *next = item->next;
            if (!json_put_raw(o, item, raw))
                return false;
            item = next;
        }
    }
    return true;
}

/*
 * The next request of the import, or NULL at the end. A row that cannot
 * become a request yields *err (a message) and NULL with *eof false.
 * *row gets the row (CSV: data row number; JSON Lines: line number).
 */
static cJSON *import_next(import_src_t *s, size_t *row, bool *eof, char *err, size_t errn)
{
    char key[KEY_MAX + 1];
    cJSON *req, *msg;
    bool need_from;

    *eof = false;
    err[0] = '\0';
    s->key_derived = false;
    if (s->jsonl) {
        ssize_t n;
        cJSON *o;
        const char *end = NULL;
        bool too_long;
        for (;;) {
            /* One byte more than the limit: a '\r' before the '\n' does
             * not count. */
            n = read_line_max(s->f, &s->line, &s->line_cap, LINE_MAX_BYTES + 1, &too_long);
            if (n < 0 && ferror(s->f)) {
                /* Not the end: the rows after it were never read. */
                *row = s->lineno + 1;
                snprintf(err, errn,
                         "%s; this line and the rest of the file were not imported (run the "
                         "same import again: rows already sent are not sent twice)",
                         strerror(errno != 0 ? errno : EIO));
                *eof = true;
                return NULL;
            }
            if (n < 0) {
                *eof = true;
                return NULL;
            }
            if (s->lineno++ == 0)
                n = (ssize_t)jsonl_drop_bom(s->line, (size_t)n);
            while (n > 0 && s->line[n - 1] == '\r')
                s->line[--n] = '\0';
            too_long = too_long || (size_t)n > LINE_MAX_BYTES;
            if (too_long || !jsonl_blank(s->line, (size_t)n))
                break;
        }
        *row = s->lineno;
        if (too_long) {
            snprintf(err, errn, "longer than %zu bytes (the daemon's line limit); not sent",
                     LINE_MAX_BYTES);
            return NULL;
        }
        /* One object and nothing after it but blanks, as the daemon
         * reads a line: parsed up to the first value only, two requests
         * that lost the newline between them went out as the first alone
         * (the line is NUL-terminated at n). */
        o = cJSON_ParseWithLengthOpts(s->line, (size_t)n, &end, false);
        if (cJSON_IsObject(o) && end + strspn(end, " \t\r") != s->line + n) {
            cJSON_Delete(o);
            snprintf(err, errn, "text after the JSON object (two requests on one line?); not sent");
            return NULL;
        }
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            snprintf(err, errn, "not a JSON object");
            return NULL;
        }
        /* The line as written, for its "message" (below). */
        free(s->compact);
        s->compact = ctl_json_compact(s->line, (size_t)(end - s->line), &s->compact_len);
        if (s->compact == NULL) {
            cJSON_Delete(o);
            snprintf(err, errn, "not valid JSON (a control byte inside a string); not sent");
            return NULL;
        }
        /* Only jobs: an import must not cancel, pause or resume anything. */
        {
            const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "op");
            if (!cJSON_IsString(op) || (strcmp(op->valuestring, "send") != 0 &&
                                        strcmp(op->valuestring, "template_send") != 0)) {
                cJSON_Delete(o);
                snprintf(err, errn, "op must be \"send\" or \"template_send\"");
                return NULL;
            }
        }
        cJSON_DeleteItemFromObjectCaseSensitive(o, "id");
        /* A "campaign": null is no campaign given: the import's. */
        if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "campaign")))
            cJSON_DeleteItemFromObjectCaseSensitive(o, "campaign");
        if (!cJSON_HasObjectItem(o, "campaign")) {
            cJSON_AddStringToObject(o, "campaign", s->campaign);
        } else {
            const cJSON *own = cJSON_GetObjectItemCaseSensitive(o, "campaign");
            /* Its job counts in that campaign, not in the import's: the
             * summary says how many did (a wrong type is the daemon's to
             * refuse). */
            if (cJSON_IsString(own) && strcmp(own->valuestring, s->campaign) != 0)
                s->other_campaign++;
        }
        /* Nor is an "idempotencyKey": null (the daemon stores no key for
         * it): the row's own is derived, so a re-run sends nothing twice. */
        if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "idempotencyKey")))
            cJSON_DeleteItemFromObjectCaseSensitive(o, "idempotencyKey");
        if (!cJSON_HasObjectItem(o, "idempotencyKey")) {
            rowhash_t rh;
            rowhash_init(&rh);
            rowhash_add(&rh, s->compact, s->compact_len);
            if (row_content_key(s, &rh, key, sizeof(key)) != 0) {
                cJSON_Delete(o);
                snprintf(err, errn, "out of memory; not sent");
                return NULL;
            }
            cJSON_AddStringToObject(o, "idempotencyKey", key);
        }
        /* --priority and --from are the import's defaults: a line's own
         * fields win (a "message" that is no object is the daemon's to
         * refuse). */
        if (s->priority != NULL && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "priority")))
            cJSON_DeleteItemFromObjectCaseSensitive(o, "priority");
        if (s->priority != NULL && !cJSON_HasObjectItem(o, "priority"))
            cJSON_AddStringToObject(o, "priority", s->priority);
        msg = cJSON_GetObjectItemCaseSensitive(o, "message");
        /* A null is no value given here too (the daemon reads it so). */
        need_from = s->from != NULL && cJSON_IsObject(msg) &&
                    (!cJSON_HasObjectItem(msg, "phoneNumberId") ||
                     cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(msg, "phoneNumberId")));
        if (!import_raw_messages(s, o, need_from)) {
            cJSON_Delete(o);
            snprintf(err, errn, "out of memory; not sent");
            return NULL;
        }
        return o;
    } else {
        char **f;
        size_t n;
        int rc;
        const char *from, *to;

        /* Blank lines are not rows: they neither fail nor take a row
         * number (which the idempotency keys are made of). */
        while ((rc = csv_next(s->csv, &f, &n)) > 0 && n == 1 && f[0][0] == '\0')
            ;
        if (rc == 0) {
            *eof = true;
            return NULL;
        }
        s->row_line = csv_line(s->csv);
        if (rc == -E2BIG) {
            /* Read to its end: a row (it takes its number) that is refused,
             * and the rows after it go on. */
            *row = ++s->lineno;
            snprintf(err, errn, "%s; not sent", csv_problem(rc));
            return NULL;
        }
        if (rc < 0) {
            *row = s->lineno + 1;
            snprintf(err, errn,
                     "%s; this row and the rest of the file were not imported (fix the file "
                     "and run the same import again: rows already sent are not sent twice)",
                     csv_problem(rc));
            *eof = true; /* the reader cannot resynchronise */
            return NULL;
        }
        s->lineno++;
        *row = s->lineno;
        /* A field count unlike the header's shifts the columns (an
         * unquoted comma in a text, most often): the row would go out with
         * its values in the wrong fields. */
        if (n != s->n_header) {
            snprintf(err, errn,
                     "%zu fields where the header has %zu (quote fields that hold commas); "
                     "not sent",
                     n, s->n_header);
            return NULL;
        }
        to = f[s->col_to];
        from = s->col_from >= 0 && (size_t)s->col_from < n && f[s->col_from][0] ? f[s->col_from]
                                                                                : s->from;
        if (from == NULL || *from == '\0' || *to == '\0') {
            snprintf(err, errn, "missing %s", *to == '\0' ? "recipient" : "sender");
            return NULL;
        }
        /* With --key-column the key is the cell: an empty one has none, and
         * a key of the other kind in its place would mix two schemes in one
         * campaign (a re-run without --key-column would send it again). */
        if (s->col_key >= 0 && ((size_t)s->col_key >= n || f[s->col_key][0] == '\0')) {
            snprintf(err, errn, "empty key column (--key-column); not sent");
            return NULL;
        }
        msg = cJSON_CreateObject();
        cJSON_AddStringToObject(msg, "phoneNumberId", from);
        cJSON_AddStringToObject(msg, "to", to);
        if (s->tpl_name != NULL) {
            const char *params[64];
            req = request("template_send");
            cJSON_AddStringToObject(msg, "templateName", s->tpl_name);
            cJSON_AddStringToObject(msg, "language", s->language ? s->language : "en_US");
            for (size_t i = 0; i < s->n_params; i++)
                params[i] = (size_t)s->col_params[i] < n ? f[s->col_params[i]] : "";
            if (s->n_params > 0) {
                cJSON *arr = cJSON_AddArrayToObject(msg, "components");
                cJSON_AddItemToArray(arr, body_component(params, s->n_params));
            }
        } else {
            req = request("send");
            cJSON_AddStringToObject(req, "type", "text");
            if (s->text_tpl != NULL) {
                char *t = text_expand(s, f, n);
                cJSON_AddStringToObject(msg, "text", t ? t : "");
                free(t);
            } else {
                cJSON_AddStringToObject(msg, "text", (size_t)s->col_text < n ? f[s->col_text] : "");
            }
        }
        cJSON_AddItemToObject(req, "message", msg);
        cJSON_AddStringToObject(req, "campaign", s->campaign);
        if (s->col_key >= 0) {
            row_key(s->campaign, f[s->col_key], key, sizeof(key));
        } else {
            rowhash_t rh;
            rowhash_init(&rh);
            for (size_t i = 0; i < n; i++) {
                /* Each field's length first: ("a,", "b") and ("a", ",b")
                 * are different rows. */
                uint64_t fl = strlen(f[i]);
                rowhash_add(&rh, &fl, sizeof(fl));
                rowhash_add(&rh, f[i], (size_t)fl);
            }
            if (row_content_key(s, &rh, key, sizeof(key)) != 0) {
                cJSON_Delete(req);
                snprintf(err, errn, "out of memory; not sent");
                return NULL;
            }
        }
        cJSON_AddStringToObject(req, "idempotencyKey", key);
        if (s->priority)
            cJSON_AddStringToObject(req, "priority", s->priority);
        return req;
    }
}

/* Rows in the file (one pass of the same reader), or 0 if unknown. */
static size_t count_rows(const char *path, bool jsonl)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f == NULL)
        return 0;
    if (jsonl) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        bool too_long, first = true;
        while ((len = read_line_max(f, &line, &cap, LINE_MAX_BYTES + 1, &too_long)) >= 0) {
            if (first)
                len = (ssize_t)jsonl_drop_bom(line, (size_t)len);
            first = false;
            while (len > 0 && line[len - 1] == '\r')
                len--;
            /* Lines of blanks are not rows (import_next skips them). */
            if (too_long || !jsonl_blank(line, (size_t)len))
                n++;
        }
        free(line);
    } else {
        csv_reader_t *r;
        char **fl;
        size_t nf;
        if (csv_new(f, &r) == 0) {
            while (csv_next(r, &fl, &nf) > 0)
                if (!(nf == 1 && fl[0][0] == '\0'))
                    n++;
            csv_free(r);
        }
        if (n > 0)
            n--; /* the header */
    }
    fclose(f);
    return n;
}

/* path ends in suffix, in any case. */
static bool ends_with_ci(const char *path, const char *suffix)
{
    size_t l = strlen(path), k = strlen(suffix);

    return l > k && strcasecmp(path + l - k, suffix) == 0;
}

/*
 * The format an import's file name says, in any case: 1 JSON Lines
 * (.jsonl, .ndjson, .json), 0 CSV (.csv), -1 none (stdin, other names):
 * the content decides then (import_sniff).
 */
static int format_of_name(const char *path)
{
    if (ends_with_ci(path, ".jsonl") || ends_with_ci(path, ".ndjson") ||
        ends_with_ci(path, ".json"))
        return 1;
    if (ends_with_ci(path, ".csv"))
        return 0;
    return -1;
}

/*
 * The input of an import whose format was sniffed: the bytes the sniff
 * read, then the rest of the file. The file may be a pipe (stdin, a
 * shell's <(...)), which cannot seek back: the sniff reads with read(2)
 * into `buf`, past the FILE's own buffer, and the stream made of this
 * (fopencookie) gives those bytes first, then reads the same descriptor
 * on: as much as one read(2) gives, as stdio does for a plain stream
 * (fread would wait on a pipe for a full buffer).
 */
typedef struct replay {
    char *buf;
    size_t len, off;
    FILE *src; /* the file opened; closed with the stream, unless stdin */
    /* The input ended: read(2) is not asked again. On a terminal each
     * read after an end waits for another Ctrl-D (an empty import needed
     * two: one for the sniff, one for the reader). */
    bool eof;
} replay_t;

static ssize_t replay_read(void *cookie, char *out, size_t size)
{
    replay_t *r = cookie;
    ssize_t n;

    if (r->off < r->len) {
        size_t k = r->len - r->off < size ? r->len - r->off : size;
        memcpy(out, r->buf + r->off, k);
        r->off += k;
        return (ssize_t)k;
    }
    if (r->eof)
        return 0;
    while ((n = read(fileno(r->src), out, size)) < 0 && errno == EINTR)
        ;
    r->eof = n == 0;
    return n;
}

static int replay_close(void *cookie)
{
    replay_t *r = cookie;
    int rc = r->src != stdin ? fclose(r->src) : 0;

    free(r->buf);
    free(r);
    return rc;
}

/*
 * Decides the format of an import whose name does not (format_of_name):
 * JSON Lines if the first byte after an optional UTF-8 byte order mark and
 * any whitespace (blank lines too) is '{', CSV otherwise (an empty input
 * too: the CSV reader then says the header is missing; so does input with
 * nothing but whitespace in its first SNIFF_MAX_BYTES, which bounds the
 * memory the sniff holds).
 *
 * *f must not have been read from (its buffer is bypassed). On success *f
 * is replaced by a stream that gives every byte of the input, those read
 * here included (replay_t), and closes the old *f unless it is stdin.
 * Returns 0 with *jsonl set, or a negative errno with *f unchanged.
 */
static int import_sniff(FILE **f, bool *jsonl)
{
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    replay_t *r = calloc(1, sizeof(*r));
    size_t i = 0; /* bytes of buf looked at */
    bool bom_known = false, eof = false;
    FILE *nf;
    int rc;

    if (r == NULL || (r->buf = malloc(SNIFF_MAX_BYTES)) == NULL) {
        free(r);
        return -ENOMEM;
    }
    r->src = *f;
    for (;;) {
        const unsigned char *b = (const unsigned char *)r->buf;
        ssize_t n;
        /* Whether the input starts with a byte order mark is known once
         * its first 3 bytes are, or one of them differs from the mark's. */
        if (!bom_known) {
            size_t k = 0;
            while (k < r->len && k < 3 && b[k] == bom[k])
                k++;
            if (k == 3 || k < r->len || eof) {
                i = k == 3 ? 3 : 0;
                bom_known = true;
            }
        }
        if (bom_known) {
            while (i < r->len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'))
                i++;
            if (i < r->len) {
                *jsonl = b[i] == '{';
                break;
            }
        }
        if (eof || r->len == SNIFF_MAX_BYTES) {
            *jsonl = false;
            break;
        }
        n = read(fileno(*f), r->buf + r->len, SNIFF_MAX_BYTES - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            free(r->buf);
            free(r);
            return rc;
        }
        eof = n == 0;
        r->len += (size_t)n;
    }
    r->eof = eof;
    nf = fopencookie(r, "r", (cookie_io_functions_t){.read = replay_read, .close = replay_close});
    if (nf == NULL) {
        rc = -errno;
        free(r->buf);
        free(r);
        return rc;
    }
    *f = nf;
    return 0;
}

typedef struct progress {
    bool tty, quiet;
    bool drawn; /* a bar is on the terminal's line, without a line end */
    size_t total, done;
    double t0, last;
} progress_t;

/* Erases the bar before a row's message, which would otherwise be written
 * on the bar's line, after it; the next progress_show draws it again. */
static void progress_clear(progress_t *p)
{
    if (!p->drawn)
        return;
    fputs("\r\033[K", stderr);
    p->drawn = false;
}

static void progress_show(progress_t *p, bool final)
{
    double t = now_mono(), el = t - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    char eta[32];

    if (p->quiet || (!final && t - p->last < (p->tty ? 0.1 : 2.0)))
        return;
    if (p->total && p->done > p->total)
        p->total = p->done; /* the file grew since it was counted */
    p->last = t;
    fmt_duration(p->total > p->done ? (rate > 0 ? (double)(p->total - p->done) / rate : NAN) : 0,
                 eta, sizeof(eta));
    if (p->tty) {
        char bar[31];
        int w = 30, fill = p->total ? (int)((double)w * (double)p->done / (double)p->total) : 0;
        for (int i = 0; i < w; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[w] = '\0';
        if (p->total)
            fprintf(stderr, "\r[%s] %zu/%zu %3.0f%% %7.0f rows/s ETA %s ", bar, p->done, p->total,
                    100.0 * (double)p->done / (double)p->total, rate, eta);
        else
            fprintf(stderr, "\r%zu rows %7.0f rows/s ", p->done, rate);
        if (final)
            fputc('\n', stderr);
        p->drawn = !final;
    } else if (p->total) {
        fprintf(stderr, "progress: %zu/%zu rows (%.0f%%) %.0f rows/s ETA %s\n", p->done, p->total,
                100.0 * (double)p->done / (double)p->total, rate, eta);
    } else {
        fprintf(stderr, "progress: %zu rows %.0f rows/s\n", p->done, rate);
    }
    fflush(stderr);
}

/*
 * After an import that met duplicates: when the campaign holds cancelled
 * jobs, says that their rows stay cancelled. A re-import after a cancel
 * reported them as plain duplicates, and nothing said that they would
 * never be sent (campaign audit). Best effort: a failed query says nothing.
 */
static void import_note_cancelled(ctx_t *c, const char *campaign)
{
    cJSON *req = request("campaign"), *ans = NULL;
    const cJSON *counts;
    double n;

    cJSON_AddStringToObject(req, "campaign", campaign);
    if (ipc_client_call(c->cl, req, c->timeout_ms, &ans) == 0 && answer_ok(ans)) {
        counts = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ans, "campaign"),
                                                  "counts");
        n = jnum(counts, "cancelled");
        if (n > 0)
            fprintf(stderr,
                    "avenpingctl: note: campaign %s holds %.0f cancelled jobs; rows that were "
                    "cancelled are duplicates now and are not sent again (import under another "
                    "campaign name, or with --key-column, to send them)\n",
                    campaign, n);
    }
    cJSON_Delete(req);
    cJSON_Delete(ans);
}

/* JSON Lines: a line is a whole request, so the options that say where a
 * CSV row's fields are have nothing to act on and are refused rather than
 * ignored; --from (the message's phoneNumberId) and --priority fill in
 * what a line leaves out. Returns 0 or EXIT_USAGE (said). */
static int import_setup_jsonl(import_src_t *s, const opts_t *o)
{
    static const char *const csv_only[] = {"from-column", "to-column", "text",      "template",
                                           "language",    "param",     "key-column"};

    for (size_t i = 0; i < sizeof(csv_only) / sizeof(csv_only[0]); i++) {
        if (opt_has(o, csv_only[i])) {
            usage_err("--%s is for CSV imports; a JSON Lines line is a whole request with its "
                      "own fields",
                      csv_only[i]);
            return EXIT_USAGE;
        }
    }
    s->from = opt_get(o, "from");
    return 0;
}

/* Refused rows listed in the --json summary of an import, at most: the
 * count is in "failed", the rest on stderr as always. */
#define IMPORT_ROWS_LISTED 100

/* Where a row of an import is: its number, and for CSV the line of the
 * file it starts on (0 for JSON Lines, whose row number is its line). */
typedef struct row_at {
    size_t row, line;
} row_at_t;

static row_at_t row_at(const import_src_t *s, size_t row)
{
    return (row_at_t){.row = row, .line = s->jsonl ? 0 : s->row_line};
}

/*
 * A row the import did not get a job for: the line on stderr ("row 7:
 * line 9: CODE: message" for CSV, "line 7: CODE: message" for JSON Lines,
 * the progress bar erased first), and, with --json, an entry {"row",
 * "line" (CSV), "error" (the daemon's code, absent for the client's own
 * refusals), "message"} in `listed` while it has fewer than
 * IMPORT_ROWS_LISTED. `listed` may be NULL. The line as well as the row:
 * the header and blank lines take lines but no row number, and a quoted
 * field may hold line ends, so a CSV row's number alone (row 7 is line 8
 * or later) sent a reader with an editor or sed to the wrong row.
 */
static void __attribute__((format(printf, 5, 6)))
row_refused(progress_t *pr, cJSON *listed, row_at_t at, const char *code, const char *fmt, ...)
{
    char where[64], msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    progress_clear(pr);
    if (at.line > 0)
        snprintf(where, sizeof(where), "row %zu: line %zu", at.row, at.line);
    else
        snprintf(where, sizeof(where), "line %zu", at.row);
    if (code != NULL)
        fprintf(stderr, "%s: %s: %s\n", where, code, msg);
    else
        fprintf(stderr, "%s: %s\n", where, msg);
    if (listed != NULL && cJSON_GetArraySize(listed) < IMPORT_ROWS_LISTED) {
        cJSON *e = cJSON_CreateObject();
        if (e == NULL)
            return;
        cJSON_AddNumberToObject(e, "row", (double)at.row);
        if (at.line > 0)
            cJSON_AddNumberToObject(e, "line", (double)at.line);
        if (code != NULL)
            cJSON_AddStringToObject(e, "error", code);
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddItemToArray(listed, e);
    }
}

static int cmd_import(ctx_t *c, const opts_t *o)
{
    const char *path = o->pos[0], *fmt = opt_get(o, "format");
    import_src_t s;
    keyset_t keys = {0};
    progress_t pr;
    row_at_t *ring = NULL; /* the rows of the requests awaiting answers */
    size_t head = 0, out = 0, created = 0, dups = 0, failed = 0, row = 0;
    cJSON *listed = NULL; /* --json: the first refused rows (row_refused) */
    size_t stopped = 0;   /* SHUTTING_DOWN answers: the daemon stops, no more rows */
    /* QUEUE_FULL answers: no more rows either (each refused row was printed,
     * a million of them for a full queue, and the rest sent in vain) */
    size_t full = 0;
    long window;
    bool eof = false, broken = false, write_failed = false;
    bool from_stdin = strcmp(path, "-") == 0, regular, have_st;
    struct stat st;
    int format; /* 1 JSON Lines, 0 CSV, -1 not known yet */
    int wrc = 0;
    char err[512];
    int rc = 0;

    memset(&s, 0, sizeof(s));
    memset(&pr, 0, sizeof(pr));
    s.campaign = opt_get(o, "campaign");
    if (s.campaign == NULL || *s.campaign == '\0' || strlen(s.campaign) > KEY_MAX) {
        usage_err("import needs --campaign NAME (1 to %d bytes)", KEY_MAX);
        return EXIT_USAGE;
    }
    /* The daemon reads up to 4,096 requests of a connection ahead of its
     * answers; a window near that keeps its group commits full. */
    if (opt_long(o, "window", 1, 4000, 4000, &window) != 0)
        return EXIT_USAGE;
    s.priority = opt_get(o, "priority");
    if (s.priority != NULL && strcmp(s.priority, "high") != 0 &&
        strcmp(s.priority, "normal") != 0 && strcmp(s.priority, "bulk") != 0) {
        usage_err("--priority must be high, normal or bulk");
        return EXIT_USAGE;
    }
    /* --format, else the name, else the content (import_sniff). */
    if (fmt != NULL && strcmp(fmt, "jsonl") != 0 && strcmp(fmt, "csv") != 0) {
        usage_err("--format must be csv or jsonl");
        return EXIT_USAGE;
    }
    format = fmt != NULL ? strcmp(fmt, "jsonl") == 0 : from_stdin ? -1 : format_of_name(path);
    s.f = from_stdin ? stdin : fopen(path, "r");
    if (s.f == NULL) {
        fprintf(stderr, "avenpingctl: %s: %s\n", path, strerror(errno));
        return EXIT_FAIL;
    }
    /* Only a regular file is counted ahead (count_rows opens it again):
     * another read of a pipe named by a path (/dev/fd/N) would take the
     * rows from the import. */
    have_st = !from_stdin && fstat(fileno(s.f), &st) == 0;
    regular = have_st && S_ISREG(st.st_mode);
    /* fopen opens a directory for reading; its first read fails with
     * EISDIR, which the CSV reader reported as "Input/output error" on
     * the header and JSON Lines as a refused line 1. Said before
     * anything, as for a file that does not exist. */
    if (have_st && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "avenpingctl: %s: %s\n", path, strerror(EISDIR));
        rc = EXIT_FAIL;
        goto out;
    }
    if (format >= 0) {
        s.jsonl = format == 1;
    } else if ((rc = import_sniff(&s.f, &s.jsonl)) != 0) {
        fprintf(stderr, "avenpingctl: %s: %s\n", from_stdin ? "stdin" : path, strerror(-rc));
        rc = EXIT_FAIL;
        goto out;
    }
    if (!s.jsonl && (rc = import_setup_csv(&s, o)) != 0)
        goto out;
    if (s.jsonl && (rc = import_setup_jsonl(&s, o)) != 0)
        goto out;
    if (connect_daemon(c) != 0) {
        rc = EXIT_FAIL;
        goto out;
    }
    ring = calloc((size_t)window, sizeof(*ring));
    if (ring == NULL || (c->json && (listed = cJSON_CreateArray()) == NULL)) {
        rc = EXIT_FAIL;
        goto out;
    }
    pr.tty = isatty(STDERR_FILENO) && !c->json;
    pr.quiet = opt_has(o, "quiet");
    pr.total = regular ? count_rows(path, s.jsonl) : 0;
    pr.t0 = pr.last = now_mono();

    /* Pipelined: up to `window` requests outstanding; answers come back in
     * order, so a ring of row numbers says which row each answer is for.
     * The window is refilled once half of it is answered, not after each
     * answer: one write then carries many requests (one per answer cost a
     * send(2) and a poll(2) per row, most of the import's time). */
    while (!broken && (out > 0 || (!eof && stopped == 0 && full == 0 && !write_failed))) {
        bool refill = out <= (size_t)window / 2 && stopped == 0 && full == 0 && !write_failed;
        while (refill && !eof && out < (size_t)window) {
            cJSON *req = import_next(&s, &row, &eof, err, sizeof(err));
            if (req == NULL) {
                if (err[0] != '\0') {
                    failed++;
                    pr.done++;
                    row_refused(&pr, listed, row_at(&s, row), NULL, "%s", err);
                }
                continue;
            }
            {
                const cJSON *k = cJSON_GetObjectItemCaseSensitive(req, "idempotencyKey");
                size_t first = 0;
                /* Derived keys differ by construction (row_content_key). */
                int r = cJSON_IsString(k) && !s.key_derived
                            ? keyset_add(&keys, k->valuestring, row, &first)
                            : 0;
                if (r != 0) {
                    failed++;
                    pr.done++;
                    if (r < 0)
                        row_refused(&pr, listed, row_at(&s, row), NULL, "out of memory; not sent");
                    else
                        row_refused(&pr, listed, row_at(&s, row), NULL,
                                    "idempotency key \"%s\" is %s %zu's too; not sent",
                                    k->valuestring, s.jsonl ? "line" : "row", first);
                    cJSON_Delete(req);
                    continue;
                }
            }
            {
                char *js = cJSON_PrintUnformatted(req);
                size_t jl = js != NULL ? strlen(js) : 0;

                cJSON_Delete(req);
                if (js == NULL || jl > LINE_MAX_BYTES) {
                    failed++;
                    pr.done++;
                    row_refused(&pr, listed, row_at(&s, row), NULL, "%s; not sent",
                                js == NULL ? "out of memory"
                                           : "the request is longer than the daemon's line limit");
                    cJSON_free(js);
                    continue;
                }
                rc = ipc_client_send(c->cl, js, jl);
                cJSON_free(js);
            }
            if (rc != 0) {
                /* No more rows; the answers to those written may still
                 * be there to read (a daemon that refused a line answers,
                 * then closes). This row is one the daemon did not take:
                 * a line reaches it only whole. */
                write_failed = true;
                wrc = rc;
                failed++;
                pr.done++;
                break;
            }
            ring[(head + out) % (size_t)window] = row_at(&s, row);
            out++;
        }
        if (out > 0 && !broken) {
            const char *line;
            size_t len;
            cJSON *ans;
            rc = ipc_client_recv(c->cl, c->timeout_ms, &line, &len);
            if (rc != 0) {
                broken = true;
                break;
            }
            ans = cJSON_ParseWithLength(line, len);
            if (answer_ok(ans)) {
                if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ans, "duplicate")))
                    dups++;
                else
                    created++;
            } else if (jstr(ans, "error") != NULL &&
                       strcmp(jstr(ans, "error"), "SHUTTING_DOWN") == 0) {
                /* The daemon stops: no more rows, and the answers to those
                 * already written are counted, not printed one by one. */
                failed++;
                stopped++;
            } else if (jstr(ans, "error") != NULL &&
                       strcmp(jstr(ans, "error"), "QUEUE_FULL") == 0) {
                /* The first is shown (its message names the bound), the
                 * rest of the window counted. */
                if (full++ == 0)
                    row_refused(&pr, listed, ring[head], "QUEUE_FULL", "%s",
                                jstr(ans, "message") ? jstr(ans, "message") : "?");
                failed++;
            } else {
                failed++;
                row_refused(&pr, listed, ring[head],
                            jstr(ans, "error") ? jstr(ans, "error") : "ERROR", "%s",
                            jstr(ans, "message") ? jstr(ans, "message") : "?");
            }
            cJSON_Delete(ans);
            head = (head + 1) % (size_t)window;
            out--;
            pr.done++;
        }
        progress_show(&pr, false);
    }
    progress_show(&pr, true);
    if (stopped > 0)
        fprintf(stderr,
                "avenpingctl: import interrupted: the daemon is stopping (SHUTTING_DOWN for %zu "
                "rows%s). Run the same import again once it is back: rows already taken are not "
                "sent twice\n",
                stopped + (broken ? out : 0), eof ? "" : "; the rest of the file was not read");
    if (full > 0)
        fprintf(stderr,
                "avenpingctl: import stopped: the daemon's queue is full (QUEUE_FULL for %zu "
                "rows%s). Run the same import again once jobs have gone out: rows already taken "
                "are not sent twice\n",
                full, eof ? "" : "; the rest of the file was not sent");
    if (broken && stopped > 0) {
        failed += out; /* the daemon went before answering them: said above */
    } else if (write_failed && !broken) {
        fprintf(stderr,
                "avenpingctl: import interrupted: %s while writing (the rows answered are "
                "counted; running the same import again sends nothing twice)\n",
                ipc_client_strerror(wrc));
        broken = true;
    } else if (broken) {
        fprintf(stderr,
                "avenpingctl: import interrupted: %s (%zu requests unanswered; running the "
                "same import again sends nothing twice)\n",
                ipc_client_strerror(rc), out);
        failed += out;
    }
    {
        double el = now_mono() - pr.t0;
        if (c->json) {
            cJSON *sum = cJSON_CreateObject();
            char *js;
            cJSON_AddStringToObject(sum, "campaign", s.campaign);
            cJSON_AddNumberToObject(sum, "rows", (double)(created + dups + failed));
            cJSON_AddNumberToObject(sum, "created", (double)created);
            cJSON_AddNumberToObject(sum, "duplicates", (double)dups);
            cJSON_AddNumberToObject(sum, "failed", (double)failed);
            cJSON_AddNumberToObject(sum, "otherCampaignRows", (double)s.other_campaign);
            cJSON_AddNumberToObject(sum, "seconds", el);
            if (listed != NULL) {
                cJSON_AddItemToObject(sum, "refusedRows", listed);
                listed = NULL;
            }
            js = cJSON_PrintUnformatted(sum);
            puts(js ? js : "{}");
            cJSON_free(js);
            cJSON_Delete(sum);
        } else {
            printf("campaign %s: %zu rows, %zu new jobs, %zu duplicates, %zu failed in %.1fs\n",
                   s.campaign, created + dups + failed, created, dups, failed, el);
            if (s.other_campaign > 0)
                printf("  %zu of the rows name another campaign: their jobs count there, not in "
                       "%s\n",
                       s.other_campaign, s.campaign);
        }
    }
    if (dups > 0 && !broken && !write_failed)
        import_note_cancelled(c, s.campaign);
    rc = failed > 0 || broken ? EXIT_FAIL : 0;
out:
    free(ring);
    cJSON_Delete(listed);
    free(keys.slot);
    free(s.seen.slot);
    if (s.csv)
        csv_free(s.csv);
    for (size_t i = 0; i < s.n_header; i++)
        free(s.header[i]);
    free(s.header);
    free(s.line);
    free(s.compact);
    if (s.f != NULL && s.f != stdin)
        fclose(s.f);
    return rc;
}

/* --- queries ---------------------------------------------------------- */

/*
 * A lastError object (a job's, or a watch event's "error") for people:
 * "500 INTERNAL_ERROR: message (Meta 131056)". An error without an HTTP
 * answer (status 0: CONNECT_ERROR, TRANSPORT_ERROR, INTERRUPTED, ...) has
 * no status to show: it read "0 CONNECT_ERROR", an HTTP status that does
 * not exist. Meta's code 0 is a code; a null one is none.
 */
static void fmt_error(const cJSON *e, char *buf, size_t n)
{
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(e, "metaCode");
    char st[24] = "", mc[40] = "";

    if (jnum(e, "status") > 0)
        snprintf(st, sizeof(st), "%.0f ", jnum(e, "status"));
    if (cJSON_IsNumber(meta))
        snprintf(mc, sizeof(mc), " (Meta %.0f)", meta->valuedouble);
    snprintf(buf, n, "%s%s: %s%s", st, jstr(e, "code") ? jstr(e, "code") : "ERROR",
             jstr(e, "message") ? jstr(e, "message") : "", mc);
}

static void print_job(const cJSON *j)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "lastError");
    char t1[32], t2[32], err[400];

    fmt_time(jnum(j, "createdAt"), t1, sizeof(t1));
    fmt_time(jnum(j, "updatedAt"), t2, sizeof(t2));
    printf("job %s: %s\n", jstr(j, "id"), jstr(j, "state"));
    printf("  %s %s from %s to %s\n", jstr(j, "kind"), jstr(j, "type"), jstr(j, "phoneNumberId"),
           jstr(j, "to"));
    if (jstr(j, "campaign"))
        printf("  campaign %s\n", jstr(j, "campaign"));
    if (jstr(j, "idempotencyKey"))
        printf("  key %s\n", jstr(j, "idempotencyKey"));
    printf("  priority %s, attempts %.0f, created %s, updated %s\n", jstr(j, "priority"),
           jnum(j, "attempts"), t1, t2);
    /* When a waiting job goes next (a --not-before, a retry's backoff)
     * and until when it may: a scheduled or retrying job showed only that
     * it waited. */
    if (jstr(j, "state") &&
        (strcmp(jstr(j, "state"), "queued") == 0 || strcmp(jstr(j, "state"), "retrying") == 0)) {
        fmt_time(jnum(j, "nextAttemptAt"), t1, sizeof(t1));
        fmt_time(jnum(j, "expiresAt"), t2, sizeof(t2));
        printf("  next attempt %s, expires %s\n", t1, t2);
    }
    if (jstr(j, "wamid"))
        printf("  wamid %s\n", jstr(j, "wamid"));
    if (cJSON_IsObject(e)) {
        fmt_error(e, err, sizeof(err));
        printf("  last error: %s\n", err);
    }
}

/* Whether `arg` can be a job id: any non-empty string. Job ids are
 * strings, opaque to clients (socket-protocol.md; protocol.md: "nothing
 * should depend on" their being digits): one that names no job is the
 * daemon's NOT_FOUND, a failed request (exit 1), not a usage error. An
 * empty one is (exit 2, before any request). */
static bool job_arg_ok(const char *cmd, const char *arg, const char *hint)
{
    if (arg[0] != '\0')
        return true;
    usage_err("%s: an empty JOB id%s", cmd, hint);
    return false;
}

static int cmd_status(ctx_t *c, const opts_t *o)
{
    cJSON *req = request("get"), *ans;
    int rc;

    if ((o->npos == 1) == opt_has(o, "key")) {
        cJSON_Delete(req);
        usage_err("status needs a JOB id or --key KEY");
        return EXIT_USAGE;
    }
    if (o->npos == 1 && !job_arg_ok("status", o->pos[0], " (a key: --key KEY)")) {
        cJSON_Delete(req);
        return EXIT_USAGE;
    }
    if (o->npos == 1)
        cJSON_AddStringToObject(req, "job", o->pos[0]);
    else
        cJSON_AddStringToObject(req, "idempotencyKey", opt_get(o, "key"));
    if ((rc = call(c, req, &ans)) != 0)
        return rc;
    if (c->json)
        print_json(ans);
    else
        print_job(cJSON_GetObjectItemCaseSensitive(ans, "job"));
    cJSON_Delete(ans);
    return 0;
}

/* One page of `list`. `after` may be NULL. */
static int list_page(ctx_t *c, const char *campaign, const char *state, const char *after,
                     long limit, cJSON **ans)
{
    cJSON *req = request("list");

    cJSON_AddStringToObject(req, "campaign", campaign);
    if (state)
        cJSON_AddStringToObject(req, "state", state);
    if (after)
        cJSON_AddStringToObject(req, "after", after);
    cJSON_AddNumberToObject(req, "limit", (double)limit);
    return call(c, req, ans);
}

static void print_job_row(const cJSON *j)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "lastError");
    const char *detail = jstr(j, "wamid");
    char buf[400];

    if (detail == NULL && cJSON_IsObject(e)) {
        fmt_error(e, buf, sizeof(buf));
        detail = buf;
    }
    printf("%-12s %-10s %-20s %3.0f  %s\n", jstr(j, "id"), jstr(j, "state"), jstr(j, "to"),
           jnum(j, "attempts"), detail ? detail : "");
}

static int cmd_list(ctx_t *c, const opts_t *o)
{
    const char *campaign = opt_get(o, "campaign"), *state = opt_get(o, "state");
    char *after = opt_get(o, "after") ? strdup(opt_get(o, "after")) : NULL;
    bool all = opt_has(o, "all");
    long limit;
    int rc = 0;

    if (campaign == NULL) {
        usage_err("list needs --campaign NAME");
        free(after);
        return EXIT_USAGE;
    }
    if ((state && !state_valid(state)) ||
        opt_long(o, "limit", 1, 1000, all ? 1000 : 100, &limit) != 0) {
        if (state && !state_valid(state))
            usage_err("--state: unknown state %s", state);
        free(after);
        return EXIT_USAGE;
    }
    bool header = !c->json;
    do {
        cJSON *ans, *jobs, *j;
        const char *next;
        if ((rc = list_page(c, campaign, state, after, limit, &ans)) != 0)
            break;
        if (header) /* after the first answer: no table over an error */
            printf("%-12s %-10s %-20s %3s  %s\n", "JOB", "STATE", "TO", "ATT",
                   "WAMID / LAST ERROR");
        header = false;
        jobs = cJSON_GetObjectItemCaseSensitive(ans, "jobs");
        if (c->json && !all) {
            print_json(ans);
        } else {
            cJSON_ArrayForEach(j, jobs)
            {
                if (c->json) {
                    char *s = json_line(j);
                    puts(s ? s : "{}");
                    cJSON_free(s);
                } else {
                    print_job_row(j);
                }
            }
        }
        next = jstr(ans, "next");
        free(after);
        after = next ? strdup(next) : NULL;
        if (!all && after && !c->json)
            printf("(more: --after %s)\n", after);
        cJSON_Delete(ans);
        if (all && (rc = page_written(stdout, NULL)) != 0)
            break;
    } while (all && after != NULL);
    free(after);
    return rc;
}

static uint64_t count_of(const cJSON *counts, const char *state)
{
    return (uint64_t)jnum(counts, state);
}

static int campaign_once(ctx_t *c, const char *name, cJSON **ans)
{
    cJSON *req = request("campaign");
    cJSON_AddStringToObject(req, "campaign", name);
    return call(c, req, ans);
}

static int cmd_campaign(ctx_t *c, const opts_t *o)
{
    const char *name = o->npos == 1 ? o->pos[0] : opt_get(o, "campaign");
    bool follow = opt_has(o, "follow"), tty = isatty(STDOUT_FILENO) && !c->json;
    double interval, prev_t = 0, rate = 0;
    uint64_t prev_done = 0;
    unsigned still = 0; /* samples in a row in which nothing finished */
    int rc;

    /* Given twice, one would be dropped without a word: which did the
     * caller mean? (status and cancel refuse a JOB with --key/--campaign.) */
    if (o->npos == 1 && opt_has(o, "campaign")) {
        usage_err("campaign: give the NAME or --campaign NAME, not both");
        return EXIT_USAGE;
    }
    if (name == NULL) {
        usage_err("campaign needs a NAME");
        return EXIT_USAGE;
    }
    if (opt_double(o, "interval", 0.1, 3600, 1.0, &interval) != 0)
        return EXIT_USAGE;
    if (!follow && opt_has(o, "interval")) {
        usage_err("--interval needs --follow");
        return EXIT_USAGE;
    }
    for (;;) {
        cJSON *ans, *cp, *counts;
        uint64_t total, unfinished, done;
        double t = now_mono();
        char eta[32];
        bool paused;

        if ((rc = campaign_once(c, name, &ans)) != 0)
            return rc;
        cp = cJSON_GetObjectItemCaseSensitive(ans, "campaign");
        counts = cJSON_GetObjectItemCaseSensitive(cp, "counts");
        total = (uint64_t)jnum(cp, "total");
        unfinished =
            count_of(counts, "queued") + count_of(counts, "sending") + count_of(counts, "retrying");
        done = total > unfinished ? total - unfinished : 0;
        paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cp, "paused"));
        if (prev_t > 0 && t > prev_t) {
            /* Fewer done than before (a retry requeued finished jobs, or
             * finished ones were purged) is no progress; the unsigned
             * difference wrapped to a rate of about 1e20/s. */
            double r = done > prev_done ? (double)(done - prev_done) / (t - prev_t) : 0;
            rate = rate > 0 ? 0.5 * rate + 0.5 * r : r; /* smoothed */
            still = r > 0 ? 0 : still + 1;
        }
        /* The daemon's figure until two samples of our own exist (it is a
         * trailing average: it lags behind changes of the rate). */
        if (rate <= 0 && jnum(cp, "ratePerSecond") > 0 && !paused)
            rate = jnum(cp, "ratePerSecond");
        /* Paused, or nothing finished for three samples (a hold, an
         * account pause): no rate and no ETA, where the smoothed rate only
         * halved each sample (an ETA of minutes, then hours, for a campaign
         * that was not moving). */
        if (paused || still >= 3)
            rate = 0;
        prev_t = t;
        prev_done = done;
        if (c->json) {
            print_json(ans);
        } else {
            fmt_duration(rate > 0 ? (double)unfinished / rate : (unfinished ? NAN : 0), eta,
                         sizeof(eta));
            if (follow && tty)
                fputs("\r\033[K", stdout);
            printf("%s: %llu/%llu done (%.1f%%)%s", jstr(cp, "name"), (unsigned long long)done,
                   (unsigned long long)total, total ? 100.0 * (double)done / (double)total : 100.0,
                   paused ? " PAUSED" : "");
            for (int i = 0; i < N_STATES; i++)
                if (count_of(counts, states[i]) > 0)
                    printf(" %s %llu", states[i], (unsigned long long)count_of(counts, states[i]));
            if (follow)
                printf(" | %.0f/s ETA %s", rate, eta);
            if (!(follow && tty))
                putchar('\n');
        }
        cJSON_Delete(ans);
        /* --follow into a pipe: each answer as it comes, until nobody reads. */
        if ((rc = output_check()) != 0)
            return rc;
        if (!follow || unfinished == 0)
            break;
        sleep_s(interval);
    }
    if (follow && tty)
        putchar('\n');
    return 0;
}

/* A CSV field, quoted when it needs to be. */
static void csv_field(FILE *f, const char *s, bool last)
{
    if (s == NULL)
        s = "";
    if (strpbrk(s, ",\"\r\n") != NULL) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputc(last ? '\n' : ',', f);
}

static int cmd_report(ctx_t *c, const opts_t *o)
{
    const char *campaign = opt_get(o, "campaign"), *fmt = opt_get(o, "format");
    const char *path = opt_get(o, "output"), *state = opt_get(o, "state");
    bool jsonl;
    char *after = NULL;
    size_t rows = 0;
    FILE *f = stdout;
    int rc = 0;

    if (campaign != NULL && o->npos == 1) { /* as campaign's NAME */
        usage_err("report: give --campaign NAME or NAME, not both");
        return EXIT_USAGE;
    }
    if (campaign == NULL && o->npos == 1)
        campaign = o->pos[0];
    if (campaign == NULL) {
        usage_err("report needs --campaign NAME");
        return EXIT_USAGE;
    }
    if (state != NULL && !state_valid(state)) {
        usage_err("--state: unknown state %s", state);
        return EXIT_USAGE;
    }
    if (fmt == NULL)
        fmt = c->json ? "jsonl" : "csv";
    if (strcmp(fmt, "csv") != 0 && strcmp(fmt, "jsonl") != 0) {
        usage_err("--format must be csv or jsonl");
        return EXIT_USAGE;
    }
    jsonl = strcmp(fmt, "jsonl") == 0;
    /* The campaign first: a typo must not truncate an earlier report. */
    {
        cJSON *ans = NULL;
        if ((rc = campaign_once(c, campaign, &ans)) != 0)
            return rc;
        cJSON_Delete(ans);
    }
    if (path != NULL && strcmp(path, "-") != 0 && (f = fopen(path, "w")) == NULL) {
        fprintf(stderr, "avenpingctl: %s: %s\n", path, strerror(errno));
        return EXIT_FAIL;
    }
    if (!jsonl)
        fputs("job,idempotencyKey,recipient,phoneNumberId,state,attempts,wamid,errorStatus,"
              "errorCode,errorMessage,metaCode,updatedAt\n",
              f);
    do {
        cJSON *ans, *j;
        const char *next;
        if ((rc = list_page(c, campaign, state, after, 1000, &ans)) != 0)
            break;
        cJSON_ArrayForEach(j, cJSON_GetObjectItemCaseSensitive(ans, "jobs"))
        {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "lastError");
            bool has_e = cJSON_IsObject(e);
            if (jsonl) {
                cJSON *r = cJSON_CreateObject();
                char *s;
                cJSON_AddStringToObject(r, "job", jstr(j, "id"));
                {
                    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "idempotencyKey");
                    cJSON_AddItemToObject(r, "idempotencyKey",
                                          k != NULL ? cJSON_Duplicate(k, 1) : cJSON_CreateNull());
                }
                cJSON_AddStringToObject(r, "recipient", jstr(j, "to"));
                cJSON_AddStringToObject(r, "phoneNumberId", jstr(j, "phoneNumberId"));
                cJSON_AddStringToObject(r, "state", jstr(j, "state"));
                cJSON_AddNumberToObject(r, "attempts", jnum(j, "attempts"));
                cJSON_AddItemToObject(
                    r, "wamid", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(j, "wamid"), 1));
                cJSON_AddItemToObject(r, "error",
                                      has_e ? cJSON_Duplicate(e, 1) : cJSON_CreateNull());
                cJSON_AddNumberToObject(r, "updatedAt", jnum(j, "updatedAt"));
                s = json_line(r);
                fprintf(f, "%s\n", s ? s : "{}");
                cJSON_free(s);
                cJSON_Delete(r);
            } else {
                char num[64];
                bool has_meta;
                csv_field(f, jstr(j, "id"), false);
                csv_field(f, jstr(j, "idempotencyKey"), false);
                csv_field(f, jstr(j, "to"), false);
                csv_field(f, jstr(j, "phoneNumberId"), false);
                csv_field(f, jstr(j, "state"), false);
                snprintf(num, sizeof(num), "%.0f", jnum(j, "attempts"));
                csv_field(f, num, false);
                csv_field(f, jstr(j, "wamid"), false);
                snprintf(num, sizeof(num), "%.0f", has_e ? jnum(e, "status") : 0);
                csv_field(f, has_e ? num : "", false);
                csv_field(f, has_e ? jstr(e, "code") : "", false);
                csv_field(f, has_e ? jstr(e, "message") : "", false);
                /* Meta's code 0 (AuthException) is a code: only a null
                 * one (none given) leaves the column empty. */
                has_meta = has_e && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "metaCode"));
                snprintf(num, sizeof(num), "%.0f", has_meta ? jnum(e, "metaCode") : 0);
                csv_field(f, has_meta ? num : "", false);
                snprintf(num, sizeof(num), "%.3f", jnum(j, "updatedAt"));
                csv_field(f, num, true);
            }
            rows++;
        }
        next = jstr(ans, "next");
        free(after);
        after = next ? strdup(next) : NULL;
        cJSON_Delete(ans);
        if ((rc = page_written(f, path)) != 0)
            break;
    } while (after != NULL);
    free(after);
    if (f != stdout && fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "avenpingctl: %s: %s\n", path, strerror(errno));
        rc = EXIT_FAIL;
    }
    /* With --json too: a script gets the count without reading the file. */
    if (rc == 0 && f != stdout && !c->json)
        printf("%zu jobs written to %s\n", rows, path);
    else if (rc == 0 && f != stdout)
        printf("{\"written\":%zu}\n", rows);
    return rc;
}

/* --- changes ---------------------------------------------------------- */

/* cancel / retry: a JOB or --campaign (retry also --state). */
static int cmd_cancel_retry(ctx_t *c, const opts_t *o, const char *op)
{
    const char *campaign = opt_get(o, "campaign"), *state = opt_get(o, "state");
    bool retry = strcmp(op, "retry") == 0;
    cJSON *req, *ans;
    int rc;

    if ((o->npos == 1) == (campaign != NULL)) {
        usage_err("%s needs a JOB id or --campaign NAME", op);
        return EXIT_USAGE;
    }
    if (retry && campaign != NULL &&
        (state == NULL || (strcmp(state, "failed") != 0 && strcmp(state, "expired") != 0 &&
                           strcmp(state, "uncertain") != 0))) {
        usage_err("retry --campaign needs --state failed, expired or uncertain");
        return EXIT_USAGE;
    }
    if (!retry && state != NULL) {
        usage_err("cancel takes no --state");
        return EXIT_USAGE;
    }
    /* A JOB is requeued from any final error state: a --state beside it
     * was dropped without a word ("retry 17 --state failed" requeued an
     * expired job 17 too). */
    if (retry && campaign == NULL && state != NULL) {
        usage_err("retry JOB takes no --state (it requeues a failed, expired or uncertain job)");
        return EXIT_USAGE;
    }
    if (o->npos == 1 && !job_arg_ok(op, o->pos[0], " (a campaign: --campaign NAME)"))
        return EXIT_USAGE;
    req = request(op);
    if (o->npos == 1)
        cJSON_AddStringToObject(req, "job", o->pos[0]);
    else
        cJSON_AddStringToObject(req, "campaign", campaign);
    if (retry && campaign != NULL)
        cJSON_AddStringToObject(req, "state", state);
    if ((rc = call(c, req, &ans)) != 0)
        return rc;
    if (c->json)
        print_json(ans);
    else if (retry)
        printf("%.0f job%s requeued\n", jnum(ans, "requeued"),
               jnum(ans, "requeued") == 1 ? "" : "s");
    else
        printf("%.0f job%s cancelled\n", jnum(ans, "cancelled"),
               jnum(ans, "cancelled") == 1 ? "" : "s");
    cJSON_Delete(ans);
    return 0;
}

static int cmd_cancel(ctx_t *c, const opts_t *o)
{
    return cmd_cancel_retry(c, o, "cancel");
}

static int cmd_retry(ctx_t *c, const opts_t *o)
{
    return cmd_cancel_retry(c, o, "retry");
}

/*
 * A campaign or sender may be paused before it has jobs (the protocol
 * allows it, so that an import can start paused); a name that matches
 * nothing may also be a typo, which the caller says on standard error,
 * without changing the exit status. A sender is known while the daemon
 * holds jobs or state of it (stats lists it): asked before the pause or
 * resume, which itself makes a sender known (a pause) or forgets one
 * without jobs (a resume, whose note then named a sender just resumed).
 */
static bool known_target(ctx_t *c, const char *campaign, const char *pn)
{
    cJSON *req, *ans = NULL;
    bool known = true;

    if (campaign != NULL) {
        req = request("campaign");
        cJSON_AddStringToObject(req, "campaign", campaign);
        if (ipc_client_call(c->cl, req, c->timeout_ms, &ans) == 0 && !answer_ok(ans) &&
            jstr(ans, "error") != NULL && strcmp(jstr(ans, "error"), "NOT_FOUND") == 0)
            known = false;
        cJSON_Delete(req);
    } else {
        const cJSON *sd;
        req = request("stats");
        if (ipc_client_call(c->cl, req, c->timeout_ms, &ans) == 0 && answer_ok(ans)) {
            known = false;
            cJSON_ArrayForEach(sd, cJSON_GetObjectItemCaseSensitive(
                                       cJSON_GetObjectItemCaseSensitive(ans, "stats"), "senders"))
            {
                if (jstr(sd, "phoneNumberId") && strcmp(jstr(sd, "phoneNumberId"), pn) == 0)
                    known = true;
            }
        }
        cJSON_Delete(req);
    }
    cJSON_Delete(ans);
    return known;
}

static int cmd_pause_resume(ctx_t *c, const opts_t *o, const char *op)
{
    const char *campaign = opt_get(o, "campaign"), *pn = opt_get(o, "phone-number-id");
    bool all = opt_has(o, "all"), known = true;
    cJSON *req, *ans;
    int rc;

    if ((campaign != NULL) + (pn != NULL) + all != 1) {
        usage_err("%s needs exactly one of --campaign NAME, --phone-number-id ID, --all", op);
        return EXIT_USAGE;
    }
    if (!all) {
        if (connect_daemon(c) != 0)
            return EXIT_FAIL;
        known = known_target(c, campaign, pn);
    }
    req = request(op);
    if (campaign)
        cJSON_AddStringToObject(req, "campaign", campaign);
    else if (pn)
        cJSON_AddStringToObject(req, "phoneNumberId", pn);
    else
        cJSON_AddBoolToObject(req, "all", true);
    if ((rc = call(c, req, &ans)) != 0)
        return rc;
    if (c->json)
        print_json(ans);
    else
        printf("%s\n", strcmp(op, "pause") == 0 ? "paused" : "resumed");
    cJSON_Delete(ans);
    if (!known)
        fprintf(stderr,
                "avenpingctl: note: no jobs of %s \"%s\" are known (a typo?); the setting "
                "applies to jobs submitted to it from now on\n",
                campaign ? "campaign" : "sender", campaign ? campaign : pn);
    return 0;
}

static int cmd_pause(ctx_t *c, const opts_t *o)
{
    return cmd_pause_resume(c, o, "pause");
}

static int cmd_resume(ctx_t *c, const opts_t *o)
{
    return cmd_pause_resume(c, o, "resume");
}

/* --- stats, watch, ping ----------------------------------------------- */

static int cmd_stats(ctx_t *c, const opts_t *o)
{
    cJSON *ans, *st, *counts, *s;
    bool account_paused;
    char account_state[48];
    int rc;

    (void)o;
    if ((rc = call(c, request("stats"), &ans)) != 0)
        return rc;
    if (c->json) {
        print_json(ans);
        cJSON_Delete(ans);
        return 0;
    }
    st = cJSON_GetObjectItemCaseSensitive(ans, "stats");
    counts = cJSON_GetObjectItemCaseSensitive(st, "counts");
    printf("jobs:");
    for (int i = 0; i < N_STATES; i++)
        printf(" %s %llu", states[i], (unsigned long long)count_of(counts, states[i]));
    printf("\nrequests in flight %.0f, jobs picked %.0f, active set %.0f, commit backlog %.0f, "
           "connections %.0f\n",
           jnum(st, "httpInflight"), jnum(st, "inflight"), jnum(st, "active"),
           jnum(st, "commitBacklog"), jnum(st, "connections"));
    printf("since start: %.0f submitted, %.0f duplicates, %.0f requests, %.0f possible "
           "duplicates, %.0f commits\n",
           jnum(st, "submitted"), jnum(st, "duplicates"), jnum(st, "requests"),
           jnum(st, "possibleDuplicates"), jnum(st, "commits"));
    s = cJSON_GetObjectItemCaseSensitive(st, "account");
    if (jstr(s, "state")) {
        /* A throttled account waits until a time: "all sending waits"
         * said how, not until when. */
        char until[48] = "";
        if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(s, "until"))) {
            char t[32];
            fmt_time(jnum(s, "until"), t, sizeof(t));
            snprintf(until, sizeof(until), " (until %s)", t);
        }
        printf("account: %s%s%s%s\n", jstr(s, "state"), jstr(s, "reason") ? " - " : "",
               jstr(s, "reason") ? jstr(s, "reason") : "", until);
    }
    /* Everything waits while the account is paused or throttled: no
     * sender is "sending" then, whatever its own state. */
    account_paused = jstr(s, "state") != NULL && strcmp(jstr(s, "state"), "ok") != 0;
    snprintf(account_state, sizeof(account_state), "%s (account)",
             account_paused ? jstr(s, "state") : "");
    printf("%-20s %8s %8s %8s %s\n", "SENDER", "QUEUED", "INFLIGHT", "RATE", "STATE");
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(st, "senders"))
    {
        bool paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "paused"));
        const char *id = jstr(s, "phoneNumberId");
        printf("%-20s %8.0f %8.0f %8.1f %s%s%s\n", id ? id : "?", jnum(s, "queued"),
               jnum(s, "inflight"), jnum(s, "rate"),
               paused           ? "paused"
               : account_paused ? account_state
                                : "sending",
               jstr(s, "reason") ? ": " : "", jstr(s, "reason") ? jstr(s, "reason") : "");
    }
    cJSON_Delete(ans);
    return 0;
}

static int cmd_watch(ctx_t *c, const opts_t *o)
{
    const char *campaign = opt_get(o, "campaign");
    cJSON *req = request("watch"), *ans;
    long count;
    long seen = 0;
    int rc;

    if (opt_long(o, "count", 1, 1000000000L, 0, &count) != 0) {
        cJSON_Delete(req);
        return EXIT_USAGE;
    }
    if (campaign)
        cJSON_AddStringToObject(req, "campaign", campaign);
    if ((rc = call(c, req, &ans)) != 0)
        return rc;
    cJSON_Delete(ans);
    while (count == 0 || seen < count) {
        const char *line;
        size_t len;
        cJSON *ev;
        /* Waits a second at a time: a reader that went away while no event
         * came (`watch | head -1` after its line) ends the watch too. */
        rc = ipc_client_recv(c->cl, 1000, &line, &len);
        if (rc == -ETIMEDOUT) {
            if (output_gone())
                return EXIT_FAIL;
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "avenpingctl: watch: %s\n", ipc_client_strerror(rc));
            return EXIT_FAIL;
        }
        if (c->json) {
            printf("%.*s\n", (int)len, line);
            if ((rc = output_check()) != 0)
                return rc;
            seen++;
            continue;
        }
        ev = cJSON_ParseWithLength(line, len);
        if (ev == NULL)
            continue;
        if (jstr(ev, "event") && strcmp(jstr(ev, "event"), "gap") == 0) {
            printf("... %.0f events dropped (this watcher was too slow)\n", jnum(ev, "dropped"));
        } else {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(ev, "error");
            char t[32];
            fmt_time(jnum(ev, "time"), t, sizeof(t));
            printf("%s job %s %s%s%s", t, jstr(ev, "job"), jstr(ev, "state"),
                   jstr(ev, "campaign") ? " campaign " : "",
                   jstr(ev, "campaign") ? jstr(ev, "campaign") : "");
            if (jstr(ev, "wamid"))
                printf(" wamid %s", jstr(ev, "wamid"));
            if (cJSON_IsObject(e)) {
                char err[400];
                fmt_error(e, err, sizeof(err));
                printf(" error %s", err);
            }
            putchar('\n');
        }
        cJSON_Delete(ev);
        if ((rc = output_check()) != 0)
            return rc;
        seen++;
    }
    return 0;
}

static int cmd_ping(ctx_t *c, const opts_t *o)
{
    cJSON *ans;
    double t0 = now_mono();
    int rc;

    (void)o;
    if ((rc = call(c, request("ping"), &ans)) != 0)
        return rc;
    if (c->json)
        print_json(ans);
    else
        printf("avenpingd %s on %s: answered in %.1f ms\n",
               jstr(ans, "version") ? jstr(ans, "version") : "?", c->socket,
               (now_mono() - t0) * 1e3);
    cJSON_Delete(ans);
    return 0;
}

/* --- the command table -------------------------------------------------- */

static const command_t commands[] = {
    {"send", cmd_send,
     "from:,to:,text:,type:,message:,campaign:,key:,priority:,not-before:,"
     "expires-at:,order-key:,max-attempts:",
     0, 0,
     "send --from ID --to NUMBER --text TEXT [JOB OPTIONS]\n"
     "       send --type TYPE --message JSON [--from ID] [--to NUMBER] [JOB OPTIONS]",
     "Submits one message. TYPE is text (default), media, location, interactive or smart;\n"
     "--message gives the v2 request body as JSON (--from/--to/--text replace its fields).\n"
     "JOB OPTIONS: --campaign NAME --key IDEMPOTENCY-KEY --priority high|normal|bulk\n"
     "  --not-before UNIXTIME --expires-at UNIXTIME --order-key KEY --max-attempts N"},
    {"template", cmd_template,
     "from:,to:,name:,language:,param:,components:,campaign:,key:,"
     "priority:,not-before:,expires-at:,order-key:,max-attempts:",
     0, 0,
     "template --from ID --to NUMBER --name TEMPLATE [--language en_US] [--param TEXT]...\n"
     "       [--components JSON] [JOB OPTIONS]",
     "Submits a template message. Each --param is a body parameter, in order; --components\n"
     "gives Meta's send-time components as a JSON array instead."},
    {"import", cmd_import,
     "campaign:,format:,from:,from-column:,to-column:,text:,template:,"
     "language:,param:,key-column:,priority:,window:,quiet",
     1, 1,
     "import FILE --campaign NAME [--format csv|jsonl] [--from ID] [--from-column COL]\n"
     "       [--to-column COL] [--text TEXT | --template NAME [--language L] [--param COL]...]\n"
     "       [--key-column COL] [--priority P] [--window N] [--quiet]",
     "Submits every row of FILE (\"-\": stdin) as a job of campaign NAME, pipelined (--window\n"
     "requests outstanding, default 4000). CSV needs a header row: the recipient is column\n"
     "\"to\" (or \"phone\"; --to-column), the sender column \"phoneNumberId\" (--from-column),\n"
     "--from where a row has none; the message is --text with {column} placeholders, a\n"
     "\"text\" column, or --template with --param columns as body parameters. JSON Lines:\n"
     "each line is a send or template_send request as on the socket; campaign and key are\n"
     "added where missing, and --from and --priority (the column options are for CSV only).\n"
     "The format is --format, else the name (.jsonl, .ndjson, .json: JSON Lines; .csv: CSV;\n"
     "in any case), else the content (stdin too): '{' first, after blank lines and a byte\n"
     "order mark, is JSON Lines, anything else CSV. Each row's idempotency key is\n"
     "\"<campaign>:<hash of the row's content>\" (\"-2\", \"-3\"... after it for the second,\n"
     "third... row alike in the file), or the --key-column value: running the same import\n"
     "again creates nothing twice, and another file, or rows added, moved or deleted,\n"
     "change no other row's key.\n"
     "Progress goes to stderr: a bar on a terminal, plain lines otherwise."},
    {"status", cmd_status, "key:", 0, 1, "status JOB | status --key IDEMPOTENCY-KEY",
     "Shows one job."},
    {"list", cmd_list, "campaign:,state:,limit:,after:,all", 0, 0,
     "list --campaign NAME [--state STATE] [--limit N] [--after JOB] [--all]",
     "Lists the jobs of a campaign by id, a page at a time (--limit, default 100, at most\n"
     "1000; --after the last id shown), or every page with --all."},
    {"campaign", cmd_campaign, "campaign:,follow,interval:", 0, 1,
     "campaign NAME [--follow [--interval SECONDS]]",
     "Shows a campaign's progress: jobs by state, done and total. --follow repeats every\n"
     "interval (default 1 s) with rate and ETA until no job is left to send."},
    {"report", cmd_report, "campaign:,format:,output:,state:", 0, 1,
     "report --campaign NAME [--format csv|jsonl] [--output FILE] [--state STATE]",
     "Writes every job of a campaign: job, idempotencyKey, recipient, phoneNumberId, state,\n"
     "attempts, wamid, error status/code/message, metaCode, updatedAt. CSV by default\n"
     "(JSON Lines with --json or --format jsonl)."},
    {"cancel", cmd_cancel, "campaign:,state:", 0, 1, "cancel JOB | cancel --campaign NAME",
     "Cancels the jobs not yet sent (queued, retrying; requests in flight finish)."},
    {"pause", cmd_pause, "campaign:,phone-number-id:,all", 0, 0,
     "pause --campaign NAME | --phone-number-id ID | --all", "Stops starting new sends."},
    {"resume", cmd_resume, "campaign:,phone-number-id:,all", 0, 0,
     "resume --campaign NAME | --phone-number-id ID | --all", "Undoes a pause."},
    {"retry", cmd_retry, "campaign:,state:", 0, 1,
     "retry JOB | retry --campaign NAME --state failed|expired|uncertain",
     "Requeues failed, expired or uncertain jobs (attempts start over)."},
    {"stats", cmd_stats, "", 0, 0, "stats", "Shows the daemon's counters and senders."},
    {"watch", cmd_watch, "campaign:,count:", 0, 0, "watch [--campaign NAME] [--count N]",
     "Prints job state changes as they happen (of one campaign with --campaign) until\n"
     "interrupted or N events were shown. A watcher too slow to keep up gets a line saying\n"
     "how many events it missed; it never slows the daemon."},
    {"ping", cmd_ping, "", 0, 0, "ping", "Checks that the daemon answers; prints its version."},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void main_usage(FILE *f)
{
    fputs("usage: avenpingctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fputs("\nThe socket defaults to $AVENPING_SOCKET, else " IPC_CLIENT_DEFAULT_SOCKET ".\n"
          "Exit status: 0 success, 1 a request failed, 2 usage error.\n"
          "avenpingctl COMMAND --help describes one command, avenpingctl --version prints\n"
          "this program's version; see also avenpingctl(1).\n",
          f);
}

static void command_usage(const command_t *cmd)
{
    printf("usage: avenpingctl [--socket PATH] [--json] %s\n\n%s\n", cmd->usage, cmd->help);
}

int main(int argc, char **argv)
{
    ctx_t c;
    opts_t o;
    const command_t *cmd = NULL;
    double timeout;
    bool flushed;
    int i, rc;

    signal(SIGPIPE, SIG_IGN);
    memset(&c, 0, sizeof(c));
    memset(&o, 0, sizeof(o));
    c.socket = getenv("AVENPING_SOCKET");
    if (c.socket == NULL || *c.socket == '\0')
        c.socket = IPC_CLIENT_DEFAULT_SOCKET;

    /* Global options before the command. */
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            main_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("avenpingctl %s\n", AVP_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--json") == 0) {
            c.json = true;
        } else if (strncmp(argv[i], "--socket", 8) == 0 || strncmp(argv[i], "--timeout", 9) == 0) {
            bool sock = argv[i][2] == 's';
            const char *v = strchr(argv[i], '=');
            size_t nlen = sock ? 8 : 9;
            if (v == NULL && argv[i][nlen] == '\0' && i + 1 < argc)
                v = argv[++i];
            else if (v != NULL && (size_t)(v - argv[i]) == nlen)
                v++;
            else if (v == NULL && argv[i][nlen] == '\0') {
                usage_err("%s needs a value", argv[i]);
                return EXIT_USAGE;
            } else {
                usage_err("bad option %s", argv[i]);
                return EXIT_USAGE;
            }
            if (sock) {
                if (*v == '\0') {
                    usage_err("--socket: empty path");
                    return EXIT_USAGE;
                }
                c.socket = v;
            } else {
                o.name[0] = "timeout";
                o.value[0] = v;
                o.n = 1;
                if (opt_double(&o, "timeout", 0.1, 86400, 60, &timeout) != 0)
                    return EXIT_USAGE;
                o.n = 0;
                c.timeout_ms = (int)(timeout * 1000);
            }
        } else {
            usage_err("unknown option %s", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        main_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        for (size_t k = 0; i + 1 < argc && k < N_COMMANDS; k++)
            if (strcmp(commands[k].name, argv[i + 1]) == 0) {
                command_usage(&commands[k]);
                return 0;
            }
        main_usage(stdout);
        return 0;
    }
    for (size_t k = 0; k < N_COMMANDS; k++)
        if (strcmp(commands[k].name, argv[i]) == 0)
            cmd = &commands[k];
    if (cmd == NULL) {
        usage_err("unknown command %s", argv[i]);
        return EXIT_USAGE;
    }
    if (opts_parse(argc, argv, i + 1, cmd->options, &o) != 0) {
        opts_free(&o);
        return EXIT_USAGE;
    }
    if (opt_has(&o, "help")) {
        command_usage(cmd);
        opts_free(&o);
        return 0;
    }
    /* Global options after the command work too. */
    if (opt_has(&o, "json"))
        c.json = true;
    if (opt_get(&o, "socket")) {
        c.socket = opt_get(&o, "socket");
        if (*c.socket == '\0') { /* as before the command */
            usage_err("--socket: empty path");
            opts_free(&o);
            return EXIT_USAGE;
        }
    }
    if (opt_has(&o, "timeout")) {
        if (opt_double(&o, "timeout", 0.1, 86400, 60, &timeout) != 0) {
            opts_free(&o);
            return EXIT_USAGE;
        }
        c.timeout_ms = (int)(timeout * 1000);
    }
    if (c.timeout_ms == 0)
        c.timeout_ms = 60000;
    if ((int)o.npos < cmd->min_pos || (int)o.npos > cmd->max_pos) {
        usage_err("%s: wrong number of arguments; usage: avenpingctl %s", cmd->name, cmd->usage);
        opts_free(&o);
        return EXIT_USAGE;
    }
    rc = cmd->fn(&c, &o);
    opts_free(&o);
    ipc_client_close(c.cl);
    errno = 0;
    flushed = fflush(stdout) == 0;
    if ((!flushed || ferror(stdout)) && rc == 0) {
        /* A reader that went away (head) is no news; a full disk is. An
         * earlier write's failure left no errno worth printing. */
        if (!flushed && errno != EPIPE)
            fprintf(stderr, "avenpingctl: writing the output: %s\n", strerror(errno));
        rc = EXIT_FAIL;
    }
    return rc;
}
