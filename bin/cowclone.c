/* cowclone: give a VM its disk, a copy-on-write clone of the base image. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>
#include <jansson.h>

#include "atomic.h"
#include "cleanup.h"
#include "clone.h"
#include "doc.h"
#include "err.h"
#include "ext4w.h"
#include "fe.h"
#include "lock.h"
#include "path.h"
#include "progress.h"
#include "qmp.h"
#include "run.h"
#include "size.h"
#include "vmstate.h"

#define SYNOPSIS "cowclone [-fqV] [-s SIZE] [--no-sync] [--keep FILE] [--live [--pause-ok] [--qmp SOCKET]] SRC DST | NAME < document"

/* How long a live clone may keep the guest paused before the watchdog
 * resumes it (and the clone is thrown away): a reflink takes
 * milliseconds, even of a disk in thousands of extents. */
#define LIVE_LIMIT_SECS 10
/* What a copy is taken to run at, to say how long it would pause. */
#define COPY_RATE (400.0 * 1024 * 1024)

struct opts {
	bool force;
	bool quiet;
	bool nosync;		/* --no-sync: leave the copy to the kernel */
	uint64_t grow;		/* -s, or 0 */
	const char *grow_arg;
	bool live;		/* --live: SRC may be a running VM's disk */
	bool pause_ok;		/* --pause-ok: even when it must be copied */
	const char *qmp;	/* --qmp: that VM's QMP socket */
	const char *keep;	/* --keep: the replaced DST renamed there */
};

/* A live clone: the VM whose disk is the source, and what was done to it. */
struct live {
	char *vm;		/* its name, or NULL (--qmp) */
	char *sock;		/* its QMP socket */
	int s;			/* the connection, or -1 */
	char state[64];		/* its guest's state when cloned */
	bool paused;		/* paused by us */
	struct qmp_pause pz;
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: cowclone [-fqV] [-s SIZE] [--no-sync] [--keep FILE]\n"
	    "                [--live [--pause-ok] [--qmp SOCKET]] SRC DST\n"
	    "       cowclone [-fqV] [-s SIZE] [--no-sync] NAME < document\n"
	    "\n"
	    "Clone the disk image SRC to DST copy-on-write (reflink, clonefile),\n"
	    "or else as a sparse copy.  With NAME, the source is the pipeline\n"
	    "document's base.path and the disk is NAME.img beside it.\n"
	    "\n"
	    "  -f, --force       replace DST if it exists (never while a VM runs on it)\n"
	    "      --keep FILE   replace DST, and keep the file it replaces as FILE\n"
	    "                    (renamed, not copied: the two swapped at once)\n"
	    "  -s, --size SIZE   grow the clone and its ext4 filesystem to SIZE (like 20G)\n"
	    "      --no-sync     do not wait for a copy to reach the disk before naming\n"
	    "                    it DST (faster, like cp; for disks a crash may lose)\n"
	    "      --live        SRC may be the disk of a running VM: its guest is paused\n"
	    "                    (QMP stop) for the clone, then resumed, a crash-consistent\n"
	    "                    snapshot; its QMP socket is found in the workspace's run/\n"
	    "      --pause-ok    --live even where the clone is a copy (no reflinks), which\n"
	    "                    pauses the guest for as long as the copy takes\n"
	    "      --qmp SOCKET  --live with that QMP socket (a QEMU that is not vmrun's)\n"
	    "  -q, --quiet       no progress display\n"
	    "  -h, --help        show this help and exit\n"
	    "  -V, --version     show the version and exit\n"
	    "\n"
	    "The document with a 'disk' section is written to stdout.  See cowclone(1).\n");
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
	struct progress *p = arg;

	(void)total;
	progress_update(p, done);
}

static bool utf8_ok(const char *s)
{
	json_t *j = json_string(s);

	json_decref(j);
	return j != NULL;
}

/* The NAME form: the source is the document's base.path, the disk NAME.img
 * beside it.  *src and *dst are the caller's to free. */
