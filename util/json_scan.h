/*
 * json_scan.h - the word-at-a-time step shared by the two JSON scanners
 * that build no tree: the submit fast path (ipc/fastreq.c) and the
 * success-answer scanner (daemon/classify.c). Header only.
 */
#ifndef AVP_JSON_SCAN_H
#define AVP_JSON_SCAN_H

#include <stdint.h>
#include <string.h>

/*
 * The bytes of the 8 in v (in memory order) that end a plain run of string
 * bytes, as their top bits: a byte below 0x20 (v - 0x20.. borrows into its
 * top bit), a quote or a backslash (the byte XOR that value is zero); a
 * byte with its top bit set (UTF-8) never counts. 0: none. A borrow can
 * flag a byte above a flagged one, never below, so the lowest flag is
 * exact: on a little-endian machine, __builtin_ctzll(m) >> 3 is the offset
 * of the first byte that ends the run.
 */
static inline uint64_t json_scan_stops(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');

    return ((v - ones * 0x20) | (q - ones) | (b - ones)) & ~v & high;
}

/*
 * Skips whole words of plain string bytes from p (inside a string, before
 * end): returns the first byte that may end the run - exactly that byte on
 * a little-endian GNU C build, else the start of the word holding it - or
 * a point less than 8 bytes before end. The caller's byte loop goes on from
 * there.
 */
static inline const char *json_scan_plain(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t v, m;

        memcpy(&v, p, 8);
        m = json_scan_stops(v);
        if (m != 0) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            p += __builtin_ctzll(m) >> 3;
#endif
            break;
        }
        p += 8;
    }
    return p;
}

#endif
