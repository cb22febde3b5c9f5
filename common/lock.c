#include "lock.h"
#include "stop.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int lock_path(const char *path, bool exclusive, bool wait, struct vs_err *e)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT),
		    errno, "%s", path);
	for (;;) {
		int saved;
		/* a stop asked for before or during the wait ends it */
		if (stop_signal) {
			close(fd);
			return vs_error(e, EX_TEMPFAIL, 0,
			    "%s: interrupted while waiting for the lock", path);
		}
		if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) |
		    (wait ? 0 : LOCK_NB)) == 0)
			break;
		saved = errno;
		if (saved == EINTR)
			continue;
		close(fd);
		if (saved == EWOULDBLOCK)
			return vs_error(e, EX_TEMPFAIL, 0,
			    "%s: locked by another process", path);
		return vs_error(e, EX_OSERR, saved, "%s: lock", path);
	}
	return fd;
}

int lock_output(const char *out, const char *lockpath, struct vs_err *e)
{
	int fd = lock_path(lockpath, true, true, e);

	if (fd >= 0)
		return fd;
	if (e->code == EX_TEMPFAIL)
		return vs_error(e, EX_TEMPFAIL, 0,
		    "%s: interrupted while waiting for the lock (another process is writing it)",
		    out);
	if (e->errnum == ENOENT || e->errnum == ENOTDIR)
		return vs_error(e, EX_CANTCREAT, e->errnum, "cannot create %s", out);
	if (e->errnum)
		return vs_error(e, vs_code_for_errno(e->errnum, EX_CANTCREAT),
		    e->errnum, "cannot create %s", out);
	return -1;
}

#ifdef F_OFD_GETLK
#define GETLK F_OFD_GETLK
#define SETLK F_OFD_SETLK
#else
#define GETLK F_GETLK
#define SETLK F_SETLK
#endif

int lock_conflict(int fd, long long start, long long len)
{
	struct flock fl;

	memset(&fl, 0, sizeof fl);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = start;
	fl.l_len = len;
	if (fcntl(fd, GETLK, &fl) < 0)
		return -1;
	if (fl.l_type != F_UNLCK)
		return 1;
	/* A writer may hold the file with flock(2) instead, which fcntl's
	 * locks do not see: a shared flock is refused only while someone
	 * holds it exclusively.  (Taken and dropped at once; fd is ours.) */
	if (flock(fd, LOCK_SH | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? 1 : -1;
	flock(fd, LOCK_UN);
	return 0;
}

int lock_qemu_writer(int fd)
{
	return lock_conflict(fd, 101, 1);
}

int lock_whole(int fd)
{
	struct flock fl;

	memset(&fl, 0, sizeof fl);
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(fd, SETLK, &fl) < 0)
		return -1;
	/* and against those who lock with flock(2) */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int saved = errno;
		fl.l_type = F_UNLCK;
		fcntl(fd, SETLK, &fl);
		errno = saved;
		return -1;
	}
	return 0;
}
