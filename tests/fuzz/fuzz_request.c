/*
 * fuzz_request.c - libFuzzer target: one socket line through the parser and
 * validator (ipc_request_parse), as the server sees it.
 *
 * Beyond "no crash, no leak, no undefined behaviour" (ASan/UBSan), it checks
 * the contract of what comes out: an error has a protocol code and a
 * NUL-terminated message; a valid submit has a body that is a JSON object
 * within IPC_MAX_BODY and strings within their limits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ipc.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ipc_request_t *req = NULL;
    char *id = NULL;
    const char *code = NULL;
    char msg[256];
    int rc;

    msg[0] = '\0';
    rc = ipc_request_parse((const char *)data, size, &req, &id, &code, msg, sizeof msg);
    if (rc != 0) {
        REQUIRE(req == NULL && code != NULL);
        REQUIRE(strcmp(code, IPC_ERR_BAD_REQUEST) == 0 || strcmp(code, IPC_ERR_VALIDATION) == 0 ||
                strcmp(code, IPC_ERR_INTERNAL) == 0);
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
