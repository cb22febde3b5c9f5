/* clone.h: give a file a copy of another's content, the cheapest way the
 * filesystems allow:
 *
 *   reflink          FICLONE: share the source's blocks (XFS, btrfs, …)
 *   clonefile        clonefile(2) on macOS (APFS)
 *   copy_file_range  an in-kernel copy of each run of data
 *   sparse-copy      read and write each run of data
 *
 * The last two walk the source's data with SEEK_DATA/SEEK_HOLE and skip
 * blocks of zeros inside it too, so the copy never allocates a block of
 * zeros: it takes no more space than the source, often less. */
#ifndef VS_CLONE_H
#define VS_CLONE_H

#include <stdint.h>

#include "atomic.h"
#include "err.h"

enum clone_method {
	CLONE_REFLINK,
	CLONE_CLONEFILE,
	CLONE_COPY_RANGE,
	CLONE_SPARSE_COPY,
};

/* Flags that rule methods out (for tests, and for filesystems that lie). */
enum {
	CLONE_NO_REFLINK = 1,		/* neither FICLONE nor clonefile */
	CLONE_NO_COPY_RANGE = 2,	/* read and write instead */
};

struct clone_stats {
	enum clone_method method;
	uint64_t copied;	/* bytes written; 0 for a reflink */
};

typedef void (*clone_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Fill af's temporary file (open, empty) with the content of src.  On
 * failure e is set and af is left for the caller to abort. */
int clone_into(struct atomic_file *af, int src, unsigned flags,
    clone_progress_fn progress, void *arg, struct clone_stats *st,
    struct vs_err *e);

const char *clone_method_name(enum clone_method m);

#endif
