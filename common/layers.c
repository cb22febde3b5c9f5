#include "layers.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "inflate.h"
#include "progress.h"
#include "stop.h"
#include "strmap.h"

/* What the current layer did to a path (the layer map). */
enum {
	MADE = 1,	/* the layer has an entry for it */
	HOLDS = 2,	/* the layer has an entry beneath it */
};

struct applying {
	const struct layer_sink *sink;
	struct strmap layer;	/* paths the current layer made: MADE, HOLDS */
	size_t layer_no;
	const char *entry;	/* the entry being applied, for messages */
	struct progress prog;
	uint64_t done;		/* compressed bytes of earlier layers */
};

/* "layer N: entry 'NAME': " in front of e's message. */
static int entry_error(struct applying *x, struct vs_err *e)
{
	if (x->entry)
		return vs_error_prefix(e, "layer %zu: entry '%s'", x->layer_no,
		    x->entry);
	return vs_error_prefix(e, "layer %zu", x->layer_no);
}

static int refuse(struct applying *x, struct vs_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* An entry that is not allowed: the image is refused. */
static int refuse(struct applying *x, struct vs_err *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	e->code = EX_DATAERR;
	e->errnum = 0;
	return entry_error(x, e);
}

bool layers_xattr_known(const char *key)
{
	static const char *const ns[] = { "user.", "trusted.", "security.",
	    "system.", NULL };

	for (int i = 0; ns[i]; i++)
		if (strncmp(key, ns[i], strlen(ns[i])) == 0 && key[strlen(ns[i])])
			return true;
	return false;
}

int layers_clean_name(const char *name, char *rel, size_t cap,
    const char **why)
{
	size_t n = 0;
	const char *p = name;

	if (*p == '/') {
		*why = "an absolute path";
		return -1;
	}
	while (*p) {
		const char *c = p;
		size_t len = strcspn(p, "/");

		p += len;
		while (*p == '/')
			p++;
		if (len == 0 || (len == 1 && c[0] == '.'))
			continue;
		if (len == 2 && c[0] == '.' && c[1] == '.') {
			*why = "'..' in the path";
			return -1;
		}
		if (len > NAME_MAX || n + len + 2 > cap) {
			*why = "a path too long";
			return -1;
		}
		if (n)
			rel[n++] = '/';
		memcpy(rel + n, c, len);
		n += len;
	}
	rel[n] = '\0';
	return 0;
}

int layers_data(const struct layer_entry *le, const void **p, size_t *n,
    uint64_t *off, uint64_t *end, struct vs_err *e)
{
	int64_t size = archive_entry_size(le->ae);
	la_int64_t at;
	int r = archive_read_data_block(le->a, p, n, &at);

	if (r == ARCHIVE_EOF)
		return 1;
	if (r < ARCHIVE_WARN) {
		const char *msg = archive_error_string(le->a);
		return vs_error(e, EX_DATAERR, 0, "%s", msg ? msg : "unreadable data");
	}
	if (stop_signal)
		return vs_error(e, EX_TEMPFAIL, 0, "interrupted");
	if (at < 0 || (uint64_t)at < *end || size < 0 ||
	    (uint64_t)at > (uint64_t)size || *n > (uint64_t)size - (uint64_t)at)
		return vs_error(e, EX_DATAERR, 0,
		    "a sparse map that %s (data at byte %lld of a file of %lld)",
		    at >= 0 && (uint64_t)at < *end ? "goes back" :
		    "goes beyond the file's size", (long long)at, (long long)size);
	*off = (uint64_t)at;
	*end = (uint64_t)at + *n;
	return 0;
}

/* --- the layer map and whiteouts ------------------------------------- */

/* Record that the layer made rel, and that its ancestors hold something
 * it made. */
static int mark_made(struct applying *x, const char *rel, size_t len,
    struct vs_err *e)
{
	uintptr_t *f = strmap_get(&x->layer, rel, len);

	if (f)
		*f |= MADE;
	else if (strmap_put(&x->layer, rel, len, MADE) < 0)
		goto nomem;
	while (len > 0) {
		while (len > 0 && rel[len - 1] != '/')
			len--;
		if (len == 0)
			break;
		len--;
		if (strmap_get(&x->layer, rel, len))
			break;
		if (strmap_put(&x->layer, rel, len, HOLDS) < 0)
			goto nomem;
	}
	return 0;
nomem:
	vs_error(e, EX_OSERR, ENOMEM, "remember an entry");
	return entry_error(x, e);
}

static int remove_lower(struct applying *x, char *path, size_t len,
    struct vs_err *e);

/* Remove what lower layers put inside directory path (len bytes, in a
 * PATH_MAX buffer), keeping what the current layer made. */
static int clear_lower(struct applying *x, char *path, size_t len,
    struct vs_err *e)
{
	char **names = NULL;
	size_t n = 0;
	int rc = 0;

	if (x->sink->list(x->sink->arg, path, &names, &n, e) < 0)
		return entry_error(x, e);
	for (size_t i = 0; i < n; i++) {
		size_t l = len, k = strlen(names[i]);

		if (rc == 0 && l + k + 2 > PATH_MAX)
			rc = refuse(x, e, "a path too long");
		if (rc == 0) {
			if (l)
				path[l++] = '/';
			memcpy(path + l, names[i], k + 1);
			rc = remove_lower(x, path, l + k, e);
			path[len] = '\0';
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

static int remove_lower(struct applying *x, char *path, size_t len,
    struct vs_err *e)
{
	int d;

	if (strmap_get(&x->layer, path, len) == NULL) {
		if (x->sink->remove(x->sink->arg, path, e) < 0)
			return entry_error(x, e);
		return 0;
	}
	d = x->sink->is_dir(x->sink->arg, path, e);
	if (d < 0)
		return entry_error(x, e);
	return d ? clear_lower(x, path, len, e) : 0;
}

/* A whiteout: ".wh.NAME" removes NAME of lower layers from dir; the
 * opaque marker ".wh..wh..opq" removes all of dir's lower content. */
static int whiteout(struct applying *x, const char *dir, const char *base,
    struct vs_err *e)
{
	char path[PATH_MAX];
	const char *name = base + 4;
	size_t len = strlen(dir);

	if (strncmp(name, ".wh.", 4) == 0 && strcmp(name, ".wh..opq") != 0)
		return 0;	/* other AUFS metadata: not part of the tree */
	if (strcmp(name, ".wh..opq") != 0 && (*name == '\0' ||
	    strcmp(name, ".") == 0 || strcmp(name, "..") == 0))
		return refuse(x, e, "a whiteout of '%s'", name);
	memcpy(path, dir, len + 1);
	if (strcmp(name, ".wh..opq") == 0)
		return clear_lower(x, path, len, e);
	if (len + strlen(name) + 2 > PATH_MAX)
		return refuse(x, e, "a path too long");
	if (len)
		path[len++] = '/';
	strcpy(path + len, name);
	return remove_lower(x, path, strlen(path), e);
}

static int apply_entry(struct applying *x, struct archive *a,
    struct archive_entry *ae, struct vs_err *e)
{
	char rel[PATH_MAX], dir[PATH_MAX], trel[PATH_MAX];
	const char *name = archive_entry_pathname(ae), *base, *slash, *why;
	const char *hardlink = archive_entry_hardlink(ae);
	struct layer_entry le = { .ae = ae, .a = a, .layer_no = x->layer_no };

	x->entry = name;
	if (name == NULL)
		return refuse(x, e, "an entry without a name");
	if (layers_clean_name(name, rel, sizeof rel, &why) < 0)
		return refuse(x, e, "%s", why);
	if (*rel == '\0') {
		if (hardlink)
			return refuse(x, e, "a hardlink as the root");
		if (archive_entry_filetype(ae) != AE_IFDIR)
			return refuse(x, e, "the root is not a directory");
	}
	slash = strrchr(rel, '/');
	base = slash ? slash + 1 : rel;
	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - rel) : 0, rel);
	if (strncmp(base, ".wh.", 4) == 0)
		return whiteout(x, dir, base, e);
	if (hardlink) {
		if (layers_clean_name(hardlink, trel, sizeof trel, &why) < 0)
			return refuse(x, e, "a hardlink to '%s', %s", hardlink, why);
		if (*trel == '\0')
			return refuse(x, e, "a hardlink to the root");
		/* (the entry would take its own target away first) */
		if (strncmp(trel, rel, strlen(rel)) == 0 && trel[strlen(rel)] == '/')
			return refuse(x, e, "a hardlink to '%s', beneath itself",
			    hardlink);
		le.link = trel;
	} else if (archive_entry_filetype(ae) == AE_IFSOCK) {
		return 0;	/* a socket is not content */
	} else if (archive_entry_filetype(ae) != AE_IFREG &&
	    archive_entry_filetype(ae) != AE_IFDIR &&
	    archive_entry_filetype(ae) != AE_IFLNK &&
	    archive_entry_filetype(ae) != AE_IFCHR &&
	    archive_entry_filetype(ae) != AE_IFBLK &&
	    archive_entry_filetype(ae) != AE_IFIFO) {
		return refuse(x, e, "an entry of unknown type");
	}
	le.path = rel;
	le.dir = dir;
	le.name = base;
	if (x->sink->entry(x->sink->arg, &le, e) < 0)
		return entry_error(x, e);
	return mark_made(x, rel, strlen(rel), e);
}

/* --- reading a layer ---------------------------------------------------- */

/* A layer's bytes as its tar reader takes them: read and decompressed (or
 * not) by a second thread, which runs ahead by up to SLOTS blocks, so that
 * decompressing overlaps with making the entries; hashed for the diff_id
 * as the tar reader takes them. */
#define SLOTS 8
#define SLOT_SIZE (256u << 10)
#define INBUF (256u << 10)

struct slot {
	char *data;
	size_t len;
	uint64_t done;		/* compressed bytes read when it was filled */
};

struct source {
	struct applying *x;
	int fd;
	struct inflater *gz;	/* gzip, or NULL */
	unsigned char *in;	/* gzip: INBUF bytes of the blob */
	struct archive *raw;	/* zstd through libarchive, or NULL */
	bool empty;		/* raw: it decompresses to nothing */
	struct digester dg;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct slot slots[SLOTS];
	size_t filled;		/* slots filled by the reader, ever */
	size_t taken;		/* slots handed to the tar reader, ever */
	bool eof;		/* the reader is done: no more slots */
	bool stop;		/* the tar reader wants no more */
	bool holding;		/* the tar reader has slot (taken - 1) */
	bool closed;
	struct vs_err err;	/* why the reader stopped early */
	char digest[DIGEST_MAX];	/* of everything taken, at the end */
};

/* Wait for a free slot; false when told to stop. */
static bool source_wait_free(struct source *s)
{
	bool go;

	pthread_mutex_lock(&s->mu);
	while (!s->stop && s->filled - s->taken + (s->holding ? 1 : 0) >= SLOTS)
		pthread_cond_wait(&s->cv, &s->mu);
	go = !s->stop;
	pthread_mutex_unlock(&s->mu);
	return go;
}

static void source_publish(struct source *s, bool eof)
{
	pthread_mutex_lock(&s->mu);
	if (eof)
		s->eof = true;
	else
		s->filled++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* zstd's next block, through libarchive: *p, *n; 0, 1 at the end, -1. */
static int raw_next(struct source *s, const void **p, size_t *n,
    uint64_t *done)
{
	la_int64_t off;
	int r = s->empty ? ARCHIVE_EOF :
	    archive_read_data_block(s->raw, p, n, &off);

	if (r == ARCHIVE_EOF)
		return 1;
	if (r < ARCHIVE_WARN) {
		const char *msg = archive_error_string(s->raw);
		/* a read that failed is not a bad image */
		int io = archive_errno(s->raw) == EIO;
		return vs_error(&s->err, io ? EX_IOERR : EX_DATAERR, 0, "%s",
		    msg ? msg : "cannot decompress");
	}
	*done = (uint64_t)archive_filter_bytes(s->raw, -1);
	return 0;
}

/* Read up to n bytes of the blob: the count, 0 at its end, -1. */
static ssize_t blob_read(struct source *s, void *buf, size_t n)
{
	ssize_t got;

	do
		got = read(s->fd, buf, n);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		vs_error(&s->err, EX_IOERR, errno, "read");
	return got;
}

/* gzip: fill slots from the inflater until the blob ends. */
static void gzip_reader(struct source *s)
{
	const unsigned char *in = s->in;
	size_t in_len = 0;
	uint64_t read_total = 0;
	bool at_end = false;

	for (;;) {
		struct slot *sl;
		size_t made = 0;
		int r = 0;

		if (!source_wait_free(s))
			return;
		sl = &s->slots[s->filled % SLOTS];
		while (made < SLOT_SIZE) {
			size_t out = 0;
			if (in_len == 0 && !at_end) {
				ssize_t got = blob_read(s, s->in, INBUF);
				if (got < 0)
					return;
				if (got == 0)
					at_end = true;
				in = s->in;
				in_len = (size_t)got;
				read_total += (uint64_t)got;
			}
			r = inflater_run(s->gz, &in, &in_len,
			    (unsigned char *)sl->data + made, SLOT_SIZE - made,
			    &out, &s->err);
			if (r < 0)
				return;
			made += out;
			if (r == 1 || (at_end && in_len == 0 && out == 0))
				break;
		}
		if (made > 0) {
			sl->len = made;
			sl->done = read_total - in_len;
			source_publish(s, false);
		}
		if (r == 1 || (at_end && in_len == 0 && made < SLOT_SIZE)) {
			(void)inflater_finish(s->gz, &s->err);
			return;
		}
	}
}

static void *source_reader(void *arg)
{
	struct source *s = arg;
	uint64_t plain = 0;
	sigset_t all;

	/* signals are for the main thread, which cleans up */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);

	if (s->gz) {
		gzip_reader(s);
		goto out;
	}
	for (;;) {
		struct slot *sl;
		const void *p;
		size_t n;
		uint64_t done = 0;
		int r;

		if (!source_wait_free(s))
			break;
		sl = &s->slots[s->filled % SLOTS];
		if (s->raw) {
			r = raw_next(s, &p, &n, &done);
			if (r != 0)
				break;
			/* a decompressed block may be larger than a slot */
			while (n > SLOT_SIZE) {
				memcpy(sl->data, p, SLOT_SIZE);
				sl->len = SLOT_SIZE;
				sl->done = done;
				source_publish(s, false);
				p = (const char *)p + SLOT_SIZE;
				n -= SLOT_SIZE;
				if (!source_wait_free(s))
					goto out;
				sl = &s->slots[s->filled % SLOTS];
			}
			memcpy(sl->data, p, n);
		} else {
			ssize_t got = blob_read(s, sl->data, SLOT_SIZE);
			if (got <= 0)
				break;
			n = (size_t)got;
			done = plain += n;
		}
		sl->len = n;
		sl->done = done;
		source_publish(s, false);
	}
out:
	source_publish(s, true);
	return NULL;
}

static la_ssize_t source_read(struct archive *a, void *arg, const void **out)
{
	struct source *s = arg;
	struct slot *sl;

	pthread_mutex_lock(&s->mu);
	if (s->holding) {	/* the block handed out last time is free */
		s->holding = false;
		pthread_cond_broadcast(&s->cv);
	}
	while (s->taken == s->filled && !s->eof)
		pthread_cond_wait(&s->cv, &s->mu);
	if (s->taken == s->filled) {
		pthread_mutex_unlock(&s->mu);
		if (s->err.code) {
			archive_set_error(a, EINVAL, "%s", s->err.msg);
			return -1;
		}
		if (!s->digest[0])
			digester_final(&s->dg, s->digest);
		return 0;
	}
	sl = &s->slots[s->taken % SLOTS];
	s->taken++;
	s->holding = true;
	pthread_mutex_unlock(&s->mu);
	/* hashed here, so that the two threads share the work evenly */
	digester_update(&s->dg, sl->data, sl->len);
	progress_update(&s->x->prog, s->x->done + sl->done);
	*out = sl->data;
	return (la_ssize_t)sl->len;
}

static int source_open(struct source *s, const struct oci_layout *l,
    const struct image_layer *ly, struct vs_err *e)
{
	cleanup_free char *path = layout_blob_path(l, ly->digest);
	struct archive_entry *ae;
	int r;

	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	for (size_t i = 0; i < SLOTS; i++) {
		s->slots[i].data = malloc(SLOT_SIZE);
		if (s->slots[i].data == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "read");
	}
	s->fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (s->fd < 0)
		return vs_error(e, errno == ENOENT ? EX_NOINPUT : EX_IOERR,
		    errno, "%s", path ? path : ly->digest);
	(void)posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (digester_init(&s->dg, ly->diff_id, e) < 0)
		return -1;
	if (ly->compression == LAYER_GZIP) {
		unsigned char magic[2];
		if (pread(s->fd, magic, 2, 0) != 2 || magic[0] != 0x1f ||
		    magic[1] != 0x8b)
			return vs_error(e, EX_DATAERR, 0,
			    "its media type says %s, but it is not gzip-compressed",
			    ly->media_type);
		s->in = malloc(INBUF);
		if (s->in == NULL || (s->gz = inflater_new(e)) == NULL)
			return s->in ? -1 : vs_error(e, EX_OSERR, ENOMEM, "read");
	} else if (ly->compression == LAYER_ZSTD) {
		s->raw = archive_read_new();
		if (s->raw == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "libarchive");
		archive_read_support_filter_zstd(s->raw);
		archive_read_support_format_raw(s->raw);
		archive_read_support_format_empty(s->raw);
		if (archive_read_open_fd(s->raw, s->fd, SLOT_SIZE) != ARCHIVE_OK ||
		    (r = archive_read_next_header(s->raw, &ae)) < ARCHIVE_OK)
			return vs_error(e, EX_DATAERR, 0, "%s",
			    archive_error_string(s->raw));
		s->empty = r == ARCHIVE_EOF;
		/* without the filter, raw would pass the bytes as they are */
		if (archive_filter_code(s->raw, 0) != ARCHIVE_FILTER_ZSTD)
			return vs_error(e, EX_DATAERR, 0,
			    "its media type says %s, but it is not zstd-compressed",
			    ly->media_type);
	}
	if ((errno = pthread_create(&s->thread, NULL, source_reader, s)) != 0)
		return vs_error(e, EX_OSERR, errno, "start a thread");
	s->started = true;
	return 0;
}

/* Stop the reader (if it still runs) and free everything. */
static void source_close(struct source *s)
{
	if (s->closed)
		return;
	s->closed = true;
	if (s->started) {
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
	}
	if (s->raw)
		archive_read_free(s->raw);
	inflater_free(s->gz);
	free(s->in);
	if (s->fd >= 0)
		close(s->fd);
	digester_free(&s->dg);
	for (size_t i = 0; i < SLOTS; i++)
		free(s->slots[i].data);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
}

/* Apply one layer, then check its diff_id. */
static int apply_layer(struct applying *x, const struct oci_layout *l,
    const struct image_layer *ly, struct vs_err *e)
{
	struct source s = { .x = x, .fd = -1 };
	struct archive *tar = NULL;
	struct archive_entry *ae;
	const void *p;
	int rc = -1, r;

	x->entry = NULL;
	strmap_clear(&x->layer);
	if (source_open(&s, l, ly, e) < 0) {
		vs_error_prefix(e, "layer %zu (%s)", x->layer_no, ly->digest);
		goto out;
	}
	tar = archive_read_new();
	if (tar == NULL) {
		vs_error(e, EX_OSERR, ENOMEM, "libarchive");
		goto out;
	}
	archive_read_support_format_tar(tar);
	archive_read_support_format_empty(tar);	/* an empty layer */
	if (archive_read_open(tar, &s, NULL, source_read, NULL) != ARCHIVE_OK)
		goto bad_tar;
	for (;;) {
		r = archive_read_next_header(tar, &ae);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			goto bad_tar;
		if (stop_signal) {
			vs_error(e, EX_TEMPFAIL, 0, "interrupted");
			goto out;
		}
		if (apply_entry(x, tar, ae, e) < 0)
			goto out;
	}
	x->entry = NULL;
	/* What follows the end of the archive counts in the diff_id too. */
	while ((r = (int)source_read(tar, &s, &p)) > 0)
		;
	if (r < 0)
		goto bad_tar;
	if (strcmp(s.digest, ly->diff_id) != 0) {
		vs_error(e, EX_DATAERR, 0,
		    "layer %zu (%s): its content has the digest %s, but the image config says %s",
		    x->layer_no, ly->digest, s.digest, ly->diff_id);
		goto out;
	}
	x->done += (uint64_t)ly->size;
	rc = 0;
	goto out;
bad_tar:
	source_close(&s);	/* the reader's error is ours to read once it ends */
	if (s.err.code)
		*e = s.err;
	else
		vs_error(e, EX_DATAERR, 0, "%s", archive_error_string(tar) ?
		    archive_error_string(tar) : "not a tar archive");
	vs_error_prefix(e, "layer %zu (%s)", x->layer_no, ly->digest);
out:
	if (tar)
		archive_read_free(tar);
	source_close(&s);
	return rc;
}

int layers_apply(const struct oci_layout *l, const struct image *img,
    const struct layer_sink *sink, const char *label, bool quiet,
    struct vs_err *e)
{
	struct applying x = { .sink = sink, .layer = STRMAP_INIT };
	uint64_t total = 0;
	int rc = 0;

	for (size_t i = 0; i < img->nlayers; i++)
		total += (uint64_t)img->layers[i].size;
	progress_start(&x.prog, stderr, label, total,
	    progress_wanted(stderr, quiet));
	for (size_t i = 0; rc == 0 && i < img->nlayers; i++) {
		x.layer_no = i + 1;
		rc = apply_layer(&x, l, &img->layers[i], e);
	}
	progress_end(&x.prog);
	strmap_free(&x.layer);
	return rc;
}

const char *layers_inflater(void)
{
	struct vs_err ignored;
	struct inflater *z = inflater_new(&ignored);
	const char *name = z ? inflater_name(z) : "zlib";

	inflater_free(z);
	return name;
}
