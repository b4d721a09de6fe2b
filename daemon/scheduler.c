/*
 * scheduler.c - the dispatch scheduler (see scheduler.h for the policy).
 *
 * Where a job is (job->where_):
 *   W_WAITING  in the waiting set (FIFO or heap) until its due time;
 *   W_KEYWAIT  due, but behind an earlier job of its order key (or the
 *              key has a job in flight);
 *   W_READY    first of its key and due: in its lane's ready list;
 *   W_PAIRWAIT picked, but its (sender, recipient) pair had no token or is
 *              held: parked on the pair until the pair's wake time;
 *   W_INFLIGHT handed out by sched_next.
 * A lane is (sender, campaign, priority); a sender has one ring of lanes
 * per priority, and the scheduler one ring of senders.
 */
#include "scheduler.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefault.h"

#define NPRIO 3
#define IDX_NONE UINT32_MAX
/* sched_campaign_rate: sends counted in slots of RATE_SLOT seconds; the
 * rate is taken over the current slot and the RATE_WINDOW_SLOTS before it
 * (5 s: sends of a rate-limited sender leave in groups once per window of
 * SCHED_RATE_WINDOW, and a shorter span would read one group more or less
 * as a swing of a third). */
#define RATE_SLOTS 12
#define RATE_SLOT 0.5
#define RATE_WINDOW_SLOTS 10
#define RATE_WINDOW (RATE_SLOT * RATE_WINDOW_SLOTS)
#define AIMD_CUT 0.5          /* multiplicative decrease on a throttle */
#define AIMD_STEP_FRACTION 50 /* the rate grows back by max/50 per second of successes */
#define AIMD_MIN_FRACTION 50  /* the rate never falls below max/50 */
#define CUT_GAP 1.0           /* at most one cut per second: one overload, one cut */

enum { W_NONE = 0, W_WAITING, W_KEYWAIT, W_READY, W_PAIRWAIT, W_INFLIGHT };
enum { SENDER_IDLE = 0, SENDER_RING, SENDER_SLEEP, SENDER_CAPPED };
enum { PH_NONE = 0, PH_WAKE, PH_IDLE };

/* --- small generic pieces ---------------------------------------------- */

typedef struct hnode {
    struct hnode *hnext;
    uint64_t hash;
} hnode_t;

/* A chained hash table of intrusive nodes (the node is the object's first
 * member). Grows by doubling; never shrinks. */
typedef struct htab {
    hnode_t **b;
    size_t cap, n;
} htab_t;

typedef struct bucket {
    double rate; /* 0: unlimited */
    double burst;
    double tokens;
    double last;
    /* The departure window held the sender back until this time (0: it
     * did not): the tokens the bucket gained meanwhile are not kept
     * (bucket_window_held). */
    double held;
} bucket_t;

/* A heap entry carries its ordering key, so that sifting compares entries
 * in the array and does not read the elements (with 100,000 jobs queued
 * those reads were a cache miss per comparison). Order: key, then tie. */
typedef struct hent {
    double key;
    uint64_t tie;
    void *p;
} hent_t;

/* Children per node: half the depth of a binary heap, so half the elements
 * moved (each move writes the element's index: a cache miss in a large
 * heap) per pop or removal; the children's keys are adjacent in the array. */
#define HEAP_ARITY 4

/* An intrusive 4-ary min-heap; elements keep their index. An element's key
 * must not change while it is in the heap except through heap_rekey_later. */
typedef struct heap {
    hent_t *a;
    size_t n, cap;
    void (*set_idx)(void *, size_t);
} heap_t;

typedef struct sched_okey {
    hnode_t h;
    sched_job_t *head, *tail; /* by id */
    unsigned inflight;
} sched_okey_t;

typedef struct sched_campaign {
    hnode_t h;
    char *name;                           /* NULL: the "no campaign" lane group */
    size_t refs;                          /* jobs in the active set */
    bool paused;                          /* by the operator */
    unsigned holds;                       /* campaign cancels walking it (sched_campaign_hold) */
    struct sched_lane *lanes;             /* its lanes (list by cnext/cprev) */
    struct sched_campaign *inext, *iprev; /* idle list */
    bool idle;
    double idle_since;
    uint32_t slot_n[RATE_SLOTS];
    int64_t slot_no[RATE_SLOTS];
    double run_start; /* first send after a gap of a window or more */
    double last_send;
} sched_campaign_t;

/* Whether c's jobs may not be picked: paused by the operator, or held by a
 * cancel walking it. */
static bool camp_stopped(const sched_campaign_t *c)
{
    return c->paused || c->holds > 0;
}

typedef struct sched_lane {
    hnode_t h;
    sched_sender_t *sender;
    sched_campaign_t *camp;
    int prio;
    sched_job_t *head, *tail; /* ready jobs */
    sched_job_t *late;        /* the last of the late ones, a prefix (lane_append) */
    size_t n;
    bool in_ring;
    struct sched_lane *rnext, *rprev; /* sender ring of its priority */
    struct sched_lane *cnext, *cprev; /* campaign's lanes */
} sched_lane_t;

typedef struct sched_pair {
    hnode_t h;
    sched_sender_t *sender;
    uint64_t rcpt;
    /* Pair pacing (pair_allowance): both refill one per interval, `tokens`
     * up to pair_burst, `rest` up to 1 (rested; below 0 as a burst borrows
     * from the future). */
    double tokens, rest, last;
    double burst_start; /* the first send of the current burst */
    unsigned burst_n;   /* sends of the burst so far */
    double hold_until;
    unsigned strikes; /* consecutive pair-limit answers */
    size_t refs;      /* jobs in the active set */
    sched_job_t *park_head, *park_tail;
    int heap; /* PH_* */
    uint32_t heap_idx;
    double wake; /* PH_WAKE: release time; PH_IDLE: time it may be forgotten */
} sched_pair_t;

/* Departure times of a sender's last `cap` picks, by pick sequence number:
 * pick `seq` is in t[seq % cap] while seq + cap > next. A pick whose
 * departure is not known yet holds INFINITY. */
typedef struct window {
    double *t;
    unsigned cap;
    /* Sequence number of the next pick: 64 bits, so seq % cap runs on
     * across 2^32 picks (a 32-bit one jumped there, cap rarely a power of
     * two, and the window let up to half as many again through). */
    uint64_t next;
} window_t;

/* Two cache lines per job in memory (memory per queued job, docs/performance.md):
 * new fields go into padding. */
_Static_assert(sizeof(sched_job_t) <= 128, "sched_job_t grew past 128 bytes");

/* The global rate's departure window: as a sender's, over all senders.
 * Entries carry the job's id (a job has room for one window place only,
 * its sender's), and a departure finds its pick from the newest entry
 * back: jobs depart soon after they are picked, so within the last
 * max_inflight picks. */
typedef struct gwindow {
    struct gw_entry {
        uint64_t id;
        double t; /* departure; INFINITY while not known */
    } * e;
    unsigned cap;
    uint64_t next; /* sequence number of the next pick (as window_t's) */
} gwindow_t;

struct sched_sender {
    hnode_t h;
    char *phone_number_id;
    window_t win;
    struct {
        sched_lane_t *head, *tail;
    } ring[NPRIO];
    size_t n_ready; /* in lanes of running campaigns */
    size_t n_jobs;  /* in the set, not in flight */
    unsigned inflight;
    int state;
    bucket_t bucket;
    double max_rate; /* configured; bucket.rate adapts below it */
    double last_cut;
    double hold_until;
    char *hold_reason;
    unsigned hold_strikes; /* holds in a row with no success between */
    bool paused;
    char *reason;
    double wake;     /* while SENDER_SLEEP */
    size_t heap_idx; /* in the sleep heap */
    sched_sender_t *ring_next;
    size_t n_pairs;   /* pair entries pointing here */
    size_t idle_idx;  /* in the idle heap, or IDX_NONE */
    double forget_at; /* while in the idle heap */
};

/* A slot of the job table: job NULL is empty, TOMBSTONE deleted. */
typedef struct jslot {
    uint64_t id;
    sched_job_t *job;
} jslot_t;

/* A heap whose elements mostly arrive in key order. Those go to a ring (a
 * FIFO), where push, removal and taking the first cost O(1) and touch no
 * other element; the others (a key before the last one appended) go to the
 * heap. The first element is the earlier of the two heads. Used where
 * arrival order is nearly key order: the waiting set by (due, id) (a
 * refill loads jobs from the due index in that order, submits due now come
 * with rising ids), expiry by (expires_at, id) (a fixed time to live after
 * submission) and idle pairs by the time they may be forgotten (a fixed
 * refill time after their last send). An element's index (set_idx) is its
 * heap slot, or its ring slot with OSET_FIFO set. */
typedef struct oset {
    heap_t h;
    void **r;      /* ring of rcap slots (a power of two, or 0); NULL: removed */
    size_t rcap;   /* at most OSET_FIFO */
    size_t rhead;  /* first slot */
    size_t rn;     /* slots in use, removed ones included */
    hent_t last;   /* the last appended: appends keep the order even when */
    bool has_last; /* that one is gone */
    /* The ordering fields of an element (its key and tie, as pushed): read
     * for the ring's head only, so the ring holds pointers alone. */
    void (*key_of)(const void *, hent_t *);
} oset_t;

#define OSET_FIFO 0x40000000u

struct sched {
    sched_options_t opt;
    oset_t waiting;    /* sched_job_t by (due, id) */
    oset_t expiry;     /* sched_job_t by (expires_at, id) */
    heap_t sleeping;   /* sched_sender_t by wake */
    heap_t pairq;      /* sched_pair_t with parked jobs, by release time */
    oset_t pairidle;   /* sched_pair_t without jobs, by the time they may be forgotten */
    heap_t senderidle; /* sched_sender_t without jobs or pairs, by forget_at */
    sched_sender_t *ring_head, *ring_tail;
    /* id -> job, open addressing with tombstones; each slot holds the id
     * next to the pointer, so that a probe reads no job (lookups of absent
     * ids, the refill's, probe the most) and one cache line, not one in an
     * id array and one in a pointer array */
    jslot_t *jobs;
    size_t jobs_cap, jobs_used, jobs_n;
    htab_t senders, campaigns, okeys, lanes, pairs;
    size_t idle_pairs;
    sched_campaign_t none; /* jobs without a campaign */
    sched_campaign_t *idle_head, *idle_tail;
    bucket_t global;
    gwindow_t gwin; /* departures of all senders, while global_rate is set */
    unsigned inflight;
    bool all_paused;
    bool account_paused;
    char *account_reason;
    double hold_all_until;
    double now; /* latest time seen */
};

#define TOMBSTONE ((sched_job_t *)(uintptr_t)1)

/* --- hashing ----------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a finaliser */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return mix64(h);
}

/* Hash of the digits of a recipient: "+1 555-0100" and "15550100" are the
 * same WhatsApp user. */
static uint64_t hash_digits(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            continue;
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return mix64(h);
}

static uint64_t hash_ptrs(const void *a, const void *b, uint64_t c)
{
    return mix64((uint64_t)(uintptr_t)a * 31 + mix64((uint64_t)(uintptr_t)b) + c);
}

/* calloc for a table about to be written in full (a rehash): aligned to a
 * cache line (slots never straddle two), its pages mapped in one system
 * call (prefault.h) before they are zeroed. Freed with free(). */
