/* rootfs.h: the root filesystem tree a tool reads (mkbase, kextract), and
 * what it was unpacked from: named by an operand, or by the pipeline
 * document's rootfs section; with an operand, the stamp oci-unpack keeps
 * beside its trees says the digest. */
#ifndef VS_ROOTFS_H
#define VS_ROOTFS_H

#include <stdbool.h>

#include <jansson.h>

#include "digest.h"
#include "err.h"

struct rootfs {
	char *tree;			/* absolute, malloc'd */
	char digest[DIGEST_MAX];	/* the image's manifest digest, or "" */
	bool rootless;			/* ownership recorded, not applied */
	bool told;			/* the document or a stamp said so */
	bool image;			/* tree is an ext4 image file (a base),
					 * not a directory: kextract's */
};

/* The tree named by operand, or (operand NULL) by doc's rootfs section;
 * hint is the message for a document without one.  EX_NOINPUT when the
 * tree is missing, EX_DATAERR when it is not a directory or the document's
 * digest is not a digest. */
int rootfs_of(const json_t *doc, const char *operand, const char *hint,
    struct rootfs *r, struct vs_err *e);

void rootfs_free(struct rootfs *r);

#endif
