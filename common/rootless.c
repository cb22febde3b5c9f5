/* rootless.c: ownership and devices recorded in user.* attributes. */
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rootless.h"

/* Whether the user namespace maps every uid to itself, as the initial
 * one does ("0 0 4294967295"). */
static bool full_uid_map(void)
{
	FILE *f = fopen("/proc/self/uid_map", "re");
	unsigned long long in, out, count;
	bool full;

	if (f == NULL)
		return true;	/* no /proc, no user namespaces to tell */
	full = fscanf(f, "%llu %llu %llu", &in, &out, &count) == 3 &&
	    in == 0 && out == 0 && count == 4294967295ull;
	fclose(f);
	return full;
}

static bool has_caps(void)
{
	struct __user_cap_header_struct h = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
	unsigned need = 1u << CAP_CHOWN | 1u << CAP_FOWNER | 1u << CAP_MKNOD;

	memset(d, 0, sizeof d);
	if (syscall(SYS_capget, &h, d) < 0)
		return false;
	return (d[0].effective & need) == need;
}

bool rootless_needed(void)
{
	return geteuid() != 0 || !full_uid_map() || !has_caps();
}

static size_t put_varint(unsigned char *p, uint32_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (unsigned char)v;
	return n;
}

size_t rootless_encode(uint32_t uid, uint32_t gid,
    unsigned char out[ROOTLESS_MAX])
{
	size_t n = 0;

	if (uid == 0 && gid == 0)
		return 0;
	out[n++] = 0x08;	/* field 1, varint */
	n += put_varint(out + n, uid ? uid : ROOTLESS_NOOP);
	out[n++] = 0x10;	/* field 2, varint */
	n += put_varint(out + n, gid ? gid : ROOTLESS_NOOP);
	return n;
}

static int get_varint(const unsigned char *p, size_t n, size_t *i,
    uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*i >= n)
			return -1;
		*v |= (uint64_t)(p[*i] & 0x7f) << shift;
		if (!(p[(*i)++] & 0x80))
			return 0;
	}
	return -1;
}

int rootless_decode(const void *buf, size_t n, uint32_t *uid, uint32_t *gid)
{
	const unsigned char *p = buf;
	size_t i = 0;
	uint64_t key, v;

	*uid = *gid = 0;
	while (i < n) {
		if (get_varint(p, n, &i, &key) < 0)
			return -1;
		switch (key & 7) {
		case 0:
			if (get_varint(p, n, &i, &v) < 0)
				return -1;
			if ((key >> 3) == 1 || (key >> 3) == 2) {
				if (v > UINT32_MAX)
					return -1;
				if (v == ROOTLESS_NOOP)
					v = 0;
				*((key >> 3) == 1 ? uid : gid) = (uint32_t)v;
			}
			break;
		case 1:
			if (n - i < 8)
				return -1;
			i += 8;
			break;
		case 2:
			if (get_varint(p, n, &i, &v) < 0 || v > n - i)
				return -1;
			i += v;
			break;
		case 5:
			if (n - i < 4)
				return -1;
			i += 4;
			break;
		default:
			return -1;
		}
	}
	return 0;
}

void rootless_device_encode(mode_t type, unsigned major, unsigned minor,
    char out[32])
{
	snprintf(out, 32, "%c %u %u", S_ISBLK(type) ? 'b' : 'c', major, minor);
}

int rootless_device_decode(const char *s, size_t n, mode_t *type,
    unsigned *major, unsigned *minor)
{
	char buf[32], kind, extra;
	unsigned long long maj, min;

	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	/* Linux's device numbers: 12 bits of major, 20 of minor */
	if (sscanf(buf, "%c %llu %llu%c", &kind, &maj, &min, &extra) != 3 ||
	    (kind != 'c' && kind != 'b') || strchr(buf, '-') ||
	    maj > 4095 || min > 1048575)
		return -1;
	*major = (unsigned)maj;
	*minor = (unsigned)min;
	*type = kind == 'b' ? S_IFBLK : S_IFCHR;
	return 0;
}
