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

/* The name rule: whether s may name a workspace file (a VM and its disk,
 * a host group, a snapshot tag): letters, digits, '.', '_' and '-', not
 * starting with '.' or '-', 1 to 200 bytes.  Every name that becomes a path
 * passes it, so a name never reaches outside the workspace. */
bool path_valid_name(const char *s);

/* path_valid_name, or -1 with e set (EX_USAGE): "invalid WHAT name 'S':
 * ...", saying what the rule allows.  what is "VM", "group", "disk"...,
 * or "" for a name of no kind. */
int path_check_name(const char *what, const char *s, struct vs_err *e);

/* dir + "/" + name, malloc'd; NULL on ENOMEM. */
char *path_join(const char *dir, const char *name);

#endif
