/* lend.h: read permission lent in a rootless tree, and always given back.
 *
 * Rootless, a tree is its user's, and files an image makes unreadable to
 * their owner (/etc/shadow 0000, a 4111 sudo, a 0311 directory) are
 * unreadable to the user too: reading them means giving the owner read
 * (and, for a directory, search) permission for as long as they are read,
 * as umoci's rootless mode does, and taking it back after.
 *
 * What is lent is written to a journal beside the tree (TREE/../.NAME.lent)
 * before it is lent, and struck from it once given back.  A signal that
 * can be caught gives everything back at once (lend_give_back_all, from
 * the handler); one that cannot (SIGKILL, a crash, a power cut) leaves the
 * journal, and the next lend_begin on the tree replays it before anything
 * is read, so a lent mode never outlives the process that lent it into a
 * later build.  Lending is strictly nested (a directory is taken back
 * after what was lent inside it), which keeps the journal a stack.
 *
 * One tree at a time per process; the caller holds the tree's lock. */
#ifndef VS_LEND_H
#define VS_LEND_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "err.h"

/* Start reading tree (open as treefd): when lending (rootless) or when a
 * journal is there, lock the tree (flock, one reader of lent modes at a
 * time) and give back what a run that died left lent (its journal replayed
 * and removed).  Returns 0, or -1 with e set when the journal cannot be
 * read or replayed. */
int lend_begin(const char *tree, int treefd, bool lending, struct vs_err *e);

/* Lend name (in directory dfd, whose stat is st) what reading it needs,
 * when the owner lacks it: *was gets the mode to give back (with S_IFMT
 * set, so that 0 means "nothing lent").  Nothing is lent for what is not
 * the caller's, a symlink, or what is readable already.  Returns -1 with e
 * set when it cannot be journaled (then nothing is lent). */
int lend_read(int dfd, const char *name, const struct stat *st, mode_t *was,
    struct vs_err *e);

/* Give back what lend_read lent (nothing when was is 0) and strike it
 * from the journal.  Returns -1 with errno set when the mode could not be
 * given back (the journal then keeps it, for the next run). */
int lend_take_back(int dfd, const char *name, mode_t was);

/* Everything lent, given back now: async-signal-safe, for a handler. */
void lend_give_back_all(void);

/* Done with the tree: the journal, empty by now, is removed. */
void lend_end(void);

#endif
