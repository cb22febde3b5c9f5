/* ref.h: image references as docker and podman read them.
 *
 *   debian                      docker.io/library/debian:latest
 *   ghcr.io/org/img:1.0         ghcr.io/org/img:1.0
 *   localhost:5000/x            localhost:5000/x:latest
 *   name@sha256:…               docker.io/library/name@sha256:…
 *   name:tag@sha256:…           the digest decides; the tag is kept
 *
 * The first component is a registry when it has a '.' or a ':', is
 * "localhost", or is an IPv6 address in brackets; otherwise the image is on
 * Docker Hub, under library/ when it has no '/'. */
#ifndef VS_REF_H
#define VS_REF_H

#include <stdbool.h>

#include "err.h"

struct oci_ref {
	char registry[256];	/* docker.io, localhost:5000, [::1]:5000 */
	char repository[256];	/* library/debian */
	char tag[129];		/* "" when only a digest was given */
	char digest[140];	/* "" when not given */
	char name[512];		/* the full reference: registry/repo[:tag][@digest] */
};

/* Parse s.  On failure e says why (EX_USAGE) and -1 is returned: among
 * others for a port outside 1-65535 and for a digest of another algorithm
 * than sha256 (the cache and the tools handle sha256 alone). */
int ref_parse(const char *s, struct oci_ref *r, struct vs_err *e);

/* The host the registry's API is on: registry-1.docker.io for docker.io. */
const char *ref_api_host(const struct oci_ref *r);

/* Whether the registry is on this machine (localhost, 127.0.0.0/8, ::1),
 * where plain HTTP is used, as docker does. */
bool ref_is_loopback(const struct oci_ref *r);

/* Whether s is "algorithm:hex" with sha256 (64 hex) or sha512 (128 hex). */
bool digest_valid(const char *s);

#endif
