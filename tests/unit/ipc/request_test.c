/*
 * request_test.c - ipc_request_parse: every validation rule, its error code
 * and its message, table-driven; then the fields of valid requests.
 */
#include "ipc.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define MSG "{\"phoneNumberId\":\"1000001\",\"to\":\"+15551234567\""
#define TEXT_OK "\"type\":\"text\",\"message\":" MSG ",\"text\":\"Hi\"}"

struct bad_case {
    const char *line;
    const char *code;
    const char *msg; /* exact message */
    const char *id;  /* expected echoed id JSON, or NULL */
};

static const struct bad_case bad_cases[] = {
    /* framing-level */
    {"not json", IPC_ERR_BAD_REQUEST, "invalid JSON at byte 0", NULL},
    {"{\"op\":\"ping\"", IPC_ERR_BAD_REQUEST, "invalid JSON at byte 12", NULL},
    {"{\"op\":\"ping\"} x", IPC_ERR_BAD_REQUEST, "invalid JSON at byte 14", NULL},
    {"[1,2]", IPC_ERR_BAD_REQUEST, "request must be a JSON object", NULL},
    {"\"str\"", IPC_ERR_BAD_REQUEST, "request must be a JSON object", NULL},
    {"42", IPC_ERR_BAD_REQUEST, "request must be a JSON object", NULL},
    /* id */
    {"{\"op\":\"ping\",\"id\":[1]}", IPC_ERR_VALIDATION, "id must be a string or a number", NULL},
    {"{\"op\":\"ping\",\"id\":{}}", IPC_ERR_VALIDATION, "id must be a string or a number", NULL},
    {"{\"op\":\"ping\",\"id\":true}", IPC_ERR_VALIDATION, "id must be a string or a number", NULL},
    /* op */
    {"{\"id\":7}", IPC_ERR_VALIDATION, "op is required", "7"},
    /* numeric ids are echoed as written, found at the top level only */
    {"{\"id\":12345678901234567890}", IPC_ERR_VALIDATION, "op is required", "12345678901234567890"},
    {"{\"a\":{\"id\":1},\"id\" : 1E2}", IPC_ERR_VALIDATION, "op is required", "1E2"},
    {"{\"x\":\"\\\"id\\\":3,\",\"id\":-0}", IPC_ERR_VALIDATION, "op is required", "-0"},
    {"{\"\\u0069d\":5}", IPC_ERR_VALIDATION, "op is required", "5"},
    {"{\"id\":\"a\\\"b\",\"op\":3}", IPC_ERR_VALIDATION, "op must be a string", "\"a\\\"b\""},
    {"{\"id\":1.5,\"op\":\"x\"}", IPC_ERR_VALIDATION, "unknown op \"x\"", "1.5"},
    {"{\"op\":\"SEND\"}", IPC_ERR_VALIDATION, "unknown op \"SEND\"", NULL},
    /* send: type and message */
    {"{\"op\":\"send\",\"id\":1,\"message\":" MSG ",\"text\":\"x\"}}", IPC_ERR_VALIDATION,
     "type is required", "1"},
    {"{\"op\":\"send\",\"type\":\"fax\",\"message\":" MSG ",\"text\":\"x\"}}", IPC_ERR_VALIDATION,
     "type must be one of text, media, location, interactive, smart", NULL},
    {"{\"op\":\"send\",\"type\":1,\"message\":" MSG ",\"text\":\"x\"}}", IPC_ERR_VALIDATION,
     "type must be one of text, media, location, interactive, smart", NULL},
    {"{\"op\":\"send\",\"type\":\"text\"}", IPC_ERR_VALIDATION, "message is required", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":[]}", IPC_ERR_VALIDATION,
     "message must be an object", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"to\":\"1\",\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId is required", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":1000001,\"to\":\"1\","
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId must be a string", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"\",\"to\":\"1\","
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId must not be empty", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":"
     "\"12345678901234567890123456789012345678901234567890123456789012345\",\"to\":\"1\","
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId longer than 64 bytes", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.to is required", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":15551234567,"
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.to must be a string", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"abc\","
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.to must contain a digit", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"\","
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.to must contain a digit", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":"
     "\"12345678901234567890123456789012345678901234567890123456789012345\",\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.to longer than 64 bytes", NULL},
    /* text */
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":" MSG "}}", IPC_ERR_VALIDATION,
     "message.text is required", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":" MSG ",\"text\":\"\"}}", IPC_ERR_VALIDATION,
     "message.text must not be empty", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":" MSG ",\"text\":{\"body\":\"x\"}}}",
     IPC_ERR_VALIDATION, "message.text must be a string", NULL},
    /* media */
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG "}}", IPC_ERR_VALIDATION,
     "message.media is required", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG ",\"media\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.media must be an object", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG ",\"media\":{\"mediaId\":\"m\"}}}",
     IPC_ERR_VALIDATION, "message.media.type is required", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG
     ",\"media\":{\"type\":\"gif\",\"mediaId\":\"m\"}}}",
     IPC_ERR_VALIDATION, "message.media.type must be one of image, video, audio, document", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG ",\"media\":{\"type\":\"image\"}}}",
     IPC_ERR_VALIDATION, "message.media.mediaId is required", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG
     ",\"media\":{\"type\":\"image\",\"mediaId\":\"\"}}}",
     IPC_ERR_VALIDATION, "message.media.mediaId must not be empty", NULL},
    /* template_send */
    {"{\"op\":\"template_send\",\"message\":" MSG "}}", IPC_ERR_VALIDATION,
     "message.templateName is required", NULL},
    {"{\"op\":\"template_send\",\"message\":" MSG ",\"templateName\":\"\"}}", IPC_ERR_VALIDATION,
     "message.templateName must not be empty", NULL},
    {"{\"op\":\"template_send\",\"type\":\"text\",\"message\":" MSG ",\"templateName\":\"p\"}}",
     IPC_ERR_VALIDATION, "type must be \"template\" or absent for template_send", NULL},
    /* optional job fields */
    {"{\"op\":\"send\"," TEXT_OK ",\"idempotencyKey\":5}", IPC_ERR_VALIDATION,
     "idempotencyKey must be a string", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"idempotencyKey\":\"\"}", IPC_ERR_VALIDATION,
     "idempotencyKey must not be empty", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"campaign\":[]}", IPC_ERR_VALIDATION,
     "campaign must be a string", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"orderKey\":\"\"}", IPC_ERR_VALIDATION,
     "orderKey must not be empty", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"priority\":\"urgent\"}", IPC_ERR_VALIDATION,
     "priority must be one of high, normal, bulk", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"notBefore\":-1}", IPC_ERR_VALIDATION,
     "notBefore must be a non-negative number", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"notBefore\":\"5\"}", IPC_ERR_VALIDATION,
     "notBefore must be a non-negative number", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"expiresAt\":1e999}", IPC_ERR_VALIDATION,
     "expiresAt must be a non-negative number", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"maxAttempts\":0}", IPC_ERR_VALIDATION,
     "maxAttempts must be an integer from 1 to 1000", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"maxAttempts\":1001}", IPC_ERR_VALIDATION,
     "maxAttempts must be an integer from 1 to 1000", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"maxAttempts\":2.5}", IPC_ERR_VALIDATION,
     "maxAttempts must be an integer from 1 to 1000", NULL},
    /* get */
    {"{\"op\":\"get\"}", IPC_ERR_VALIDATION, "exactly one of job, idempotencyKey is required",
     NULL},
    {"{\"op\":\"get\",\"job\":\"1\",\"idempotencyKey\":\"k\"}", IPC_ERR_VALIDATION,
     "exactly one of job, idempotencyKey is required", NULL},
    {"{\"op\":\"get\",\"job\":\"12a\"}", IPC_ERR_VALIDATION,
     "job must be a job id (a string of digits)", NULL},
    {"{\"op\":\"get\",\"job\":\"\"}", IPC_ERR_VALIDATION,
     "job must be a job id (a string of digits)", NULL},
    {"{\"op\":\"get\",\"job\":\"18446744073709551616\"}", IPC_ERR_VALIDATION,
     "job must be a job id (a string of digits)", NULL},
    {"{\"op\":\"get\",\"job\":-1}", IPC_ERR_VALIDATION, "job must be a job id (a string of digits)",
     NULL},
    {"{\"op\":\"get\",\"job\":1.5}", IPC_ERR_VALIDATION,
     "job must be a job id (a string of digits)", NULL},
    /* list */
    {"{\"op\":\"list\"}", IPC_ERR_VALIDATION, "campaign is required", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"state\":\"done\"}", IPC_ERR_VALIDATION,
     "state must be one of queued, sending, retrying, sent, failed, expired, cancelled, "
     "uncertain",
     NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"after\":\"x\"}", IPC_ERR_VALIDATION,
     "after must be a job id (a string of digits)", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"limit\":0}", IPC_ERR_VALIDATION,
     "limit must be an integer from 1 to 1000", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"limit\":1001}", IPC_ERR_VALIDATION,
     "limit must be an integer from 1 to 1000", NULL},
    /* campaign, cancel */
    {"{\"op\":\"campaign\"}", IPC_ERR_VALIDATION, "campaign is required", NULL},
    {"{\"op\":\"cancel\"}", IPC_ERR_VALIDATION, "exactly one of job, campaign is required", NULL},
    {"{\"op\":\"cancel\",\"job\":\"1\",\"campaign\":\"c\"}", IPC_ERR_VALIDATION,
     "exactly one of job, campaign is required", NULL},
    /* pause, resume */
    {"{\"op\":\"pause\"}", IPC_ERR_VALIDATION,
     "exactly one of campaign, phoneNumberId, all:true is required", NULL},
    {"{\"op\":\"resume\",\"all\":false}", IPC_ERR_VALIDATION,
     "exactly one of campaign, phoneNumberId, all:true is required", NULL},
    {"{\"op\":\"pause\",\"all\":true,\"campaign\":\"c\"}", IPC_ERR_VALIDATION,
     "exactly one of campaign, phoneNumberId, all:true is required", NULL},
    {"{\"op\":\"pause\",\"all\":1}", IPC_ERR_VALIDATION, "all must be a boolean", NULL},
    {"{\"op\":\"pause\",\"phoneNumberId\":\"\"}", IPC_ERR_VALIDATION,
     "phoneNumberId must not be empty", NULL},
    /* retry */
    {"{\"op\":\"retry\"}", IPC_ERR_VALIDATION, "exactly one of job, campaign is required", NULL},
    {"{\"op\":\"retry\",\"campaign\":\"c\"}", IPC_ERR_VALIDATION, "state is required", NULL},
    {"{\"op\":\"retry\",\"campaign\":\"c\",\"state\":\"sent\"}", IPC_ERR_VALIDATION,
     "state must be one of failed, expired, uncertain", NULL},
    /* watch */
    {"{\"op\":\"watch\",\"campaign\":7}", IPC_ERR_VALIDATION, "campaign must be a string", NULL},
};

