/*
 * scheduler.c - the dispatch scheduler (see scheduler.h for the structure).
 */
#include "scheduler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NPRIO 3
#define HEAP_NONE ((size_t)-1)

enum job_where { JOB_WAITING = 1, JOB_READY, JOB_INFLIGHT };
enum sender_state { SENDER_IDLE = 0, SENDER_RING, SENDER_SLEEP, SENDER_CAPPED };

typedef struct bucket {
    double rate; /* 0: unlimited */
    double burst;
    double tokens;
    double last;
} bucket_t;

struct sched_sender {
    char *phone_number_id;
    struct {
        sched_job_t *head, *tail;
    } ready[NPRIO];
    size_t n_ready;
    size_t n_jobs; /* waiting + ready, not in flight */
    unsigned inflight;
    int state;
    bucket_t bucket;
    double wake;     /* while SENDER_SLEEP */
    size_t heap_idx; /* in the sleep heap */
    sched_sender_t *ring_next;
};

/* An intrusive binary min-heap of pointers; elements keep their index. */
typedef struct heap {
    void **a;
    size_t n, cap;
    int (*less)(const void *, const void *);
    void (*set_idx)(void *, size_t);
} heap_t;

struct sched {
    sched_options_t opt;
    heap_t waiting;  /* sched_job_t by (due, id) */
    heap_t sleeping; /* sched_sender_t by wake */
    sched_sender_t *ring_head, *ring_tail;
    /* id -> job, open addressing with tombstones */
    sched_job_t **jobs;
    size_t jobs_cap, jobs_used, jobs_n;
    /* phoneNumberId -> sender, open addressing, never shrinks */
    sched_sender_t **senders;
    size_t senders_cap, senders_n;
    bucket_t global;
    unsigned inflight;
};

#define TOMBSTONE ((sched_job_t *)(uintptr_t)1)

/* --- heap ------------------------------------------------------------- */

static void heap_swap(heap_t *h, size_t i, size_t j)
{
    void *t = h->a[i];
    h->a[i] = h->a[j];
    h->a[j] = t;
    h->set_idx(h->a[i], i);
    h->set_idx(h->a[j], j);
}

static void heap_up(heap_t *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!h->less(h->a[i], h->a[p]))
            break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void heap_down(heap_t *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->less(h->a[l], h->a[m]))
            m = l;
        if (r < h->n && h->less(h->a[r], h->a[m]))
            m = r;
        if (m == i)
            break;
        heap_swap(h, i, m);
        i = m;
    }
}

static int heap_push(heap_t *h, void *x)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        void **a = realloc(h->a, cap * sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        h->a = a;
        h->cap = cap;
    }
    h->a[h->n] = x;
    h->set_idx(x, h->n);
    h->n++;
    heap_up(h, h->n - 1);
    return 0;
}

static void heap_remove(heap_t *h, size_t i)
{
    h->set_idx(h->a[i], HEAP_NONE);
    h->n--;
    if (i == h->n)
        return;
    h->a[i] = h->a[h->n];
    h->set_idx(h->a[i], i);
    heap_down(h, i);
    heap_up(h, i);
}

static void *heap_top(const heap_t *h)
{
    return h->n ? h->a[0] : NULL;
}

static int job_less(const void *a, const void *b)
{
    const sched_job_t *x = a, *y = b;
    if (x->due != y->due)
        return x->due < y->due;
    return x->id < y->id;
}

static void job_set_idx(void *p, size_t i)
{
    ((sched_job_t *)p)->heap_idx_ = i;
}

static int sender_less(const void *a, const void *b)
{
    return ((const sched_sender_t *)a)->wake < ((const sched_sender_t *)b)->wake;
}

static void sender_set_idx(void *p, size_t i)
{
    ((sched_sender_t *)p)->heap_idx = i;
}

/* --- hash tables ------------------------------------------------------ */

static size_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t)x;
}

static size_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

