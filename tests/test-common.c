/* test-common: unit tests of common/, as a TAP program (bubblewrap's
 * tests/test-utils.c).  Run by `make check`; prints "1..N" at the end. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "atomic.h"
#include "cleanup.h"
#include "clone.h"
#include "config.h"
#include "creds.h"
#include "digest.h"
#include "doc.h"
#include "ext4w.h"
#include "err.h"
#include "fe.h"
#include "image.h"
#include "inflate.h"
#include "kernel.h"
#include "layout.h"
#include "lock.h"
#include "path.h"
#include "progress.h"
#include "qmp.h"
#include "ref.h"
#include "rootless.h"
#include "run.h"
#include "size.h"
#include "sshkey.h"
#include "stamp.h"
#include "stop.h"
#include "strmap.h"
#include "tree.h"
#include "vmstate.h"

static int tests, failures;
static char tmpdir[PATH_MAX];
static const char *fixtures = "tests/fixtures";

static void ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tests++;
	if (!cond)
		failures++;
	printf("%sok %d - ", cond ? "" : "not ", tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static char *tmp_path(const char *name)
{
	return path_join(tmpdir, name);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0) {
		perror(path);
		exit(99);
	}
}

/* Number of entries in tmpdir/sub whose name starts with '.'. */
static int hidden_files(const char *dir)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '^\\.' || true", dir);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

/* ---- size ---- */

static void test_size(void)
{
	static const struct { const char *s; uint64_t v; } good[] = {
		{ "15G", UINT64_C(15) << 30 }, { "5g", UINT64_C(5) << 30 },
		{ "512M", UINT64_C(512) << 20 }, { "1T", UINT64_C(1) << 40 },
		{ "5120m", UINT64_C(5) << 30 }, { "015G", UINT64_C(15) << 30 },
	};
	static const struct { const char *s; const char *why; } bad[] = {
		{ "15", "unit is missing" }, { "15GB", "like 15G" },
		{ "-1G", "like 15G" }, { "1.5G", "like 15G" },
		{ "99999999999T", "too large" }, { "", "like 15G" },
		{ "0G", "more than zero" }, { "G", "like 15G" },
		{ " 15G", "like 15G" }, { "15K", "like 15G" },
		{ "18446744073709551616M", "too large" },
	};
	struct vs_err e;
	uint64_t v;
	char buf[32];

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		v = 0;
		ok(size_parse(good[i].s, &v, &e) == 0 && v == good[i].v,
		    "size '%s' parses", good[i].s);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&e, 0, sizeof e);
		int rc = size_parse(bad[i].s, &v, &e);
		ok(rc == -1 && e.code == EX_USAGE && strstr(e.msg, bad[i].why) &&
		    strstr(e.msg, "like 15G"),
		    "size '%s' refused, showing the accepted form: %s", bad[i].s,
		    e.msg);
	}
	memset(&e, 0, sizeof e);
	ok(size_parse_disk("4G", &v, &e) == -1 && e.code == EX_USAGE &&
	    strstr(e.msg, "at least 5G") && strstr(e.msg, "like 15G"),
	    "disk size 4G refused: %s", e.msg);
	ok(size_parse_disk("4095M", &v, &e) == -1, "disk size 4095M refused");
	ok(size_parse_disk("5G", &v, &e) == 0 && v == SIZE_DISK_MIN,
	    "disk size 5G accepted");
	ok(size_parse_disk("15GB", &v, &e) == -1 && strstr(e.msg, "like 15G"),
	    "disk size 15GB refused with the accepted form");
	ok(strcmp(size_format(UINT64_C(15) << 30, buf, sizeof buf), "15G") == 0,
	    "15G formats as 15G");
	ok(strcmp(size_format(UINT64_C(1536) << 20, buf, sizeof buf), "1536M") == 0,
	    "1536M formats as 1536M");
	ok(strcmp(size_format(1000, buf, sizeof buf), "1000 bytes") == 0,
	    "1000 formats in bytes");
	ok(strcmp(size_human(0, buf, sizeof buf), "0B") == 0, "0 for people: 0B");
	ok(strcmp(size_human(4096, buf, sizeof buf), "4.0K") == 0,
	    "4096 for people: 4.0K");
	ok(strcmp(size_human(UINT64_C(531) << 20, buf, sizeof buf), "531M") == 0,
	    "531M for people: 531M");
	ok(strcmp(size_human(UINT64_C(15) << 30, buf, sizeof buf), "15G") == 0,
	    "15G for people: 15G");
}

/* ---- pipeline document ---- */

static json_t *read_str(const char *text, bool *present, struct vs_err *e)
{
	FILE *f = fmemopen((void *)(uintptr_t)text, strlen(text), "r");
	json_t *doc;

	if (f == NULL && *text == '\0')
		f = fopen("/dev/null", "r");
	doc = doc_read(f, present, e);
	fclose(f);
	return doc;
}

static void test_doc(void)
{
	static const char *const empties[] = { "", "\n", "  \t\r\n " };
	static const struct { const char *in; const char *why; } bad[] = {
		{ "{", "byte" }, { "[1,2]", "an array" }, { "\"x\"", "a string" },
		{ "{} {}", "byte 4" }, { "  [", "byte 3" }, { " 7", "byte 2" }, { "{}x", "byte" },
		{ "{\"a\":1,\"a\":2}", "duplicate" }, { "nul", "byte" },
		{ "{\"a\":\"\xff\"}", "byte" }, { "42", "a number" },
	};
	const char *in = "{\"image\":{\"ref\":\"a\\\"b\\nc\",\"n\":[1,2.5,-3e-7,null,true],"
	    "\"big\":9007199254740993,\"nul\":\"x\\u0000y\"},\"zeta\":{},\"alpha\":\"é\"}\n";
	struct vs_err e;
	bool present;
	json_t *doc, *orig, *again;
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;

	for (size_t i = 0; i < 3; i++) {
		present = true;
		doc = read_str(empties[i], &present, &e);
		ok(doc && json_is_object(doc) && json_object_size(doc) == 0 &&
		    !present, "empty input %zu is no document", i);
		json_decref(doc);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&e, 0, sizeof e);
		doc = read_str(bad[i].in, &present, &e);
		ok(doc == NULL && e.code == EX_DATAERR && strstr(e.msg, bad[i].why) &&
		    strstr(e.msg, "byte"), "document '%s' refused: %s", bad[i].in,
		    e.msg);
		json_decref(doc);
	}

	doc = read_str(in, &present, &e);
	orig = read_str(in, &present, &e);
	ok(doc && present, "a document is read");
	ok(doc_set(doc, "disk", json_pack("{s:s}", "path", "/x"), &e) == 0,
	    "a section is added");
	f = open_memstream(&out, &outlen);
	ok(doc_write(f, doc, &e) == 0, "the document is written");
	fclose(f);
	ok(outlen > 0 && out[outlen - 1] == '\n' && memchr(out, '\n', outlen) ==
	    out + outlen - 1, "on exactly one line");
	again = read_str(out, &present, &e);
	ok(again && json_equal(json_object_get(again, "image"),
	    json_object_get(orig, "image")) &&
	    json_equal(json_object_get(again, "zeta"), json_object_get(orig, "zeta")) &&
	    json_equal(json_object_get(again, "alpha"), json_object_get(orig, "alpha")),
	    "other sections pass through equal in meaning");
	ok(out && strstr(out, "\"image\":") < strstr(out, "\"zeta\":") &&
	    strstr(out, "\"zeta\":") < strstr(out, "\"alpha\":") &&
	    strstr(out, "\"alpha\":") < strstr(out, "\"disk\":"),
	    "sections keep their order; the new one comes last");
	ok(out && strstr(out, "9007199254740993") && strstr(out, "x\\u0000y") &&
	    strstr(out, "a\\\"b\\nc"), "big integers, NULs and escapes survive");
	json_decref(again);

	memset(&e, 0, sizeof e);
	ok(doc_need_str(doc, "base", "path", "pipe mkbase", &e) == NULL &&
	    e.code == EX_DATAERR && strstr(e.msg, "no 'base' section") &&
	    strstr(e.msg, "pipe mkbase"), "a missing section is named: %s", e.msg);
	json_object_set_new(doc, "base", json_pack("{s:i}", "path", 3));
	ok(doc_need_str(doc, "base", "path", NULL, &e) == NULL &&
	    strstr(e.msg, "base.path is a number"), "a wrong type is named: %s",
	    e.msg);
	ok(doc_need_str(doc, "disk", "path", NULL, &e) &&
	    strcmp(doc_need_str(doc, "disk", "path", NULL, &e), "/x") == 0,
	    "a present string is found");
	json_decref(doc);
	json_decref(orig);
	free(out);

	/* doc_input: an empty object for operands, stdin's document, or
	 * a usage error naming what to give */
	{
		int saved = dup(STDIN_FILENO), p[2];
		json_t *d = doc_input(false, "give X", &e);
		ok(json_is_object(d) && json_object_size(d) == 0,
		    "doc_input without stdin: an empty document");
		json_decref(d);
		if (saved >= 0 && pipe(p) == 0) {
			close(p[1]);	/* an empty pipe: no document */
			dup2(p[0], STDIN_FILENO);
			close(p[0]);
			clearerr(stdin);
			memset(&e, 0, sizeof e);
			d = doc_input(true, "give X", &e);
			ok(d == NULL && e.code == EX_USAGE &&
			    strcmp(e.msg, "no pipeline document on stdin: give X") == 0,
			    "doc_input with nothing on stdin: %s", e.msg);
			if (pipe(p) == 0) {
				ok(write(p[1], "{\"a\":1}\n", 8) == 8,
				    "a document into a pipe");
				close(p[1]);
				dup2(p[0], STDIN_FILENO);
				close(p[0]);
				clearerr(stdin);
				d = doc_input(true, "give X", &e);
				ok(d && json_integer_value(json_object_get(d, "a")) == 1,
				    "doc_input reads stdin's document");
				json_decref(d);
			}
			dup2(saved, STDIN_FILENO);
			close(saved);
			clearerr(stdin);
		}
	}
}

/* ---- configuration ---- */

static char *fixture(const char *name)
{
	return path_join(fixtures, name);
}

