/* prune.c: remove from an OCI cache what nothing needs, then the least
 * recently used images, as asked. */
#include "prune.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "doc.h"
#include "image.h"
#include "path.h"
#include "ref.h"
#include "strmap.h"

#define MANIFEST_MAX (4u << 20)

struct pimage {
	char digest[DIGEST_MAX];
	json_t *refs;		/* the names index.json gives it */
	char **blobs;		/* what it reaches (present or not) */
	size_t nblobs;
	time_t used;
	uint64_t tree;		/* bytes of its tree, 0 when none */
	bool has_tree;
	const char *kept;	/* why it is never removed, or NULL */
	bool removed;
	uint64_t freed;		/* what removing it gave */
	uint64_t alone;		/* what removing it alone would free */
};

struct blob {
	uint64_t size;
	unsigned refs;
	bool removed;
};

struct state {
	const struct oci_layout *l;
	struct pimage *img;
	size_t nimg;
	struct strmap blobs;	/* digest -> index in bv */
	struct blob *bv;
	char **bnames;
	size_t nb, capb;
	json_t *removed_digests;
	uint64_t freed;
	struct vs_err *e;
};

static int add_blob_name(struct pimage *im, const char *d)
{
	char **nv;

	for (size_t i = 0; i < im->nblobs; i++)
		if (strcmp(im->blobs[i], d) == 0)
			return 0;
	nv = realloc(im->blobs, (im->nblobs + 1) * sizeof *nv);
	if (nv == NULL)
		return -1;
	im->blobs = nv;
	if ((im->blobs[im->nblobs] = strdup(d)) == NULL)
		return -1;
	im->nblobs++;
	return 0;
}

/* What the blob d reaches: a manifest its config and layers, an index its
 * manifests (depth bounded); a blob that is missing or not JSON, itself. */
static int reach(const struct state *s, struct pimage *im, const char *d,
    int depth)
{
	cleanup_free char *body = NULL;
	cleanup_json json_t *j = NULL;
	struct vs_err ignore;
	json_t *v;
	size_t len;

	if (!digest_valid(d))
		return 0;
	if (add_blob_name(im, d) < 0)
		return vs_error(s->e, EX_OSERR, ENOMEM, "prune");
	if (depth > 4)
		return 0;
	body = layout_read_blob(s->l, d, MANIFEST_MAX, &len, &ignore);
	if (body == NULL)
		return 0;
	j = json_loadb(body, len, 0, NULL);
	if (!json_is_object(j))
		return 0;
	if ((v = json_object_get(j, "config")) != NULL &&
	    reach(s, im, json_string_value(json_object_get(v, "digest")) ?
	    json_string_value(json_object_get(v, "digest")) : "", depth + 1) < 0)
		return -1;
	v = json_object_get(j, "layers");
	for (size_t i = 0; i < json_array_size(v); i++) {
		const char *ld = json_string_value(json_object_get(
		    json_array_get(v, i), "digest"));
		if (ld && digest_valid(ld) && add_blob_name(im, ld) < 0)
			return vs_error(s->e, EX_OSERR, ENOMEM, "prune");
	}
	v = json_object_get(j, "manifests");
	for (size_t i = 0; i < json_array_size(v); i++) {
		const char *md = json_string_value(json_object_get(
		    json_array_get(v, i), "digest"));
		if (md && reach(s, im, md, depth + 1) < 0)
			return -1;
	}
	return 0;
}

static uint64_t tree_bytes;
static int tree_add(const char *p, const struct stat *st, int flag,
    struct FTW *f)
{
	(void)p; (void)flag; (void)f;
	tree_bytes += (uint64_t)st->st_blocks * 512;
	return 0;
}

static uint64_t tree_size(const char *path)
{
	tree_bytes = 0;
	nftw(path, tree_add, 32, FTW_PHYS | FTW_MOUNT);
	return tree_bytes;
}

