/*
 * request.c - parsing and validation of one protocol line into an
 * ipc_request_t. Pure: no libuv calls, no I/O, no globals; the fuzz target
 * calls ipc_request_parse.
 *
 * Conventions of the validation (documented for users in the protocol):
 * - a line is UTF-8 and strict JSON (RFC 8259), else BAD_REQUEST;
 * - no string of it, member names included, holds "\u0000": cJSON's strings
 *   are C strings and would end there (a key "k\u0000a" would read as "k");
 *   VALIDATION_ERROR names where it is;
 * - a JSON null counts as an absent field (clients often serialise unset
 *   optional fields as null), except for "id": a null id is echoed as
 *   null, so that a client that reads the answer's "id" finds it;
 * - unknown top-level fields are ignored, for forward compatibility;
 * - the first problem found is reported, with the field named;
 * - a job id that cannot be one of ours is NOT_FOUND, as an unknown one of
 *   ours is: a job id is a string, opaque to clients (job_field);
 * - the body is the text of `message` as given, only the whitespace
 *   between tokens dropped: numbers keep their spelling (cJSON would print
 *   9007199254740993 as 9.00719925474099e+15 and 1e400 as null), strings
 *   their escapes.
 */
#include "ipc_int.h"
#include "json_scan.h"
#include "utf8.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Job ids are uint64 decimal strings. */
#define JOB_MAX_DIGITS 20
/* Largest integer a double holds exactly: the bound for a job id given as a
 * JSON number. */
#define JOB_MAX_NUMBER 9007199254740992.0
/* Where a NUL escape is, as named in its error: at most this many bytes of
 * path, and of each member name in it. */
#define NUL_PATH_MAX 120
#define NUL_NAME_MAX 40

int ipc__buf_reserve(ipc__buf_t *b, size_t extra)
{
    return ipc__buf_reserve_max(b, extra, SIZE_MAX);
}

int ipc__buf_reserve_max(ipc__buf_t *b, size_t extra, size_t max_cap)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return UV_ENOMEM;
    if (b->len + extra > max_cap)
        return UV_ENOBUFS;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap - b->len < extra)
        ncap *= 2;
    if (ncap > max_cap)
        ncap = max_cap;
    char *np = realloc(b->p, ncap);
    if (!np)
        return UV_ENOMEM;
    b->p = np;
    b->cap = ncap;
    return 0;
}