static void test_config(void)
{
	struct vs_config c;
	struct vs_err e;
	const struct vs_group *g;
	cleanup_free char *design = fixture("slicer-mac.yaml");
	cleanup_free char *linux_ex = fixture("slicer-linux.yaml");
	cleanup_free char *two = fixture("slicer-two-groups.yaml");
	cleanup_free char *bad = tmp_path("bad.yaml");
	int rc;

	rc = config_load(&c, design, &e);
	ok(rc == 0, "DESIGN.md's example loads%s%s", rc ? ": " : "",
	    rc ? e.msg : "");
	ok(rc == 0 && c.image && strcmp(c.image,
	    "ghcr.io/openfaasltd/slicer-systemd-arm64-avz:latest") == 0,
	    "config.image");
	ok(rc == 0 && c.hypervisor && strcmp(c.hypervisor, "apple") == 0,
	    "config.hypervisor");
	g = rc == 0 ? config_group(&c, "slicer", &e) : NULL;
	ok(g && g->count == 1 && g->vcpu == 4 && g->ram == (UINT64_C(8) << 30) &&
	    g->storage_size == (UINT64_C(15) << 30), "group slicer's numbers");
	ok(g && g->network.mode && strcmp(g->network.mode, "nat") == 0 &&
	    g->network.gateway && strcmp(g->network.gateway, "192.168.64.1/24") == 0,
	    "group slicer's network");
	ok(rc == 0 && c.nwarnings == 0, "no warnings for it");
	memset(&e, 0, sizeof e);
	ok(rc == 0 && config_group(&c, "nope", &e) == NULL && e.code == EX_CONFIG &&
	    strstr(e.msg, "no host group 'nope'") && strstr(e.msg, "slicer"),
	    "an unknown group is refused, listing the groups: %s", e.msg);
	config_free(&c);

	rc = config_load(&c, linux_ex, &e);
	ok(rc == 0 && c.nwarnings == 0 && c.ngroups == 1 &&
	    c.github_user && strcmp(c.github_user, "alexellis") == 0 &&
	    strcmp(c.hypervisor, "firecracker") == 0 &&
	    c.groups[0].storage_size == (UINT64_C(25) << 30) &&
	    strcmp(c.groups[0].network.bridge, "brvm0") == 0,
	    "Slicer's full reference example loads, github_user honoured, no warning: %s",
	    c.nwarnings ? c.warnings[0] : "(none)");
	config_free(&c);

	rc = config_load(&c, two, &e);
	ok(rc == 0 && c.ngroups == 2, "two groups load");
	g = rc == 0 ? config_group(&c, "sbox", &e) : NULL;
	ok(g && g->count == 0 && g->ram == (UINT64_C(4096) << 20) &&
	    g->storage_size == SIZE_DISK_MIN, "ram_mb and count 0");
	ok(rc == 0 && c.nwarnings == 1 && strstr(c.warnings[0], ":20:7:") &&
	    strstr(c.warnings[0], "unknown key 'colour' ignored"),
	    "an unknown key is warned about with line and column: %s",
	    c.nwarnings ? c.warnings[0] : "(none)");
	config_free(&c);

	static const struct { const char *text; const char *why; } bads[] = {
		{ "config:\n  image: [a\n", ":3:1:" },
		{ "config:\n  host_groups:\n    - name: a\n      storage_size: 15GB\n",
		  ":4:21: storage_size: invalid size '15GB'" },
		{ "config:\n  host_groups:\n    - name: a\n      storage_size: 4G\n",
		  "at least 5G" },
		{ "config:\n  host_groups:\n    - name: a\n      vcpu: four\n",
		  ":4:13: vcpu: expected a whole number" },
		{ "config:\n  host_groups:\n    - name: a\n      ram_gb: 2\n      ram_mb: 2\n",
		  "only one of ram_gb" },
		{ "config:\n  host_groups:\n    - count: 1\n", "without a name" },
		{ "config:\n  host_groups:\n    - name: a\n      storage_size: 5G\n"
		  "    - name: a\n      storage_size: 5G\n", "defined twice" },
		{ "config:\n  insecure_registry: maybe\n", "true or false" },
		{ "image: x\n", "no 'config:'" },
		{ "", "empty configuration" },
		{ "- a\n", "expected a mapping" },
		{ "config:\n  host_groups: 3\n", "expected a list" },
		{ "config:\n  host_groups:\n    - name: ../x\n", ":3:13: host group name: invalid group name '../x'" },
		{ "config:\n  host_groups:\n    - name: \"a b\"\n", "invalid group name 'a b'" },
		{ "config:\n  host_groups:\n    - name: \"\"\n", "without a name" },
		{ "config:\n  host_groups:\n    - name: a\n      count: 2\n",
		  ":3:7: host group 'a' has no storage_size" },
		{ "config:\n  host_groups:\n    - name: a\n      storage_size: 5G\n      count: \"2\"\n",
		  ":5:14: count: expected a whole number, got the string \"2\"" },
		{ "config:\n  host_groups:\n    - name: a\n      storage_size: 5G\n      storage: lvm\n",
		  "storage: expected image, devmapper or zfs" },
		{ "config:\n  kernel_file: /k\n  kernel_image: r:1\n", "not both" },
		{ "config:\n  kernel_file: \"\"\n", "kernel_file: expected a path" },
		{ "config:\n  image: a\n  image: b\n", ":3:3: 'image' is given twice" },
		{ "config:\n  host_groups: []\n  host_groups:\n    - name: a\n",
		  "'host_groups' is given twice" },
		{ "config: {}\nconfig: {}\n", "'config' is given twice" },
		{ "config:\n  host_groups:\n    - name: a\n      vcpu: 1\n      vcpu: 2\n",
		  "'vcpu' is given twice" },
		{ "config:\n  ssh_keys: \"ssh-ed25519 AAAA\"\n", ":2:13: ssh_keys: expected a list" },
		{ "config:\n  ssh_keys:\n    - ssh-ed25519 AAAA x\n",
		  ":3:7: ssh_keys: not an OpenSSH public key" },
		{ "config:\n  ssh_keys:\n    - hello world\n", ":3:7: ssh_keys: not an OpenSSH public key" },
		{ "config:\n  ssh_keys:\n    - \"-----BEGIN OPENSSH PRIVATE KEY-----\"\n",
		  "a private key, not a public key" },
		{ "config:\n  ssh_keys:\n    - \"\"\n", "an empty entry" },
		{ "config:\n  ssh_keys:\n    - \"ssh-ed25519 AAAA\\nssh-rsa AAAA\"\n", "a line break inside the key" },
		{ "config:\n  github_user: \"a/../b\"\n", ":2:16: github_user: 'a/../b' is not a GitHub login" },
		{ "config:\n  github_user: -x\n", "is not a GitHub login" },
		{ "config:\n  host_groups:\n    - name: a\n      storage_size: 5G\n"
		  "      userdata: x\n      userdata_file: y\n", "not both" },
	};
	for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
		write_file(bad, bads[i].text);
		memset(&e, 0, sizeof e);
		rc = config_load(&c, bad, &e);
		ok(rc == -1 && e.code == EX_CONFIG && strstr(e.msg, bads[i].why) &&
		    strncmp(e.msg, bad, strlen(bad)) == 0,
		    "bad configuration %zu refused: %s", i, e.msg);
		config_free(&c);
	}
	write_file(bad, "config:\n  ssh_keys:\n    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3J5oC0iKhGSl+9O0/+9wvHxV4nBhC9kyC5UZGJ1E2a me@h\n"
	    "  github_user: some-one\n  host_groups:\n    - name: a\n      storage_size: 5G\n"
	    "      userdata: |\n        echo hi\n    - name: b\n      storage_size: 5G\n"
	    "      userdata_file: ud.sh\n");
	rc = config_load(&c, bad, &e);
	ok(rc == 0 && c.nssh_keys == 1 && strstr(c.ssh_keys[0], "me@h") &&
	    strcmp(c.github_user, "some-one") == 0 && c.nwarnings == 0 &&
	    strcmp(c.groups[0].userdata, "echo hi\n") == 0 &&
	    c.groups[1].userdata_file[0] == '/' &&
	    strcmp(strrchr(c.groups[1].userdata_file, '/'), "/ud.sh") == 0,
	    "ssh_keys, github_user, userdata, userdata_file (relative to the file) load%s%s",
	    rc ? ": " : "", rc ? e.msg : "");
	config_free(&c);
	write_file(bad, "config:\n  insecure_registry: yes\n  image: ~\n");
	rc = config_load(&c, bad, &e);
	ok(rc == 0 && c.insecure_registry && c.image == NULL,
	    "booleans and nulls");
	config_free(&c);

	unlink(bad);
	memset(&e, 0, sizeof e);
	rc = config_load(&c, "/nonexistent/slicer-mac.yaml", &e);
	ok(rc == -1 && e.code == EX_NOINPUT && strstr(e.msg, "No such file") &&
	    c.path == NULL, "a missing file is EX_NOINPUT, and nothing is kept: %s", e.msg);
	config_free(&c);
	memset(&e, 0, sizeof e);
	rc = config_load(&c, "/", &e);
	ok(rc == -1 && e.code == EX_NOINPUT && strstr(e.msg, "/: is a directory") &&
	    c.path == NULL, "a directory is EX_NOINPUT: %s", e.msg);

	char *found = NULL;
	ok(config_locate(tmpdir, NULL, &found, &e) == 0 && found == NULL,
	    "no configuration in an empty workspace");
	cleanup_free char *ws = tmp_path(CONFIG_FILE);
	write_file(ws, "config: {}\n");
	ok(config_locate(tmpdir, NULL, &found, &e) == 0 && found &&
	    strcmp(found, ws) == 0, "the workspace's slicer-mac.yaml is found");
	free(found);
	ok(config_locate(tmpdir, "/x.yaml", &found, &e) == 0 && found &&
	    strcmp(found, "/x.yaml") == 0, "-c wins");
	free(found);
	unlink(ws);
}

/* ---- atomic output ---- */