static void *table_alloc(size_t n, size_t size)
{
    void *p;

    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    if (posix_memalign(&p, 64, n * size) != 0)
        return NULL;
    avp_prefault(p, n * size);
    memset(p, 0, n * size);
    return p;
}

/* --- htab ---------------------------------------------------------------- */

static int ht_reserve(htab_t *t)
{
    size_t cap, i;
    hnode_t **b;

    if (t->n + 1 <= t->cap)
        return 0;
    cap = t->cap ? t->cap * 2 : 64;
    b = table_alloc(cap, sizeof(hnode_t *));
    if (b == NULL)
        return -ENOMEM;
    for (i = 0; i < t->cap; i++) {
        hnode_t *x = t->b[i], *next;
        for (; x; x = next) {
            size_t k = x->hash & (cap - 1);
            next = x->hnext;
            x->hnext = b[k];
            b[k] = x;
        }
    }
    free(t->b);
    t->b = b;
    t->cap = cap;
    return 0;
}

/* Call ht_reserve first. */
static void ht_insert(htab_t *t, hnode_t *x)
{
    size_t k = x->hash & (t->cap - 1);
    x->hnext = t->b[k];
    t->b[k] = x;
    t->n++;
}

static void ht_remove(htab_t *t, hnode_t *x)
{
    hnode_t **pp = &t->b[x->hash & (t->cap - 1)];

    for (; *pp; pp = &(*pp)->hnext) {
        if (*pp == x) {
            *pp = x->hnext;
            t->n--;
            return;
        }
    }
}

static hnode_t *ht_first(const htab_t *t, uint64_t hash)
{
    return t->cap ? t->b[hash & (t->cap - 1)] : NULL;
}

/* --- heap ---------------------------------------------------------------- */

/* The order the element comparators had: key with != then <, so a NaN key
 * sorts as before, then tie. */
static bool hent_less(const hent_t *x, const hent_t *y)
{
    if (x->key != y->key)
        return x->key < y->key;
    return x->tie < y->tie;
}

static void heap_swap(heap_t *h, size_t i, size_t j)
{
    hent_t t = h->a[i];
    h->a[i] = h->a[j];
    h->a[j] = t;
    h->set_idx(h->a[i].p, i);
    h->set_idx(h->a[j].p, j);
}

