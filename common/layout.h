/* layout.h: an OCI image layout (the workspace's ./oci-cache):
 *
 *   oci-layout                {"imageLayoutVersion":"1.0.0"}
 *   index.json                one entry per reference, named by the
 *                             annotation org.opencontainers.image.ref.name
 *   blobs/sha256/<hex>        content, each file named by its digest
 *
 * Blobs are written whole or not at all; index.json is replaced atomically,
 * under a lock (.lock in the layout), so that several writers can share one
 * layout. */
#ifndef VS_LAYOUT_H
#define VS_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define REF_NAME_ANNOTATION "org.opencontainers.image.ref.name"
/* What the reference resolved to at the registry (an index, or the manifest
 * itself), so that a later fetch can tell nothing changed. */
#define REF_SOURCE_ANNOTATION "dev.vmstrap.source.digest"

struct oci_layout {
	char *root;		/* absolute */
};

/* Open the layout at root; with create, make what is missing. */
int layout_open(struct oci_layout *l, const char *root, bool create,
    struct vs_err *e);
void layout_close(struct oci_layout *l);

/* root/blobs/<algo>/<hex>, malloc'd; NULL for an invalid digest. */
char *layout_blob_path(const struct oci_layout *l, const char *digest);

/* root/rootfs/<hex>, where oci-unpack puts the tree of the image whose
 * manifest has this digest, malloc'd; NULL for an invalid digest. */
char *layout_rootfs_path(const struct oci_layout *l, const char *digest);

/* Whether the blob is there with the given size (size < 0: any size). */
bool layout_has_blob(const struct oci_layout *l, const char *digest,
    int64_t size);

/* Store data as a blob after checking that it has this digest. */
int layout_put_blob(const struct oci_layout *l, const char *digest,
    const void *data, size_t len, struct vs_err *e);

/* Read a small blob (a manifest, a config) of at most max bytes, checking
 * its digest.  malloc'd, NUL-terminated; *len gets its size. */
char *layout_read_blob(const struct oci_layout *l, const char *digest,
    size_t max, size_t *len, struct vs_err *e);

/* Take the layout's lock (waiting for it); returns the fd to close. */
int layout_lock(const struct oci_layout *l, struct vs_err *e);

/* The cache's use lock (root/.use): every tool that reads or adds to the
 * cache holds it shared while it does (oci-fetch, oci-unpack, mkbase -i,
 * kextract -i); oci-prune holds it exclusive, so that it never removes
 * what one of them is reading, nor the blobs of a pull not yet named in
 * index.json.  Returns the fd to close; -2 (nothing to close) for a shared
 * lock on a cache this user cannot write to; -1 with e set. */
int layout_use(const struct oci_layout *l, bool exclusive, bool wait,
    struct vs_err *e);

/* Record that the image whose manifest has this digest was used now
 * (root/.access/<hex>, its time): oci-prune removes the least recently
 * used first.  Best effort: a cache that cannot be written is left as it
 * is. */
void layout_touch(const struct oci_layout *l, const char *manifest);

/* index.json, checked; and written whole (the caller holds layout_lock). */
json_t *layout_read_index(const struct oci_layout *l, struct vs_err *e);
int layout_write_index(const struct oci_layout *l, const json_t *idx,
    struct vs_err *e);

/* Point refname at a descriptor in index.json (replacing an entry of the
 * same name), recording source as what the reference resolved to. */
int layout_set_ref(const struct oci_layout *l, const char *refname,
    const json_t *descriptor, const char *source, struct vs_err *e);

/* index.json's descriptor for refname (a new reference), or NULL: with
 * e->code 0 when there is none, else an error (EX_DATAERR for an entry
 * without a valid digest, or without a size of 0 or more). */
json_t *layout_find_ref(const struct oci_layout *l, const char *refname,
    struct vs_err *e);

#endif