/* The content of path, as a string (empty when unreadable). */
static const char *slurp(const char *path)
{
	static char buf[64];
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static void test_atomic_keep(void)
{
	cleanup_free char *p = tmp_path("disk.img"), *k = tmp_path("kept.img");
	struct atomic_file af;
	struct vs_err e;
	struct stat st;
	bool kept = true;
	ino_t old;

	unlink(p);
	unlink(k);
	ok(atomic_open(&af, p, 0644, &e) == 0 && write(af.fd, "one", 3) == 3 &&
	    atomic_commit_keep(&af, k, ATOMIC_NOSYNC, &kept, &e) == 0 && !kept &&
	    strcmp(slurp(p), "one") == 0 && access(k, F_OK) < 0,
	    "commit_keep with nothing to replace: committed, nothing kept");
	stat(p, &st);
	old = st.st_ino;
	ok(atomic_open(&af, p, 0644, &e) == 0 && write(af.fd, "two", 3) == 3 &&
	    atomic_commit_keep(&af, k, 0, &kept, &e) == 0 && kept &&
	    strcmp(slurp(p), "two") == 0 && strcmp(slurp(k), "one") == 0,
	    "commit_keep: the new file in place, the old one kept");
	ok(stat(k, &st) == 0 && st.st_ino == old, "kept renamed, not copied");
	ok(hidden_files(tmpdir) == 0, "no temporary file is left");
	memset(&e, 0, sizeof e);
	ok(atomic_open(&af, p, 0644, &e) == 0 && write(af.fd, "three", 5) == 5 &&
	    atomic_commit_keep(&af, k, 0, &kept, &e) == -1 && e.code == EX_CANTCREAT,
	    "commit_keep onto an existing keep fails: %s", e.msg);
	ok(strcmp(slurp(p), "two") == 0 && strcmp(slurp(k), "one") == 0,
	    "and both files are as they were (the swap undone or never made)");
	ok(strstr(e.msg, "kept.img") != NULL, "the message names the keep");
	ok(hidden_files(tmpdir) == 0, "no temporary file is left");
	unlink(p);
	unlink(k);
}

static void test_atomic(void)
{
	cleanup_free char *p = tmp_path("out.bin");
	struct atomic_file af;
	struct vs_err e;
	struct stat st;
	char buf[16] = "";
	int fd, status;
	pid_t pid;

	unlink(p);
	ok(atomic_open(&af, p, 0644, &e) == 0, "a temporary file is created");
	ok(stat(p, &st) < 0 && errno == ENOENT,
	    "nothing under the final name while writing");
	ok(af.tmp && strstr(af.tmp, "/.out.bin.tmp-") != NULL,
	    "the temporary name is hidden, beside the final one");
	ok(write(af.fd, "hello", 5) == 5, "written");
	ok(atomic_commit(&af, ATOMIC_NOREPLACE, &e) == 0, "committed");
	fd = open(p, O_RDONLY);
	ok(fd >= 0 && read(fd, buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0,
	    "the final name holds it");
	if (fd >= 0)
		close(fd);
	ok(hidden_files(tmpdir) == 0, "no temporary file is left");

	ok(atomic_open(&af, p, 0644, &e) == 0 && write(af.fd, "other", 5) == 5,
	    "a second file is written");
	memset(&e, 0, sizeof e);
	ok(atomic_commit(&af, ATOMIC_NOREPLACE, &e) == -1 && e.code == EX_CANTCREAT &&
	    strstr(e.msg, "already exists"), "NOREPLACE keeps the existing file: %s",
	    e.msg);
	fd = open(p, O_RDONLY);
	ok(fd >= 0 && read(fd, buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0,
	    "which is intact");
	if (fd >= 0)
		close(fd);
	ok(hidden_files(tmpdir) == 0, "and the temporary file is gone");

	ok(atomic_open(&af, p, 0600, &e) == 0 && write(af.fd, "new", 3) == 3 &&
	    atomic_commit(&af, ATOMIC_REPLACE, &e) == 0, "REPLACE replaces");
	ok(stat(p, &st) == 0 && st.st_size == 3 && (st.st_mode & 0777) == 0600,
	    "with the new content and mode");

	ok(atomic_open(&af, p, 0644, &e) == 0, "another temporary file");
	atomic_abort(&af);
	atomic_abort(&af);
	ok(hidden_files(tmpdir) == 0 && stat(p, &st) == 0 && st.st_size == 3,
	    "abort removes it and leaves the final name alone");

	memset(&e, 0, sizeof e);
	cleanup_free char *nodir = tmp_path("no/such/dir/file");
	ok(atomic_open(&af, nodir, 0644, &e) == -1 && e.code == EX_CANTCREAT,
	    "a missing directory is refused: %s", e.msg);

	/* A signal while the temporary file exists removes it. */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		atomic_on_signals();
		if (atomic_open(&af, p, 0644, &e) < 0)
			_exit(3);
		raise(SIGTERM);
		_exit(4);
	}
	waitpid(pid, &status, 0);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
	    "SIGTERM still ends the program");
	ok(hidden_files(tmpdir) == 0, "and the temporary file is removed");
	unlink(p);
}

/* ---- locks ---- */

static void test_lock(void)
{
	cleanup_free char *p = tmp_path("disk.img");
	cleanup_free char *lp = tmp_path("ws.lock");
	struct vs_err e;
	struct flock fl;
	int a, b, c;

	write_file(p, "0123456789");
	a = open(p, O_RDWR);
	b = open(p, O_RDWR);
	ok(lock_conflict(b, 0, 0) == 0, "an unlocked file has no conflict");
	ok(lock_qemu_writer(b) == 0, "and no QEMU writer");
	/* What QEMU takes for a writable image: read locks on 100, 101, 201. */
	memset(&fl, 0, sizeof fl);
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = 100;
	fl.l_len = 2;
	ok(fcntl(a, F_OFD_SETLK, &fl) == 0, "a QEMU-like lock is taken");
	ok(lock_conflict(b, 0, 0) == 1, "another descriptor sees a conflict");
	ok(lock_qemu_writer(b) == 1, "and a QEMU writer");
	ok(lock_whole(b) == -1 && (errno == EAGAIN || errno == EACCES),
	    "a whole-file lock is refused");
	close(a);
	ok(lock_whole(b) == 0, "once released, the whole-file lock is taken");
	a = open(p, O_RDONLY);
	ok(lock_conflict(a, 0, 0) == 1, "and it is seen from elsewhere");
	close(a);
	close(b);

	c = lock_path(lp, true, false, &e);
	ok(c >= 0, "a workspace lock is taken");
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		struct vs_err ce;
		int fd = lock_path(lp, true, false, &ce);
		/* _exit skips the cleanups: free here, for valgrind. */
		free(p);
		free(lp);
		_exit(fd < 0 && ce.code == EX_TEMPFAIL ? 0 : 1);
	}
	int status;
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "another process is refused it without waiting (status %d)", status);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		/* waiting for it, a SIGTERM makes lock_path give up */
		struct vs_err ce;
		int fd;
		stop_on_signals();
		alarm(5);	/* a wait that never ends fails by SIGALRM */
		fd = lock_path(lp, true, true, &ce);
		free(p);
		free(lp);
		_exit(fd < 0 && ce.code == EX_TEMPFAIL && stop_signal == SIGTERM &&
		    strstr(ce.msg, "interrupted") ? 0 : 1);
	}
	usleep(200000);
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "a wait for a lock ends on SIGTERM with EX_TEMPFAIL (status %d)",
	    status);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		/* nohup: an ignored SIGHUP stays ignored */
		signal(SIGHUP, SIG_IGN);
		stop_on_signals();
		raise(SIGHUP);
		free(p);	/* _exit skips the cleanups: for valgrind */
		free(lp);
		_exit(stop_signal == 0 ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "stop_on_signals leaves an ignored SIGHUP ignored (status %d)", status);
	close(c);
	unlink(lp);
	unlink(p);
}

/* ---- paths ---- */

static void test_path(void)
{
	char *d, *b;
	struct vs_err e;

	ok(path_split("a/b/c.img", &d, &b) == 0 && strcmp(d, "a/b") == 0 &&
	    strcmp(b, "c.img") == 0, "split a/b/c.img");
	free(d);
	free(b);
	ok(path_split("c.img", &d, &b) == 0 && strcmp(d, ".") == 0 &&
	    strcmp(b, "c.img") == 0, "split c.img");
	free(d);
	free(b);
	ok(path_split("/c.img", &d, &b) == 0 && strcmp(d, "/") == 0 &&
	    strcmp(b, "c.img") == 0, "split /c.img");
	free(d);
	free(b);
	ok(path_split("dir/sub/", &d, &b) == 0 && strcmp(d, "dir") == 0 &&
	    strcmp(b, "sub") == 0, "split dir/sub/");
	free(d);
	free(b);
	cleanup_free char *abs = path_abs("tests/../tests/x.img", &e);
	cleanup_free char *cwd = getcwd(NULL, 0);
	cleanup_free char *want = path_join(cwd, "tests/x.img");
	ok(abs && strcmp(abs, want) == 0, "path_abs resolves the directory");
	ok(path_abs("/no/such/dir/x", &e) == NULL && e.code == EX_CANTCREAT,
	    "path_abs of a missing directory fails: the output cannot be made");
	cleanup_free char *j = path_join("/a/", "b");
	ok(strcmp(j, "/a/b") == 0, "join does not double the slash");
}

/* ---- progress ---- */

static void test_progress(void)
{
	struct progress p;
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	int master, slave;

	progress_start(&p, f, "copying", 1000, false);
	progress_update(&p, 500);
	progress_end(&p);
	fflush(f);
	ok(len == 0, "a disabled progress line draws nothing");
	progress_start(&p, f, "copying", UINT64_C(1) << 30, true);
	progress_update(&p, UINT64_C(1) << 29);
	progress_update(&p, UINT64_C(1) << 30);
	progress_end(&p);
	fflush(f);
	ok(len > 0 && strstr(out, "copying") && strstr(out, " 50%") &&
	    strstr(out, "100%") && strstr(out, "1.0G/1.0G") && strstr(out, "/s"),
	    "an enabled one draws the label, percentages, sizes and the rate");
	fclose(f);
	free(out);

	f = tmpfile();
	ok(!progress_wanted(f, false), "not wanted when not a terminal");
	fclose(f);
	if (openpty(&master, &slave, NULL, NULL, NULL) == 0) {
		f = fdopen(slave, "w");
		setenv("TERM", "xterm", 1);
		unsetenv("NO_COLOR");
		ok(progress_wanted(f, false), "wanted on a terminal");
		ok(!progress_wanted(f, true), "not with -q");
		setenv("NO_COLOR", "1", 1);
		ok(!progress_wanted(f, false), "not with NO_COLOR");
		unsetenv("NO_COLOR");
		setenv("TERM", "dumb", 1);
		ok(!progress_wanted(f, false), "not on a dumb terminal");
		fclose(f);
		close(master);
	} else {
		diag("openpty: %s", strerror(errno));
		ok(0, "a pseudo-terminal for the progress tests");
	}
}

/* ---- cloning ---- */

static void fill(int fd, off_t off, size_t len, int byte)
{
	char *buf = malloc(len);

	memset(buf, byte, len);
	if (pwrite(fd, buf, len, off) != (ssize_t)len) {
		perror("pwrite");
		exit(99);
	}
	free(buf);
}

static int same_content(int a, int b)
{
	char x[65536], y[65536];
	off_t off = 0;

	for (;;) {
		ssize_t n = pread(a, x, sizeof x, off);
		ssize_t m = pread(b, y, sizeof y, off);
		if (n != m || n < 0)
			return 0;
		if (n == 0)
			return 1;
		if (memcmp(x, y, (size_t)n) != 0)
			return 0;
		off += n;
	}
}

