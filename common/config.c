#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "cleanup.h"
#include "path.h"
#include "size.h"
#include "sshkey.h"

struct ctx {
	struct vs_config *c;
	yaml_document_t *doc;
	struct vs_err *e;
};

/* Keys that belong to Slicer but mean nothing to vmstrap: quietly ignored. */
static const char *const slicer_top[] = {
	"api", "graceful_shutdown", "sleep_action", NULL,
};
static const char *const slicer_group[] = {
	"persistent", "dns_servers", "gpu_count", "share_home", "sleep_action",
	"rosetta", "tags", NULL,
};
static const char *const slicer_network[] = { "addresses", NULL };

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

static int bad(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return vs_error(x->e, EX_CONFIG, 0, "%s:%zu:%zu: %s", x->c->path,
	    n->start_mark.line + 1, n->start_mark.column + 1, msg);
}

static int warn(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int warn(struct ctx *x, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[512], *line, **w;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (asprintf(&line, "%s:%zu:%zu: %s", x->c->path,
	    n->start_mark.line + 1, n->start_mark.column + 1, msg) < 0)
		return vs_error(x->e, EX_OSERR, ENOMEM, "%s", x->c->path);
	w = realloc(x->c->warnings, (x->c->nwarnings + 1) * sizeof *w);
	if (w == NULL) {
		free(line);
		return vs_error(x->e, EX_OSERR, ENOMEM, "%s", x->c->path);
	}
	w[x->c->nwarnings++] = line;
	x->c->warnings = w;
	return 0;
}

static const char *scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value
	    : NULL;
}

/* An empty value or "~"/"null" written plainly: the key is as good as unset. */
static bool is_null(const yaml_node_t *n)
{
	const char *s = scalar(n);

	if (s == NULL || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return *s == '\0' || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0;
}

static int get_string(struct ctx *x, const char *key, const yaml_node_t *n,
    char **out)
{
	const char *s = scalar(n);

	if (is_null(n))
		return 0;
	if (s == NULL)
		return bad(x, n, "%s: expected a string", key);
	if (strlen(s) != n->data.scalar.length)
		return bad(x, n, "%s: contains a NUL byte", key);
	free(*out);
	*out = strdup(s);
	if (*out == NULL)
		return vs_error(x->e, EX_OSERR, ENOMEM, "%s", x->c->path);
	return 0;
}

/* A quoted scalar is a string in YAML, whatever it spells: "3" is no
 * number and "true" no boolean. */
static int not_quoted(struct ctx *x, const char *key, const yaml_node_t *n,
    const char *want)
{
	if (n->type != YAML_SCALAR_NODE ||
	    n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
		return 0;
	return bad(x, n, "%s: expected %s, got the string \"%s\" (write it without quotes)",
	    key, want, (const char *)n->data.scalar.value);
}

static int get_long(struct ctx *x, const char *key, const yaml_node_t *n,
    long min, long max, long *out)
{
	const char *s = scalar(n);
	char *end;
	long long v;

	if (is_null(n))
		return 0;
	if (not_quoted(x, key, n, "a whole number") < 0)
		return -1;
	if (s == NULL || *s == '\0' || !(*s == '-' || (*s >= '0' && *s <= '9')))
		goto fail;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end != '\0' || errno == ERANGE || v < min || v > max)
		goto fail;
	*out = (long)v;
	return 0;
fail:
	return bad(x, n, "%s: expected a whole number from %ld to %ld, got '%s'",
	    key, min, max, s ? s : "(not a scalar)");
}

static int get_bool(struct ctx *x, const char *key, const yaml_node_t *n,
    bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", NULL };
	static const char *const no[] = { "false", "no", "off", NULL };
	const char *s = scalar(n);

	if (is_null(n))
		return 0;
	if (not_quoted(x, key, n, "true or false") < 0)
		return -1;
	for (int i = 0; s && yes[i]; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return bad(x, n, "%s: expected true or false, got '%s'", key,
	    s ? s : "(not a scalar)");
}

/* A path on the host: relative ones are relative to the configuration
 * file's directory, wherever the tools run. */
static int get_path(struct ctx *x, const char *key, const yaml_node_t *n,
    char **out)
{
	cleanup_free char *s = NULL, *dir = NULL, *real = NULL;
	const char *rel;

	if (get_string(x, key, n, &s) < 0)
		return -1;
	if (s == NULL)
		return 0;
	if (*s == '\0')
		return bad(x, n, "%s: expected a path", key);
	free(*out);
	*out = NULL;
	if (s[0] == '/') {
		*out = steal_pointer(&s);
		return 0;
	}
	rel = s;
	while (rel[0] == '.' && rel[1] == '/')
		for (rel += 2; *rel == '/'; rel++)
			;
	if (path_split(x->c->path, &dir, NULL) < 0 ||
	    (real = realpath(dir, NULL)) == NULL ||
	    (*out = path_join(real, *rel ? rel : ".")) == NULL)
		return vs_error(x->e, EX_OSERR, errno, "%s", x->c->path);
	return 0;
}

#define FOR_PAIRS(x, map, p) \
	for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start; \
	    p < (map)->data.mapping.pairs.top; p++)

static int key_of(struct ctx *x, const yaml_node_t *map, yaml_node_pair_t *p,
    const char **key, yaml_node_t **k, yaml_node_t **v)
{
	*k = yaml_document_get_node(x->doc, p->key);
	*v = yaml_document_get_node(x->doc, p->value);
	*key = scalar(*k);
	if (*key == NULL)
		return bad(x, *k, "expected a plain key");
	/* A key given twice: the file does not say which it means. */
	for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
		const char *earlier = scalar(yaml_document_get_node(x->doc, q->key));
		if (earlier && strcmp(earlier, *key) == 0)
			return bad(x, *k, "'%s' is given twice in this mapping", *key);
	}
	return 0;
}