static void test_bad_table(void)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *t = &bad_cases[i];
        ipc_request_t *req = (ipc_request_t *)1;
        char *id = (char *)1;
        const char *code = NULL;
        char msg[256];
        int rc = ipc_request_parse(t->line, strlen(t->line), &req, &id, &code, msg, sizeof msg);
        CHECK(rc == IPC_EINVAL, "case %zu (%s): rc %d", i, t->line, rc);
        CHECK(req == NULL, "case %zu: req set on failure", i);
        CHECK(code && strcmp(code, t->code) == 0, "case %zu (%s): code %s, want %s", i, t->line,
              code ? code : "(null)", t->code);
        CHECK(strcmp(msg, t->msg) == 0, "case %zu (%s): msg '%s', want '%s'", i, t->line, msg,
              t->msg);
        if (t->id)
            CHECK(id && strcmp(id, t->id) == 0, "case %zu: id %s, want %s", i, id ? id : "(null)",
                  t->id);
        else
            CHECK(id == NULL, "case %zu: id %s, want none", i, id ? id : "?");
        free(id);
        ipc_request_free(req);
    }
}

/* Parses a line that must be valid. */
static ipc_request_t *ok(const char *line, char **id)
{
    ipc_request_t *req = NULL;
    const char *code = NULL;
    char msg[256];
    int rc = ipc_request_parse(line, strlen(line), &req, id, &code, msg, sizeof msg);
    CHECK(rc == 0 && req, "'%s' rejected: %s %s", line, code ? code : "", msg);
    return req;
}

