/* mkbase: the host group's sparse ext4 base image, built from a root
 * filesystem tree without root, without mounting, without a loop device:
 * mke2fs makes the empty filesystem, libext2fs fills it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>
#include <ext2fs/ext3_extents.h>
#include <jansson.h>
#include <zstd.h>

#include "atomic.h"
#include "cleanup.h"
#include "artifact.h"
#include "clone.h"
#include "image.h"
#include "layout.h"
#include "config.h"
#include "digest.h"
#include "doc.h"
#include "err.h"
#include "ext4w.h"
#include "fe.h"
#include "lock.h"
#include "path.h"
#include "progress.h"
#include "ref.h"
#include "rootfs.h"
#include "layers.h"
#include "lend.h"
#include "rootless.h"
#include "run.h"
#include "size.h"
#include "stop.h"
#include "stamp.h"
#include "strmap.h"
#include "tree.h"

#define SYNOPSIS "mkbase [-fqV] [-C DIR] [-c FILE] [-g GROUP] [-s SIZE] [-o IMG] [-i LAYOUT REF | ROOTFS]"
#define DEFAULT_GROUP "slicer"
#define CHUNK (4u << 20)
#define EXT4_LINK_MAX EXT4W_LINK_MAX
#define EXT4_FILE_MAX EXT4W_FILE_MAX
#define SB_TIME_MAX EXT4W_SB_TIME_MAX

struct opts {
	const char *dir, *config, *group, *size, *out, *image;
	bool force, quiet;
};


struct build {
	struct ext4w w;		/* the image being filled */
	bool rootless;
	struct strmap links;	/* "dev:ino" of a hardlinked file → its inode */
	char *buf;		/* CHUNK bytes: a file's data as read */
	char *target;		/* PATH_MAX bytes: a symlink's target */
	char *xlist;		/* XLIST_MAX bytes: attribute names */
	char *xval;		/* XATTR_SIZE_MAX bytes: an attribute's value */
	struct progress prog;
	struct vs_err *e;
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: mkbase [-fqV] [-C DIR] [-c FILE] [-g GROUP] [-s SIZE] [-o IMG] [-i LAYOUT REF | ROOTFS]\n"
	    "       oci-fetch REF | mkbase [-fqV] [-C DIR] [-c FILE] [-g GROUP] [-s SIZE] [-o IMG]\n"
	    "Build the host group's sparse ext4 base image straight from an image's\n"
	    "layers in the OCI cache, or from a root filesystem tree.  With no\n"
	    "operand, from the pipeline document: its rootfs section (a tree) when\n"
	    "it has one, else its image section (the layers).\n"
	    "\n"
	    "  -C, --directory DIR  work in DIR (the workspace)\n"
	    "  -c, --config FILE    the configuration (default: slicer-mac.yaml)\n"
	    "  -f, --force          rebuild even when the base is up to date\n"
	    "  -g, --group GROUP    the host group (default: slicer)\n"
	    "  -i, --image LAYOUT   from the layers of image REF in the OCI layout\n"
	    "  -o, --output IMG     the image (default: GROUP-base.img)\n"
	    "  -q, --quiet          no progress\n"
	    "  -s, --size SIZE      logical size, like 15G (default: storage_size)\n"
	    "  -h, --help           this help\n"
	    "  -V, --version        version\n");
}

static int ext2_error(struct build *b, errcode_t err, const char *what)
{
	return ext4w_error(&b->w, err, what);
}

#define XLIST_MAX 65536	/* XATTR_LIST_MAX */

#define TOO_DEEP "the tree is deeper than the limit on open files allows: raise it (ulimit -n)"

static int src_error(struct build *b, const char *what)
{
	if (errno == EMFILE)
		return vs_error(b->e, EX_OSERR, 0, TOO_DEEP);
	return vs_error(b->e, vs_code_for_errno(errno, EX_IOERR), errno,
	    "%s %s", what, b->w.path[0] ? b->w.path : "/");
}

/* Rootless, unreadable entries of the tree are lent read permission while
 * they are read (common/lend): journaled, and given back on every way out,
 * kill -9 included (the next build replays the journal first). */
static int lend(bool rootless, int dfd, const char *name,
    const struct stat *st, mode_t *was, struct vs_err *e)
{
	*was = 0;
	return rootless ? lend_read(dfd, name, st, was, e) : 0;
}

static void take_back(int dfd, const char *name, mode_t was)
{
	if (lend_take_back(dfd, name, was) < 0)
		fe_warn("%s: cannot give back its mode %04o: %s", name,
		    (unsigned)(was & 07777), strerror(errno));
}

/* --- the tree: what it needs ---------------------------------------- */

struct need {
	uint64_t blocks, inodes, bytes;
};

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Names in directory fd, sorted (so that the image does not depend on the
 * order readdir gives), malloc'd; *n gets their number. */
static char **sorted_names(int fd, size_t *n)
{
	DIR *d;
	struct dirent *de;
	char **v = NULL;
	size_t cap = 0;
	int dup_fd = dup(fd);

	*n = 0;
	d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	if (d == NULL) {
		if (dup_fd >= 0)
			close(dup_fd);
		return NULL;
	}
	rewinddir(d);	/* the offset is shared with fd, which may have read */
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (*n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 32) * sizeof *v);
			if (nv == NULL)
				goto fail;
			v = nv;
		}
		if ((v[*n] = strdup(de->d_name)) == NULL)
			goto fail;
		(*n)++;
	}
	if (errno)
		goto fail;
	closedir(d);
	if (*n)
		qsort(v, *n, sizeof *v, cmp_names);
	if (v == NULL)
		v = calloc(1, sizeof *v);
	return v;
fail:
	while (*n)
		free(v[--*n]);
	free(v);
	closedir(d);
	return NULL;
}

/* Hardlinked files are counted once: "dev:ino" keys. */
static int link_key(const struct stat *st, char key[48])
{
	return snprintf(key, 48, "%llx:%llx", (unsigned long long)st->st_dev,
	    (unsigned long long)st->st_ino);
}

/* What measuring the tree needs to carry down it. */
struct measuring {
	struct need nd;
	struct strmap seen;	/* hardlinked files met */
	unsigned bs;
	bool rootless;
	char *xlist;		/* XLIST_MAX bytes */
	struct vs_err *e;
};

/* Blocks of extent tree a file of n data blocks may need beyond the four
 * extents its inode holds: every block may be its own extent (data
 * between holes; a directory's blocks allocated between files'). */
static uint64_t extent_blocks(uint64_t n)
{
	uint64_t ext = n, total = 0;

	while (ext > 4) {
		ext = (ext + 339) / 340;	/* entries in a 4096-byte node */
		total += ext;
	}
	return total;
}

/* 1 when the attributes of name will not fit in its inode and take a
 * block: a 256-byte inode has room for about 90 bytes of them. */
static int xattr_block(struct measuring *m, int dfd, const char *name)
{
	static const char *const prefixes[] = { "user.", "trusted.",
	    "security.", "system.", NULL };
	char p[64 + NAME_MAX];
	ssize_t len;
	size_t room = 0, exact = 0;

	snprintf(p, sizeof p, "/proc/self/fd/%d/%s", dfd, name);
	len = llistxattr(p, m->xlist, XLIST_MAX);
	if (len <= 0)
		return 0;
	for (char *k = m->xlist; k < m->xlist + len; k += strlen(k) + 1) {
		ssize_t v;
		if (m->rootless && (strcmp(k, ROOTLESS_XATTR) == 0 ||
		    (strncmp(k, "user.vmstrap.", 13) == 0 &&
		    strncmp(k, ROOTLESS_XATTR_PREFIX,
		    strlen(ROOTLESS_XATTR_PREFIX)) != 0)))
			continue;
		v = lgetxattr(p, k, NULL, 0);
		room += 16 + ((strlen(k) + 3) & ~(size_t)3) +
		    (v > 0 ? ((size_t)v + 3) & ~(size_t)3 : 0);
		{
			const char *key = k;
			size_t kl;
			if (m->rootless && strncmp(k, ROOTLESS_XATTR_PREFIX,
			    strlen(ROOTLESS_XATTR_PREFIX)) == 0)
				key = k + strlen(ROOTLESS_XATTR_PREFIX);
			kl = strlen(key);
			for (int i = 0; prefixes[i]; i++)
				if (strncmp(key, prefixes[i], strlen(prefixes[i])) == 0) {
					kl -= strlen(prefixes[i]);
					break;
				}
			exact += 16 + ((kl + 3) & ~(size_t)3) +
			    (v > 0 ? ((size_t)v + 3) & ~(size_t)3 : 0);
		}
	}
	/* ext4 keeps what the inode cannot hold in one block (its header
	 * 32 bytes, the list's end 4) */
	if (exact > m->bs - 36)
		return vs_error(m->e, EX_DATAERR, 0,
		    "%s: its attributes take %zu bytes; ext4 holds at most %u in a block",
		    name, exact, m->bs - 36);
	return room > 80;
}

/* Blocks and inodes the tree beneath directory fd will take: an upper
 * bound, so that a tree that passes never runs out of room half way
 * (blocks of zeros are counted, though they take none). */
