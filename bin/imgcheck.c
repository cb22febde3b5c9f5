/* imgcheck: check and repair VM disks with e2fsck, never one a running VM
 * has open; and tell what each disk really uses and shares, which du, ls
 * and stat cannot with sparse files and copy-on-write clones. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cleanup.h"
#include "dedupe.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "fsmap.h"
#include "lock.h"
#include "path.h"
#include "run.h"
#include "size.h"
#include "stop.h"
#include "vmstate.h"

#define SYNOPSIS "imgcheck [-n|-p|-y] [-ujqV] [--trim] [--dedupe] [-C DIR] [IMG...]"
/* What --dedupe keeps in memory at most, whatever the images' size. */
#define DEDUPE_BUDGET (256u << 20)

enum mode { CHECK, PREEN, REPAIR, SPACE };

struct opts {
	enum mode mode;
	bool table, quiet;
	bool trim, dedupe;	/* --trim, --dedupe */
	uint64_t budget;	/* what --dedupe may keep in memory */
	const char *dir;
};

/* One image: what e2fsck said and what its blocks are. */
struct image {
	char *path;
	const char *state;	/* clean, corrected, uncorrected, in-use; NULL: -u */
	int status;		/* e2fsck's exit status, or -1 */
	char summary[256];
	double seconds;
	uint64_t logical, allocated, shared, unique;
	dev_t dev;
	ino_t ino;
	int fd;			/* open (and, to repair, locked) until the end */
	bool reflinks;		/* its filesystem shares extents */
	bool noshare;		/* its filesystem cannot (ext4, tmpfs) */
	bool check;		/* e2fsck is to run on it */
	uint64_t trimmed;	/* --trim: bytes given back */
	uint64_t deduped;	/* --dedupe: bytes of it shared again */
	bool failed;		/* err says how */
	char held[300];		/* in use: by whom */
	struct vs_err err;
};

/* A physical extent, for counting each once over the set. */
struct pext {
	dev_t dev;
	uint64_t start, len;
};

struct extents {
	struct pext *v;
	size_t n, cap;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: %s\n", SYNOPSIS);
	fputs("Check VM disk images with e2fsck (read-only unless -p or -y), never\n"
	    "repairing one a running VM has open, and report the space each really\n"
	    "uses and shares.  With no IMG, the pipeline document's disk (or base).\n"
	    "\n"
	    "  -n, --check       check only, change nothing (the default)\n"
	    "  -p, --preen       repair what is safe to repair without asking\n"
	    "  -y, --repair      repair everything e2fsck can\n"
	    "  -u, --usage       space only: no e2fsck\n"
	    "      --trim        give the host back the blocks the filesystem inside\n"
	    "                    does not use (holes punched); never under a running VM\n"
	    "      --dedupe      share again the blocks the images hold alike (XFS with\n"
	    "                    reflink, btrfs): safe on images in use\n"
	    "  -j, --table       the human table on stderr as well as the JSON\n"
	    "  -C, --directory DIR  the workspace whose VMs may hold the images\n"
	    "  -q, --quiet       no notes\n"
	    "  -h, --help        show this help and exit\n"
	    "  -V, --version     show the version and exit\n"
	    "\n"
	    "Exit status: e2fsck's low bits, OR-ed over the images (0 clean, 1\n"
	    "corrected, 4 left uncorrected); 64-78 when imgcheck itself fails.\n"
	    "See imgcheck(1).\n", f);
}

/* --- space --------------------------------------------------------------- */

static int add_pext(struct extents *x, dev_t dev, uint64_t start, uint64_t len)
{
	if (x->n == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 256;
		struct pext *nv = realloc(x->v, cap * sizeof *nv);
		if (nv == NULL)
			return -1;
		x->v = nv;
		x->cap = cap;
	}
	x->v[x->n++] = (struct pext){ dev, start, len };
	return 0;
}

/* The image's extents through FIEMAP: shared and unique bytes, and each
 * physical extent into x. */
