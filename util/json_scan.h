/*
 * json_scan.h - the word-at-a-time step shared by the JSON scanners that
 * build no tree: the submit fast path (ipc/fastreq.c), the strict reading
 * of a request line (ipc/request.c) and the success-answer scanner
 * (daemon/classify.c); and the compaction of a request's `message` text,
 * which both request paths use for the body. Header only.
 */
#ifndef AVP_JSON_SCAN_H
#define AVP_JSON_SCAN_H

#include <stdbool.h>
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
 * As json_scan_stops, and a byte with its top bit set ends the run too: for
 * a scanner that checks UTF-8 where it occurs, and only there. Without the
 * `& ~v` a byte >= 0xA0 minus 0x20 keeps its top bit; it is flagged anyway.
 * Borrows still start only at a flagged byte, so the lowest flag is exact.
 */
static inline uint64_t json_scan_stops_ascii(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');

    return ((v - ones * 0x20) | (q - ones) | (b - ones) | v) & high;
}

/* The word loop of the two scans below. */
static inline const char *json_scan_words(const char *p, const char *end, bool ascii)
{
    while (end - p >= 8) {
        uint64_t v, m;

        memcpy(&v, p, 8);
        m = ascii ? json_scan_stops_ascii(v) : json_scan_stops(v);
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

/*
 * Skips whole words of plain string bytes from p (inside a string, before
 * end): returns the first byte that may end the run - exactly that byte on
 * a little-endian GNU C build, else the start of the word holding it - or
 * a point less than 8 bytes before end. The caller's byte loop goes on from
 * there.
 */
static inline const char *json_scan_plain(const char *p, const char *end)
{
    return json_scan_words(p, end, false);
}

/* As json_scan_plain, stopping at bytes >= 0x80 too (json_scan_stops_ascii). */
static inline const char *json_scan_plain_ascii(const char *p, const char *end)
{
    return json_scan_words(p, end, true);
}

/*
 * Copies the JSON text s[0..n) into dst without the whitespace between
 * tokens, every other byte as it is (strings, their escapes, number
 * spellings), or with dst NULL only measures; returns the length. The text
 * must be well-formed JSON: an escaped quote never closes a string here.
 */
static inline size_t json_compact(char *dst, const char *s, size_t n)
{
    size_t o = 0;
    bool in_str = false;

    for (size_t i = 0; i < n; i++) {
        char ch = s[i];

        if (in_str) {
            if (ch == '\\' && i + 1 < n) {
                if (dst) {
                    dst[o] = ch;
                    dst[o + 1] = s[i + 1];
                }
                o += 2;
                i++;
                continue;
            }
            in_str = ch != '"';
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            continue;
        }
        if (dst)
            dst[o] = ch;
        o++;
    }
    return o;
}

#endif
