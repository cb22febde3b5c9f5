/* qmp.h: talk to a running QEMU through its QMP socket (run/NAME/qmp.sock,
 * which vmrun makes), and pause its guest for a moment without ever
 * leaving it paused.
 *
 * QMP is one JSON object per line: a greeting, then, for each command, its
 * answer ({"return": ...} or {"error": ...}), with events ({"event": ...})
 * in between at any time.  QEMU serves one connection at a time; others
 * wait in the listening socket's queue until it is closed.
 *
 * The pause (qmp_pause, qmp_resume) is crash-safe: before it sends "stop",
 * it starts a watchdog, a process of its own session that sends "cont" when
 * the one that paused the guest dies without resuming it (kill -9 too: the
 * watchdog sees its end of a pipe close), or when the pause outlasts its
 * limit.  `vmrun resume NAME` is the way back when even the watchdog is
 * gone. */
#ifndef VS_QMP_H
#define VS_QMP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "err.h"

/* Connect to the QMP socket sock (a path, any length: it is reached through
 * its directory) and negotiate capabilities; answers are awaited at most
 * timeout_ms.  Returns the socket, or -1 with errno set. */
int qmp_connect(const char *sock, int timeout_ms);

/* Make the QMP socket dir/qmp.sock for QEMU to be handed (-chardev
 * socket,fd=): returns the listening socket, and in *client (unless client
 * is NULL) one connected to it, the first connection QEMU will answer; -1
 * with e set on failure. */
int qmp_listen(const char *dir, int *client, struct vs_err *e);

/* Send the command cmd (no arguments) and wait for its answer, skipping
 * events.  Returns 0 with *ret (unless ret is NULL) the answer's "return"
 * value (the caller's reference); -1 with errno set when the connection
 * failed; -2 when QEMU answered with an error (its description in why,
 * unless why is NULL). */
int qmp_execute(int s, const char *cmd, json_t **ret, char *why, size_t n);

/* qmp_execute without the answer: 0 or -1. */
int qmp_command(int s, const char *cmd);

/* query-status: 1 when the guest runs, 0 when it does not (its status, as
 * QEMU names it, in status: "paused", "shutdown", ...), -1 on failure. */
int qmp_running(int s, char *status, size_t n);

struct qmp_pause {
	int s;			/* the connection that paused the guest */
	int watch;		/* our end of the watchdog's pipe, or -1 */
	double t0;		/* when "stop" was sent (run_clock) */
	double ms;		/* how long the guest was paused */
};

/* Pause the guest on connection s with a watchdog that resumes it if we
 * die, or after limit seconds (0: no limit) if we have not resumed it by
 * then; when we die, it also removes the file orphan (unless NULL: what
 * we were making while the guest was paused).  0 when the guest is
 * paused; -1 with e set (the guest left running) when it cannot be. */
int qmp_pause(int s, double limit, const char *orphan, struct qmp_pause *p,
    struct vs_err *e);

/* Whether the guest is still paused, as we left it (not resumed by the
 * watchdog, or by someone else): 1, 0, or -1 when QEMU does not say. */
int qmp_still_paused(struct qmp_pause *p);

/* Resume the guest ("cont") and let the watchdog go; p->ms is how long the
 * guest was paused.  -1 with e set when QEMU did not take the command (the
 * watchdog then tries in its turn). */
int qmp_resume(struct qmp_pause *p, struct vs_err *e);

#endif
