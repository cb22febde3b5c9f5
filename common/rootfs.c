/* rootfs.c: the tree a tool reads, and its digest (rootfs.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "doc.h"
#include "ref.h"
#include "rootfs.h"
#include "stamp.h"

int rootfs_of(const json_t *doc, const char *operand, const char *hint,
    struct rootfs *r, struct vs_err *e)
{
	const char *tree = operand, *dg = NULL;
	json_t *rootless = NULL;
	cleanup_json json_t *stamp = NULL;
	struct stat st;

	r->tree = NULL;
	if (tree == NULL) {
		tree = doc_need_str(doc, "rootfs", "path", hint, e);
		if (tree == NULL)
			return -1;
		dg = json_string_value(json_object_get(json_object_get(doc,
		    "rootfs"), "digest"));
		rootless = json_object_get(json_object_get(doc, "rootfs"),
		    "rootless");
	}
	r->tree = realpath(tree, NULL);
	if (r->tree == NULL || stat(r->tree, &st) < 0)
		return vs_error(e, EX_NOINPUT, errno, "%s", tree);
	if (!S_ISDIR(st.st_mode))
		return vs_error(e, EX_DATAERR, 0, "%s is not a directory", tree);
	if (operand) {	/* what oci-unpack recorded about it */
		stamp = stamp_read(r->tree);
		if (stamp) {
			dg = json_string_value(json_object_get(stamp, "digest"));
			rootless = json_object_get(stamp, "rootless");
		}
	}
	if (dg && !digest_valid(dg))
		return vs_error(e, EX_DATAERR, 0,
		    "rootfs.digest in the document is not a digest: %s", dg);
	snprintf(r->digest, sizeof r->digest, "%s", dg ? dg : "");
	r->rootless = json_is_true(rootless);
	r->told = rootless != NULL;
	return 0;
}

void rootfs_free(struct rootfs *r)
{
	free(r->tree);
	r->tree = NULL;
}