static int disk_of_document(const json_t *doc, const char *name, char **src,
    char **dst, struct vs_err *e)
{
	cleanup_free char *dir = NULL;
	size_t nl = strlen(name);
	const char *base;

	base = doc_need_str(doc, "base", "path",
	    "pipe mkbase's output, or give SRC DST", e);
	if (base == NULL)
		return -1;
	if (base[0] != '/')
		return vs_error(e, EX_DATAERR, 0,
		    "pipeline document's base.path '%s' is not an absolute path",
		    base);
	if (path_split(base, &dir, NULL) < 0 || (*src = strdup(base)) == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", name);
	if (asprintf(dst, "%s/%s%s", dir, name, nl > 4 &&
	    strcmp(name + nl - 4, ".img") == 0 ? "" : ".img") < 0) {
		*dst = NULL;
		return vs_error(e, EX_OSERR, ENOMEM, "%s", name);
	}
	return 0;
}

/* --keep FILE: where the replaced DST goes, checked before anything is
 * done: a new name, on DST's filesystem (it is renamed, not copied).
 * Returns its absolute path (the caller's), or NULL with e set. */
static char *keep_check(const char *keep, const char *dst_abs, struct vs_err *e)
{
	cleanup_free char *dir = NULL, *ddir = NULL;
	char *abs;
	struct stat st, dst;

	if (keep[0] == '\0' || keep[strlen(keep) - 1] == '/')
		return vs_error(e, EX_USAGE, 0,
		    "--keep '%s': name the file to keep the replaced disk as", keep), NULL;
	abs = path_abs(keep, e);
	if (abs == NULL)
		return NULL;
	if (strcmp(abs, dst_abs) == 0) {
		vs_error(e, EX_USAGE, 0, "--keep %s is DST itself", keep);
		goto fail;
	}
	if (lstat(abs, &st) == 0) {
		vs_error(e, EX_CANTCREAT, 0, "%s: already exists; --keep needs a new name", keep);
		goto fail;
	}
	if (path_split(abs, &dir, NULL) < 0 || path_split(dst_abs, &ddir, NULL) < 0) {
		vs_error(e, EX_OSERR, ENOMEM, "%s", keep);
		goto fail;
	}
	if (stat(dir, &st) < 0) {
		vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno, "%s", dir);
		goto fail;
	}
	if (stat(ddir, &dst) == 0 && dst.st_dev != st.st_dev) {
		vs_error(e, EX_CANTCREAT, 0,
		    "--keep %s: not on the filesystem of %s (the replaced disk is renamed, not copied)",
		    keep, dst_abs);
		goto fail;
	}
	return abs;
fail:
	free(abs);
	return NULL;
}

/* --- live: the disk of a running VM ------------------------------------ */

/* The VM that writes to src: a vmrun VM of the workspace here (./run), or
 * of the one src is in (run/ beside it); or the QEMU of --qmp. */
static int find_vm(const char *src, const char *src_abs, const struct opts *o,
    struct live *lv, struct vs_err *e)
{
	cleanup_free char *dir = NULL, *rundir = NULL;
	struct vm_info vi;
	struct vs_err ignore;
	int r;

	if (o->qmp) {
		if ((lv->sock = strdup(o->qmp)) == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "cowclone");
		return 0;
	}
	r = vmstate_holder(VM_RUN_DIR, src_abs, &vi, &ignore);
	if (r <= 0 && path_split(src_abs, &dir, NULL) == 0 &&
	    asprintf(&rundir, "%s/%s", dir, VM_RUN_DIR) >= 0)
		r = vmstate_holder(rundir, src_abs, &vi, &ignore);
	else if (r <= 0)
		rundir = NULL;
	if (r <= 0)
		return vs_error(e, EX_TEMPFAIL, 0,
		    "%s: in use by a program that is not a VM of this workspace (no run/NAME/ of vmrun holds it); give --qmp SOCKET to clone it live",
		    src);
	lv->vm = strdup(vi.name);
	if (lv->vm == NULL || asprintf(&lv->sock, "%s/qmp.sock", vi.dir) < 0) {
		lv->sock = NULL;
		vmstate_free(&vi);
		return vs_error(e, EX_OSERR, ENOMEM, "cowclone");
	}
	vmstate_free(&vi);
	return 0;
}

/* Before the clone: the guest paused, when it runs.  A clone that would
 * be a copy pauses it as long as the copy takes: only with --pause-ok. */
static int live_begin(struct live *lv, int sfd, const struct atomic_file *af,
    const struct stat *sst, const struct opts *o, const char *src,
    struct vs_err *e)
{
	const char *who = lv->vm ? lv->vm : lv->sock;
	int r;

