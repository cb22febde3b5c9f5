#include "layout.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic.h"
#include "cleanup.h"
#include "digest.h"
#include "doc.h"
#include "lock.h"
#include "path.h"
#include "ref.h"

#define INDEX_MAX (64u << 20)

static int mkdir_p1(const char *p, struct vs_err *e)
{
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s", p);
	return 0;
}

/* Write text to root/name unless it is there. */
static int write_new(const char *root, const char *name, const char *text,
    struct vs_err *e)
{
	cleanup_free char *p = path_join(root, name);
	struct atomic_file af;
	size_t len = strlen(text);
	struct stat st;

	if (p == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", name);
	if (stat(p, &st) == 0)
		return 0;
	if (atomic_open(&af, p, 0644, e) < 0)
		return -1;
	if (write(af.fd, text, len) != (ssize_t)len) {
		vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", p);
		atomic_abort(&af);
		return -1;
	}
	if (atomic_commit(&af, ATOMIC_NOREPLACE, e) < 0)
		return e->code == EX_CANTCREAT && stat(p, &st) == 0 ? 0 : -1;
	return 0;
}

int layout_open(struct oci_layout *l, const char *root, bool create,
    struct vs_err *e)
{
	cleanup_free char *blobs = NULL, *sha = NULL, *sha512 = NULL;
	cleanup_free char *layout = NULL;
	struct stat st;

	l->root = NULL;
	if (create && mkdir_p1(root, e) < 0)
		return -1;
	l->root = realpath(root, NULL);
	if (l->root == NULL)
		return vs_error(e, EX_NOINPUT, errno, "%s", root);
	layout = path_join(l->root, "oci-layout");
	blobs = path_join(l->root, "blobs");
	sha = path_join(l->root, "blobs/sha256");
	sha512 = path_join(l->root, "blobs/sha512");
	if (!layout || !blobs || !sha || !sha512) {
		layout_close(l);
		return vs_error(e, EX_OSERR, ENOMEM, "%s", root);
	}
	if (!create) {
		if (stat(layout, &st) < 0) {
			vs_error(e, EX_NOINPUT, 0,
			    "%s: not an OCI image layout (no oci-layout file)", root);
			layout_close(l);
			return -1;
		}
		return 0;
	}
	if (mkdir_p1(blobs, e) < 0 || mkdir_p1(sha, e) < 0 ||
	    mkdir_p1(sha512, e) < 0 ||
	    write_new(l->root, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}\n", e) < 0 ||
	    write_new(l->root, "index.json",
	    "{\"schemaVersion\":2,\"manifests\":[]}\n", e) < 0) {
		layout_close(l);
		return -1;
	}
	return 0;
}

void layout_close(struct oci_layout *l)
{
	free(l->root);
	l->root = NULL;
}

char *layout_blob_path(const struct oci_layout *l, const char *digest)
{
	char *p;

	if (!digest_valid(digest))
		return NULL;
	if (asprintf(&p, "%s/blobs/%.6s/%s", l->root, digest, digest + 7) < 0)
		return NULL;
	return p;
}

char *layout_rootfs_path(const struct oci_layout *l, const char *digest)
{
	char *p;

	if (!digest_valid(digest))
		return NULL;
	if (asprintf(&p, "%s/rootfs/%s", l->root, strchr(digest, ':') + 1) < 0)
		return NULL;
	return p;
}

bool layout_has_blob(const struct oci_layout *l, const char *digest,
    int64_t size)
{
	cleanup_free char *p = layout_blob_path(l, digest);
	struct stat st;

	return p && stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
	    (size < 0 || st.st_size == size);
}

int layout_put_blob(const struct oci_layout *l, const char *digest,
    const void *data, size_t len, struct vs_err *e)
{
	cleanup_free char *p = layout_blob_path(l, digest);
	char got[DIGEST_MAX];
	struct atomic_file af;
	const char *c = data;
	size_t left = len;

	if (p == NULL)
		return vs_error(e, EX_DATAERR, 0, "invalid digest '%.80s'", digest);
	if (digest_buffer(data, len, digest, got, e) < 0)
		return -1;
	if (strcmp(got, digest) != 0)
		return vs_error(e, EX_DATAERR, 0,
		    "digest mismatch: expected %s, got %s", digest, got);
	if (layout_has_blob(l, digest, (int64_t)len))
		return 0;
	if (atomic_open(&af, p, 0644, e) < 0)
		return -1;
	while (left > 0) {
		ssize_t n = write(af.fd, c, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", p);
			atomic_abort(&af);
			return -1;
		}
		c += n;
		left -= (size_t)n;
	}
	return atomic_commit(&af, ATOMIC_REPLACE, e);
}

char *layout_read_blob(const struct oci_layout *l, const char *digest,
    size_t max, size_t *len, struct vs_err *e)
{
	cleanup_free char *p = layout_blob_path(l, digest);
	cleanup_free char *buf = NULL;
	cleanup_fd int fd = -1;
	char got[DIGEST_MAX];
	struct stat st;
	size_t off = 0;

	if (p == NULL)
		return vs_error(e, EX_DATAERR, 0, "invalid digest '%.80s'", digest),
		    NULL;
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return vs_error(e, EX_NOINPUT, errno, "%s", p), NULL;
	if ((uint64_t)st.st_size > max)
		return vs_error(e, EX_DATAERR, 0, "%s: larger than %zu bytes", p,
		    max), NULL;
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", p), NULL;
	while (off < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return vs_error(e, EX_IOERR, n < 0 ? errno : 0, "%s", p), NULL;
		off += (size_t)n;
	}
	buf[off] = '\0';
	if (digest_buffer(buf, off, digest, got, e) < 0)
		return NULL;
	if (strcmp(got, digest) != 0)
		return vs_error(e, EX_DATAERR, 0,
		    "%s: corrupt: its digest is %s", p, got), NULL;
	*len = off;
	return steal_pointer(&buf);
}

int layout_lock(const struct oci_layout *l, struct vs_err *e)
{
	cleanup_free char *p = path_join(l->root, ".lock");

	if (p == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "lock");
	return lock_path(p, true, true, e);
}

static json_t *read_index(const struct oci_layout *l, struct vs_err *e);

int layout_use(const struct oci_layout *l, bool exclusive, bool wait,
    struct vs_err *e)
{
	cleanup_free char *p = path_join(l->root, ".use");
	int fd;