static int load_network(struct ctx *x, const yaml_node_t *map,
    struct vs_network *net)
{
	if (is_null(map))
		return 0;
	if (map->type != YAML_MAPPING_NODE)
		return bad(x, map, "network: expected a mapping, like {mode: nat}");
	FOR_PAIRS(x, map, p) {
		const char *key;
		yaml_node_t *k, *v;
		int rc = 0;

		if (key_of(x, map, p, &key, &k, &v) < 0)
			return -1;
		if (strcmp(key, "mode") == 0)
			rc = get_string(x, "network.mode", v, &net->mode);
		else if (strcmp(key, "gateway") == 0)
			rc = get_string(x, "network.gateway", v, &net->gateway);
		else if (strcmp(key, "bridge") == 0)
			rc = get_string(x, "network.bridge", v, &net->bridge);
		else if (strcmp(key, "tap_prefix") == 0)
			rc = get_string(x, "network.tap_prefix", v,
			    &net->tap_prefix);
		else if (!in_list(slicer_network, key))
			rc = warn(x, k, "unknown key 'network.%s' ignored", key);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int load_group(struct ctx *x, const yaml_node_t *map,
    struct vs_group *g)
{
	const yaml_node_t *ram_node = NULL, *name_node = map;
	long l;

	g->count = 1;
	g->vcpu = 2;
	g->ram = UINT64_C(4) << 30;
	g->line = (int)map->start_mark.line + 1;
	if (map->type != YAML_MAPPING_NODE)
		return bad(x, map, "host_groups: each group must be a mapping with a name");
	FOR_PAIRS(x, map, p) {
		const char *key;
		yaml_node_t *k, *v;
		int rc = 0;

		if (key_of(x, map, p, &key, &k, &v) < 0)
			return -1;
		if (strcmp(key, "name") == 0) {
			name_node = v;
			rc = get_string(x, "name", v, &g->name);
		} else if (strcmp(key, "count") == 0) {
			rc = get_long(x, "count", v, 0, 100000, &g->count);
		} else if (strcmp(key, "vcpu") == 0) {
			rc = get_long(x, "vcpu", v, 1, 1024, &g->vcpu);
		} else if (strcmp(key, "ram_gb") == 0 ||
		    strcmp(key, "ram_mb") == 0 || strcmp(key, "ram_bytes") == 0) {
			long max = key[4] == 'g' ? 16384 : key[4] == 'm' ?
			    16384L * 1024 : 0x7fffffffffffL;
			unsigned shift = key[4] == 'g' ? 30 : key[4] == 'm' ? 20 : 0;
			if (ram_node)
				return bad(x, k, "%s: give only one of ram_gb, ram_mb and ram_bytes",
				    key);
			ram_node = v;
			l = 0;
			rc = get_long(x, key, v, 1, max, &l);
			if (rc == 0 && l > 0)
				g->ram = (uint64_t)l << shift;
		} else if (strcmp(key, "storage_size") == 0) {
			const char *s = scalar(v);
			if (is_null(v))
				continue;
			if (s == NULL || size_parse_disk(s, &g->storage_size, x->e) < 0) {
				char why[sizeof x->e->msg];
				snprintf(why, sizeof why, "%s",
				    s ? x->e->msg : "expected a size like 15G");
				return bad(x, v, "storage_size: %s", why);
			}
		} else if (strcmp(key, "network") == 0) {
			rc = load_network(x, v, &g->network);
		} else if (strcmp(key, "storage") == 0) {
			const char *s = scalar(v);
			if (is_null(v) || (s && strcmp(s, "image") == 0))
				continue;
			if (s && (strcmp(s, "devmapper") == 0 ||
			    strcmp(s, "zfs") == 0))
				rc = warn(x, v, "storage: %s: vmstrap keeps every disk in an image file (storage: image)",
				    s);
			else
				return bad(x, v, "storage: expected image, devmapper or zfs, got '%s'",
				    s ? s : "(not a scalar)");
		} else if (strcmp(key, "userdata") == 0) {
			rc = get_string(x, "userdata", v, &g->userdata);
		} else if (strcmp(key, "userdata_file") == 0) {
			rc = get_path(x, "userdata_file", v, &g->userdata_file);
		} else if (!in_list(slicer_group, key)) {
			rc = warn(x, k, "unknown key '%s' ignored", key);
		}
		if (rc < 0)
			return -1;
	}
	if (g->name == NULL || *g->name == '\0')
		return bad(x, map, "host group without a name");
	/* (the name becomes the paths <name>-base.img, kernel/<name>/) */
	if (path_check_name("group", g->name, x->e) < 0) {
		char why[sizeof x->e->msg];
		snprintf(why, sizeof why, "%s", x->e->msg);
		return bad(x, name_node, "host group name: %s", why);
	}
	if (g->userdata && g->userdata_file)
		return bad(x, map, "host group '%s': give userdata (the script) or userdata_file (a file that holds it), not both",
		    g->name);
	if (g->storage_size == 0)
		return bad(x, map, "host group '%s' has no storage_size: give its disk size, like storage_size: 15G (at least 5G)",
		    g->name);
	return 0;
}

static int load_groups(struct ctx *x, const yaml_node_t *seq)
{
	size_t n;

	if (is_null(seq))
		return 0;
	if (seq->type != YAML_SEQUENCE_NODE)
		return bad(x, seq, "host_groups: expected a list of groups");
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	x->c->groups = calloc(n ? n : 1, sizeof *x->c->groups);
	if (x->c->groups == NULL)
		return vs_error(x->e, EX_OSERR, ENOMEM, "%s", x->c->path);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *g = yaml_document_get_node(x->doc,
		    seq->data.sequence.items.start[i]);
		x->c->ngroups = i + 1;
		if (load_group(x, g, &x->c->groups[i]) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (strcmp(x->c->groups[j].name, x->c->groups[i].name) == 0)
				return bad(x, g, "host group '%s' is defined twice (first on line %d)",
				    x->c->groups[i].name, x->c->groups[j].line);
	}
	return 0;
}

/* config.ssh_keys: a list of public keys, each checked here, so that a
 * bad one stops the configuration check, not a VM's preparation. */
static int load_keys(struct ctx *x, const yaml_node_t *seq)
{
	size_t n;

	if (is_null(seq))
		return 0;
	if (seq->type != YAML_SEQUENCE_NODE)
		return bad(x, seq, "ssh_keys: expected a list of public keys, like - ssh-ed25519 AAAA... me@host");
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	x->c->ssh_keys = calloc(n + 1, sizeof *x->c->ssh_keys);
	if (x->c->ssh_keys == NULL)
		return vs_error(x->e, EX_OSERR, ENOMEM, "%s", x->c->path);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *v = yaml_document_get_node(x->doc,
		    seq->data.sequence.items.start[i]);
		cleanup_free char *s = NULL;
		struct sshkey k;
		int r;

		if (get_string(x, "ssh_keys", v, &s) < 0)
			return -1;
		r = s ? sshkey_parse(s, "ssh_keys", &k, x->e) : 1;
		if (r < 0) {
			char why[sizeof x->e->msg];
			snprintf(why, sizeof why, "%s", x->e->msg);
			return bad(x, v, "%s", why);
		}
		if (r > 0)
			return bad(x, v, "ssh_keys: an empty entry: expected a public key");
		sshkey_free(&k);
		x->c->ssh_keys[x->c->nssh_keys++] = steal_pointer(&s);
	}
	return 0;
}

/* A GitHub login: letters, digits and single hyphens, 1 to 39 of them,
 * not starting or ending with a hyphen.  (It becomes part of a URL.) */
bool config_valid_github_user(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 39 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || (c == '-' && s[i + 1] != '-')))
			return false;
	}
	return true;
}

