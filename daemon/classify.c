/*
 * classify.c - answer classification (tables from whatsapp-limits.md).
 */
#include "classify.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "json_scan.h"
#include "utf8.h"

static const long meta_fail[] = {
    130472, 131050, 130403, 131026, 131021, /* experiment, opted out, blocked, ... */
    131047,                                 /* outside the 24 h window */
    100,    131008, 131009, 131051, 132000, 132001,
    132005, 132007, 132012, 132015, 132016, 135000, /* bad request or template problem */
};
static const long meta_transient[] = {1, 2, 131000, 131016, 133004};
static const long meta_account_throttle[] = {4, 17, 32, 613, 80007, 80008};
static const long meta_maintenance[] = {131057, 2494100};
static const long meta_pause_sender[] = {131048, 131064, 3,      10,     131005,
                                         368,    131031, 131042, 131045, 133010};
static const long meta_pause_account[] = {0, 190};

static bool in(long code, const long *set, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (set[i] == code)
            return true;
    return false;
}

#define IN(code, set) in((code), (set), sizeof(set) / sizeof((set)[0]))

/* Text from the API goes to clients as JSON and into logs: it is copied as
 * UTF-8, whatever bytes came (U+FFFD for the others), and cut between
 * characters. */
static void copy_str(char *dst, size_t size, const char *src)
{
    (void)utf8_copy_valid(dst, size, src ? src : "", src ? strlen(src) : 0);
}

/* Meta's code: a whole number in 0..INT32_MAX, as a JSON number or as a
 * string of digits. Anything else is no code (a huge or fractional number
 * must not read as some code - (long)1e30 is undefined - least of all as
 * Meta's 0). */
static bool meta_code_of(const cJSON *code, long *out)
{
    if (cJSON_IsNumber(code)) {
        double v = code->valuedouble;

        if (!(v >= 0 && v <= (double)INT32_MAX) || (double)(long)v != v)
            return false;
        *out = (long)v;
        return true;
    }
    if (cJSON_IsString(code)) {
        const char *p = code->valuestring;
        size_t n = strlen(p);
        long v = 0;

        if (n == 0 || n > 10)
            return false;
        for (size_t i = 0; i < n; i++) {
            if (p[i] < '0' || p[i] > '9')
                return false;
            v = v * 10 + (p[i] - '0'); /* at most 10 digits: fits a 64-bit long */
        }
        if (v > INT32_MAX)
            return false;
        *out = v;
        return true;
    }
    return false;
}

/* Fills the error code/message and Meta's code from an error envelope. */
static void parse_error(const cJSON *root, classify_result_t *out, bool *has_meta)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "message");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "details");
    const cJSON *me, *code, *mmsg;

    *has_meta = false;
    if (cJSON_IsString(e))
        copy_str(out->error.code, sizeof(out->error.code), e->valuestring);
    if (cJSON_IsString(m))
        copy_str(out->error.message, sizeof(out->error.message), m->valuestring);
    /* details = Meta's {"error": {...}}; tolerate the inner object given bare. */
    me = cJSON_GetObjectItemCaseSensitive(d, "error");
    if (!cJSON_IsObject(me))
        me = d;
    code = cJSON_GetObjectItemCaseSensitive(me, "code");
    if (meta_code_of(code, &out->error.meta_code)) {
        out->error.has_meta = true;
        *has_meta = true;
        mmsg = cJSON_GetObjectItemCaseSensitive(me, "message");
        if (out->error.message[0] == '\0' && cJSON_IsString(mmsg))
            copy_str(out->error.message, sizeof(out->error.message), mmsg->valuestring);
    }
}

static int classify_meta(long code, classify_result_t *out)
{
    if (code == 130429)
        return CLASSIFY_THROTTLE_SENDER;
    if (code == 131056)
        return CLASSIFY_RETRY_PAIR;
    if (code == 131049)
        return CLASSIFY_RESCHEDULE_DAY;
    if (IN(code, meta_maintenance)) {
        out->min_delay = CLASSIFY_MAINTENANCE_S;
        out->hold_sender = true;
        return CLASSIFY_RETRY;
    }
    if (IN(code, meta_account_throttle)) {
        out->min_delay = 300;
        return CLASSIFY_THROTTLE_ACCOUNT;
    }
    if (IN(code, meta_transient))
        return CLASSIFY_RETRY;
    if (IN(code, meta_fail))
        return CLASSIFY_FAIL;
    if (IN(code, meta_pause_account)) {
        out->needs_operator = true;
        return CLASSIFY_PAUSE_ACCOUNT;
    }
    if (IN(code, meta_pause_sender) || (code >= 200 && code <= 299))
        return CLASSIFY_PAUSE_SENDER;
    return 0; /* unknown: decide on the HTTP status */
}

