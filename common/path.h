/* path.h: small path helpers. */
#ifndef VS_PATH_H
#define VS_PATH_H

#include <stdbool.h>

#include "err.h"

/* Split path into a directory ("." when there is none) and a last component,
 * both malloc'd; either out pointer may be NULL.  Trailing slashes are
 * ignored.  Returns -1 with errno set on failure. */
int path_split(const char *path, char **dir, char **base);

/* The absolute form of an output's path, whose directory must exist (the
 * last component need not): realpath(dir) + "/" + base.  malloc'd, or NULL
 * with e set (EX_CANTCREAT when the directory is missing). */
char *path_abs(const char *path, struct vs_err *e);

/* Whether s is a name for a workspace file (a disk, a host group):
 * letters, digits, '.', '_' and '-', not starting with '.' or '-', at most
 * 200 bytes. */
bool path_valid_name(const char *s);

/* dir + "/" + name, malloc'd; NULL on ENOMEM. */
char *path_join(const char *dir, const char *name);

#endif