static int measure(struct measuring *m, int fd)
{
	size_t n, dirbytes = 24;	/* "." and ".." */
	char **names = sorted_names(fd, &n);
	uint64_t dirblocks;
	int rc = 0;

	if (names == NULL)
		return errno == EMFILE ? vs_error(m->e, EX_OSERR, 0, TOO_DEEP) :
		    vs_error(m->e, EX_IOERR, errno, "read the tree");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct stat st;
		char key[48];
		int k;

		dirbytes += 8 + ((strlen(names[i]) + 3) & ~(size_t)3);
		if (fstatat(fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = vs_error(m->e, EX_IOERR, errno, "%s", names[i]);
			break;
		}
		if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
			k = link_key(&st, key);
			if (strmap_get(&m->seen, key, (size_t)k))
				continue;
			if (strmap_put(&m->seen, key, (size_t)k, 0) < 0) {
				rc = vs_error(m->e, EX_OSERR, ENOMEM, "measure");
				break;
			}
		}
		m->nd.inodes++;
		if ((k = xattr_block(m, fd, names[i])) < 0) {
			rc = -1;
			break;
		}
		m->nd.blocks += (uint64_t)k;
		if (!S_ISDIR(st.st_mode) && st.st_nlink > EXT4_LINK_MAX) {
			rc = vs_error(m->e, EX_DATAERR, 0,
			    "%s has %lu hard links; an ext4 file has at most %d",
			    names[i], (unsigned long)st.st_nlink, EXT4_LINK_MAX);
			break;
		}
		if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > EXT4_FILE_MAX) {
			rc = vs_error(m->e, EX_DATAERR, 0,
			    "%s is %llu bytes; an ext4 file with 4096-byte blocks holds at most 16T",
			    names[i], (unsigned long long)st.st_size);
			break;
		}
		if (S_ISREG(st.st_mode)) {
			/* a sparse file needs its data, not its size */
			uint64_t data = (uint64_t)st.st_blocks * 512, nb;
			if (data > (uint64_t)st.st_size)
				data = (uint64_t)st.st_size;
			nb = (data + m->bs - 1) / m->bs;
			m->nd.blocks += nb + extent_blocks(nb);
			m->nd.bytes += (uint64_t)st.st_size;
		} else if (S_ISLNK(st.st_mode) && st.st_size >= 60) {
			m->nd.blocks++;
		} else if (S_ISDIR(st.st_mode)) {
			/* (taken back once the directory is measured:
			 * looking names up in it needs search permission) */
			mode_t was;
			int cfd;
			if (lend(m->rootless, fd, names[i], &st, &was, m->e) < 0) {
				rc = -1;
				break;
			}
			cfd = openat(fd, names[i],
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				rc = errno == EMFILE ? vs_error(m->e, EX_OSERR,
				     0, TOO_DEEP) :
				    vs_error(m->e, vs_code_for_errno(errno,
				    EX_IOERR), errno, "%s", names[i]);
				take_back(fd, names[i], was);
				break;
			}
			rc = measure(m, cfd);
			close(cfd);
			take_back(fd, names[i], was);
		}
	}
	/* an entry never spans two blocks: each may waste up to the
	 * largest entry (8 + 255 bytes) at its end */
	dirblocks = (dirbytes + m->bs - 264 - 1) / (m->bs - 264);
	m->nd.blocks += dirblocks + extent_blocks(dirblocks);
	free_names(names, n);
	return rc;
}

/* --- filling the filesystem ------------------------------------------ */

/* Owner, mode and times from the tree; rootless, the owner recorded by
 * oci-unpack (none: root). */
static int stat_attr(struct build *b, int dfd, const char *name,
    const struct stat *st, struct ext4w_attr *a)
{
	uid_t uid = st->st_uid;
	gid_t gid = st->st_gid;

	if (b->rootless) {
		unsigned char rec[64];
		ssize_t n;
		char p[64 + NAME_MAX];
		uint32_t u = 0, g = 0;

		snprintf(p, sizeof p, "/proc/self/fd/%d/%s", dfd, name);
		n = S_ISLNK(st->st_mode) ? -1 :
		    lgetxattr(p, ROOTLESS_XATTR, rec, sizeof rec);
		if (n < 0 && !S_ISLNK(st->st_mode) && errno != ENODATA &&
		    errno != ENOTSUP)
			return errno == ERANGE ? vs_error(b->e, EX_DATAERR, 0,
			    "%s: a malformed %s attribute (too long)", b->w.path,
			    ROOTLESS_XATTR) : src_error(b, "read the owner of");
		if (n >= 0 && rootless_decode(rec, (size_t)n, &u, &g) < 0)
			return vs_error(b->e, EX_DATAERR, 0,
			    "%s: a malformed %s attribute", b->w.path, ROOTLESS_XATTR);
		uid = u;
		gid = g;
	}
	a->perm = st->st_mode & 07777;
	a->uid = uid;
	a->gid = gid;
	a->mtime = st->st_mtim;
	return 0;
}

static int copy_xattrs(struct build *b, int dfd, const char *name,
    ext2_ino_t ino)
{
	char p[64 + NAME_MAX], *list = b->xlist, *val = b->xval;
	struct ext2_xattr_handle *h = NULL;
	ssize_t len;
	errcode_t err;
	int rc = 0;

	snprintf(p, sizeof p, "/proc/self/fd/%d/%s", dfd, name);
	len = llistxattr(p, list, XLIST_MAX);
	if (len < 0)
		return errno == ENOTSUP ? 0 : src_error(b, "list the attributes of");
	if (len == 0)
		return 0;
	if ((h = ext4w_xattrs_open(&b->w, ino)) == NULL)
		return -1;
	for (char *k = list; k < list + len; k += strlen(k) + 1) {
		const char *key = k;
		ssize_t n;

		if (b->rootless) {
			size_t pl = strlen(ROOTLESS_XATTR_PREFIX);
			if (strncmp(k, ROOTLESS_XATTR_PREFIX, pl) == 0)
				key = k + pl;
			else if (strcmp(k, ROOTLESS_XATTR) == 0 ||
			    strncmp(k, "user.vmstrap.", 13) == 0)
				continue;
		}
		n = lgetxattr(p, k, val, XATTR_SIZE_MAX);
		if (n < 0) {
			rc = src_error(b, "read the attributes of");
			break;
		}
		if ((err = ext2fs_xattr_set(h, key, val, (size_t)n)) != 0)
			goto fail;
	}
	if ((err = ext2fs_xattrs_close(&h)) != 0)
		return ext2_error(b, err, "write the attributes of");
	return rc;
fail:
	if (h)
		ext2fs_xattrs_close(&h);
	return ext2_error(b, err, "set the attributes of");
}

/* A regular file's data: holes and blocks of zeros are left out. */
static int copy_data(struct build *b, int src, ext2_ino_t ino, off_t size)
{
	unsigned bs = b->w.fs->blocksize;
	struct ext4w_file f;
	off_t off = 0, done = 0;	/* done: bytes up to here are in */
	int rc = 0;

	if (ext4w_file_begin(&b->w, ino, &f) < 0)
		return -1;
	while (rc == 0 && off < size) {
		off_t data = lseek(src, off, SEEK_DATA), hole;
		if (data < 0) {
			if (errno != ENXIO)
				rc = src_error(b, "read");
			break;
		}
		hole = lseek(src, data, SEEK_HOLE);
		if (hole < 0) {
			rc = src_error(b, "read");
			break;
		}
		/* whole blocks: the source's may be smaller than ours, so a
		 * block may hold the end of one run of data and the start of
		 * the next; it is read once, holes in it read as zeros */
		data -= data % bs;
		if (data < done)
			data = done;
		if (hole % bs)
			hole += bs - hole % bs;
		while (rc == 0 && data < hole) {
			size_t want = hole - data < CHUNK ? (size_t)(hole - data) : CHUNK;
			ssize_t got = pread(src, b->buf, want, data);

			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				if (got < 0)
					rc = src_error(b, "read");
				break;
			}
			rc = ext4w_file_write(&f, (uint64_t)data, b->buf,
			    (size_t)got);
			data += got;
			done = data;
			progress_update(&b->prog, b->w.done);
		}
		off = hole;
	}
	if (ext4w_file_end(&f) < 0)
		rc = -1;
	return rc;
}

static int copy_dir(struct build *b, int fd, ext2_ino_t dir, size_t plen);

/* Make the inode for name (in source directory dfd, image directory dir),
 * whose stat is st. */
