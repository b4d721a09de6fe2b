/* test_prefault.c - util/prefault.h: a large block's pages are mapped by one
 * call and keep their contents; small blocks and NULL are left alone. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "prefault.h"

#define BLOCK ((size_t)1 << 20)

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Resident pages of [p, p + len) (p page-aligned). */
static size_t resident(void *p, size_t len)
{
    size_t ps = page_size(), n = (len + ps - 1) / ps, k = 0;
    unsigned char *v = malloc(n);

    CHECK(v != NULL);
    CHECK(mincore(p, len, v) == 0);
    for (size_t i = 0; i < n; i++)
        k += v[i] & 1;
    free(v);
    return k;
}

/* Whether this kernel knows MADV_POPULATE_WRITE (5.14 and later). */
static int kernel_populates(void)
{
#ifdef MADV_POPULATE_WRITE
    void *p = mmap(NULL, page_size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ok;

    CHECK(p != MAP_FAILED);
    ok = madvise(p, page_size(), MADV_POPULATE_WRITE) == 0;
    munmap(p, page_size());
    return ok;
#else
    return 0;
#endif
}

static void *fresh(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    CHECK(p != MAP_FAILED);
    CHECK_EQ(resident(p, len), 0);
    return p;
}

/* A fresh mapping: every page resident after one call, still all zero. */
static void test_maps_pages(void)
{
    unsigned char *p = fresh(BLOCK);

    avp_prefault(p, BLOCK);
    if (kernel_populates())
        CHECK_EQ(resident(p, BLOCK), BLOCK / page_size());
    for (size_t i = 0; i < BLOCK; i++)
        CHECK(p[i] == 0);
    munmap(p, BLOCK);
}

/* Written data survives, including at unaligned ends: only the whole pages
 * inside the range are advised, and the advice writes nothing. */
static void test_keeps_contents(void)
{
    unsigned char *p = fresh(BLOCK + 2 * page_size());
    unsigned char *b = p + 100; /* not page-aligned, as a malloc block may be */
    size_t len = BLOCK + page_size();

    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)(i * 31 + 7);
    avp_prefault(b, len);
    for (size_t i = 0; i < len; i++)
        CHECK(b[i] == (unsigned char)(i * 31 + 7));
    munmap(p, BLOCK + 2 * page_size());
}

/* Below AVP_PREFAULT_MIN, or NULL: nothing happens (no page mapped). */
static void test_small_and_null(void)
{
    size_t len = AVP_PREFAULT_MIN - 1;
    unsigned char *p = fresh(AVP_PREFAULT_MIN);

    avp_prefault(NULL, BLOCK);
    avp_prefault(p, len);
    CHECK_EQ(resident(p, AVP_PREFAULT_MIN), 0);
    munmap(p, AVP_PREFAULT_MIN);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"maps_pages", test_maps_pages},
        {"keeps_contents", test_keeps_contents},
        {"small_and_null", test_small_and_null},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
