/* tree.c: rm -rf that stays inside the tree. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "path.h"
#include "tree.h"

static int empty_dir(int fd, const char *name, struct vs_err *e)
{
	DIR *d;
	struct dirent *de;
	int rc = 0;

	/* Owner write and search, to remove what is inside. */
	(void)fchmod(fd, 0700);
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return vs_error(e, EX_IOERR, errno, "%s", name);
	}
	while (rc == 0) {
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
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			continue;
		rc = tree_remove_at(dirfd(d), de->d_name, e);
	}
	closedir(d);
	return rc;
}

int tree_remove_at(int dfd, const char *name, struct vs_err *e)
{
	struct stat st;
	int fd;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 :
		    vs_error(e, EX_IOERR, errno, "%s", name);
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
			return vs_error(e, vs_code_for_errno(errno, EX_IOERR),
			    errno, "remove %s", name);
		return 0;
	}
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == EACCES &&
	    fchmodat(dfd, name, 0700, AT_SYMLINK_NOFOLLOW) == 0)
		fd = openat(dfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return vs_error(e, EX_IOERR, errno, "%s", name);
	if (empty_dir(fd, name, e) < 0)
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
