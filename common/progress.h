/* progress.h: a progress line for long work, drawn only for a person: when
 * the stream is a terminal, TERM is not "dumb", NO_COLOR is unset and the
 * user did not ask for quiet (-q).  In a pipe, a log or CI it stays silent. */
#ifndef VS_PROGRESS_H
#define VS_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

struct progress {
	FILE *out;
	const char *label;
	uint64_t total;
	bool enabled;
	bool drawn;
	struct timespec start;
	struct timespec last;
};

/* Whether progress should be drawn on out. */
bool progress_wanted(FILE *out, bool quiet);

/* Start; enabled is progress_wanted()'s answer (tests force it). */
void progress_start(struct progress *p, FILE *out, const char *label,
    uint64_t total, bool enabled);

/* Redraw with done of total and the rate so far, at most ten times a
 * second. */
void progress_update(struct progress *p, uint64_t done);

/* Erase the line. */
void progress_end(struct progress *p);

#endif
