/* oci-unpack: apply an image's layers, in order, into a root filesystem tree
 * in the OCI cache, safely: nothing is ever written outside the tree. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <jansson.h>
#include <linux/openat2.h>

#include "atomic.h"
#include "cleanup.h"
#include "digest.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "image.h"
#include "layers.h"
#include "layout.h"
#include "lock.h"
#include "path.h"
#include "progress.h"
#include "ref.h"
#include "rootless.h"
#include "stop.h"
#include "stamp.h"
#include "strmap.h"
#include "tree.h"

#define SYNOPSIS "oci-unpack [-qV] [-C DIR] [-o DIR] [LAYOUT REF]"
#define CACHE "oci-cache"

struct opts {
	const char *dir;
	const char *out;
	bool quiet;
};

/* A directory's mode and times, applied when every layer is in. */
struct dirattr {
	mode_t mode;
	struct timespec times[2];
	bool gone;		/* the directory was removed since */
};

struct unpack {
	int root;		/* the tree being built */
	bool rootless;		/* not root: record what cannot be applied */
	uid_t uid;		/* ours, which what we make has */
	gid_t gid;
	struct strmap dirs;	/* directory → index + 1 in attrs */
	struct dirattr *attrs;
	size_t nattrs, capattrs;
	char *cache_path;	/* the directory open as cache_fd, or NULL */
	int cache_fd;
	uint64_t lost_owners;	/* rootless: symlink owners not recorded */
	uint64_t lost_xattrs;	/* rootless: symlink xattrs not recorded */
	uint64_t entries, bytes;
	struct strmap inodes;	/* hardlinked files counted in bytes */
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: oci-unpack [-qV] [-C DIR] [-o DIR] [LAYOUT REF]\n"
	    "       oci-fetch REF | oci-unpack [-qV] [-C DIR] [-o DIR]\n"
	    "Apply an image's layers, in order, into a root filesystem tree.\n"
	    "With no LAYOUT REF, the image is the pipeline document's image section.\n"
	    "\n"
	    "  -C, --directory DIR  work in DIR (the workspace)\n"
	    "  -o, --output DIR     the tree (default: LAYOUT/rootfs/<manifest hex>)\n"
	    "  -q, --quiet          no progress\n"
	    "  -h, --help           this help\n"
	    "  -V, --version        version\n");
}

static int refuse(struct unpack *u, struct vs_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* An entry that is not allowed: the image is refused (common/layers says
 * which layer and entry). */
static int refuse(struct unpack *u, struct vs_err *e, const char *fmt, ...)
{
	va_list ap;

	(void)u;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	e->code = EX_DATAERR;
	e->errnum = 0;
	return -1;
}

static int sys_error(struct unpack *u, struct vs_err *e, const char *what)
{
	int err = errno;

	(void)u;
	/* a full disk is a failed write (74), as for every tool */
	return vs_error(e, err == ENOMEM ? EX_OSERR : EX_IOERR, err, "%s", what);
}

static void drop_cache(struct unpack *u)
{
	if (u->cache_path) {
		close(u->cache_fd);
		free(u->cache_path);
		u->cache_path = NULL;
	}
}

/* Something at path is about to go: forget the cached directory when it
 * is path or lies beneath it. */
static void forget(struct unpack *u, const char *path, size_t len)
{
	if (u->cache_path && strncmp(u->cache_path, path, len) == 0 &&
	    (len == 0 || u->cache_path[len] == '\0' || u->cache_path[len] == '/'))
		drop_cache(u);
}

#ifdef SYS_openat2
static bool no_openat2;
#endif

/* openat2(2) of directory path beneath dfd, refusing symlinks and "..":
 * an fd, or -1 (also where the kernel has no openat2). */
static int open_beneath(int dfd, const char *path)
{
#ifdef SYS_openat2
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
		    RESOLVE_BENEATH,
	};
	long fd;

	if (no_openat2)
		return -1;
	fd = syscall(SYS_openat2, dfd, path, &how, sizeof how);
	if (fd < 0 && (errno == ENOSYS || errno == EPERM))
		no_openat2 = true;	/* EPERM: a seccomp filter */
	return (int)fd;
#else
	(void)dfd;
	(void)path;
	return -1;
#endif
}

/* Open directory dir of the tree (O_PATH), from base (the root, or an
 * ancestor open as base_fd at base_len bytes of dir), one component at a
 * time, never following a symlink.  With create, missing directories are
 * made (0755, as tar does).  Returns 0 with *out, 1 when dir is missing or
 * not a directory (without create), -1 on error. */
