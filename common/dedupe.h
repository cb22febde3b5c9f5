/* dedupe.h: share again the blocks that files hold alike (FIDEDUPERANGE,
 * on filesystems with shared extents: XFS with reflink, btrfs).
 *
 * Only each file's own blocks are read: its extents (FIEMAP) that are not
 * shared already, not preallocated, and, given the filesystem inside the
 * image (common/fsmap), only the blocks it uses.  Each 4 KiB block that is
 * not all zeros is hashed (64 bits); blocks of the same hash are grouped,
 * the first of each group is the source, and the kernel, which compares the
 * bytes itself before it shares anything, is asked to share each of the
 * others with it: safe on files in use.  Runs of neighbouring blocks go as
 * one range, up to 16 MiB per call.
 *
 * Memory is bounded by budget bytes whatever the size of the files: the
 * hash records (24 bytes per block read) are kept in memory when they fit,
 * else spread over temporary files by hash, one part at a time in memory;
 * the pairs to share are sent whenever their buffer is full. */
#ifndef VS_DEDUPE_H
#define VS_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fsmap.h"

#define DEDUPE_BLOCK 4096u

struct dedupe_file {
	const char *path;
	int fd;				/* open for reading and writing */
	const struct fsmap *map;	/* NULL: every data block counts */
	uint64_t deduped;		/* out: bytes of it now shared */
};

struct dedupe_stats {
	uint64_t read;		/* bytes read and hashed */
	uint64_t blocks;	/* blocks hashed */
	uint64_t alike;		/* blocks found alike another */
	uint64_t deduped;	/* bytes the kernel shared */
	uint64_t differ;	/* bytes it found not alike after all */
	uint64_t calls;		/* FIDEDUPERANGE calls */
	unsigned parts;		/* 1 in memory, else the temporary files */
};

/* Share the alike blocks of the n files.  EX_UNAVAILABLE (changing
 * nothing) when the filesystem cannot: the caller says so. */
int dedupe_run(struct dedupe_file *f, size_t n, size_t budget,
    struct dedupe_stats *st, struct vs_err *e);

/* Whether the filesystem the file path is on can share extents between
 * files: 1, 0, or -1 when path cannot be opened. */
int dedupe_supported(const char *path);

/* The 64-bit hash of a block (exposed for the unit tests). */
uint64_t dedupe_hash(const unsigned char *p, size_t n);

#endif