#define THROTTLE_MIN_S 1.0       /* least wait after a 429 / 130429 */
#define RETRY_AFTER_MAX_S 3600.0 /* longest Retry-After honoured */

/* AvenPing's error codes that name a scope (avenping-v2.md), whatever
 * status they come with (a 200 or a 500 carrying the envelope): 0 for the
 * others, which the status decides. */
static int classify_code(const char *code, const char *message)
{
    if (strcmp(code, "UNAUTHORIZED") == 0 || strcmp(code, "PLAN_EXPIRED") == 0 ||
        strcmp(code, "DEVELOPER_PLAN_REQUIRED") == 0)
        return CLASSIFY_PAUSE_ACCOUNT;
    if (strcmp(code, "FORBIDDEN") == 0)
        return CLASSIFY_PAUSE_SENDER;
    if (strcmp(code, "VALIDATION_ERROR") == 0)
        return CLASSIFY_FAIL;
    if (strcmp(code, "NOT_FOUND") == 0)
        return strstr(message, "WhatsApp account not found") != NULL ? CLASSIFY_PAUSE_ACCOUNT
                                                                     : CLASSIFY_FAIL;
    return 0;
}

/* The status, when neither Meta's code nor AvenPing's decided. */
static int classify_status(int status, const char *message)
{
    if (status == 401)
        return CLASSIFY_PAUSE_ACCOUNT;
    if (status == 403)
        return CLASSIFY_PAUSE_SENDER; /* as FORBIDDEN: the number is not the account's */
    if (status == 404 && strstr(message, "WhatsApp account not found") != NULL)
        return CLASSIFY_PAUSE_ACCOUNT;
    if (status == 429)
        return CLASSIFY_THROTTLE_SENDER;
    if (status == 408)
        return CLASSIFY_RETRY;
    if (status >= 400 && status < 500)
        return CLASSIFY_FAIL;
    return CLASSIFY_RETRY; /* 5xx and anything unexpected */
}

/* --- the success answer without a parse tree ---------------------------- */

/*
 * Every send that succeeds goes through here, so its answer is read with a
 * scanner that builds nothing. It finds what parse_wamid finds in what
 * cJSON_ParseWithLength accepts - data.messages[0].id, the first of each
 * key, trailing bytes ignored - and takes what cJSON takes: any byte up to
 * 0x20 as whitespace, numbers by strtod, `messages` as an object too (its
 * first member is item 0 to cJSON_GetArrayItem). Anything unusual (an
 * escape in any string, a raw control byte in one, nesting deeper than
 * SCAN_DEPTH) hands the answer to cJSON instead. tests/fuzz/fuzz_answer
 * checks the two against each other.
 */
#define SCAN_DEPTH 64

typedef struct scan {
    const char *p, *end;
    const char *id; /* the id's bytes (no escapes), or NULL */
    size_t id_len;
    bool unusual; /* leave it to cJSON */
} scan_t;

/* Where the walk is relative to data.messages[0].id. */
enum { AT_ROOT, AT_DATA, AT_MESSAGES, AT_FIRST, AT_ID, AT_OTHER };

/* Whitespace as cJSON takes it: any byte up to 0x20 (NUL and the other
 * control bytes too), so both find the same wamid in the same bytes. */
static void scan_ws(scan_t *s)
{
    const char *p = s->p;

    while (p < s->end && (unsigned char)*p <= 0x20)
        p++;
    s->p = p;
}

/* A byte that neither ends a string nor starts an escape, and is allowed
 * raw (no control byte). */
