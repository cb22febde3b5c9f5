#include "size.h"

#include <stdio.h>

#define FORM "a whole number followed by M, G or T, like 15G"

int size_parse(const char *s, uint64_t *bytes, struct vs_err *e)
{
	const char *p = s;
	uint64_t n = 0;
	unsigned shift;

	if (s == NULL || *s == '\0')
		return vs_error(e, EX_USAGE, 0, "empty size: expected %s", FORM);
	if (*p < '0' || *p > '9')
		return vs_error(e, EX_USAGE, 0,
		    "invalid size '%s': expected %s", s, FORM);
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (n > (SIZE_MAX_BYTES - d) / 10)
			return vs_error(e, EX_USAGE, 0,
			    "size '%s' is too large: at most 8388607T (%s)", s, FORM);
		n = n * 10 + d;
	}
	switch (*p) {
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 't': case 'T': shift = 40; break;
	case '\0':
		return vs_error(e, EX_USAGE, 0,
		    "invalid size '%s': the unit is missing: expected %s", s,
		    FORM);
	default:
		return vs_error(e, EX_USAGE, 0,
		    "invalid size '%s': expected %s", s, FORM);
	}
	if (p[1] != '\0')
		return vs_error(e, EX_USAGE, 0,
		    "invalid size '%s': expected %s", s, FORM);
	if (n == 0)
		return vs_error(e, EX_USAGE, 0,
		    "invalid size '%s': must be more than zero, like 15G", s);
	if (n > (SIZE_MAX_BYTES >> shift))
		return vs_error(e, EX_USAGE, 0,
		    "size '%s' is too large: at most 8388607T (%s)", s, FORM);
	*bytes = n << shift;
	return 0;
}

int size_parse_disk(const char *s, uint64_t *bytes, struct vs_err *e)
{
	uint64_t b;

	if (size_parse(s, &b, e) < 0)
		return -1;
	if (b < SIZE_DISK_MIN)
		return vs_error(e, EX_USAGE, 0,
		    "size '%s' is too small: a disk is at least 5G (%s)", s, FORM);
	*bytes = b;
	return 0;
}

char *size_format(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "TGM";
	static const unsigned shifts[] = { 40, 30, 20 };

	for (int i = 0; i < 3; i++) {
		uint64_t m = UINT64_C(1) << shifts[i];
		if (bytes >= m && bytes % m == 0) {
			snprintf(buf, len, "%llu%c",
			    (unsigned long long)(bytes >> shifts[i]), units[i]);
			return buf;
		}
	}
	snprintf(buf, len, "%llu bytes", (unsigned long long)bytes);
	return buf;
}

char *size_human(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGTPE";
	double v = (double)bytes;
	int i = -1;

	if (bytes < 1024) {
		snprintf(buf, len, "%lluB", (unsigned long long)bytes);
		return buf;
	}
	while (v >= 1024 && i < 5) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, v < 10 ? "%.1f%c" : "%.0f%c", v, units[i]);
	return buf;
}