static int jobs_grow(sched_t *s)
{
    size_t cap = s->jobs_cap ? s->jobs_cap * 2 : 1024;
    sched_job_t **t, **old = s->jobs;
    size_t i;

    /* Rehash at the same size when tombstones, not jobs, fill the table. */
    if (s->jobs_n * 2 < s->jobs_cap)
        cap = s->jobs_cap;
    t = calloc(cap, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (i = 0; i < s->jobs_cap; i++) {
        sched_job_t *j = old[i];
        size_t k;
        if (j == NULL || j == TOMBSTONE)
            continue;
        for (k = hash_u64(j->id) & (cap - 1); t[k]; k = (k + 1) & (cap - 1))
            ;
        t[k] = j;
    }
    free(old);
    s->jobs = t;
    s->jobs_cap = cap;
    s->jobs_used = s->jobs_n;
    return 0;
}

static size_t jobs_slot(const sched_t *s, uint64_t id)
{
    size_t k;

    if (s->jobs_cap == 0)
        return HEAP_NONE;
    for (k = hash_u64(id) & (s->jobs_cap - 1); s->jobs[k]; k = (k + 1) & (s->jobs_cap - 1))
        if (s->jobs[k] != TOMBSTONE && s->jobs[k]->id == id)
            return k;
    return HEAP_NONE;
}

static int jobs_insert(sched_t *s, sched_job_t *j)
{
    size_t k;
    int rc;

    if ((s->jobs_used + 1) * 4 >= s->jobs_cap * 3 && (rc = jobs_grow(s)) != 0)
        return rc;
    for (k = hash_u64(j->id) & (s->jobs_cap - 1); s->jobs[k] && s->jobs[k] != TOMBSTONE;
         k = (k + 1) & (s->jobs_cap - 1))
        ;
    if (s->jobs[k] == NULL)
        s->jobs_used++;
    s->jobs[k] = j;
    s->jobs_n++;
    return 0;
}

static sched_sender_t *sender_get(sched_t *s, const char *id, bool create)
{
    size_t k;
    sched_sender_t *sd;

    if (s->senders_cap) {
        for (k = hash_str(id) & (s->senders_cap - 1); s->senders[k];
             k = (k + 1) & (s->senders_cap - 1))
            if (strcmp(s->senders[k]->phone_number_id, id) == 0)
                return s->senders[k];
    }
    if (!create)
        return NULL;
    if ((s->senders_n + 1) * 2 >= s->senders_cap) {
        size_t cap = s->senders_cap ? s->senders_cap * 2 : 64, i;
        sched_sender_t **t = calloc(cap, sizeof(*t));
        if (t == NULL)
            return NULL;
        for (i = 0; i < s->senders_cap; i++) {
            sched_sender_t *x = s->senders[i];
            if (x == NULL)
                continue;
            for (k = hash_str(x->phone_number_id) & (cap - 1); t[k]; k = (k + 1) & (cap - 1))
                ;
            t[k] = x;
        }
        free(s->senders);
        s->senders = t;
        s->senders_cap = cap;
    }
    sd = calloc(1, sizeof(*sd));
    if (sd == NULL)
        return NULL;
    sd->phone_number_id = strdup(id);
    if (sd->phone_number_id == NULL) {
        free(sd);
        return NULL;
    }
    sd->heap_idx = HEAP_NONE;
    sd->bucket.rate =
        s->opt.rate_for ? s->opt.rate_for(id, s->opt.rate_user) : s->opt.rate_per_number;
    sd->bucket.burst = s->opt.burst_per_number > 0 ? s->opt.burst_per_number : sd->bucket.rate;
    if (sd->bucket.burst < 1)
        sd->bucket.burst = 1;
    sd->bucket.tokens = sd->bucket.burst;
    sd->bucket.last = -1;
    for (k = hash_str(id) & (s->senders_cap - 1); s->senders[k]; k = (k + 1) & (s->senders_cap - 1))
        ;
    s->senders[k] = sd;
    s->senders_n++;
    return sd;
}

/* --- buckets ---------------------------------------------------------- */

static void bucket_refill(bucket_t *b, double now)
{
    if (b->rate <= 0)
        return;
    if (b->last < 0 || now < b->last) {
        b->last = now;
        return;
    }
    b->tokens += (now - b->last) * b->rate;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
    b->last = now;
}

/* Time at which the bucket holds one token (now if it does). */
static double bucket_ready_at(const bucket_t *b, double now)
{
    if (b->rate <= 0 || b->tokens >= 1)
        return now;
    return now + (1 - b->tokens) / b->rate;
}

/* --- ring ------------------------------------------------------------- */

static void ring_push(sched_t *s, sched_sender_t *sd)
{
    sd->state = SENDER_RING;
    sd->ring_next = NULL;
    if (s->ring_tail)
        s->ring_tail->ring_next = sd;
    else
        s->ring_head = sd;
    s->ring_tail = sd;
}

static sched_sender_t *ring_pop(sched_t *s)
{
    sched_sender_t *sd = s->ring_head;

    if (sd == NULL)
        return NULL;
    s->ring_head = sd->ring_next;
    if (s->ring_head == NULL)
        s->ring_tail = NULL;
    sd->ring_next = NULL;
    return sd;
}

/* Puts an idle sender that has ready jobs back in the ring. */
static void sender_wake_if_idle(sched_t *s, sched_sender_t *sd)
{
    if (sd->state == SENDER_IDLE && sd->n_ready > 0)
        ring_push(s, sd);
}

/* --- public ----------------------------------------------------------- */

static void opt_fix(sched_options_t *o)
{
    if (o->max_inflight == 0)
        o->max_inflight = 256;
    if (o->max_inflight_per_number == 0)
        o->max_inflight_per_number = 64;
    if (o->max_jobs == 0)
        o->max_jobs = 100000;
}

int sched_new(const sched_options_t *opt, sched_t **out)
{
    sched_t *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return -ENOMEM;
    s->opt = *opt;
    opt_fix(&s->opt);
    s->waiting.less = job_less;
    s->waiting.set_idx = job_set_idx;
    s->sleeping.less = sender_less;
    s->sleeping.set_idx = sender_set_idx;
    s->global.rate = s->opt.global_rate;
    s->global.burst = s->opt.global_rate > 1 ? s->opt.global_rate : 1;
    s->global.tokens = s->global.burst;
    s->global.last = -1;
    *out = s;
    return 0;
}

void sched_free(sched_t *s)
{
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; i < s->jobs_cap; i++)
        if (s->jobs[i] && s->jobs[i] != TOMBSTONE)
            free(s->jobs[i]);
    for (i = 0; i < s->senders_cap; i++) {
        if (s->senders[i]) {
            free(s->senders[i]->phone_number_id);
            free(s->senders[i]);
        }
    }
    free(s->jobs);
    free(s->senders);
    free(s->waiting.a);
    free(s->sleeping.a);
    free(s);
}

