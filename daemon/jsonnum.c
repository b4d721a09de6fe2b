/*
 * jsonnum.c - JSON numbers without printf. See jsonnum.h.
 */
#include "jsonnum.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* Largest magnitude printed as an integer: well inside int64_t. */
#define INT_LIMIT 1e18
/* Non-integral values below this (and at least MICRO_MIN) are printed to
 * the microsecond: v * 1e6 stays below 2^53, so the scaled value is exact
 * to half a unit before rounding. */
#define MICRO_LIMIT 9e9
#define MICRO_MIN 5e-7

/* Decimal digits of n, most significant first, at p; returns the count. */
static size_t put_u64(char *p, uint64_t n)
{
    char tmp[20];
    size_t len = 0, i;

    do {
        tmp[len++] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    for (i = 0; i < len; i++)
        p[i] = tmp[len - 1 - i];
    return len;
}

size_t jsonnum_format(double v, char *buf)
{
    double a = fabs(v);
    size_t n = 0;

    if (!isfinite(v)) {
        buf[0] = 'n';
        buf[1] = 'u';
        buf[2] = 'l';
        buf[3] = 'l';
        buf[4] = '\0';
        return 4;
    }
    if (a < INT_LIMIT && v == trunc(v)) {
        if (v < 0)
            buf[n++] = '-';
        n += put_u64(buf + n, (uint64_t)a);
    } else if (a < MICRO_LIMIT && a >= MICRO_MIN) {
        uint64_t scaled = (uint64_t)llround(a * 1e6);
        uint64_t ip = scaled / 1000000, frac = scaled % 1000000;

        if (v < 0)
            buf[n++] = '-';
        n += put_u64(buf + n, ip);
        if (frac != 0) {
            int digits = 6;

            while (frac % 10 == 0) {
                frac /= 10;
                digits--;
            }
            buf[n++] = '.';
            for (int i = digits - 1; i >= 0; i--) {
                buf[n + (size_t)i] = (char)('0' + frac % 10);
                frac /= 10;
            }
            n += (size_t)digits;
        }
    } else {
        /* Rare: JSON takes C's %g output for a finite value as it is. */
        int w = snprintf(buf, JSONNUM_MAX, "%.17g", v);

        return w > 0 && w < JSONNUM_MAX ? (size_t)w : 0;
    }
    buf[n] = '\0';
    return n;
}

cJSON *jsonnum_add(cJSON *o, const char *key, double v)
{
    char buf[JSONNUM_MAX];

    jsonnum_format(v, buf);
    return cJSON_AddRawToObject(o, key, buf);
}
