/* test_classify.c - answer classification tables. */
#include "check.h"
#include "classify.h"
#include "utf8.h"

static classify_result_t answer(int status, const char *body, double retry_after)
{
    http_result_t r;
    classify_result_t c;

    memset(&r, 0, sizeof(r));
    r.status = status;
    r.body = body;
    r.body_len = body ? strlen(body) : 0;
    r.retry_after = retry_after;
    r.detail = "";
    classify_answer(&r, &c);
    return c;
}

static classify_result_t meta(int status, long code)
{
    char body[512];

    snprintf(body, sizeof(body),
             "{\"success\":false,\"error\":\"INTERNAL_ERROR\",\"message\":\"upstream\","
             "\"details\":{\"error\":{\"message\":\"m\",\"type\":\"OAuthException\",\"code\":%ld,"
             "\"fbtrace_id\":\"x\"}}}",
             code);
    return answer(status, body, -1);
}

static void test_success(void)
{
    classify_result_t c = answer(
        200,
        "{\"success\":true,\"data\":{\"messaging_product\":\"whatsapp\",\"contacts\":[{\"input\":"
        "\"1\",\"wa_id\":\"1\"}],\"messages\":[{\"id\":\"wamid.ABC\",\"message_status\":"
        "\"accepted\"}]}}",
        -1);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    CHECK_STR(c.wamid, "wamid.ABC");
    CHECK(!c.no_wamid);
    /* The API's word without a wamid: sent, and said so. */
    c = answer(200, "{\"success\":true,\"data\":{\"contacts\":[]}}", -1);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    CHECK_STR(c.wamid, "");
    CHECK(c.no_wamid);
    /* Any other 2xx proves nothing: maybe sent (a proxy, a wrong api_base). */
    c = answer(200, "not json", -1);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent && !c.not_sent);
    CHECK_STR(c.error.code, "HTTP_200");
    CHECK_EQ(c.error.status, 200);
    c = answer(204, NULL, -1);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent);
    CHECK_STR(c.error.code, "HTTP_204");
    c = answer(200, "{\"data\":{\"messages\":[{\"x\":1}]}}", -1);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent);
    /* An error envelope in a 2xx is an error: classified as one. */
    c = answer(200, "{\"success\":false,\"error\":\"INTERNAL_ERROR\",\"message\":\"m\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(!c.maybe_sent);
    CHECK_STR(c.error.code, "INTERNAL_ERROR");
    c = answer(200,
               "{\"success\":false,\"error\":\"INTERNAL_ERROR\",\"message\":\"m\",\"details\":"
               "{\"error\":{\"code\":131026}}}",
               -1);
    CHECK_EQ(c.action, CLASSIFY_FAIL);
}

/* The success answer is read without cJSON (classify.c's scanner): it must
 * find what cJSON's lookup would find, and nothing where cJSON finds none. */
static void test_success_scanner(void)
{
    static const struct {
        const char *body, *wamid;
    } cases[] = {
        {"{\"data\":{\"messages\":[{\"id\":\"w1\"},{\"id\":\"w2\"}]}}", "w1"},
        {" { \"data\" : { \"x\":[1,-2.5e3,true,false,null,{\"id\":\"no\"}], \"messages\" : "
         "[ { \"a\":{\"id\":\"no\"}, \"id\" : \"w3\" } ] } } ",
         "w3"},
        {"{\"data\":{\"messages\":[{\"id\":\"w4\",\"id\":\"dup\"}]},\"data\":{}}", "w4"},
        {"{\"messages\":[{\"id\":\"top-level\"}]}", ""},
        {"{\"data\":{\"messages\":{\"id\":\"not-an-array\"}}}", ""},
        {"{\"data\":{\"messages\":[{\"id\":5}]}}", ""},
        {"{\"data\":{\"messages\":[{\"id\":\"w\\u0041\\\"q\"}]}}", "wA\"q"}, /* escapes: cJSON */
        {"{\"data\":{\"messages\":[{\"id\":\"w5\"}]}} trailing", "w5"},      /* as cJSON */
        {"{\"data\":{\"messages\":[{\"id\":\"w6\"}]}", ""},                  /* cut short */
        {"{\"data\":{\"messages\":[{\"id\":\"w7\"}],}}", ""},                /* bad comma */
        /* What cJSON takes, and its lookup finds (tests/fuzz/fuzz_answer): */
        {"{\"data\":{\"messages\":{\"x\":{\"id\":\"w9\"}}}}", "w9"},     /* object's first member */
        {"{\"data\":\x01{\"messages\":[{\"id\":\"w10\"}]}}", "w10"},     /* bytes <= 0x20: space */
        {"{\"x\":12-3,\"data\":{\"messages\":[{\"id\":\"w11\"}]}}", ""}, /* strtod's number */
        {"{\"x\":\"\\q\",\"data\":{\"messages\":[{\"id\":\"w12\"}]}}", ""}, /* bad escape */
        {"{\"x\":\"\\u00e9\",\"data\":{\"messages\":[{\"id\":\"w13\"}]}}", "w13"},
        {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]"
         "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
         ""},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        classify_result_t c = answer(200, cases[i].body, -1);
        /* No wamid and no "success":true: not an answer that proves a send. */
        CHECK_EQ(c.action, (cases[i].wamid[0] != '\0' ? CLASSIFY_SENT : CLASSIFY_RETRY));
        CHECK_STR(c.wamid, cases[i].wamid);
    }
}