void sched_reconfigure(sched_t *s, const sched_options_t *opt)
{
    size_t i;

    s->opt = *opt;
    opt_fix(&s->opt);
    for (i = 0; i < s->senders_cap; i++) {
        sched_sender_t *sd = s->senders[i];
        if (sd == NULL)
            continue;
        sd->bucket.rate = s->opt.rate_for ? s->opt.rate_for(sd->phone_number_id, s->opt.rate_user)
                                          : s->opt.rate_per_number;
        sd->bucket.burst = s->opt.burst_per_number > 0 ? s->opt.burst_per_number : sd->bucket.rate;
        if (sd->bucket.burst < 1)
            sd->bucket.burst = 1;
        if (sd->bucket.tokens > sd->bucket.burst)
            sd->bucket.tokens = sd->bucket.burst;
    }
    s->global.rate = s->opt.global_rate;
    s->global.burst = s->opt.global_rate > 1 ? s->opt.global_rate : 1;
    if (s->global.tokens > s->global.burst)
        s->global.tokens = s->global.burst;
}

bool sched_has_room(const sched_t *s)
{
    return s->jobs_n < s->opt.max_jobs;
}

bool sched_contains(const sched_t *s, uint64_t id)
{
    return jobs_slot(s, id) != HEAP_NONE;
}

