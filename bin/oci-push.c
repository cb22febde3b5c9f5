/* oci-push: push a VM disk image, with its kernel and initrd, to an OCI
 * registry as one artifact (common/artifact.h): fixed chunks, zero chunks
 * only listed, the others zstd-compressed blobs, what the registry has
 * already never sent again. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "artifact.h"
#include "cleanup.h"
#include "config.h"
#include "digest.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "kernel.h"
#include "lock.h"
#include "path.h"
#include "progress.h"
#include "ref.h"
#include "registry.h"
#include "size.h"
#include "stop.h"

#define SYNOPSIS "oci-push [-qV] [-C DIR] [-c FILE] [-g GROUP] [-j N] [--insecure] [--chunk-size SIZE] [--mount-from REPO] [-k KERNEL] [-i INITRD] [IMG] REF"
#define PIECE (1u << 20)

enum { OPT_INSECURE = 256, OPT_CHUNK, OPT_MOUNT };

struct opts {
	const char *dir, *config, *group, *kernel, *initrd, *mount_from;
	long jobs;
	bool quiet, insecure;
	uint64_t part;		/* --chunk-size: bytes per upload request */
};

/* What the push shares between its workers. */
struct push {
	const struct opts *o;
	struct oci_ref ref;
	int fd;			/* the image */
	uint64_t size, chunk;
	size_t n, next;		/* chunks, the next to take */
	struct art_chunk *c;
	uint64_t *csize;	/* each chunk's compressed size, 0: zero */
	char zero_full[DIGEST_MAX], zero_last[DIGEST_MAX];
	uint64_t uploaded, skipped, zero, mounted;	/* bytes */
	uint64_t done_bytes;
	struct progress bar;
	bool failed;
	struct vs_err err;
	pthread_mutex_t mu;
	const char *tmpdir;
	int level, zthreads;
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: oci-push [-qV] [-C DIR] [-c FILE] [-g GROUP] [-j N] [--insecure]\n"
	    "                [--chunk-size SIZE] [--mount-from REPO] [-k KERNEL]\n"
	    "                [-i INITRD] [IMG] REF\n"
	    "\n"
	    "Push the disk image IMG (or the pipeline document's disk, else its base;\n"
	    "or with -g, the group's base) and its kernel and initrd to the registry\n"
	    "as one OCI artifact: the image in chunks of 32 MiB, those of zeros only\n"
	    "listed, the others compressed with zstd; what the registry already has\n"
	    "is not sent again.\n"
	    "\n"
	    "  -C, --directory DIR  the workspace (default: the current directory)\n"
	    "  -c, --config FILE    slicer-mac.yaml to read (its insecure_registry)\n"
	    "  -g, --group GROUP    push GROUP-base.img and kernel/GROUP/ when no IMG\n"
	    "  -j, --jobs N         chunks at once (default 4)\n"
	    "  -k, --kernel KERNEL  the kernel (default: the document's)\n"
	    "  -i, --initrd INITRD  the initrd (default: the document's)\n"
	    "      --chunk-size SIZE  upload a blob in requests of SIZE at most (like\n"
	    "                       8M), for registries that cap a request's size\n"
	    "      --mount-from REPO  mount blobs from REPO of the same registry first\n"
	    "      --insecure       allow plain HTTP or unverified TLS for REF's registry\n"
	    "  -q, --quiet          no progress display, no notes\n"
	    "  -h, --help           show this help and exit\n"
	    "  -V, --version        show the version and exit\n"
	    "\n"
	    "The document with a 'push' section is written to stdout.  See oci-push(1).\n");
}

/* --- one chunk ------------------------------------------------------------ */

/* Compress chunk i into a nameless temporary file: *tfd, its digest and
 * size; the uncompressed digest into c.  *zero when it is all zeros. */
