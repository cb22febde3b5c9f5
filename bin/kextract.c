/* kextract: the host group's kernel (and initrd) out of the image's root
 * filesystem tree, in the form the hypervisor needs, at
 * kernel/<group>/Image.
 *
 * Everything inside the tree is looked up as if the tree were /: symlinks
 * are resolved against the tree's root, ".." stops there, and nothing
 * outside is ever opened. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <ext2fs/ext2fs.h>
#include <jansson.h>

#include "artifact.h"
#include "atomic.h"
#include "cleanup.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "image.h"
#include "inflate.h"
#include "kernel.h"
#include "layout.h"
#include "lock.h"
#include "path.h"
#include "progress.h"
#include "ref.h"
#include "rootfs.h"
#include "run.h"
#include "stamp.h"

#define SYNOPSIS "kextract [-qV] [-C DIR] [-g GROUP] [-k VERSION] [-F image|vmlinux] [-i REF] [ROOTFS]"
#define DEFAULT_GROUP "slicer"
#define CHUNK (256 * 1024)
#define MAX_LINKS 40

struct opts {
	const char *dir, *group, *version, *format, *image;
	bool vmlinux, quiet;
};

/* A kernel or initrd found in the tree. */
struct found {
	char from[PATH_MAX + 1];	/* where, in the tree ("/boot/vmlinuz-6.1.0") */
	char version[128];	/* from its name, or "" */
	int fd;
	uint64_t size;
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: " SYNOPSIS "\n"
	    "Copy the kernel (and initrd) of an image's root filesystem to\n"
	    "kernel/GROUP/, in the form the hypervisor needs.  ROOTFS is a tree or\n"
	    "a base image; with none, the pipeline document's rootfs section, else\n"
	    "its base section.\n"
	    "\n"
	    "  -C, --directory DIR   work in DIR (the workspace)\n"
	    "  -g, --group GROUP     the host group (default " DEFAULT_GROUP ")\n"
	    "  -k, --kernel VERSION  this kernel version, not the newest\n"
	    "  -F, --format FORMAT   image (default: arm64 raw Image, x86 bzImage)\n"
	    "                        or vmlinux (the ELF, from a bzImage's payload)\n"
	    "  -i, --image REF       from a kernel image in the OCI cache\n"
	    "  -q, --quiet           no progress\n"
	    "  -h, --help            this help\n"
	    "  -V, --version         version\n");
}

/* --- looking things up inside the tree ------------------------------- */

/* Where the kernel is looked for: a host tree (open as root), or an ext4
 * image (the base itself, read with libext2fs).  A file of the image is
 * copied out to an unnamed file in tmpdir (the kernel's own directory) to
 * be read like a file of a tree. */
struct fsrc {
	int root;		/* a tree, or -1 */
	ext2_filsys fs;		/* an image, or NULL */
	int tmpdir;
	const char *name;	/* the tree's or the image's path */
};

/* The inode at rel (no symlink in it but perhaps the last component, not
 * followed), or -1 with errno. */
static int img_lookup(ext2_filsys fs, const char *rel, ext2_ino_t *ino)
{
	char comp[NAME_MAX + 1];
	ext2_ino_t cur = EXT2_ROOT_INO;

	while (*rel) {
		size_t n = strcspn(rel, "/");
		if (n > NAME_MAX)
			return errno = ENAMETOOLONG, -1;
		memcpy(comp, rel, n);
		comp[n] = '\0';
		if (n && ext2fs_lookup(fs, cur, comp, n, NULL, &cur) != 0)
			return errno = ENOENT, -1;
		rel += n;
		while (*rel == '/')
			rel++;
	}
	*ino = cur;
	return 0;
}

static int img_inode(ext2_filsys fs, const char *rel, ext2_ino_t *ino,
    struct ext2_inode *in)
{
	if (img_lookup(fs, rel, ino) < 0)
		return -1;
	if (ext2fs_read_inode(fs, *ino, in) != 0)
		return errno = EIO, -1;
	return 0;
}

