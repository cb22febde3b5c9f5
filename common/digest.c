#include "digest.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

int digester_init(struct digester *d, const char *algo, struct vs_err *e)
{
	const EVP_MD *md;

	memset(d, 0, sizeof *d);
	if (strncmp(algo, "sha256", 6) == 0 && (algo[6] == '\0' || algo[6] == ':')) {
		md = EVP_sha256();
		d->algo = "sha256";
	} else if (strncmp(algo, "sha512", 6) == 0 &&
	    (algo[6] == '\0' || algo[6] == ':')) {
		md = EVP_sha512();
		d->algo = "sha512";
	} else {
		return vs_error(e, EX_DATAERR, 0,
		    "unsupported digest algorithm in '%.20s'", algo);
	}
	d->ctx = EVP_MD_CTX_new();
	if (d->ctx == NULL || EVP_DigestInit_ex(d->ctx, md, NULL) != 1) {
		digester_free(d);
		return vs_error(e, EX_OSERR, ENOMEM, "digest");
	}
	return 0;
}

void digester_update(struct digester *d, const void *p, size_t n)
{
	EVP_DigestUpdate(d->ctx, p, n);
	d->bytes += n;
}

void digester_final(struct digester *d, char out[DIGEST_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	size_t o;

	EVP_DigestFinal_ex(d->ctx, md, &len);
	o = (size_t)snprintf(out, DIGEST_MAX, "%s:", d->algo);
	for (unsigned i = 0; i < len && o + 2 < DIGEST_MAX; i++, o += 2)
		snprintf(out + o, DIGEST_MAX - o, "%02x", md[i]);
	digester_free(d);
}

void digester_free(struct digester *d)
{
	if (d->ctx)
		EVP_MD_CTX_free(d->ctx);
	d->ctx = NULL;
}

int digest_buffer(const void *p, size_t n, const char *like,
    char out[DIGEST_MAX], struct vs_err *e)
{
	struct digester d;

	if (digester_init(&d, like, e) < 0)
		return -1;
	digester_update(&d, p, n);
	digester_final(&d, out);
	return 0;
}

int digester_feed_fd(struct digester *d, int fd, uint64_t len,
    struct vs_err *e)
{
	unsigned char buf[1 << 16];
	uint64_t off = 0;

	while (off < len) {
		size_t want = len - off < sizeof buf ? (size_t)(len - off) : sizeof buf;
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vs_error(e, EX_IOERR, errno, "read");
		if (n == 0)
			return vs_error(e, EX_IOERR, 0, "short read");
		digester_update(d, buf, (size_t)n);
		off += (uint64_t)n;
	}
	return 0;
}
