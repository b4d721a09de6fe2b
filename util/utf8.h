/*
 * utf8.h - UTF-8 validation for the request parsers: the cJSON path
 * (ipc/request.c) checks a whole line, the submit fast path
 * (ipc/fastreq.c) each non-ASCII sequence its string scan stops at. One
 * definition, so that both paths accept exactly the same bytes. Also the
 * repair of text from the API (daemon/classify.c) and cuts that keep text
 * well-formed. Header only.
 *
 * Well-formed means RFC 3629 (Unicode's table 3-7): no stray continuation
 * byte, no overlong form (C0, C1, E0 80..9F, F0 80..8F), no surrogate
 * (ED A0..BF), nothing above U+10FFFF (F4 90.., F5..FF), no sequence cut
 * short.
 */
#ifndef AVP_UTF8_H
#define AVP_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * The length (2 to 4) of the well-formed sequence that starts at p, whose
 * first byte is >= 0x80 and before end; 0 when it is not one. Reads no
 * byte at or past end. A continuation byte is never '"' or '\\', so a
 * sequence never takes in the quote that closes a JSON string.
 */
static inline size_t utf8_seq_len(const char *p, const char *end)
{
    const unsigned char *u = (const unsigned char *)p;
    unsigned char c = u[0], lo = 0x80, hi = 0xBF;
    size_t n;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    /* The second byte's range is what rules out the overlong forms, the
     * surrogates and code points past U+10FFFF. */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (u[1] < lo || u[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((u[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/*
 * The offset of the first byte of s[0..n) that does not begin a
 * well-formed sequence, or n when all of it is UTF-8. ASCII is skipped
 * eight bytes at a time; only bytes >= 0x80 are decoded.
 */
static inline size_t utf8_check(const char *s, size_t n)
{
    const uint64_t high = 0x8080808080808080ULL;
    size_t i = 0;

    while (i < n) {
        if (n - i >= 8) {
            uint64_t v;

            memcpy(&v, s + i, 8);
            v &= high;
            if (v == 0) {
                i += 8;
                continue;
            }
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            i += (size_t)__builtin_ctzll(v) >> 3; /* the first byte >= 0x80 */
#endif
        }
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq_len(s + i, s + n);
        if (k == 0)
            return i;
        i += k;
    }
    return n;
}

/*
 * The longest prefix of UTF-8 text s[0..n) that is at most `max` bytes and
 * ends between characters: a cut that keeps the text well-formed.
 */
static inline size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/*
 * Copies s[0..n) - text from outside, any bytes - into dst (`cap` bytes,
 * cap >= 1) as UTF-8: each byte that does not begin a well-formed sequence
 * becomes U+FFFD, a NUL ends the text, and the copy ends between
 * characters when it is cut. Returns its length; dst is NUL-terminated.
 */
static inline size_t utf8_copy_valid(char *dst, size_t cap, const char *s, size_t n)
{
    static const char repl[] = "\xEF\xBF\xBD";
    const char *end = s + n;
    size_t o = 0;

    while (s < end && *s != '\0') {
        const char *from = s;
        size_t k;

        /* Eight ASCII bytes, none NUL, copied at once (a wamid is ASCII:
         * every successful send's id comes through here). */
        if (end - s >= 8 && o + 8 + 1 <= cap) {
            const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
            uint64_t v;

            memcpy(&v, s, 8);
            if (((v | ((v - ones) & ~v)) & high) == 0) {
                memcpy(dst + o, s, 8);
                o += 8;
                s += 8;
                continue;
            }
        }
        k = (unsigned char)*s < 0x80 ? 1 : utf8_seq_len(s, end);

        if (k == 0) {
            from = repl;
            k = 3;
            s++;
        } else {
            s += k;
        }
        if (o + k + 1 > cap)
            break;
        memcpy(dst + o, from, k);
        o += k;
    }
    dst[o] = '\0';
    return o;
}

#endif
