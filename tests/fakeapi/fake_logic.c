/*
 * fake_logic.c - the fake AvenPing v2 API: routes, checks in the order of
 * avenping-v2.md, fault switches, the send log and the counters.
 *
 * Locking: `lock` guards the switches, tokens, rules, per-sender state, the
 * pair table, the PRNG and the counters; `log_lock` guards the log's
 * sequence number and its writes, so that lines appear in `seq` order. The
 * two are never held together. JSON parsing and printing happen outside
 * both.
 */
#include "fake_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define PAIR_HEADS (1u << 17)           /* hash heads of the pair table */
#define PAIR_SWEEP_GAP_NS 1000000000ull /* at most one sweep of a full table per second */
#define NSTATUS 600

enum { RULE_RESET_NONE = 0, RULE_RESET_BEFORE, RULE_RESET_AFTER, RULE_RESET_CUT };
#define RULE_PAD_MAX (16L << 20)

/* A scripted answer for sends to one recipient (see POST /_fake/control "rules"). */
typedef struct fake_rule {
    char to[FAKE_MAX_DIGITS + 1];    /* digits */
    char phone[FAKE_MAX_ID_LEN + 1]; /* "" = any sender */
    int status;
    char error[48];
    char message[256];
    long meta;     /* Meta code in details (0 is one: AuthException), -1 = no details */
    bool has_body; /* answer `body` as it is instead of an error envelope */
    char body[256];
    long times; /* -1 = always; counts down to 0 = spent */
    int reset;  /* RULE_RESET_* */
    int retry_after;
    long pad;           /* > 0: accept, and pad the success answer's data with this many bytes */
    char location[256]; /* a Location header for the scripted answer, "" = none */
} fake_rule_t;

typedef struct fake_sender {
    char id[FAKE_MAX_ID_LEN + 1]; /* immutable after creation: read without the lock */
    uint64_t accepted, rejected_429, rejected_pair, failed, scripted, resets_before, resets_after;
    double tokens; /* rate-limit bucket */
    uint64_t last_ns;
} fake_sender_t;

typedef struct fake_pair {
    struct fake_pair *next;
    uint64_t hash;
    double rest;             /* pair_take: 1 rested, below 0 in debt */
    uint64_t burst_start_ns; /* the current burst's first request */
    unsigned burst_n;        /* requests of that burst */
    uint64_t last_ns;
    size_t sender;
    char to[FAKE_MAX_DIGITS + 1];
} fake_pair_t;

typedef struct fake_counters {
    uint64_t requests, accepted, resets_before, resets_after;
    uint64_t by_status[NSTATUS];
} fake_counters_t;

struct fake_server {
    pthread_mutex_t lock;
    fake_config_t cfg;
    char **tokens;
    size_t ntokens;
    fake_rule_t *rules;
    size_t nrules;
    fake_sender_t *senders;
    size_t nsenders;
    fake_pair_t **pairs; /* PAIR_HEADS heads */
    size_t npairs;
    uint64_t pair_sweep_ns;
    uint64_t rng[4];
    fake_counters_t c;

    atomic_uint_fast64_t next_id; /* wamids and fbtrace ids */
    char instance[13];

    pthread_mutex_t log_lock;
    int log_fd; /* -1: no log */
    uint64_t log_seq;
};

typedef enum route_kind {
    ROUTE_TEXT,
    ROUTE_MEDIA,
    ROUTE_LOCATION,
    ROUTE_INTERACTIVE,
    ROUTE_SMART,
    ROUTE_TEMPLATE,
} route_kind_t;