/* lstat's type and size of rel. */
static int src_lstat(const struct fsrc *t, const char *rel, mode_t *mode,
    uint64_t *size)
{
	struct ext2_inode in;
	ext2_ino_t ino;
	struct stat st;

	if (t->fs == NULL) {
		if (fstatat(t->root, rel[0] ? rel : ".", &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -1;
		*mode = st.st_mode;
		*size = (uint64_t)st.st_size;
		return 0;
	}
	if (img_inode(t->fs, rel, &ino, &in) < 0)
		return -1;
	*mode = LINUX_S_ISDIR(in.i_mode) ? S_IFDIR : LINUX_S_ISLNK(in.i_mode) ?
	    S_IFLNK : LINUX_S_ISREG(in.i_mode) ? S_IFREG : S_IFIFO;
	*size = EXT2_I_SIZE(&in);
	return 0;
}

static ssize_t src_readlink(const struct fsrc *t, const char *rel, char *buf,
    size_t cap)
{
	struct ext2_inode in;
	ext2_file_t f;
	ext2_ino_t ino;
	unsigned got = 0;
	size_t len;

	if (t->fs == NULL)
		return readlinkat(t->root, rel, buf, cap);
	if (img_inode(t->fs, rel, &ino, &in) < 0)
		return -1;
	len = EXT2_I_SIZE(&in);
	if (len > cap)
		len = cap;
	if (ext2fs_is_fast_symlink(&in)) {
		memcpy(buf, (const char *)in.i_block, len);
		return (ssize_t)len;
	}
	if (ext2fs_file_open(t->fs, ino, 0, &f) != 0)
		return errno = EIO, -1;
	if (ext2fs_file_read(f, buf, (unsigned)len, &got) != 0)
		got = 0;
	ext2fs_file_close(f);
	return got == len ? (ssize_t)len : (errno = EIO, -1);
}

/* A regular file of the image, copied out to an unnamed file. */
static int img_copy_out(const struct fsrc *t, ext2_ino_t ino)
{
	cleanup_free char *buf = malloc(CHUNK);
	ext2_file_t f;
	int fd, rc = 0;

	if (buf == NULL)
		return errno = ENOMEM, -1;
	fd = openat(t->tmpdir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR))
		fd = memfd_create("kextract", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (ext2fs_file_open(t->fs, ino, 0, &f) != 0) {
		close(fd);
		return errno = EIO, -1;
	}
	for (;;) {
		unsigned got = 0;
		if (ext2fs_file_read(f, buf, CHUNK, &got) != 0) {
			rc = -1;
			errno = EIO;
			break;
		}
		if (got == 0)
			break;
		for (char *p = buf; got > 0; ) {
			ssize_t w = write(fd, p, got);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				rc = -1;
				break;
			}
			p += w;
			got -= (unsigned)w;
		}
		if (rc < 0)
			break;
	}
	ext2fs_file_close(f);
	if (rc < 0) {
		int saved = errno;
		close(fd);
		return errno = saved, -1;
	}
	return fd;
}

/* Resolve rel inside the tree as if the tree were "/": symlinks followed
 * (absolute ones from its root), ".." clamped there.  out gets the resolved
 * path, relative, without leading "/".  Returns 0, or -1 with errno set
 * (ENOENT, ELOOP, ENAMETOOLONG, ...). */
static int resolve(const struct fsrc *t, const char *rel, char out[PATH_MAX])
{
	char todo[PATH_MAX], link[PATH_MAX], tmp[PATH_MAX];
	size_t len = 0;
	int links = 0;

	if (strlen(rel) >= sizeof todo)
		return errno = ENAMETOOLONG, -1;
	strcpy(todo, rel);
	out[0] = '\0';
	while (todo[0]) {
		char *comp = todo, *rest = strchr(todo, '/');
		mode_t mode;
		uint64_t size;
		size_t n;

		if (rest)
			*rest++ = '\0';
		else
			rest = todo + strlen(todo);
		if (comp[0] == '\0' || strcmp(comp, ".") == 0) {
			memmove(todo, rest, strlen(rest) + 1);
			continue;
		}
		if (strcmp(comp, "..") == 0) {
			char *slash = strrchr(out, '/');
			len = slash ? (size_t)(slash - out) : 0;
			out[len] = '\0';
			memmove(todo, rest, strlen(rest) + 1);
			continue;
		}
		n = strlen(comp);
		if (len + n + 2 > PATH_MAX)
			return errno = ENAMETOOLONG, -1;
		if (len)
			out[len] = '/';
		memcpy(out + len + (len ? 1 : 0), comp, n + 1);
		if (src_lstat(t, out, &mode, &size) < 0) {
			out[len] = '\0';
			return -1;
		}
		if (!S_ISLNK(mode)) {
			len += n + (len ? 1 : 0);
			memmove(todo, rest, strlen(rest) + 1);
			if (todo[0] && !S_ISDIR(mode))
				return errno = ENOTDIR, -1;
			continue;
		}
		if (++links > MAX_LINKS)
			return errno = ELOOP, -1;
		{
			ssize_t l = src_readlink(t, out, link, sizeof link - 1);
			if (l < 0)
				return -1;
			link[l] = '\0';
		}
		out[len] = '\0';
		if (link[0] == '/') {
			len = 0;
			out[0] = '\0';
		}
		if ((size_t)snprintf(tmp, sizeof tmp, "%s/%s", link, rest) >=
		    sizeof tmp)
			return errno = ENAMETOOLONG, -1;
		strcpy(todo, tmp);
	}
	return 0;
}

/* Open the regular file at rel in the tree; -1 (errno set) when there is
 * none.  resolved gets where it really is. */
static int open_file(const struct fsrc *t, const char *rel,
    char resolved[PATH_MAX], uint64_t *size)
{
	struct stat st;
	mode_t mode;
	int fd;

	if (resolve(t, rel, resolved) < 0)
		return -1;
	if (resolved[0] == '\0')
		return errno = EISDIR, -1;
	if (t->fs) {
		ext2_ino_t ino;
		if (src_lstat(t, resolved, &mode, size) < 0)
			return -1;
		if (!S_ISREG(mode))
			return errno = S_ISDIR(mode) ? EISDIR : EINVAL, -1;
		if (img_lookup(t->fs, resolved, &ino) < 0)
			return -1;
		return img_copy_out(t, ino);
	}
	fd = openat(t->root, resolved, O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
	    O_NONBLOCK);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL, -1;
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

struct names {
	char **v;
	size_t n;
};

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	ns->v = NULL;
	ns->n = 0;
}

static int name_add(struct names *ns, const char *name, size_t len)
{
	char **nv;

	if ((len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return 0;
	nv = realloc(ns->v, (ns->n + 1) * sizeof *nv);
	if (nv == NULL)
		return -1;
	ns->v = nv;
	if ((ns->v[ns->n] = strndup(name, len)) == NULL)
		return -1;
	ns->n++;
	return 0;
}

static int list_cb(struct ext2_dir_entry *de, int offset, int blocksize,
    char *buf, void *arg)
{
	(void)offset;
	(void)blocksize;
	(void)buf;
	return name_add(arg, de->name, ext2fs_dirent_name_len(de)) < 0 ?
	    DIRENT_ABORT : 0;
}

/* The names in directory rel of the tree (resolved inside it); none when
 * there is no such directory. */
static void list_names(const struct fsrc *t, const char *rel,
    struct names *ns)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd;

	ns->v = NULL;
	ns->n = 0;
	if (resolve(t, rel, dir) < 0)
		return;
	if (t->fs) {
		ext2_ino_t ino;
		if (img_lookup(t->fs, dir, &ino) == 0)
			(void)ext2fs_dir_iterate(t->fs, ino, 0, NULL, list_cb, ns);
		return;
	}
	fd = openat(t->root, dir[0] ? dir : ".",
	    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (name_add(ns, de->d_name, strlen(de->d_name)) < 0)
			break;
	closedir(d);
}

/* --- finding the kernel ---------------------------------------------- */

/* Versioned kernels, newest first considered: boot/vmlinuz-V,
 * boot/vmlinux-V, boot/Image-V, and usr/lib/modules/V/vmlinuz (Fedora,
 * Arch). */
static const char *const prefixes[] = { "vmlinuz-", "vmlinux-", "Image-" };

/* Unversioned names, in order. */
static const char *const plain[] = {
	"boot/Image", "boot/vmlinux", "boot/vmlinuz", "vmlinuz", "vmlinux",
};

static bool skip_version(const char *v)
{
	size_t n = strlen(v);
	return n == 0 || (n > 4 && strcmp(v + n - 4, ".old") == 0) ||
	    strstr(v, ".dpkg-") != NULL || (n > 4 && strcmp(v + n - 4, ".bak") == 0);
}

/* Offer a candidate: kept when it is a regular file in the tree and its
 * version is wanted and newer than the best so far. */
static void offer(const struct fsrc *root, const char *rel, const char *version,
    const char *want, struct found *best)
{
	char resolved[PATH_MAX];
	uint64_t size;
	int fd;

	if (want && strcmp(version, want) != 0)
		return;
	if (best->fd >= 0 && kernel_vercmp(version, best->version) <= 0)
		return;
	fd = open_file(root, rel, resolved, &size);
	if (fd < 0)
		return;
	if (best->fd >= 0)
		close(best->fd);
	best->fd = fd;
	best->size = size;
	snprintf(best->from, sizeof best->from, "/%s", resolved);
	snprintf(best->version, sizeof best->version, "%s", version);
}

/* Every version the tree has, for a message. */
static void versions_seen(const struct fsrc *root, char *out, size_t cap)
{
	struct names ns;
	size_t len = 0;

	out[0] = '\0';
	list_names(root, "boot", &ns);
	for (size_t j = 0; j < ns.n; j++)
		for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
			const char *name = ns.v[j];
			size_t p = strlen(prefixes[i]);
			if (strncmp(name, prefixes[i], p) == 0 &&
			    !skip_version(name + p) && len + 2 < cap) {
				int w = snprintf(out + len, cap - len, "%s%s",
				    len ? ", " : "", name + p);
				if (w > 0)
					len += (size_t)w < cap - len ? (size_t)w :
					    cap - len - 1;
			}
		}
	names_free(&ns);
}

static int find_kernel(const struct fsrc *root, const char *want,
    struct found *k, struct vs_err *e)
{
	static const char *const moddirs[] = { "usr/lib/modules", "lib/modules" };
	struct names ns;

	k->fd = -1;
	list_names(root, "boot", &ns);
	for (size_t j = 0; j < ns.n; j++)
		for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
			const char *name = ns.v[j];
			size_t p = strlen(prefixes[i]);
			char rel[NAME_MAX + 8];
			if (strncmp(name, prefixes[i], p) != 0 ||
			    skip_version(name + p))
				continue;
			snprintf(rel, sizeof rel, "boot/%s", name);
			offer(root, rel, name + p, want, k);
		}
	names_free(&ns);
	for (size_t m = 0; m < 2; m++) {
		list_names(root, moddirs[m], &ns);
		for (size_t j = 0; j < ns.n; j++) {
			char rel[NAME_MAX + 32];
			if (ns.v[j][0] == '.')
				continue;
			snprintf(rel, sizeof rel, "%s/%s/vmlinuz", moddirs[m],
			    ns.v[j]);
			offer(root, rel, ns.v[j], want, k);
		}
		names_free(&ns);
	}
	if (k->fd >= 0)
		return 0;
	if (want) {
		char seen[512];
		versions_seen(root, seen, sizeof seen);
		return vs_error(e, EX_DATAERR, 0,
		    "no kernel version %s in the %s (it has: %s)", want,
		    root->fs ? "image" : "tree",
		    seen[0] ? seen : "none");
	}
	for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
		char resolved[PATH_MAX];
		const char *base;
		k->fd = open_file(root, plain[i], resolved, &k->size);
		if (k->fd < 0)
			continue;
		snprintf(k->from, sizeof k->from, "/%s", resolved);
		/* a /vmlinuz -> boot/vmlinuz-V symlink says V */
		base = strrchr(k->from, '/') + 1;
		for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes; p++)
			if (strncmp(base, prefixes[p], strlen(prefixes[p])) == 0)
				snprintf(k->version, sizeof k->version, "%s",
				    base + strlen(prefixes[p]));
		return 0;
	}
	return vs_error(e, EX_DATAERR, 0,
	    "no kernel in the %s: looked for /boot/vmlinuz-*, /boot/vmlinux-*, /boot/Image-*, /usr/lib/modules/*/vmlinuz, /boot/Image, /boot/vmlinux, /boot/vmlinuz, /vmlinuz, /vmlinux",
	    root->fs ? "image" : "tree");
}