/* The scanner skips plain bytes a word at a time: a quote, a backslash or
 * a control byte at any offset of a word, and bytes with the top bit set
 * (UTF-8), must give what cJSON gives. */
static void test_scanner_offsets(void)
{
    for (int n = 0; n < 24; n++) {
        for (int kind = 0; kind < 4; kind++) {
            char id[64], expect[64], body[256];
            classify_result_t c;
            int i;

            for (i = 0; i < n; i++)
                id[i] = (char)('a' + i % 26);
            id[n] = '\0';
            snprintf(expect, sizeof(expect), "%s", id);
            switch (kind) {
            case 1: /* an escaped quote at offset n: cJSON unescapes it */
                snprintf(id + n, sizeof(id) - (size_t)n, "\\\"x");
                snprintf(expect + n, sizeof(expect) - (size_t)n, "\"x");
                break;
            case 2: /* a raw control byte: cJSON keeps it */
                snprintf(id + n, sizeof(id) - (size_t)n, "\tx");
                snprintf(expect + n, sizeof(expect) - (size_t)n, "\tx");
                break;
            case 3: /* UTF-8 (top bit set) at offset n */
                snprintf(id + n, sizeof(id) - (size_t)n, "\xc3\xa9\xe2\x82\xacz");
                snprintf(expect + n, sizeof(expect) - (size_t)n, "\xc3\xa9\xe2\x82\xacz");
                break;
            default:
                break;
            }
            snprintf(body, sizeof(body), "{\"data\":{\"messages\":[{\"id\":\"%s\"}]}}", id);
            c = answer(200, body, -1);
            CHECK_EQ(c.action, (expect[0] != '\0' ? CLASSIFY_SENT : CLASSIFY_RETRY));
            if (strcmp(c.wamid, expect) != 0) {
                fprintf(stderr, "n=%d kind=%d: got \"%s\", want \"%s\"\n", n, kind, c.wamid,
                        expect);
                CHECK(0);
            }
        }
    }
}

