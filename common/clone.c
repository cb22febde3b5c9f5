#include "clone.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/fs.h>
#include <sys/statfs.h>
#endif
#ifdef __APPLE__
#include <sys/clonefile.h>
#endif


/* Data is read through a buffer of this many bytes. */
#define BUFSIZE (1u << 20)
/* Writeback is started after this many bytes. */
#define FLUSH_EVERY (UINT64_C(8) << 20)

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

/* The buffered copy is a pipeline: this thread reads the source and finds
 * its zero blocks, a second one writes, through a ring of buffers, so that
 * on two cores reading and writing overlap. */
#define SLOTS 4
#define MAXBLOCKS (BUFSIZE / 512)

struct slot {
	unsigned char *buf;
	uint64_t off;
	size_t len;
	unsigned char zero[MAXBLOCKS];	/* block i is all zeros */
	bool prealloc;		/* in a preallocated run: zeros are punched */
	bool full;
};

struct copier {
	int src, dst;
	size_t blk;		/* zero-detection granularity */
	bool use_cfr;
	bool cfr_worked;
	bool flush;		/* start writeback as we go */
	bool prealloc;		/* the run being read was preallocated */
	uint64_t copied;
	uint64_t scanned, total;
	uint64_t pending;	/* bytes written since writeback last started */
	uint64_t pending_from;	/* where the first of them is */
	clone_progress_fn progress;
	void *arg;
	struct vs_err *e;

	struct slot slot[SLOTS];
	unsigned head, tail;	/* next slot to fill, next to write */
	bool threaded, done, failed;
	pthread_t writer;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct vs_err werr;	/* the writer's error */
};