/* The initrd that goes with the kernel. */
static void find_initrd(const struct fsrc *root, const struct found *k,
    struct found *i)
{
	char rel[PATH_MAX];
	const char *v = k->version;
	static const char *const versioned[][2] = {	/* before and after V */
		{ "boot/initrd.img-", "" }, { "boot/initramfs-", ".img" },
		{ "boot/initrd-", "" }, { "usr/lib/modules/", "/initrd" },
		{ "usr/lib/modules/", "/initramfs.img" },
	};
	static const char *const unversioned[] = {
		"boot/initrd.img", "initrd.img", "boot/initrd", "boot/initramfs.img",
	};

	i->fd = -1;
	for (size_t n = 0; v[0] && n < sizeof versioned / sizeof *versioned; n++) {
		char resolved[PATH_MAX];
		snprintf(rel, sizeof rel, "%s%s%s", versioned[n][0], v,
		    versioned[n][1]);
		i->fd = open_file(root, rel, resolved, &i->size);
		if (i->fd >= 0) {
			snprintf(i->from, sizeof i->from, "/%s", resolved);
			return;
		}
	}
	/* an unversioned initrd only for an unversioned kernel, or a kernel
	 * that the unversioned names point to */
	for (size_t n = 0; n < sizeof unversioned / sizeof *unversioned; n++) {
		char resolved[PATH_MAX];
		i->fd = open_file(root, unversioned[n], resolved, &i->size);
		if (i->fd < 0)
			continue;
		if (v[0] && strstr(resolved, v) == NULL &&
		    strchr(resolved, '-') != NULL) {
			close(i->fd);	/* another version's */
			i->fd = -1;
			continue;
		}
		snprintf(i->from, sizeof i->from, "/%s", resolved);
		return;
	}
}

