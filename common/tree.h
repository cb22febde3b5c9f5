/* tree.h: removing directory trees without ever following a symlink, for
 * trees that untrusted layers built. */
#ifndef VS_TREE_H
#define VS_TREE_H

#include "err.h"

/* Raise the soft limit on open files to the hard one: a walk holds a
 * descriptor for each level of a tree, and a tree from an image can be
 * deeper than the usual soft limit of 1024. */
void tree_fd_limit(void);

/* Remove name (relative to directory fd dfd) and, when it is a directory,
 * everything beneath it.  Symlinks are removed, never followed; directories
 * without write permission are made writable first.  A missing name is not
 * an error. */
int tree_remove_at(int dfd, const char *name, struct vs_err *e);

/* The same for a path. */
int tree_remove(const char *path, struct vs_err *e);

/* Remove what a killed run left beside dir/base: the temporary outputs
 * .BASE.tmp-XXXXXX (files or trees) that atomic_open() and mkdtemp()
 * name.  Only for a caller that holds the output's lock, so that no other
 * run is writing them. */
void tree_remove_stale(const char *dir, const char *base);

#endif
