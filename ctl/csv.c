/*
 * csv.c - the streaming CSV reader of csv.h.
 *
 * One thread uses the stream while the reader does (csv.h): bytes are taken
 * with getc_unlocked, without the lock per byte that getc takes.
 */
#include "csv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct csv_reader {
    FILE *f;
    char *buf; /* all fields of the record, each NUL-terminated */
    size_t len, cap;
    size_t *offs; /* start of each field in buf */
    char **ptrs;
    size_t cap_ptrs;
    size_t nf, cap_f;
    size_t line;       /* current line */
    size_t start_line; /* line of the last record */
    bool first;
    bool over; /* the record passed a bound: read to its end, kept nowhere */
};

int csv_new(FILE *f, csv_reader_t **out)
{
    csv_reader_t *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL)
        return -ENOMEM;
    r->f = f;
    r->line = 1;
    r->first = true;
    *out = r;
    return 0;
}

void csv_free(csv_reader_t *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    free(r->offs);
    free(r->ptrs);
    free(r);
}

size_t csv_line(const csv_reader_t *r)
{
    return r->start_line;
}

static int put(csv_reader_t *r, char ch, size_t field_start)
{
    if (r->over)
        return 0;
    if (r->len - field_start >= CSV_MAX_FIELD) {
        r->over = true;
        return 0;
    }
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        char *nb = realloc(r->buf, cap);
        if (nb == NULL)
            return -ENOMEM;
        r->buf = nb;
        r->cap = cap;
    }
    r->buf[r->len++] = ch;
    return 0;
}

/* Ends the current field (NUL) and starts the next. */
static int field_end(csv_reader_t *r, size_t *field_start)
{
    int rc = put(r, '\0', *field_start);
    if (rc != 0)
        return rc;
    if (r->nf == CSV_MAX_FIELDS)
        r->over = true;
    if (r->over)
        return 0;
    if (r->nf == r->cap_f) {
        size_t cap = r->cap_f ? r->cap_f * 2 : 16;
        size_t *no = realloc(r->offs, cap * sizeof(*no));
        if (no == NULL)
            return -ENOMEM;
        r->offs = no;
        r->cap_f = cap;
    }
    r->offs[r->nf++] = *field_start;
    *field_start = r->len;
    return 0;
}

int csv_next(csv_reader_t *r, char ***fields, size_t *n)
{
    enum { START, PLAIN, QUOTED, QUOTE_IN_QUOTED } st = START;
    size_t field_start = 0;
    int ch, rc;

    *fields = NULL;
    *n = 0;
    r->len = 0;
    r->nf = 0;
    r->over = false;
    if (r->first) {
        /* A UTF-8 byte order mark, as spreadsheet exports write. */
        int a = getc_unlocked(r->f);
        r->first = false;
        if (a == 0xEF) {
            int b = getc_unlocked(r->f), c = getc_unlocked(r->f);
            if (b != 0xBB || c != 0xBF)
                return -EINVAL;
        } else if (a != EOF) {
            ungetc(a, r->f);
        }
    }
    ch = getc_unlocked(r->f);
    if (ch == EOF)
        return ferror(r->f) ? -EIO : 0;
    r->start_line = r->line;
    for (;; ch = getc_unlocked(r->f)) {
        if (ch == EOF && ferror(r->f))
            return -EIO;
        switch (st) {
        case START:
        case PLAIN:
            if (ch == '"' && st == START) {
                st = QUOTED;
                continue;
            }
            if (ch == '"')
                return -EINVAL;
            if (ch == ',' || ch == '\n' || ch == EOF || ch == '\r') {
                if (ch == '\r') {
                    int nx = getc_unlocked(r->f);
                    if (nx != '\n' && nx != EOF)
                        ungetc(nx, r->f);
                    ch = '\n';
                }
                if ((rc = field_end(r, &field_start)) != 0)
                    return rc;
                if (ch == ',') {
                    st = START;
                    continue;
                }
                if (ch == '\n')
                    r->line++;
                goto done;
            }
            st = PLAIN;
            if ((rc = put(r, (char)ch, field_start)) != 0)
                return rc;
            break;
        case QUOTED:
            if (ch == EOF)
                return -EINVAL;
            if (ch == '"') {
                st = QUOTE_IN_QUOTED;
                continue;
            }
            if (ch == '\n')
                r->line++;
            if ((rc = put(r, (char)ch, field_start)) != 0)
                return rc;
            break;
        case QUOTE_IN_QUOTED:
            if (ch == '"') { /* "" inside quotes */
                st = QUOTED;
                if ((rc = put(r, '"', field_start)) != 0)
                    return rc;
                continue;
            }
            if (ch == ',' || ch == '\n' || ch == '\r' || ch == EOF) {
                st = PLAIN; /* the field ends here, as an unquoted one would */
                ungetc(ch, r->f);
                if (ch == EOF) {
                    if ((rc = field_end(r, &field_start)) != 0)
                        return rc;
                    goto done;
                }
                continue;
            }
            return -EINVAL;
        }
    }
done:
    if (r->over)
        return -E2BIG; /* the next call reads the record after it */
    if (r->nf > r->cap_ptrs || r->ptrs == NULL) {
        size_t cap = r->nf ? r->nf : 1;
        char **np = realloc(r->ptrs, cap * sizeof(char *));
        if (np == NULL)
            return -ENOMEM;
        r->ptrs = np;
        r->cap_ptrs = cap;
    }
    for (size_t i = 0; i < r->nf; i++)
        r->ptrs[i] = r->buf + r->offs[i];
    *fields = r->ptrs;
    *n = r->nf;
    return 1;
}
