/*
 * json_scan.h - the word-at-a-time step shared by the two JSON scanners
 * that build no tree: the submit fast path (ipc/fastreq.c) and the
 * success-answer scanner (daemon/classify.c). Header only.
 */
#ifndef AVP_JSON_SCAN_H
#define AVP_JSON_SCAN_H

#include <stdint.h>

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

#endif
