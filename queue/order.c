/*
 * order.c - the order-key index (per-key FIFO across retries) and stored
 * pauses.
 */
#include "queue_int.h"

#include <errno.h>
#include <stdlib.h>

/* --- Effective order keys ------------------------------------------------- */

static size_t key_build(const char *ok, size_t ok_len, const char *phone, size_t phone_len,
                        const char *to, size_t to_len, char *buf, size_t size)
{
    size_t n = 0, i;

    if (ok != NULL) {
        if (ok_len == 0 || ok_len >= size || ok_len > QUEUE_ORDER_KEY_MAX)
            return 0;
        memcpy(buf, ok, ok_len);
        buf[ok_len] = '\0';
        return ok_len;
    }
    if (phone == NULL || phone_len + 2 > size)
        return 0;
    memcpy(buf, phone, phone_len);
    n = phone_len;
    buf[n++] = ':';
    for (i = 0; to != NULL && i < to_len; i++) {
        if (to[i] < '0' || to[i] > '9')
            continue;
        if (n + 1 >= size || n >= QUEUE_ORDER_KEY_MAX)
            return 0;
        buf[n++] = to[i];
    }
    buf[n] = '\0';
    return n;
}

size_t queue_order_key(const char *order_key, const char *phone_number_id, const char *to,
                       char *buf, size_t size)
{
    if (buf == NULL || size == 0)
        return 0;
    buf[0] = '\0';
    return key_build(order_key, order_key ? strlen(order_key) : 0, phone_number_id,
                     phone_number_id ? strlen(phone_number_id) : 0, to, to ? strlen(to) : 0, buf,
                     size);
}

size_t queue__record_order_key(const queue__record_t *r, char *buf, size_t size)
{
    const queue__str_t *ok = &r->s[QUEUE__REC_ORDER_KEY];
    const queue__str_t *ph = &r->s[QUEUE__REC_PHONE];
    const queue__str_t *to = &r->s[QUEUE__REC_TO];

    if (size == 0)
        return 0;
    buf[0] = '\0';
    return key_build(ok->p, ok->len, ph->p, ph->len, to->p, to->len, buf, size);
}

/* --- The index ------------------------------------------------------------ */

#define OKEY_BUF (QUEUE_ORDER_KEY_MAX + 1 + 8)

static size_t okey_entry(unsigned char *kb, const char *key, size_t len, uint64_t id)
{
    memcpy(kb, key, len);
    kb[len] = 0;
    queue__be64_put(kb + len + 1, id);
    return len + 9;
}

int queue__order_put(queue__wtxn_t *w, const char *key, size_t len, uint64_t id)
{
    unsigned char kb[OKEY_BUF];
    MDB_val k, v = {0, NULL};

    if (len == 0 || len > QUEUE_ORDER_KEY_MAX)
        return 0; /* no key: the job has no order to keep */
    k.mv_size = okey_entry(kb, key, len, id);
    k.mv_data = kb;
    return queue__idx_put(w, &w->order_cur, w->q->db_order, &k, &v);
}

int queue__order_del(queue__wtxn_t *w, const char *key, size_t len, uint64_t id)
{
    unsigned char kb[OKEY_BUF];
    MDB_val k;

    if (len == 0 || len > QUEUE_ORDER_KEY_MAX)
        return 0;
    k.mv_size = okey_entry(kb, key, len, id);
    k.mv_data = kb;
    return queue__idx_del(w, &w->order_cur, w->q->db_order, &k);
}

