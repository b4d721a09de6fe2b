/*
 * request_test.c - ipc_request_parse: every validation rule, its error code
 * and its message, table-driven; then the fields of valid requests.
 */
#include "ipc.h"

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
    /* a null id is echoed as null: "id" is there, the client may read it */
    {"{\"id\":null}", IPC_ERR_VALIDATION, "op is required", "null"},
    {"{\"id\" : null,\"op\":\"nope\"}", IPC_ERR_VALIDATION, "unknown op \"nope\"", "null"},
    /* numeric ids are echoed as written, found at the top level only */
    {"{\"id\":12345678901234567890}", IPC_ERR_VALIDATION, "op is required", "12345678901234567890"},
    /* also past 64 characters (it was printed from its double: 1e+100) */
    {"{\"id\":"
     "100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "00000000}",
     IPC_ERR_VALIDATION, "op is required",
     "100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "00000000"},
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
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"10\\n<0>x\",\"to\":\"1\","
     "\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId contains a control character", NULL},
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
     "notBefore must be a unix time in seconds from 0 to 4102444800 (the year 2100)", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"notBefore\":\"5\"}", IPC_ERR_VALIDATION,
     "notBefore must be a unix time in seconds from 0 to 4102444800 (the year 2100)", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"expiresAt\":1e999}", IPC_ERR_VALIDATION,
     "expiresAt must be a unix time in seconds from 0 to 4102444800 (the year 2100)", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"notBefore\":1e20}", IPC_ERR_VALIDATION,
     "notBefore must be a unix time in seconds from 0 to 4102444800 (the year 2100)", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"expiresAt\":4102444800.5}", IPC_ERR_VALIDATION,
     "expiresAt must be a unix time in seconds from 0 to 4102444800 (the year 2100)", NULL},
    {"{\"op\":\"send\"," TEXT_OK ",\"notBefore\":2000000000,\"expiresAt\":1999999999}",
     IPC_ERR_VALIDATION, "notBefore is after expiresAt: the job could never be sent", NULL},
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
    /* A job id is a string, opaque to clients (socket-protocol.md): one
     * that cannot be ours names no job, NOT_FOUND in the daemon's words for
     * an unknown id, with the request's id; once the rest is valid. */
    {"{\"op\":\"get\",\"id\":53,\"job\":\"abc\"}", IPC_ERR_NOT_FOUND, "no such job", "53"},
    {"{\"op\":\"get\",\"id\":\"n\",\"job\":\"nonexistent\"}", IPC_ERR_NOT_FOUND, "no such job",
     "\"n\""},
    {"{\"op\":\"get\",\"job\":\"12a\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    {"{\"op\":\"get\",\"job\":\" 12\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    {"{\"op\":\"get\",\"job\":\"-1\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    /* Never given out: "0017" is not job "17". */
    {"{\"op\":\"get\",\"job\":\"0017\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    {"{\"op\":\"cancel\",\"job\":\"00000000000000000017\"}", IPC_ERR_NOT_FOUND, "no such job",
     NULL},
    {"{\"op\":\"get\",\"job\":\"18446744073709551616\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    {"{\"op\":\"get\",\"job\":\"123456789012345678901\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    {"{\"op\":\"get\",\"job\":\"caf\u00e9\"}", IPC_ERR_NOT_FOUND, "no such job", NULL},
    {"{\"op\":\"cancel\",\"id\":1,\"job\":\"abc\"}", IPC_ERR_NOT_FOUND, "no such job", "1"},
    {"{\"op\":\"retry\",\"id\":2,\"job\":\"abc\"}", IPC_ERR_NOT_FOUND, "no such job", "2"},
    /* ... but a fault of the request comes first. */
    {"{\"op\":\"get\",\"job\":\"abc\",\"idempotencyKey\":\"k\"}", IPC_ERR_VALIDATION,
     "exactly one of job, idempotencyKey is required", NULL},
    {"{\"op\":\"cancel\",\"job\":\"abc\",\"campaign\":\"c\"}", IPC_ERR_VALIDATION,
     "exactly one of job, campaign is required", NULL},
    {"{\"op\":\"retry\",\"job\":\"abc\",\"campaign\":\"\"}", IPC_ERR_VALIDATION,
     "campaign must not be empty", NULL},
    /* Not a string (nor a whole number a double holds), or empty: no id. */
    {"{\"op\":\"get\",\"job\":\"\"}", IPC_ERR_VALIDATION, "job must not be empty", NULL},
    {"{\"op\":\"get\",\"job\":-1}", IPC_ERR_VALIDATION, "job must be a job id (a string)", NULL},
    {"{\"op\":\"get\",\"job\":1.5}", IPC_ERR_VALIDATION, "job must be a job id (a string)", NULL},
    {"{\"op\":\"get\",\"job\":true}", IPC_ERR_VALIDATION, "job must be a job id (a string)", NULL},
    {"{\"op\":\"cancel\",\"job\":[\"1\"]}", IPC_ERR_VALIDATION, "job must be a job id (a string)",
     NULL},
    {"{\"op\":\"retry\",\"job\":{}}", IPC_ERR_VALIDATION, "job must be a job id (a string)", NULL},
    /* list */
    {"{\"op\":\"list\"}", IPC_ERR_VALIDATION, "campaign is required", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"state\":\"done\"}", IPC_ERR_VALIDATION,
     "state must be one of queued, sending, retrying, sent, failed, expired, cancelled, "
     "uncertain",
     NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"after\":\"x\"}", IPC_ERR_VALIDATION,
     "after must be a job id (a string of digits)", NULL},
    /* `after` is a position (the `next` of a page): a string that is no id
     * of ours has none, a field error rather than a missing job. */
    {"{\"op\":\"list\",\"campaign\":\"c\",\"after\":\"nonexistent\"}", IPC_ERR_VALIDATION,
     "after must be a job id (a string of digits)", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"after\":\"123456789012345678901\"}", IPC_ERR_VALIDATION,
     "after must be a job id (a string of digits)", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"after\":\"\"}", IPC_ERR_VALIDATION,
     "after must be a job id (a string of digits)", NULL},
    {"{\"op\":\"list\",\"campaign\":\"c\",\"after\":\"017\"}", IPC_ERR_VALIDATION,
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
    {"{\"op\":\"resume\",\"phoneNumberId\":\"1\\u007f\"}", IPC_ERR_VALIDATION,
     "phoneNumberId contains a control character", NULL},
    {"{\"op\":\"pause\",\"phoneNumberId\":\"\"}", IPC_ERR_VALIDATION,
     "phoneNumberId must not be empty", NULL},
    /* retry */
    {"{\"op\":\"retry\"}", IPC_ERR_VALIDATION, "exactly one of job, campaign is required", NULL},
    {"{\"op\":\"retry\",\"campaign\":\"c\"}", IPC_ERR_VALIDATION, "state is required", NULL},
    {"{\"op\":\"retry\",\"campaign\":\"c\",\"state\":\"sent\"}", IPC_ERR_VALIDATION,
     "state must be one of failed, expired, uncertain", NULL},
    /* watch */
    {"{\"op\":\"watch\",\"campaign\":7}", IPC_ERR_VALIDATION, "campaign must be a string", NULL},
    /* A "\u0000" would cut a string short (cJSON's strings are C strings):
     * refused in every string, names included, the place named. */
    {"{\"op\":\"send\",\"id\":1,\"idempotencyKey\":\"k\\u0000one\"," TEXT_OK "}",
     IPC_ERR_VALIDATION, "idempotencyKey must not contain NUL (\\u0000)", "1"},
    {"{\"op\":\"send\",\"id\":\"a\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\","
     "\"to\":\"1555\\u00000007004\",\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.to must not contain NUL (\\u0000)", "\"a\""},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1000001\\u0000zz\","
     "\"to\":\"2\",\"text\":\"x\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":" MSG ",\"text\":\"nul \\u0000 char\"}}",
     IPC_ERR_VALIDATION, "message.text must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\",\"campaign\":\"c\\u0000x\"," TEXT_OK "}", IPC_ERR_VALIDATION,
     "campaign must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\",\"orderKey\":\"\\u0000\"," TEXT_OK "}", IPC_ERR_VALIDATION,
     "orderKey must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\",\"priority\":\"bulk\\u0000x\"," TEXT_OK "}", IPC_ERR_VALIDATION,
     "priority must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\\u0000x\"," TEXT_OK "}", IPC_ERR_VALIDATION,
     "op must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG
     ",\"media\":{\"type\":\"image\\u0000\",\"mediaId\":\"m\"}}}",
     IPC_ERR_VALIDATION, "message.media.type must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":" MSG
     ",\"media\":{\"type\":\"image\",\"mediaId\":\"m\\u0000\"}}}",
     IPC_ERR_VALIDATION, "message.media.mediaId must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"template_send\",\"id\":2,\"message\":" MSG ",\"templateName\":\"p\\u0000\","
     "\"components\":[{\"type\":\"body\",\"parameters\":[{\"text\":\"a\"},{\"text\":\"\\u0000\"}]}]"
     "}}",
     IPC_ERR_VALIDATION, "message.templateName must not contain NUL (\\u0000)", "2"},
    {"{\"op\":\"template_send\",\"message\":" MSG ",\"templateName\":\"p\","
     "\"components\":[{\"type\":\"body\",\"parameters\":[{\"text\":\"a\"},{\"text\":\"\\u0000\"}]}]"
     "}}",
     IPC_ERR_VALIDATION, "message.components[0].parameters[1].text must not contain NUL (\\u0000)",
     NULL},
    {"{\"op\":\"get\",\"idempotencyKey\":\"k\\u0000\"}", IPC_ERR_VALIDATION,
     "idempotencyKey must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"list\",\"campaign\":\"\\u0000c\"}", IPC_ERR_VALIDATION,
     "campaign must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"pause\",\"phoneNumberId\":\"1\\u0000\"}", IPC_ERR_VALIDATION,
     "phoneNumberId must not contain NUL (\\u0000)", NULL},
    {"{\"op\":\"ping\",\"x\":[\"a\",\"\\u0000\"]}", IPC_ERR_VALIDATION,
     "x[1] must not contain NUL (\\u0000)", NULL},
    /* In the id itself: refused, and not echoed (it would be cut short). */
    {"{\"op\":\"ping\",\"id\":\"r\\u0000\"}", IPC_ERR_VALIDATION,
     "id must not contain NUL (\\u0000)", NULL},
    /* In a member name: "o\u0000p" would read as "o". */
    {"{\"op\":\"ping\",\"id\":3,\"o\\u0000p\":1}", IPC_ERR_VALIDATION,
     "member names must not contain NUL (\\u0000)", "3"},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\\u0000x\":\"2\"}"
     "}",
     IPC_ERR_VALIDATION, "member names in message must not contain NUL (\\u0000)", NULL},
    /* A long path is cut (names at 40 bytes, on a UTF-8 boundary). */
    {"{\"op\":\"ping\",\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9zzz\":{\"b\":\"\\u0000\"}}",
     IPC_ERR_VALIDATION,
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa....b must not contain NUL (\\u0000)", NULL},
    /* Not UTF-8: the offset of the first bad byte. */
    {"{\"op\":\"ping\",\"x\":\"\xff\xfe\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 18",
     NULL},
    {"{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 18",
     NULL},
    {"{\"op\":\"ping\",\"x\":\"\xe0\x80\xaf\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 18",
     NULL},
    {"{\"op\":\"ping\",\"x\":\"\xf0\x80\x80\xaf\"}", IPC_ERR_BAD_REQUEST,
     "not valid UTF-8 at byte 18", NULL},
    {"{\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 18",
     NULL},
    {"{\"op\":\"ping\",\"x\":\"\xf4\x90\x80\x80\"}", IPC_ERR_BAD_REQUEST,
     "not valid UTF-8 at byte 18", NULL},
    {"{\"op\":\"ping\",\"x\":\"\xf5\x80\x80\x80\"}", IPC_ERR_BAD_REQUEST,
     "not valid UTF-8 at byte 18", NULL},
    {"{\"op\":\"ping\",\"x\":\"\xe2\x82\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 18",
     NULL},
    {"{\"op\":\"ping\",\"x\":\"\x80\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 18", NULL},
    {"{\"op\":\"ping\",\"x\":\"a\xc3\xa9\xff\"}", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 21",
     NULL},
    {"{\"op\":\"ping\",\"id\":1}\xc3", IPC_ERR_BAD_REQUEST, "not valid UTF-8 at byte 20", NULL},
    /* What cJSON reads but JSON does not have: the body is sent as given,
     * so it must be JSON. */
    {"{\"op\":\"ping\",\"id\":1,\"x\":01}", IPC_ERR_BAD_REQUEST, "invalid JSON at byte 25", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"x\",\"n\":01}}",
     IPC_ERR_BAD_REQUEST, "invalid JSON at byte 83", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"x\",\"n\":1.}}",
     IPC_ERR_BAD_REQUEST, "invalid JSON at byte 84", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"x\",\"n\":-01}}",
     IPC_ERR_BAD_REQUEST, "invalid JSON at byte 84", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"x\",\"n\":1.e5}}",
     IPC_ERR_BAD_REQUEST, "invalid JSON at byte 84", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"a\tb\"}}",
     IPC_ERR_BAD_REQUEST, "invalid JSON at byte 76", NULL},
    {"{\"op\":\"ping\",\x0b\"x\":1}", IPC_ERR_BAD_REQUEST, "invalid JSON at byte 13", NULL},
    /* A member the daemon reads given twice: it would check the first, the
     * API (which gets the body as given) may read the last. */
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"x\",\"to\":\"3\"}}",
     IPC_ERR_VALIDATION, "message.to appears more than once", NULL},
    {"{\"op\":\"send\",\"type\":\"text\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"text\":\"x\",\"phoneNumberId\":\"9\"}}",
     IPC_ERR_VALIDATION, "message.phoneNumberId appears more than once", NULL},
    {"{\"op\":\"send\",\"type\":\"media\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"media\":{\"type\":\"image\",\"mediaId\":\"m\",\"mediaId\":\"n\"}}}",
     IPC_ERR_VALIDATION, "message.media.mediaId appears more than once", NULL},
    {"{\"op\":\"template_send\",\"message\":{\"phoneNumberId\":\"1\",\"to\":\"2\","
     "\"templateName\":\"a\",\"templateName\":\"b\"}}",
     IPC_ERR_VALIDATION, "message.templateName appears more than once", NULL},
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

/* A job id of any length up to 200 bytes names a job (NOT_FOUND when it
 * cannot be ours); a longer one is refused as a field error, and neither
 * message echoes it. */
static void test_long_job(void)
{
    char j200[201], j201[202], line[512], msg[256];
    const char *code;
    ipc_request_t *req;
    memset(j200, 'j', 200);
    j200[200] = '\0';
    memset(j201, '7', 201);
    j201[201] = '\0';
    snprintf(line, sizeof line, "{\"op\":\"get\",\"job\":\"%s\"}", j200);
    int rc = ipc_request_parse(line, strlen(line), &req, NULL, &code, msg, sizeof msg);
    CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_NOT_FOUND) && streq(msg, "no such job"),
          "200 bytes: rc %d %s %s", rc, code ? code : "-", msg);
    snprintf(line, sizeof line, "{\"op\":\"cancel\",\"job\":\"%s\"}", j201);
    rc = ipc_request_parse(line, strlen(line), &req, NULL, &code, msg, sizeof msg);
    CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_VALIDATION) &&
              streq(msg, "job longer than 200 bytes"),
          "201 bytes: rc %d %s %s", rc, code ? code : "-", msg);
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

/* A line refused before it is parsed (too deep, too much structure) is
 * answered with its top-level "id" when that can be read: the first member
 * named "id", complete and valid; else without one. */
static void test_refused_ids(void)
{
    static const struct {
        const char *head; /* before the deep value */
        const char *tail; /* after it, before the closing '}' */
        const char *id;   /* expected id JSON, or NULL */
    } cases[] = {
        {"{\"id\":5,\"op\":\"ping\",\"x\":", "", "5"},
        {"{\"op\":\"ping\",\"x\":", ",\"id\":\"a\\u0041\\\"\"", "\"aA\\\"\""},
        {" { \"i\\u0064\" : -1.5e3 , \"x\":", "", "-1.5e3"},
        {"{\"id\":null,\"x\":", "", "null"},
        {"{\"id\":1,\"id\":2,\"x\":", "", "1"},
        {"{\"s\":\"}],\\\"id\\\":9\",\"x\":", ",\"id\":\"\xc3\xa9\"", "\"\xc3\xa9\""},
        {"{\"x\":{\"id\":3,\"y\":", "}", NULL},    /* not at the top level */
        {"{\"id\":", "", NULL},                    /* the deep value itself */
        {"{\"id\":01,\"x\":", "", NULL},           /* not strict JSON */
        {"{\"id\":\"a\\u0000\",\"x\":", "", NULL}, /* NUL: never echoed */
        {"{\"id\":\"\\ud800\",\"x\":", "", NULL},  /* a lone surrogate */
        {"{\"id\":true,\"x\":", "", NULL},
        {"[{\"id\":4},", "", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int kind = 0; kind < 2; kind++) {
            /* kind 0: 70 levels; kind 1: 200,001 elements of an array */
            size_t cap = strlen(cases[i].head) + strlen(cases[i].tail) + 500000;
            char *line = malloc(cap);
            size_t n = (size_t)snprintf(line, cap, "%s", cases[i].head);
            if (kind == 0) {
                memset(line + n, '[', 70);
                memset(line + n + 70, ']', 70);
                n += 140;
            } else {
                line[n++] = '[';
                for (int e = 0; e < 200001; e++) {
                    line[n++] = '0';
                    line[n++] = ',';
                }
                line[n - 1] = ']';
            }
            n += (size_t)snprintf(line + n, cap - n, "%s}", cases[i].tail);
            ipc_request_t *req = NULL;
            char *id = NULL;
            const char *code = NULL;
            char msg[128];
            int rc = ipc_request_parse(line, n, &req, &id, &code, msg, sizeof msg);
            CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_BAD_REQUEST) &&
                      strstr(msg, kind == 0 ? "nesting" : "more than") != NULL,
                  "refused case %zu/%d: rc %d %s", i, kind, rc, msg);
            if (cases[i].id)
                CHECK(id != NULL && streq(id, cases[i].id), "refused case %zu/%d: id %s, want %s",
                      i, kind, id ? id : "none", cases[i].id);
            else
                CHECK(id == NULL, "refused case %zu/%d: id %s, want none", i, kind, id);
            free(id);
            ipc_request_free(req);
            free(line);
        }
    }
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
    /* The body as given: escapes and number spellings kept, the
     * whitespace between tokens dropped. */
    const char *want = "{\"phoneNumberId\":\"1000001\",\"to\":\"+1 555\",\"text\":\"Hi \\u00e9\","
                       "\"extra\":[1,2.5e1,null]}";
    CHECK(streq(r->submit.body, want) && r->submit.body_len == strlen(want), "body %s",
          r->submit.body);
    CHECK(r->campaign == NULL && r->job == NULL, "other fields unset");
    free(id);
    ipc_request_free(r);

    /* Defaults; null counts as absent (but a null id is echoed); every
     * send type. */
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
        CHECK(id != NULL && strcmp(id, "null") == 0, "null id echoed as %s", id ? id : "nothing");
        CHECK(r->submit.type == (ipc_type_t)(IPC_TYPE_TEXT + i), "type %s", types[i]);
        CHECK(r->submit.priority == IPC_PRIO_NORMAL && r->submit.max_attempts == 0 &&
                  r->submit.not_before == 0 && r->submit.campaign == NULL,
              "defaults");
        ipc_request_free(r);
        free(id);
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

/* The body is the text of `message` as given, only the whitespace between
 * tokens dropped: numbers as spelled (cJSON would print 9007199254740993 as
 * 9.00719925474099e+15, 0.30000000000000004 as 0.3, 1e400 as null),
 * escapes as written, the first top-level member named "message" (as
 * cJSON reads names: "mess\u0061ge" is one). */
static void test_body_as_given(void)
{
    static const char *const msgs[][2] = {
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"plain\"}", NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":[0,-1,123456789012345,true,"
         "false,null,{},[]]}",
         NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":1234567890123456}", NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":-0}", NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"n\":[1.50,2e3,1E2,-0.5,1.0,1e5]}",
         NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"x\",\"a\":9007199254740993,\"b\":1e400,"
         "\"c\":-1e400,"
         "\"d\":1.5e300,\"e\":0.30000000000000004,\"f\":123456789012345678901234567890}",
         NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"a\\/b\\u00e9\\n\\ud83d\\ude00\"}", NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 "
         "\\\"q\\\"\"}",
         NULL},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"k\\\\u0000\"}", NULL},
        /* Whitespace goes between tokens only, never inside strings, an
         * escaped quote or backslash does not end one. */
        {"{ \"phoneNumberId\" : \"1\", \"to\":\"2\",\"text\":\"spaced  out\" }",
         "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"spaced  out\"}"},
        {"{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"a\\\" b\" ,\r\n\t\"x\" : [ 1 , \"\\\\\" "
         ", "
         "\" \\\\\\\" \" , 2.50 ] }",
         "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"a\\\" b\",\"x\":[1,\"\\\\\",\" "
         "\\\\\\\" \",2.50]}"},
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
        {"{\"op\":\"send\",\"type\":\"smart\",\"id\":\"\\u00e9\",\"future\":[1],\"message\":", "}"},
    };
    char line[1024];

    for (size_t w = 0; w < sizeof wraps / sizeof wraps[0]; w++) {
        for (size_t m = 0; m < sizeof msgs / sizeof msgs[0]; m++) {
            ipc_request_t *r = NULL;
            const char *code = NULL;
            char msg[128];
            const char *want = msgs[m][1] ? msgs[m][1] : msgs[m][0];
            int n = snprintf(line, sizeof line, "%s%s%s", wraps[w][0], msgs[m][0], wraps[w][1]);
            int rc = ipc_request_parse(line, (size_t)n, &r, NULL, &code, msg, sizeof msg);
            CHECK(rc == 0, "wrap %zu msg %zu: %d %s", w, m, rc, msg);
            if (rc == 0)
                CHECK(streq(r->submit.body, want) && r->submit.body_len == strlen(want),
                      "wrap %zu msg %zu: body %s, want %s", w, m, r->submit.body, want);
            ipc_request_free(r);
        }
    }
}