sched_job_t *sched_job_find(const sched_t *s, uint64_t id)
{
    size_t k = jobs_slot(s, id);
    return k == HEAP_NONE ? NULL : s->jobs[k];
}

int sched_job_add(sched_t *s, const sched_job_t *tmpl, const char *phone_number_id)
{
    sched_job_t *j;
    sched_sender_t *sd;
    int rc;

    if (sched_contains(s, tmpl->id))
        return -EEXIST;
    if (!sched_has_room(s))
        return -ENOSPC;
    sd = sender_get(s, phone_number_id, true);
    if (sd == NULL)
        return -ENOMEM;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->id = tmpl->id;
    j->due = tmpl->due;
    j->expires_at = tmpl->expires_at;
    j->attempts = tmpl->attempts;
    j->max_attempts = tmpl->max_attempts;
    j->type = tmpl->type;
    j->priority = tmpl->priority < NPRIO ? tmpl->priority : NPRIO - 1;
    j->sender = sd;
    if ((rc = jobs_insert(s, j)) != 0) {
        free(j);
        return rc;
    }
    if ((rc = heap_push(&s->waiting, j)) != 0) {
        s->jobs[jobs_slot(s, j->id)] = TOMBSTONE;
        s->jobs_n--;
        free(j);
        return rc;
    }
    sd->n_jobs++;
    return 0;
}

static int job_where(const sched_job_t *j)
{
    if (j->inflight)
        return JOB_INFLIGHT;
    return j->heap_idx_ != HEAP_NONE ? JOB_WAITING : JOB_READY;
}

/* Moves due jobs from the waiting heap to their senders' ready lists. */
static void promote(sched_t *s, double now)
{
    sched_job_t *j;

    while ((j = heap_top(&s->waiting)) != NULL && j->due <= now) {
        sched_sender_t *sd = j->sender;
        heap_remove(&s->waiting, 0);
        j->next_ = NULL;
        if (sd->ready[j->priority].tail)
            sd->ready[j->priority].tail->next_ = j;
        else
            sd->ready[j->priority].head = j;
        sd->ready[j->priority].tail = j;
        sd->n_ready++;
        sender_wake_if_idle(s, sd);
    }
}

static void wake_senders(sched_t *s, double now)
{
    sched_sender_t *sd;

    while ((sd = heap_top(&s->sleeping)) != NULL && sd->wake <= now) {
        heap_remove(&s->sleeping, 0);
        sd->state = SENDER_IDLE;
        sender_wake_if_idle(s, sd);
    }
}

static sched_job_t *ready_pop(sched_sender_t *sd)
{
    int p;

    for (p = 0; p < NPRIO; p++) {
        sched_job_t *j = sd->ready[p].head;
        if (j == NULL)
            continue;
        sd->ready[p].head = j->next_;
        if (sd->ready[p].head == NULL)
            sd->ready[p].tail = NULL;
        j->next_ = NULL;
        sd->n_ready--;
        return j;
    }
    return NULL;
}

static double next_wake(const sched_t *s)
{
    const sched_job_t *j = heap_top(&s->waiting);
    const sched_sender_t *sd = heap_top(&s->sleeping);
    double w = INFINITY;

    if (j && j->due < w)
        w = j->due;
    if (sd && sd->wake < w)
        w = sd->wake;
    return w;
}