int ipc__buf_put(ipc__buf_t *b, const void *d, size_t n)
{
    if (n == 0)
        return 0;
    int rc = ipc__buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

void ipc__buf_free(ipc__buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

size_t ipc__json_escape(char *dst, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (dst)
        dst[o] = '"';
    o++;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc = 0;
        switch (ch) {
        case '"':
            esc = '"';
            break;
        case '\\':
            esc = '\\';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        case '\b':
            esc = 'b';
            break;
        case '\f':
            esc = 'f';
            break;
        default:
            break;
        }
        if (esc) {
            if (dst) {
                dst[o] = '\\';
                dst[o + 1] = esc;
            }
            o += 2;
        } else if (ch < 0x20) {
            if (dst) {
                memcpy(dst + o, "\\u00", 4); /* NOLINT(bugprone-not-null-terminated-result) */
                dst[o + 4] = hex[ch >> 4];
                dst[o + 5] = hex[ch & 15];
            }
            o += 6;
        } else {
            if (dst)
                dst[o] = (char)ch;
            o++;
        }
    }
    if (dst)
        dst[o] = '"';
    return o + 1;
}

struct strict;

/* Validation state of one request. String fields of `r` point into the
 * cJSON tree (or at constants) until they are copied into the block. */
struct vctx {
    ipc_request_t r;
    const char *code;
    char *msg;
    size_t msg_size;
    char job_num[32]; /* job given as a JSON number, as a string */
    char after_num[32];
    bool no_such_job;    /* `job` is a string that cannot be one of our ids */
    struct strict *text; /* the strict reading of the line: `message` */
    const char *body;    /* a submit's body: the text of `message` in the line */
    size_t body_len;     /* the body's length once compact */
};

static int fail(struct vctx *v, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct vctx *v, const char *code, const char *fmt, ...)
{
    va_list ap;
    v->code = code;
    va_start(ap, fmt);
    if (v->msg_size > 0)
        vsnprintf(v->msg, v->msg_size, fmt, ap);
    va_end(ap);
    return IPC_EINVAL;
}

/*
 * The strict reading of a line cJSON accepted. cJSON is lenient where the
 * text of `message` must not be, since that text is sent as written: it
 * takes any byte up to 0x20 for whitespace, raw control bytes inside
 * strings, and numbers strtod reads that JSON does not have ("01", "1.",
 * "-01", "1.e5"). And its strings are C strings: a "\u0000" would cut one
 * short. One pass over the line checks the grammar of RFC 8259, stops at
 * the first "\u0000" (noting where it is: the path of members and array
 * indexes) and notes the text of the first top-level member named
 * "message", the one cJSON_GetObjectItemCaseSensitive returns. Recursion
 * is bounded by IPC_MAX_DEPTH (shape_problem has checked the line before).
 */
enum strict_err { ST_OK, ST_SYNTAX, ST_NUL, ST_NUL_NAME };

/* One open object or array: its current member name or element index. */
struct strict_level {
    const char *name; /* raw text between the quotes; NULL before the first */
    size_t name_len;
    size_t index;
    bool array;
};

struct strict {
    const char *p, *end;
    int depth; /* open objects and arrays; level[1] is the request object */
    struct strict_level level[IPC_MAX_DEPTH + 1];
    bool in_msg;     /* inside the text of `message` */
    const char *msg; /* the text of `message`, or NULL */
    size_t msg_len;  /* its length */
    bool msg_ws;     /* whitespace between its tokens */
    enum strict_err err;
    const char *err_at; /* where the problem is */
};

static bool st_fail(struct strict *t, enum strict_err err, const char *at)
{
    t->err = err;
    t->err_at = at;
    return false;
}

static void st_ws(struct strict *t)
{
    const char *p = t->p;
    while (p < t->end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p != t->p && t->in_msg)
        t->msg_ws = true;
    t->p = p;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The value of 4 hex digits at p, or -1. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A string, t->p at its opening quote. A "\u0000" in it is the error
 * `nul`. Plain runs are skipped eight bytes at a time. */
static bool st_string(struct strict *t, enum strict_err nul)
{
    const char *p = t->p + 1, *end = t->end;
    for (;;) {
        p = json_scan_plain(p, end);
        if (p >= end)
            return st_fail(t, ST_SYNTAX, end);
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            t->p = p + 1;
            return true;
        }
        if (ch < 0x20)
            return st_fail(t, ST_SYNTAX, p); /* a raw control byte */
        if (ch != '\\') {
            p++;
            continue;
        }
        if (end - p < 2)
            return st_fail(t, ST_SYNTAX, p);
        if (p[1] == 'u') {
            long cp = end - p >= 6 ? hex4(p + 2) : -1;
            if (cp < 0)
                return st_fail(t, ST_SYNTAX, p);
            if (cp == 0)
                return st_fail(t, nul, p);
            p += 6;
        } else if (p[1] != '\0' && strchr("\"\\/bfnrt", p[1]) != NULL) {
            p += 2;
        } else {
            return st_fail(t, ST_SYNTAX, p);
        }
    }
}

static bool st_digits(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    bool any = p != *pp;
    *pp = p;
    return any;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool st_number(struct strict *t)
{
    const char *p = t->p, *end = t->end;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if (!st_digits(&p, end))
        return st_fail(t, ST_SYNTAX, p);
    if (p < end && *p == '.') {
        p++;
        if (!st_digits(&p, end))
            return st_fail(t, ST_SYNTAX, p);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!st_digits(&p, end))
            return st_fail(t, ST_SYNTAX, p);
    }
    t->p = p;
    return true;
}

static bool st_literal(struct strict *t, const char *word, size_t n)
{
    if ((size_t)(t->end - t->p) < n || memcmp(t->p, word, n) != 0)
        return st_fail(t, ST_SYNTAX, t->p);
    t->p += n;
    return true;
}

/*
 * Whether a member name, given as its raw text between the quotes, reads
 * `want` (ASCII) once its escapes are decoded, as cJSON compares names:
 * "mess\u0061ge" is "message".
 */
static bool name_is(const char *k, size_t n, const char *want)
{
    size_t i = 0, w = 0;
    while (i < n) {
        long ch = (unsigned char)k[i++];
        if (ch == '\\' && i < n) {
            char e = k[i++];
            if (e == 'u') {
                ch = i + 4 <= n ? hex4(k + i) : -1;
                i += 4;
            } else {
                static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
                const char *at = strchr(from, e);
                ch = at != NULL && e != '\0' ? to[at - from] : e;
            }
        }
        if (want[w] == '\0' || ch != (unsigned char)want[w])
            return false;
        w++;
    }
    return want[w] == '\0';
}

static bool st_value(struct strict *t);

/* An object or an array, t->p at its opening bracket. */
static bool st_container(struct strict *t, bool array)
{
    char close = array ? ']' : '}';
    if (t->depth >= IPC_MAX_DEPTH)
        return st_fail(t, ST_SYNTAX, t->p);
    struct strict_level *l = &t->level[++t->depth];
    l->name = NULL;
    l->name_len = 0;
    l->index = 0;
    l->array = array;
    t->p++;
    st_ws(t);
    if (t->p < t->end && *t->p == close) {
        t->p++;
        t->depth--;
        return true;
    }
    for (;;) {
        bool msg = false;
        if (!array) {
            const char *q = t->p;
            if (q >= t->end || *q != '"')
                return st_fail(t, ST_SYNTAX, q);
            if (!st_string(t, ST_NUL_NAME))
                return false;
            l->name = q + 1;
            l->name_len = (size_t)(t->p - q - 2);
            st_ws(t);
            if (t->p >= t->end || *t->p != ':')
                return st_fail(t, ST_SYNTAX, t->p);
            t->p++;
            st_ws(t);
            msg = t->depth == 1 && t->msg == NULL && name_is(l->name, l->name_len, "message");
        }
        const char *v = t->p;
        t->in_msg = t->in_msg || msg;
        if (!st_value(t))
            return false;
        if (msg) {
            t->in_msg = false;
            t->msg = v;
            t->msg_len = (size_t)(t->p - v);
        }
        st_ws(t);
        if (t->p < t->end && *t->p == ',') {
            t->p++;
            st_ws(t);
            l->index++;
            continue;
        }
        if (t->p < t->end && *t->p == close) {
            t->p++;
            t->depth--;
            return true;
        }
        return st_fail(t, ST_SYNTAX, t->p);
    }
}

static bool st_value(struct strict *t)
{
    if (t->p >= t->end)
        return st_fail(t, ST_SYNTAX, t->p);
    switch (*t->p) {
    case '{':
        return st_container(t, false);
    case '[':
        return st_container(t, true);
    case '"':
        return st_string(t, ST_NUL);
    case 't':
        return st_literal(t, "true", 4);
    case 'f':
        return st_literal(t, "false", 5);
    case 'n':
        return st_literal(t, "null", 4);
    default:
        return st_number(t);
    }
}

/* Reads line[0..len) strictly into t; false with t->err set on a problem. */
static bool strict_line(struct strict *t, const char *line, size_t len)
{
    t->p = line;
    t->end = line + len;
    t->msg = NULL;
    t->msg_len = 0;
    t->msg_ws = false;
    t->in_msg = false;
    t->depth = 0;
    t->err = ST_OK;
    t->err_at = NULL;
    st_ws(t);
    if (!st_value(t))
        return false;
    st_ws(t);
    if (t->p != t->end)
        return st_fail(t, ST_SYNTAX, t->p);
    return true;
}

/* Appends s[0..n) to the path in buf (of NUL_PATH_MAX + 1 bytes), cut on a
 * UTF-8 boundary at `max` bytes, and at the end of the room, with "...". */
static void path_put(char *buf, size_t *len, const char *s, size_t n, size_t max)
{
    bool cut = false;
    if (*len + 3 > NUL_PATH_MAX)
        return; /* cut already */
    if (n > max) {
        n = max;
        cut = true;
    }
    if (n > NUL_PATH_MAX - 3 - *len) {
        n = NUL_PATH_MAX - 3 - *len;
        cut = true;
    }
    while (cut && n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    memcpy(buf + *len, s, n);
    *len += n;
    if (cut) {
        memcpy(buf + *len, "...", 3);
        *len += 3;
    }
    buf[*len] = '\0';
}

/* The path of the first `levels` open levels of t: "message.to",
 * "message.components[0].text". Member names as written in the line. */
static void strict_path(const struct strict *t, int levels, char *buf)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int d = 1; d <= levels; d++) {
        const struct strict_level *l = &t->level[d];
        char idx[24];
        if (l->array) {
            int n = snprintf(idx, sizeof idx, "[%zu]", l->index);
            path_put(buf, &len, idx, (size_t)n, sizeof idx);
        } else {
            if (d > 1)
                path_put(buf, &len, ".", 1, 1);
            path_put(buf, &len, l->name, l->name_len, NUL_NAME_MAX);
        }
    }
}