static int copy_entry_as_is(struct build *b, int dfd, const char *name,
    ext2_ino_t dir, size_t plen, struct stat st)
{
	struct ext4w_attr a;
	ext2_ino_t ino = 0;
	uintptr_t *known = NULL;
	char key[48];
	int k = 0, rc = 0;
	mode_t type;
	bool device_record = false;
	char dev[32];
	const char *target = NULL;

	type = st.st_mode & S_IFMT;
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
		k = link_key(&st, key);
		known = strmap_get(&b->links, key, (size_t)k);
	}
	if (known)	/* another name of a file already in */
		return ext4w_link(&b->w, dir, name, (ext2_ino_t)*known);
	if (b->rootless && S_ISREG(st.st_mode)) {
		char p[64 + NAME_MAX];
		ssize_t n;
		snprintf(p, sizeof p, "/proc/self/fd/%d/%s", dfd, name);
		n = lgetxattr(p, ROOTLESS_DEVICE_XATTR, dev, sizeof dev - 1);
		if (n < 0 && errno != ENODATA && errno != ENOTSUP)
			return errno == ERANGE ? vs_error(b->e, EX_DATAERR, 0,
			    "%s: a malformed %s attribute (too long)", b->w.path,
			    ROOTLESS_DEVICE_XATTR) : src_error(b, "read the device of");
		if (n >= 0) {
			unsigned maj, min;
			if (rootless_device_decode(dev, (size_t)n, &type, &maj,
			    &min) < 0)
				return vs_error(b->e, EX_DATAERR, 0,
				    "%s: a malformed %s attribute", b->w.path,
				    ROOTLESS_DEVICE_XATTR);
			st.st_rdev = makedev(maj, min);
			device_record = true;
		}
	}
	if (dir == EXT2_ROOT_INO && strcmp(name, "lost+found") == 0 &&
	    !S_ISDIR(st.st_mode))
		return vs_error(b->e, EX_DATAERR, 0,
		    "/lost+found in the tree is not a directory: an ext4 filesystem needs a directory there for e2fsck");
	if (S_ISLNK(st.st_mode)) {
		/* (b->target, not the stack: this frame is on it once for
		 * every level of the tree) */
		ssize_t n = readlinkat(dfd, name, b->target, PATH_MAX - 1);
		if (n < 0)
			return src_error(b, "read the symlink");
		b->target[n] = '\0';
		target = b->target;
	}
	if (ext4w_make(&b->w, dir, name, type, target, st.st_rdev, &ino) < 0)
		return -1;
	if (S_ISREG(type) && st.st_size > 0) {
		cleanup_fd int src = openat(dfd, name,
		    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (src < 0)
			return src_error(b, "open");
		if (copy_data(b, src, ino, st.st_size) < 0)
			return -1;
	}
	if (k > 0 && strmap_put(&b->links, key, (size_t)k, ino) < 0)
		return vs_error(b->e, EX_OSERR, ENOMEM, "hardlinks");
	if (stat_attr(b, dfd, name, &st, &a) < 0 ||
	    ext4w_set_attr(&b->w, ino, &a, S_ISREG(st.st_mode) && !device_record ?
	    (int64_t)st.st_size : -1) < 0)
		return -1;
	if (copy_xattrs(b, dfd, name, ino) < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		cleanup_fd int cfd = openat(dfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			return src_error(b, "open");
		rc = copy_dir(b, cfd, ino, plen);
	}
	return rc;
}

static int copy_entry(struct build *b, int dfd, const char *name,
    ext2_ino_t dir, size_t plen)
{
	struct stat st;
	mode_t was;
	int rc;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return src_error(b, "stat");
	/* (st keeps its own mode, not the one lent for reading) */
	if (lend(b->rootless, dfd, name, &st, &was, b->e) < 0)
		return -1;
	rc = copy_entry_as_is(b, dfd, name, dir, plen, st);

	take_back(dfd, name, was);
	return rc;
}

/* Everything in source directory fd into image directory dir; b->w.path
 * holds the directory's path (plen bytes). */
static int copy_dir(struct build *b, int fd, ext2_ino_t dir, size_t plen)
{
	size_t n;
	char **names = sorted_names(fd, &n);
	int rc = 0;

	if (names == NULL)
		return src_error(b, "read the directory");
	for (size_t i = 0; rc == 0 && i < n; i++) {
		size_t l = strlen(names[i]);
		/* (the walk goes by descriptors: a path longer than
		 * PATH_MAX is fine, only messages name its first part) */
		if (plen + l + 2 > sizeof b->w.path) {
			rc = copy_entry(b, fd, names[i], dir, plen);
			continue;
		}
		b->w.path[plen] = '/';
		memcpy(b->w.path + plen + 1, names[i], l + 1);
		rc = copy_entry(b, fd, names[i], dir, plen + 1 + l);
		b->w.path[plen] = '\0';
	}
	free_names(names, n);
	return rc;
}

/* --- the image ------------------------------------------------------- */

static void uuid_text(const unsigned char *u, char out[37])
{
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
	    "%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3], u[4], u[5],
	    u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* A UUID from a digest's bytes (version 4 and variant bits set, as a
 * random one has them). */
static void uuid_from(const unsigned char *d, char out[37])
{
	unsigned char u[16];

	memcpy(u, d, 16);
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	uuid_text(u, out);
}

static int hexval(char c)
{
	return c >= 'a' ? c - 'a' + 10 : c - '0';
}

/* Fixed UUID and hash seed for a reproducible build, from the source and
 * the size. */
static int fixed_ids(const char *digest, uint64_t size,
    char uuid[37], char seed[37], struct vs_err *e)
{
	char text[DIGEST_MAX + 64], dg[DIGEST_MAX];
	unsigned char raw[32];
	const char *hex;

	/* (a tree without a digest: the same ids wherever it is) */
	snprintf(text, sizeof text, "vmstrap-base\n%s\n%llu\n",
	    digest[0] ? digest : "no digest", (unsigned long long)size);
	if (digest_buffer(text, strlen(text), "sha256:", dg, e) < 0)
		return -1;
	hex = strchr(dg, ':') + 1;
	for (int i = 0; i < 32; i++)
		raw[i] = (unsigned char)(hexval(hex[2 * i]) << 4 |
		    hexval(hex[2 * i + 1]));
	uuid_from(raw, uuid);
	uuid_from(raw + 16, seed);
	return 0;
}

static int fill(struct build *b, int treefd, struct need *nd)
{
	ext2_filsys fs = b->w.fs;
	struct ext4w_attr a;
	struct stat st;
	uint64_t free_blocks = ext2fs_free_blocks_count(fs->super);
	uint64_t free_inodes = fs->super->s_free_inodes_count;

	if (nd->blocks > free_blocks || nd->inodes > free_inodes) {
		char need[32], have[32];
		size_format((nd->blocks * fs->blocksize + (1 << 20) - 1) &
		    ~(uint64_t)((1 << 20) - 1), need, sizeof need);
		size_format(free_blocks * fs->blocksize & ~(uint64_t)((1 << 20) - 1),
		    have, sizeof have);
		return vs_error(b->e, EX_DATAERR, 0,
		    "the tree does not fit: it needs %s and %llu inodes, the filesystem has room for %s and %llu inodes; give a larger size (-s)",
		    need, (unsigned long long)nd->inodes, have,
		    (unsigned long long)free_inodes);
	}
	if (fstat(treefd, &st) < 0)
		return src_error(b, "stat");
	if (stat_attr(b, treefd, ".", &st, &a) < 0 ||
	    ext4w_set_attr(&b->w, EXT2_ROOT_INO, &a, -1) < 0)
		return -1;
	if (copy_xattrs(b, treefd, ".", EXT2_ROOT_INO) < 0)
		return -1;
	return copy_dir(b, treefd, EXT2_ROOT_INO, 0);
}

/* The empty filesystem in af, of size bytes, open in w: reproducible
 * (ids from digest and size, times clamped) with SOURCE_DATE_EPOCH. */
static int new_fs(struct ext4w *w, struct atomic_file *af, uint64_t size,
    const char *digest, char uuid[37], struct vs_err *e)
{
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	char seed[37] = "";
	bool repro = false;
	time_t now = time(NULL);

	if (sde && *sde) {
		long long t;
		if (fe_number(sde, 0, SB_TIME_MAX, &t, "SOURCE_DATE_EPOCH", e) < 0)
			return -1;
		repro = true;
		now = (time_t)t;
		if (fixed_ids(digest, size, uuid, seed, e) < 0)
			return -1;
		if (setenv("E2FSPROGS_FAKE_TIME", sde, 1) < 0)
			return vs_error(e, EX_OSERR, errno, "setenv");
	}
	if (ftruncate(af->fd, (off_t)size) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s",
		    af->tmp);
	if (ext4w_mkfs(af->tmp, repro ? uuid : NULL, repro ? seed : NULL, e) < 0 ||
	    ext4w_open(w, af->tmp, af->fd, now, repro, e) < 0)
		return -1;
	if (!uuid[0])
		uuid_text(w->fs->super->s_uuid, uuid);
	return 0;
}

/* Build the image from the tree treefd into the open temporary file af. */
static int fill_image(const struct rootfs *src, int treefd,
    struct atomic_file *af, uint64_t size, bool quiet, char uuid[37],
    struct vs_err *e)
{
	struct build b = { .rootless = src->rootless, .e = e };
	struct measuring m = { .seen = STRMAP_INIT, .bs = 4096,
	    .rootless = src->rootless, .e = e };
	struct need nd;
	int rc;

	m.xlist = malloc(XLIST_MAX);
	rc = m.xlist ? measure(&m, treefd) :
	    vs_error(e, EX_OSERR, ENOMEM, "mkbase");
	if (rc == 0) {
		int k = xattr_block(&m, treefd, ".");
		if (k < 0)
			rc = -1;
		else
			m.nd.blocks += (uint64_t)k;
	}
	strmap_free(&m.seen);
	free(m.xlist);
	if (rc < 0)
		return vs_error_prefix(e, "%s", src->tree);
	nd = m.nd;
	nd.inodes++;

	if (new_fs(&b.w, af, size, src->digest, uuid, e) < 0)
		return -1;
	b.buf = malloc(CHUNK);
	b.target = malloc(PATH_MAX);
	b.xlist = malloc(XLIST_MAX);
	b.xval = malloc(XATTR_SIZE_MAX);
	if (b.buf == NULL || b.target == NULL || b.xlist == NULL ||
	    b.xval == NULL)
		rc = vs_error(e, EX_OSERR, ENOMEM, "mkbase");
	else {
		progress_start(&b.prog, stderr, "base", nd.bytes,
		    progress_wanted(stderr, quiet));
		rc = fill(&b, treefd, &nd);
		progress_end(&b.prog);
	}
	strmap_free(&b.links);
	free(b.buf);
	free(b.target);
	free(b.xlist);
	free(b.xval);
	if (rc < 0) {
		ext4w_abort(&b.w);
		return -1;
	}
	return ext4w_close(&b.w) < 0 ? vs_error_prefix(e, "%s", af->tmp) : 0;
}

/* What a base is built from: a tree, or an image's layers. */
struct input {
	bool layers;
	bool artifact;			/* a disk artifact (oci-push's): restored */
	struct rootfs tree;		/* !layers */
	struct oci_layout l;		/* layers */
	struct image img;
	struct artifact art;		/* artifact */
	char art_digest[DIGEST_MAX];
	const char *digest;		/* the source: the manifest's, or "" */
};

static void input_free(struct input *in)
{
	rootfs_free(&in->tree);
	if (in->layers) {
		image_free(&in->img);
		artifact_free(&in->art);
		layout_close(&in->l);
	}
}

/* --- from a disk artifact ---------------------------------------------- */

/* The artifact the manifest digest names, if it is one: 1 (in->art
 * filled), 0 when it is an image, -1 with e set. */
static int artifact_of(struct input *in, const char *digest, struct vs_err *e)
{
	cleanup_free char *body = NULL, *cbody = NULL;
	cleanup_json json_t *m = NULL;
	const char *cd;
	size_t len;

	body = layout_read_blob(&in->l, digest, 4u << 20, &len, e);
	if (body == NULL)
		return -1;
	m = json_loadb(body, len, 0, NULL);
	if (!json_is_object(m) || !artifact_is(m))
		return 0;
	cd = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
	if (cd == NULL || (cbody = layout_read_blob(&in->l, cd, 64u << 20, &len, e)) == NULL)
		return cd ? -1 : vs_error(e, EX_DATAERR, 0,
		    "the disk artifact %s has no config", digest);
	if (artifact_parse(cbody, len, &in->art, e) < 0)
		return -1;
	for (size_t i = 0; i < in->art.n; i++)
		if (in->art.c[i].blob[0] && !layout_has_blob(&in->l, in->art.c[i].blob, -1))
			return vs_error(e, EX_NOINPUT, 0,
			    "chunk %zu of the disk artifact (%s) is not in the cache %s: fetch it with oci-fetch",
			    i, in->art.c[i].blob, in->l.root);
	snprintf(in->art_digest, sizeof in->art_digest, "%s", digest);
	in->artifact = true;
	return 1;
}

/* The digest of bytes [off, off + len) of fd. */
static int chunk_digest(int fd, uint64_t off, uint64_t len, char out[DIGEST_MAX],
    unsigned char *buf, size_t bufsz, struct vs_err *e)
{
	struct digester d;

	if (digester_init(&d, "sha256", e) < 0)
		return -1;
	for (uint64_t at = 0; at < len; ) {
		size_t want = len - at < bufsz ? (size_t)(len - at) : bufsz;
		ssize_t got = pread(fd, buf, want, (off_t)(off + at));
		if (got <= 0) {
			digester_free(&d);
			return vs_error(e, EX_IOERR, got < 0 ? errno : 0, "read");
		}
		digester_update(&d, buf, (size_t)got);
		at += (uint64_t)got;
	}
	digester_final(&d, out);
	return 0;
}

static bool zeros(const unsigned char *p, size_t n)
{
	static const unsigned char z[64];

	for (size_t k = 0; k < n; k += 64)
		if (memcmp(p + k, z, n - k < 64 ? n - k : 64) != 0)
			return false;
	return true;
}

/* Write the non-zero 4 KiB blocks of buf (n bytes, at file offset off,
 * a multiple of 4 KiB) to fd: blocks of zeros stay holes. */
static int write_sparse(int fd, const unsigned char *buf, size_t n, uint64_t off)
{
	size_t i = 0;

	while (i < n) {
		size_t j;
		while (i < n && zeros(buf + i, n - i < 4096 ? n - i : 4096))
			i += 4096;
		for (j = i; j < n && !zeros(buf + j, n - j < 4096 ? n - j : 4096); j += 4096)
			;
		if (j > n)
			j = n;
		if (j > i && pwrite(fd, buf + i, j - i, (off_t)(off + i)) != (ssize_t)(j - i))
			return -1;
		i = j;
	}
	return 0;
}

/* What restore_chunk writes goes through a staging buffer: flushed whole
 * (its blocks are the file's, 4 KiB-aligned), blocks of zeros left out. */
struct stage {
	unsigned char *buf;
	size_t cap, fill;
	uint64_t off;		/* the file offset of buf[0] */
	int fd;
};

static int stage_put(struct stage *s, const unsigned char *p, size_t n)
{
	while (n > 0) {
		size_t k = s->cap - s->fill < n ? s->cap - s->fill : n;
		memcpy(s->buf + s->fill, p, k);
		s->fill += k;
		p += k;
		n -= k;
		if (s->fill == s->cap) {
			if (write_sparse(s->fd, s->buf, s->fill, s->off) < 0)
				return -1;
			s->off += s->fill;
			s->fill = 0;
		}
	}
	return 0;
}

/* Decompress chunk k's blob into af at its offset, its digest checked;
 * blocks of zeros are left as holes. */
static int restore_chunk(const struct input *in, const struct art_chunk *k,
    size_t idx, struct atomic_file *af, ZSTD_DCtx *dc, unsigned char *zin,
    size_t zinsz, unsigned char *out, size_t outsz, unsigned char *stagebuf,
    size_t stagesz, struct vs_err *e)
{
	cleanup_free char *path = layout_blob_path(&in->l, k->blob);
	cleanup_fd int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	struct stage s = { stagebuf, stagesz, 0, k->off, af->fd };
	struct digester d;
	char got[DIGEST_MAX];
	uint64_t at = 0;
	size_t r = 1;

	if (fd < 0)
		return vs_error(e, EX_NOINPUT, errno, "chunk %zu: %s", idx,
		    path ? path : k->blob);
	if (digester_init(&d, "sha256", e) < 0)
		return -1;
	ZSTD_DCtx_reset(dc, ZSTD_reset_session_only);
	for (;;) {
		ssize_t n = read(fd, zin, zinsz);
		ZSTD_inBuffer ib;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			digester_free(&d);
			return vs_error(e, EX_IOERR, errno, "%s", path);
		}
		if (n == 0)
			break;
		ib = (ZSTD_inBuffer){ zin, (size_t)n, 0 };
		while (ib.pos < ib.size) {
			ZSTD_outBuffer ob = { out, outsz, 0 };
			r = ZSTD_decompressStream(dc, &ob, &ib);
			if (ZSTD_isError(r) || at + ob.pos > k->len) {
				digester_free(&d);
				return vs_error(e, EX_DATAERR, 0,
				    "chunk %zu of the disk artifact (%s) is corrupt%s%s",
				    idx, k->blob, ZSTD_isError(r) ? ": " : ": too long",
				    ZSTD_isError(r) ? ZSTD_getErrorName(r) : "");
			}
			if (ob.pos) {
				digester_update(&d, out, ob.pos);
				if (stage_put(&s, out, ob.pos) < 0) {
					digester_free(&d);
					return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
					    errno, "%s", af->tmp);
				}
				at += ob.pos;
			}
		}
		if (stop_signal) {
			digester_free(&d);
			return vs_error(e, EX_TEMPFAIL, 0, "interrupted");
		}
	}
	if (s.fill && write_sparse(s.fd, s.buf, s.fill, s.off) < 0) {
		digester_free(&d);
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", af->tmp);
	}
	digester_final(&d, got);
	if (r != 0 || at != k->len || strcmp(got, k->digest) != 0)
		return vs_error(e, EX_DATAERR, 0,
		    "chunk %zu of the disk artifact (%s) does not match its digest %s: refused",
		    idx, k->blob, k->digest);
	return 0;
}

