/* imgprep: give a VM's disk its own identity and a way in, offline.
 *
 *   imgprep [-qV] [-C DIR] [-c FILE] [-g GROUP] [-n NAME] [-k KEYFILE]...
 *           [-u USER] [--userdata FILE] [--github-user USER]
 *           [--no-host-keys] [IMG]
 *
 * Into the ext4 filesystem of IMG (or of the pipeline document's disk),
 * with libext2fs, no mount: the hostname, a new machine-id, new SSH host
 * keys, authorized_keys for root and the image's default user, and a
 * userdata script that runs once on first boot.  Adds the prep section. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "atomic.h"
#include "cleanup.h"
#include "config.h"
#include "doc.h"
#include "err.h"
#include "ext4w.h"
#include "fe.h"
#include "lock.h"
#include "path.h"
#include "run.h"
#include "sshkey.h"
#include "vmstate.h"

#define SYNOPSIS \
	"usage: imgprep [-qV] [-C DIR] [-c FILE] [-g GROUP] [-n NAME] [-k KEYFILE]...\n" \
	"               [-u USER] [--userdata FILE] [--github-user USER]\n" \
	"               [--host-keys DIR | --no-host-keys] [--known-hosts FILE] [IMG]"

/* What an image's small files may hold: more is not a real one. */
#define SMALL_MAX (1u << 20)
/* The largest userdata script and key file accepted. */
#define INPUT_MAX (1u << 20)

/* Where the userdata goes in the image. */
#define UD_DIR "/etc/vmstrap"
#define UD_SCRIPT UD_DIR "/userdata"
#define UD_RUNNER UD_DIR "/userdata-run"
#define UD_STAMP UD_DIR "/userdata-ran"
#define UD_LOG "/var/log/vmstrap-userdata.log"
#define UD_UNIT "/etc/systemd/system/vmstrap-userdata.service"
#define UD_WANTS "/etc/systemd/system/multi-user.target.wants"

struct opts {
	bool quiet, no_host_keys;
	const char *dir, *config, *group, *name, *user, *userdata,
	    *github_user, *host_keys, *known_hosts;
	const char **keyfiles;
	size_t nkeyfiles;
};

/* A host key ssh-keygen made. */
struct hostkey {
	const char *type;
	char *priv, *pub;
	size_t privlen, publen;
};

static const char *const hostkey_types[] = { "ed25519", "ecdsa", "rsa" };
#define NHOSTKEYS 3

static void usage(FILE *f)
{
	fprintf(f, "%s\n", SYNOPSIS);
	if (f != stdout)
		return;
	printf("\n"
	    "Give a VM's stopped disk IMG (or the pipeline document's disk) its own\n"
	    "identity and a way in, offline, with libext2fs: hostname, machine-id,\n"
	    "SSH host keys, authorized_keys, and userdata run once on first boot.\n"
	    "\n"
	    "  -C, --directory DIR  the workspace (default: the current directory)\n"
	    "  -c, --config FILE  slicer-mac.yaml to read (default: DIR/slicer-mac.yaml):\n"
	    "                     its ssh_keys, github_user, and the group's userdata\n"
	    "  -g, --group GROUP  the host group (default: the document's base.group)\n"
	    "  -n, --name NAME    the VM's hostname (default: IMG's name without .img)\n"
	    "  -k, --key KEYFILE  authorize the public keys in KEYFILE (repeatable)\n"
	    "  -u, --user USER    the image's default user, authorized besides root\n"
	    "                     (default: the first user with uid 1000)\n"
	    "      --userdata FILE  a script to run once as root on first boot\n"
	    "      --github-user USER  authorize the keys github.com has for USER\n"
	    "      --host-keys DIR  the host keys in DIR (ssh_host_TYPE_key and .pub,\n"
	    "                     for ed25519, ecdsa and rsa) instead of new ones\n"
	    "      --no-host-keys keep the image's SSH host keys\n"
	    "      --known-hosts FILE  pin the new host keys in FILE, as NAME (ssh's\n"
	    "                     HostKeyAlias), in place of NAME's earlier ones\n"
	    "  -q, --quiet        no notes, no warnings\n"
	    "  -h, --help         show this help and exit\n"
	    "  -V, --version      show the version and exit\n"
	    "\n"
	    "The document with a 'prep' section is written to stdout.  See imgprep(1).\n");
}

/* --- inputs, all read before the image is touched ---------------------- */

/* The whole of a small host file (or a pipe: <(...) works),
 * NUL-terminated. */
static int slurp(const char *path, const char *what, char **buf, size_t *len,
    struct vs_err *e)
{
	cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t n = 0, cap = 4096;
	char *b;

