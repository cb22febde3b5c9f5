#include "sshkey.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cleanup.h"

/* The key types sshd takes in authorized_keys (certificates go with the
 * cert-authority option, which vmstrap does not write). */
static const char *const types[] = {
	"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
	"ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
	"sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss", NULL,
};

/* The longest blob accepted: an RSA key of 16384 bits is about 2 KiB. */
#define BLOB_MAX 16384

static bool known_type(const char *s, size_t n)
{
	for (int i = 0; types[i]; i++)
		if (strlen(types[i]) == n && memcmp(types[i], s, n) == 0)
			return true;
	return false;
}

/* Strict base64 (what ssh-keygen writes): the decoded bytes in out (of
 * size >= len * 3 / 4), their number, or -1. */
static long decode64(const char *s, size_t len, unsigned char *out)
{
	size_t pad = 0;
	int n;

	if (len == 0 || len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '=') {
			if (i < len - 2)
				return -1;
			pad++;
		} else if (pad || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '+' || c == '/')) {
			return -1;
		}
	}
	n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
	if (n < 0 || (size_t)n < pad)
		return -1;
	return n - (long)pad;
}

static int not_public(const char *where, const char *line, struct vs_err *e)
{
	if (strstr(line, "PRIVATE KEY") || strncmp(line, "-----BEGIN", 10) == 0)
		return vs_error(e, EX_DATAERR, 0,
		    "%s: a private key, not a public key (give the .pub file)", where);
	if (strncmp(line, "b3BlbnNzaC1rZXktdjE", 19) == 0)	/* "openssh-key-v1" */
		return vs_error(e, EX_DATAERR, 0,
		    "%s: part of a private key, not a public key (give the .pub file)",
		    where);
	return vs_error(e, EX_DATAERR, 0,
	    "%s: not an OpenSSH public key (expected TYPE BASE64 [COMMENT], with TYPE ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256...)",
	    where);
}

int sshkey_parse(const char *line, const char *where, struct sshkey *k,
    struct vs_err *e)
{
	const char *p = line, *t, *b, *c;
	size_t tn, bn;
	cleanup_free unsigned char *raw = NULL;
	unsigned char md[32];
	unsigned char fp64[48];
	unsigned int mdlen;
	long rn;
	uint32_t sl;

	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	if (*p == '\0' || *p == '#')
		return 1;
	if (strchr(p, '\n'))
		return vs_error(e, EX_DATAERR, 0,
		    "%s: a line break inside the key: one key a line", where);
	t = p;
	while (*p && *p != ' ' && *p != '\t')
		p++;
	tn = (size_t)(p - t);
	if (!known_type(t, tn))
		return not_public(where, line, e);
	while (*p == ' ' || *p == '\t')
		p++;
	b = p;
	while (*p && *p != ' ' && *p != '\t' && *p != '\r')
		p++;
	bn = (size_t)(p - b);
	if (bn == 0 || bn > BLOB_MAX * 4 / 3 + 4)
		return not_public(where, line, e);
	raw = malloc(bn);
	if (raw == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", where);
	rn = decode64(b, bn, raw);
	/* the blob starts with its own type, as an SSH string */
	if (rn < 4)
		return not_public(where, line, e);
	sl = (uint32_t)raw[0] << 24 | (uint32_t)raw[1] << 16 |
	    (uint32_t)raw[2] << 8 | raw[3];
	if (sl != tn || (size_t)rn < 4 + (size_t)sl || memcmp(raw + 4, t, tn) != 0 ||
	    (size_t)rn == 4 + (size_t)sl)
		return vs_error(e, EX_DATAERR, 0,
		    "%s: the key's data does not hold a %.*s key", where, (int)tn, t);
	while (*p == ' ' || *p == '\t')
		p++;
	c = p;
	p = c + strlen(c);
	while (p > c && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\r'))
		p--;
	if (EVP_Digest(raw, (size_t)rn, md, &mdlen, EVP_sha256(), NULL) != 1)
		return vs_error(e, EX_SOFTWARE, 0, "%s: SHA-256 failed", where);
	EVP_EncodeBlock(fp64, md, (int)mdlen);
	*strchrnul((char *)fp64, '=') = '\0';
	memset(k, 0, sizeof *k);
	snprintf(k->fp, sizeof k->fp, "SHA256:%s", (char *)fp64);
	k->type = strndup(t, tn);
	k->blob = strndup(b, bn);
	k->comment = p > c ? strndup(c, (size_t)(p - c)) : NULL;
	if (k->type == NULL || k->blob == NULL || (p > c && k->comment == NULL)) {
		sshkey_free(k);
		return vs_error(e, EX_OSERR, ENOMEM, "%s", where);
	}
	return 0;
}

bool sshkey_same(const struct sshkey *a, const struct sshkey *b)
{
	return strcmp(a->type, b->type) == 0 && strcmp(a->blob, b->blob) == 0;
}

char *sshkey_line(const struct sshkey *k)
{
	char *s;

	if (asprintf(&s, "%s %s%s%s", k->type, k->blob, k->comment ? " " : "",
	    k->comment ? k->comment : "") < 0)
		return NULL;
	return s;
}

void sshkey_free(struct sshkey *k)
{
	free(k->type);
	free(k->blob);
	free(k->comment);
	k->type = k->blob = k->comment = NULL;
}

bool sshkeys_has(const struct sshkeys *ks, const struct sshkey *k)
{
	for (size_t i = 0; i < ks->n; i++)
		if (sshkey_same(&ks->k[i], k))
			return true;
	return false;
}

int sshkeys_add_text(struct sshkeys *ks, const char *text, size_t len,
    const char *where, size_t *seen, struct vs_err *e)
{
	size_t lineno = 0, n = 0;
	const char *p = text, *end = text + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
		cleanup_free char *line = strndup(p, ll);
		char at[512];
		struct sshkey k;
		struct sshkey *grown;
		int r;

		lineno++;
		p += ll + (nl != NULL);
		if (line == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "%s", where);
		if (strlen(line) != ll)
			return vs_error(e, EX_DATAERR, 0, "%s:%zu: a NUL byte: not a public key",
			    where, lineno);
		snprintf(at, sizeof at, "%s:%zu", where, lineno);
		r = sshkey_parse(line, at, &k, e);
		if (r < 0)
			return -1;
		if (r > 0)
			continue;
		n++;
		if (sshkeys_has(ks, &k)) {
			sshkey_free(&k);
			continue;
		}
		grown = realloc(ks->k, (ks->n + 1) * sizeof *ks->k);
		if (grown == NULL) {
			sshkey_free(&k);
			return vs_error(e, EX_OSERR, ENOMEM, "%s", where);
		}
		ks->k = grown;
		ks->k[ks->n++] = k;
	}
	if (seen)
		*seen = n;
	return 0;
}

void sshkeys_free(struct sshkeys *ks)
{
	for (size_t i = 0; i < ks->n; i++)
		sshkey_free(&ks->k[i]);
	free(ks->k);
	ks->k = NULL;
	ks->n = 0;
}