/* The error of a line strict_line refused. *drop_id: the problem is in
 * the top-level "id" itself, which is then not echoed. */
static int strict_fail(struct vctx *v, const struct strict *t, const char *line, bool *drop_id)
{
    char path[NUL_PATH_MAX + 1];
    *drop_id = false;
    if (t->err == ST_SYNTAX)
        return fail(v, IPC_ERR_BAD_REQUEST, "invalid JSON at byte %zu", (size_t)(t->err_at - line));
    if (t->err == ST_NUL_NAME) {
        if (t->depth <= 1)
            return fail(v, IPC_ERR_VALIDATION, "member names must not contain NUL (\\u0000)");
        strict_path(t, t->depth - 1, path);
        return fail(v, IPC_ERR_VALIDATION, "member names in %s must not contain NUL (\\u0000)",
                    path);
    }
    *drop_id = t->depth == 1 && name_is(t->level[1].name, t->level[1].name_len, "id");
    strict_path(t, t->depth, path);
    return fail(v, IPC_ERR_VALIDATION, "%s must not contain NUL (\\u0000)", path);
}

/* Refuses a member the daemon reads that obj holds more than once: the
 * daemon would check and schedule by the first while the API, which gets
 * the body as given, may read the last. */
static int once(struct vctx *v, const cJSON *obj, const char *name, const char *path)
{
    int n = 0;

    for (const cJSON *c = obj != NULL ? obj->child : NULL; c != NULL; c = c->next)
        if (c->string != NULL && strcmp(c->string, name) == 0 && ++n > 1)
            return fail(v, IPC_ERR_VALIDATION, "%s appears more than once", path);
    return 0;
}

/* The member `name` of obj, NULL when absent or JSON null. */
static const cJSON *member(const cJSON *obj, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNull(it) ? NULL : it;
}

/* A string field with 1..max bytes. *out stays NULL when the field is
 * absent and not required. `path` is the name users see in messages. */
static int str_field(struct vctx *v, const cJSON *obj, const char *name, const char *path,
                     bool required, size_t max, const char **out)
{
    const cJSON *it = member(obj, name);
    *out = NULL;
    if (!it) {
        if (required)
            return fail(v, IPC_ERR_VALIDATION, "%s is required", path);
        return 0;
    }
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(v, IPC_ERR_VALIDATION, "%s must be a string", path);
    size_t n = strlen(it->valuestring);
    if (n == 0)
        return fail(v, IPC_ERR_VALIDATION, "%s must not be empty", path);
    if (n > max)
        return fail(v, IPC_ERR_VALIDATION, "%s longer than %zu bytes", path, max);
    *out = it->valuestring;
    return 0;
}

/* A sender id (phoneNumberId): a string field without control characters,
 * which would be taken into the daemon's log lines and the API's URL-less
 * body as given. */
static int id_field(struct vctx *v, const cJSON *obj, const char *name, const char *path,
                    bool required, const char **out)
{
    int rc = str_field(v, obj, name, path, required, IPC_MAX_ID_LEN, out);

    if (rc != 0 || *out == NULL)
        return rc;
    for (const unsigned char *p = (const unsigned char *)*out; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f)
            return fail(v, IPC_ERR_VALIDATION, "%s contains a control character", path);
    return 0;
}

/* A string field whose value is one of names[] (NULL-terminated). *idx is
 * -1 when absent and not required. */
static int enum_field(struct vctx *v, const cJSON *obj, const char *name, bool required,
                      const char *const *names, const char *list, int *idx)
{
    const cJSON *it = member(obj, name);
    *idx = -1;
    if (!it) {
        if (required)
            return fail(v, IPC_ERR_VALIDATION, "%s is required", name);
        return 0;
    }
    if (cJSON_IsString(it) && it->valuestring) {
        for (int i = 0; names[i]; i++) {
            if (strcmp(it->valuestring, names[i]) == 0) {
                *idx = i;
                return 0;
            }
        }
    }
    return fail(v, IPC_ERR_VALIDATION, "%s must be one of %s", name, list);
}

/* Whether s is a job id of the form the daemon gives out (ipc_request_t.job):
 * 1..20 digits without a leading zero ("0017" is not job "17"), at most
 * UINT64_MAX. */
static bool is_our_job_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JOB_MAX_DIGITS || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    /* 20 digits may overflow uint64: compare with its largest value. */
    return n < JOB_MAX_DIGITS || strcmp(s, "18446744073709551615") <= 0;
}

/* A job id given as a JSON number (clients that parsed "17" as a number):
 * a non-negative integer a double holds exactly, printed into numbuf.
 * Returns false for any other number. */
static bool job_number(const cJSON *it, char *numbuf, size_t numbuf_size)
{
    double d = it->valuedouble;
    if (!(d >= 0 && d <= JOB_MAX_NUMBER) || floor(d) != d)
        return false;
    snprintf(numbuf, numbuf_size, "%llu", (unsigned long long)d);
    return true;
}

/*
 * `job` of get, cancel and retry. The job id is a string, opaque to clients
 * (socket-protocol.md): a string that cannot be one of ours ("abc", 21
 * digits) is a job id that names no job, answered NOT_FOUND as the daemon
 * answers an unknown id of our form, not a malformed field. It is noted in
 * v->no_such_job, *out set (so that "exactly one of" counts it), and
 * answered once the rest of the request is valid: a request with another
 * fault gets that fault's error, whatever its job id. So the daemon only
 * ever sees ids of our form (ipc.h). VALIDATION_ERROR, naming the field but
 * never echoing its value: not a string (nor a number as job_number takes),
 * empty, or longer than IPC_MAX_KEY_LEN (no id is that long; the bound
 * keeps garbage out of the request block).
 */