	if (fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT) == EX_NOPERM ?
		    EX_NOPERM : EX_NOINPUT, errno, "%s %s", what, path);
	if (fstat(fd, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s %s", what, path);
	if (S_ISDIR(st.st_mode))
		return vs_error(e, EX_NOINPUT, 0, "%s %s: a directory, not a file", what,
		    path);
	b = malloc(cap);
	if (b == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", path);
	for (;;) {
		ssize_t r;
		if (n + 1 >= cap) {
			char *g = cap > INPUT_MAX ? NULL : realloc(b, cap * 2);
			if (g == NULL) {
				free(b);
				return cap > INPUT_MAX ? vs_error(e, EX_DATAERR, 0,
				    "%s %s: larger than %u bytes", what, path, INPUT_MAX) :
				    vs_error(e, EX_OSERR, ENOMEM, "%s", path);
			}
			b = g;
			cap *= 2;
		}
		r = read(fd, b + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(b);
			return vs_error(e, EX_IOERR, errno, "%s %s", what, path);
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > INPUT_MAX) {
		free(b);
		return vs_error(e, EX_DATAERR, 0, "%s %s: larger than %u bytes", what,
		    path, INPUT_MAX);
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

struct fetch {
	char *buf;
	size_t len;
	bool too_big;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct fetch *f = arg;
	size_t len = size * n;
	char *b;

	if (f->len + len > INPUT_MAX) {
		f->too_big = true;
		return 0;
	}
	b = realloc(f->buf, f->len + len + 1);
	if (b == NULL)
		return 0;
	memcpy(b + f->len, p, len);
	f->buf = b;
	f->len += len;
	b[f->len] = '\0';
	return len;
}

/* The keys github.com serves for user (VMSTRAP_GITHUB_URL in its place,
 * for tests and mirrors).  None, a 404 or a failed fetch is an error:
 * never an authorized_keys with nothing in it. */
static int github_keys(const char *user, struct sshkeys *ks, size_t *added,
    struct vs_err *e)
{
	const char *base = getenv("VMSTRAP_GITHUB_URL");
	cleanup_free char *url = NULL, *where = NULL;
	struct fetch f = { 0 };
	char errbuf[CURL_ERROR_SIZE] = "";
	long code = 0;
	CURLcode rc;
	CURL *c;
	int r;

	if (!config_valid_github_user(user))
		return vs_error(e, EX_USAGE, 0,
		    "github user '%s' is not a GitHub login (letters, digits and single hyphens, at most 39)",
		    user);
	if (base == NULL || *base == '\0')
		base = "https://github.com";
	if (asprintf(&url, "%s/%s.keys", base, user) < 0 ||
	    asprintf(&where, "github.com/%s.keys", user) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "github");
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || (c = curl_easy_init()) == NULL)
		return vs_error(e, EX_OSERR, 0, "cannot start libcurl");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "vmstrap-imgprep/" VS_VERSION);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	if (f.too_big) {
		free(f.buf);
		return vs_error(e, EX_DATAERR, 0, "%s: more than %u bytes: not a list of keys",
		    where, INPUT_MAX);
	}
	if (rc != CURLE_OK) {
		free(f.buf);
		return vs_error(e, EX_UNAVAILABLE, 0, "cannot fetch the keys of github user %s: %s",
		    user, *errbuf ? errbuf : curl_easy_strerror(rc));
	}
	if (code == 404) {
		free(f.buf);
		return vs_error(e, EX_NOINPUT, 0, "github user %s: no such user (404 from %s)",
		    user, url);
	}
	if (code != 200) {
		free(f.buf);
		return vs_error(e, EX_UNAVAILABLE, 0, "cannot fetch the keys of github user %s: HTTP %ld from %s",
		    user, code, url);
	}
	r = sshkeys_add_text(ks, f.buf ? f.buf : "", f.len, where, added, e);
	free(f.buf);
	if (r < 0)
		return -1;
	if (*added == 0)
		return vs_error(e, EX_DATAERR, 0, "github user %s has no public keys (an empty %s)",
		    user, where);
	return 0;
}

/* ssh-keygen, run three (four) at once in a private directory: RSA takes
 * the longest, and how long is luck (the search for primes), so two race
 * and the first wins.  The directory, its keys and the children are kept
 * where a signal handler finds them: a signal midway leaves no private
 * key behind. */
static volatile sig_atomic_t kg_active;
static pid_t kg_pids[NHOSTKEYS + 1];
static char kg_dir[PATH_MAX];
static char kg_paths[NHOSTKEYS + 1][PATH_MAX + 32];

/* (async-signal-safe: kill, waitpid, unlink, rmdir) */
static void kg_cleanup(void)
{
	char pub[PATH_MAX + 40];

	if (!kg_active)
		return;
	for (int i = 0; i < NHOSTKEYS + 1; i++) {
		if (kg_pids[i] > 0) {
			kill(kg_pids[i], SIGKILL);
			waitpid(kg_pids[i], NULL, 0);
			kg_pids[i] = 0;
		}
	}
	for (int i = 0; i < NHOSTKEYS + 1; i++) {
		size_t n = strlen(kg_paths[i]);
		if (n == 0 || n + 5 > sizeof pub)
			continue;
		memcpy(pub, kg_paths[i], n);
		memcpy(pub + n, ".pub", 5);
		unlink(kg_paths[i]);
		unlink(pub);
	}
	rmdir(kg_dir);
	kg_active = 0;
}

static int make_host_keys(const char *name, struct hostkey *hk,
    struct vs_err *e)
{
	const char *tmp = getenv("TMPDIR");
	cleanup_free char *keygen = NULL, *comment = NULL;
	int njobs = NHOSTKEYS + 1, rc = 0, rsa_won = -1;

	keygen = run_find("ssh-keygen", "openssh-client", e);
	if (keygen == NULL)
		return -1;
	if (snprintf(kg_dir, sizeof kg_dir, "%s/imgprep.XXXXXX",
	    tmp && *tmp ? tmp : "/tmp") >= (int)sizeof kg_dir - 64)
		return vs_error(e, EX_CANTCREAT, 0, "TMPDIR: too long a path");
	if (mkdtemp(kg_dir) == NULL)
		return vs_error(e, EX_CANTCREAT, errno, "a directory for the host keys (%s)",
		    kg_dir);
	if (asprintf(&comment, "root@%s", name) < 0) {
		rmdir(kg_dir);
		return vs_error(e, EX_OSERR, ENOMEM, "imgprep");
	}
	for (int i = 0; i < njobs; i++)
		snprintf(kg_paths[i], sizeof kg_paths[i], "%s/ssh_host_%s_key%s", kg_dir,
		    hostkey_types[i < NHOSTKEYS ? i : 2], i < NHOSTKEYS ? "" : "2");
	kg_active = 1;
	for (int i = 0; i < njobs; i++) {
		const char *t = hostkey_types[i < NHOSTKEYS ? i : 2];
		pid_t pid = fork();

		if (pid < 0) {
			rc = vs_error(e, EX_OSERR, errno, "fork");
			njobs = i;
			break;
		}
		if (pid == 0) {
			int null = open("/dev/null", O_RDWR);
			if (null >= 0) {
				dup2(null, 0);
				dup2(null, 1);
			}
			if (strcmp(t, "ed25519") == 0)
				execl(keygen, "ssh-keygen", "-q", "-t", t, "-N", "",
				    "-C", comment, "-f", kg_paths[i], (char *)NULL);
			else
				execl(keygen, "ssh-keygen", "-q", "-t", t, "-b",
				    strcmp(t, "rsa") == 0 ? "3072" : "256", "-N", "",
				    "-C", comment, "-f", kg_paths[i], (char *)NULL);
			_exit(127);
		}
		kg_pids[i] = pid;
	}
	for (int done = 0; done < njobs; done++) {
		int st, i;
		pid_t p = wait(&st);

		if (p < 0) {
			if (errno == EINTR) {
				done--;
				continue;
			}
			break;
		}
		for (i = 0; i < njobs && kg_pids[i] != p; i++)
			;
		if (i == njobs) {
			done--;
			continue;
		}
		kg_pids[i] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			/* the loser of the race, killed */
			if ((i == 2 || i == NHOSTKEYS) && rsa_won >= 0)
				continue;
			if (rc == 0)
				rc = vs_error(e, EX_SOFTWARE, 0, "ssh-keygen -t %s failed (status %d)",
				    hostkey_types[i < NHOSTKEYS ? i : 2],
				    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			continue;
		}
		if ((i == 2 || i == NHOSTKEYS) && rsa_won < 0) {
			int other = i == 2 ? NHOSTKEYS : 2;
			rsa_won = i;
			if (kg_pids[other] > 0)
				kill(kg_pids[other], SIGKILL);
		}
	}
	for (int i = 0; rc == 0 && i < NHOSTKEYS; i++) {
		const char *p = i == 2 ? kg_paths[rsa_won >= 0 ? rsa_won : 2] : kg_paths[i];
		char pub[PATH_MAX + 40];

		snprintf(pub, sizeof pub, "%s.pub", p);
		hk[i].type = hostkey_types[i];
		if (slurp(p, "host key", &hk[i].priv, &hk[i].privlen, e) < 0 ||
		    slurp(pub, "host key", &hk[i].pub, &hk[i].publen, e) < 0)
			rc = -1;
	}
	kg_cleanup();
	return rc;
}

/* Host keys made before (a VM's own, kept; or made ahead while something
 * else ran): DIR/ssh_host_TYPE_key and its .pub for each type, checked
 * to be a private key and the public key of that type. */
static int read_host_keys(const char *dir, const char *name,
    struct hostkey *hk, struct vs_err *e)
{
	static const char *const ktype[] = { "ssh-ed25519", "ecdsa-sha2-nistp256",
	    "ssh-rsa" };

	for (int i = 0; i < NHOSTKEYS; i++) {
		char p[PATH_MAX], pub[PATH_MAX + 4], where[PATH_MAX + 16];
		struct sshkey k;
		char *line;

		hk[i].type = hostkey_types[i];
		snprintf(p, sizeof p, "%s/ssh_host_%s_key", dir, hostkey_types[i]);
		snprintf(pub, sizeof pub, "%s.pub", p);
		if (slurp(p, "host key", &hk[i].priv, &hk[i].privlen, e) < 0 ||
		    slurp(pub, "host key", &hk[i].pub, &hk[i].publen, e) < 0)
			return -1;
		if (strncmp(hk[i].priv, "-----BEGIN OPENSSH PRIVATE KEY-----", 35) != 0)
			return vs_error(e, EX_DATAERR, 0,
			    "host key %s: not an OpenSSH private key", p);
		hk[i].pub[strcspn(hk[i].pub, "\r\n")] = '\0';
		snprintf(where, sizeof where, "host key %s", pub);
		if (sshkey_parse(hk[i].pub, where, &k, e) < 0)
			return -1;
		if (i == 1 ? strncmp(k.type, "ecdsa-sha2-", 11) != 0 :
		    strcmp(k.type, ktype[i]) != 0) {
			vs_error(e, EX_DATAERR, 0, "host key %s: a %s key, not %s", pub, k.type,
			    ktype[i]);
			sshkey_free(&k);
			return -1;
		}
		/* named for this VM, as the keys imgprep makes are */
		free(k.comment);
		k.comment = NULL;
		if (asprintf(&k.comment, "root@%s", name) < 0 ||
		    (line = sshkey_line(&k)) == NULL) {
			sshkey_free(&k);
			return vs_error(e, EX_OSERR, ENOMEM, "host key");
		}
		sshkey_free(&k);
		free(hk[i].pub);
		if (asprintf(&hk[i].pub, "%s\n", line) < 0) {
			hk[i].pub = NULL;
			free(line);
			return vs_error(e, EX_OSERR, ENOMEM, "host key");
		}
		free(line);
		hk[i].publen = strlen(hk[i].pub);
	}
	return 0;
}

static void free_host_keys(struct hostkey *hk)
{
	for (int i = 0; i < NHOSTKEYS; i++) {
		if (hk[i].priv) {
			explicit_bzero(hk[i].priv, hk[i].privlen);
			free(hk[i].priv);
		}
		free(hk[i].pub);
		hk[i].priv = hk[i].pub = NULL;
	}
}

/* RFC 1123: labels of letters, digits and hyphens, 1 to 63 each, not
 * starting or ending with a hyphen; 253 in all. */
static bool valid_hostname(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* --- the image --------------------------------------------------------- */

struct user {
	char name[64];
	uint32_t uid, gid;
	char home[PATH_MAX];
};

/* A uid or gid of /etc/passwd: digits only, at most 10. */
static bool whole(const char *s)
{
	size_t n = strspn(s, "0123456789");

	return n > 0 && n <= 10 && s[n] == '\0' && strtoull(s, NULL, 10) <= UINT32_MAX;
}

/* Find a user in /etc/passwd's text: by name, or (name NULL) the first
 * with uid. */
static bool find_user(const char *passwd, const char *name, uint32_t uid,
    struct user *u)
{
	const char *p = passwd;

	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		char line[1024], *f[7], *s;
		int nf = 0;

		if (ll < sizeof line) {
			memcpy(line, p, ll);
			line[ll] = '\0';
			/* (strsep: empty fields count) */
			s = line;
			while (nf < 7 && (f[nf] = strsep(&s, ":")) != NULL)
				nf++;
			if (nf >= 6 && f[0][0] && f[5][0] == '/' &&
			    strlen(f[0]) < sizeof u->name && whole(f[2]) &&
			    whole(f[3])) {
				unsigned long id = strtoul(f[2], NULL, 10);
				unsigned long gid = strtoul(f[3], NULL, 10);
				size_t hl = strlen(f[5]);
				while (hl > 1 && f[5][hl - 1] == '/')
					f[5][--hl] = '\0';
				if ((name && strcmp(f[0], name) == 0) ||
				    (!name && id == uid)) {
					snprintf(u->name, sizeof u->name, "%s", f[0]);
					u->uid = (uint32_t)id;
					u->gid = (uint32_t)gid;
					snprintf(u->home, sizeof u->home, "%s", f[5]);
					return true;
				}
			}
		}
		p = nl ? nl + 1 : NULL;
	}
	return false;
}

/* A file of the image, whole, or none (*buf NULL) when it is not there. */
static int read_image_file(struct ext4w *w, const char *path, char **buf,
    size_t *len)
{
	ext2_ino_t ino;
	int r = ext4w_namei(w, path, true, &ino);

	*buf = NULL;
	*len = 0;
	if (r != 0)
		return r < 0 ? -1 : 0;
	if (ext4w_type(w, ino) != S_IFREG)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image is not a regular file",
		    path);
	return ext4w_read(w, ino, SMALL_MAX, buf, len);
}

/* /etc/hosts with its 127.0.1.1 line naming the VM (added if missing). */
static int set_hosts(struct ext4w *w, const char *name)
{
	cleanup_free char *old = NULL, *out = NULL;
	size_t len, n = 0;
	bool done = false;
	const char *p;
	FILE *f;

	if (read_image_file(w, "/etc/hosts", &old, &len) < 0)
		return -1;
	f = open_memstream(&out, &n);
	if (f == NULL)
		return vs_error(w->e, EX_OSERR, errno, "/etc/hosts");
	if (old == NULL)
		fprintf(f, "127.0.0.1\tlocalhost\n");
	for (p = old; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		if (ll >= 9 && strncmp(p, "127.0.1.1", 9) == 0 &&
		    (p[9] == ' ' || p[9] == '\t')) {
			if (!done)
				fprintf(f, "127.0.1.1\t%s\n", name);
			done = true;
		} else {
			fwrite(p, 1, ll, f);
			fputc('\n', f);
		}
		p = nl ? nl + 1 : NULL;
	}
	if (!done)
		fprintf(f, "127.0.1.1\t%s\n", name);
	if (fclose(f) != 0)
		return vs_error(w->e, EX_OSERR, errno, "/etc/hosts");
	return ext4w_put(w, "/etc/hosts", out, n, 0644, 0, 0, false);
}

/* machine-id(5): a new one, 128 random bits as 32 hex digits. */
static int set_machine_id(struct ext4w *w)
{
	unsigned char r[16];
	char id[34];
	ext2_ino_t ino;
	int k;

	if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
		return vs_error(w->e, EX_OSERR, errno, "getrandom");
	/* a v4 UUID's bits, as systemd makes them */
	r[6] = (r[6] & 0x0f) | 0x40;
	r[8] = (r[8] & 0x3f) | 0x80;
	for (int i = 0; i < 16; i++)
		snprintf(id + 2 * i, 3, "%02x", r[i]);
	id[32] = '\n';
	id[33] = '\0';
	if (ext4w_put(w, "/etc/machine-id", id, 33, 0444, 0, 0, false) < 0)
		return -1;
	/* D-Bus's copy, when it is a file of its own (a symlink to
	 * /etc/machine-id is already right) */
	if (ext4w_namei(w, "/var/lib/dbus/machine-id", false, &ino) == 0 &&
	    ext4w_type(w, ino) == S_IFREG &&
	    (k = ext4w_put(w, "/var/lib/dbus/machine-id", id, 33, 0444, 0, 0,
	    false)) < 0)
		return -1;
	return 0;
}

/* The image's host keys out, the new ones in, as sshd wants them: the
 * private keys root's and 0600, the public ones 0644. */
static int set_host_keys(struct ext4w *w, const struct hostkey *hk)
{
	ext2_ino_t dir;
	char **names = NULL;
	size_t n = 0;
	int rc = 0;

	if (ext4w_mkdirs(w, "/etc/ssh", 0755, 0, 0, &dir) < 0 ||
	    ext4w_list(w, dir, &names, &n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]);
		if (rc == 0 && strncmp(names[i], "ssh_host_", 9) == 0 &&
		    ((l > 4 && strcmp(names[i] + l - 4, "_key") == 0) ||
		    (l > 8 && strcmp(names[i] + l - 8, "_key.pub") == 0)))
			rc = ext4w_remove(w, dir, names[i]);
		free(names[i]);
	}
	free(names);
	for (int i = 0; rc == 0 && i < NHOSTKEYS; i++) {
		char p[PATH_MAX];
		snprintf(p, sizeof p, "/etc/ssh/ssh_host_%s_key", hk[i].type);
		rc = ext4w_put(w, p, hk[i].priv, hk[i].privlen, 0600, 0, 0, true);
		if (rc == 0) {
			strcat(p, ".pub");
			rc = ext4w_put(w, p, hk[i].pub, hk[i].publen, 0644, 0, 0, true);
		}
	}
	return rc;
}

/* Whether the authorized_keys text holds k on a line that is no comment,
 * with options before it or not (a key there with options keeps them: the
 * restrictions someone set are not undone by a second, plain line). */
static bool authorized_has(const char *text, const struct sshkey *k)
{
	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		char *line = strndup(p, ll);
		bool found = false;

		p = nl ? nl + 1 : NULL;
		if (line == NULL)
			continue;
		for (char *t = line + strspn(line, " \t"); *t && *t != '#' && !found;) {
			struct sshkey h;
			struct vs_err ignore;
			if (sshkey_parse(t, "", &h, &ignore) == 0) {
				found = sshkey_same(&h, k);
				sshkey_free(&h);
				break;
			}
			/* the next word (options may hold quoted spaces: a
			 * key's type is never inside quotes we skip wrongly
			 * for long) */
			t += strcspn(t, " \t");
			t += strspn(t, " \t");
		}
		free(line);
		if (found)
			return true;
	}
	return false;
}

