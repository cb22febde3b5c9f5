/* tree.c: rm -rf that stays inside the tree. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "path.h"
#include "tree.h"

/* Open directory name in dfd, making it searchable first if need be. */
static int open_dir(int dfd, const char *name)
{
	int fd = openat(dfd, name,
	    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 && errno == EACCES &&
	    fchmodat(dfd, name, 0700, AT_SYMLINK_NOFOLLOW) == 0)
		fd = openat(dfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd;
}

/* The first entry of directory fd that is a directory, into sub; every
 * other entry is removed on the way.  Returns 1 with sub set, 0 when the
 * directory is empty, -1 on error. */
static int next_subdir(int fd, const char *name, char sub[NAME_MAX + 1],
    struct vs_err *e)
{
	int dup_fd = dup(fd), rc = 0;
	struct dirent *de;
	DIR *d;

	d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	if (d == NULL) {
		if (dup_fd >= 0)
			close(dup_fd);
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "%s", name);
	}
	rewinddir(d);	/* the offset is shared with fd's earlier readers */
	while (rc == 0) {
		struct stat st;
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno)
				rc = vs_error(e, EX_IOERR, errno, "%s", name);
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN &&
		    unlinkat(fd, de->d_name, 0) == 0)
			continue;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				rc = vs_error(e, EX_IOERR, errno, "%s", de->d_name);
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			snprintf(sub, NAME_MAX + 1, "%s", de->d_name);
			rc = 1;
		} else if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT) {
			rc = vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "remove %s", de->d_name);
		}
	}
	closedir(d);
	return rc;
}

/* Empty the directory *fdp (name, for messages).  However deep the tree,
 * it holds two descriptors at most: it goes down into a subdirectory with
 * the parent closed and comes back up through "..", checked to be the
 * directory it left. */
static int empty_dir(int *fdp, const char *name, struct vs_err *e)
{
	char sub[NAME_MAX + 1];
	int r;

	(void)fchmod(*fdp, 0700);	/* write and search, to remove */
	while ((r = next_subdir(*fdp, name, sub, e)) == 1) {
		struct stat here, back;
		int cfd, up, rc;

		if (fstat(*fdp, &here) < 0)
			return vs_error(e, EX_IOERR, errno, "%s", name);
		cfd = open_dir(*fdp, sub);
		if (cfd < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "%s", sub);
		close(*fdp);
		*fdp = -1;
		rc = empty_dir(&cfd, sub, e);
		up = cfd < 0 ? -1 : openat(cfd, "..",
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd >= 0)
			close(cfd);
		if (up < 0)
			return rc < 0 ? rc : vs_error(e, EX_IOERR, errno,
			    "%s/..", sub);
		*fdp = up;
		if (fstat(up, &back) < 0 || back.st_dev != here.st_dev ||
		    back.st_ino != here.st_ino)
			return vs_error(e, EX_IOERR, 0,
			    "%s was moved while it was being removed", sub);
		if (rc < 0)
			return rc;
		if (unlinkat(*fdp, sub, AT_REMOVEDIR) < 0 && errno != ENOENT)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "remove %s", sub);
	}
	return r;
}

void tree_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int tree_remove_at(int dfd, const char *name, struct vs_err *e)
{
	struct stat st;
	int fd, rc;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 :
		    vs_error(e, EX_IOERR, errno, "%s", name);
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "remove %s", name);
		return 0;
	}
	fd = open_dir(dfd, name);
	if (fd < 0)
		return vs_error(e, EX_IOERR, errno, "%s", name);
	rc = empty_dir(&fd, name, e);
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		return vs_error_prefix(e, "remove %s", name);
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "remove %s", name);
	return 0;
}

int tree_remove(const char *path, struct vs_err *e)
{
	cleanup_free char *dir = NULL, *base = NULL;
	cleanup_fd int dfd = -1;

	if (path_split(path, &dir, &base) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", path);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 :
		    vs_error(e, EX_IOERR, errno, "%s", dir);
	if (tree_remove_at(dfd, base, e) < 0)
		return vs_error_prefix(e, "%s", path);
	return 0;
}

void tree_remove_stale(const char *dir, const char *base)
{
	cleanup_fd int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char prefix[NAME_MAX + 8];
	struct dirent *de;
	struct vs_err ignored;
	int n = snprintf(prefix, sizeof prefix, ".%s.tmp-", base);
	DIR *d;

	if (dfd < 0 || n >= (int)sizeof prefix)
		return;
	d = fdopendir(dup(dfd));
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, prefix, (size_t)n) == 0 &&
		    strlen(de->d_name) == (size_t)n + 6)
			(void)tree_remove_at(dfd, de->d_name, &ignored);
	closedir(d);
}
