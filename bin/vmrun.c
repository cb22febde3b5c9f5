/* vmrun: start a VM from a kernel and a cloned disk with QEMU, stop it,
 * list the workspace's VMs.  State lives in run/NAME/ (common/vmstate.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <jansson.h>

#include "atomic.h"
#include "cleanup.h"
#include "config.h"
#include "doc.h"
#include "err.h"
#include "fe.h"
#include "kernel.h"
#include "lock.h"
#include "path.h"
#include "qmp.h"
#include "run.h"
#include "size.h"
#include "stamp.h"
#include "stop.h"
#include "vmstate.h"

#define SYNOPSIS "vmrun [-dqV] [-A auto|kvm|hvf|tcg] [-C DIR] [-c FILE] [-g GROUP] [-n NAME] [-t SECS] [--cpus N] [--mem SIZE] [--kernel K] [--initrd I] [--disk D] [-a ARGS] [--allow-base]\n       vmrun [-C DIR] [-t SECS] stop NAME\n       vmrun [-C DIR] resume NAME\n       vmrun [-C DIR] ls\n       vmrun [-C DIR] [-c FILE] config\n       vmrun check-name NAME..."
#define DEFAULT_GROUP "slicer"
#define PROBE_SECS 3

enum { OPT_CPUS = 256, OPT_MEM, OPT_KERNEL, OPT_INITRD, OPT_DISK,
	OPT_ALLOW_BASE };

struct opts {
	const char *dir, *config, *group, *name, *accel, *mem, *kernel,
	    *initrd, *disk, *args;
	long cpus, timeout;
	bool detach, quiet, allow_base, start_only;
};

/* What a VM is started from and with. */
struct vm {
	char *name, *kernel, *initrd, *disk, *rundir;
	const char *arch;		/* amd64, 386, arm64 */
	const char *accel;		/* kvm, hvf, tcg */
	char why[256];			/* why that accel */
	long cpus;
	uint64_t mem;
	int port;			/* host port forwarded to the guest's 22 */
	char *append;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: %s\n", SYNOPSIS);
	fputs("Start a VM with QEMU from a kernel and a disk (the pipeline document's\n"
	    "kernel and disk sections, or --kernel and --disk), stop it, list VMs.\n"
	    "\n"
	    "  -A, --accel MODE   auto (default), kvm, hvf or tcg; VMRUN_ACCEL too\n"
	    "  -a, --append ARGS  more kernel command-line arguments\n"
	    "      --allow-base   boot a base image itself (every clone inherits it)\n"
	    "  -C, --directory DIR  the workspace (default: the current directory)\n"
	    "  -c, --config FILE  slicer-mac.yaml to read (default: DIR/slicer-mac.yaml)\n"
	    "      --cpus N       virtual CPUs (default: the group's vcpu, or 2)\n"
	    "  -d, --detach       return once QEMU is up (default: wait for poweroff)\n"
	    "      --disk D       the VM's disk (default: the document's disk.path)\n"
	    "  -g, --group GROUP  host group for vcpu and ram_gb (default: slicer)\n"
	    "  -h, --help         this help\n"
	    "      --initrd I     the initrd (default: the document's kernel.initrd)\n"
	    "      --kernel K     the kernel (default: the document's kernel.path)\n"
	    "      --mem SIZE     memory, like 2G or 512M (default: the group's ram_gb)\n"
	    "  -n, --name NAME    the VM's name (default: the disk's name without .img)\n"
	    "  -q, --quiet        no console on stderr, no notes\n"
	    "  -t, --timeout SECS stop: how long to wait for a poweroff (default 30)\n"
	    "  -V, --version      print the version\n"
	    "\n"
	    "  stop NAME          ACPI power-down, wait, then kill\n"
	    "  resume NAME        resume a guest left paused (cont over QMP)\n"
	    "  ls                 one JSON line per VM: its state, pid, disk, ports,\n"
	    "                     and whether its guest is paused\n"
	    "  config             the configuration, checked, as one JSON object\n"
	    "  check-name NAME... whether each NAME follows the name rule of VMs,\n"
	    "                     groups and snapshot tags (for scripts)\n", f);
}

/* --- small helpers ---------------------------------------------------- */

static void nap_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&t, NULL);
}

static const char *host_arch(void)
{
	static struct utsname u;

	if (uname(&u) < 0)
		return "";
	if (strcmp(u.machine, "x86_64") == 0)
		return "amd64";
	if (strcmp(u.machine, "aarch64") == 0)
		return "arm64";
	return u.machine;
}

/* Close every descriptor from `from` up (doas's closefrom): QEMU inherits
 * nothing of ours (locks, the document). */
static void close_stray(int from)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0)
		return;
#endif
	for (int fd = from; fd < 65536; fd++)
		close(fd);
}

/* A free TCP port on 127.0.0.1 (the kernel's choice), or -1. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof a;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (s < 0)
		return -1;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(s, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(s);
	return port;
}

/* --- QMP --------------------------------------------------------------- */

/* Connect to the QMP socket of the run directory dir: the socket, or -1. */
static int qmp_open(const char *dir, int timeout_ms)
{
	cleanup_free char *sock = NULL;

	if (asprintf(&sock, "%s/qmp.sock", dir) < 0) {
		sock = NULL;
		return -1;
	}
	return qmp_connect(sock, timeout_ms);
}

/* End QEMU, pid, when it is not ending by itself within a second (or at
 * once after a stop signal), and reap it: *status is how it ended.  Its pid
 * file, which a killed QEMU leaves, goes too. */
static void qemu_reap(pid_t pid, const char *pidf, bool now, int *status)
{
	*status = 1 << 8;	/* (if it cannot be reaped: SIGCHLD ignored) */
	for (int i = 0;; i++) {
		pid_t w = waitpid(pid, status, WNOHANG);
		if (w == pid || (w < 0 && errno != EINTR))
			break;
		if (now || stop_signal || i == 50)
			kill(pid, SIGKILL);
		nap_ms(20);
	}
	if (pidf)
		unlink(pidf);
}

/* Wait until QEMU, pid, has set the VM up: its main loop answers the
 * qmp_capabilities sent on the connection made before it started (QMP's
 * greeting alone comes earlier, from the monitor's own thread).  0 when it
 * is up; -1 when it is not, QEMU ended and reaped (how, in *status), or
 * when a stop signal came (QEMU killed, *status -1). */
static int qmp_ready(int c, pid_t pid, const char *pidf, int *status)
{
	static const char caps[] = "{\"execute\":\"qmp_capabilities\"}\n";
	char buf[8192];
	size_t have = 0;
	bool greeted = false;

	for (;;) {
		struct pollfd p = { .fd = c, .events = POLLIN };
		int r = poll(&p, 1, 100);

		if (stop_signal) {
			qemu_reap(pid, pidf, true, status);
			*status = -1;
			return -1;
		}
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0) {
			pid_t w = waitpid(pid, status, WNOHANG);
			if (w == pid)
				return -1;
			if (w < 0 && errno != EINTR)
				break;	/* (not ours to reap: SIGCHLD ignored) */
			continue;
		}
		ssize_t n = read(c, buf + have, sizeof buf - 1 - have);
		if (n <= 0)
			break;		/* QEMU closed it: it is ending */
		have += (size_t)n;
		buf[have] = '\0';
		if (!greeted && strstr(buf, "\"QMP\"") && strchr(buf, '\n')) {
			greeted = true;
			have = 0;
			if (write(c, caps, sizeof caps - 1) != (ssize_t)sizeof caps - 1)
				break;
		} else if (greeted && strstr(buf, "\"return\"")) {
			return 0;
		} else if (greeted && strstr(buf, "\"error\"")) {
			break;
		}
		if (have > sizeof buf / 2) {
			memmove(buf, buf + have - 64, 64);
			have = 64;
		}
	}
	/* QEMU closed QMP (it is ending), or said something else than
	 * expected: it is not up, and does not stay */
	qemu_reap(pid, pidf, false, status);
	return -1;
}

