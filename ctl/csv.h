/*
 * csv.h - a streaming CSV reader (RFC 4180: comma separated, fields in
 * double quotes may hold commas, newlines and "" for a quote; CRLF or LF
 * line ends; a UTF-8 BOM at the start is skipped).
 *
 * Bounded: a field longer than CSV_MAX_FIELD or a record with more than
 * CSV_MAX_FIELDS fields is an error, so a hostile file cannot grow memory
 * without limit. Errors: 0 or negative errno (-EINVAL for malformed input:
 * a quote inside an unquoted field, text after a closing quote, a quoted
 * field left open at the end of the file, after which the reader cannot
 * find the next record; -E2BIG for the bounds: that record is read to its
 * end and dropped, and the next call returns the record after it).
 */
#ifndef AVP_CTL_CSV_H
#define AVP_CTL_CSV_H

#include <stddef.h>
#include <stdio.h>

#define CSV_MAX_FIELD ((size_t)1 << 20)
#define CSV_MAX_FIELDS 1024

typedef struct csv_reader csv_reader_t;

/* A reader of `f` (not closed by csv_free). Reads without the stream's
 * lock: only one thread may use `f` while the reader does. */
int csv_new(FILE *f, csv_reader_t **out);
void csv_free(csv_reader_t *r);

/*
 * Reads the next record. Returns 1 with *fields (n of them, NUL-terminated
 * strings owned by the reader, valid until the next call), 0 at the end of
 * the input, or a negative error. A blank line is a record of one empty
 * field; callers usually skip it.
 */
int csv_next(csv_reader_t *r, char ***fields, size_t *n);

/* The line number (1-based) on which the last record returned started. */
size_t csv_line(const csv_reader_t *r);

#endif