static bool streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static void test_long_fields(void)
{
    /* 200 bytes is fine, 201 is not, for each bounded key. */
    const char *keys[] = {"idempotencyKey", "campaign", "orderKey"};
    char k200[201], k201[202];
    memset(k200, 'k', 200);
    k200[200] = '\0';
    memset(k201, 'k', 201);
    k201[201] = '\0';
    for (size_t i = 0; i < 3; i++) {
        char line[1024], msg[256], want[64];
        const char *code;
        ipc_request_t *req;
        snprintf(line, sizeof line, "{\"op\":\"send\",%s,\"%s\":\"%s\"}", TEXT_OK, keys[i], k200);
        req = ok(line, NULL);
        ipc_request_free(req);
        snprintf(line, sizeof line, "{\"op\":\"send\",%s,\"%s\":\"%s\"}", TEXT_OK, keys[i], k201);
        int rc = ipc_request_parse(line, strlen(line), &req, NULL, &code, msg, sizeof msg);
        snprintf(want, sizeof want, "%s longer than 200 bytes", keys[i]);
        CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_VALIDATION) && streq(msg, want),
              "%s: rc %d msg %s", keys[i], rc, msg);
    }
}

static void test_depth(void)
{
    /* 64 levels in all (the request object included) pass; 65 do not. */
    char line[512];
    for (int depth = 64; depth <= 65; depth++) {
        size_t n = 0;
        n += (size_t)snprintf(line + n, sizeof line - n, "{\"op\":\"ping\",\"x\":");
        for (int i = 1; i < depth; i++)
            line[n++] = '[';
        for (int i = 1; i < depth; i++)
            line[n++] = ']';
        line[n++] = '}';
        line[n] = '\0';
        ipc_request_t *req = NULL;
        const char *code = NULL;
        char msg[128];
        int rc = ipc_request_parse(line, n, &req, NULL, &code, msg, sizeof msg);
        if (depth == 64) {
            CHECK(rc == 0, "depth 64 rejected: %s", msg);
        } else {
            CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_BAD_REQUEST) &&
                      streq(msg, "nesting deeper than 64"),
                  "depth 65: rc %d %s", rc, msg);
        }
        ipc_request_free(req);
    }
    /* A raw NUL byte is not JSON, wherever it stands (cJSON alone would
     * stop at it and accept the line). */
    {
        static const char nul_line[] = "{\"op\":\"ping\"}\0garbage";
        ipc_request_t *rq = NULL;
        const char *c = NULL;
        char m[128];
        int r = ipc_request_parse(nul_line, sizeof nul_line - 1, &rq, NULL, &c, m, sizeof m);
        CHECK(r == IPC_EINVAL && streq(c, IPC_ERR_BAD_REQUEST) &&
                  streq(m, "invalid JSON: NUL byte at byte 13"),
              "NUL byte: rc %d %s", r, m);
        ipc_request_free(rq);
    }
    /* Brackets inside strings, escaped quotes included, do not count. */
    char s[400];
    size_t n = (size_t)snprintf(s, sizeof s, "{\"op\":\"ping\",\"x\":\"\\\"");
    for (int i = 0; i < 100; i++)
        s[n++] = '[';
    snprintf(s + n, sizeof s - n, "\"}");
    ipc_request_t *req = ok(s, NULL);
    ipc_request_free(req);
    /* A very deep document never reaches cJSON's recursion. */
    size_t big = 200000;
    char *deep = malloc(big);
    memset(deep, '[', big);
    const char *code;
    char msg[128];
    int rc = ipc_request_parse(deep, big, &req, NULL, &code, msg, sizeof msg);
    CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_BAD_REQUEST), "deep: rc %d", rc);
    free(deep);
}