int queue__order_build(queue__wtxn_t *w)
{
    queue_t *q = w->q;
    MDB_stat so, sd;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc, op;

    if ((rc = mdb_stat(w->txn, q->db_order, &so)) != 0 ||
        (rc = mdb_stat(w->txn, q->db_due, &sd)) != 0)
        return rc;
    if (so.ms_entries != 0 || sd.ms_entries == 0)
        return 0;
    /* Writing another database while walking this one is fine. */
    rc = mdb_cursor_open(w->txn, q->db_due, &cur);
    if (rc != 0)
        return rc;
    for (op = MDB_FIRST;; op = MDB_NEXT) {
        unsigned char idb[8];
        MDB_val jk = {sizeof idb, idb}, jv;
        char key[QUEUE_ORDER_KEY_MAX + 1];
        queue__record_t r;
        size_t len;

        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc != 0)
            break;
        if (k.mv_size != 16)
            continue;
        memcpy(idb, (const unsigned char *)k.mv_data + 8, 8);
        if (mdb_get(w->txn, q->db_jobs, &jk, &jv) != 0 ||
            queue__record_parse(jv.mv_data, jv.mv_size, &r) != 0)
            continue;
        len = queue__record_order_key(&r, key, sizeof key);
        rc = queue__order_put(w, key, len, queue__be64_get(idb));
        if (rc != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int queue__order_add(queue__wtxn_t *w, const queue__record_t *r, uint64_t id, bool *added)
{
    char key[QUEUE_ORDER_KEY_MAX + 1];
    unsigned char kb[OKEY_BUF];
    size_t len = queue__record_order_key(r, key, sizeof key);
    MDB_val k;

    *added = false;
    if (len == 0)
        return 0; /* as queue__order_put: no key, no order to keep */
    k.mv_size = okey_entry(kb, key, len, id);
    k.mv_data = kb;
    return queue__idx_add(w, &w->order_cur, w->q->db_order, &k, added);
}

bool queue__order_fits(const MDB_val *k, const queue__record_t *r)
{
    const unsigned char *p = k->mv_data;
    char key[QUEUE_ORDER_KEY_MAX + 1];
    size_t len;

    /* Well-formed: 1..QUEUE_ORDER_KEY_MAX key bytes, 0x00, the id. */
    if (k->mv_size < 10 || k->mv_size - 9 > QUEUE_ORDER_KEY_MAX || p[k->mv_size - 9] != 0)
        return false;
    if (r == NULL)
        return true;
    len = k->mv_size - 9;
    return queue__state_is_due(r->state) && queue__record_order_key(r, key, sizeof key) == len &&
           memcmp(key, p, len) == 0;
}

int queue_order_scan(queue_t *q, const char *key, uint64_t after_id, uint64_t before_id,
                     size_t limit, queue_due_cb cb, void *user)
{
    unsigned char kb[OKEY_BUF];
    MDB_cursor *cur = NULL, *jcur = NULL;
    MDB_val k, v;
    size_t len, seen = 0;
    queue__rd_t r;
    int rc;

    if (q == NULL || key == NULL || cb == NULL)
        return QUEUE_EINVAL;
    len = strlen(key);
    if (len == 0 || len > QUEUE_ORDER_KEY_MAX)
        return QUEUE_EINVAL;
    if (limit == 0 || after_id == UINT64_MAX || after_id + 1 >= before_id)
        return 0;
    k.mv_size = okey_entry(kb, key, len, after_id + 1);
    k.mv_data = kb;
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(r.txn, q->db_order, &cur);
    if (rc != 0)
        goto out;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && seen < limit) {
        char sbuf[QUEUE__DUE_SBUF];
        queue_due_entry_t e;
        uint64_t id;

        if (k.mv_size != len + 9 || memcmp(k.mv_data, key, len) != 0 ||
            ((const unsigned char *)k.mv_data)[len] != 0)
            break; /* past the key's entries */
        id = queue__be64_get((const unsigned char *)k.mv_data + len + 1);
        if (id >= before_id)
            break;
        /* Opened for the first entry in range only: a refill asks this for
         * every job it loads, and most keys have no older job waiting. */
        if (jcur == NULL && (rc = mdb_cursor_open(r.txn, q->db_jobs, &jcur)) != 0)
            break;
        rc = queue__due_entry_read(jcur, id, sbuf, &e);
        if (rc == QUEUE_ENOTFOUND || rc == QUEUE_ECORRUPT) {
            /* A stale entry, or a job that can never be read, let alone
             * sent: it holds nothing back (queue_due_scan reports it). */
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        if (rc != 0)
            break;
        seen++;
        if (cb(&e, user) != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
out:
    if (jcur != NULL)
        mdb_cursor_close(jcur);
    if (cur != NULL)
        mdb_cursor_close(cur);
    queue__rd_end(q, &r);
    return queue__err_map(rc);
}

/* --- Pauses ------------------------------------------------------------------ */

static bool pause_kind_ok(int kind)
{
    return kind == QUEUE_PAUSE_ALL || kind == QUEUE_PAUSE_SENDER || kind == QUEUE_PAUSE_CAMPAIGN;
}

int queue__pause_write(queue__wtxn_t *w, int kind, const char *name, size_t name_len,
                       const char *reason, size_t reason_len, bool paused)
{
    unsigned char kb[1 + QUEUE_MAX_KEY_LEN];
    MDB_val k = {1 + name_len, kb}, v = {reason_len, (void *)reason};
    int rc;

    if (!pause_kind_ok(kind) || name_len > QUEUE_MAX_KEY_LEN)
        return QUEUE_EINVAL;
    kb[0] = (unsigned char)kind;
    if (name_len > 0)
        memcpy(kb + 1, name, name_len);
    if (paused)
        return mdb_put(w->txn, w->q->db_pauses, &k, &v, 0);
    rc = mdb_del(w->txn, w->q->db_pauses, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int queue_pauses_each(queue_t *q, queue_pause_cb cb, void *user)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    queue__rd_t r;
    int rc, op;

    if (q == NULL || cb == NULL)
        return QUEUE_EINVAL;
    rc = queue__rd_begin(q, &r);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(r.txn, q->db_pauses, &cur);
    for (op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        char name[QUEUE_MAX_KEY_LEN + 1], reason[QUEUE_PAUSE_REASON_MAX + 1];
        const unsigned char *p;
        size_t nl, rl;

        rc = mdb_cursor_get(cur, &k, &v, op);
        if (rc != 0)
            break;
        p = k.mv_data;
        nl = k.mv_size - 1;
        if (k.mv_size < 1 || nl > QUEUE_MAX_KEY_LEN || !pause_kind_ok(p[0]))
            continue; /* not ours: ignore */
        memcpy(name, p + 1, nl);
        name[nl] = '\0';
        rl = v.mv_size < QUEUE_PAUSE_REASON_MAX ? v.mv_size : QUEUE_PAUSE_REASON_MAX;
        memcpy(reason, v.mv_data, rl);
        reason[rl] = '\0';
        if (cb(p[0], name, reason, user) != 0)
            break;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    queue__rd_end(q, &r);
    return queue__err_map(rc);
}
