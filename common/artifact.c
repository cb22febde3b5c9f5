/* artifact.c: the disk artifact's config, read and checked. */
#include "artifact.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doc.h"
#include "ref.h"

bool artifact_is(const json_t *m)
{
	const char *at = json_string_value(json_object_get(m, "artifactType"));
	const char *ct = json_string_value(json_object_get(json_object_get(m,
	    "config"), "mediaType"));

	return (at && strcmp(at, ART_TYPE) == 0) || (ct && strcmp(ct, ART_CONFIG) == 0);
}

static void copy_digest(char *out, const json_t *v)
{
	const char *s = json_string_value(v);

	snprintf(out, DIGEST_MAX, "%s", s && digest_valid(s) ? s : "");
}

int artifact_parse(const char *body, size_t len, struct artifact *a,
    struct vs_err *e)
{
	cleanup_json json_t *j = NULL;
	json_error_t jerr;
	json_t *chunks, *v;
	uint64_t at = 0;

	memset(a, 0, sizeof *a);
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(j))
		return vs_error(e, EX_DATAERR, 0,
		    "the disk artifact's config is not JSON (byte %d: %s)",
		    jerr.position, jerr.text);
	if (json_integer_value(json_object_get(j, "vmstrap")) != 1)
		return vs_error(e, EX_DATAERR, 0,
		    "the disk artifact's config is of another version than 1");
	a->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
	a->chunk_size = (uint64_t)json_integer_value(json_object_get(j, "chunk_size"));
	chunks = json_object_get(j, "chunks");
	if (!json_is_integer(json_object_get(j, "size")) ||
	    json_integer_value(json_object_get(j, "size")) <= 0 ||
	    a->chunk_size < 4096 || a->chunk_size > (UINT64_C(1) << 32) ||
	    a->chunk_size % 4096 || !json_is_array(chunks) ||
	    json_array_size(chunks) != (a->size + a->chunk_size - 1) / a->chunk_size)
		return vs_error(e, EX_DATAERR, 0,
		    "the disk artifact's config has no valid size, chunk_size and chunks");
	a->n = json_array_size(chunks);
	a->c = calloc(a->n, sizeof *a->c);
	if (a->c == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "artifact");
	for (size_t i = 0; i < a->n; i++) {
		json_t *c = json_array_get(chunks, i);
		struct art_chunk *k = &a->c[i];
		const char *blob = json_string_value(json_object_get(c, "blob"));
		uint64_t want = a->size - at < a->chunk_size ? a->size - at : a->chunk_size;

		k->off = (uint64_t)json_integer_value(json_object_get(c, "offset"));
		k->len = (uint64_t)json_integer_value(json_object_get(c, "length"));
		copy_digest(k->digest, json_object_get(c, "digest"));
		if (blob && strcmp(blob, "zero") == 0)
			k->blob[0] = '\0';
		else if (blob && digest_valid(blob))
			snprintf(k->blob, sizeof k->blob, "%s", blob);
		else
			blob = NULL;
		if (k->off != at || k->len != want || !k->digest[0] || blob == NULL) {
			artifact_free(a);
			return vs_error(e, EX_DATAERR, 0,
			    "the disk artifact's chunk %zu is not valid (offset, length, digest, blob)",
			    i);
		}
		at += k->len;
	}
	v = json_object_get(j, "filesystem");
	if (json_string_value(json_object_get(v, "uuid")))
		snprintf(a->uuid, sizeof a->uuid, "%s",
		    json_string_value(json_object_get(v, "uuid")));
	copy_digest(a->source, json_object_get(j, "source"));
	v = json_object_get(j, "kernel");
	copy_digest(a->kernel, json_object_get(v, "digest"));
	if (json_string_value(json_object_get(v, "format")))
		snprintf(a->kformat, sizeof a->kformat, "%s",
		    json_string_value(json_object_get(v, "format")));
	if (json_string_value(json_object_get(v, "version")))
		snprintf(a->kversion, sizeof a->kversion, "%s",
		    json_string_value(json_object_get(v, "version")));
	if (json_string_value(json_object_get(v, "arch")))
		snprintf(a->karch, sizeof a->karch, "%s",
		    json_string_value(json_object_get(v, "arch")));
	copy_digest(a->initrd, json_object_get(json_object_get(j, "initrd"), "digest"));
	return 0;
}

void artifact_free(struct artifact *a)
{
	free(a->c);
	a->c = NULL;
	a->n = 0;
}

const char *artifact_zero_digest(uint64_t n)
{
	static char d[DIGEST_MAX];
	static uint64_t have = UINT64_MAX;
	static unsigned char z[1u << 16];
	struct digester dg;
	struct vs_err ignore;

	if (n == have)
		return d;
	if (digester_init(&dg, "sha256", &ignore) < 0)
		return "";
	for (uint64_t left = n; left > 0; ) {
		size_t k = left < sizeof z ? (size_t)left : sizeof z;
		digester_update(&dg, z, k);
		left -= k;
	}
	digester_final(&dg, d);
	have = n;
	return d;
}
