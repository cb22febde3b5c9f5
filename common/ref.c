#include "ref.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define FORM "expected [REGISTRY/]NAME[:TAG][@sha256:DIGEST], like debian:12 or localhost:5000/vm:latest"

static bool is_lower_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool digest_valid(const char *s)
{
	size_t n = strlen(s);

	if (strncmp(s, "sha256:", 7) == 0)
		return n == 7 + 64 && is_hex(s + 7, 64);
	if (strncmp(s, "sha512:", 7) == 0)
		return n == 7 + 128 && is_hex(s + 7, 128);
	return false;
}

/* A path component: runs of [a-z0-9] joined by '.', '_', '__' or '-'s. */
static bool component_ok(const char *s, size_t n)
{
	size_t i = 0;

	for (;;) {
		if (i >= n || !is_lower_alnum(s[i]))
			return false;
		while (i < n && is_lower_alnum(s[i]))
			i++;
		if (i == n)
			return true;
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i += i + 1 < n && s[i + 1] == '_' ? 2 : 1;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
	}
}

/* A registry: host[:port], the host a DNS name, IPv4 or [IPv6], the port
 * from 1 to 65535.  *bad_port is set when only the port is wrong. */
static bool registry_ok(const char *s, size_t n, bool *bad_port)
{
	size_t hostlen = n;
	const char *colon;

	*bad_port = false;
	if (n == 0)
		return false;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (close == NULL || close == s + 1)
			return false;
		for (const char *p = s + 1; p < close; p++)
			if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
				return false;
		hostlen = (size_t)(close - s) + 1;
	} else {
		colon = memchr(s, ':', n);
		if (colon)
			hostlen = (size_t)(colon - s);
		for (size_t i = 0; i < hostlen; i++) {
			char c = s[i];
			if (!isalnum((unsigned char)c) && c != '.' && c != '-')
				return false;
			if ((c == '.' || c == '-') && (i == 0 || i + 1 == hostlen ||
			    s[i - 1] == '.' || (c == '.' && s[i - 1] == '-') ||
			    (c == '-' && s[i + 1] == '.')))
				return false;
		}
		if (hostlen == 0)
			return false;
	}
	if (hostlen < n) {
		size_t digits = n - hostlen - 1;
		long port = 0;
		if (s[hostlen] != ':' || digits == 0)
			return false;
		for (size_t i = hostlen + 1; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return false;
			if (port <= 65535)
				port = port * 10 + (s[i] - '0');
		}
		if (digits > 5 || port < 1 || port > 65535) {
			*bad_port = true;
			return false;
		}
	}
	return true;
}

