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
#include <unistd.h>

#include <ext2fs/ext2fs.h>
#include <ext2fs/ext3_extents.h>
#include <jansson.h>

#include "atomic.h"
#include "cleanup.h"
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
#include "lend.h"
#include "rootless.h"
#include "run.h"
#include "size.h"
#include "stamp.h"
#include "strmap.h"
#include "tree.h"

#define SYNOPSIS "mkbase [-fqV] [-C DIR] [-c FILE] [-g GROUP] [-s SIZE] [-o IMG] [ROOTFS]"
#define DEFAULT_GROUP "slicer"
#define CHUNK (4u << 20)
#define EXT4_LINK_MAX EXT4W_LINK_MAX
#define EXT4_FILE_MAX EXT4W_FILE_MAX
#define SB_TIME_MAX EXT4W_SB_TIME_MAX

struct opts {
	const char *dir, *config, *group, *size, *out;
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
	    "usage: mkbase [-fqV] [-C DIR] [-c FILE] [-g GROUP] [-s SIZE] [-o IMG] [ROOTFS]\n"
	    "       oci-unpack | mkbase [-fqV] [-C DIR] [-c FILE] [-g GROUP] [-s SIZE] [-o IMG]\n"
	    "Build the host group's sparse ext4 base image from a root filesystem tree.\n"
	    "With no ROOTFS, the tree is the pipeline document's rootfs section.\n"
	    "\n"
	    "  -C, --directory DIR  work in DIR (the workspace)\n"
	    "  -c, --config FILE    the configuration (default: slicer-mac.yaml)\n"
	    "  -f, --force          rebuild even when the base is up to date\n"
	    "  -g, --group GROUP    the host group (default: slicer)\n"
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
static int fixed_ids(const struct rootfs *src, uint64_t size,
    char uuid[37], char seed[37], struct vs_err *e)
{
	char text[DIGEST_MAX + 64], dg[DIGEST_MAX];
	unsigned char raw[32];
	const char *hex;

	/* (a tree without a digest: the same ids wherever it is) */
	snprintf(text, sizeof text, "vmstrap-base\n%s\n%llu\n",
	    src->digest[0] ? src->digest : "no digest", (unsigned long long)size);
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

/* Build the image from the tree treefd into the open temporary file af. */
static int fill_image(const struct rootfs *src, int treefd,
    struct atomic_file *af, uint64_t size, bool quiet, char uuid[37],
    struct vs_err *e)
{
	struct build b = { .rootless = src->rootless, .e = e };
	struct measuring m = { .seen = STRMAP_INIT, .bs = 4096,
	    .rootless = src->rootless, .e = e };
	struct need nd;
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	char seed[37] = "";
	bool repro = false;
	time_t now;
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

	now = time(NULL);
	if (sde && *sde) {
		long long t;
		if (fe_number(sde, 0, SB_TIME_MAX, &t, "SOURCE_DATE_EPOCH", e) < 0)
			return -1;
		repro = true;
		now = (time_t)t;
		if (fixed_ids(src, size, uuid, seed, e) < 0)
			return -1;
		if (setenv("E2FSPROGS_FAKE_TIME", sde, 1) < 0)
			return vs_error(e, EX_OSERR, errno, "setenv");
	}
	if (ftruncate(af->fd, (off_t)size) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s",
		    af->tmp);
	if (ext4w_mkfs(af->tmp, repro ? uuid : NULL, repro ? seed : NULL, e) < 0 ||
	    ext4w_open(&b.w, af->tmp, af->fd, now, repro, e) < 0)
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
	if (!uuid[0])
		uuid_text(b.w.fs->super->s_uuid, uuid);
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

/* Build the image into the open temporary file af.  Before the tree is
 * read, what a killed rootless build left lent is given back (and, rootless
 * or when there is such a journal, the tree is locked: one build of a tree
 * at a time, or one would read another's lent modes). */
static int build_image(const struct rootfs *src, struct atomic_file *af,
    uint64_t size, bool quiet, char uuid[37], struct vs_err *e)
{
	cleanup_fd int treefd = -1;
	int rc;

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
	const struct rootfs *src;
	struct atomic_file *af;
	uint64_t size;
	bool quiet;
	char *uuid;
	struct vs_err *e;
	int rc;
};

static void *deep_run(void *arg)
{
	struct deep *d = arg;

	d->rc = build_image(d->src, d->af, d->size, d->quiet, d->uuid, d->e);
	return NULL;
}

static int build_deep(const struct rootfs *src, struct atomic_file *af,
    uint64_t size, bool quiet, char uuid[37], struct vs_err *e)
{
	struct deep d = { src, af, size, quiet, uuid, e, -1 };
	pthread_attr_t attr;
	pthread_t t;
	int err;

	if ((err = pthread_attr_init(&attr)) != 0 ||
	    (err = pthread_attr_setstacksize(&attr, (size_t)1 << 30)) != 0 ||
	    (err = pthread_create(&t, &attr, deep_run, &d)) != 0) {
		/* (no room for a big stack: the main thread's will do) */
		return build_image(src, af, size, quiet, uuid, e);
	}
	pthread_attr_destroy(&attr);
	pthread_join(t, NULL);
	return d.rc;
}

/* --- what a base was built from -------------------------------------- */

static json_t *base_section(const char *img, const char *group,
    uint64_t size, const char *uuid, const struct rootfs *src, bool reused)
{
	struct stat st;

	if (stat(img, &st) < 0)
		return NULL;
	return json_pack("{s:s, s:s, s:I, s:I, s:s, s:s?, s:b}", "path", img,
	    "group", group, "size", (json_int_t)size,
	    "allocated", (json_int_t)st.st_blocks * 512, "uuid", uuid,
	    "source", src->digest[0] ? src->digest : NULL, "reused", reused);
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

/* Build img from src, or reuse it. */
static json_t *make_base(const struct rootfs *src, const char *img,
    const char *group, uint64_t size, const struct opts *o, struct vs_err *e)
{
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
	if (inside(dir, src->tree))
		return vs_error(e, EX_USAGE, 0,
		    "%s is inside the tree it is built from (%s): it would copy itself; put it elsewhere",
		    img, src->tree), NULL;
	lock = lock_output(img, lockp, e);
	if (lock < 0)
		return NULL;
	tree_remove_stale(dir, base);
	if (!o->force && src->digest[0] && stat(img, &st) == 0) {
		cleanup_json json_t *j = stamp_read(img);
		const char *was = json_string_value(json_object_get(j, "source"));
		const char *id = json_string_value(json_object_get(j, "uuid"));
		if (was && id && strcmp(was, src->digest) == 0 &&
		    (uint64_t)st.st_size == size)
			return base_section(img, group, size, id, src, true);
	}
	if (atomic_open(&af, img, 0644, e) < 0)
		return NULL;
	if (build_deep(src, &af, size, o->quiet, uuid, e) < 0 ||
	    atomic_commit(&af, ATOMIC_REPLACE, e) < 0) {
		atomic_abort(&af);
		return NULL;
	}
	sec = base_section(img, group, size, uuid, src, false);
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

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "directory", required_argument, NULL, 'C' },
		{ "force", no_argument, NULL, 'f' },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'o' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "size", required_argument, NULL, 's' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	struct vs_err e = { 0 };
	struct vs_config cfg = { 0 };
	struct rootfs src = { 0 };
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
	while ((c = getopt_long(argc, argv, ":C:c:fg:ho:qs:V", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'c': o.config = optarg; break;
		case 'f': o.force = true; break;
		case 'g': o.group = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
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
	if (size == 0)
		return fe_usage_error(SYNOPSIS,
		    "no size: give -s SIZE (like 15G), or storage_size for group %s in %s",
		    group, CONFIG_FILE);

	doc = doc_input(!(argc == 1),
	    "give ROOTFS, or pipe oci-unpack's output into mkbase", &e);
	if (doc == NULL)
		return fe_fail_usage(SYNOPSIS, &e);
	if (rootfs_of(doc, argc == 1 ? argv[0] : NULL,
	    "give ROOTFS, or pipe oci-unpack's output into mkbase", &src, &e) < 0)
		goto fail;
	/* A tree nothing says anything about, built by an ordinary user who
	 * owns it: what an unprivileged unpack makes (its record may have
	 * been lost to a change in the tree), so its owner is not the
	 * image's, and its records are applied. */
	if (!src.told && geteuid() != 0) {
		struct stat st;
		if (stat(src.tree, &st) == 0 && st.st_uid == geteuid())
			src.rootless = true;
	}
	if (asprintf(&defimg, "%s-base.img", group) < 0)
		defimg = NULL;
	img = path_abs(o.out ? o.out : defimg ? defimg : "", &e);
	if (img == NULL)
		goto fail;
	sec = make_base(&src, img, group, size, &o, &e);
	if (sec == NULL || doc_set(doc, "base", sec, &e) < 0 ||
	    doc_write(stdout, doc, &e) < 0)
		goto fail;
	rootfs_free(&src);
	return fe_finish(0);
fail:
	rootfs_free(&src);
	return fe_finish(fe_fail(&e));
}
