/* strmap.h: a hash map from strings to small values (open addressing).
 * Keys are copied; a key may be given with its length, so that a prefix of
 * a longer string can be looked up without copying it. */
#ifndef VS_STRMAP_H
#define VS_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct strmap_slot {
	char *key;
	size_t len;
	uint64_t hash;
	uintptr_t val;
};

struct strmap {
	struct strmap_slot *slots;
	size_t cap;		/* a power of two, or 0 */
	size_t len;
};

#define STRMAP_INIT { NULL, 0, 0 }

/* The value slot for key, or NULL when it is not there. */
uintptr_t *strmap_get(const struct strmap *m, const char *key, size_t len);

/* Set key to val.  Returns 0, or -1 with errno ENOMEM. */
int strmap_put(struct strmap *m, const char *key, size_t len, uintptr_t val);

/* Iterate: start with *i = 0; returns 0 at the end. */
int strmap_next(const struct strmap *m, size_t *i, const char **key,
    uintptr_t *val);

/* Remove every key (capacity is kept); strmap_free also frees the table. */
void strmap_clear(struct strmap *m);
void strmap_free(struct strmap *m);

#endif