static void test_status_classes(void)
{
    classify_result_t c;

    c = answer(400, "{\"success\":false,\"error\":\"VALIDATION_ERROR\",\"message\":\"bad to\"}",
               -1);
    CHECK_EQ(c.action, CLASSIFY_FAIL);
    CHECK_EQ(c.error.status, 400);
    CHECK_STR(c.error.code, "VALIDATION_ERROR");
    CHECK_STR(c.error.message, "bad to");
    c = answer(404, "{\"success\":false,\"error\":\"NOT_FOUND\",\"message\":\"template\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_FAIL);
    c = answer(404,
               "{\"success\":false,\"error\":\"NOT_FOUND\",\"message\":\"WhatsApp account not "
               "found\"}",
               -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    /* A 404 that is not the API's error envelope: no v2 route answered
     * (api_base names another server or path). Every job would fail for
     * good on it: the account pauses, and the reason says why. */
    c = answer(404, "<html><body>Not Found</body></html>", -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    CHECK_STR(c.error.code, "HTTP_404");
    CHECK(strstr(c.error.message, "api_base") != NULL);
    c = answer(404, "", -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    /* So is a 400 without it: a web server's page (nginx's for http://
     * sent to its https port), not a VALIDATION_ERROR of the job. */
    c = answer(400,
               "<html><head><title>400 The plain HTTP request was sent to HTTPS port</title>"
               "</head></html>",
               -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    CHECK_STR(c.error.code, "HTTP_400");
    CHECK(strstr(c.error.message, "https") != NULL && strstr(c.error.message, "api_base") != NULL);
    c = answer(400, "", -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    c = answer(400, "{\"success\":false,\"error\":\"SOMETHING_NEW\",\"message\":\"x\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_FAIL);
    c = answer(401, "{\"success\":false,\"error\":\"UNAUTHORIZED\",\"message\":\"x\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    c = answer(403, "{\"success\":false,\"error\":\"PLAN_EXPIRED\",\"message\":\"x\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    c = answer(403, "{\"success\":false,\"error\":\"DEVELOPER_PLAN_REQUIRED\",\"message\":\"x\"}",
               -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    c = answer(403, "{\"success\":false,\"error\":\"FORBIDDEN\",\"message\":\"x\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_SENDER);
    c = answer(429, "", 7);
    CHECK_EQ(c.action, CLASSIFY_THROTTLE_SENDER);
    CHECK(c.min_delay == 7);
    c = answer(429, "", -1); /* no Retry-After: a second at least */
    CHECK(c.action == CLASSIFY_THROTTLE_SENDER && c.min_delay == 1.0);
    c = answer(429, "", 1e9); /* an hour at most */
    CHECK(c.min_delay == 3600.0);
    c = answer(503, "", 1e9);
    CHECK(c.action == CLASSIFY_RETRY && c.min_delay == 3600.0);
    c = answer(500, "{\"success\":false,\"error\":\"INTERNAL_ERROR\",\"message\":\"x\"}", -1);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(!c.maybe_sent); /* the API's own 500: it did not take the message */
    c = answer(502, "<html>bad gateway</html>", -1);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK_STR(c.error.code, "HTTP_502");
    CHECK(c.maybe_sent); /* a gateway's: it may have passed the request on */
    c = answer(504, "", -1);
    CHECK(c.action == CLASSIFY_RETRY && c.maybe_sent);
    c = answer(502, "{\"success\":false,\"error\":\"INTERNAL_ERROR\",\"message\":\"media\"}", -1);
    CHECK(c.action == CLASSIFY_RETRY && !c.maybe_sent);
}

static void test_meta_codes(void)
{
    CHECK_EQ(meta(500, 130429).action, CLASSIFY_THROTTLE_SENDER);
    CHECK_EQ(meta(500, 131056).action, CLASSIFY_RETRY_PAIR);
    CHECK_EQ(meta(500, 131000).action, CLASSIFY_RETRY);
    CHECK_EQ(meta(500, 131057).action, CLASSIFY_RETRY);
    CHECK(meta(500, 131057).min_delay >= 60);
    CHECK_EQ(meta(500, 80007).action, CLASSIFY_THROTTLE_ACCOUNT);
    CHECK_EQ(meta(500, 131048).action, CLASSIFY_PAUSE_SENDER);
    CHECK_EQ(meta(500, 131064).action, CLASSIFY_PAUSE_SENDER);
    CHECK_EQ(meta(500, 131049).action, CLASSIFY_RESCHEDULE_DAY);
    CHECK_EQ(meta(500, 131026).action, CLASSIFY_FAIL);
    CHECK_EQ(meta(500, 131047).action, CLASSIFY_FAIL);
    CHECK_EQ(meta(500, 132001).action, CLASSIFY_FAIL);
    CHECK_EQ(meta(500, 190).action, CLASSIFY_PAUSE_ACCOUNT);
    CHECK_EQ(meta(500, 250).action, CLASSIFY_PAUSE_SENDER);
    /* A Meta code overrides the HTTP status: 400 + transient stays transient. */
    CHECK_EQ(meta(400, 131000).action, CLASSIFY_RETRY);
    /* Unknown Meta code: decided by the status. */
    CHECK_EQ(meta(500, 999999).action, CLASSIFY_RETRY);
    CHECK_EQ(meta(400, 999999).action, CLASSIFY_FAIL);
    CHECK_EQ(meta(500, 131026).error.meta_code, 131026);
    CHECK(meta(500, 131026).error.has_meta);
    /* Meta's code 0 (AuthException) is a code, kept as one. */
    CHECK_EQ(meta(500, 0).action, CLASSIFY_PAUSE_ACCOUNT);
    CHECK(meta(500, 0).error.has_meta && meta(500, 0).error.meta_code == 0);
    CHECK(!answer(500, "{\"success\":false,\"error\":\"INTERNAL_ERROR\"}", -1).error.has_meta);
    /* Meta 0 and 190 wait for an operator (GET /v2/me cannot see them)... */
    CHECK(meta(500, 190).needs_operator && meta(500, 0).needs_operator);
    CHECK(!meta(500, 131026).needs_operator);
}

/* ...but not on a 401: AvenPing checks its own token before anything
 * reaches Meta, so a 401 is that token whatever Meta object rides along
 * (Graph answers 190 with a 401 too). It is probed like any 401 and
 * resumes by itself once the token works; the code is kept. */
static void test_unauthorized_probed(void)
{
    static const char *codes[] = {"UNAUTHORIZED", "INTERNAL_ERROR"};
    char body[512];

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        classify_result_t c;

        snprintf(body, sizeof(body),
                 "{\"success\":false,\"error\":\"%s\",\"message\":\"Invalid token\","
                 "\"details\":{\"error\":{\"message\":\"m\",\"type\":\"OAuthException\","
                 "\"code\":190}}}",
                 codes[i]);
        c = answer(401, body, -1);
        CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
        CHECK(!c.needs_operator);
        CHECK(c.error.has_meta && c.error.meta_code == 190);
    }
    /* The envelope's UNAUTHORIZED under another status is the token too. */
    snprintf(body, sizeof(body),
             "{\"success\":false,\"error\":\"UNAUTHORIZED\",\"details\":{\"error\":"
             "{\"code\":0}}}");
    CHECK(!answer(200, body, -1).needs_operator);
    CHECK_EQ(answer(200, body, -1).action, CLASSIFY_PAUSE_ACCOUNT);
}

/* The AvenPing error code decides when the status does not pair with it
 * (a 200 or a 500 carrying the envelope); the status only when there is no
 * code it knows. */
static void test_code_over_status(void)
{
    static const struct {
        const char *error, *message;
        int status;
        int action;
    } cases[] = {
        {"UNAUTHORIZED", "x", 200, CLASSIFY_PAUSE_ACCOUNT},
        {"UNAUTHORIZED", "x", 500, CLASSIFY_PAUSE_ACCOUNT},
        {"PLAN_EXPIRED", "x", 200, CLASSIFY_PAUSE_ACCOUNT},
        {"DEVELOPER_PLAN_REQUIRED", "x", 500, CLASSIFY_PAUSE_ACCOUNT},
        {"NOT_FOUND", "WhatsApp account not found", 200, CLASSIFY_PAUSE_ACCOUNT},
        {"FORBIDDEN", "x", 200, CLASSIFY_PAUSE_SENDER},
        {"FORBIDDEN", "x", 500, CLASSIFY_PAUSE_SENDER},
        {"VALIDATION_ERROR", "x", 200, CLASSIFY_FAIL},
        {"VALIDATION_ERROR", "x", 500, CLASSIFY_FAIL},
        {"NOT_FOUND", "template", 200, CLASSIFY_FAIL},
        {"INTERNAL_ERROR", "x", 200, CLASSIFY_RETRY},
        {"INTERNAL_ERROR", "x", 401, CLASSIFY_PAUSE_ACCOUNT}, /* not a scoped code: status */
        {"SOMETHING_NEW", "x", 429, CLASSIFY_THROTTLE_SENDER},
        {"SOMETHING_NEW", "x", 400, CLASSIFY_FAIL},
    };
    char body[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body), "{\"success\":false,\"error\":\"%s\",\"message\":\"%s\"}",
                 cases[i].error, cases[i].message);
        classify_result_t c = answer(cases[i].status, body, -1);
        if (c.action != cases[i].action)
            fprintf(stderr, "case %zu: %d %s: action %d, want %d\n", i, cases[i].status,
                    cases[i].error, c.action, cases[i].action);
        CHECK_EQ(c.action, cases[i].action);
        CHECK_EQ(c.error.status, cases[i].status);
    }
}

/* Meta's code as a string of digits is that code; a code that is not a
 * whole number in 0..2^31-1 is no code (it read as Meta's 0 before). */
static void test_meta_code_forms(void)
{
#define META_CODE_BODY                                                                             \
    "{\"success\":false,\"error\":\"INTERNAL_ERROR\",\"details\":{\"error\":{\"code\":%s}}}"
    char body[256];
    classify_result_t c;

    snprintf(body, sizeof(body), META_CODE_BODY, "\"131056\"");
    c = answer(500, body, -1);
    CHECK(c.action == CLASSIFY_RETRY_PAIR && c.error.has_meta && c.error.meta_code == 131056);
    snprintf(body, sizeof(body), META_CODE_BODY, "\"131048\"");
    CHECK_EQ(answer(400, body, -1).action, CLASSIFY_PAUSE_SENDER);
    static const char *bad[] = {"1e30",    "-1e30", "9.3e18",          "-5",     "131056.5",
                                "\"12x\"", "\"\"",  "\"99999999999\"", "\"-1\"", "true"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), META_CODE_BODY, bad[i]);
        c = answer(500, body, -1);
        if (c.error.has_meta)
            fprintf(stderr, "code %s read as Meta %ld\n", bad[i], c.error.meta_code);
        CHECK(!c.error.has_meta);
        CHECK_EQ(c.action, CLASSIFY_RETRY);
    }
}

/* A success envelope with a wamid proves the message was taken, whatever
 * the status: never sent again. */
static void test_success_any_status(void)
{
    static const char *ok = "{\"success\":true,\"data\":{\"messages\":[{\"id\":\"wamid.X\"}]}}";
    classify_result_t c;

    c = answer(500, ok, -1);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    CHECK_STR(c.wamid, "wamid.X");
    c = answer(400, ok, -1);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    /* success:true without a wamid under an error status proves less. */
    c = answer(500, "{\"success\":true}", -1);
    CHECK(c.action == CLASSIFY_RETRY && c.maybe_sent);
}

/* Text from the API reaches clients as UTF-8: bytes that are not become
 * U+FFFD, and a cut falls between characters (a message of 300 "é" was cut
 * inside one; invalid JSON lines then broke the clients' parsers). */
static void test_text_utf8(void)
{
    char body[1024], msg[700];
    size_t o = 0;
    classify_result_t c;

    c = answer(403, "{\"success\":false,\"error\":\"FORBIDDEN\",\"message\":\"a\xff\xfe b\"}", -1);
    CHECK_STR(c.error.message, "a\xEF\xBF\xBD\xEF\xBF\xBD b");
    for (int i = 0; i < 300; i++) {
        msg[o++] = '\xC3';
        msg[o++] = '\xA9';
    }
    msg[o] = '\0';
    snprintf(body, sizeof(body),
             "{\"success\":false,\"error\":\"VALIDATION_ERROR\",\"message\":\"%s\"}", msg);
    c = answer(400, body, -1);
    CHECK_EQ(strlen(c.error.message) % 2, 0); /* whole characters only */
    CHECK(strlen(c.error.message) >= sizeof(c.error.message) - 2);
    c = answer(200, "{\"success\":true,\"data\":{\"messages\":[{\"id\":\"wamid.\xc3\"}]}}", -1);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    CHECK_STR(c.wamid, "wamid.\xEF\xBF\xBD");
    /* A redaction that lengthens the text (a 5-byte token becomes the
     * 7-byte "[token]") cuts it at the buffer's end: between characters.
     * The message is "tok12x" and 124 "é" (254 bytes); redacted it would
     * be 256, one more than the buffer holds: a byte cut splits the last
     * "é", so the whole "é" goes. */
    {
        size_t n;
        memcpy(msg, "tok12x", 6);
        for (o = 6; o + 2 <= 254; o += 2)
            memcpy(msg + o, "\xC3\xA9", 2);
        msg[o] = '\0';
        snprintf(body, sizeof(body),
                 "{\"success\":false,\"error\":\"VALIDATION_ERROR\",\"message\":\"%s\"}", msg);
        c = answer(400, body, -1);
        CHECK_EQ(strlen(c.error.message), 254);
        classify_result_redact(&c, "tok12");
        n = strlen(c.error.message);
        CHECK(strncmp(c.error.message, "[token]x\xC3\xA9", 10) == 0);
        CHECK_EQ(n, 254); /* 8 + 123 whole characters */
        CHECK(utf8_check(c.error.message, n) == n);
    }
}

static void test_transport(void)
{
    http_result_t r;
    classify_result_t c;

    memset(&r, 0, sizeof(r));
    r.error = HTTP_ENOTSENT;
    r.detail = "Failed to connect";
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(!c.maybe_sent);
    CHECK_STR(c.error.code, "CONNECT_ERROR");
    r.error = HTTP_EMAYBESENT;
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent);
    /* Cancelled (the stop) before any of it was written: not sent, so the
     * attempt does not count; once some of it left, maybe sent. */
    r.error = HTTP_ECANCELLED;
    r.left = false;
    classify_answer(&r, &c);
    CHECK(c.action == CLASSIFY_RETRY && c.not_sent && !c.maybe_sent);
    CHECK_STR(c.error.code, "INTERRUPTED");
    r.left = true;
    classify_answer(&r, &c);
    CHECK(c.action == CLASSIFY_RETRY && !c.not_sent && c.maybe_sent);
    /* The stop's, not the operator's cancel (CANCELLED): said apart. */
    CHECK_STR(c.error.code, "INTERRUPTED");
    CHECK(strstr(c.error.message, "may have been delivered") != NULL);
}

/* A success answer known to be cut (http_result_t.cut): longer than the
 * engine keeps, or its connection broke before its end after a 2xx. The
 * message id, once its string came whole, says the API took the message;
 * an answer that merely does not parse does not (it was sent again and
 * ended `failed` with "not the v2 success envelope"). */
static void test_cut_success(void)
{
    static const char head[] = "{\"success\":true,\"data\":{\"messages\":[{\"id\":\"wamid.CUT\"}],"
                               "\"pad\":\"xxxxxxxx";
    static const char whole[] = "{\"success\":true,\"data\":{\"messages\":[{\"id\":\"wamid.W\"}]}}";
    http_result_t r;
    classify_result_t c;

    memset(&r, 0, sizeof(r));
    r.detail = "";
    r.retry_after = -1;
    /* Longer than kept: an answer (error 0) whose body is its start. */
    r.status = 200;
    r.body = head;
    r.body_len = strlen(head);
    r.cut = true;
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    CHECK_STR(c.wamid, "wamid.CUT");
    /* The same bytes not known to be cut: not the envelope, maybe sent. */
    r.cut = false;
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent);
    /* The id's own string cut: no id. */
    r.cut = true;
    r.body_len = strlen("{\"success\":true,\"data\":{\"messages\":[{\"id\":\"wamid.C");
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent);
    /* A transfer that failed after a 2xx and the whole envelope (a wrong
     * Content-Length, no last chunk): sent. */
    r.error = HTTP_EMAYBESENT;
    r.detail = "transfer closed with 100 bytes remaining to read";
    r.body = whole;
    r.body_len = strlen(whole);
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_SENT);
    CHECK_STR(c.wamid, "wamid.W");
    CHECK(!c.maybe_sent);
    /* ... with only part of it: a transport error, maybe sent. */
    r.body_len = 20;
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK(c.maybe_sent);
    CHECK_STR(c.error.code, "TRANSPORT_ERROR");
    CHECK_STR(c.wamid, "");
    /* Not after a 2xx: the id proves nothing here. */
    r.status = 500;
    r.body_len = strlen(whole);
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_RETRY);
    CHECK_STR(c.error.code, "TRANSPORT_ERROR");
}

/* A redirect pauses the account, naming where it pointed: api_base is
 * wrong, and every job would meet it (each used up its attempts, with an
 * empty message). */
static void test_redirect(void)
{
    http_result_t r;
    classify_result_t c;

    memset(&r, 0, sizeof(r));
    r.retry_after = -1;
    r.status = 301;
    r.body = "<html>Moved</html>";
    r.body_len = strlen(r.body);
    r.detail = "https://api.example.com/v2/messages/send/text";
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    CHECK_STR(c.error.code, "HTTP_301");
    CHECK_STR(c.error.message, "a redirect to https://api.example.com/v2/messages/send/text, not "
                               "followed: api_base must name the v2 API itself");
    r.status = 307;
    r.body = "";
    r.body_len = 0;
    r.detail = "";
    classify_answer(&r, &c);
    CHECK_EQ(c.action, CLASSIFY_PAUSE_ACCOUNT);
    CHECK_STR(c.error.message, "a redirect, not followed: api_base must name the v2 API itself");
}

/* The token never leaves in an error an API echoed: whole, cut at the end
 * of the message, in the code; other text untouched. */
static void test_redact(void)
{
    const char *tok = "avp_SECRET_7f3a9c2e1b5d4e";
    classify_result_t c;
    char body[600];

    snprintf(body, sizeof(body),
             "{\"success\":false,\"error\":\"X%s\",\"message\":\"bad token %s; Bearer %s.\"}", tok,
             tok, tok);
    c = answer(401, body, -1);
    classify_result_redact(&c, tok);
    CHECK_STR(c.error.message, "bad token [token]; Bearer [token].");
    CHECK_STR(c.error.code, "X[token]");
    /* Echoed in another case (it was kept as it came). */
    c = answer(401,
               "{\"success\":false,\"error\":\"E\",\"message\":\"AUTHORIZATION: BEARER "
               "AVP_SECRET_7F3A9C2E1B5D4E\"}",
               -1);
    classify_result_redact(&c, tok);
    CHECK_STR(c.error.message, "AUTHORIZATION: BEARER [token]");
    /* Cut by the 255-byte message buffer in the middle of the token. */
    memset(body, 0, sizeof(body));
    snprintf(body, sizeof(body), "{\"success\":false,\"error\":\"E\",\"message\":\"%0*d%s\"}", 240,
             0, tok);
    c = answer(400, body, -1);
    CHECK(strlen(c.error.message) == QUEUE_ERR_MSG_LEN - 1);
    classify_result_redact(&c, tok);
    CHECK(strstr(c.error.message, "avp_SECR") == NULL);
    CHECK(strstr(c.error.message, "[token]") != NULL);
    /* Nothing to hide: unchanged; no token: nothing done. */
    c = answer(400, "{\"success\":false,\"error\":\"E\",\"message\":\"avp_ plain\"}", -1);
    classify_result_redact(&c, tok);
    CHECK_STR(c.error.message, "avp_ plain");
    classify_result_redact(&c, NULL);
    CHECK_STR(c.error.message, "avp_ plain");
    /* A tail that is the token's start is redacted only where the text
     * filled its buffer (was cut); elsewhere it is just text. */
    c = answer(400, "{\"success\":false,\"error\":\"E\",\"message\":\"ends in avp_S\"}", -1);
    classify_result_redact(&c, tok);
    CHECK_STR(c.error.message, "ends in avp_S");
    /* Percent-encoded, as an API echoing it from a URL or a form would:
     * "+", "/" and "=" escaped, hex in either case, plain bytes between. */
    {
        const char *b64 = "Ab+cD/ef=9";
        /* Escapes of "+", "/" and "=", hex in either case, plain bytes
         * between; every byte escaped; and an escape of another byte or one
         * cut short by the text's end: left alone. */
        static const struct {
            const char *message, *want;
        } pct[] = {
            {"url ?access_token=Ab%2BcD%2fEF%3d9&x=1 and Ab%2BcD",
             "url ?access_token=[token]&x=1 and Ab%2BcD"},
            {"t=%41%62%2B%63%44%2F%65%66%3D%39.", "t=[token]."},
            {"Ab%2CcD/ef=9 Ab%2", "Ab%2CcD/ef=9 Ab%2"},
        };
        for (size_t i = 0; i < sizeof(pct) / sizeof(pct[0]); i++) {
            snprintf(body, sizeof(body), "{\"success\":false,\"error\":\"E\",\"message\":\"%s\"}",
                     pct[i].message);
            c = answer(401, body, -1);
            classify_result_redact(&c, b64);
            CHECK_STR(c.error.message, pct[i].want);
        }
        /* Cut by the message buffer inside an escape of the token. */
        memset(body, 0, sizeof(body));
        snprintf(body, sizeof(body), "{\"success\":false,\"error\":\"E\",\"message\":\"%0*d%s\"}",
                 247, 0, "Ab%2BcD%2Fef");
        c = answer(400, body, -1);
        CHECK(strlen(c.error.message) == QUEUE_ERR_MSG_LEN - 1);
        classify_result_redact(&c, b64);
        CHECK(strstr(c.error.message, "Ab%2") == NULL);
        CHECK(strstr(c.error.message, "[token]") != NULL);
    }
    /* In a wamid too. */
    {
        classify_result_t w = answer(
            200, "{\"success\":true,\"data\":{\"messages\":[{\"id\":\"wamid.tok-123456\"}]}}", -1);
        classify_result_redact(&w, "tok-123456");
        CHECK_STR(w.wamid, "wamid.[token]");
    }
}

/* utf8_copy_valid's eight-byte ASCII path against the byte-at-a-time
 * definition: same output for ASCII runs with a NUL anywhere in a block,
 * bytes >= 0x80 (good and bad sequences) and every capacity. */
static size_t copy_valid_ref(char *dst, size_t cap, const char *s, size_t n)
{
    const char *end = s + n;
    size_t o = 0;

    while (s < end && *s != '\0') {
        const char *from = s;
        size_t k = (unsigned char)*s < 0x80 ? 1 : utf8_seq_len(s, end);

        if (k == 0) {
            from = "\xEF\xBF\xBD";
            k = 3;
            s++;
        } else {
            s += k;
        }
        if (o + k + 1 > cap)
            break;
        memcpy(dst + o, from, k);
        o += k;
    }
    dst[o] = '\0';
    return o;
}

static void test_copy_valid(void)
{
    static const char alphabet[] = {'a',    'Z',    '0',    '.',    '\0',   '\x80', '\xC3', '\xA9',
                                    '\xE2', '\x82', '\xAC', '\xF0', '\x9F', '\x98', '\x80', '\xFF'};
    unsigned long long x = 88172645463325252ULL;
    char src[64], a[80], b[80];

    for (int round = 0; round < 20000; round++) {
        size_t n, cap;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n = (size_t)(x % sizeof(src));
        cap = 1 + (size_t)((x >> 8) % sizeof(a));
        for (size_t i = 0; i < n; i++) {
            unsigned long long r = x >> (i % 40);
            /* mostly plain ASCII, as a wamid is */
            static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
            if ((r & 7) != 0)
                src[i] = letters[(r >> 3) % 26];
            else
                src[i] = alphabet[(r >> 3) % sizeof(alphabet)];
        }
        memset(a, 0x55, sizeof(a));
        memset(b, 0x55, sizeof(b));
        CHECK(utf8_copy_valid(a, cap, src, n) == copy_valid_ref(b, cap, src, n));
        CHECK(memcmp(a, b, sizeof(a)) == 0);
    }
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"success", test_success},
        {"success_scanner", test_success_scanner},
        {"scanner_offsets", test_scanner_offsets},
        {"status_classes", test_status_classes},
        {"meta_codes", test_meta_codes},
        {"unauthorized_probed", test_unauthorized_probed},
        {"transport", test_transport},
        {"code_over_status", test_code_over_status},
        {"meta_code_forms", test_meta_code_forms},
        {"success_any_status", test_success_any_status},
        {"text_utf8", test_text_utf8},
        {"redact", test_redact},
        {"copy_valid", test_copy_valid},
        {"cut_success", test_cut_success},
        {"redirect", test_redirect},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