static int walk(struct unpack *u, const char *dir, int base_fd,
    size_t base_len, bool create, int *out, struct vs_err *e)
{
	const char *p = dir + base_len;
	int cur = base_fd, err;

	while (*p == '/')
		p++;
	if (*p) {
		/* One call when the path is there and holds no symlink; the
		 * walk below makes what is missing and names what is wrong. */
		int fd = open_beneath(base_fd, p);
		if (fd >= 0) {
			*out = fd;
			return 0;
		}
	}
	while (*p) {
		char comp[NAME_MAX + 1];
		size_t len = strcspn(p, "/");
		struct stat st;
		int next;

		memcpy(comp, p, len);
		comp[len] = '\0';
		next = openat(cur, comp,
		    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT && create) {
			if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
				err = errno;
				goto fail;
			}
			next = openat(cur, comp,
			    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (next < 0) {
			int plen = (int)(p - dir + len);
			bool link;

			err = errno;
			link = (err == ENOTDIR || err == ELOOP) &&
			    fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISLNK(st.st_mode);
			if (cur != base_fd)
				close(cur);
			if (link)
				return refuse(u, e,
				    "the path goes through the symlink '%.*s'",
				    plen, dir);
			if ((err == ENOENT || err == ENOTDIR) && !create)
				return 1;
			if (err == ENOTDIR)
				return refuse(u, e, "'%.*s' is not a directory",
				    plen, dir);
			errno = err;
			return sys_error(u, e, "open a directory");
		}
		if (cur != base_fd)
			close(cur);
		cur = next;
		base_fd = -1;	/* from here on, cur is ours to close */
		p += len;
		while (*p == '/')
			p++;
	}
	if (cur == base_fd) {
		cur = openat(base_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (cur < 0)
			return sys_error(u, e, "open a directory");
	}
	*out = cur;
	return 0;
fail:
	if (cur != base_fd)
		close(cur);
	errno = err;
	return sys_error(u, e, "make a directory");
}

/* The directory dir of the tree, cached (the caller does not close it). */
static int open_dir(struct unpack *u, const char *dir, bool create, int *out,
    struct vs_err *e)
{
	size_t clen = u->cache_path ? strlen(u->cache_path) : 0;
	int fd, r;

	if (*dir == '\0') {
		*out = u->root;
		return 0;
	}
	if (u->cache_path && strcmp(u->cache_path, dir) == 0) {
		*out = u->cache_fd;
		return 0;
	}
	if (u->cache_path && strncmp(dir, u->cache_path, clen) == 0 &&
	    dir[clen] == '/')
		r = walk(u, dir, u->cache_fd, clen, create, &fd, e);
	else
		r = walk(u, dir, u->root, 0, create, &fd, e);
	if (r != 0)
		return r;
	drop_cache(u);
	u->cache_path = strdup(dir);
	if (u->cache_path == NULL) {
		close(fd);
		return sys_error(u, e, "open a directory");
	}
	u->cache_fd = fd;
	*out = fd;
	return 0;
}

/* A directory at path (len bytes) is going: what was deferred for it and
 * beneath it must not come back on whatever takes its place. */
static void forget_dirs(struct unpack *u, const char *path, size_t len)
{
	const char *key;
	uintptr_t val;
	size_t i = 0;

	while (strmap_next(&u->dirs, &i, &key, &val))
		if (strncmp(key, path, len) == 0 &&
		    (key[len] == '\0' || (key[len] == '/' && len > 0)))
			u->attrs[val - 1].gone = true;
}

/* Before name (path in the tree) in dfd is removed. */
static void removing(struct unpack *u, int dfd, const char *name,
    const char *path, size_t len)
{
	struct stat st;

	forget(u, path, len);
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode))
		forget_dirs(u, path, len);
}

/* Remove whatever is at name in dfd (rel is its path in the tree), so
 * that an entry can take its place. */
static int replace(struct unpack *u, int dfd, const char *name,
    const char *rel, struct vs_err *e)
{
	removing(u, dfd, name, rel, strlen(rel));
	return tree_remove_at(dfd, name, e);
}

/* The parent directory of path, open (cached), and the last component:
 * 0, 1 when the directory is missing or no directory, -1 (through a
 * symlink, and the like). */
static int parent_of(struct unpack *u, const char *path, int *dfd,
    const char **name, struct vs_err *e)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	*name = slash ? slash + 1 : path;
	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 0, path);
	return open_dir(u, dir, false, dfd, e);
}

/* The sink's remove: path and all beneath it. */
static int sink_remove(void *arg, const char *path, struct vs_err *e)
{
	struct unpack *u = arg;
	const char *name;
	int dfd, r = parent_of(u, path, &dfd, &name, e);

	if (r != 0)
		return r < 0 ? -1 : 0;	/* nothing there to remove */
	removing(u, dfd, name, path, strlen(path));
	return tree_remove_at(dfd, name, e);
}

/* The sink's is_dir. */
static int sink_is_dir(void *arg, const char *path, struct vs_err *e)
{
	struct unpack *u = arg;
	struct stat st;
	const char *name;
	int dfd, r = parent_of(u, path, &dfd, &name, e);

	if (r != 0)
		return r < 0 ? -1 : 0;
	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode);
}

/* The sink's list: the names in directory path. */
static int sink_list(void *arg, const char *path, char ***names, size_t *n,
    struct vs_err *e)
{
	struct unpack *u = arg;
	struct dirent *de;
	size_t cap = 0;
	DIR *d;
	int dfd, fd, r;