/* --- writing it out --------------------------------------------------- */

struct sink {
	int fd;			/* the output */
	uint64_t written;
	unsigned char head[64];	/* its first bytes */
	struct kernel_banner banner;
	struct progress *prog;
};

static int sink_write(struct sink *s, const void *p, size_t n,
    struct vs_err *e)
{
	const char *c = p;
	size_t left = n;

	if (s->written < sizeof s->head) {
		size_t m = sizeof s->head - s->written;
		memcpy(s->head + s->written, p, m < n ? m : n);
	}
	kernel_banner_feed(&s->banner, p, n);
	while (left > 0) {
		ssize_t w = write(s->fd, c, left);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return vs_error(e, EX_IOERR, errno, "write");
		}
		c += w;
		left -= (size_t)w;
	}
	s->written += n;
	return 0;
}

/* Copy len bytes from fd at off into the sink. */
static int copy_range(int fd, uint64_t off, uint64_t len, struct sink *s,
    char *buf, struct vs_err *e)
{
	while (len > 0) {
		ssize_t r = pread(fd, buf, len < CHUNK ? (size_t)len : CHUNK,
		    (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return vs_error(e, EX_IOERR, errno, "read");
		if (r == 0)
			return vs_error(e, EX_DATAERR, 0, "the file ends early");
		if (sink_write(s, buf, (size_t)r, e) < 0)
			return -1;
		off += (uint64_t)r;
		len -= (uint64_t)r;
		if (s->prog)
			progress_update(s->prog, s->written);
	}
	return 0;
}

/* libarchive reads a range of the kernel file. */
struct range {
	int fd;
	uint64_t off, left;
	char *buf;
};

static la_ssize_t range_read(struct archive *a, void *arg, const void **out)
{
	struct range *r = arg;
	ssize_t n;

	if (r->left == 0)
		return 0;
	do
		n = pread(r->fd, r->buf, r->left < CHUNK ? (size_t)r->left : CHUNK,
		    (off_t)r->off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "read: %s", strerror(errno));
		return -1;
	}
	if (n == 0) {
		archive_set_error(a, EIO, "the file ends early");
		return -1;
	}
	r->off += (uint64_t)n;
	r->left -= (uint64_t)n;
	*out = r->buf;
	return n;
}

/* gzip: inflated by common/inflate (ISA-L where it was built in). */
static int inflate_range(int fd, uint64_t off, uint64_t len, struct sink *s,
    char *buf, struct vs_err *e)
{
	struct inflater *z = inflater_new(e);
	cleanup_free unsigned char *out = malloc(CHUNK);
	uint64_t at = off;
	int rc = 0, r = 0;

	if (z == NULL || out == NULL) {
		inflater_free(z);
		return z ? vs_error(e, EX_OSERR, ENOMEM, "kextract") : -1;
	}
	while (rc == 0 && r != 1 && at < off + len) {
		uint64_t left = off + len - at;
		ssize_t n = pread(fd, buf, left < CHUNK ? (size_t)left : CHUNK,
		    (off_t)at);
		const unsigned char *p = (const unsigned char *)buf;
		size_t in;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = vs_error(e, n < 0 ? EX_IOERR : EX_DATAERR, n < 0 ? errno : 0,
			    n < 0 ? "read" : "the file ends early");
			break;
		}
		at += (uint64_t)n;
		in = (size_t)n;
		do {
			size_t made = 0;
			r = inflater_run(z, &p, &in, out, CHUNK, &made, e);
			if (r < 0 || (made && sink_write(s, out, made, e) < 0))
				rc = -1;
			if (rc == 0 && s->prog)
				progress_update(s->prog, at - off);
			if (made == 0)
				break;
		} while (rc == 0 && r == 0);
	}
	if (rc == 0 && r != 1 && inflater_finish(z, e) < 0)
		rc = -1;
	inflater_free(z);
	return rc < 0 ? vs_error_prefix(e, "cannot decompress it") : 0;
}

/* The other compressions, through libarchive. */
static int archive_range(int fd, uint64_t off, uint64_t len,
    struct sink *s, char *buf, struct vs_err *e)
{
	struct range r = { fd, off, len, buf };
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	const void *p;
	size_t n;
	la_int64_t at;
	int rc = 0, x;

	if (a == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "libarchive");
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	if (archive_read_open(a, &r, NULL, range_read, NULL) != ARCHIVE_OK ||
	    archive_read_next_header(a, &ae) != ARCHIVE_OK) {
		rc = vs_error(e, EX_DATAERR, 0, "cannot decompress it: %s",
		    archive_error_string(a));
		goto out;
	}
	if (archive_filter_count(a) < 2) {
		rc = vs_error(e, EX_DATAERR, 0,
		    "its payload is not compressed in a form vmstrap reads");
		goto out;
	}
	while ((x = archive_read_data_block(a, &p, &n, &at)) == ARCHIVE_OK) {
		if (sink_write(s, p, n, e) < 0) {
			rc = -1;
			goto out;
		}
		if (s->prog)
			progress_update(s->prog, r.off - off);
	}
	if (x != ARCHIVE_EOF)
		rc = vs_error(e, archive_errno(a) == EIO && r.left ? EX_IOERR :
		    EX_DATAERR, 0, "cannot decompress it (%s): %s",
		    archive_filter_name(a, 0), archive_error_string(a));
out:
	archive_read_free(a);
	return rc;
}

/* Decompress len bytes of fd at off (gzip, xz, zstd, lz4, bzip2, lzma:
 * whatever the stream is) into the sink. */
static int decompress_range(int fd, uint64_t off, uint64_t len,
    struct sink *s, char *buf, struct vs_err *e)
{
	unsigned char magic[2];

	if (pread(fd, magic, 2, (off_t)off) == 2 && magic[0] == 0x1f &&
	    magic[1] == 0x8b)
		return inflate_range(fd, off, len, s, buf, e);
	return archive_range(fd, off, len, s, buf, e);
}