static int pack(struct push *p, ZSTD_CCtx *cc, size_t i, unsigned char *in,
    unsigned char *out, size_t outcap, int *tfd, char blob[DIGEST_MAX],
    uint64_t *bsize, bool *zero, struct vs_err *e)
{
	struct art_chunk *c = &p->c[i];
	struct digester du, dc;
	off_t data;
	bool allz = true;
	uint64_t off = 0, written = 0;
	int fd = -1;

	*zero = false;
	*tfd = -1;
	/* no data at all in it: a hole */
	data = lseek(p->fd, (off_t)c->off, SEEK_DATA);
	if ((data < 0 && errno == ENXIO) || (data >= 0 &&
	    (uint64_t)data >= c->off + c->len)) {
		*zero = true;
		snprintf(c->digest, sizeof c->digest, "%s", c->len == p->chunk ?
		    p->zero_full : p->zero_last);
		return 0;
	}
	if (digester_init(&du, "sha256", e) < 0)
		return -1;
	if (digester_init(&dc, "sha256", e) < 0) {
		digester_free(&du);
		return -1;
	}
	fd = open(p->tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s: a temporary file", p->tmpdir);
		goto fail;
	}
	ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
	ZSTD_CCtx_setPledgedSrcSize(cc, c->len);
	while (off < c->len) {
		size_t want = c->len - off < PIECE ? (size_t)(c->len - off) : PIECE;
		ssize_t got = pread(p->fd, in, want, (off_t)(c->off + off));
		ZSTD_inBuffer zin;
		bool last;

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			vs_error(e, EX_IOERR, got < 0 ? errno : 0,
			    "read the image at %llu", (unsigned long long)(c->off + off));
			goto fail;
		}
		if (stop_signal) {
			vs_error(e, EX_TEMPFAIL, 0, "interrupted");
			goto fail;
		}
		digester_update(&du, in, (size_t)got);
		if (allz) {
			static const unsigned char z[64];
			for (ssize_t k = 0; k < got && allz; k += 64)
				allz = memcmp(in + k, z, (size_t)(got - k < 64 ? got - k : 64)) == 0;
		}
		off += (uint64_t)got;
		last = off == c->len;
		zin = (ZSTD_inBuffer){ in, (size_t)got, 0 };
		for (;;) {
			ZSTD_outBuffer zout = { out, outcap, 0 };
			size_t r = ZSTD_compressStream2(cc, &zout, &zin,
			    last ? ZSTD_e_end : ZSTD_e_continue);
			if (ZSTD_isError(r)) {
				vs_error(e, EX_SOFTWARE, 0, "zstd: %s", ZSTD_getErrorName(r));
				goto fail;
			}
			if (zout.pos) {
				if (write(fd, out, zout.pos) != (ssize_t)zout.pos) {
					vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
					    "%s: a temporary file", p->tmpdir);
					goto fail;
				}
				digester_update(&dc, out, zout.pos);
				written += zout.pos;
			}
			if (last ? r == 0 : zin.pos == zin.size)
				break;
		}
	}
	digester_final(&du, c->digest);
	digester_final(&dc, blob);
	if (allz) {
		close(fd);
		*zero = true;
		return 0;
	}
	*tfd = fd;
	*bsize = written;
	return 0;
fail:
	digester_free(&du);
	digester_free(&dc);
	if (fd >= 0)
		close(fd);
	return -1;
}

