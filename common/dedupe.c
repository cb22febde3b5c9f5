/* dedupe.c: find the blocks files hold alike, and have the kernel share
 * them (FIDEDUPERANGE). */
#include "dedupe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/fiemap.h>
#include <linux/fs.h>

#include "cleanup.h"
#include "path.h"
#include "stop.h"

/* The most one call shares: what the kernel takes per range. */
#define MAX_RUN ((16u << 20) / DEDUPE_BLOCK)
#define CHUNK (1u << 20)

struct rec {
	uint64_t h;
	uint64_t blk;
	uint32_t file;
	uint32_t pad;
};

struct pair {
	uint32_t dfile, sfile;
	uint64_t dblk, sblk;
};

struct run {
	struct dedupe_file *f;
	size_t n;
	struct dedupe_stats *st;
	struct vs_err *e;
	/* records: in memory (parts == 1), else spread over part files */
	struct rec *recs;
	size_t nrecs, caprecs;
	FILE **part;
	unsigned parts;
	/* pairs to share */
	struct pair *pairs;
	size_t npairs, cappairs;
	unsigned char *buf;	/* what is read, CHUNK bytes */
};

uint64_t dedupe_hash(const unsigned char *p, size_t n)
{
	/* four lanes of multiply-rotate over 8-byte words, then mixed: fast,
	 * and good enough, since the kernel compares before it shares */
	const uint64_t k1 = 0x9e3779b185ebca87ull, k2 = 0xc2b2ae3d27d4eb4full;
	uint64_t a = k1, b = k2, c = ~k1, d = ~k2;
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		uint64_t w[4];
		memcpy(w, p + i, sizeof w);
		a = ((a ^ w[0]) * k1); a = (a << 31) | (a >> 33);
		b = ((b ^ w[1]) * k1); b = (b << 31) | (b >> 33);
		c = ((c ^ w[2]) * k1); c = (c << 31) | (c >> 33);
		d = ((d ^ w[3]) * k1); d = (d << 31) | (d >> 33);
	}
	for (; i < n; i++)
		a = (a ^ p[i]) * k2;
	a ^= (b << 7 | b >> 57) ^ (c << 17 | c >> 47) ^ (d << 29 | d >> 35) ^ n;
	a ^= a >> 33;
	a *= k2;
	a ^= a >> 29;
	a *= k1;
	a ^= a >> 32;
	return a;
}

static bool zero_block(const unsigned char *p)
{
	static const unsigned char z[64];

	if (memcmp(p, z, sizeof z) != 0)
		return false;
	return memcmp(p, p + 64, DEDUPE_BLOCK - 64) == 0;
}

int dedupe_supported(const char *path)
{
	cleanup_free char *dir = NULL;
	struct file_clone_range r = { 0 };
	int src, tmp, ok;

	if (path_split(path, &dir, NULL) < 0)
		return -1;
	src = open(path, O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return -1;
	/* (a one-block reflink into a nameless file beside it: where files
	 * can share blocks, they can be made to share them again) */
	tmp = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0) {
		close(src);
		return 0;
	}
	r.src_fd = src;
	r.src_length = DEDUPE_BLOCK;
	ok = ioctl(tmp, FICLONERANGE, &r) == 0;
	if (!ok && errno == EINVAL) {
		/* (a file smaller than a block: the whole of it) */
		r.src_length = 0;
		ok = ioctl(tmp, FICLONERANGE, &r) == 0;
	}
	close(tmp);
	close(src);
	return ok;
}

/* --- records ------------------------------------------------------------- */

static int add_rec(struct run *r, uint64_t h, uint32_t file, uint64_t blk)
{
	struct rec x = { .h = h, .blk = blk, .file = file };

	if (r->parts > 1) {
		if (fwrite(&x, sizeof x, 1, r->part[h % r->parts]) != 1)
			return vs_error(r->e, EX_IOERR, errno, "a temporary file");
		return 0;
	}
	if (r->nrecs == r->caprecs) {
		size_t cap = r->caprecs ? r->caprecs * 2 : 4096;
		struct rec *nv = realloc(r->recs, cap * sizeof *nv);
		if (nv == NULL)
			return vs_error(r->e, EX_OSERR, ENOMEM, "dedupe");
		r->recs = nv;
		r->caprecs = cap;
	}
	r->recs[r->nrecs++] = x;
	return 0;
}