static int get_github_user(struct ctx *x, const yaml_node_t *v)
{
	if (get_string(x, "github_user", v, &x->c->github_user) < 0)
		return -1;
	if (x->c->github_user && !config_valid_github_user(x->c->github_user))
		return bad(x, v, "github_user: '%s' is not a GitHub login (letters, digits and single hyphens, at most 39)",
		    x->c->github_user);
	return 0;
}

static int load_config(struct ctx *x, const yaml_node_t *map)
{
	if (map->type != YAML_MAPPING_NODE)
		return bad(x, map, "config: expected a mapping");
	FOR_PAIRS(x, map, p) {
		const char *key;
		yaml_node_t *k, *v;
		int rc = 0;

		if (key_of(x, map, p, &key, &k, &v) < 0)
			return -1;
		if (strcmp(key, "image") == 0)
			rc = get_string(x, "image", v, &x->c->image);
		else if (strcmp(key, "kernel_image") == 0)
			rc = get_string(x, "kernel_image", v, &x->c->kernel_image);
		else if (strcmp(key, "hypervisor") == 0)
			rc = get_string(x, "hypervisor", v, &x->c->hypervisor);
		else if (strcmp(key, "kernel_file") == 0)
			rc = get_path(x, "kernel_file", v, &x->c->kernel_file);
		else if (strcmp(key, "initrd_file") == 0)
			rc = get_path(x, "initrd_file", v, &x->c->initrd_file);
		else if (strcmp(key, "ssh_keys") == 0)
			rc = load_keys(x, v);
		else if (strcmp(key, "github_user") == 0)
			rc = get_github_user(x, v);
		else if (strcmp(key, "insecure_registry") == 0)
			rc = get_bool(x, "insecure_registry", v,
			    &x->c->insecure_registry);
		else if (strcmp(key, "host_groups") == 0)
			rc = load_groups(x, v);
		else if (!in_list(slicer_top, key))
			rc = warn(x, k, "unknown key 'config.%s' ignored", key);
		if (rc < 0)
			return -1;
	}
	if (x->c->kernel_file && x->c->kernel_image)
		return bad(x, map, "give kernel_image (a kernel from an image) or kernel_file (one on the host), not both");
	if (x->c->initrd_file && !x->c->kernel_file)
		return bad(x, map, "initrd_file goes with kernel_file: give both, or neither");
	return 0;
}