static void *worker(void *arg)
{
	struct push *p = arg;
	struct vs_err e = { 0 };
	struct registry *r = registry_open(&p->ref, p->o->insecure, 0, &e);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t outcap = ZSTD_CStreamOutSize();
	unsigned char *in = malloc(PIECE), *out = malloc(outcap);

	if (r == NULL || cc == NULL || in == NULL || out == NULL) {
		if (r != NULL)
			vs_error(&e, EX_OSERR, ENOMEM, "oci-push");
		goto fail;
	}
	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, p->level);
	if (p->zthreads > 1)
		ZSTD_CCtx_setParameter(cc, ZSTD_c_nbWorkers, p->zthreads);
	for (;;) {
		size_t i;
		int tfd = -1, rc;
		char blob[DIGEST_MAX];
		uint64_t bsize = 0;
		bool zero;

		pthread_mutex_lock(&p->mu);
		i = p->failed || stop_signal ? p->n : p->next++;
		pthread_mutex_unlock(&p->mu);
		if (i >= p->n)
			break;
		if (pack(p, cc, i, in, out, outcap, &tfd, blob, &bsize, &zero, &e) < 0)
			goto fail;
		if (zero) {
			pthread_mutex_lock(&p->mu);
			p->c[i].blob[0] = '\0';
			p->csize[i] = 0;
			p->zero += p->c[i].len;
			p->done_bytes += p->c[i].len;
			progress_update(&p->bar, p->done_bytes);
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		/* (1: the registry has it; else 1 uploaded, 2 mounted) */
		rc = registry_blob_exists(r, blob, &e);
		if (rc == 0)
			rc = 10 + registry_push_blob(r, blob, tfd, 0, bsize,
			    p->o->mount_from, p->o->part, &e);
		close(tfd);
		if (rc < 0 || rc == 9)
			goto fail;
		pthread_mutex_lock(&p->mu);
		snprintf(p->c[i].blob, sizeof p->c[i].blob, "%s", blob);
		p->csize[i] = bsize;
		if (rc == 1)
			p->skipped += bsize;
		else if (rc == 11)
			p->uploaded += bsize;
		else
			p->mounted += bsize;
		p->done_bytes += p->c[i].len;
		progress_update(&p->bar, p->done_bytes);
		pthread_mutex_unlock(&p->mu);
		continue;
	}
	ZSTD_freeCCtx(cc);
	free(in);
	free(out);
	registry_close(r);
	return NULL;
fail:
	pthread_mutex_lock(&p->mu);
	if (!p->failed) {
		p->failed = true;
		p->err = e;
	}
	pthread_mutex_unlock(&p->mu);
	ZSTD_freeCCtx(cc);
	free(in);
	free(out);
	registry_close(r);
	return NULL;
}

/* --- the rest of the artifact --------------------------------------------- */