/* The extents of f to read, in turn: fn(arg, off, len) for each that is
 * its own (not shared, not preallocated).  Counts blocks with count. */
typedef int (*extent_fn)(struct run *r, uint32_t fi, uint64_t off,
    uint64_t len);

static int each_extent(struct run *r, uint32_t fi, extent_fn fn)
{
	enum { N = 256 };
	struct fiemap *fm = malloc(sizeof *fm + N * sizeof(struct fiemap_extent));
	uint64_t start = 0;
	int rc = 0;

	if (fm == NULL)
		return vs_error(r->e, EX_OSERR, ENOMEM, "dedupe");
	for (;;) {
		bool last = false;

		memset(fm, 0, sizeof *fm);
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET - start;
		fm->fm_extent_count = N;
		if (ioctl(r->f[fi].fd, FS_IOC_FIEMAP, fm) < 0) {
			rc = vs_error(r->e, EX_IOERR, errno, "%s: FIEMAP",
			    r->f[fi].path);
			break;
		}
		if (fm->fm_mapped_extents == 0)
			break;
		for (unsigned i = 0; i < fm->fm_mapped_extents && rc == 0; i++) {
			struct fiemap_extent *x = &fm->fm_extents[i];
			if (x->fe_flags & FIEMAP_EXTENT_LAST)
				last = true;
			start = x->fe_logical + x->fe_length;
			if (x->fe_flags & (FIEMAP_EXTENT_SHARED |
			    FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_UNKNOWN |
			    FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_ENCODED))
				continue;
			rc = fn(r, fi, x->fe_logical, x->fe_length);
		}
		if (rc < 0 || last)
			break;
	}
	free(fm);
	return rc;
}

static bool block_used(const struct dedupe_file *f, uint64_t off)
{
	unsigned bs;

	if (f->map == NULL)
		return true;
	bs = fsmap_block_size(f->map);
	/* (a 4 KiB block is used when any of the filesystem's in it is) */
	for (uint64_t o = off; o < off + DEDUPE_BLOCK; o += bs)
		if (fsmap_used(f->map, o / bs))
			return true;
	return false;
}

static int count_extent(struct run *r, uint32_t fi, uint64_t off, uint64_t len)
{
	uint64_t from = (off + DEDUPE_BLOCK - 1) / DEDUPE_BLOCK;
	uint64_t to = (off + len) / DEDUPE_BLOCK;

	for (uint64_t b = from; b < to; b++)
		if (block_used(&r->f[fi], b * DEDUPE_BLOCK))
			r->st->blocks++;
	return 0;
}

static int hash_extent(struct run *r, uint32_t fi, uint64_t off, uint64_t len)
{
	unsigned char *buf = r->buf;
	uint64_t from = (off + DEDUPE_BLOCK - 1) / DEDUPE_BLOCK * DEDUPE_BLOCK;
	uint64_t to = (off + len) / DEDUPE_BLOCK * DEDUPE_BLOCK;

	while (from < to) {
		size_t want = to - from < CHUNK ? (size_t)(to - from) : CHUNK;
		ssize_t got;

		if (stop_signal)
			return vs_error(r->e, EX_TEMPFAIL, 0, "interrupted");
		got = pread(r->f[fi].fd, buf, want, (off_t)from);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return vs_error(r->e, EX_IOERR, errno, "%s", r->f[fi].path);
		if (got < (ssize_t)DEDUPE_BLOCK)
			break;
		r->st->read += (uint64_t)got;
		for (size_t i = 0; i + DEDUPE_BLOCK <= (size_t)got; i += DEDUPE_BLOCK) {
			uint64_t o = from + i;
			if (!block_used(&r->f[fi], o) || zero_block(buf + i))
				continue;
			if (add_rec(r, dedupe_hash(buf + i, DEDUPE_BLOCK), fi,
			    o / DEDUPE_BLOCK) < 0)
				return -1;
		}
		from += (uint64_t)got / DEDUPE_BLOCK * DEDUPE_BLOCK;
	}
	return 0;
}

