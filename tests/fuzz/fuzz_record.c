/*
 * fuzz_record.c - libFuzzer target: arbitrary bytes through the LMDB record
 * decoder (queue__record_decode), as if read from a damaged store.
 *
 * Beyond "no crash, no leak, no undefined behaviour", a record that decodes
 * must survive a round trip: encoding the decoded job and decoding that
 * again gives the same job.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "queue_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0; /* NaNs and -0 too */
}

static bool same_job(const queue_job_t *a, const queue_job_t *b)
{
    return a->state == b->state && a->type == b->type && a->priority == b->priority &&
           a->attempts == b->attempts && a->max_attempts == b->max_attempts &&
           same_double(a->created_at, b->created_at) && same_double(a->updated_at, b->updated_at) &&
           same_double(a->next_attempt_at, b->next_attempt_at) &&
           same_double(a->not_before, b->not_before) && same_double(a->expires_at, b->expires_at) &&
           same_str(a->phone_number_id, b->phone_number_id) && same_str(a->to, b->to) &&
           same_str(a->campaign, b->campaign) && same_str(a->order_key, b->order_key) &&
           same_str(a->idempotency_key, b->idempotency_key) && same_str(a->wamid, b->wamid) &&
           a->last_error.status == b->last_error.status &&
           a->last_error.meta_code == b->last_error.meta_code &&
           strcmp(a->last_error.code, b->last_error.code) == 0 &&
           strcmp(a->last_error.message, b->last_error.message) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char buf[QUEUE__REC_MAX_LEN];
    queue_job_t job, again;
    queue__record_t r;
    size_t len;
    int rc;

    rc = queue__record_decode(data, size, &job);
    if (rc != 0) {
        REQUIRE(rc == QUEUE_ECORRUPT || rc == -ENOMEM);
        REQUIRE(job.priv_ == NULL && job.phone_number_id == NULL);
        return 0;
    }
    REQUIRE(job.state >= 1 && job.state <= QUEUE_STATE_MAX);
    REQUIRE(job.type >= 1 && job.type <= QUEUE_TYPE_MAX);
    REQUIRE(job.last_error.code[QUEUE_ERR_CODE_LEN - 1] == '\0');
    REQUIRE(job.last_error.message[QUEUE_ERR_MSG_LEN - 1] == '\0');
    /* Round trip. */
    REQUIRE(queue__record_from_job(&job, &r) == 0);
    REQUIRE(queue__record_size(&r) <= sizeof buf);
    REQUIRE(queue__record_encode(&r, buf, sizeof buf, &len) == 0);
    REQUIRE(len == queue__record_size(&r));
    REQUIRE(queue__record_decode(buf, len, &again) == 0);
    REQUIRE(same_job(&job, &again));
    queue_job_clear(&again);
    queue_job_clear(&job);
    return 0;
}