/* The restore's workers share this: the chunks are taken in turn. */
struct restore {
	const struct input *in;
	struct atomic_file *af;
	bool cloned;
	size_t next;
	uint64_t written, kept;
	bool failed;
	struct vs_err err;
	pthread_mutex_t mu;
};

static void *restore_worker(void *arg)
{
	struct restore *rs = arg;
	const struct artifact *a = &rs->in->art;
	size_t zinsz = ZSTD_DStreamInSize(), outsz = ZSTD_DStreamOutSize();
	unsigned char *zin = malloc(zinsz), *out = malloc(outsz);
	unsigned char *buf = malloc(1u << 20);
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	struct vs_err e = { 0 };

	if (zin == NULL || out == NULL || buf == NULL || dc == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "mkbase");
		goto fail;
	}
	for (;;) {
		const struct art_chunk *k;
		size_t i;

		pthread_mutex_lock(&rs->mu);
		i = rs->failed ? a->n : rs->next++;
		pthread_mutex_unlock(&rs->mu);
		if (i >= a->n)
			break;
		k = &a->c[i];
		if (rs->cloned) {
			char have[DIGEST_MAX];
			if (chunk_digest(rs->af->fd, k->off, k->len, have, buf, 1u << 20,
			    &e) < 0)
				goto fail;
			if (strcmp(have, k->digest) == 0) {
				pthread_mutex_lock(&rs->mu);
				rs->kept += k->len;
				pthread_mutex_unlock(&rs->mu);
				continue;
			}
			if (fallocate(rs->af->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    (off_t)k->off, (off_t)k->len) < 0) {
				vs_error(&e, vs_code_for_errno(errno, EX_IOERR), errno,
				    "%s", rs->af->tmp);
				goto fail;
			}
		}
		if (!k->blob[0])
			continue;	/* (zeros: a hole) */
		if (restore_chunk(rs->in, k, i, rs->af, dc, zin, zinsz, out, outsz,
		    buf, 1u << 20, &e) < 0)
			goto fail;
		pthread_mutex_lock(&rs->mu);
		rs->written += k->len;
		pthread_mutex_unlock(&rs->mu);
	}
	goto out;