static int job_field(struct vctx *v, const cJSON *obj, char *numbuf, size_t numbuf_size,
                     const char **out)
{
    const cJSON *it = member(obj, "job");
    *out = NULL;
    if (!it)
        return 0;
    if (cJSON_IsNumber(it)) {
        if (!job_number(it, numbuf, numbuf_size))
            return fail(v, IPC_ERR_VALIDATION, "job must be a job id (a string)");
        *out = numbuf;
        return 0;
    }
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(v, IPC_ERR_VALIDATION, "job must be a job id (a string)");
    size_t n = strlen(it->valuestring);
    if (n == 0)
        return fail(v, IPC_ERR_VALIDATION, "job must not be empty");
    if (n > IPC_MAX_KEY_LEN)
        return fail(v, IPC_ERR_VALIDATION, "job longer than %u bytes", IPC_MAX_KEY_LEN);
    if (!is_our_job_id(it->valuestring))
        v->no_such_job = true;
    *out = it->valuestring;
    return 0;
}

/*
 * `after` of list: a cursor, the `next` of an earlier page. Any id of our
 * form is a position (the page starts past it, whether or not that job
 * still exists), so there is no "not found" for a cursor; a string that is
 * not of our form has no position at all: VALIDATION_ERROR naming `after`.
 */
static int cursor_field(struct vctx *v, const cJSON *obj, char *numbuf, size_t numbuf_size,
                        const char **out)
{
    const cJSON *it = member(obj, "after");
    *out = NULL;
    if (!it)
        return 0;
    if (cJSON_IsNumber(it) && job_number(it, numbuf, numbuf_size)) {
        *out = numbuf;
        return 0;
    }
    if (!cJSON_IsString(it) || !it->valuestring || !is_our_job_id(it->valuestring))
        return fail(v, IPC_ERR_VALIDATION, "after must be a job id (a string of digits)");
    *out = it->valuestring;
    return 0;
}

/* An optional integer lo..hi; *out stays `dflt` when absent. */
static int int_field(struct vctx *v, const cJSON *obj, const char *name, int lo, int hi, int dflt,
                     int *out)
{
    const cJSON *it = member(obj, name);
    *out = dflt;
    if (!it)
        return 0;
    double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(d >= lo && d <= hi) || floor(d) != d)
        return fail(v, IPC_ERR_VALIDATION, "%s must be an integer from %d to %d", name, lo, hi);
    *out = (int)d;
    return 0;
}

/* An optional time: unix seconds from 0 to IPC_TIME_MAX; 0 when absent. */
static int time_field(struct vctx *v, const cJSON *obj, const char *name, double *out)
{
    const cJSON *it = member(obj, name);
    *out = 0;
    if (!it)
        return 0;
    double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(d >= 0 && d <= IPC_TIME_MAX))
        return fail(v, IPC_ERR_VALIDATION,
                    "%s must be a unix time in seconds from 0 to %.0f (the year 2100)", name,
                    IPC_TIME_MAX);
    *out = d;
    return 0;
}

static const char *const send_types[] = {"text", "media", "location", "interactive", "smart", NULL};
static const char *const media_types[] = {"image", "video", "audio", "document", NULL};
static const char *const priorities[] = {"high", "normal", "bulk", NULL};
static const char *const states[] = {"queued",  "sending",   "retrying",  "sent", "failed",
                                     "expired", "cancelled", "uncertain", NULL};
static const char *const retry_states[] = {"failed", "expired", "uncertain", NULL};

/* The body: the text of `message` that strict_line found (the member cJSON
 * returns: the first whose name reads "message"), compact. */
static int body_field(struct vctx *v)
{
    const struct strict *t = v->text;
    if (t->msg == NULL) {
        /* Not reached: both take the first member whose name reads
         * "message". Answered, not asserted: a client's line must never
         * stop the daemon. */
        v->code = IPC_ERR_INTERNAL;
        snprintf(v->msg, v->msg_size, "message not found in the line");
        return IPC_EINVAL;
    }
    v->body = t->msg;
    v->body_len = t->msg_ws ? json_compact(NULL, t->msg, t->msg_len) : t->msg_len;
    if (v->body_len > IPC_MAX_BODY)
        return fail(v, IPC_ERR_VALIDATION, "message larger than %u bytes", IPC_MAX_BODY);
    return 0;
}

