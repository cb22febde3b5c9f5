#include "creds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "doc.h"
#include "path.h"

/* The host a key of "auths" names: "https://host/v1/" → "host". */
static void key_host(const char *key, char *out, size_t len)
{
	const char *p = strstr(key, "://");
	size_t n;

	p = p ? p + 3 : key;
	n = strcspn(p, "/");
	snprintf(out, len, "%.*s", (int)n, p);
}

static bool same_registry(const char *key, const char *registry)
{
	char host[300];

	key_host(key, host, sizeof host);
	if (strcmp(host, registry) == 0)
		return true;
	/* Docker Hub goes by several names. */
	if (strcmp(registry, "docker.io") == 0)
		return strcmp(host, "index.docker.io") == 0 ||
		    strcmp(host, "registry-1.docker.io") == 0;
	return false;
}

/* Decode base64 "user:pass". */
static int decode_auth(const char *b64, char **user, char **pass)
{
	size_t n = strlen(b64), pad = 0;
	cleanup_free unsigned char *out = NULL;
	int len;
	char *colon;

	if (n == 0 || n % 4 != 0)
		return -1;
	out = malloc(n / 4 * 3 + 1);
	if (out == NULL)
		return -1;
	len = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
	if (len < 0)
		return -1;
	if (b64[n - 1] == '=')
		pad++;
	if (b64[n - 2] == '=')
		pad++;
	len -= (int)pad;
	out[len] = '\0';
	if (memchr(out, '\0', (size_t)len) != NULL)
		return -1;
	colon = strchr((char *)out, ':');
	if (colon == NULL)
		return -1;
	*colon = '\0';
	*user = strdup((char *)out);
	*pass = strdup(colon + 1);
	if (*user == NULL || *pass == NULL) {
		free(*user);
		free(*pass);
		return -1;
	}
	return 0;
}

/* Look in one file; 1 found, 0 not there, -1 a broken file. */
static int look_in(const char *file, const char *registry, char **user,
    char **pass, struct vs_err *e)
{
	cleanup_json json_t *root = NULL;
	json_error_t jerr;
	const char *key;
	json_t *v;
	struct stat st;

	if (stat(file, &st) < 0)
		return 0;
	root = json_load_file(file, 0, &jerr);
	if (root == NULL)
		return vs_error(e, EX_CONFIG, 0, "%s:%d:%d: %s", file, jerr.line,
		    jerr.column, jerr.text);
	json_object_foreach(json_object_get(root, "auths"), key, v) {
		const char *auth = json_string_value(json_object_get(v, "auth"));

		if (!same_registry(key, registry) || auth == NULL || *auth == '\0')
			continue;
		if (decode_auth(auth, user, pass) < 0)
			return vs_error(e, EX_CONFIG, 0,
			    "%s: the credentials for %s are not base64 of user:password",
			    file, key);
		return 1;
	}
	return 0;
}

int creds_find(const char *registry, char **user, char **pass,
    char **from, struct vs_err *e)
{
	char *files[4] = { NULL, NULL, NULL, NULL };
	const char *v;
	int n = 0, rc = 0;

	*user = *pass = NULL;
	if (from)
		*from = NULL;
	if ((v = getenv("REGISTRY_AUTH_FILE")) && *v)
		files[n++] = strdup(v);
	if ((v = getenv("XDG_RUNTIME_DIR")) && *v)
		files[n++] = path_join(v, "containers/auth.json");
	if ((v = getenv("DOCKER_CONFIG")) && *v)
		files[n++] = path_join(v, "config.json");
	else if ((v = getenv("HOME")) && *v)
		files[n++] = path_join(v, ".docker/config.json");
	for (int i = 0; i < n && rc == 0; i++) {
		if (files[i] == NULL)
			continue;
		rc = look_in(files[i], registry, user, pass, e);
		if (rc == 1 && from)
			*from = strdup(files[i]);
	}
	for (int i = 0; i < n; i++)
		free(files[i]);
	return rc;
}
