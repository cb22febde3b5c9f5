/* oci-fetch: pull an image from an OCI distribution registry into the
 * workspace's OCI cache, so that nothing else needs the network. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "artifact.h"
#include "cleanup.h"
#include "config.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "image.h"
#include "layout.h"
#include "progress.h"
#include "prune.h"
#include "ref.h"
#include "registry.h"
#include "size.h"

#define SYNOPSIS "oci-fetch [-qV] [-C DIR] [-c FILE] [-g GROUP] [-p OS/ARCH[/VARIANT]] [-j N] [--insecure] [--offline] [REF]"
#define CACHE "oci-cache"

#define MT_DOCKER_V1 "application/vnd.docker.distribution.manifest.v1"

struct opts {
	const char *dir;
	const char *config;
	const char *group;
	const char *platform;
	long jobs;
	long timeout;		/* OCI_FETCH_TIMEOUT, seconds */
	bool quiet;
	bool insecure;
	bool offline;
};

struct platform {
	char os[32], arch[32], variant[16];
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: %s\n"
	    "\n"
	    "Pull the image REF (or the configuration's config.image) into the\n"
	    "workspace's OCI cache, ./" CACHE ", and write the pipeline document\n"
	    "with its 'image' section to stdout.\n"
	    "\n"
	    "  -C, --directory DIR   the workspace (default: the current directory)\n"
	    "  -c, --config FILE     the configuration (default: DIR/slicer-mac.yaml)\n"
	    "  -g, --group GROUP     the host group whose image to pull\n"
	    "  -h, --help            show this help and exit\n"
	    "      --insecure        allow plain HTTP or unverified TLS for REF's registry\n"
	    "  -j, --jobs N          download N blobs at a time (default 4)\n"
	    "      --offline         resolve REF from the cache alone\n"
	    "  -p, --platform P      OS/ARCH[/VARIANT] to pick from an index (default: this host's)\n"
	    "  -q, --quiet           no progress display\n"
	    "  -V, --version         show the version and exit\n"
	    "\n"
	    "See oci-fetch(1).\n", SYNOPSIS);
}

static void host_platform(struct platform *p)
{
	struct utsname u;

	memset(p, 0, sizeof *p);
	strcpy(p->os, "linux");
	strcpy(p->arch, "amd64");
	if (uname(&u) != 0)
		return;
	if (strcmp(u.machine, "aarch64") == 0 || strcmp(u.machine, "arm64") == 0) {
		strcpy(p->arch, "arm64");
		strcpy(p->variant, "v8");
	} else if (strncmp(u.machine, "armv7", 5) == 0) {
		strcpy(p->arch, "arm");
		strcpy(p->variant, "v7");
	} else if (strcmp(u.machine, "x86_64") != 0) {
		snprintf(p->arch, sizeof p->arch, "%.31s", u.machine);
	}
}

static int parse_platform(const char *s, struct platform *p, struct vs_err *e)
{
	char buf[96], *a, *v;

	memset(p, 0, sizeof *p);
	if (strlen(s) >= sizeof buf)
		goto bad;
	strcpy(buf, s);
	a = strchr(buf, '/');
	if (a == NULL)
		goto bad;
	*a++ = '\0';
	v = strchr(a, '/');
	if (v)
		*v++ = '\0';
	if (!*buf || !*a || (v && (!*v || strchr(v, '/'))) ||
	    strlen(buf) >= sizeof p->os || strlen(a) >= sizeof p->arch ||
	    (v && strlen(v) >= sizeof p->variant))
		goto bad;
	strcpy(p->os, buf);
	strcpy(p->arch, a);
	if (v)
		strcpy(p->variant, v);
	/* arm64 is v8 unless said otherwise (containerd's rule). */
	if (strcmp(p->arch, "arm64") == 0 && !p->variant[0])
		strcpy(p->variant, "v8");
	return 0;
bad:
	return vs_error(e, EX_USAGE, 0,
	    "invalid platform '%s': expected OS/ARCH[/VARIANT], like linux/amd64 or linux/arm64/v8",
	    s);
}