static int v_submit(struct vctx *v, const cJSON *root, bool tmpl)
{
    ipc_submit_t *s = &v->r.submit;
    int idx, rc;

    if (tmpl) {
        const cJSON *t = member(root, "type");
        if (t && !(cJSON_IsString(t) && t->valuestring && strcmp(t->valuestring, "template") == 0))
            return fail(v, IPC_ERR_VALIDATION,
                        "type must be \"template\" or absent for template_send");
        s->type = IPC_TYPE_TEMPLATE;
    } else {
        if ((rc = enum_field(v, root, "type", true, send_types,
                             "text, media, location, interactive, smart", &idx)))
            return rc;
        s->type = (ipc_type_t)(IPC_TYPE_TEXT + idx);
    }

    const cJSON *msg = member(root, "message");
    if (!msg)
        return fail(v, IPC_ERR_VALIDATION, "message is required");
    if (!cJSON_IsObject(msg))
        return fail(v, IPC_ERR_VALIDATION, "message must be an object");
    /* The fields this type's checks read (the others pass through as
     * given, repeated names included). */
    if ((rc = once(v, msg, "phoneNumberId", "message.phoneNumberId")) ||
        (rc = once(v, msg, "to", "message.to")) ||
        (s->type == IPC_TYPE_TEXT && (rc = once(v, msg, "text", "message.text"))) ||
        (s->type == IPC_TYPE_MEDIA && (rc = once(v, msg, "media", "message.media"))) ||
        (s->type == IPC_TYPE_TEMPLATE &&
         (rc = once(v, msg, "templateName", "message.templateName"))))
        return rc;
    if ((rc =
             id_field(v, msg, "phoneNumberId", "message.phoneNumberId", true, &s->phone_number_id)))
        return rc;
    const cJSON *to = member(msg, "to");
    if (!to)
        return fail(v, IPC_ERR_VALIDATION, "message.to is required");
    if (!cJSON_IsString(to) || !to->valuestring)
        return fail(v, IPC_ERR_VALIDATION, "message.to must be a string");
    if (strlen(to->valuestring) > IPC_MAX_ID_LEN)
        return fail(v, IPC_ERR_VALIDATION, "message.to longer than %d bytes", IPC_MAX_ID_LEN);
    if (!strpbrk(to->valuestring, "0123456789"))
        return fail(v, IPC_ERR_VALIDATION, "message.to must contain a digit");
    s->to = to->valuestring;

    const char *unused;
    if (s->type == IPC_TYPE_TEXT) {
        if ((rc = str_field(v, msg, "text", "message.text", true, SIZE_MAX, &unused)))
            return rc;
    } else if (s->type == IPC_TYPE_MEDIA) {
        const cJSON *media = member(msg, "media");
        if (!media)
            return fail(v, IPC_ERR_VALIDATION, "message.media is required");
        if (!cJSON_IsObject(media))
            return fail(v, IPC_ERR_VALIDATION, "message.media must be an object");
        if ((rc = once(v, media, "type", "message.media.type")) ||
            (rc = once(v, media, "mediaId", "message.media.mediaId")))
            return rc;
        const cJSON *mt = member(media, "type");
        if (!mt)
            return fail(v, IPC_ERR_VALIDATION, "message.media.type is required");
        bool ok = false;
        for (int i = 0; !ok && media_types[i] && cJSON_IsString(mt) && mt->valuestring; i++)
            ok = strcmp(mt->valuestring, media_types[i]) == 0;
        if (!ok)
            return fail(v, IPC_ERR_VALIDATION,
                        "message.media.type must be one of image, video, audio, document");
        if ((rc = str_field(v, media, "mediaId", "message.media.mediaId", true, SIZE_MAX, &unused)))
            return rc;
    } else if (s->type == IPC_TYPE_TEMPLATE) {
        if ((rc = str_field(v, msg, "templateName", "message.templateName", true, SIZE_MAX,
                            &unused)))
            return rc;
    }

    if ((rc = str_field(v, root, "idempotencyKey", "idempotencyKey", false, IPC_MAX_KEY_LEN,
                        &s->idempotency_key)) ||
        (rc = str_field(v, root, "campaign", "campaign", false, IPC_MAX_KEY_LEN, &s->campaign)) ||
        (rc = str_field(v, root, "orderKey", "orderKey", false, IPC_MAX_KEY_LEN, &s->order_key)))
        return rc;
    if ((rc = enum_field(v, root, "priority", false, priorities, "high, normal, bulk", &idx)))
        return rc;
    s->priority = idx < 0 ? IPC_PRIO_NORMAL : (ipc_priority_t)(IPC_PRIO_HIGH + idx);
    if ((rc = time_field(v, root, "notBefore", &s->not_before)) ||
        (rc = time_field(v, root, "expiresAt", &s->expires_at)) ||
        (rc = int_field(v, root, "maxAttempts", 1, 1000, 0, &s->max_attempts)))
        return rc;
    if (s->expires_at > 0 && s->not_before > s->expires_at)
        return fail(v, IPC_ERR_VALIDATION,
                    "notBefore is after expiresAt: the job could never be sent");
    return body_field(v);
}

static int campaign_field(struct vctx *v, const cJSON *root, bool required)
{
    return str_field(v, root, "campaign", "campaign", required, IPC_MAX_KEY_LEN, &v->r.campaign);
}

static int v_get(struct vctx *v, const cJSON *root)
{
    int rc;
    if ((rc = job_field(v, root, v->job_num, sizeof v->job_num, &v->r.job)) ||
        (rc = str_field(v, root, "idempotencyKey", "idempotencyKey", false, IPC_MAX_KEY_LEN,
                        &v->r.idempotency_key)))
        return rc;
    if (!v->r.job == !v->r.idempotency_key)
        return fail(v, IPC_ERR_VALIDATION, "exactly one of job, idempotencyKey is required");
    return 0;
}

static int v_list(struct vctx *v, const cJSON *root)
{
    int rc, idx;
    if ((rc = campaign_field(v, root, true)))
        return rc;
    if ((rc = enum_field(v, root, "state", false, states,
                         "queued, sending, retrying, sent, failed, expired, cancelled, uncertain",
                         &idx)))
        return rc;
    v->r.state = idx < 0 ? NULL : states[idx];
    if ((rc = cursor_field(v, root, v->after_num, sizeof v->after_num, &v->r.after)))
        return rc;
    return int_field(v, root, "limit", 1, 1000, 100, &v->r.limit);
}

static int v_cancel(struct vctx *v, const cJSON *root)
{
    int rc;
    if ((rc = job_field(v, root, v->job_num, sizeof v->job_num, &v->r.job)) ||
        (rc = campaign_field(v, root, false)))
        return rc;
    if (!v->r.job == !v->r.campaign)
        return fail(v, IPC_ERR_VALIDATION, "exactly one of job, campaign is required");
    return 0;
}

static int v_pause(struct vctx *v, const cJSON *root)
{
    int rc;
    if ((rc = campaign_field(v, root, false)) ||
        (rc = id_field(v, root, "phoneNumberId", "phoneNumberId", false, &v->r.phone_number_id)))
        return rc;
    const cJSON *all = member(root, "all");
    if (all && !cJSON_IsBool(all))
        return fail(v, IPC_ERR_VALIDATION, "all must be a boolean");
    v->r.all = cJSON_IsTrue(all);
    int n = (v->r.campaign != NULL) + (v->r.phone_number_id != NULL) + v->r.all;
    if (n != 1)
        return fail(v, IPC_ERR_VALIDATION,
                    "exactly one of campaign, phoneNumberId, all:true is required");
    return 0;
}

static int v_retry(struct vctx *v, const cJSON *root)
{
    int rc, idx = 0;
    if ((rc = job_field(v, root, v->job_num, sizeof v->job_num, &v->r.job)) ||
        (rc = campaign_field(v, root, false)))
        return rc;
    if (!v->r.job == !v->r.campaign)
        return fail(v, IPC_ERR_VALIDATION, "exactly one of job, campaign is required");
    if (v->r.campaign) {
        if ((rc = enum_field(v, root, "state", true, retry_states, "failed, expired, uncertain",
                             &idx)))
            return rc;
        /* A required enum_field that returns 0 has set idx. */
        v->r.state = retry_states[idx]; /* NOLINT(clang-analyzer-core.uninitialized.Assign) */
    }
    return 0;
}

