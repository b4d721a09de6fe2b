/* check.h - the few assertion macros the daemon's unit tests share. */
#ifndef AVP_TEST_CHECK_H
#define AVP_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
                    a_, b_);                                                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,  \
                    #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A table of named cases; main runs the one named in argv[1] (ctest runs
 * each case as its own test) or all of them. */
typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case_t;

static inline int test_main(int argc, char **argv, const test_case_t *cases, size_t n)
{
    size_t i;
    int ran = 0;

    for (i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        cases[i].fn();
        printf("ok %s\n", cases[i].name);
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no such case: %s\n", argc > 1 ? argv[1] : "");
        return 1;
    }
    return 0;
}

#endif