static void platform_name(const struct platform *p, char *out, size_t len)
{
	snprintf(out, len, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "",
	    p->variant);
}

/* Whether an index entry's platform is the one wanted. */
static bool platform_matches(const json_t *pl, const struct platform *want)
{
	const char *os = json_string_value(json_object_get(pl, "os"));
	const char *arch = json_string_value(json_object_get(pl, "architecture"));
	const char *var = json_string_value(json_object_get(pl, "variant"));

	if (!os || !arch || strcmp(os, want->os) || strcmp(arch, want->arch))
		return false;
	if (var == NULL || *var == '\0')
		var = strcmp(arch, "arm64") == 0 ? "v8" : "";
	return !want->variant[0] || strcmp(var, want->variant) == 0;
}

/* Pick the manifest for want out of an index or a manifest list. */
static json_t *pick_platform(const json_t *index, const struct platform *want,
    const char *refname, struct vs_err *e)
{
	json_t *list = json_object_get(index, "manifests");
	char have[1024] = "", name[96];
	size_t len = 0;

	if (!json_is_array(list))
		return vs_error(e, EX_DATAERR, 0,
		    "invalid index for %s: no manifests array", refname), NULL;
	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *d = json_array_get(list, i);
		if (platform_matches(json_object_get(d, "platform"), want)) {
			if (image_check_descriptor(d, "an index entry", e) < 0)
				return NULL;
			return d;
		}
	}
	for (size_t i = 0; i < json_array_size(list) && len < sizeof have; i++) {
		json_t *pl = json_object_get(json_array_get(list, i), "platform");
		const char *os = json_string_value(json_object_get(pl, "os"));
		const char *arch = json_string_value(json_object_get(pl, "architecture"));
		const char *var = json_string_value(json_object_get(pl, "variant"));
		if (!os || !arch || strcmp(os, "unknown") == 0)
			continue;
		len += (size_t)snprintf(have + len, sizeof have - len, "%s%s/%s%s%s",
		    len ? ", " : "", os, arch, var && *var ? "/" : "", var ? var : "");
	}
	platform_name(want, name, sizeof name);
	return vs_error(e, EX_UNAVAILABLE, 0,
	    "%s has no image for %s; it has: %s (choose with -p)", refname, name,
	    len ? have : "none"), NULL;
}

/* A Docker schema 2 manifest as the OCI manifest it corresponds to: the
 * same config and layer blobs, OCI media types (as skopeo writes into an OCI
 * layout; tools that read OCI layouts look only for OCI manifests). */
static char *docker_to_oci(const json_t *m, size_t *len)
{
	static const struct { const char *docker, *oci; } map[] = {
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip",
		  "application/vnd.oci.image.layer.v1.tar+gzip" },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" },
		{ "application/vnd.docker.container.image.v1+json",
		  "application/vnd.oci.image.config.v1+json" },
	};
	cleanup_json json_t *o = json_deep_copy(m);
	json_t *layers = json_object_get(o, "layers");
	char *text;

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "mediaType", json_string(MT_OCI_MANIFEST));
	for (size_t i = 0; i <= json_array_size(layers); i++) {
		json_t *d = i < json_array_size(layers) ? json_array_get(layers, i) :
		    json_object_get(o, "config");
		const char *t = json_string_value(json_object_get(d, "mediaType"));
		for (size_t k = 0; t && k < sizeof map / sizeof map[0]; k++)
			if (strcmp(t, map[k].docker) == 0) {
				json_object_set_new(d, "mediaType",
				    json_string(map[k].oci));
				break;
			}
	}
	text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (text)
		*len = strlen(text);
	return text;
}

