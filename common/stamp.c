/* stamp.c: records beside outputs, tied to them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "cleanup.h"
#include "doc.h"
#include "path.h"
#include "stamp.h"

char *stamp_path(const char *target)
{
	cleanup_free char *dir = NULL, *base = NULL;
	char *p;

	if (path_split(target, &dir, &base) < 0 ||
	    asprintf(&p, "%s/.%s.json", dir, base) < 0)
		return NULL;
	return p;
}

/* ino, btime (0 when unknown) and mtime, in nanoseconds. */
static int tie_of(const char *target, json_int_t tie[3])
{
	struct statx stx;

	if (statx(AT_FDCWD, target, AT_SYMLINK_NOFOLLOW,
	    STATX_INO | STATX_BTIME | STATX_MTIME, &stx) < 0)
		return -1;
	tie[0] = (json_int_t)stx.stx_ino;
	tie[1] = stx.stx_mask & STATX_BTIME ? (json_int_t)stx.stx_btime.tv_sec *
	    1000000000 + stx.stx_btime.tv_nsec : 0;
	tie[2] = (json_int_t)stx.stx_mtime.tv_sec * 1000000000 +
	    stx.stx_mtime.tv_nsec;
	return 0;
}

static const char *const tie_keys[3] = { "ino", "btime_ns", "mtime_ns" };

json_t *stamp_read(const char *target)
{
	cleanup_free char *p = stamp_path(target);
	json_t *j = p ? json_load_file(p, 0, NULL) : NULL;
	json_int_t tie[3];

	if (!json_is_object(j) || tie_of(target, tie) < 0)
		goto no;
	for (int i = 0; i < 3; i++) {
		json_t *v = json_object_get(j, tie_keys[i]);
		if (!json_is_integer(v) || json_integer_value(v) != tie[i])
			goto no;
	}
	return j;
no:
	json_decref(j);
	return NULL;
}

int stamp_write(const char *target, const json_t *rec, struct vs_err *e)
{
	cleanup_free char *p = stamp_path(target);
	cleanup_free char *text = NULL;
	cleanup_json json_t *j = json_deep_copy(rec);
	struct atomic_file af;
	json_int_t tie[3];
	size_t len;

	if (p == NULL || j == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", target);
	if (tie_of(target, tie) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", target);
	for (int i = 0; i < 3; i++)
		json_object_set_new(j, tie_keys[i], json_integer(tie[i]));
	text = json_dumps(j, JSON_COMPACT);
	if (text == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", p);
	len = strlen(text);
	if (atomic_open(&af, p, 0644, e) < 0)
		return -1;
	if (write(af.fd, text, len) != (ssize_t)len || write(af.fd, "\n", 1) != 1) {
		vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", p);
		atomic_abort(&af);
		return -1;
	}
	return atomic_commit(&af, ATOMIC_REPLACE, e);
}