int config_load(struct vs_config *c, const char *path, struct vs_err *e)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	struct ctx x = { c, &doc, e };
	bool found = false;
	struct stat st;
	FILE *f;
	int rc = -1;

	memset(c, 0, sizeof *c);
	c->path = strdup(path);
	if (c->path == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path);
	f = fopen(path, "rbe");
	if (f == NULL) {
		vs_error(e, vs_code_for_errno(errno, EX_NOINPUT) == EX_NOPERM
		    ? EX_NOPERM : EX_NOINPUT, errno, "%s", path);
		config_free(c);
		return -1;
	}
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		vs_error(e, EX_NOINPUT, 0, "%s: is a directory, not a configuration file",
		    path);
		fclose(f);
		config_free(c);
		return -1;
	}
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		config_free(c);
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path);
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		vs_error(e, EX_CONFIG, 0, "%s:%zu:%zu: %s%s%s", path,
		    parser.problem_mark.line + 1, parser.problem_mark.column + 1,
		    parser.problem ? parser.problem : "invalid YAML",
		    parser.context ? " " : "",
		    parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		fclose(f);
		config_free(c);
		return -1;
	}
	root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		vs_error(e, EX_CONFIG, 0, "%s: empty configuration: expected a 'config:' mapping",
		    path);
		goto out;
	}
	if (root->type != YAML_MAPPING_NODE) {
		bad(&x, root, "expected a mapping with a 'config:' key");
		goto out;
	}
	FOR_PAIRS(&x, root, p) {
		const char *key;
		yaml_node_t *k, *v;

		if (key_of(&x, root, p, &key, &k, &v) < 0)
			goto out;
		if (strcmp(key, "config") == 0) {
			found = true;
			if (load_config(&x, v) < 0)
				goto out;
		} else if (warn(&x, k, "unknown key '%s' ignored", key) < 0) {
			goto out;
		}
	}
	if (!found) {
		bad(&x, root, "no 'config:' mapping");
		goto out;
	}
	rc = 0;
