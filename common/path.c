#include "path.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"

int path_split(const char *path, char **dir, char **base)
{
	size_t len = strlen(path);
	const char *slash;
	char *d = NULL, *b = NULL;

	while (len > 1 && path[len - 1] == '/')
		len--;
	slash = NULL;
	for (size_t i = len; i > 0; i--)
		if (path[i - 1] == '/') {
			slash = path + i - 1;
			break;
		}
	if (slash == NULL) {
		d = strdup(".");
		b = strndup(path, len);
	} else if (slash == path) {
		d = strdup("/");
		b = strndup(slash + 1, len - 1);
	} else {
		d = strndup(path, (size_t)(slash - path));
		b = strndup(slash + 1, len - (size_t)(slash - path) - 1);
	}
	if (d == NULL || b == NULL) {
		free(d);
		free(b);
		errno = ENOMEM;
		return -1;
	}
	if (dir)
		*dir = d;
	else
		free(d);
	if (base)
		*base = b;
	else
		free(b);
	return 0;
}

char *path_join(const char *dir, const char *name)
{
	char *p;
	size_t dl = strlen(dir);

	if (asprintf(&p, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/",
	    name) < 0)
		return NULL;
	return p;
}

char *path_abs(const char *path, struct vs_err *e)
{
	cleanup_free char *dir = NULL, *base = NULL, *real = NULL;
	char *out;

	if (path_split(path, &dir, &base) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", path), NULL;
	real = realpath(dir, NULL);
	if (real == NULL)
		return vs_error(e, errno == EACCES ? EX_NOPERM : EX_CANTCREAT,
		    errno, "%s", dir), NULL;
	if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 ||
	    strcmp(base, "..") == 0) {
		/* The path names a directory itself. */
		cleanup_free char *full = realpath(path, NULL);
		if (full == NULL)
			return vs_error(e, EX_OSERR, errno, "%s", path), NULL;
		return steal_pointer(&full);
	}
	out = path_join(real, base);
	if (out == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path), NULL;
	return out;
}

bool path_valid_name(const char *s)
{
	if (*s == '\0' || *s == '.' || *s == '-' || strlen(s) > 200)
		return false;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr("._-", *s))
			return false;
	return true;
}

int path_check_name(const char *what, const char *s, struct vs_err *e)
{
	if (path_valid_name(s))
		return 0;
	return vs_error(e, EX_USAGE, 0,
	    "invalid %s%sname '%.64s%s': use 1 to 200 letters, digits, '.', '_' and '-', not starting with '.' or '-'",
	    what, *what ? " " : "", s, strlen(s) > 64 ? "..." : "");
}
