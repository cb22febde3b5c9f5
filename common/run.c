#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "path.h"

extern char **environ;

static int executable(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
	    access(p, X_OK) == 0;
}

char *run_find(const char *prog, const char *pkg, struct vs_err *e)
{
	const char *env = getenv("PATH");
	char *paths, *save = NULL;

	if (asprintf(&paths, "%s:/usr/sbin:/sbin", env ? env : "/usr/bin:/bin") < 0)
		return vs_error(e, EX_OSERR, ENOMEM, "%s", prog), NULL;
	for (char *d = strtok_r(paths, ":", &save); d;
	    d = strtok_r(NULL, ":", &save)) {
		char *p = path_join(*d ? d : ".", prog);
		if (p && executable(p)) {
			/* (absolute: a tool may change directory before it
			 * runs it, and a relative PATH entry would then name
			 * another program) */
			char *abs = *p == '/' ? NULL : realpath(p, NULL);
			free(paths);
			if (abs) {
				free(p);
				return abs;
			}
			return p;
		}
		free(p);
	}
	free(paths);
	return vs_error(e, EX_UNAVAILABLE, 0,
	    "%s not found (install the Debian package %s)", prog, pkg), NULL;
}

int run_capture(const char *const argv[], int *status, char *out, size_t outlen,
    struct vs_err *e)
{
	/* posix_spawn's argv is not const-qualified, but is not written. */
	union { const char *const *c; char *const *v; } args = { .c = argv };
	posix_spawn_file_actions_t fa;
	char buf[4096], last[512] = "";
	size_t lastlen = 0;
	int p[2], rc, ws;
	pid_t pid;

#ifdef __linux__
	if (pipe2(p, O_CLOEXEC) < 0)
		return vs_error(e, EX_OSERR, errno, "pipe");
#else
	if (pipe(p) < 0)
		return vs_error(e, EX_OSERR, errno, "pipe");
	fcntl(p[0], F_SETFD, FD_CLOEXEC);
	fcntl(p[1], F_SETFD, FD_CLOEXEC);
#endif
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	rc = posix_spawn(&pid, argv[0], &fa, NULL, args.v, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc != 0) {
		close(p[0]);
		return vs_error(e, rc == ENOENT ? EX_UNAVAILABLE : EX_OSERR, rc,
		    "%s", argv[0]);
	}
	for (;;) {
		ssize_t n = read(p[0], buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		/* Keep the last non-empty line. */
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				if (lastlen > 0 && out) {
					memcpy(out, last, lastlen < outlen ? lastlen : outlen - 1);
					out[lastlen < outlen ? lastlen : outlen - 1] = '\0';
				}
				lastlen = 0;
			} else if (lastlen < sizeof last - 1) {
				last[lastlen++] = buf[i];
			}
		}
	}
	close(p[0]);
	if (lastlen > 0 && out) {
		memcpy(out, last, lastlen < outlen ? lastlen : outlen - 1);
		out[lastlen < outlen ? lastlen : outlen - 1] = '\0';
	}
	while (waitpid(pid, &ws, 0) < 0) {
		if (errno != EINTR)
			return vs_error(e, EX_OSERR, errno, "%s: wait", argv[0]);
	}
	*status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
	return 0;
}

double run_clock(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}