	*names = NULL;
	*n = 0;
	/* (the walk refuses a path through a symlink) */
	if ((r = open_dir(u, path, false, &dfd, e)) != 0)
		return r < 0 ? -1 : 0;
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR || errno == ELOOP ? 0 :
		    sys_error(u, e, "open a directory");
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return sys_error(u, e, "open a directory");
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (*n == cap) {
			char **nv = realloc(*names, (cap = cap ? cap * 2 : 32) *
			    sizeof **names);
			if (nv == NULL)
				goto nomem;
			*names = nv;
		}
		if (((*names)[*n] = strdup(de->d_name)) == NULL)
			goto nomem;
		(*n)++;
	}
	closedir(d);
	return 0;
nomem:
	closedir(d);
	while (*n)
		free((*names)[--*n]);
	free(*names);
	*names = NULL;
	return vs_error(e, EX_OSERR, ENOMEM, "list a directory");
}

/* Set an extended attribute on the entry: through fd when there is one,
 * else through dfd's /proc name, which does not follow a final symlink. */
static int set_xattr(int fd, int dfd, const char *name, const char *key,
    const void *val, size_t size)
{
	char p[64 + NAME_MAX];

	if (fd >= 0)
		return fsetxattr(fd, key, val, size, 0);
	snprintf(p, sizeof p, "/proc/self/fd/%d/%s", dfd, name);
	return lsetxattr(p, key, val, size, 0);
}

static int remove_xattr(int fd, const char *key)
{
	if (fremovexattr(fd, key) < 0 && errno != ENODATA)
		return -1;
	return 0;
}

/* uid and gid: applied as root, recorded when rootless.  A new entry
 * (fresh) already has our owner and no record; *changed says whether a
 * chown happened, which clears set-user-ID and set-group-ID bits. */
static int set_owner(struct unpack *u, struct archive_entry *ae, int fd,
    int dfd, const char *name, bool fresh, bool *changed, struct vs_err *e)
{
	uid_t uid = (uid_t)archive_entry_uid(ae);
	gid_t gid = (gid_t)archive_entry_gid(ae);
	unsigned char rec[ROOTLESS_MAX];
	size_t n;
	int r;

	*changed = false;
	if (!u->rootless) {
		/* Directories get their modes at the end, so none is setgid
		 * yet: what we make is ours, uid and gid. */
		if (fresh && uid == u->uid && gid == u->gid)
			return 0;
		*changed = true;
		r = fd >= 0 ? fchown(fd, uid, gid) :
		    fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
		return r < 0 ? sys_error(u, e, "set the owner") : 0;
	}
	n = rootless_encode(uid, gid, rec);
	if (archive_entry_filetype(ae) == AE_IFLNK) {
		/* Linux allows no user.* attributes on symlinks */
		if (n)
			u->lost_owners++;
		return 0;
	}
	if (n)
		r = set_xattr(fd, dfd, name, ROOTLESS_XATTR, rec, n);
	else
		r = fresh || fd < 0 ? 0 : remove_xattr(fd, ROOTLESS_XATTR);
	if (r < 0 && errno == EPERM && fd < 0) {
		/* a fifo: Linux keeps user.* attributes on files and
		 * directories only */
		u->lost_owners++;
		return 0;
	}
	if (r < 0 && (errno == ENOTSUP || errno == EPERM))
		return vs_error(e, EX_CANTCREAT, errno,
		    "cannot record ownership as user.rootlesscontainers: the tree's filesystem does not take user.* attributes (unpack as root, or elsewhere)");
	return r < 0 ? sys_error(u, e, "record the owner") : 0;
}

/* The mode to create a non-directory with (the umask is 0): its own, so
 * that no chmod is needed, unless rootless and it leaves the owner unable
 * to write (user.* attributes need write permission) or has set-ID bits
 * (writing clears them). */
static mode_t create_mode(const struct unpack *u, struct archive_entry *ae)
{
	mode_t mode = archive_entry_perm(ae) & 07777;

	if (u->rootless && (!(mode & 0200) || (mode & 06000)))
		return 0600;
	return mode;
}

/* A directory declared again by an upper layer takes the entry's
 * attributes, not the lower layer's plus the entry's (as umoci does): clear
 * what it has.  Attributes that we may not remove (security.* when not
 * root) were not set by us either. */
static int clear_xattrs(struct unpack *u, int fd, struct vs_err *e)
{
	cleanup_free char *list = NULL;
	ssize_t n = 0;

	for (;;) {
		ssize_t want = flistxattr(fd, NULL, 0);
		char *p;
		if (want <= 0) {
			if (want == 0 || errno == ENOTSUP)
				return 0;
			return sys_error(u, e, "list the attributes");
		}
		p = realloc(list, (size_t)want);
		if (p == NULL)
			return sys_error(u, e, "list the attributes");
		list = p;
		n = flistxattr(fd, list, (size_t)want);
		if (n >= 0)
			break;
		if (errno != ERANGE)	/* ERANGE: it grew meanwhile */
			return sys_error(u, e, "list the attributes");
	}
	for (char *k = list; k < list + n; k += strlen(k) + 1) {
		if (fremovexattr(fd, k) == 0 || errno == ENODATA)
			continue;
		if ((errno == EPERM || errno == ENOTSUP) &&
		    strncmp(k, "user.", 5) != 0)
			continue;
		{
			char what[300];
			snprintf(what, sizeof what, "remove the attribute %s", k);
			return sys_error(u, e, what);
		}
	}
	return 0;
}

