/*
 * storetool.c - pokes at an avenpingd state dir for tests that need a store
 * in a state the daemon never writes itself. Test-only.
 *
 *   avp-storetool set-schema DIR N        write schema version N into DIR's store
 *   avp-storetool schema DIR              print the schema version
 *   avp-storetool record-version DIR ID N set the version byte of job ID's record
 *                                         (N unknown to the build: a newer record)
 *   avp-storetool drop-record DIR ID      delete job ID's record, leaving the
 *                                         index entries that name it
 *   avp-storetool bad-done-key DIR        add a 15-byte key to the retention index
 *   avp-storetool drop-due DIR ID         delete job ID's due index entry
 *   avp-storetool drop-body DIR ID        delete job ID's body, leaving its record
 *
 * Run it only while no daemon has DIR open.
 */
#include <errno.h>
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

static void be64_put(unsigned char *p, unsigned long long v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* Runs `cmd` in one write (or, for `schema`, read) transaction on DB `db`. */
static int run(const char *cmd, const char *dir, const char *db, char **args)
{
    bool rd = strcmp(cmd, "schema") == 0;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    unsigned char kb[16];
    int rc;

    if ((rc = mdb_env_create(&env)) != 0 || (rc = mdb_env_set_maxdbs(env, 16)) != 0)
        return fail("env", rc);
    if ((rc = mdb_env_open(env, dir, rd ? MDB_RDONLY : 0, 0600)) != 0)
        return fail(dir, rc);
    if ((rc = mdb_txn_begin(env, NULL, rd ? MDB_RDONLY : 0, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, db, 0, &dbi)) != 0)
        return fail(db, rc);
    if (strcmp(cmd, "set-schema") == 0) {
        unsigned long n = strtoul(args[0], NULL, 10);
        kb[0] = (unsigned char)(n >> 24);
        kb[1] = (unsigned char)(n >> 16);
        kb[2] = (unsigned char)(n >> 8);
        kb[3] = (unsigned char)n;
        k = (MDB_val){6, "schema"};
        v = (MDB_val){4, kb};
        rc = mdb_put(txn, dbi, &k, &v, 0);
    } else if (rd) {
        const unsigned char *p;
        k = (MDB_val){6, "schema"};
        if ((rc = mdb_get(txn, dbi, &k, &v)) != 0 || v.mv_size != 4)
            return fail("schema", rc ? rc : MDB_CORRUPTED);
        p = v.mv_data;
        printf("%lu\n", ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) |
                            ((unsigned long)p[2] << 8) | p[3]);
    } else if (strcmp(cmd, "bad-done-key") == 0) {
        memset(kb, 0, sizeof(kb));
        k = (MDB_val){15, kb};
        v = (MDB_val){0, kb};
        rc = mdb_put(txn, dbi, &k, &v, 0);
    } else if (strcmp(cmd, "drop-due") == 0) {
        MDB_cursor *cur;
        be64_put(kb, strtoull(args[0], NULL, 10));
        if ((rc = mdb_cursor_open(txn, dbi, &cur)) != 0)
            return fail("cursor", rc);
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
            if (k.mv_size == 16 && memcmp((const unsigned char *)k.mv_data + 8, kb, 8) == 0)
                break;
        if (rc == 0)
            rc = mdb_cursor_del(cur, 0);
        mdb_cursor_close(cur);
    } else {
        be64_put(kb, strtoull(args[0], NULL, 10));
        k = (MDB_val){8, kb};
        if (strcmp(cmd, "drop-record") == 0 || strcmp(cmd, "drop-body") == 0) {
            rc = mdb_del(txn, dbi, &k, NULL);
        } else if ((rc = mdb_get(txn, dbi, &k, &v)) == 0) {
            unsigned char *copy = malloc(v.mv_size);
            if (copy == NULL)
                return fail("malloc", ENOMEM);
            memcpy(copy, v.mv_data, v.mv_size);
            copy[0] = (unsigned char)strtoul(args[1], NULL, 10);
            v.mv_data = copy;
            rc = mdb_put(txn, dbi, &k, &v, 0);
            free(copy);
        }
    }
    if (rc != 0)
        return fail(cmd, rc);
    if (rd)
        mdb_txn_abort(txn);
    else if ((rc = mdb_txn_commit(txn)) != 0)
        return fail("commit", rc);
    mdb_env_close(env);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *cmd, *db;
        int nargs;
    } cmds[] = {{"set-schema", "meta", 1},     {"schema", "meta", 0},
                {"record-version", "jobs", 2}, {"drop-record", "jobs", 1},
                {"bad-done-key", "done", 0},   {"drop-due", "due", 1},
                {"drop-body", "bodies", 1}};

    for (size_t i = 0; argc >= 3 && i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(argv[1], cmds[i].cmd) == 0 && argc == 3 + cmds[i].nargs)
            return run(cmds[i].cmd, argv[2], cmds[i].db, argv + 3);
    fprintf(stderr, "usage: avp-storetool set-schema DIR N | schema DIR | record-version DIR ID N"
                    " | drop-record DIR ID | bad-done-key DIR | drop-due DIR ID"
                    " | drop-body DIR ID\n");
    return 2;
}
