#include "ext4w.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <ext2fs/ext3_extents.h>

#include "cleanup.h"
#include "run.h"

/* Data is staged in pieces of this many bytes. */
#define CHUNK (4u << 20)

int ext4w_error(struct ext4w *w, errcode_t err, const char *what)
{
	w->last_err = err;
	/* the image full is EX_CANTCREAT; the host's disk full (ENOSPC from
	 * a write) is a failed write, 74, as for every tool; attributes that
	 * no inode and block can hold are the entry's fault */
	return vs_error(w->e, err == EXT2_ET_BLOCK_ALLOC_FAIL ||
	    err == EXT2_ET_INODE_ALLOC_FAIL || err == EXT2_ET_DIR_NO_SPACE_FOR_CSUM ?
	    EX_CANTCREAT : err == EXT2_ET_EA_NO_SPACE ? EX_DATAERR : EX_IOERR, 0,
	    "%s %s: %s", what, w->path[0] ? w->path : "/", error_message(err));
}

/* --- the empty filesystem ------------------------------------------- */

/* The filesystem vmstrap makes, whatever the host's /etc/mke2fs.conf
 * says (another inode size, inline_data, orphan_file): ext4 as the
 * kernels images ship mount it, the same on every host. */
static const char mke2fs_conf[] =
    "[defaults]\n"
    "\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n"
    "\tdefault_mntopts = acl,user_xattr\n"
    "\tenable_periodic_fsck = 0\n"
    "\tblocksize = 4096\n"
    "\tinode_size = 256\n"
    "\tinode_ratio = 16384\n"
    "\thash_alg = half_md4\n"
    "[fs_types]\n"
    "\text4 = {\n"
    "\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize\n"
    "\t}\n";

/* mke2fs: the empty filesystem, sparse (inode tables and journal are not
 * written: a hole reads as zeros), root owned by root. */
int ext4w_mkfs(const char *path, const char *uuid, const char *seed,
    struct vs_err *e)
{
	cleanup_free char *mke2fs = run_find("mke2fs", "e2fsprogs", e);
	cleanup_fd int conf = -1;
	char ext[256], last[512] = "", confpath[64];
	const char *argv[16];
	int n = 0, status, rc;

	if (mke2fs == NULL)
		return -1;
	/* (an unnamed file, inherited by mke2fs: nothing to clean up) */
	conf = memfd_create("mke2fs.conf", 0);
	if (conf < 0 || write(conf, mke2fs_conf, sizeof mke2fs_conf - 1) !=
	    (ssize_t)(sizeof mke2fs_conf - 1))
		return vs_error(e, EX_OSERR, errno, "mke2fs.conf");
	snprintf(confpath, sizeof confpath, "/proc/self/fd/%d", conf);
	snprintf(ext, sizeof ext,
	    "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0%s%s",
	    seed ? ",hash_seed=" : "", seed ? seed : "");
	argv[n++] = mke2fs;
	argv[n++] = "-q";
	argv[n++] = "-F";
	argv[n++] = "-t";
	argv[n++] = "ext4";
	argv[n++] = "-E";
	argv[n++] = ext;
	if (uuid) {
		argv[n++] = "-U";
		argv[n++] = uuid;
	}
	argv[n++] = path;
	argv[n] = NULL;
	if (setenv("MKE2FS_CONFIG", confpath, 1) < 0)
		return vs_error(e, EX_OSERR, errno, "setenv");
	rc = run_capture(argv, &status, last, sizeof last, e);
	unsetenv("MKE2FS_CONFIG");
	if (rc < 0)
		return -1;
	if (status != 0)
		return vs_error(e, EX_IOERR, 0, "mke2fs failed (status %d): %s",
		    status, last);
	return 0;
}

int ext4w_open(struct ext4w *w, const char *path, int fd, time_t now,
    bool reproducible, struct vs_err *e)
{
	errcode_t err;

	memset(w, 0, sizeof *w);
	w->img = fd;
	w->now = now;
	w->reproducible = reproducible;
	w->e = e;
	err = ext2fs_open2(path, NULL, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0,
	    unix_io_manager, &w->fs);
	w->last_err = err;
	if (err == EXT2_ET_BAD_MAGIC || err == EXT2_ET_SHORT_READ ||
	    err == EXT2_ET_CORRUPT_SUPERBLOCK)
		return vs_error(e, EX_DATAERR, 0, "%s holds no ext2/3/4 filesystem",
		    path);
	if (err)
		return vs_error(e, EX_IOERR, 0, "open %s: %s", path,
		    error_message(err));
	if (reproducible)
		w->fs->now = now;
	w->buf = malloc(CHUNK);
	if (w->buf == NULL) {
		ext2fs_close_free(&w->fs);
		return vs_error(e, EX_OSERR, ENOMEM, "ext4");
	}
	err = ext2fs_read_bitmaps(w->fs);
	if (err) {
		ext4w_error(w, err, "read the bitmaps of");
		ext4w_abort(w);
		return -1;
	}
	return 0;
}

int ext4w_close(struct ext4w *w)
{
	errcode_t err = ext2fs_close_free(&w->fs);

	free(w->buf);
	w->buf = NULL;
	if (err)
		return vs_error(w->e, EX_IOERR, 0, "write the filesystem: %s",
		    error_message(err));
	return 0;
}

void ext4w_abort(struct ext4w *w)
{
	if (w->fs)
		ext2fs_close_free(&w->fs);
	free(w->buf);
	w->buf = NULL;
}

/* --- entries ------------------------------------------------------------ */

