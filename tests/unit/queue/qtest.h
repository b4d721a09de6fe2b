/*
 * qtest.h - what the store's unit tests share: assertion macros naming the
 * store's error codes, and a temp dir per case (g_dir), removed when the
 * case passes. Test code only: one test binary includes it once.
 */
#ifndef AVP_QTEST_H
#define AVP_QTEST_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "queue.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want)) {                                                                       \
            fprintf(stderr, "%s:%d: %s = %d (%s), want %d (%s)\n", __FILE__, __LINE__, #expr, rc_, \
                    queue_strerror(rc_), (want), queue_strerror(want));                            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, 0)

static char g_dir[512];

/* Creates the case's temp dir under $TMPDIR (or /tmp), named prefix-XXXXXX. */
static void qtest_dir_make(const char *prefix)
{
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/%s-XXXXXX", t != NULL && *t ? t : "/tmp", prefix);
    CHECK(mkdtemp(g_dir) != NULL);
}

static int qtest_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void dir_remove(void)
{
    nftw(g_dir, qtest_rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

typedef struct qtest_case {
    const char *name;
    void (*fn)(void);
} qtest_case_t;

/* Runs the case named argv[1] (or every case) in a fresh temp dir each,
 * made by dir_make (the test's own prefix). Returns the exit status. */
static int qtest_run(int argc, char **argv, const qtest_case_t *cases, size_t n,
                     void (*dir_make)(void))
{
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        dir_make();
        cases[i].fn();
        dir_remove();
        printf("ok %s\n", cases[i].name);
        if (argc > 1)
            return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    return 0;
}

#endif
