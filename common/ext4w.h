/* ext4w.h: the ext4 writer: a filesystem image filled without root,
 * without mounting, without a loop device.  mke2fs makes the empty
 * filesystem (with vmstrap's own profile, whatever the host's
 * mke2fs.conf says), libext2fs fills it: entries of every type, owners,
 * modes, times, attributes, hardlinks, and file data streamed in with as
 * few extents as the allocation allows, holes and blocks of zeros left
 * out.  Entries can be removed again, blocks, inode and directory entry
 * (a whiteout leaves nothing behind).
 *
 * Two sources feed it: mkbase's walk of a host tree, and an image's
 * layers (common/layers). */
#ifndef VS_EXT4W_H
#define VS_EXT4W_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <ext2fs/ext2fs.h>

#include "err.h"

/* What ext4 with 4096-byte blocks can hold. */
#define EXT4W_LINK_MAX 65000
#define EXT4W_FILE_MAX ((((uint64_t)1 << 32) - 1) * 4096)
/* the last second an ext4 inode can hold (2446-05-10), the first
 * (1901-12-13) */
#define EXT4W_TIME_MAX 15032385535LL
#define EXT4W_TIME_MIN (-2147483648LL)
/* the last second a superblock's times hold (2106-02-07) */
#define EXT4W_SB_TIME_MAX 4294967295LL

struct ext4w {
	ext2_filsys fs;
	int img;		/* the image, for file data */
	bool reproducible;	/* times clamped to now */
	time_t now;		/* ctime and crtime of every inode */
	char *buf;		/* a file's data, staged to whole blocks */
	uint64_t done;		/* data bytes taken, for progress */
	char path[PATH_MAX];	/* the entry being written, for messages */
	errcode_t last_err;	/* libext2fs's last error, told to e */
	struct vs_err *e;
};

/* An entry's owner, permission bits and times. */
struct ext4w_attr {
	mode_t perm;		/* 07777 */
	uint32_t uid, gid;
	struct timespec mtime;	/* atime too; ctime and crtime are now */
};

/* mke2fs the file path (its size already set) into an empty ext4; with
 * uuid and seed (reproducible builds), those.  E2FSPROGS_FAKE_TIME is the
 * caller's to set. */
int ext4w_mkfs(const char *path, const char *uuid, const char *seed,
    struct vs_err *e);

/* Open the filesystem in path (fd: the same file, for data) to fill it.
 * now is every inode's ctime; reproducible clamps times to it.  A file
 * without one is EX_DATAERR. */
int ext4w_open(struct ext4w *w, const char *path, int fd, time_t now,
    bool reproducible, struct vs_err *e);

/* Write everything out and close: 0, or -1 with e set. */
int ext4w_close(struct ext4w *w);

/* Close without caring (the image is thrown away). */
void ext4w_abort(struct ext4w *w);

/* The name in directory dir: 0 with *ino, 1 when it is not there. */
int ext4w_lookup(struct ext4w *w, ext2_ino_t dir, const char *name,
    ext2_ino_t *ino);

/* A new entry name in directory dir, of type (S_IFREG, S_IFDIR, S_IFLNK
 * with target, S_IFCHR/S_IFBLK with rdev, S_IFIFO, S_IFSOCK): *ino.  A
 * directory /lost+found that mke2fs made is taken over.  The name must not
 * be there (ext4w_remove it first). */
int ext4w_make(struct ext4w *w, ext2_ino_t dir, const char *name,
    mode_t type, const char *target, dev_t rdev, ext2_ino_t *ino);

/* Another name for the file ino (a hardlink). */
int ext4w_link(struct ext4w *w, ext2_ino_t dir, const char *name,
    ext2_ino_t ino);

/* Owner, permission bits and times of ino; for a regular file, its size
 * too (size < 0: left as it is). */
int ext4w_set_attr(struct ext4w *w, ext2_ino_t ino,
    const struct ext4w_attr *a, int64_t size);

/* Extended attributes of ino: open, set (replacing one of that name),
 * close (which writes them: in the inode, or in a block). */
struct ext2_xattr_handle *ext4w_xattrs_open(struct ext4w *w, ext2_ino_t ino);
int ext4w_xattr_set(struct ext4w *w, struct ext2_xattr_handle *h,
    const char *key, const void *val, size_t len);
