/* test_jsonnum.c - JSON numbers without printf: exact integers, times to
 * the microsecond, valid JSON whatever the value. */
#include <math.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "jsonnum.h"

static const char *fmt(double v)
{
    static char buf[JSONNUM_MAX];
    size_t n = jsonnum_format(v, buf);

    CHECK_EQ(n, strlen(buf));
    return buf;
}

/* The text is one JSON number (or null), and reads back as `v` within
 * `tol` (0: exactly). */
static void round_trip(double v, double tol)
{
    const char *s = fmt(v);
    cJSON *j = cJSON_Parse(s);

    CHECK(j != NULL);
    if (!isfinite(v)) {
        CHECK(cJSON_IsNull(j));
    } else {
        double back = strtod(s, NULL);
        CHECK(cJSON_IsNumber(j));
        if (tol == 0)
            CHECK(back == v);
        else
            CHECK(fabs(back - v) <= tol);
    }
    cJSON_Delete(j);
}

static void test_integers(void)
{
    CHECK_STR(fmt(0), "0");
    CHECK_STR(fmt(-0.0), "0");
    CHECK_STR(fmt(7), "7");
    CHECK_STR(fmt(-42), "-42");
    CHECK_STR(fmt(1000000), "1000000");
    CHECK_STR(fmt(9007199254740991.0), "9007199254740991");
    CHECK_STR(fmt(1e17), "100000000000000000");
    CHECK_STR(fmt(1764950400), "1764950400");
    for (uint64_t x = 1; x < 1000000000000000ull; x = x * 3 + 1)
        round_trip((double)x, 0);
}

static void test_fractions(void)
{
    CHECK_STR(fmt(0.5), "0.5");
    CHECK_STR(fmt(-2.25), "-2.25");
    CHECK_STR(fmt(79.81), "79.81");
    CHECK_STR(fmt(1764950400.123456), "1764950400.123456");
    CHECK_STR(fmt(1764950400.1), "1764950400.1");
    CHECK_STR(fmt(2.9999999), "3"); /* the fraction rounds into the integer */
    CHECK_STR(fmt(0.000001), "0.000001");
    /* Unix times with any fraction: within half a microsecond. */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double t = 1.7e9 + (double)(x % 200000000000000ull) / 1e6 + 1e-7;
        round_trip(t, 5.01e-7);
        round_trip(-t / 1e6, 5.01e-7);
    }
}

static void test_outside(void)
{
    /* Below a microsecond, or a fraction beside a large integer part: %.17g,
     * exact. */
    round_trip(1e-9, 0);
    round_trip(-3.5e-7, 0);
    round_trip(1e13 + 0.5, 0);
    round_trip(1e300, 0);
    round_trip(-1e19, 0);
    round_trip(NAN, 0);
    round_trip(INFINITY, 0);
    round_trip(-INFINITY, 0);
    CHECK_STR(fmt(NAN), "null");
}

static void test_in_object(void)
{
    cJSON *o = cJSON_CreateObject();
    char *s;

    CHECK(jsonnum_add(o, "a", 3) != NULL);
    CHECK(jsonnum_add(o, "t", 1764950400.25) != NULL);
    CHECK(jsonnum_add(o, "n", NAN) != NULL);
    s = cJSON_PrintUnformatted(o);
    CHECK_STR(s, "{\"a\":3,\"t\":1764950400.25,\"n\":null}");
    cJSON_free(s);
    cJSON_Delete(o);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"integers", test_integers},
        {"fractions", test_fractions},
        {"outside", test_outside},
        {"in_object", test_in_object},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