static bool ours(const char *key)
{
	return strcmp(key, ROOTLESS_XATTR) == 0 ||
	    strncmp(key, "user.vmstrap.", 13) == 0;
}

/* The entry's extended attributes.  Rootless, those only root may set are
 * recorded under user.vmstrap.xattr.; attributes in our own namespace that
 * a layer carries are dropped, so that they cannot pass for records. */
static int set_xattrs(struct unpack *u, struct archive_entry *ae, int fd,
    int dfd, const char *name, struct vs_err *e)
{
	const char *key;
	const void *val;
	size_t size;

	if (archive_entry_xattr_reset(ae) == 0)
		return 0;
	while (archive_entry_xattr_next(ae, &key, &val, &size) == ARCHIVE_OK) {
		char alt[sizeof ROOTLESS_XATTR_PREFIX + XATTR_NAME_MAX];

		if (u->rootless && ours(key))
			continue;
		if (!layers_xattr_known(key))
			return refuse(u, e,
			    "the attribute '%.60s' is in no namespace Linux knows (user., trusted., security., system.)",
			    key);
		if (strlen(key) > XATTR_NAME_MAX || size > XATTR_SIZE_MAX)
			return refuse(u, e,
			    "the attribute '%.60s' has a %s longer than Linux allows",
			    key, size > XATTR_SIZE_MAX ? "value" : "name");
		if (set_xattr(fd, dfd, name, key, val, size) == 0)
			continue;
		if (u->rootless && (errno == EPERM || errno == ENOTSUP) &&
		    strncmp(key, "user.", 5) != 0) {
			if (fd < 0) {	/* a symlink or a fifo */
				u->lost_xattrs++;
				continue;
			}
			if (strlen(key) + sizeof ROOTLESS_XATTR_PREFIX - 1 >
			    XATTR_NAME_MAX)
				return vs_error(e, EX_CANTCREAT, 0,
				    "the attribute %.40s... has too long a name to be recorded as %s<name> (at most %d bytes in all): unpack as root",
				    key, ROOTLESS_XATTR_PREFIX, XATTR_NAME_MAX);
			snprintf(alt, sizeof alt, "%s%s", ROOTLESS_XATTR_PREFIX,
			    key);
			if (set_xattr(fd, dfd, name, alt, val, size) == 0)
				continue;
		}
		{
			char what[300];
			snprintf(what, sizeof what, "set the attribute %s", key);
			return sys_error(u, e, what);
		}
	}
	return 0;
}

static void entry_times(struct archive_entry *ae, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime(ae);
	ts[1].tv_nsec = archive_entry_mtime_nsec(ae);
	if (archive_entry_atime_is_set(ae)) {
		ts[0].tv_sec = archive_entry_atime(ae);
		ts[0].tv_nsec = archive_entry_atime_nsec(ae);
	} else {
		ts[0] = ts[1];
	}
}

/* Owner, attributes, mode and times of a non-directory just made with
 * mode made (create_mode). */
static int finish_entry(struct unpack *u, struct archive_entry *ae, int fd,
    int dfd, const char *name, mode_t made, struct vs_err *e)
{
	mode_t mode = archive_entry_perm(ae) & 07777;
	struct timespec ts[2];
	bool link = archive_entry_filetype(ae) == AE_IFLNK, chowned;

	if (set_owner(u, ae, fd, dfd, name, true, &chowned, e) < 0 ||
	    set_xattrs(u, ae, fd, dfd, name, e) < 0)
		return -1;
	if (!link && (mode != made || (chowned && (mode & 06000))) &&
	    (fd >= 0 ? fchmod(fd, mode) :
	    fchmodat(dfd, name, mode, AT_SYMLINK_NOFOLLOW)) < 0)
		return sys_error(u, e, "set the mode");
	entry_times(ae, ts);
	if ((fd >= 0 ? futimens(fd, ts) :
	    utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW)) < 0)
		return sys_error(u, e, "set the times");
	return 0;
}