	lv->s = qmp_connect(lv->sock, 5000);
	if (lv->s < 0)
		return vs_error(e, EX_UNAVAILABLE, errno,
		    "VM %s: no answer on its QMP socket %s", who, lv->sock);
	r = qmp_running(lv->s, lv->state, sizeof lv->state);
	if (r < 0)
		return vs_error(e, EX_UNAVAILABLE, errno,
		    "VM %s: no answer to query-status on its QMP socket", who);
	if (r == 0)
		return 0;	/* paused already, or ended: it writes nothing */
	r = clone_can_reflink(sfd, af->fd, e);
	if (r < 0)
		return -1;
	if (r == 0 && !o->pause_ok) {
		char a[32];
		uint64_t data = (uint64_t)sst->st_blocks * 512;
		double secs = (double)data / COPY_RATE;

		return vs_error(e, EX_TEMPFAIL, 0,
		    "%s: no reflink to there (no reflinks on that filesystem, or another filesystem): a live clone would be a copy of %s, pausing VM %s for about %.0f s; give --pause-ok, or stop the VM",
		    src, size_human(data, a, sizeof a), who, secs < 1 ? 1 : secs);
	}
	if (qmp_pause(lv->s, r == 1 ? LIVE_LIMIT_SECS : 0, af->tmp, &lv->pz, e) < 0)
		return vs_error_prefix(e, "VM %s", who);
	lv->paused = true;
	return 0;
}

/* After the clone (cloned: whether it worked): the guest resumed.  The
 * clone counts only if the guest stayed paused all along. */
static int live_end(struct live *lv, bool cloned, struct vs_err *e)
{
	const char *who = lv->vm ? lv->vm : lv->sock;
	const char *hold = getenv("VMSTRAP_TEST_HOLD_MS");
	int still = 1;

	if (!lv->paused)
		return 0;
	if (hold && *hold) {
		/* (tests: the worst moment to be killed, made long) */
		long ms = strtol(hold, NULL, 10);
		struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
		nanosleep(&t, NULL);
	}
	if (cloned)
		still = qmp_still_paused(&lv->pz);
	lv->paused = false;
	if (qmp_resume(&lv->pz, e) < 0)
		return vs_error_prefix(e,
		    "VM %s (its watchdog resumes it; else: vmrun resume %s)",
		    who, lv->vm ? lv->vm : "NAME");
	if (still != 1)
		return vs_error(e, EX_TEMPFAIL, 0,
		    "VM %s was resumed during the clone (after %.0f ms, by its watchdog or by someone else): the clone would not be consistent, not kept",
		    who, lv->pz.ms);
	return 0;
}

static void live_free(struct live *lv)
{
	if (lv->s >= 0)
		close(lv->s);
	free(lv->vm);
	free(lv->sock);
}

static int make_disk_live(const char *src, const char *dst,
    const struct opts *o, struct live *lv, json_t **section, struct vs_err *e);

static int make_disk(const char *src, const char *dst, const struct opts *o,
    json_t **section, struct vs_err *e)
{
	struct live lv = { .s = -1 };
	int rc = make_disk_live(src, dst, o, &lv, section, e);

	live_free(&lv);
	return rc;
}

