/*
 * prefault.h - maps the pages of a freshly allocated block in one system
 * call, instead of taking one page fault per page when it is first written.
 *
 * Why: a hash table that doubles, or an array that grows, writes all of a
 * new block at once (rehash, copy). On the paravirtualised hosts of
 * docs/performance.md (item 19) a page fault costs 10-12 us, so a 4 MiB
 * table rehashed on the event loop stalls it for 10 ms; madvise
 * (MADV_POPULATE_WRITE, Linux 5.14) maps the same pages for about 0.5 us
 * each. Only for blocks about to be written in full: populating memory that
 * is never used would only add to the resident size.
 *
 * The contents are left as they are (the advice only populates page tables,
 * as a write would, without writing), so it is safe on any block the caller
 * owns. Without the advice (older kernels, other systems) it does nothing and
 * the pages fault in one by one as before; the result is not checked for the
 * same reason.
 */
#ifndef AVP_UTIL_PREFAULT_H
#define AVP_UTIL_PREFAULT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Below this a block spans a few pages at most: not worth a system call. */
#define AVP_PREFAULT_MIN ((size_t)64 * 1024)

/* Populates the whole pages inside [p, p + len) for writing. */
static inline void avp_prefault(void *p, size_t len)
{
#ifdef MADV_POPULATE_WRITE
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a, e;

    if (p == NULL || len < AVP_PREFAULT_MIN || ps <= 0)
        return;
    a = ((uintptr_t)p + (uintptr_t)ps - 1) & ~((uintptr_t)ps - 1);
    e = ((uintptr_t)p + len) & ~((uintptr_t)ps - 1);
    if (e > a)
        (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)len;
#endif
}

#endif
