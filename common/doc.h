/* doc.h: the pipeline document (DESIGN.md): one JSON object on one line.
 *
 * A tool reads it, adds its own top-level section and writes it on; every
 * other section passes through unchanged in meaning. */
#ifndef VS_DOC_H
#define VS_DOC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "err.h"

/* json_decref at the end of the scope (see cleanup.h). */
static inline void cleanup_jsonp(json_t **p)
{
	json_decref(*p);
}
#define cleanup_json __attribute__((cleanup(cleanup_jsonp)))

/* The largest document accepted; a real one is a few kilobytes. */
#define DOC_MAX_BYTES (16u << 20)

/* Read a document from in.  Empty input (only whitespace) is no document:
 * an empty object is returned and *present is false.  Invalid JSON, a value
 * that is not an object, or data after the object is refused with EX_DATAERR
 * and a message that gives the byte offset. */
json_t *doc_read(FILE *in, bool *present, struct vs_err *e);

/* doc_read(stdin) when stdin is not a terminal; an empty object when it is. */
json_t *doc_read_stdin(bool *present, struct vs_err *e);

/* What a tool works on: with from_stdin, the document on stdin, which must
 * be there (else EX_USAGE, "no pipeline document on stdin: HINT"); without,
 * a new empty document (its operands say everything). */
json_t *doc_input(bool from_stdin, const char *hint, struct vs_err *e);

/* Write doc as one line of compact JSON and a newline. */
int doc_write(FILE *out, const json_t *doc, struct vs_err *e);

/* Set top-level section name to obj (a reference to obj is stolen). */
int doc_set(json_t *doc, const char *name, json_t *obj, struct vs_err *e);

/* The string at doc.section.key.  When it is missing or not a string, fill e
 * (EX_DATAERR) with a message naming section.key and hint, return NULL. */
const char *doc_need_str(const json_t *doc, const char *section,
    const char *key, const char *hint, struct vs_err *e);

#endif