/* u's ~/.ssh/authorized_keys with every key of ks (those already there
 * stay once): .ssh 0700, the file 0600, both the user's. */
static int authorize(struct ext4w *w, const struct user *u,
    const struct sshkeys *ks)
{
	char ssh[PATH_MAX + 8], ak[PATH_MAX + 32];
	cleanup_free char *old = NULL, *out = NULL;
	size_t len, n = 0;
	ext2_ino_t ino;
	FILE *f;

	if (snprintf(ssh, sizeof ssh, "%s%s.ssh", u->home,
	    u->home[strlen(u->home) - 1] == '/' ? "" : "/") >= (int)PATH_MAX)
		return vs_error(w->e, EX_DATAERR, 0, "%s's home: too long a path", u->name);
	snprintf(ak, sizeof ak, "%s/authorized_keys", ssh);
	/* a missing home is made as the user's, 0700 */
	if (ext4w_namei(w, u->home, true, &ino) == 1 &&
	    ext4w_mkdirs(w, u->home, 0700, u->uid, u->gid, &ino) < 0)
		return -1;
	if (ext4w_mkdirs(w, ssh, 0700, u->uid, u->gid, &ino) < 0 ||
	    ext4w_set_owner(w, ino, 0700, u->uid, u->gid) < 0)
		return -1;
	if (read_image_file(w, ak, &old, &len) < 0)
		return -1;
	f = open_memstream(&out, &n);
	if (f == NULL)
		return vs_error(w->e, EX_OSERR, errno, "%s", ak);
	if (old && len) {
		fwrite(old, 1, len, f);
		if (old[len - 1] != '\n')
			fputc('\n', f);
	}
	for (size_t i = 0; i < ks->n; i++) {
		const struct sshkey *k = &ks->k[i];
		cleanup_free char *line = sshkey_line(k);

		if (line == NULL) {
			fclose(f);
			return vs_error(w->e, EX_OSERR, ENOMEM, "%s", ak);
		}
		if (!authorized_has(old, k))
			fprintf(f, "%s\n", line);
	}
	if (fclose(f) != 0)
		return vs_error(w->e, EX_OSERR, errno, "%s", ak);
	return ext4w_put(w, ak, out, n, 0600, u->uid, u->gid, true);
}

