/* fsmap.h: which blocks of a disk image the ext4 filesystem inside uses,
 * from its block bitmaps (libext2fs, read-only, no mount): what imgcheck
 * --trim gives back to the host (the blocks it does not use) and what
 * imgcheck --dedupe reads (only those it does). */
#ifndef VS_FSMAP_H
#define VS_FSMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

struct fsmap;

/* Open the filesystem in the image at path and read its block bitmaps.
 * EX_DATAERR when there is no ext2/3/4 filesystem.  *clean says whether it
 * was cleanly unmounted and needs no journal recovery: its bitmaps are
 * then the whole truth (else the journal may hold newer ones). */
struct fsmap *fsmap_open(const char *path, bool *clean, struct vs_err *e);
void fsmap_close(struct fsmap *m);

/* The filesystem's block size, and its size in blocks. */
unsigned fsmap_block_size(const struct fsmap *m);
uint64_t fsmap_blocks(const struct fsmap *m);

/* Whether block b is in use (blocks beyond the filesystem count as used:
 * what is there is not the filesystem's to give back). */
bool fsmap_used(const struct fsmap *m, uint64_t b);

/* The first run of free blocks in [from, to): 1 with [*start, *end), or 0
 * when there is none. */
int fsmap_next_free(const struct fsmap *m, uint64_t from, uint64_t to,
    uint64_t *start, uint64_t *end);

#endif
