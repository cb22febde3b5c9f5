/* lock.h: locks that guard shared state in a workspace, and the locks QEMU
 * takes on the images it runs, so that nothing replaces a running VM's disk.
 *
 * QEMU (raw and qcow2 drivers, since 2.10) takes open-file-description
 * (OFD) locks on bytes 100+n of an image for each permission n it holds
 * (0 consistent read, 1 write, 2 write-unchanged, 3 resize) and on bytes
 * 200+n for each it does not share.  Any lock on the file means a QEMU (or
 * another locker) has it open. */
#ifndef VS_LOCK_H
#define VS_LOCK_H

#include <stdbool.h>

#include "err.h"

/* flock() path (created if missing, mode 0644), exclusively or shared, waiting
 * or not.  Returns the descriptor that holds the lock, or -1 with e set
 * (EX_TEMPFAIL when nowait and the lock is taken, or when a stop is
 * requested (stop.h) while it waits). */
int lock_path(const char *path, bool exclusive, bool wait, struct vs_err *e);

/* lock_path(lockpath, exclusive, waiting) for a tool about to write out:
 * a failure is told in terms of out, which is what the user named
 * ("cannot create OUT: Permission denied", EX_CANTCREAT or EX_NOPERM),
 * not of a lock file the user never heard of. */
int lock_output(const char *out, const char *lockpath, struct vs_err *e);

/* 1 when a lock held through another open file on fd's file conflicts with
 * writing bytes [start, start+len) (len 0: to the end), or when another
 * holds the file with an exclusive flock(2) (a writer that locks that
 * way), 0 when none does, -1 with errno set when it cannot be told. */
int lock_conflict(int fd, long long start, long long len);

/* 1 when a QEMU holds fd's image with write permission, else as above. */
int lock_qemu_writer(int fd);

/* Take an OFD write lock on the whole of fd's file (fd open for writing),
 * so that a QEMU cannot start on it while we work, and an exclusive
 * flock(2) for those who lock that way.  Both are released when fd's last
 * descriptor is closed.  Returns 0, or -1 with errno set (EAGAIN/EACCES/
 * EWOULDBLOCK: someone else holds a lock). */
int lock_whole(int fd);

#endif
