/*
 * fastreq.c - the ingest fast path: a single-pass scanner for the common
 * shape of a send/template_send line, producing (in its one allocation) the
 * very block the cJSON path (request.c) would.
 *
 * It only ever says "valid, here is the block" or "not sure". Anything it
 * does not fully understand - another op, an unknown or repeated top-level
 * key, a repeated key it validates, a backslash or a control byte inside a
 * string, bytes that are not UTF-8, a number that is not strict JSON or is
 * longer than FAST_MAX_NUM, deep nesting, any validation failure - is "not
 * sure", and the caller parses the line again the slow way, so that every
 * error code and message comes from one place.
 *
 * Why the output is the same: with no escapes, a string's value is its raw
 * bytes, as cJSON decodes it (and a "\u0000", which cJSON would cut a
 * string at and the slow path refuses, is an escape: never taken here); a
 * strict JSON number gets strtod's value, as in cJSON; and the body is, in
 * both paths, the text of `message` without the whitespace between tokens
 * (json_compact), numbers as they are spelled. Strings are checked for
 * UTF-8 where a byte >= 0x80 stops the word scan, with the definition the
 * slow path checks whole lines with (util/utf8.h). tests/unit/ipc/diff_test.c
 * and the request fuzz target check both paths against each other.
 */
#include "ipc_int.h"
#include "json_scan.h"
#include "utf8.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Nesting this scanner follows before it gives up (below IPC_MAX_DEPTH). */
#define FAST_MAX_DEPTH 32
/* Longest line it takes: a longer one goes to the slow path, which bounds
 * its structure (IPC_MAX_STRUCTURE; this many bytes hold less of it). */
#define FAST_MAX_LINE (64u * 1024u)
/* Longest number it converts (cJSON reads at most 63 characters). */
#define FAST_MAX_NUM 48

/* A scanned value. */
enum fkind { FK_NONE = 0, FK_STR, FK_NUM, FK_NULL, FK_OBJ, FK_OTHER };

/* A key to capture, by its raw text. */
struct fkey {
    const char *name;
    size_t len;
};

struct fval {
    enum fkind kind;
    const char *s; /* string: its bytes (no quotes); number: its text */
    size_t n;
};

struct fscan {
    const char *p;
    const char *end;
    bool ws;          /* whitespace seen inside `message` (to drop from the body) */
    const char *body; /* the text of `message`, once scanned */
    const char *body_end;
};

/* Top-level keys of a submit: indexes of their capture slots. */
enum {
    K_OP,
    K_ID,
    K_TYPE,
    K_MESSAGE,
    K_IDEM,
    K_CAMPAIGN,
    K_ORDER_KEY,
    K_PRIORITY,
    K_NOT_BEFORE,
    K_EXPIRES_AT,
    K_MAX_ATTEMPTS,
    K_COUNT
};

static const struct fkey top_keys[K_COUNT] = {
    [K_OP] = {"op", 2},
    [K_ID] = {"id", 2},
    [K_TYPE] = {"type", 4},
    [K_MESSAGE] = {"message", 7},
    [K_IDEM] = {"idempotencyKey", 14},
    [K_CAMPAIGN] = {"campaign", 8},
    [K_ORDER_KEY] = {"orderKey", 8},
    [K_PRIORITY] = {"priority", 8},
    [K_NOT_BEFORE] = {"notBefore", 9},
    [K_EXPIRES_AT] = {"expiresAt", 9},
    [K_MAX_ATTEMPTS] = {"maxAttempts", 11},
};

/* Keys of `message` that validation reads. */
enum { M_PHONE, M_TO, M_TEXT, M_TEMPLATE, M_MEDIA, M_COUNT };

static const struct fkey msg_keys[M_COUNT] = {
    [M_PHONE] = {"phoneNumberId", 13},   [M_TO] = {"to", 2},       [M_TEXT] = {"text", 4},
    [M_TEMPLATE] = {"templateName", 12}, [M_MEDIA] = {"media", 5},
};

static bool f_is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Skips whitespace; returns true when some was skipped. Compact lines
 * have none: one test, inlined, in the common case. */