static int make_disk_live(const char *src, const char *dst,
    const struct opts *o, struct live *lv, json_t **section, struct vs_err *e)
{
	cleanup_free char *src_abs = NULL, *dst_abs = NULL, *keep_abs = NULL;
	cleanup_fd int sfd = -1, dfd = -1;
	bool kept = false;
	struct atomic_file af = { .fd = -1, .slot = -1 };
	struct clone_stats cs;
	int commit_flags = 0;
	struct progress bar;
	struct stat sst, st;
	bool needs_fsck = false;
	uint64_t size;
	int held;

	/* O_NONBLOCK: a FIFO must not hang us before we can refuse it. */
	sfd = open(src, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (sfd < 0)
		return vs_error(e, errno == EACCES ? EX_NOPERM : EX_NOINPUT,
		    errno, "%s", src);
	if (fstat(sfd, &sst) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", src);
	if (!S_ISREG(sst.st_mode))
		return vs_error(e, EX_DATAERR, 0,
		    "%s: not a regular file (a disk image is a file)", src);
	if (fcntl(sfd, F_SETFL, 0) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", src);
	held = lock_qemu_writer(sfd);
	if (held == 1 && !o->live)
		return vs_error(e, EX_TEMPFAIL, 0,
		    "%s: in use by a running VM that writes to it; stop it, or give --live to snapshot it as it runs",
		    src);
	src_abs = realpath(src, NULL);
	if (src_abs == NULL)
		return vs_error(e, EX_NOINPUT, errno, "%s", src);
	if ((held == 1 || o->qmp) && find_vm(src, src_abs, o, lv, e) < 0)
		return -1;

	if (dst[0] != '\0' && dst[strlen(dst) - 1] == '/')
		return vs_error(e, EX_CANTCREAT, 0,
		    "%s: ends with '/': name the disk file", dst);
	dst_abs = path_abs(dst, e);
	if (dst_abs == NULL)
		return -1;
	/* The paths go into the JSON document, which is UTF-8. */
	if (!utf8_ok(src_abs) || !utf8_ok(dst_abs))
		return vs_error(e, EX_USAGE, 0,
		    "%s: the path is not valid UTF-8, which the pipeline document needs",
		    utf8_ok(src_abs) ? dst : src);
	if (lstat(dst_abs, &st) == 0) {
		if (st.st_dev == sst.st_dev && st.st_ino == sst.st_ino)
			return vs_error(e, EX_USAGE, 0,
			    "%s is the source itself; a clone needs a name of its own",
			    dst);
		if (S_ISDIR(st.st_mode))
			return vs_error(e, EX_CANTCREAT, 0,
			    "%s: is a directory; name the disk file", dst);
		if (!o->force)
			return vs_error(e, EX_CANTCREAT, 0,
			    "%s: already exists; give -f to replace it", dst);
		if (!S_ISREG(st.st_mode))
			return vs_error(e, EX_CANTCREAT, 0,
			    "%s: not a regular file; not replaced", dst);
		/* Hold a write lock on the old disk until it is replaced, so
		 * that no QEMU starts on it meanwhile; a QEMU that has it open
		 * already holds locks that refuse ours. */
		dfd = open(dst_abs, O_RDWR | O_CLOEXEC);
		if (dfd >= 0)
			held = lock_whole(dfd) < 0 ? 1 : 0;
		else if ((dfd = open(dst_abs, O_RDONLY | O_CLOEXEC)) >= 0)
			held = lock_conflict(dfd, 0, 0);
		else
			return vs_error(e, vs_code_for_errno(errno,
			    EX_CANTCREAT), errno, "%s", dst);
		if (held != 0)
			return vs_error(e, EX_TEMPFAIL, 0,
			    "%s: in use by a running VM; not replaced", dst);
	} else if (errno != ENOENT) {
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT),
		    errno, "%s", dst);
	}
	if (o->keep && (keep_abs = keep_check(o->keep, dst_abs, e)) == NULL)
		return -1;

	size = (uint64_t)sst.st_size;
	if (o->grow) {
		char a[32];
		if (o->grow < size)
			return vs_error(e, EX_USAGE, 0,
			    "-s %s is smaller than %s (%s): a clone can grow, never shrink",
			    o->grow_arg, src, size_format(size, a, sizeof a));
		if (o->grow > size && ext4w_probe(src_abs, &needs_fsck, e) < 0)
			return -1;
	}

	if (atomic_open(&af, dst_abs, sst.st_mode & 07777 & ~(mode_t)06000,
	    e) < 0)
		return -1;
	/* A size the filesystem cannot hold is found before the copy. */
	if (o->grow > size && (ftruncate(af.fd, (off_t)o->grow) < 0 ||
	    ftruncate(af.fd, 0) < 0)) {
		vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s: cannot be %s", dst, o->grow_arg);
		atomic_abort(&af);
		return -1;
	}
	if (lv->sock && live_begin(lv, sfd, &af, &sst, o, src, e) < 0) {
		atomic_abort(&af);
		return -1;
	}
	progress_start(&bar, stderr, "cowclone: copying",
	    (uint64_t)sst.st_blocks * 512, progress_wanted(stderr, o->quiet));
	if (clone_into(&af, sfd, o->nosync ? CLONE_NO_FLUSH : 0, on_progress,
	    &bar, &cs, e) < 0) {
		struct vs_err ignore;

		progress_end(&bar);
		live_end(lv, false, &ignore);
		atomic_abort(&af);
		return vs_error_prefix(e, "cloning %s to %s", src, dst);
	}
	progress_end(&bar);
	if (live_end(lv, true, e) < 0) {
		atomic_abort(&af);
		return -1;
	}
	/* a reflink is metadata in the filesystem's journal, ahead of the
	 * rename: no fsync needed for it to be whole under its name (a
	 * copy's data, or a grown filesystem's, is not) */
	if ((cs.method == CLONE_REFLINK && o->grow <= size) || o->nosync)
		commit_flags |= ATOMIC_NOSYNC;
	if (o->grow > size) {
		if (ftruncate(af.fd, (off_t)o->grow) < 0) {
			vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
			    "%s: grow", dst);
			atomic_abort(&af);
			return -1;
		}
		if (ext4w_grow(af.tmp, needs_fsck, e) < 0) {
			atomic_abort(&af);
			return -1;
		}
		size = o->grow;
	}
	if (keep_abs) {
		if (atomic_commit_keep(&af, keep_abs, commit_flags, &kept, e) < 0)
			return -1;
	} else if (atomic_commit(&af, commit_flags | (o->force ? ATOMIC_REPLACE :
	    ATOMIC_NOREPLACE), e) < 0)
		return -1;
	if (stat(dst_abs, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", dst);

	*section = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}",
	    "path", dst_abs,
	    "source", src_abs,
	    "method", clone_method_name(cs.method),
	    "size", (json_int_t)size,
	    "allocated", (json_int_t)st.st_blocks * 512,
	    "copied", (json_int_t)cs.copied);
	if (*section == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "disk section");
	if (keep_abs && json_object_set_new(*section, "kept",
	    kept ? json_string(keep_abs) : json_null()) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "disk section");
	if (lv->sock && json_object_update_new(*section, json_pack(
	    "{s:s?, s:s, s:f}", "vm", lv->vm, "vm_state", lv->state,
	    "paused_ms", (double)(long long)(lv->pz.ms * 10 + 0.5) / 10)) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "disk section");
	return 0;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ "keep", required_argument, NULL, 'K' },
		{ "live", no_argument, NULL, 'L' },
		{ "no-sync", no_argument, NULL, 'S' },
		{ "pause-ok", no_argument, NULL, 'P' },
		{ "qmp", required_argument, NULL, 'Q' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "size", required_argument, NULL, 's' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	struct vs_err e = { 0 };
	cleanup_json json_t *doc = NULL;
	json_t *disk = NULL;
	cleanup_free char *src = NULL, *dst = NULL;
	int c, rc;

	fe_init(argv[0]);
	atomic_on_signals();
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":fhqs:V", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o.force = true;
			break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'q':
			o.quiet = true;
			break;
		case 'S':	/* --no-sync (long only) */
			o.nosync = true;
			break;
		case 'K':	/* --keep (long only) */
			o.keep = optarg;
			o.force = true;
			break;
		case 'L':	/* --live (long only) */
			o.live = true;
			break;
		case 'P':	/* --pause-ok (long only) */
			o.pause_ok = true;
			break;
		case 'Q':	/* --qmp (long only) */
			o.qmp = optarg;
			o.live = true;
			break;
		case 's':
			if (size_parse_disk(optarg, &o.grow, &e) < 0)
				return fe_fail(&e);
			o.grow_arg = optarg;
			break;
		case 'V':
			fe_version();
			return fe_finish(0);
		default:
			return fe_bad_option(SYNOPSIS, c, optopt,
			    argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;

	if (argc == 2) {
		src = strdup(argv[0]);
		dst = strdup(argv[1]);
		doc = json_object();
		if (src == NULL || dst == NULL || doc == NULL) {
			vs_error(&e, EX_OSERR, ENOMEM, "cowclone");
			return fe_fail(&e);
		}
	} else if (argc == 1) {
		bool present;

		if (path_check_name("disk", argv[0], &e) < 0)
			return fe_fail_usage(SYNOPSIS, &e);
		doc = doc_read_stdin(&present, &e);
		if (doc == NULL)
			return fe_fail(&e);
		if (!present)
			return fe_usage_error(SYNOPSIS,
			    "no pipeline document on stdin: give SRC DST, or pipe mkbase's output into cowclone %s",
			    argv[0]);
		if (disk_of_document(doc, argv[0], &src, &dst, &e) < 0)
			return fe_fail(&e);
	} else {
		return fe_usage_error(SYNOPSIS, argc == 0 ?
		    "missing operand: give SRC DST, or NAME with a document on stdin" :
		    "too many operands");
	}

	rc = make_disk(src, dst, &o, &disk, &e);
	if (rc == 0)
		rc = doc_set(doc, "disk", disk, &e);
	if (rc == 0)
		rc = doc_write(stdout, doc, &e);
	if (rc < 0)
		return fe_finish(fe_fail(&e));
	return fe_finish(0);
}
