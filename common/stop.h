/* stop.h: SIGINT, SIGTERM and SIGHUP as a request to stop.  A tool that
 * has cleaning up to do (a temporary tree, a lock to release) installs
 * these handlers, checks stop_signal between steps, and ends with
 * stop_reraise() so that its caller sees it die by the signal.
 *
 * Waits in common/ (lock_path) give up with EX_TEMPFAIL "interrupted" when a
 * stop is requested, instead of waiting on. */
#ifndef VS_STOP_H
#define VS_STOP_H

#include <signal.h>

/* The signal that asked us to stop, or 0. */
extern volatile sig_atomic_t stop_signal;

/* How many such signals came (a second Ctrl-C: stop now, not cleanly). */
extern volatile sig_atomic_t stop_count;

/* Catch SIGINT, SIGTERM and SIGHUP into stop_signal, without SA_RESTART
 * (so that a blocking wait returns EINTR).  A signal the parent chose to
 * ignore (nohup) stays ignored. */
void stop_on_signals(void);

/* If a stop was requested, die by that signal (the default action). */
void stop_reraise(void);

#endif