static bool str_plain(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

/* A string at s->p (the opening quote); its raw bytes in *str, *len.
 * Strings are most of an answer: the plain runs are skipped a word at a
 * time. */
static bool scan_string(scan_t *s, const char **str, size_t *len)
{
    const char *p = s->p, *end = s->end, *q;

    if (p >= end || *p != '"')
        return false;
    q = ++p;
    p = json_scan_plain(p, end);
    while (p < end && str_plain((unsigned char)*p))
        p++;
    if (p >= end)
        return false;
    if (*p != '"') {
        /* A raw control byte (JSON forbids it, cJSON takes it) or an
         * escape (cJSON checks and decodes it): cJSON decides. */
        s->unusual = true;
        return false;
    }
    *str = q;
    *len = (size_t)(p - q);
    s->p = p + 1;
    return true;
}

static bool scan_literal(scan_t *s, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

/* A number as cJSON reads one: of the run of digits, signs, points and
 * exponent letters, what strtod takes; nothing taken is an error. A run of
 * 64 bytes or more goes to cJSON (whose versions differ there: Debian's
 * takes the whole run, upstream 1.7.15 its first 63 bytes). Success answers
 * have no numbers: this path is rare. */
static bool scan_number(scan_t *s)
{
    char buf[64], *after;
    size_t n = 0;

    while (s->p + n < s->end) {
        char c = s->p[n];
        if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'e' || c == 'E' || c == '.'))
            break;
        if (n == sizeof(buf) - 1) {
            s->unusual = true;
            return false;
        }
        buf[n++] = c;
    }
    buf[n] = '\0';
    (void)strtod(buf, &after);
    if (after == buf)
        return false;
    s->p += after - buf;
    return true;
}

static bool scan_value(scan_t *s, int at, int depth);

static bool scan_object(scan_t *s, int at, int depth)
{
    bool seen_data = false, seen_messages = false, seen_id = false, first = true;

    s->p++; /* '{' */
    scan_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return true;
    }
    for (;;) {
        const char *k;
        size_t kl;
        int next = AT_OTHER;

        scan_ws(s);
        if (!scan_string(s, &k, &kl))
            return false;
        scan_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return false;
        s->p++;
        scan_ws(s);
        if (at == AT_ROOT && kl == 4 && memcmp(k, "data", 4) == 0 && !seen_data) {
            next = AT_DATA;
            seen_data = true;
        } else if (at == AT_DATA && kl == 8 && memcmp(k, "messages", 8) == 0 && !seen_messages) {
            next = AT_MESSAGES;
            seen_messages = true;
        } else if (at == AT_FIRST && kl == 2 && memcmp(k, "id", 2) == 0 && !seen_id) {
            next = AT_ID;
            seen_id = true;
        } else if (at == AT_MESSAGES && first) {
            next = AT_FIRST; /* `messages` an object: its first member is item 0 */
        }
        first = false;
        if (!scan_value(s, next, depth + 1))
            return false;
        scan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return true;
        }
        return false;
    }
}

static bool scan_array(scan_t *s, int at, int depth)
{
    int i = 0;

    s->p++; /* '[' */
    scan_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return true;
    }
    for (;; i++) {
        scan_ws(s);
        if (!scan_value(s, at == AT_MESSAGES && i == 0 ? AT_FIRST : AT_OTHER, depth + 1))
            return false;
        scan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return true;
        }
        return false;
    }
}

static bool scan_value(scan_t *s, int at, int depth)
{
    const char *str;
    size_t len;

    if (depth > SCAN_DEPTH) {
        s->unusual = true;
        return false;
    }
    scan_ws(s);
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{':
        return scan_object(s, at, depth);
    case '[':
        return scan_array(s, at, depth);
    case '"':
        if (!scan_string(s, &str, &len))
            return false;
        if (at == AT_ID) {
            s->id = str;
            s->id_len = len;
        }
        return true;
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        if (*s->p != '-' && (*s->p < '0' || *s->p > '9'))
            return false;
        return scan_number(s);
    }
}

/* Fills out->wamid from a success answer. Returns false when cJSON must
 * decide (the caller then parses it). A `cut` body is the start of a longer
 * answer (http_result_t.cut): the id, when its string came whole, is the
 * one the whole answer holds (like cJSON, the scan takes the first `data`,
 * `messages` and `id`, and nothing after them changes which). */
static bool scan_wamid(const char *body, size_t len, bool cut, classify_result_t *out)
{
    scan_t s = {body, body + len, NULL, 0, false};
    bool ok = scan_value(&s, AT_ROOT, 0);

    if (cut && !ok && s.id != NULL) {
        (void)utf8_copy_valid(out->wamid, sizeof(out->wamid), s.id, s.id_len);
        return true;
    }
    if (s.unusual)
        return false;
    if (!ok)
        return true; /* not JSON: no wamid, as cJSON finds none (it also ignores what follows) */
    if (s.id != NULL)
        (void)utf8_copy_valid(out->wamid, sizeof(out->wamid), s.id, s.id_len);
    return true;
}

