/* test_csv.c - the CSV reader of avenpingctl import. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static FILE *mem(const char *s, size_t n)
{
    FILE *f = fmemopen((void *)s, n, "r");
    CHECK(f != NULL);
    return f;
}

/* Reads every record of `s` into "a|b|c;" form for comparison. Returns the
 * last csv_next result (0 at a clean end). */
static int flatten(const char *s, size_t n, char *out, size_t cap)
{
    FILE *f = mem(s, n);
    csv_reader_t *r;
    char **fl;
    size_t nf, len = 0;
    int rc;

    CHECK(csv_new(f, &r) == 0);
    out[0] = '\0';
    while ((rc = csv_next(r, &fl, &nf)) == 1) {
        for (size_t i = 0; i < nf; i++)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "|" : "", fl[i]);
        len += (size_t)snprintf(out + len, cap - len, ";");
    }
    csv_free(r);
    fclose(f);
    return rc;
}

#define S(x) x, sizeof(x) - 1

static void test_basic(void)
{
    char out[512];

    CHECK(flatten(S("to,name\n+1555,Ann\n+1666,Bob\n"), out, sizeof out) == 0);
    CHECK(strcmp(out, "to|name;+1555|Ann;+1666|Bob;") == 0);
    /* No final newline, CRLF, empty fields. */
    CHECK(flatten(S("a,b\r\n1,\r\n,2"), out, sizeof out) == 0);
    CHECK(strcmp(out, "a|b;1|;|2;") == 0);
    /* Lone CR line ends (old Mac exports). */
    CHECK(flatten(S("a\rb\r"), out, sizeof out) == 0);
    CHECK(strcmp(out, "a;b;") == 0);
    /* A BOM is skipped. */
    CHECK(flatten(S("\xEF\xBB\xBFto\n1\n"), out, sizeof out) == 0);
    CHECK(strcmp(out, "to;1;") == 0);
    /* Blank line: one empty field. */
    CHECK(flatten(S("a\n\nb\n"), out, sizeof out) == 0);
    CHECK(strcmp(out, "a;;b;") == 0);
    CHECK(flatten(S(""), out, sizeof out) == 0);
    CHECK(strcmp(out, "") == 0);
}

static void test_quoted(void)
{
    char out[512];
    FILE *f;
    csv_reader_t *r;
    char **fl;
    size_t nf;

    CHECK(flatten(S("\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\nx,\"\",y\n"), out, sizeof out) ==
          0);
    CHECK(strcmp(out, "a,b|say \"hi\"|two\nlines;x||y;") == 0);
    CHECK(flatten(S("\"end\""), out, sizeof out) == 0);
    CHECK(strcmp(out, "end;") == 0);
    /* Line numbers count the newlines inside quotes. */
    f = mem(S("h\n\"1\n2\"\nz\n"));
    CHECK(csv_new(f, &r) == 0);
    CHECK(csv_next(r, &fl, &nf) == 1 && csv_line(r) == 1);
    CHECK(csv_next(r, &fl, &nf) == 1 && csv_line(r) == 2);
    CHECK(csv_next(r, &fl, &nf) == 1 && csv_line(r) == 4 && strcmp(fl[0], "z") == 0);
    CHECK(csv_next(r, &fl, &nf) == 0);
    csv_free(r);
    fclose(f);
}

static void test_malformed(void)
{
    char out[512];

    CHECK(flatten(S("a\"b\n"), out, sizeof out) == -EINVAL);   /* quote in a plain field */
    CHECK(flatten(S("\"a\"b\n"), out, sizeof out) == -EINVAL); /* text after the quote */
    CHECK(flatten(S("\"open\nnever closed"), out, sizeof out) == -EINVAL);
    CHECK(flatten(S("\xEF\xBB"
                    "x\n"),
                  out, sizeof out) == -EINVAL); /* half a BOM */
}