static bool is_index(const char *mt)
{
	return strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

static bool is_manifest(const char *mt)
{
	return strcmp(mt, MT_OCI_MANIFEST) == 0 ||
	    strcmp(mt, MT_DOCKER_MANIFEST) == 0;
}

/* The media type a manifest's bytes declare, for when the registry's
 * Content-Type is missing or generic. */
static void declared_type(const char *body, size_t len, char *out, size_t n)
{
	cleanup_json json_t *j = json_loadb(body, len, 0, NULL);
	const char *mt = json_string_value(json_object_get(j, "mediaType"));

	if (mt)
		snprintf(out, n, "%s", mt);
	else if (json_is_array(json_object_get(j, "manifests")))
		snprintf(out, n, "%s", MT_OCI_INDEX);
	else if (json_is_array(json_object_get(j, "layers")))
		snprintf(out, n, "%s", MT_OCI_MANIFEST);
}

struct state {
	struct oci_ref ref;
	struct platform want;
	struct oci_layout layout;
	struct registry *reg;
	char manifest_digest[DIGEST_MAX];
	char media_type[128];
	int64_t manifest_size;
	json_t *manifest;	/* parsed */
	char platform[96];	/* what the image is for */
	uint64_t fetched, reused;
	bool was_reused;
	int use;		/* the cache's use lock, shared, or < 0 */
	char *keep[2];		/* the workspace's images (slicer-mac.yaml) */
	bool quiet;
};

/* "os/arch[/variant]" from an object with those keys: an index entry's
 * platform, or an image's config. */
static void descriptor_platform(const json_t *pl, char *out, size_t len)
{
	const char *os = json_string_value(json_object_get(pl, "os"));
	const char *arch = json_string_value(json_object_get(pl, "architecture"));
	const char *var = json_string_value(json_object_get(pl, "variant"));

	out[0] = '\0';
	if (os && arch)
		snprintf(out, len, "%s/%s%s%s", os, arch, var && *var ? "/" : "",
		    var && *var ? var : "");
}

/* The platform an image's config declares. */
static void config_platform(struct state *s, struct vs_err *e)
{
	const char *dg = json_string_value(json_object_get(json_object_get(
	    s->manifest, "config"), "digest"));
	cleanup_free char *body = NULL;
	cleanup_json json_t *c = NULL;
	size_t len;

	body = dg ? layout_read_blob(&s->layout, dg, MANIFEST_MAX, &len, e) : NULL;
	c = body ? json_loadb(body, len, 0, NULL) : NULL;
	descriptor_platform(c, s->platform, sizeof s->platform);
}

/* Blobs of the manifest: config first, then the layers. */
static struct blob_job *manifest_jobs(const json_t *m, size_t *n)
{
	json_t *layers = json_object_get(m, "layers");
	struct blob_job *jobs;

	*n = 1 + json_array_size(layers);
	jobs = calloc(*n, sizeof *jobs);
	if (jobs == NULL)
		return NULL;
	jobs[0].digest = json_string_value(json_object_get(json_object_get(m,
	    "config"), "digest"));
	jobs[0].size = json_integer_value(json_object_get(json_object_get(m,
	    "config"), "size"));
	for (size_t i = 0; i < json_array_size(layers); i++) {
		json_t *d = json_array_get(layers, i);
		jobs[i + 1].digest = json_string_value(json_object_get(d, "digest"));
		jobs[i + 1].size = json_integer_value(json_object_get(d, "size"));
	}
	return jobs;
}

static bool all_present(const struct state *s)
{
	size_t n;
	cleanup_free struct blob_job *jobs = manifest_jobs(s->manifest, &n);
	bool ok = jobs != NULL;

	for (size_t i = 0; ok && i < n; i++)
		ok = layout_has_blob(&s->layout, jobs[i].digest, jobs[i].size);
	return ok;
}

/* Load the manifest the cache's index.json names for the reference. */
static int from_cache(struct state *s, json_t **desc, struct vs_err *e)
{
	cleanup_free char *body = NULL;
	const char *dg, *mt;
	size_t len;

	*desc = layout_find_ref(&s->layout, s->ref.name, e);
	if (*desc == NULL)
		return e->code ? -1 : 0;
	dg = json_string_value(json_object_get(*desc, "digest"));
	mt = json_string_value(json_object_get(*desc, "mediaType"));
	if (!dg || !mt || !digest_valid(dg))
		return vs_error(e, EX_DATAERR, 0,
		    "%s/index.json: the entry for %s is not a valid descriptor",
		    s->layout.root, s->ref.name);
	body = layout_read_blob(&s->layout, dg, MANIFEST_MAX, &len, e);
	if (body == NULL)
		return -1;
	if (json_integer_value(json_object_get(*desc, "size")) != (json_int_t)len)
		return vs_error(e, EX_DATAERR, 0,
		    "%s/index.json: the entry for %s says %lld bytes, and its manifest has %zu",
		    s->layout.root, s->ref.name,
		    (long long)json_integer_value(json_object_get(*desc, "size")), len);
	s->manifest = image_parse_manifest(body, len, s->ref.name, e);
	if (s->manifest == NULL)
		return -1;
	snprintf(s->manifest_digest, sizeof s->manifest_digest, "%s", dg);
	snprintf(s->media_type, sizeof s->media_type, "%s", mt);
	s->manifest_size = (int64_t)len;
	descriptor_platform(json_object_get(*desc, "platform"), s->platform,
	    sizeof s->platform);
	return 1;
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
	struct progress *p = arg;

	p->total = total;
	progress_update(p, done);
}

/* Automatic pruning: when the blobs still to pull take more than the
 * cache's filesystem has free, the least recently used images go first
 * (oci-prune's rules: never the workspace's, never what is being pulled),
 * until they fit; VMSTRAP_NO_AUTO_PRUNE=1 turns it off. */
static int auto_prune(struct state *s, const struct blob_job *jobs, size_t n,
    const char *manifest, struct vs_err *e)
{
	const char *off = getenv("VMSTRAP_NO_AUTO_PRUNE");
	struct prune_keep keep[4];
	char kd[4][DIGEST_MAX];
	const char *kb[512];
	struct prune_opts po = { .older_than = -1, .budget = -1, .keep = keep };
	cleanup_json json_t *sec = NULL, *cur = NULL;
	struct statvfs sv;
	uint64_t need = 0, avail, margin;
	char a[32], b[32];
	size_t nkb = 0;
	struct vs_err ie = { 0 };

	for (size_t i = 0; i < n; i++) {
		if (!layout_has_blob(&s->layout, jobs[i].digest, jobs[i].size))
			need += (uint64_t)jobs[i].size;
		if (nkb < sizeof kb / sizeof *kb)
			kb[nkb++] = jobs[i].digest;
	}
	if (need == 0 || statvfs(s->layout.root, &sv) < 0)
		return 0;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	/* (room for the filesystem's own blocks, and a little more) */
	margin = need / 32 + (4u << 20);
	if (avail >= need + margin)
		return 0;
	if (off && strcmp(off, "1") == 0) {
		if (!s->quiet)
			fe_warn("%s to pull, %s free: not pruning the cache (VMSTRAP_NO_AUTO_PRUNE=1)",
			    size_human(need, a, sizeof a), size_human(avail, b, sizeof b));
		return 0;
	}
	/* never the image being pulled, nor what its name names now, nor
	 * the workspace's */
	snprintf(kd[po.nkeep], DIGEST_MAX, "%s", manifest);
	keep[po.nkeep] = (struct prune_keep){ kd[po.nkeep], "being pulled" };
	po.nkeep++;
	cur = layout_find_ref(&s->layout, s->ref.name, &ie);
	if (cur && json_string_value(json_object_get(cur, "digest"))) {
		snprintf(kd[po.nkeep], DIGEST_MAX, "%s",
		    json_string_value(json_object_get(cur, "digest")));
		keep[po.nkeep] = (struct prune_keep){ kd[po.nkeep], "being pulled" };
		po.nkeep++;
	}
	for (size_t i = 0; i < 2; i++) {
		if (s->keep[i] && image_resolve(&s->layout, s->keep[i], kd[po.nkeep],
		    &ie) == 0) {
			keep[po.nkeep] = (struct prune_keep){ kd[po.nkeep],
			    "the image of slicer-mac.yaml" };
			po.nkeep++;
		}
	}
	po.keep_blobs = kb;
	po.nkeep_blobs = nkb;
	po.need_free = need + margin;
	/* (the exclusive lock: ours, shared, let go meanwhile) */
	if (s->use >= 0)
		close(s->use);
	s->use = -1;
	if (prune_run(&s->layout, &po, &sec, e) < 0)
		return vs_error_prefix(e, "pruning the cache to make room");
	s->use = layout_use(&s->layout, false, true, e);
	if (s->use == -1)
		return -1;
	if (!s->quiet) {
		size_t i;
		json_t *v;
		json_array_foreach(json_object_get(json_object_get(sec, "removed"),
		    "images"), i, v) {
			json_t *refs = json_object_get(v, "refs");
			fe_warn("pruned %s (%s, last used %s) to make room",
			    json_array_size(refs) ? json_string_value(json_array_get(refs, 0)) :
			    json_string_value(json_object_get(v, "digest")),
			    size_human((uint64_t)json_integer_value(json_object_get(v, "bytes")),
			    a, sizeof a),
			    json_string_value(json_object_get(v, "last_used")));
		}
		fe_warn("%s to pull, %s was free: the cache pruned of %s (VMSTRAP_NO_AUTO_PRUNE=1 turns this off)",
		    size_human(need, a, sizeof a), size_human(avail, b, sizeof b),
		    size_human((uint64_t)json_integer_value(json_object_get(
		    json_object_get(sec, "removed"), "bytes")), kd[3], sizeof kd[3]));
	}
	return 0;
}

static int fetch(struct state *s, const struct opts *o, struct vs_err *e)
{
	cleanup_json json_t *cached = NULL, *top = NULL, *desc = NULL;
	struct manifest m = { 0 }, pm = { 0 };
	cleanup_free struct blob_job *jobs = NULL;
	const char *reference = s->ref.digest[0] ? s->ref.digest : s->ref.tag;
	const char *source;
	json_t *pl;
	char mt[128];
	struct progress bar;
	size_t n;
	int rc = -1, have;

	have = from_cache(s, &cached, e);
	if (have < 0 && !o->offline) {
		/* A broken cache entry is replaced by a fresh pull. */
		have = 0;
		json_decref(s->manifest);
		s->manifest = NULL;
	}
	if (o->offline) {
		if (have <= 0) {
			if (have == 0)
				vs_error(e, EX_NOINPUT, 0,
				    "%s is not in %s (fetch it without --offline first)",
				    s->ref.name, s->layout.root);
			return -1;
		}
		if (!all_present(s))
			return vs_error(e, EX_NOINPUT, 0,
			    "%s: blobs of %s are missing (fetch it without --offline)",
			    s->layout.root, s->ref.name);
		pl = json_object_get(cached, "platform");
		if (pl && !platform_matches(pl, &s->want)) {
			char name[96];
			platform_name(&s->want, name, sizeof name);
			return vs_error(e, EX_NOINPUT, 0,
			    "%s: the cache has %s for %s, not for %s (choose with -p, or fetch without --offline)",
			    s->layout.root, s->ref.name, s->platform, name);
		}
		s->was_reused = true;
		return 0;
	}

	s->reg = registry_open(&s->ref, o->insecure, o->timeout, e);
	if (s->reg == NULL)
		return -1;

	/* Warm path: one HEAD says whether the reference still names what
	 * the cache has. */
	source = json_string_value(json_object_get(json_object_get(cached,
	    "annotations"), REF_SOURCE_ANNOTATION));
	pl = json_object_get(cached, "platform");
	if (have > 0 && source && all_present(s) &&
	    (pl == NULL || platform_matches(pl, &s->want))) {
		if (s->ref.digest[0] && strcmp(source, s->ref.digest) == 0) {
			s->was_reused = true;
			return 0;
		}
		if (registry_manifest(s->reg, reference, true, &m, e) < 0)
			return -1;
		if (m.digest[0] && strcmp(m.digest, source) == 0) {
			s->was_reused = true;
			return 0;
		}
	}
	json_decref(s->manifest);
	s->manifest = NULL;

	if (registry_manifest(s->reg, reference, false, &m, e) < 0)
		goto out;
	snprintf(mt, sizeof mt, "%s", m.media_type);
	if (!is_index(mt) && !is_manifest(mt))
		declared_type(m.body, m.len, mt, sizeof mt);
	if (strncmp(mt, MT_DOCKER_V1, strlen(MT_DOCKER_V1)) == 0) {
		vs_error(e, EX_DATAERR, 0,
		    "%s is a Docker schema 1 image, which is not supported (push it again with a current docker)",
		    s->ref.name);
		goto out;
	}
	if (is_index(mt)) {
		json_error_t jerr;
		const char *dg;

		top = json_loadb(m.body, m.len, JSON_REJECT_DUPLICATES, &jerr);
		if (!json_is_object(top)) {
			vs_error(e, EX_DATAERR, 0, "invalid index for %s at byte %d: %s",
			    s->ref.name, jerr.position, jerr.text);
			goto out;
		}
		desc = json_incref(pick_platform(top, &s->want, s->ref.name, e));
		if (desc == NULL)
			goto out;
		if (layout_put_blob(&s->layout, m.digest, m.body, m.len, e) < 0)
			goto out;
		dg = json_string_value(json_object_get(desc, "digest"));
		descriptor_platform(json_object_get(desc, "platform"), s->platform,
		    sizeof s->platform);
		if (registry_manifest(s->reg, dg, false, &pm, e) < 0)
			goto out;
		snprintf(mt, sizeof mt, "%s",
		    json_string_value(json_object_get(desc, "mediaType")));
		if (!is_manifest(mt)) {
			vs_error(e, EX_DATAERR, 0,
			    "%s: the entry for this platform is a %s, not an image manifest",
			    s->ref.name, mt);
			goto out;
		}
	} else if (is_manifest(mt)) {
		pm = m;
		m.body = NULL;
	} else {
		vs_error(e, EX_DATAERR, 0, "%s: unsupported manifest type '%s'",
		    s->ref.name, mt[0] ? mt : "(none)");
		goto out;
	}

	s->manifest = image_parse_manifest(pm.body, pm.len, s->ref.name, e);
	if (s->manifest == NULL)
		goto out;
	snprintf(s->manifest_digest, sizeof s->manifest_digest, "%s", pm.digest);
	snprintf(s->media_type, sizeof s->media_type, "%s", mt);
	s->manifest_size = (int64_t)pm.len;

	jobs = manifest_jobs(s->manifest, &n);
	if (jobs == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "blobs");
		goto out;
	}
	if (auto_prune(s, jobs, n, pm.digest, e) < 0)
		goto out;
	progress_start(&bar, stderr, "oci-fetch: pulling", 0,
	    progress_wanted(stderr, o->quiet));
	rc = registry_fetch_blobs(s->reg, &s->layout, jobs, n, (int)o->jobs,
	    on_progress, &bar, e);
	progress_end(&bar);
	if (rc < 0)
		goto out;
	rc = -1;
	for (size_t i = 0; i < n; i++) {
		s->fetched += jobs[i].fetched;
		s->reused += jobs[i].present ? (uint64_t)jobs[i].size :
		    jobs[i].resumed;
	}
	if (strcmp(mt, MT_DOCKER_MANIFEST) == 0) {
		size_t len = 0;
		char *oci = docker_to_oci(s->manifest, &len);
		json_t *parsed;

		if (oci == NULL) {
			vs_error(e, EX_OSERR, ENOMEM, "manifest");
			goto out;
		}
		free(pm.body);
		pm.body = oci;
		pm.len = len;
		if (digest_buffer(oci, len, "sha256", pm.digest, e) < 0)
			goto out;
		parsed = image_parse_manifest(oci, len, s->ref.name, e);
		if (parsed == NULL)
			goto out;
		json_decref(s->manifest);
		s->manifest = parsed;
		snprintf(mt, sizeof mt, "%s", MT_OCI_MANIFEST);
		snprintf(s->manifest_digest, sizeof s->manifest_digest, "%s", pm.digest);
		snprintf(s->media_type, sizeof s->media_type, "%s", mt);
	}
	/* The manifest last: a cache entry never names missing blobs. */
	if (layout_put_blob(&s->layout, pm.digest, pm.body, pm.len, e) < 0)
		goto out;
	{
		cleanup_json json_t *d = json_pack("{s:s, s:s, s:I}", "mediaType", mt,
		    "digest", pm.digest, "size", (json_int_t)pm.len);
		if (d && desc && json_object_get(desc, "platform"))
			json_object_set(d, "platform", json_object_get(desc, "platform"));
		if (d == NULL || layout_set_ref(&s->layout, s->ref.name, d,
		    s->ref.digest[0] ? s->ref.digest : m.digest[0] ? m.digest :
		    pm.digest, e) < 0)
			goto out;
	}
	rc = 0;
out:
	manifest_free(&m);
	manifest_free(&pm);
	return rc;
}

