/* inflate.h: gzip streams decompressed, with ISA-L's isal_inflate where it
 * was built in (about four times zlib's speed here) and zlib otherwise.
 * Concatenated gzip members (as pigz and some registries write them) are
 * one stream, as gzip -d reads them.
 *
 * VS_INFLATE=zlib in the environment takes zlib even where ISA-L is built
 * in (for tests of that path, and to compare). */
#ifndef VS_INFLATE_H
#define VS_INFLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct inflater;

/* A new decompressor, or NULL with e set. */
struct inflater *inflater_new(struct vs_err *e);

/* Which implementation it uses: "isa-l" or "zlib". */
const char *inflater_name(const struct inflater *z);

/* Decompress from *in (*in_len bytes) into out (cap bytes): both are
 * advanced past what was used; *out_len gets the bytes written.  Returns
 * 0 (call again with more input or more room), 1 at the end of the
 * stream (the last member ended and no input is left), or -1 with e set
 * (EX_DATAERR: not gzip, corrupt, a bad checksum).  At the end of the
 * input, inflater_finish says whether the stream was whole. */
int inflater_run(struct inflater *z, const unsigned char **in, size_t *in_len,
    unsigned char *out, size_t cap, size_t *out_len, struct vs_err *e);

/* The input is all given: 0 when the stream ended whole, else -1 with e
 * set (EX_DATAERR: truncated). */
int inflater_finish(struct inflater *z, struct vs_err *e);

void inflater_free(struct inflater *z);

#endif
