/* fe.h: the tools' front end (bsdtar's libarchive_fe): the one part of
 * common/ that talks, and only to stderr.  Called from main() alone. */
#ifndef VS_FE_H
#define VS_FE_H

#include <stdbool.h>

#include "err.h"

#ifndef VS_VERSION
#define VS_VERSION "0.1.0"
#endif

/* Remember the program name (basename of argv[0]) for messages. */
void fe_init(const char *argv0);
const char *fe_progname(void);

/* "prog: message" on stderr. */
void fe_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Report e as "prog: message" and return its exit status. */
int fe_fail(const struct vs_err *e);

/* Report a command-line error and the synopsis; return EX_USAGE. */
int fe_usage_error(const char *synopsis, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* fe_fail, but an EX_USAGE failure is shown with the synopsis, as a
 * command-line error is. */
int fe_fail_usage(const char *synopsis, const struct vs_err *e);

/* Report what getopt_long refused: a missing value (getopt returned ':',
 * with optstring starting with ':') or an unknown option.  Returns EX_USAGE.
 * Call as fe_bad_option(SYNOPSIS, c, optopt, argv[optind - 1]). */
int fe_bad_option(const char *synopsis, int c, int opt, const char *arg);

/* "prog (vmstrap) VERSION" on stdout; returns 0. */
int fe_version(void);

/* Flush and close stdout; a failure (full disk, closed pipe) is reported and
 * turned into EX_IOERR.  Returns the status main() should exit with: status
 * itself when all went well. */
int fe_finish(int status);

/* Parse a whole decimal number in [min, max] (strtonum-style).  On failure
 * sets e (EX_USAGE, naming what) and returns -1. */
int fe_number(const char *s, long long min, long long max, long long *out,
    const char *what, struct vs_err *e);

#endif