static json_t *image_section(const struct state *s)
{
	json_t *layers = json_array(), *sec;
	json_t *ml = json_object_get(s->manifest, "layers");
	uint64_t total = 0;

	for (size_t i = 0; i < json_array_size(ml); i++) {
		json_t *d = json_array_get(ml, i);
		json_array_append_new(layers, json_pack("{s:O, s:O, s:O}",
		    "digest", json_object_get(d, "digest"),
		    "size", json_object_get(d, "size"),
		    "mediaType", json_object_get(d, "mediaType")));
		total += (uint64_t)json_integer_value(json_object_get(d, "size"));
	}
	total += (uint64_t)json_integer_value(json_object_get(json_object_get(
	    s->manifest, "config"), "size"));
	sec = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s, s:s, s:s, s:O, s:o, s:I, s:I}",
	    "ref", s->ref.name,
	    "registry", s->ref.registry,
	    "repository", s->ref.repository,
	    "tag", s->ref.tag[0] ? s->ref.tag : NULL,
	    "digest", s->manifest_digest,
	    "mediaType", s->media_type,
	    "platform", s->platform,
	    "layout", s->layout.root,
	    "config", json_object_get(json_object_get(s->manifest, "config"), "digest"),
	    "layers", layers,
	    "fetched", (json_int_t)(s->was_reused ? 0 : s->fetched),
	    "reused", (json_int_t)(s->was_reused ? total : s->reused));
	/* (a disk pushed by oci-push: mkbase restores it, kextract takes
	 * its kernel) */
	if (sec)
		json_object_set_new(sec, "artifact", artifact_is(s->manifest) ?
		    json_string("disk") : json_null());
	return sec;
}

