/* image.c: an image in the OCI cache: manifest, config, layers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "cleanup.h"
#include "doc.h"
#include "image.h"
#include "ref.h"

#define MANIFEST_LIMIT (4u << 20)
#define CONFIG_LIMIT (16u << 20)

int image_check_descriptor(const json_t *d, const char *what,
    struct vs_err *e)
{
	const char *dg = json_string_value(json_object_get(d, "digest"));
	json_t *sz = json_object_get(d, "size");

	if (!json_is_object(d) || !dg || !digest_valid(dg) ||
	    !json_is_integer(sz) ||
	    !json_is_string(json_object_get(d, "mediaType")))
		return vs_error(e, EX_DATAERR, 0,
		    "invalid manifest: %s is not a descriptor with mediaType, digest and size",
		    what);
	if (json_integer_value(sz) < 0)
		return vs_error(e, EX_DATAERR, 0,
		    "invalid manifest: %s (%s) has a negative size (%lld)", what,
		    dg, (long long)json_integer_value(sz));
	return 0;
}

json_t *image_parse_manifest(const char *body, size_t len, const char *what,
    struct vs_err *e)
{
	json_error_t jerr;
	json_t *m = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *layers;

	if (m == NULL || !json_is_object(m)) {
		json_decref(m);
		return vs_error(e, EX_DATAERR, 0,
		    "invalid manifest for %s at byte %d: %s", what, jerr.position,
		    m ? "not an object" : jerr.text), NULL;
	}
	if (json_is_array(json_object_get(m, "manifests"))) {
		vs_error(e, EX_DATAERR, 0,
		    "%s is an image index, not a manifest: fetch one platform of it with oci-fetch -p",
		    what);
		goto bad;
	}
	if (image_check_descriptor(json_object_get(m, "config"), "config", e) < 0)
		goto bad;
	layers = json_object_get(m, "layers");
	if (!json_is_array(layers)) {
		vs_error(e, EX_DATAERR, 0, "invalid manifest for %s: no layers array",
		    what);
		goto bad;
	}
	for (size_t i = 0; i < json_array_size(layers); i++)
		if (image_check_descriptor(json_array_get(layers, i), "a layer",
		    e) < 0)
			goto bad;
	return m;
bad:
	json_decref(m);
	return NULL;
}

enum layer_compression image_layer_compression(const char *mt)
{
	static const struct {
		const char *type;
		enum layer_compression c;
	} known[] = {
		{ "application/vnd.oci.image.layer.v1.tar", LAYER_TAR },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", LAYER_TAR },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar", LAYER_TAR },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_GZIP },
		{ "application/vnd.docker.image.rootfs.diff.tar.zstd", LAYER_ZSTD },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_GZIP },
	};

	for (size_t i = 0; mt && i < sizeof known / sizeof known[0]; i++)
		if (strcmp(mt, known[i].type) == 0)
			return known[i].c;
	return LAYER_UNSUPPORTED;
}

static int descriptor_digest(const json_t *d, const char *where,
    char out[DIGEST_MAX], struct vs_err *e)
{
	const char *dg = json_string_value(json_object_get(d, "digest"));
	const char *mt = json_string_value(json_object_get(d, "mediaType"));

	if (!dg || !digest_valid(dg))
		return vs_error(e, EX_DATAERR, 0,
		    "%s is not a valid descriptor", where);
	if (mt && (strcmp(mt, MT_OCI_INDEX) == 0 ||
	    strcmp(mt, MT_DOCKER_LIST) == 0))
		return vs_error(e, EX_DATAERR, 0,
		    "%s is an image index, not a manifest: fetch one platform of it with oci-fetch -p",
		    where);
	snprintf(out, DIGEST_MAX, "%s", dg);
	return 0;
}

int image_resolve(const struct oci_layout *l, const char *ref,
    char out[DIGEST_MAX], struct vs_err *e)
{
	cleanup_json json_t *d = NULL;
	struct oci_ref r;
	struct vs_err ignored;
	char where[700];

	if (digest_valid(ref)) {
		if (!layout_has_blob(l, ref, -1))
			return vs_error(e, EX_NOINPUT, 0,
			    "%s is not in the cache %s", ref, l->root);
		snprintf(out, DIGEST_MAX, "%s", ref);
		return 0;
	}
	d = layout_find_ref(l, ref, e);
	if (d == NULL && e->code)
		return -1;
	if (d == NULL && ref_parse(ref, &r, &ignored) == 0 &&
	    strcmp(r.name, ref) != 0) {
		d = layout_find_ref(l, r.name, e);
		if (d == NULL && e->code)
			return -1;
	}
	if (d == NULL)
		return vs_error(e, EX_NOINPUT, 0,
		    "%s is not in the cache %s: fetch it with oci-fetch", ref,
		    l->root);
	snprintf(where, sizeof where, "%s/index.json: the entry for %s",
	    l->root, ref);
	return descriptor_digest(d, where, out, e);
}

/* The config's rootfs.diff_ids, checked against the layer count. */
static int load_diff_ids(const struct oci_layout *l, struct image *img,
    struct vs_err *e)
{
	cleanup_free char *body = NULL;
	cleanup_json json_t *cfg = NULL;
	json_error_t jerr;
	json_t *rootfs, *ids;
	const char *type;
	size_t len;

