/* stop.c: signals as a request to stop (stop.h). */
#include <string.h>

#include "stop.h"

volatile sig_atomic_t stop_signal;
volatile sig_atomic_t stop_count;

static void on_stop(int sig)
{
	stop_signal = sig;
	stop_count = stop_count + 1;
}

void stop_on_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		if (sigaction(sigs[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
}

void stop_reraise(void)
{
	int sig = stop_signal;

	if (sig) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
}
