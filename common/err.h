/* err.h: the error struct that common/ fills in and main() reports.
 *
 * common/ never prints and never exits: a function that fails returns -1 (or
 * NULL) and describes the failure in a struct vs_err, with an exit status from
 * status.h.  Callers may add context on the way up (crun's libcrun_error_t). */
#ifndef VS_ERR_H
#define VS_ERR_H

#include "status.h"

struct vs_err {
	int code;		/* exit status, from status.h */
	int errnum;		/* errno behind it, or 0 */
	char msg[1024];
};

/* Fill in e: code, then a message from fmt, then ": strerror(errnum)" when
 * errnum is not 0.  Always returns -1, so that "return vs_error(...)" works. */
int vs_error(struct vs_err *e, int code, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Put "context: " in front of the message already in e.  Returns -1. */
int vs_error_prefix(struct vs_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The exit status that fits an errno from a failed write or create. */
int vs_code_for_errno(int errnum, int fallback);

#endif