static void test_clone(void)
{
	static const struct { unsigned flags; const char *name; } ways[] = {
		{ 0, "default" },
		{ CLONE_NO_REFLINK, "no reflink" },
		{ CLONE_NO_REFLINK | CLONE_NO_THREADS, "one thread" },
		{ CLONE_NO_REFLINK | CLONE_NO_FLUSH, "no early writeback" },
		{ CLONE_NO_REFLINK | CLONE_COPY_RANGE_ALWAYS, "copy_file_range" },
	};
	cleanup_free char *src = tmp_path("src.img");
	cleanup_free char *dst = tmp_path("dst.img");
	struct stat sst, dstst;
	struct vs_err e;
	int s;

	/* 64 MiB logical: data at 0 and at 40M, a run of allocated zeros
	 * inside the second, and a ragged tail. */
	s = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
	fill(s, 0, 1 << 20, 'a');
	fill(s, 40 << 20, 3 << 20, 'b');
	fill(s, (40 << 20) + (1 << 20), 1 << 20, 0);
	if (ftruncate(s, (64 << 20) + 123) < 0 || fsync(s) < 0)
		exit(99);
	fstat(s, &sst);

	for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
		struct atomic_file af;
		struct clone_stats cs;
		int d;

		unlink(dst);
		if (atomic_open(&af, dst, 0644, &e) < 0) {
			ok(0, "%s: temporary file: %s", ways[i].name, e.msg);
			continue;
		}
		int rc = clone_into(&af, s, ways[i].flags, NULL, NULL, &cs, &e);
		ok(rc == 0, "%s: cloned as %s%s%s", ways[i].name,
		    rc == 0 ? clone_method_name(cs.method) : "-", rc ? ": " : "",
		    rc ? e.msg : "");
		if (rc < 0 || atomic_commit(&af, ATOMIC_NOREPLACE, &e) < 0) {
			atomic_abort(&af);
			continue;
		}
		d = open(dst, O_RDONLY);
		fstat(d, &dstst);
		ok(dstst.st_size == sst.st_size, "%s: same logical size",
		    ways[i].name);
		ok(same_content(s, d), "%s: same content", ways[i].name);
		if (cs.method == CLONE_SPARSE_COPY) {
			ok(dstst.st_blocks <= sst.st_blocks - 2048,
			    "%s: allocates less than the source (%lld < %lld blocks)",
			    ways[i].name, (long long)dstst.st_blocks,
			    (long long)sst.st_blocks);
			ok(lseek(d, 41 << 20, SEEK_DATA) == (off_t)42 << 20,
			    "%s: the zeros inside the data are a hole", ways[i].name);
			ok(cs.copied == (3u << 20), "%s: copied %llu bytes of data",
			    ways[i].name, (unsigned long long)cs.copied);
		} else if (cs.method == CLONE_COPY_RANGE) {
			ok(dstst.st_blocks <= sst.st_blocks,
			    "%s: allocates no more than the source", ways[i].name);
			ok(cs.copied == (4u << 20), "%s: copied all the data",
			    ways[i].name);
		}
		if (ways[i].flags & CLONE_COPY_RANGE_ALWAYS)
			ok(cs.method == CLONE_COPY_RANGE, "%s: is a copy_file_range",
			    ways[i].name);
		else if (ways[i].flags & CLONE_NO_REFLINK)
			ok(cs.method == CLONE_SPARSE_COPY, "%s: is a sparse-copy",
			    ways[i].name);
		close(d);
	}
	close(s);
	unlink(src);
	unlink(dst);
}

/* ---- image references ---- */

#define D64 "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define H64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_ref(void)
{
	static const struct {
		const char *in, *registry, *repo, *tag, *digest, *name;
	} good[] = {
		{ "debian", "docker.io", "library/debian", "latest", "",
		  "docker.io/library/debian:latest" },
		{ "debian:12", "docker.io", "library/debian", "12", "",
		  "docker.io/library/debian:12" },
		{ "user/repo", "docker.io", "user/repo", "latest", "",
		  "docker.io/user/repo:latest" },
		{ "index.docker.io/library/busybox", "docker.io", "library/busybox",
		  "latest", "", "docker.io/library/busybox:latest" },
		{ "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest", "ghcr.io",
		  "openfaasltd/slicer-systemd", "6.1.90-x86_64-latest", "",
		  "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest" },
		{ "localhost:5000/x", "localhost:5000", "x", "latest", "",
		  "localhost:5000/x:latest" },
		{ "localhost/x", "localhost", "x", "latest", "", "localhost/x:latest" },
		{ "127.0.0.1:5555/test/base:v1", "127.0.0.1:5555", "test/base", "v1",
		  "", "127.0.0.1:5555/test/base:v1" },
		{ "[::1]:5000/a/b", "[::1]:5000", "a/b", "latest", "",
		  "[::1]:5000/a/b:latest" },
		{ "name@" D64, "docker.io", "library/name", "", D64,
		  "docker.io/library/name@" D64 },
		{ "reg.io:443/a/b:t@" D64, "reg.io:443", "a/b", "t", D64,
		  "reg.io:443/a/b:t@" D64 },
		{ "x/a.b-c__d---e_f", "docker.io", "x/a.b-c__d---e_f", "latest", "",
		  "docker.io/x/a.b-c__d---e_f:latest" },
		{ "my.registry/a.b", "my.registry", "a.b", "latest", "",
		  "my.registry/a.b:latest" },
		{ "127.0.0.1:65535/a", "127.0.0.1:65535", "a", "latest", "",
		  "127.0.0.1:65535/a:latest" },
		{ "reg.io:1/a", "reg.io:1", "a", "latest", "", "reg.io:1/a:latest" },
	};
	static const struct { const char *in, *why; } bad[] = {
		{ "", "empty" }, { "Debian", "lowercase" }, { "a:b:c", "component" },
		{ "a/", "ends with '/'" }, { "/a", "component" }, { "a//b", "component" },
		{ "a@sha256:zz", "bad digest" }, { "a@md5:00", "bad digest" },
		{ "a:-bad", "bad tag" }, { "a:", "bad tag" },
		{ "host.io:99999999/x", "bad registry" }, { ":tag", "no name" },
		{ "@" D64, "no name" }, { "a___b", "component" },
		{ "exa_mple.com/x", "bad registry" }, { "a b", "component" },
		{ "-a", "component" },
		{ "127.0.0.1:70000/a/b:1", "its port is not from 1 to 65535" },
		{ "127.0.0.1:65536/a", "its port is not from 1 to 65535" },
		{ "reg.io:0/a", "its port is not from 1 to 65535" },
		{ "[::1]:99999/a", "its port is not from 1 to 65535" },
		{ "a@sha512:" H64 H64, "unsupported digest algorithm 'sha512'" },
		{ "reg.io/a:t@sha512:" H64 H64, "unsupported digest algorithm" },
		{ "a@sha512:zz", "bad digest" },
	};
	struct oci_ref r;
	struct vs_err e;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		int rc = ref_parse(good[i].in, &r, &e);
		ok(rc == 0 && strcmp(r.registry, good[i].registry) == 0 &&
		    strcmp(r.repository, good[i].repo) == 0 &&
		    strcmp(r.tag, good[i].tag) == 0 &&
		    strcmp(r.digest, good[i].digest) == 0 &&
		    strcmp(r.name, good[i].name) == 0,
		    "reference '%s' is %s%s%s", good[i].in, rc ? "refused: " : "",
		    rc ? e.msg : "", rc ? "" : r.name);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&e, 0, sizeof e);
		ok(ref_parse(bad[i].in, &r, &e) == -1 && e.code == EX_USAGE &&
		    strstr(e.msg, bad[i].why), "reference '%s' refused: %s",
		    bad[i].in, e.msg);
	}
	ref_parse("debian", &r, &e);
	ok(strcmp(ref_api_host(&r), "registry-1.docker.io") == 0 &&
	    !ref_is_loopback(&r), "Docker Hub's API host; not loopback");
	static const char *const loop[] = { "localhost:5000/x", "localhost/x",
	    "127.0.0.1:5555/x", "127.1.2.3/x", "[::1]:5000/x" };
	for (size_t i = 0; i < 5; i++)
		ok(ref_parse(loop[i], &r, &e) == 0 && ref_is_loopback(&r),
		    "%s is loopback", loop[i]);
	static const char *const notloop[] = { "127.0.0.1.example.com/x",
	    "10.0.0.1:5000/x", "localhost.example.com/x", "ghcr.io/x" };
	for (size_t i = 0; i < 4; i++)
		ok(ref_parse(notloop[i], &r, &e) == 0 && !ref_is_loopback(&r),
		    "%s is not loopback", notloop[i]);
	ok(digest_valid(D64) && !digest_valid("sha256:ABC") &&
	    !digest_valid("sha256:0123") && !digest_valid("md5:00"),
	    "digest_valid");
}

/* ---- digests, the OCI layout, credentials ---- */

#define ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static void test_layout(void)
{
	char d[DIGEST_MAX];
	struct oci_layout l;
	struct vs_err e;
	cleanup_free char *root = tmp_path("cache");
	cleanup_free char *ol = tmp_path("cache/oci-layout");
	size_t len = 0;
	char *body;
	json_t *desc, *found;
	struct stat st;

	ok(digest_buffer("abc", 3, "sha256", d, &e) == 0 && strcmp(d, ABC) == 0,
	    "sha256 of abc");
	ok(digest_buffer("abc", 3, "md5", d, &e) == -1 && e.code == EX_DATAERR,
	    "an unknown algorithm is refused");

	memset(&e, 0, sizeof e);
	ok(layout_open(&l, root, false, &e) == -1 && e.code == EX_NOINPUT,
	    "a missing layout is not created without asking");
	ok(layout_open(&l, root, true, &e) == 0 && stat(ol, &st) == 0,
	    "a layout is created with its oci-layout file");
	ok(layout_put_blob(&l, ABC, "abd", 3, &e) == -1 && e.code == EX_DATAERR &&
	    strstr(e.msg, "digest mismatch") && !layout_has_blob(&l, ABC, -1),
	    "a blob that does not match its digest is refused and not kept");
	ok(layout_put_blob(&l, ABC, "abc", 3, &e) == 0 &&
	    layout_has_blob(&l, ABC, 3) && !layout_has_blob(&l, ABC, 4),
	    "a matching blob is kept, and found by digest and size");
	body = layout_read_blob(&l, ABC, 100, &len, &e);
	ok(body && len == 3 && strcmp(body, "abc") == 0, "and read back");
	{
		cleanup_free char *rp = layout_rootfs_path(&l, ABC);
		cleanup_free char *want = NULL;
		ok(rp && asprintf(&want, "%s/rootfs/%s", root, ABC + 7) > 0 &&
		    strcmp(rp, want) == 0 && layout_rootfs_path(&l, "x") == NULL,
		    "an image's tree is rootfs/<manifest hex>");
	}
	free(body);
	ok(layout_read_blob(&l, ABC, 2, &len, &e) == NULL && e.code == EX_DATAERR,
	    "reading is bounded");

	desc = json_pack("{s:s, s:s, s:i}", "mediaType", "x", "digest", ABC, "size", 3);
	ok(layout_set_ref(&l, "r:1", desc, ABC, &e) == 0 &&
	    layout_set_ref(&l, "r:2", desc, NULL, &e) == 0 &&
	    layout_set_ref(&l, "r:1", desc, D64, &e) == 0, "references are set");
	found = layout_find_ref(&l, "r:1", &e);
	ok(found && strcmp(json_string_value(json_object_get(json_object_get(found,
	    "annotations"), REF_SOURCE_ANNOTATION)), D64) == 0,
	    "setting a reference again replaces its entry");
	json_decref(found);
	found = layout_find_ref(&l, "r:3", &e);
	ok(found == NULL && e.code == 0, "an unknown reference is not found");
	{
		cleanup_free char *ip = tmp_path("cache/index.json");
		json_t *idx = json_load_file(ip, 0, NULL);
		ok(json_array_size(json_object_get(idx, "manifests")) == 2,
		    "index.json has one entry per reference");
		json_decref(idx);
	}
	json_decref(desc);
	layout_close(&l);
	{
		char cmd[PATH_MAX + 16];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
		if (system(cmd) != 0)
			diag("could not remove %s", root);
	}
}

