/* run.h: run a helper program (e2fsck, resize2fs, qemu-img) the way a tool
 * that owns stdout must: the child never writes to our stdout. */
#ifndef VS_RUN_H
#define VS_RUN_H

#include <stddef.h>

#include "err.h"

/* Find prog on $PATH, then in /usr/sbin and /sbin (which an ordinary user's
 * PATH lacks on Debian).  Returns a malloc'd path, or NULL with e set
 * (EX_UNAVAILABLE, naming the Debian package pkg). */
char *run_find(const char *prog, const char *pkg, struct vs_err *e);

/* Run argv (argv[0] a path) with stdin from /dev/null and stdout and stderr
 * captured; wait for it.  *status gets its exit status (128+n when killed by
 * signal n).  The last line the child wrote is copied to out (may be NULL).
 * Returns 0 when the child ran, -1 with e set when it could not be run. */
int run_capture(const char *const argv[], int *status, char *out, size_t outlen,
    struct vs_err *e);

/* Seconds on the monotonic clock: for deadlines and how long a helper
 * took. */
double run_clock(void);

#endif