static void test_body_size(void)
{
    /* A text of exactly the limit minus the rest of the body passes; one
     * byte more fails. */
    const char *pre = "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"";
    size_t fixed = strlen(pre) + 2; /* closing quote and brace */
    for (int extra = 0; extra <= 1; extra++) {
        size_t tlen = IPC_MAX_BODY - fixed + (size_t)extra;
        size_t cap = tlen + 256;
        char *line = malloc(cap);
        size_t n =
            (size_t)snprintf(line, cap, "{\"op\":\"send\",\"type\":\"text\",\"message\":%s", pre);
        memset(line + n, 'a', tlen);
        n += tlen;
        n += (size_t)snprintf(line + n, cap - n, "\"}}");
        ipc_request_t *req = NULL;
        const char *code = NULL;
        char msg[128];
        int rc = ipc_request_parse(line, n, &req, NULL, &code, msg, sizeof msg);
        if (!extra) {
            CHECK(rc == 0 && req->submit.body_len == IPC_MAX_BODY, "body at limit: %d %s", rc, msg);
        } else {
            CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_VALIDATION) &&
                      streq(msg, "message larger than 2000000 bytes"),
                  "body over limit: %d %s", rc, msg);
        }
        ipc_request_free(req);
        free(line);
    }
}

static void test_valid_send(void)
{
    char *id = NULL;
    ipc_request_t *r = ok("{ \"op\" : \"send\", \"id\" : \"x\\n1\", \"type\":\"text\", "
                          "\"message\": {\"phoneNumberId\":\"1000001\", \"to\":\"+1 555\", "
                          "\"text\":\"Hi \\u00e9\", \"extra\":[1, 2.5e1, null]}, "
                          "\"idempotencyKey\":\"k1\", \"campaign\":\"c1\", \"orderKey\":\"o\", "
                          "\"priority\":\"bulk\", \"notBefore\":1.5, \"expiresAt\":100, "
                          "\"maxAttempts\":3, \"future\":{\"a\":1}}\r",
                          &id);
    if (!r)
        return;
    CHECK(streq(id, "\"x\\n1\""), "id %s", id);
    CHECK(r->op == IPC_OP_SEND && r->submit.type == IPC_TYPE_TEXT, "op/type");
    CHECK(streq(r->submit.phone_number_id, "1000001"), "pnid");
    CHECK(streq(r->submit.to, "+1 555"), "to");
    CHECK(streq(r->submit.idempotency_key, "k1") && streq(r->submit.campaign, "c1") &&
              streq(r->submit.order_key, "o"),
          "keys");
    CHECK(r->submit.priority == IPC_PRIO_BULK, "prio");
    CHECK(r->submit.not_before == 1.5 && r->submit.expires_at == 100, "times");
    CHECK(r->submit.max_attempts == 3, "attempts");
    const char *want = "{\"phoneNumberId\":\"1000001\",\"to\":\"+1 555\",\"text\":\"Hi \xc3\xa9\","
                       "\"extra\":[1,25,null]}";
    CHECK(streq(r->submit.body, want) && r->submit.body_len == strlen(want), "body %s",
          r->submit.body);
    CHECK(r->campaign == NULL && r->job == NULL, "other fields unset");
    free(id);
    ipc_request_free(r);

    /* Defaults; null counts as absent; every send type. */
    const char *types[] = {"text", "media", "location", "interactive", "smart"};
    for (int i = 0; i < 5; i++) {
        char line[512];
        snprintf(line, sizeof line,
                 "{\"op\":\"send\",\"id\":null,\"type\":\"%s\",\"campaign\":null,\"message\":"
                 "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"t\","
                 "\"media\":{\"type\":\"video\",\"mediaId\":\"m\"}}}",
                 types[i]);
        id = (char *)1;
        r = ok(line, &id);
        if (!r)
            continue;
        CHECK(id == NULL, "null id echoed");
        CHECK(r->submit.type == (ipc_type_t)(IPC_TYPE_TEXT + i), "type %s", types[i]);
        CHECK(r->submit.priority == IPC_PRIO_NORMAL && r->submit.max_attempts == 0 &&
                  r->submit.not_before == 0 && r->submit.campaign == NULL,
              "defaults");
        ipc_request_free(r);
    }

    r = ok("{\"op\":\"template_send\",\"id\":12345678901,\"message\":{\"phoneNumberId\":\"1\","
           "\"to\":\"15551234567\",\"templateName\":\"promo\",\"language\":\"en_US\"}}",
           &id);
    if (r) {
        CHECK(r->op == IPC_OP_TEMPLATE_SEND && r->submit.type == IPC_TYPE_TEMPLATE, "template");
        CHECK(streq(id, "12345678901"), "numeric id %s", id);
        free(id);
        ipc_request_free(r);
    }
    r = ok("{\"op\":\"template_send\",\"type\":\"template\",\"message\":{\"phoneNumberId\":\"1\","
           "\"to\":\"1\",\"templateName\":\"p\"}}",
           NULL);
    ipc_request_free(r);
}