static const struct {
    const char *path;
    route_kind_t kind;
} send_routes[] = {
    {"/v2/messages/send/text", ROUTE_TEXT},
    {"/v2/messages/send/media", ROUTE_MEDIA},
    {"/v2/messages/send/location", ROUTE_LOCATION},
    {"/v2/messages/send/interactive", ROUTE_INTERACTIVE},
    {"/v2/messages/send", ROUTE_SMART},
    {"/v2/templates/send", ROUTE_TEMPLATE},
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** step; caller holds s->lock. */
static uint64_t rng_next(fake_server_t *s)
{
    uint64_t *st = s->rng;
    uint64_t result = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return result;
}

/* True with probability p; caller holds s->lock. Draws nothing when p <= 0. */
static bool rng_chance(fake_server_t *s, double p)
{
    if (p <= 0.0)
        return false;
    return (double)(rng_next(s) >> 11) * 0x1.0p-53 < p;
}

static uint64_t fnv1a(uint64_t h, const char *p)
{
    for (; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Copies the digits of `in` to `out` (size FAKE_MAX_DIGITS + 1). Returns the count, or -1 when
 * there are none or too many. */
static int digits_of(const char *in, char *out)
{
    int n = 0;
    for (; *in; in++) {
        if (!isdigit((unsigned char)*in))
            continue;
        if (n == FAKE_MAX_DIGITS)
            return -1;
        out[n++] = *in;
    }
    out[n] = '\0';
    return n > 0 ? n : -1;
}

static bool id_is_safe(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > FAKE_MAX_ID_LEN)
        return false;
    for (; *id; id++)
        if (!isalnum((unsigned char)*id) && *id != '_' && *id != '-' && *id != '.')
            return false;
    return true;
}

static void free_tokens(char **tokens, size_t n)
{
    if (!tokens)
        return;
    for (size_t i = 0; i < n; i++)
        free(tokens[i]);
    free(tokens);
}

/* Copies `src` to a fresh array; NULL on allocation failure. */
static char **dup_tokens(const char *const *src, size_t n)
{
    char **t = calloc(n ? n : 1, sizeof(*t));
    if (!t)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        t[i] = strdup(src[i]);
        if (!t[i]) {
            free_tokens(t, i);
            return NULL;
        }
    }
    return t;
}

/* ---- token buckets ---------------------------------------------------- */

/* Refills a bucket of `burst` tokens at `rate` per second and takes one if it can. */
static bool bucket_take(double *tokens, uint64_t *last_ns, double rate, double burst, uint64_t now)
{
    double add = (double)(now - *last_ns) * 1e-9 * rate;
    *last_ns = now;
    *tokens = fmin(burst, *tokens + add);
    if (*tokens < 1.0)
        return false;
    *tokens -= 1.0;
    return true;
}

static void pairs_clear(fake_server_t *s)
{
    for (size_t i = 0; i < PAIR_HEADS; i++) {
        fake_pair_t *p = s->pairs[i];
        while (p) {
            fake_pair_t *next = p->next;
            free(p);
            p = next;
        }
        s->pairs[i] = NULL;
    }
    s->npairs = 0;
}

/* Drops pairs that are rested, their last burst over: a fresh entry would behave the same. */
static void pairs_sweep(fake_server_t *s, double rate, uint64_t interval_ns, uint64_t now)
{
    for (size_t i = 0; i < PAIR_HEADS; i++) {
        fake_pair_t **pp = &s->pairs[i];
        while (*pp) {
            fake_pair_t *p = *pp;
            if (p->rest + (double)(now - p->last_ns) * 1e-9 * rate >= 1.0 &&
                now - p->burst_start_ns >= interval_ns) {
                *pp = p->next;
                free(p);
                s->npairs--;
            } else {
                pp = &p->next;
            }
        }
    }
}

/* How far short of rested a pair may be when a request starts a burst: requests count when
 * they arrive, and a client's one-per-interval arrives with jitter. */
#define PAIR_REST_SLACK 0.5

/*
 * Meta's pair limit as whatsapp-limits.md tells it: one message per interval on average; a burst
 * of up to pair_burst within one interval of a rested pair's first request is allowed but
 * borrows from the future (a burst of n: rested again n intervals after it began). A refused
 * request takes nothing.
 */
static bool pair_debt_take(fake_pair_t *p, double rate, uint64_t interval_ns, unsigned burst,
                           uint64_t now)
{
    p->rest = fmin(1.0, p->rest + (double)(now - p->last_ns) * 1e-9 * rate);
    p->last_ns = now;
    if (p->burst_n > 0 && now >= p->burst_start_ns && now - p->burst_start_ns < interval_ns) {
        if (p->burst_n >= burst)
            return false;
        p->burst_n++;
    } else {
        if (p->rest < 1.0 - PAIR_REST_SLACK)
            return false;
        p->burst_start_ns = now;
        p->burst_n = 1;
    }
    p->rest -= 1.0;
    return true;
}

/* Pair limit for (sender, to); caller holds s->lock. A pair that cannot be tracked (table full
 * even after a sweep, or no memory) is let through. */
static bool pair_take(fake_server_t *s, size_t sender, const char *to, uint64_t now)
{
    double rate = 1000.0 / (double)s->cfg.pair_interval_ms;
    uint64_t interval_ns = (uint64_t)s->cfg.pair_interval_ms * 1000000u;
    unsigned burst = (unsigned)s->cfg.pair_burst;
    uint64_t h = fnv1a(0xcbf29ce484222325ull ^ sender, to);
    fake_pair_t *p = s->pairs[h & (PAIR_HEADS - 1)];
    for (; p; p = p->next)
        if (p->hash == h && p->sender == sender && strcmp(p->to, to) == 0)
            return pair_debt_take(p, rate, interval_ns, burst, now);

    if (s->npairs >= FAKE_PAIR_MAX) {
        if (now - s->pair_sweep_ns < PAIR_SWEEP_GAP_NS)
            return true;
        s->pair_sweep_ns = now;
        pairs_sweep(s, rate, interval_ns, now);
        if (s->npairs >= FAKE_PAIR_MAX)
            return true;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        return true;
    p->hash = h;
    p->sender = sender;
    p->rest = 1.0;
    p->last_ns = now;
    snprintf(p->to, sizeof(p->to), "%s", to);
    p->next = s->pairs[h & (PAIR_HEADS - 1)];
    s->pairs[h & (PAIR_HEADS - 1)] = p;
    s->npairs++;
    return pair_debt_take(p, rate, interval_ns, burst, now);
}

/* Refills every sender's rate bucket; caller holds s->lock. */
static void senders_refill(fake_server_t *s, uint64_t now)
{
    for (size_t i = 0; i < s->nsenders; i++) {
        s->senders[i].tokens = fmax(1.0, s->cfg.rate_limit);
        s->senders[i].last_ns = now;
    }
}

/* ---- answers ---------------------------------------------------------- */

/* Prints `doc` into ans (unformatted), frees `doc`. -ENOMEM on failure. */
static int answer_json(fake_answer_t *ans, int status, cJSON *doc)
{
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!text)
        return -ENOMEM;
    ans->status = status;
    ans->body = text;
    ans->body_len = strlen(text);
    return 0;
}

static const char *meta_message(long code)
{
    switch (code) {
    case 130429:
        return "Rate limit hit";
    case 131056:
        return "(Business Account, Consumer Account) pair rate limit hit";
    case 131000:
        return "Something went wrong";
    case 131026:
        return "Message undeliverable";
    case 131047:
        return "Re-engagement message";
    case 131048:
        return "Spam rate limit hit";
    case 131049:
        return "This message was not delivered to maintain healthy ecosystem engagement.";
    case 131057:
        return "Account in maintenance mode";
    case 131016:
        return "Service unavailable";
    case 190:
        return "Access token has expired";
    default:
        return "Meta error";
    }
}

/* The v2 error envelope; a `meta` >= 0 adds Meta's error object as details. */
static int answer_error(fake_server_t *s, fake_answer_t *ans, int status, const char *code,
                        const char *message, long meta)
{
    cJSON *doc = cJSON_CreateObject();
    if (!doc)
        return -ENOMEM;
    cJSON_AddBoolToObject(doc, "success", 0);
    cJSON_AddStringToObject(doc, "error", code);
    cJSON_AddStringToObject(doc, "message", message);
    if (meta >= 0) {
        char trace[40];
        snprintf(trace, sizeof(trace), "A%s%" PRIXFAST64, s->instance,
                 atomic_fetch_add(&s->next_id, 1));
        cJSON *details = cJSON_AddObjectToObject(doc, "details");
        cJSON *err = details ? cJSON_AddObjectToObject(details, "error") : NULL;
        cJSON *data = err ? cJSON_CreateObject() : NULL;
        if (data) {
            cJSON_AddStringToObject(err, "message", meta_message(meta));
            cJSON_AddStringToObject(err, "type", "OAuthException");
            cJSON_AddNumberToObject(err, "code", (double)meta);
            cJSON_AddStringToObject(data, "details", message);
            cJSON_AddItemToObject(err, "error_data", data);
            cJSON_AddStringToObject(err, "fbtrace_id", trace);
        } else {
            cJSON_Delete(doc);
            return -ENOMEM;
        }
    }
    return answer_json(ans, status, doc);
}

/* {"success":true,"data":<data>}; takes `data`. */
static int answer_data(fake_answer_t *ans, cJSON *data)
{
    cJSON *doc = data ? cJSON_CreateObject() : NULL;
    if (!doc) {
        cJSON_Delete(data);
        return -ENOMEM;
    }
    cJSON_AddBoolToObject(doc, "success", 1);
    cJSON_AddItemToObject(doc, "data", data);
    return answer_json(ans, 200, doc);
}

/* Control routes answer {"ok":false,"error":msg}. */
static int answer_control_error(fake_answer_t *ans, int status, const char *msg)
{
    cJSON *doc = cJSON_CreateObject();
    if (!doc)
        return -ENOMEM;
    cJSON_AddBoolToObject(doc, "ok", 0);
    cJSON_AddStringToObject(doc, "error", msg);
    return answer_json(ans, status, doc);
}

static int answer_ok(fake_answer_t *ans)
{
    cJSON *doc = cJSON_CreateObject();
    if (doc)
        cJSON_AddBoolToObject(doc, "ok", 1);
    return answer_json(ans, 200, doc);
}

/* ---- the send log ----------------------------------------------------- */

/* Appends one line for an accepted send. The line is a single writev on an O_APPEND fd, so it
 * is in the file (if not on disk) when this returns. */
static void log_send(fake_server_t *s, const char *route, const char *sender, const char *to,
                     const char *wamid, const char *body_json)
{
    if (s->log_fd < 0)
        return;
    char head[512];
    struct timespec ts;
    pthread_mutex_lock(&s->log_lock);
    clock_gettime(CLOCK_REALTIME, &ts);
    int n =
        snprintf(head, sizeof(head),
                 "{\"seq\":%" PRIu64 ",\"t\":%lld.%06ld,\"route\":\"%s\",\"phoneNumberId\":\"%s\","
                 "\"to\":\"%s\",\"wamid\":\"%s\",\"body\":",
                 ++s->log_seq, (long long)ts.tv_sec, ts.tv_nsec / 1000, route, sender, to, wamid);
    struct iovec iov[3] = {
        {.iov_base = head, .iov_len = (size_t)n},
        {.iov_base = (void *)body_json, .iov_len = strlen(body_json)},
        {.iov_base = "}\n", .iov_len = 2},
    };
    /* A short or failed write to a regular file means the disk is full; the line is then
     * incomplete and a test reading the log will say so. Nothing better to do in a fake. */
    (void)writev(s->log_fd, iov, 3);
    pthread_mutex_unlock(&s->log_lock);
}

/* ---- the API ---------------------------------------------------------- */

/* Checks the token and the account switch in the spec's order. 0: pass; else the error answer
 * is in `ans` (return value 1) or -ENOMEM. */
static int check_auth(fake_server_t *s, const fake_request_t *rq, fake_answer_t *ans)
{
    const char *tok = NULL;
    const char *bearer = NULL;
    if (rq->authorization) {
        const char *a = rq->authorization;
        while (*a == ' ')
            a++;
        if (strncasecmp(a, "Bearer ", 7) == 0) {
            bearer = a + 7;
            while (*bearer == ' ')
                bearer++;
        }
    }
    tok = rq->api_token;

    pthread_mutex_lock(&s->lock);
    bool revoked = s->cfg.token_revoked;
    fake_account_t account = s->cfg.account;
    bool valid = false;
    for (size_t i = 0; i < s->ntokens && !valid; i++)
        valid = (bearer && strcmp(bearer, s->tokens[i]) == 0) ||
                (tok && strcmp(tok, s->tokens[i]) == 0);
    pthread_mutex_unlock(&s->lock);

    int rc = 0;
    if (!bearer && !tok)
        rc = answer_error(s, ans, 401, "UNAUTHORIZED", "Missing API token", -1);
    else if (!valid)
        rc = answer_error(s, ans, 401, "UNAUTHORIZED", "Invalid API token", -1);
    else if (revoked)
        rc = answer_error(s, ans, 401, "UNAUTHORIZED", "API token has been revoked", -1);
    else if (account == FAKE_ACCOUNT_NONE)
        rc = answer_error(s, ans, 404, "NOT_FOUND", "WhatsApp account not found", -1);
    else if (account == FAKE_ACCOUNT_PLAN_EXPIRED)
        rc = answer_error(s, ans, 403, "PLAN_EXPIRED", "Your subscription plan has expired", -1);
    else if (account == FAKE_ACCOUNT_DEVELOPER_PLAN)
        rc = answer_error(s, ans, 403, "DEVELOPER_PLAN_REQUIRED",
                          "This API requires a Premium or Enterprise plan", -1);
    else
        return 0;
    return rc < 0 ? rc : 1;
}

static int handle_me(fake_server_t *s, fake_answer_t *ans)
{
    cJSON *data = cJSON_CreateObject();
    cJSON *ids = NULL;
    if (data && cJSON_AddStringToObject(data, "id", "user_1") &&
        cJSON_AddStringToObject(data, "wabaId", "waba_1"))
        ids = cJSON_AddArrayToObject(data, "phoneNumberIds");
    if (!ids) {
        cJSON_Delete(data);
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->nsenders; i++)
        cJSON_AddItemToArray(ids, cJSON_CreateString(s->senders[i].id));
    if (s->nsenders == 1)
        cJSON_AddStringToObject(data, "defaultPhoneNumberId", s->senders[0].id);
    return answer_data(ans, data);
}

/* Checks the type-specific fields; NULL when fine, else the VALIDATION_ERROR message. */
static const char *validate_fields(route_kind_t kind, const cJSON *doc)
{
    switch (kind) {
    case ROUTE_TEXT:
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "text")))
            return "text is required and must be a string";
        return NULL;
    case ROUTE_MEDIA: {
        const cJSON *media = cJSON_GetObjectItemCaseSensitive(doc, "media");
        if (!cJSON_IsObject(media))
            return "media is required and must be an object";
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(media, "mediaId");
        if (!cJSON_IsString(id) || id->valuestring[0] == '\0')
            return "media.mediaId is required";
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(media, "type");
        static const char *const types[] = {"image", "video", "audio", "document"};
        for (size_t i = 0; cJSON_IsString(type) && i < sizeof(types) / sizeof(types[0]); i++)
            if (strcmp(type->valuestring, types[i]) == 0)
                return NULL;
        return "media.type must be one of image, video, audio, document";
    }
    case ROUTE_TEMPLATE: {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(doc, "templateName");
        if (!cJSON_IsString(name) || name->valuestring[0] == '\0')
            return "templateName is required";
        return NULL;
    }
    case ROUTE_LOCATION:
    case ROUTE_INTERACTIVE:
    case ROUTE_SMART:
        return NULL;
    }
    return NULL;
}