static void test_creds(void)
{
	cleanup_free char *dir = tmp_path("docker");
	cleanup_free char *cfg = tmp_path("docker/config.json");
	cleanup_free char *other = tmp_path("auth.json");
	char *user = NULL, *pass = NULL, *from = NULL;
	struct vs_err e;

	mkdir(dir, 0755);
	/* "alice:s3cr:et" and "bob:pw" */
	write_file(cfg, "{\"auths\":{\"127.0.0.1:5000\":{\"auth\":\"YWxpY2U6czNjcjpldA==\"},"
	    "\"https://index.docker.io/v1/\":{\"auth\":\"Ym9iOnB3\"},"
	    "\"bad.io\":{\"auth\":\"!!!\"}}}");
	setenv("DOCKER_CONFIG", dir, 1);
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	ok(creds_find("127.0.0.1:5000", &user, &pass, &from, &e) == 1 &&
	    strcmp(user, "alice") == 0 && strcmp(pass, "s3cr:et") == 0 &&
	    strcmp(from, cfg) == 0, "docker's config.json, by host:port");
	free(user); free(pass); free(from);
	ok(creds_find("docker.io", &user, &pass, NULL, &e) == 1 &&
	    strcmp(user, "bob") == 0, "Docker Hub by its v1 URL");
	free(user); free(pass);
	ok(creds_find("ghcr.io", &user, &pass, NULL, &e) == 0 && user == NULL,
	    "none for another registry");
	memset(&e, 0, sizeof e);
	ok(creds_find("bad.io", &user, &pass, NULL, &e) == -1 &&
	    e.code == EX_CONFIG && !strstr(e.msg, "!!!"),
	    "bad base64 is a configuration error that does not show it: %s", e.msg);
	write_file(other, "{\"auths\":{\"127.0.0.1:5000\":{\"auth\":\"Ym9iOnB3\"}}}");
	setenv("REGISTRY_AUTH_FILE", other, 1);
	ok(creds_find("127.0.0.1:5000", &user, &pass, NULL, &e) == 1 &&
	    strcmp(user, "bob") == 0, "REGISTRY_AUTH_FILE comes first");
	free(user); free(pass);
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("DOCKER_CONFIG");
	unlink(other);
	unlink(cfg);
	rmdir(dir);
}

/* ---- errors and helpers ---- */

static void test_err_run(void)
{
	struct vs_err e;
	int status = -1;
	char last[64] = "";

	vs_error(&e, EX_IOERR, ENOSPC, "writing %s", "x.img");
	ok(e.code == EX_IOERR && strcmp(e.msg,
	    "writing x.img: No space left on device") == 0,
	    "vs_error appends strerror");
	vs_error_prefix(&e, "cloning %s", "a");
	ok(strcmp(e.msg, "cloning a: writing x.img: No space left on device") == 0,
	    "vs_error_prefix puts context in front");
	ok(vs_code_for_errno(ENOSPC, 0) == EX_IOERR &&
	    vs_code_for_errno(ENOENT, 0) == EX_NOINPUT &&
	    vs_code_for_errno(EACCES, 0) == EX_NOPERM &&
	    vs_code_for_errno(EXDEV, 7) == 7, "errno maps to exit statuses");

	long long n = 0;
	ok(fe_number("4", 1, 1024, &n, "vcpu", &e) == 0 && n == 4,
	    "fe_number parses a number in bounds");
	ok(fe_number("0", 1, 1024, &n, "vcpu", &e) == -1 && e.code == EX_USAGE &&
	    strstr(e.msg, "invalid vcpu '0'") && strstr(e.msg, "from 1 to 1024"),
	    "below the bounds: %s", e.msg);
	ok(fe_number("4x", 1, 1024, &n, "vcpu", &e) == -1 &&
	    fe_number("", 1, 1024, &n, "vcpu", &e) == -1 &&
	    fe_number(" 4", 1, 1024, &n, "vcpu", &e) == -1 &&
	    fe_number("99999999999999999999", 1, 1024, &n, "vcpu", &e) == -1 &&
	    fe_number("1025", 1, 1024, &n, "vcpu", &e) == -1,
	    "junk, blanks, overflow and too large are refused");

	cleanup_free char *sh = run_find("sh", "dash", &e);
	ok(sh != NULL, "run_find finds sh");
	memset(&e, 0, sizeof e);
	ok(run_find("no-such-program-here", "no-such-pkg", &e) == NULL &&
	    e.code == EX_UNAVAILABLE && strstr(e.msg, "no-such-pkg"),
	    "a missing program names its package: %s", e.msg);
	const char *argv[] = { sh, "-c", "echo first; echo last >&2; exit 3", NULL };
	ok(sh && run_capture(argv, &status, last, sizeof last, &e) == 0 &&
	    status == 3 && strcmp(last, "last") == 0,
	    "run_capture gives the status and the last line");
}


static void test_strmap(void)
{
	struct strmap m = STRMAP_INIT;
	uintptr_t *v, val;
	const char *key;
	size_t i = 0, n = 0;
	char k[32];
	int bad = 0;

	ok(strmap_get(&m, "a", 1) == NULL, "strmap: an empty map has nothing");
	ok(strmap_put(&m, "usr/lib", 7, 1) == 0 && strmap_put(&m, "usr", 3, 2) == 0,
	    "strmap: put");
	v = strmap_get(&m, "usr/lib/x", 3);
	ok(v && *v == 2, "strmap: a prefix of a longer string is looked up by length");
	strmap_put(&m, "usr", 3, 5);
	v = strmap_get(&m, "usr", 3);
	ok(v && *v == 5 && m.len == 2, "strmap: put again replaces the value");
	for (int j = 0; j < 5000; j++) {
		int l = snprintf(k, sizeof k, "dir/%d", j);
		if (strmap_put(&m, k, (size_t)l, (uintptr_t)j + 10) < 0)
			bad++;
	}
	for (int j = 0; j < 5000; j++) {
		int l = snprintf(k, sizeof k, "dir/%d", j);
		v = strmap_get(&m, k, (size_t)l);
		if (v == NULL || *v != (uintptr_t)j + 10)
			bad++;
	}
	ok(bad == 0 && m.len == 5002, "strmap: 5000 keys survive growing");
	while (strmap_next(&m, &i, &key, &val))
		n++;
	ok(n == 5002, "strmap: iteration sees every key once (%zu)", n);
	strmap_clear(&m);
	ok(m.len == 0 && strmap_get(&m, "usr", 3) == NULL &&
	    strmap_put(&m, "usr", 3, 1) == 0 && strmap_get(&m, "usr", 3),
	    "strmap: clear empties it and it works on");
	strmap_free(&m);
}

static void test_rootless(void)
{
	unsigned char b[ROOTLESS_MAX];
	static const unsigned char umoci1000[] = { 0x08, 0xe8, 0x07, 0x10, 0xe9, 0x07 };
	static const unsigned char umoci05[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x10, 0x05 };
	static const unsigned char gidonly[] = { 0x10, 0x2a };
	static const unsigned char unknown[] = { 0x1a, 0x02, 'h', 'i', 0x08, 0x07 };
	static const unsigned char truncated[] = { 0x08, 0xe8 };
	uint32_t uid, gid;
	size_t n;
	mode_t type;
	unsigned maj, min;
	char dev[32];

	if (geteuid() == 0) {
		pid_t pid;
		int status;
		ok(!rootless_needed(), "rootless: root with every capability is not");
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			/* root without CAP_MKNOD (a container's root) */
			struct __user_cap_header_struct h = {
				.version = _LINUX_CAPABILITY_VERSION_3,
			};
			struct __user_cap_data_struct d[2];
			if (syscall(SYS_capget, &h, d) < 0)
				_exit(2);
			d[0].effective &= ~(1u << CAP_MKNOD);
			if (syscall(SYS_capset, &h, d) < 0)
				_exit(2);
			_exit(rootless_needed() ? 0 : 1);
		}
		waitpid(pid, &status, 0);
		ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		    "rootless: root without CAP_MKNOD is (status %d)", status);
	} else {
		ok(rootless_needed(), "rootless: not root");
	}
	ok(rootless_encode(0, 0, b) == 0, "rootless: 0:0 needs no attribute");
	n = rootless_encode(1000, 1001, b);
	ok(n == sizeof umoci1000 && memcmp(b, umoci1000, n) == 0,
	    "rootless: 1000:1001 encodes as umoci writes it");
	n = rootless_encode(0, 5, b);
	ok(n == sizeof umoci05 && memcmp(b, umoci05, n) == 0,
	    "rootless: uid 0 is written as NoopID, as umoci does");
	ok(rootless_decode(umoci1000, sizeof umoci1000, &uid, &gid) == 0 &&
	    uid == 1000 && gid == 1001, "rootless: decode 1000:1001");
	ok(rootless_decode(umoci05, sizeof umoci05, &uid, &gid) == 0 &&
	    uid == 0 && gid == 5, "rootless: NoopID decodes as 0");
	ok(rootless_decode(gidonly, sizeof gidonly, &uid, &gid) == 0 &&
	    uid == 0 && gid == 42, "rootless: a missing field is 0");
	ok(rootless_decode(unknown, sizeof unknown, &uid, &gid) == 0 &&
	    uid == 7, "rootless: unknown fields are skipped");
	ok(rootless_decode(truncated, sizeof truncated, &uid, &gid) < 0,
	    "rootless: a truncated varint is refused");
	n = rootless_encode(4000000000u, 65534, b);
	ok(rootless_decode(b, n, &uid, &gid) == 0 && uid == 4000000000u &&
	    gid == 65534, "rootless: large ids round-trip");
	rootless_device_encode(S_IFBLK, 8, 1, dev);
	ok(strcmp(dev, "b 8 1") == 0 &&
	    rootless_device_decode(dev, strlen(dev), &type, &maj, &min) == 0 &&
	    S_ISBLK(type) && maj == 8 && min == 1, "rootless: a block device round-trips");
	ok(rootless_device_decode("c 1 3", 5, &type, &maj, &min) == 0 &&
	    S_ISCHR(type) && maj == 1 && min == 3, "rootless: a character device");
	ok(rootless_device_decode("x 1 3", 5, &type, &maj, &min) < 0 &&
	    rootless_device_decode("c -1 3", 6, &type, &maj, &min) < 0 &&
	    rootless_device_decode("c 1 3 4", 7, &type, &maj, &min) < 0 &&
	    rootless_device_decode("c 1", 3, &type, &maj, &min) < 0 &&
	    rootless_device_decode("c 5000 1", 8, &type, &maj, &min) < 0 &&
	    rootless_device_decode("c 1 4294967299", 14, &type, &maj, &min) < 0,
	    "rootless: malformed and impossible devices are refused");
	ok(rootless_device_decode("c 4095 1048575", 14, &type, &maj, &min) == 0 &&
	    maj == 4095 && min == 1048575, "rootless: the largest device numbers");
}