fail:
	pthread_mutex_lock(&rs->mu);
	if (!rs->failed) {
		rs->failed = true;
		rs->err = e;
	}
	pthread_mutex_unlock(&rs->mu);
out:
	ZSTD_freeDCtx(dc);
	free(zin);
	free(out);
	free(buf);
	return NULL;
}

/* af: the disk the artifact holds, chunk by chunk, on as many threads as
 * there are processors; with old (a disk an earlier artifact of it was
 * restored to, the same size: cloned first, copy-on-write), only the
 * chunks that differ are written.  *written gets the bytes of the chunks
 * written, *kept those kept. */
static int restore_artifact(const struct input *in, struct atomic_file *af,
    const char *old, uint64_t *written, uint64_t *kept, struct vs_err *e)
{
	struct restore rs = { .in = in, .af = af };
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	size_t nt = ncpu > 1 ? (size_t)(ncpu > 16 ? 16 : ncpu) : 1, started = 0;
	pthread_t th[16];

	*written = *kept = 0;
	if (old) {
		cleanup_fd int ofd = open(old, O_RDONLY | O_CLOEXEC);
		struct clone_stats cs;
		if (ofd >= 0 && clone_into(af, ofd, 0, NULL, NULL, &cs, e) == 0)
			rs.cloned = true;
		else if (ftruncate(af->fd, 0) < 0)
			return vs_error(e, EX_IOERR, errno, "%s", af->tmp);
	}
	if (ftruncate(af->fd, (off_t)in->art.size) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s",
		    af->tmp);
	pthread_mutex_init(&rs.mu, NULL);
	for (size_t i = 0; i < nt; i++) {
		if (pthread_create(&th[i], NULL, restore_worker, &rs) != 0)
			break;
		started++;
	}
	if (started == 0)
		restore_worker(&rs);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&rs.mu);
	if (rs.failed) {
		*e = rs.err;
		return -1;
	}
	if (stop_signal)
		return vs_error(e, EX_TEMPFAIL, 0, "interrupted");
	if (fsync(af->fd) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s",
		    af->tmp);
	*written = rs.written;
	*kept = rs.kept;
	return 0;
}

/* --- from the image's layers ------------------------------------------ */

/* The ext4 image as a sink of common/layers.  Every entry made is in
 * paths (clean path → inode and type), which is all the image holds: a
 * path not there is not in the image, and no directory is searched to
 * know it.  What a whiteout removes goes from the image entirely: its
 * blocks, inode and directory entry (common/ext4w). */
enum { T_DIR = 1, T_REG, T_LNK, T_OTHER };
#define PACK(ino, t) ((uintptr_t)(ino) << 4 | (t))
#define INO(v) ((ext2_ino_t)((v) >> 4))
#define TYPE(v) ((int)((v) & 15))

struct lsink {
	struct ext4w *w;
	struct strmap paths;
	uint64_t entries, bytes;
};

/* What is at path: 0 and *v, 1 when nothing is. */
static int l_get(struct lsink *ls, const char *path, size_t len, uintptr_t *v)
{
	uintptr_t *slot;

	if (len == 0) {
		*v = PACK(EXT2_ROOT_INO, T_DIR);
		return 0;
	}
	slot = strmap_get(&ls->paths, path, len);
	if (slot == NULL || *slot == 0)
		return 1;
	*v = *slot;
	return 0;
}

static int l_put(struct lsink *ls, const char *path, ext2_ino_t ino, int t,
    struct vs_err *e)
{
	if (strmap_put(&ls->paths, path, strlen(path), PACK(ino, t)) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "remember an entry");
	return 0;
}

/* The directory dir of the image, never through a symlink: 0 and *ino;
 * 1 when it is missing (made, 0755 and root's, with create). */
static int l_dir(struct lsink *ls, const char *dir, bool create,
    ext2_ino_t *ino, struct vs_err *e)
{
	ext2_ino_t cur = EXT2_ROOT_INO;
	size_t len = 0, n = strlen(dir);
	uintptr_t v;

	while (len < n) {
		size_t end = len + strcspn(dir + len, "/");

		if (l_get(ls, dir, end, &v) == 0) {
			if (TYPE(v) == T_LNK)
				return vs_error(e, EX_DATAERR, 0,
				    "the path goes through the symlink '%.*s'",
				    (int)end, dir);
			if (TYPE(v) != T_DIR && !create)
				return 1;	/* (as good as missing) */
			if (TYPE(v) != T_DIR)
				return vs_error(e, EX_DATAERR, 0, "'%.*s' is not a directory",
				    (int)end, dir);
			cur = INO(v);
		} else if (!create) {
			return 1;
		} else {
			char name[NAME_MAX + 1];
			struct ext4w_attr a = { .perm = 0755,
			    .mtime = { ls->w->now, 0 } };
			ext2_ino_t made;

			snprintf(name, sizeof name, "%.*s", (int)(end - len),
			    dir + len);
			if (ext4w_make(ls->w, cur, name, S_IFDIR, NULL, 0, &made) < 0 ||
			    ext4w_set_attr(ls->w, made, &a, -1) < 0)
				return -1;
			if (strmap_put(&ls->paths, dir, end, PACK(made, T_DIR)) < 0)
				return vs_error(e, EX_OSERR, ENOMEM,
				    "remember an entry");
			ls->entries++;
			cur = made;
		}
		len = end + (dir[end] == '/');
	}
	*ino = cur;
	return 0;
}

/* Forget path and what is beneath it (it was removed). */
static void l_forget(struct lsink *ls, const char *path)
{
	size_t len = strlen(path), i = 0;
	const char *key;
	uintptr_t val, *slot = strmap_get(&ls->paths, path, len);

	if (slot == NULL || *slot == 0)
		return;
	if (TYPE(*slot) == T_DIR)
		while (strmap_next(&ls->paths, &i, &key, &val))
			if (val && strncmp(key, path, len) == 0 && key[len] == '/')
				*strmap_get(&ls->paths, key, strlen(key)) = 0;
	*slot = 0;
}

static int l_remove(void *arg, const char *path, struct vs_err *e)
{
	struct lsink *ls = arg;
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	ext2_ino_t d;
	uintptr_t v;
	int r;

	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 0, path);
	if ((r = l_dir(ls, dir, false, &d, e)) != 0)
		return r < 0 ? -1 : 0;
	if (l_get(ls, path, strlen(path), &v) != 0)
		return 0;
	snprintf(ls->w->path, sizeof ls->w->path, "/%s", path);
	if (ext4w_remove(ls->w, d, slash ? slash + 1 : path) < 0)
		return -1;
	l_forget(ls, path);
	return 0;
}

static int l_list(void *arg, const char *path, char ***names, size_t *n,
    struct vs_err *e)
{
	struct lsink *ls = arg;
	ext2_ino_t d;
	int r;

	*names = NULL;
	*n = 0;
	if ((r = l_dir(ls, path, false, &d, e)) != 0)
		return r < 0 ? -1 : 0;
	return ext4w_list(ls->w, d, names, n);
}

static int l_is_dir(void *arg, const char *path, struct vs_err *e)
{
	struct lsink *ls = arg;
	uintptr_t v;

	(void)e;
	return l_get(ls, path, strlen(path), &v) == 0 && TYPE(v) == T_DIR;
}

/* The entry's attributes, as the layer has them. */
static int l_xattrs(struct lsink *ls, struct archive_entry *ae,
    ext2_ino_t ino, bool fresh, struct vs_err *e)
{
	struct ext2_xattr_handle *h;
	const char *key;
	const void *val;
	size_t size;
	int rc = 0;

	if (!fresh && ext4w_xattrs_clear(ls->w, ino) < 0)
		return -1;
	if (archive_entry_xattr_reset(ae) == 0)
		return 0;
	if ((h = ext4w_xattrs_open(ls->w, ino)) == NULL)
		return -1;
	while (rc == 0 &&
	    archive_entry_xattr_next(ae, &key, &val, &size) == ARCHIVE_OK) {
		if (!layers_xattr_known(key))
			rc = vs_error(e, EX_DATAERR, 0,
			    "the attribute '%.60s' is in no namespace Linux knows (user., trusted., security., system.)",
			    key);
		else if (strlen(key) > XATTR_NAME_MAX || size > XATTR_SIZE_MAX)
			rc = vs_error(e, EX_DATAERR, 0,
			    "the attribute '%.60s' has a %s longer than Linux allows",
			    key, size > XATTR_SIZE_MAX ? "value" : "name");
		else
			rc = ext4w_xattr_set(ls->w, h, key, val, size);
	}
	if (ext4w_xattrs_close(ls->w, &h) < 0)
		rc = -1;
	return rc;
}