static void test_valid_others(void)
{
    ipc_request_t *r;
    r = ok("{\"op\":\"get\",\"job\":123}", NULL);
    CHECK(r && r->op == IPC_OP_GET && streq(r->job, "123"), "get numeric job");
    ipc_request_free(r);
    r = ok("{\"op\":\"get\",\"job\":\"18446744073709551615\"}", NULL);
    CHECK(r && streq(r->job, "18446744073709551615"), "get max job");
    ipc_request_free(r);
    r = ok("{\"op\":\"get\",\"idempotencyKey\":\"k\"}", NULL);
    CHECK(r && streq(r->idempotency_key, "k") && !r->job, "get key");
    ipc_request_free(r);

    r = ok("{\"op\":\"list\",\"campaign\":\"c\"}", NULL);
    CHECK(r && r->op == IPC_OP_LIST && r->limit == 100 && !r->state && !r->after, "list dflt");
    ipc_request_free(r);
    r = ok("{\"op\":\"list\",\"campaign\":\"c\",\"state\":\"uncertain\",\"after\":\"99\","
           "\"limit\":1000}",
           NULL);
    CHECK(r && streq(r->state, "uncertain") && streq(r->after, "99") && r->limit == 1000,
          "list full");
    ipc_request_free(r);

    r = ok("{\"op\":\"campaign\",\"campaign\":\"c\"}", NULL);
    CHECK(r && r->op == IPC_OP_CAMPAIGN && streq(r->campaign, "c"), "campaign");
    ipc_request_free(r);
    r = ok("{\"op\":\"cancel\",\"job\":\"5\"}", NULL);
    CHECK(r && r->op == IPC_OP_CANCEL && streq(r->job, "5"), "cancel job");
    ipc_request_free(r);
    r = ok("{\"op\":\"cancel\",\"campaign\":\"c\"}", NULL);
    CHECK(r && streq(r->campaign, "c") && !r->job, "cancel campaign");
    ipc_request_free(r);

    r = ok("{\"op\":\"pause\",\"all\":true}", NULL);
    CHECK(r && r->op == IPC_OP_PAUSE && r->all, "pause all");
    ipc_request_free(r);
    r = ok("{\"op\":\"resume\",\"phoneNumberId\":\"100\",\"all\":false}", NULL);
    CHECK(r && r->op == IPC_OP_RESUME && streq(r->phone_number_id, "100") && !r->all, "resume");
    ipc_request_free(r);
    r = ok("{\"op\":\"pause\",\"campaign\":\"c\"}", NULL);
    CHECK(r && streq(r->campaign, "c"), "pause campaign");
    ipc_request_free(r);

    r = ok("{\"op\":\"retry\",\"job\":\"7\"}", NULL);
    CHECK(r && r->op == IPC_OP_RETRY && streq(r->job, "7") && !r->state, "retry job");
    ipc_request_free(r);
    r = ok("{\"op\":\"retry\",\"campaign\":\"c\",\"state\":\"expired\"}", NULL);
    CHECK(r && streq(r->state, "expired"), "retry campaign");
    ipc_request_free(r);

    r = ok("{\"op\":\"stats\"}", NULL);
    CHECK(r && r->op == IPC_OP_STATS, "stats");
    ipc_request_free(r);
    r = ok("{\"op\":\"ping\"}", NULL);
    CHECK(r && r->op == IPC_OP_PING, "ping");
    ipc_request_free(r);
    r = ok("{\"op\":\"watch\"}", NULL);
    CHECK(r && r->op == IPC_OP_WATCH && !r->campaign, "watch");
    ipc_request_free(r);
    r = ok("{\"op\":\"watch\",\"campaign\":\"c\"}", NULL);
    CHECK(r && streq(r->campaign, "c"), "watch campaign");
    ipc_request_free(r);
}

