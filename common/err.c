#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int vs_error(struct vs_err *e, int code, int errnum, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (e == NULL)
		return -1;
	e->code = code;
	e->errnum = errnum;
	va_start(ap, fmt);
	n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (errnum != 0 && (size_t)n < sizeof e->msg)
		snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s",
		    strerror(errnum));
	return -1;
}

int vs_error_prefix(struct vs_err *e, const char *fmt, ...)
{
	char head[512];
	size_t hl, ol;
	va_list ap;

	if (e == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(head, sizeof head, fmt, ap);
	va_end(ap);
	hl = strlen(head);
	ol = strnlen(e->msg, sizeof e->msg - 1);
	if (hl + 2 + ol > sizeof e->msg - 1)
		ol = sizeof e->msg - 1 - hl - 2;
	memmove(e->msg + hl + 2, e->msg, ol);
	memcpy(e->msg, head, hl);
	e->msg[hl] = ':';
	e->msg[hl + 1] = ' ';
	e->msg[hl + 2 + ol] = '\0';
	return -1;
}

int vs_code_for_errno(int errnum, int fallback)
{
	switch (errnum) {
	case ENOENT:
	case ENOTDIR:
		return EX_NOINPUT;
	case EACCES:
	case EPERM:
	case EROFS:
		return EX_NOPERM;
	case ENOSPC:
	case EDQUOT:
	case EIO:
	case EFBIG:
	case EPIPE:
		return EX_IOERR;
	case ENOMEM:
		return EX_OSERR;
	case EBUSY:
	case ETXTBSY:
	case EAGAIN:
		return EX_TEMPFAIL;
	default:
		return fallback;
	}
}