typedef enum send_outcome {
    OUT_RESET_BEFORE,
    OUT_RATE_LIMITED,
    OUT_PAIR_LIMITED,
    OUT_FAILED,
    OUT_SCRIPTED,
    OUT_ACCEPTED,
} send_outcome_t;

/* Runs the fault switches in their documented order for a validated send. Takes s->lock. */
static send_outcome_t decide(fake_server_t *s, size_t sender, const char *to, fake_rule_t *rule,
                             bool *reset_after, long *fail_code)
{
    uint64_t now = mono_ns();
    send_outcome_t out = OUT_ACCEPTED;
    fake_sender_t *sd = &s->senders[sender];
    *reset_after = false;

    pthread_mutex_lock(&s->lock);
    *fail_code = s->cfg.fail_meta_code;
    if (rng_chance(s, s->cfg.reset_before)) {
        out = OUT_RESET_BEFORE;
    } else if (s->cfg.rate_limit > 0 && !bucket_take(&sd->tokens, &sd->last_ns, s->cfg.rate_limit,
                                                     fmax(1.0, s->cfg.rate_limit), now)) {
        out = OUT_RATE_LIMITED;
    } else if (s->cfg.pair_interval_ms > 0 && !pair_take(s, sender, to, now)) {
        out = OUT_PAIR_LIMITED;
    } else if (rng_chance(s, s->cfg.fail_rate)) {
        out = OUT_FAILED;
    } else {
        for (size_t i = 0; i < s->nrules; i++) {
            fake_rule_t *r = &s->rules[i];
            if (r->times == 0 || strcmp(r->to, to) != 0 ||
                (r->phone[0] && strcmp(r->phone, sd->id) != 0))
                continue;
            if (r->times > 0)
                r->times--;
            *rule = *r;
            out = r->reset == RULE_RESET_BEFORE ? OUT_RESET_BEFORE
                  : r->reset == RULE_RESET_AFTER || r->reset == RULE_RESET_CUT || r->pad > 0
                      ? OUT_ACCEPTED
                      : OUT_SCRIPTED;
            *reset_after = r->reset == RULE_RESET_AFTER || r->reset == RULE_RESET_CUT;
            break;
        }
        if (out == OUT_ACCEPTED && !*reset_after)
            *reset_after = rng_chance(s, s->cfg.reset_after);
    }

    switch (out) {
    case OUT_RESET_BEFORE:
        s->c.resets_before++;
        sd->resets_before++;
        break;
    case OUT_RATE_LIMITED:
        sd->rejected_429++;
        break;
    case OUT_PAIR_LIMITED:
        sd->rejected_pair++;
        break;
    case OUT_FAILED:
        sd->failed++;
        break;
    case OUT_SCRIPTED:
        sd->scripted++;
        break;
    case OUT_ACCEPTED:
        s->c.accepted++;
        sd->accepted++;
        if (*reset_after) {
            s->c.resets_after++;
            sd->resets_after++;
        }
        break;
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

/* The 200 answer of a send route, Meta's reply inside data. */
static int answer_accepted(fake_answer_t *ans, const char *input, const char *wa_id,
                           const char *wamid, long pad)
{
    cJSON *data = cJSON_CreateObject();
    cJSON *contact = cJSON_CreateObject();
    cJSON *message = cJSON_CreateObject();
    cJSON *contacts = NULL, *messages = NULL;
    if (data && cJSON_AddStringToObject(data, "messaging_product", "whatsapp")) {
        contacts = cJSON_AddArrayToObject(data, "contacts");
        messages = cJSON_AddArrayToObject(data, "messages");
    }
    if (!contacts || !messages || !contact || !message) {
        cJSON_Delete(data);
        cJSON_Delete(contact);
        cJSON_Delete(message);
        return -ENOMEM;
    }
    cJSON_AddStringToObject(contact, "input", input);
    cJSON_AddStringToObject(contact, "wa_id", wa_id);
    cJSON_AddItemToArray(contacts, contact);
    cJSON_AddStringToObject(message, "id", wamid);
    cJSON_AddStringToObject(message, "message_status", "accepted");
    cJSON_AddItemToArray(messages, message);
    if (pad > 0) {
        char *p = malloc((size_t)pad + 1);
        if (p == NULL) {
            cJSON_Delete(data);
            return -ENOMEM;
        }
        memset(p, 'x', (size_t)pad);
        p[pad] = '\0';
        cJSON_AddStringToObject(data, "pad", p);
        free(p);
    }
    return answer_data(ans, data);
}

static int handle_send(fake_server_t *s, const fake_request_t *rq, const char *route,
                       route_kind_t kind, fake_answer_t *ans)
{
    int rc = 0;
    cJSON *doc = NULL;
    char *body_json = NULL;

    if (rq->body_too_big)
        return answer_error(s, ans, 400, "VALIDATION_ERROR", "Request body exceeds 2mb", -1);
    doc = rq->body ? cJSON_ParseWithLength(rq->body, rq->body_len) : NULL;
    if (!cJSON_IsObject(doc)) {
        rc = answer_error(s, ans, 500, "INTERNAL_ERROR", "Request body is not a JSON object", -1);
        goto out;
    }

    const cJSON *pnid = cJSON_GetObjectItemCaseSensitive(doc, "phoneNumberId");
    if (!cJSON_IsString(pnid) || pnid->valuestring[0] == '\0') {
        rc = answer_error(s, ans, 400, "VALIDATION_ERROR", "phoneNumberId is required", -1);
        goto out;
    }
    size_t sender = s->nsenders;
    for (size_t i = 0; i < s->nsenders; i++)
        if (strcmp(s->senders[i].id, pnid->valuestring) == 0)
            sender = i;
    if (sender == s->nsenders) {
        rc = answer_error(s, ans, 403, "FORBIDDEN", "phoneNumberId does not belong to this account",
                          -1);
        goto out;
    }
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(doc, "to");
    char digits[FAKE_MAX_DIGITS + 1];
    if (!cJSON_IsString(to) || digits_of(to->valuestring, digits) < 0) {
        rc = answer_error(s, ans, 400, "VALIDATION_ERROR",
                          "to is required and must be a phone number", -1);
        goto out;
    }
    const char *invalid = validate_fields(kind, doc);
    if (invalid) {
        rc = answer_error(s, ans, 400, "VALIDATION_ERROR", invalid, -1);
        goto out;
    }
    if (kind == ROUTE_TEMPLATE &&
        strncmp(cJSON_GetObjectItemCaseSensitive(doc, "templateName")->valuestring, "missing", 7) ==
            0) {
        rc = answer_error(s, ans, 404, "NOT_FOUND", "Template not found", -1);
        goto out;
    }

    fake_rule_t rule = {.pad = 0};
    bool reset_after;
    long fail_code;
    switch (decide(s, sender, digits, &rule, &reset_after, &fail_code)) {
    case OUT_RESET_BEFORE:
        ans->drop = true;
        break;
    case OUT_RATE_LIMITED:
        rc =
            answer_error(s, ans, 429, "RATE_LIMITED", "Too many messages from this number", 130429);
        ans->retry_after = 1;
        break;
    case OUT_PAIR_LIMITED:
        rc = answer_error(s, ans, 500, "INTERNAL_ERROR", "Pair rate limit hit", 131056);
        break;
    case OUT_FAILED:
        rc = answer_error(s, ans, 500, "INTERNAL_ERROR", "Upstream failure", fail_code);
        break;
    case OUT_SCRIPTED:
        if (rule.has_body) {
            ans->status = rule.status;
            ans->body = strdup(rule.body);
            ans->body_len = strlen(rule.body);
            rc = ans->body != NULL ? 0 : -ENOMEM;
        } else {
            rc = answer_error(s, ans, rule.status, rule.error, rule.message, rule.meta);
        }
        ans->retry_after = rule.retry_after;
        snprintf(ans->location, sizeof(ans->location), "%s", rule.location);
        break;
    case OUT_ACCEPTED: {
        char wamid[64];
        snprintf(wamid, sizeof(wamid), "wamid.HBgL%s%010" PRIXFAST64, s->instance,
                 atomic_fetch_add(&s->next_id, 1));
        body_json = cJSON_PrintUnformatted(doc);
        if (!body_json) {
            rc = -ENOMEM;
            break;
        }
        log_send(s, route, s->senders[sender].id, digits, wamid, body_json);
        if (reset_after && rule.reset != RULE_RESET_CUT) {
            ans->drop = true;
        } else {
            rc = answer_accepted(ans, to->valuestring, digits, wamid, rule.pad);
            ans->cut = reset_after;
        }
        break;
    }
    }
out:
    free(body_json);
    cJSON_Delete(doc);
    return rc;
}

/* Every /v2 route but health and version. */
static int handle_api(fake_server_t *s, const fake_request_t *rq, fake_answer_t *ans)
{
    bool post = strcmp(rq->method, "POST") == 0;
    const char *route = NULL;
    route_kind_t kind = ROUTE_SMART;
    for (size_t i = 0; post && i < sizeof(send_routes) / sizeof(send_routes[0]); i++)
        if (strcmp(rq->path, send_routes[i].path) == 0) {
            route = send_routes[i].path;
            kind = send_routes[i].kind;
        }
    bool me = strcmp(rq->method, "GET") == 0 && strcmp(rq->path, "/v2/me") == 0;
    if (route || me) {
        pthread_mutex_lock(&s->lock);
        ans->delay_ms = route ? s->cfg.latency_ms : s->cfg.me_latency_ms;
        pthread_mutex_unlock(&s->lock);
    }

    int rc = check_auth(s, rq, ans);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    if (route)
        return handle_send(s, rq, route, kind, ans);
    if (me)
        return handle_me(s, ans);
    return answer_error(s, ans, 404, "NOT_FOUND", "Route not found", -1);
}

/* ---- control routes --------------------------------------------------- */

enum {
    P_LATENCY = 1 << 0,
    P_FAIL_RATE = 1 << 1,
    P_FAIL_CODE = 1 << 2,
    P_RATE = 1 << 3,
    P_PAIR_INTERVAL = 1 << 4,
    P_PAIR_BURST = 1 << 5,
    P_RESET_BEFORE = 1 << 6,
    P_RESET_AFTER = 1 << 7,
    P_REVOKED = 1 << 8,
    P_ACCOUNT = 1 << 9,
    P_RULES = 1 << 10,
    P_TOKENS = 1 << 11,
    P_ME_LATENCY = 1 << 12,
};

/* A parsed POST /_fake/control body: the fields in `set`, applied at once under the lock. */
typedef struct patch {
    unsigned set;
    fake_config_t cfg;
    fake_rule_t *rules;
    size_t nrules;
    char **tokens;
    size_t ntokens;
} patch_t;

static const char *const account_names[] = {"ok", "no_account", "plan_expired", "developer_plan"};

/* Reads a number in [lo, hi]; integral when `integral`. */
static bool num_in(const cJSON *v, double lo, double hi, bool integral, double *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return false;
    if (integral && v->valuedouble != floor(v->valuedouble))
        return false;
    *out = v->valuedouble;
    return true;
}

static const char *default_error_code(int status)
{
    switch (status) {
    case 400:
        return "VALIDATION_ERROR";
    case 401:
        return "UNAUTHORIZED";
    case 403:
        return "FORBIDDEN";
    case 404:
        return "NOT_FOUND";
    case 429:
        return "RATE_LIMITED";
    default:
        return "INTERNAL_ERROR";
    }
}

/* Parses one rule. NULL when fine, else what is wrong. */
static const char *rule_parse(const cJSON *o, fake_rule_t *r)
{
    double v;
    memset(r, 0, sizeof(*r));
    r->status = 500;
    r->meta = -1;
    r->times = -1;
    r->retry_after = -1;
    if (!cJSON_IsObject(o))
        return "each rule must be an object";
    bool have_to = false, have_status = false;
    const cJSON *f;
    cJSON_ArrayForEach(f, o)
    {
        const char *k = f->string;
        if (strcmp(k, "to") == 0) {
            if (!cJSON_IsString(f) || digits_of(f->valuestring, r->to) < 0)
                return "rule.to must be a phone number";
            have_to = true;
        } else if (strcmp(k, "phoneNumberId") == 0) {
            if (!cJSON_IsString(f) || strlen(f->valuestring) > FAKE_MAX_ID_LEN)
                return "rule.phoneNumberId must be a short string";
            snprintf(r->phone, sizeof(r->phone), "%s", f->valuestring);
        } else if (strcmp(k, "status") == 0) {
            if (!num_in(f, 200, 599, true, &v))
                return "rule.status must be an integer in 200..599 (below 400 only with body)";
            r->status = (int)v;
            have_status = true;
        } else if (strcmp(k, "body") == 0) {
            if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof(r->body))
                return "rule.body must be a string under 256 bytes";
            snprintf(r->body, sizeof(r->body), "%s", f->valuestring);
            r->has_body = true;
        } else if (strcmp(k, "error") == 0) {
            if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof(r->error))
                return "rule.error must be a short string";
            snprintf(r->error, sizeof(r->error), "%s", f->valuestring);
        } else if (strcmp(k, "message") == 0) {
            if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof(r->message))
                return "rule.message must be a string under 256 bytes";
            snprintf(r->message, sizeof(r->message), "%s", f->valuestring);
        } else if (strcmp(k, "meta") == 0) {
            if (!num_in(f, 0, 1e12, true, &v))
                return "rule.meta must be a non-negative integer";
            r->meta = (long)v;
        } else if (strcmp(k, "times") == 0) {
            if (!num_in(f, -1, 1e9, true, &v))
                return "rule.times must be -1 or a count";
            r->times = (long)v;
        } else if (strcmp(k, "retry_after") == 0) {
            if (!num_in(f, 0, 86400, true, &v))
                return "rule.retry_after must be seconds (0..86400)";
            r->retry_after = (int)v;
        } else if (strcmp(k, "reset") == 0) {
            if (cJSON_IsString(f) && strcmp(f->valuestring, "before") == 0)
                r->reset = RULE_RESET_BEFORE;
            else if (cJSON_IsString(f) && strcmp(f->valuestring, "after") == 0)
                r->reset = RULE_RESET_AFTER;
            else if (cJSON_IsString(f) && strcmp(f->valuestring, "cut") == 0)
                r->reset = RULE_RESET_CUT;
            else
                return "rule.reset must be \"before\", \"after\" or \"cut\"";
        } else if (strcmp(k, "location") == 0) {
            if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof(r->location))
                return "rule.location must be a string under 256 bytes";
            snprintf(r->location, sizeof(r->location), "%s", f->valuestring);
        } else if (strcmp(k, "pad") == 0) {
            if (!num_in(f, 0, (double)RULE_PAD_MAX, true, &v))
                return "rule.pad must be a byte count (0..16 MiB)";
            r->pad = (long)v;
        } else {
            return "unknown rule field";
        }
    }
    if (!have_to)
        return "rule.to is required";
    if (!have_status && r->reset == RULE_RESET_NONE && r->pad == 0)
        return "rule.status is required (or rule.reset, rule.pad)";
    if (have_status && r->pad > 0)
        return "rule.pad is for accepted sends: no rule.status with it";
    if (r->status < 400 && !r->has_body)
        return "rule.status must be an integer in 200..599 (below 400 only with body)";
    if (r->error[0] == '\0')
        snprintf(r->error, sizeof(r->error), "%s", default_error_code(r->status));
    if (r->message[0] == '\0')
        snprintf(r->message, sizeof(r->message), "Scripted failure");
    return NULL;
}