static int l_data(struct lsink *ls, const struct layer_entry *le,
    ext2_ino_t ino, struct vs_err *e)
{
	struct ext4w_file f;
	uint64_t end = 0;
	int rc = 0;

	if (ext4w_file_begin(ls->w, ino, &f) < 0)
		return -1;
	for (;;) {
		const void *p;
		size_t n;
		uint64_t off;
		int r = layers_data(le, &p, &n, &off, &end, e);

		if (r != 0) {
			rc = r < 0 ? -1 : 0;
			break;
		}
		if (n && (rc = ext4w_file_write(&f, off, p, n)) < 0)
			break;
	}
	if (ext4w_file_end(&f) < 0)
		rc = -1;
	return rc;
}

static int l_entry(void *arg, const struct layer_entry *le, struct vs_err *e)
{
	struct lsink *ls = arg;
	struct ext4w *w = ls->w;
	struct archive_entry *ae = le->ae;
	mode_t type = archive_entry_filetype(ae);
	struct ext4w_attr at = { .perm = archive_entry_perm(ae) & 07777,
	    .uid = (uint32_t)archive_entry_uid(ae),
	    .gid = (uint32_t)archive_entry_gid(ae),
	    .mtime = { archive_entry_mtime(ae),
	    archive_entry_mtime_nsec(ae) } };
	int64_t size = archive_entry_size(ae);
	const char *target = NULL;
	ext2_ino_t dir, ino;
	uintptr_t v;
	int t;

	snprintf(w->path, sizeof w->path, "/%s", le->path);
	if (*le->path == '\0')	/* the root's own entry ("./") */
		return ext4w_set_attr(w, EXT2_ROOT_INO, &at, -1) < 0 ||
		    l_xattrs(ls, ae, EXT2_ROOT_INO, false, e) < 0 ? -1 : 0;
	if (l_dir(ls, le->dir, true, &dir, e) != 0)
		return -1;
	if (le->link) {
		char tdir[PATH_MAX];
		const char *slash = strrchr(le->link, '/');
		ext2_ino_t td;
		uintptr_t tv;
		int r;

		snprintf(tdir, sizeof tdir, "%.*s",
		    slash ? (int)(slash - le->link) : 0, le->link);
		r = l_dir(ls, tdir, false, &td, e);
		if (r < 0)
			return -1;
		if (r > 0 || l_get(ls, le->link, strlen(le->link), &tv) != 0)
			return vs_error(e, EX_DATAERR, 0,
			    "a hardlink to '%s', which is not in the tree",
			    archive_entry_hardlink(ae));
		if (TYPE(tv) == T_DIR)
			return vs_error(e, EX_DATAERR, 0, "a hardlink to the directory '%s'",
			    archive_entry_hardlink(ae));
		if (l_get(ls, le->path, strlen(le->path), &v) == 0) {
			if (INO(v) == INO(tv))
				return 0;	/* the same file already */
			if (ext4w_remove(w, dir, le->name) < 0)
				return -1;
			l_forget(ls, le->path);
		}
		if (ext4w_link(w, dir, le->name, INO(tv)) < 0)
			return -1;
		return l_put(ls, le->path, INO(tv), TYPE(tv), e);
	}
	t = type == AE_IFDIR ? T_DIR : type == AE_IFREG ? T_REG :
	    type == AE_IFLNK ? T_LNK : T_OTHER;
	if (l_get(ls, le->path, strlen(le->path), &v) == 0) {
		/* a directory declared again keeps what is in it, and takes
		 * the upper entry's owner, mode, times and attributes */
		if (t == T_DIR && TYPE(v) == T_DIR)
			return ext4w_set_attr(w, INO(v), &at, -1) < 0 ||
			    l_xattrs(ls, ae, INO(v), false, e) < 0 ? -1 : 0;
		if (ext4w_remove(w, dir, le->name) < 0)
			return -1;
		l_forget(ls, le->path);
	}
	if (t == T_REG && (size < 0 || (uint64_t)size > EXT4W_FILE_MAX))
		return vs_error(e, EX_DATAERR, 0,
		    "a file of %lld bytes; an ext4 file with 4096-byte blocks holds at most 16T",
		    (long long)size);
	if (t == T_LNK) {
		target = archive_entry_symlink(ae);
		if (target == NULL)
			return vs_error(e, EX_DATAERR, 0, "a symlink without a target");
		if (strlen(target) >= PATH_MAX)
			return vs_error(e, EX_DATAERR, 0,
			    "a symlink target of %zu bytes; Linux allows at most %d",
			    strlen(target), PATH_MAX - 1);
	}
	if (ext4w_make(w, dir, le->name, type == AE_IFREG ? S_IFREG :
	    type == AE_IFDIR ? S_IFDIR : type == AE_IFLNK ? S_IFLNK :
	    type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO,
	    target, makedev(archive_entry_rdevmajor(ae),
	    archive_entry_rdevminor(ae)), &ino) < 0)
		return -1;
	if (l_put(ls, le->path, ino, t, e) < 0)
		return -1;
	ls->entries++;
	if (t == T_REG) {
		ls->bytes += (uint64_t)size;
		if (l_data(ls, le, ino, e) < 0)
			return -1;
	}
	if (ext4w_set_attr(w, ino, &at, t == T_REG ? size : -1) < 0)
		return -1;
	return l_xattrs(ls, ae, ino, true, e);
}

/* Build the image from img's layers into the open temporary file af. */
static int fill_from_layers(const struct oci_layout *l, const struct image *img,
    struct atomic_file *af, uint64_t size, bool quiet, char uuid[37],
    struct vs_err *e)
{
	struct ext4w w;
	struct lsink ls = { .w = &w, .paths = STRMAP_INIT };
	const struct layer_sink sink = { .arg = &ls, .entry = l_entry,
	    .remove = l_remove, .list = l_list, .is_dir = l_is_dir };
	ext2_ino_t lf;
	uintptr_t v;
	int rc;

	if (new_fs(&w, af, size, img->manifest, uuid, e) < 0)
		return -1;
	/* (mke2fs's /lost+found, which an image may declare too) */
	rc = ext4w_lookup(&w, EXT2_ROOT_INO, "lost+found", &lf);
	if (rc == 0)
		rc = l_put(&ls, "lost+found", lf, T_DIR, e);
	if (rc == 0)
		rc = layers_apply(l, img, &sink, "base", quiet, e);
	/* e2fsck needs /lost+found: made again if a layer removed it */
	if (rc == 0 && l_get(&ls, "lost+found", 10, &v) != 0) {
		struct ext4w_attr a = { .perm = 0700, .mtime = { w.now, 0 } };
		snprintf(w.path, sizeof w.path, "/lost+found");
		rc = ext4w_make(&w, EXT2_ROOT_INO, "lost+found", S_IFDIR, NULL, 0,
		    &lf) < 0 || ext4w_set_attr(&w, lf, &a, -1) < 0 ? -1 : 0;
	} else if (rc == 0 && TYPE(v) != T_DIR) {
		rc = vs_error(e, EX_DATAERR, 0,
		    "/lost+found in the image is not a directory: an ext4 filesystem needs a directory there for e2fsck");
	}
	strmap_free(&ls.paths);
	if (rc < 0) {
		/* the image is full: it is too small for the image */
		if (e->code == EX_CANTCREAT && !strstr(e->msg, "write the image")) {
			char b[32];
			vs_error(e, EX_DATAERR, 0,
			    "the image does not fit in %s (%s): give a larger size (-s)",
			    size_format(size, b, sizeof b),
			    w.last_err == EXT2_ET_INODE_ALLOC_FAIL ? "no inode left" :
			    "no block left");
		}
		ext4w_abort(&w);
		return -1;
	}
	return ext4w_close(&w) < 0 ? vs_error_prefix(e, "%s", af->tmp) : 0;
}

/* Build the image into the open temporary file af.  Before the tree is
 * read, what a killed rootless build left lent is given back (and, rootless
 * or when there is such a journal, the tree is locked: one build of a tree
 * at a time, or one would read another's lent modes). */
static int build_image(const struct input *in, struct atomic_file *af,
    uint64_t size, bool quiet, char uuid[37], struct vs_err *e)
{
	const struct rootfs *src = &in->tree;
	cleanup_fd int treefd = -1;
	int rc;

	if (in->layers)
		return fill_from_layers(&in->l, &in->img, af, size, quiet, uuid, e);
	treefd = open(src->tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (treefd < 0)
		return vs_error(e, errno == ENOENT ? EX_NOINPUT : EX_IOERR, errno,
		    "%s", src->tree);
	rc = lend_begin(src->tree, treefd, src->rootless, e);
	if (rc == 0)
		rc = fill_image(src, treefd, af, size, quiet, uuid, e);
	lend_end();
	return rc;
}

/* The walk recurses once per level of the tree: it runs on a stack as
 * deep as the open-file limit lets a tree be (pages are only used as the
 * walk goes down), not on the main thread's 8 MiB. */
struct deep {
	const struct input *in;
	struct atomic_file *af;
	uint64_t size;
	bool quiet;
	char *uuid;
	struct vs_err *e;
	int rc;
};

/* The signals that end a build: taken by the thread that builds, whose
 * state (the modes lent, common/lend) their handler gives back. */
static void stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGPIPE);
}