static void parse_wamid(const cJSON *root, classify_result_t *out)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(data, "messages");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 0), "id");

    if (cJSON_IsString(id))
        copy_str(out->wamid, sizeof(out->wamid), id->valuestring);
}

void classify_answer(const http_result_t *res, classify_result_t *out)
{
    cJSON *root = NULL;
    bool has_meta = false;
    int action = 0;

    memset(out, 0, sizeof(*out));
    /* A success answer whose connection broke before its end (a wrong
     * Content-Length, no last chunk) names the message id: the API took the
     * message, and sending it again would deliver it twice. */
    if (res->error == HTTP_EMAYBESENT && res->cut && res->status >= 200 && res->status < 300 &&
        res->body != NULL && res->body_len > 0 && scan_wamid(res->body, res->body_len, true, out) &&
        out->wamid[0] != '\0') {
        out->action = CLASSIFY_SENT;
        return;
    }
    memset(out, 0, sizeof(*out));
    if (res->error != 0) {
        out->action = CLASSIFY_RETRY;
        out->maybe_sent =
            res->error == HTTP_EMAYBESENT || (res->error == HTTP_ECANCELLED && res->left);
        /* A request the stop cancelled before any of it was written never
         * left either: its attempt must not count (it used up the last
         * attempt of a job, which then failed after the restart). */
        out->not_sent =
            res->error == HTTP_ENOTSENT || (res->error == HTTP_ECANCELLED && !res->left);
        /* The stop's cut of a request is INTERRUPTED, not CANCELLED: that
         * is the operator's cancel (a report read these as cancels). */
        copy_str(out->error.code, sizeof(out->error.code),
                 res->error == HTTP_ENOTSENT     ? "CONNECT_ERROR"
                 : res->error == HTTP_ECANCELLED ? "INTERRUPTED"
                                                 : "TRANSPORT_ERROR");
        if (res->error == HTTP_ECANCELLED)
            copy_str(out->error.message, sizeof(out->error.message),
                     res->left ? "the daemon stopped with the request in flight: it may have "
                                 "been delivered"
                               : "the daemon stopped before the request left");
        else
            copy_str(out->error.message, sizeof(out->error.message), res->detail);
        return;
    }
    if (res->status >= 200 && res->status < 300) {
        const cJSON *ok;

        out->action = CLASSIFY_SENT;
        if (res->body != NULL && res->body_len > 0 &&
            scan_wamid(res->body, res->body_len, res->cut, out) && out->wamid[0] != '\0')
            return; /* the usual answer: data.messages[0].id */
        /* No wamid: the answer decides. {"success":true} without one is
         * still the API's word that it took the message (sent, no wamid);
         * {"success":false} is an error envelope, whatever the status. Any
         * other 2xx (not JSON, no envelope: a proxy, a wrong api_base)
         * proves nothing: the request may have been taken, so it counts as
         * maybe sent (uncertain under at-most-once). */
        if (res->body != NULL && res->body_len > 0)
            root = cJSON_ParseWithLength(res->body, res->body_len);
        parse_wamid(root, out); /* the scanner leaves unusual answers to cJSON */
        if (out->wamid[0] != '\0')
            goto out;
        ok = cJSON_GetObjectItemCaseSensitive(root, "success");
        if (cJSON_IsTrue(ok)) {
            out->no_wamid = true;
            goto out;
        }
        if (!cJSON_IsFalse(ok)) {
            out->action = CLASSIFY_RETRY;
            out->maybe_sent = true;
            out->error.status = res->status;
            snprintf(out->error.code, sizeof(out->error.code), "HTTP_%d", res->status);
            copy_str(out->error.message, sizeof(out->error.message),
                     "a 2xx answer that is not the v2 success envelope (no \"success\":true, no "
                     "data.messages[0].id): the API may have taken the request");
            goto out;
        }
    } else if (res->body != NULL && res->body_len > 0) {
        root = cJSON_ParseWithLength(res->body, res->body_len);
        /* A success envelope with a wamid under another status (a proxy
         * rewriting it, an API bug): the message was taken, and sending it
         * again would deliver it twice. */
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "success"))) {
            parse_wamid(root, out);
            if (out->wamid[0] != '\0') {
                out->action = CLASSIFY_SENT;
                goto out;
            }
        }
    }
    out->error.status = res->status;
    if (root)
        parse_error(root, out, &has_meta);
    if (out->error.code[0] == '\0')
        snprintf(out->error.code, sizeof(out->error.code), "HTTP_%d", res->status);
    if (has_meta)
        action = classify_meta(out->error.meta_code, out);
    if (action == 0)
        action = classify_code(out->error.code, out->error.message);
    if (action == 0)
        action = classify_status(res->status, out->error.message);
    /* AvenPing checks its own token before anything reaches Meta
     * (avenping-v2.md: token first), so a 401 or an UNAUTHORIZED is that
     * token, whatever Meta object rides along (Graph answers its 190 with
     * a 401 too): GET /v2/me sees it, so it is probed and resumes by
     * itself. Should Meta's side be what fails, the probe's 200 resumes
     * into Meta's answer again, and a 500 carrying it waits for the
     * operator then. */
    if (out->needs_operator && (res->status == 401 || strcmp(out->error.code, "UNAUTHORIZED") == 0))
        out->needs_operator = false;
    /* A redirect is no answer of the API's (it has none): api_base names
     * something else (http:// for https://, a moved host, a portal). It is
     * never followed (the token would go along), and every job would meet
     * it: the account pauses, GET /v2/me is probed, and the reason says
     * where it pointed. */
    if (res->status >= 300 && res->status < 400 && !has_meta) {
        action = CLASSIFY_PAUSE_ACCOUNT;
        snprintf(out->error.message, sizeof(out->error.message),
                 "a redirect%s%s, not followed: api_base must name the v2 API itself",
                 res->detail != NULL && res->detail[0] != '\0' ? " to " : "",
                 res->detail != NULL ? res->detail : "");
    }
    /* So is a 404 without the API's error envelope ("success": false): no
     * v2 route answered - api_base names another server or path (a web
     * server's or a proxy's page), and every job would fail for good on
     * it. The v2 API's own 404 (NOT_FOUND: a missing template or media)
     * stays its job's. A 400 without it too: the API answers every 400
     * with its envelope (VALIDATION_ERROR), a web server's 400 page is
     * about the request line or the connection, not the job - above all
     * an http:// api_base naming an https port ("The plain HTTP request
     * was sent to HTTPS port"), which failed every job for good. */
    if ((res->status == 404 || res->status == 400) && !has_meta &&
        !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "success"))) {
        action = CLASSIFY_PAUSE_ACCOUNT;
        out->bare_page = true;
        snprintf(out->error.message, sizeof(out->error.message),
                 "a %d that is not the v2 API's error envelope: no v2 route answered%s; api_base "
                 "must name the v2 API itself",
                 res->status, res->status == 400 ? " (http:// for an https port?)" : "");
    }
    out->action = action;
    /* A 5xx that is not the API's own error envelope came from something in
     * front of it (a gateway's 502/504, a load balancer's 503), which may
     * have passed the request on before it failed: maybe delivered, as a
     * timeout is (uncertain under at-most-once, a counted retry else). */
    if (res->status >= 500 && action == CLASSIFY_RETRY &&
        !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "success")))
        out->maybe_sent = true;
    if (res->retry_after > out->min_delay)
        out->min_delay = res->retry_after;
    /* A throttle waits at least a second (Meta counts per second; without
     * it the same job went again within milliseconds, 45 times in 2 s) and
     * at most an hour (a Retry-After of years held the sender for one). */
    if (action == CLASSIFY_THROTTLE_SENDER && out->min_delay < THROTTLE_MIN_S)
        out->min_delay = THROTTLE_MIN_S;
    if (out->min_delay > RETRY_AFTER_MAX_S)
        out->min_delay = RETRY_AFTER_MAX_S;