	if (p == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "lock");
	fd = lock_path(p, exclusive, wait, e);
	if (fd < 0 && !exclusive && (e->code == EX_CANTCREAT || e->code == EX_NOPERM)) {
		/* (a cache this user cannot write to: nor can it prune it;
		 * a reader needs no lock then) */
		e->code = 0;
		return -2;
	}
	return fd;
}

void layout_touch(const struct oci_layout *l, const char *manifest)
{
	cleanup_free char *dir = path_join(l->root, ".access");
	char *p = NULL;
	int fd;

	if (dir == NULL || !digest_valid(manifest) ||
	    asprintf(&p, "%s/%s", dir, strchr(manifest, ':') + 1) < 0)
		return;
	mkdir(dir, 0755);
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0) {
		futimens(fd, NULL);
		close(fd);
	}
	free(p);
}

json_t *layout_read_index(const struct oci_layout *l, struct vs_err *e)
{
	return read_index(l, e);
}

int layout_write_index(const struct oci_layout *l, const json_t *idx,
    struct vs_err *e)
{
	cleanup_free char *p = path_join(l->root, "index.json");
	struct atomic_file af;
	char *text;
	size_t len;

	if (p == NULL || (text = json_dumps(idx, JSON_COMPACT)) == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "index.json");
	len = strlen(text);
	if (atomic_open(&af, p, 0644, e) < 0) {
		free(text);
		return -1;
	}
	if (write(af.fd, text, len) != (ssize_t)len || write(af.fd, "\n", 1) != 1) {
		vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", p);
		free(text);
		atomic_abort(&af);
		return -1;
	}
	free(text);
	return atomic_commit(&af, ATOMIC_REPLACE, e);
}