static const struct {
    const char *name;
    ipc_op_t op;
} op_table[] = {
    {"send", IPC_OP_SEND},         {"template_send", IPC_OP_TEMPLATE_SEND},
    {"get", IPC_OP_GET},           {"list", IPC_OP_LIST},
    {"campaign", IPC_OP_CAMPAIGN}, {"cancel", IPC_OP_CANCEL},
    {"pause", IPC_OP_PAUSE},       {"resume", IPC_OP_RESUME},
    {"retry", IPC_OP_RETRY},       {"stats", IPC_OP_STATS},
    {"watch", IPC_OP_WATCH},       {"ping", IPC_OP_PING},
};

static int v_op(struct vctx *v, const cJSON *root)
{
    const cJSON *op = member(root, "op");
    if (!op)
        return fail(v, IPC_ERR_VALIDATION, "op is required");
    if (!cJSON_IsString(op) || !op->valuestring)
        return fail(v, IPC_ERR_VALIDATION, "op must be a string");
    for (size_t i = 0; i < sizeof op_table / sizeof op_table[0]; i++) {
        if (strcmp(op->valuestring, op_table[i].name) == 0) {
            v->r.op = op_table[i].op;
            break;
        }
    }
    switch (v->r.op) {
    case IPC_OP_SEND:
        return v_submit(v, root, false);
    case IPC_OP_TEMPLATE_SEND:
        return v_submit(v, root, true);
    case IPC_OP_GET:
        return v_get(v, root);
    case IPC_OP_LIST:
        return v_list(v, root);
    case IPC_OP_CAMPAIGN:
        return campaign_field(v, root, true);
    case IPC_OP_CANCEL:
        return v_cancel(v, root);
    case IPC_OP_PAUSE:
    case IPC_OP_RESUME:
        return v_pause(v, root);
    case IPC_OP_RETRY:
        return v_retry(v, root);
    case IPC_OP_WATCH:
        return campaign_field(v, root, false);
    case IPC_OP_STATS:
    case IPC_OP_PING:
        return 0;
    }
    /* Unknown: name it, but bounded and cut on a UTF-8 boundary. */
    size_t n = strlen(op->valuestring);
    if (n > 64) {
        n = 64;
        while (n > 0 && ((unsigned char)op->valuestring[n] & 0xC0) == 0x80)
            n--;
    }
    return fail(v, IPC_ERR_VALIDATION, "unknown op \"%.*s\"", (int)n, op->valuestring);
}

/* A cheap linear scan of the structure outside strings, before cJSON builds
 * a tree: 1 when the nesting of [ and { is deeper than IPC_MAX_DEPTH (it
 * bounds cJSON's recursion), 2 when there is more structure than
 * IPC_MAX_STRUCTURE (it bounds the tree's size), else 0. */
static int shape_problem(const char *p, size_t n)
{
    int depth = 0;
    size_t structure = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > IPC_MAX_DEPTH)
                return 1;
            if (++structure > IPC_MAX_STRUCTURE)
                return 2;
        } else if (ch == ']' || ch == '}') {
            depth--;
        } else if (ch == ',' || ch == ':') {
            if (++structure > IPC_MAX_STRUCTURE)
                return 2;
        }
    }
    return 0;
}

/* Skips one member value at the top level of a refused line, t->p at its
 * first byte, up to the ',' or '}' after it. Not recursive (the line may
 * nest without bound) and lax about all but strings, whose ends it must
 * find; false at a bad string or the end of the text. */
static bool skip_member_value(struct strict *t)
{
    size_t depth = 0;

    while (t->p < t->end) {
        char ch = *t->p;
        if (ch == '"') {
            if (!st_string(t, ST_NUL))
                return false;
            continue;
        }
        if ((ch == ',' || ch == '}' || ch == ']') && depth == 0)
            return true;
        if (ch == '[' || ch == '{')
            depth++;
        else if (ch == ']' || ch == '}')
            depth--;
        t->p++;
    }
    return false;
}

/* The value of a refused line's "id", t->p at it: a string, a number or
 * null, complete (a ',' or '}' after it) and valid, as compact JSON the
 * way id_json writes it (a string decoded and escaped again, a number as
 * written); malloc'ed, or NULL. */
static char *recovered_id(struct strict *t, size_t *out_len)
{
    const char *v = t->p;
    bool ok;

    if (v >= t->end)
        return NULL;
    if (*v == '"')
        ok = st_string(t, ST_NUL);
    else if (*v == '-' || (*v >= '0' && *v <= '9'))
        ok = st_number(t);
    else
        ok = st_literal(t, "null", 4);
    size_t n = (size_t)(t->p - v);
    st_ws(t);
    if (!ok || t->p >= t->end || (*t->p != ',' && *t->p != '}') || utf8_check(v, n) < n)
        return NULL;
    if (*v != '"') {
        char *o = malloc(n + 1);
        if (o != NULL) {
            memcpy(o, v, n);
            o[n] = '\0';
            *out_len = n;
        }
        return o;
    }
    /* cJSON decodes it (and refuses a lone surrogate), as for a parsed id. */
    cJSON *s = cJSON_ParseWithLength(v, n);
    char *o = NULL;
    if (cJSON_IsString(s)) {
        size_t m = ipc__json_escape(NULL, s->valuestring, strlen(s->valuestring));
        if ((o = malloc(m + 1)) != NULL) {
            ipc__json_escape(o, s->valuestring, strlen(s->valuestring));
            o[m] = '\0';
            *out_len = m;
        }
    }
    cJSON_Delete(s);
    return o;
}

