#include "inflate.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#ifdef HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

enum phase {
	IN_MEMBER,	/* inside a gzip member */
	BETWEEN,	/* a member ended: another, or the end */
	DONE,		/* what follows the last member is not one: ignored */
};

struct inflater {
	bool isal;
	enum phase phase;
	unsigned members;	/* members begun */
	bool held;		/* a 0x1f taken from the end of an input: the
				 * first byte of the next member, perhaps */
	z_stream zs;
#ifdef HAVE_ISAL
	struct inflate_state is;
#endif
};

const char *inflater_name(const struct inflater *z)
{
	return z->isal ? "isa-l" : "zlib";
}

struct inflater *inflater_new(struct vs_err *e)
{
	struct inflater *z = calloc(1, sizeof *z);
	const char *want = getenv("VS_INFLATE");

	if (z == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "inflate"), NULL;
#ifdef HAVE_ISAL
	z->isal = !(want && strcmp(want, "zlib") == 0);
#else
	(void)want;
#endif
	if (z->isal) {
#ifdef HAVE_ISAL
		isal_inflate_init(&z->is);
		z->is.crc_flag = ISAL_GZIP;
#endif
	} else if (inflateInit2(&z->zs, 16 + MAX_WBITS) != Z_OK) {
		free(z);
		return vs_error(e, EX_OSERR, ENOMEM, "inflate"), NULL;
	}
	z->phase = BETWEEN;	/* (the first member is yet to come) */
	return z;
}

/* Between members: does another begin?  0 yes (and it is set up), 1 no
 * (done), 2 cannot tell yet (too little input). */
static int next_member(struct inflater *z, const unsigned char **in,
    size_t *len)
{
	if (*len == 0)
		return 2;
	if (!z->held) {
		if ((*in)[0] != 0x1f)
			return 1;
		if (*len < 2) {
			/* (kept: the caller gives new input, not this byte
			 * again) */
			z->held = true;
			(*in)++;
			(*len)--;
			return 2;
		}
		if ((*in)[1] != 0x8b)
			return 1;
	} else if ((*in)[0] != 0x8b) {
		z->held = false;	/* (trailing bytes, ignored) */
		return 1;
	}
	if (z->members > 0) {
#ifdef HAVE_ISAL
		if (z->isal) {
			isal_inflate_reset(&z->is);
			z->is.crc_flag = ISAL_GZIP;
		} else
#endif
			inflateReset(&z->zs);
	}
	z->members++;
	z->phase = IN_MEMBER;
	return 0;
}

static int corrupt(struct inflater *z, const char *why, struct vs_err *e)
{
	return vs_error(e, EX_DATAERR, 0, "%s: %s",
	    z->members > 1 ? "a gzip member" : "the gzip stream", why);
}

/* One step of the decoder on the member under way: *in and *in_len are
 * advanced, *made gets the bytes written to out (cap bytes). */
static int decode(struct inflater *z, const unsigned char **in,
    size_t *in_len, unsigned char *out, size_t cap, size_t *made,
    struct vs_err *e)
{
	/* (both libraries count in 32 bits) */
	size_t ai = *in_len < UINT32_MAX ? *in_len : UINT32_MAX;
	size_t ao = cap < UINT32_MAX ? cap : UINT32_MAX, used;

	if (z->isal) {
#ifdef HAVE_ISAL
		int r;

		z->is.next_in = (uint8_t *)(uintptr_t)*in;
		z->is.avail_in = (uint32_t)ai;
		z->is.next_out = out;
		z->is.avail_out = (uint32_t)ao;
		r = isal_inflate(&z->is);
		used = ai - z->is.avail_in;
		*made = ao - z->is.avail_out;
		if (r < 0)
			return corrupt(z, r == ISAL_INCORRECT_CHECKSUM ?
			    "bad checksum" : r == ISAL_INVALID_WRAPPER ||
			    r == ISAL_UNSUPPORTED_METHOD ? "bad header" :
			    "corrupt data", e);
		if (z->is.block_state == ISAL_BLOCK_FINISH)
			z->phase = BETWEEN;
#else
		used = *made = 0;
#endif
	} else {
		int r;

		z->zs.next_in = (Bytef *)(uintptr_t)*in;
		z->zs.avail_in = (uInt)ai;
		z->zs.next_out = out;
		z->zs.avail_out = (uInt)ao;
		r = inflate(&z->zs, Z_NO_FLUSH);
		used = ai - z->zs.avail_in;
		*made = ao - z->zs.avail_out;
		if (r == Z_STREAM_END)
			z->phase = BETWEEN;
		else if (r == Z_MEM_ERROR)
			return vs_error(e, EX_OSERR, ENOMEM, "inflate");
		else if (r != Z_OK && r != Z_BUF_ERROR)
			return corrupt(z, z->zs.msg ? z->zs.msg : "corrupt data",
			    e);
	}
	*in += used;
	*in_len -= used;
	return 0;
}

int inflater_run(struct inflater *z, const unsigned char **in, size_t *in_len,
    unsigned char *out, size_t cap, size_t *out_len, struct vs_err *e)
{
	*out_len = 0;
	for (;;) {
		size_t used, made;

		if (z->phase == DONE) {
			*in += *in_len;		/* trailing bytes: ignored */
			*in_len = 0;
			return 1;
		}
		if (z->phase == BETWEEN) {
			int r = next_member(z, in, in_len);
			if (r == 1) {
				if (z->members == 0)
					return vs_error(e, EX_DATAERR, 0,
					    "not gzip-compressed");
				z->phase = DONE;
				continue;
			}
			if (r == 2)
				return 0;
		}
		if (*out_len == cap)
			return 0;
		if (z->held) {
			/* the member's first byte, taken before */
			static const unsigned char magic = 0x1f;
			const unsigned char *h = &magic;
			size_t hl = 1, o;
			z->held = false;
			if (decode(z, &h, &hl, out + *out_len, cap - *out_len, &o,
			    e) < 0)
				return -1;
			*out_len += o;
			continue;
		}
		used = *in_len;
		if (decode(z, in, in_len, out + *out_len, cap - *out_len, &made,
		    e) < 0)
			return -1;
		used -= *in_len;
		*out_len += made;
		if (z->phase == IN_MEMBER && (used == 0 && made == 0))
			return 0;	/* more input, or more room */
	}
}

int inflater_finish(struct inflater *z, struct vs_err *e)
{
	if (z->phase == IN_MEMBER)
		return vs_error(e, EX_DATAERR, 0,
		    "the gzip stream is truncated (it ends inside a member)");
	if (z->members == 0)
		return vs_error(e, EX_DATAERR, 0, "not gzip-compressed");
	return 0;
}

void inflater_free(struct inflater *z)
{
	if (z == NULL)
		return;
	if (!z->isal)
		inflateEnd(&z->zs);
	free(z);
}
