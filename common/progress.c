#include "progress.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>


bool progress_wanted(FILE *out, bool quiet)
{
	const char *term = getenv("TERM");
	const char *nc = getenv("NO_COLOR");

	if (quiet || !isatty(fileno(out)))
		return false;
	if (nc != NULL && *nc != '\0')
		return false;
	if (term != NULL && strcmp(term, "dumb") == 0)
		return false;
	return true;
}

void progress_start(struct progress *p, FILE *out, const char *label,
    uint64_t total, bool enabled)
{
	memset(p, 0, sizeof *p);
	p->out = out;
	p->label = label;
	p->total = total;
	p->enabled = enabled;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
}

static void human(uint64_t b, char *buf, size_t len)
{
	if (b >= (UINT64_C(1) << 30))
		snprintf(buf, len, "%.1fG", (double)b / (1 << 30));
	else
		snprintf(buf, len, "%.0fM", (double)b / (1 << 20));
}

void progress_update(struct progress *p, uint64_t done)
{
	struct timespec now;
	char a[32], b[32], r[32], bar[31];
	unsigned pct, fill;
	double secs;

	if (!p->enabled)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (p->drawn && done < p->total &&
	    (now.tv_sec - p->last.tv_sec) * 1000000000L +
	    (now.tv_nsec - p->last.tv_nsec) < 100000000L)
		return;
	p->last = now;
	if (done > p->total)
		done = p->total;
	pct = p->total ? (unsigned)(done * 100 / p->total) : 100;
	fill = pct * 30 / 100;
	memset(bar, '#', fill);
	memset(bar + fill, '.', 30 - fill);
	bar[30] = '\0';
	human(done, a, sizeof a);
	human(p->total, b, sizeof b);
	secs = (double)(now.tv_sec - p->start.tv_sec) +
	    (double)(now.tv_nsec - p->start.tv_nsec) / 1e9;
	human(secs > 0.05 ? (uint64_t)((double)done / secs) : 0, r, sizeof r);
	fprintf(p->out, "\r%s [%s] %3u%% %s/%s %s/s\033[K", p->label, bar, pct,
	    a, b, r);
	fflush(p->out);
	p->drawn = true;
}

void progress_end(struct progress *p)
{
	if (p->enabled && p->drawn) {
		fputs("\r\033[K", p->out);
		fflush(p->out);
	}
	p->drawn = false;
}
