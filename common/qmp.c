/* qmp.c: QEMU's machine protocol, and a guest pause that always ends. */
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "run.h"

/* The longest line QMP may send us (an answer to query-status is tiny;
 * events can carry more). */
#define LINE_MAX_QMP (1u << 20)

/* The socket address of path, reached through its directory's descriptor
 * (*dfd, the caller's to close) so that no path is too long for sun_path. */
static int sock_addr(const char *path, struct sockaddr_un *a, int *dfd)
{
	const char *slash = strrchr(path, '/');
	char *dir;

	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	if (slash == NULL) {
		dir = strdup(".");
		slash = path - 1;
	} else {
		dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
	}
	if (dir == NULL)
		return -1;
	*dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (*dfd < 0)
		return -1;
	if ((size_t)snprintf(a->sun_path, sizeof a->sun_path, "/proc/self/fd/%d/%s",
	    *dfd, slash + 1) >= sizeof a->sun_path) {
		close(*dfd);
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Read QMP lines from s until one is an answer (or the greeting, when
 * greeting): id, when not NULL, is the one the answer must carry.  0 with
 * *ret the "return" value (or the greeting); -1 with errno; -2 for an
 * "error" answer, its description in why. */
static int read_answer(int s, const char *id, bool greeting, json_t **ret,
    char *why, size_t n)
{
	size_t cap = 4096, have = 0;
	char *buf = malloc(cap);
	int rc = -1;

	if (buf == NULL)
		return -1;
	for (;;) {
		char *nl;

		while ((nl = memchr(buf, '\n', have)) != NULL) {
			size_t len = (size_t)(nl - buf);
			json_t *j = json_loadb(buf, len, 0, NULL), *v;
			const char *jid;

			memmove(buf, nl + 1, have - len - 1);
			have -= len + 1;
			if (!json_is_object(j)) {
				json_decref(j);
				continue;
			}
			if (greeting && (v = json_object_get(j, "QMP")) != NULL) {
				if (ret)
					*ret = json_incref(v);
				json_decref(j);
				rc = 0;
				goto out;
			}
			jid = json_string_value(json_object_get(j, "id"));
			if (greeting || json_object_get(j, "event") != NULL ||
			    (id && (jid == NULL || strcmp(jid, id) != 0)) ||
			    (!id && jid)) {
				json_decref(j);
				continue;
			}
			if ((v = json_object_get(j, "return")) != NULL) {
				if (ret)
					*ret = json_incref(v);
				rc = 0;
			} else if ((v = json_object_get(j, "error")) != NULL) {
				const char *d = json_string_value(
				    json_object_get(v, "desc"));
				if (why && n)
					snprintf(why, n, "%s", d ? d : "error");
				rc = -2;
			} else {
				json_decref(j);
				continue;
			}
			json_decref(j);
			goto out;
		}
		if (have == cap) {
			char *nb;
			if (cap >= LINE_MAX_QMP) {
				errno = EPROTO;
				goto out;
			}
			nb = realloc(buf, cap *= 2);
			if (nb == NULL)
				goto out;
			buf = nb;
		}
		ssize_t got = read(s, buf + have, cap - have);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (got == 0)
				errno = ECONNRESET;
			else if (errno == EAGAIN || errno == EWOULDBLOCK)
				errno = ETIMEDOUT;
			goto out;
		}
		have += (size_t)got;
	}
out:
	free(buf);
	return rc;
}

static int send_all(int s, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t w = send(s, p, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int qmp_connect(const char *sock, int timeout_ms)
{
	static const char caps[] = "{\"execute\":\"qmp_capabilities\"}\n";
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	struct sockaddr_un a;
	int dfd, s, err;

	if (sock_addr(sock, &a, &dfd) < 0)
		return -1;
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
		err = errno;
		if (s >= 0)
			close(s);
		close(dfd);
		errno = err;
		return -1;
	}
	close(dfd);
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (read_answer(s, NULL, true, NULL, NULL, 0) < 0 ||
	    send_all(s, caps, sizeof caps - 1) < 0 ||
	    read_answer(s, NULL, false, NULL, NULL, 0) < 0) {
		err = errno ? errno : EPROTO;
		close(s);
		errno = err;
		return -1;
	}
	return s;
}

int qmp_listen(const char *dir, int *client, struct vs_err *e)
{
	struct sockaddr_un a;
	cleanup_free char *path = NULL;
	int dfd, l, c;

	if (asprintf(&path, "%s/qmp.sock", dir) < 0) {
		path = NULL;
		return vs_error(e, EX_OSERR, ENOMEM, "%s", dir), -1;
	}
	if (sock_addr(path, &a, &dfd) < 0)
		return vs_error(e, EX_OSERR, errno, "%s", dir), -1;
	unlinkat(dfd, "qmp.sock", 0);
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 ||
	    listen(l, 4) < 0) {
		vs_error(e, EX_OSERR, errno, "%s", path);
		if (l >= 0)
			close(l);
		close(dfd);
		return -1;
	}
	if (client == NULL) {
		close(dfd);
		return l;
	}
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
		vs_error(e, EX_OSERR, errno, "%s", path);
		if (c >= 0)
			close(c);
		close(l);
		close(dfd);
		return -1;
	}
	close(dfd);
	*client = c;
	return l;
}

/* Every command carries an id of its own, so that answers are told apart
 * on a connection the watchdog shares. */