static json_t *read_index(const struct oci_layout *l, struct vs_err *e)
{
	cleanup_free char *p = path_join(l->root, "index.json");
	json_error_t jerr;
	struct stat st;
	json_t *idx;

	if (p == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "index.json"), NULL;
	if (stat(p, &st) == 0 && st.st_size > INDEX_MAX)
		return vs_error(e, EX_DATAERR, 0, "%s: larger than %u bytes", p,
		    INDEX_MAX), NULL;
	idx = json_load_file(p, JSON_REJECT_DUPLICATES, &jerr);
	if (idx == NULL)
		return vs_error(e, EX_DATAERR, 0, "%s:%d:%d: %s", p, jerr.line,
		    jerr.column, jerr.text), NULL;
	if (!json_is_object(idx) ||
	    !json_is_array(json_object_get(idx, "manifests"))) {
		json_decref(idx);
		return vs_error(e, EX_DATAERR, 0,
		    "%s: not an OCI index (no manifests array)", p), NULL;
	}
	return idx;
}

static const char *ref_name_of(const json_t *desc)
{
	return json_string_value(json_object_get(json_object_get(desc,
	    "annotations"), REF_NAME_ANNOTATION));
}

int layout_set_ref(const struct oci_layout *l, const char *refname,
    const json_t *descriptor, const char *source, struct vs_err *e)
{
	cleanup_fd int lk = -1;
	cleanup_json json_t *idx = NULL;
	json_t *list, *desc, *ann;
	size_t i;

	lk = layout_lock(l, e);
	if (lk < 0)
		return -1;
	idx = read_index(l, e);
	if (idx == NULL)
		return -1;
	list = json_object_get(idx, "manifests");
	desc = json_deep_copy(descriptor);
	ann = json_object();
	if (desc == NULL || ann == NULL) {
		json_decref(desc);
		json_decref(ann);
		return vs_error(e, EX_OSERR, ENOMEM, "index.json");
	}
	json_object_update(ann, json_object_get(descriptor, "annotations"));
	json_object_set_new(ann, REF_NAME_ANNOTATION, json_string(refname));
	if (source)
		json_object_set_new(ann, REF_SOURCE_ANNOTATION, json_string(source));
	json_object_set_new(desc, "annotations", ann);
	for (i = 0; i < json_array_size(list); i++) {
		const char *n = ref_name_of(json_array_get(list, i));
		if (n && strcmp(n, refname) == 0)
			break;
	}
	if (i < json_array_size(list))
		json_array_set_new(list, i, desc);
	else
		json_array_append_new(list, desc);

	return layout_write_index(l, idx, e);
}

/* Whether an entry of index.json is a descriptor a reader can trust: a
 * valid digest, and a size that is a whole number of bytes. */
static int check_entry(const struct oci_layout *l, const char *refname,
    const json_t *d, struct vs_err *e)
{
	const char *dg = json_string_value(json_object_get(d, "digest"));
	json_t *sz = json_object_get(d, "size");
	char why[64];

	why[0] = '\0';
	if (!json_is_object(d))
		snprintf(why, sizeof why, "not an object");
	else if (!dg || !digest_valid(dg))
		snprintf(why, sizeof why, "no valid digest");
	else if (!json_is_integer(sz))
		snprintf(why, sizeof why, "no size");
	else if (json_integer_value(sz) < 0)
		snprintf(why, sizeof why, "a negative size (%lld)",
		    (long long)json_integer_value(sz));
	if (why[0])
		return vs_error(e, EX_DATAERR, 0,
		    "%s/index.json: the entry for %s is not a valid descriptor: it has %s",
		    l->root, refname, why);
	return 0;
}

json_t *layout_find_ref(const struct oci_layout *l, const char *refname,
    struct vs_err *e)
{
	cleanup_json json_t *idx = NULL;
	json_t *list;

	e->code = 0;
	idx = read_index(l, e);
	if (idx == NULL)
		return NULL;
	list = json_object_get(idx, "manifests");
	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *d = json_array_get(list, i);
		const char *n = ref_name_of(d);
		if (n && strcmp(n, refname) == 0)
			return check_entry(l, refname, d, e) < 0 ? NULL :
			    json_incref(d);
	}
	return NULL;
}