out:
    cJSON_Delete(root);
}

#define REDACTED "[token]"
#define REDACT_MIN 4   /* shortest token, and token start at a cut end, replaced */
#define REDACT_BUF 256 /* the longest text redacted: error message, wamid */
_Static_assert(REDACT_BUF >= QUEUE_ERR_MSG_LEN && REDACT_BUF >= QUEUE_MAX_WAMID_LEN &&
                   REDACT_BUF >= QUEUE_ERR_CODE_LEN,
               "redact's buffer holds every text it redacts");

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* How many bytes of `s` (`left` of them) spell the token at its start: each
 * token byte as itself in any case of its letters (an API that upper-cases
 * what it echoes, HTTP's header names say) or percent-encoded (an API that
 * echoes it from a URL or a form: "+" as "%2B", "/" as "%2f"). A text that
 * ends after at least REDACT_MIN of the token's bytes matches when `cut`
 * (the token's start at the end of a text cut there). 0: no match. */
static size_t token_at(const char *s, size_t left, const char *token, size_t tlen, bool cut)
{
    size_t p = 0, j = 0;

    while (j < tlen) {
        const int want = tolower((unsigned char)token[j]);
        int hi, lo;

        if (p >= left)
            return cut && j >= REDACT_MIN ? p : 0;
        if (tolower((unsigned char)s[p]) == want) {
            p++;
        } else if (s[p] == '%' && p + 2 < left && (hi = hex_value(s[p + 1])) >= 0 &&
                   (lo = hex_value(s[p + 2])) >= 0 && tolower(hi * 16 + lo) == want) {
            p += 3;
        } else if (s[p] == '%' && p + 2 >= left) {
            return cut && j >= REDACT_MIN ? left : 0; /* an escape cut short */
        } else {
            return 0;
        }
        j++;
    }
    return p;
}

/* See classify_result_redact: `s` is NUL-terminated within `cap`. */
static void redact(char *s, size_t cap, const char *token, size_t tlen)
{
    char out[REDACT_BUF];
    size_t n = strlen(s), o = 0, i = 0;
    /* A tail that is the token's start counts only in text that filled its
     * buffer (cut there); elsewhere it is just text. */
    const bool cut = n + 1 >= cap;
    /* Where a match can start: the token's first byte in either case, or
     * an escape. Every answer's wamid goes through here: jumping between
     * those (strcspn) instead of trying each byte took a send's redaction
     * from ~2,400 instructions to a few hundred. */
    const char starts[] = {(char)tolower((unsigned char)token[0]),
                           (char)toupper((unsigned char)token[0]), '%', '\0'};
    bool changed = false;

    while (i < n) {
        i += strcspn(s + i, starts);
        if (i < n && token_at(s + i, n - i, token, tlen, cut) > 0)
            break;
        if (i < n)
            i++;
    }
    if (i >= n)
        return; /* nothing to hide: the usual case */
    if (cap > sizeof(out))
        cap = sizeof(out);
    if (i > cap - 1)
        i = cap - 1;
    memcpy(out, s, i); /* the text before the first match, as it was */
    o = i;
    while (i < n && o + 1 < cap) {
        size_t used = token_at(s + i, n - i, token, tlen, cut);

        if (used > 0) {
            size_t k = strlen(REDACTED);
            if (k > cap - 1 - o)
                k = cap - 1 - o;
            memcpy(out + o, REDACTED, k);
            o += k;
            i += used;
            changed = true;
            continue;
        }
        out[o++] = s[i++];
    }
    if (!changed)
        return;
    out[o] = '\0';
    /* A cut at the end may have split a character. */
    (void)utf8_copy_valid(s, cap, out, o);
    explicit_bzero(out, sizeof(out));
}

void classify_result_redact(classify_result_t *c, const char *token)
{
    size_t tlen = token != NULL ? strlen(token) : 0;

    if (tlen < REDACT_MIN)
        return;
    redact(c->error.code, sizeof(c->error.code), token, tlen);
    redact(c->error.message, sizeof(c->error.message), token, tlen);
    redact(c->wamid, sizeof(c->wamid), token, tlen); /* an API echoing it anywhere */
}

const char *classify_action_name(int action)
{
    switch (action) {
    case CLASSIFY_SENT:
        return "sent";
    case CLASSIFY_FAIL:
        return "fail";
    case CLASSIFY_RETRY:
        return "retry";
    case CLASSIFY_RETRY_PAIR:
        return "retry_pair";
    case CLASSIFY_THROTTLE_SENDER:
        return "throttle_sender";
    case CLASSIFY_THROTTLE_ACCOUNT:
        return "throttle_account";
    case CLASSIFY_PAUSE_SENDER:
        return "pause_sender";
    case CLASSIFY_PAUSE_ACCOUNT:
        return "pause_account";
    case CLASSIFY_RESCHEDULE_DAY:
        return "reschedule_day";
    default:
        return "unknown";
    }
}
