/* faultproxy: an HTTP proxy on loopback, in front of a real docker-registry,
 * that injects the faults oci-fetch must survive.  A test tool, not part of
 * vmstrap.
 *
 *   faultproxy -u UPSTREAM_PORT [-m MODE] [-n COUNT] [-r RATE] [-p PORTFILE]
 *              [-l LOGFILE] [-a USER:PASS]
 *
 * It listens on an ephemeral 127.0.0.1 port (written to PORTFILE) and
 * forwards each request to 127.0.0.1:UPSTREAM_PORT.  MODE changes the first
 * COUNT (default: all) responses to blob downloads (GET …/blobs/…):
 *
 *   pass      nothing
 *   corrupt   one byte of the body flipped
 *   truncate  a Content-Length and a body of half the blob: a whole answer,
 *             and a short one
 *   drop      the whole Content-Length, half the body, then the connection closed
 *   oversize  64 bytes more than the blob, and a Content-Length that says so
 *   500       HTTP 500
 *   429       HTTP 429 with Retry-After: 1
 *   slow      the body at RATE bytes a second
 *   stall     the response's head, then nothing, the connection held open
 *   hang      every request (not only blobs) is read and never answered, the
 *             connection held open until the client closes it
 *   redirect  307 to this proxy's /objects/…, as registries send downloads to
 *             object storage; /objects/ requests are served from upstream and
 *             logged to LOGFILE with whether they carried an Authorization
 *   bearer    every /v2/ request needs "Authorization: Bearer <token>", else
 *             401 with a Bearer challenge whose realm is this proxy's /token;
 *             /token gives the token (to USER:PASS only, with -a) and logs
 *             "/token issued" to LOGFILE
 *   expire    with bearer: a token is good for three requests, then a new
 *             one is needed
 *   norange   Range headers are not passed on: downloads restart from 0
 *   redirect401  with redirect: /objects/ answers 401 with a Bearer challenge
 *             whose realm is /evil-token; /evil-token requests are logged
 *             with whether they carried an Authorization
 *   up500, up429  an upload's PUT or PATCH (…/blobs/uploads/…) answered
 *             HTTP 500, or 429 with Retry-After: 1
 *   updrop    an upload's PATCH: half its body read, then the connection
 *             closed without an answer
 *   upredirect  an upload's Location (the answer to its POST) sent to
 *             http://localhost:PORT/objects/…: another host name; those
 *             requests are served and logged as redirect's are
 *
 * Modes combine with '+' (bearer+redirect).  When PORTFILE.mode exists, its
 * first line replaces MODE for the requests that follow.
 *
 * CONNECT host:port is tunnelled to upstream whatever the host, so that a
 * client can reach a TLS registry by any name through https_proxy.  Each
 * connection is served by a child process; COUNT is shared through a file. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

static int upstream_port;
static const char *mode = "pass";
static long count = -1;		/* faults left; -1: always */
static long rate = 65536;
static const char *logfile;
static const char *creds;	/* USER:PASS for /token */
static char counter[256];	/* file holding faults left */
static char modefile[256];	/* PORTFILE.mode */
static char modebuf[64];

static int has(const char *m)
{
	const char *p = strstr(mode, m);
	size_t n = strlen(m);

	return p && (p == mode || p[-1] == '+') && (p[n] == '\0' || p[n] == '+');
}
static int my_port;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Take one fault from the shared budget: 1 when this response gets it. */
static int take_fault(void)
{
	int fd = open(counter, O_RDWR);
	char buf[32] = "";
	long left;
	int hit = 0;

	if (fd < 0)
		return 0;
	flock(fd, LOCK_EX);
	if (read(fd, buf, sizeof buf - 1) < 0)
		buf[0] = '\0';
	left = strtol(buf, NULL, 10);
	if (left != 0) {
		hit = 1;
		if (left > 0) {
			left--;
			snprintf(buf, sizeof buf, "%ld\n", left);
			if (pwrite(fd, buf, strlen(buf), 0) < 0 || ftruncate(fd, (off_t)strlen(buf)) < 0)
				hit = 1;
		}
	}
	close(fd);
	return hit;
}

static void log_line(const char *path, const char *what)
{
	FILE *f;

	if (logfile == NULL || (f = fopen(logfile, "a")) == NULL)
		return;
	fprintf(f, "%s %s\n", path, what);
	fclose(f);
}