int ext4w_lookup(struct ext4w *w, ext2_ino_t dir, const char *name,
    ext2_ino_t *ino)
{
	errcode_t err = ext2fs_lookup(w->fs, dir, name, strlen(name), NULL, ino);

	if (err == EXT2_ET_FILE_NOT_FOUND)
		return 1;
	if (err)
		return ext4w_error(w, err, "look up");
	return 0;
}

/* The directory entry's file type for an inode mode. */
static int file_type(unsigned mode)
{
	switch (mode & LINUX_S_IFMT) {
	case LINUX_S_IFREG: return EXT2_FT_REG_FILE;
	case LINUX_S_IFDIR: return EXT2_FT_DIR;
	case LINUX_S_IFCHR: return EXT2_FT_CHRDEV;
	case LINUX_S_IFBLK: return EXT2_FT_BLKDEV;
	case LINUX_S_IFIFO: return EXT2_FT_FIFO;
	case LINUX_S_IFSOCK: return EXT2_FT_SOCK;
	case LINUX_S_IFLNK: return EXT2_FT_SYMLINK;
	}
	return EXT2_FT_UNKNOWN;
}

/* Link ino into dir as name, making room in dir when it is full. */
static errcode_t link_in(ext2_filsys fs, ext2_ino_t dir, const char *name,
    ext2_ino_t ino, int ftype)
{
	errcode_t err = ext2fs_link(fs, dir, name, ino, ftype);

	if (err == EXT2_ET_DIR_NO_SPACE) {
		err = ext2fs_expand_dir(fs, dir);
		if (err == 0)
			err = ext2fs_link(fs, dir, name, ino, ftype);
	}
	return err;
}

static int make_dir(struct ext4w *w, ext2_ino_t dir, const char *name,
    ext2_ino_t *ino)
{
	ext2_filsys fs = w->fs;
	struct ext2_inode parent;
	errcode_t err;
	bool many;

	if (dir == EXT2_ROOT_INO && strcmp(name, "lost+found") == 0 &&
	    ext2fs_lookup(fs, dir, name, strlen(name), NULL, ino) == 0)
		return 0;	/* mke2fs made it: take it over */
	if ((err = ext2fs_new_inode(fs, dir, LINUX_S_IFDIR, NULL, ino)) != 0)
		return ext4w_error(w, err, "allocate an inode for");
	/* dir_nlink: a directory with more subdirectories than a link count
	 * holds has the count 1 */
	if ((err = ext2fs_read_inode(fs, dir, &parent)) != 0)
		return ext4w_error(w, err, "read the inode of");
	many = parent.i_links_count == 1 ||
	    parent.i_links_count >= EXT4W_LINK_MAX - 1;
	err = ext2fs_mkdir(fs, dir, *ino, name);
	if (err == EXT2_ET_DIR_NO_SPACE && (err = ext2fs_expand_dir(fs, dir)) == 0)
		err = ext2fs_mkdir(fs, dir, *ino, name);
	if (err)
		return ext4w_error(w, err, "make the directory");
	if (many) {
		if ((err = ext2fs_read_inode(fs, dir, &parent)) != 0)
			return ext4w_error(w, err, "read the inode of");
		parent.i_links_count = 1;
		if ((err = ext2fs_write_inode(fs, dir, &parent)) != 0)
			return ext4w_error(w, err, "write the inode of");
	}
	return 0;
}