out:
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	fclose(f);
	if (rc < 0)
		config_free(c);
	return rc;
}

int config_locate(const char *dir, const char *explicit, char **path,
    struct vs_err *e)
{
	struct stat st;
	char *p;

	*path = NULL;
	if (explicit) {
		*path = strdup(explicit);
		if (*path == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "%s", explicit);
		return 0;
	}
	p = path_join(dir ? dir : ".", CONFIG_FILE);
	if (p == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", CONFIG_FILE);
	if (stat(p, &st) == 0)
		*path = p;
	else
		free(p);
	return 0;
}

const struct vs_group *config_group(const struct vs_config *c,
    const char *name, struct vs_err *e)
{
	char list[512] = "";
	size_t len = 0;

	for (size_t i = 0; i < c->ngroups; i++)
		if (strcmp(c->groups[i].name, name) == 0)
			return &c->groups[i];
	for (size_t i = 0; i < c->ngroups && len < sizeof list; i++)
		len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
		    i ? ", " : "", c->groups[i].name);
	vs_error(e, EX_CONFIG, 0, "%s: no host group '%s' (%s%s)", c->path, name,
	    c->ngroups ? "it has: " : "it has none", list);
	return NULL;
}

void config_free(struct vs_config *c)
{
	for (size_t i = 0; i < c->ngroups; i++) {
		struct vs_group *g = &c->groups[i];
		free(g->name);
		free(g->network.mode);
		free(g->network.gateway);
		free(g->network.bridge);
		free(g->network.tap_prefix);
		free(g->userdata);
		free(g->userdata_file);
	}
	for (size_t i = 0; i < c->nssh_keys; i++)
		free(c->ssh_keys[i]);
	free(c->ssh_keys);
	free(c->github_user);
	free(c->groups);
	for (size_t i = 0; i < c->nwarnings; i++)
		free(c->warnings[i]);
	free(c->warnings);
	free(c->path);
	free(c->image);
	free(c->kernel_image);
	free(c->kernel_file);
	free(c->initrd_file);
	free(c->hypervisor);
	memset(c, 0, sizeof *c);
}