static void patch_free(patch_t *p)
{
    free(p->rules);
    free_tokens(p->tokens, p->ntokens);
}

/* Parses a control body into `p`. NULL when fine, else what is wrong (a static string).
 * `p` is to be freed with patch_free in both cases. */
static const char *patch_parse(const cJSON *doc, patch_t *p)
{
    double v;
    if (!cJSON_IsObject(doc))
        return "body must be a JSON object";
    const cJSON *f;
    cJSON_ArrayForEach(f, doc)
    {
        const char *k = f->string;
        if (strcmp(k, "latency_ms") == 0) {
            if (!num_in(f, 0, FAKE_MAX_LATENCY_MS, true, &v))
                return "latency_ms must be an integer in 0..600000";
            p->cfg.latency_ms = (long)v;
            p->set |= P_LATENCY;
        } else if (strcmp(k, "me_latency_ms") == 0) {
            if (!num_in(f, 0, FAKE_MAX_LATENCY_MS, true, &v))
                return "me_latency_ms must be an integer in 0..600000";
            p->cfg.me_latency_ms = (long)v;
            p->set |= P_ME_LATENCY;
        } else if (strcmp(k, "fail_rate") == 0) {
            if (!num_in(f, 0, 1, false, &p->cfg.fail_rate))
                return "fail_rate must be in 0..1";
            p->set |= P_FAIL_RATE;
        } else if (strcmp(k, "fail_meta_code") == 0) {
            if (!num_in(f, 1, 1e12, true, &v))
                return "fail_meta_code must be a positive integer";
            p->cfg.fail_meta_code = (long)v;
            p->set |= P_FAIL_CODE;
        } else if (strcmp(k, "rate_limit") == 0) {
            if (!num_in(f, 0, 1e9, false, &p->cfg.rate_limit))
                return "rate_limit must be a non-negative number";
            p->set |= P_RATE;
        } else if (strcmp(k, "pair_interval_ms") == 0) {
            if (!num_in(f, 0, 86400000, true, &v))
                return "pair_interval_ms must be an integer in 0..86400000";
            p->cfg.pair_interval_ms = (long)v;
            p->set |= P_PAIR_INTERVAL;
        } else if (strcmp(k, "pair_burst") == 0) {
            if (!num_in(f, 1, 1e6, true, &v))
                return "pair_burst must be an integer in 1..1000000";
            p->cfg.pair_burst = (long)v;
            p->set |= P_PAIR_BURST;
        } else if (strcmp(k, "reset_before") == 0) {
            if (!num_in(f, 0, 1, false, &p->cfg.reset_before))
                return "reset_before must be in 0..1";
            p->set |= P_RESET_BEFORE;
        } else if (strcmp(k, "reset_after") == 0) {
            if (!num_in(f, 0, 1, false, &p->cfg.reset_after))
                return "reset_after must be in 0..1";
            p->set |= P_RESET_AFTER;
        } else if (strcmp(k, "token_revoked") == 0) {
            if (!cJSON_IsBool(f))
                return "token_revoked must be a boolean";
            p->cfg.token_revoked = cJSON_IsTrue(f);
            p->set |= P_REVOKED;
        } else if (strcmp(k, "account") == 0) {
            size_t i = 0;
            size_t n = sizeof(account_names) / sizeof(account_names[0]);
            while (cJSON_IsString(f) && i < n && strcmp(f->valuestring, account_names[i]) != 0)
                i++;
            if (!cJSON_IsString(f) || i == n)
                return "account must be ok, no_account, plan_expired or developer_plan";
            p->cfg.account = (fake_account_t)i;
            p->set |= P_ACCOUNT;
        } else if (strcmp(k, "rules") == 0) {
            int n = cJSON_GetArraySize(f);
            if (!cJSON_IsArray(f) || n > FAKE_MAX_RULES)
                return "rules must be an array of at most 4096 rules";
            free(p->rules);
            p->rules = calloc(n ? (size_t)n : 1, sizeof(*p->rules));
            if (!p->rules)
                return "out of memory";
            p->nrules = 0;
            const cJSON *r;
            cJSON_ArrayForEach(r, f)
            {
                const char *err = rule_parse(r, &p->rules[p->nrules]);
                if (err)
                    return err;
                p->nrules++;
            }
            p->set |= P_RULES;
        } else if (strcmp(k, "tokens") == 0) {
            int n = cJSON_GetArraySize(f);
            if (!cJSON_IsArray(f) || n > FAKE_MAX_TOKENS)
                return "tokens must be an array of at most 64 strings";
            free_tokens(p->tokens, p->ntokens);
            p->ntokens = 0;
            p->tokens = calloc(n ? (size_t)n : 1, sizeof(*p->tokens));
            if (!p->tokens)
                return "out of memory";
            const cJSON *t;
            cJSON_ArrayForEach(t, f)
            {
                if (!cJSON_IsString(t) || t->valuestring[0] == '\0' ||
                    strlen(t->valuestring) > FAKE_MAX_TOKEN_LEN)
                    return "each token must be a non-empty string of at most 512 bytes";
                p->tokens[p->ntokens] = strdup(t->valuestring);
                if (!p->tokens[p->ntokens])
                    return "out of memory";
                p->ntokens++;
            }
            p->set |= P_TOKENS;
        } else {
            return "unknown switch";
        }
    }
    return NULL;
}