static bool tag_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128 || !(isalnum((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

int ref_parse(const char *s, struct oci_ref *r, struct vs_err *e)
{
	char buf[512], *name, *at, *slash, *colon, *path;
	size_t n;

	memset(r, 0, sizeof *r);
	if (s == NULL || *s == '\0')
		return vs_error(e, EX_USAGE, 0, "empty image reference: %s", FORM);
	if (strlen(s) >= sizeof buf)
		return vs_error(e, EX_USAGE, 0, "image reference is too long (%zu bytes)",
		    strlen(s));
	strcpy(buf, s);
	name = buf;

	at = strchr(name, '@');
	if (at) {
		*at = '\0';
		/* A well-formed digest of another algorithm than sha256
		 * (sha512) names nothing the cache can hold. */
		if (digest_valid(at + 1) && strncmp(at + 1, "sha256:", 7) != 0)
			return vs_error(e, EX_USAGE, 0,
			    "invalid image reference '%s': unsupported digest algorithm '%.*s' (only sha256 is supported)",
			    s, (int)strcspn(at + 1, ":"), at + 1);
		if (!digest_valid(at + 1))
			return vs_error(e, EX_USAGE, 0,
			    "invalid image reference '%s': bad digest '%s' (expected sha256: and 64 lowercase hex digits)",
			    s, at + 1);
		snprintf(r->digest, sizeof r->digest, "%s", at + 1);
	}
	/* A tag follows the last ':' after the last '/'. */
	slash = strrchr(name, '/');
	colon = strrchr(slash ? slash : name, ':');
	if (colon) {
		*colon = '\0';
		if (!tag_ok(colon + 1))
			return vs_error(e, EX_USAGE, 0,
			    "invalid image reference '%s': bad tag '%s' (letters, digits, '_', '.' and '-', at most 128)",
			    s, colon + 1);
		snprintf(r->tag, sizeof r->tag, "%s", colon + 1);
	}
	if (*name == '\0')
		return vs_error(e, EX_USAGE, 0, "invalid image reference '%s': no name: %s",
		    s, FORM);

	slash = strchr(name, '/');
	if (slash && (memchr(name, '.', (size_t)(slash - name)) ||
	    memchr(name, ':', (size_t)(slash - name)) || name[0] == '[' ||
	    ((size_t)(slash - name) == 9 && strncmp(name, "localhost", 9) == 0))) {
		bool bad_port;

		n = (size_t)(slash - name);
		if (!registry_ok(name, n, &bad_port))
			return vs_error(e, EX_USAGE, 0,
			    "invalid image reference '%s': bad registry '%.*s'%s", s,
			    (int)n, name, bad_port ?
			    ": its port is not from 1 to 65535" : "");
		snprintf(r->registry, sizeof r->registry, "%.*s", (int)n, name);
		path = slash + 1;
	} else {
		strcpy(r->registry, "docker.io");
		path = name;
	}
	if (strcmp(r->registry, "index.docker.io") == 0)
		strcpy(r->registry, "docker.io");
	if (strcmp(r->registry, "docker.io") == 0 && strchr(path, '/') == NULL)
		snprintf(r->repository, sizeof r->repository, "library/%s", path);
	else
		snprintf(r->repository, sizeof r->repository, "%s", path);

	for (const char *p = r->repository; *p; ) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		for (size_t i = 0; i < len; i++)
			if (p[i] >= 'A' && p[i] <= 'Z')
				return vs_error(e, EX_USAGE, 0,
				    "invalid image reference '%s': the repository name must be lowercase",
				    s);
		if (!component_ok(p, len))
			return vs_error(e, EX_USAGE, 0,
			    "invalid image reference '%s': bad name component '%.*s': %s",
			    s, (int)len, p, FORM);
		p += len + (end ? 1 : 0);
		if (end && *p == '\0')
			return vs_error(e, EX_USAGE, 0,
			    "invalid image reference '%s': ends with '/'", s);
	}
	if (strlen(r->registry) + 1 + strlen(r->repository) > 255)
		return vs_error(e, EX_USAGE, 0,
		    "invalid image reference '%s': the name is longer than 255 characters",
		    s);
	if (r->tag[0] == '\0' && r->digest[0] == '\0')
		strcpy(r->tag, "latest");
	snprintf(r->name, sizeof r->name, "%s/%s%s%s%s%s", r->registry,
	    r->repository, r->tag[0] ? ":" : "", r->tag, r->digest[0] ? "@" : "",
	    r->digest);
	return 0;
}

const char *ref_api_host(const struct oci_ref *r)
{
	return strcmp(r->registry, "docker.io") == 0 ? "registry-1.docker.io"
	    : r->registry;
}

bool ref_is_loopback(const struct oci_ref *r)
{
	const char *h = r->registry;
	size_t n = strcspn(h, h[0] == '[' ? "]" : ":");

	if (h[0] == '[')
		return n == 4 && strncmp(h, "[::1", 4) == 0;
	if (n == 9 && strncmp(h, "localhost", 9) == 0)
		return true;
	if (strncmp(h, "127.", 4) == 0) {
		int a, b, c, d;
		char end;
		char host[64];
		snprintf(host, sizeof host, "%.*s", (int)n, h);
		return sscanf(host, "%d.%d.%d.%d%c", &a, &b, &c, &d, &end) == 4 &&
		    a == 127 && b >= 0 && b < 256 && c >= 0 && c < 256 && d >= 0 &&
		    d < 256;
	}
	return false;
}
