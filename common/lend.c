#include "lend.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "cleanup.h"
#include "path.h"

/* A journal record: the mode to give back, in octal, a space, the entry's
 * path relative to the tree, a NUL.  Paths may hold any byte but NUL. */
#define JOURNAL_MAX (UINT64_C(64) << 20)

/* What is lent now: a stack the signal handler gives back before the
 * process dies.  It only grows with signals blocked, so the handler never
 * sees it moved. */
struct lent {
	int dfd;
	const char *name;	/* lives until the entry is given back */
	mode_t was;
	off_t at;		/* where its journal record starts */
};
static struct lent *lent_v;
static size_t lent_cap;
static volatile sig_atomic_t lent_n;

static char *tree_real;		/* the tree, as realpath gives it */
static char *journal;		/* its journal's path */
static volatile sig_atomic_t journal_fd = -1;
static bool journal_keep;	/* a give-back failed: leave the journal */

static char *journal_path(const char *tree)
{
	cleanup_free char *dir = NULL, *base = NULL;
	char *p;

	if (path_split(tree, &dir, &base) < 0 ||
	    asprintf(&p, "%s/.%s.lent", dir, base) < 0)
		return NULL;
	return p;
}

/* Open a directory beneath treefd along rel, component by component, never
 * through a symbolic link; *last points at the last component. */
static int open_parent(int treefd, char *rel, char **last)
{
	int fd = dup(treefd);
	char *p = rel, *slash;

	while (fd >= 0 && (slash = strchr(p, '/')) != NULL) {
		int next;
		*slash = '\0';
		next = *p ? openat(fd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC) : dup(fd);
		*slash = '/';
		close(fd);
		fd = next;
		p = slash + 1;
	}
	*last = p;
	return fd;
}

/* Replay a journal a dead run left: newest record first, so that a
 * directory is given back after what was lent inside it. */