/* Applies a parsed patch; what it replaces (rules, tokens) moves into `p` to be freed. */
static void patch_apply(fake_server_t *s, patch_t *p)
{
    uint64_t now = mono_ns();
    pthread_mutex_lock(&s->lock);
    fake_config_t *c = &s->cfg;
    if (p->set & P_LATENCY)
        c->latency_ms = p->cfg.latency_ms;
    if (p->set & P_ME_LATENCY)
        c->me_latency_ms = p->cfg.me_latency_ms;
    if (p->set & P_FAIL_RATE)
        c->fail_rate = p->cfg.fail_rate;
    if (p->set & P_FAIL_CODE)
        c->fail_meta_code = p->cfg.fail_meta_code;
    if (p->set & P_RATE) {
        c->rate_limit = p->cfg.rate_limit;
        senders_refill(s, now);
    }
    if (p->set & P_PAIR_INTERVAL)
        c->pair_interval_ms = p->cfg.pair_interval_ms;
    if (p->set & P_PAIR_BURST)
        c->pair_burst = p->cfg.pair_burst;
    /* New pair settings start from empty buckets rather than mixing two regimes. */
    if (p->set & (P_PAIR_INTERVAL | P_PAIR_BURST))
        pairs_clear(s);
    if (p->set & P_RESET_BEFORE)
        c->reset_before = p->cfg.reset_before;
    if (p->set & P_RESET_AFTER)
        c->reset_after = p->cfg.reset_after;
    if (p->set & P_REVOKED)
        c->token_revoked = p->cfg.token_revoked;
    if (p->set & P_ACCOUNT)
        c->account = p->cfg.account;
    if (p->set & P_RULES) {
        fake_rule_t *old = s->rules;
        size_t n = s->nrules;
        s->rules = p->rules;
        s->nrules = p->nrules;
        p->rules = old;
        p->nrules = n;
    }
    if (p->set & P_TOKENS) {
        char **old = s->tokens;
        size_t n = s->ntokens;
        s->tokens = p->tokens;
        s->ntokens = p->ntokens;
        p->tokens = old;
        p->ntokens = n;
    }
    pthread_mutex_unlock(&s->lock);
}