/* The script that runs the userdata once: the stamp first, so that it
 * never runs twice, even when it reboots the machine; its output on the
 * console and in the log. */
static const char runner[] =
    "#!/bin/sh\n"
    "# vmstrap: runs " UD_SCRIPT " once, as root, on the first boot.\n"
    "[ -e " UD_STAMP " ] && exit 0\n"
    "date > " UD_STAMP " 2>/dev/null || : > " UD_STAMP " || exit 1\n"
    "con=/dev/console\n"
    "[ -w \"$con\" ] || con=/dev/null\n"
    "{\n"
    "\techo \"vmstrap-userdata: running " UD_SCRIPT "\"\n"
    "\t" UD_SCRIPT "\n"
    "\techo \"vmstrap-userdata: exit $?\"\n"
    "} 2>&1 | tee -a " UD_LOG " > \"$con\"\n"
    "exit 0\n";

static const char unit[] =
    "# vmstrap: runs the userdata once, as root, on the first boot.\n"
    "[Unit]\n"
    "Description=vmstrap userdata (first boot)\n"
    "ConditionPathExists=!" UD_STAMP "\n"
    "Wants=network-online.target\n"
    "After=network-online.target\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "ExecStart=" UD_RUNNER "\n"
    "StandardOutput=journal+console\n"
    "StandardError=journal+console\n"
    "TimeoutStartSec=0\n"
    "\n"
    "[Install]\n"
    "WantedBy=multi-user.target\n";

