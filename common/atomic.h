/* atomic.h: outputs appear whole or not at all (mblaze's mdeliver).
 *
 * atomic_open() creates a temporary file beside the final name
 * (".NAME.tmp-XXXXXX", O_CREAT|O_EXCL|O_CLOEXEC); the caller writes to fd;
 * atomic_commit() fsyncs it, renames it into place and fsyncs the directory;
 * atomic_abort() removes it.  While a temporary file exists its name is
 * registered, so that atomic_on_signals()' handlers can remove it when
 * SIGINT, SIGTERM, SIGHUP or SIGPIPE ends the program. */
#ifndef VS_ATOMIC_H
#define VS_ATOMIC_H

#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

struct atomic_file {
	char *path;	/* final name */
	char *tmp;	/* temporary name, NULL once committed or aborted */
	int fd;		/* open on tmp, read-write */
	int slot;	/* signal-cleanup slot, or -1 */
};

enum {
	ATOMIC_REPLACE = 0,	/* replace an existing final name */
	ATOMIC_NOREPLACE = 1,	/* fail with EX_CANTCREAT if it exists */
	/* no fsync: for a file whose content is already in the
	 * filesystem's journal, ahead of the rename (a reflink clone on
	 * XFS or btrfs, whose log commits transactions in order: if the
	 * name is there after a crash, so is all of the clone), or a
	 * record whose truth is elsewhere */
	ATOMIC_NOSYNC = 2,
};

/* Create the temporary file for path with permissions mode & ~umask. */
int atomic_open(struct atomic_file *af, const char *path, mode_t mode,
    struct vs_err *e);

/* fsync, rename into place (honouring flags), fsync the directory (no
 * fsync at all with ATOMIC_NOSYNC).  On
 * failure the temporary file is removed and the final name is untouched. */
int atomic_commit(struct atomic_file *af, int flags, struct vs_err *e);

/* Commit, replacing the final name, and keep the file it replaced as keep
 * (renamed, never copied: on the same filesystem) rather than losing it.
 * The two names are exchanged at once (RENAME_EXCHANGE), so that the final
 * name always holds a whole file; then the old one is renamed keep, which
 * must not exist.  *kept says whether there was a file to keep.  On
 * failure nothing is lost: e says where each file is. */
int atomic_commit_keep(struct atomic_file *af, const char *keep, int flags,
    bool *kept, struct vs_err *e);

/* Remove the temporary file; safe to call twice or after commit. */
void atomic_abort(struct atomic_file *af);

/* Install handlers that remove registered temporary files, then let the
 * signal do what it would have done. */
void atomic_on_signals(void);

/* fn runs first in those handlers (it must be async-signal-safe): what
 * else a tool must undo before it dies. */
void atomic_signal_hook(void (*fn)(void));

#endif