/* Write the kernel k (identified as ki) to the sink in the form asked. */
static int write_kernel(const struct found *k, struct kernel_info *ki,
    bool vmlinux, struct sink *s, struct vs_err *e)
{
	cleanup_free char *buf = malloc(CHUNK);

	if (buf == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "kextract");
	switch (ki->form) {
	case KERNEL_BZIMAGE:
		if (!vmlinux)
			return copy_range(k->fd, 0, k->size, s, buf, e);
		if (ki->payload_len == 0)
			return vs_error(e, EX_DATAERR, 0,
			    "a bzImage too old (boot protocol before 2.08) to say where its vmlinux is");
		if (decompress_range(k->fd, ki->payload_off, ki->payload_len, s,
		    buf, e) < 0)
			return -1;
		if (memcmp(s->head, "\x7f" "ELF", 4) != 0)
			return vs_error(e, EX_DATAERR, 0,
			    "the bzImage's payload is not an ELF vmlinux");
		if (ki->payload_size && s->written != ki->payload_size)
			return vs_error(e, EX_DATAERR, 0,
			    "the bzImage's payload decompresses to %llu bytes, but it says %u",
			    (unsigned long long)s->written, ki->payload_size);
		return 0;
	case KERNEL_ELF:
		if (!vmlinux && strcmp(ki->arch, "arm64") == 0)
			return vs_error(e, EX_DATAERR, 0,
			    "an ELF vmlinux for arm64: the hypervisor needs an Image, which is not in it (use -F vmlinux to copy the ELF)");
		return copy_range(k->fd, 0, k->size, s, buf, e);
	case KERNEL_IMAGE:
	case KERNEL_GZIP_IMAGE:
	case KERNEL_ZBOOT:
		if (vmlinux)
			return vs_error(e, EX_DATAERR, 0,
			    "an arm64 Image holds no ELF vmlinux: -F vmlinux is for x86 bzImages and ELF kernels");
		if (ki->form == KERNEL_IMAGE)
			return copy_range(k->fd, 0, k->size, s, buf, e);
		if (decompress_range(k->fd, ki->payload_off,
		    ki->form == KERNEL_ZBOOT ? ki->payload_len : k->size, s,
		    buf, e) < 0)
			return -1;
		if (s->written < 64 || memcmp(s->head + 0x38, "ARM\x64", 4) != 0)
			return vs_error(e, EX_DATAERR, 0,
			    "%s decompresses to something that is not an arm64 Image",
			    ki->form == KERNEL_ZBOOT ? "the EFI zboot image" :
			    "the gzip file");
		ki->arch = "arm64";
		return 0;
	}
	return vs_error(e, EX_SOFTWARE, 0, "unknown kernel form");
}

/* --- the outputs ------------------------------------------------------ */

/* Whether the files at a and b (open) have the same bytes. */
static bool same_bytes(int a, int b)
{
	static char x[CHUNK], y[CHUNK];
	struct stat sa, sb;
	off_t off = 0;

	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0 || sa.st_size != sb.st_size)
		return false;
	while (off < sa.st_size) {
		ssize_t n = pread(a, x, CHUNK, off), m;
		if (n <= 0)
			return false;
		m = pread(b, y, (size_t)n, off);
		if (m != n || memcmp(x, y, (size_t)n) != 0)
			return false;
		off += n;
	}
	return true;
}

/* Commit af unless path already has the same bytes; *kept says so. */
static int commit_or_keep(struct atomic_file *af, const char *path, bool *kept,
    struct vs_err *e)
{
	cleanup_fd int old = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	*kept = old >= 0 && same_bytes(af->fd, old);
	if (*kept) {
		atomic_abort(af);
		return 0;
	}
	if (atomic_commit(af, ATOMIC_REPLACE, e) < 0) {
		atomic_abort(af);
		return -1;
	}
	return 0;
}

static int copy_initrd(const struct found *i, const char *path, bool *kept,
    struct vs_err *e)
{
	struct atomic_file af;
	struct sink s = { .fd = -1 };
	cleanup_free char *buf = malloc(CHUNK);

	if (buf == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "kextract");
	if (atomic_open(&af, path, 0644, e) < 0)
		return -1;
	s.fd = af.fd;
	if (copy_range(i->fd, 0, i->size, &s, buf, e) < 0) {
		atomic_abort(&af);
		return vs_error_prefix(e, "%s", i->from);
	}
	return commit_or_keep(&af, path, kept, e);
}

static int mkdirs(const char *path, struct vs_err *e)
{
	char p[PATH_MAX];

	if (strlen(path) >= sizeof p)
		return vs_error(e, EX_CANTCREAT, ENAMETOOLONG, "%s", path);
	strcpy(p, path);
	for (char *s = p + 1; ; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, 0755) < 0 && errno != EEXIST)
				return vs_error(e, vs_code_for_errno(errno,
				    EX_CANTCREAT), errno, "%s", p);
			*s = c;
			if (c == '\0')
				break;
		}
	}
	return 0;
}

/* The record kept beside the kernel: enough to tell, next time, that the
 * same source gives the same files. */
static json_t *record(const char *source, const struct found *k,
    const struct kernel_info *ki, const char *version, bool vmlinux,
    const char *initrd, const struct found *i)
{
	return json_pack("{s:s?, s:s, s:s, s:s, s:s, s:s, s:s?, s:s?}",
	    "source", source[0] ? source : NULL, "from", k->from,
	    "asked", vmlinux ? "vmlinux" : "image",
	    "format", vmlinux ? "vmlinux" : ki->form == KERNEL_BZIMAGE ?
	    "bzImage" : ki->form == KERNEL_ELF ? "vmlinux" : "Image",
	    "version", version, "arch", ki->arch ? ki->arch : "",
	    "initrd", initrd, "initrd_from", i->fd >= 0 ? i->from : NULL);
}

static json_t *section(const char *path, const json_t *rec, bool reused)
{
	json_t *s = json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:b}",
	    "path", path,
	    "initrd", json_object_get(rec, "initrd") ?
	    json_object_get(rec, "initrd") : json_null(),
	    "version", json_object_get(rec, "version"),
	    "arch", json_object_get(rec, "arch"),
	    "format", json_object_get(rec, "format"),
	    "source", json_object_get(rec, "source") ?
	    json_object_get(rec, "source") : json_null(),
	    "reused", reused);
	if (s && json_object_get(rec, "from"))
		json_object_set(s, "from", json_object_get(rec, "from"));
	return s;
}

