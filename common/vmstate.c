/* vmstate.c: the state of vmrun's VMs, from their run directories. */
#include "vmstate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "lock.h"
#include "path.h"

const char *vm_state_name(enum vm_state s)
{
	switch (s) {
	case VM_RUNNING: return "running";
	case VM_CRASHED: return "crashed";
	default: return "stopped";
	}
}

/* The last n - 1 bytes of the console log into buf, as a string (a NUL
 * the guest printed made a space); false when there is nothing. */
static bool console_tail(const char *console, char *buf, size_t n)
{
	int fd = open(console, O_RDONLY | O_CLOEXEC);
	off_t end;
	ssize_t got;

	if (fd < 0)
		return false;
	end = lseek(fd, 0, SEEK_END);
	got = end < 0 ? -1 : pread(fd, buf, n - 1,
	    end > (off_t)n - 1 ? end - (off_t)n + 1 : 0);
	close(fd);
	if (got <= 0)
		return false;
	for (ssize_t i = 0; i < got; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	buf[got] = '\0';
	return true;
}

bool vmstate_console_says(const char *console, const char *what)
{
	char buf[4096];

	return console_tail(console, buf, sizeof buf) && strstr(buf, what);
}

bool vmstate_panic(const char *console, char *line, size_t n)
{
	char buf[8192], *p, *found = NULL;

	if (!console_tail(console, buf, sizeof buf))
		return false;
	for (p = buf; (p = strstr(p, "Kernel panic - not syncing")) != NULL; p++)
		found = p;
	if (found == NULL)
		return false;
	if (line) {
		size_t l = strcspn(found, "\r\n");
		if (l >= n)
			l = n - 1;
		memcpy(line, found, l);
		line[l] = '\0';
	}
	return true;
}

/* The pid of the process holding a lock on the pid file at path (QEMU
 * locks its pid file while it runs), 0 when none does, -1 when there is
 * no pid file. */
static pid_t locked_pid(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char buf[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	long pid;

	if (fd < 0)
		return -1;
	/* (F_GETLK on a read-only descriptor still reports others' locks) */
	if (fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type == F_UNLCK) {
		close(fd);
		return 0;
	}
	n = pread(fd, buf, sizeof buf - 1, 0);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		pid = strtol(buf, NULL, 10);
		if (pid > 0)
			return (pid_t)pid;
	}
	return fl.l_pid > 0 ? fl.l_pid : 1;
}

int vmstate_get(const char *rundir, const char *name, struct vm_info *vi,
    struct vs_err *e)
{
	cleanup_free char *rec = NULL, *pidf = NULL, *con = NULL;
	struct stat st;
	pid_t pid;

	memset(vi, 0, sizeof *vi);
	if (path_check_name("VM", name, e) < 0)
		return -1;
	if ((vi->name = strdup(name)) == NULL ||
	    asprintf(&vi->dir, "%s/%s", rundir, name) < 0 ||
	    asprintf(&rec, "%s/vm.json", vi->dir) < 0 ||
	    asprintf(&pidf, "%s/qemu.pid", vi->dir) < 0 ||
	    asprintf(&con, "%s/console.log", vi->dir) < 0) {
		vmstate_free(vi);
		return vs_error(e, EX_OSERR, ENOMEM, "vm state");
	}
	if (stat(vi->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		vs_error(e, EX_NOINPUT, 0, "no VM called %s here (%s)", name,
		    vi->dir);
		vmstate_free(vi);
		return -1;
	}
	vi->rec = json_load_file(rec, 0, NULL);
	if (!json_is_object(vi->rec)) {
		json_decref(vi->rec);
		vi->rec = json_object();
	}
	pid = locked_pid(pidf);
	if (pid > 0) {
		vi->state = VM_RUNNING;
		vi->pid = pid;
	} else if (pid == 0) {
		vi->state = VM_CRASHED;
		snprintf(vi->why, sizeof vi->why,
		    "QEMU ended without cleaning up (killed?)");
	} else if (vmstate_panic(con, vi->why, sizeof vi->why)) {
		vi->state = VM_CRASHED;
	} else {
		const char *was = json_string_value(json_object_get(vi->rec,
		    "state"));
		vi->state = was && strcmp(was, "crashed") == 0 ? VM_CRASHED :
		    VM_STOPPED;
		if (vi->state == VM_CRASHED)
			snprintf(vi->why, sizeof vi->why, "it crashed when last run");
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char **vmstate_names(const char *rundir, struct vs_err *e)
{
	DIR *d = opendir(rundir);
	struct dirent *de;
	char **v;
	size_t n = 0, cap = 8;

	v = calloc(cap + 1, sizeof *v);
	if (v == NULL) {
		if (d)
			closedir(d);
		return vs_error(e, EX_OSERR, ENOMEM, "vm state"), NULL;
	}
	if (d == NULL) {
		if (errno == ENOENT)
			return v;
		vs_error(e, EX_IOERR, errno, "%s", rundir);
		free(v);
		return NULL;
	}
	while ((de = readdir(d)) != NULL) {
		if (!path_valid_name(de->d_name))
			continue;
		if (n == cap) {
			char **nv = realloc(v, ((cap *= 2) + 1) * sizeof *v);
			if (nv == NULL)
				goto nomem;
			v = nv;
		}
		if ((v[n] = strdup(de->d_name)) == NULL)
			goto nomem;
		v[++n] = NULL;
	}
	closedir(d);
	qsort(v, n, sizeof *v, cmp_str);
	return v;
nomem:
	closedir(d);
	vmstate_free_names(v);
	return vs_error(e, EX_OSERR, ENOMEM, "vm state"), NULL;
}

void vmstate_free_names(char **names)
{
	if (names == NULL)
		return;
	for (char **p = names; *p; p++)
		free(*p);
	free(names);
}

int vmstate_holder(const char *rundir, const char *disk, struct vm_info *vi,
    struct vs_err *e)
{
	char **names = vmstate_names(rundir, e);
	struct stat want;
	int found = 0;

	if (names == NULL)
		return -1;
	if (stat(disk, &want) < 0) {
		vmstate_free_names(names);
		return 0;
	}
	for (char **p = names; *p && !found; p++) {
		struct vs_err ignore;
		const char *d;
		struct stat st;

		if (vmstate_get(rundir, *p, vi, &ignore) < 0)
			continue;
		d = json_string_value(json_object_get(vi->rec, "disk"));
		if (vi->state == VM_RUNNING && d && stat(d, &st) == 0 &&
		    st.st_dev == want.st_dev && st.st_ino == want.st_ino)
			found = 1;
		else
			vmstate_free(vi);
	}
	vmstate_free_names(names);
	return found;
}

void vmstate_free(struct vm_info *vi)
{
	free(vi->name);
	free(vi->dir);
	json_decref(vi->rec);
	memset(vi, 0, sizeof *vi);
}

int vmstate_who(int fd, const char *path, char *who, size_t n)
{
	struct vm_info vi;
	struct vs_err ignore;
	int r = vmstate_holder(VM_RUN_DIR, path, &vi, &ignore);

	if (r > 0) {
		snprintf(who, n, "VM %s (QEMU pid %ld)", vi.name, (long)vi.pid);
		vmstate_free(&vi);
		return 1;
	}
	if (lock_conflict(fd, 0, 0) > 0) {
		snprintf(who, n, "another program (it holds a lock on it, as a running QEMU does)");
		return 1;
	}
	return 0;
}
