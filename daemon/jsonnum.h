/*
 * jsonnum.h - numbers for the daemon's JSON answers and events, formatted
 * without printf.
 *
 * cJSON 1.7.15 prints every number with sprintf("%1.15g"), reads it back
 * with sscanf to see whether it round-trips and prints it again with 17
 * digits when not: 4,000 instructions for a small integer, 10,000 for a
 * unix time with a fraction. A `stats` answer holds about 25 numbers, a job
 * in a `list` page about 8 and every `watch` event a time, so that was most
 * of their cost on the loop. Here integers are printed exactly and other
 * values to the microsecond (times are unix seconds; rates and durations
 * need no more), with printf only for what that cannot show (a fraction
 * below a microsecond or beside a very large integer part).
 */
#ifndef AVP_JSONNUM_H
#define AVP_JSONNUM_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Room jsonnum_format needs, the terminating NUL included. */
#define JSONNUM_MAX 32

/* Writes `v` as a JSON number into buf (JSONNUM_MAX bytes), NUL-terminated,
 * and returns its length: an integral value below 1e18 in magnitude exactly,
 * other finite values rounded to six decimals with trailing zeros dropped
 * (or with 17 significant digits when that would lose the value: below
 * 5e-7 or at 9e9 and above), NaN and infinities as null (as cJSON does). */
size_t jsonnum_format(double v, char *buf);

/* Adds `v` to object `o` under `key` (copied), formatted by jsonnum_format,
 * as a raw cJSON item that prints verbatim. Returns the item (owned by `o`),
 * or NULL when out of memory (`o` unchanged). */
cJSON *jsonnum_add(cJSON *o, const char *key, double v);

#endif