static int space(int fd, struct image *im, struct extents *x, struct vs_err *e)
{
	enum { N = 512 };
	size_t size = sizeof(struct fiemap) + N * sizeof(struct fiemap_extent);
	cleanup_free struct fiemap *fm = calloc(1, size);
	uint64_t start = 0;
	bool last = false;

	if (fm == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "imgcheck");
	while (!last) {
		memset(fm, 0, size);
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET - start;
		fm->fm_flags = start == 0 ? FIEMAP_FLAG_SYNC : 0;
		fm->fm_extent_count = N;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
			if (errno == EOPNOTSUPP || errno == ENOTTY) {
				/* (no extent map here: all of it its own) */
				im->noshare = true;
				break;
			}
			return vs_error(e, EX_IOERR, errno, "%s: extents", im->path);
		}
		if (fm->fm_mapped_extents == 0)
			break;
		for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
			const struct fiemap_extent *fe = &fm->fm_extents[i];
			/* (only shared extents are kept, to count each once
			 * over the set: memory grows with what is shared) */
			if (fe->fe_flags & FIEMAP_EXTENT_SHARED) {
				im->shared += fe->fe_length;
				im->reflinks = true;
				if (add_pext(x, im->dev, fe->fe_physical,
				    fe->fe_length) < 0)
					return vs_error(e, EX_OSERR, ENOMEM, "imgcheck");
			}
			if (fe->fe_flags & FIEMAP_EXTENT_LAST)
				last = true;
			start = fe->fe_logical + fe->fe_length;
		}
	}
	/* its own: what its blocks take (metadata too) but the shared */
	if (im->shared > im->allocated)
		im->shared = im->allocated;
	im->unique = im->allocated - im->shared;
	return 0;
}

static int cmp_pext(const void *a, const void *b)
{
	const struct pext *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return 0;
}

/* Bytes the shared extents take, each physical block counted once. */
static uint64_t real_total(struct extents *x)
{
	uint64_t total = 0, end = 0;
	dev_t dev = 0;
	bool any = false;

	if (x->n == 0)
		return 0;	/* (and x->v may be NULL: no qsort of it) */
	qsort(x->v, x->n, sizeof *x->v, cmp_pext);
	for (size_t i = 0; i < x->n; i++) {
		const struct pext *p = &x->v[i];
		uint64_t s = p->start, t = p->start + p->len;
		if (!any || p->dev != dev) {
			dev = p->dev;
			end = 0;
			any = true;
		}
		if (t <= end)
			continue;
		if (s < end)
			s = end;
		total += t - s;
		end = t;
	}
	return total;
}

/* --- checking ------------------------------------------------------------ */

/* Is it an ext2/3/4 filesystem (the superblock's magic)? */
static int is_ext(int fd)
{
	unsigned char m[2];

	if (pread(fd, m, 2, 1024 + 56) != 2)
		return 0;
	return m[0] == 0x53 && m[1] == 0xef;
}

/* e2fsck's output, kept whole up to HEAD_MAX, then only its last
 * TAIL_MAX bytes (where the summary is): memory stays small whatever
 * a badly damaged filesystem makes it say. */
#define HEAD_MAX (1u << 20)
#define TAIL_MAX (64u << 10)

struct run {
	pid_t pid;
	int fd;
	double t0;
	char *head, *tail;
	size_t nhead, ntail;	/* ntail: bytes in the tail ring so far */
	uint64_t dropped;
};

static void keep(struct run *r, const char *p, size_t n)
{
	size_t take = n < HEAD_MAX - r->nhead ? n : HEAD_MAX - r->nhead;

	memcpy(r->head + r->nhead, p, take);
	r->nhead += take;
	p += take;
	n -= take;
	for (; n > 0; p++, n--) {
		if (r->ntail >= TAIL_MAX)
			r->dropped++;
		r->tail[r->ntail++ % TAIL_MAX] = *p;
	}
}

/* The output in order (head, then what is left of the tail), into f. */
static void replay(const struct run *r, FILE *f)
{
	size_t len = r->ntail < TAIL_MAX ? r->ntail : TAIL_MAX;
	size_t from = r->ntail < TAIL_MAX ? 0 : r->ntail % TAIL_MAX;

	fwrite(r->head, 1, r->nhead, f);
	if (r->dropped)
		fprintf(f, "\n[... %llu bytes of e2fsck's output left out ...]\n",
		    (unsigned long long)r->dropped);
	for (size_t i = 0; i < len; i++)
		fputc(r->tail[(from + i) % TAIL_MAX], f);
}

/* The last summary line ("IMG: 11/327680 files (0.0% non-contiguous),
 * 46321/1310720 blocks") in the output. */
