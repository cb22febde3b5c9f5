#include "clone.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/fs.h>
#endif
#ifdef __APPLE__
#include <sys/clonefile.h>
#endif

#include "cleanup.h"

#ifndef MAP_POPULATE
#define MAP_POPULATE 0
#endif

/* Data is scanned through a window of this many bytes at a time. */
#define WINDOW (8u << 20)

const char *clone_method_name(enum clone_method m)
{
	switch (m) {
	case CLONE_REFLINK: return "reflink";
	case CLONE_CLONEFILE: return "clonefile";
	case CLONE_COPY_RANGE: return "copy_file_range";
	case CLONE_SPARSE_COPY: return "sparse-copy";
	}
	return "?";
}

/* errno values that say "this way of copying is not for these files". */
static bool unsupported(int err)
{
	return err == EOPNOTSUPP || err == ENOTTY || err == EXDEV ||
	    err == EINVAL || err == ENOSYS || err == ENOTSUP;
}

static bool all_zero(const unsigned char *p, size_t n)
{
	size_t head = n < 16 ? n : 16;

	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	/* The first 16 bytes are zero; the rest is zero if it equals itself
	 * shifted by 16. */
	return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}

struct copier {
	int src, dst;
	unsigned flags;
	size_t blk;		/* zero-detection granularity */
	bool use_cfr;
	bool cfr_worked;
	unsigned char *buf;	/* for when the source cannot be mapped */
	uint64_t copied;
	uint64_t scanned, total;
	clone_progress_fn progress;
	void *arg;
	struct vs_err *e;
};