static void test_tree(void)
{
	char top[PATH_MAX + 16], outside[PATH_MAX + 16], p[PATH_MAX + 64];
	struct vs_err e = { 0 };
	struct stat st;

	snprintf(top, sizeof top, "%s/tree", tmpdir);
	snprintf(outside, sizeof outside, "%s/outside", tmpdir);
	mkdir(outside, 0755);
	snprintf(p, sizeof p, "%s/victim", outside);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	mkdir(top, 0755);
	snprintf(p, sizeof p, "%s/a", top);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/a/b", top);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/a/b/file", top);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	snprintf(p, sizeof p, "%s/a/link", top);
	if (symlink(outside, p) < 0)
		diag("symlink: %s", strerror(errno));
	snprintf(p, sizeof p, "%s/a/b", top);
	chmod(p, 0500);	/* no write permission: removal must still work */
	snprintf(p, sizeof p, "%s/a", top);
	chmod(p, 0);
	ok(tree_remove(top, &e) == 0, "tree: remove a tree (%s)", e.msg);
	ok(lstat(top, &st) < 0 && errno == ENOENT, "tree: it is gone");
	snprintf(p, sizeof p, "%s/victim", outside);
	ok(stat(p, &st) == 0, "tree: a symlink's target outside is untouched");
	ok(tree_remove(top, &e) == 0, "tree: a missing tree is no error");
	unlink(p);
	rmdir(outside);

	/* 600 levels, with files and siblings at each, removed with 16
	 * descriptors at most */
	{
		int fd = -1, status;
		pid_t pid;
		mkdir(top, 0755);
		fd = open(top, O_RDONLY | O_DIRECTORY);
		for (int i = 0; i < 600 && fd >= 0; i++) {
			int next;
			mkdirat(fd, "d", 0755);
			mkdirat(fd, "sib", 0755);
			close(openat(fd, "f", O_CREAT | O_WRONLY, 0644));
			next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
			close(fd);
			fd = next;
		}
		if (fd >= 0)
			close(fd);
		fflush(stdout);
		pid = fork();
		if (pid == 0) {
			struct rlimit rl = { 16, 16 };
			struct vs_err ce;
			setrlimit(RLIMIT_NOFILE, &rl);
			_exit(tree_remove(top, &ce) == 0 ? 0 : 1);
		}
		waitpid(pid, &status, 0);
		ok(WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
		    lstat(top, &st) < 0 && errno == ENOENT,
		    "tree: a tree 600 levels deep is removed with 16 descriptors");
		if (lstat(top, &st) == 0) {
			char cmd[PATH_MAX + 32];
			snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", top);
			if (system(cmd) != 0)
				diag("%s left behind", top);
		}
	}
}

static void test_image(void)
{
	struct vs_err e = { 0 };
	json_t *m;
	const char *idx = "{\"schemaVersion\":2,\"manifests\":[]}";
	const char *good = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\","
	    "\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\",\"size\":2},"
	    "\"layers\":[]}";

	ok(image_layer_compression("application/vnd.oci.image.layer.v1.tar+gzip") == LAYER_GZIP &&
	    image_layer_compression("application/vnd.oci.image.layer.v1.tar+zstd") == LAYER_ZSTD &&
	    image_layer_compression("application/vnd.oci.image.layer.v1.tar") == LAYER_TAR &&
	    image_layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip") == LAYER_GZIP,
	    "image: layer media types");
	ok(image_layer_compression("application/vnd.oci.image.layer.v1.tar+bzip2") == LAYER_UNSUPPORTED &&
	    image_layer_compression(NULL) == LAYER_UNSUPPORTED,
	    "image: unknown layer media types");
	m = image_parse_manifest(idx, strlen(idx), "x", &e);
	ok(m == NULL && e.code == EX_DATAERR && strstr(e.msg, "image index"),
	    "image: an index is not a manifest (%s)", e.msg);
	m = image_parse_manifest(good, strlen(good), "x", &e);
	ok(m != NULL, "image: a manifest with no layers parses");
	json_decref(m);
	m = image_parse_manifest("[1]", 3, "x", &e);
	ok(m == NULL && e.code == EX_DATAERR, "image: a non-object is refused");
}

static void test_stamp(void)
{
	char target[PATH_MAX + 16], other[PATH_MAX + 64];
	struct vs_err e = { 0 };
	json_t *rec = json_pack("{s:s}", "digest", "sha256:00"), *got;
	cleanup_free char *sp = NULL;

	snprintf(target, sizeof target, "%s/out", tmpdir);
	snprintf(other, sizeof other, "%s/.out.tmp-abcdef", tmpdir);
	mkdir(target, 0755);
	ok(stamp_read(target) == NULL, "stamp: none yet");
	ok(stamp_write(target, rec, &e) == 0, "stamp: written (%s)", e.msg);
	got = stamp_read(target);
	ok(got && strcmp(json_string_value(json_object_get(got, "digest")),
	    "sha256:00") == 0, "stamp: read back while the target is the same");
	json_decref(got);
	sp = stamp_path(target);
	ok(sp && strstr(sp, "/.out.json"), "stamp: kept beside the target as .NAME.json");
	rmdir(target);
	mkdir(target, 0755);
	got = stamp_read(target);
	ok(got == NULL, "stamp: a target made again is not the one recorded");
	json_decref(got);
	mkdir(other, 0700);
	snprintf(other, sizeof other, "%s/.out.tmp-abcdef/x", tmpdir);
	close(open(other, O_CREAT | O_WRONLY, 0644));
	snprintf(other, sizeof other, "%s/.out.tmp-keep-me", tmpdir);
	close(open(other, O_CREAT | O_WRONLY, 0644));
	tree_remove_stale(tmpdir, "out");
	snprintf(other, sizeof other, "%s/.out.tmp-abcdef", tmpdir);
	ok(access(other, F_OK) < 0, "tree: a stale temporary tree is removed");
	snprintf(other, sizeof other, "%s/.out.tmp-keep-me", tmpdir);
	ok(access(other, F_OK) == 0, "tree: a name that only starts the same is kept");
	unlink(other);
	unlink(sp);
	rmdir(target);
	json_decref(rec);
	ok(path_valid_name("slicer-1") && path_valid_name("web_2.a") &&
	    !path_valid_name("") && !path_valid_name(".x") &&
	    !path_valid_name("-x") && !path_valid_name("a/b"),
	    "path: valid names");
}

/* ---- kernels ---- */

static void test_kernel(void)
{
	static unsigned char h[4096];
	struct kernel_info ki;
	struct kernel_banner b;
	struct vs_err e = { 0 };
	const char *text = "xx Linux version 6.1.0-56-cloud-amd64 (debian) #1";

	ok(kernel_vercmp("6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64") > 0,
	    "kernel: 6.1.0-10 is newer than 6.1.0-9");
	ok(kernel_vercmp("5.10.0-30", "6.1.0-1") < 0 &&
	    kernel_vercmp("6.1.0", "6.1.0") == 0 &&
	    kernel_vercmp("6.1.010", "6.1.9") > 0 &&
	    kernel_vercmp("6.1", "6.1.0") < 0,
	    "kernel: version order, not string order");

	/* a bzImage header: HdrS, protocol 2.15, 64-bit, version string */
	memset(h, 0, sizeof h);
	h[0x1f1] = 3;			/* setup sectors: code at 2048 */
	h[0x1f4] = 0x40;		/* syssize: 1024 bytes */
	memcpy(h + 0x202, "HdrS", 4);
	h[0x206] = 0x0f; h[0x207] = 0x02;
	h[0x20e] = 0x00; h[0x20f] = 0x02;	/* version at 0x400 */
	strcpy((char *)h + 0x400, "6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1");
	h[0x236] = 1;			/* XLF_KERNEL_64 */
	h[0x248] = 0x10;		/* payload at 2048 + 16 */
	h[0x24c] = 0x20;		/* 32 bytes, the size included */
	ok(kernel_identify(h, sizeof h, 3072, &ki, &e) == 0 &&
	    ki.form == KERNEL_BZIMAGE && strcmp(ki.arch, "amd64") == 0 &&
	    strcmp(ki.version, "6.1.0-56-cloud-amd64") == 0 &&
	    ki.payload_off == 2064 && ki.payload_len == 28,
	    "kernel: a bzImage, its version and payload (%s)", e.msg);
	ok(kernel_identify(h, sizeof h, 3000, &ki, &e) < 0 &&
	    e.code == EX_DATAERR && strstr(e.msg, "truncated bzImage"),
	    "kernel: a bzImage cut short is refused (%s)", e.msg);
	memset(h, 0, sizeof h);
	memcpy(h + 0x38, "ARM\x64", 4);
	ok(kernel_identify(h, sizeof h, 1 << 20, &ki, &e) == 0 &&
	    ki.form == KERNEL_IMAGE && strcmp(ki.arch, "arm64") == 0,
	    "kernel: an arm64 Image");
	memset(h, 0, sizeof h);
	memcpy(h, "MZ\0\0zimg", 8);
	h[8] = 0x00; h[9] = 0x02;	/* payload at 512 */
	h[12] = 100;			/* 100 bytes */
	memcpy(h + 24, "zstd", 5);
	ok(kernel_identify(h, sizeof h, 612, &ki, &e) == 0 &&
	    ki.form == KERNEL_ZBOOT && strcmp(ki.compression, "zstd") == 0 &&
	    ki.payload_off == 512 && ki.payload_len == 100,
	    "kernel: an EFI zboot image");
	ok(kernel_identify(h, sizeof h, 611, &ki, &e) < 0,
	    "kernel: a zboot image cut short is refused");
	memset(h, 0, sizeof h);
	memcpy(h, "\x7f" "ELF\x02\x01", 6);
	h[18] = 183;
	ok(kernel_identify(h, 64, 64, &ki, &e) == 0 && ki.form == KERNEL_ELF &&
	    strcmp(ki.arch, "arm64") == 0, "kernel: an arm64 ELF");
	ok(kernel_identify((const unsigned char *)"#!/bin/sh\n", 10, 10, &ki,
	    &e) < 0 && strstr(e.msg, "not a kernel"),
	    "kernel: a script is no kernel");

	/* the banner, found whole and across pieces of every size */
	for (size_t step = 1; step <= strlen(text); step++) {
		memset(&b, 0, sizeof b);
		for (size_t at = 0; at < strlen(text); at += step) {
			size_t n = strlen(text) - at < step ? strlen(text) - at : step;
			kernel_banner_feed(&b, text + at, n);
		}
		if (!b.found || strcmp(b.version, "6.1.0-56-cloud-amd64") != 0)
			break;
		if (step == strlen(text))
			ok(1, "kernel: the banner is found across pieces of any size");
	}
	if (!b.found || strcmp(b.version, "6.1.0-56-cloud-amd64") != 0)
		ok(0, "kernel: the banner is found across pieces of any size (got %s)",
		    b.found ? b.version : "nothing");
}

