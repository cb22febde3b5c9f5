/* size.h: sizes as the storage flow writes them: a whole number and a unit,
 * M, G or T (any case, powers of 1024): "15G", "512M", "1T". */
#ifndef VS_SIZE_H
#define VS_SIZE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The smallest disk the storage flow allows. */
#define SIZE_DISK_MIN (UINT64_C(5) << 30)
/* The largest size accepted: what off_t can hold. */
#define SIZE_MAX_BYTES ((uint64_t)INT64_MAX)

/* Parse s into bytes.  On failure fill e (EX_USAGE) with a message that names
 * s and shows the accepted form, and return -1. */
int size_parse(const char *s, uint64_t *bytes, struct vs_err *e);

/* size_parse, and also refuse anything below SIZE_DISK_MIN. */
int size_parse_disk(const char *s, uint64_t *bytes, struct vs_err *e);

/* Write bytes in the largest unit that divides it exactly ("15G", "1536M"),
 * or in bytes ("1234 bytes").  Returns buf. */
char *size_format(uint64_t bytes, char *buf, size_t len);

/* bytes for people, rounded, as du -h writes them: "0B", "4.0K", "507M",
 * "15G". */
char *size_human(uint64_t bytes, char *buf, size_t len);

#endif