/* Push the file at path as a blob: its digest and size out. */
static int push_file(struct registry *r, const char *path, const struct opts *o,
    char digest[DIGEST_MAX], uint64_t *size, struct push *p, struct vs_err *e)
{
	cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct digester d;
	struct stat st;
	int rc;

	if (fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno, "%s", path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return vs_error(e, EX_DATAERR, 0, "%s: not a regular file", path);
	if (digester_init(&d, "sha256", e) < 0 ||
	    digester_feed_fd(&d, fd, (uint64_t)st.st_size, e) < 0)
		return -1;
	digester_final(&d, digest);
	*size = (uint64_t)st.st_size;
	rc = registry_blob_exists(r, digest, e);
	if (rc == 0)
		rc = 10 + registry_push_blob(r, digest, fd, 0, *size, o->mount_from,
		    o->part, e);
	if (rc < 0 || rc == 9)
		return -1;
	*(rc == 1 ? &p->skipped : rc == 11 ? &p->uploaded : &p->mounted) += *size;
	return 0;
}

static int push_buffer(struct registry *r, const char *tmpdir, const char *buf,
    size_t len, const struct opts *o, char digest[DIGEST_MAX], struct push *p,
    struct vs_err *e)
{
	cleanup_fd int fd = open(tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	int rc;

	if (fd < 0)
		return vs_error(e, EX_CANTCREAT, errno, "%s: a temporary file", tmpdir);
	if (write(fd, buf, len) != (ssize_t)len)
		return vs_error(e, EX_IOERR, errno, "%s: a temporary file", tmpdir);
	if (digest_buffer(buf, len, "sha256:", digest, e) < 0)
		return -1;
	rc = registry_blob_exists(r, digest, e);
	if (rc == 0)
		rc = 10 + registry_push_blob(r, digest, fd, 0, len, o->mount_from,
		    o->part, e);
	if (rc < 0 || rc == 9)
		return -1;
	*(rc == 1 ? &p->skipped : rc == 11 ? &p->uploaded : &p->mounted) += len;
	return 0;
}

/* The filesystem's UUID, from the ext superblock, or "". */
static void fs_uuid(int fd, char out[40])
{
	unsigned char sb[136];

	out[0] = '\0';
	if (pread(fd, sb, sizeof sb, 1024) != (ssize_t)sizeof sb ||
	    sb[56] != 0x53 || sb[57] != 0xef)
		return;
	snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	    sb[104], sb[105], sb[106], sb[107], sb[108], sb[109], sb[110], sb[111],
	    sb[112], sb[113], sb[114], sb[115], sb[116], sb[117], sb[118], sb[119]);
}

/* The kernel's format, version and architecture, from its bytes. */
static json_t *kernel_json(const char *path, const char *digest, uint64_t size,
    struct vs_err *e)
{
	unsigned char head[KERNEL_HEAD];
	struct kernel_info ki;
	cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return vs_error(e, EX_NOINPUT, errno, "%s", path), NULL;
	n = pread(fd, head, sizeof head, 0);
	if (n <= 0 || kernel_identify(head, (size_t)n, size, &ki, e) < 0)
		return vs_error_prefix(e, "%s", path), NULL;
	return json_pack("{s:s, s:I, s:s, s:s?, s:s?}", "digest", digest,
	    "size", (json_int_t)size, "format", kernel_form_name(ki.form),
	    "version", ki.version[0] ? ki.version : NULL, "arch", ki.arch);
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "chunk-size", required_argument, NULL, OPT_CHUNK },
		{ "config", required_argument, NULL, 'c' },
		{ "directory", required_argument, NULL, 'C' },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "initrd", required_argument, NULL, 'i' },
		{ "insecure", no_argument, NULL, OPT_INSECURE },
		{ "jobs", required_argument, NULL, 'j' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "mount-from", required_argument, NULL, OPT_MOUNT },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .jobs = 4 };
	struct push p = { .o = &o, .fd = -1, .level = 3 };
	struct vs_err e = { 0 };
	cleanup_json json_t *doc = NULL, *cfg = NULL, *man = NULL;
	cleanup_free char *img = NULL, *kpath = NULL, *ipath = NULL;
	cleanup_free char *cfgpath = NULL, *cfgtext = NULL, *mtext = NULL;
	char source[DIGEST_MAX] = "", uuid[40], cdigest[DIGEST_MAX], mdigest[DIGEST_MAX];
	char kdigest[DIGEST_MAX] = "", idigest[DIGEST_MAX] = "";
	uint64_t ksize = 0, isize = 0;
	const char *refstr;
	struct registry *r = NULL;
	pthread_t *th = NULL;
	long long num;
	struct stat st;
	bool present = false;
	int c, rc = -1;

	fe_init(argv[0]);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:c:g:hi:j:k:qV", longopts, NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'c': o.config = optarg; break;
		case 'g': o.group = optarg; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'i': o.initrd = optarg; break;
		case 'j':
			if (fe_number(optarg, 1, 64, &num, "-j", &e) < 0)
				return fe_fail(&e);
			o.jobs = (long)num;
			break;
		case 'k': o.kernel = optarg; break;
		case 'q': o.quiet = true; break;
		case 'V':
			fe_version();
			return fe_finish(0);
		case OPT_INSECURE: o.insecure = true; break;
		case OPT_CHUNK:
			if (size_parse(optarg, &o.part, &e) < 0)
				return fe_fail_usage(SYNOPSIS, &e);
			break;
		case OPT_MOUNT:
			if (!*optarg || strchr(optarg, '?') || strchr(optarg, '&'))
				return fe_usage_error(SYNOPSIS,
				    "--mount-from '%s': not a repository name", optarg);
			o.mount_from = optarg;
			break;
		default:
			return fe_bad_option(SYNOPSIS, c, optopt, argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1 || argc > 2)
		return fe_usage_error(SYNOPSIS, argc == 0 ?
		    "missing operand: give REF (and IMG, or a document on stdin, or -g GROUP)" :
		    "too many operands");
	refstr = argv[argc - 1];
	if (ref_parse(refstr, &p.ref, &e) < 0)
		return fe_fail_usage(SYNOPSIS, &e);
	if (o.group && path_check_name("group", o.group, &e) < 0)
		return fe_fail_usage(SYNOPSIS, &e);
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		return fe_fail(&e);
	}
	/* the configuration: its insecure_registry, for its own registry */
	if (config_locate(".", o.config, &cfgpath, &e) < 0)
		return fe_fail(&e);
	if (cfgpath) {
		struct vs_config vc;
		struct oci_ref cref;
		struct vs_err ignore;

		if (config_load(&vc, cfgpath, &e) < 0) {
			config_free(&vc);
			return fe_fail(&e);
		}
		if (vc.insecure_registry && vc.image &&
		    ref_parse(vc.image, &cref, &ignore) == 0 &&
		    strcmp(cref.registry, p.ref.registry) == 0)
			o.insecure = true;
		config_free(&vc);
	}
	/* what to push */
	if (argc == 2) {
		img = strdup(argv[0]);
		doc = json_object();
	} else if (o.group) {
		if (asprintf(&img, "%s-base.img", o.group) < 0)
			img = NULL;
		if (asprintf(&kpath, "kernel/%s/Image", o.group) < 0)
			kpath = NULL;
		if (asprintf(&ipath, "kernel/%s/initrd", o.group) < 0)
			ipath = NULL;
		if (ipath && access(ipath, F_OK) < 0) {
			free(ipath);
			ipath = NULL;
		}
		doc = json_object();
	} else {
		const char *which;
		doc = doc_read_stdin(&present, &e);
		if (doc == NULL)
			return fe_fail(&e);
		if (!present)
			return fe_usage_error(SYNOPSIS,
			    "no image: give IMG REF, -g GROUP, or pipe a document with a disk or base");
		which = json_object_get(doc, "disk") ? "disk" : "base";
		if (json_string_value(json_object_get(json_object_get(doc, which), "path")) == NULL) {
			vs_error(&e, EX_DATAERR, 0, "the document has no disk.path or base.path");
			return fe_fail(&e);
		}
		img = strdup(json_string_value(json_object_get(json_object_get(doc, which), "path")));
		if (json_string_value(json_object_get(json_object_get(doc, "kernel"), "path")))
			kpath = strdup(json_string_value(json_object_get(json_object_get(doc,
			    "kernel"), "path")));
		if (json_string_value(json_object_get(json_object_get(doc, "kernel"), "initrd")))
			ipath = strdup(json_string_value(json_object_get(json_object_get(doc,
			    "kernel"), "initrd")));
		if (json_string_value(json_object_get(json_object_get(doc, "base"), "source")))
			snprintf(source, sizeof source, "%s", json_string_value(
			    json_object_get(json_object_get(doc, "base"), "source")));
	}
	if (doc == NULL || img == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "oci-push");
		return fe_fail(&e);
	}
	{
		/* (the document says where from, absolutely) */
		char *abs = path_abs(img, &e);
		if (abs == NULL)
			return fe_fail(&e);
		free(img);
		img = abs;
	}
	if (o.kernel) {
		free(kpath);
		kpath = strdup(o.kernel);
	}
	if (o.initrd) {
		free(ipath);
		ipath = strdup(o.initrd);
	}
	p.fd = open(img, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (p.fd < 0) {
		vs_error(&e, vs_code_for_errno(errno, EX_NOINPUT), errno, "%s", img);
		return fe_fail(&e);
	}
	if (fstat(p.fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
		vs_error(&e, EX_DATAERR, 0, "%s: not a disk image (a regular file)", img);
		return fe_fail(&e);
	}
	if (lock_qemu_writer(p.fd) == 1) {
		vs_error(&e, EX_TEMPFAIL, 0,
		    "%s: in use by a running VM that writes to it; stop it, or push a snapshot of it (vmstrap snapshot save, vmstrap push)",
		    img);
		return fe_fail(&e);
	}
	fs_uuid(p.fd, uuid);
	if (!source[0]) {
		/* mkbase's record beside the base */
		cleanup_free char *dir = NULL, *base = NULL, *rec = NULL;
		if (path_split(img, &dir, &base) == 0 &&
		    asprintf(&rec, "%s/.%s.json", dir, base) >= 0) {
			cleanup_json json_t *j = json_load_file(rec, 0, NULL);
			const char *s = json_string_value(json_object_get(j, "source"));
			if (s && digest_valid(s))
				snprintf(source, sizeof source, "%s", s);
		} else {
			rec = NULL;
		}
	}
	p.size = (uint64_t)st.st_size;
	p.chunk = ART_CHUNK_SIZE;
	p.n = (size_t)((p.size + p.chunk - 1) / p.chunk);
	p.c = calloc(p.n, sizeof *p.c);
	p.csize = calloc(p.n, sizeof *p.csize);
	th = calloc((size_t)o.jobs, sizeof *th);
	p.tmpdir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	if (p.c == NULL || p.csize == NULL || th == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "oci-push");
		goto out;
	}
	for (size_t i = 0; i < p.n; i++) {
		p.c[i].off = (uint64_t)i * p.chunk;
		p.c[i].len = p.size - p.c[i].off < p.chunk ? p.size - p.c[i].off : p.chunk;
	}
	snprintf(p.zero_full, sizeof p.zero_full, "%s", artifact_zero_digest(p.chunk));
	snprintf(p.zero_last, sizeof p.zero_last, "%s",
	    artifact_zero_digest(p.c[p.n - 1].len));
	{
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		p.zthreads = ncpu > o.jobs ? (int)(ncpu / o.jobs) : 1;
	}
	pthread_mutex_init(&p.mu, NULL);
	stop_on_signals();
	progress_start(&p.bar, stderr, "oci-push: pushing", p.size,
	    progress_wanted(stderr, o.quiet));
	{
		long started = 0;
		for (long i = 0; i < o.jobs; i++) {
			if (pthread_create(&th[i], NULL, worker, &p) != 0)
				break;
			started++;
		}
		for (long i = 0; i < started; i++)
			pthread_join(th[i], NULL);
		if (started == 0) {
			p.failed = true;
			vs_error(&p.err, EX_OSERR, errno, "threads");
		}
	}
	progress_end(&p.bar);
	if (p.failed || stop_signal) {
		e = p.err;
		if (!e.code)
			vs_error(&e, EX_TEMPFAIL, 0, "interrupted");
		goto out;
	}

	r = registry_open(&p.ref, o.insecure, 0, &e);
	if (r == NULL)
		goto out;
	/* the kernel and the initrd, as they are */
	cfg = json_pack("{s:i, s:I, s:I, s:[], s:o, s:o, s:n, s:n}", "vmstrap", 1,
	    "size", (json_int_t)p.size, "chunk_size", (json_int_t)p.chunk, "chunks",
	    "filesystem", uuid[0] ? json_pack("{s:s, s:s}", "type", "ext4", "uuid", uuid) :
	    json_null(), "source", source[0] ? json_string(source) : json_null(),
	    "kernel", "initrd");
	man = json_pack("{s:i, s:s, s:s, s:{}, s:[], s:{s:s}}", "schemaVersion", 2,
	    "mediaType", "application/vnd.oci.image.manifest.v1+json",
	    "artifactType", ART_TYPE, "config", "layers", "annotations",
	    "org.opencontainers.image.title", img);
	if (cfg == NULL || man == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "oci-push");
		goto out;
	}
	for (size_t i = 0; i < p.n; i++) {
		json_array_append_new(json_object_get(cfg, "chunks"), json_pack(
		    "{s:I, s:I, s:s, s:s}", "offset", (json_int_t)p.c[i].off,
		    "length", (json_int_t)p.c[i].len, "digest", p.c[i].digest,
		    "blob", p.c[i].blob[0] ? p.c[i].blob : "zero"));
		if (!p.c[i].blob[0])
			continue;
		/* (each blob once in the manifest) */
		bool seen = false;
		for (size_t k = 0; k < i && !seen; k++)
			seen = strcmp(p.c[k].blob, p.c[i].blob) == 0;
		if (!seen)
			json_array_append_new(json_object_get(man, "layers"), json_pack(
			    "{s:s, s:s, s:I}", "mediaType", ART_CHUNK, "digest", p.c[i].blob,
			    "size", (json_int_t)p.csize[i]));
	}
	if (kpath) {
		if (push_file(r, kpath, &o, kdigest, &ksize, &p, &e) < 0)
			goto out;
		json_t *kj = kernel_json(kpath, kdigest, ksize, &e);
		if (kj == NULL)
			goto out;
		json_object_set_new(cfg, "kernel", kj);
		json_array_append_new(json_object_get(man, "layers"), json_pack(
		    "{s:s, s:s, s:I}", "mediaType", ART_KERNEL, "digest", kdigest,
		    "size", (json_int_t)ksize));
	}
	if (ipath) {
		if (push_file(r, ipath, &o, idigest, &isize, &p, &e) < 0)
			goto out;
		json_object_set_new(cfg, "initrd", json_pack("{s:s, s:I}", "digest",
		    idigest, "size", (json_int_t)isize));
		json_array_append_new(json_object_get(man, "layers"), json_pack(
		    "{s:s, s:s, s:I}", "mediaType", ART_INITRD, "digest", idigest,
		    "size", (json_int_t)isize));
	}
	cfgtext = json_dumps(cfg, JSON_COMPACT);
	if (cfgtext == NULL || push_buffer(r, p.tmpdir, cfgtext, strlen(cfgtext), &o,
	    cdigest, &p, &e) < 0) {
		if (cfgtext == NULL)
			vs_error(&e, EX_OSERR, ENOMEM, "oci-push");
		goto out;
	}
	json_object_set_new(man, "config", json_pack("{s:s, s:s, s:I}", "mediaType",
	    ART_CONFIG, "digest", cdigest, "size", (json_int_t)strlen(cfgtext)));
	mtext = json_dumps(man, JSON_COMPACT);
	if (mtext == NULL || digest_buffer(mtext, strlen(mtext), "sha256:", mdigest, &e) < 0) {
		if (mtext == NULL)
			vs_error(&e, EX_OSERR, ENOMEM, "oci-push");
		goto out;
	}
	if (registry_put_manifest(r, p.ref.digest[0] ? p.ref.digest : p.ref.tag,
	    "application/vnd.oci.image.manifest.v1+json", mtext, strlen(mtext), NULL,
	    &e) < 0)
		goto out;
	{
		json_t *sec = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
		    "ref", p.ref.name, "digest", mdigest, "image", img,
		    "size", (json_int_t)p.size, "chunks", (json_int_t)p.n,
		    "uploaded", (json_int_t)p.uploaded,
		    "skipped", (json_int_t)p.skipped,
		    "mounted", (json_int_t)p.mounted, "zero", (json_int_t)p.zero);
		if (sec == NULL || doc_set(doc, "push", sec, &e) < 0)
			goto out;
	}
	if (!o.quiet) {
		char a[32], b[32], z[32];
		fe_warn("%s: %zu chunks, %s sent, %s the registry had, %s of zeros not sent",
		    p.ref.name, p.n, size_human(p.uploaded, a, sizeof a),
		    size_human(p.skipped, b, sizeof b),
		    size_human(p.zero, z, sizeof z));
	}
	rc = doc_write(stdout, doc, &e);
out:
	registry_close(r);
	if (p.fd >= 0)
		close(p.fd);
	free(p.c);
	free(p.csize);
	free(th);
	if (rc < 0)
		return fe_finish(fe_fail(&e));
	return fe_finish(0);
}
