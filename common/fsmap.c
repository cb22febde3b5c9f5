/* fsmap.c: an ext4 image's used blocks, from its block bitmaps. */
#include "fsmap.h"

#include <errno.h>
#include <stdlib.h>

#include <ext2fs/ext2fs.h>

struct fsmap {
	ext2_filsys fs;
	uint64_t first, count;	/* first data block, blocks in all */
};

struct fsmap *fsmap_open(const char *path, bool *clean, struct vs_err *e)
{
	struct fsmap *m = calloc(1, sizeof *m);
	errcode_t err;

	if (m == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path), NULL;
	err = ext2fs_open2(path, NULL, EXT2_FLAG_64BITS, 0, 0, unix_io_manager,
	    &m->fs);
	if (err == EXT2_ET_BAD_MAGIC || err == EXT2_ET_SHORT_READ ||
	    err == EXT2_ET_CORRUPT_SUPERBLOCK) {
		free(m);
		return vs_error(e, EX_DATAERR, 0,
		    "%s holds no ext2/3/4 filesystem", path), NULL;
	}
	if (err) {
		free(m);
		return vs_error(e, EX_IOERR, 0, "open %s: %s", path,
		    error_message(err)), NULL;
	}
	err = ext2fs_read_block_bitmap(m->fs);
	if (err) {
		vs_error(e, EX_DATAERR, 0, "%s: cannot read its block bitmaps: %s",
		    path, error_message(err));
		fsmap_close(m);
		return NULL;
	}
	m->first = m->fs->super->s_first_data_block;
	m->count = ext2fs_blocks_count(m->fs->super);
	*clean = (m->fs->super->s_state & EXT2_VALID_FS) &&
	    !(m->fs->super->s_state & EXT2_ERROR_FS) &&
	    !ext2fs_has_feature_journal_needs_recovery(m->fs->super);
	return m;
}

void fsmap_close(struct fsmap *m)
{
	if (m == NULL)
		return;
	if (m->fs)
		ext2fs_close_free(&m->fs);
	free(m);
}

unsigned fsmap_block_size(const struct fsmap *m)
{
	return (unsigned)m->fs->blocksize;
}

uint64_t fsmap_blocks(const struct fsmap *m)
{
	return m->count;
}

bool fsmap_used(const struct fsmap *m, uint64_t b)
{
	if (b < m->first || b >= m->count)
		return true;
	return ext2fs_test_block_bitmap2(m->fs->block_map, b) != 0;
}

int fsmap_next_free(const struct fsmap *m, uint64_t from, uint64_t to,
    uint64_t *start, uint64_t *end)
{
	blk64_t s, t;

	if (from < m->first)
		from = m->first;
	if (to > m->count)
		to = m->count;
	if (from >= to)
		return 0;
	if (ext2fs_find_first_zero_block_bitmap2(m->fs->block_map, from, to - 1,
	    &s) != 0)
		return 0;
	if (s + 1 >= to || ext2fs_find_first_set_block_bitmap2(m->fs->block_map,
	    s + 1, to - 1, &t) != 0)
		t = to;
	*start = s;
	*end = t;
	return 1;
}
