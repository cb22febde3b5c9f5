/* layers.h: an image's layers, applied in order, as one stream of entries
 * to a sink (libarchive's model: one source of entries, many writers).
 *
 * Everything the OCI image layout asks of a reader is here, once:
 *   - each layer read and decompressed on a second thread (gzip through
 *     common/inflate: ISA-L, else zlib; zstd through libarchive), its
 *     diff_id computed while it streams and checked at its end;
 *   - names made clean (no "./", no empty or "." components) and the
 *     unsafe ones refused: absolute paths, "..", names too long;
 *   - whiteouts (".wh.NAME") and opaque directories (".wh..wh..opq"),
 *     which remove what LOWER layers put there, whatever the order of the
 *     entries in their own layer;
 *   - hardlink targets made clean like names.
 * A sink holds the tree (a host directory, an ext4 image) and does what
 * only it can: make an entry (replacing what is at its path, unless a
 * directory meets a directory), remove a path, list a directory, never
 * through a symbolic link in the tree.  Its errors are prefixed here with
 * "layer N: entry 'NAME': ". */
#ifndef VS_LAYERS_H
#define VS_LAYERS_H

#include <stdbool.h>
#include <stddef.h>

#include <archive.h>
#include <archive_entry.h>

#include "err.h"
#include "image.h"
#include "layout.h"

struct layer_entry {
	const char *path;	/* clean, relative; "" is the root */
	const char *dir;	/* its directory, clean ("" the root) */
	const char *name;	/* its last component ("" for the root) */
	const char *link;	/* a hardlink's target, clean, or NULL */
	struct archive_entry *ae;	/* type, mode, owner, times, xattrs */
	struct archive *a;	/* the entry's data: archive_read_data_block */
	size_t layer_no;	/* from 1 */
};

struct layer_sink {
	void *arg;
	/* Make le (a hardlink when le->link).  Sockets never reach it. */
	int (*entry)(void *arg, const struct layer_entry *le, struct vs_err *e);
	/* Remove path and everything beneath it; a missing path, or one
	 * whose directory is missing, is no error. */
	int (*remove)(void *arg, const char *path, struct vs_err *e);
	/* The names in directory path, malloc'd (*names NULL and *n 0 when
	 * path is missing or no directory). */
	int (*list)(void *arg, const char *path, char ***names, size_t *n,
	    struct vs_err *e);
	/* 1 when path is a directory, 0 when not or missing, -1 on error. */
	int (*is_dir)(void *arg, const char *path, struct vs_err *e);
};

/* The next block of le's data, for a sink: 0 with *p, *n at *off; 1 at
 * its end; -1 with e set: the layer unreadable (EX_DATAERR), a stop asked
 * (EX_TEMPFAIL), or a sparse map that goes back or beyond the entry's size
 * (EX_DATAERR: both sinks refuse what one of them could not write).
 * *end starts at 0: where the data so far ends. */
int layers_data(const struct layer_entry *le, const void **p, size_t *n,
    uint64_t *off, uint64_t *end, struct vs_err *e);

/* Apply img's layers, in order, to sink.  Progress (on the compressed
 * bytes) goes to stderr under label when it is a terminal and !quiet.
 * Returns 0, or -1 with e set: EX_DATAERR for a bad layer or a refused
 * entry (the message names the layer and the entry), EX_TEMPFAIL when a
 * stop was asked (stop.h), or what the sink said. */
int layers_apply(const struct oci_layout *l, const struct image *img,
    const struct layer_sink *sink, const char *label, bool quiet,
    struct vs_err *e);

/* Make name (a layer's entry name) clean into rel (cap bytes): no leading
 * "./", no empty or "." components.  Absolute names, ".." and names too
 * long are refused: -1, with *why saying which. */
int layers_clean_name(const char *name, char *rel, size_t cap,
    const char **why);

/* Which decompressor gzip layers get: "isa-l" or "zlib". */
const char *layers_inflater(void);

/* Whether an extended attribute's key is in a namespace Linux knows
 * (user., trusted., security., system.): one outside them is no attribute
 * any filesystem holds, so the layer is at fault, not the disk. */
bool layers_xattr_known(const char *key);

#endif