static int replay(const char *tree, int treefd, struct vs_err *e)
{
	cleanup_fd int fd = open(journal, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	cleanup_free char *buf = NULL;
	cleanup_free char **rec = NULL;
	size_t len = 0, n = 0, cap = 0;
	struct stat st;

	if (fd < 0)
		return errno == ENOENT ? 0 : vs_error(e, EX_IOERR, errno, "%s",
		    journal);
	if (fstat(fd, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", journal);
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > JOURNAL_MAX)
		return vs_error(e, EX_DATAERR, 0,
		    "%s: not a journal of lent modes: remove it by hand", journal);
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", journal);
	while (len < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + len, (size_t)st.st_size - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return vs_error(e, EX_IOERR, errno, "%s", journal);
		if (r == 0)
			break;
		len += (size_t)r;
	}
	/* (a record cut short, by a kill between its bytes, is dropped: its
	 * entry was not lent yet) */
	for (size_t i = 0; i < len; ) {
		char *end = memchr(buf + i, '\0', len - i);
		if (end == NULL)
			break;
		if (n == cap) {
			char **nr = realloc(rec, (cap = cap ? cap * 2 : 16) * sizeof *rec);
			if (nr == NULL)
				return vs_error(e, EX_OSERR, ENOMEM, "%s", journal);
			rec = nr;
		}
		rec[n++] = buf + i;
		i = (size_t)(end - buf) + 1;
	}
	while (n-- > 0) {
		char *sp, *last;
		unsigned long mode;
		int dfd;

		errno = 0;
		mode = strtoul(rec[n], &sp, 8);
		if (sp == rec[n] || *sp != ' ' || mode > 07777 || sp[1] == '\0')
			return vs_error(e, EX_DATAERR, 0,
			    "%s: a malformed record: remove it by hand once %s has its modes",
			    journal, tree);
		dfd = open_parent(treefd, sp + 1, &last);
		if (dfd < 0 || fstatat(dfd, last, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			int saved = errno;
			if (dfd >= 0)
				close(dfd);
			if (saved == ENOENT || saved == ENOTDIR || saved == ELOOP)
				continue;	/* (gone since: nothing to give back) */
			return vs_error(e, EX_IOERR, saved,
			    "%s: cannot give %s/%s back its mode %04lo", journal,
			    tree, sp + 1, mode);
		}
		if (!S_ISLNK(st.st_mode) && fchmodat(dfd, last, (mode_t)mode, 0) < 0) {
			int saved = errno;
			close(dfd);
			return vs_error(e, EX_IOERR, saved,
			    "%s: cannot give %s/%s back its mode %04lo", journal,
			    tree, sp + 1, mode);
		}
		close(dfd);
	}
	if (unlink(journal) < 0 && errno != ENOENT)
		return vs_error(e, EX_IOERR, errno, "%s", journal);
	return 0;
}

int lend_begin(const char *tree, int treefd, bool lending,
    struct vs_err *e)
{
	lend_end();
	/* (beside the tree's real path: the same journal by any name) */
	tree_real = realpath(tree, NULL);
	journal = tree_real ? journal_path(tree_real) : NULL;
	if (journal == NULL || tree_real == NULL)
		return vs_error(e, errno == ENOMEM ? EX_OSERR : EX_IOERR, errno,
		    "%s", tree);
	if (!lending && access(journal, F_OK) < 0 && errno == ENOENT)
		return 0;
	while (flock(treefd, LOCK_EX) < 0)
		if (errno != EINTR)
			return vs_error(e, EX_OSERR, errno, "%s: lock", tree);
	return replay(tree, treefd, e);
}

/* The entry's path relative to the tree, from where the kernel says its
 * directory is. */
static char *rel_path(int dfd, const char *name)
{
	char link[64], dir[PATH_MAX + 1];
	size_t tl = strlen(tree_real);
	ssize_t n;
	char *p;

	snprintf(link, sizeof link, "/proc/self/fd/%d", dfd);
	n = readlink(link, dir, sizeof dir - 1);
	if (n < 0)
		return NULL;
	if ((size_t)n >= sizeof dir - 1)
		return errno = ENAMETOOLONG, NULL;
	dir[n] = '\0';
	if (strncmp(dir, tree_real, tl) != 0 || (dir[tl] != '\0' && dir[tl] != '/'))
		return errno = EXDEV, NULL;	/* (not beneath the tree) */
	if (asprintf(&p, "%s%s%s", dir[tl] ? dir + tl + 1 : "", dir[tl] ? "/" : "",
	    name) < 0)
		return NULL;
	return p;
}

static int journal_append(int dfd, const char *name, mode_t was, off_t *at)
{
	cleanup_free char *rel = rel_path(dfd, name), *rec = NULL;
	int n;

	if (rel == NULL)
		return -1;
	if (journal_fd < 0) {
		int fd = open(journal, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
		if (fd < 0)
			return -1;
		journal_fd = fd;
	}
	n = asprintf(&rec, "%o %s", (unsigned)(was & 07777), rel);
	if (n < 0)
		return -1;
	*at = lseek(journal_fd, 0, SEEK_END);
	if (*at < 0)
		return -1;
	/* the NUL too: a record is whole only with its end */
	for (size_t done = 0; done < (size_t)n + 1; ) {
		ssize_t w = pwrite(journal_fd, rec + done, (size_t)n + 1 - done,
		    *at + (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			int saved = errno;
			(void)!ftruncate(journal_fd, *at);
			errno = saved;
			return -1;
		}
		done += (size_t)w;
	}
	return 0;
}

int lend_read(int dfd, const char *name, const struct stat *st, mode_t *was,
    struct vs_err *e)
{
	mode_t need = S_ISDIR(st->st_mode) ? 0500 : 0400;
	off_t at;

	*was = 0;
	if (S_ISLNK(st->st_mode) || st->st_uid != geteuid() ||
	    (st->st_mode & need) == need)
		return 0;
	if (journal == NULL)
		return vs_error(e, EX_SOFTWARE, 0, "%s: lent before lend_begin", name);
	if ((size_t)lent_n == lent_cap) {
		sigset_t all, old;
		struct lent *nv;
		sigfillset(&all);
		sigprocmask(SIG_BLOCK, &all, &old);
		nv = realloc(lent_v, (lent_cap ? lent_cap * 2 : 64) * sizeof *nv);
		if (nv) {
			lent_v = nv;
			lent_cap = lent_cap ? lent_cap * 2 : 64;
		}
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (nv == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "lend");
	}
	/* recorded first: a kill after this point finds the record */
	if (journal_append(dfd, name, st->st_mode, &at) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "%s: cannot record in %s the mode lent for reading", name,
		    journal);
	lent_v[lent_n] = (struct lent){ dfd, name, (st->st_mode & 07777) | S_IFMT, at };
	lent_n = lent_n + 1;
	if (fchmodat(dfd, name, (st->st_mode & 07777) | need, 0) < 0) {
		lent_n = lent_n - 1;
		/* (should the record stay, it is of a mode never lent:
		 * giving it back is harmless) */
		(void)!ftruncate(journal_fd, at);
		return 0;	/* (then reading it fails, and says so) */
	}
	*was = (st->st_mode & 07777) | S_IFMT;	/* S_IFMT: 0 is a mode too */
	return 0;
}

int lend_take_back(int dfd, const char *name, mode_t was)
{
	int rc = 0;

	if (!was)
		return 0;
	if (fchmodat(dfd, name, was & 07777, 0) < 0)
		rc = -1;
	if (lent_n > 0) {
		lent_n = lent_n - 1;
		/* struck from the journal only once given back (a failed
		 * give-back stays there for the next run to try) */
		if (rc == 0 && journal_fd >= 0 &&
		    ftruncate(journal_fd, lent_v[lent_n].at) < 0)
			rc = -1;
	}
	if (rc < 0)
		journal_keep = true;
	return rc;
}

void lend_give_back_all(void)
{
	bool all = true;

	for (sig_atomic_t i = lent_n; i-- > 0; )
		if (fchmodat(lent_v[i].dfd, lent_v[i].name,
		    lent_v[i].was & 07777, 0) < 0)
			all = false;	/* (the journal keeps it) */
	if (all && journal_fd >= 0 && journal)
		unlink(journal);
	lent_n = 0;
}

void lend_end(void)
{
	if (journal_fd >= 0) {
		close(journal_fd);
		journal_fd = -1;
		/* (an empty journal: everything was given back) */
		if (lent_n == 0 && !journal_keep && journal)
			unlink(journal);
	}
	journal_keep = false;
	free(journal);
	free(tree_real);
	journal = tree_real = NULL;
	free(lent_v);
	lent_v = NULL;
	lent_cap = 0;
	lent_n = 0;
}
