/*
 * fuzz_request.c - libFuzzer target: one socket line through the parser and
 * validator (ipc_request_parse), as the server sees it.
 *
 * Beyond "no crash, no leak, no undefined behaviour" (ASan/UBSan), it checks
 * the contract of what comes out: an error has a protocol code and a
 * NUL-terminated message; a valid submit has a body that is a JSON object
 * within IPC_MAX_BODY and strings within their limits. And it holds the
 * ingest fast path (fastreq.c) to the cJSON path: whatever the fast path
 * accepts, the slow path accepts with the same block, byte for byte.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ipc_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static void check_str(const char *s, size_t max)
{
    if (s != NULL)
        REQUIRE(strnlen(s, max + 1) <= max);
}

static void check_submit(const ipc_submit_t *s)
{
    cJSON *body;

    REQUIRE(s->type >= IPC_TYPE_TEXT && s->type <= IPC_TYPE_TEMPLATE);
    REQUIRE(s->priority >= IPC_PRIO_HIGH && s->priority <= IPC_PRIO_BULK);
    REQUIRE(s->phone_number_id != NULL && s->to != NULL);
    check_str(s->phone_number_id, IPC_MAX_ID_LEN);
    check_str(s->to, IPC_MAX_ID_LEN);
    check_str(s->idempotency_key, IPC_MAX_KEY_LEN);
    check_str(s->campaign, IPC_MAX_KEY_LEN);
    check_str(s->order_key, IPC_MAX_KEY_LEN);
    REQUIRE(s->max_attempts >= 0 && s->max_attempts <= 1000);
    REQUIRE(s->body != NULL && s->body_len > 0 && s->body_len <= IPC_MAX_BODY);
    body = cJSON_ParseWithLength(s->body, s->body_len);
    REQUIRE(body != NULL && cJSON_IsObject(body));
    cJSON_Delete(body);
}

/* Offset of a string of the block, or -1 for NULL. */
static ptrdiff_t off(const struct ipc_req *b, const char *s)
{
    return s ? s - (const char *)b : -1;
}

static void check_fast(const char *line, size_t size)
{
    struct ipc_req *f = ipc__parse_fast(line, size), *s = NULL;
    char *id = NULL, msg[256];
    size_t id_len;
    const char *code;

    if (f == NULL)
        return;
    REQUIRE(ipc__parse_slow(line, size, false, &s, &id, &id_len, &code, msg, sizeof msg) == 0);
    const ipc_request_t *a = &f->request, *b = &s->request;
    REQUIRE(f->block_size == s->block_size && f->id_len == s->id_len);
    REQUIRE(off(f, f->id_json) == off(s, s->id_json));
    REQUIRE(a->op == b->op && a->submit.type == b->submit.type &&
            a->submit.priority == b->submit.priority &&
            a->submit.max_attempts == b->submit.max_attempts &&
            a->submit.body_len == b->submit.body_len);
    REQUIRE(memcmp(&a->submit.not_before, &b->submit.not_before, sizeof(double)) == 0);
    REQUIRE(memcmp(&a->submit.expires_at, &b->submit.expires_at, sizeof(double)) == 0);
    REQUIRE(off(f, a->submit.body) == off(s, b->submit.body));
    REQUIRE(off(f, a->submit.phone_number_id) == off(s, b->submit.phone_number_id));
    REQUIRE(off(f, a->submit.to) == off(s, b->submit.to));
    REQUIRE(off(f, a->submit.idempotency_key) == off(s, b->submit.idempotency_key));
    REQUIRE(off(f, a->submit.campaign) == off(s, b->submit.campaign));
    REQUIRE(off(f, a->submit.order_key) == off(s, b->submit.order_key));
    REQUIRE(memcmp(f + 1, s + 1, f->block_size - sizeof *f) == 0);
    free(f);
    free(s);
    free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ipc_request_t *req = NULL;
    char *id = NULL;
    const char *code = NULL;
    char msg[256];
    int rc;

    check_fast((const char *)data, size);
    msg[0] = '\0';
    rc = ipc_request_parse((const char *)data, size, &req, &id, &code, msg, sizeof msg);
    if (rc != 0) {
        REQUIRE(req == NULL && code != NULL);
        /* NOT_FOUND: a job id that cannot be one of ours ("abc"). */
        REQUIRE(strcmp(code, IPC_ERR_BAD_REQUEST) == 0 || strcmp(code, IPC_ERR_VALIDATION) == 0 ||
                strcmp(code, IPC_ERR_INTERNAL) == 0 || strcmp(code, IPC_ERR_NOT_FOUND) == 0);
        REQUIRE(memchr(msg, '\0', sizeof msg) != NULL);
    } else {
        REQUIRE(req != NULL);
        if (req->op == IPC_OP_SEND || req->op == IPC_OP_TEMPLATE_SEND)
            check_submit(&req->submit);
        if (req->op == IPC_OP_LIST)
            REQUIRE(req->limit >= 1 && req->limit <= 1000);
    }
    if (id != NULL) {
        /* The echoed id is compact JSON: a string, a number, or null for a
         * number that JSON cannot hold (1e999). */
        cJSON *v = cJSON_Parse(id);
        REQUIRE(v != NULL && (cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsNull(v)));
        cJSON_Delete(v);
    }
    free(id);
    ipc_request_free(req);
    return 0;
}