static void *deep_run(void *arg)
{
	struct deep *d = arg;
	sigset_t set;

	stop_signals(&set);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	d->rc = build_image(d->in, d->af, d->size, d->quiet, d->uuid, d->e);
	return NULL;
}

static int build_deep(const struct input *in, struct atomic_file *af,
    uint64_t size, bool quiet, char uuid[37], struct vs_err *e)
{
	struct deep d = { in, af, size, quiet, uuid, e, -1 };
	sigset_t set, old;
	pthread_attr_t attr;
	pthread_t t;
	int err;

	/* (blocked here while the builder runs, so that they reach it: the
	 * handler then never runs beside a lend in progress) */
	stop_signals(&set);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	if ((err = pthread_attr_init(&attr)) != 0 ||
	    (err = pthread_attr_setstacksize(&attr, (size_t)1 << 30)) != 0 ||
	    (err = pthread_create(&t, &attr, deep_run, &d)) != 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		/* (no room for a big stack: the main thread's will do) */
		return build_image(in, af, size, quiet, uuid, e);
	}
	pthread_attr_destroy(&attr);
	pthread_join(t, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return d.rc;
}

/* --- what a base was built from -------------------------------------- */

static json_t *base_section(const char *img, const char *group,
    uint64_t size, const char *uuid, const char *source, const char *from,
    bool reused)
{
	struct stat st;

	if (stat(img, &st) < 0)
		return NULL;
	return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s?, s:s, s:b}", "path", img,
	    "group", group, "size", (json_int_t)size,
	    "allocated", (json_int_t)st.st_blocks * 512, "uuid", uuid,
	    "source", source && source[0] ? source : NULL, "from", from,
	    "reused", reused);
}

/* true when directory dir is tree or beneath it. */
static bool inside(const char *dir, const char *tree)
{
	cleanup_free char *d = realpath(dir, NULL), *t = realpath(tree, NULL);
	size_t n;

	if (d == NULL || t == NULL)
		return false;
	n = strlen(t);
	return strncmp(d, t, n) == 0 && (d[n] == '\0' || d[n] == '/' ||
	    strcmp(t, "/") == 0);
}

/* Another base of the same image in dir (another host group's, which
 * mkbase built from the digest: its record says so, and ties it to the
 * file as it is), no larger than size: its path, with *got its size and
 * *uuid; NULL when there is none.  The largest such is taken. */
static char *sibling_base(const char *dir, const char *img,
    const char *digest, uint64_t size, uint64_t *got, char uuid[37])
{
	cleanup_free char *self = NULL;
	char *best = NULL;
	struct dirent *de;
	DIR *d;

	if (digest[0] == '\0' || path_split(img, NULL, &self) < 0 ||
	    (d = opendir(dir)) == NULL)
		return NULL;
	*got = 0;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		cleanup_free char *p = NULL;
		cleanup_json json_t *j = NULL;
		const char *was, *id;
		struct stat st;

		if (n <= 9 || strcmp(de->d_name + n - 9, "-base.img") != 0 ||
		    de->d_name[0] == '.' || strcmp(de->d_name, self) == 0 ||
		    (p = path_join(dir, de->d_name)) == NULL ||
		    stat(p, &st) < 0 || !S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size > size || (uint64_t)st.st_size <= *got)
			continue;
		j = stamp_read(p);
		was = json_string_value(json_object_get(j, "source"));
		id = json_string_value(json_object_get(j, "uuid"));
		if (was == NULL || id == NULL || strcmp(was, digest) != 0 ||
		    strlen(id) != 36)
			continue;
		free(best);
		best = steal_pointer(&p);
		*got = (uint64_t)st.st_size;
		snprintf(uuid, 37, "%s", id);
	}
	closedir(d);
	return best;
}

/* af: a copy-on-write clone of the base sib (of size sibsize, the image
 * digest), grown to size, under sib's lock (shared: no build of it
 * meanwhile).  0, -1 with e set, or 1 when sib is busy or changed: then
 * the base is built. */
static int clone_sibling(const char *sib, uint64_t sibsize, const char *digest,
    struct atomic_file *af, uint64_t size, struct vs_err *e)
{
	cleanup_free char *dir = NULL, *base = NULL, *lockp = NULL;
	cleanup_fd int lock = -1, fd = -1;
	struct clone_stats cs;
	bool needs_fsck = false;