static int handle_control(fake_server_t *s, const fake_request_t *rq, fake_answer_t *ans)
{
    if (rq->body_too_big)
        return answer_control_error(ans, 400, "body too large");
    cJSON *doc = rq->body ? cJSON_ParseWithLength(rq->body, rq->body_len) : NULL;
    patch_t p = {0};
    const char *err = doc ? patch_parse(doc, &p) : "body is not JSON";
    int rc;
    if (err) {
        rc = answer_control_error(ans, 400, err);
    } else {
        patch_apply(s, &p);
        rc = answer_ok(ans);
    }
    patch_free(&p);
    cJSON_Delete(doc);
    return rc;
}

static void add_u64(cJSON *o, const char *k, uint64_t v)
{
    cJSON_AddNumberToObject(o, k, (double)v);
}

static int handle_stats(fake_server_t *s, fake_answer_t *ans)
{
    fake_counters_t c;
    fake_sender_t *sd = calloc(s->nsenders, sizeof(*sd));
    if (!sd)
        return -ENOMEM;
    pthread_mutex_lock(&s->lock);
    c = s->c;
    memcpy(sd, s->senders, s->nsenders * sizeof(*sd));
    pthread_mutex_unlock(&s->lock);

    cJSON *doc = cJSON_CreateObject();
    cJSON *by = NULL, *senders = NULL;
    if (doc) {
        add_u64(doc, "requests", c.requests);
        add_u64(doc, "accepted", c.accepted);
        by = cJSON_AddObjectToObject(doc, "by_status");
        add_u64(doc, "resets_before", c.resets_before);
        add_u64(doc, "resets_after", c.resets_after);
        senders = cJSON_AddObjectToObject(doc, "senders");
    }
    if (!by || !senders) {
        cJSON_Delete(doc);
        free(sd);
        return -ENOMEM;
    }
    for (int st = 0; st < NSTATUS; st++) {
        if (c.by_status[st] == 0)
            continue;
        char key[8];
        snprintf(key, sizeof(key), "%d", st);
        add_u64(by, key, c.by_status[st]);
    }
    for (size_t i = 0; i < s->nsenders; i++) {
        cJSON *o = cJSON_AddObjectToObject(senders, sd[i].id);
        if (!o)
            continue;
        add_u64(o, "accepted", sd[i].accepted);
        add_u64(o, "rejected_429", sd[i].rejected_429);
        add_u64(o, "rejected_pair", sd[i].rejected_pair);
        add_u64(o, "failed", sd[i].failed);
        add_u64(o, "scripted", sd[i].scripted);
        add_u64(o, "resets_before", sd[i].resets_before);
        add_u64(o, "resets_after", sd[i].resets_after);
    }
    free(sd);
    return answer_json(ans, 200, doc);
}

