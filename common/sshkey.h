/* sshkey.h: OpenSSH public keys, one per line ("TYPE BASE64 [COMMENT]"),
 * as authorized_keys, ssh-keygen's .pub files and github.com/USER.keys
 * hold them: checked (a known type, base64 that decodes to a key blob of
 * that type), compared and fingerprinted the way ssh-keygen -l does.
 *
 * A line that is a private key (or part of one) is never copied into a
 * message. */
#ifndef VS_SSHKEY_H
#define VS_SSHKEY_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct sshkey {
	char *type;		/* "ssh-ed25519" */
	char *blob;		/* the base64, as given */
	char *comment;		/* or NULL */
	char fp[64];		/* "SHA256:..." (unpadded base64 of the blob's SHA-256) */
};

/* Parse one line (no newline) into k.  Returns 0; 1 when the line is
 * blank or a comment (k untouched); -1 with e set (EX_DATAERR,
 * "WHERE: ...") when it is not a public key.  where names the line for
 * the message ("keys.pub:3"). */
int sshkey_parse(const char *line, const char *where, struct sshkey *k,
    struct vs_err *e);

/* Whether a and b are the same key (type and blob; comments aside). */
bool sshkey_same(const struct sshkey *a, const struct sshkey *b);

/* "TYPE BLOB[ COMMENT]", malloc'd, or NULL. */
char *sshkey_line(const struct sshkey *k);

void sshkey_free(struct sshkey *k);

/* A list of keys, without repeats. */
struct sshkeys {
	struct sshkey *k;
	size_t n;
};

/* Add every key of text (lines; blank ones and comments skipped) to ks,
 * leaving out one already there.  where names the source for messages
 * ("keys.pub", "github.com/USER.keys"), the line number is added.  *seen
 * (may be NULL) counts the keys text holds, repeats too. */
int sshkeys_add_text(struct sshkeys *ks, const char *text, size_t len,
    const char *where, size_t *seen, struct vs_err *e);

/* Whether ks holds k. */
bool sshkeys_has(const struct sshkeys *ks, const struct sshkey *k);

void sshkeys_free(struct sshkeys *ks);

#endif