static int write_all(struct copier *c, const unsigned char *p, uint64_t off,
    size_t len, struct vs_err *e)
{
	while (len > 0) {
		ssize_t n = pwrite(c->dst, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "write");
		c->copied += (uint64_t)n;
		off += (uint64_t)n;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Give back the preallocated blocks of [off, off+len), zeros in the source:
 * they stay holes, as cp --sparse=always leaves them. */
static int punch(struct copier *c, uint64_t off, size_t len, struct vs_err *e)
{
#ifdef FALLOC_FL_PUNCH_HOLE
	if (fallocate(c->dst, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	    (off_t)off, (off_t)len) < 0 && !unsupported(errno))
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "punch a hole");
#else
	(void)c; (void)off; (void)len; (void)e;
#endif
	return 0;
}

/* Write the runs of non-zero blocks of s; zero blocks stay holes. */
static int write_slot(struct copier *c, struct slot *s, struct vs_err *e)
{
	size_t nblk = (s->len + c->blk - 1) / c->blk, i = 0;

	while (i < nblk) {
		size_t j, z = i;

		while (i < nblk && s->zero[i])
			i++;
		if (i > z && s->prealloc) {
			size_t to = i * c->blk < s->len ? i * c->blk : s->len;
			if (punch(c, s->off + z * c->blk, to - z * c->blk, e) < 0)
				return -1;
		}
		for (j = i; j < nblk && !s->zero[j]; j++)
			;
		if (j > i) {
			size_t from = i * c->blk;
			size_t to = j * c->blk < s->len ? j * c->blk : s->len;
			if (write_all(c, s->buf + from, s->off + from, to - from,
			    e) < 0)
				return -1;
		}
		i = j;
	}
#ifdef SYNC_FILE_RANGE_WRITE
	/* Have the kernel start writing what we wrote, every FLUSH_EVERY
	 * bytes of data (not of offsets: the data may be far apart), so that
	 * the final fsync does not wait for all of it at once. */
	if (c->pending == 0)
		c->pending_from = s->off;
	c->pending += s->len;
	if (c->flush && c->pending >= FLUSH_EVERY) {
		sync_file_range(c->dst, (off64_t)c->pending_from,
		    (off64_t)(s->off + s->len - c->pending_from),
		    SYNC_FILE_RANGE_WRITE);
		c->pending = 0;
	}
#endif
	return 0;
}

static void *writer_main(void *arg)
{
	struct copier *c = arg;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		struct slot *s = &c->slot[c->tail];

		while (!s->full && !c->done)
			pthread_cond_wait(&c->cv, &c->mu);
		if (!s->full)
			break;		/* done, and nothing left */
		pthread_mutex_unlock(&c->mu);
		int rc = c->failed ? 0 : write_slot(c, s, &c->werr);
		pthread_mutex_lock(&c->mu);
		if (rc < 0)
			c->failed = true;
		s->full = false;
		c->tail = (c->tail + 1) % SLOTS;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* Read [off, off+len) of the source into slots and hand them to the writer
 * (or write them here, without a writer thread). */
static int copy_buffered(struct copier *c, uint64_t off, uint64_t len)
{
	while (len > 0) {
		struct slot *s = &c->slot[c->head];
		size_t want = len < BUFSIZE ? (size_t)len : BUFSIZE;
		size_t got = 0, nblk;

		if (c->threaded) {
			pthread_mutex_lock(&c->mu);
			while (s->full && !c->failed)
				pthread_cond_wait(&c->cv, &c->mu);
			bool failed = c->failed;
			pthread_mutex_unlock(&c->mu);
			if (failed)
				return -1;	/* the writer's error is reported */
		}
		while (got < want) {
			ssize_t n = pread(c->src, s->buf + got, want - got,
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
		s->off = off;
		s->len = got;
		s->prealloc = c->prealloc;
		nblk = (got + c->blk - 1) / c->blk;
		for (size_t i = 0; i < nblk; i++) {
			size_t from = i * c->blk;
			size_t n = got - from < c->blk ? got - from : c->blk;
			s->zero[i] = all_zero(s->buf + from, n);
		}
		if (c->threaded) {
			pthread_mutex_lock(&c->mu);
			s->full = true;
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
		} else if (write_slot(c, s, c->e) < 0) {
			return -1;
		}
		c->head = (c->head + 1) % SLOTS;
		off += got;
		len -= got;
		c->scanned += got;
		if (c->progress)
			c->progress(c->arg, c->scanned, c->total);
	}
	return 0;
}

/* Start the writer; without one, copy_buffered writes itself. */
static void pipeline_start(struct copier *c, bool threads)
{
	if (!threads)
		return;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->threaded = pthread_create(&c->writer, NULL, writer_main, c) == 0;
	if (!c->threaded) {
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mu);
	}
}

/* Let the writer finish what it has, then stop it.  Returns -1 with the
 * writer's error in c->e when it failed. */
static int pipeline_finish(struct copier *c)
{
	if (!c->threaded)
		return 0;
	pthread_mutex_lock(&c->mu);
	c->done = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->writer, NULL);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	c->threaded = false;
	if (c->failed) {
		*c->e = c->werr;
		return -1;
	}
	return 0;
}

#ifdef __linux__
/* Copy [off, off+len) in the kernel, which may hand it to the server. */
static int copy_in_kernel(struct copier *c, uint64_t off, uint64_t len)
{
	while (len > 0) {
		loff_t in = (loff_t)off, out = (loff_t)off;
		size_t want = len < (UINT64_C(1) << 30) ? (size_t)len : (1u << 30);
		ssize_t n = copy_file_range(c->src, &in, c->dst, &out, want, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && !c->cfr_worked && unsupported(errno)) {
			c->use_cfr = false;
			return copy_buffered(c, off, len);
		}
		if (n < 0)
			return vs_error(c->e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "copy_file_range");
		if (n == 0)
			return vs_error(c->e, EX_DATAERR, 0,
			    "source became shorter while being copied");
		c->cfr_worked = true;
		c->copied += (uint64_t)n;
		c->scanned += (uint64_t)n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
		if (c->progress)
			c->progress(c->arg, c->scanned, c->total);
	}
	return 0;
}

/* copy_file_range is worth it where the server copies without the data
 * crossing the network (NFS 4.2, SMB, Ceph).  On a local filesystem that
 * cannot reflink, the kernel's copy is slower than ours through a buffer,
 * and ours skips blocks of zeros besides. */
static bool copy_offloads(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return false;
	switch ((unsigned long)sf.f_type) {
	case 0x6969UL:		/* NFS */
	case 0xFF534D42UL:	/* CIFS */
	case 0xFE534D42UL:	/* SMB2 */
	case 0x00C36400UL:	/* Ceph */
		return true;
	default:
		return false;
	}
}
#endif

/* Allocate the destination's run [off, off+len) before it is written, in
 * one piece, as the filesystem can best lay it out: a copy written as it
 * goes (and allocated by writeback, a slice at a time) comes out in more
 * extents than the source's.  Where the filesystem cannot, or has no room
 * for the whole run (its zeros will not take any), the copy goes on
 * without: a full disk still fails cleanly, at the write. */
static void preallocate(struct copier *c, uint64_t off, uint64_t len)
{
#ifdef __linux__
	c->prealloc = fallocate(c->dst, 0, (off_t)off, (off_t)len) == 0;
#else
	(void)off; (void)len;
	c->prealloc = false;
#endif
}

static int sparse_copy(struct copier *c, uint64_t size)
{
	uint64_t off = 0;

	while (off < size) {
		off_t data = lseek(c->src, (off_t)off, SEEK_DATA);
		off_t hole;
		int rc;

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
		/* Zero blocks are found at the destination's block boundaries,
		 * whatever the source's block size: widen the run to them (what
		 * is added reads as zeros). */
		data -= data % (off_t)c->blk;
		if ((uint64_t)hole % c->blk && (uint64_t)hole < size) {
			hole += (off_t)(c->blk - (uint64_t)hole % c->blk);
			if ((uint64_t)hole > size)
				hole = (off_t)size;
		}
		if ((uint64_t)data < off)
			data = (off_t)off;
#ifdef __linux__
		if (c->use_cfr)
			rc = copy_in_kernel(c, (uint64_t)data,
			    (uint64_t)(hole - data));
		else
#endif
		{
			preallocate(c, (uint64_t)data, (uint64_t)(hole - data));
			rc = copy_buffered(c, (uint64_t)data,
			    (uint64_t)(hole - data));
		}
		if (rc < 0)
			return -1;
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

int clone_can_reflink(int src, int dst, struct vs_err *e)
{
#if defined(__linux__) && defined(FICLONERANGE)
	struct stat sst, dst_st;
	struct file_clone_range r = { .src_fd = src };

	if (fstat(src, &sst) < 0 || fstat(dst, &dst_st) < 0)
		return vs_error(e, EX_IOERR, errno, "stat");
	/* (one block, or the whole of a smaller file: a range must be
	 * whole blocks unless it ends at the end of the file) */
	r.src_length = sst.st_size < dst_st.st_blksize ? 0 :
	    (uint64_t)dst_st.st_blksize;
	if (ioctl(dst, FICLONERANGE, &r) == 0) {
		if (ftruncate(dst, 0) < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "truncate");
		return 1;
	}
	if (unsupported(errno) || errno == EPERM)
		return 0;
	return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "reflink");
#else
	/* (clonefile(2) works on paths: no probe, as if it could not) */
	(void)src; (void)dst; (void)e;
	return 0;
#endif
}

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
	c.blk = 4096;
	if (fstat(af->fd, &dst) == 0 && dst.st_blksize >= 512 &&
	    dst.st_blksize <= BUFSIZE)
		c.blk = (size_t)dst.st_blksize;
	c.flush = !(flags & CLONE_NO_FLUSH);
#ifdef __linux__
	c.use_cfr = !(flags & CLONE_NO_COPY_RANGE) &&
	    ((flags & CLONE_COPY_RANGE_ALWAYS) || copy_offloads(af->fd));
#endif
	c.total = (uint64_t)sst.st_blocks * 512;
	c.progress = progress;
	c.arg = arg;
	c.e = e;
	for (int i = 0; i < SLOTS; i++) {
		c.slot[i].buf = malloc(BUFSIZE);
		if (c.slot[i].buf == NULL) {
			while (i-- > 0)
				free(c.slot[i].buf);
			return vs_error(e, EX_OSERR, ENOMEM, "copy buffer");
		}
	}
#ifdef POSIX_FADV_SEQUENTIAL
	posix_fadvise(src, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
	pipeline_start(&c, !(flags & CLONE_NO_THREADS));
	rc = sparse_copy(&c, (uint64_t)sst.st_size);
	/* A writer's failure is the one to report: the reader stopped for it. */
	if (pipeline_finish(&c) < 0)
		rc = -1;
	for (int i = 0; i < SLOTS; i++)
		free(c.slot[i].buf);
	if (rc < 0)
		return -1;
	st->method = c.cfr_worked ? CLONE_COPY_RANGE : CLONE_SPARSE_COPY;
	st->copied = c.copied;
	return 0;
}