static void summary(const struct run *r, char *out, size_t n)
{
	size_t len = r->ntail < TAIL_MAX ? r->ntail : TAIL_MAX;
	size_t from = r->ntail < TAIL_MAX ? 0 : r->ntail % TAIL_MAX;
	char *all = malloc(r->nhead + len + 1), *line, *save = NULL, *found = NULL;

	out[0] = '\0';
	if (all == NULL)
		return;
	memcpy(all, r->head, r->nhead);
	for (size_t i = 0; i < len; i++)
		all[r->nhead + i] = r->tail[(from + i) % TAIL_MAX];
	all[r->nhead + len] = '\0';
	for (line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (strstr(line, " files (") && strstr(line, " blocks"))
			found = line;
	if (found) {
		const char *s = strstr(found, ": ");
		snprintf(out, n, "%s", s ? s + 2 : found);
	}
	free(all);
}

static int spawn_e2fsck(const char *e2fsck, struct image *im, enum mode mode,
    struct run *r, struct vs_err *e)
{
	const char *argv[8];
	int p[2], n = 0;

	argv[n++] = e2fsck;
	argv[n++] = "-f";
	argv[n++] = mode == PREEN ? "-p" : mode == REPAIR ? "-y" : "-n";
	argv[n++] = im->path;
	argv[n] = NULL;
	r->head = malloc(HEAD_MAX);
	r->tail = malloc(TAIL_MAX);
	if (r->head == NULL || r->tail == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "imgcheck");
	if (pipe2(p, O_CLOEXEC) < 0)
		return vs_error(e, EX_OSERR, errno, "pipe");
	r->t0 = run_clock();
	r->pid = fork();
	if (r->pid < 0) {
		close(p[0]);
		close(p[1]);
		return vs_error(e, EX_OSERR, errno, "fork");
	}
	if (r->pid == 0) {
		union { const char *const *c; char *const *v; } a = { .c = argv };
		int null = open("/dev/null", O_RDONLY);
		/* (no e2fsck -y goes on repairing alone if we are killed) */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(null, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execv(e2fsck, a.v);
		_exit(127);
	}
	close(p[1]);
	r->fd = p[0];
	return 0;
}

/* e2fsck on im ended with status: its state, or the failure in e. */
static int finish_e2fsck(const char *e2fsck, struct image *im, struct run *r,
    int status, struct vs_err *e)
{
	im->seconds = run_clock() - r->t0;
	summary(r, im->summary, sizeof im->summary);
	if (!WIFEXITED(status))
		return vs_error(e, EX_OSERR, 0, "%s: e2fsck was killed by signal %d",
		    im->path, WTERMSIG(status));
	if (WEXITSTATUS(status) == 127)
		return vs_error(e, EX_UNAVAILABLE, 0, "cannot run %s", e2fsck);
	im->status = WEXITSTATUS(status);
	if (im->status & 8)
		return vs_error(e, EX_IOERR, 0, "%s: e2fsck could not check it (status %d)",
		    im->path, im->status);
	if (im->status & 16)
		return vs_error(e, EX_SOFTWARE, 0, "%s: e2fsck refused its arguments",
		    im->path);
	if (im->status & 32)
		return vs_error(e, EX_TEMPFAIL, 0, "%s: e2fsck was cancelled", im->path);
	im->state = im->status & 4 ? "uncorrected" : im->status & 3 ?
	    "corrected" : "clean";
	return 0;
}

/* Is im an image we can check at all?  Opens it (for writing, to
 * repair), without blocking on a FIFO; fills in what stat says. */
static int validate(struct image *im, const struct opts *o, struct vs_err *e)
{
	struct stat st;
	struct statfs sf;

	im->status = -1;
	im->fd = -1;
	if (stat(im->path, &st) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno, "%s",
		    im->path);
	if (S_ISDIR(st.st_mode))
		return vs_error(e, EX_DATAERR, 0, "%s is a directory, not a disk image",
		    im->path);
	if (!S_ISREG(st.st_mode))
		return vs_error(e, EX_DATAERR, 0,
		    "%s is not a regular file, not a disk image", im->path);
	im->fd = open(im->path, (o->mode == PREEN || o->mode == REPAIR ||
	    o->trim || o->dedupe ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOCTTY |
	    O_CLOEXEC);
	if (im->fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno, "%s",
		    im->path);
	if (fstat(im->fd, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", im->path);
	if (!S_ISREG(st.st_mode))
		return vs_error(e, EX_DATAERR, 0,
		    "%s is not a regular file, not a disk image", im->path);
	if (!is_ext(im->fd))
		return vs_error(e, EX_DATAERR, 0,
		    "%s is not an ext2/ext3/ext4 filesystem image (no superblock magic)",
		    im->path);
	im->logical = (uint64_t)st.st_size;
	im->allocated = (uint64_t)st.st_blocks * 512;
	im->dev = st.st_dev;
	im->ino = st.st_ino;
	if (fstatfs(im->fd, &sf) == 0 && ((unsigned long)sf.f_type == 0xEF53 ||
	    (unsigned long)sf.f_type == 0x01021994))
		im->noshare = true;	/* ext2/3/4, tmpfs: no reflinks */
	return 0;
}

/* Who holds im, and whether it may be checked (and repaired). */
static void claim(struct image *im, const struct opts *o)
{
	if (vmstate_who(im->fd, im->path, im->held, sizeof im->held)) {
		if (o->mode != CHECK) {
			im->state = "in-use";
			fe_warn("%s is in use by %s: not repairing it; stop the VM first",
			    im->path, im->held);
			return;
		}
		if (!o->quiet)
			fe_warn("%s is in use by %s: a check of it while it runs may report stale errors",
			    im->path, im->held);
	} else if (o->mode != CHECK && lock_whole(im->fd) < 0) {
		/* (a QEMU starting right now) */
		snprintf(im->held, sizeof im->held, "another program (it just opened it)");
		im->state = "in-use";
		fe_warn("%s is in use by %s: not repairing it", im->path, im->held);
		return;
	}
	/* (the lock stays, with im->fd, until e2fsck is done) */
	im->check = true;
}

/* e2fsck on every image to be checked, as many at once as there are
 * processors (each reads its own image); each one's output is shown
 * whole when it ends, not interleaved. */
static void check_all(struct image *ims, size_t n, const struct opts *o,
    const char *e2fsck)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	size_t max = ncpu > 0 ? (size_t)ncpu : 1, next = 0, running = 0;
	struct run *runs = calloc(n, sizeof *runs);
	struct pollfd *pf = calloc(n, sizeof *pf);
	size_t *who = calloc(n, sizeof *who);
	bool forwarded = false;

	if (runs == NULL || pf == NULL || who == NULL) {
		for (size_t i = 0; i < n; i++)
			if (ims[i].check) {
				vs_error(&ims[i].err, EX_OSERR, ENOMEM, "imgcheck");
				ims[i].failed = true;
			}
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		runs[i].fd = -1;
	while (next < n || running > 0) {
		size_t np = 0;
		while (running < max && next < n && !stop_signal) {
			struct image *im = &ims[next];
			if (im->check) {
				if (spawn_e2fsck(e2fsck, im, o->mode, &runs[next],
				    &im->err) < 0)
					im->failed = true;
				else
					running++;
			}
			next++;
		}
		if (stop_signal && running == 0)
			break;
		for (size_t i = 0; i < next; i++)
			if (runs[i].fd >= 0) {
				pf[np] = (struct pollfd){ runs[i].fd, POLLIN, 0 };
				who[np++] = i;
			}
		if (np == 0)
			continue;
		if (poll(pf, np, -1) < 0) {
			if (errno != EINTR)
				break;
			/* a stop: e2fsck cancels safely on SIGTERM (it
			 * exits 32), so pass it on and wait for it */
			if (stop_signal && !forwarded) {
				for (size_t i = 0; i < next; i++)
					if (runs[i].fd >= 0)
						kill(runs[i].pid, SIGTERM);
				forwarded = true;
			}
			continue;
		}
		for (size_t k = 0; k < np; k++) {
			struct run *r = &runs[who[k]];
			struct image *im = &ims[who[k]];
			char buf[8192];
			ssize_t got;
			int status;

			if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(r->fd, buf, sizeof buf);
			if (got > 0) {
				keep(r, buf, (size_t)got);
				continue;
			}
			if (got < 0 && errno == EINTR)
				continue;
			close(r->fd);
			r->fd = -1;
			running--;
			while (waitpid(r->pid, &status, 0) < 0 && errno == EINTR)
				;
			if (!o->quiet) {
				replay(r, stderr);
				fflush(stderr);
			}
			if (finish_e2fsck(e2fsck, im, r, status, &im->err) < 0)
				im->failed = true;
			free(r->head);
			free(r->tail);
			r->head = r->tail = NULL;
		}
	}
out:
	for (size_t i = 0; runs && i < n; i++) {
		free(runs[i].head);
		free(runs[i].tail);
	}
	free(runs);
	free(pf);
	free(who);
}

/* The real total of the images now: each block once. */
static uint64_t real_now(const struct image *ims, size_t n)
{
	struct extents xb = { 0 };
	uint64_t r = 0;

	for (size_t i = 0; i < n; i++) {
		struct image t = ims[i];
		struct vs_err ignore;
		struct stat st;

		if (t.fd < 0 || t.failed)
			continue;
		t.shared = 0;
		if (fstat(t.fd, &st) == 0)
			t.allocated = (uint64_t)st.st_blocks * 512;
		if (space(t.fd, &t, &xb, &ignore) == 0)
			r += t.unique;
	}
	r += real_total(&xb);
	free(xb.v);
	return r;
}

static json_t *image_json(const struct image *im, const struct opts *o)
{
	json_t *j = json_pack("{s:s, s:s?, s:o, s:s?, s:f, s:I, s:I, s:I, s:I}",
	    "path", im->path, "state", im->state,
	    "e2fsck_status", im->status >= 0 ? json_integer(im->status) : json_null(),
	    "summary", im->summary[0] ? im->summary : NULL,
	    "seconds", (double)(long long)(im->seconds * 1000 + 0.5) / 1000,
	    "logical", (json_int_t)im->logical,
	    "allocated", (json_int_t)im->allocated,
	    "shared", (json_int_t)im->shared,
	    "unique", (json_int_t)im->unique);

	if (j && o->trim)
		json_object_set_new(j, "trimmed", json_integer((json_int_t)im->trimmed));
	if (j && o->dedupe)
		json_object_set_new(j, "deduped", json_integer((json_int_t)im->deduped));
	return j;
}

/* --- giving space back --------------------------------------------------- */

/* --trim: punch a hole in the image for every block of its data that the
 * filesystem inside does not use.  Never while anyone holds it (it stays
 * locked meanwhile), never on a filesystem whose journal may hold newer
 * bitmaps than its own. */
static int trim(struct image *im, struct vs_err *e)
{
	struct fsmap *m;
	struct stat st;
	bool clean;
	uint64_t before = im->allocated, bs;
	off_t off = 0, end;
	int rc = 0;

	if (vmstate_who(im->fd, im->path, im->held, sizeof im->held)) {
		im->state = "in-use";
		fe_warn("%s is in use by %s: not trimming it; stop the VM first (a running guest trims itself: fstrim)",
		    im->path, im->held);
		return 0;
	}
	if (lock_whole(im->fd) < 0) {
		snprintf(im->held, sizeof im->held, "another program (it just opened it)");
		im->state = "in-use";
		fe_warn("%s is in use by %s: not trimming it", im->path, im->held);
		return 0;
	}
	m = fsmap_open(im->path, &clean, e);
	if (m == NULL)
		return -1;
	if (!clean) {
		fsmap_close(m);
		return vs_error(e, EX_DATAERR, 0,
		    "%s was not cleanly unmounted (its journal may hold newer bitmaps): repair it first (imgcheck -p), then trim",
		    im->path);
	}
	bs = fsmap_block_size(m);
	end = lseek(im->fd, 0, SEEK_END);
	while (rc == 0 && off < end && !stop_signal) {
		off_t data = lseek(im->fd, off, SEEK_DATA), hole;
		uint64_t b, s, t;

		if (data < 0)
			break;	/* (ENXIO: no data after off) */
		hole = lseek(im->fd, data, SEEK_HOLE);
		if (hole < 0)
			hole = end;
		/* the filesystem's free blocks wholly inside this run of data */
		b = ((uint64_t)data + bs - 1) / bs;
		while (rc == 0 && fsmap_next_free(m, b, (uint64_t)hole / bs, &s, &t)) {
			if (fallocate(im->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    (off_t)(s * bs), (off_t)((t - s) * bs)) < 0)
				rc = vs_error(e, errno == EOPNOTSUPP ? EX_UNAVAILABLE :
				    EX_IOERR, errno, "%s: punch a hole", im->path);
			b = t;
		}
		off = hole;
	}
	fsmap_close(m);
	if (rc < 0)
		return -1;
	if (stop_signal)
		return vs_error(e, EX_TEMPFAIL, 0, "%s: interrupted (what was trimmed stays so)",
		    im->path);
	if (fstat(im->fd, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", im->path);
	im->allocated = (uint64_t)st.st_blocks * 512;
	im->trimmed = before > im->allocated ? before - im->allocated : 0;
	return 0;
}

/* --dedupe over the images that are not failed: 0, with a note where the
 * filesystem cannot share; -1 with e set. */
static int dedupe(struct image *ims, size_t n, const struct opts *o,
    struct dedupe_stats *st, bool *done, struct vs_err *e)
{
	struct dedupe_file *f = calloc(n ? n : 1, sizeof *f);
	struct fsmap **maps = calloc(n ? n : 1, sizeof *maps);
	size_t k = 0;
	int rc = 0;

	*done = false;
	if (f == NULL || maps == NULL) {
		free(f);
		free(maps);
		return vs_error(e, EX_OSERR, ENOMEM, "imgcheck");
	}
	for (size_t i = 0; i < n; i++) {
		struct vs_err ignore;
		bool clean;

		if (ims[i].failed || ims[i].fd < 0)
			continue;
		if (k > 0 && ims[i].dev != ims[0].dev) {
			rc = vs_error(e, EX_USAGE, 0,
			    "%s and %s are on different filesystems: blocks are shared only within one",
			    ims[0].path, ims[i].path);
			goto out;
		}
		if (k == 0 && dedupe_supported(ims[i].path) != 1) {
			if (!o->quiet)
				fe_warn("%s: this filesystem cannot share blocks between files (ext4, tmpfs, XFS without reflink): nothing deduplicated",
				    ims[i].path);
			goto out;
		}
		/* (only the blocks the filesystem inside uses: a bitmap that
		 * a running guest makes stale only costs a block missed or
		 * read for nothing, since the kernel compares) */
		maps[k] = fsmap_open(ims[i].path, &clean, &ignore);
		f[k] = (struct dedupe_file){ .path = ims[i].path, .fd = ims[i].fd,
		    .map = maps[k] };
		k++;
	}
	if (k == 0)
		goto out;
	rc = dedupe_run(f, k, o->budget, st, e);
	for (size_t i = 0, j = 0; i < n && j < k; i++)
		if (!ims[i].failed && ims[i].fd >= 0)
			ims[i].deduped = f[j++].deduped;
	*done = rc == 0;
out:
	for (size_t i = 0; i < k; i++)
		fsmap_close(maps[i]);
	free(maps);
	free(f);
	return rc;
}

static void table(const struct image *v, size_t n, uint64_t du, uint64_t real,
    bool any_reflinks, bool all_noshare)
{
	char a[32], b[32], c[32], d[32];

	fprintf(stderr, "%-12s %9s %9s %9s %9s  %s\n", "state", "logical",
	    "allocated", "shared", "unique", "image");
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "%-12s %9s %9s %9s %9s  %s\n",
		    v[i].state ? v[i].state : "-",
		    size_human(v[i].logical, a, sizeof a),
		    size_human(v[i].allocated, b, sizeof b),
		    size_human(v[i].shared, c, sizeof c),
		    size_human(v[i].unique, d, sizeof d), v[i].path);
	fprintf(stderr, "total: %s as du counts it, %s really (each shared block once)\n",
	    size_human(du, a, sizeof a), size_human(real, b, sizeof b));
	fprintf(stderr, "unique: what removing that image alone would free\n");
	if (all_noshare)
		fprintf(stderr, "no reflinks on this filesystem (ext4, tmpfs): every disk's blocks are its own\n");
	else if (!any_reflinks)
		fprintf(stderr, "no extent is shared: every disk's blocks are its own\n");
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "check", no_argument, NULL, 'n' },
		{ "dedupe", no_argument, NULL, 'D' },
		{ "directory", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "preen", no_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "repair", no_argument, NULL, 'y' },
		{ "table", no_argument, NULL, 'j' },
		{ "trim", no_argument, NULL, 'T' },
		{ "usage", no_argument, NULL, 'u' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .mode = CHECK };
	struct vs_err e = { 0 };
	struct extents x = { 0 };
	cleanup_json json_t *doc = NULL;
	cleanup_free char *e2fsck = NULL;
	struct image *ims = NULL;
	json_t *list = NULL, *sec;
	size_t n = 0;
	uint64_t du = 0, real = 0, real_before = 0, trimmed = 0;
	struct dedupe_stats dst = { 0 };
	bool deduped_done = false;
	bool any_reflinks = false, all_noshare = true, failed = false, busy = false;
	int c, bits = 0, modes = 0;

	fe_init(argv[0]);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:hjnpquVy", longopts, NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'j': o.table = true; break;
		case 'n': o.mode = CHECK; modes |= 1; break;
		case 'p': o.mode = PREEN; modes |= 2; break;
		case 'q': o.quiet = true; break;
		case 'u': o.mode = SPACE; modes |= 8; break;
		case 'V':
			fe_version();
			return fe_finish(0);
		case 'y': o.mode = REPAIR; modes |= 4; break;
		case 'T': o.trim = true; break;
		case 'D': o.dedupe = true; break;
		default:
			return fe_bad_option(SYNOPSIS, c, optopt, argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	if (modes & (modes - 1))
		return fe_usage_error(SYNOPSIS,
		    "-n, -p, -y and -u exclude each other: give one");
	/* (alone, --trim and --dedupe run no e2fsck; with -n, -p or -y,
	 * after it) */
	if ((o.trim || o.dedupe) && modes == 0)
		o.mode = SPACE;
	o.budget = DEDUPE_BUDGET;
	if (o.dedupe && getenv("VMSTRAP_DEDUPE_MEMORY") && *getenv("VMSTRAP_DEDUPE_MEMORY")) {
		if (size_parse(getenv("VMSTRAP_DEDUPE_MEMORY"), &o.budget, &e) < 0)
		{
			vs_error_prefix(&e, "VMSTRAP_DEDUPE_MEMORY");
			return fe_fail(&e);
		}
	}
	if (o.mode != SPACE && (e2fsck = run_find("e2fsck", "e2fsprogs", &e)) == NULL)
		return fe_fail(&e);

	if (argc == 0) {
		bool present;
		const char *p;
		doc = doc_read_stdin(&present, &e);
		if (doc == NULL)
			return fe_fail(&e);
		if (!present)
			return fe_usage_error(SYNOPSIS,
			    "no image: give IMG, or pipe a document with a disk or base section into imgcheck");
		{
			/* the disk when there is one, else the base: never the
			 * base in place of a disk the document gets wrong */
			const char *which = json_object_get(doc, "disk") ? "disk" : "base";
			json_t *v = json_object_get(json_object_get(doc, which), "path");
			if (v == NULL) {
				vs_error(&e, EX_DATAERR, 0,
				    "the document has no disk.path or base.path: give IMG");
				return fe_fail(&e);
			}
			if ((p = json_string_value(v)) == NULL || *p != '/') {
				vs_error(&e, EX_DATAERR, 0,
				    "the document's %s.path is not an absolute path", which);
				return fe_fail(&e);
			}
		}
		ims = calloc(1, sizeof *ims);
		if (ims == NULL || (ims[0].path = strdup(p)) == NULL) {
			free(ims);
			vs_error(&e, EX_OSERR, ENOMEM, "imgcheck");
			return fe_fail(&e);
		}
		n = 1;
	} else {
		doc = json_object();
		ims = calloc((size_t)argc, sizeof *ims);
		if (ims == NULL || doc == NULL) {
			free(ims);
			vs_error(&e, EX_OSERR, ENOMEM, "imgcheck");
			return fe_fail(&e);
		}
		for (int i = 0; i < argc; i++) {
			ims[i].path = path_abs(argv[i], &e);
			if (ims[i].path == NULL) {
				n = (size_t)i;
				fe_fail(&e);
				failed = true;
				goto done;
			}
		}
		n = (size_t)argc;
	}
	for (size_t i = 0; i < n; i++)
		ims[i].fd = -1;
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		fe_fail(&e);
		failed = true;
		goto done;
	}
	stop_on_signals();
	/* every image is looked at before any is checked: bad input
	 * (missing, not an image, the same file twice) changes nothing */
	for (size_t i = 0; i < n; i++) {
		struct vs_err ie = { 0 };
		if (validate(&ims[i], &o, &ie) < 0) {
			fe_fail(&ie);
			if (!failed)
				e = ie;
			failed = true;
			continue;
		}
		for (size_t j = 0; j < i; j++)
			if (ims[j].fd >= 0 && ims[j].dev == ims[i].dev &&
			    ims[j].ino == ims[i].ino) {
				vs_error(&ie, EX_USAGE, 0, "%s and %s are the same file",
				    ims[j].path, ims[i].path);
				fe_fail(&ie);
				if (!failed)
					e = ie;
				failed = true;
				break;
			}
	}
	if (failed)
		goto done;
	if (o.mode != SPACE) {
		for (size_t i = 0; i < n; i++)
			claim(&ims[i], &o);
		check_all(ims, n, &o, e2fsck);
	}
	if ((o.trim || o.dedupe) && !stop_signal)
		real_before = real_now(ims, n);
	for (size_t i = 0; o.trim && i < n && !stop_signal; i++) {
		if (ims[i].failed || (ims[i].state && strcmp(ims[i].state, "in-use") == 0))
			continue;
		if (trim(&ims[i], &ims[i].err) < 0)
			ims[i].failed = true;
		trimmed += ims[i].trimmed;
	}
	if (o.dedupe && !stop_signal) {
		struct vs_err de = { 0 };
		if (dedupe(ims, n, &o, &dst, &deduped_done, &de) < 0) {
			fe_fail(&de);
			e = de;
			failed = true;
			goto done;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (ims[i].fd >= 0 && fstat(ims[i].fd, &st) == 0)
			ims[i].allocated = (uint64_t)st.st_blocks * 512;
		if (space(ims[i].fd, &ims[i], &x, &e) < 0) {
			fe_fail(&e);
			failed = true;
			goto done;
		}
	}
	stop_reraise();
	for (size_t i = 0; i < n; i++) {
		if (ims[i].failed) {
			fe_fail(&ims[i].err);
			if (!failed)
				e = ims[i].err;
			failed = true;
			continue;
		}
		if (ims[i].status > 0)
			bits |= ims[i].status & 7;
		if (ims[i].state && strcmp(ims[i].state, "in-use") == 0)
			busy = true;
		du += ims[i].allocated;
		real += ims[i].unique;
		any_reflinks |= ims[i].reflinks;
		all_noshare &= ims[i].noshare;
	}
	if (failed)
		goto done;
	real += real_total(&x);
	list = json_array();
	for (size_t i = 0; list && i < n; i++)
		json_array_append_new(list, image_json(&ims[i], &o));
	sec = json_pack("{s:o, s:{s:I, s:I}}", "images", list, "total",
	    "allocated", (json_int_t)du, "real", (json_int_t)real);
	if (sec && (o.trim || o.dedupe)) {
		json_t *t = json_object_get(sec, "total");
		json_object_set_new(t, "real_before", json_integer((json_int_t)real_before));
		json_object_set_new(t, "given_back", json_integer((json_int_t)
		    (real_before > real ? real_before - real : 0)));
		if (o.trim)
			json_object_set_new(t, "trimmed", json_integer((json_int_t)trimmed));
		if (o.dedupe)
			json_object_set_new(t, "deduped", json_integer((json_int_t)dst.deduped));
	}
	if (sec == NULL || doc_set(doc, "check", sec, &e) < 0) {
		failed = true;
		goto done;
	}
	if (o.table)
		table(ims, n, du, real, any_reflinks, all_noshare);
	if (!o.quiet && (o.trim || o.dedupe)) {
		char a[32], b[32], d[32];
		if (o.trim)
			fe_warn("trim: %s given back by the holes punched",
			    size_human(trimmed, a, sizeof a));
		if (o.dedupe && deduped_done)
			fe_warn("dedupe: %s shared again (%s read, %llu blocks alike, %llu calls, %u part%s)",
			    size_human(dst.deduped, a, sizeof a),
			    size_human(dst.read, b, sizeof b),
			    (unsigned long long)dst.alike, (unsigned long long)dst.calls,
			    dst.parts, dst.parts == 1 ? " in memory" : "s");
		fe_warn("real total: %s before, %s after: %s given back",
		    size_human(real_before, a, sizeof a), size_human(real, b, sizeof b),
		    size_human(real_before > real ? real_before - real : 0, d, sizeof d));
	}
	if (doc_write(stdout, doc, &e) < 0) {
		fe_fail(&e);
		failed = true;
	}
done:
	for (size_t i = 0; i < n; i++) {
		free(ims[i].path);
		if (ims[i].fd >= 0)
			close(ims[i].fd);
	}
	free(ims);
	free(x.v);
	if (failed)
		return fe_finish(e.code ? e.code : EX_SOFTWARE);
	/* (an image left alone because a VM holds it: busy, try later; the
	 * report on stdout says which) */
	return fe_finish(busy ? EX_TEMPFAIL : bits);
}