/* Whether the image boots systemd. */
static bool has_systemd(struct ext4w *w)
{
	static const char *const inits[] = { "/lib/systemd/systemd",
	    "/usr/lib/systemd/systemd", NULL };
	ext2_ino_t ino;

	for (int i = 0; inits[i]; i++)
		if (ext4w_namei(w, inits[i], true, &ino) == 0 &&
		    ext4w_type(w, ino) == S_IFREG)
			return true;
	return false;
}

/* /etc/rc.local with a line that calls the runner, before its final
 * "exit 0" when it has one; made (executable) when missing. */
static int hook_rc_local(struct ext4w *w)
{
	static const char call[] = UD_RUNNER "   # vmstrap userdata, once\n";
	cleanup_free char *old = NULL, *out = NULL;
	size_t len, n = 0;
	const char *tail;
	FILE *f;

	if (read_image_file(w, "/etc/rc.local", &old, &len) < 0)
		return -1;
	if (old && strstr(old, UD_RUNNER))
		return 0;
	f = open_memstream(&out, &n);
	if (f == NULL)
		return vs_error(w->e, EX_OSERR, errno, "/etc/rc.local");
	if (old == NULL) {
		fprintf(f, "#!/bin/sh\n%sexit 0\n", call);
	} else {
		/* before the last line that is an exit (what follows it, a
		 * comment, stays after it) */
		tail = NULL;
		for (const char *t = old; t && *t; t = strchr(t, '\n') ? strchr(t, '\n') + 1 : NULL) {
			const char *c = t + strspn(t, " \t");
			if (strncmp(c, "exit", 4) == 0 && strchr(" \t\n;", c[4] ? c[4] : '\n'))
				tail = t;
		}
		if (tail) {
			fwrite(old, 1, (size_t)(tail - old), f);
			fprintf(f, "%s%s", call, tail);
		} else {
			fwrite(old, 1, len, f);
			if (len && old[len - 1] != '\n')
				fputc('\n', f);
			fputs(call, f);
		}
	}
	if (fclose(f) != 0)
		return vs_error(w->e, EX_OSERR, errno, "/etc/rc.local");
	/* (executable: an rc.local that is not is not run) */
	return ext4w_put(w, "/etc/rc.local", out, n, 0755, 0, 0, true);
}

static int set_userdata(struct ext4w *w, const char *script, size_t len,
    const char **how)
{
	ext2_ino_t ino;

	if (ext4w_mkdirs(w, UD_DIR, 0755, 0, 0, &ino) < 0 ||
	    ext4w_put(w, UD_SCRIPT, script, len, 0700, 0, 0, true) < 0 ||
	    ext4w_put(w, UD_RUNNER, runner, sizeof runner - 1, 0755, 0, 0, true) < 0)
		return -1;
	/* a disk prepared again runs its new userdata */
	if (ext4w_namei(w, UD_DIR, true, &ino) == 0 &&
	    ext4w_remove(w, ino, "userdata-ran") < 0)
		return -1;
	if (has_systemd(w)) {
		ext2_ino_t wants;
		*how = "systemd";
		if (ext4w_mkdirs(w, UD_WANTS, 0755, 0, 0, &wants) < 0 ||
		    ext4w_put(w, UD_UNIT, unit, sizeof unit - 1, 0644, 0, 0, true) < 0 ||
		    ext4w_remove(w, wants, "vmstrap-userdata.service") < 0 ||
		    ext4w_make(w, wants, "vmstrap-userdata.service", S_IFLNK, UD_UNIT, 0,
		    &ino) < 0)
			return -1;
		return 0;
	}
	/* OpenRC's local service runs /etc/local.d/NAME.start */
	if (ext4w_namei(w, "/etc/local.d", true, &ino) == 0 &&
	    ext4w_type(w, ino) == S_IFDIR) {
		static const char start[] = "#!/bin/sh\n# vmstrap userdata, once\nexec " UD_RUNNER "\n";
		*how = "local.d";
		return ext4w_put(w, "/etc/local.d/vmstrap-userdata.start", start,
		    sizeof start - 1, 0755, 0, 0, true);
	}
	*how = "rc.local";
	return hook_rc_local(w);
}

/* FILE's lines without those for name, then name's keys: written whole
 * (a temporary file renamed into place), under a lock on its directory so
 * that two imgpreps of one workspace do not lose each other's lines. */
static int pin_keys(const char *file, const char *name, const struct hostkey *hk,
    struct vs_err *e)
{
	cleanup_free char *dir = NULL, *old = NULL;
	cleanup_fd int dfd = -1;
	struct atomic_file af = { .fd = -1, .slot = -1 };
	size_t len = 0, nl = strlen(name);
	FILE *f;
	int fd;