	if (path_split(sib, &dir, &base) < 0 ||
	    asprintf(&lockp, "%s/.%s.lock", dir, base) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", sib);
	/* (not waiting: two groups' builds would each wait for the other's) */
	if ((lock = lock_path(lockp, false, false, e)) < 0)
		return 1;
	if ((fd = open(sib, O_RDONLY | O_CLOEXEC)) < 0)
		return 1;
	{
		/* still what it was when it was chosen, now that it is ours */
		cleanup_json json_t *j = stamp_read(sib);
		const char *was = json_string_value(json_object_get(j, "source"));
		struct stat a, b;
		if (was == NULL || strcmp(was, digest) != 0 || fstat(fd, &a) < 0 ||
		    stat(sib, &b) < 0 || a.st_ino != b.st_ino ||
		    (uint64_t)a.st_size != sibsize)
			return 1;
	}
	if (clone_into(af, fd, 0, NULL, NULL, &cs, e) < 0)
		return vs_error_prefix(e, "clone %s", sib);
	if (size > sibsize) {
		if (ext4w_probe(af->tmp, &needs_fsck, e) < 0)
			return -1;
		if (ftruncate(af->fd, (off_t)size) < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
			    "%s", af->tmp);
		if (ext4w_grow(af->tmp, needs_fsck, e) < 0)
			return vs_error_prefix(e, "grow the clone of %s", sib);
	}
	if (fsync(af->fd) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "%s", af->tmp);
	return 0;
}

/* The new base af renamed into place as img, its record written beside
 * it: its base section, or NULL with e set. */
static json_t *commit_base(struct atomic_file *af, const char *img,
    const char *group, uint64_t size, const char *uuid, const char *source,
    const char *from, struct vs_err *e)
{
	json_t *sec;

	if (atomic_commit(af, ATOMIC_REPLACE, e) < 0) {
		atomic_abort(af);
		return NULL;
	}
	sec = base_section(img, group, size, uuid, source, from, false);
	if (sec == NULL)
		return vs_error(e, EX_IOERR, errno, "%s", img), NULL;
	json_object_del(sec, "reused");
	if (stamp_write(img, sec, e) < 0) {
		json_decref(sec);
		return NULL;
	}
	json_object_set_new(sec, "reused", json_false());
	return sec;
}

/* Build img from src, or reuse it. */
static json_t *make_base(const struct input *in, const char *img,
    const char *group, uint64_t size, const struct opts *o, struct vs_err *e)
{
	const char *from = in->artifact ? "artifact" : in->layers ? "layers" : "tree";
	cleanup_free char *sib = NULL;
	uint64_t sibsize = 0;
	int r;
	cleanup_free char *dir = NULL, *base = NULL, *lockp = NULL;
	cleanup_fd int lock = -1;
	struct atomic_file af;
	char uuid[37] = "";
	struct stat st;
	json_t *sec;

	if (path_split(img, &dir, &base) < 0 ||
	    asprintf(&lockp, "%s/.%s.lock", dir, base) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", img), NULL;
	if (stat(img, &st) == 0 && S_ISDIR(st.st_mode))
		return vs_error(e, EX_CANTCREAT, 0,
		    "%s is a directory: name the image file (-o DIR/NAME.img)",
		    img), NULL;
	if (!in->layers && inside(dir, in->tree.tree))
		return vs_error(e, EX_USAGE, 0,
		    "%s is inside the tree it is built from (%s): it would copy itself; put it elsewhere",
		    img, in->tree.tree), NULL;
	lock = lock_output(img, lockp, e);
	if (lock < 0)
		return NULL;
	tree_remove_stale(dir, base);
	if (!o->force && in->digest[0] && stat(img, &st) == 0) {
		cleanup_json json_t *j = stamp_read(img);
		const char *was = json_string_value(json_object_get(j, "source"));
		const char *id = json_string_value(json_object_get(j, "uuid"));
		const char *how = json_string_value(json_object_get(j, "from"));
		if (was && id && strcmp(was, in->digest) == 0 &&
		    (uint64_t)st.st_size == size)
			return base_section(img, group, size, id, in->digest,
			    how ? how : "tree", true);
	}
	if (in->artifact) {
		/* an earlier restore of another artifact, the same size: the
		 * chunks that did not change are kept (Tart's --deduplicate) */
		cleanup_json json_t *j = stamp_read(img);
		const char *how = json_string_value(json_object_get(j, "from"));
		bool old = !o->force && stat(img, &st) == 0 &&
		    (uint64_t)st.st_size == in->art.size && how &&
		    strcmp(how, "artifact") == 0;
		uint64_t written = 0, kept = 0;

		if (size < in->art.size) {
			char a[32], b[32];
			return vs_error(e, EX_USAGE, 0,
			    "the disk artifact is %s, larger than %s: a base can grow, never shrink",
			    size_format(in->art.size, a, sizeof a),
			    size_format(size, b, sizeof b)), NULL;
		}
		/* else another base here of what the artifact was built from,
		 * or restored from the artifact itself, the same size */
		if (!old && !o->force) {
			uint64_t got = 0;
			char id[37];
			sib = sibling_base(dir, img, in->art.source[0] ? in->art.source :
			    in->art_digest, in->art.size, &got, id);
			if (sib == NULL && in->art.source[0])
				sib = sibling_base(dir, img, in->art_digest, in->art.size,
				    &got, id);
			if (sib && got != in->art.size) {
				free(sib);
				sib = NULL;
			}
		}
		if (atomic_open(&af, img, 0644, e) < 0)
			return NULL;
		if (restore_artifact(in, &af, old ? img : sib, &written, &kept, e) < 0) {
			atomic_abort(&af);
			return NULL;
		}
		if (size > in->art.size) {
			bool needs_fsck = false;
			if (ext4w_probe(af.tmp, &needs_fsck, e) < 0 ||
			    ftruncate(af.fd, (off_t)size) < 0 ||
			    ext4w_grow(af.tmp, needs_fsck, e) < 0) {
				if (!e->code)
					vs_error(e, EX_IOERR, errno, "%s", af.tmp);
				atomic_abort(&af);
				return NULL;
			}
		}
		if (!o->quiet && (old || sib)) {
			char a[32], b[32];
			fe_warn("%s: %s kept from %s, %s written", base,
			    size_human(kept, a, sizeof a), old ? "the disk it replaces" : sib,
			    size_human(written, b, sizeof b));
		}
		snprintf(uuid, sizeof uuid, "%.36s", in->art.uuid);
		if (!uuid[0])
			snprintf(uuid, sizeof uuid, "unknown");
		sec = commit_base(&af, img, group, size, uuid, in->digest, from, e);
		if (sec && in->art.source[0])
			json_object_set_new(sec, "image_source", json_string(in->art.source));
		return sec;
	}
	if (atomic_open(&af, img, 0644, e) < 0)
		return NULL;
	/* One build per image: Slicer's groups usually share one, and a
	 * group's base of it, no larger, is cloned (a reflink costs no
	 * space) and grown rather than built again.  (Under
	 * SOURCE_DATE_EPOCH each base is built: its ids are its own.) */
	sib = getenv("SOURCE_DATE_EPOCH") ? NULL :
	    sibling_base(dir, img, in->digest, size, &sibsize, uuid);
	r = sib ? clone_sibling(sib, sibsize, in->digest, &af, size, e) : 1;
	if (r == 0) {
		cleanup_json json_t *j = stamp_read(sib);
		const char *how = json_string_value(json_object_get(j, "from"));
		if (how)
			from = strcmp(how, "layers") == 0 ? "layers" : "tree";
		if (!o->quiet)
			fe_warn("%s: a clone of %s (the same image)%s", base, sib,
			    size > sibsize ? ", grown" : "");
	} else if (r < 0) {
		atomic_abort(&af);
		return NULL;
	} else {
		uuid[0] = '\0';	/* (not the other base's, then) */
		if (build_deep(in, &af, size, o->quiet, uuid, e) < 0) {
			atomic_abort(&af);
			return NULL;
		}
	}
	return commit_base(&af, img, group, size, uuid, in->digest, from, e);
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "directory", required_argument, NULL, 'C' },
		{ "force", no_argument, NULL, 'f' },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "image", required_argument, NULL, 'i' },
		{ "output", required_argument, NULL, 'o' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "size", required_argument, NULL, 's' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	struct vs_err e = { 0 };
	struct vs_config cfg = { 0 };
	struct input in = { .digest = "" };
	cleanup_json json_t *doc = NULL;
	cleanup_free char *cfgpath = NULL, *img = NULL, *defimg = NULL;
	const char *group;
	uint64_t size = 0;
	json_t *sec;
	int c;

	fe_init(argv[0]);
	atomic_on_signals();
	atomic_signal_hook(lend_give_back_all);
	tree_fd_limit();
	initialize_ext2_error_table();	/* messages, not "Unknown code ext2 N" */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:c:fg:hi:o:qs:V", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'c': o.config = optarg; break;
		case 'f': o.force = true; break;
		case 'g': o.group = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'i': o.image = optarg; break;
		case 'o': o.out = optarg; break;
		case 'q': o.quiet = true; break;
		case 's': o.size = optarg; break;
		case 'V':
			fe_version();
			return fe_finish(0);
		default:
			return fe_bad_option(SYNOPSIS, c, optopt,
			    argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc > 1)
		return fe_usage_error(SYNOPSIS, "too many operands");
	if (o.image && argc != 1)
		return fe_usage_error(SYNOPSIS, "-i LAYOUT needs the image's REF");
	if (o.image && *o.image == '\0')
		return fe_usage_error(SYNOPSIS, "-i needs an OCI layout");
	if (o.size && size_parse_disk(o.size, &size, &e) < 0)
		return fe_fail(&e);
	if (o.group && path_check_name("group", o.group, &e) < 0)
		return fe_fail_usage(SYNOPSIS, &e);
	if (o.out && *o.out == '\0')
		return fe_usage_error(SYNOPSIS, "-o needs a file name");
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		return fe_fail(&e);
	}
	group = o.group ? o.group : DEFAULT_GROUP;
	if (config_locate(".", o.config, &cfgpath, &e) < 0)
		return fe_fail(&e);
	if (cfgpath) {
		const struct vs_group *g;
		if (config_load(&cfg, cfgpath, &e) < 0)
			return fe_fail(&e);
		for (size_t i = 0; i < cfg.nwarnings; i++)
			fe_warn("%s", cfg.warnings[i]);
		g = config_group(&cfg, group, &e);
		if (g == NULL && (o.group || cfg.ngroups)) {
			config_free(&cfg);
			return fe_fail(&e);
		}
		if (g && !o.size && g->storage_size) {
			size = g->storage_size;
			if (size < SIZE_DISK_MIN) {
				char b[32];
				vs_error(&e, EX_CONFIG, 0,
				    "%s: group %s: storage_size %s is below the 5G minimum",
				    cfgpath, group, size_format(size, b, sizeof b));
				config_free(&cfg);
				return fe_fail(&e);
			}
		}
		config_free(&cfg);
	}
#define HINT "give ROOTFS or -i LAYOUT REF, or pipe oci-fetch's (or oci-unpack's) output into mkbase"
	doc = doc_input(argc == 0, HINT, &e);
	if (doc == NULL)
		return fe_fail_usage(SYNOPSIS, &e);
	if (o.image || (argc == 0 && json_object_get(doc, "rootfs") == NULL &&
	    json_object_get(doc, "image") != NULL)) {
		/* the image's layers, straight into the base */
		char digest[DIGEST_MAX];
		const char *root = o.image, *dg = NULL;

		in.layers = true;
		if (root == NULL) {
			root = doc_need_str(doc, "image", "layout", HINT, &e);
			dg = root ? doc_need_str(doc, "image", "digest", HINT, &e) : NULL;
			if (dg == NULL)
				goto fail;
			if (!digest_valid(dg)) {
				vs_error(&e, EX_DATAERR, 0,
				    "image.digest in the document is not a digest: %s", dg);
				goto fail;
			}
		}
		if (layout_open(&in.l, root, false, &e) < 0)
			goto fail;
		if (dg)
			snprintf(digest, sizeof digest, "%s", dg);
		else if (image_resolve(&in.l, argv[0], digest, &e) < 0)
			goto fail;
		switch (artifact_of(&in, digest, &e)) {
		case -1:
			goto fail;
		case 1:
			/* a disk, restored: its own size unless -s or the
			 * group asks for more */
			in.digest = in.art_digest;
			if (!o.size && (size == 0 || size < in.art.size))
				size = in.art.size;
			break;
		default:
			if (image_load(&in.l, digest, &in.img, &e) < 0)
				goto fail;
			in.digest = in.img.manifest;
		}
	} else {
		if (rootfs_of(doc, argc == 1 ? argv[0] : NULL, HINT, &in.tree,
		    &e) < 0)
			goto fail;
		in.digest = in.tree.digest;
		/* A tree nothing says anything about, built by an ordinary
		 * user who owns it: what an unprivileged unpack makes (its
		 * record may have been lost to a change in the tree), so its
		 * owner is not the image's, and its records are applied. */
		if (!in.tree.told && geteuid() != 0) {
			struct stat st;
			if (stat(in.tree.tree, &st) == 0 && st.st_uid == geteuid())
				in.tree.rootless = true;
		}
	}
	if (size == 0) {
		input_free(&in);
		return fe_usage_error(SYNOPSIS,
		    "no size: give -s SIZE (like 15G), or storage_size for group %s in %s",
		    group, CONFIG_FILE);
	}
	if (asprintf(&defimg, "%s-base.img", group) < 0)
		defimg = NULL;
	img = path_abs(o.out ? o.out : defimg ? defimg : "", &e);
	if (img == NULL)
		goto fail;
	sec = make_base(&in, img, group, size, &o, &e);
	if (sec == NULL || doc_set(doc, "base", sec, &e) < 0 ||
	    doc_write(stdout, doc, &e) < 0)
		goto fail;
	input_free(&in);
	return fe_finish(0);
fail:
	input_free(&in);
	return fe_finish(fe_fail(&e));
}