/* Reuse: the record says the same source, the same choice and the same
 * form, and the files are the ones it was made for. */
static json_t *reusable(const char *out, const char *source, const char *want,
    bool vmlinux)
{
	json_t *rec = stamp_read(out);
	const char *was = json_string_value(json_object_get(rec, "source"));
	const char *asked = json_string_value(json_object_get(rec, "asked"));
	const char *initrd = json_string_value(json_object_get(rec, "initrd"));
	const char *ver = json_string_value(json_object_get(rec, "version"));
	struct stat st;

	if (rec == NULL || source[0] == '\0' || was == NULL ||
	    strcmp(was, source) != 0 || asked == NULL ||
	    strcmp(asked, vmlinux ? "vmlinux" : "image") != 0 ||
	    (want && (ver == NULL || strcmp(ver, want) != 0)) ||
	    (initrd && stat(initrd, &st) < 0)) {
		json_decref(rec);
		return NULL;
	}
	return rec;
}

static json_t *extract(const struct rootfs *src, const struct opts *o,
    struct vs_err *e)
{
	struct fsrc t = { .root = -1, .tmpdir = -1, .name = src->tree };
	cleanup_free char *dir = NULL, *out = NULL, *initrd = NULL,
	    *lockp = NULL;
	cleanup_fd int root = -1, lock = -1;
	cleanup_json json_t *rec = NULL;
	struct found k = { .fd = -1 }, i = { .fd = -1 };
	unsigned char head[KERNEL_HEAD];
	struct kernel_info ki;
	struct atomic_file af;
	struct progress prog;
	struct sink s;
	const char *version;
	bool kept_k = false, kept_i = true;
	ssize_t n;
	json_t *sec = NULL;

	if (asprintf(&dir, "kernel/%s", o->group ? o->group : DEFAULT_GROUP) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "kextract"), NULL;
	if (mkdirs(dir, e) < 0)
		return NULL;
	{
		char *abs = path_abs(dir, e);
		if (abs == NULL)
			return NULL;
		free(dir);
		dir = abs;
	}
	if (asprintf(&out, "%s/%s", dir, o->vmlinux ? "vmlinux" : "Image") < 0 ||
	    asprintf(&initrd, "%s/initrd", dir) < 0 ||
	    asprintf(&lockp, "%s/.lock", dir) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "kextract"), NULL;
	lock = lock_output(out, lockp, e);
	if (lock < 0)
		return NULL;
	rec = reusable(out, src->digest, o->version, o->vmlinux);
	if (rec)
		return section(out, rec, true);

	if (src->image) {
		/* the base itself: the kernel the VMs boot */
		errcode_t err = ext2fs_open(src->tree, EXT2_FLAG_64BITS, 0, 0,
		    unix_io_manager, &t.fs);
		if (err)
			return vs_error(e, EX_DATAERR, 0,
			    "%s: not an ext4 image: %s", src->tree,
			    error_message(err)), NULL;
		t.tmpdir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (t.tmpdir < 0) {
			vs_error(e, EX_CANTCREAT, errno, "%s", dir);
			goto fail;
		}
	} else {
		root = open(src->tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (root < 0)
			return vs_error(e, EX_NOINPUT, errno, "%s", src->tree), NULL;
		t.root = root;
	}
	if (find_kernel(&t, o->version, &k, e) < 0) {
		vs_error_prefix(e, "%s", src->tree);
		goto fail;
	}
	n = pread(k.fd, head, sizeof head, 0);
	if (n < 0) {
		vs_error(e, EX_IOERR, errno, "%s%s", src->tree, k.from);
		goto fail;
	}
	if (kernel_identify(head, (size_t)n, k.size, &ki, e) < 0) {
		vs_error_prefix(e, "%s%s", src->tree, k.from);
		goto fail;
	}
	if (ki.form == KERNEL_BZIMAGE && ki.payload_len) {
		unsigned char b4[4];
		if (pread(k.fd, b4, 4, (off_t)(ki.payload_off + ki.payload_len)) == 4)
			ki.payload_size = (uint32_t)b4[0] | (uint32_t)b4[1] << 8 |
			    (uint32_t)b4[2] << 16 | (uint32_t)b4[3] << 24;
	}
	find_initrd(&t, &k, &i);

	if (atomic_open(&af, out, 0644, e) < 0)
		goto fail;
	memset(&s, 0, sizeof s);
	s.fd = af.fd;
	s.prog = &prog;
	progress_start(&prog, stderr, "kernel", 0, progress_wanted(stderr, o->quiet));
	if (write_kernel(&k, &ki, o->vmlinux, &s, e) < 0) {
		progress_end(&prog);
		atomic_abort(&af);
		vs_error_prefix(e, "%s%s", src->tree, k.from);
		goto fail;
	}
	progress_end(&prog);
	/* the version the bytes say, else the one the name says */
	version = ki.version[0] ? ki.version : s.banner.found ?
	    s.banner.version : k.version;
	if (commit_or_keep(&af, out, &kept_k, e) < 0)
		goto fail;
	if (i.fd >= 0 && copy_initrd(&i, initrd, &kept_i, e) < 0)
		goto fail;
	/* an initrd left from an earlier kernel is not this one's */
	if (i.fd < 0 && unlink(initrd) < 0 && errno != ENOENT)
		fe_warn("%s: %s", initrd, strerror(errno));
	json_decref(rec);
	rec = record(src->digest, &k, &ki, version, o->vmlinux,
	    i.fd >= 0 ? initrd : NULL, &i);
	if (rec == NULL || stamp_write(out, rec, e) < 0) {
		if (rec == NULL)
			vs_error(e, EX_OSERR, ENOMEM, "kextract");
		goto fail;
	}
	sec = section(out, rec, kept_k && kept_i);
fail:
	if (k.fd >= 0)
		close(k.fd);
	if (i.fd >= 0)
		close(i.fd);
	if (t.fs)
		ext2fs_close_free(&t.fs);
	if (t.tmpdir >= 0)
		close(t.tmpdir);
	return sec;
}

/* Copy the blob digest of layout l to path, whole or not at all. */
static int copy_blob(const struct oci_layout *l, const char *digest,
    const char *path, bool *kept, struct vs_err *e)
{
	cleanup_free char *src = layout_blob_path(l, digest);
	cleanup_fd int fd = src ? open(src, O_RDONLY | O_CLOEXEC) : -1;
	struct atomic_file af;
	char buf[65536];
	ssize_t n;

	if (fd < 0)
		return vs_error(e, EX_NOINPUT, errno,
		    "%s is not in the cache %s: fetch it with oci-fetch", digest, l->root);
	if (atomic_open(&af, path, 0644, e) < 0)
		return -1;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		if (write(af.fd, buf, (size_t)n) != n) {
			vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", path);
			atomic_abort(&af);
			return -1;
		}
	if (n < 0) {
		vs_error(e, EX_IOERR, errno, "%s", src);
		atomic_abort(&af);
		return -1;
	}
	return commit_or_keep(&af, path, kept, e);
}

/* The kernel and initrd of a disk artifact (oci-push's): the files the
 * pushing host booted, as they are.  NULL with e->code 0 when the
 * document's image is no artifact, or one without a kernel. */
static json_t *from_artifact(const json_t *doc, const struct opts *o,
    struct vs_err *e)
{
	const json_t *im = json_object_get(doc, "image");
	const char *kind = json_string_value(json_object_get(im, "artifact"));
	const char *root = json_string_value(json_object_get(im, "layout"));
	const char *dg = json_string_value(json_object_get(im, "digest"));
	struct oci_layout l = { 0 };
	struct artifact a = { 0 };
	cleanup_free char *mbody = NULL, *cbody = NULL, *dir = NULL, *out = NULL,
	    *initrd = NULL, *lockp = NULL;
	cleanup_json json_t *m = NULL, *rec = NULL;
	cleanup_fd int lock = -1;
	json_t *sec = NULL;
	const char *cd;
	bool kept_k = false, kept_i = true;
	size_t len;