	if (path_split(file, &dir, NULL) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", file);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return vs_error(e, EX_CANTCREAT, errno, "known hosts %s", file);
	while (flock(dfd, LOCK_EX) < 0)
		if (errno != EINTR)
			return vs_error(e, EX_IOERR, errno, "lock %s", dir);
	if (access(file, F_OK) == 0 && slurp(file, "known hosts", &old, &len, e) < 0)
		return -1;
	if (atomic_open(&af, file, 0644, e) < 0)
		return -1;
	fd = dup(af.fd);
	f = fd < 0 ? NULL : fdopen(fd, "w");
	if (f == NULL) {
		if (fd >= 0)
			close(fd);
		atomic_abort(&af);
		return vs_error(e, EX_OSERR, errno, "%s", file);
	}
	for (const char *p = old; p && *p;) {
		const char *end = strchr(p, '\n');
		size_t ll = end ? (size_t)(end - p) : strlen(p);
		if (!(ll > nl && strncmp(p, name, nl) == 0 && (p[nl] == ' ' || p[nl] == '\t'))) {
			fwrite(p, 1, ll, f);
			fputc('\n', f);
		}
		p = end ? end + 1 : NULL;
	}
	for (int i = 0; i < NHOSTKEYS; i++)
		fprintf(f, "%s %.*s\n", name, (int)strcspn(hk[i].pub, "\r\n"), hk[i].pub);
	if (fclose(f) != 0) {
		vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", file);
		atomic_abort(&af);
		return -1;
	}
	return atomic_commit(&af, ATOMIC_REPLACE, e);
}

/* --- main -------------------------------------------------------------- */

struct prep {
	const char *img;
	const char *name;
	struct sshkeys keys;
	char *userdata;		/* the script, or NULL */
	size_t userdata_len;
	struct hostkey hk[NHOSTKEYS];
};

/* A file imgprep rewrites: missing, or a regular file (a symlink to one
 * is followed, inside the image). */
static int check_file(struct ext4w *w, const char *path)
{
	ext2_ino_t ino;
	int r = ext4w_namei(w, path, true, &ino);

	if (r < 0)
		return -1;
	if (r == 0 && ext4w_type(w, ino) != S_IFREG)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image is not a regular file",
		    path);
	return 0;
}

/* A directory imgprep writes in (or makes): a directory, or missing, and
 * not a symlink to nothing. */
static int check_dir(struct ext4w *w, const char *path)
{
	ext2_ino_t ino;
	int r = ext4w_namei(w, path, true, &ino);

	if (r < 0)
		return -1;
	if (r == 0 && ext4w_type(w, ino) != S_IFDIR)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image is not a directory",
		    path);
	if (r == 1 && ext4w_namei(w, path, false, &ino) == 0)
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s in the image is a symbolic link to nothing", path);
	return 0;
}

/* A user's ~/.ssh or authorized_keys: what imgprep gives the user, so
 * never a symlink (it could point at /etc/shadow) and never a file with
 * other names (a hard link to one). */
static int check_own(struct ext4w *w, const char *path, mode_t type)
{
	struct ext2_inode in;
	ext2_ino_t ino;
	int r = ext4w_namei(w, path, false, &ino);

	if (r != 0)
		return r < 0 ? -1 : 0;
	if (ext4w_type(w, ino) == S_IFLNK)
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s in the image is a symbolic link: refused (imgprep gives it to its user)",
		    path);
	if (ext4w_type(w, ino) != type)
		return vs_error(w->e, EX_DATAERR, 0, "%s in the image is not a %s", path,
		    type == S_IFDIR ? "directory" : "regular file");
	if (type == S_IFREG && ext2fs_read_inode(w->fs, ino, &in) == 0 &&
	    in.i_links_count > 1)
		return vs_error(w->e, EX_DATAERR, 0,
		    "%s in the image has %u hard links: refused (imgprep gives it to its user)",
		    path, in.i_links_count);
	return 0;
}

/* Everything the writes will touch, checked first, so that a refusal
 * leaves the image as it was. */
static int precheck(struct ext4w *w, const struct opts *o,
    const struct prep *pr, const struct user *users, size_t nusers)
{
	static const char *const files[] = { "/etc/hostname", "/etc/hosts",
	    "/etc/machine-id", NULL };

	for (int i = 0; files[i]; i++)
		if (check_file(w, files[i]) < 0)
			return -1;
	if (!o->no_host_keys && check_dir(w, "/etc/ssh") < 0)
		return -1;
	for (size_t i = 0; pr->keys.n && i < nusers; i++) {
		const struct user *u = &users[i];
		char p[PATH_MAX + 32];

		if (!ext4w_plain_path(u->home) || strlen(u->home) > PATH_MAX - 32)
			return vs_error(w->e, EX_DATAERR, 0,
			    "user %s's home '%s' in /etc/passwd is not a plain path", u->name,
			    u->home);
		if (i > 0 && strcmp(u->home, users[0].home) == 0)
			return vs_error(w->e, EX_DATAERR, 0,
			    "user %s's home is root's (%s): refused (its keys would be root's)",
			    u->name, u->home);
		snprintf(p, sizeof p, "%s/.ssh", u->home);
		if (check_dir(w, u->home) < 0 || check_own(w, p, S_IFDIR) < 0)
			return -1;
		strcat(p, "/authorized_keys");
		if (check_own(w, p, S_IFREG) < 0)
			return -1;
	}
	if (pr->userdata) {
		if (check_dir(w, UD_DIR) < 0)
			return -1;
		if (has_systemd(w)) {
			if (check_dir(w, "/etc/systemd/system") < 0 ||
			    check_dir(w, UD_WANTS) < 0)
				return -1;
		} else if (check_file(w, "/etc/rc.local") < 0) {
			return -1;
		}
	}
	return 0;
}

static int prepare(const struct opts *o, struct prep *pr, json_t **section,
    struct vs_err *e)
{
	cleanup_fd int fd = -1;
	struct ext4w w;
	struct stat st;
	char who[256];
	cleanup_free char *passwd = NULL, *abs = NULL;
	size_t plen;
	struct user users[2];
	size_t nusers = 0;
	const char *how = NULL;
	ext2_ino_t etc;
	json_t *hks, *fps, *us;
	int r;

