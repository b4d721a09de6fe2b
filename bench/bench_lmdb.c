/*
 * bench_lmdb.c - the machine's ceiling for durable writes: bare LMDB, no
 * indexes, each commit synced (the default env flags, as the store uses).
 *
 * usage: avp-bench-lmdb DIR [records] [per-commit]
 * Prints one JSON object:
 *   {"records":..,"per_commit":..,"seconds":..,"rate":..}
 * Records are 8-byte big-endian keys (appended) with a 300-byte value, about
 * the size of a job record plus its body.
 */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VALUE_LEN 300

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void be64(unsigned char *p, unsigned long long v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

int main(int argc, char **argv)
{
    unsigned long long records = argc > 2 ? strtoull(argv[2], NULL, 10) : 200000;
    unsigned long long per = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000;
    unsigned char kb[8], vb[VALUE_LEN];
    MDB_env *env = NULL;
    MDB_dbi dbi;
    MDB_txn *txn;
    double t0, t1;
    int rc;

    if (argc < 2 || records == 0 || per == 0) {
        fprintf(stderr, "usage: avp-bench-lmdb DIR [records] [per-commit]\n");
        return 2;
    }
    memset(vb, 'x', sizeof(vb));
    rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, (size_t)8 << 30);
    if (rc == 0)
        rc = mdb_env_open(env, argv[1], MDB_NOTLS, 0600);
    if (rc != 0)
        goto fail;
    rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    if (rc != 0)
        goto fail;
    t0 = now_s();
    for (unsigned long long i = 0; i < records; i += per) {
        rc = mdb_txn_begin(env, NULL, 0, &txn);
        if (rc != 0)
            goto fail;
        for (unsigned long long k = i; k < i + per && k < records; k++) {
            MDB_val key = {sizeof(kb), kb}, val = {sizeof(vb), vb};
            be64(kb, k + 1);
            rc = mdb_put(txn, dbi, &key, &val, MDB_APPEND);
            if (rc != 0) {
                mdb_txn_abort(txn);
                goto fail;
            }
        }
        rc = mdb_txn_commit(txn);
        if (rc != 0)
            goto fail;
    }
    t1 = now_s();
    printf("{\"records\":%llu,\"per_commit\":%llu,\"seconds\":%.3f,\"rate\":%.0f}\n", records, per,
           t1 - t0, (double)records / (t1 - t0));
    mdb_env_close(env);
    return 0;
fail:
    fprintf(stderr, "avp-bench-lmdb: %s\n", mdb_strerror(rc));
    mdb_env_close(env);
    return 1;
}
