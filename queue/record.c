/*
 * record.c - the versioned job record: encoder and a decoder that must hold
 * up against any bytes (it is a fuzz target).
 */
#include "queue_int.h"

#include <errno.h>
#include <stdlib.h>

static const size_t rec_str_max[QUEUE__REC_NSTR] = {
    [QUEUE__REC_PHONE] = QUEUE_MAX_ID_LEN,          [QUEUE__REC_TO] = QUEUE_MAX_ID_LEN,
    [QUEUE__REC_CAMPAIGN] = QUEUE_MAX_KEY_LEN,      [QUEUE__REC_ORDER_KEY] = QUEUE_MAX_KEY_LEN,
    [QUEUE__REC_IDEM] = QUEUE_MAX_KEY_LEN,          [QUEUE__REC_WAMID] = QUEUE_MAX_WAMID_LEN,
    [QUEUE__REC_ERR_CODE] = QUEUE_ERR_CODE_LEN - 1, [QUEUE__REC_ERR_MSG] = QUEUE_ERR_MSG_LEN - 1,
};

size_t queue__record_str_max(int i)
{
    if (i < 0 || i >= QUEUE__REC_NSTR)
        return 0;
    return rec_str_max[i];
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double f64_from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static bool fields_valid(const queue__record_t *r)
{
    if (r->state < 1 || r->state > QUEUE_STATE_MAX)
        return false;
    if (r->type < 1 || r->type > QUEUE_TYPE_MAX)
        return false;
    if (r->priority > QUEUE_PRIO_BULK)
        return false;
    for (int i = 0; i < QUEUE__REC_NSTR; i++) {
        if (r->s[i].p == NULL)
            continue;
        if (r->s[i].len > rec_str_max[i] || memchr(r->s[i].p, '\0', r->s[i].len) != NULL)
            return false;
    }
    return true;
}

/* The layout walk of a record: views of its fields, without the range
 * checks of fields_valid. */
static int record_views(const void *buf, size_t len, queue__record_t *r)
{
    const unsigned char *p = buf;
    size_t off;

    if (buf == NULL || r == NULL || len < QUEUE__REC_FIXED_LEN_V1)
        return QUEUE_ECORRUPT;
    /* Versions 1 and 2 (2 adds the flags byte); a newer one is unreadable
     * by this build. */
    if (p[0] == 1) {
        r->flags = 0;
        off = QUEUE__REC_FIXED_LEN_V1;
    } else if (p[0] == 2 && len >= QUEUE__REC_FIXED_LEN) {
        r->flags = p[60];
        off = QUEUE__REC_FIXED_LEN;
    } else {
        return QUEUE_ECORRUPT;
    }
    r->state = p[1];
    r->type = p[2];
    r->priority = p[3];
    r->attempts = (uint16_t)((p[4] << 8) | p[5]);
    r->max_attempts = (uint16_t)((p[6] << 8) | p[7]);
    r->created_at = f64_from_bits(queue__be64_get(p + 8));
    r->updated_at = f64_from_bits(queue__be64_get(p + 16));
    r->next_attempt_at = f64_from_bits(queue__be64_get(p + 24));
    r->not_before = f64_from_bits(queue__be64_get(p + 32));
    r->expires_at = f64_from_bits(queue__be64_get(p + 40));
    r->err_status = (int32_t)queue__be32_get(p + 48);
    r->err_meta_code = (int64_t)queue__be64_get(p + 52);
    for (int i = 0; i < QUEUE__REC_NSTR; i++) {
        size_t n;
        if (len - off < 2)
            return QUEUE_ECORRUPT;
        n = ((size_t)p[off] << 8) | p[off + 1];
        off += 2;
        if (n == QUEUE__REC_ABSENT) {
            r->s[i].p = NULL;
            r->s[i].len = 0;
            continue;
        }
        if (n > len - off)
            return QUEUE_ECORRUPT;
        r->s[i].p = (const char *)(p + off);
        r->s[i].len = n;
        off += n;
    }
    return off == len ? 0 : QUEUE_ECORRUPT;
}

int queue__record_parse(const void *buf, size_t len, queue__record_t *r)
{
    int rc = record_views(buf, len, r);
    if (rc == 0 && !fields_valid(r))
        rc = QUEUE_ECORRUPT;
    return rc;
}

int queue__record_parse_own(const void *buf, size_t len, queue__record_t *r)
{
    return record_views(buf, len, r);
}

size_t queue__record_size(const queue__record_t *r)
{
    size_t n = QUEUE__REC_FIXED_LEN + 2 * QUEUE__REC_NSTR;
    for (int i = 0; i < QUEUE__REC_NSTR; i++)
        if (r->s[i].p != NULL)
            n += r->s[i].len;
    return n;
}

int queue__record_encode(const queue__record_t *r, void *buf, size_t cap, size_t *out_len)
{
    if (!fields_valid(r))
        return QUEUE_EINVAL;
    if (queue__record_size(r) > cap)
        return -ENOBUFS;
    *out_len = queue__record_write(r, buf);
    return 0;
}

size_t queue__record_write(const queue__record_t *r, void *buf)
{
    unsigned char *p = buf;
    size_t off;

    p[0] = QUEUE_RECORD_VERSION;
    p[1] = r->state;
    p[2] = r->type;
    p[3] = r->priority;
    p[4] = (unsigned char)(r->attempts >> 8);
    p[5] = (unsigned char)r->attempts;
    p[6] = (unsigned char)(r->max_attempts >> 8);
    p[7] = (unsigned char)r->max_attempts;
    queue__be64_put(p + 8, f64_bits(r->created_at));
    queue__be64_put(p + 16, f64_bits(r->updated_at));
    queue__be64_put(p + 24, f64_bits(r->next_attempt_at));
    queue__be64_put(p + 32, f64_bits(r->not_before));
    queue__be64_put(p + 40, f64_bits(r->expires_at));
    queue__be32_put(p + 48, (uint32_t)r->err_status);
    queue__be64_put(p + 52, (uint64_t)r->err_meta_code);
    p[60] = r->flags;
    off = QUEUE__REC_FIXED_LEN;
    for (int i = 0; i < QUEUE__REC_NSTR; i++) {
        size_t n = r->s[i].p != NULL ? r->s[i].len : QUEUE__REC_ABSENT;
        p[off] = (unsigned char)(n >> 8);
        p[off + 1] = (unsigned char)n;
        off += 2;
        if (r->s[i].p != NULL && r->s[i].len > 0) {
            memcpy(p + off, r->s[i].p, r->s[i].len);
            off += r->s[i].len;
        }
    }
    return off;
}

/* A C string as a view, refusing one longer than `max` without reading past
 * max + 1 bytes of it. */
static int str_view(const char *s, size_t max, queue__str_t *v)
{
    if (s == NULL) {
        v->p = NULL;
        v->len = 0;
        return 0;
    }
    v->len = strnlen(s, max + 1);
    if (v->len > max)
        return QUEUE_EINVAL;
    v->p = s;
    return 0;
}

int queue__record_from_job(const queue_job_t *job, queue__record_t *r)
{
    int rc = 0;
    memset(r, 0, sizeof *r);
    r->state = job->state;
    r->type = job->type;
    r->priority = job->priority;
    r->attempts = job->attempts;
    r->max_attempts = job->max_attempts;
    r->flags = job->flags;
    r->created_at = job->created_at;
    r->updated_at = job->updated_at;
    r->next_attempt_at = job->next_attempt_at;
    r->not_before = job->not_before;
    r->expires_at = job->expires_at;
    r->err_status = job->last_error.status;
    r->err_meta_code = queue__meta_enc(&job->last_error);
    rc |= str_view(job->phone_number_id, QUEUE_MAX_ID_LEN, &r->s[QUEUE__REC_PHONE]);
    rc |= str_view(job->to, QUEUE_MAX_ID_LEN, &r->s[QUEUE__REC_TO]);
    rc |= str_view(job->campaign, QUEUE_MAX_KEY_LEN, &r->s[QUEUE__REC_CAMPAIGN]);
    rc |= str_view(job->order_key, QUEUE_MAX_KEY_LEN, &r->s[QUEUE__REC_ORDER_KEY]);
    rc |= str_view(job->idempotency_key, QUEUE_MAX_KEY_LEN, &r->s[QUEUE__REC_IDEM]);
    rc |= str_view(job->wamid, QUEUE_MAX_WAMID_LEN, &r->s[QUEUE__REC_WAMID]);
    if (rc != 0)
        return QUEUE_EINVAL;
    /* The error texts are fixed arrays: a missing NUL truncates them. */
    r->s[QUEUE__REC_ERR_CODE].p = job->last_error.code;
    r->s[QUEUE__REC_ERR_CODE].len = strnlen(job->last_error.code, QUEUE_ERR_CODE_LEN - 1);
    r->s[QUEUE__REC_ERR_MSG].p = job->last_error.message;
    r->s[QUEUE__REC_ERR_MSG].len = strnlen(job->last_error.message, QUEUE_ERR_MSG_LEN - 1);
    if (!fields_valid(r))
        return QUEUE_EINVAL;
    return 0;
}

int queue__record_decode(const void *buf, size_t len, queue_job_t *out)
{
    /* The pointer strings of a job, in record order. */
    static const int ptr_idx[] = {QUEUE__REC_PHONE,     QUEUE__REC_TO,   QUEUE__REC_CAMPAIGN,
                                  QUEUE__REC_ORDER_KEY, QUEUE__REC_IDEM, QUEUE__REC_WAMID};
    char **dst[sizeof ptr_idx / sizeof ptr_idx[0]];
    queue__record_t r;
    size_t total = 0;
    char *mem = NULL, *w;
    int rc;

    if (out == NULL)
        return QUEUE_EINVAL;
    memset(out, 0, sizeof *out);
    rc = queue__record_parse(buf, len, &r);
    if (rc != 0)
        return rc;
    dst[0] = &out->phone_number_id;
    dst[1] = &out->to;
    dst[2] = &out->campaign;
    dst[3] = &out->order_key;
    dst[4] = &out->idempotency_key;
    dst[5] = &out->wamid;
    for (size_t i = 0; i < sizeof ptr_idx / sizeof ptr_idx[0]; i++)
        if (r.s[ptr_idx[i]].p != NULL)
            total += r.s[ptr_idx[i]].len + 1;
    if (total > 0) {
        mem = malloc(total);
        if (mem == NULL)
            return -ENOMEM;
    }
    w = mem;
    for (size_t i = 0; i < sizeof ptr_idx / sizeof ptr_idx[0]; i++) {
        const queue__str_t *s = &r.s[ptr_idx[i]];
        if (s->p == NULL)
            continue;
        memcpy(w, s->p, s->len);
        w[s->len] = '\0';
        *dst[i] = w;
        w += s->len + 1;
    }
    out->priv_ = mem;
    out->state = r.state;
    out->type = r.type;
    out->priority = r.priority;
    out->attempts = r.attempts;
    out->max_attempts = r.max_attempts;
    out->flags = r.flags;
    out->created_at = r.created_at;
    out->updated_at = r.updated_at;
    out->next_attempt_at = r.next_attempt_at;
    out->not_before = r.not_before;
    out->expires_at = r.expires_at;
    out->last_error.status = r.err_status;
    queue__meta_dec(r.err_meta_code, &out->last_error);
    if (r.s[QUEUE__REC_ERR_CODE].p != NULL)
        memcpy(out->last_error.code, r.s[QUEUE__REC_ERR_CODE].p, r.s[QUEUE__REC_ERR_CODE].len);
    if (r.s[QUEUE__REC_ERR_MSG].p != NULL)
        memcpy(out->last_error.message, r.s[QUEUE__REC_ERR_MSG].p, r.s[QUEUE__REC_ERR_MSG].len);
    return 0;
}