static void heap_up(heap_t *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / HEAP_ARITY;
        if (!hent_less(&h->a[i], &h->a[p]))
            break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void heap_down(heap_t *h, size_t i)
{
    for (;;) {
        size_t c = HEAP_ARITY * i + 1, end = c + HEAP_ARITY, m = i;
        if (end > h->n)
            end = h->n;
        for (; c < end; c++)
            if (hent_less(&h->a[c], &h->a[m]))
                m = c;
        if (m == i)
            break;
        heap_swap(h, i, m);
        i = m;
    }
}

/* Makes room for `n` elements, so that pushes up to that count never fail. */
static int heap_reserve(heap_t *h, size_t n)
{
    size_t cap;
    hent_t *a;

    if (n <= h->cap)
        return 0;
    cap = h->cap ? h->cap : 64;
    while (cap < n)
        cap *= 2;
    /* Not realloc: it would copy the whole old capacity, most of it unused
     * where a heap is reserved for elements that mostly wait elsewhere (the
     * waiting set's jobs sit in its FIFO), and touch as many fresh pages. */
    a = malloc(cap * sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    if (h->n > 0) {
        avp_prefault(a, h->n * sizeof(*a));
        memcpy(a, h->a, h->n * sizeof(*a));
    }
    free(h->a);
    h->a = a;
    h->cap = cap;
    return 0;
}

/* Room must have been reserved. `key` and `tie` must be the element's
 * current ordering fields (copied: the heap never reads the element). */
static void heap_push(heap_t *h, void *x, double key, uint64_t tie)
{
    h->a[h->n].key = key;
    h->a[h->n].tie = tie;
    h->a[h->n].p = x;
    h->set_idx(x, h->n);
    h->n++;
    heap_up(h, h->n - 1);
}

static void heap_remove(heap_t *h, size_t i)
{
    h->set_idx(h->a[i].p, IDX_NONE);
    h->n--;
    if (i == h->n)
        return;
    h->a[i] = h->a[h->n];
    h->set_idx(h->a[i].p, i);
    heap_down(h, i);
    heap_up(h, i);
}

/* The element at i got a later key. */
static void heap_rekey_later(heap_t *h, size_t i, double key)
{
    h->a[i].key = key;
    heap_down(h, i);
}

static void *heap_top(const heap_t *h)
{
    return h->n ? h->a[0].p : NULL;
}

/* --- heap elements ------------------------------------------------------ */

static void job_set_idx(void *p, size_t i)
{
    ((sched_job_t *)p)->wait_idx_ = (uint32_t)i;
}

/* --- ordered sets: FIFO + heap -------------------------------------------- */

/* Moves the live entries to a new ring (twice the size when more than half
 * full), in order from slot 0. Fails only on allocation failure. */
static int oset_regrow(oset_t *o)
{
    size_t live = 0, cap, k;
    void **r;

    for (k = 0; k < o->rn; k++)
        live += o->r[(o->rhead + k) & (o->rcap - 1)] != NULL;
    cap = o->rcap == 0 ? 1024 : live * 2 > o->rcap ? o->rcap * 2 : o->rcap;
    if (cap > OSET_FIFO)
        return -ENOMEM;
    r = malloc(cap * sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    avp_prefault(r, live * sizeof(*r));
    live = 0;
    for (k = 0; k < o->rn; k++) {
        void *x = o->r[(o->rhead + k) & (o->rcap - 1)];
        if (x != NULL) {
            o->h.set_idx(x, OSET_FIFO | live);
            r[live++] = x;
        }
    }
    free(o->r);
    o->r = r;
    o->rcap = cap;
    o->rhead = 0;
    o->rn = live;
    return 0;
}

/* Drops removed slots at both ends, so a non-empty ring starts with an
 * element. */
static void oset_trim(oset_t *o)
{
    while (o->rn > 0 && o->r[o->rhead] == NULL) {
        o->rhead = (o->rhead + 1) & (o->rcap - 1);
        o->rn--;
    }
    while (o->rn > 0 && o->r[(o->rhead + o->rn - 1) & (o->rcap - 1)] == NULL)
        o->rn--;
}

/* Room for `n` elements in the heap: pushes up to that count never fail
 * (the ring only takes what it has room for). */
static int oset_reserve(oset_t *o, size_t n)
{
    return heap_reserve(&o->h, n);
}

/* Never fails when room was reserved. `key` and `tie` must be what key_of
 * gives for x while it is in the set. */
static void oset_push(oset_t *o, void *x, double key, uint64_t tie)
{
    hent_t e = {key, tie, x};

    if ((!o->has_last || !hent_less(&e, &o->last)) && (o->rn < o->rcap || oset_regrow(o) == 0)) {
        size_t slot = (o->rhead + o->rn) & (o->rcap - 1);
        o->r[slot] = x;
        o->rn++;
        o->last = e;
        o->has_last = true;
        o->h.set_idx(x, OSET_FIFO | slot);
        return;
    }
    heap_push(&o->h, x, key, tie);
}

static void *oset_top(const oset_t *o)
{
    void *r = o->rn > 0 ? o->r[o->rhead] : NULL;
    hent_t e;

    if (r == NULL || o->h.n == 0)
        return r != NULL ? r : heap_top(&o->h);
    o->key_of(r, &e);
    return hent_less(&e, &o->h.a[0]) ? r : o->h.a[0].p;
}

/* Removes the element at index i (as set_idx gave it). */
static void oset_remove(oset_t *o, size_t i)
{
    if (i & OSET_FIFO) {
        void **slot = &o->r[i & ~(size_t)OSET_FIFO];
        o->h.set_idx(*slot, IDX_NONE);
        *slot = NULL;
        oset_trim(o);
    } else {
        heap_remove(&o->h, i);
    }
}

static void oset_free(oset_t *o)
{
    free(o->h.a);
    free(o->r);
}

static void wait_push(sched_t *s, sched_job_t *j)
{
    oset_push(&s->waiting, j, j->due, j->id);
}

static sched_job_t *wait_top(const sched_t *s)
{
    return oset_top(&s->waiting);
}

static void wait_remove(sched_t *s, sched_job_t *j)
{
    oset_remove(&s->waiting, j->wait_idx_);
}

static void job_due_key(const void *p, hent_t *e)
{
    e->key = ((const sched_job_t *)p)->due;
    e->tie = ((const sched_job_t *)p)->id;
}

static void job_expiry_key(const void *p, hent_t *e)
{
    e->key = ((const sched_job_t *)p)->expires_at;
    e->tie = ((const sched_job_t *)p)->id;
}

static void pair_wake_key(const void *p, hent_t *e)
{
    e->key = ((const sched_pair_t *)p)->wake;
    e->tie = 0;
}

static void exp_set_idx(void *p, size_t i)
{
    ((sched_job_t *)p)->exp_idx_ = (uint32_t)i;
}

static void sender_set_idx(void *p, size_t i)
{
    ((sched_sender_t *)p)->heap_idx = i == IDX_NONE ? (size_t)-1 : i;
}

static void sender_idle_set_idx(void *p, size_t i)
{
    ((sched_sender_t *)p)->idle_idx = i == IDX_NONE ? (size_t)-1 : i;
}

static void pair_set_idx(void *p, size_t i)
{
    ((sched_pair_t *)p)->heap_idx = (uint32_t)i;
}

/* --- the job table ------------------------------------------------------ */

/* Home slot of a job id. Ids come from one counter, so the jobs of a burst
 * have consecutive ids: four of them (an aligned group) share a 64-byte
 * line of slots (table_alloc aligns the table), and a burst's inserts and
 * lookups miss the cache once per four jobs instead of once per job. The
 * groups are scattered by mix64, so ids far apart (or any stride of them)
 * do not crowd one part of the table. */
static size_t jobs_home(uint64_t id, size_t cap)
{
    return (size_t)((mix64(id >> 2) << 2) | (id & 3)) & (cap - 1);
}

static int jobs_grow(sched_t *s)
{
    size_t cap = s->jobs_cap ? s->jobs_cap * 2 : 1024;
    jslot_t *t, *old = s->jobs;
    size_t i;

    /* Rehash at the same size when tombstones, not jobs, fill the table. */
    if (s->jobs_n * 4 < s->jobs_cap)
        cap = s->jobs_cap;
    t = table_alloc(cap, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (i = 0; i < s->jobs_cap; i++) {
        sched_job_t *j = old[i].job;
        size_t k;
        if (j == NULL || j == TOMBSTONE)
            continue;
        for (k = jobs_home(j->id, cap); t[k].job; k = (k + 1) & (cap - 1))
            ;
        t[k].id = j->id;
        t[k].job = j;
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
        return (size_t)-1;
    for (k = jobs_home(id, s->jobs_cap); s->jobs[k].job; k = (k + 1) & (s->jobs_cap - 1))
        if (s->jobs[k].id == id && s->jobs[k].job != TOMBSTONE)
            return k;
    return (size_t)-1;
}

/* At most half full (jobs and tombstones): short probe runs. */
static int jobs_reserve(sched_t *s)
{
    if ((s->jobs_used + 1) * 2 >= s->jobs_cap)
        return jobs_grow(s);
    return 0;
}

static void jobs_insert(sched_t *s, sched_job_t *j)
{
    size_t k;

    for (k = jobs_home(j->id, s->jobs_cap); s->jobs[k].job && s->jobs[k].job != TOMBSTONE;
         k = (k + 1) & (s->jobs_cap - 1))
        ;
    if (s->jobs[k].job == NULL)
        s->jobs_used++;
    s->jobs[k].id = j->id;
    s->jobs[k].job = j;
    s->jobs_n++;
}

static void jobs_delete(sched_t *s, uint64_t id)
{
    size_t k = jobs_slot(s, id);

    if (k != (size_t)-1) {
        s->jobs[k].job = TOMBSTONE;
        s->jobs_n--;
    }
}

/* --- buckets ------------------------------------------------------------- */

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

/* The window (not the bucket) holds a sender back until `until`. */
static void bucket_window_hold(bucket_t *b, double until)
{
    b->held = until;
}

/* The window let a sender held back by it go: the bucket keeps at most the
 * one token for this send of what it gained while the window held. Kept,
 * they went at the window's edge all at once, and with a backlog that edge
 * came back every window: a sender at `rate` with a full bucket sent its
 * whole rate within a few ms each 1.01 s instead of one send per 1/rate
 * (a transactional message queued behind a campaign waited up to a second
 * for the next edge). The burst is for a sender that was idle: the tokens
 * gained after the release (an idle spell since) are kept. The caller has
 * refilled the bucket up to now. */
static void bucket_window_release(bucket_t *b, double now)
{
    double at = b->held < now ? b->held : now;

    if (b->held <= 0)
        return;
    b->held = 0;
    if (b->rate > 0)
        b->tokens = fmin(b->tokens, 1 + (now - at) * b->rate);
}

/* --- the departure window (scheduler.h: SCHED_RATE_WINDOW) ------------- */

/* Sends allowed per window at `rate`; 0: no window. */
static unsigned window_limit(double rate)
{
    if (rate <= 0 || rate > SCHED_WINDOW_RATE_MAX)
        return 0;
    return rate < 1 ? 1 : (unsigned)floor(rate);
}

/* Picks a window of `w` holds (at most cap). */
static unsigned window_n(const window_t *w)
{
    return w->next < w->cap ? (unsigned)w->next : w->cap;
}

/* Job j's pick number in full. The job keeps its low 32 bits (it has no
 * room for more); its pick is among the window's last cap, far fewer than
 * 2^32 picks back. */
static uint64_t window_seq(const window_t *w, const sched_job_t *j)
{
    return w->next - (uint32_t)((uint32_t)w->next - j->win_seq_);
}

/* Makes room for the departures of `limit` sends, keeping the most recent
 * ones. Without memory the window stays smaller, which only lets the bucket
 * alone decide (never blocks a sender for good). */
static void window_size(window_t *w, unsigned limit)
{
    unsigned i, keep = window_n(w);
    double *t;

    if (limit <= w->cap)
        return;
    t = malloc((size_t)limit * sizeof(*t));
    if (t == NULL)
        return;
    /* Picks older than the ones kept (a window grown by a reload) count as
     * departed long ago: they never hold a send back. */
    for (i = 0; i < limit; i++)
        t[i] = -INFINITY;
    for (i = 0; i < keep; i++) {
        uint64_t seq = w->next - keep + i;
        t[seq % limit] = w->t[seq % w->cap];
    }
    free(w->t);
    w->t = t;
    w->cap = limit;
}

/* A departure not known yet blocks the window until it is; its sender
 * looks again this much later. */
#define WINDOW_RECHECK 0.005

/* Earliest time >= now at which one more send stays within `limit` sends
 * per window. */
static double window_ready_at(const window_t *w, unsigned limit, double now)
{
    double kth;

    if (limit == 0 || limit > w->cap || window_n(w) < limit)
        return now;
    kth = w->t[(w->next - limit) % w->cap]; /* the limit-th most recent pick */
    if (kth == INFINITY)
        return now + WINDOW_RECHECK;
    return kth + SCHED_RATE_WINDOW > now ? kth + SCHED_RATE_WINDOW : now;
}

/* A pick of job j: its departure is pending. */
static void window_pick(window_t *w, sched_job_t *j)
{
    if (w->cap == 0)
        return;
    j->win_slot_ = true;
    w->t[w->next % w->cap] = INFINITY;
    j->win_seq_ = (uint32_t)w->next++;
    j->win_pending_ = true;
}

/* Job j's departure (or the end of its attempt) at `when`. */
static void window_depart(window_t *w, sched_job_t *j, double when)
{
    uint64_t seq;

    if (!j->win_pending_)
        return;
    j->win_pending_ = false;
    if (w->cap == 0)
        return;
    seq = window_seq(w, j);
    if (w->next - seq <= w->cap)
        w->t[seq % w->cap] = when;
}

/* The global window (gwindow_t); the rules are the sender window's. */
static unsigned gwin_n(const gwindow_t *w)
{
    return w->next < w->cap ? (unsigned)w->next : w->cap;
}

/* Sizes the window for `limit` sends (0: none), keeping the most recent
 * departures; without memory it stays as it is (the bucket still holds). */
static void gwin_size(gwindow_t *w, unsigned limit)
{
    unsigned i, keep = gwin_n(w);
    struct gw_entry *e;

    if (limit == w->cap)
        return;
    if (limit == 0) {
        free(w->e);
        memset(w, 0, sizeof(*w));
        return;
    }
    e = malloc((size_t)limit * sizeof(*e));
    if (e == NULL)
        return;
    for (i = 0; i < limit; i++)
        e[i] = (struct gw_entry){.id = 0, .t = -INFINITY};
    if (keep > limit)
        keep = limit;
    for (i = 0; i < keep; i++) {
        uint64_t seq = w->next - keep + i;
        e[seq % limit] = w->e[seq % w->cap];
    }
    free(w->e);
    w->e = e;
    w->cap = limit;
}

static double gwin_ready_at(const gwindow_t *w, double now)
{
    double kth;

    if (w->cap == 0 || gwin_n(w) < w->cap)
        return now;
    kth = w->e[w->next % w->cap].t; /* the cap-th most recent pick */
    if (kth == INFINITY)
        return now + WINDOW_RECHECK;
    return kth + SCHED_RATE_WINDOW > now ? kth + SCHED_RATE_WINDOW : now;
}

static void gwin_pick(gwindow_t *w, uint64_t id)
{
    if (w->cap == 0)
        return;
    w->e[w->next % w->cap] = (struct gw_entry){.id = id, .t = INFINITY};
    w->next++;
}

/* Job `id`'s latest pick: its departure at `when`. refine: only a later
 * time than the one known (sched_job_departed); else only a pending one. */
static void gwin_depart(gwindow_t *w, uint64_t id, double when, bool refine)
{
    unsigned i, n = gwin_n(w);

    for (i = 1; i <= n; i++) {
        struct gw_entry *e = &w->e[(w->next - i) % w->cap];
        if (e->id != id)
            continue;
        if (refine ? (e->t != INFINITY && when > e->t) : e->t == INFINITY)
            e->t = when;
        return;
    }
}

static void set_reason(char **dst, const char *reason)
{
    free(*dst);
    *dst = NULL;
    if (reason != NULL)
        *dst = strndup(reason, SCHED_REASON_MAX);
}

/* --- senders ------------------------------------------------------------- */

static double sender_max_rate(const sched_t *s, const char *id)
{
    return s->opt.rate_for ? s->opt.rate_for(id, s->opt.rate_user) : s->opt.rate_per_number;
}

/* Bucket depth at the current (adapted) rate: the configured burst, scaled
 * down with the rate so a throttled sender does not burst back into the
 * limit it just hit. */
static double sender_burst(const sched_t *s, const sched_sender_t *sd)
{
    double burst = s->opt.burst_per_number > 0 ? s->opt.burst_per_number : sd->max_rate;

    if (sd->max_rate > 0 && sd->bucket.rate < sd->max_rate)
        burst *= sd->bucket.rate / sd->max_rate;
    return burst < 1 ? 1 : burst;
}

static void sender_apply_rate(sched_t *s, sched_sender_t *sd)
{
    double max = sender_max_rate(s, sd->phone_number_id);

    if (max < 0)
        max = 0;
    /* A sender at its configured rate follows the new one; one slowed down
     * by throttles keeps its adapted rate, within the new maximum. */
    if (sd->bucket.rate <= 0 || sd->max_rate <= 0 || sd->bucket.rate >= sd->max_rate ||
        sd->bucket.rate > max || max <= 0)
        sd->bucket.rate = max;
    sd->max_rate = max;
    window_size(&sd->win, window_limit(max));
    sd->bucket.burst = sender_burst(s, sd);
    if (sd->bucket.tokens > sd->bucket.burst)
        sd->bucket.tokens = sd->bucket.burst;
}

static sched_sender_t *sender_find(const sched_t *s, const char *id)
{
    uint64_t h = hash_str(id);
    hnode_t *x;

    for (x = ht_first(&s->senders, h); x; x = x->hnext)
        if (x->hash == h && strcmp(((sched_sender_t *)x)->phone_number_id, id) == 0)
            return (sched_sender_t *)x;
    return NULL;
}

static sched_sender_t *sender_get(sched_t *s, const char *id)
{
    sched_sender_t *sd = sender_find(s, id);

    if (sd != NULL) {
        if (sd->idle_idx != (size_t)-1) /* in use again: not to be forgotten */
            heap_remove(&s->senderidle, sd->idle_idx);
        return sd;
    }
    if (ht_reserve(&s->senders) != 0 || heap_reserve(&s->sleeping, s->senders.n + 1) != 0 ||
        heap_reserve(&s->senderidle, s->senders.n + 1) != 0)
        return NULL;
    sd = calloc(1, sizeof(*sd));
    if (sd == NULL)
        return NULL;
    sd->phone_number_id = strdup(id);
    if (sd->phone_number_id == NULL) {
        free(sd);
        return NULL;
    }
    sd->h.hash = hash_str(id);
    sd->heap_idx = (size_t)-1;
    sd->idle_idx = (size_t)-1;
    sender_apply_rate(s, sd);
    sd->bucket.tokens = sd->bucket.burst;
    sd->bucket.last = -1;
    sd->last_cut = -INFINITY;
    ht_insert(&s->senders, &sd->h);
    return sd;
}

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

static void ring_push_front(sched_t *s, sched_sender_t *sd)
{
    sd->state = SENDER_RING;
    sd->ring_next = s->ring_head;
    s->ring_head = sd;
    if (s->ring_tail == NULL)
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
    if (sd->state == SENDER_IDLE && sd->n_ready > 0 && !sd->paused)
        ring_push(s, sd);
}

static void sender_sleep(sched_t *s, sched_sender_t *sd, double until)
{
    if (sd->state == SENDER_SLEEP) {
        if (until > sd->wake) {
            sd->wake = until;
            heap_rekey_later(&s->sleeping, sd->heap_idx, until);
        }
        return;
    }
    sd->state = SENDER_SLEEP;
    sd->wake = until;
    heap_push(&s->sleeping, sd, until, 0); /* reserved: one slot per sender */
}

static void free_sender_node(hnode_t *x);

static void sender_free(sched_t *s, sched_sender_t *sd)
{
    if (sd->idle_idx != (size_t)-1)
        heap_remove(&s->senderidle, sd->idle_idx);
    if (sd->state == SENDER_SLEEP && sd->heap_idx != (size_t)-1)
        heap_remove(&s->sleeping, sd->heap_idx);
    ht_remove(&s->senders, &sd->h);
    free_sender_node(&sd->h);
}

static bool sender_unused(const sched_sender_t *sd)
{
    return sd->n_jobs == 0 && sd->inflight == 0 && sd->n_pairs == 0 && !sd->paused &&
           sd->state != SENDER_RING && sd->state != SENDER_CAPPED;
}

/*
 * A sender nothing refers to any more (no job, no pair entry, no pause) is
 * forgotten once a new entry would behave the same: its bucket full, its
 * departure window empty, its hold over, and a rate it adapted down after
 * throttles remembered for SCHED_SENDER_ADAPT_MEMORY. Until then it waits
 * in the idle heap; advance() frees it (never here: callers may still hold
 * it). Without this, every phoneNumberId ever seen would stay in memory.
 */
static void sender_maybe_idle(sched_t *s, sched_sender_t *sd)
{
    double keep = s->now;
    unsigned i, n;

    if (!sender_unused(sd))
        return;
    bucket_refill(&sd->bucket, s->now);
    if (sd->bucket.rate > 0 && sd->bucket.tokens < sd->bucket.burst)
        keep = s->now + (sd->bucket.burst - sd->bucket.tokens) / sd->bucket.rate;
    n = window_n(&sd->win);
    for (i = 0; i < n; i++) {
        double t = sd->win.t[i];
        if (t == INFINITY)
            return; /* cannot happen without a job in flight */
        if (t + SCHED_RATE_WINDOW > keep)
            keep = t + SCHED_RATE_WINDOW;
    }
    if (sd->hold_until > keep)
        keep = sd->hold_until;
    if (sd->max_rate > 0 && sd->bucket.rate < sd->max_rate &&
        s->now + SCHED_SENDER_ADAPT_MEMORY > keep)
        keep = s->now + SCHED_SENDER_ADAPT_MEMORY;
    if (sd->state == SENDER_SLEEP && sd->wake > keep)
        keep = sd->wake;
    if (sd->idle_idx != (size_t)-1)
        heap_remove(&s->senderidle, sd->idle_idx);
    sd->forget_at = keep;
    heap_push(&s->senderidle, sd, keep, 0); /* reserved: one slot per sender */
}

/* --- campaigns ------------------------------------------------------------ */

static sched_campaign_t *camp_find(const sched_t *s, const char *name)
{
    uint64_t h;
    hnode_t *x;

    if (name == NULL)
        return (sched_campaign_t *)&s->none;
    h = hash_str(name);
    for (x = ht_first(&s->campaigns, h); x; x = x->hnext)
        if (x->hash == h && strcmp(((sched_campaign_t *)x)->name, name) == 0)
            return (sched_campaign_t *)x;
    return NULL;
}

static void camp_idle_unlink(sched_t *s, sched_campaign_t *c)
{
    if (!c->idle)
        return;
    if (c->iprev)
        c->iprev->inext = c->inext;
    else
        s->idle_head = c->inext;
    if (c->inext)
        c->inext->iprev = c->iprev;
    else
        s->idle_tail = c->iprev;
    c->inext = c->iprev = NULL;
    c->idle = false;
}

static sched_campaign_t *camp_get(sched_t *s, const char *name)
{
    sched_campaign_t *c = camp_find(s, name);

    if (c != NULL)
        return c;
    if (ht_reserve(&s->campaigns) != 0)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->name = strdup(name);
    if (c->name == NULL) {
        free(c);
        return NULL;
    }
    c->h.hash = hash_str(name);
    ht_insert(&s->campaigns, &c->h);
    return c;
}

static void camp_free(sched_t *s, sched_campaign_t *c)
{
    camp_idle_unlink(s, c);
    ht_remove(&s->campaigns, &c->h);
    free(c->name);
    free(c);
}

/* A campaign without jobs, pause or recent sends is forgotten; until its
 * rate window has passed it waits on the idle list. */
static void camp_maybe_idle(sched_t *s, sched_campaign_t *c)
{
    if (c == &s->none || c->refs > 0 || c->paused || c->holds > 0 || c->idle)
        return;
    c->idle = true;
    c->idle_since = s->now;
    c->inext = NULL;
    c->iprev = s->idle_tail;
    if (s->idle_tail)
        s->idle_tail->inext = c;
    else
        s->idle_head = c;
    s->idle_tail = c;
}

static void camp_sweep(sched_t *s, double now)
{
    while (s->idle_head && s->idle_head->idle_since + RATE_WINDOW + 1 <= now)
        camp_free(s, s->idle_head);
}

static void camp_count_send(sched_campaign_t *c, double now)
{
    int64_t no = (int64_t)floor(now / RATE_SLOT);
    size_t i = (size_t)(no % RATE_SLOTS + RATE_SLOTS) % RATE_SLOTS;

    if (c->slot_no[i] != no) {
        c->slot_no[i] = no;
        c->slot_n[i] = 0;
    }
    c->slot_n[i]++;
    if (c->last_send == 0 || now - c->last_send >= RATE_WINDOW)
        c->run_start = now;
    c->last_send = now;
}

/* --- lanes ---------------------------------------------------------------- */

static uint64_t lane_hash(const sched_sender_t *sd, const sched_campaign_t *c, int prio)
{
    return hash_ptrs(sd, c, (uint64_t)prio);
}

static sched_lane_t *lane_get(sched_t *s, sched_sender_t *sd, sched_campaign_t *c, int prio)
{
    uint64_t h = lane_hash(sd, c, prio);
    sched_lane_t *l;
    hnode_t *x;

    for (x = ht_first(&s->lanes, h); x; x = x->hnext) {
        l = (sched_lane_t *)x;
        if (l->sender == sd && l->camp == c && l->prio == prio)
            return l;
    }
    if (ht_reserve(&s->lanes) != 0)
        return NULL;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->h.hash = h;
    l->sender = sd;
    l->camp = c;
    l->prio = prio;
    l->cnext = c->lanes;
    if (c->lanes)
        c->lanes->cprev = l;
    c->lanes = l;
    ht_insert(&s->lanes, &l->h);
    return l;
}

static void lane_ring_add(sched_lane_t *l)
{
    sched_sender_t *sd = l->sender;

    l->in_ring = true;
    l->rnext = NULL;
    l->rprev = sd->ring[l->prio].tail;
    if (sd->ring[l->prio].tail)
        sd->ring[l->prio].tail->rnext = l;
    else
        sd->ring[l->prio].head = l;
    sd->ring[l->prio].tail = l;
    sd->n_ready += l->n;
}

static void lane_ring_del(sched_lane_t *l)
{
    sched_sender_t *sd = l->sender;

    if (!l->in_ring)
        return;
    if (l->rprev)
        l->rprev->rnext = l->rnext;
    else
        sd->ring[l->prio].head = l->rnext;
    if (l->rnext)
        l->rnext->rprev = l->rprev;
    else
        sd->ring[l->prio].tail = l->rprev;
    l->rnext = l->rprev = NULL;
    l->in_ring = false;
    sd->n_ready -= l->n;
}

static void lane_free(sched_t *s, sched_lane_t *l)
{
    lane_ring_del(l);
    if (l->cprev)
        l->cprev->cnext = l->cnext;
    else
        l->camp->lanes = l->cnext;
    if (l->cnext)
        l->cnext->cprev = l->cprev;
    ht_remove(&s->lanes, &l->h);
    free(l);
}

/* --- pairs ---------------------------------------------------------------- */

static sched_pair_t *pair_get(sched_t *s, sched_sender_t *sd, uint64_t rcpt)
{
    uint64_t h = hash_ptrs(sd, NULL, rcpt);
    sched_pair_t *p;
    hnode_t *x;

    for (x = ht_first(&s->pairs, h); x; x = x->hnext) {
        p = (sched_pair_t *)x;
        if (p->sender == sd && p->rcpt == rcpt)
            return p;
    }
    if (ht_reserve(&s->pairs) != 0 || heap_reserve(&s->pairq, s->pairs.n + 1) != 0 ||
        oset_reserve(&s->pairidle, s->pairs.n + 1) != 0)
        return NULL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->h.hash = h;
    p->sender = sd;
    sd->n_pairs++;
    p->rcpt = rcpt;
    p->tokens = s->opt.pair_burst;
    p->rest = 1; /* rested */
    p->last = -1;
    p->burst_start = -INFINITY;
    p->heap_idx = IDX_NONE;
    ht_insert(&s->pairs, &p->h);
    return p;
}

static void pair_heap_del(sched_t *s, sched_pair_t *p)
{
    if (p->heap == PH_NONE)
        return;
    if (p->heap == PH_IDLE) {
        s->idle_pairs--;
        oset_remove(&s->pairidle, p->heap_idx);
    } else {
        heap_remove(&s->pairq, p->heap_idx);
    }
    p->heap = PH_NONE;
}

/* Both heaps have one slot per pair reserved: pushes never fail. */
static void pair_heap_put(sched_t *s, sched_pair_t *p, int which, double wake)
{
    pair_heap_del(s, p);
    p->heap = which;
    p->wake = wake;
    if (which == PH_IDLE) {
        s->idle_pairs++;
        oset_push(&s->pairidle, p, wake, 0);
    } else {
        heap_push(&s->pairq, p, wake, 0);
    }
}

static void pair_free(sched_t *s, sched_pair_t *p)
{
    sched_sender_t *sd = p->sender;

    pair_heap_del(s, p);
    ht_remove(&s->pairs, &p->h);
    free(p);
    if (--sd->n_pairs == 0)
        sender_maybe_idle(s, sd);
}

static bool pacing(const sched_t *s)
{
    return s->opt.pair_interval > 0;
}

static void pair_refill(const sched_t *s, sched_pair_t *p, double now)
{
    double add;

    if (!pacing(s))
        return;
    if (p->last < 0 || now < p->last) {
        p->last = now;
        return;
    }
    add = (now - p->last) / s->opt.pair_interval;
    p->tokens = fmin(p->tokens + add, s->opt.pair_burst);
    p->rest = fmin(p->rest + add, 1);
    p->last = now;
}

/* How long a burst may go on after its first send: Meta allows a burst
 * within one interval; half of it leaves the requests' delays between here
 * and Meta (which counts when they arrive) room to vary. */
static double pair_burst_span(const sched_t *s)
{
    return s->opt.pair_interval / 2;
}

/* Whether `now` is within the current burst's span. */
static bool pair_in_burst(const sched_t *s, const sched_pair_t *p, double now)
{
    return now >= p->burst_start && now < p->burst_start + pair_burst_span(s);
}

/*
 * Meta's pair limit (whatsapp-limits.md): one message per interval on
 * average; a burst of up to pair_burst within one interval is allowed but
 * borrows from the future - a burst of n leaves the pair rested again n
 * intervals after it began (a burst of 20 at 6 s: two minutes). So a send
 * may go when the pair is rested (`rest`, one per interval up to one, a
 * whole one: it starts a burst), or within the current burst's span while
 * the burst has room; each send takes one of `rest`, which goes as far
 * below zero as the burst borrowed (a plain bucket as deep as the burst
 * allowed a second burst right after the first, which Meta answers with
 * 131056). And each takes one of `tokens`, a bucket pair_burst deep, which
 * a pair-limit hold empties (sched_pair_limited): after a hold the pair
 * goes one per interval while it fills, not in a burst. How many may go at
 * `now`, after pair_refill; unlimited without pacing.
 */
#define PAIR_EPS 1e-4      /* of a count: unix-time rounding of a wake, at small intervals */
#define PAIR_MIN_STEP 1e-5 /* s: a wake is at least this far ahead */

static double pair_allowance(const sched_t *s, const sched_pair_t *p, double now)
{
    double by_rest, by_bucket;

    if (!pacing(s))
        return INFINITY;
    /* PAIR_EPS: a wake computed for the time a count reaches one must
     * find it there, float rounding notwithstanding. */
    if (pair_in_burst(s, p, now))
        by_rest = p->burst_n < s->opt.pair_burst ? (double)(s->opt.pair_burst - p->burst_n) : 0;
    else
        by_rest = p->rest >= 1 - PAIR_EPS ? (double)s->opt.pair_burst : 0;
    by_bucket = floor(p->tokens + PAIR_EPS);
    return by_bucket < by_rest ? by_bucket : by_rest;
}

/* A send of the pair at `now` (its allowance was > 0). */
static void pair_take(const sched_t *s, sched_pair_t *p, double now)
{
    if (!pacing(s))
        return;
    if (pair_in_burst(s, p, now)) {
        p->burst_n++;
    } else {
        p->burst_start = now;
        p->burst_n = 1;
    }
    p->tokens -= 1;
    p->rest -= 1;
}

/* When the pair may send one more (now if it may). */
static double pair_ready_at(const sched_t *s, const sched_pair_t *p, double now)
{
    double t = now;

    if (pacing(s) && pair_allowance(s, p, now) < 1) {
        double rested = now + fmax(0, 1 - p->rest) * s->opt.pair_interval;
        double filled = now + fmax(0, 1 - p->tokens) * s->opt.pair_interval;

        /* A burst's span that lies ahead (a pair-limit hold's end) opens
         * before the pair is rested. */
        if (p->burst_start > now && p->burst_start < rested)
            rested = p->burst_start;
        /* Never `now` itself: a count a hair short of one (0.9999999)
         * gives a wake that rounds to now (unix seconds hold 0.24 µs at
         * best), and the wake loop would find the pair unready for ever. */
        t = fmax(fmax(rested, filled), now + PAIR_MIN_STEP);
    }
    return p->hold_until > t ? p->hold_until : t;
}

/* A pair without jobs: forgotten at once when a new entry would behave the
 * same (full bucket, no hold, no strikes), else when it gets there; past
 * SCHED_IDLE_PAIRS_MAX the closest to full is forgotten early. */
static void pair_maybe_idle(sched_t *s, sched_pair_t *p)
{
    double full_at = s->now, keep;

    if (p->refs > 0 || p->park_head != NULL)
        return;
    pair_refill(s, p, s->now);
    if (pacing(s)) {
        full_at = fmax(full_at, s->now + (s->opt.pair_burst - p->tokens) * s->opt.pair_interval);
        full_at = fmax(full_at, s->now + (1 - p->rest) * s->opt.pair_interval);
        full_at = fmax(full_at, p->burst_start + pair_burst_span(s));
    }
    keep = full_at;
    if (p->strikes > 0) {
        double strike_memory = p->hold_until + pow(4.0, p->strikes);
        if (strike_memory > keep)
            keep = strike_memory;
    } else if (p->hold_until > keep) {
        keep = p->hold_until;
    }
    if (keep <= s->now) {
        pair_free(s, p);
        return;
    }
    pair_heap_put(s, p, PH_IDLE, keep);
    while (s->idle_pairs > SCHED_IDLE_PAIRS_MAX)
        pair_free(s, oset_top(&s->pairidle));
}

/* --- order keys ------------------------------------------------------------- */

static sched_okey_t *okey_find(const sched_t *s, uint64_t h)
{
    hnode_t *x;

    for (x = ht_first(&s->okeys, h); x; x = x->hnext)
        if (x->hash == h)
            return (sched_okey_t *)x;
    return NULL;
}

/* Inserts j into its key's list by id, searching from both ends: new jobs
 * go to the tail, refilled older ones usually to the head. */
static void okey_insert(sched_okey_t *k, sched_job_t *j)
{
    sched_job_t *a = k->head, *b = k->tail;

    if (b == NULL) {
        k->head = k->tail = j;
        j->kprev_ = j->knext_ = NULL;
        return;
    }
    if (j->id > b->id) {
        j->kprev_ = b;
        j->knext_ = NULL;
        b->knext_ = j;
        k->tail = j;
        return;
    }
    if (j->id < a->id) {
        j->knext_ = a;
        j->kprev_ = NULL;
        a->kprev_ = j;
        k->head = j;
        return;
    }
    /* Somewhere inside: walk inwards from both ends. head->id < j->id <
     * tail->id, so each walk meets j's place before it runs off its end. */
    for (;;) {
        if (a->knext_ && a->knext_->id > j->id) { /* NOLINT(clang-analyzer-core.NullDereference) */
            j->kprev_ = a;
            j->knext_ = a->knext_;
            break;
        }
        if (b->kprev_ && b->kprev_->id < j->id) { /* NOLINT(clang-analyzer-core.NullDereference) */
            j->knext_ = b;
            j->kprev_ = b->kprev_;
            break;
        }
        a = a->knext_;
        b = b->kprev_;
    }
    j->kprev_->knext_ = j;
    j->knext_->kprev_ = j;
}

static void okey_unlink(sched_okey_t *k, sched_job_t *j)
{
    if (j->kprev_)
        j->kprev_->knext_ = j->knext_;
    else
        k->head = j->knext_;
    if (j->knext_)
        j->knext_->kprev_ = j->kprev_;
    else
        k->tail = j->kprev_;
    j->knext_ = j->kprev_ = NULL;
}

/* --- moving jobs between places ------------------------------------------- */

static bool job_is_first(const sched_job_t *j)
{
    return j->okey_ == NULL || (j->okey_->head == j && j->okey_->inflight == 0);
}

/* Links j into the list head..tail (by next_/prev_) after `after` (NULL:
 * first). */
static void list_insert_after(sched_job_t **head, sched_job_t **tail, sched_job_t *after,
                              sched_job_t *j)
{
    j->prev_ = after;
    j->next_ = after != NULL ? after->next_ : *head;
    if (j->next_ != NULL)
        j->next_->prev_ = j;
    else
        *tail = j;
    if (after != NULL)
        after->next_ = j;
    else
        *head = j;
}

/* Adds ready job j to its lane: at the end (the order jobs became due),
 * or, for a late job (it had its turn already: a retry whose wait ended, a
 * job picked and given back or parked by its pair after its pick; or it
 * was due while an earlier job of its key held it) when a later job of the
 * lane is ready, after the other late jobs, before the rest: its wait is
 * the one its answer asked for, or its key's. At the end, a retry due after
 * a 1 s hold went after every job of its lane that had become due
 * meanwhile: behind a campaign of 1,200 jobs, 39 s later; and then each
 * later job of its key after the whole lane again. */
static void lane_append(sched_t *s, sched_lane_t *l, sched_job_t *j)
{
    sched_job_t *after = l->tail;

    if (j->late_ && after != NULL && after->id > j->id) {
        after = l->late;
        l->late = j;
    }
    list_insert_after(&l->head, &l->tail, after, j);
    l->n++;
    j->lane_ = l;
    if (l->in_ring) {
        l->sender->n_ready++;
    } else if (!camp_stopped(l->camp)) {
        lane_ring_add(l);
    }
}

/* j is in a lane (j->lane_ set). */
static void lane_unlink(sched_t *s, sched_job_t *j)
{
    sched_lane_t *l = j->lane_;

    if (l->late == j) /* NOLINT(clang-analyzer-core.NullDereference): in a lane */
        l->late = j->prev_;
    if (j->prev_)
        j->prev_->next_ = j->next_;
    else
        l->head = j->next_; /* NOLINT(clang-analyzer-core.NullDereference): in a lane */
    if (j->next_)
        j->next_->prev_ = j->prev_;
    else
        l->tail = j->prev_;
    j->next_ = j->prev_ = NULL;
    j->lane_ = NULL;
    l->n--;
    if (l->in_ring)
        l->sender->n_ready--;
    if (l->n == 0)
        lane_free(s, l);
}

static void pair_unpark(sched_pair_t *p, sched_job_t *j)
{
    if (j->prev_)
        j->prev_->next_ = j->next_;
    else
        p->park_head = j->next_;
    if (j->next_)
        j->next_->prev_ = j->prev_;
    else
        p->park_tail = j->prev_;
    j->next_ = j->prev_ = NULL;
}

/* A due job (W_KEYWAIT) becomes ready if it is first of its key. */
static void job_try_ready(sched_t *s, sched_job_t *j)
{
    sched_lane_t *l;

    if (j->where_ != W_KEYWAIT)
        return;
    if (!job_is_first(j)) {
        j->late_ = true; /* due, held by its key */
        return;
    }
    l = lane_get(s, j->sender, j->camp_, j->priority);
    if (l == NULL)
        return; /* no memory: it stays due and is retried at the next promote */
    j->where_ = W_READY;
    lane_append(s, l, j);
    sender_wake_if_idle(s, j->sender);
}

/* Takes a ready or pair-parked job back to W_KEYWAIT. */
static void job_unready(sched_t *s, sched_job_t *j)
{
    if (j->where_ == W_READY)
        lane_unlink(s, j);
    else if (j->where_ == W_PAIRWAIT)
        pair_unpark(j->pair_, j);
    else
        return;
    j->where_ = W_KEYWAIT;
}

/* Parks j in id order (submission order): a job released and parked again
 * (its pick came after the allowance it was released for) goes back before
 * the later ones instead of behind them all. New jobs have the largest ids:
 * the walk from the tail is short. */
static void pair_park(sched_t *s, sched_pair_t *p, sched_job_t *j, double now)
{
    sched_job_t *after = p->park_tail;

    while (after != NULL && after->id > j->id)
        after = after->prev_;
    j->late_ = true; /* it was picked: back before the jobs due after it */
    j->where_ = W_PAIRWAIT;
    list_insert_after(&p->park_head, &p->park_tail, after, j);
    if (p->heap != PH_WAKE)
        pair_heap_put(s, p, PH_WAKE, pair_ready_at(s, p, now));
}

/* When the pair may send again once `n` more sends are taken at `now`. */
static double pair_ready_after(const sched_t *s, const sched_pair_t *p, double now, double n)
{
    double short_of = fmax(fmax(0, 1 - (p->rest - n)), fmax(0, 1 - (p->tokens - n)));

    return fmax(now + short_of * s->opt.pair_interval, p->hold_until);
}

/* The pair's wake time came: release as many parked jobs as it may send
 * now back to their lanes, in order; the others wait until it may send
 * again after those (a burst leaves it in debt for as many intervals). */
static void pair_release(sched_t *s, sched_pair_t *p, double now)
{
    double n, released = 0;

    pair_heap_del(s, p);
    pair_refill(s, p, now);
    n = p->hold_until > now ? 0 : pair_allowance(s, p, now);
    while (p->park_head != NULL && released < n) {
        sched_job_t *j = p->park_head;
        pair_unpark(p, j);
        j->where_ = W_KEYWAIT;
        job_try_ready(s, j);
        released += 1;
    }
    if (p->park_head != NULL)
        pair_heap_put(s, p, PH_WAKE,
                      released > 0 ? pair_ready_after(s, p, now, released)
                                   : pair_ready_at(s, p, now));
}

/* --- public: life cycle ----------------------------------------------------- */

static void opt_fix(sched_options_t *o)
{
    if (o->max_inflight == 0)
        o->max_inflight = 256;
    if (o->max_inflight_per_number == 0)
        o->max_inflight_per_number = 64;
    if (o->max_jobs == 0)
        o->max_jobs = 100000;
    if (o->pair_interval < 0)
        o->pair_interval = 0;
    if (o->pair_burst < 1)
        o->pair_burst = 1;
}

static void global_apply(sched_t *s)
{
    s->global.rate = s->opt.global_rate;
    s->global.burst = s->opt.global_rate > 1 ? s->opt.global_rate : 1;
    if (s->global.tokens > s->global.burst)
        s->global.tokens = s->global.burst;
    gwin_size(&s->gwin, window_limit(s->global.rate));
}

int sched_new(const sched_options_t *opt, sched_t **out)
{
    sched_t *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (s == NULL)
        return -ENOMEM;
    s->opt = *opt;
    opt_fix(&s->opt);
    s->waiting.h.set_idx = job_set_idx;
    s->waiting.key_of = job_due_key;
    s->expiry.h.set_idx = exp_set_idx;
    s->expiry.key_of = job_expiry_key;
    s->sleeping.set_idx = sender_set_idx;
    s->pairq.set_idx = pair_set_idx;
    s->pairidle.h.set_idx = pair_set_idx;
    s->pairidle.key_of = pair_wake_key;
    s->senderidle.set_idx = sender_idle_set_idx;
    s->global.tokens = s->opt.global_rate > 1 ? s->opt.global_rate : 1;
    s->global.last = -1;
    global_apply(s);
    *out = s;
    return 0;
}

static void htab_free_all(htab_t *t, void (*fn)(hnode_t *))
{
    size_t i;

    for (i = 0; i < t->cap; i++) {
        hnode_t *x = t->b[i], *next;
        for (; x; x = next) {
            next = x->hnext;
            fn(x);
        }
    }
    free(t->b);
}

static void free_sender_node(hnode_t *x)
{
    sched_sender_t *sd = (sched_sender_t *)x;
    free(sd->phone_number_id);
    free(sd->win.t);
    free(sd->reason);
    free(sd->hold_reason);
    free(sd);
}

static void free_campaign_node(hnode_t *x)
{
    free(((sched_campaign_t *)x)->name);
    free(x);
}

static void free_plain_node(hnode_t *x)
{
    free(x);
}

void sched_free(sched_t *s)
{
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; i < s->jobs_cap; i++)
        if (s->jobs[i].job && s->jobs[i].job != TOMBSTONE)
            free(s->jobs[i].job);
    free(s->jobs);
    htab_free_all(&s->lanes, free_plain_node);
    htab_free_all(&s->pairs, free_plain_node);
    htab_free_all(&s->okeys, free_plain_node);
    htab_free_all(&s->campaigns, free_campaign_node);
    htab_free_all(&s->senders, free_sender_node);
    free(s->account_reason);
    free(s->gwin.e);
    oset_free(&s->waiting);
    oset_free(&s->expiry);
    free(s->sleeping.a);
    free(s->pairq.a);
    oset_free(&s->pairidle);
    free(s->senderidle.a);
    free(s);
}

void sched_reconfigure(sched_t *s, const sched_options_t *opt)
{
    size_t i;

    s->opt = *opt;
    opt_fix(&s->opt);
    for (i = 0; i < s->senders.cap; i++) {
        hnode_t *x;
        for (x = s->senders.b[i]; x; x = x->hnext) {
            sched_sender_t *sd = (sched_sender_t *)x;
            sender_apply_rate(s, sd);
            /* Capped senders may send again under a larger cap. */
            if (sd->state == SENDER_CAPPED && sd->inflight < s->opt.max_inflight_per_number) {
                sd->state = SENDER_IDLE;
                sender_wake_if_idle(s, sd);
            }
        }
    }
    for (i = 0; i < s->pairs.cap; i++) {
        hnode_t *x;
        for (x = s->pairs.b[i]; x; x = x->hnext) {
            sched_pair_t *p = (sched_pair_t *)x;
            if (p->tokens > s->opt.pair_burst)
                p->tokens = s->opt.pair_burst;
            if (p->burst_n > s->opt.pair_burst)
                p->burst_n = (unsigned)s->opt.pair_burst;
            /* A parked pair's wake was set by the old pace (up to
             * pair_burst of its intervals ahead). */
            if (p->heap == PH_WAKE) {
                pair_refill(s, p, s->now);
                pair_heap_put(s, p, PH_WAKE, pair_ready_at(s, p, s->now));
            }
        }
    }
    global_apply(s);
}

bool sched_has_room(const sched_t *s)
{
    return s->jobs_n < s->opt.max_jobs;
}

bool sched_contains(const sched_t *s, uint64_t id)
{
    return jobs_slot(s, id) != (size_t)-1;
}

sched_job_t *sched_job_find(const sched_t *s, uint64_t id)
{
    size_t k = jobs_slot(s, id);
    return k == (size_t)-1 ? NULL : s->jobs[k].job;
}

uint64_t sched_order_last_id(const sched_t *s, const char *order_key)
{
    const sched_okey_t *k;

    if (order_key == NULL)
        return 0;
    k = okey_find(s, hash_str(order_key));
    return k && k->tail ? k->tail->id : 0;
}

int sched_job_add(sched_t *s, const sched_job_t *tmpl, const sched_keys_t *keys)
{
    sched_sender_t *sd;
    sched_campaign_t *c;
    sched_okey_t *k = NULL;
    sched_pair_t *p = NULL;
    sched_job_t *j;
    uint64_t kh = 0;

    if (keys == NULL || keys->phone_number_id == NULL)
        return -EINVAL;
    if (sched_contains(s, tmpl->id))
        return -EEXIST;
    if (!sched_has_room(s))
        return -ENOSPC;
    /* Everything that can fail comes first, so a failure leaves no trace
     * but interned objects, which are shared and freed by their own rules. */
    if (jobs_reserve(s) != 0 || oset_reserve(&s->waiting, s->jobs_n + 1) != 0 ||
        oset_reserve(&s->expiry, s->jobs_n + 1) != 0 || ht_reserve(&s->okeys) != 0)
        return -ENOMEM;
    sd = sender_get(s, keys->phone_number_id);
    c = sd ? camp_get(s, keys->campaign) : NULL;
    if (c == NULL) {
        if (sd != NULL)
            sender_maybe_idle(s, sd);
        return -ENOMEM;
    }
    if (keys->to != NULL) {
        p = pair_get(s, sd, hash_digits(keys->to));
        if (p == NULL) {
            camp_maybe_idle(s, c);
            sender_maybe_idle(s, sd);
            return -ENOMEM;
        }
    }
    if (keys->order_key != NULL) {
        kh = hash_str(keys->order_key);
        k = okey_find(s, kh);
        if (k == NULL) {
            k = calloc(1, sizeof(*k));
            if (k == NULL)
                goto nomem;
            k->h.hash = kh;
            ht_insert(&s->okeys, &k->h);
        }
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        if (k != NULL && k->head == NULL) {
            ht_remove(&s->okeys, &k->h);
            free(k);
        }
        goto nomem;
    }
    j->id = tmpl->id;
    j->due = tmpl->due;
    j->expires_at = tmpl->expires_at;
    j->attempts = tmpl->attempts;
    j->late_ = tmpl->attempts > 0;
    j->max_attempts = tmpl->max_attempts;
    j->marks = tmpl->marks;
    j->type = tmpl->type;
    j->priority = tmpl->priority < NPRIO ? tmpl->priority : NPRIO - 1;
    j->sender = sd;
    j->camp_ = c;
    j->pair_ = p;
    j->okey_ = k;
    j->exp_idx_ = IDX_NONE;
    jobs_insert(s, j);
    sd->n_jobs++;
    c->refs++;
    camp_idle_unlink(s, c);
    if (p != NULL) {
        p->refs++;
        if (p->heap == PH_IDLE)
            pair_heap_del(s, p);
    }
    if (k != NULL) {
        sched_job_t *old = k->head;
        okey_insert(k, j);
        /* An older job came in (refill): the former first waits again. */
        if (old != NULL && k->head == j)
            job_unready(s, old);
    }
    j->where_ = W_WAITING;
    wait_push(s, j);
    if (j->expires_at > 0)
        oset_push(&s->expiry, j, j->expires_at, j->id);
    return 0;
nomem:
    camp_maybe_idle(s, c);
    if (p != NULL)
        pair_maybe_idle(s, p);
    sender_maybe_idle(s, sd);
    return -ENOMEM;
}

/* --- public: decisions -------------------------------------------------------- */

/* Takes the sender on top of the sleep heap out of its sleep. */
static void sender_wake(sched_t *s, sched_sender_t *sd)
{
    heap_remove(&s->sleeping, 0);
    sd->state = SENDER_IDLE;
    sender_wake_if_idle(s, sd);
}

/* The wall clock went back (a step, not a slew). Departures recorded in
 * the rate windows lie after now: they count as now, so a full window
 * holds its sender (or all sending) one window, not the size of the step;
 * and senders asleep until a window or a bucket allowed them look again
 * now (buckets restart at a step back, bucket_refill). Due times, holds and
 * pair pacing's wake times keep their wall-clock meaning (operations.md,
 * "The clock"). O(senders
 * and their windows), once per step. */
static void clock_went_back(sched_t *s, double now)
{
    sched_sender_t *sd;
    size_t i;
    unsigned k;

    for (i = 0; i < s->senders.cap; i++)
        for (hnode_t *x = s->senders.b[i]; x; x = x->hnext) {
            sd = (sched_sender_t *)x;
            for (k = 0; k < sd->win.cap; k++)
                if (sd->win.t[k] > now && sd->win.t[k] != INFINITY)
                    sd->win.t[k] = now;
            if (sd->last_cut > now) /* else no 429 would cut the rate until then */
                sd->last_cut = now;
        }
    for (k = 0; k < s->gwin.cap; k++)
        if (s->gwin.e[k].t > now && s->gwin.e[k].t != INFINITY)
            s->gwin.e[k].t = now;
    while ((sd = heap_top(&s->sleeping)) != NULL)
        sender_wake(s, sd);
    s->now = now;
}

/* Moves due jobs out of the waiting set, releases pairs and wakes senders. */
static void advance(sched_t *s, double now)
{
    sched_job_t *j;
    sched_sender_t *sd;
    sched_pair_t *p;

    if (now > s->now)
        s->now = now;
    if (now < s->now - 1.0)
        clock_went_back(s, now);
    while ((j = wait_top(s)) != NULL && j->due <= now) {
        wait_remove(s, j);
        j->where_ = W_KEYWAIT;
        job_try_ready(s, j);
    }
    while ((p = heap_top(&s->pairq)) != NULL && p->wake <= now)
        pair_release(s, p, now);
    while ((p = oset_top(&s->pairidle)) != NULL && p->wake <= now)
        pair_free(s, p);
    while ((sd = heap_top(&s->sleeping)) != NULL && sd->wake <= now)
        sender_wake(s, sd);
    while ((sd = heap_top(&s->senderidle)) != NULL &&
           (sd->forget_at <= now || s->senderidle.n > SCHED_IDLE_SENDERS_MAX)) {
        if (sender_unused(sd))
            sender_free(s, sd);
        else
            heap_remove(&s->senderidle, 0); /* defensive: in use again */
    }
    camp_sweep(s, now);
}

/* Takes the next job of a sender: highest priority first, and within it
 * the campaign lanes in turn. */
static sched_job_t *sender_pick(sched_t *s, sched_sender_t *sd)
{
    int p;

    for (p = 0; p < NPRIO; p++) {
        sched_lane_t *l = sd->ring[p].head;
        sched_job_t *j;
        if (l == NULL)
            continue;
        j = l->head;
        /* Round robin: the lane goes to the back of its ring. */
        if (l->rnext != NULL) {
            lane_ring_del(l);
            lane_ring_add(l);
        }
        lane_unlink(s, j);
        j->where_ = W_KEYWAIT;
        return j;
    }
    return NULL;
}

static double next_wake(const sched_t *s, double now)
{
    const sched_job_t *j = wait_top(s);
    const sched_job_t *e = oset_top(&s->expiry);
    const sched_sender_t *sd = heap_top(&s->sleeping);
    const sched_pair_t *p = heap_top(&s->pairq);
    double w = INFINITY;

    if (j && j->due < w)
        w = j->due;
    if (e && e->expires_at < w)
        w = e->expires_at;
    if (sd && sd->wake < w)
        w = sd->wake;
    if (p && p->wake < w)
        w = p->wake;
    if (s->hold_all_until > now && s->hold_all_until < w)
        w = s->hold_all_until;
    return w;
}

static void take_flight(sched_t *s, sched_job_t *j, double now)
{
    sched_sender_t *sd = j->sender;

    j->win_slot_ = false; /* set again when the window counts this pick */
    j->late_ = true;
    if (sd->bucket.rate > 0) {
        bucket_window_release(&sd->bucket, now);
        sd->bucket.tokens -= 1;
        window_pick(&sd->win, j);
    }
    if (s->global.rate > 0) {
        bucket_window_release(&s->global, now);
        s->global.tokens -= 1;
        gwin_pick(&s->gwin, j->id);
    }
    if (j->pair_ != NULL)
        pair_take(s, j->pair_, now);
    if (j->okey_ != NULL)
        j->okey_->inflight++;
    if (j->exp_idx_ != IDX_NONE)
        oset_remove(&s->expiry, j->exp_idx_);
    camp_count_send(j->camp_, now);
    sd->inflight++;
    sd->n_jobs--;
    s->inflight++;
    j->inflight = true;
    j->where_ = W_INFLIGHT;
}

sched_job_t *sched_next(sched_t *s, double now, double *wake)
{
    sched_sender_t *sd;

    advance(s, now);
    if (s->all_paused || s->account_paused || s->hold_all_until > now) {
        if (wake)
            *wake = next_wake(s, now);
        return NULL;
    }
    if (s->inflight >= s->opt.max_inflight) {
        if (wake)
            *wake = INFINITY; /* a completion frees a slot */
        return NULL;
    }
    bucket_refill(&s->global, now);
    if (s->global.rate > 0) {
        double by_bucket = bucket_ready_at(&s->global, now);
        double at = fmax(by_bucket, gwin_ready_at(&s->gwin, now));
        if (at > by_bucket)
            bucket_window_hold(&s->global, at);
        if (at > now) {
            if (wake) {
                double w = next_wake(s, now);
                *wake = s->ring_head ? fmin(w, at) : w;
            }
            return NULL;
        }
    }
    while ((sd = ring_pop(s)) != NULL) {
        sched_job_t *j;

        if (sd->paused || sd->n_ready == 0) {
            sd->state = SENDER_IDLE;
            sender_maybe_idle(s, sd);
            continue;
        }
        if (sd->inflight >= s->opt.max_inflight_per_number) {
            sd->state = SENDER_CAPPED;
            continue;
        }
        if (sd->hold_until > now) {
            sender_sleep(s, sd, sd->hold_until);
            continue;
        }
        bucket_refill(&sd->bucket, now);
        if (sd->bucket.rate > 0) {
            double by_bucket = bucket_ready_at(&sd->bucket, now);
            double at =
                fmax(by_bucket, window_ready_at(&sd->win, window_limit(sd->bucket.rate), now));
            if (at > by_bucket)
                bucket_window_hold(&sd->bucket, at);
            if (at > now) {
                sender_sleep(s, sd, at);
                continue;
            }
        }
        j = sender_pick(s, sd);
        if (j == NULL) {
            sd->state = SENDER_IDLE;
            sender_maybe_idle(s, sd);
            continue;
        }
        if (j->pair_ != NULL) {
            sched_pair_t *p = j->pair_;
            pair_refill(s, p, now);
            if (p->hold_until > now || pair_allowance(s, p, now) < 1) {
                /* This recipient must wait; the sender tries its next job. */
                pair_park(s, p, j, now);
                ring_push_front(s, sd);
                continue;
            }
        }
        take_flight(s, j, now);
        ring_push(s, sd); /* round robin: to the back */
        return j;
    }
    if (wake)
        *wake = next_wake(s, now);
    return NULL;
}

sched_job_t *sched_next_expired(sched_t *s, double now)
{
    sched_job_t *j = oset_top(&s->expiry);

    if (now > s->now)
        s->now = now;
    if (j == NULL || j->expires_at > now)
        return NULL;
    return j;
}

/* An in-flight job leaves flight: its sender may send again. */
void sched_job_posted(sched_t *s, sched_job_t *j, double now)
{
    if (!j->inflight)
        return;
    window_depart(&j->sender->win, j, now);
    if (s->gwin.cap > 0)
        gwin_depart(&s->gwin, j->id, now, false);
}

void sched_job_departed(sched_t *s, sched_job_t *j, double when)
{
    window_t *w = &j->sender->win;
    uint64_t seq;
    double *t;

    if (j->inflight && s->gwin.cap > 0)
        gwin_depart(&s->gwin, j->id, when, true);
    if (!j->inflight || j->win_pending_ || !j->win_slot_ || w->cap == 0)
        return;
    seq = window_seq(w, j);
    if (w->next - seq > w->cap)
        return;
    t = &w->t[seq % w->cap];
    if (when > *t)
        *t = when;
}

static void inflight_end(sched_t *s, sched_job_t *j)
{
    sched_sender_t *sd = j->sender;

    window_depart(&sd->win, j, s->now);
    if (s->gwin.cap > 0)
        gwin_depart(&s->gwin, j->id, s->now, false);
    j->inflight = false;
    sd->inflight--;
    sd->n_jobs++;
    s->inflight--;
    if (j->okey_ != NULL)
        j->okey_->inflight--;
    if (sd->state == SENDER_CAPPED) {
        sd->state = SENDER_IDLE;
        sender_wake_if_idle(s, sd);
    }
}

void sched_job_retry(sched_t *s, sched_job_t *j, double due)
{
    if (j->where_ == W_INFLIGHT) {
        inflight_end(s, j);
        if (j->expires_at > 0)
            oset_push(&s->expiry, j, j->expires_at, j->id); /* reserved at add */
    } else if (j->where_ == W_WAITING) {
        wait_remove(s, j);
    } else {
        job_unready(s, j);
    }
    j->due = due;
    j->where_ = W_WAITING;
    wait_push(s, j); /* never fails */
    /* Defensive: if j was not its key's first, the first may go now. */
    if (j->okey_ != NULL && j->okey_->head != j)
        job_try_ready(s, j->okey_->head);
}

void sched_job_finish(sched_t *s, sched_job_t *j)
{
    sched_okey_t *k = j->okey_;
    sched_sender_t *sd = j->sender;

    switch (j->where_) {
    case W_INFLIGHT:
        inflight_end(s, j);
        break;
    case W_WAITING:
        wait_remove(s, j);
        break;
    case W_READY:
    case W_PAIRWAIT:
        job_unready(s, j);
        break;
    default:
        break;
    }
    if (j->exp_idx_ != IDX_NONE)
        oset_remove(&s->expiry, j->exp_idx_);
    j->sender->n_jobs--;
    jobs_delete(s, j->id);
    if (--j->camp_->refs == 0)
        camp_maybe_idle(s, j->camp_);
    if (j->pair_ != NULL && --j->pair_->refs == 0)
        pair_maybe_idle(s, j->pair_);
    if (k != NULL) {
        okey_unlink(k, j);
        if (k->head == NULL) {
            ht_remove(&s->okeys, &k->h);
            free(k);
        } else {
            job_try_ready(s, k->head);
        }
    }
    free(j);
    sender_maybe_idle(s, sd);
}

/* --- public: outcomes ---------------------------------------------------------- */

void sched_job_sent(sched_t *s, sched_job_t *j, double now)
{
    sched_sender_t *sd = j->sender;

    if (now > s->now)
        s->now = now;
    if (j->pair_ != NULL)
        j->pair_->strikes = 0;
    sd->hold_strikes = 0;
    /* Additive increase: max/AIMD_STEP_FRACTION per second of successes at
     * the current rate, i.e. this much per success. */
    if (sd->max_rate > 0 && sd->bucket.rate < sd->max_rate) {
        double step =
            sd->max_rate / AIMD_STEP_FRACTION / (sd->bucket.rate > 1 ? sd->bucket.rate : 1);
        sd->bucket.rate += step;
        if (sd->bucket.rate > sd->max_rate)
            sd->bucket.rate = sd->max_rate;
        sd->bucket.burst = sender_burst(s, sd);
    }
}

void sched_sender_throttled(sched_t *s, sched_job_t *j, double now, double hold)
{
    sched_sender_t *sd = j->sender;

    if (now > s->now)
        s->now = now;
    if (now - sd->last_cut >= CUT_GAP) {
        double floor_rate = sd->max_rate / AIMD_MIN_FRACTION;
        sd->last_cut = now;
        if (sd->max_rate > 0) {
            sd->bucket.rate *= AIMD_CUT;
            if (sd->bucket.rate < floor_rate)
                sd->bucket.rate = floor_rate;
            sd->bucket.burst = sender_burst(s, sd);
        }
        bucket_refill(&sd->bucket, now);
        if (sd->bucket.tokens > 0)
            sd->bucket.tokens = 0;
    }
    /* The hold's end is the throttle's now: so is its reason ("throttled"
     * in stats, not what an earlier hold, say maintenance, said). */
    if (hold > 0 && now + hold > sd->hold_until) {
        sd->hold_until = now + hold;
        set_reason(&sd->hold_reason, NULL);
    }
}

double sched_sender_hold(sched_t *s, sched_job_t *j, double now, double base, double at_least,
                         const char *reason)
{
    sched_sender_t *sd = j->sender;
    double until;

    if (now > s->now)
        s->now = now;
    /* Answers to requests sent before the hold began (a rate's worth in
     * flight) belong to the same hold; one to a request sent after it
     * ended says the cause is still there. */
    if (now >= sd->hold_until && sd->hold_strikes < SCHED_HOLD_STRIKES_MAX)
        sd->hold_strikes++;
    until =
        now + fmax(ldexp(base, (int)(sd->hold_strikes > 0 ? sd->hold_strikes - 1 : 0)), at_least);
    if (until > sd->hold_until) {
        sd->hold_until = until;
        set_reason(&sd->hold_reason, reason);
    }
    return sd->hold_until;
}

void sched_pair_refund(sched_t *s, sched_job_t *j, double now)
{
    sched_pair_t *p = j->pair_;

    if (p == NULL || !pacing(s))
        return;
    pair_refill(s, p, now);
    p->tokens = fmin(p->tokens + 1, s->opt.pair_burst);
    p->rest = fmin(p->rest + 1, 1);
    if (p->burst_n > 0 && pair_in_burst(s, p, now))
        p->burst_n--;
}

double sched_pair_ready(const sched_t *s, const sched_job_t *j, double from)
{
    sched_pair_t p;

    if (j->pair_ == NULL)
        return from;
    p = *j->pair_; /* a copy: the refill to `from` is a forecast */
    pair_refill(s, &p, from);
    return pair_ready_at(s, &p, from);
}

double sched_pair_limited(sched_t *s, sched_job_t *j, double now, double at_least)
{
    sched_pair_t *p = j->pair_;
    double until;

    if (p == NULL)
        return now + fmax(1, at_least);
    if (now < p->hold_until) {
        /* Another answer of the same hit (requests that were on the wire
         * with it): one strike per hit, not per answer - a burst answered
         * 131056 together held the pair 4^k for k answers. */
        until = now + at_least;
    } else {
        until = now + fmax(pow(4.0, p->strikes < 8 ? p->strikes : 8), at_least);
        if (p->strikes < 16)
            p->strikes++;
    }
    if (until > p->hold_until)
        p->hold_until = until;
    /* Meta says the pair's budget is spent, and the hold does not fill it
     * either: both counts go as far below one as the hold refills, and the
     * hold's end opens a burst with room for one, so the retry goes then
     * and the pair goes on one per interval while its bucket fills, not in
     * a burst. */
    if (pacing(s)) {
        double at_end = 1.0 - (p->hold_until - now) / s->opt.pair_interval;

        pair_refill(s, p, now);
        p->tokens = fmin(p->tokens, at_end);
        p->rest = fmin(p->rest, at_end);
        p->burst_start = p->hold_until;
        p->burst_n = (unsigned)s->opt.pair_burst - 1;
    }
    return p->hold_until;
}

void sched_hold_all(sched_t *s, double until)
{
    if (until > s->hold_all_until)
        s->hold_all_until = until;
}

double sched_hold_all_until(const sched_t *s)
{
    return s->hold_all_until;
}

/* --- public: pauses -------------------------------------------------------------- */

int sched_sender_pause(sched_t *s, const char *phone_number_id, bool paused, const char *reason)
{
    sched_sender_t *sd = paused ? sender_get(s, phone_number_id) : sender_find(s, phone_number_id);

    if (sd == NULL)
        return paused ? -ENOMEM : 0;
    sd->paused = paused;
    set_reason(&sd->reason, paused ? reason : NULL);
    if (!paused) {
        /* An operator's resume also lifts a timed hold. */
        sd->hold_until = 0;
        sd->hold_strikes = 0;
        set_reason(&sd->hold_reason, NULL);
        if (sd->state == SENDER_SLEEP && sd->heap_idx != (size_t)-1) {
            heap_remove(&s->sleeping, sd->heap_idx);
            sd->state = SENDER_IDLE;
        }
        sender_wake_if_idle(s, sd);
        sender_maybe_idle(s, sd);
    }
    return 0;
}

/* Takes c's lanes out of their senders' rings while it is stopped (paused
 * or held), puts them back when neither is left. */
static void camp_apply_stop(sched_t *s, sched_campaign_t *c)
{
    bool stop = camp_stopped(c);
    sched_lane_t *l;

    if (stop)
        camp_idle_unlink(s, c);
    for (l = c->lanes; l; l = l->cnext) {
        if (stop) {
            lane_ring_del(l);
        } else if (!l->in_ring && l->n > 0) {
            lane_ring_add(l);
            sender_wake_if_idle(s, l->sender);
        }
    }
    if (!stop)
        camp_maybe_idle(s, c);
}

int sched_campaign_pause(sched_t *s, const char *campaign, bool paused)
{
    sched_campaign_t *c = paused ? camp_get(s, campaign) : camp_find(s, campaign);

    if (c == NULL)
        return paused ? -ENOMEM : 0;
    if (c == &s->none)
        return 0;
    c->paused = paused;
    camp_apply_stop(s, c);
    return 0;
}

int sched_campaign_hold(sched_t *s, const char *campaign, bool hold)
{
    sched_campaign_t *c = hold ? camp_get(s, campaign) : camp_find(s, campaign);

    if (c == NULL)
        return hold ? -ENOMEM : 0;
    if (c == &s->none || (!hold && c->holds == 0))
        return 0;
    if (hold)
        c->holds++;
    else
        c->holds--;
    camp_apply_stop(s, c);
    return 0;
}

bool sched_job_campaign_held(const sched_t *s, const sched_job_t *job)
{
    (void)s;
    return job->camp_->holds > 0;
}

void sched_pause_all(sched_t *s, bool paused)
{
    s->all_paused = paused;
}

void sched_account_pause(sched_t *s, bool paused, const char *reason)
{
    s->account_paused = paused;
    set_reason(&s->account_reason, paused ? (reason ? reason : "paused") : NULL);
}

bool sched_campaign_paused(const sched_t *s, const char *campaign)
{
    const sched_campaign_t *c = campaign ? camp_find(s, campaign) : NULL;
    return c != NULL && c->paused;
}

bool sched_sender_paused(const sched_t *s, const char *phone_number_id)
{
    const sched_sender_t *sd = sender_find(s, phone_number_id);
    return sd != NULL && sd->paused;
}

bool sched_sender_pause_reason(const sched_t *s, const char *phone_number_id, const char **reason)
{
    const sched_sender_t *sd = sender_find(s, phone_number_id);

    *reason = sd != NULL && sd->paused ? sd->reason : NULL;
    return sd != NULL && sd->paused;
}

bool sched_all_paused(const sched_t *s)
{
    return s->all_paused;
}

const char *sched_account_reason(const sched_t *s)
{
    return s->account_paused ? s->account_reason : NULL;
}

bool sched_keys_paused(const sched_t *s, const char *phone_number_id, const char *campaign)
{
    const sched_campaign_t *c = campaign ? camp_find(s, campaign) : NULL;

    return s->all_paused || s->account_paused || sched_sender_paused(s, phone_number_id) ||
           (c != NULL && camp_stopped(c));
}

static bool job_paused(const sched_job_t *j)
{
    return j->sender->paused || camp_stopped(j->camp_);
}

double sched_job_held_until(const sched_t *s, const sched_job_t *j)
{
    double t = s->hold_all_until;

    if (j->sender->hold_until > t)
        t = j->sender->hold_until;
    if (j->pair_ != NULL && j->pair_->hold_until > t)
        t = j->pair_->hold_until;
    return t;
}

bool sched_job_paused(const sched_t *s, const sched_job_t *j)
{
    return s->all_paused || s->account_paused || job_paused(j);
}

size_t sched_evict_paused(sched_t *s)
{
    size_t i, n = 0;

    for (i = 0; i < s->jobs_cap; i++) {
        sched_job_t *j = s->jobs[i].job;
        if (j == NULL || j == TOMBSTONE || j->inflight || !job_paused(j))
            continue;
        /* j and the later jobs of its key (they wait for j anyway), from
         * the key's tail, so the key's list stays consistent. */
        if (j->okey_ != NULL) {
            sched_okey_t *k = j->okey_;
            /* k outlives every turn but the last: j stays in it until then. */
            for (;;) {
                sched_job_t *t = k->tail;
                bool last = t == j;
                if (t->inflight) /* NOLINT(clang-analyzer-unix.Malloc): see above */
                    break;       /* cannot happen while j waits; keep what flies */
                sched_job_finish(s, t);
                n++;
                if (last)
                    break;
            }
        } else {
            sched_job_finish(s, j);
            n++;
        }
    }
    return n;
}

/* --- public: statistics ----------------------------------------------------------- */

double sched_campaign_rate(const sched_t *s, const char *campaign, double now)
{
    const sched_campaign_t *c = camp_find(s, campaign);
    int64_t no = (int64_t)floor(now / RATE_SLOT);
    double span = RATE_WINDOW + (now - (double)no * RATE_SLOT);
    uint64_t n = 0;
    size_t i;

    if (c == NULL)
        return 0;
    for (i = 0; i < RATE_SLOTS; i++)
        if (c->slot_no[i] <= no && c->slot_no[i] >= no - RATE_WINDOW_SLOTS)
            n += c->slot_n[i];
    /* A run that started within the window is measured from its start
     * (else a campaign's first seconds read as a fraction of its rate);
     * at least one second, so that its first sends do not read as a burst. */
    if (n > 0 && now - c->run_start < span)
        span = fmax(now - c->run_start, 1.0);
    return span > 0 ? (double)n / span : 0;
}

size_t sched_campaign_jobs(const sched_t *s, const char *campaign)
{
    const sched_campaign_t *c = camp_find(s, campaign);
    return c ? c->refs : 0;
}

void sched_senders_each(const sched_t *s, double now,
                        void (*cb)(const sched_sender_info_t *, void *), void *user)
{
    size_t i;

    for (i = 0; i < s->senders.cap; i++) {
        const hnode_t *x;
        for (x = s->senders.b[i]; x; x = x->hnext) {
            const sched_sender_t *sd = (const sched_sender_t *)x;
            sched_sender_info_t info;
            bool held = sd->hold_until > now;

            info.phone_number_id = sd->phone_number_id;
            info.queued = sd->n_jobs;
            info.inflight = sd->inflight;
            info.rate = sd->bucket.rate;
            info.max_rate = sd->max_rate;
            info.paused = sd->paused || held;
            info.reason = sd->paused ? sd->reason : held ? sd->hold_reason : NULL;
            if (info.paused && info.reason == NULL)
                info.reason = sd->paused ? "paused by the operator" : "throttled";
            cb(&info, user);
        }
    }
}

const char *sched_job_campaign(const sched_job_t *job)
{
    return job->camp_->name;
}

const char *sched_sender_id(const sched_sender_t *sd)
{
    return sd->phone_number_id;
}

size_t sched_sender_waiting_each(sched_t *s, const char *phone_number_id, uint8_t marks,
                                 void (*fn)(sched_job_t *job, void *arg), void *arg)
{
    const sched_sender_t *sd = sender_find(s, phone_number_id);
    size_t n = 0;

    if (sd == NULL || sd->n_jobs == 0)
        return 0;
    for (size_t i = 0; i < s->jobs_cap; i++) {
        sched_job_t *j = s->jobs[i].job;

        if (j == NULL || j == TOMBSTONE || j->sender != sd || j->where_ != W_WAITING ||
            !(j->marks & marks))
            continue;
        fn(j, arg);
        n++;
    }
    return n;
}

size_t sched_jobs(const sched_t *s)
{
    return s->jobs_n;
}

unsigned sched_inflight(const sched_t *s)
{
    return s->inflight;
}

void sched_object_counts(const sched_t *s, sched_counts_t *out)
{
    out->senders = s->senders.n;
    out->campaigns = s->campaigns.n;
    out->okeys = s->okeys.n;
    out->lanes = s->lanes.n;
    out->pairs = s->pairs.n;
    out->idle_pairs = s->idle_pairs;
    out->idle_senders = s->senderidle.n;
}