/* ---- vmstate: what a console log says ---- */

/* The QMP side of a scripted peer: answer each command read on c by the
 * script (one step per command): events and foreign answers come first,
 * and a line may come in two writes, as QEMU's may. */
static void qmp_peer_line(int c, const char *s)
{
	size_t n = strlen(s), half = n / 2;

	if (write(c, s, half) != (ssize_t)half)
		_exit(2);
	usleep(20000);
	if (write(c, s + half, n - half) != (ssize_t)(n - half))
		_exit(2);
}

static void qmp_peer(int l)
{
	char buf[4096], line[512];
	int c = accept(l, NULL, NULL);
	int step = 0;
	size_t have = 0;

	if (c < 0)
		_exit(2);
	qmp_peer_line(c, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
	for (;;) {
		char *nl;
		ssize_t got = read(c, buf + have, sizeof buf - have - 1);
		if (got <= 0)
			_exit(0);
		have += (size_t)got;
		buf[have] = '\0';
		while ((nl = strchr(buf, '\n')) != NULL) {
			json_t *j;
			const char *id;
			*nl = '\0';
			j = json_loads(buf, 0, NULL);
			id = json_string_value(json_object_get(j, "id"));
			memmove(buf, nl + 1, have - (size_t)(nl + 1 - buf) + 1);
			have = strlen(buf);
			switch (step++) {
			case 0:	/* qmp_capabilities: no id */
				qmp_peer_line(c, "{\"return\": {}}\n");
				break;
			case 1:	/* query-status: an event, another's answer, ours */
				qmp_peer_line(c, "{\"event\": \"STOP\", \"data\": {\"return\": 1}}\n");
				qmp_peer_line(c, "{\"return\": {\"running\": true, \"status\": \"running\"}, \"id\": \"vs-watchdog-cont\"}\n");
				snprintf(line, sizeof line, "{\"return\": {\"running\": false, \"status\": \"paused\"}, \"id\": \"%s\"}\n", id ? id : "");
				qmp_peer_line(c, line);
				break;
			case 2:	/* cont: an error */
				snprintf(line, sizeof line, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no way\"}, \"id\": \"%s\"}\n", id ? id : "");
				qmp_peer_line(c, line);
				break;
			case 3:	/* silence: the caller times out */
				break;
			default:
				_exit(0);
			}
			json_decref(j);
		}
	}
}

static void test_qmp(void)
{
	char dir[PATH_MAX], sock[PATH_MAX + 16], status[32] = "", why[64] = "";
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int l, s, st;
	pid_t pid;

	/* (a path longer than sun_path: reached through its directory) */
	snprintf(dir, sizeof dir, "%.1024s/%0200d", tmpdir, 0);
	mkdir(dir, 0700);
	snprintf(sock, sizeof sock, "%s/qmp.sock", dir);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	{
		int dfd = open(dir, O_PATH | O_DIRECTORY);
		snprintf(a.sun_path, sizeof a.sun_path, "/proc/self/fd/%d/qmp.sock", dfd);
		ok(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 1) == 0,
		    "qmp: a scripted peer listens");
		close(dfd);
	}
	pid = fork();
	if (pid == 0)
		qmp_peer(l);
	close(l);
	s = qmp_connect(sock, 500);
	ok(s >= 0, "qmp: connect through a path longer than sun_path, greeting split in two");
	ok(qmp_running(s, status, sizeof status) == 0 && strcmp(status, "paused") == 0,
	    "qmp: events and another's answer skipped, ours taken by its id (%s)", status);
	ok(qmp_execute(s, "cont", NULL, why, sizeof why) == -2 && strcmp(why, "no way") == 0,
	    "qmp: an error answer, with its description (%s)", why);
	errno = 0;
	int r = qmp_command(s, "stop"), err = errno;
	ok(r == -1 && err == ETIMEDOUT,
	    "qmp: no answer within the timeout: ETIMEDOUT (%s)", strerror(err));
	close(s);
	waitpid(pid, &st, 0);
	errno = 0;
	r = qmp_connect(sock, 500);
	err = errno;
	ok(r == -1 && err == ECONNREFUSED,
	    "qmp: nobody listening: ECONNREFUSED (%s)", strerror(err));
	unlink(sock);
	rmdir(dir);
}

static void test_vmstate(void)
{
	char *con = tmp_path("console.log"), line[160];
	FILE *f = fopen(con, "w");

	ok(f != NULL, "a console log");
	if (f == NULL)
		return;
	fputs("[    1.0] booting\n", f);
	fputc('\0', f);	/* (guests print NULs) */
	fputs("[    2.5] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n", f);
	fputs("[    2.6] reboot: Power down\n", f);
	fclose(f);
	ok(vmstate_console_says(con, "reboot: Power down"),
	    "a line after a NUL is found");
	ok(!vmstate_console_says(con, "Restarting system"), "an absent one is not");
	ok(vmstate_panic(con, line, sizeof line) &&
	    strcmp(line, "Kernel panic - not syncing: VFS: Unable to mount root fs") == 0,
	    "the panic line, without its line end: %s", line);
	ok(!vmstate_console_says("/nonexistent/console.log", "x"),
	    "no log, nothing said");
	unlink(con);
	free(con);
}

/* The file ino of the image at path, read back whole into out (cap). */
static size_t ext4_read_back(const char *path, ext2_ino_t ino,
    unsigned char *out, size_t cap)
{
	ext2_filsys fs;
	ext2_file_t f;
	unsigned got = 0;
	size_t len = 0;

	if (ext2fs_open(path, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs) != 0)
		return (size_t)-1;
	if (ext2fs_file_open(fs, ino, 0, &f) == 0) {
		while (len < cap && ext2fs_file_read(f, out + len,
		    (unsigned)(cap - len < 65536 ? cap - len : 65536), &got) == 0 &&
		    got > 0)
			len += got;
		ext2fs_file_close(f);
	}
	ext2fs_close_free(&fs);
	return len;
}

static void test_ext4w_paths(void)
{
	static const char *const plain[] = { "/etc", "/etc/ssh", "/home/deb/.ssh",
	    "/a/..b/c.", NULL };
	static const char *const not_plain[] = { "", "/", "etc", "/etc/", "//etc",
	    "/etc//ssh", "/home/a/.", "/home/x/../../etc", "/./etc", "/..", NULL };

	for (int i = 0; plain[i]; i++)
		ok(ext4w_plain_path(plain[i]), "'%s' is a plain path", plain[i]);
	for (int i = 0; not_plain[i]; i++)
		ok(!ext4w_plain_path(not_plain[i]), "'%s' is not a plain path",
		    not_plain[i]);
}

static void test_ext4w(void)
{
	enum { SIZE = 9 << 20 };
	static unsigned char want[SIZE], got[SIZE + 4096];
	char img[PATH_MAX + 16], cmd[PATH_MAX + 96];
	struct vs_err e = { 0 };
	struct ext4w w;
	struct ext4w_file f;
	struct ext4w_attr a = { .perm = 0640, .uid = 1000, .gid = 100,
	    .mtime = { 1700000000, 5 } };
	ext2_ino_t ino, big, dir, after_ino = 0;
	blk64_t before, after;
	uint64_t off = 0;
	int fd, ok_writes = 1;
	unsigned seed = 7;

	snprintf(img, sizeof img, "%s/w.img", tmpdir);
	fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)5 << 30) < 0 ||
	    ext4w_mkfs(img, NULL, NULL, &e) < 0 ||
	    ext4w_open(&w, img, fd, 1700000000, false, &e) < 0) {
		ok(0, "ext4w: an empty filesystem: %s", e.msg);
		if (fd >= 0)
			close(fd);
		unlink(img);
		return;
	}
	/* a file written in pieces of odd sizes at odd offsets, rising, with
	 * holes between and blocks of zeros inside: what a tar's sparse
	 * entries and libarchive's blocks give */
	memset(want, 0, sizeof want);
	ok(ext4w_make(&w, EXT2_ROOT_INO, "f", S_IFREG, NULL, 0, &ino) == 0 &&
	    ext4w_file_begin(&w, ino, &f) == 0, "ext4w: a file begun");
	while (off < SIZE - 70000) {
		size_t n = 1 + (seed = seed * 1103515245 + 12345) % 70000;
		unsigned char buf[70000];
		for (size_t i = 0; i < n; i++)
			buf[i] = (seed >> 8) % 5 ? (unsigned char)(i * 31 + seed) : 0;
		if (seed % 7 == 0)
			memset(buf, 0, n);	/* blocks of zeros */
		memcpy(want + off, buf, n);
		if (ext4w_file_write(&f, off, buf, n) < 0)
			ok_writes = 0;
		off += n + (seed % 3 == 0 ? (seed >> 4) % 20000 : 0);
	}
	ok(ok_writes && ext4w_file_end(&f) == 0 &&
	    ext4w_set_attr(&w, ino, &a, SIZE) == 0,
	    "ext4w: written in odd pieces, with holes, up to byte %llu",
	    (unsigned long long)off);
	/* a big file, then removed: its blocks and inode come back */
	before = ext2fs_free_blocks_count(w.fs->super);
	ok(ext4w_make(&w, EXT2_ROOT_INO, "d", S_IFDIR, NULL, 0, &dir) == 0 &&
	    ext4w_make(&w, dir, "big", S_IFREG, NULL, 0, &big) == 0 &&
	    ext4w_file_begin(&w, big, &f) == 0 &&
	    ext4w_file_write(&f, 0, want, SIZE) == 0 && ext4w_file_end(&f) == 0 &&
	    ext4w_link(&w, EXT2_ROOT_INO, "other-name", big) == 0,
	    "ext4w: a directory, a big file in it, a second name for it");
	ok(ext4w_remove(&w, EXT2_ROOT_INO, "d") == 0 &&
	    ext4w_lookup(&w, EXT2_ROOT_INO, "d", &dir) == 1 &&
	    ext4w_lookup(&w, EXT2_ROOT_INO, "other-name", &big) == 0,
	    "ext4w: the directory removed; the file lives on by its other name");
	ok(ext4w_remove(&w, EXT2_ROOT_INO, "other-name") == 0 &&
	    ext4w_remove(&w, EXT2_ROOT_INO, "nosuch") == 0,
	    "ext4w: its last name removed; a missing one is no error");
	after = ext2fs_free_blocks_count(w.fs->super);
	ok(after == before, "ext4w: every block it took is free again (%llu, %llu)",
	    (unsigned long long)before, (unsigned long long)after);
	/* a directory of entries removed, then a file written at once: the
	 * directory's block, freed, must not come back over the file's data */
	{
		ext2_ino_t d2, x, g;
		int made = ext4w_make(&w, EXT2_ROOT_INO, "d2", S_IFDIR, NULL, 0, &d2);
		for (int i = 0; made == 0 && i < 3; i++) {
			char n[8];
			snprintf(n, sizeof n, "e%d", i);
			made = ext4w_make(&w, d2, n, S_IFREG, NULL, 0, &x);
		}
		ok(made == 0 && ext4w_remove(&w, EXT2_ROOT_INO, "d2") == 0 &&
		    ext4w_make(&w, EXT2_ROOT_INO, "g", S_IFREG, NULL, 0, &g) == 0 &&
		    ext4w_file_begin(&w, g, &f) == 0 &&
		    ext4w_file_write(&f, 0, want + 4096, 262144) == 0 &&
		    ext4w_file_end(&f) == 0 && ext4w_set_attr(&w, g, &a, 262144) == 0,
		    "ext4w: a directory of files removed, a file written after");
		after_ino = g;
	}
	ok(ext4w_close(&w) == 0, "ext4w: closed: %s", e.msg);
	close(fd);
	ok(ext4_read_back(img, ino, got, sizeof got) == SIZE &&
	    memcmp(got, want, SIZE) == 0, "ext4w: the file reads back as written");
	ok(ext4_read_back(img, after_ino, got, sizeof got) == 262144 &&
	    memcmp(got, want + 4096, 262144) == 0,
	    "ext4w: the file written after the removal reads back as written");
	snprintf(cmd, sizeof cmd, "e2fsck -fn '%s' > /dev/null 2>&1", img);
	ok(system(cmd) == 0, "ext4w: e2fsck finds the filesystem clean");
	unlink(img);
}

