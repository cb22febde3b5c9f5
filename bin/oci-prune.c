/* oci-prune: keep the workspace's OCI cache within bounds: what nothing
 * needs, then the least recently used images, as asked. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cleanup.h"
#include "config.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "image.h"
#include "layout.h"
#include "prune.h"
#include "size.h"
#include "stop.h"

#define SYNOPSIS "oci-prune [-qnV] [-C DIR] [--older-than DAYS] [--budget SIZE] [--keep REF]..."
#define CACHE "oci-cache"
#define MAX_KEEP 256

enum { OPT_OLDER = 256, OPT_BUDGET, OPT_KEEP };

static void usage(FILE *f)
{
	fprintf(f, "usage: %s\n", SYNOPSIS);
	fputs("Remove from the workspace's OCI cache, ./" CACHE ", the blobs no image\n"
	    "needs and the trees of no image; then, with --older-than or --budget,\n"
	    "whole images, least recently used first.  Never the images of --keep or\n"
	    "of the workspace's slicer-mac.yaml, never while a tool uses the cache.\n"
	    "\n"
	    "  -C, --directory DIR   the workspace (default: the current directory)\n"
	    "      --older-than DAYS remove the images not used for DAYS days\n"
	    "      --budget SIZE     remove images until the cache takes SIZE at most\n"
	    "                        (like 20G; 0 for all but the kept ones)\n"
	    "      --keep REF        never remove this image (a name or a digest)\n"
	    "  -n, --dry-run         say what would go, remove nothing\n"
	    "  -q, --quiet           no notes\n"
	    "  -h, --help            show this help and exit\n"
	    "  -V, --version         show the version and exit\n"
	    "\n"
	    "The prune section is written to stdout.  See oci-prune(1).\n", f);
}

/* ref in the cache as a manifest digest, or "" when it is not there
 * (must: then it is an error). */
static int resolve(const struct oci_layout *l, const char *ref, bool must,
    char out[DIGEST_MAX], struct vs_err *e)
{
	struct vs_err ie = { 0 };

	out[0] = '\0';
	if (image_resolve(l, ref, out, &ie) == 0)
		return 0;
	out[0] = '\0';
	if (!must)
		return 0;
	if (ie.code == EX_NOINPUT || ie.code == 0)
		return vs_error(e, EX_NOINPUT, 0,
		    "--keep %s: no such image in %s (nothing would be kept)", ref,
		    l->root);
	*e = ie;
	return -1;
}