/* Every well-formed UTF-8 sequence at the edges of its range passes, into
 * the body unchanged; strings the daemon reads keep theirs too. */
static void test_utf8_edges(void)
{
    static const char *const ok_seqs[] = {
        "\xc2\x80",     "\xdf\xbf",     "\xe0\xa0\x80",     "\xed\x9f\xbf",     "\xee\x80\x80",
        "\xef\xbf\xbf", "\xef\xbf\xbe", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xf3\xbf\xbf\xbf",
    };
    char line[512], want[256];
    for (size_t i = 0; i < sizeof ok_seqs / sizeof ok_seqs[0]; i++) {
        snprintf(want, sizeof want, "{\"phoneNumberId\":\"1\",\"to\":\"2\",\"text\":\"a%sb%s\"}",
                 ok_seqs[i], ok_seqs[i]);
        int n = snprintf(line, sizeof line,
                         "{\"op\":\"send\",\"type\":\"text\",\"campaign\":\"c%s\",\"message\":%s}",
                         ok_seqs[i], want);
        ipc_request_t *r = NULL;
        const char *code = NULL;
        char msg[128];
        int rc = ipc_request_parse(line, (size_t)n, &r, NULL, &code, msg, sizeof msg);
        CHECK(rc == 0, "sequence %zu refused: %s", i, msg);
        if (rc == 0) {
            CHECK(streq(r->submit.body, want), "sequence %zu: body %s", i, r->submit.body);
            CHECK(strncmp(r->submit.campaign, "c", 1) == 0 &&
                      streq(r->submit.campaign + 1, ok_seqs[i]),
                  "sequence %zu: campaign", i);
        }
        ipc_request_free(r);
    }
    /* A "\\u0000" spelled with an escaped backslash is no NUL. */
    ipc_request_t *r = ok("{\"op\":\"get\",\"idempotencyKey\":\"k\\\\u0000\"}", NULL);
    CHECK(r && streq(r->idempotency_key, "k\\u0000"), "escaped backslash: %s",
          r ? r->idempotency_key : "-");
    ipc_request_free(r);
}