static int execute_id(int s, const char *cmd, const char *id, json_t **ret,
    char *why, size_t n)
{
	char line[256];
	int len = snprintf(line, sizeof line,
	    "{\"execute\":\"%s\",\"id\":\"%s\"}\n", cmd, id);

	if (len < 0 || (size_t)len >= sizeof line) {
		errno = EINVAL;
		return -1;
	}
	if (send_all(s, line, (size_t)len) < 0)
		return -1;
	return read_answer(s, id, false, ret, why, n);
}

int qmp_execute(int s, const char *cmd, json_t **ret, char *why, size_t n)
{
	static unsigned seq;
	char id[48];

	snprintf(id, sizeof id, "vs-%ld-%u", (long)getpid(), ++seq);
	return execute_id(s, cmd, id, ret, why, n);
}

int qmp_command(int s, const char *cmd)
{
	return qmp_execute(s, cmd, NULL, NULL, 0) == 0 ? 0 : -1;
}

int qmp_running(int s, char *status, size_t n)
{
	json_t *r = NULL;
	int running;

	if (qmp_execute(s, "query-status", &r, NULL, 0) < 0)
		return -1;
	running = json_is_true(json_object_get(r, "running"));
	if (status && n) {
		const char *st = json_string_value(json_object_get(r, "status"));
		snprintf(status, n, "%s", st ? st : running ? "running" : "?");
	}
	json_decref(r);
	return running;
}

/* --- the pause and its watchdog ---------------------------------------- */

static void close_from(int from, int keep1, int keep2)
{
	for (int fd = from; fd < 1024; fd++)
		if (fd != keep1 && fd != keep2)
			close(fd);
#ifdef SYS_close_range
	syscall(SYS_close_range, 1024U, ~0U, 0);
#endif
}

/* The watchdog: a process of its own session, sharing the connection s.
 * It waits for 'D' (done: resumed) on rfd; when its end closes without it
 * (the pauser died) or the limit passes, it resumes the guest itself. */
static _Noreturn void watchdog(int rfd, int s, double limit, const char *orphan)
{
	struct pollfd p = { .fd = rfd, .events = POLLIN };
	int timeout = limit > 0 ? (int)(limit * 1000) : -1;
	char c = 0;
	int r;

	prctl(PR_SET_NAME, "qmp-watchdog", 0, 0, 0);
	while ((r = poll(&p, 1, timeout)) < 0 && errno == EINTR)
		;
	if (r > 0 && read(rfd, &c, 1) == 1 && c == 'D')
		_exit(0);
	/* (the answer may be read by a pauser that is only late; its own
	 * commands are told apart by their ids) */
	execute_id(s, "cont", "vs-watchdog-cont", NULL, NULL, 0);
	if (r != 0 && orphan)
		unlink(orphan);	/* the pauser is gone: its half-made file too */
	_exit(0);
}

int qmp_pause(int s, double limit, const char *orphan, struct qmp_pause *p,
    struct vs_err *e)
{
	char why[256] = "";
	int pfd[2], st, r;
	pid_t pid;

	p->s = s;
	p->watch = -1;
	p->ms = 0;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return vs_error(e, EX_OSERR, errno, "watchdog pipe");
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return vs_error(e, EX_OSERR, errno, "watchdog");
	}
	if (pid == 0) {
		/* (a session of its own: a kill of our process group, or
		 * the terminal's ^C, does not reach it) */
		static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
		    SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2 };
		int devnull;

		for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
			signal(sigs[i], sigs[i] == SIGPIPE ? SIG_IGN : SIG_DFL);
		setsid();
		if (fork() != 0)
			_exit(0);
		close(pfd[1]);
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		for (int fd = 0; fd <= 2; fd++)
			if (devnull >= 0 && fd != pfd[0] && fd != s)
				dup2(devnull, fd);
		close_from(3, pfd[0], s);
		watchdog(pfd[0], s, limit, orphan);
	}
	close(pfd[0]);
	while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	p->watch = pfd[1];
	p->t0 = run_clock();
	r = qmp_execute(s, "stop", NULL, why, sizeof why);
	if (r < 0) {
		int err = errno;
		/* the watchdog resumes it, should the stop have been taken */
		close(p->watch);
		p->watch = -1;
		if (r == -2)
			return vs_error(e, EX_UNAVAILABLE, 0,
			    "QEMU refused to pause the guest: %s", why);
		return vs_error(e, EX_UNAVAILABLE, err,
		    "no answer from QEMU to pause the guest");
	}
	return 0;
}

int qmp_still_paused(struct qmp_pause *p)
{
	int r = qmp_running(p->s, NULL, 0);

	return r < 0 ? -1 : !r;
}

int qmp_resume(struct qmp_pause *p, struct vs_err *e)
{
	char why[256] = "";
	int r;

	r = qmp_execute(p->s, "cont", NULL, why, sizeof why);
	p->ms = (run_clock() - p->t0) * 1000;
	if (r == 0 && p->watch >= 0) {
		ssize_t w = write(p->watch, "D", 1);
		(void)w;
	}
	if (p->watch >= 0)
		close(p->watch);
	p->watch = -1;
	if (r == -2)
		return vs_error(e, EX_UNAVAILABLE, 0,
		    "QEMU refused to resume the guest: %s", why);
	if (r < 0)
		return vs_error(e, EX_UNAVAILABLE, errno,
		    "no answer from QEMU to resume the guest");
	return 0;
}