	body = layout_read_blob(l, img->config, CONFIG_LIMIT, &len, e);
	if (body == NULL)
		return vs_error_prefix(e, "config of %s", img->manifest);
	cfg = json_loadb(body, len, 0, &jerr);
	if (!json_is_object(cfg))
		return vs_error(e, EX_DATAERR, 0,
		    "invalid config %s at byte %d: %s", img->config,
		    jerr.position, cfg ? "not an object" : jerr.text);
	rootfs = json_object_get(cfg, "rootfs");
	type = json_string_value(json_object_get(rootfs, "type"));
	ids = json_object_get(rootfs, "diff_ids");
	if (!type || strcmp(type, "layers") != 0 || !json_is_array(ids))
		return vs_error(e, EX_DATAERR, 0,
		    "invalid config %s: rootfs is not {\"type\":\"layers\",\"diff_ids\":[...]}",
		    img->config);
	if (json_array_size(ids) != img->nlayers)
		return vs_error(e, EX_DATAERR, 0,
		    "invalid image %s: %zu layers but %zu diff_ids in its config",
		    img->manifest, img->nlayers, json_array_size(ids));
	for (size_t i = 0; i < img->nlayers; i++) {
		const char *id = json_string_value(json_array_get(ids, i));
		if (!id || !digest_valid(id))
			return vs_error(e, EX_DATAERR, 0,
			    "invalid config %s: diff_ids[%zu] is not a digest",
			    img->config, i);
		snprintf(img->layers[i].diff_id, DIGEST_MAX, "%s", id);
	}
	return 0;
}

int image_load(const struct oci_layout *l, const char *manifest,
    struct image *img, struct vs_err *e)
{
	cleanup_free char *body = NULL;
	cleanup_json json_t *m = NULL;
	json_t *layers;
	size_t len;

	memset(img, 0, sizeof *img);
	snprintf(img->manifest, sizeof img->manifest, "%s", manifest);
	{
		int fd = layout_use(l, false, true, e);
		if (fd == -1)
			return -1;
		img->in_use = fd >= 0;
		img->use_fd = fd;
	}
	body = layout_read_blob(l, manifest, MANIFEST_LIMIT, &len, e);
	if (body == NULL)
		goto bad;
	m = image_parse_manifest(body, len, manifest, e);
	if (m == NULL)
		goto bad;
	{
		const char *ct = json_string_value(json_object_get(json_object_get(m,
		    "config"), "mediaType"));
		if (ct && strcmp(ct, ART_CONFIG) == 0) {
			vs_error(e, EX_DATAERR, 0,
			    "%s is a disk artifact (oci-push's), not an image of layers: restore it with mkbase",
			    manifest);
			goto bad;
		}
	}
	snprintf(img->config, sizeof img->config, "%s", json_string_value(
	    json_object_get(json_object_get(m, "config"), "digest")));
	layers = json_object_get(m, "layers");
	img->nlayers = json_array_size(layers);
	img->layers = calloc(img->nlayers ? img->nlayers : 1,
	    sizeof *img->layers);
	if (img->layers == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "%s", manifest);
		goto bad;
	}
	for (size_t i = 0; i < img->nlayers; i++) {
		json_t *d = json_array_get(layers, i);
		struct image_layer *ly = &img->layers[i];
		const char *mt = json_string_value(json_object_get(d, "mediaType"));

		snprintf(ly->digest, sizeof ly->digest, "%s",
		    json_string_value(json_object_get(d, "digest")));
		snprintf(ly->media_type, sizeof ly->media_type, "%s", mt);
		ly->size = json_integer_value(json_object_get(d, "size"));
		ly->compression = image_layer_compression(mt);
		if (ly->compression == LAYER_UNSUPPORTED) {
			vs_error(e, EX_DATAERR, 0,
			    "layer %zu (%s) has an unsupported media type: %s",
			    i + 1, ly->digest, mt);
			goto bad;
		}
		if (!layout_has_blob(l, ly->digest, ly->size)) {
			vs_error(e, EX_NOINPUT, 0,
			    "layer %zu (%s, %lld bytes) is not in the cache %s: fetch the image with oci-fetch",
			    i + 1, ly->digest, (long long)ly->size, l->root);
			goto bad;
		}
	}
	if (load_diff_ids(l, img, e) < 0)
		goto bad;
	layout_touch(l, manifest);
	return 0;
bad:
	image_free(img);
	return -1;
}

void image_free(struct image *img)
{
	free(img->layers);
	img->layers = NULL;
	img->nlayers = 0;
	if (img->in_use)
		close(img->use_fd);
	img->in_use = false;
}
