#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "path.h"

/* Registered temporary names, for the signal handler: it may only look at
 * memory that is never freed, so the names live in a fixed table. */
#define SLOTS 8
static char slot_name[SLOTS][PATH_MAX];
static volatile sig_atomic_t slot_used[SLOTS];

static int slot_take(const char *name)
{
	if (strlen(name) >= PATH_MAX)
		return -1;
	for (int i = 0; i < SLOTS; i++) {
		if (!slot_used[i]) {
			strcpy(slot_name[i], name);
			slot_used[i] = 1;
			return i;
		}
	}
	return -1;
}

static void slot_drop(int i)
{
	if (i >= 0)
		slot_used[i] = 0;
}

static void (*volatile signal_hook)(void);

void atomic_signal_hook(void (*fn)(void))
{
	signal_hook = fn;
}

static void on_signal(int sig)
{
	int saved = errno;

	if (signal_hook)
		signal_hook();
	for (int i = 0; i < SLOTS; i++)
		if (slot_used[i])
			unlink(slot_name[i]);
	signal(sig, SIG_DFL);
	raise(sig);
	errno = saved;
}

void atomic_on_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaddset(&sa.sa_mask, sigs[i]);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		struct sigaction old;
		/* Leave alone a signal the caller's parent chose to ignore. */
		if (sigaction(sigs[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
}

int atomic_open(struct atomic_file *af, const char *path, mode_t mode,
    struct vs_err *e)
{
	char *dir = NULL, *base = NULL;
	mode_t mask;
	int fd;

	af->path = af->tmp = NULL;
	af->fd = -1;
	af->slot = -1;
	if (path_split(path, &dir, &base) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", path);
	if (asprintf(&af->tmp, "%s/.%s.tmp-XXXXXX", dir, base) < 0) {
		af->tmp = NULL;
		free(dir);
		free(base);
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path);
	}
	free(dir);
	free(base);
	af->path = strdup(path);
	if (af->path == NULL) {
		free(af->tmp);
		af->tmp = NULL;
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path);
	}
	fd = mkostemps(af->tmp, 0, O_CLOEXEC);
	if (fd < 0) {
		int saved = errno;
		free(af->tmp);
		free(af->path);
		af->tmp = af->path = NULL;
		return vs_error(e, saved == EACCES || saved == EPERM ||
		    saved == EROFS ? EX_NOPERM : saved == ENOSPC ||
		    saved == EDQUOT ? EX_IOERR : EX_CANTCREAT,
		    saved, "cannot create a file beside %s", path);
	}
	af->fd = fd;
	af->slot = slot_take(af->tmp);
	mask = umask(0);
	umask(mask);
	if (fchmod(fd, mode & ~mask) < 0) {
		int saved = errno;
		atomic_abort(af);
		return vs_error(e, EX_CANTCREAT, saved, "%s", path);
	}
	return 0;
}

/* rename(from, to) without replacing an existing "to". */
static int rename_noreplace(const char *from, const char *to)
{
#if defined(__linux__) && defined(RENAME_NOREPLACE)
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
#elif defined(__APPLE__) && defined(RENAME_EXCL)
	if (renamex_np(from, to, RENAME_EXCL) == 0)
		return 0;
	if (errno != ENOTSUP)
		return -1;
#endif
	/* A filesystem without it: link() refuses an existing name too. */
	if (link(from, to) < 0)
		return -1;
	unlink(from);
	return 0;
}

/* Fill e, remove the temporary file, return -1. */
static int commit_failed(struct atomic_file *af, int code, int err,
    struct vs_err *e)
{
	if (err == EEXIST)
		vs_error(e, EX_CANTCREAT, 0, "%s: already exists", af->path);
	else
		vs_error(e, vs_code_for_errno(err, code), err, "%s", af->path);
	atomic_abort(af);
	return -1;
}

/* Swap the names a and b at once; -1 with EINVAL where it cannot be. */
static int exchange(const char *a, const char *b)
{
#if defined(__linux__) && defined(RENAME_EXCHANGE)
	return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
#else
	(void)a; (void)b;
	errno = EINVAL;
	return -1;
#endif
}

static void sync_dir_of(const char *path)
{
	char *dir = NULL;
	int dfd;

	if (path_split(path, &dir, NULL) < 0)
		return;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(dir);
}

/* The temporary file flushed (unless ATOMIC_NOSYNC) and closed, before
 * it is renamed; on failure, removed. */
static int close_tmp(struct atomic_file *af, int flags, struct vs_err *e)
{
	int rc;

	if (af->tmp == NULL)
		return vs_error(e, EX_SOFTWARE, 0, "%s: committed twice",
		    af->path ? af->path : "?");
	if (!(flags & ATOMIC_NOSYNC) && fsync(af->fd) < 0)
		return commit_failed(af, EX_IOERR, errno, e);
	rc = close(af->fd);
	af->fd = -1;
	if (rc < 0)
		return commit_failed(af, EX_IOERR, errno, e);
	return 0;
}

int atomic_commit(struct atomic_file *af, int flags, struct vs_err *e)
{
	if (close_tmp(af, flags, e) < 0)
		return -1;
	if ((flags & ATOMIC_NOREPLACE) ? rename_noreplace(af->tmp, af->path)
	    : rename(af->tmp, af->path))
		return commit_failed(af, EX_CANTCREAT, errno, e);
	slot_drop(af->slot);
	af->slot = -1;
	free(af->tmp);
	af->tmp = NULL;
	/* Make the new name itself durable. */
	if (!(flags & ATOMIC_NOSYNC))
		sync_dir_of(af->path);
	free(af->path);
	af->path = NULL;
	return 0;
}

int atomic_commit_keep(struct atomic_file *af, const char *keep, int flags,
    bool *kept, struct vs_err *e)
{
	sigset_t block, old;
	int rc, err;

	*kept = false;
	if (close_tmp(af, flags, e) < 0)
		return -1;
	{
		struct stat st;
		if (lstat(keep, &st) == 0 || errno != ENOENT) {
			err = errno;
			if (lstat(keep, &st) == 0)
				vs_error(e, EX_CANTCREAT, 0, "%s: already exists", keep);
			else
				vs_error(e, vs_code_for_errno(err, EX_CANTCREAT), err,
				    "%s", keep);
			atomic_abort(af);
			return -1;
		}
	}
	/* Once exchanged, the temporary name holds the old file: no signal
	 * handler may remove it then. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGPIPE);
	sigprocmask(SIG_BLOCK, &block, &old);
	rc = exchange(af->tmp, af->path);
	if (rc < 0 && errno == ENOENT) {
		/* nothing to keep */
		rc = rename_noreplace(af->tmp, af->path);
		err = errno;
		if (rc == 0) {
			slot_drop(af->slot);
			af->slot = -1;
			free(af->tmp);
			af->tmp = NULL;
		}
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (rc < 0)
			return commit_failed(af, EX_CANTCREAT, err, e);
		goto synced;
	}
	if (rc < 0 && (errno == EINVAL || errno == ENOSYS)) {
		/* (no exchange on that filesystem: the old file is renamed
		 * first; for a moment there is no file under the name, but
		 * never a file lost) */
		if (rename_noreplace(af->path, keep) < 0) {
			err = errno;
			sigprocmask(SIG_SETMASK, &old, NULL);
			vs_error(e, err == EEXIST ? EX_CANTCREAT :
			    vs_code_for_errno(err, EX_CANTCREAT), err == EEXIST ? 0 : err,
			    err == EEXIST ? "%s: already exists" : "%s", keep);
			atomic_abort(af);
			return -1;
		}
		*kept = true;
		if (rename(af->tmp, af->path) < 0) {
			err = errno;
			rename(keep, af->path);
			*kept = false;
			sigprocmask(SIG_SETMASK, &old, NULL);
			return commit_failed(af, EX_CANTCREAT, err, e);
		}
		slot_drop(af->slot);
		af->slot = -1;
		free(af->tmp);
		af->tmp = NULL;
		sigprocmask(SIG_SETMASK, &old, NULL);
		goto synced;
	}
	if (rc < 0) {
		err = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		return commit_failed(af, EX_CANTCREAT, err, e);
	}
	/* the temporary name is the old file's now: never removed */
	if (rename_noreplace(af->tmp, keep) < 0) {
		err = errno;
		/* swapped back, the new file removed: as it was */
		if (exchange(af->tmp, af->path) == 0) {
			sigprocmask(SIG_SETMASK, &old, NULL);
			vs_error(e, err == EEXIST ? EX_CANTCREAT :
			    vs_code_for_errno(err, EX_CANTCREAT), err == EEXIST ? 0 : err,
			    err == EEXIST ? "%s: already exists" : "%s", keep);
			atomic_abort(af);
			return -1;
		}
		slot_drop(af->slot);
		af->slot = -1;
		sigprocmask(SIG_SETMASK, &old, NULL);
		vs_error(e, vs_code_for_errno(err, EX_CANTCREAT), err,
		    "%s is in place; the file it replaced is %s, not renamed %s",
		    af->path, af->tmp, keep);
		free(af->tmp);
		af->tmp = NULL;
		free(af->path);
		af->path = NULL;
		return -1;
	}
	slot_drop(af->slot);
	af->slot = -1;
	*kept = true;
	free(af->tmp);
	af->tmp = NULL;
	sigprocmask(SIG_SETMASK, &old, NULL);
synced:
	if (!(flags & ATOMIC_NOSYNC)) {
		sync_dir_of(af->path);
		if (*kept)
			sync_dir_of(keep);
	}
	free(af->path);
	af->path = NULL;
	return 0;
}

void atomic_abort(struct atomic_file *af)
{
	if (af->fd >= 0) {
		close(af->fd);
		af->fd = -1;
	}
	if (af->tmp != NULL) {
		unlink(af->tmp);
		free(af->tmp);
		af->tmp = NULL;
	}
	slot_drop(af->slot);
	af->slot = -1;
	free(af->path);
	af->path = NULL;
}