/* Read a request's head (up to the blank line). */
static int read_head(int fd, char *buf, size_t len)
{
	size_t n = 0;

	while (n + 1 < len) {
		ssize_t r = read(fd, buf + n, 1);
		if (r <= 0)
			return -1;
		n++;
		if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0) {
			buf[n] = '\0';
			return (int)n;
		}
	}
	return -1;
}

static const char *header(const char *head, const char *name, char *out,
    size_t len)
{
	const char *p = head;
	size_t nl = strlen(name);

	while ((p = strstr(p, "\r\n")) != NULL) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			snprintf(out, len, "%.*s", (int)strcspn(v, "\r\n"), v);
			return out;
		}
	}
	return NULL;
}

static int dial(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_port = htons((uint16_t)upstream_port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
		die("connect upstream");
	return fd;
}

static void tunnel(int c)
{
	int u = dial();
	char buf[65536];
	struct pollfd p[2] = { { c, POLLIN, 0 }, { u, POLLIN, 0 } };

	if (write_all(c, "HTTP/1.1 200 Connection established\r\n\r\n", 39) < 0)
		return;
	for (;;) {
		if (poll(p, 2, -1) < 0)
			return;
		for (int i = 0; i < 2; i++) {
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = read(p[i].fd, buf, sizeof buf);
				if (n <= 0 || write_all(p[1 - i].fd, buf, (size_t)n) < 0)
					return;
			}
		}
	}
}

/* Forward the request head (and the body of an upload, read from the
 * client c) to upstream and read the whole response.  The client's Host
 * goes on, so that the registry's Location headers name this proxy. */
