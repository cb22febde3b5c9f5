/* rootless.h: what an unprivileged unpack could not apply, recorded in
 * user.* extended attributes so that mkbase can apply it inside the image.
 *
 * Ownership is recorded as umoci's rootless mode and the rootlesscontainers
 * specification do: user.rootlesscontainers holds a protobuf message
 * Resource { uint32 uid = 1; uint32 gid = 2; }, where 4294967295 (NoopID)
 * or a missing field stands for 0, the container's root; a file owned by
 * 0:0 has no attribute.  vmstrap adds two of its own:
 *
 *   user.vmstrap.device     "c MAJOR MINOR" or "b MAJOR MINOR" on the empty
 *                           regular file that stands for a device node
 *   user.vmstrap.xattr.NAME the value of attribute NAME (security.capability,
 *                           trusted.*) that only root may set */
#ifndef VS_ROOTLESS_H
#define VS_ROOTLESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ROOTLESS_XATTR "user.rootlesscontainers"
#define ROOTLESS_DEVICE_XATTR "user.vmstrap.device"
#define ROOTLESS_XATTR_PREFIX "user.vmstrap.xattr."
#define ROOTLESS_NOOP 4294967295u
#define ROOTLESS_MAX 12		/* two tags and two 5-byte varints */

/* Whether this process must record what it cannot apply: not root, or a
 * root that cannot give files any owner or make devices (in a user
 * namespace that does not map every uid, or without CAP_CHOWN, CAP_FOWNER
 * and CAP_MKNOD). */
bool rootless_needed(void);

/* Encode uid:gid; returns the length, 0 for 0:0 (no attribute needed). */
size_t rootless_encode(uint32_t uid, uint32_t gid,
    unsigned char out[ROOTLESS_MAX]);

/* Decode an attribute's value.  Returns 0, or -1 when it is malformed. */
int rootless_decode(const void *p, size_t n, uint32_t *uid, uint32_t *gid);

/* "c 1 3" for a character device (type is S_IFCHR or S_IFBLK). */
void rootless_device_encode(mode_t type, unsigned major, unsigned minor,
    char out[32]);

/* Parse it back; returns -1 when it is malformed. */
int rootless_device_decode(const char *s, size_t n, mode_t *type,
    unsigned *major, unsigned *minor);

#endif