static void notes(const json_t *sec, bool dry)
{
	const json_t *rm = json_object_get(sec, "removed");
	const json_t *imgs = json_object_get(rm, "images");
	char a[32], b[32];
	size_t i;
	json_t *v;

	json_array_foreach(imgs, i, v) {
		const json_t *refs = json_object_get(v, "refs");
		fe_warn("%s %s (%s, last used %s)", dry ? "would remove" : "removed",
		    json_array_size(refs) ? json_string_value(json_array_get(refs, 0)) :
		    json_string_value(json_object_get(v, "digest")),
		    size_human((uint64_t)json_integer_value(json_object_get(v, "bytes")),
		    a, sizeof a),
		    json_string_value(json_object_get(v, "last_used")));
	}
	json_array_foreach(json_object_get(sec, "kept"), i, v) {
		const char *why = json_string_value(json_object_get(v, "why"));
		const json_t *refs = json_object_get(v, "refs");
		if (why)
			fe_warn("kept %s (%s)", json_array_size(refs) ?
			    json_string_value(json_array_get(refs, 0)) :
			    json_string_value(json_object_get(v, "digest")), why);
	}
	fe_warn("%s %s: %lld unreferenced blob%s or blobs of removed images, %zu orphan tree%s, %zu temporary file%s; the cache %s %s",
	    dry ? "would free" : "freed",
	    size_human((uint64_t)json_integer_value(json_object_get(rm, "bytes")), a, sizeof a),
	    (long long)json_integer_value(json_object_get(rm, "blobs")),
	    json_integer_value(json_object_get(rm, "blobs")) == 1 ? "" : "s",
	    json_array_size(json_object_get(rm, "trees")),
	    json_array_size(json_object_get(rm, "trees")) == 1 ? "" : "s",
	    json_array_size(json_object_get(rm, "temporary")),
	    json_array_size(json_object_get(rm, "temporary")) == 1 ? "" : "s",
	    dry ? "would take" : "takes",
	    size_human((uint64_t)json_integer_value(json_object_get(json_object_get(sec,
	    "size"), "after")), b, sizeof b));
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "budget", required_argument, NULL, OPT_BUDGET },
		{ "directory", required_argument, NULL, 'C' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ "keep", required_argument, NULL, OPT_KEEP },
		{ "older-than", required_argument, NULL, OPT_OLDER },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct prune_opts po = { .older_than = -1, .budget = -1 };
	struct prune_keep keep[MAX_KEEP + 2];
	char kd[MAX_KEEP + 2][DIGEST_MAX];
	const char *keep_refs[MAX_KEEP];
	size_t nkr = 0;
	struct vs_err e = { 0 };
	struct oci_layout l = { 0 };
	cleanup_json json_t *doc = NULL;
	json_t *sec = NULL;
	const char *dir = NULL;
	bool quiet = false;
	long long num;
	int c;

	fe_init(argv[0]);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:hnqV", longopts, NULL)) != -1) {
		switch (c) {
		case 'C': dir = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'n': po.dry_run = true; break;
		case 'q': quiet = true; break;
		case 'V':
			fe_version();
			return fe_finish(0);
		case OPT_OLDER:
			if (fe_number(optarg, 0, 36500, &num, "--older-than", &e) < 0)
				return fe_fail(&e);
			po.older_than = (double)num;
			break;
		case OPT_BUDGET: {
			uint64_t b = 0;
			if (strcmp(optarg, "0") != 0 && size_parse(optarg, &b, &e) < 0)
				return fe_fail_usage(SYNOPSIS, &e);
			po.budget = (int64_t)b;
			break;
		}
		case OPT_KEEP:
			if (nkr == MAX_KEEP)
				return fe_usage_error(SYNOPSIS, "--keep: at most %d images",
				    MAX_KEEP);
			keep_refs[nkr++] = optarg;
			break;
		default:
			return fe_bad_option(SYNOPSIS, c, optopt, argv[optind - 1]);
		}
	}
	if (optind < argc)
		return fe_usage_error(SYNOPSIS, "unexpected operand '%s'", argv[optind]);
	if (dir && chdir(dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", dir);
		return fe_fail(&e);
	}
	if (access(CACHE, F_OK) < 0 && errno == ENOENT) {
		/* (nothing to prune: said, and an empty section) */
		if (!quiet)
			fe_warn("no OCI cache here (./%s): nothing to prune", CACHE);
		doc = json_object();
		sec = json_pack("{s:b, s:{s:[], s:[], s:[], s:[], s:i, s:i}, s:[], s:{s:i, s:i}}",
		    "dry_run", po.dry_run, "removed", "images", "digests", "trees",
		    "temporary", "blobs", 0, "bytes", 0, "kept", "size", "before", 0,
		    "after", 0);
		if (doc == NULL || sec == NULL || doc_set(doc, "prune", sec, &e) < 0 ||
		    doc_write(stdout, doc, &e) < 0)
			return fe_finish(fe_fail(&e));
		return fe_finish(0);
	}
	if (layout_open(&l, CACHE, false, &e) < 0)
		return fe_fail(&e);
	stop_on_signals();
	po.keep = keep;
	for (size_t i = 0; i < nkr; i++) {
		if (resolve(&l, keep_refs[i], true, kd[po.nkeep], &e) < 0) {
			layout_close(&l);
			return fe_fail(&e);
		}
		keep[po.nkeep] = (struct prune_keep){ kd[po.nkeep], "--keep" };
		po.nkeep++;
	}
	{
		/* the workspace's own images */
		cleanup_free char *cfgpath = NULL;
		struct vs_config cfg;

		memset(&cfg, 0, sizeof cfg);
		if (config_locate(".", NULL, &cfgpath, &e) < 0) {
			layout_close(&l);
			return fe_fail(&e);
		}
		if (cfgpath) {
			if (config_load(&cfg, cfgpath, &e) < 0) {
				config_free(&cfg);
				layout_close(&l);
				vs_error_prefix(&e,
				    "not pruning: which images the workspace needs is unknown");
				return fe_fail(&e);
			}
			const char *imgs[2] = { cfg.image, cfg.kernel_image };
			for (size_t i = 0; i < 2; i++) {
				if (imgs[i] == NULL)
					continue;
				if (resolve(&l, imgs[i], false, kd[po.nkeep], &e) < 0 ||
				    kd[po.nkeep][0] == '\0')
					continue;
				keep[po.nkeep] = (struct prune_keep){ kd[po.nkeep],
				    "the image of slicer-mac.yaml" };
				po.nkeep++;
			}
			config_free(&cfg);
		}
	}
	if (prune_run(&l, &po, &sec, &e) < 0) {
		layout_close(&l);
		return fe_finish(fe_fail(&e));
	}
	layout_close(&l);
	if (!quiet)
		notes(sec, po.dry_run);
	doc = json_object();
	if (doc == NULL || doc_set(doc, "prune", sec, &e) < 0 ||
	    doc_write(stdout, doc, &e) < 0)
		return fe_finish(fe_fail(&e));
	return fe_finish(0);
}