/* --- sharing --------------------------------------------------------------- */

static int cmp_rec(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;

	if (x->h != y->h)
		return x->h < y->h ? -1 : 1;
	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	return x->blk < y->blk ? -1 : x->blk > y->blk;
}

static int cmp_pair(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;

	if (x->dfile != y->dfile)
		return x->dfile < y->dfile ? -1 : 1;
	return x->dblk < y->dblk ? -1 : x->dblk > y->dblk;
}

/* Ask the kernel to share count blocks of dst at dblk with src's at sblk.
 * Returns the bytes it shared, or -1 on an error that stops it all. */
static int64_t share(struct run *r, const struct pair *p, uint64_t count)
{
	union {
		struct file_dedupe_range r;
		unsigned char b[sizeof(struct file_dedupe_range) +
		    sizeof(struct file_dedupe_range_info)];
	} u;
	struct file_dedupe_range *a = &u.r;

	memset(&u, 0, sizeof u);
	a->src_offset = p->sblk * DEDUPE_BLOCK;
	a->src_length = count * DEDUPE_BLOCK;
	a->dest_count = 1;
	a->info[0].dest_fd = r->f[p->dfile].fd;
	a->info[0].dest_offset = p->dblk * DEDUPE_BLOCK;
	r->st->calls++;
	if (ioctl(r->f[p->sfile].fd, FIDEDUPERANGE, a) < 0) {
		if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV ||
		    errno == EINVAL)
			return 0;	/* (files it will not share: skipped) */
		vs_error(r->e, EX_IOERR, errno, "%s: share blocks with %s",
		    r->f[p->dfile].path, r->f[p->sfile].path);
		return -1;
	}
	if (a->info[0].status == FILE_DEDUPE_RANGE_DIFFERS)
		return -2;
	if (a->info[0].status < 0)
		return 0;	/* (that one range: a file that changed size) */
	return (int64_t)a->info[0].bytes_deduped;
}

static int flush_pairs(struct run *r)
{
	size_t i = 0;

	qsort(r->pairs, r->npairs, sizeof *r->pairs, cmp_pair);
	while (i < r->npairs) {
		struct pair *p = &r->pairs[i];
		uint64_t k = 1;
		int64_t got;

		if (stop_signal)
			return vs_error(r->e, EX_TEMPFAIL, 0, "interrupted");
		/* a run: the next blocks of both, alike too */
		while (i + k < r->npairs && k < MAX_RUN &&
		    r->pairs[i + k].dfile == p->dfile &&
		    r->pairs[i + k].sfile == p->sfile &&
		    r->pairs[i + k].dblk == p->dblk + k &&
		    r->pairs[i + k].sblk == p->sblk + k)
			k++;
		/* (never a range over itself, in one file) */
		if (p->dfile == p->sfile && p->dblk < p->sblk + k &&
		    p->sblk < p->dblk + k)
			k = 1;
		got = share(r, p, k);
		if (got == -1)
			return -1;
		if (got == -2 && k > 1) {
			/* one block of the run differs: each on its own */
			for (uint64_t j = 0; j < k; j++) {
				got = share(r, &r->pairs[i + j], 1);
				if (got == -1)
					return -1;
				if (got == -2)
					r->st->differ += DEDUPE_BLOCK;
				else {
					r->st->deduped += (uint64_t)got;
					r->f[p->dfile].deduped += (uint64_t)got;
				}
			}
		} else if (got == -2) {
			r->st->differ += DEDUPE_BLOCK;
		} else {
			r->st->deduped += (uint64_t)got;
			r->f[p->dfile].deduped += (uint64_t)got;
		}
		i += k;
	}
	r->npairs = 0;
	return 0;
}

/* The groups of alike blocks in recs (sorted): pairs, sent as the buffer
 * fills. */