static inline bool skip_ws(struct fscan *f)
{
    if (f->p >= f->end || !f_is_ws(*f->p))
        return false;
    do
        f->p++;
    while (f->p < f->end && f_is_ws(*f->p));
    return true;
}

/* Skips whitespace; inside `message` notes that there was some. */
static inline void skip_ws_in(struct fscan *f, bool in_msg)
{
    if (skip_ws(f) && in_msg)
        f->ws = true;
}

/* After a member or an element: 1 at `close` (consumed), 0 after a ','
 * (consumed, and the whitespace after it), -1 at anything else. */
static int scan_sep(struct fscan *f, char close, bool in_msg)
{
    skip_ws_in(f, in_msg);
    if (f->p >= f->end)
        return -1;
    if (*f->p == close) {
        f->p++;
        return 1;
    }
    if (*f->p != ',')
        return -1;
    f->p++;
    skip_ws_in(f, in_msg);
    return 0;
}

/* A string of UTF-8 without escapes or control bytes; f->p at its opening
 * quote. ASCII runs are skipped eight bytes at a time; a byte >= 0x80 stops
 * the skip and its sequence is checked, so pure ASCII costs nothing more. */
static bool scan_str(struct fscan *f, const char **s, size_t *n)
{
    const char *p = f->p + 1, *end = f->end;
    const char *start = p;

    for (;;) {
        p = json_scan_plain_ascii(p, end);
        if (p >= end)
            return false;
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            *s = start;
            *n = (size_t)(p - start);
            f->p = p + 1;
            return true;
        }
        if (ch >= 0x80) {
            size_t k = utf8_seq_len(p, end);
            if (k == 0)
                return false; /* not UTF-8: the slow path names the byte */
            p += k;
        } else if (ch == '\\' || ch < 0x20) {
            return false;
        } else {
            p++;
        }
    }
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/*
 * A strict JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, of at
 * most FAST_MAX_NUM characters.
 */
static bool scan_num(struct fscan *f, const char **s, size_t *n)
{
    const char *p = f->p, *end = f->end, *start = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p))
        return false;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p))
            p++;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p))
            p++;
    }
    *s = start;
    *n = (size_t)(p - start);
    f->p = p;
    return *n <= FAST_MAX_NUM;
}

/*
 * The value of a strict number, as strtod gives it (cJSON uses strtod).
 * Without an exponent and with at most 15 digits, the digits are an exact
 * integer m below 2^53 and the value is m / 10^k with k <= 15: both exact
 * doubles, so one correctly rounded division gives the correctly rounded
 * result, as strtod does (Clinger's fast path). Else strtod itself.
 */
