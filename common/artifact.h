/* artifact.h: a VM disk image, with its kernel and initrd, as one OCI
 * artifact (oci-push writes it, oci-fetch pulls it like any image, mkbase
 * restores the disk from it, kextract takes the kernel from it).
 *
 * The manifest is an OCI image manifest with
 *   artifactType  application/vnd.vmstrap.disk.v1
 *   config        application/vnd.vmstrap.disk.config.v1+json (below)
 *   layers        each distinct chunk blob, application/vnd.vmstrap.disk.chunk.v1+zstd,
 *                 then the kernel (application/vnd.vmstrap.kernel.v1) and
 *                 the initrd (application/vnd.vmstrap.initrd.v1), as they are
 *
 * The image is cut into chunks of chunk_size bytes (the last one shorter);
 * a chunk that is all holes or zeros is not uploaded, only listed ("zero");
 * the others are compressed with zstd, each a blob.  The config:
 *   {"vmstrap": 1, "size": N, "chunk_size": N,
 *    "chunks": [{"offset": N, "length": N, "digest": "sha256:…" (of the
 *                uncompressed bytes), "blob": "sha256:…" | "zero"}, …],
 *    "filesystem": {"type": "ext4", "uuid": "…"} | null,
 *    "source": "sha256:…" (the image the base was built from) | null,
 *    "kernel": {"digest", "size", "format", "version", "arch"} | null,
 *    "initrd": {"digest", "size"} | null} */
#ifndef VS_ARTIFACT_H
#define VS_ARTIFACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "digest.h"
#include "err.h"

#define ART_TYPE "application/vnd.vmstrap.disk.v1"
#define ART_CONFIG "application/vnd.vmstrap.disk.config.v1+json"
#define ART_CHUNK "application/vnd.vmstrap.disk.chunk.v1+zstd"
#define ART_KERNEL "application/vnd.vmstrap.kernel.v1"
#define ART_INITRD "application/vnd.vmstrap.initrd.v1"
/* 32 MiB: a disk 50 MB away from a pushed base sends two or three chunks;
 * Tart's 512 MiB would send 1 GB (bench/push measures it). */
#define ART_CHUNK_SIZE (UINT64_C(32) << 20)

struct art_chunk {
	uint64_t off, len;
	char digest[DIGEST_MAX];	/* of the uncompressed bytes */
	char blob[DIGEST_MAX];		/* "" for a zero chunk */
};

struct artifact {
	uint64_t size, chunk_size;
	size_t n;
	struct art_chunk *c;
	char uuid[40];
	char source[DIGEST_MAX];
	char kernel[DIGEST_MAX], initrd[DIGEST_MAX];	/* "" for none */
	char kformat[32], kversion[128], karch[16];
};

/* Whether a parsed manifest is a disk artifact. */
bool artifact_is(const json_t *manifest);

/* Parse and check a config: chunks in order from 0, each chunk_size long
 * but the last, covering size; valid digests.  EX_DATAERR otherwise. */
int artifact_parse(const char *body, size_t len, struct artifact *a,
    struct vs_err *e);
void artifact_free(struct artifact *a);

/* The sha256 of n zero bytes (cached for the last n asked). */
const char *artifact_zero_digest(uint64_t n);

#endif
