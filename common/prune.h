/* prune.h: keep an OCI cache (the workspace's ./oci-cache) within bounds.
 *
 * What goes: blobs that no entry of index.json reaches (through its
 * manifest, or its index and their manifests), trees (rootfs/<hex>) of no
 * image named there, temporary files of killed writers; then, as asked,
 * whole images, least recently used first (their access records,
 * layout_touch, else when they were pulled): those not used for some days,
 * or as many as it takes to bring the cache within a budget, or to leave so
 * much free on its filesystem (oci-fetch's automatic pruning).  An image is
 * removed with every blob no remaining image needs.
 *
 * Never removed: the images given to keep.  Nothing is removed while a
 * tool uses the cache (its use lock, layout_use): the prune waits for them,
 * and they for it.  index.json is rewritten first and the blobs removed
 * after, so that at every moment, even after a kill -9, the layout is a
 * valid one whose entries name only blobs that are there. */
#ifndef VS_PRUNE_H
#define VS_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "layout.h"

struct prune_keep {
	const char *digest;	/* an image's manifest digest */
	const char *why;	/* "--keep", "slicer-mac.yaml", "being pulled" */
};

struct prune_opts {
	bool dry_run;			/* say what would go; change nothing */
	double older_than;		/* days unused; < 0: no such rule */
	int64_t budget;			/* bytes the cache may take; < 0: none */
	uint64_t need_free;		/* bytes to leave free on its
					 * filesystem; 0: no such rule */
	const struct prune_keep *keep;
	size_t nkeep;
	const char *const *keep_blobs;	/* blobs never removed (a pull's) */
	size_t nkeep_blobs;
};

/* Prune the cache l as o says; *section (the caller's) is the prune
 * section: removed, kept, dry_run, size.  The exclusive use lock is taken
 * here (waiting for the tools using the cache), unless dry_run. */
int prune_run(const struct oci_layout *l, const struct prune_opts *o,
    json_t **section, struct vs_err *e);

#endif