int ext4w_xattrs_close(struct ext4w *w, struct ext2_xattr_handle **h);
/* Remove every attribute of ino. */
int ext4w_xattrs_clear(struct ext4w *w, ext2_ino_t ino);

/* A regular file's data, streamed: begin, write at rising offsets (what is
 * skipped is a hole; data that goes back, or beyond what an ext4 file holds,
 * is refused as bad data, EX_DATAERR), end. */
struct ext4w_file {
	struct ext4w *w;
	ext2_ino_t ino;
	ext2_extent_handle_t h;
	struct ext2fs_extent ext;	/* the one being grown, not yet in */
	blk64_t goal, blocks;
	bool inserted;			/* the tree has an extent already */
	uint64_t staged_at;		/* the block w->buf starts at */
	size_t staged;			/* bytes in w->buf */
	uint64_t end;			/* where the data written so far ends */
};
int ext4w_file_begin(struct ext4w *w, ext2_ino_t ino, struct ext4w_file *f);
int ext4w_file_write(struct ext4w_file *f, uint64_t off, const void *data,
    size_t len);
int ext4w_file_end(struct ext4w_file *f);

/* Remove name from directory dir and, when nothing else links to it, the
 * inode with its blocks and attributes; a directory with everything in it.
 * A missing name is no error. */
int ext4w_remove(struct ext4w *w, ext2_ino_t dir, const char *name);

/* The names in directory dir (not "." and ".."), malloc'd. */
int ext4w_list(struct ext4w *w, ext2_ino_t dir, char ***names, size_t *n);

/* The type (S_IF*) of ino, or 0 when it cannot be read (e set). */
mode_t ext4w_type(struct ext4w *w, ext2_ino_t ino);

/* Files of an image already made (imgprep): paths are absolute in the
 * image, and symlinks are followed as the guest would, never out of it. */

/* Whether path is absolute and plain: no empty, "." or ".." part, no
 * trailing '/', not "/" itself. */
bool ext4w_plain_path(const char *path);

/* The inode of path (follow: the last component's symlink too): 0, 1
 * when it is not there, -1 with e set. */
int ext4w_namei(struct ext4w *w, const char *path, bool follow,
    ext2_ino_t *ino);

/* The whole data of regular file ino, NUL-terminated, malloc'd; more than
 * max bytes is EX_DATAERR. */
int ext4w_read(struct ext4w *w, ext2_ino_t ino, size_t max, char **buf,
    size_t *len);

/* Owner and permission bits of ino (ctime now). */
int ext4w_set_owner(struct ext4w *w, ext2_ino_t ino, mode_t perm,
    uint32_t uid, uint32_t gid);

/* mkdir -p: path made with perm, uid, gid where missing (its missing
 * parents root's, 0755); *ino the directory. */
int ext4w_mkdirs(struct ext4w *w, const char *path, mode_t perm,
    uint32_t uid, uint32_t gid, ext2_ino_t *ino);

/* data as the whole content of regular file path.  An existing file (or
 * the file a symlink there points to) keeps its inode, and its owner and
 * mode unless force_attr; a missing one is made with perm, uid, gid.  Its
 * directory must exist. */
int ext4w_put(struct ext4w *w, const char *path, const void *data,
    size_t len, mode_t perm, uint32_t uid, uint32_t gid, bool force_attr);

/* Whether the image file src holds an ext2/3/4 filesystem resize2fs may
 * grow (else -1, EX_DATAERR), and whether e2fsck must see it first. */
int ext4w_probe(const char *src, bool *needs_fsck, struct vs_err *e);

/* Grow the filesystem in the image file img (already of the larger size)
 * to fill it, with resize2fs, offline; e2fsck -p first when needs_fsck. */
int ext4w_grow(const char *img, bool needs_fsck, struct vs_err *e);

/* Report a libext2fs error about w->path: the image full is EX_CANTCREAT,
 * attributes more than ext4 holds EX_DATAERR, anything else EX_IOERR; it is
 * kept in w->last_err.  Returns -1. */
int ext4w_error(struct ext4w *w, errcode_t err, const char *what);

#endif