	e->code = 0;
	if (kind == NULL || strcmp(kind, "disk") != 0 || root == NULL || dg == NULL)
		return NULL;
	if (o->vmlinux || o->version) {
		vs_error(e, EX_USAGE, 0,
		    "the image is a disk artifact: its kernel is the one it holds (no -F, no -k)");
		return NULL;
	}
	if (layout_open(&l, root, false, e) < 0)
		return NULL;
	mbody = layout_read_blob(&l, dg, 4u << 20, &len, e);
	if (mbody == NULL)
		goto out;
	m = json_loadb(mbody, len, 0, NULL);
	cd = json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
	if (cd == NULL || (cbody = layout_read_blob(&l, cd, 64u << 20, &len, e)) == NULL) {
		if (cd == NULL)
			vs_error(e, EX_DATAERR, 0, "the disk artifact %s has no config", dg);
		goto out;
	}
	if (artifact_parse(cbody, len, &a, e) < 0)
		goto out;
	if (!a.kernel[0])
		goto out;	/* (none: the kernel is read out of the base) */
	if (asprintf(&dir, "kernel/%s", o->group ? o->group : DEFAULT_GROUP) < 0) {
		dir = NULL;
		vs_error(e, EX_OSERR, ENOMEM, "kextract");
		goto out;
	}
	if (mkdirs(dir, e) < 0)
		goto out;
	{
		char *abs = path_abs(dir, e);
		if (abs == NULL)
			goto out;
		free(dir);
		dir = abs;
	}
	if (asprintf(&out, "%s/Image", dir) < 0 || asprintf(&initrd, "%s/initrd", dir) < 0 ||
	    asprintf(&lockp, "%s/.lock", dir) < 0) {
		vs_error(e, EX_OSERR, ENOMEM, "kextract");
		goto out;
	}
	if ((lock = lock_output(out, lockp, e)) < 0)
		goto out;
	if ((rec = reusable(out, dg, NULL, false)) != NULL) {
		sec = section(out, rec, true);
		goto out;
	}
	if (copy_blob(&l, a.kernel, out, &kept_k, e) < 0)
		goto out;
	if (a.initrd[0]) {
		if (copy_blob(&l, a.initrd, initrd, &kept_i, e) < 0)
			goto out;
	} else if (unlink(initrd) < 0 && errno != ENOENT) {
		fe_warn("%s: %s", initrd, strerror(errno));
	}
	rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s?}", "source", dg,
	    "from", "artifact", "asked", "image",
	    "format", a.kformat[0] ? a.kformat : "Image",
	    "version", a.kversion, "arch", a.karch,
	    "initrd", a.initrd[0] ? initrd : NULL);
	if (rec == NULL || stamp_write(out, rec, e) < 0) {
		if (rec == NULL)
			vs_error(e, EX_OSERR, ENOMEM, "kextract");
		goto out;
	}
	sec = section(out, rec, kept_k && kept_i);
out:
	artifact_free(&a);
	layout_close(&l);
	return sec;
}

/* oci-unpack -q oci-cache REF: the one installed beside kextract, else
 * the one on $PATH. */
static int unpack(const char *ref, struct vs_err *e)
{
	char self[PATH_MAX], last[512] = "";
	cleanup_free char *prog = NULL;
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	int status;

	if (n > 0) {
		char *slash;
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash && asprintf(&prog, "%.*s/oci-unpack",
		    (int)(slash - self), self) > 0 && access(prog, X_OK) < 0) {
			free(prog);
			prog = NULL;
		}
	}
	if (prog == NULL && (prog = run_find("oci-unpack", "vmstrap", e)) == NULL)
		return -1;
	{
		const char *argv[] = { prog, "-q", "oci-cache", ref, NULL };
		if (run_capture(argv, &status, last, sizeof last, e) < 0)
			return -1;
	}
	if (status != 0) {
		/* its own message, without its name in front */
		const char *msg = strncmp(last, "oci-unpack: ", 12) == 0 ?
		    last + 12 : last;
		return vs_error(e, status < 128 ? status : EX_SOFTWARE, 0,
		    "unpacking %s: %s", ref, msg[0] ? msg : "oci-unpack failed");
	}
	return 0;
}