static char *fetch_upstream(int c, const char *method, const char *path,
    const char *head, size_t *len)
{
	int u = dial();
	char req[8192], range[128], auth[1024], host[256], v[512];
	size_t cap = 1 << 16, n = 0;
	char *resp = malloc(cap);
	long long body = 0;
	int off;

	if (!header(head, "Host", host, sizeof host))
		snprintf(host, sizeof host, "127.0.0.1:%d", upstream_port);
	off = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: %s\r\n",
	    method, path, host);
	if (!has("norange") && header(head, "Range", range, sizeof range))
		off += snprintf(req + off, sizeof req - (size_t)off, "Range: %s\r\n", range);
	if (header(head, "Accept", auth, sizeof auth))
		off += snprintf(req + off, sizeof req - (size_t)off, "Accept: %s\r\n", auth);
	if (header(head, "Content-Type", v, sizeof v))
		off += snprintf(req + off, sizeof req - (size_t)off, "Content-Type: %s\r\n", v);
	if (header(head, "Content-Range", v, sizeof v))
		off += snprintf(req + off, sizeof req - (size_t)off, "Content-Range: %s\r\n", v);
	if (header(head, "Content-Length", v, sizeof v)) {
		body = atoll(v);
		off += snprintf(req + off, sizeof req - (size_t)off, "Content-Length: %lld\r\n", body);
	}
	snprintf(req + off, sizeof req - (size_t)off, "Connection: close\r\n\r\n");
	if (write_all(u, req, strlen(req)) < 0)
		die("write upstream");
	while (body > 0) {
		char buf[65536];
		ssize_t r = read(c, buf, (size_t)(body < (long long)sizeof buf ? body : (long long)sizeof buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || write_all(u, buf, (size_t)r) < 0)
			break;
		body -= r;
	}
	for (;;) {
		ssize_t r;
		if (n == cap && (resp = realloc(resp, cap *= 2)) == NULL)
			die("realloc");
		r = read(u, resp + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(u);
	*len = n;
	return resp;
}

/* Keep the connection open, saying nothing, until the client closes it. */
static void hold(int c)
{
	char buf[4096];

	while (read(c, buf, sizeof buf) > 0)
		;
}

static void reply(int c, const char *status, const char *extra)
{
	char buf[2048];

	snprintf(buf, sizeof buf, "HTTP/1.1 %s\r\nContent-Length: 0\r\n%sConnection: close\r\n\r\n",
	    status, extra ? extra : "");
	write_all(c, buf, strlen(buf));
}

/* Send a response whose head is head and body body (n bytes), with a new
 * Content-Length cl, and only the first send bytes of the body. */
static void send_response(int c, const char *head, size_t headlen,
    const char *body, size_t cl, size_t send, int slow)
{
	char out[16384];
	size_t o = 0;
	const char *p = head, *end = head + headlen;

	/* Copy the head without Content-Length and Connection. */
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		if (strncasecmp(p, "Content-Length:", 15) != 0 &&
		    strncasecmp(p, "Connection:", 11) != 0 && l > 2 &&
		    o + l < sizeof out) {
			memcpy(out + o, p, l);
			o += l;
		}
		p += l;
	}
	o += (size_t)snprintf(out + o, sizeof out - o,
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n", cl);
	if (write_all(c, out, o) < 0)
		return;
	if (!slow) {
		write_all(c, body, send);
		return;
	}
	for (size_t done = 0; done < send; ) {
		size_t chunk = (size_t)(rate / 10 > 0 ? rate / 10 : 1);
		struct timespec t = { 0, 100000000L };
		if (chunk > send - done)
			chunk = send - done;
		if (write_all(c, body + done, chunk) < 0)
			return;
		done += chunk;
		nanosleep(&t, NULL);
	}
}

/* The current token's number and its uses, shared in PORTFILE.token. */
static char tokenfile[256];

static long token_state(int use)
{
	int fd = open(tokenfile, O_RDWR | O_CREAT, 0644);
	char buf[64] = "";
	long n = 0, uses = 0;

	if (fd < 0)
		return 0;
	flock(fd, LOCK_EX);
	if (read(fd, buf, sizeof buf - 1) > 0)
		sscanf(buf, "%ld %ld", &n, &uses);
	if (use) {
		uses++;
		if (has("expire") && uses > 3) {
			n++;
			uses = 0;
		}
		snprintf(buf, sizeof buf, "%ld %ld\n", n, uses);
		if (pwrite(fd, buf, strlen(buf), 0) < 0 ||
		    ftruncate(fd, (off_t)strlen(buf)) < 0)
			n = -1;
	}
	close(fd);
	return n;
}

/* A token for pull is vmstrap-token-N, for push too vmstrap-token-N-push:
 * a write (push) needs the second. */
static int bearer_ok(const char *head, int write)
{
	char a[512], want[64];
	long n = token_state(0);

	snprintf(want, sizeof want, "Bearer vmstrap-token-%ld", n);
	if (!header(head, "Authorization", a, sizeof a) ||
	    strncmp(a, want, strlen(want)) != 0 ||
	    (a[strlen(want)] != '\0' && strcmp(a + strlen(want), "-push") != 0) ||
	    (write && strcmp(a + strlen(want), "-push") != 0))
		return 0;
	/* A use that wears the token out is refused: it must be renewed. */
	return token_state(1) == n;
}

static void serve_token(int c, const char *head, const char *path)
{
	char body[128];
	char a[512], want[1024], buf[1024];
	unsigned char b64[512];

	if (creds) {
		EVP_EncodeBlock(b64, (const unsigned char *)creds, (int)strlen(creds));
		snprintf(want, sizeof want, "Basic %s", b64);
		if (!header(head, "Authorization", a, sizeof a) || strcmp(a, want) != 0) {
			reply(c, "401 Unauthorized", NULL);
			return;
		}
	}
	snprintf(body, sizeof body, "{\"token\":\"vmstrap-token-%ld%s\",\"expires_in\":300}",
	    token_state(0), strstr(path, "push") ? "-push" : "");
	log_line("/token", "issued");
	{
		/* (the scope asked for: push, for an upload) */
		const char *q = strstr(path, "scope=");
		char scope[256];
		snprintf(scope, sizeof scope, "%.*s", q ? (int)strcspn(q, "& ") : 4,
		    q ? q : "none");
		log_line("/token-scope", scope);
	}
	snprintf(buf, sizeof buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(body), body);
	write_all(c, buf, strlen(buf));
}

static void serve(int c)
{
	char head[16384], method[16], path[4096], a[512];
	size_t n, hl;
	char *resp, *body;
	int blob, is_get, object = 0;

	if (read_head(c, head, sizeof head) < 0 ||
	    sscanf(head, "%15s %4095s", method, path) != 2)
		return;
	{
		FILE *mf = fopen(modefile, "r");
		if (mf) {
			if (fgets(modebuf, sizeof modebuf, mf)) {
				modebuf[strcspn(modebuf, "\r\n")] = '\0';
				mode = modebuf;
			}
			fclose(mf);
		}
	}
	if (strcmp(method, "CONNECT") == 0) {
		tunnel(c);
		return;
	}
	if (has("hang") && take_fault()) {
		hold(c);
		return;
	}
	/* A proxy request carries an absolute URL: keep its path. */
	if (strncmp(path, "http://", 7) == 0) {
		char *s = strchr(path + 7, '/');
		memmove(path, s ? s : "/", strlen(s ? s : "/") + 1);
	}
	if (strcmp(path, "/token") == 0 || strncmp(path, "/token?", 7) == 0) {
		serve_token(c, head, path);
		return;
	}
	if (strncmp(path, "/evil-token", 11) == 0) {
		log_line("/evil-token", header(head, "Authorization", a, sizeof a) ?
		    "with-authorization" : "without-authorization");
		reply(c, "200 OK", NULL);
		return;
	}
	if (strncmp(path, "/objects/", 9) == 0 && has("redirect401")) {
		char ch[512];
		log_line(path, header(head, "Authorization", a, sizeof a) ?
		    "with-authorization" : "without-authorization");
		snprintf(ch, sizeof ch,
		    "WWW-Authenticate: Bearer realm=\"http://localhost:%d/evil-token\",service=\"evil\"\r\n",
		    my_port);
		reply(c, "401 Unauthorized", ch);
		return;
	}
	if (strncmp(path, "/objects/", 9) == 0) {
		log_line(path, header(head, "Authorization", a, sizeof a) ?
		    "with-authorization" : "without-authorization");
		memmove(path, path + 8, strlen(path + 8) + 1);
		object = 1;
	} else if (has("bearer") && !bearer_ok(head, strcmp(method, "GET") != 0 &&
	    strcmp(method, "HEAD") != 0)) {
		char ch[700], repo[256] = "test";
		const char *r = strncmp(path, "/v2/", 4) == 0 ? path + 4 : NULL;
		const char *end = r ? strstr(r, "/blobs/") : NULL;
		/* (as a registry does: the repository asked, push for writes) */
		if (end == NULL && r)
			end = strstr(r, "/manifests/");
		if (r && end && end - r < (long)sizeof repo)
			snprintf(repo, sizeof repo, "%.*s", (int)(end - r), r);
		snprintf(ch, sizeof ch,
		    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:%d/token\",service=\"faultproxy\",scope=\"repository:%s:%s\"\r\n",
		    my_port, repo, strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ?
		    "pull" : "pull,push");
		reply(c, "401 Unauthorized", ch);
		return;
	}
	is_get = strcmp(method, "GET") == 0;
	blob = is_get && strstr(path, "/blobs/") != NULL &&
	    strncmp(path, "/v2/", 4) == 0;
	if (blob && !object && has("redirect")) {
		char loc[4200];
		snprintf(loc, sizeof loc, "Location: http://localhost:%d/objects%s\r\n",
		    my_port, path);
		reply(c, "307 Temporary Redirect", loc);
		return;
	}
	if (blob && (has("500") || has("429")) && take_fault()) {
		if (has("500"))
			reply(c, "500 Internal Server Error", NULL);
		else
			reply(c, "429 Too Many Requests", "Retry-After: 1\r\n");
		return;
	}
	{
		/* uploads (PATCH and PUT of a blob): 5xx, 429, or the
		 * connection dropped in the middle of the body */
		int upload = (strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0) &&
		    strstr(path, "/blobs/uploads/") != NULL;
		if (upload && (has("up500") || has("up429") ||
		    (has("updrop") && strcmp(method, "PATCH") == 0)) && take_fault()) {
			char v[64];
			log_line(path, method);
			if (has("updrop")) {
				long long cl = header(head, "Content-Length", v, sizeof v) ?
				    atoll(v) : 0;
				char buf[65536];
				for (long long got = 0; got < cl / 2; ) {
					ssize_t r = read(c, buf, sizeof buf);
					if (r <= 0)
						break;
					got += r;
				}
				return;	/* (closed, no answer) */
			}
			if (has("up500"))
				reply(c, "500 Internal Server Error", NULL);
			else
				reply(c, "429 Too Many Requests", "Retry-After: 1\r\n");
			return;
		}
	}
	resp = fetch_upstream(c, method, path, head, &n);
	if (has("upredirect") && strcmp(method, "POST") == 0 &&
	    strstr(path, "/blobs/uploads/")) {
		/* the upload sent elsewhere, as registries send uploads to
		 * object storage: Location on another host name */
		char *loc = memmem(resp, n, "\r\nLocation: http://", 19), *end, *v;
		if (loc && (end = memmem(loc + 2, n - (size_t)(loc + 2 - resp), "\r\n", 2)) != NULL &&
		    (v = memmem(loc + 19, (size_t)(end - (loc + 19)), "/v2/", 4)) != NULL) {
			char nl[300];
			int k = snprintf(nl, sizeof nl, "\r\nLocation: http://localhost:%d/objects",
			    my_port);
			size_t head_len = (size_t)(loc - resp), tail = n - (size_t)(v - resp);
			char *nr = malloc(head_len + (size_t)k + tail + 1);
			memcpy(nr, resp, head_len);
			memcpy(nr + head_len, nl, (size_t)k);
			memcpy(nr + head_len + (size_t)k, v, tail);
			free(resp);
			resp = nr;
			n = head_len + (size_t)k + tail;
		}
	}
	body = memmem(resp, n, "\r\n\r\n", 4);
	if (body == NULL) {
		write_all(c, resp, n);
		free(resp);
		return;
	}
	body += 4;
	hl = (size_t)(body - resp);
	n -= hl;
	if (!blob || n + hl < 12 || strncmp(resp + 9, "200", 3) != 0 ||
	    !(has("corrupt") || has("truncate") || has("drop") ||
	    has("oversize") || has("slow") || has("stall")) ||
	    (!has("slow") && !take_fault())) {
		send_response(c, resp, hl, body, n, n, 0);
	} else if (has("corrupt")) {
		if (n > 0)
			body[n / 2] ^= 0x5a;
		send_response(c, resp, hl, body, n, n, 0);
	} else if (has("truncate")) {
		send_response(c, resp, hl, body, n / 2, n / 2, 0);
	} else if (has("drop")) {
		send_response(c, resp, hl, body, n, n / 2, 0);
	} else if (has("oversize")) {
		char *big = malloc(n + 64);
		memcpy(big, body, n);
		memset(big + n, 'x', 64);
		send_response(c, resp, hl, big, n + 64, n + 64, 0);
		free(big);
	} else if (has("slow")) {
		send_response(c, resp, hl, body, n, n, 1);
	} else if (has("stall")) {
		send_response(c, resp, hl, body, n, 0, 0);
		hold(c);
	} else {
		send_response(c, resp, hl, body, n, n, 0);
	}
	free(resp);
}

int main(int argc, char *argv[])
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof a;
	const char *portfile = NULL;
	int s, c, opt, one = 1;
	FILE *f;

	while ((opt = getopt(argc, argv, "u:m:n:r:p:l:a:")) != -1) {
		switch (opt) {
		case 'u': upstream_port = atoi(optarg); break;
		case 'm': mode = optarg; break;
		case 'n': count = atol(optarg); break;
		case 'r': rate = atol(optarg); break;
		case 'p': portfile = optarg; break;
		case 'l': logfile = optarg; break;
		case 'a': creds = optarg; break;
		default:
			fprintf(stderr, "usage: faultproxy -u PORT [-m MODE] [-n COUNT] [-r RATE] [-p PORTFILE] [-l LOG] [-a USER:PASS]\n");
			return 64;
		}
	}
	if (upstream_port <= 0 || portfile == NULL) {
		fprintf(stderr, "faultproxy: -u PORT and -p PORTFILE are needed\n");
		return 64;
	}
	snprintf(counter, sizeof counter, "%s.count", portfile);
	snprintf(modefile, sizeof modefile, "%s.mode", portfile);
	snprintf(tokenfile, sizeof tokenfile, "%s.token", portfile);
	if ((f = fopen(counter, "w")) == NULL)
		die(counter);
	fprintf(f, "%ld\n", count);
	fclose(f);
	signal(SIGCHLD, SIG_IGN);
	s = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 64) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &al) < 0)
		die("listen");
	my_port = ntohs(a.sin_port);
	{
		char tmp[512];
		snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
		if ((f = fopen(tmp, "w")) == NULL)
			die(tmp);
		fprintf(f, "%d\n", my_port);
		fclose(f);
		rename(tmp, portfile);
	}
	for (;;) {
		c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			die("accept");
		}
		if (fork() == 0) {
			close(s);
			serve(c);
			close(c);
			_exit(0);
		}
		close(c);
	}
}