/* gzip of len bytes of p appended to out (one member). */
static size_t gzip_member(const unsigned char *p, size_t len, unsigned char *out,
    size_t cap)
{
	z_stream z;
	size_t n;

	memset(&z, 0, sizeof z);
	deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
	z.next_in = (Bytef *)(uintptr_t)p;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	deflate(&z, Z_FINISH);
	n = cap - z.avail_out;
	deflateEnd(&z);
	return n;
}

/* Inflate in (len bytes), piece bytes at a time, into out; the status of
 * the run and of inflater_finish, the bytes made in *made. */
static int inflate_all(const unsigned char *in, size_t len, size_t piece,
    unsigned char *out, size_t cap, size_t *made, struct vs_err *e)
{
	struct inflater *z = inflater_new(e);
	size_t done = 0;
	int r = 0;

	*made = 0;
	if (z == NULL)
		return -1;
	while (r >= 0 && done < len) {
		const unsigned char *p = in + done;
		size_t n = len - done < piece ? len - done : piece, left = n, o;
		do {
			r = inflater_run(z, &p, &left, out + *made, cap - *made, &o, e);
			*made += o;
		} while (r == 0 && left > 0 && o > 0);
		done += n - left;
		if (r == 1)
			break;
		if (left == n && r == 0)
			break;	/* (no progress: out is full) */
	}
	if (r >= 0)
		r = inflater_finish(z, e);
	inflater_free(z);
	return r;
}

static void test_inflate(void)
{
	static unsigned char plain[300000], gz[700000], out[700000];
	struct vs_err e = { 0 };
	size_t a, b, n, made;

	for (size_t i = 0; i < sizeof plain; i++)
		plain[i] = (unsigned char)(i % 251 < 100 ? i * 7 : i / 1000);
	a = gzip_member(plain, sizeof plain, gz, sizeof gz);
	b = gzip_member(plain, 1000, gz + a, sizeof gz - a);
	n = a + b;
	for (int impl = 0; impl < 2; impl++) {
		const char *name;
		struct inflater *z;
		if (impl)
			setenv("VS_INFLATE", "zlib", 1);
		z = inflater_new(&e);
		name = z ? inflater_name(z) : "?";
		inflater_free(z);
		if (impl)
			ok(strcmp(name, "zlib") == 0, "VS_INFLATE=zlib takes zlib");
		for (size_t piece = 1; piece <= n; piece = piece < 10 ? piece + 3 :
		    piece * 17) {
			memset(&e, 0, sizeof e);
			int r = inflate_all(gz, n, piece, out, sizeof out, &made, &e);
			if (r != 0 || made != sizeof plain + 1000 ||
			    memcmp(out, plain, sizeof plain) != 0 ||
			    memcmp(out + sizeof plain, plain, 1000) != 0) {
				ok(0, "%s: two members, %zu bytes at a time: %s", name,
				    piece, e.msg);
				break;
			}
		}
		ok(1, "%s: two members, in pieces of any size", name);
		memset(&e, 0, sizeof e);
		ok(inflate_all(gz, n - 5, 4096, out, sizeof out, &made, &e) < 0 &&
		    e.code == EX_DATAERR && strstr(e.msg, "truncated"),
		    "%s: a stream cut short is refused: %s", name, e.msg);
		memset(&e, 0, sizeof e);
		ok(inflate_all((const unsigned char *)"hello, world", 12, 4096, out,
		    sizeof out, &made, &e) < 0 && strstr(e.msg, "not gzip"),
		    "%s: not gzip is refused: %s", name, e.msg);
		memcpy(gz + n, "\0\0\0\0", 4);
		memset(&e, 0, sizeof e);
		ok(inflate_all(gz, n + 4, 4096, out, sizeof out, &made, &e) == 0 &&
		    made == sizeof plain + 1000,
		    "%s: zeros after the last member are ignored, as gzip -d does", name);
		gz[a - 6] ^= 0x55;	/* the first member's CRC */
		memset(&e, 0, sizeof e);
		ok(inflate_all(gz, n, 4096, out, sizeof out, &made, &e) < 0 &&
		    e.code == EX_DATAERR, "%s: a bad checksum is refused: %s", name,
		    e.msg);
		gz[a - 6] ^= 0x55;
	}
	unsetenv("VS_INFLATE");
}

static void test_sshkey(void)
{
	static const char ed[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOUlSESAf6up+AioSZ87A/w+IQxlDwx+mqLo3nor/dge me@h";
	static const char rsa[] = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC+KuU5kLn4jGw6SicW42kwq444ff8s+J58BtFM4nzyelLMMAI8mllFVxffggtTUitdufK9U2+WehAQYMg4FFNWAsi562yJ3ZjgtwSMGITSX7eL/oXDIN22wsFlIxO/O7utJpRaaowoY2FD3C4XMmp0AyQETaHWoJsg6iETm84MuQ== r";
	struct sshkey k;
	struct sshkeys ks = { 0 };
	struct vs_err e = { 0 };
	size_t seen = 0;
	char *line;
	int rc;

	rc = sshkey_parse(ed, "t", &k, &e);
	ok(rc == 0 && strcmp(k.type, "ssh-ed25519") == 0 && strcmp(k.comment, "me@h") == 0 &&
	    strcmp(k.fp, "SHA256:pI5Z5pmuWy7EzN25mEUsse3oLUkTBVW1FN3GmDo1kTc") == 0,
	    "an ed25519 key, with ssh-keygen -l's fingerprint: %s", rc == 0 ? k.fp : e.msg);
	line = rc == 0 ? sshkey_line(&k) : NULL;
	ok(line && strcmp(line, ed) == 0, "its line, as it came");
	free(line);
	if (rc == 0)
		sshkey_free(&k);
	rc = sshkey_parse(rsa, "t", &k, &e);
	ok(rc == 0 && strcmp(k.fp, "SHA256:ksr2ZJv2vhGwwewDct3/hoYo7bZJLNLc1ugGZx3JXeo") == 0,
	    "an RSA key, its fingerprint");
	if (rc == 0)
		sshkey_free(&k);
	ok(sshkey_parse("  # a comment", "t", &k, &e) == 1 && sshkey_parse("", "t", &k, &e) == 1,
	    "blank lines and comments are no keys");
	static const struct { const char *line, *why; } bads[] = {
		{ "ssh-ed25519", "not an OpenSSH public key" },
		{ "ssh-ed25519 AAAA!", "not an OpenSSH public key" },
		{ "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOUlSESAf6up+AioSZ87A/w+IQxlDwx+mqLo3nor/dge",
		  "does not hold a ssh-rsa key" },
		{ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "does not hold" },
		{ "-----BEGIN OPENSSH PRIVATE KEY-----", "a private key" },
		{ "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "part of a private key" },
		{ "ssh-ed25519-cert-v01@openssh.com AAAA", "not an OpenSSH public key" },
		{ "from=\"x\" ssh-ed25519 AAAA", "not an OpenSSH public key" },
	};
	for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
		memset(&e, 0, sizeof e);
		rc = sshkey_parse(bads[i].line, "f:1", &k, &e);
		ok(rc == -1 && e.code == EX_DATAERR && strstr(e.msg, bads[i].why) &&
		    strncmp(e.msg, "f:1: ", 5) == 0 && (i < 4 || !strstr(e.msg, bads[i].line)),
		    "bad key %zu refused, its text not repeated: %s", i, e.msg);
	}
	static const char two[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOUlSESAf6up+AioSZ87A/w+IQxlDwx+mqLo3nor/dge a\n\n# c\n"
	    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOUlSESAf6up+AioSZ87A/w+IQxlDwx+mqLo3nor/dge b\r\n";
	rc = sshkeys_add_text(&ks, two, sizeof two - 1, "x", &seen, &e);
	ok(rc == 0 && ks.n == 1 && seen == 2 && strcmp(ks.k[0].comment, "a") == 0,
	    "a list: repeats kept once, CRLF taken: %s", rc ? e.msg : "");
	rc = sshkeys_add_text(&ks, "\nnot a key\n", 11, "keys.pub", &seen, &e);
	ok(rc == -1 && strstr(e.msg, "keys.pub:2: not an OpenSSH public key"),
	    "a bad line is named by its number: %s", e.msg);
	sshkeys_free(&ks);
}

int main(int argc, char *argv[])
{
	const char *t = getenv("TMPDIR");

	if (argc > 1)
		fixtures = argv[1];
	snprintf(tmpdir, sizeof tmpdir, "%s/test-common.XXXXXX", t ? t : "/tmp");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 99;
	}
	test_size();
	test_doc();
	test_config();
	test_sshkey();
	test_atomic();
	test_atomic_keep();
	test_lock();
	test_path();
	test_progress();
	test_clone();
	test_err_run();
	test_ref();
	test_layout();
	test_creds();
	test_strmap();
	test_rootless();
	test_tree();
	test_image();
	test_stamp();
	test_kernel();
	test_vmstate();
	test_qmp();
	test_inflate();
	test_ext4w_paths();
	test_ext4w();
	if (rmdir(tmpdir) < 0)
		diag("%s left behind: %s", tmpdir, strerror(errno));
	printf("1..%d\n", tests);
	if (failures)
		diag("%d of %d failed", failures, tests);
	return failures ? 1 : 0;
}