#define HINT "give ROOTFS (a tree or a base image), or pipe mkbase's (or oci-unpack's) output into kextract"

static bool is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The base image the document's base section names (its source the
 * image's digest), or the image file operand. */
static int base_of(const json_t *doc, const char *operand, struct rootfs *src,
    struct vs_err *e)
{
	const char *p = operand, *dg = NULL;

	memset(src, 0, sizeof *src);
	if (p == NULL) {
		p = doc_need_str(doc, "base", "path", HINT, e);
		if (p == NULL)
			return -1;
		dg = json_string_value(json_object_get(json_object_get(doc,
		    "base"), "source"));
		if (dg && !digest_valid(dg))
			return vs_error(e, EX_DATAERR, 0,
			    "base.source in the document is not a digest: %s", dg);
	} else {
		/* what mkbase recorded beside it says its source */
		cleanup_json json_t *j = stamp_read(p);
		dg = json_string_value(json_object_get(j, "source"));
		if (dg && digest_valid(dg))
			snprintf(src->digest, sizeof src->digest, "%s", dg);
		dg = NULL;
	}
	{
		struct stat st;
		if (stat(p, &st) < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno,
			    "%s", p);
		if (!S_ISREG(st.st_mode))
			return vs_error(e, EX_DATAERR, 0, "%s: not a base image file", p);
	}
	if ((src->tree = path_abs(p, e)) == NULL)
		return -1;
	if (dg)
		snprintf(src->digest, sizeof src->digest, "%s", dg);
	src->image = true;
	src->told = true;
	return 0;
}

/* -i REF: the tree oci-unpack makes for REF in the workspace's cache,
 * unpacked first when it is not there yet. */
static int kernel_image_tree(const char *ref, struct rootfs *src,
    struct vs_err *e)
{
	struct oci_layout l = { 0 };
	char digest[DIGEST_MAX];
	cleanup_free char *tree = NULL;
	struct stat st;
	int rc;

	if (layout_open(&l, "oci-cache", false, e) < 0)
		return -1;
	/* (the tree is read until kextract ends: the cache's use lock is
	 * held as long, so that oci-prune does not remove it meanwhile) */
	if (layout_use(&l, false, true, e) == -1) {
		layout_close(&l);
		return -1;
	}
	rc = image_resolve(&l, ref, digest, e);
	if (rc == 0 && (tree = layout_rootfs_path(&l, digest)) == NULL)
		rc = vs_error(e, EX_OSERR, ENOMEM, "kextract");
	if (rc == 0)
		layout_touch(&l, digest);
	layout_close(&l);
	if (rc < 0)
		return -1;
	if (stat(tree, &st) < 0 && unpack(ref, e) < 0)
		return -1;
	return rootfs_of(NULL, tree, NULL, src, e);
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "directory", required_argument, NULL, 'C' },
		{ "format", required_argument, NULL, 'F' },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "image", required_argument, NULL, 'i' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	struct vs_err e = { 0 };
	struct rootfs src = { 0 };
	cleanup_json json_t *doc = NULL;
	json_t *sec;
	int c;

	fe_init(argv[0]);
	initialize_ext2_error_table();	/* messages, not "Unknown code ext2 N" */
	atomic_on_signals();
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:F:g:hi:k:qV", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'F': o.format = optarg; break;
		case 'g': o.group = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'i': o.image = optarg; break;
		case 'k': o.version = optarg; break;
		case 'q': o.quiet = true; break;
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
	if (argc == 1 && o.image)
		return fe_usage_error(SYNOPSIS,
		    "give ROOTFS or -i REF, not both");
	if (o.format && strcmp(o.format, "image") != 0 &&
	    strcmp(o.format, "vmlinux") != 0)
		return fe_usage_error(SYNOPSIS,
		    "unknown format '%s': use -F image or -F vmlinux", o.format);
	o.vmlinux = o.format && strcmp(o.format, "vmlinux") == 0;
	if (o.group && path_check_name("group", o.group, &e) < 0)
		return fe_fail_usage(SYNOPSIS, &e);
	if (o.version && (!*o.version || strchr(o.version, '/')))
		return fe_usage_error(SYNOPSIS,
		    "invalid kernel version '%s'", o.version);
	if (o.image && !*o.image)
		return fe_usage_error(SYNOPSIS, "-i needs an image reference");
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		return fe_fail(&e);
	}

	doc = doc_input(!(argc == 1 || o.image), HINT, &e);
	if (doc == NULL)
		return fe_fail_usage(SYNOPSIS, &e);
	if (!o.image && argc == 0) {
		/* a disk artifact's own kernel */
		sec = from_artifact(doc, &o, &e);
		if (sec == NULL && e.code)
			goto fail;
		if (sec) {
			if (doc_set(doc, "kernel", sec, &e) < 0 ||
			    doc_write(stdout, doc, &e) < 0)
				goto fail;
			return fe_finish(0);
		}
	}
	if (o.image) {
		if (kernel_image_tree(o.image, &src, &e) < 0)
			goto fail;
	} else if (argc == 0 && json_object_get(doc, "rootfs") == NULL &&
	    json_object_get(doc, "base") != NULL) {
		/* no tree: the kernel is read out of the base */
		if (base_of(doc, NULL, &src, &e) < 0)
			goto fail;
	} else if (argc == 1 && is_file(argv[0])) {
		if (base_of(NULL, argv[0], &src, &e) < 0)
			goto fail;
	} else if (rootfs_of(doc, argc == 1 ? argv[0] : NULL, HINT, &src,
	    &e) < 0) {
		goto fail;
	}
	sec = extract(&src, &o, &e);
	if (sec == NULL)
		goto fail;
	if (doc_set(doc, "kernel", sec, &e) < 0 || doc_write(stdout, doc, &e) < 0)
		goto fail;
	rootfs_free(&src);
	return fe_finish(0);
fail:
	rootfs_free(&src);
	return fe_finish(fe_fail(&e));
}