int main(int argc, char *argv[])
{
	enum { OPT_INSECURE = 256, OPT_OFFLINE };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "directory", required_argument, NULL, 'C' },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "insecure", no_argument, NULL, OPT_INSECURE },
		{ "jobs", required_argument, NULL, 'j' },
		{ "offline", no_argument, NULL, OPT_OFFLINE },
		{ "platform", required_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .jobs = 4, .timeout = REGISTRY_TIMEOUT };
	struct vs_err e = { 0 };
	struct vs_config cfg = { 0 };
	struct state s = { 0 };
	cleanup_free char *cfgpath = NULL;
	cleanup_json json_t *doc = NULL;
	const char *refstr = NULL;
	const char *timeout = getenv("OCI_FETCH_TIMEOUT");
	long long n;
	int c, rc = 0;

	fe_init(argv[0]);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:c:g:hj:p:qV", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'c': o.config = optarg; break;
		case 'g': o.group = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'j':
			if (fe_number(optarg, 1, 64, &n, "-j", &e) < 0)
				return fe_fail(&e);
			o.jobs = (long)n;
			break;
		case 'p': o.platform = optarg; break;
		case 'q': o.quiet = true; break;
		case 'V':
			fe_version();
			return fe_finish(0);
		case OPT_INSECURE: o.insecure = true; break;
		case OPT_OFFLINE: o.offline = true; break;
		default:
			return fe_bad_option(SYNOPSIS, c, optopt,
			    argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc > 1)
		return fe_usage_error(SYNOPSIS, "too many operands");
	if (timeout && *timeout) {
		if (fe_number(timeout, 1, 86400, &n, "OCI_FETCH_TIMEOUT", &e) < 0)
			return fe_fail(&e);
		o.timeout = (long)n;
	}
	if (argc == 1)
		refstr = argv[0];
	if (o.platform) {
		if (parse_platform(o.platform, &s.want, &e) < 0)
			return fe_fail(&e);
	} else {
		host_platform(&s.want);
	}
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		return fe_fail(&e);
	}

	if (config_locate(".", o.config, &cfgpath, &e) < 0)
		return fe_fail(&e);
	if (cfgpath) {
		if (config_load(&cfg, cfgpath, &e) < 0) {
			config_free(&cfg);
			return fe_fail(&e);
		}
		for (size_t i = 0; i < cfg.nwarnings; i++)
			fe_warn("%s", cfg.warnings[i]);
		if (o.group && config_group(&cfg, o.group, &e) == NULL) {
			config_free(&cfg);
			return fe_fail(&e);
		}
		if (refstr == NULL && cfg.image)
			refstr = cfg.image;
		s.keep[0] = cfg.image ? strdup(cfg.image) : NULL;
		s.keep[1] = cfg.kernel_image ? strdup(cfg.kernel_image) : NULL;
	} else if (o.group) {
		return fe_usage_error(SYNOPSIS,
		    "-g %s: no configuration (no ./%s, and no -c FILE)", o.group,
		    CONFIG_FILE);
	}
	if (refstr == NULL) {
		config_free(&cfg);
		return fe_usage_error(SYNOPSIS,
		    "no image: give REF, or set config.image in %s", CONFIG_FILE);
	}
	rc = ref_parse(refstr, &s.ref, &e);
	if (rc == 0 && cfg.insecure_registry && cfg.image) {
		/* It names the configuration's registry, and no other. */
		struct oci_ref cref;
		struct vs_err ignore;
		if (ref_parse(cfg.image, &cref, &ignore) == 0 &&
		    strcmp(cref.registry, s.ref.registry) == 0)
			o.insecure = true;
	}
	config_free(&cfg);
	if (rc < 0)
		return fe_fail(&e);

	if (layout_open(&s.layout, CACHE, !o.offline, &e) < 0)
		return fe_fail(&e);
	s.quiet = o.quiet;
	/* (held while the pull adds blobs index.json does not name yet:
	 * oci-prune waits) */
	s.use = layout_use(&s.layout, false, true, &e);
	if (s.use == -1) {
		layout_close(&s.layout);
		return fe_fail(&e);
	}
	rc = fetch(&s, &o, &e);
	if (rc == 0 && s.manifest_digest[0])
		layout_touch(&s.layout, s.manifest_digest);
	if (rc == 0 && !s.platform[0]) {
		struct vs_err ignore;
		config_platform(&s, &ignore);
	}
	if (rc == 0) {
		doc = json_object();
		rc = doc ? doc_set(doc, "image", image_section(&s), &e) :
		    vs_error(&e, EX_OSERR, ENOMEM, "document");
	}
	if (rc == 0)
		rc = doc_write(stdout, doc, &e);
	registry_close(s.reg);
	json_decref(s.manifest);
	layout_close(&s.layout);
	if (s.use >= 0)
		close(s.use);
	free(s.keep[0]);
	free(s.keep[1]);
	if (rc < 0)
		return fe_finish(fe_fail(&e));
	return fe_finish(0);
}
