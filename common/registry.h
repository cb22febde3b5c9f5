/* registry.h: a client of the OCI distribution API (v2), with libcurl.
 *
 * Authentication as registries do it: a 401's WWW-Authenticate challenge
 * names Bearer (a token from the realm, for the service and scope, asked
 * anonymously or with the user's credentials) or Basic.  Credentials come
 * from containers' auth.json and docker's config.json.  They and the tokens
 * are sent only to the registry's own host: redirects (blob downloads are
 * commonly sent to object storage) are followed without them, and they never
 * appear in messages.
 *
 * Plain HTTP is used for loopback registries, as docker does; elsewhere TLS
 * is verified unless the registry was named insecure. */
#ifndef VS_REGISTRY_H
#define VS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "err.h"
#include "layout.h"
#include "ref.h"

#define MANIFEST_MAX (4u << 20)
#define REGISTRY_TIMEOUT 60	/* seconds: registry_open's default timeout */

struct registry;

/* Connect to ref's registry (nothing is sent yet).  insecure: allow plain
 * HTTP or unverified TLS for it.  timeout (seconds; 0 for REGISTRY_TIMEOUT)
 * bounds the silence of one request or one blob download, across all its
 * tries: when the registry sends nothing for that long, it is given up on
 * with EX_UNAVAILABLE, "no answer from REGISTRY in N s". */
struct registry *registry_open(const struct oci_ref *ref, bool insecure,
    long timeout, struct vs_err *e);
void registry_close(struct registry *r);

struct manifest {
	char *body;		/* NULL after a HEAD */
	size_t len;
	char media_type[128];
	char digest[DIGEST_MAX];
};

/* GET (or HEAD) the manifest at reference (a tag or a digest) of the
 * repository.  A GET's body is checked against the digest the registry
 * gives, or the one asked for.  A HEAD's digest is empty when the registry
 * gives none.  Unknown: EX_UNAVAILABLE. */
int registry_manifest(struct registry *r, const char *reference, bool head,
    struct manifest *m, struct vs_err *e);
void manifest_free(struct manifest *m);

struct blob_job {
	const char *digest;
	int64_t size;
	uint64_t fetched;	/* out: bytes downloaded */
	uint64_t resumed;	/* out: bytes found from an interrupted run */
	bool present;		/* out: it was in the cache, whole */
};

typedef void (*blob_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Download the blobs into the layout, at most parallel at a time; each is
 * written under a temporary name (blobs/sha256/.<hex>.partial, kept when
 * interrupted, so that a rerun resumes it with a Range request) and renamed
 * into place once its size and digest match.  Retries 5xx, 429 and dropped
 * connections with backoff.  A whole answer that is longer or shorter than
 * the blob's size is refused at once (EX_DATAERR) and its partial file
 * removed.  Blobs already present are skipped. */
int registry_fetch_blobs(struct registry *r, const struct oci_layout *l,
    struct blob_job *jobs, size_t n, int parallel, blob_progress_fn progress,
    void *arg, struct vs_err *e);

/* --- pushing (oci-push) ---
 * Tokens are then asked for with push scope.  Each call retries what may
 * pass (transport failures, 5xx, 429) with backoff; an upload is started
 * again from the beginning. */

/* Whether the repository has the blob: 1, 0, or -1 with e set. */
int registry_blob_exists(struct registry *r, const char *digest,
    struct vs_err *e);

/* Upload bytes [off, off + len) of fd as the blob digest: first, when from
 * is given, ask the registry to mount it from that repository of its own
 * (no bytes sent); else a POST, then one PUT of the whole when chunk is 0
 * or len <= chunk, or PATCHes of chunk bytes each and a PUT (for
 * registries that cap a request's size).  1 uploaded, 2 mounted, -1 with e
 * set. */
int registry_push_blob(struct registry *r, const char *digest, int fd,
    uint64_t off, uint64_t len, const char *from, uint64_t chunk,
    struct vs_err *e);

/* PUT a manifest under reference (a tag or its digest); digest (unless
 * NULL, DIGEST_MAX bytes) gets what the registry says it is. */
int registry_put_manifest(struct registry *r, const char *reference,
    const char *media_type, const char *body, size_t len, char *digest,
    struct vs_err *e);

#endif