char *ipc__recover_id(const char *line, size_t len, size_t *out_len)
{
    struct strict t;

    memset(&t, 0, sizeof t);
    t.p = line;
    t.end = line + len;
    st_ws(&t);
    if (t.p >= t.end || *t.p != '{')
        return NULL;
    t.p++;
    for (;;) {
        st_ws(&t);
        const char *k = t.p;
        if (k >= t.end || *k != '"' || !st_string(&t, ST_NUL_NAME))
            return NULL;
        /* The first member whose name reads "id", as cJSON would pick. */
        bool is_id = name_is(k + 1, (size_t)(t.p - k - 2), "id");
        st_ws(&t);
        if (t.p >= t.end || *t.p != ':')
            return NULL;
        t.p++;
        st_ws(&t);
        if (is_id)
            return recovered_id(&t, out_len);
        if (!skip_member_value(&t) || *t.p != ',')
            return NULL;
        t.p++;
    }
}

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/*
 * Finds the text of the number given as the top-level "id" in a line that
 * cJSON parsed, so that the echo is exactly what the client sent (a double
 * would turn 12345678901234567890 into 1.2345678901234567e+19). Returns
 * false when not found as plain text (an escaped key, say); the caller then
 * prints the parsed value.
 */
static bool raw_number_id(const char *p, size_t n, double want, const char **out, size_t *out_len)
{
    int depth = 0;
    bool expect_key = false;
    size_t i = 0;
    while (i < n) {
        char ch = p[i];
        if (ch != '"') {
            if (ch == '{' || ch == '[') {
                depth++;
                expect_key = ch == '{' && depth == 1;
            } else if (ch == '}' || ch == ']') {
                depth--;
            } else if (ch == ',' && depth == 1) {
                expect_key = true;
            }
            i++;
            continue;
        }
        size_t ks = ++i;
        while (i < n && p[i] != '"')
            i += p[i] == '\\' ? 2 : 1;
        size_t ke = i++;
        if (depth != 1 || !expect_key)
            continue;
        expect_key = false;
        if (ke - ks != 2 || memcmp(p + ks, "id", 2) != 0)
            continue;
        while (i < n && is_ws(p[i]))
            i++;
        if (i < n && p[i] == ':')
            i++;
        while (i < n && is_ws(p[i]))
            i++;
        size_t vs = i;
        while (i < n && p[i] && strchr("+-.0123456789eE", p[i]))
            i++;
        if (i == vs)
            return false;
        /* Any length the line allows: a long number is echoed as written
         * too (a double would print 1e+64, or null past its range). */
        char small[72], *tmp = i - vs < sizeof small ? small : malloc(i - vs + 1);
        if (tmp == NULL)
            return false;
        memcpy(tmp, p + vs, i - vs);
        tmp[i - vs] = '\0';
        double got = strtod(tmp, NULL);
        if (tmp != small)
            free(tmp);
        if (got != want) /* not the member cJSON chose */
            return false;
        *out = p + vs;
        *out_len = i - vs;
        return true;
    }
    return false;
}

/* Writes the compact JSON of an id (a string, a number or null) into dst,
 * or measures it when dst is NULL. A number is echoed as written when found
 * in line[0..len). */
static size_t id_json(char *dst, const cJSON *id, const char *line, size_t len)
{
    if (cJSON_IsString(id))
        return ipc__json_escape(dst, id->valuestring, strlen(id->valuestring));
    if (cJSON_IsNull(id)) {
        if (dst)                    /* the caller terminates it */
            memcpy(dst, "null", 4); /* NOLINT(bugprone-not-null-terminated-result) */
        return 4;
    }
    const char *raw;
    size_t raw_len;
    if (raw_number_id(line, len, id->valuedouble, &raw, &raw_len)) {
        if (dst)
            memcpy(dst, raw, raw_len);
        return raw_len;
    }
    char tmp[40];
    double d = id->valuedouble;
    int n;
    if (!isfinite(d)) {
        n = snprintf(tmp, sizeof tmp, "null");
    } else {
        /* The shortest of 15 or 17 significant digits that reads back the
         * same, as cJSON prints numbers. */
        n = snprintf(tmp, sizeof tmp, "%1.15g", d);
        if (strtod(tmp, NULL) != d)
            n = snprintf(tmp, sizeof tmp, "%1.17g", d);
    }
    if (dst)
        memcpy(dst, tmp, (size_t)n);
    return (size_t)n;
}

/* Offsets of the string fields of ipc_request_t that are copied into the
 * block (submit.body is handled on its own). */
static const size_t str_fields[] = {
    offsetof(ipc_request_t, submit.phone_number_id),
    offsetof(ipc_request_t, submit.to),
    offsetof(ipc_request_t, submit.idempotency_key),
    offsetof(ipc_request_t, submit.campaign),
    offsetof(ipc_request_t, submit.order_key),
    offsetof(ipc_request_t, job),
    offsetof(ipc_request_t, idempotency_key),
    offsetof(ipc_request_t, campaign),
    offsetof(ipc_request_t, state),
    offsetof(ipc_request_t, after),
    offsetof(ipc_request_t, phone_number_id),
};

static const char **str_slot(ipc_request_t *r, size_t off)
{
    return (const char **)(void *)((char *)r + off);
}

/* Copies the validated request, its strings, body and id into one block. */
static struct ipc_req *build_block(struct vctx *v, const cJSON *id, const char *line, size_t len)
{
    size_t nf = sizeof str_fields / sizeof str_fields[0];
    size_t lens[sizeof str_fields / sizeof str_fields[0]];
    size_t total = sizeof(struct ipc_req);
    for (size_t i = 0; i < nf; i++) {
        const char *s = *str_slot(&v->r, str_fields[i]);
        lens[i] = s ? strlen(s) : 0;
        total += s ? lens[i] + 1 : 0;
    }
    if (v->body)
        total += v->body_len + 1;
    size_t idn = id ? id_json(NULL, id, line, len) : 0;
    total += id ? idn + 1 : 0;

    struct ipc_req *b = malloc(total);
    if (!b)
        return NULL;
    memset(b, 0, sizeof *b);
    b->block_size = total;
    b->request = v->r;
    char *p = (char *)(b + 1);
    for (size_t i = 0; i < nf; i++) {
        const char **slot = str_slot(&b->request, str_fields[i]);
        if (!*slot)
            continue;
        memcpy(p, *slot, lens[i] + 1);
        *slot = p;
        p += lens[i] + 1;
    }
    if (v->body) {
        if (v->text->msg_ws)
            json_compact(p, v->body, v->text->msg_len);
        else
            memcpy(p, v->body, v->body_len);
        p[v->body_len] = '\0';
        b->request.submit.body = p;
        b->request.submit.body_len = v->body_len;
        p += v->body_len + 1;
    }
    if (id) {
        id_json(p, id, line, len);
        p[idn] = '\0';
        b->id_json = p;
        b->id_len = idn;
    }
    return b;
}