sched_job_t *sched_next(sched_t *s, double now, double *wake)
{
    sched_sender_t *sd;

    promote(s, now);
    wake_senders(s, now);
    if (s->inflight >= s->opt.max_inflight) {
        if (wake)
            *wake = INFINITY; /* a completion frees a slot */
        return NULL;
    }
    bucket_refill(&s->global, now);
    if (s->global.rate > 0 && s->global.tokens < 1) {
        if (wake)
            *wake = s->ring_head ? bucket_ready_at(&s->global, now) : next_wake(s);
        return NULL;
    }
    while ((sd = ring_pop(s)) != NULL) {
        sched_job_t *j;

        if (sd->n_ready == 0) {
            sd->state = SENDER_IDLE;
            continue;
        }
        if (sd->inflight >= s->opt.max_inflight_per_number) {
            sd->state = SENDER_CAPPED;
            continue;
        }
        bucket_refill(&sd->bucket, now);
        if (sd->bucket.rate > 0 && sd->bucket.tokens < 1) {
            sd->state = SENDER_SLEEP;
            sd->wake = bucket_ready_at(&sd->bucket, now);
            if (heap_push(&s->sleeping, sd) != 0)
                ring_push(s, sd); /* no memory for the heap: stay in the ring */
            continue;
        }
        j = ready_pop(sd);
        if (sd->bucket.rate > 0)
            sd->bucket.tokens -= 1;
        if (s->global.rate > 0)
            s->global.tokens -= 1;
        sd->inflight++;
        sd->n_jobs--;
        s->inflight++;
        j->inflight = true;
        ring_push(s, sd); /* round robin: to the back */
        return j;
    }
    if (wake)
        *wake = next_wake(s);
    return NULL;
}

/* An in-flight job leaves flight: its sender may send again. */
static void inflight_end(sched_t *s, sched_job_t *j)
{
    sched_sender_t *sd = j->sender;

    j->inflight = false;
    sd->inflight--;
    s->inflight--;
    if (sd->state == SENDER_CAPPED) {
        sd->state = SENDER_IDLE;
        sender_wake_if_idle(s, sd);
    }
}

void sched_job_retry(sched_t *s, sched_job_t *j, double due)
{
    if (j->inflight)
        inflight_end(s, j);
    j->due = due;
    j->sender->n_jobs++;
    if (heap_push(&s->waiting, j) != 0) {
        /* Out of memory: drop it from the active set; the store still has it
         * and the next refill brings it back. */
        j->sender->n_jobs--;
        s->jobs[jobs_slot(s, j->id)] = TOMBSTONE;
        s->jobs_n--;
        free(j);
    }
}

void sched_job_finish(sched_t *s, sched_job_t *j)
{
    sched_sender_t *sd = j->sender;
    size_t k;

    switch (job_where(j)) {
    case JOB_INFLIGHT:
        inflight_end(s, j);
        break;
    case JOB_WAITING:
        heap_remove(&s->waiting, j->heap_idx_);
        sd->n_jobs--;
        break;
    case JOB_READY: {
        int p = j->priority;
        sched_job_t *prev = NULL, *x;
        for (x = sd->ready[p].head; x && x != j; x = x->next_)
            prev = x;
        if (x == j) {
            if (prev)
                prev->next_ = j->next_;
            else
                sd->ready[p].head = j->next_;
            if (sd->ready[p].tail == j)
                sd->ready[p].tail = prev;
            sd->n_ready--;
        }
        sd->n_jobs--;
        break;
    }
    }
    k = jobs_slot(s, j->id);
    if (k != HEAP_NONE) {
        s->jobs[k] = TOMBSTONE;
        s->jobs_n--;
    }
    free(j);
}

void sched_senders_each(const sched_t *s, void (*cb)(const sched_sender_info_t *, void *),
                        void *user)
{
    size_t i;

    for (i = 0; i < s->senders_cap; i++) {
        const sched_sender_t *sd = s->senders[i];
        sched_sender_info_t info;
        if (sd == NULL)
            continue;
        info.phone_number_id = sd->phone_number_id;
        info.queued = sd->n_jobs;
        info.inflight = sd->inflight;
        info.rate = sd->bucket.rate;
        cb(&info, user);
    }
}

size_t sched_jobs(const sched_t *s)
{
    return s->jobs_n;
}

unsigned sched_inflight(const sched_t *s)
{
    return s->inflight;
}