static int rm_entry(const char *p, const struct stat *st, int flag,
    struct FTW *f)
{
	(void)st; (void)f;
	if (flag == FTW_DP)
		return rmdir(p) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(p) < 0 && errno != ENOENT ? -1 : 0;
}

static int rm_tree(const char *path)
{
	return nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Every blob file of the cache, with its size. */
static int scan_blobs(struct state *s)
{
	static const char *const algs[] = { "sha256", "sha512" };

	for (size_t a = 0; a < 2; a++) {
		cleanup_free char *dir = NULL;
		DIR *d;
		struct dirent *de;

		if (asprintf(&dir, "%s/blobs/%s", s->l->root, algs[a]) < 0) {
			dir = NULL;
			return vs_error(s->e, EX_OSERR, ENOMEM, "prune");
		}
		if ((d = opendir(dir)) == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			char name[300];
			struct stat st;

			if (de->d_name[0] == '.')
				continue;	/* (temporary files: below) */
			snprintf(name, sizeof name, "%s:%s", algs[a], de->d_name);
			if (!digest_valid(name) || fstatat(dirfd(d), de->d_name, &st,
			    AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
				continue;
			if (s->nb == s->capb) {
				size_t cap = s->capb ? s->capb * 2 : 64;
				struct blob *nv = realloc(s->bv, cap * sizeof *nv);
				char **nn = nv ? realloc(s->bnames, cap * sizeof *nn) : NULL;
				if (nv)
					s->bv = nv;
				if (nn == NULL) {
					closedir(d);
					return vs_error(s->e, EX_OSERR, ENOMEM, "prune");
				}
				s->bnames = nn;
				s->capb = cap;
			}
			s->bv[s->nb] = (struct blob){ .size = (uint64_t)st.st_size };
			if ((s->bnames[s->nb] = strdup(name)) == NULL ||
			    strmap_put(&s->blobs, name, strlen(name), s->nb) < 0) {
				closedir(d);
				return vs_error(s->e, EX_OSERR, ENOMEM, "prune");
			}
			s->nb++;
		}
		closedir(d);
	}
	return 0;
}

static struct blob *blob_of(const struct state *s, const char *d)
{
	uintptr_t *v = strmap_get(&s->blobs, d, strlen(d));

	return v ? &s->bv[*v] : NULL;
}

/* Drop image i: its blobs no other image needs are freed. */
static void drop(struct state *s, struct pimage *im)
{
	im->removed = true;
	im->freed = im->tree;
	for (size_t k = 0; k < im->nblobs; k++) {
		struct blob *b = blob_of(s, im->blobs[k]);
		if (b && b->refs > 0 && --b->refs == 0) {
			b->removed = true;
			im->freed += b->size;
		}
	}
	s->freed += im->freed;
}

static int cmp_used(const void *a, const void *b)
{
	const struct pimage *const *x = a, *const *y = b;

	if ((*x)->used != (*y)->used)
		return (*x)->used < (*y)->used ? -1 : 1;
	return strcmp((*x)->digest, (*y)->digest);
}

static json_t *iso_time(time_t t)
{
	struct tm tm;
	char buf[32];

	if (gmtime_r(&t, &tm) == NULL)
		return json_null();
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}

static json_t *image_json(const struct pimage *im, bool removed)
{
	json_t *j = json_pack("{s:O, s:s, s:I, s:o}", "refs", im->refs,
	    "digest", im->digest,
	    "bytes", (json_int_t)(removed ? im->freed : 0),
	    "last_used", iso_time(im->used));

	if (j && !removed) {
		json_object_del(j, "bytes");
		json_object_set_new(j, "frees", json_integer((json_int_t)im->alone));
		if (im->kept)
			json_object_set_new(j, "why", json_string(im->kept));
	}
	return j;
}

/* Remove the temporary files writers that were killed left, and partial
 * downloads (nobody writes while the exclusive use lock is held; a pull
 * then starts those blobs afresh). */
static void stale_temps(const struct state *s, bool dry, uint64_t *bytes,
    json_t *list)
{
	static const char *const dirs[] = { "blobs/sha256", "blobs/sha512",
	    "rootfs", "." };

	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
		cleanup_free char *dir = path_join(s->l->root, dirs[i]);
		DIR *d = dir ? opendir(dir) : NULL;
		struct dirent *de;

		if (d == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			cleanup_free char *p = NULL;
			struct stat st;

			size_t nl = strlen(de->d_name);
			if (de->d_name[0] != '.' || (!strstr(de->d_name, ".tmp-") &&
			    (nl < 8 || strcmp(de->d_name + nl - 8, ".partial") != 0)))
				continue;
			if ((p = path_join(dir, de->d_name)) == NULL ||
			    lstat(p, &st) < 0)
				continue;
			*bytes += S_ISDIR(st.st_mode) ? tree_size(p) :
			    (uint64_t)st.st_blocks * 512;
			json_array_append_new(list, json_string(p));
			if (!dry) {
				if (S_ISDIR(st.st_mode))
					rm_tree(p);
				else
					unlink(p);
			}
		}
		closedir(d);
	}
}

int prune_run(const struct oci_layout *l, const struct prune_opts *o,
    json_t **section, struct vs_err *e)
{
	struct state s = { .l = l, .blobs = STRMAP_INIT, .e = e };
	cleanup_json json_t *idx = NULL;
	cleanup_free char *rootfs = NULL;
	cleanup_fd int use = -1, lk = -1;
	json_t *list, *removed_imgs = json_array(), *kept = json_array();
	json_t *digests = json_array(), *trees = json_array(), *temps = json_array();
	struct pimage **order = NULL;
	uint64_t before = 0, temp_bytes = 0, blobs_freed = 0;
	size_t nblobs_removed = 0;
	time_t now = time(NULL);
	int rc = -1;

	*section = NULL;
	if (!removed_imgs || !kept || !digests || !trees || !temps) {
		vs_error(e, EX_OSERR, ENOMEM, "prune");
		goto out;
	}
	if (!o->dry_run && (use = layout_use(l, true, true, e)) < 0)
		goto out;
	if ((lk = layout_lock(l, e)) < 0)
		goto out;
	if ((idx = layout_read_index(l, e)) == NULL)
		goto out;
	/* (first: what they take is free when the images are weighed) */
	stale_temps(&s, o->dry_run, &temp_bytes, temps);
	if (scan_blobs(&s) < 0)
		goto out;
	for (size_t i = 0; i < s.nb; i++)
		before += s.bv[i].size;

	/* the images: one per digest, with every name it has */
	list = json_object_get(idx, "manifests");
	s.img = calloc(json_array_size(list) + 1, sizeof *s.img);
	if (s.img == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "prune");
		goto out;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *d = json_array_get(list, i);
		const char *dg = json_string_value(json_object_get(d, "digest"));
		json_t *ann = json_object_get(d, "annotations");
		const char *name = json_string_value(json_object_get(ann,
		    REF_NAME_ANNOTATION));
		const char *src = json_string_value(json_object_get(ann,
		    REF_SOURCE_ANNOTATION));
		struct pimage *im = NULL;

		if (dg == NULL || !digest_valid(dg))
			continue;	/* (not ours to judge: left as it is) */
		for (size_t k = 0; k < s.nimg; k++)
			if (strcmp(s.img[k].digest, dg) == 0)
				im = &s.img[k];
		if (im == NULL) {
			im = &s.img[s.nimg++];
			snprintf(im->digest, sizeof im->digest, "%s", dg);
			im->refs = json_array();
			if (im->refs == NULL || reach(&s, im, dg, 0) < 0) {
				vs_error(e, EX_OSERR, ENOMEM, "prune");
				goto out;
			}
		}
		if (name)
			json_array_append_new(im->refs, json_string(name));
		/* (what the reference resolved to: an index, kept with it) */
		if (src && digest_valid(src) && add_blob_name(im, src) < 0) {
			vs_error(e, EX_OSERR, ENOMEM, "prune");
			goto out;
		}
	}
	if ((rootfs = path_join(l->root, "rootfs")) == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "prune");
		goto out;
	}
	for (size_t k = 0; k < s.nimg; k++) {
		struct pimage *im = &s.img[k];
		cleanup_free char *acc = NULL, *tree = layout_rootfs_path(l, im->digest);
		cleanup_free char *mb = layout_blob_path(l, im->digest);
		struct stat st;

		if (asprintf(&acc, "%s/.access/%s", l->root, strchr(im->digest, ':') + 1) < 0)
			acc = NULL;
		if (acc && stat(acc, &st) == 0)
			im->used = st.st_mtime;
		else if (mb && stat(mb, &st) == 0)
			im->used = st.st_mtime;
		if (tree && stat(tree, &st) == 0 && S_ISDIR(st.st_mode)) {
			im->has_tree = true;
			im->tree = tree_size(tree);
			before += im->tree;
		}
		for (size_t j = 0; j < o->nkeep; j++)
			if (strcmp(o->keep[j].digest, im->digest) == 0)
				im->kept = o->keep[j].why;
		for (size_t b = 0; b < im->nblobs; b++) {
			struct blob *bl = blob_of(&s, im->blobs[b]);
			if (bl)
				bl->refs++;
		}
	}

	/* what each holds alone: its blobs no other image needs, its tree */
	for (size_t k = 0; k < s.nimg; k++) {
		struct pimage *im = &s.img[k];
		im->alone = im->tree;
		for (size_t b = 0; b < im->nblobs; b++) {
			struct blob *bl = blob_of(&s, im->blobs[b]);
			if (bl && bl->refs == 1)
				im->alone += bl->size;
		}
	}
	for (size_t j = 0; j < o->nkeep_blobs; j++) {
		struct blob *bl = blob_of(&s, o->keep_blobs[j]);
		if (bl)
			bl->refs++;
	}
	/* what nothing needs */
	for (size_t i = 0; i < s.nb; i++)
		if (s.bv[i].refs == 0) {
			s.bv[i].removed = true;
			s.freed += s.bv[i].size;
		}
	{
		DIR *d = opendir(rootfs);
		struct dirent *de;

		while (d && (de = readdir(d)) != NULL) {
			char dg[300];
			bool named = false;
			cleanup_free char *p = NULL;
			struct stat st;

			if (de->d_name[0] == '.')
				continue;
			snprintf(dg, sizeof dg, "sha256:%s", de->d_name);
			for (size_t k = 0; k < s.nimg; k++)
				if (strcmp(s.img[k].digest, dg) == 0)
					named = true;
			if (named || (p = path_join(rootfs, de->d_name)) == NULL ||
			    lstat(p, &st) < 0 || !S_ISDIR(st.st_mode))
				continue;
			{
				uint64_t sz = tree_size(p);
				before += sz;
				s.freed += sz;
			}
			json_array_append_new(trees, json_string(dg));
			if (!o->dry_run)
				rm_tree(p);
		}
		if (d)
			closedir(d);
	}

	/* then images, least recently used first */
	order = calloc(s.nimg + 1, sizeof *order);
	if (order == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "prune");
		goto out;
	}
	for (size_t k = 0; k < s.nimg; k++)
		order[k] = &s.img[k];
	qsort(order, s.nimg, sizeof *order, cmp_used);
	for (size_t k = 0; k < s.nimg; k++) {
		struct pimage *im = order[k];
		if (im->kept || o->older_than < 0)
			continue;
		if ((double)(now - im->used) > o->older_than * 86400)
			drop(&s, im);
	}
	for (size_t k = 0; k < s.nimg && o->budget >= 0; k++) {
		struct pimage *im = order[k];
		if (before - s.freed <= (uint64_t)o->budget)
			break;
		if (!im->kept && !im->removed)
			drop(&s, im);
	}
	if (o->need_free) {
		struct statvfs sv;
		uint64_t avail = statvfs(l->root, &sv) == 0 ?
		    (uint64_t)sv.f_bavail * sv.f_frsize : 0;
		for (size_t k = 0; k < s.nimg; k++) {
			struct pimage *im = order[k];
			if (avail + s.freed >= o->need_free)
				break;
			if (!im->kept && !im->removed)
				drop(&s, im);
		}
	}

	/* index.json first: from then on, the blobs are nobody's */
	{
		size_t gone = 0;
		for (size_t k = 0; k < s.nimg; k++)
			gone += s.img[k].removed;
		if (gone && !o->dry_run) {
			cleanup_json json_t *ni = json_deep_copy(idx);
			json_t *nl = json_array();
			if (ni == NULL || nl == NULL) {
				json_decref(nl);
				vs_error(e, EX_OSERR, ENOMEM, "prune");
				goto out;
			}
			for (size_t i = 0; i < json_array_size(list); i++) {
				json_t *d = json_array_get(list, i);
				const char *dg = json_string_value(json_object_get(d, "digest"));
				bool drop_it = false;
				for (size_t k = 0; dg && k < s.nimg; k++)
					if (s.img[k].removed && strcmp(s.img[k].digest, dg) == 0)
						drop_it = true;
				if (!drop_it)
					json_array_append(nl, d);
			}
			json_object_set_new(ni, "manifests", nl);
			if (layout_write_index(l, ni, e) < 0)
				goto out;
		}
	}
	for (size_t i = 0; i < s.nb; i++) {
		cleanup_free char *p = NULL;
		if (!s.bv[i].removed)
			continue;
		nblobs_removed++;
		blobs_freed += s.bv[i].size;
		json_array_append_new(digests, json_string(s.bnames[i]));
		if (!o->dry_run && (p = layout_blob_path(l, s.bnames[i])) != NULL &&
		    unlink(p) < 0 && errno != ENOENT) {
			vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", p);
			goto out;
		}
	}
	for (size_t k = 0; k < s.nimg; k++) {
		struct pimage *im = &s.img[k];
		if (!im->removed) {
			json_array_append_new(kept, image_json(im, false));
			continue;
		}
		json_array_append_new(removed_imgs, image_json(im, true));
		if (!o->dry_run) {
			cleanup_free char *tree = layout_rootfs_path(l, im->digest);
			cleanup_free char *acc = NULL;
			if (im->has_tree && tree)
				rm_tree(tree);
			if (asprintf(&acc, "%s/.access/%s", l->root,
			    strchr(im->digest, ':') + 1) >= 0)
				unlink(acc);
			else
				acc = NULL;
		}
	}
	*section = json_pack("{s:b, s:{s:o, s:o, s:o, s:o, s:I, s:I}, s:o, s:{s:I, s:I}}",
	    "dry_run", o->dry_run,
	    "removed", "images", removed_imgs, "digests", digests, "trees", trees,
	    "temporary", temps, "blobs", (json_int_t)nblobs_removed,
	    "bytes", (json_int_t)(s.freed + temp_bytes),
	    "kept", kept,
	    "size", "before", (json_int_t)(before + temp_bytes),
	    "after", (json_int_t)(before - s.freed));
	removed_imgs = kept = digests = trees = temps = NULL;
	if (*section == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "prune");
		goto out;
	}
	(void)blobs_freed;
	rc = 0;
out:
	json_decref(removed_imgs);
	json_decref(kept);
	json_decref(digests);
	json_decref(trees);
	json_decref(temps);
	for (size_t k = 0; k < s.nimg; k++) {
		json_decref(s.img[k].refs);
		for (size_t b = 0; b < s.img[k].nblobs; b++)
			free(s.img[k].blobs[b]);
		free(s.img[k].blobs);
	}
	free(s.img);
	free(order);
	for (size_t i = 0; i < s.nb; i++)
		free(s.bnames[i]);
	free(s.bnames);
	free(s.bv);
	strmap_free(&s.blobs);
	return rc;
}