/* --- accelerator --------------------------------------------------------- */

/* Where a probe's answer is kept for this boot of the host. */
static char *probe_cache(void)
{
	char boot[64] = "", *p = NULL;
	const char *base = getenv("XDG_RUNTIME_DIR");
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd >= 0) {
		n = read(fd, boot, sizeof boot - 1);
		close(fd);
		boot[n > 0 ? n : 0] = '\0';
		boot[strcspn(boot, "\n")] = '\0';
	}
	if (!boot[0])
		return NULL;
	if (base && *base) {
		if (asprintf(&p, "%s/vmstrap-kvm-%s", base, boot) < 0)
			return NULL;
	} else if (asprintf(&p, "/tmp/vmstrap-kvm-%u-%s", (unsigned)geteuid(),
	    boot) < 0)
		return NULL;
	return p;
}

/* Does /dev/kvm really run a guest?  Its existence says little: under
 * nested virtualisation it can be there and still hang a Linux guest in
 * early boot.  So boot the kernel itself under KVM, with no disk, and
 * wait (PROBE_SECS at most) for the first line the kernel proper prints.
 * 1 yes, 0 no, with why filled in. */
static int kvm_probe(const char *qemu, const struct vm *v, char *why,
    size_t n)
{
	cleanup_free char *cache = probe_cache();
	char buf[4096], seen[8192] = "";
	size_t nseen = 0;
	int p[2], ok = 0, fd;
	bool ended = false;
	pid_t pid;
	double end;

	/* (the cache may sit in /tmp: only a file of our own is believed,
	 * and a link there is never followed) */
	if (cache && (fd = open(cache, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
		char line[256];
		struct stat st;
		ssize_t got = -1;
		if (fstat(fd, &st) == 0 && st.st_uid == geteuid() &&
		    S_ISREG(st.st_mode))
			got = read(fd, line, sizeof line - 1);
		close(fd);
		if (got > 2 && (line[0] == '0' || line[0] == '1')) {
			line[got] = '\0';
			line[strcspn(line, "\n")] = '\0';
			line[200] = '\0';
			snprintf(why, n, "%.200s (probed earlier this boot)", line + 2);
			return line[0] == '1';
		}
	}
	if (pipe2(p, O_CLOEXEC) < 0)
		return snprintf(why, n, "cannot probe /dev/kvm: %s", strerror(errno)), 0;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return snprintf(why, n, "cannot probe /dev/kvm: %s", strerror(errno)), 0;
	}
	if (pid == 0) {
		const bool arm = strcmp(v->arch, "arm64") == 0;
		int null = open("/dev/null", O_RDWR);
		setpgid(0, 0);	/* (a Ctrl-C is vmrun's, not the probe's) */
		dup2(null, 0);
		dup2(p[1], 1);
		dup2(null, 2);
		close_stray(3);
		execl(qemu, qemu, "-accel", "kvm", "-M", arm ? "virt" : "q35",
		    "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
		    "-no-user-config", "-display", "none", "-no-reboot",
		    "-serial", "stdio", "-kernel", v->kernel, "-append",
		    arm ? "earlycon console=ttyAMA0 panic=-1" :
		    "earlyprintk=serial,ttyS0,115200 console=ttyS0 panic=-1",
		    (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	end = run_clock() + PROBE_SECS;
	for (;;) {
		struct pollfd pfd = { p[0], POLLIN, 0 };
		double left = end - run_clock();
		ssize_t got;
		if (left <= 0 || stop_signal)
			break;
		if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		got = read(p[0], buf, sizeof buf);
		if (got <= 0) {
			ended = true;
			break;
		}
		if (nseen + (size_t)got >= sizeof seen) {
			size_t keep = sizeof seen / 2;
			memmove(seen, seen + nseen - keep, keep);
			nseen = keep;
		}
		memcpy(seen + nseen, buf, (size_t)got);
		nseen += (size_t)got;
		seen[nseen] = '\0';
		if (strstr(seen, "Linux version")) {
			ok = 1;
			break;
		}
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(p[0]);
	if (ok)
		snprintf(why, n, "/dev/kvm booted a test kernel");
	else if (ended)
		snprintf(why, n,
		    "/dev/kvm is there but QEMU with KVM failed before a test kernel printed anything");
	else
		snprintf(why, n,
		    "/dev/kvm is there but did not boot a test kernel within %d s (nested virtualisation?)",
		    PROBE_SECS);
	if (stop_signal)
		return 0;	/* (interrupted: no answer to keep) */
	if (cache && (fd = open(cache, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
	    O_CLOEXEC, 0644)) >= 0) {
		struct stat st;
		char line[300];
		int len = snprintf(line, sizeof line, "%d %s\n", ok, why);
		if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && len > 0 &&
		    write(fd, line, (size_t)len) < 0)
			unlink(cache);
		close(fd);
	}
	return ok;
}

/* Choose v->accel: an explicit -A wins, then VMRUN_ACCEL, then auto. */
static int choose_accel(const char *asked, const char *qemu, struct vm *v,
    struct vs_err *e)
{
	const char *env = getenv("VMRUN_ACCEL");
	const char *mode = asked && strcmp(asked, "auto") != 0 ? asked :
	    env && *env ? env : "auto";
	const char *from = asked && strcmp(asked, "auto") != 0 ? "-A" :
	    env && *env ? "VMRUN_ACCEL" : NULL;
	bool native = strcmp(v->arch, host_arch()) == 0 ||
	    (strcmp(v->arch, "386") == 0 && strcmp(host_arch(), "amd64") == 0);

	if (strcmp(mode, "tcg") == 0) {
		v->accel = "tcg";
		snprintf(v->why, sizeof v->why, "%s=tcg", from);
		return 0;
	}
	if (strcmp(mode, "kvm") == 0) {
		if (!native)
			return vs_error(e, EX_UNAVAILABLE, 0,
			    "kvm runs only guests of the host's architecture (%s), not %s: use tcg",
			    host_arch(), v->arch);
		if (access("/dev/kvm", R_OK | W_OK) < 0)
			return vs_error(e, EX_UNAVAILABLE, errno, "kvm: /dev/kvm");
		v->accel = "kvm";
		snprintf(v->why, sizeof v->why, "%s=kvm", from);
		return 0;
	}
	if (strcmp(mode, "hvf") == 0) {
#ifdef __APPLE__
		v->accel = "hvf";
		snprintf(v->why, sizeof v->why, "%s=hvf", from);
		return 0;
#else
		return vs_error(e, EX_UNAVAILABLE, 0,
		    "hvf is macOS's Hypervisor.framework: use kvm or tcg here");
#endif
	}
	if (strcmp(mode, "auto") != 0)
		return vs_error(e, EX_USAGE, 0,
		    "unknown accelerator '%s'%s%s: use auto, kvm, hvf or tcg", mode,
		    from ? " from " : "", from ? from : "");
#ifdef __APPLE__
	if (native) {
		v->accel = "hvf";
		snprintf(v->why, sizeof v->why, "macOS: Hypervisor.framework");
		return 0;
	}
#endif
	v->accel = "tcg";
	if (!native)
		snprintf(v->why, sizeof v->why,
		    "a %s guest on a %s host: emulated", v->arch, host_arch());
	else if (access("/dev/kvm", F_OK) < 0)
		snprintf(v->why, sizeof v->why, "no /dev/kvm");
	else if (access("/dev/kvm", R_OK | W_OK) < 0)
		snprintf(v->why, sizeof v->why, "/dev/kvm: %s", strerror(errno));
	else if (kvm_probe(qemu, v, v->why, sizeof v->why))
		v->accel = "kvm";
	return 0;
}

/* --- starting ------------------------------------------------------------ */

static const char *kernel_arch(const char *path, struct vs_err *e)
{
	unsigned char head[KERNEL_HEAD];
	struct kernel_info ki;
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno,
		    "kernel %s", path), NULL;
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		close(fd);
		return vs_error(e, EX_DATAERR, 0, "kernel %s is not a file", path),
		    NULL;
	}
	if (fstat(fd, &st) < 0 || (n = pread(fd, head, sizeof head, 0)) < 0) {
		vs_error(e, EX_IOERR, errno, "kernel %s", path);
		close(fd);
		return NULL;
	}
	close(fd);
	if (S_ISDIR(st.st_mode))
		return vs_error(e, EX_DATAERR, 0, "kernel %s is a directory", path),
		    NULL;
	if (kernel_identify(head, (size_t)n, (uint64_t)st.st_size, &ki, e) < 0) {
		vs_error_prefix(e, "kernel %s", path);
		return NULL;
	}
	if (ki.arch == NULL)
		return vs_error(e, EX_DATAERR, 0,
		    "kernel %s: cannot tell its architecture", path), NULL;
	return ki.arch;
}

/* Is disk a base image mkbase built?  Known by mkbase's record beside
 * it, matched by inode, not by name or time: a symbolic or hard link to
 * a base is the base, and so is a base whose time an allowed boot
 * changed.  Fills in group. */
static bool is_base(const char *disk, char *group, size_t n)
{
	cleanup_free char *real = realpath(disk, NULL), *dir = NULL;
	struct stat st;
	struct dirent *de;
	DIR *d;
	bool found = false;

	if (real == NULL || stat(real, &st) < 0 ||
	    path_split(real, &dir, NULL) < 0 || (d = opendir(dir)) == NULL)
		return false;
	while (!found && (de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		cleanup_free char *rec = NULL, *img = NULL;
		json_t *j, *ino;
		struct stat ist;

		if (de->d_name[0] != '.' || l < 10 ||
		    strcmp(de->d_name + l - 9, ".img.json") != 0)
			continue;
		if (asprintf(&rec, "%s/%s", dir, de->d_name) < 0 ||
		    asprintf(&img, "%s/%.*s", dir, (int)(l - 6), de->d_name + 1) < 0)
			break;
		j = json_load_file(rec, 0, NULL);
		ino = json_object_get(j, "ino");
		if (json_object_get(j, "group") && json_object_get(j, "uuid") &&
		    json_is_integer(ino) &&
		    (ino_t)json_integer_value(ino) == st.st_ino &&
		    stat(img, &ist) == 0 && ist.st_dev == st.st_dev &&
		    ist.st_ino == st.st_ino) {
			snprintf(group, n, "%s", json_string_value(
			    json_object_get(j, "group")) ?
			    json_string_value(json_object_get(j, "group")) : "?");
			found = true;
		}
		json_decref(j);
	}
	closedir(d);
	return found;
}

/* The disk must be a file we can write, not a base (without
 * --allow-base), and not held by another VM or program. */
static int check_disk(const struct vm *v, bool allow_base, struct vs_err *e)
{
	struct vm_info holder;
	struct stat st;
	char group[256];
	int fd, r;

	if (stat(v->disk, &st) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno,
		    "disk %s", v->disk);
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return vs_error(e, EX_DATAERR, 0,
		    "disk %s is not a file or block device", v->disk);
	if (!allow_base && is_base(v->disk, group, sizeof group))
		return vs_error(e, EX_USAGE, 0,
		    "%s is the base image of group %s: every clone of it would inherit what the VM changes; boot a clone (cowclone NAME), or give --allow-base",
		    v->disk, group);
	r = vmstate_holder(VM_RUN_DIR, v->disk, &holder, e);
	if (r < 0)
		return -1;
	if (r > 0) {
		vs_error(e, EX_TEMPFAIL, 0,
		    "disk %s is in use by VM %s (QEMU pid %ld): stop it first (vmrun stop %s)",
		    v->disk, holder.name, (long)holder.pid, holder.name);
		vmstate_free(&holder);
		return -1;
	}
	fd = open(v->disk, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_NOINPUT), errno,
		    "disk %s", v->disk);
	r = lock_conflict(fd, 0, 0);
	close(fd);
	if (r > 0)
		return vs_error(e, EX_TEMPFAIL, 0,
		    "disk %s is in use by another program (it holds a lock on it, as a running QEMU does)",
		    v->disk);
	return 0;
}

/* QEMU's argv holds our strings as execv wants them. */
static char *unconst(const char *s)
{
	union { const char *c; char *m; } u = { s };

	return u.m;
}

/* QEMU's command line for v; console to console.log and pid file in the
 * run directory (QEMU's working directory), QMP on descriptor 3. */
static int qemu_argv(const struct vm *v, const char *qemu, char ***out,
    struct vs_err *e)
{
	const bool arm = strcmp(v->arch, "arm64") == 0;
	static char mem[32], smp[32], drive[2 * PATH_MAX + 128], net[96];
	char **a = calloc(64, sizeof *a);
	int n = 0;

	if (a == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
	snprintf(mem, sizeof mem, "%lluM", (unsigned long long)(v->mem >> 20));
	snprintf(smp, sizeof smp, "%ld", v->cpus);
	{
		/* (QEMU's option syntax: a comma in a value is written twice,
		 * or it would start another option) */
		char *w = drive + snprintf(drive, sizeof drive, "file=");
		for (const char *c = v->disk; *c && w < drive + sizeof drive - 64; c++) {
			if (*c == ',')
				*w++ = ',';
			*w++ = *c;
		}
		snprintf(w, (size_t)(drive + sizeof drive - w),
		    ",format=raw,if=none,id=disk0,discard=unmap,detect-zeroes=unmap");
	}
	snprintf(net, sizeof net,
	    "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:22", v->port);
#define A(s) (a[n++] = unconst(s))
	A(qemu);
	A("-name"); A(v->name);
	A("-accel"); A(v->accel);
	/* (q35 without the SATA and SMBus controllers a virtio guest
	 * never uses: QEMU starts and the kernel boots sooner) */
	A("-M"); A(arm ? "virt" : "q35,sata=off,smbus=off");
	if (strcmp(v->accel, "tcg") != 0) {
		A("-cpu"); A("host");
	} else if (arm) {
		A("-cpu"); A("max,pauth-impdef=on");
	}
	A("-m"); A(mem);
	A("-smp"); A(smp);
	A("-nodefaults"); A("-no-user-config");
	A("-display"); A("none");
	A("-no-reboot");
	A("-kernel"); A(v->kernel);
	if (v->initrd) {
		A("-initrd"); A(v->initrd);
	}
	A("-append"); A(v->append);
	A("-drive"); A(drive);
	A("-device"); A("virtio-blk-pci,drive=disk0");
	A("-netdev"); A(net);
	/* (no option ROM: it is for booting from the network, and the
	 * kernel is given; QEMU starts without reading and mapping it) */
	A("-device"); A("virtio-net-pci,netdev=net0,romfile=");
	A("-chardev"); A("file,id=con0,path=console.log");
	A("-serial"); A("chardev:con0");
	A("-chardev"); A("socket,id=qmp0,fd=3,server=on,wait=off");
	A("-mon"); A("chardev=qmp0,mode=control");
	A("-pidfile"); A("qemu.pid");
#undef A
	a[n] = NULL;
	*out = a;
	return 0;
}

static json_t *vm_section(const struct vm *v, pid_t pid, const char *state)
{
	char ssh[32], *con = NULL, *qmp = NULL;
	json_t *j;

	snprintf(ssh, sizeof ssh, "127.0.0.1:%d", v->port);
	if (asprintf(&con, "%s/console.log", v->rundir) < 0 ||
	    asprintf(&qmp, "%s/qmp.sock", v->rundir) < 0) {
		free(con);
		return NULL;
	}
	j = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s}",
	    "name", v->name, "pid", (json_int_t)pid, "accel", v->accel,
	    "arch", v->arch, "console", con, "qmp", qmp, "ssh", ssh,
	    "state", state);
	free(con);
	free(qmp);
	return j;
}

/* The record in run/NAME/vm.json: the vm section and what it ran. */
static int save_record(const struct vm *v, const json_t *sec, struct vs_err *e)
{
	cleanup_free char *path = NULL;
	cleanup_json json_t *rec = json_deep_copy(sec);
	struct atomic_file af;
	char *text;
	size_t len;

	if (rec == NULL || asprintf(&path, "%s/vm.json", v->rundir) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
	json_object_set_new(rec, "disk", json_string(v->disk));
	json_object_set_new(rec, "kernel", json_string(v->kernel));
	if (v->initrd)
		json_object_set_new(rec, "initrd", json_string(v->initrd));
	text = json_dumps(rec, JSON_COMPACT);
	if (text == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
	len = strlen(text);
	if (atomic_open(&af, path, 0644, e) < 0) {
		free(text);
		return -1;
	}
	if (write(af.fd, text, len) != (ssize_t)len || write(af.fd, "\n", 1) != 1) {
		vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno, "%s", path);
		free(text);
		atomic_abort(&af);
		return -1;
	}
	free(text);
	/* (the record is a note: the pid file's lock is the truth) */
	if (atomic_commit(&af, ATOMIC_REPLACE | ATOMIC_NOSYNC, e) < 0) {
		atomic_abort(&af);
		return -1;
	}
	return 0;
}

/* Copy what the console log gained since *off to stderr. */
static void follow(int con, off_t *off, bool show)
{
	char buf[16384];
	ssize_t n;

	if (con < 0)
		return;
	while ((n = pread(con, buf, sizeof buf, *off)) > 0) {
		*off += n;
		if (show && write(2, buf, (size_t)n) < 0)
			show = false;
	}
}

/* Spawn QEMU in the run directory with the QMP socket qmp as its
 * descriptor 3.  In the foreground it gets its own process group (a Ctrl-C
 * at the terminal is vmrun's to handle: a clean power-down first) and says
 * things on vmrun's stderr; detached (log >= 0) it gets its own session,
 * outlives vmrun, and says things in the log. */
static pid_t spawn(char **argv, const char *dir, int qmp, int log,
    struct vs_err *e)
{
	pid_t pid = fork();

	if (pid < 0)
		return vs_error(e, EX_OSERR, errno, "fork"), -1;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		if (log >= 0)
			setsid();
		else
			setpgid(0, 0);
		if (chdir(dir) < 0 || null < 0)
			_exit(126);
		dup2(null, 0);
		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		} else {
			dup2(2, 1);	/* stdout is the pipeline's */
		}
		if (qmp == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(qmp, 3) < 0)
			_exit(126);
		close_stray(4);
		execv(argv[0], argv);
		fprintf(stderr, "vmrun: %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

/* Copy the file at path to stderr (QEMU's log, once it has ended or is up). */
static void show_file(const char *path)
{
	char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool nl = true;

	if (fd < 0)
		return;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		if (write(2, buf, (size_t)n) < 0)
			break;
		nl = buf[n - 1] == '\n';
	}
	if (!nl)	/* (QEMU does not always end its message) */
		(void)!write(2, "\n", 1);
	close(fd);
}

static int start(struct vm *v, const struct opts *o, json_t *doc,
    bool *fresh, struct vs_err *e)
{
	const char *qname = strcmp(v->arch, "arm64") == 0 ?
	    "qemu-system-aarch64" : "qemu-system-x86_64";
	const char *qpkg = strcmp(v->arch, "arm64") == 0 ? "qemu-system-arm" :
	    "qemu-system-x86";
	cleanup_free char *qemu = NULL, *lockp = NULL, *pidf = NULL,
	    *conp = NULL, *logp = NULL;
	cleanup_fd int lock = -1, con = -1, qmpl = -1, qmpc = -1, log = -1;
	char **argv = NULL;
	struct vm_info old;
	json_t *sec;
	pid_t pid, qpid = 0;
	int status = 0, rc = -1;
	off_t off = 0;

	qemu = run_find(qname, qpkg, e);
	if (qemu == NULL)
		return -1;
	if (mkdir(VM_RUN_DIR, 0755) < 0 && errno != EEXIST)
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s", VM_RUN_DIR);
	if (mkdir(v->rundir, 0700) == 0)
		*fresh = true;
	else if (errno != EEXIST)
		return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT), errno,
		    "%s", v->rundir);
	if (asprintf(&lockp, "%s/.lock", v->rundir) < 0 ||
	    asprintf(&pidf, "%s/qemu.pid", v->rundir) < 0 ||
	    asprintf(&conp, "%s/console.log", v->rundir) < 0 ||
	    asprintf(&logp, "%s/qemu.log", v->rundir) < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
	lock = lock_path(lockp, true, false, e);
	if (lock < 0) {
		struct vm_info now;
		struct vs_err ignore;
		if (vmstate_get(VM_RUN_DIR, v->name, &now, &ignore) == 0 &&
		    now.state == VM_RUNNING) {
			vs_error(e, EX_TEMPFAIL, 0,
			    "VM %s is already running (QEMU pid %ld): vmrun stop %s",
			    v->name, (long)now.pid, v->name);
			vmstate_free(&now);
			return -1;
		}
		if (now.name)
			vmstate_free(&now);
		return vs_error(e, EX_TEMPFAIL, 0,
		    "VM %s is being started or stopped by another vmrun", v->name);
	}
	if (vmstate_get(VM_RUN_DIR, v->name, &old, e) == 0) {
		enum vm_state s = old.state;
		pid_t p = old.pid;
		vmstate_free(&old);
		if (s == VM_RUNNING)
			return vs_error(e, EX_TEMPFAIL, 0,
			    "VM %s is already running (QEMU pid %ld): vmrun stop %s",
			    v->name, (long)p, v->name);
		if (s == VM_CRASHED && !o->quiet)
			fe_warn("%s: the last run crashed; its stale state is cleared",
			    v->name);
	}
	if (check_disk(v, o->allow_base, e) < 0)
		return -1;
	if (choose_accel(o->accel, qemu, v, e) < 0)
		return -1;
	if (!o->quiet)
		fe_warn("%s: accel %s: %s", v->name, v->accel, v->why);
	v->port = free_port();
	if (v->port < 0)
		return vs_error(e, EX_OSERR, errno, "no free port for ssh");
	unlink(pidf);
	if (stop_signal)
		return vs_error(e, EX_TEMPFAIL, 0, "VM %s: interrupted before it started",
		    v->name);
	if (qemu_argv(v, qemu, &argv, e) < 0)
		return -1;
	/* a fresh console log for this run */
	{
		int fd = open(conp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT),
			    errno, "%s", conp);
		close(fd);
	}
	if (o->detach) {
		/* what QEMU says once vmrun has gone: kept beside the console */
		log = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
		    O_CLOEXEC, 0644);
		if (log < 0) {
			free(argv);
			return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT),
			    errno, "%s", logp);
		}
	}
	/* (the foreground connects later, by name, to power off) */
	qmpl = qmp_listen(v->rundir, o->detach ? &qmpc : NULL, e);
	if (qmpl < 0) {
		free(argv);
		return -1;
	}
	pid = spawn(argv, v->rundir, qmpl, log, e);
	free(argv);
	if (pid < 0)
		return -1;
	close(qmpl);
	qmpl = -1;

	if (o->detach) {
		/* up once QEMU's main loop answers on QMP; QEMU runs on after
		 * vmrun, in its own session */
		if (qmp_ready(qmpc, pid, pidf, &status) < 0) {
			if (status == -1)
				return vs_error(e, EX_TEMPFAIL, 0,
				    "VM %s: interrupted before it started", v->name);
			show_file(logp);
			return vs_error(e, EX_UNAVAILABLE, 0,
			    "QEMU could not start VM %s (%s %d; its message is above, and in %s)",
			    v->name, WIFEXITED(status) ? "status" : "signal",
			    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
			    logp);
		}
		close(qmpc);
		qmpc = -1;
		if (!o->quiet)
			show_file(logp);	/* QEMU's warnings, if any */
		{
			struct vm_info now;
			if (vmstate_get(VM_RUN_DIR, v->name, &now, e) == 0) {
				qpid = now.pid;
				vmstate_free(&now);
				if (qpid <= 0)
					vs_error(e, EX_UNAVAILABLE, 0,
					    "QEMU started VM %s but does not hold its pid file (see %s)",
					    v->name, logp);
			}
		}
		sec = qpid > 0 ? vm_section(v, qpid, "running") : NULL;
		if (qpid > 0 && sec == NULL)
			vs_error(e, EX_OSERR, ENOMEM, "vmrun");
		if (sec == NULL || save_record(v, sec, e) < 0) {
			/* a VM vmrun says it did not start does not run on */
			json_decref(sec);
			qemu_reap(pid, pidf, true, &status);
			return -1;
		}
		if (doc_set(doc, "vm", sec, e) < 0) {	/* (sec is the doc's) */
			qemu_reap(pid, pidf, true, &status);
			return -1;
		}
		return 0;
	}

	/* foreground: follow the console until QEMU ends */
	con = open(conp, O_RDONLY | O_CLOEXEC);
	{
		bool asked = false, killed = false;
		double deadline = 0, again = 0;
		int qmp = -1;
		bool saved = false;
		for (;;) {
			pid_t w = waitpid(pid, &status, WNOHANG);
			follow(con, &off, !o->quiet);
			if (w == pid)
				break;
			if (!saved) {
				struct vm_info now;
				struct vs_err ignore;
				if (vmstate_get(VM_RUN_DIR, v->name, &now, &ignore) == 0 &&
				    now.state == VM_RUNNING) {
					qpid = now.pid;
					sec = vm_section(v, qpid, "running");
					if (sec)
						save_record(v, sec, &ignore);
					json_decref(sec);
					saved = true;
				}
				vmstate_free(&now);
			}
			if (stop_signal && !asked) {
				qmp = qmp_open(v->rundir, 5000);
				asked = true;
				deadline = run_clock() + (double)o->timeout;
				if (!o->quiet)
					fe_warn("%s: powering off (ACPI); up to %ld s, then it is killed",
					    v->name, o->timeout);
				if (qmp < 0 || qmp_command(qmp, "system_powerdown") < 0)
					deadline = run_clock();
				again = run_clock() + 2;
			}
			if (asked && qmp >= 0 && !killed && run_clock() >= again) {
				qmp_command(qmp, "system_powerdown");
				again = run_clock() + 2;
			}
			if (asked && !killed && (run_clock() >= deadline || stop_count > 1)) {
				kill(pid, SIGKILL);
				killed = true;
			}
			nap_ms(20);
		}
		follow(con, &off, !o->quiet);
		if (qmp >= 0)
			close(qmp);
		if (asked) {
			sec = vm_section(v, qpid, killed ? "crashed" : "stopped");
			if (sec)
				save_record(v, sec, e);
			json_decref(sec);
			if (killed)
				return vs_error(e, EX_TEMPFAIL, 0,
				    "VM %s did not power off within %ld s: killed",
				    v->name, o->timeout);
			stop_reraise();
			return vs_error(e, EX_TEMPFAIL, 0, "VM %s: interrupted",
			    v->name);
		}
	}
	if (WIFSIGNALED(status)) {
		sec = vm_section(v, qpid, "crashed");
		if (sec)
			save_record(v, sec, e);
		json_decref(sec);
		return vs_error(e, EX_OSERR, 0, "QEMU (VM %s) was killed by signal %d",
		    v->name, WTERMSIG(status));
	}
	if (WEXITSTATUS(status) != 0) {
		/* (a QEMU that never ran the guest could not start it: the
		 * VM's state is what it was) */
		struct stat cst;
		bool ran = qpid && stat(conp, &cst) == 0 && cst.st_size > 0;
		if (ran) {
			sec = vm_section(v, qpid, "crashed");
			if (sec)
				save_record(v, sec, e);
			json_decref(sec);
		}
		return vs_error(e, ran ? EX_OSERR : EX_UNAVAILABLE, 0,
		    "QEMU %s VM %s with status %d (its message is above; the console is %s)",
		    ran ? "ended" : "could not start", v->name,
		    WEXITSTATUS(status), conp);
	}
	{
		char line[160];
		bool panic = vmstate_panic(conp, line, sizeof line);
		sec = vm_section(v, qpid, panic ? "crashed" : "stopped");
		if (sec == NULL)
			return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
		if (save_record(v, sec, e) < 0) {
			json_decref(sec);
			return -1;
		}
		if (panic) {
			json_decref(sec);
			return vs_error(e, EX_DATAERR, 0,
			    "VM %s crashed: %s (the console is %s)", v->name, line,
			    conp);
		}
		/* the kernel says "reboot: Power down" when it powers off;
		 * without it the guest reset (a reboot, a triple fault), and
		 * -no-reboot ended the VM */
		if (!vmstate_console_says(conp, "reboot: Power down")) {
			json_decref(sec);
			return vs_error(e, EX_DATAERR, 0,
			    "VM %s reset instead of powering off (a reboot or a fault; vmrun ends a VM that resets): see %s",
			    v->name, conp);
		}
	}
	rc = doc_set(doc, "vm", sec, e);
	return rc;
}