static void test_bounds(void)
{
    size_t n = CSV_MAX_FIELD + 10;
    char *big = malloc(n), out[64];
    char many[CSV_MAX_FIELDS * 2 + 8];

    CHECK(big != NULL);
    memset(big, 'x', n);
    CHECK(flatten(big, n, out, sizeof out) == -E2BIG);
    big[0] = '"';
    big[n - 1] = '"';
    CHECK(flatten(big, n, out, sizeof out) == -E2BIG);
    /* Left open, it is malformed (the reader cannot tell where it ends). */
    big[n - 1] = 'x';
    CHECK(flatten(big, n, out, sizeof out) == -EINVAL);
    free(big);
    /* CSV_MAX_FIELDS + 1 fields. */
    memset(many, ',', CSV_MAX_FIELDS);
    many[CSV_MAX_FIELDS] = '\n';
    CHECK(flatten(many, CSV_MAX_FIELDS + 1, out, sizeof out) == -E2BIG);
    /* Exactly CSV_MAX_FIELDS fields is fine. */
    many[CSV_MAX_FIELDS - 1] = '\n';
    {
        FILE *f = mem(many, CSV_MAX_FIELDS);
        csv_reader_t *r;
        char **fl;
        size_t nf;
        CHECK(csv_new(f, &r) == 0);
        CHECK(csv_next(r, &fl, &nf) == 1 && nf == CSV_MAX_FIELDS);
        csv_free(r);
        fclose(f);
    }
}

/* A record over a bound is read to its end and dropped: the records after
 * it are read as if it were not there, line numbers included (quoted
 * newlines in the dropped one counted). */
static void test_bounds_resync(void)
{
    const char head[] = "to,text\n+1,a\n+2,\"";
    const char tail[] = "\n\"\n+3,c\n";
    size_t big = CSV_MAX_FIELD + 10, n = sizeof(head) - 1 + big + sizeof(tail) - 1;
    char *s = malloc(n), many[CSV_MAX_FIELDS * 2 + 16];
    FILE *f;
    csv_reader_t *r;
    char **fl;
    size_t nf;

    CHECK(s != NULL);
    memcpy(s, head, sizeof(head) - 1);
    memset(s + sizeof(head) - 1, 'x', big);
    s[sizeof(head) - 1 + 5] = '\n'; /* a quoted newline in the big field */
    memcpy(s + sizeof(head) - 1 + big, tail, sizeof(tail) - 1);
    f = mem(s, n);
    CHECK(csv_new(f, &r) == 0);
    CHECK(csv_next(r, &fl, &nf) == 1 && nf == 2 && csv_line(r) == 1);
    CHECK(csv_next(r, &fl, &nf) == 1 && strcmp(fl[1], "a") == 0);
    CHECK(csv_next(r, &fl, &nf) == -E2BIG && csv_line(r) == 3);
    CHECK(csv_next(r, &fl, &nf) == 1 && nf == 2 && strcmp(fl[0], "+3") == 0 &&
          strcmp(fl[1], "c") == 0 && csv_line(r) == 6);
    CHECK(csv_next(r, &fl, &nf) == 0);
    csv_free(r);
    fclose(f);
    free(s);
    /* Too many fields, then a good record. */
    memset(many, ',', CSV_MAX_FIELDS + 1);
    memcpy(many + CSV_MAX_FIELDS + 1, "\nx,y\n", 6); /* its NUL not read (below) */
    f = mem(many, CSV_MAX_FIELDS + 6);
    CHECK(csv_new(f, &r) == 0);
    CHECK(csv_next(r, &fl, &nf) == -E2BIG);
    CHECK(csv_next(r, &fl, &nf) == 1 && nf == 2 && strcmp(fl[1], "y") == 0);
    CHECK(csv_next(r, &fl, &nf) == 0);
    csv_free(r);
    fclose(f);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } cases[] = {{"basic", test_basic},
                 {"quoted", test_quoted},
                 {"malformed", test_malformed},
                 {"bounds", test_bounds},
                 {"bounds_resync", test_bounds_resync}};
    int ran = 0;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        cases[i].fn();
        printf("ok %s\n", cases[i].name);
        ran++;
    }
    return ran ? 0 : 1;
}
