#include "fe.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *progname = "vmstrap";

void fe_init(const char *argv0)
{
	const char *slash;

	if (argv0 == NULL || *argv0 == '\0')
		return;
	slash = strrchr(argv0, '/');
	progname = slash ? slash + 1 : argv0;
}

const char *fe_progname(void)
{
	return progname;
}

/* Write s with control characters escaped, so that a message naming a
 * path with a newline in it stays on one line. */
static void put_escaped(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '\n')
			fputs("\\n", stderr);
		else if (c == '\t')
			fputs("\\t", stderr);
		else if (c < 0x20 || c == 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
}

void fe_warn(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: ", progname);
	put_escaped(msg);
	fputc('\n', stderr);
}

int fe_fail(const struct vs_err *e)
{
	fprintf(stderr, "%s: ", progname);
	put_escaped(e->msg);
	fputc('\n', stderr);
	return e->code ? e->code : EX_SOFTWARE;
}

int fe_usage_error(const char *synopsis, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: ", progname);
	put_escaped(msg);
	fprintf(stderr, "\nusage: %s\n", synopsis);
	return EX_USAGE;
}

int fe_fail_usage(const char *synopsis, const struct vs_err *e)
{
	if (e->code == EX_USAGE)
		return fe_usage_error(synopsis, "%s", e->msg);
	return fe_fail(e);
}

int fe_bad_option(const char *synopsis, int c, int opt, const char *arg)
{
	if (c == ':')
		return fe_usage_error(synopsis, "option %s needs a value", arg);
	if (opt)
		return fe_usage_error(synopsis, "unknown option '-%c'", opt);
	return fe_usage_error(synopsis, "unknown option '%s'", arg);
}

int fe_version(void)
{
	printf("%s (vmstrap) %s\n", progname, VS_VERSION);
	return 0;
}

int fe_finish(int status)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		int saved = errno;
		fclose(stdout);
		fprintf(stderr, "%s: stdout: %s\n", progname, strerror(saved));
		return status ? status : EX_IOERR;
	}
	if (fclose(stdout) != 0) {
		fprintf(stderr, "%s: stdout: %s\n", progname, strerror(errno));
		return status ? status : EX_IOERR;
	}
	return status;
}

int fe_number(const char *s, long long min, long long max, long long *out,
    const char *what, struct vs_err *e)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || !(*s == '-' || (*s >= '0' && *s <= '9')))
		return vs_error(e, EX_USAGE, 0,
		    "invalid %s '%s': expected a whole number from %lld to %lld",
		    what, s ? s : "", min, max);
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end != '\0' || errno == ERANGE || v < min || v > max)
		return vs_error(e, EX_USAGE, 0,
		    "invalid %s '%s': expected a whole number from %lld to %lld",
		    what, s, min, max);
	*out = v;
	return 0;
}