/* --- stop and ls ------------------------------------------------------- */

/* Whether process pid has ended (or is a zombie, ended but not reaped). */
static bool process_gone(pid_t pid)
{
	char p[64], buf[256];
	const char *paren;
	ssize_t n;
	int fd;

	if (pid <= 0 || kill(pid, 0) < 0)
		return true;
	snprintf(p, sizeof p, "/proc/%ld/stat", (long)pid);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	/* "pid (comm) S ...": the state follows the last ')' */
	paren = strrchr(buf, ')');
	return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

static int stop_vm(const char *name, long timeout, bool quiet, struct vs_err *e)
{
	struct vm_info vi;
	double t0 = run_clock(), deadline;
	bool forced = false;
	int s;

	if (path_check_name("VM", name, e) < 0)
		return -1;
	if (vmstate_get(VM_RUN_DIR, name, &vi, e) < 0)
		return -1;
	if (vi.state != VM_RUNNING) {
		if (!quiet)
			fe_warn("%s is not running (%s)", name, vm_state_name(vi.state));
		vmstate_free(&vi);
		return 0;
	}
	s = qmp_open(vi.dir, 5000);
	if (s < 0 || qmp_command(s, "system_powerdown") < 0) {
		if (!quiet)
			fe_warn("%s: no answer on its QMP socket: killing it", name);
		deadline = run_clock();
	} else
		deadline = run_clock() + (double)timeout;
	for (double again = run_clock() + 2;;) {
		struct vm_info now;
		struct vs_err ignore;
		bool running = vmstate_get(VM_RUN_DIR, name, &now, &ignore) == 0 &&
		    now.state == VM_RUNNING;
		/* (a guest still booting has nothing listening to the power
		 * button yet: press it again every two seconds) */
		if (running && s >= 0 && !forced && run_clock() >= again) {
			qmp_command(s, "system_powerdown");
			again = run_clock() + 2;
		}
		if (running)
			vmstate_free(&now);
		else {
			if (now.name)
				vmstate_free(&now);
			break;
		}
		if (stop_signal || run_clock() >= deadline) {
			if (!forced) {
				if (s >= 0)
					qmp_command(s, "quit");
				nap_ms(500);
				if (kill(vi.pid, 0) == 0)
					kill(vi.pid, SIGKILL);
				forced = true;
			}
		}
		nap_ms(50);
	}
	if (s >= 0)
		close(s);
	/* QEMU lets its pid file's lock go a moment before it is gone: wait
	 * for that too, so that "stopped" means no QEMU (a zombie that its
	 * new parent has yet to reap counts as gone) */
	for (double until = run_clock() + 2; run_clock() < until &&
	    !process_gone(vi.pid); )
		nap_ms(10);
	{
		cleanup_free char *pidf = NULL, *sock = NULL;
		if (asprintf(&pidf, "%s/qemu.pid", vi.dir) >= 0)
			unlink(pidf);	/* (stale after a kill) */
		/* (QEMU leaves it: vmrun made it) */
		if (asprintf(&sock, "%s/qmp.sock", vi.dir) >= 0)
			unlink(sock);
	}
	json_object_set_new(vi.rec, "state", json_string("stopped"));
	json_object_set_new(vi.rec, "pid", json_integer(0));
	{
		cleanup_free char *rec = NULL;
		if (asprintf(&rec, "%s/vm.json", vi.dir) >= 0)
			json_dump_file(vi.rec, rec, JSON_COMPACT);
	}
	if (!quiet) {
		if (forced)
			fe_warn("%s did not power off within %ld s: stopped it", name,
			    timeout);
		else
			fe_warn("%s powered off (%.1f s)", name, run_clock() - t0);
	}
	vmstate_free(&vi);
	return 0;
}

/* Resume VM name's guest if it is paused: the way back from a snapshot
 * whose pauser and watchdog both died (cowclone --live). */
static int resume_vm(const char *name, bool quiet, struct vs_err *e)
{
	struct vm_info vi;
	char status[64], why[256];
	int s, r;

	if (vmstate_get(VM_RUN_DIR, name, &vi, e) < 0)
		return -1;
	if (vi.state != VM_RUNNING) {
		vs_error(e, EX_UNAVAILABLE, 0, "VM %s is not running (%s)", name,
		    vm_state_name(vi.state));
		vmstate_free(&vi);
		return -1;
	}
	s = qmp_open(vi.dir, 5000);
	vmstate_free(&vi);
	if (s < 0)
		return vs_error(e, EX_UNAVAILABLE, errno,
		    "%s: no answer on its QMP socket", name);
	r = qmp_running(s, status, sizeof status);
	if (r == 1) {
		close(s);
		if (!quiet)
			fe_warn("%s is not paused: nothing to resume", name);
		return 0;
	}
	if (r < 0 || (r = qmp_execute(s, "cont", NULL, why, sizeof why)) < 0) {
		int err = errno;
		close(s);
		if (r == -2)
			return vs_error(e, EX_UNAVAILABLE, 0,
			    "%s: QEMU cannot resume its guest (%s): %s", name,
			    status, why);
		return vs_error(e, EX_UNAVAILABLE, err,
		    "%s: no answer on its QMP socket", name);
	}
	close(s);
	if (!quiet)
		fe_warn("%s resumed (its guest was %s)", name, status);
	return 0;
}

static int list_vms(struct vs_err *e)
{
	char **names = vmstate_names(VM_RUN_DIR, e);

	if (names == NULL)
		return -1;
	for (char **p = names; *p; p++) {
		struct vm_info vi;
		struct vs_err ignore;
		json_t *j;
		char *line;

		if (vmstate_get(VM_RUN_DIR, *p, &vi, &ignore) < 0)
			continue;
		if (json_object_size(vi.rec) == 0 && vi.state != VM_RUNNING) {
			vmstate_free(&vi);	/* (never started) */
			continue;
		}
		j = json_pack("{s:s, s:s, s:I, s:O?, s:O?, s:O?, s:O?, s:O?}",
		    "name", vi.name, "state", vm_state_name(vi.state),
		    "pid", (json_int_t)vi.pid,
		    "disk", json_object_get(vi.rec, "disk"),
		    "ssh", json_object_get(vi.rec, "ssh"),
		    "accel", json_object_get(vi.rec, "accel"),
		    "arch", json_object_get(vi.rec, "arch"),
		    "console", json_object_get(vi.rec, "console"));
		if (j && vi.state == VM_CRASHED)
			json_object_set_new(j, "why", json_string(vi.why));
		if (j && vi.state == VM_RUNNING) {
			/* (briefly: QEMU serves one QMP connection at a time,
			 * and a snapshot may hold it) */
			int s = qmp_open(vi.dir, 300), r = -1;
			if (s >= 0) {
				r = qmp_running(s, NULL, 0);
				close(s);
			}
			if (r >= 0)
				json_object_set_new(j, "paused", json_boolean(r == 0));
		}
		line = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		vmstate_free(&vi);
		if (line == NULL) {
			vmstate_free_names(names);
			return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
		}
		if (printf("%s\n", line) < 0) {
			free(line);
			vmstate_free_names(names);
			return vs_error(e, EX_IOERR, errno, "stdout");
		}
		free(line);
	}
	vmstate_free_names(names);
	if (fflush(stdout) != 0)
		return vs_error(e, EX_IOERR, errno, "stdout");
	return 0;
}

/* A VM whose first start failed before QEMU ran leaves no state. */
static void forget(const struct vm *v)
{
	static const char *const files[] = { ".lock", "console.log", "qmp.sock",
	    NULL };
	cleanup_free char *rec = NULL;

	if (asprintf(&rec, "%s/vm.json", v->rundir) < 0 || access(rec, F_OK) == 0)
		return;
	for (int i = 0; files[i]; i++) {
		cleanup_free char *p = NULL;
		if (asprintf(&p, "%s/%s", v->rundir, files[i]) >= 0)
			unlink(p);
	}
	rmdir(v->rundir);
	rmdir(VM_RUN_DIR);	/* (only when nothing else is in it) */
}

/* The configuration, checked, as one JSON object: what a script (vmstrap)
 * needs of it without a YAML parser of its own. */
static int show_config(const char *explicit, bool quiet, struct vs_err *e)
{
	cleanup_free char *path = NULL;
	struct vs_config cfg = { 0 };
	json_t *groups, *keys, *j;
	char *text;

	if (config_locate(".", explicit, &path, e) < 0)
		return -1;
	if (path == NULL)
		return vs_error(e, EX_NOINPUT, 0,
		    "no %s here: give -c FILE", CONFIG_FILE);
	if (config_load(&cfg, path, e) < 0)
		return -1;
	for (size_t i = 0; i < cfg.nwarnings && !quiet; i++)
		fe_warn("%s", cfg.warnings[i]);
	groups = json_array();
	for (size_t i = 0; groups && i < cfg.ngroups; i++) {
		const struct vs_group *g = &cfg.groups[i];
		json_array_append_new(groups, json_pack(
		    "{s:s, s:I, s:I, s:I, s:I, s:{s:s?, s:s?}, s:s?, s:s?}",
		    "name", g->name, "count", (json_int_t)g->count,
		    "vcpu", (json_int_t)g->vcpu, "ram", (json_int_t)g->ram,
		    "storage_size", (json_int_t)g->storage_size,
		    "network", "mode", g->network.mode, "gateway",
		    g->network.gateway, "userdata", g->userdata,
		    "userdata_file", g->userdata_file));
	}
	keys = json_array();
	for (size_t i = 0; keys && i < cfg.nssh_keys; i++)
		json_array_append_new(keys, json_string(cfg.ssh_keys[i]));
	j = json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:b, s:o, s:s?, s:o}",
	    "path", cfg.path, "image", cfg.image, "kernel_image",
	    cfg.kernel_image, "kernel_file", cfg.kernel_file, "initrd_file",
	    cfg.initrd_file, "hypervisor", cfg.hypervisor, "insecure_registry",
	    cfg.insecure_registry, "ssh_keys", keys, "github_user",
	    cfg.github_user, "host_groups", groups);
	config_free(&cfg);
	text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (text == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "vmrun");
	if (printf("%s\n", text) < 0 || fflush(stdout) != 0) {
		free(text);
		return vs_error(e, EX_IOERR, errno, "stdout");
	}
	free(text);
	return 0;
}