static int group(struct run *r, struct rec *recs, size_t n)
{
	qsort(recs, n, sizeof *recs, cmp_rec);
	for (size_t i = 0; i < n; ) {
		size_t j = i + 1;

		while (j < n && recs[j].h == recs[i].h)
			j++;
		for (size_t k = i + 1; k < j; k++) {
			if (r->npairs == r->cappairs && flush_pairs(r) < 0)
				return -1;
			r->pairs[r->npairs++] = (struct pair){
				.dfile = recs[k].file, .sfile = recs[i].file,
				.dblk = recs[k].blk, .sblk = recs[i].blk };
			r->st->alike++;
		}
		i = j;
	}
	return 0;
}

int dedupe_run(struct dedupe_file *f, size_t n, size_t budget,
    struct dedupe_stats *st, struct vs_err *e)
{
	struct run r = { .f = f, .n = n, .st = st, .e = e, .parts = 1 };
	int rc = -1;

	memset(st, 0, sizeof *st);
	if (budget < (1u << 20))
		budget = 1u << 20;
	/* how many blocks: so many records, in memory or in parts */
	for (size_t i = 0; i < n; i++) {
		f[i].deduped = 0;
		if (each_extent(&r, (uint32_t)i, count_extent) < 0)
			return -1;
	}
	{
		uint64_t need = st->blocks * sizeof(struct rec);
		uint64_t parts = (need + budget / 2 - 1) / (budget / 2);
		if (parts > 1024)
			parts = 1024;
		r.parts = parts > 1 ? (unsigned)parts : 1;
	}
	st->parts = r.parts;
	st->blocks = 0;
	r.cappairs = budget / 2 / sizeof(struct pair);
	r.pairs = malloc(r.cappairs * sizeof *r.pairs);
	r.buf = malloc(CHUNK);
	if (r.pairs == NULL || r.buf == NULL) {
		free(r.pairs);
		free(r.buf);
		return vs_error(e, EX_OSERR, ENOMEM, "dedupe");
	}
	if (r.parts > 1) {
		r.part = calloc(r.parts, sizeof *r.part);
		if (r.part == NULL) {
			vs_error(e, EX_OSERR, ENOMEM, "dedupe");
			goto out;
		}
		for (unsigned i = 0; i < r.parts; i++)
			if ((r.part[i] = tmpfile()) == NULL) {
				vs_error(e, EX_CANTCREAT, errno, "a temporary file");
				goto out;
			}
	}
	for (size_t i = 0; i < n; i++)
		if (each_extent(&r, (uint32_t)i, hash_extent) < 0)
			goto out;
	if (r.parts == 1) {
		st->blocks = r.nrecs;
		if (group(&r, r.recs, r.nrecs) < 0)
			goto out;
	} else {
		for (unsigned i = 0; i < r.parts; i++) {
			long len;
			size_t cnt;

			if (fflush(r.part[i]) != 0 || (len = ftell(r.part[i])) < 0) {
				vs_error(e, EX_IOERR, errno, "a temporary file");
				goto out;
			}
			cnt = (size_t)len / sizeof(struct rec);
			st->blocks += cnt;
			free(r.recs);
			r.recs = malloc((cnt ? cnt : 1) * sizeof *r.recs);
			if (r.recs == NULL) {
				vs_error(e, EX_OSERR, ENOMEM, "dedupe");
				goto out;
			}
			rewind(r.part[i]);
			if (fread(r.recs, sizeof *r.recs, cnt, r.part[i]) != cnt) {
				vs_error(e, EX_IOERR, errno, "a temporary file");
				goto out;
			}
			fclose(r.part[i]);
			r.part[i] = NULL;
			if (group(&r, r.recs, cnt) < 0)
				goto out;
		}
	}
	rc = flush_pairs(&r);
out:
	if (r.part) {
		for (unsigned i = 0; i < r.parts; i++)
			if (r.part[i])
				fclose(r.part[i]);
		free(r.part);
	}
	free(r.recs);
	free(r.pairs);
	free(r.buf);
	return rc;
}
