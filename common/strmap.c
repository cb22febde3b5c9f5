/* strmap.c: string hash map, linear probing, FNV-1a hashes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

static uint64_t hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static struct strmap_slot *find(const struct strmap *m, const char *key,
    size_t len, uint64_t h)
{
	size_t mask = m->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct strmap_slot *s = &m->slots[i];
		if (s->key == NULL || (s->hash == h && s->len == len &&
		    memcmp(s->key, key, len) == 0))
			return s;
	}
}

uintptr_t *strmap_get(const struct strmap *m, const char *key, size_t len)
{
	struct strmap_slot *s;

	if (m->len == 0)
		return NULL;
	s = find(m, key, len, hash(key, len));
	return s->key ? &s->val : NULL;
}

static int grow(struct strmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct strmap_slot *old = m->slots, *slots;
	size_t oldcap = m->cap;

	slots = calloc(cap, sizeof *slots);
	if (slots == NULL)
		return -1;
	m->slots = slots;
	m->cap = cap;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].key)
			*find(m, old[i].key, old[i].len, old[i].hash) = old[i];
	free(old);
	return 0;
}

int strmap_put(struct strmap *m, const char *key, size_t len, uintptr_t val)
{
	uint64_t h = hash(key, len);
	struct strmap_slot *s;

	if ((m->len + 1) * 4 > m->cap * 3 && grow(m) < 0)
		return -1;
	s = find(m, key, len, h);
	if (s->key == NULL) {
		s->key = malloc(len + 1);
		if (s->key == NULL)
			return -1;
		memcpy(s->key, key, len);
		s->key[len] = '\0';
		s->len = len;
		s->hash = h;
		m->len++;
	}
	s->val = val;
	return 0;
}

int strmap_next(const struct strmap *m, size_t *i, const char **key,
    uintptr_t *val)
{
	for (; *i < m->cap; (*i)++)
		if (m->slots[*i].key) {
			*key = m->slots[*i].key;
			*val = m->slots[*i].val;
			(*i)++;
			return 1;
		}
	return 0;
}

void strmap_clear(struct strmap *m)
{
	for (size_t i = 0; i < m->cap && m->len; i++)
		if (m->slots[i].key) {
			free(m->slots[i].key);
			m->slots[i].key = NULL;
			m->len--;
		}
	m->len = 0;
}

void strmap_free(struct strmap *m)
{
	strmap_clear(m);
	free(m->slots);
	m->slots = NULL;
	m->cap = 0;
}
