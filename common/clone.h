/* clone.h: give a file a copy of another's content, the cheapest way the
 * filesystems allow:
 *
 *   reflink          FICLONE: share the source's blocks (XFS, btrfs, …)
 *   clonefile        clonefile(2) on macOS (APFS)
 *   copy_file_range  where the server can copy (NFS 4.2, SMB, Ceph)
 *   sparse-copy      read and write through a buffer
 *
 * The last two walk the source's data with SEEK_DATA/SEEK_HOLE, so holes stay
 * holes; sparse-copy also skips blocks of zeros inside the data, so it never
 * allocates a block of zeros: it takes no more space than the source, often
 * less.  Locally, copy_file_range is slower than a buffered copy (the kernel
 * splices page by page) and cannot skip zeros, so it is used only where it
 * spares the network. */
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
	CLONE_COPY_RANGE_ALWAYS = 4,	/* copy_file_range on any filesystem */
	CLONE_NO_FLUSH = 8,		/* do not start writeback while copying */
	CLONE_NO_THREADS = 16,		/* read and write in one thread */
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

/* Whether dst (an empty file, open for writing) can share src's blocks:
 * a one-block FICLONERANGE, undone at once.  1 yes, 0 no (the copy would
 * be a copy), -1 with e set.  For a clone that must be quick, to know
 * before it starts (cowclone --live). */
int clone_can_reflink(int src, int dst, struct vs_err *e);

const char *clone_method_name(enum clone_method m);

#endif