static int write_all_at(int fd, const char *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

static int too_big(struct unpack *u, int64_t size, struct vs_err *e)
{
	return refuse(u, e, "a file of %lld bytes, more than the filesystem holds",
	    (long long)size);
}

static int make_file(struct unpack *u, const struct layer_entry *le,
    int dfd, const char *name, const char *rel, struct vs_err *e)
{
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	struct archive_entry *ae = le->ae;
	mode_t made = create_mode(u, ae);
	cleanup_fd int fd = openat(dfd, name, flags, made);
	int64_t size = archive_entry_size(ae);
	uint64_t end = 0;

	if (fd < 0 && errno == EEXIST) {
		if (replace(u, dfd, name, rel, e) < 0)
			return -1;
		fd = openat(dfd, name, flags, made);
	}
	if (fd < 0)
		return sys_error(u, e, "create");
	for (;;) {
		const void *p;
		size_t n;
		uint64_t off;
		int r = layers_data(le, &p, &n, &off, &end, e);

		/* (a size, or a sparse map, beyond any file the filesystem
		 * holds is the layer's fault: EFBIG below) */
		if (r < 0)
			return -1;
		if (r > 0)
			break;
		if (write_all_at(fd, p, n, (off_t)off) < 0)
			return errno == EFBIG ? too_big(u, size, e) :
			    sys_error(u, e, "write");
	}
	if (size > (int64_t)end && ftruncate(fd, size) < 0)
		return errno == EFBIG || errno == EINVAL ? too_big(u, size, e) :
		    sys_error(u, e, "write");
	return finish_entry(u, ae, fd, dfd, name, made, e);
}

static int make_dir(struct unpack *u, struct archive_entry *ae, int dfd,
    const char *name, const char *rel, struct vs_err *e)
{
	cleanup_fd int fd = -1;
	struct dirattr *da;
	struct stat st;
	uintptr_t *slot;
	bool fresh = true, chowned;

	if (mkdirat(dfd, name, 0700) < 0) {
		fresh = false;
		if (errno != EEXIST)
			return sys_error(u, e, "make the directory");
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return sys_error(u, e, "make the directory");
		if (!S_ISDIR(st.st_mode) && (replace(u, dfd, name, rel, e) < 0 ||
		    mkdirat(dfd, name, 0700) < 0))
			return e->code ? -1 : sys_error(u, e, "make the directory");
	}
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return sys_error(u, e, "open the directory");
	if ((!fresh && clear_xattrs(u, fd, e) < 0) ||
	    set_owner(u, ae, fd, dfd, name, fresh, &chowned, e) < 0 ||
	    set_xattrs(u, ae, fd, dfd, name, e) < 0)
		return -1;
	/* Mode and times wait for the end: a directory without write
	 * permission must still take the entries that follow. */
	slot = strmap_get(&u->dirs, rel, strlen(rel));
	if (slot == NULL) {
		if (u->nattrs == u->capattrs) {
			size_t cap = u->capattrs ? u->capattrs * 2 : 256;
			struct dirattr *n = realloc(u->attrs, cap * sizeof *n);
			if (n == NULL)
				return sys_error(u, e, "remember a directory");
			u->attrs = n;
			u->capattrs = cap;
		}
		if (strmap_put(&u->dirs, rel, strlen(rel), ++u->nattrs) < 0)
			return sys_error(u, e, "remember a directory");
		da = &u->attrs[u->nattrs - 1];
	} else {
		da = &u->attrs[*slot - 1];
	}
	da->mode = archive_entry_perm(ae) & 07777;
	da->gone = false;
	entry_times(ae, da->times);
	return 0;
}

static int make_symlink(struct unpack *u, struct archive_entry *ae, int dfd,
    const char *name, const char *rel, struct vs_err *e)
{
	const char *target = archive_entry_symlink(ae);

	if (target == NULL)
		return refuse(u, e, "a symlink without a target");
	if (strlen(target) >= PATH_MAX)
		return refuse(u, e, "a symlink target of %zu bytes; Linux allows at most %d",
		    strlen(target), PATH_MAX - 1);
	if (symlinkat(target, dfd, name) < 0) {
		if (errno == ENAMETOOLONG)
			return refuse(u, e, "a symlink whose name or target (%zu bytes) is longer than the filesystem allows",
			    strlen(target));
		if (errno != EEXIST || replace(u, dfd, name, rel, e) < 0 ||
		    symlinkat(target, dfd, name) < 0)
			return e->code ? -1 : sys_error(u, e, "make the symlink");
	}
	return finish_entry(u, ae, -1, dfd, name, 0, e);
}

/* Character and block devices, fifos.  Rootless, a device is an empty
 * file that records what it stands for. */
static int make_node(struct unpack *u, struct archive_entry *ae, int dfd,
    const char *name, const char *rel, struct vs_err *e)
{
	mode_t type = archive_entry_filetype(ae) == AE_IFIFO ? S_IFIFO :
	    archive_entry_filetype(ae) == AE_IFBLK ? S_IFBLK : S_IFCHR;
	unsigned maj = (unsigned)archive_entry_rdevmajor(ae);
	unsigned min = (unsigned)archive_entry_rdevminor(ae);
	dev_t dev = type == S_IFIFO ? 0 : makedev(maj, min);
	mode_t made = create_mode(u, ae);
	cleanup_fd int fd = -1;
	int r;

	r = mknodat(dfd, name, type | made, dev);
	if (r < 0 && errno == EEXIST) {
		if (replace(u, dfd, name, rel, e) < 0)
			return -1;
		r = mknodat(dfd, name, type | made, dev);
	}
	if (r < 0 && errno == EPERM && u->rootless && type != S_IFIFO) {
		char rec[32];

		fd = openat(dfd, name,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return sys_error(u, e, "create");
		made = 0600;
		rootless_device_encode(type, maj, min, rec);
		if (fsetxattr(fd, ROOTLESS_DEVICE_XATTR, rec, strlen(rec), 0) < 0)
			return sys_error(u, e, "record the device");
		r = 0;
	}
	if (r < 0)
		return sys_error(u, e, "make the node");
	return finish_entry(u, ae, fd, dfd, name, made, e);
}

/* A hardlink to trel (clean; target as the layer wrote it). */
static int make_hardlink(struct unpack *u, const char *trel,
    const char *target, int dfd, const char *name, const char *rel,
    struct vs_err *e)
{
	char tdir[PATH_MAX];
	const char *tname, *slash;
	cleanup_fd int tfd = -1;
	struct stat a, b;
	int r;

	slash = strrchr(trel, '/');
	tname = slash ? slash + 1 : trel;
	snprintf(tdir, sizeof tdir, "%.*s", slash ? (int)(slash - trel) : 0,
	    trel);
	r = walk(u, tdir, u->root, 0, false, &tfd, e);
	if (r < 0)
		return -1;
	if (r > 0 || fstatat(tfd, tname, &a, AT_SYMLINK_NOFOLLOW) < 0)
		return refuse(u, e, "a hardlink to '%s', which is not in the tree",
		    target);
	if (S_ISDIR(a.st_mode))
		return refuse(u, e, "a hardlink to the directory '%s'", target);
	if (linkat(tfd, tname, dfd, name, 0) == 0)
		return 0;
	if (errno != EEXIST)
		return sys_error(u, e, "make the hardlink");
	if (fstatat(dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
		return 0;
	if (replace(u, dfd, name, rel, e) < 0)
		return -1;
	if (linkat(tfd, tname, dfd, name, 0) < 0)
		return sys_error(u, e, "make the hardlink");
	return 0;
}

/* The sink's entry: le in the tree, replacing what is at its path. */
static int sink_entry(void *arg, const struct layer_entry *le,
    struct vs_err *e)
{
	struct unpack *u = arg;
	struct archive_entry *ae = le->ae;
	int dfd;

	if (*le->path == '\0')	/* the root's own entry ("./") */
		return make_dir(u, ae, u->root, ".", "", e);
	if (open_dir(u, le->dir, true, &dfd, e) != 0)
		return -1;
	if (le->link)
		return make_hardlink(u, le->link, archive_entry_hardlink(ae),
		    dfd, le->name, le->path, e);
	switch (archive_entry_filetype(ae)) {
	case AE_IFREG:
		return make_file(u, le, dfd, le->name, le->path, e);
	case AE_IFDIR:
		return make_dir(u, ae, dfd, le->name, le->path, e);
	case AE_IFLNK:
		return make_symlink(u, ae, dfd, le->name, le->path, e);
	default:	/* devices and fifos: layers.c lets through no other */
		return make_node(u, ae, dfd, le->name, le->path, e);
	}
}

/* Walk the finished tree: count it, and give each directory (deepest
 * first) the mode and times its entry asked for.  fd is the directory's,
 * and is closed here: one descriptor for each level of the tree. */
static int finish_tree(struct unpack *u, int fd, char *path, size_t len,
    struct vs_err *e)
{
	struct dirent *de;
	uintptr_t *slot;
	DIR *d = fdopendir(fd);
	int rc = 0;

	if (d == NULL) {
		close(fd);
		return vs_error(e, EX_IOERR, errno, "%s", len ? path : ".");
	}
	while (rc == 0 && (de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name), l = len;
		struct stat st;
		unsigned char type = de->d_type;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		u->entries++;
		if (l + n + 2 > PATH_MAX) {
			rc = vs_error(e, EX_DATAERR, 0,
			    "a path in the tree is too long");
			break;
		}
		if (l)
			path[l++] = '/';
		memcpy(path + l, de->d_name, n + 1);
		if (type == DT_UNKNOWN || type == DT_REG) {
			if (fstatat(dirfd(d), de->d_name, &st,
			    AT_SYMLINK_NOFOLLOW) < 0) {
				rc = vs_error(e, EX_IOERR, errno, "%s", path);
				break;
			}
			type = S_ISDIR(st.st_mode) ? DT_DIR :
			    S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
		}
		if (type == DT_REG) {
			char key[48];
			int k = snprintf(key, sizeof key, "%llx:%llx",
			    (unsigned long long)st.st_dev,
			    (unsigned long long)st.st_ino);
			if (st.st_nlink < 2 || !strmap_get(&u->inodes, key, (size_t)k))
				u->bytes += (uint64_t)st.st_size;
			if (st.st_nlink > 1 &&
			    strmap_put(&u->inodes, key, (size_t)k, 1) < 0)
				rc = vs_error(e, EX_OSERR, ENOMEM, "count");
		} else if (type == DT_DIR) {
			int cfd = openat(dirfd(d), de->d_name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0 && errno == EMFILE)
				rc = vs_error(e, EX_OSERR, 0,
				    "the tree is deeper than the limit on open files allows: raise it (ulimit -n)");
			else if (cfd < 0)
				rc = vs_error(e, EX_IOERR, errno, "%s", path);
			else
				rc = finish_tree(u, cfd, path, l + n, e);
		}
		path[len] = '\0';
	}
	slot = rc < 0 ? NULL : strmap_get(&u->dirs, path, len);
	if (slot && !u->attrs[*slot - 1].gone) {
		struct dirattr *da = &u->attrs[*slot - 1];
		if (fchmod(dirfd(d), da->mode) < 0 ||
		    futimens(dirfd(d), da->times) < 0)
			rc = vs_error(e, EX_IOERR, errno, "%s", len ? path : ".");
	}
	closedir(d);
	return rc;
}

static void unpack_free(struct unpack *u)
{
	drop_cache(u);
	strmap_free(&u->dirs);
	strmap_free(&u->inodes);
	free(u->attrs);
	if (u->root >= 0)
		close(u->root);
}

/* Build the tree of img in the (empty) directory tmp. */
static int build(const struct oci_layout *l, const struct image *img,
    const char *tmp, bool quiet, struct unpack *u, struct vs_err *e)
{
	const struct layer_sink sink = { .arg = u, .entry = sink_entry,
	    .remove = sink_remove, .list = sink_list, .is_dir = sink_is_dir };
	char path[PATH_MAX] = "";
	int rc = 0;

	/* The tree stays 0700 (mkdtemp's) while it is built, so that no
	 * other user can reach into it; its own mode comes at the end. */
	u->root = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (u->root < 0)
		return vs_error(e, EX_CANTCREAT, errno, "%s", tmp);
	rc = layers_apply(l, img, &sink, "unpack", quiet, e);
	drop_cache(u);
	if (rc == 0) {
		int fd = dup(u->root);
		rc = fd < 0 ? vs_error(e, EX_OSERR, errno, "%s", tmp) :
		    finish_tree(u, fd, path, 0, e);
	}
	if (rc == 0 && (strmap_get(&u->dirs, "", 0) == NULL ||
	    u->attrs[*strmap_get(&u->dirs, "", 0) - 1].gone) &&
	    fchmod(u->root, 0755) < 0)
		rc = vs_error(e, EX_IOERR, errno, "%s", tmp);
	return rc;
}

/* What a finished tree was built from, kept beside it (stamp.h). */
struct stamp {
	char digest[DIGEST_MAX];
	uint64_t entries, bytes;
	bool rootless;
};

static int read_stamp(const char *tree, struct stamp *s)
{
	cleanup_json json_t *j = stamp_read(tree);
	const char *dg = json_string_value(json_object_get(j, "digest"));

	if (!dg || !digest_valid(dg))
		return -1;
	snprintf(s->digest, sizeof s->digest, "%s", dg);
	s->entries = (uint64_t)json_integer_value(json_object_get(j, "entries"));
	s->bytes = (uint64_t)json_integer_value(json_object_get(j, "bytes"));
	s->rootless = json_is_true(json_object_get(j, "rootless"));
	return 0;
}

static int write_stamp(const char *tree, const struct stamp *s,
    struct vs_err *e)
{
	cleanup_json json_t *j = json_pack("{s:s, s:I, s:I, s:b}",
	    "digest", s->digest, "entries", (json_int_t)s->entries,
	    "bytes", (json_int_t)s->bytes, "rootless", s->rootless);

	if (j == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", tree);
	return stamp_write(tree, j, e);
}

static bool dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	bool empty = true;

	if (d == NULL)
		return false;
	while (empty && (de = readdir(d)) != NULL)
		empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
	closedir(d);
	return empty;
}

static json_t *rootfs_section(const char *tree, const struct stamp *s,
    bool reused)
{
	return json_pack("{s:s, s:s, s:I, s:I, s:b, s:b}", "path", tree,
	    "digest", s->digest, "entries", (json_int_t)s->entries,
	    "bytes", (json_int_t)s->bytes, "rootless", s->rootless,
	    "reused", reused);
}

/* Unpack img into tree (absolute), or reuse what is there. */
static json_t *unpack(const struct oci_layout *l, const struct image *img,
    const char *tree, bool chosen, bool quiet, struct vs_err *e)
{
	cleanup_free char *dir = NULL, *base = NULL, *lockp = NULL, *tmp = NULL;
	cleanup_fd int lock = -1;
	struct unpack u = { .root = -1 };
	struct stamp s = { 0 };
	struct stat st;
	bool exists;
	int rc;

	if (path_split(tree, &dir, &base) < 0 ||
	    asprintf(&lockp, "%s/.%s.lock", dir, base) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", tree), NULL;
	/* The trees hold the images' set-user-ID programs and devices: the
	 * cache's rootfs directory is for its owner only (as umoci's bundle
	 * is); with -o, the directory is the caller's choice. */
	if (mkdir(dir, chosen ? 0755 : 0700) < 0 && errno != EEXIST)
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s", dir), NULL;
	if (!chosen && lstat(dir, &st) == 0 && st.st_uid == geteuid() &&
	    (st.st_mode & 077) && chmod(dir, 0700) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", dir), NULL;
	lock = lock_output(tree, lockp, e);
	if (lock < 0)
		return NULL;
	exists = lstat(tree, &st) == 0;
	if (exists && read_stamp(tree, &s) == 0 &&
	    strcmp(s.digest, img->manifest) == 0)
		return rootfs_section(tree, &s, true);
	if (exists && !S_ISDIR(st.st_mode))
		return vs_error(e, EX_CANTCREAT, 0,
		    "%s exists and is not a directory", tree), NULL;
	if (exists && chosen && !dir_empty(tree) && read_stamp(tree, &s) < 0)
		return vs_error(e, EX_CANTCREAT, 0,
		    "%s exists and is not a tree oci-unpack made: remove it, or choose another -o",
		    tree), NULL;
	tree_remove_stale(dir, base);

	if (asprintf(&tmp, "%s/.%s.tmp-XXXXXX", dir, base) < 0 ||
	    mkdtemp(tmp) == NULL)
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s", dir), NULL;
	u.rootless = rootless_needed();
	u.uid = geteuid();
	u.gid = getegid();
	rc = build(l, img, tmp, quiet, &u, e);
	snprintf(s.digest, sizeof s.digest, "%s", img->manifest);
	s.entries = u.entries;
	s.bytes = u.bytes;
	s.rootless = u.rootless;
	if (rc == 0 && (u.lost_owners || u.lost_xattrs))
		fe_warn("rootless: the owners of %llu symlink(s) or fifo(s) and the attributes of %llu could not be recorded (Linux keeps user.* attributes on files and directories only)",
		    (unsigned long long)u.lost_owners,
		    (unsigned long long)u.lost_xattrs);
	/* On disk before it gets its name, so that a power cut cannot leave
	 * a tree with empty files to be reused: one syncfs costs far less
	 * than an fsync per file. */
	if (rc == 0 && stop_signal)
		rc = vs_error(e, EX_TEMPFAIL, 0, "interrupted");
	if (rc == 0 && syncfs(u.root) < 0)
		rc = vs_error(e, EX_IOERR, errno, "flush %s", tmp);
	unpack_free(&u);
	if (rc == 0) {
		if (exists)
			rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, tree,
			    RENAME_EXCHANGE);
		else
			rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, tree,
			    RENAME_NOREPLACE);
		if (rc < 0)
			vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
			    "rename %s to %s", tmp, tree);
		else
			rc = write_stamp(tree, &s, e);
	}
	{
		struct vs_err ignored;
		/* the failed tree, or the old one swapped out */
		if (tree_remove(tmp, &ignored) < 0 && rc == 0)
			fe_warn("could not remove the old tree, now %s: %s", tmp,
			    ignored.msg);
	}
	if (rc < 0)
		return NULL;
	{
		cleanup_fd int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0)
			(void)fsync(dfd);
	}
	return rootfs_section(tree, &s, false);
}

/* The layout and manifest digest named by the arguments or the document. */
static int image_of(json_t *doc, int argc, char **argv,
    struct oci_layout *l, char digest[DIGEST_MAX], struct vs_err *e)
{
	const char *root, *dg;

	if (argc == 2) {
		if (layout_open(l, argv[0], false, e) < 0)
			return -1;
		return image_resolve(l, argv[1], digest, e);
	}
	root = doc_need_str(doc, "image", "layout",
	    "give LAYOUT REF, or pipe oci-fetch's output into oci-unpack", e);
	if (root == NULL)
		return -1;
	dg = doc_need_str(doc, "image", "digest",
	    "give LAYOUT REF, or pipe oci-fetch's output into oci-unpack", e);
	if (dg == NULL)
		return -1;
	if (!digest_valid(dg))
		return vs_error(e, EX_DATAERR, 0,
		    "image.digest in the document is not a digest: %s", dg);
	if (layout_open(l, root, false, e) < 0)
		return -1;
	snprintf(digest, DIGEST_MAX, "%s", dg);
	return 0;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "directory", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'o' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	struct vs_err e = { 0 };
	struct oci_layout l = { 0 };
	struct image img = { 0 };
	cleanup_json json_t *doc = NULL;
	cleanup_free char *tree = NULL;
	char digest[DIGEST_MAX];
	json_t *sec = NULL;
	int c;

	fe_init(argv[0]);
	umask(0);	/* the image says what the modes are */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:ho:qV", longopts, NULL)) != -1) {
		switch (c) {
		case 'C':
			o.dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'o':
			o.out = optarg;
			break;
		case 'q':
			o.quiet = true;
			break;
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
	if (argc == 1 || argc > 2)
		return fe_usage_error(SYNOPSIS, argc == 1 ?
		    "give both LAYOUT and REF, or neither (to read the document)" :
		    "too many operands");
	if (o.out && *o.out == '\0')
		return fe_usage_error(SYNOPSIS, "-o needs a directory");
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		return fe_fail(&e);
	}

	stop_on_signals();
	signal(SIGPIPE, SIG_IGN);
	tree_fd_limit();

	doc = doc_input(argc != 2,
	    "give LAYOUT REF, or pipe oci-fetch's output into oci-unpack", &e);
	if (doc == NULL)
		return fe_fail_usage(SYNOPSIS, &e);
	if (image_of(doc, argc, argv, &l, digest, &e) < 0 ||
	    image_load(&l, digest, &img, &e) < 0)
		goto fail;
	if (o.out)
		tree = path_abs(o.out, &e);
	else if ((tree = layout_rootfs_path(&l, digest)) == NULL)
		vs_error(&e, EX_OSERR, ENOMEM, "oci-unpack");
	if (tree == NULL)
		goto fail;
	sec = unpack(&l, &img, tree, o.out != NULL, o.quiet, &e);
	if (sec == NULL)
		goto fail;
	if (doc_set(doc, "rootfs", sec, &e) < 0 || doc_write(stdout, doc, &e) < 0)
		goto fail;
	image_free(&img);
	layout_close(&l);
	return fe_finish(0);
fail:
	image_free(&img);
	layout_close(&l);
	c = fe_finish(fe_fail(&e));
	stop_reraise();
	return c;
}