static double num_value(const char *s, size_t n)
{
    static const double pow10[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    const char *p = s, *end = s + n;
    bool neg = p < end && *p == '-';
    uint64_t m = 0;
    int ndig = 0, frac = -1;
    for (p += neg; p < end; p++) {
        if (*p == '.') {
            frac = 0;
            continue;
        }
        if (!is_digit(*p) || ++ndig > 15)
            break;
        m = m * 10 + (uint64_t)(*p - '0');
        frac += frac >= 0;
    }
    if (p == end) {
        double d = (double)m / pow10[frac > 0 ? frac : 0];
        return neg ? -d : d;
    }
    char tmp[FAST_MAX_NUM + 1];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return strtod(tmp, NULL);
}

static bool lit(struct fscan *f, const char *word, size_t n)
{
    if ((size_t)(f->end - f->p) < n || memcmp(f->p, word, n) != 0)
        return false;
    f->p += n;
    return true;
}

static bool scan_value(struct fscan *f, int depth, bool in_msg, struct fval *v);

/* What scan_obj captures of one object: the values of `keys` into slots
 * (a repeated one is "not sure"); `nested` (or -1) is the index of a key
 * whose object value is scanned with `sub`. `strict`: any other key is "not
 * sure". `body`: this object is `message`, its text recorded in the scan. */
typedef struct fobj {
    const struct fkey *keys;
    int nkeys;
    struct fval *slots;
    int nested;
    const struct fobj *sub;
    bool strict;
    bool body;
} fobj_t;

static bool key_is(const fobj_t *o, int i, const char *k, size_t kn)
{
    return o->keys[i].len == kn && memcmp(o->keys[i].name, k, kn) == 0;
}

/* The members of an object (at `depth`), f->p at its '{'; `o` (or NULL)
 * says what to capture. */
static bool scan_obj(struct fscan *f, int depth, bool in_msg, const fobj_t *o)
{
    if (depth > FAST_MAX_DEPTH)
        return false;
    f->p++;
    skip_ws_in(f, in_msg);
    if (f->p < f->end && *f->p == '}') {
        f->p++;
        return true;
    }
    for (;;) {
        const char *k;
        size_t kn;
        if (f->p >= f->end || *f->p != '"' || !scan_str(f, &k, &kn))
            return false;
        skip_ws_in(f, in_msg);
        if (f->p >= f->end || *f->p != ':')
            return false;
        f->p++;
        skip_ws_in(f, in_msg);
        int slot = -1;
        for (int i = 0; o && i < o->nkeys; i++) {
            if (key_is(o, i, k, kn)) {
                slot = i;
                break;
            }
        }
        if (slot < 0 && o && o->strict)
            return false; /* an unknown key */
        struct fval tmp = {FK_NONE, NULL, 0};
        struct fval *v = slot >= 0 ? &o->slots[slot] : &tmp;
        if (slot >= 0 && v->kind != FK_NONE)
            return false; /* cJSON takes the first of repeated keys: leave it to it */
        if (slot >= 0 && slot == o->nested && f->p < f->end && *f->p == '{') {
            const char *start = f->p;
            if (!scan_obj(f, depth + 1, in_msg || o->sub->body, o->sub))
                return false;
            if (o->sub->body) {
                f->body = start;
                f->body_end = f->p;
            }
            v->kind = FK_OBJ;
        } else if (!scan_value(f, depth, in_msg, v)) {
            return false;
        }
        int sep = scan_sep(f, '}', in_msg);
        if (sep != 0)
            return sep > 0;
    }
}

/* Any value (objects and arrays at depth+1); f->p at its first byte. */
static bool scan_value(struct fscan *f, int depth, bool in_msg, struct fval *v)
{
    v->kind = FK_OTHER;
    if (f->p >= f->end)
        return false;
    switch (*f->p) {
    case '"':
        v->kind = FK_STR;
        return scan_str(f, &v->s, &v->n);
    case '{':
        v->kind = FK_OBJ;
        return scan_obj(f, depth + 1, in_msg, NULL);
    case '[':
        if (depth + 1 > FAST_MAX_DEPTH)
            return false;
        f->p++;
        skip_ws_in(f, in_msg);
        if (f->p < f->end && *f->p == ']') {
            f->p++;
            return true;
        }
        for (;;) {
            struct fval tmp;
            if (!scan_value(f, depth + 1, in_msg, &tmp))
                return false;
            int sep = scan_sep(f, ']', in_msg);
            if (sep != 0)
                return sep > 0;
        }
    case 't':
        return lit(f, "true", 4);
    case 'f':
        return lit(f, "false", 5);
    case 'n':
        v->kind = FK_NULL;
        return lit(f, "null", 4);
    default:
        v->kind = FK_NUM;
        return scan_num(f, &v->s, &v->n);
    }
}

/* A string of 1..max bytes; absent (or null) is fine unless required. */
static bool str_ok(const struct fval *v, bool required, size_t max)
{
    if (v->kind == FK_NONE || v->kind == FK_NULL)
        return !required;
    return v->kind == FK_STR && v->n > 0 && v->n <= max;
}

static bool str_eq(const struct fval *v, const char *s)
{
    size_t n = strlen(s);
    return v->kind == FK_STR && v->n == n && memcmp(v->s, s, n) == 0;
}

static const char *opt_str(const struct fval *v)
{
    return v->kind == FK_STR ? v->s : NULL;
}

/* Copies s[0..n) as a C string at *w; returns where it went. */
static const char *put_cstr(char **w, const char *s, size_t n)
{
    char *at = *w;
    memcpy(at, s, n);
    at[n] = '\0';
    *w += n + 1;
    return at;
}

static bool submit_fields(const struct fval *top, const struct fval *msg, const struct fval *media,
                          ipc_request_t *r)
{
    static const char *const send_types[] = {"text",        "media", "location",
                                             "interactive", "smart", NULL};
    static const char *const priorities[] = {"high", "normal", "bulk", NULL};
    ipc_submit_t *s = &r->submit;

    if (str_eq(&top[K_OP], "send")) {
        r->op = IPC_OP_SEND;
        s->type = 0;
        for (int i = 0; send_types[i]; i++)
            if (str_eq(&top[K_TYPE], send_types[i]))
                s->type = (ipc_type_t)(IPC_TYPE_TEXT + i);
        if (s->type == 0)
            return false;
    } else if (str_eq(&top[K_OP], "template_send")) {
        r->op = IPC_OP_TEMPLATE_SEND;
        if (top[K_TYPE].kind != FK_NONE && top[K_TYPE].kind != FK_NULL &&
            !str_eq(&top[K_TYPE], "template"))
            return false;
        s->type = IPC_TYPE_TEMPLATE;
    } else {
        return false;
    }
    if (top[K_ID].kind != FK_NONE && top[K_ID].kind != FK_NULL && top[K_ID].kind != FK_STR &&
        top[K_ID].kind != FK_NUM)
        return false;

    if (!str_ok(&msg[M_PHONE], true, IPC_MAX_ID_LEN))
        return false;
    /* A DEL in the sender id (the only control byte a scanned string can
     * hold): the slow path refuses it by name (request.c: id_field). */
    if (memchr(msg[M_PHONE].s, 0x7f, msg[M_PHONE].n) != NULL)
        return false;
    const struct fval *to = &msg[M_TO];
    if (to->kind != FK_STR || to->n > IPC_MAX_ID_LEN)
        return false;
    bool digit = false;
    for (size_t i = 0; !digit && i < to->n; i++)
        digit = is_digit(to->s[i]);
    if (!digit)
        return false;
    if (s->type == IPC_TYPE_TEXT && !str_ok(&msg[M_TEXT], true, SIZE_MAX))
        return false;
    if (s->type == IPC_TYPE_TEMPLATE && !str_ok(&msg[M_TEMPLATE], true, SIZE_MAX))
        return false;
    if (s->type == IPC_TYPE_MEDIA) {
        static const char *const media_types[] = {"image", "video", "audio", "document", NULL};
        bool ok = false;
        if (msg[M_MEDIA].kind != FK_OBJ || media == NULL)
            return false; /* absent, null or not an object */
        for (int i = 0; !ok && media_types[i]; i++)
            ok = str_eq(&media[0], media_types[i]);
        if (!ok || !str_ok(&media[1], true, SIZE_MAX))
            return false;
    }

    if (!str_ok(&top[K_IDEM], false, IPC_MAX_KEY_LEN) ||
        !str_ok(&top[K_CAMPAIGN], false, IPC_MAX_KEY_LEN) ||
        !str_ok(&top[K_ORDER_KEY], false, IPC_MAX_KEY_LEN))
        return false;
    s->priority = IPC_PRIO_NORMAL;
    if (top[K_PRIORITY].kind != FK_NONE && top[K_PRIORITY].kind != FK_NULL) {
        int idx = -1;
        for (int i = 0; priorities[i]; i++)
            if (str_eq(&top[K_PRIORITY], priorities[i]))
                idx = i;
        if (idx < 0)
            return false;
        s->priority = (ipc_priority_t)(IPC_PRIO_HIGH + idx);
    }
    const int times[2] = {K_NOT_BEFORE, K_EXPIRES_AT};
    double *tout[2] = {&s->not_before, &s->expires_at};
    for (int i = 0; i < 2; i++) {
        const struct fval *t = &top[times[i]];
        *tout[i] = 0;
        if (t->kind == FK_NONE || t->kind == FK_NULL)
            continue;
        if (t->kind != FK_NUM)
            return false;
        double d = num_value(t->s, t->n);
        if (!(d >= 0 && d <= IPC_TIME_MAX))
            return false;
        *tout[i] = d;
    }
    if (s->expires_at > 0 && s->not_before > s->expires_at)
        return false; /* the cJSON path names it */
    s->max_attempts = 0;
    if (top[K_MAX_ATTEMPTS].kind != FK_NONE && top[K_MAX_ATTEMPTS].kind != FK_NULL) {
        if (top[K_MAX_ATTEMPTS].kind != FK_NUM)
            return false;
        double d = num_value(top[K_MAX_ATTEMPTS].s, top[K_MAX_ATTEMPTS].n);
        if (!(d >= 1 && d <= 1000) || floor(d) != d)
            return false;
        s->max_attempts = (int)d;
    }
    return true;
}

struct ipc_req *ipc__parse_fast(const char *line, size_t len)
{
    struct fscan f = {line, line + len, false, NULL, NULL};
    struct fval top[K_COUNT], msg[M_COUNT], media[2];
    static const struct fkey media_keys[2] = {{"type", 4}, {"mediaId", 7}};
    const fobj_t media_obj = {media_keys, 2, media, -1, NULL, false, false};
    const fobj_t msg_obj = {msg_keys, M_COUNT, msg, M_MEDIA, &media_obj, false, true};
    const fobj_t top_obj = {top_keys, K_COUNT, top, K_MESSAGE, &msg_obj, true, false};

    if (len > FAST_MAX_LINE)
        return NULL;
    /* Only the kinds: a slot's text is read only once its kind is set. */
    for (int i = 0; i < K_COUNT; i++)
        top[i].kind = FK_NONE;
    for (int i = 0; i < M_COUNT; i++)
        msg[i].kind = FK_NONE;
    media[0].kind = media[1].kind = FK_NONE;

    /* One object, only known keys; `message` must be an object. */
    skip_ws(&f);
    if (f.p >= f.end || *f.p != '{' || !scan_obj(&f, 1, false, &top_obj))
        return NULL;
    skip_ws(&f);
    if (f.p != f.end || f.body == NULL)
        return NULL;

    ipc_request_t r;
    memset(&r, 0, sizeof r);
    if (!submit_fields(top, msg, msg[M_MEDIA].kind == FK_OBJ ? media : NULL, &r))
        return NULL;
    const char *body = f.body;
    size_t body_raw = (size_t)(f.body_end - body);
    size_t body_len = f.ws ? json_compact(NULL, body, body_raw) : body_raw;
    if (body_len > IPC_MAX_BODY)
        return NULL;

    /* The block, laid out as request.c's build_block lays it out: the
     * submit strings in field order, the body, then the id. */
    const struct fval *strs[5] = {&msg[M_PHONE], &msg[M_TO], &top[K_IDEM], &top[K_CAMPAIGN],
                                  &top[K_ORDER_KEY]};
    const char **slots[5] = {&r.submit.phone_number_id, &r.submit.to, &r.submit.idempotency_key,
                             &r.submit.campaign, &r.submit.order_key};
    const struct fval *id = &top[K_ID];
    size_t id_len = id->kind == FK_STR    ? id->n + 2
                    : id->kind == FK_NUM  ? id->n
                    : id->kind == FK_NULL ? 4
                                          : 0;
    size_t total = sizeof(struct ipc_req) + body_len + 1;
    for (int i = 0; i < 5; i++)
        if (opt_str(strs[i]))
            total += strs[i]->n + 1;
    if (id_len)
        total += id_len + 1;

    struct ipc_req *b = malloc(total);
    if (!b)
        return NULL; /* the slow path reports it */
    memset(b, 0, sizeof *b);
    b->block_size = total;
    char *w = (char *)(b + 1);
    for (int i = 0; i < 5; i++)
        if (opt_str(strs[i]))
            *slots[i] = put_cstr(&w, strs[i]->s, strs[i]->n);
    if (f.ws)
        json_compact(w, body, body_raw);
    else
        memcpy(w, body, body_raw);
    w[body_len] = '\0';
    r.submit.body = w;
    r.submit.body_len = body_len;
    w += body_len + 1;
    if (id->kind == FK_STR) {
        /* No byte of it needs escaping: its JSON is its raw text. */
        b->id_json = put_cstr(&w, id->s - 1, id_len);
        b->id_len = id_len;
    } else if (id->kind == FK_NUM) {
        b->id_json = put_cstr(&w, id->s, id_len);
        b->id_len = id_len;
    } else if (id->kind == FK_NULL) { /* echoed as null, as request.c does */
        b->id_json = put_cstr(&w, "null", id_len);
        b->id_len = id_len;
    }
    b->request = r;
    return b;
}