int ipc__parse_slow(const char *line, size_t len, bool nul_terminated, struct ipc_req **out,
                    char **err_id, size_t *err_id_len, const char **code, char *msg,
                    size_t msg_size)
{
    struct vctx v;
    struct strict text;
    char *copy = NULL;
    cJSON *root = NULL;
    const cJSON *id = NULL;
    size_t bad;
    int rc;

    memset(&v, 0, sizeof v);
    v.msg = msg;
    v.msg_size = msg_size;
    if (msg_size > 0)
        msg[0] = '\0';
    *out = NULL;
    *err_id = NULL;
    *err_id_len = 0;

    /* JSON text never holds a raw NUL (inside strings it must be escaped);
     * cJSON would stop at one and take the rest for trailing whitespace. */
    if (memchr(line, '\0', len) != NULL) {
        rc = fail(&v, IPC_ERR_BAD_REQUEST, "invalid JSON: NUL byte at byte %zu",
                  (size_t)((const char *)memchr(line, '\0', len) - line));
        goto done;
    }
    /* Lines are UTF-8 (socket-protocol.md), and the body is sent as given:
     * cJSON checks no encoding. */
    if ((bad = utf8_check(line, len)) < len) {
        rc = fail(&v, IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte %zu", bad);
        goto done;
    }
    switch (shape_problem(line, len)) {
    case 1:
        rc = fail(&v, IPC_ERR_BAD_REQUEST, "nesting deeper than %d", IPC_MAX_DEPTH);
        *err_id = ipc__recover_id(line, len, err_id_len);
        goto done;
    case 2:
        rc = fail(&v, IPC_ERR_BAD_REQUEST,
                  "more than %d JSON values, keys and containers in one line", IPC_MAX_STRUCTURE);
        *err_id = ipc__recover_id(line, len, err_id_len);
        goto done;
    default:
        break;
    }
    /* cJSON reads up to a terminating NUL; give it one, copying only when
     * the caller's buffer has none. */
    if (!nul_terminated) {
        copy = malloc(len + 1);
        if (!copy) {
            rc = UV_ENOMEM;
            v.code = IPC_ERR_INTERNAL;
            snprintf(msg, msg_size, "out of memory");
            goto done;
        }
        memcpy(copy, line, len);
        copy[len] = '\0';
        line = copy;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(line, len + 1, &end, true);
    /* An embedded NUL ends cJSON's view early: the whole line must be used. */
    if (!root || end != line + len) {
        if (root || !end || end < line || end > line + len)
            rc = fail(&v, IPC_ERR_BAD_REQUEST, "invalid JSON");
        else
            rc = fail(&v, IPC_ERR_BAD_REQUEST, "invalid JSON at byte %zu", (size_t)(end - line));
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        rc = fail(&v, IPC_ERR_BAD_REQUEST, "request must be a JSON object");
        goto done;
    }
    /* Not member(): a null id is echoed (as null), not taken for absent. */
    id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (id && !cJSON_IsString(id) && !cJSON_IsNumber(id) && !cJSON_IsNull(id)) {
        id = NULL;
        rc = fail(&v, IPC_ERR_VALIDATION, "id must be a string or a number");
        goto done;
    }
    if (!strict_line(&text, line, len)) {
        bool drop_id;
        rc = strict_fail(&v, &text, line, &drop_id);
        if (drop_id || text.err == ST_SYNTAX)
            id = NULL; /* not JSON: no id, as for what cJSON refuses */
        goto done;
    }
    v.text = &text;
    rc = v_op(&v, root);
    if (rc == 0 && v.no_such_job) /* see job_field */
        rc = fail(&v, IPC_ERR_NOT_FOUND, IPC_MSG_NO_SUCH_JOB);
    if (rc)
        goto done;
    *out = build_block(&v, id, line, len);
    if (!*out) {
        rc = UV_ENOMEM;
        v.code = IPC_ERR_INTERNAL;
        snprintf(msg, msg_size, "out of memory");
    }

done:
    if (rc && id) {
        size_t n = id_json(NULL, id, line, len);
        *err_id = malloc(n + 1);
        if (*err_id) {
            id_json(*err_id, id, line, len);
            (*err_id)[n] = '\0';
            *err_id_len = n;
        }
    }
    *code = rc ? v.code : NULL;
    cJSON_Delete(root);
    free(copy);
    return rc;
}

int ipc__parse(const char *line, size_t len, bool nul_terminated, struct ipc_req **out,
               char **err_id, size_t *err_id_len, const char **code, char *msg, size_t msg_size)
{
    struct ipc_req *b = ipc__parse_fast(line, len);
    if (!b)
        return ipc__parse_slow(line, len, nul_terminated, out, err_id, err_id_len, code, msg,
                               msg_size);
    if (msg_size > 0)
        msg[0] = '\0';
    *out = b;
    *err_id = NULL;
    *err_id_len = 0;
    *code = NULL;
    return 0;
}

int ipc_request_parse(const char *line, size_t len, ipc_request_t **out, char **id_json_out,
                      const char **code, char *msg, size_t msg_size)
{
    struct ipc_req *b = NULL;
    char *err_id = NULL;
    size_t err_id_len;
    const char *c = NULL;

    *out = NULL;
    if (id_json_out)
        *id_json_out = NULL;
    int rc = ipc__parse(line, len, false, &b, &err_id, &err_id_len, &c, msg, msg_size);
    if (code)
        *code = c;
    if (rc) {
        if (id_json_out)
            *id_json_out = err_id;
        else
            free(err_id);
        return rc;
    }
    /* ipc__parse sets b whenever it returns 0. */
    if (id_json_out && b->id_json) { /* NOLINT(clang-analyzer-core.NullDereference) */
        *id_json_out = strdup(b->id_json);
        if (!*id_json_out) {
            free(b);
            if (code)
                *code = IPC_ERR_INTERNAL;
            snprintf(msg, msg_size, "out of memory");
            return UV_ENOMEM;
        }
    }
    *out = &b->request;
    return 0;
}

void ipc_request_free(ipc_request_t *req)
{
    if (!req)
        return;
    free((char *)req - offsetof(struct ipc_req, request));
}
