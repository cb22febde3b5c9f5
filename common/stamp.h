/* stamp.h: what a tool's output was made from, kept beside it as
 * .NAME.json and tied to it by its inode, birth time (where the filesystem
 * keeps one) and modification time: an output removed and made again, or
 * changed by anything else, is not taken for the one recorded. */
#ifndef VS_STAMP_H
#define VS_STAMP_H

#include <jansson.h>

#include "err.h"

/* dir/.NAME.json for dir/NAME, malloc'd; NULL on failure. */
char *stamp_path(const char *target);

/* The record of target, or NULL when there is none or it is not tied to
 * target as it is now. */
json_t *stamp_read(const char *target);

/* Record rec (copied, with the tie added) for target, atomically. */
int stamp_write(const char *target, const json_t *rec, struct vs_err *e);

#endif
