/* digest.h: content digests ("sha256:hex"), computed while data streams,
 * with OpenSSL's libcrypto (hardware-accelerated SHA-256). */
#ifndef VS_DIGEST_H
#define VS_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define DIGEST_MAX 136	/* "sha512:" + 128 hex + NUL */

struct digester {
	void *ctx;		/* EVP_MD_CTX */
	const char *algo;	/* "sha256" or "sha512" */
	uint64_t bytes;
};

/* Start a digest of algorithm algo ("sha256" or "sha512", or the algorithm
 * part of a digest string "sha256:…"). */
int digester_init(struct digester *d, const char *algo, struct vs_err *e);
void digester_update(struct digester *d, const void *p, size_t n);
/* Write "algo:hex" to out and free the context. */
void digester_final(struct digester *d, char out[DIGEST_MAX]);
void digester_free(struct digester *d);

/* Digest of a buffer, in the algorithm of like ("sha256:…"). */
int digest_buffer(const void *p, size_t n, const char *like,
    char out[DIGEST_MAX], struct vs_err *e);

/* Feed the first len bytes of fd to d (to resume a partial download). */
int digester_feed_fd(struct digester *d, int fd, uint64_t len,
    struct vs_err *e);

#endif
