/* creds.h: registry credentials, where docker and podman keep them:
 * $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, then
 * $DOCKER_CONFIG/config.json or ~/.docker/config.json ("auths", with a
 * base64 "auth" of user:password).  Never printed. */
#ifndef VS_CREDS_H
#define VS_CREDS_H

#include "err.h"

/* 1 and malloc'd *user, *pass (and *from, the file, when from is not NULL)
 * when a file has credentials for registry; 0 when none does; -1 when a
 * file is broken (EX_CONFIG). */
int creds_find(const char *registry, char **user, char **pass, char **from,
    struct vs_err *e);

#endif