static int handle_reset_stats(fake_server_t *s, fake_answer_t *ans)
{
    pthread_mutex_lock(&s->lock);
    memset(&s->c, 0, sizeof(s->c));
    for (size_t i = 0; i < s->nsenders; i++) {
        fake_sender_t *sd = &s->senders[i];
        sd->accepted = sd->rejected_429 = sd->rejected_pair = sd->failed = sd->scripted = 0;
        sd->resets_before = sd->resets_after = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return answer_ok(ans);
}

/* GET /_fake/config: the current switches, for debugging a test. */
static int handle_config(fake_server_t *s, fake_answer_t *ans)
{
    pthread_mutex_lock(&s->lock);
    fake_config_t c = s->cfg;
    size_t nrules = s->nrules, ntokens = s->ntokens;
    pthread_mutex_unlock(&s->lock);
    cJSON *doc = cJSON_CreateObject();
    if (!doc)
        return -ENOMEM;
    cJSON_AddNumberToObject(doc, "latency_ms", (double)c.latency_ms);
    cJSON_AddNumberToObject(doc, "fail_rate", c.fail_rate);
    cJSON_AddNumberToObject(doc, "fail_meta_code", (double)c.fail_meta_code);
    cJSON_AddNumberToObject(doc, "rate_limit", c.rate_limit);
    cJSON_AddNumberToObject(doc, "pair_interval_ms", (double)c.pair_interval_ms);
    cJSON_AddNumberToObject(doc, "pair_burst", (double)c.pair_burst);
    cJSON_AddNumberToObject(doc, "reset_before", c.reset_before);
    cJSON_AddNumberToObject(doc, "reset_after", c.reset_after);
    cJSON_AddBoolToObject(doc, "token_revoked", c.token_revoked);
    cJSON_AddStringToObject(doc, "account", account_names[c.account]);
    cJSON_AddNumberToObject(doc, "rules", (double)nrules);
    cJSON_AddNumberToObject(doc, "tokens", (double)ntokens);
    return answer_json(ans, 200, doc);
}

static int handle_fake(fake_server_t *s, const fake_request_t *rq, fake_answer_t *ans)
{
    bool get = strcmp(rq->method, "GET") == 0;
    bool post = strcmp(rq->method, "POST") == 0;
    if (post && strcmp(rq->path, "/_fake/control") == 0)
        return handle_control(s, rq, ans);
    if (get && strcmp(rq->path, "/_fake/stats") == 0)
        return handle_stats(s, ans);
    if (post && strcmp(rq->path, "/_fake/reset-stats") == 0)
        return handle_reset_stats(s, ans);
    if (get && strcmp(rq->path, "/_fake/config") == 0)
        return handle_config(s, ans);
    return answer_control_error(ans, 404, "unknown control route");
}

static int handle_unauthed(fake_server_t *s, const char *path, fake_answer_t *ans)
{
    cJSON *data = cJSON_CreateObject();
    if (data && strcmp(path, "/v2/health") == 0) {
        cJSON_AddBoolToObject(data, "ok", 1);
    } else if (data) {
        cJSON_AddStringToObject(data, "version", "2.0.0-fake");
        cJSON_AddStringToObject(data, "api", "v2");
        cJSON_AddStringToObject(data, "server", "avp-fakeapi " AVP_VERSION);
    }
    return answer_data(ans, data);
}

void fake_server_handle(fake_server_t *s, const fake_request_t *rq, fake_answer_t *ans)
{
    int rc;
    memset(ans, 0, sizeof(*ans));
    ans->retry_after = -1;

    if (strncmp(rq->path, "/_fake/", 7) == 0) {
        rc = handle_fake(s, rq, ans);
        goto done;
    }
    if (strcmp(rq->method, "GET") == 0 &&
        (strcmp(rq->path, "/v2/health") == 0 || strcmp(rq->path, "/v2/version") == 0))
        rc = handle_unauthed(s, rq->path, ans);
    else if (strncmp(rq->path, "/v2/", 4) == 0)
        rc = handle_api(s, rq, ans);
    else
        rc = answer_error(s, ans, 404, "NOT_FOUND", "Route not found", -1);

    pthread_mutex_lock(&s->lock);
    s->c.requests++;
    if (rc == 0 && !ans->drop && ans->status > 0 && ans->status < NSTATUS)
        s->c.by_status[ans->status]++;
    pthread_mutex_unlock(&s->lock);
done:
    if (rc != 0) {
        /* Out of memory: a dropped connection is the only honest answer left. */
        free(ans->body);
        memset(ans, 0, sizeof(*ans));
        ans->retry_after = -1;
        ans->drop = true;
    }
}

/* ---- life cycle ------------------------------------------------------- */

void fake_config_defaults(fake_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->fail_meta_code = 131000;
    cfg->pair_burst = 1;
    cfg->account = FAKE_ACCOUNT_OK;
}

static const char *const default_numbers[] = {
    "1000001", "1000002", "1000003", "1000004", "1000005",
    "1000006", "1000007", "1000008", "1000009", "1000010",
};
static const char *const default_tokens[] = {"test-token"};

int fake_server_new(const fake_options_t *opt, fake_server_t **out)
{
    int rc = -ENOMEM;
    *out = NULL;
    const char *const *numbers = opt->numbers ? opt->numbers : default_numbers;
    size_t nnumbers = opt->numbers ? opt->nnumbers : sizeof(default_numbers) / sizeof(*numbers);
    const char *const *tokens = opt->tokens ? opt->tokens : default_tokens;
    size_t ntokens = opt->tokens ? opt->ntokens : 1;

    if (nnumbers == 0 || nnumbers > FAKE_MAX_NUMBERS || ntokens > FAKE_MAX_TOKENS)
        return -EINVAL;
    for (size_t i = 0; i < nnumbers; i++) {
        /* Ids go into the log unescaped, so they are restricted to safe characters. */
        if (!id_is_safe(numbers[i]))
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(numbers[i], numbers[j]) == 0)
                return -EINVAL;
    }
    for (size_t i = 0; i < ntokens; i++)
        if (tokens[i][0] == '\0' || strlen(tokens[i]) > FAKE_MAX_TOKEN_LEN)
            return -EINVAL;

    fake_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->log_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->log_lock, NULL);
    s->cfg = opt->config;
    atomic_init(&s->next_id, 1);

    s->senders = calloc(nnumbers, sizeof(*s->senders));
    s->pairs = calloc(PAIR_HEADS, sizeof(fake_pair_t *));
    s->tokens = dup_tokens(tokens, ntokens);
    if (s->tokens)
        s->ntokens = ntokens;
    if (!s->senders || !s->pairs || !s->tokens)
        goto fail;
    s->nsenders = nnumbers;
    for (size_t i = 0; i < nnumbers; i++)
        snprintf(s->senders[i].id, sizeof(s->senders[i].id), "%s", numbers[i]);
    senders_refill(s, mono_ns());

    uint64_t x = opt->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    /* The instance part of ids differs between runs even with a fixed seed, so wamids of two
     * server processes in one test never collide. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t y =
        ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
    snprintf(s->instance, sizeof(s->instance), "%012" PRIX64,
             (uint64_t)(splitmix64(&y) & 0xffffffffffffull));

    if (opt->log_path) {
        s->log_fd = open(opt->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->log_fd < 0) {
            rc = -errno;
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    fake_server_free(s);
    return rc;
}

void fake_server_free(fake_server_t *s)
{
    if (!s)
        return;
    if (s->pairs)
        pairs_clear(s);
    free(s->pairs);
    free(s->senders);
    free(s->rules);
    free_tokens(s->tokens, s->ntokens);
    if (s->log_fd >= 0)
        close(s->log_fd);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->log_lock);
    free(s);
}
