/* config.h: Slicer's slicer-mac.yaml, read with libyaml.
 *
 *   config:
 *     image: "ghcr.io/…:latest"
 *     hypervisor: apple
 *     host_groups:
 *       - name: slicer
 *         count: 1
 *         vcpu: 4
 *         ram_gb: 8
 *         storage_size: 15G
 *         network: {mode: nat, gateway: 192.168.64.1/24}
 *
 * Values from the file are defaults that command-line arguments override.
 * A group's name follows the tools' name rule (path_valid_name) and its
 * storage_size is required.  Keys vmstrap does not know are ignored with a
 * warning (Slicer's own keys that vmstrap has no use for are ignored
 * quietly, the ones it does not honour yet with a warning), so a real
 * Slicer file loads.  What imgprep writes into each new VM: config.ssh_keys
 * (a list of OpenSSH public keys), config.github_user (whose keys
 * github.com serves), and a group's userdata (a script) or userdata_file
 * (relative to the file's directory). */
#ifndef VS_CONFIG_H
#define VS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define CONFIG_FILE "slicer-mac.yaml"

struct vs_network {
	char *mode;
	char *gateway;
	char *bridge;
	char *tap_prefix;
};

struct vs_group {
	char *name;
	long count;		/* VMs in the group; default 1 */
	long vcpu;		/* default 2 */
	uint64_t ram;		/* bytes, from ram_gb, ram_mb or ram_bytes; default 4G */
	uint64_t storage_size;	/* bytes; 0 when not set */
	struct vs_network network;
	char *userdata;		/* a script run once on first boot, or NULL */
	char *userdata_file;	/* the same from a file, absolute, or NULL */
	int line;		/* where the group starts in the file */
};

struct vs_config {
	char *path;
	char *image;		/* config.image, or NULL */
	char *kernel_image;	/* config.kernel_image, or NULL */
	char *kernel_file;	/* config.kernel_file, absolute, or NULL */
	char *initrd_file;	/* config.initrd_file, absolute, or NULL */
	char *hypervisor;	/* config.hypervisor, or NULL */
	bool insecure_registry;
	char **ssh_keys;	/* config.ssh_keys: public keys, checked */
	size_t nssh_keys;
	char *github_user;	/* config.github_user, a valid GitHub login */
	struct vs_group *groups;
	size_t ngroups;
	char **warnings;	/* "FILE:LINE:COL: …", for main() to print */
	size_t nwarnings;
};

/* Load path into c (zeroed first).  A file that cannot be read is
 * EX_NOINPUT; a YAML error or a bad value is EX_CONFIG, with FILE:LINE:COL.
 * On failure c holds nothing (config_free is harmless). */
int config_load(struct vs_config *c, const char *path, struct vs_err *e);

/* Which file to read: explicit (-c) when given; otherwise dir/slicer-mac.yaml
 * when it exists; otherwise none (*path NULL, return 0). */
int config_locate(const char *dir, const char *explicit, char **path,
    struct vs_err *e);

/* The group called name, or NULL with e set (EX_CONFIG, listing the groups
 * the file has). */
const struct vs_group *config_group(const struct vs_config *c,
    const char *name, struct vs_err *e);

/* Whether s is a GitHub login (it goes into github.com/LOGIN.keys). */
bool config_valid_github_user(const char *s);

void config_free(struct vs_config *c);

#endif