/* A line's structure is bounded before a tree is built: 200,000 of ',',
 * ':', '[' and '{' pass (a send whose message holds a wide array is a
 * submit like any other, taken by the slow path), one more is refused. */
static void test_structure(void)
{
    for (int extra = 0; extra <= 1; extra++) {
        /* {"op":"send","type":"text","message":{"phoneNumberId":"1",
         * "to":"+1","text":"t","x":[0,0,...]}} */
        static const char head[] = "{\"op\":\"send\",\"type\":\"text\",\"message\":{"
                                   "\"phoneNumberId\":\"1000001\",\"to\":\"+15550001\","
                                   "\"text\":\"t\",\"x\":[0";
        /* head: 1 '{' + 3 ':' ... counted below */
        size_t cap = sizeof head + 2 * 200000 + 16, n = 0;
        char *line = malloc(cap);
        size_t structure = 0;
        CHECK(line != NULL, "malloc");
        memcpy(line, head, sizeof head - 1);
        n = sizeof head - 1;
        for (size_t i = 0; i < n; i++)
            structure += line[i] == ',' || line[i] == ':' || line[i] == '[' || line[i] == '{';
        while (structure < 200000 + (size_t)extra) {
            line[n++] = ',';
            line[n++] = '0';
            structure++;
        }
        line[n++] = ']';
        line[n++] = '}';
        line[n++] = '}';
        line[n] = '\0';
        ipc_request_t *req = NULL;
        const char *code = NULL;
        char msg[128];
        int rc = ipc_request_parse(line, n, &req, NULL, &code, msg, sizeof msg);
        if (extra == 0)
            CHECK(rc == 0, "200000 refused: %s", msg);
        else
            CHECK(rc == IPC_EINVAL && streq(code, IPC_ERR_BAD_REQUEST) &&
                      strstr(msg, "more than 200000") != NULL,
                  "200001: rc %d %s", rc, msg);
        ipc_request_free(req);
        free(line);
    }
}

int main(void)
{
    test_bad_table();
    test_long_fields();
    test_long_job();
    test_depth();
    test_structure();
    test_refused_ids();
    test_body_size();
    test_valid_send();
    test_body_as_given();
    test_utf8_edges();
    test_valid_others();
    test_odd_input();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