static int write_run(struct copier *c, const unsigned char *p, uint64_t off,
    size_t len)
{
#ifdef __linux__
	while (c->use_cfr && len > 0) {
		loff_t in = (loff_t)off, out = (loff_t)off;
		ssize_t n = copy_file_range(c->src, &in, c->dst, &out, len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && !c->cfr_worked && unsupported(errno)) {
			c->use_cfr = false;
			break;
		}
		if (n < 0)
			return vs_error(c->e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "copy_file_range");
		if (n == 0)
			return vs_error(c->e, EX_DATAERR, 0,
			    "source became shorter while being copied");
		c->cfr_worked = true;
		c->copied += (uint64_t)n;
		off += (uint64_t)n;
		p += n;
		len -= (size_t)n;
	}
#endif
	while (len > 0) {
		ssize_t n = pwrite(c->dst, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vs_error(c->e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "write");
		c->copied += (uint64_t)n;
		off += (uint64_t)n;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Copy [off, off+len) of the source, leaving holes where blocks are zero. */
static int copy_window(struct copier *c, uint64_t off, size_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t moff = off & ~(uint64_t)(pg - 1);
	size_t mlen = len + (size_t)(off - moff);
	const unsigned char *base, *p;
	void *map;
	int rc = 0;

	map = mmap(NULL, mlen, PROT_READ, MAP_SHARED | MAP_POPULATE, c->src,
	    (off_t)moff);
	if (map != MAP_FAILED) {
		base = (const unsigned char *)map + (off - moff);
	} else {
		size_t got = 0;
		if (c->buf == NULL && (c->buf = malloc(WINDOW)) == NULL)
			return vs_error(c->e, EX_OSERR, ENOMEM, "copy buffer");
		while (got < len) {
			ssize_t n = pread(c->src, c->buf + got, len - got,
			    (off_t)(off + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return vs_error(c->e, EX_IOERR, errno, "read");
			if (n == 0)
				return vs_error(c->e, EX_DATAERR, 0,
				    "source became shorter while being copied");
			got += (size_t)n;
		}
		base = c->buf;
	}

	p = base;
	while (p < base + len && rc == 0) {
		const unsigned char *run;
		size_t n;

		/* Skip zero blocks, then take the run of non-zero ones. */
		while (p < base + len) {
			n = (size_t)(base + len - p) < c->blk ?
			    (size_t)(base + len - p) : c->blk;
			if (!all_zero(p, n))
				break;
			p += n;
		}
		run = p;
		while (p < base + len) {
			n = (size_t)(base + len - p) < c->blk ?
			    (size_t)(base + len - p) : c->blk;
			if (all_zero(p, n))
				break;
			p += n;
		}
		if (p > run)
			rc = write_run(c, run, off + (uint64_t)(run - base),
			    (size_t)(p - run));
	}
	if (map != MAP_FAILED)
		munmap(map, mlen);
	c->scanned += len;
	if (c->progress)
		c->progress(c->arg, c->scanned, c->total);
	return rc;
}

static int sparse_copy(struct copier *c, uint64_t size)
{
	uint64_t off = 0;

	while (off < size) {
		off_t data = lseek(c->src, (off_t)off, SEEK_DATA);
		off_t hole;

		if (data < 0 && errno == ENXIO)
			break;		/* only a hole is left */
		if (data < 0 && unsupported(errno)) {
			data = (off_t)off;	/* no SEEK_DATA: all is data */
			hole = (off_t)size;
		} else if (data < 0) {
			return vs_error(c->e, EX_IOERR, errno, "seek");
		} else {
			hole = lseek(c->src, data, SEEK_HOLE);
			if (hole < 0)
				hole = (off_t)size;
		}
		if ((uint64_t)hole > size)
			hole = (off_t)size;
		for (uint64_t o = (uint64_t)data; o < (uint64_t)hole; o += WINDOW) {
			uint64_t left = (uint64_t)hole - o;
			if (copy_window(c, o, left < WINDOW ? (size_t)left
			    : WINDOW) < 0)
				return -1;
		}
		off = (uint64_t)hole;
	}
	return 0;
}

#ifdef __APPLE__
/* clonefile(2) creates its destination, so the empty temporary file makes
 * way for it under the same name. */
static int try_clonefile(struct atomic_file *af, int src)
{
	int fd;

	if (unlink(af->tmp) < 0)
		return -1;
	if (fclonefileat(src, AT_FDCWD, af->tmp, 0) < 0) {
		int saved = errno;
		fd = open(af->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(af->fd);
			af->fd = fd;
		}
		errno = saved;
		return -1;
	}
	fd = open(af->tmp, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	close(af->fd);
	af->fd = fd;
	return 0;
}
#endif

int clone_into(struct atomic_file *af, int src, unsigned flags,
    clone_progress_fn progress, void *arg, struct clone_stats *st,
    struct vs_err *e)
{
	struct copier c;
	struct stat sst, dst;
	int rc;

	if (fstat(src, &sst) < 0)
		return vs_error(e, EX_IOERR, errno, "stat");
	st->copied = 0;

	if (!(flags & CLONE_NO_REFLINK)) {
#if defined(__linux__) && defined(FICLONE)
		if (ioctl(af->fd, FICLONE, src) == 0) {
			st->method = CLONE_REFLINK;
			return 0;
		}
		if (!unsupported(errno) && errno != EPERM)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "reflink");
#elif defined(__APPLE__)
		if (try_clonefile(af, src) == 0) {
			st->method = CLONE_CLONEFILE;
			return 0;
		}
		if (!unsupported(errno))
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "clonefile");
#endif
	}

	if (ftruncate(af->fd, sst.st_size) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "truncate");
	memset(&c, 0, sizeof c);
	c.src = src;
	c.dst = af->fd;
	c.flags = flags;
	c.blk = 4096;
	if (fstat(af->fd, &dst) == 0 && dst.st_blksize >= 512 &&
	    dst.st_blksize <= (1 << 20))
		c.blk = (size_t)dst.st_blksize;
#ifdef __linux__
	c.use_cfr = !(flags & CLONE_NO_COPY_RANGE);
#endif
	c.total = (uint64_t)sst.st_blocks * 512;
	c.progress = progress;
	c.arg = arg;
	c.e = e;
#ifdef POSIX_FADV_SEQUENTIAL
	posix_fadvise(src, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
	rc = sparse_copy(&c, (uint64_t)sst.st_size);
	free(c.buf);
	if (rc < 0)
		return -1;
	st->method = c.cfr_worked ? CLONE_COPY_RANGE : CLONE_SPARSE_COPY;
	st->copied = c.copied;
	return 0;
}
