/* image.h: an image in the OCI cache, as oci-unpack and kextract read it:
 * its manifest, the config's rootfs.diff_ids, and the layers in order. */
#ifndef VS_IMAGE_H
#define VS_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "digest.h"
#include "err.h"
#include "layout.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

/* How a layer's tar stream is compressed. */
enum layer_compression {
	LAYER_UNSUPPORTED = -1,
	LAYER_TAR = 0,
	LAYER_GZIP,
	LAYER_ZSTD,
};

struct image_layer {
	char digest[DIGEST_MAX];	/* the blob */
	char diff_id[DIGEST_MAX];	/* its uncompressed tar */
	char media_type[128];
	int64_t size;
	enum layer_compression compression;
};

struct image {
	char manifest[DIGEST_MAX];
	char config[DIGEST_MAX];
	size_t nlayers;
	struct image_layer *layers;
	bool in_use;		/* use_fd holds the cache's use lock */
	int use_fd;
};

/* Check that d is a descriptor (mediaType, digest, size); what names it in
 * the message (EX_DATAERR). */
int image_check_descriptor(const json_t *d, const char *what,
    struct vs_err *e);

/* Parse and check an image manifest's text: a config descriptor and an
 * array of layer descriptors.  what names the image in messages. */
json_t *image_parse_manifest(const char *body, size_t len, const char *what,
    struct vs_err *e);

/* The compression a layer media type says (OCI and Docker types). */
enum layer_compression image_layer_compression(const char *media_type);

/* The manifest digest that ref stands for in the layout: a digest itself,
 * or a name in index.json (as given, or as oci-fetch normalises it:
 * "debian" is docker.io/library/debian:latest).  out gets the digest. */
int image_resolve(const struct oci_layout *l, const char *ref,
    char out[DIGEST_MAX], struct vs_err *e);

/* Load the image whose manifest has this digest: its config's diff_ids
 * matched to the layers, every layer's media type known and its blob in the
 * cache (EX_NOINPUT when one is missing).  Until image_free, the cache's use
 * lock is held (shared: oci-prune waits) and the image is recorded as used
 * now. */
int image_load(const struct oci_layout *l, const char *manifest,
    struct image *img, struct vs_err *e);
void image_free(struct image *img);

#endif