static void test_odd_input(void)
{
    /* Not NUL-terminated: parsing stops at len. */
    const char buf[] = "{\"op\":\"ping\"}GARBAGE";
    ipc_request_t *r = NULL;
    const char *code;
    char msg[64];
    int rc = ipc_request_parse(buf, 13, &r, NULL, &code, msg, sizeof msg);
    CHECK(rc == 0 && r && r->op == IPC_OP_PING, "len-bounded parse: %d %s", rc, msg);
    ipc_request_free(r);
    /* An embedded NUL is not a way to smuggle garbage past the check. */
    const char nul[] = "{\"op\":\"ping\"}\0xx";
    rc = ipc_request_parse(nul, sizeof nul - 1, &r, NULL, &code, msg, sizeof msg);
    CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_BAD_REQUEST), "embedded NUL: %d", rc);
    /* Empty input. */
    rc = ipc_request_parse("", 0, &r, NULL, &code, msg, sizeof msg);
    CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_BAD_REQUEST), "empty: %d", rc);
    /* An unknown op is named, bounded. */
    char line[400];
    char big[300];
    memset(big, 'z', 299);
    big[299] = '\0';
    snprintf(line, sizeof line, "{\"op\":\"%s\"}", big);
    char m2[256];
    rc = ipc_request_parse(line, strlen(line), &r, NULL, &code, m2, sizeof m2);
    CHECK(rc == IPC_EINVAL && strlen(m2) < 100 && strncmp(m2, "unknown op \"zzz", 15) == 0,
          "long op: %s", m2);
    /* A tiny msg buffer truncates without overflowing. */
    char tiny[4];
    rc = ipc_request_parse("{}", 2, &r, NULL, &code, tiny, sizeof tiny);
    CHECK(rc == IPC_EINVAL && streq(tiny, "op "), "tiny msg '%s'", tiny);
    CHECK(streq(ipc_strerror(IPC_EINVAL), "invalid argument or option"), "strerror");
}