	if (stat(pr->img, &st) == 0 && S_ISDIR(st.st_mode))
		return vs_error(e, EX_DATAERR, 0, "%s is not a disk image (a directory)",
		    pr->img);
	fd = open(pr->img, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT) == EX_NOPERM ?
		    EX_NOPERM : EX_NOINPUT, errno, "%s", pr->img);
	if (fstat(fd, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", pr->img);
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return vs_error(e, EX_DATAERR, 0, "%s is not a disk image (%s)", pr->img,
		    S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
	if (vmstate_who(fd, pr->img, who, sizeof who))
		return vs_error(e, EX_TEMPFAIL, 0,
		    "%s is in use by %s: imgprep works on a stopped VM's disk", pr->img, who);
	if (lock_whole(fd) < 0)
		return vs_error(e, EX_TEMPFAIL, errno, "%s is in use: cannot lock it",
		    pr->img);
	abs = realpath(pr->img, NULL);
	if (abs == NULL)
		return vs_error(e, EX_OSERR, errno, "%s", pr->img);

	if (ext4w_open(&w, pr->img, fd, time(NULL), false, e) < 0)
		return -1;
	snprintf(w.path, sizeof w.path, "%s", pr->img);
	/* nothing below writes until every check has passed; a refusal
	 * frees the filesystem without writing it out */
	if (ext2fs_has_feature_journal_needs_recovery(w.fs->super)) {
		ext2fs_free(w.fs);
		free(w.buf);
		return vs_error(e, EX_DATAERR, 0,
		    "%s: its journal needs recovery (the VM did not stop cleanly): run imgcheck -p %s first",
		    pr->img, pr->img);
	}
	r = ext4w_namei(&w, "/etc", true, &etc);
	if (r != 0 || ext4w_type(&w, etc) != S_IFDIR) {
		ext2fs_free(w.fs);
		free(w.buf);
		if (r < 0)
			return -1;
		return vs_error(e, EX_DATAERR, 0,
		    "%s: no /etc in the image: not a root filesystem", pr->img);
	}
	if (read_image_file(&w, "/etc/passwd", &passwd, &plen) < 0)
		goto refuse;
	users[0] = (struct user){ .name = "root", .uid = 0, .gid = 0, .home = "/root" };
	if (passwd)
		find_user(passwd, NULL, 0, &users[0]);
	nusers = 1;
	if (o->user) {
		if (!passwd || !find_user(passwd, o->user, 0, &users[1])) {
			vs_error(e, EX_DATAERR, 0, "%s: no user %s in the image's /etc/passwd",
			    pr->img, o->user);
			goto refuse;
		}
		nusers = users[1].uid == 0 ? 1 : 2;
	} else if (passwd && find_user(passwd, NULL, 1000, &users[1])) {
		nusers = 2;
	}
	if (precheck(&w, o, pr, users, nusers) < 0) {
		vs_error_prefix(e, "%s", pr->img);
		goto refuse;
	}
	/* the host keys last of all that can fail before the first write
	 * (they take the longest: a refusal comes first) */
	if (o->host_keys ? read_host_keys(o->host_keys, pr->name, pr->hk, e) < 0 :
	    !o->no_host_keys && make_host_keys(pr->name, pr->hk, e) < 0)
		goto refuse;

	/* the writes */
	{
		char line[300];
		int n = snprintf(line, sizeof line, "%s\n", pr->name);
		if (ext4w_put(&w, "/etc/hostname", line, (size_t)n, 0644, 0, 0,
		    false) < 0)
			goto fail;
	}
	if (set_hosts(&w, pr->name) < 0 || set_machine_id(&w) < 0)
		goto fail;
	if (!o->no_host_keys && set_host_keys(&w, pr->hk) < 0)
		goto fail;
	for (size_t i = 0; pr->keys.n && i < nusers; i++)
		if (authorize(&w, &users[i], &pr->keys) < 0)
			goto fail;
	if (pr->userdata && set_userdata(&w, pr->userdata, pr->userdata_len, &how) < 0)
		goto fail;
	if (ext4w_close(&w) < 0)
		return -1;
	if (fsync(fd) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", pr->img);
	if (o->known_hosts && !o->no_host_keys &&
	    pin_keys(o->known_hosts, pr->name, pr->hk, e) < 0)
		return -1;

	hks = json_array();
	fps = json_array();
	us = json_array();
	for (int i = 0; !o->no_host_keys && i < NHOSTKEYS; i++) {
		char *pub = strndup(pr->hk[i].pub, strcspn(pr->hk[i].pub, "\r\n"));
		json_array_append_new(hks, json_string(pub ? pub : ""));
		free(pub);
	}
	for (size_t i = 0; i < pr->keys.n; i++)
		json_array_append_new(fps, json_string(pr->keys.k[i].fp));
	for (size_t i = 0; pr->keys.n && i < nusers; i++)
		json_array_append_new(us, json_string(users[i].name));
	*section = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:s?, s:s?}",
	    "disk", abs, "hostname", pr->name, "machine_id", "new",
	    "host_keys", hks, "authorized", fps, "users", us,
	    "userdata", pr->userdata ? UD_SCRIPT : NULL, "userdata_init", how);
	if (*section == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "prep section");
	return 0;
refuse:
	ext2fs_free(w.fs);
	free(w.buf);
	return -1;
fail:
	vs_error_prefix(e, "%s", pr->img);
	ext4w_abort(&w);
	return -1;
}

static int gather(const struct opts *o, json_t *doc, struct prep *pr,
    struct vs_err *e)
{
	cleanup_free char *cfgpath = NULL;
	struct vs_config cfg = { 0 };
	const struct vs_group *g = NULL;
	const char *group = o->group, *github = o->github_user;
	int rc = -1;

	if (group == NULL)
		group = json_string_value(json_object_get(json_object_get(doc, "base"),
		    "group"));
	if (config_locate(".", o->config, &cfgpath, e) < 0)
		return -1;
	if (cfgpath) {
		if (config_load(&cfg, cfgpath, e) < 0)
			return -1;
		for (size_t i = 0; i < cfg.nwarnings && !o->quiet; i++)
			fe_warn("%s", cfg.warnings[i]);
		if (group && (g = config_group(&cfg, group, e)) == NULL &&
		    o->group)
			goto out;
	} else if (o->group) {
		vs_error(e, EX_NOINPUT, 0, "-g %s: no %s here: give -c FILE", o->group,
		    CONFIG_FILE);
		goto out;
	}
	for (size_t i = 0; i < o->nkeyfiles; i++) {
		cleanup_free char *t = NULL;
		size_t len, added;
		if (slurp(o->keyfiles[i], "key file", &t, &len, e) < 0 ||
		    sshkeys_add_text(&pr->keys, t, len, o->keyfiles[i], &added, e) < 0)
			goto out;
		if (added == 0) {
			vs_error(e, EX_DATAERR, 0, "%s: no public key in it", o->keyfiles[i]);
			goto out;
		}
	}
	for (size_t i = 0; i < cfg.nssh_keys; i++)
		if (sshkeys_add_text(&pr->keys, cfg.ssh_keys[i], strlen(cfg.ssh_keys[i]),
		    "ssh_keys", NULL, e) < 0)
			goto out;
	if (github == NULL)
		github = cfg.github_user;
	if (github) {
		size_t added;
		if (github_keys(github, &pr->keys, &added, e) < 0)
			goto out;
	}
	if (o->userdata) {
		if (slurp(o->userdata, "userdata file", &pr->userdata,
		    &pr->userdata_len, e) < 0)
			goto out;
	} else if (g && g->userdata_file) {
		if (slurp(g->userdata_file, "userdata file", &pr->userdata,
		    &pr->userdata_len, e) < 0) {
			vs_error_prefix(e, "%s: group %s", cfg.path, g->name);
			goto out;
		}
	} else if (g && g->userdata) {
		pr->userdata_len = strlen(g->userdata);
		pr->userdata = strdup(g->userdata);
		if (pr->userdata == NULL) {
			vs_error(e, EX_OSERR, ENOMEM, "userdata");
			goto out;
		}
	}
	if (pr->userdata && memchr(pr->userdata, '\0', pr->userdata_len)) {
		vs_error(e, EX_DATAERR, 0, "the userdata holds a NUL byte: not a script");
		goto out;
	}
	/* a script without an interpreter line: run by sh */
	if (pr->userdata && strncmp(pr->userdata, "#!", 2) != 0) {
		static const char sh[] = "#!/bin/sh\n";
		char *s = malloc(sizeof sh - 1 + pr->userdata_len + 1);
		if (s == NULL) {
			vs_error(e, EX_OSERR, ENOMEM, "userdata");
			goto out;
		}
		memcpy(s, sh, sizeof sh - 1);
		memcpy(s + sizeof sh - 1, pr->userdata, pr->userdata_len + 1);
		free(pr->userdata);
		pr->userdata = s;
		pr->userdata_len += sizeof sh - 1;
	}
	rc = 0;
out:
	config_free(&cfg);
	return rc;
}

int main(int argc, char *argv[])
{
	enum { OPT_USERDATA = 256, OPT_GITHUB, OPT_NO_HOST_KEYS, OPT_HOST_KEYS,
	    OPT_KNOWN_HOSTS };
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "directory", required_argument, NULL, 'C' },
		{ "github-user", required_argument, NULL, OPT_GITHUB },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "host-keys", required_argument, NULL, OPT_HOST_KEYS },
		{ "key", required_argument, NULL, 'k' },
		{ "known-hosts", required_argument, NULL, OPT_KNOWN_HOSTS },
		{ "name", required_argument, NULL, 'n' },
		{ "no-host-keys", no_argument, NULL, OPT_NO_HOST_KEYS },
		{ "quiet", no_argument, NULL, 'q' },
		{ "user", required_argument, NULL, 'u' },
		{ "userdata", required_argument, NULL, OPT_USERDATA },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { 0 };
	struct prep pr = { 0 };
	struct vs_err e = { 0 };
	cleanup_json json_t *doc = NULL;
	json_t *section = NULL;
	cleanup_free char *img = NULL, *name = NULL;
	int c, rc;

	fe_init(argv[0]);
	atomic_on_signals();
	atomic_signal_hook(kg_cleanup);
	initialize_ext2_error_table();	/* messages, not "Unknown code ext2 N" */
	o.keyfiles = calloc((size_t)argc + 1, sizeof *o.keyfiles);
	if (o.keyfiles == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "imgprep");
		return fe_fail(&e);
	}
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":C:c:g:hk:n:qu:V", longopts, NULL)) != -1) {
		switch (c) {
		case 'C': o.dir = optarg; break;
		case 'c': o.config = optarg; break;
		case 'g': o.group = optarg; break;
		case 'k': o.keyfiles[o.nkeyfiles++] = optarg; break;
		case 'n': o.name = optarg; break;
		case 'q': o.quiet = true; break;
		case 'u': o.user = optarg; break;
		case OPT_USERDATA: o.userdata = optarg; break;
		case OPT_GITHUB: o.github_user = optarg; break;
		case OPT_NO_HOST_KEYS: o.no_host_keys = true; break;
		case OPT_HOST_KEYS: o.host_keys = optarg; break;
		case OPT_KNOWN_HOSTS: o.known_hosts = optarg; break;
		case 'h':
			usage(stdout);
			free(o.keyfiles);
			return fe_finish(0);
		case 'V':
			fe_version();
			free(o.keyfiles);
			return fe_finish(0);
		default:
			free(o.keyfiles);
			return fe_bad_option(SYNOPSIS, c, optopt, argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	rc = 0;
	if (argc > 1) {
		rc = fe_usage_error(SYNOPSIS, "too many operands");
		goto done;
	}
	if (o.host_keys && o.no_host_keys) {
		rc = fe_usage_error(SYNOPSIS, "give --host-keys DIR or --no-host-keys, not both");
		goto done;
	}
	if (o.group && path_check_name("group", o.group, &e) < 0) {
		rc = fe_fail_usage(SYNOPSIS, &e);
		goto done;
	}
	if (o.user && (*o.user == '\0' || strchr(o.user, ':') || strchr(o.user, '\n'))) {
		rc = fe_usage_error(SYNOPSIS, "-u '%s': not a user name", o.user);
		goto done;
	}
	if (o.github_user && !config_valid_github_user(o.github_user)) {
		rc = fe_usage_error(SYNOPSIS,
		    "--github-user '%s': not a GitHub login (letters, digits and single hyphens, at most 39)",
		    o.github_user);
		goto done;
	}
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		rc = fe_fail(&e);
		goto done;
	}
	if (argc == 1) {
		img = strdup(argv[0]);
		doc = json_object();
	} else {
		const char *p;
		doc = doc_input(true, "pipe cowclone's output into imgprep, or give IMG", &e);
		if (doc == NULL) {
			rc = fe_fail_usage(SYNOPSIS, &e);
			goto done;
		}
		p = doc_need_str(doc, "disk", "path", "pipe cowclone's output, or give IMG",
		    &e);
		if (p == NULL) {
			rc = fe_fail(&e);
			goto done;
		}
		img = strdup(p);
	}
	if (img == NULL || doc == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "imgprep");
		rc = fe_fail(&e);
		goto done;
	}
	if (o.name) {
		name = strdup(o.name);
	} else {
		const char *b = strrchr(img, '/');
		size_t n;
		b = b ? b + 1 : img;
		n = strlen(b);
		name = strndup(b, n > 4 && strcmp(b + n - 4, ".img") == 0 ? n - 4 : n);
	}
	if (name == NULL) {
		vs_error(&e, EX_OSERR, ENOMEM, "imgprep");
		rc = fe_fail(&e);
		goto done;
	}
	if (!valid_hostname(name)) {
		rc = fe_usage_error(SYNOPSIS,
		    "'%s' is not a valid hostname (letters, digits and hyphens, labels of 1 to 63): give -n NAME",
		    name);
		goto done;
	}
	pr.img = img;
	pr.name = name;
	if (gather(&o, doc, &pr, &e) < 0 || prepare(&o, &pr, &section, &e) < 0 ||
	    doc_set(doc, "prep", section, &e) < 0 || doc_write(stdout, doc, &e) < 0) {
		rc = fe_fail(&e);
		goto done;
	}
	if (!o.quiet)
		fe_warn("%s: prepared as %s%s%s", img, name,
		    pr.keys.n ? ", keys authorized" : "",
		    pr.userdata ? ", userdata on first boot" : "");
done:
	free_host_keys(pr.hk);
	sshkeys_free(&pr.keys);
	free(pr.userdata);
	free(o.keyfiles);
	return fe_finish(rc);
}