int ext4w_make(struct ext4w *w, ext2_ino_t dir, const char *name,
    mode_t type, const char *target, dev_t rdev, ext2_ino_t *ino)
{
	ext2_filsys fs = w->fs;
	struct ext2_inode_large in;
	errcode_t err;

	if (S_ISDIR(type))
		return make_dir(w, dir, name, ino);
	if (S_ISLNK(type)) {
		if ((err = ext2fs_new_inode(fs, dir, LINUX_S_IFLNK, NULL, ino)) != 0)
			return ext4w_error(w, err, "allocate an inode for");
		err = ext2fs_symlink(fs, dir, *ino, name, target);
		if (err == EXT2_ET_DIR_NO_SPACE &&
		    (err = ext2fs_expand_dir(fs, dir)) == 0)
			err = ext2fs_symlink(fs, dir, *ino, name, target);
		if (err)
			return ext4w_error(w, err, "make the symlink");
		return 0;
	}
	if ((err = ext2fs_new_inode(fs, dir, LINUX_S_IFREG, NULL, ino)) != 0)
		return ext4w_error(w, err, "allocate an inode for");
	ext2fs_inode_alloc_stats2(fs, *ino, +1, 0);
	memset(&in, 0, sizeof in);
	in.i_mode = (uint16_t)(S_ISREG(type) ? LINUX_S_IFREG : S_ISCHR(type) ?
	    LINUX_S_IFCHR : S_ISBLK(type) ? LINUX_S_IFBLK : S_ISSOCK(type) ?
	    LINUX_S_IFSOCK : LINUX_S_IFIFO);
	in.i_links_count = 1;
	in.i_extra_isize = sizeof in - EXT2_GOOD_OLD_INODE_SIZE;
	if (S_ISCHR(type) || S_ISBLK(type)) {
		unsigned maj = major(rdev), min = minor(rdev);
		if (maj < 256 && min < 256) {
			in.i_block[0] = maj * 256 + min;
		} else {
			in.i_block[0] = 0;
			in.i_block[1] = (min & 0xff) | (maj << 8) |
			    ((min & ~0xffu) << 12);
		}
	} else if (S_ISREG(type) && ext2fs_has_feature_extents(fs->super)) {
		ext2_extent_handle_t h;
		if ((err = ext2fs_extent_open2(fs, *ino, (struct ext2_inode *)&in,
		    &h)) != 0)
			return ext4w_error(w, err, "start the extents of");
		ext2fs_extent_free(h);
	}
	if ((err = ext2fs_write_new_inode(fs, *ino, (struct ext2_inode *)&in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	if ((err = link_in(fs, dir, name, *ino, file_type(in.i_mode))) != 0)
		return ext4w_error(w, err, "link");
	return 0;
}

int ext4w_link(struct ext4w *w, ext2_ino_t dir, const char *name,
    ext2_ino_t ino)
{
	struct ext2_inode_large in;
	errcode_t err;

	if ((err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "read the inode of");
	if (in.i_links_count >= EXT4W_LINK_MAX)
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s: a file with more than %d hard links; ext4 holds no more",
		    w->path, EXT4W_LINK_MAX);
	if ((err = link_in(w->fs, dir, name, ino, file_type(in.i_mode))) != 0)
		return ext4w_error(w, err, "link");
	in.i_links_count++;
	if ((err = ext2fs_write_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	return 0;
}

static void set_time(uint32_t *t, uint32_t *extra, time_t sec, long nsec)
{
	*t = (uint32_t)sec;
	*extra = ((uint32_t)nsec << 2) |
	    (uint32_t)(((int64_t)sec - (int32_t)(uint32_t)sec) >> 32 & 3);
}

int ext4w_set_attr(struct ext4w *w, ext2_ino_t ino,
    const struct ext4w_attr *a, int64_t size)
{
	struct ext2_inode_large in;
	time_t sec = a->mtime.tv_sec;
	long nsec = a->mtime.tv_nsec;
	errcode_t err;

	if ((err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "read the inode of");
	in.i_mode = (uint16_t)((in.i_mode & LINUX_S_IFMT) | (a->perm & 07777));
	in.i_uid = (uint16_t)a->uid;
	ext2fs_set_i_uid_high(in, a->uid >> 16);
	in.i_gid = (uint16_t)a->gid;
	ext2fs_set_i_gid_high(in, a->gid >> 16);
	if (in.i_extra_isize < 24)
		in.i_extra_isize = sizeof(struct ext2_inode_large) -
		    EXT2_GOOD_OLD_INODE_SIZE;
	/* reproducible: no time later than SOURCE_DATE_EPOCH, as
	 * reproducible builds clamp them, so that what the build itself
	 * touched (a directory no layer declared) does not make two builds
	 * of one image differ */
	if (w->reproducible && sec >= w->now) {
		sec = w->now;
		nsec = 0;
	}
	/* (as the kernel does with a time ext4 cannot hold) */
	if ((long long)sec > EXT4W_TIME_MAX) {
		sec = (time_t)EXT4W_TIME_MAX;
		nsec = 0;
	} else if ((long long)sec < EXT4W_TIME_MIN) {
		sec = (time_t)EXT4W_TIME_MIN;
		nsec = 0;
	}
	set_time(&in.i_mtime, &in.i_mtime_extra, sec, nsec);
	set_time(&in.i_atime, &in.i_atime_extra, sec, nsec);
	set_time(&in.i_ctime, &in.i_ctime_extra, w->now, 0);
	set_time(&in.i_crtime, &in.i_crtime_extra, w->now, 0);
	if (size >= 0 && LINUX_S_ISREG(in.i_mode) &&
	    (err = ext2fs_inode_size_set(w->fs, (struct ext2_inode *)&in,
	    (unsigned long long)size)) != 0)
		return ext4w_error(w, err, "set the size of");
	if ((err = ext2fs_write_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	return 0;
}

/* --- attributes -------------------------------------------------------- */

struct ext2_xattr_handle *ext4w_xattrs_open(struct ext4w *w, ext2_ino_t ino)
{
	struct ext2_xattr_handle *h = NULL;
	errcode_t err;

	if ((err = ext2fs_xattrs_open(w->fs, ino, &h)) != 0 ||
	    (err = ext2fs_xattrs_read(h)) != 0) {
		if (h)
			ext2fs_xattrs_close(&h);
		ext4w_error(w, err, "read the attributes of");
		return NULL;
	}
	return h;
}

int ext4w_xattr_set(struct ext4w *w, struct ext2_xattr_handle *h,
    const char *key, const void *val, size_t len)
{
	errcode_t err = ext2fs_xattr_set(h, key, val, len);

	return err ? ext4w_error(w, err, "set the attributes of") : 0;
}

int ext4w_xattrs_close(struct ext4w *w, struct ext2_xattr_handle **h)
{
	errcode_t err = ext2fs_xattrs_close(h);

	return err ? ext4w_error(w, err, "write the attributes of") : 0;
}

struct keys {
	char **v;
	size_t n, cap;
};

static int collect_key(char *name, char *value, size_t len, void *arg)
{
	struct keys *k = arg;

	(void)value;
	(void)len;
	if (k->n == k->cap) {
		char **nv = realloc(k->v, (k->cap = k->cap ? k->cap * 2 : 8) *
		    sizeof *nv);
		if (nv == NULL)
			return XATTR_ABORT;
		k->v = nv;
	}
	if ((k->v[k->n] = strdup(name)) == NULL)
		return XATTR_ABORT;
	k->n++;
	return 0;
}

int ext4w_xattrs_clear(struct ext4w *w, ext2_ino_t ino)
{
	struct ext2_xattr_handle *h = ext4w_xattrs_open(w, ino);
	struct keys k = { 0 };
	errcode_t err;
	int rc = 0;

	if (h == NULL)
		return -1;
	err = ext2fs_xattrs_iterate(h, collect_key, &k);
	for (size_t i = 0; i < k.n; i++) {
		if (!err)
			err = ext2fs_xattr_remove(h, k.v[i]);
		free(k.v[i]);
	}
	free(k.v);
	if (err)
		rc = ext4w_error(w, err, "remove the attributes of");
	if (ext4w_xattrs_close(w, &h) < 0)
		rc = -1;
	return rc;
}

/* --- file data ---------------------------------------------------------- */

/* A file's data goes in as it comes: blocks are allocated from the bitmap
 * next to the ones before, written straight to the image, and described
 * by as few extents as the allocation allows (one for up to 128 MiB of
 * contiguous data), the way the kernel would lay them out. */

int ext4w_file_begin(struct ext4w *w, ext2_ino_t ino, struct ext4w_file *f)
{
	errcode_t err;

	memset(f, 0, sizeof *f);
	f->w = w;
	f->ino = ino;
	f->goal = ext2fs_find_inode_goal(w->fs, ino, NULL, 0);
	if ((err = ext2fs_extent_open2(w->fs, ino, NULL, &f->h)) != 0)
		return ext4w_error(w, err, "start the extents of");
	return 0;
}

/* Put the pending extent into the file's extent tree. */
static errcode_t put_extent(struct ext4w_file *f)
{
	struct ext2fs_extent last;
	errcode_t err;

	if (f->ext.e_len == 0)
		return 0;
	if (f->inserted) {
		err = ext2fs_extent_get(f->h, EXT2_EXTENT_LAST_LEAF, &last);
		if (err == 0)
			err = ext2fs_extent_insert(f->h, EXT2_EXTENT_INSERT_AFTER,
			    &f->ext);
	} else
		err = ext2fs_extent_insert(f->h, 0, &f->ext);
	if (err == 0)
		err = ext2fs_extent_fix_parents(f->h);
	f->inserted = true;
	f->ext.e_len = 0;
	return err;
}

/* Logical blocks [lblk, lblk + count) of the file, from data. */
static int write_run(struct ext4w_file *f, blk64_t lblk, blk64_t count,
    const char *data)
{
	struct ext4w *w = f->w;
	unsigned bs = w->fs->blocksize;
	errcode_t err;

	while (count > 0) {
		blk64_t pblk, n;
		off_t at;
		size_t left;

		err = ext2fs_new_range(w->fs, 0, f->goal, count, NULL, &pblk, &n);
		if (err)
			return ext4w_error(w, err, "write");
		ext2fs_block_alloc_stats_range(w->fs, pblk, n, +1);
		if (f->ext.e_len && (f->ext.e_lblk + f->ext.e_len != lblk ||
		    f->ext.e_pblk + f->ext.e_len != pblk ||
		    f->ext.e_len + n > EXT_INIT_MAX_LEN) &&
		    (err = put_extent(f)) != 0)
			return ext4w_error(w, err, "write");
		at = (off_t)pblk * bs;
		for (left = (size_t)n * bs; left > 0; ) {
			ssize_t wr = pwrite(w->img, data, left, at);
			if (wr < 0 && errno == EINTR)
				continue;
			if (wr < 0)
				return vs_error(w->e, vs_code_for_errno(errno,
				    EX_IOERR), errno, "write the image");
			data += wr;
			left -= (size_t)wr;
			at += wr;
		}
		/* (an extent holds at most EXT_INIT_MAX_LEN blocks: a
		 * longer range is cut where that one is full) */
		while (n > 0) {
			blk64_t room = EXT_INIT_MAX_LEN - f->ext.e_len;
			blk64_t take = n < room ? n : room;
			if (f->ext.e_len == 0) {
				f->ext.e_lblk = lblk;
				f->ext.e_pblk = pblk;
				f->ext.e_flags = 0;
			}
			f->ext.e_len += (__u32)take;
			lblk += take;
			pblk += take;
			n -= take;
			count -= take;
			f->blocks += take;
			if (f->ext.e_len == EXT_INIT_MAX_LEN &&
			    (err = put_extent(f)) != 0)
				return ext4w_error(w, err, "write");
		}
		f->goal = pblk;
	}
	return 0;
}

static bool is_zero(const char *p, size_t n)
{
	return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

/* Whole blocks from lblk: the runs that are not zeros are written. */
static int write_blocks(struct ext4w_file *f, blk64_t lblk, size_t nb,
    const char *data)
{
	unsigned bs = f->w->fs->blocksize;
	size_t i = 0;

	while (i < nb) {
		size_t j;
		while (i < nb && is_zero(data + i * bs, bs))
			i++;
		for (j = i; j < nb && !is_zero(data + j * bs, bs); j++)
			;
		if (j > i && write_run(f, lblk + i, j - i, data + i * bs) < 0)
			return -1;
		i = j;
	}
	return 0;
}

/* Write what is staged, its last block filled up with zeros. */
static int flush_staged(struct ext4w_file *f)
{
	unsigned bs = f->w->fs->blocksize;
	size_t nb = (f->staged + bs - 1) / bs;
	int rc;

	if (f->staged == 0)
		return 0;
	memset(f->w->buf + f->staged, 0, nb * bs - f->staged);
	rc = write_blocks(f, f->staged_at, nb, f->w->buf);
	f->staged = 0;
	return rc;
}

int ext4w_file_write(struct ext4w_file *f, uint64_t off, const void *data,
    size_t len)
{
	struct ext4w *w = f->w;
	unsigned bs = w->fs->blocksize;
	const char *p = data;

	if (off < f->end || off > EXT4W_FILE_MAX || len > EXT4W_FILE_MAX - off)
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s: data at byte %llu, %s", w->path, (unsigned long long)off,
		    off < f->end ? "before data already written (a bad sparse map)" :
		    "beyond what an ext4 file holds");
	f->end = off + len;
	w->done += len;
	while (len > 0) {
		uint64_t end = f->staged_at * bs + f->staged;
		size_t take;

		if (f->staged && off / bs > (end - 1) / bs) {
			/* (a hole after the staged block: what is staged is
			 * done) */
			if (flush_staged(f) < 0)
				return -1;
		}
		if (f->staged == 0 && off % bs == 0 && len >= bs) {
			/* whole blocks, straight from the caller */
			size_t nb = len / bs;
			if (write_blocks(f, off / bs, nb, p) < 0)
				return -1;
			off += nb * bs;
			p += nb * bs;
			len -= nb * bs;
			continue;
		}
		if (f->staged == 0) {
			f->staged_at = off / bs;
			f->staged = 0;
		}
		/* (a hole inside the staged block reads as zeros) */
		end = f->staged_at * bs + f->staged;
		memset(w->buf + f->staged, 0, off - end);
		f->staged += off - end;
		take = CHUNK - f->staged < len ? CHUNK - f->staged : len;
		memcpy(w->buf + f->staged, p, take);
		f->staged += take;
		off += take;
		p += take;
		len -= take;
		if (f->staged == CHUNK) {
			if (write_blocks(f, f->staged_at, CHUNK / bs, w->buf) < 0)
				return -1;
			f->staged_at += CHUNK / bs;
			f->staged = 0;
		}
	}
	return 0;
}

int ext4w_file_end(struct ext4w_file *f)
{
	struct ext4w *w = f->w;
	struct ext2_inode_large in;
	errcode_t err;
	int rc = flush_staged(f);

	if (rc == 0 && (err = put_extent(f)) != 0)
		rc = ext4w_error(w, err, "write");
	ext2fs_extent_free(f->h);
	f->h = NULL;
	if (rc < 0)
		return rc;
	/* (the tree's own blocks were counted as it grew) */
	if ((err = ext2fs_read_inode_full(w->fs, f->ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0 ||
	    (err = ext2fs_iblk_add_blocks(w->fs, (struct ext2_inode *)&in,
	    f->blocks)) != 0 ||
	    (err = ext2fs_write_inode_full(w->fs, f->ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	return 0;
}

/* --- removing ------------------------------------------------------------ */

struct names {
	char **v;
	size_t n, cap;
	bool failed;
};

static int collect_name(struct ext2_dir_entry *de, int offset, int blocksize,
    char *buf, void *arg)
{
	struct names *ns = arg;
	size_t len = ext2fs_dirent_name_len(de);

	(void)offset;
	(void)blocksize;
	(void)buf;
	if ((len == 1 && de->name[0] == '.') ||
	    (len == 2 && de->name[0] == '.' && de->name[1] == '.'))
		return 0;
	if (ns->n == ns->cap) {
		char **nv = realloc(ns->v, (ns->cap = ns->cap ? ns->cap * 2 : 32) *
		    sizeof *nv);
		if (nv == NULL) {
			ns->failed = true;
			return DIRENT_ABORT;
		}
		ns->v = nv;
	}
	if ((ns->v[ns->n] = strndup(de->name, len)) == NULL) {
		ns->failed = true;
		return DIRENT_ABORT;
	}
	ns->n++;
	return 0;
}

int ext4w_list(struct ext4w *w, ext2_ino_t dir, char ***names, size_t *n)
{
	struct names ns = { 0 };
	errcode_t err = ext2fs_dir_iterate(w->fs, dir, 0, NULL, collect_name, &ns);

	if (err || ns.failed) {
		for (size_t i = 0; i < ns.n; i++)
			free(ns.v[i]);
		free(ns.v);
		return err ? ext4w_error(w, err, "read the directory") :
		    vs_error(w->e, EX_OSERR, ENOMEM, "read the directory");
	}
	*names = ns.v;
	*n = ns.n;
	return 0;
}

mode_t ext4w_type(struct ext4w *w, ext2_ino_t ino)
{
	struct ext2_inode in;
	errcode_t err = ext2fs_read_inode(w->fs, ino, &in);

	if (err) {
		ext4w_error(w, err, "read the inode of");
		return 0;
	}
	switch (in.i_mode & LINUX_S_IFMT) {
	case LINUX_S_IFDIR: return S_IFDIR;
	case LINUX_S_IFREG: return S_IFREG;
	case LINUX_S_IFLNK: return S_IFLNK;
	case LINUX_S_IFCHR: return S_IFCHR;
	case LINUX_S_IFBLK: return S_IFBLK;
	case LINUX_S_IFSOCK: return S_IFSOCK;
	default: return S_IFIFO;
	}
}

/* Give the host back the blocks of a file's data (it was written, and is
 * gone: a whiteout in an upper layer), so that the image file allocates
 * no more than if the file had never been there. */
static void punch_host(struct ext4w *w, ext2_ino_t ino,
    struct ext2_inode_large *in)
{
#ifdef FALLOC_FL_PUNCH_HOLE
	ext2_extent_handle_t h;
	struct ext2fs_extent ex;
	unsigned bs = w->fs->blocksize;
	errcode_t err;
	int op = EXT2_EXTENT_ROOT;

	if (!(in->i_flags & EXT4_EXTENTS_FL) ||
	    ext2fs_extent_open2(w->fs, ino, (struct ext2_inode *)in, &h) != 0)
		return;
	while ((err = ext2fs_extent_get(h, op, &ex)) == 0) {
		op = EXT2_EXTENT_NEXT_LEAF;
		if (!(ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) || ex.e_len == 0)
			continue;
		/* (a failure costs space, not correctness) */
		(void)fallocate(w->img, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		    (off_t)ex.e_pblk * bs, (off_t)ex.e_len * bs);
	}
	ext2fs_extent_free(h);
#else
	(void)w; (void)ino; (void)in;
#endif
}

/* Free ino, whose last name is gone: its blocks, attributes, inode. */
static int free_inode(struct ext4w *w, ext2_ino_t ino,
    struct ext2_inode_large *in, bool isdir)
{
	errcode_t err;

	if (LINUX_S_ISREG(in->i_mode))
		punch_host(w, ino, in);

	if (ext2fs_file_acl_block(w->fs, (struct ext2_inode *)in) &&
	    (err = ext2fs_free_ext_attr(w->fs, ino, in)) != 0)
		return ext4w_error(w, err, "free the attributes of");
	if (ext2fs_inode_has_valid_blocks2(w->fs, (struct ext2_inode *)in) &&
	    (err = ext2fs_punch(w->fs, ino, (struct ext2_inode *)in, NULL, 0,
	    ~0ULL)) != 0)
		return ext4w_error(w, err, "free the blocks of");
	/* (punch wrote the inode; read it back before the last change) */
	if ((err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)in,
	    sizeof *in)) != 0)
		return ext4w_error(w, err, "read the inode of");
	in->i_links_count = 0;
	in->i_dtime = (uint32_t)w->now;
	ext2fs_inode_size_set(w->fs, (struct ext2_inode *)in, 0);
	if ((err = ext2fs_write_inode_full(w->fs, ino, (struct ext2_inode *)in,
	    sizeof *in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	ext2fs_inode_alloc_stats2(w->fs, ino, -1, isdir);
	return 0;
}

static int remove_entry(struct ext4w *w, ext2_ino_t dir, const char *name);

int ext4w_remove(struct ext4w *w, ext2_ino_t dir, const char *name)
{
	errcode_t err;

	if (remove_entry(w, dir, name) < 0)
		return -1;
	/* The blocks freed may be taken next by file data, which goes to the
	 * image straight, past libext2fs's cache: a directory block still
	 * dirty in the cache would be written over it later. */
	if ((err = io_channel_flush(w->fs->io)) != 0)
		return ext4w_error(w, err, "write");
	return 0;
}

static int remove_entry(struct ext4w *w, ext2_ino_t dir, const char *name)
{
	struct ext2_inode_large in;
	ext2_ino_t ino;
	errcode_t err;
	bool isdir;
	int r = ext4w_lookup(w, dir, name, &ino);

	if (r != 0)
		return r < 0 ? -1 : 0;
	if ((err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "read the inode of");
	isdir = LINUX_S_ISDIR(in.i_mode);
	if (isdir) {
		char **names;
		size_t n;
		int rc = 0;
		if (ext4w_list(w, ino, &names, &n) < 0)
			return -1;
		for (size_t i = 0; i < n; i++) {
			if (rc == 0)
				rc = remove_entry(w, ino, names[i]);
			free(names[i]);
		}
		free(names);
		if (rc < 0)
			return -1;
	}
	if ((err = ext2fs_unlink(w->fs, dir, name, ino, 0)) != 0)
		return ext4w_error(w, err, "remove");
	if (isdir) {
		struct ext2_inode parent;
		/* its ".." is gone: one link less for the parent (unless
		 * dir_nlink gave up counting, at 1) */
		if ((err = ext2fs_read_inode(w->fs, dir, &parent)) != 0)
			return ext4w_error(w, err, "read the inode of");
		if (parent.i_links_count > 2) {
			parent.i_links_count--;
			if ((err = ext2fs_write_inode(w->fs, dir, &parent)) != 0)
				return ext4w_error(w, err, "write the inode of");
		}
		if ((err = ext2fs_read_inode_full(w->fs, ino,
		    (struct ext2_inode *)&in, sizeof in)) != 0)
			return ext4w_error(w, err, "read the inode of");
		return free_inode(w, ino, &in, true);
	}
	if (in.i_links_count > 1) {
		in.i_links_count--;
		if ((err = ext2fs_write_inode_full(w->fs, ino,
		    (struct ext2_inode *)&in, sizeof in)) != 0)
			return ext4w_error(w, err, "write the inode of");
		return 0;
	}
	return free_inode(w, ino, &in, false);
}

/* --- growing ------------------------------------------------------------ */

/* Check that src holds an ext2/3/4 filesystem that resize2fs may grow, and
 * tell whether e2fsck must look at it first. */
int ext4w_probe(const char *src, bool *needs_fsck, struct vs_err *e)
{
	ext2_filsys fs = NULL;
	errcode_t rc;

	rc = ext2fs_open(src, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
	if (rc == EXT2_ET_BAD_MAGIC || rc == EXT2_ET_SHORT_READ ||
	    rc == EXT2_ET_CORRUPT_SUPERBLOCK)
		return vs_error(e, EX_DATAERR, 0,
		    "%s: not an ext2/3/4 filesystem (only ext4 images grow)",
		    src);
	if (rc != 0)
		return vs_error(e, EX_DATAERR, 0, "%s: %s", src,
		    error_message(rc));
	*needs_fsck = !(fs->super->s_state & EXT2_VALID_FS) ||
	    (fs->super->s_state & EXT2_ERROR_FS) ||
	    ext2fs_has_feature_journal_needs_recovery(fs->super) ||
	    fs->super->s_lastcheck < fs->super->s_mtime;
	ext2fs_close_free(&fs);
	return 0;
}

/* Run prog on img; statuses above okmax are failures. */
static int run_e2(const char *prog, const char *const args[],
    const char *img, int okmax, struct vs_err *e)
{
	cleanup_free char *path = run_find(prog, "e2fsprogs", e);
	const char *argv[8];
	char last[512] = "";
	int n = 0, status;

	if (path == NULL)
		return -1;
	argv[n++] = path;
	for (; *args && n < 6; args++)
		argv[n++] = *args;
	argv[n++] = img;
	argv[n] = NULL;
	if (run_capture(argv, &status, last, sizeof last, e) < 0)
		return -1;
	if (status > okmax)
		return vs_error(e, EX_DATAERR, 0, "%s failed (status %d)%s%s",
		    prog, status, *last ? ": " : "", last);
	return 0;
}

/* Grow the filesystem in tmp (already the larger size) to fill it. */
int ext4w_grow(const char *tmp, bool needs_fsck, struct vs_err *e)
{
	static const char *const fsck_args[] = { "-f", "-p", NULL };
	static const char *const resize_args[] = { NULL };

	if (needs_fsck && run_e2("e2fsck", fsck_args, tmp, 1, e) < 0)
		return vs_error_prefix(e,
		    "the source's filesystem needs repair before it can grow (see imgcheck)");
	return run_e2("resize2fs", resize_args, tmp, 0, e);
}


/* --- files of an image already made (imgprep) --------------------------- */

int ext4w_namei(struct ext4w *w, const char *path, bool follow,
    ext2_ino_t *ino)
{
	errcode_t err;

	snprintf(w->path, sizeof w->path, "%s", path);
	err = follow ? ext2fs_namei_follow(w->fs, EXT2_ROOT_INO, EXT2_ROOT_INO,
	    path, ino) : ext2fs_namei(w->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path,
	    ino);
	if (err == EXT2_ET_FILE_NOT_FOUND || err == EXT2_ET_NO_DIRECTORY)
		return 1;
	if (err == EXT2_ET_SYMLINK_LOOP)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image: too many levels of symbolic links",
		    path);
	if (err)
		return ext4w_error(w, err, "look up");
	return 0;
}

int ext4w_read(struct ext4w *w, ext2_ino_t ino, size_t max, char **buf,
    size_t *len)
{
	ext2_file_t f;
	errcode_t err;
	__u64 size;
	unsigned got;
	char *b;

	if ((err = ext2fs_file_open(w->fs, ino, 0, &f)) != 0)
		return ext4w_error(w, err, "open");
	if ((err = ext2fs_file_get_lsize(f, &size)) != 0) {
		ext2fs_file_close(f);
		return ext4w_error(w, err, "read the size of");
	}
	if (size > max) {
		ext2fs_file_close(f);
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s in the image: %llu bytes, more than the %zu such a file holds",
		    w->path, (unsigned long long)size, max);
	}
	b = malloc((size_t)size + 1);
	if (b == NULL) {
		ext2fs_file_close(f);
		return vs_error(w->e, EX_OSERR, ENOMEM, "%s", w->path);
	}
	err = ext2fs_file_read(f, b, (unsigned)size, &got);
	ext2fs_file_close(f);
	if (err) {
		free(b);
		return ext4w_error(w, err, "read");
	}
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;
}

int ext4w_set_owner(struct ext4w *w, ext2_ino_t ino, mode_t perm,
    uint32_t uid, uint32_t gid)
{
	struct ext2_inode_large in;
	errcode_t err;

	if ((err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "read the inode of");
	in.i_mode = (uint16_t)((in.i_mode & LINUX_S_IFMT) | (perm & 07777));
	in.i_uid = (uint16_t)uid;
	ext2fs_set_i_uid_high(in, uid >> 16);
	in.i_gid = (uint16_t)gid;
	ext2fs_set_i_gid_high(in, gid >> 16);
	if (in.i_extra_isize >= 8)
		set_time(&in.i_ctime, &in.i_ctime_extra, w->now, 0);
	else
		in.i_ctime = (uint32_t)w->now;
	if ((err = ext2fs_write_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	return 0;
}

bool ext4w_plain_path(const char *path)
{
	const char *p = path;

	if (*p != '/' || p[1] == '\0')
		return false;
	while (*p == '/') {
		const char *c = p + 1, *end = strchrnul(c, '/');
		size_t n = (size_t)(end - c);
		if (n == 0 || n > NAME_MAX || (n == 1 && c[0] == '.') ||
		    (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		p = end;
	}
	return true;
}

/* The parent directory of path and its last component (in name, of size
 * NAME_MAX + 1): 0, 1 when the parent is missing, -1. */
static int parent_of(struct ext4w *w, const char *path, ext2_ino_t *dir,
    char *name)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t pn;
	int r;

	if (!ext4w_plain_path(path) || strlen(path) >= PATH_MAX)
		return vs_error(w->e, EX_DATAERR, 0,
		    "'%s' is not a plain path in the image (an empty, '.' or '..' part)",
		    path);
	strcpy(name, slash + 1);
	pn = (size_t)(slash - path);
	if (pn == 0) {
		*dir = EXT2_ROOT_INO;
		return 0;
	}
	snprintf(parent, sizeof parent, "%.*s", (int)pn, path);
	r = ext4w_namei(w, parent, true, dir);
	if (r != 0)
		return r;
	if (ext4w_type(w, *dir) != S_IFDIR)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image is not a directory",
		    parent);
	return 0;
}

int ext4w_mkdirs(struct ext4w *w, const char *path, mode_t perm,
    uint32_t uid, uint32_t gid, ext2_ino_t *ino)
{
	char name[NAME_MAX + 1];
	ext2_ino_t dir;
	struct ext4w_attr a = { .perm = perm, .uid = uid, .gid = gid,
	    .mtime = { w->now, 0 } };
	int r = ext4w_namei(w, path, true, ino);

	if (r < 0)
		return -1;
	if (r == 0) {
		if (ext4w_type(w, *ino) != S_IFDIR)
			return vs_error(w->e, EX_DATAERR, 0,
			    "%s in the image is not a directory", path);
		return 0;
	}
	r = parent_of(w, path, &dir, name);
	if (r > 0) {
		/* the parent first, as root's (it is a system directory) */
		char parent[PATH_MAX];
		snprintf(parent, sizeof parent, "%.*s",
		    (int)(strrchr(path, '/') - path), path);
		if (ext4w_mkdirs(w, parent, 0755, 0, 0, &dir) < 0)
			return -1;
		r = 0;
	}
	if (r < 0)
		return -1;
	/* a dangling symlink in the way is the image's to mend, not ours to
	 * replace */
	if (ext4w_lookup(w, dir, name, ino) == 0)
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s in the image is a symbolic link to nothing", path);
	if (ext4w_make(w, dir, name, S_IFDIR, NULL, 0, ino) < 0 ||
	    ext4w_set_attr(w, *ino, &a, -1) < 0)
		return -1;
	return 0;
}

/* Replace the data of regular file ino with data. */
static int rewrite(struct ext4w *w, ext2_ino_t ino, const void *data,
    size_t len)
{
	ext2_file_t f;
	errcode_t err;
	unsigned wrote = 0;
	struct ext2_inode_large in;

	if ((err = ext2fs_file_open(w->fs, ino, EXT2_FILE_WRITE, &f)) != 0)
		return ext4w_error(w, err, "open");
	err = ext2fs_file_set_size2(f, 0);
	if (err == 0 && len > 0)
		err = ext2fs_file_write(f, data, (unsigned)len, &wrote);
	if (err == 0 && wrote != len)
		err = EXT2_ET_SHORT_WRITE;
	if (err) {
		ext2fs_file_close(f);
		return ext4w_error(w, err, "write");
	}
	if ((err = ext2fs_file_close(f)) != 0)
		return ext4w_error(w, err, "write");
	if ((err = ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "read the inode of");
	if (in.i_extra_isize >= 24) {
		set_time(&in.i_mtime, &in.i_mtime_extra, w->now, 0);
		set_time(&in.i_ctime, &in.i_ctime_extra, w->now, 0);
	} else {
		in.i_mtime = in.i_ctime = (uint32_t)w->now;
	}
	if ((err = ext2fs_write_inode_full(w->fs, ino, (struct ext2_inode *)&in,
	    sizeof in)) != 0)
		return ext4w_error(w, err, "write the inode of");
	return 0;
}

int ext4w_put(struct ext4w *w, const char *path, const void *data,
    size_t len, mode_t perm, uint32_t uid, uint32_t gid, bool force_attr)
{
	char name[NAME_MAX + 1];
	ext2_ino_t dir, ino;
	mode_t t;
	struct ext4w_attr a = { .perm = perm, .uid = uid, .gid = gid,
	    .mtime = { w->now, 0 } };
	int r = parent_of(w, path, &dir, name);

	if (r > 0)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image: its directory is missing",
		    path);
	if (r < 0)
		return -1;
	r = ext4w_lookup(w, dir, name, &ino);
	if (r < 0)
		return -1;
	if (r == 0) {
		t = ext4w_type(w, ino);
		if (t == S_IFLNK) {
			/* the file it points to, in the image; a dangling
			 * link is replaced */
			r = ext4w_namei(w, path, true, &ino);
			if (r < 0)
				return -1;
			t = r == 0 ? ext4w_type(w, ino) : 0;
			if (r == 0 && t != S_IFREG)
				return vs_error(w->e, EX_DATAERR, 0,
				    "%s in the image links to something that is not a file",
				    path);
		} else if (t != S_IFREG) {
			return vs_error(w->e, EX_DATAERR, 0,
			    "%s in the image is not a regular file", path);
		}
		if (r == 0) {
			snprintf(w->path, sizeof w->path, "%s", path);
			if (rewrite(w, ino, data, len) < 0)
				return -1;
			return force_attr ? ext4w_set_owner(w, ino, perm, uid, gid) : 0;
		}
		if (ext4w_remove(w, dir, name) < 0)
			return -1;
	}
	snprintf(w->path, sizeof w->path, "%s", path);
	if (ext4w_make(w, dir, name, S_IFREG, NULL, 0, &ino) < 0 ||
	    ext4w_set_attr(w, ino, &a, 0) < 0 ||
	    rewrite(w, ino, data, len) < 0)
		return -1;
	return 0;
}