/* The body is the message as cJSON prints it compact, whether the parser
 * takes it from the line (already written that way) or prints it. */
static void test_body_as_printed(void)
{
    static const char *const msgs[] = {
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"plain\"}",
        /* NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one string on two lines */
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":[0,-1,123456789012345,true,"
        "false,null,{},[]]}",
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":1234567890123456}",
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":-0}",
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":01}",
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":[1.50,2e3,1E2,-0.5]}",
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"a\\/b\\u00e9\\n\"}",
        "{ \"phoneNumberId\" : \"1\", \"to\":\"2\",\"text\":\"spaced\" }",
        "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"caf\xc3\xa9 \\\"q\\\"\"}",
    };
    /* Request lines around the message: prefix, message, suffix. */
    static const char *const wraps[][2] = {
        {"{\"op\":\"send\",\"type\":\"text\",\"message\":", "}"},
        {"{\"message\":", ",\"op\":\"send\",\"type\":\"text\"}"},
        {"{\"op\":\"send\",\"x\":{\"message\":{\"a\":1}},\"note\":\"message\",\"type\":\"text\","
         "\"message\":",
         "}"},
        {"{\"op\":\"send\",\"type\":\"text\",\"message\":", ",\"message\":{\"other\":1}}"},
        {"{\"op\":\"send\",\"type\":\"text\",\"mess\\u0061ge\":", ",\"message\":{\"x\":1}}"},
        {" {\"op\":\"send\",\"type\":\"text\",\"message\" :\t", " }"},
    };
    char line[1024];

    for (size_t w = 0; w < sizeof wraps / sizeof wraps[0]; w++) {
        for (size_t m = 0; m < sizeof msgs / sizeof msgs[0]; m++) {
            ipc_request_t *r = NULL;
            const char *code = NULL;
            char msg[128];
            int n = snprintf(line, sizeof line, "%s%s%s", wraps[w][0], msgs[m], wraps[w][1]);
            cJSON *want_tree = cJSON_Parse(msgs[m]);
            char *want = cJSON_PrintUnformatted(want_tree);
            int rc = ipc_request_parse(line, (size_t)n, &r, NULL, &code, msg, sizeof msg);
            CHECK(rc == 0, "wrap %zu msg %zu: %d %s", w, m, rc, msg);
            if (rc == 0)
                CHECK(streq(r->submit.body, want) && r->submit.body_len == strlen(want),
                      "wrap %zu msg %zu: body %s, want %s", w, m, r->submit.body, want);
            free(want);
            cJSON_Delete(want_tree);
            ipc_request_free(r);
        }
    }
}

int main(void)
{
    test_bad_table();
    test_long_fields();
    test_depth();
    test_body_size();
    test_valid_send();
    test_body_as_printed();
    test_valid_others();
    test_odd_input();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