/* --- main ------------------------------------------------------------- */

static char *abs_or_null(const char *p, struct vs_err *e, bool *failed)
{
	char *a;

	if (p == NULL)
		return NULL;
	a = path_abs(p, e);
	if (a == NULL)
		*failed = true;
	return a;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "accel", required_argument, NULL, 'A' },
		{ "allow-base", no_argument, NULL, OPT_ALLOW_BASE },
		{ "append", required_argument, NULL, 'a' },
		{ "config", required_argument, NULL, 'c' },
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "detach", no_argument, NULL, 'd' },
		{ "directory", required_argument, NULL, 'C' },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "group", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ "initrd", required_argument, NULL, OPT_INITRD },
		{ "kernel", required_argument, NULL, OPT_KERNEL },
		{ "mem", required_argument, NULL, OPT_MEM },
		{ "name", required_argument, NULL, 'n' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "timeout", required_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .timeout = 30 };
	struct vs_err e = { 0 };
	struct vm v = { 0 };
	cleanup_json json_t *doc = NULL;
	cleanup_free char *cfgpath = NULL, *cfg_kernel = NULL, *cfg_initrd = NULL;
	const char *group;
	bool failed = false;
	long long num;
	int c, rc;

	fe_init(argv[0]);
	/* QEMU is a child that outlives vmrun: vmrun must be able to reap
	 * it meanwhile, and its descriptors must not land on 0-2 (where QEMU
	 * would take them for its own).  A closed stdout stays unwritable. */
	signal(SIGCHLD, SIG_DFL);
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF &&
		    open("/dev/null", fd == 2 ? O_WRONLY : O_RDONLY) != fd)
			return fe_finish(EX_OSERR);
	/* (a closed stdout is an error to handle, not a death: a VM just
	 * started must not be left running unreported) */
	signal(SIGPIPE, SIG_IGN);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":A:a:C:c:dg:hn:qt:V", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'A': o.accel = optarg; o.start_only = true; break;
		case 'a': o.args = optarg; o.start_only = true; break;
		case 'C': o.dir = optarg; break;
		case 'c': o.config = optarg; o.start_only = true; break;
		case 'd': o.detach = true; o.start_only = true; break;
		case 'g': o.group = optarg; o.start_only = true; break;
		case 'h':
			usage(stdout);
			return fe_finish(0);
		case 'n': o.name = optarg; o.start_only = true; break;
		case 'q': o.quiet = true; break;
		case 't':
			if (fe_number(optarg, 1, 3600, &num, "-t", &e) < 0)
				return fe_fail(&e);
			o.timeout = (long)num;
			break;
		case 'V':
			fe_version();
			return fe_finish(0);
		case OPT_ALLOW_BASE: o.allow_base = true; o.start_only = true; break;
		case OPT_CPUS:
			if (fe_number(optarg, 1, 256, &num, "--cpus", &e) < 0)
				return fe_fail(&e);
			o.cpus = (long)num;
			o.start_only = true;
			break;
		case OPT_DISK: o.disk = optarg; o.start_only = true; break;
		case OPT_INITRD: o.initrd = optarg; o.start_only = true; break;
		case OPT_KERNEL: o.kernel = optarg; o.start_only = true; break;
		case OPT_MEM: o.mem = optarg; o.start_only = true; break;
		default:
			return fe_bad_option(SYNOPSIS, c, optopt, argv[optind - 1]);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc > 0 && strcmp(argv[0], "config") == 0) {
		if (argc > 1)
			return fe_usage_error(SYNOPSIS, "config takes no operands");
		if (o.dir && chdir(o.dir) < 0) {
			vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
			return fe_fail(&e);
		}
		return fe_finish(show_config(o.config, o.quiet, &e) < 0 ?
		    fe_fail(&e) : 0);
	}
	if (argc > 0 && strcmp(argv[0], "check-name") == 0) {
		/* The tools' one name rule, for scripts that turn names into
		 * paths (vmstrap), as git check-ref-format is for refs. */
		if (argc < 2)
			return fe_usage_error(SYNOPSIS, "check-name needs a NAME");
		for (int i = 1; i < argc; i++)
			if (path_check_name("", argv[i], &e) < 0)
				return fe_finish(fe_fail(&e));
		return fe_finish(0);
	}
	if (argc > 0 && strcmp(argv[0], "stop") != 0 && strcmp(argv[0], "ls") != 0 &&
	    strcmp(argv[0], "resume") != 0)
		return fe_usage_error(SYNOPSIS,
		    "unknown command '%s': stop NAME, resume NAME, ls, config, check-name, or none to start a VM",
		    argv[0]);
	if (argc > 0 && o.start_only)
		return fe_usage_error(SYNOPSIS,
		    "%s takes only -C, -q and -t", argv[0]);
	if (o.dir && chdir(o.dir) < 0) {
		vs_error(&e, EX_NOINPUT, errno, "%s", o.dir);
		return fe_fail(&e);
	}
	if (argc > 0 && strcmp(argv[0], "ls") == 0) {
		if (argc > 1)
			return fe_usage_error(SYNOPSIS, "ls takes no operands");
		return fe_finish(list_vms(&e) < 0 ? fe_fail(&e) : 0);
	}
	if (argc > 0 && strcmp(argv[0], "resume") == 0) {
		if (argc != 2)
			return fe_usage_error(SYNOPSIS, "resume needs one VM NAME");
		if (path_check_name("VM", argv[1], &e) < 0)
			return fe_fail_usage(SYNOPSIS, &e);
		return fe_finish(resume_vm(argv[1], o.quiet, &e) < 0 ?
		    fe_fail(&e) : 0);
	}
	if (argc > 0) {
		if (argc != 2)
			return fe_usage_error(SYNOPSIS, "stop needs one VM NAME");
		stop_on_signals();
		return fe_finish(stop_vm(argv[1], o.timeout, o.quiet, &e) < 0 ?
		    fe_fail(&e) : 0);
	}

	/* start */
	if (o.accel && strcmp(o.accel, "auto") != 0 && strcmp(o.accel, "kvm") != 0 &&
	    strcmp(o.accel, "hvf") != 0 && strcmp(o.accel, "tcg") != 0)
		return fe_usage_error(SYNOPSIS,
		    "unknown accelerator '%s': use auto, kvm, hvf or tcg", o.accel);
	if ((o.name && path_check_name("VM", o.name, &e) < 0) ||
	    (o.group && path_check_name("group", o.group, &e) < 0))
		return fe_fail_usage(SYNOPSIS, &e);
	if (o.mem) {
		if (size_parse(o.mem, &v.mem, &e) < 0)
			return fe_fail(&e);
		if (v.mem < (64u << 20))
			return fe_usage_error(SYNOPSIS,
			    "--mem %s is too little: a VM needs at least 64M", o.mem);
	}
	if (o.args && strpbrk(o.args, "\n\r"))
		return fe_usage_error(SYNOPSIS, "-a: the arguments hold a newline");
	group = o.group ? o.group : DEFAULT_GROUP;
	v.cpus = o.cpus;
	if (config_locate(".", o.config, &cfgpath, &e) < 0)
		return fe_fail(&e);
	if (cfgpath) {
		struct vs_config cfg = { 0 };
		const struct vs_group *g;
		if (config_load(&cfg, cfgpath, &e) < 0)
			return fe_fail(&e);
		for (size_t i = 0; i < cfg.nwarnings && !o.quiet; i++)
			fe_warn("%s", cfg.warnings[i]);
		g = config_group(&cfg, group, &e);
		if (g == NULL && (o.group || cfg.ngroups)) {
			config_free(&cfg);
			return fe_fail(&e);
		}
		/* (a kernel on the host: for images that carry none) */
		cfg_kernel = steal_pointer(&cfg.kernel_file);
		cfg_initrd = steal_pointer(&cfg.initrd_file);
		if (g) {
			if (v.cpus == 0)
				v.cpus = g->vcpu;
			if (v.mem == 0)
				v.mem = g->ram;
			if (g->network.mode && strcmp(g->network.mode, "nat") != 0) {
				vs_error(&e, EX_CONFIG, 0,
				    "%s: group %s: network mode '%s': vmrun gives VMs user-mode NAT (mode: nat) only",
				    cfgpath, group, g->network.mode);
				config_free(&cfg);
				return fe_fail(&e);
			}
		}
		config_free(&cfg);
	}
	if (v.cpus == 0)
		v.cpus = 2;
	if (v.mem == 0)
		v.mem = 4ull << 30;
	/* (what QEMU would refuse only once it is starting) */
	if (v.cpus > 256 || v.mem < (64u << 20) || v.mem > (1ull << 40)) {
		char b[32];
		vs_error(&e, o.cpus || o.mem ? EX_USAGE : EX_CONFIG, 0,
		    "%s%s%s: a VM has 1 to 256 CPUs and 64M to 1T of memory, not %ld CPUs and %s",
		    cfgpath && !(o.cpus || o.mem) ? cfgpath : "", cfgpath &&
		    !(o.cpus || o.mem) ? ": group " : "", !(o.cpus || o.mem) ?
		    group : "the command line", v.cpus, size_format(v.mem, b, sizeof b));
		return fe_finish(fe_fail(&e));
	}

	doc = doc_input(!((o.kernel || cfg_kernel) && o.disk),
	    "give --kernel and --disk, or pipe kextract and cowclone's output into vmrun", &e);
	if (doc == NULL)
		return fe_fail_usage(SYNOPSIS, &e);
	{
		/* The kernel: --kernel, else the document's (kextract's), else
		 * the configuration's kernel_file. */
		const json_t *k = json_object_get(doc, "kernel");
		const char *kp = o.kernel, *ip = o.initrd, *dp = o.disk;
		if (kp == NULL && k == NULL && cfg_kernel) {
			kp = cfg_kernel;
			if (ip == NULL)
				ip = cfg_initrd;
		} else if (kp == NULL) {
			kp = json_string_value(json_object_get(k, "path"));
			if (kp == NULL || *kp == '\0') {
				vs_error(&e, EX_DATAERR, 0,
				    "the document has no kernel.path: give --kernel, or run kextract before vmrun");
				return fe_finish(fe_fail(&e));
			}
			if (ip == NULL) {
				json_t *i = json_object_get(k, "initrd");
				if (i && !json_is_null(i) && !json_is_string(i)) {
					vs_error(&e, EX_DATAERR, 0,
					    "the document's kernel.initrd is not a path");
					return fe_finish(fe_fail(&e));
				}
				ip = json_string_value(i);
			}
		}
		if (dp == NULL) {
			dp = json_string_value(json_object_get(
			    json_object_get(doc, "disk"), "path"));
			if (dp == NULL) {
				vs_error(&e, EX_DATAERR, 0,
				    "the document has no disk.path: give --disk, or run cowclone before vmrun");
				return fe_finish(fe_fail(&e));
			}
		}
		v.kernel = abs_or_null(kp, &e, &failed);
		v.initrd = abs_or_null(ip, &e, &failed);
		v.disk = abs_or_null(dp, &e, &failed);
		if (failed)
			return fe_finish(fe_fail(&e));
	}
	if (v.initrd && access(v.initrd, R_OK) < 0) {
		vs_error(&e, vs_code_for_errno(errno, EX_NOINPUT), errno, "initrd %s",
		    v.initrd);
		rc = fe_fail(&e);
		goto out;
	}
	v.arch = kernel_arch(v.kernel, &e);
	if (v.arch == NULL) {
		rc = fe_fail(&e);
		goto out;
	}
	if (o.name)
		v.name = strdup(o.name);
	else {
		cleanup_free char *dir = NULL, *base = NULL;
		size_t l;
		if (path_split(v.disk, &dir, &base) < 0) {
			vs_error(&e, EX_OSERR, ENOMEM, "vmrun");
			rc = fe_fail(&e);
			goto out;
		}
		l = strlen(base);
		if (l > 4 && strcmp(base + l - 4, ".img") == 0)
			base[l - 4] = '\0';
		if (!path_valid_name(base)) {
			rc = fe_usage_error(SYNOPSIS,
			    "cannot name the VM after its disk '%s': give -n NAME", base);
			goto out;
		}
		v.name = strdup(base);
	}
	if (v.name == NULL || asprintf(&v.rundir, "%s/%s", VM_RUN_DIR, v.name) < 0) {
		vs_error(&e, EX_OSERR, ENOMEM, "vmrun");
		rc = fe_fail(&e);
		goto out;
	}
	{
		/* the run directory, absolute, for the document */
		char *cwd = getcwd(NULL, 0);
		char *abs = NULL;
		if (cwd == NULL || asprintf(&abs, "%s/%s", cwd, v.rundir) < 0) {
			free(cwd);
			vs_error(&e, EX_OSERR, errno, "getcwd");
			rc = fe_fail(&e);
			goto out;
		}
		free(cwd);
		free(v.rundir);
		v.rundir = abs;
	}
	if (asprintf(&v.append, "console=%s root=/dev/vda rw panic=-1 systemd.hostname=%s%s%s",
	    strcmp(v.arch, "arm64") == 0 ? "ttyAMA0" : "ttyS0", v.name,
	    o.args ? " " : "", o.args ? o.args : "") < 0) {
		vs_error(&e, EX_OSERR, ENOMEM, "vmrun");
		rc = fe_fail(&e);
		goto out;
	}
	stop_on_signals();
	{
		bool fresh = false;
		if (start(&v, &o, doc, &fresh, &e) < 0) {
			rc = fe_fail(&e);
			if (fresh)
				forget(&v);
			stop_reraise();
		} else if (doc_write(stdout, doc, &e) < 0) {
			/* (nobody learns of a VM started with -d: stop it) */
			pid_t p = (pid_t)json_integer_value(json_object_get(
			    json_object_get(doc, "vm"), "pid"));
			rc = fe_fail(&e);
			if (o.detach && p > 0) {
				kill(p, SIGTERM);
				fe_warn("%s: stopped: its document could not be written", v.name);
			}
		} else
			rc = 0;
	}
out:
	free(v.name);
	free(v.kernel);
	free(v.initrd);
	free(v.disk);
	free(v.rundir);
	free(v.append);
	return fe_finish(rc);
}
