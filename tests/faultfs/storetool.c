/*
 * storetool.c - pokes at an avenpingd state dir for tests that need a store
 * in a state the daemon never writes itself. Test-only.
 *
 *   avp-storetool set-schema DIR N   write schema version N into DIR's store
 *   avp-storetool schema DIR         print the schema version
 *
 * Run it only while no daemon has DIR open.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "avp-storetool: %s: %s\n", what, mdb_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {6, "schema"}, v;
    unsigned char b[4];
    bool set;
    int rc;

    if (argc < 3 || (strcmp(argv[1], "set-schema") == 0 && argc != 4) ||
        (strcmp(argv[1], "set-schema") != 0 && strcmp(argv[1], "schema") != 0)) {
        fprintf(stderr, "usage: avp-storetool set-schema DIR N | schema DIR\n");
        return 2;
    }
    set = strcmp(argv[1], "set-schema") == 0;
    if ((rc = mdb_env_create(&env)) != 0 || (rc = mdb_env_set_maxdbs(env, 16)) != 0)
        return fail("env", rc);
    if ((rc = mdb_env_open(env, argv[2], set ? 0 : MDB_RDONLY, 0600)) != 0)
        return fail(argv[2], rc);
    if ((rc = mdb_txn_begin(env, NULL, set ? 0 : MDB_RDONLY, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", 0, &dbi)) != 0)
        return fail("meta", rc);
    if (set) {
        unsigned long n = strtoul(argv[3], NULL, 10);
        b[0] = (unsigned char)(n >> 24);
        b[1] = (unsigned char)(n >> 16);
        b[2] = (unsigned char)(n >> 8);
        b[3] = (unsigned char)n;
        v.mv_size = 4;
        v.mv_data = b;
        if ((rc = mdb_put(txn, dbi, &k, &v, 0)) != 0 || (rc = mdb_txn_commit(txn)) != 0)
            return fail("put", rc);
    } else {
        const unsigned char *p;
        if ((rc = mdb_get(txn, dbi, &k, &v)) != 0 || v.mv_size != 4)
            return fail("schema", rc ? rc : MDB_CORRUPTED);
        p = v.mv_data;
        printf("%lu\n", ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) |
                            ((unsigned long)p[2] << 8) | p[3]);
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return 0;
}
