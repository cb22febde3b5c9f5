#include "registry.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "creds.h"
#include "doc.h"
#include "path.h"

#define ACCEPT_MANIFESTS "Accept: application/vnd.oci.image.index.v1+json, " \
	"application/vnd.oci.image.manifest.v1+json, " \
	"application/vnd.docker.distribution.manifest.list.v2+json, " \
	"application/vnd.docker.distribution.manifest.v2+json"
#define USER_AGENT "vmstrap/" "0.1"
#define ATTEMPTS 6		/* tries of one request before giving up */
#define ERRBODY_MAX 4096	/* what is kept of an error's body */
#define WBUF (1u << 20)		/* a download's write buffer */

/* The silence of a request or a blob download, across its tries: heard is
 * when it last made progress (body bytes, or a whole answer); a try that
 * lasts until heard + timeout is ended, expired. */
struct watch {
	double heard;
	long timeout;
	bool expired;
};

struct registry {
	struct oci_ref ref;
	char host[256];		/* the API's host[:port] */
	char base[300];		/* scheme://host */
	bool insecure;
	bool https_failed;	/* insecure: fell back to plain HTTP */
	char *user, *pass;	/* credentials, when a file has them */
	bool creds_looked;
	bool push;		/* tokens are asked for push as well as pull */
	char *authz;		/* "Authorization: …" header, or NULL */
	CURL *curl;
	char cainfo[1024];
	long timeout;		/* seconds of silence before giving up */
	struct watch w;		/* of the request under way */
};

/* What a response told us. */
struct resp {
	long status;
	char *body;
	size_t len, cap, max;
	bool overflow;
	char ctype[128];
	char digest[DIGEST_MAX];
	char location[2048];
	char www_auth[1024];
	char range[128];	/* Content-Range */
	long retry_after;	/* seconds, or -1 */
	bool chunked;		/* Transfer-Encoding: chunked */
	struct watch *w;	/* told of the body's bytes, or NULL */
	CURLcode cc;		/* how the transfer ended */
	char errbuf[CURL_ERROR_SIZE];
};

/* Transport failures worth another try: not a certificate, a bad URL or a
 * protocol the server does not speak. */
static bool transient(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return true;
	default:
		return false;
	}
}

static bool curl_ready;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void nap(double seconds)
{
	struct timespec t;

	t.tv_sec = (time_t)seconds;
	t.tv_nsec = (long)((seconds - (double)t.tv_sec) * 1e9);
	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* Backoff before try n (from 1): 0.25 s, doubling, at most 8 s, or what
 * Retry-After asked (at most 60 s). */
static double backoff(int n, long retry_after)
{
	double d = 0.25;

	if (retry_after >= 0)
		return retry_after > 60 ? 60 : (double)retry_after;
	for (int i = 1; i < n && d < 8; i++)
		d *= 2;
	return d > 8 ? 8 : d;
}

struct registry *registry_open(const struct oci_ref *ref, bool insecure,
    long timeout, struct vs_err *e)
{
	struct registry *r;
	const char *ca;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
			return vs_error(e, EX_OSERR, 0, "cannot initialise libcurl"),
			    NULL;
		curl_ready = true;
	}
	r = calloc(1, sizeof *r);
	if (r == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "registry"), NULL;
	r->ref = *ref;
	r->insecure = insecure;
	r->timeout = timeout > 0 ? timeout : REGISTRY_TIMEOUT;
	snprintf(r->host, sizeof r->host, "%s", ref_api_host(ref));
	snprintf(r->base, sizeof r->base, "%s://%s",
	    ref_is_loopback(ref) ? "http" : "https", r->host);
	/* libcurl leaves these to its command-line tool; honour them here. */
	if ((ca = getenv("CURL_CA_BUNDLE")) && *ca)
		snprintf(r->cainfo, sizeof r->cainfo, "%s", ca);
	else if ((ca = getenv("SSL_CERT_FILE")) && *ca)
		snprintf(r->cainfo, sizeof r->cainfo, "%s", ca);
	r->curl = curl_easy_init();
	if (r->curl == NULL) {
		free(r);
		return vs_error(e, EX_OSERR, ENOMEM, "curl"), NULL;
	}
	return r;
}

static void wipe_free(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

void registry_close(struct registry *r)
{
	if (r == NULL)
		return;
	if (r->curl)
		curl_easy_cleanup(r->curl);
	wipe_free(r->user);
	wipe_free(r->pass);
	wipe_free(r->authz);
	free(r);
}

void manifest_free(struct manifest *m)
{
	free(m->body);
	m->body = NULL;
}

/* ---- one request at a time ---- */

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
	struct resp *rs = arg;
	size_t len = size * n;
	char line[2048];
	char *v;

	snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len :
	    sizeof line - 1), buf);
	line[strcspn(line, "\r\n")] = '\0';
	if (strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue, say). */
		rs->ctype[0] = rs->digest[0] = rs->location[0] = '\0';
		rs->www_auth[0] = rs->range[0] = '\0';
		rs->retry_after = -1;
		rs->chunked = false;
		return len;
	}
	v = strchr(line, ':');
	if (v == NULL)
		return len;
	*v++ = '\0';
	while (*v == ' ' || *v == '\t')
		v++;
	if (strcasecmp(line, "Content-Type") == 0)
		snprintf(rs->ctype, sizeof rs->ctype, "%.*s",
		    (int)strcspn(v, "; "), v);
	else if (strcasecmp(line, "Docker-Content-Digest") == 0)
		snprintf(rs->digest, sizeof rs->digest, "%s", v);
	else if (strcasecmp(line, "Location") == 0)
		snprintf(rs->location, sizeof rs->location, "%s", v);
	else if (strcasecmp(line, "WWW-Authenticate") == 0)
		snprintf(rs->www_auth, sizeof rs->www_auth, "%s", v);
	else if (strcasecmp(line, "Content-Range") == 0)
		snprintf(rs->range, sizeof rs->range, "%s", v);
	else if (strcasecmp(line, "Retry-After") == 0 && isdigit((unsigned char)*v))
		rs->retry_after = strtol(v, NULL, 10);
	else if (strcasecmp(line, "Transfer-Encoding") == 0 &&
	    strcasestr(v, "chunked"))
		rs->chunked = true;
	return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
	struct resp *rs = arg;
	size_t len = size * n;

	if (rs->w)
		rs->w->heard = now();
	if (rs->len + len > rs->max) {
		rs->overflow = true;
		return 0;
	}
	if (rs->len + len + 1 > rs->cap) {
		size_t cap = rs->cap ? rs->cap : 4096;
		char *nb;
		while (cap < rs->len + len + 1)
			cap *= 2;
		nb = realloc(rs->body, cap);
		if (nb == NULL)
			return 0;
		rs->body = nb;
		rs->cap = cap;
	}
	memcpy(rs->body + rs->len, buf, len);
	rs->len += len;
	rs->body[rs->len] = '\0';
	return len;
}

/* Whether url is the registry's own, by scheme and host: the only place
 * its credentials and tokens go. */
static bool own_host(const struct registry *r, const char *url)
{
	size_t n = strlen(r->base);

	return strncmp(url, r->base, n) == 0 && (url[n] == '/' || url[n] == '\0');
}

/* Replace url with where a Location header sends it (maybe relative). */
static void follow(char *url, size_t len, const char *location)
{
	char *u = NULL;
	CURLU *h = curl_url();

	if (h == NULL)
		return;
	curl_url_set(h, CURLUPART_URL, url, 0);
	if (curl_url_set(h, CURLUPART_URL, location, 0) == CURLUE_OK &&
	    curl_url_get(h, CURLUPART_URL, &u, 0) == CURLUE_OK)
		snprintf(url, len, "%s", u);
	curl_free(u);
	curl_url_cleanup(h);
}

/* curl's progress callback: end the try once w's time is up. */
static int on_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct watch *w = arg;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (now() - w->heard >= (double)w->timeout) {
		w->expired = true;
		return 1;
	}
	return 0;
}

/* The error for a registry that stayed silent for all of r->timeout. */
static int no_answer(const struct registry *r, const char *what,
    struct vs_err *e)
{
	return vs_error(e, EX_UNAVAILABLE, 0, "no answer from %s in %ld s%s%s",
	    r->ref.registry, r->timeout, what ? ", for " : "", what ? what : "");
}

/* Options every request of ours has; w watches its silence. */
static void common_options(const struct registry *r, CURL *c, const char *url,
    char *errbuf, struct watch *w)
{
	/* A try that stalls below 1 KB/s for half the time allowed (at most
	 * 60 s) is a dropped one, tried again while time is left. */
	long stall = r->timeout / 2 < 1 ? 1 : r->timeout / 2 > 60 ? 60 :
	    r->timeout / 2;

	w->timeout = r->timeout;
	w->expired = false;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, r->timeout < 30 ?
	    r->timeout : 30L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, stall);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, w);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(c, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	errbuf[0] = '\0';
	if (r->cainfo[0])
		curl_easy_setopt(c, CURLOPT_CAINFO, r->cainfo);
	if (r->insecure && own_host(r, url)) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
}

/* The registry's own words from an error body: "CODE: message". */
static void registry_says(const struct resp *rs, char *out, size_t len)
{
	cleanup_json json_t *j = NULL;
	json_t *err;

	out[0] = '\0';
	if (rs->body == NULL)
		return;
	j = json_loadb(rs->body, rs->len, 0, NULL);
	err = json_array_get(json_object_get(j, "errors"), 0);
	if (err)
		snprintf(out, len, "%s%s%s",
		    json_string_value(json_object_get(err, "code")) ?
		    json_string_value(json_object_get(err, "code")) : "",
		    json_string_value(json_object_get(err, "message")) ? ": " : "",
		    json_string_value(json_object_get(err, "message")) ?
		    json_string_value(json_object_get(err, "message")) : "");
}

/* One plain request; transport failures are returned as -1 with e set
 * (EX_UNAVAILABLE), HTTP statuses in rs->status. */
static int request(struct registry *r, const char *url, bool head,
    const char *accept, const char *userpass, struct resp *rs,
    struct vs_err *e)
{
	struct curl_slist *h = NULL;
	CURLcode cc;

	free(rs->body);
	memset(rs, 0, sizeof *rs);
	rs->retry_after = -1;
	rs->max = MANIFEST_MAX;
	rs->w = &r->w;
	curl_easy_reset(r->curl);
	common_options(r, r->curl, url, rs->errbuf, &r->w);
	curl_easy_setopt(r->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(r->curl, CURLOPT_HEADERDATA, rs);
	curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, rs);
	if (head)
		curl_easy_setopt(r->curl, CURLOPT_NOBODY, 1L);
	if (accept)
		h = curl_slist_append(h, accept);
	if (userpass) {
		curl_easy_setopt(r->curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(r->curl, CURLOPT_USERPWD, userpass);
	} else if (r->authz && own_host(r, url)) {
		h = curl_slist_append(h, r->authz);
	}
	curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, h);
	cc = curl_easy_perform(r->curl);
	rs->cc = cc;
	curl_slist_free_all(h);
	if (r->w.expired)
		return no_answer(r, NULL, e);
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && rs->overflow))
		return vs_error(e, EX_UNAVAILABLE, 0, "%s: %s", r->ref.registry,
		    rs->errbuf[0] ? rs->errbuf : curl_easy_strerror(cc));
	r->w.heard = now();	/* an answer */
	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &rs->status);
	return 0;
}

/* Read name="value" (or name=value) from a challenge's parameters. */
static bool challenge_param(const char *ch, const char *name, char *out,
    size_t len)
{
	size_t nl = strlen(name);
	const char *p = ch;

	while ((p = strcasestr(p, name)) != NULL) {
		if ((p == ch || p[-1] == ' ' || p[-1] == ',') && p[nl] == '=') {
			const char *v = p + nl + 1;
			size_t n;
			if (*v == '"') {
				v++;
				n = strcspn(v, "\"");
			} else {
				n = strcspn(v, ", ");
			}
			snprintf(out, len, "%.*s", (int)n, v);
			return true;
		}
		p += nl;
	}
	return false;
}

static int load_creds(struct registry *r, struct vs_err *e)
{
	if (r->creds_looked)
		return 0;
	r->creds_looked = true;
	return creds_find(r->ref.registry, &r->user, &r->pass, NULL, e) < 0 ? -1 : 0;
}

/* Answer a 401's challenge: get a token, or use Basic credentials. */
static int authenticate(struct registry *r, const char *challenge,
    struct vs_err *e)
{
	char realm[1024], service[256] = "", scope[512] = "", url[2048];
	cleanup_free char *userpass = NULL;
	struct resp rs = { 0 };
	int rc = -1;

	if (load_creds(r, e) < 0)
		return -1;
	if (r->user && asprintf(&userpass, "%s:%s", r->user, r->pass) < 0) {
		userpass = NULL;
		return vs_error(e, EX_OSERR, ENOMEM, "credentials");
	}
	wipe_free(r->authz);
	r->authz = NULL;

	if (strncasecmp(challenge, "Basic", 5) == 0) {
		unsigned char b64[1024];
		if (userpass == NULL)
			return vs_error(e, EX_NOPERM, 0,
			    "%s asks for a user name and password, and no credentials for it were found (docker login or podman login %s)",
			    r->ref.registry, r->ref.registry);
		if (strlen(userpass) > 700)
			return vs_error(e, EX_CONFIG, 0, "credentials for %s are too long",
			    r->ref.registry);
		EVP_EncodeBlock(b64, (const unsigned char *)userpass,
		    (int)strlen(userpass));
		if (asprintf(&r->authz, "Authorization: Basic %s", b64) < 0)
			r->authz = NULL;
		memset(b64, 0, sizeof b64);
		return r->authz ? 0 : vs_error(e, EX_OSERR, ENOMEM, "auth");
	}
	if (strncasecmp(challenge, "Bearer", 6) != 0 ||
	    !challenge_param(challenge, "realm", realm, sizeof realm))
		return vs_error(e, EX_UNAVAILABLE, 0,
		    "%s: unsupported authentication challenge '%.40s'",
		    r->ref.registry, challenge);
	challenge_param(challenge, "service", service, sizeof service);
	if (!challenge_param(challenge, "scope", scope, sizeof scope))
		snprintf(scope, sizeof scope, "repository:%s:%s", r->ref.repository,
		    r->push ? "pull,push" : "pull");
	{
		char *s = curl_easy_escape(r->curl, service, 0);
		char *q = curl_easy_escape(r->curl, scope, 0);
		snprintf(url, sizeof url, "%s%sservice=%s&scope=%s", realm,
		    strchr(realm, '?') ? "&" : "?", s ? s : "", q ? q : "");
		curl_free(s);
		curl_free(q);
	}
	if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) {
		return vs_error(e, EX_UNAVAILABLE, 0,
		    "%s: the token realm is not an http(s) URL", r->ref.registry);
	}
	/* A password goes over TLS only, unless the registry is on this
	 * machine or was named insecure. */
	if (userpass && strncmp(url, "http://", 7) == 0 &&
	    !ref_is_loopback(&r->ref) && !r->insecure)
		return vs_error(e, EX_UNAVAILABLE, 0,
		    "%s: its token service is plain HTTP; credentials are not sent over it",
		    r->ref.registry);
	r->w.heard = now();
	if (request(r, url, false, NULL, userpass, &rs, e) < 0) {
		if (r->w.expired)
			vs_error(e, EX_UNAVAILABLE, 0,
			    "no answer from the token service of %s in %ld s",
			    r->ref.registry, r->timeout);
		goto out;
	}
	if (rs.status == 401 || rs.status == 403) {
		vs_error(e, EX_NOPERM, 0, "%s: the token service refused %s (HTTP %ld)",
		    r->ref.registry, userpass ? "the credentials" :
		    "an anonymous token; log in with docker login or podman login",
		    rs.status);
		goto out;
	}
	if (rs.status != 200) {
		vs_error(e, EX_UNAVAILABLE, 0, "%s: the token service answered HTTP %ld",
		    r->ref.registry, rs.status);
		goto out;
	}
	{
		cleanup_json json_t *j = json_loadb(rs.body ? rs.body : "", rs.len, 0, NULL);
		const char *tok = json_string_value(json_object_get(j, "token"));
		if (tok == NULL || *tok == '\0')
			tok = json_string_value(json_object_get(j, "access_token"));
		if (tok == NULL || *tok == '\0' || strpbrk(tok, "\r\n")) {
			vs_error(e, EX_UNAVAILABLE, 0,
			    "%s: the token service gave no token", r->ref.registry);
			goto out;
		}
		if (asprintf(&r->authz, "Authorization: Bearer %s", tok) < 0) {
			r->authz = NULL;
			vs_error(e, EX_OSERR, ENOMEM, "auth");
			goto out;
		}
	}
	rc = 0;
out:
	if (rs.body)
		memset(rs.body, 0, rs.len);
	free(rs.body);
	return rc;
}

/* A request that authenticates when asked, follows the registry's redirects
 * (without credentials to other hosts) and retries what may pass. */
static int authed_request(struct registry *r, const char *path, bool head,
    const char *accept, struct resp *rs, struct vs_err *e)
{
	char url[2048];
	bool authed = false;
	int redirects = 0;

	snprintf(url, sizeof url, "%s%s", r->base, path);
	r->w.heard = now();
	for (int attempt = 1;; attempt++) {
		if (request(r, url, head, accept, NULL, rs, e) < 0) {
			double d = backoff(attempt, -1);

			/* --insecure: a registry that does not speak TLS. */
			if (r->insecure && !r->https_failed &&
			    strncmp(url, "https://", 8) == 0 && own_host(r, url)) {
				r->https_failed = true;
				snprintf(r->base, sizeof r->base, "http://%s", r->host);
				snprintf(url, sizeof url, "%s%s", r->base, path);
				r->w.heard = now();
				continue;
			}
			if (r->w.expired || attempt >= ATTEMPTS ||
			    !transient(rs->cc))
				return -1;
			/* Silent for all the time there is: no more tries. */
			if (now() + d - r->w.heard >= (double)r->timeout)
				return no_answer(r, NULL, e);
			nap(d);
			continue;
		}
		if (rs->status == 401 && !authed && rs->www_auth[0] &&
		    own_host(r, url)) {
			authed = true;
			if (authenticate(r, rs->www_auth, e) < 0)
				return -1;
			attempt--;
			continue;
		}
		if (rs->status >= 300 && rs->status < 400 && rs->location[0] &&
		    redirects++ < 5) {
			follow(url, sizeof url, rs->location);
			attempt--;
			continue;
		}
		if ((rs->status >= 500 || rs->status == 429) && attempt < ATTEMPTS) {
			nap(backoff(attempt, rs->retry_after));
			continue;
		}
		return 0;
	}
}

/* The error for a failed status, in the registry's words. */
static int status_error(struct registry *r, const struct resp *rs,
    const char *what, struct vs_err *e)
{
	char says[512];
	int code;

	registry_says(rs, says, sizeof says);
	if (rs->status == 404)
		code = EX_UNAVAILABLE;
	else if (rs->status == 401 || rs->status == 403)
		code = EX_NOPERM;
	else
		code = EX_UNAVAILABLE;
	return vs_error(e, code, 0, "%s: %s: HTTP %ld%s%s", r->ref.registry, what,
	    rs->status, says[0] ? ": " : "", says);
}

int registry_manifest(struct registry *r, const char *reference, bool head,
    struct manifest *m, struct vs_err *e)
{
	struct resp rs = { 0 };
	char path[1024], got[DIGEST_MAX], what[600];
	int rc = -1;

	memset(m, 0, sizeof *m);
	snprintf(path, sizeof path, "/v2/%s/manifests/%s", r->ref.repository,
	    reference);
	snprintf(what, sizeof what, "%s:%s", r->ref.repository, reference);
	if (authed_request(r, path, head, ACCEPT_MANIFESTS, &rs, e) < 0)
		goto out;
	if (rs.status == 404) {
		char says[512];
		registry_says(&rs, says, sizeof says);
		vs_error(e, EX_UNAVAILABLE, 0, "%s: no image %s%s%s", r->ref.registry,
		    what, says[0] ? ": " : "", says);
		goto out;
	}
	if (rs.status != 200) {
		status_error(r, &rs, what, e);
		goto out;
	}
	if (rs.overflow) {
		vs_error(e, EX_DATAERR, 0, "%s: the manifest of %s is larger than %u bytes",
		    r->ref.registry, what, MANIFEST_MAX);
		goto out;
	}
	snprintf(m->media_type, sizeof m->media_type, "%s", rs.ctype);
	snprintf(m->digest, sizeof m->digest, "%s", rs.digest);
	if (!head) {
		const char *want = digest_valid(reference) ? reference :
		    digest_valid(rs.digest) ? rs.digest : "sha256:";
		if (digest_buffer(rs.body ? rs.body : "", rs.len, want, got, e) < 0)
			goto out;
		if (digest_valid(want) && strcmp(got, want) != 0) {
			vs_error(e, EX_DATAERR, 0,
			    "%s: the manifest of %s does not match its digest %s (got %s)",
			    r->ref.registry, what, want, got);
			goto out;
		}
		snprintf(m->digest, sizeof m->digest, "%s", got);
		m->body = rs.body ? rs.body : strdup("");
		m->len = rs.len;
		rs.body = NULL;
	} else if (!digest_valid(m->digest)) {
		m->digest[0] = '\0';	/* the caller asks with GET instead */
	}
	rc = 0;
out:
	free(rs.body);
	return rc;
}

/* ---- pushing ---- */

/* A request's body: bytes [off, off + len) of fd, or of mem. */
struct upbody {
	int fd;
	const char *mem;
	uint64_t off, len, sent;
	struct watch *w;
};

static size_t read_body(char *buf, size_t size, size_t n, void *arg)
{
	struct upbody *b = arg;
	size_t want = size * n;
	ssize_t got;

	if (b->sent >= b->len)
		return 0;
	if (want > b->len - b->sent)
		want = (size_t)(b->len - b->sent);
	if (b->mem) {
		memcpy(buf, b->mem + b->off + b->sent, want);
		got = (ssize_t)want;
	} else {
		got = pread(b->fd, buf, want, (off_t)(b->off + b->sent));
		if (got < 0)
			return CURL_READFUNC_ABORT;
	}
	b->sent += (uint64_t)got;
	if (b->w)
		b->w->heard = now();
	return (size_t)got;
}

/* One push request: method to url, with body b (NULL: none) and the extra
 * header hdr (or NULL).  As request(): transport failures -1, statuses in
 * rs->status. */
static int push_request(struct registry *r, const char *method,
    const char *url, struct upbody *b, const char *ctype, const char *hdr,
    struct resp *rs, struct vs_err *e)
{
	struct curl_slist *h = NULL;
	struct upbody none = { .fd = -1, .mem = "" };
	char ct[256];
	CURLcode cc;

	free(rs->body);
	memset(rs, 0, sizeof *rs);
	rs->retry_after = -1;
	rs->max = ERRBODY_MAX;
	rs->w = &r->w;
	curl_easy_reset(r->curl);
	common_options(r, r->curl, url, rs->errbuf, &r->w);
	curl_easy_setopt(r->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(r->curl, CURLOPT_HEADERDATA, rs);
	curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, rs);
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(r->curl, CURLOPT_NOBODY, 1L);
	} else if (b) {
		b->sent = 0;
		b->w = &r->w;
		curl_easy_setopt(r->curl, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(r->curl, CURLOPT_READFUNCTION, read_body);
		curl_easy_setopt(r->curl, CURLOPT_READDATA, b);
		curl_easy_setopt(r->curl, CURLOPT_INFILESIZE_LARGE,
		    (curl_off_t)b->len);
		curl_easy_setopt(r->curl, CURLOPT_CUSTOMREQUEST, method);
		snprintf(ct, sizeof ct, "Content-Type: %s",
		    ctype ? ctype : "application/octet-stream");
		h = curl_slist_append(h, ct);
		/* (no 100-continue round trip: the registry takes the body) */
		h = curl_slist_append(h, "Expect:");
	} else {
		curl_easy_setopt(r->curl, CURLOPT_CUSTOMREQUEST, method);
		if (strcmp(method, "POST") == 0) {
			curl_easy_setopt(r->curl, CURLOPT_POST, 1L);
			curl_easy_setopt(r->curl, CURLOPT_POSTFIELDSIZE, 0L);
			curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, "");
		} else {
			/* (a PUT without a body: nothing is read from stdin) */
			curl_easy_setopt(r->curl, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(r->curl, CURLOPT_READFUNCTION, read_body);
			curl_easy_setopt(r->curl, CURLOPT_READDATA, &none);
			curl_easy_setopt(r->curl, CURLOPT_INFILESIZE_LARGE,
			    (curl_off_t)0);
			h = curl_slist_append(h, "Expect:");
		}
	}
	if (hdr)
		h = curl_slist_append(h, hdr);
	if (r->authz && own_host(r, url))
		h = curl_slist_append(h, r->authz);
	curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, h);
	r->w.heard = now();
	cc = curl_easy_perform(r->curl);
	rs->cc = cc;
	curl_slist_free_all(h);
	if (r->w.expired)
		return no_answer(r, NULL, e);
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && rs->overflow))
		return vs_error(e, EX_UNAVAILABLE, 0, "%s: %s", r->ref.registry,
		    rs->errbuf[0] ? rs->errbuf : curl_easy_strerror(cc));
	r->w.heard = now();
	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &rs->status);
	return 0;
}

/* A push request that authenticates when asked (a token with push scope),
 * and tries again what may pass (transport failures, 5xx, 429).  Only for
 * requests that can be sent twice: HEAD, POST of a new upload, PUT of a
 * manifest.  path is on the registry, or an absolute URL (an upload's
 * Location). */
static int authed_push(struct registry *r, const char *method,
    const char *path, struct upbody *b, const char *ctype, const char *hdr,
    struct resp *rs, struct vs_err *e)
{
	char url[4096];
	bool authed = false;

	if (strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0)
		snprintf(url, sizeof url, "%s", path);
	else
		snprintf(url, sizeof url, "%s%s", r->base, path);
	r->push = true;
	r->w.heard = now();
	for (int attempt = 1;; attempt++) {
		if (push_request(r, method, url, b, ctype, hdr, rs, e) < 0) {
			double d = backoff(attempt, -1);

			if (r->insecure && !r->https_failed &&
			    strncmp(url, "https://", 8) == 0 && own_host(r, url)) {
				r->https_failed = true;
				snprintf(r->base, sizeof r->base, "http://%s", r->host);
				snprintf(url, sizeof url, "%s%s", r->base, path);
				continue;
			}
			if (r->w.expired || attempt >= ATTEMPTS ||
			    !transient(rs->cc))
				return -1;
			nap(d);
			continue;
		}
		if (rs->status == 401 && !authed && rs->www_auth[0] &&
		    own_host(r, url)) {
			authed = true;
			if (authenticate(r, rs->www_auth, e) < 0)
				return -1;
			attempt--;
			continue;
		}
		if ((rs->status >= 500 || rs->status == 429) && attempt < ATTEMPTS) {
			nap(backoff(attempt, rs->retry_after));
			continue;
		}
		return 0;
	}
}

int registry_blob_exists(struct registry *r, const char *digest,
    struct vs_err *e)
{
	struct resp rs = { 0 };
	char path[1024];
	int rc;

	snprintf(path, sizeof path, "/v2/%s/blobs/%s", r->ref.repository, digest);
	if (authed_push(r, "HEAD", path, NULL, NULL, NULL, &rs, e) < 0) {
		free(rs.body);
		return -1;
	}
	rc = rs.status == 200 ? 1 : rs.status == 404 ? 0 :
	    status_error(r, &rs, digest, e);
	free(rs.body);
	return rc;
}

/* The upload URL a 202 gave (absolute), with a query parameter added. */
static void upload_url(const struct registry *r, const char *location,
    const char *param, char *out, size_t n)
{
	char base[4096];

	snprintf(base, sizeof base, "%s%s", r->base, "/");
	follow(base, sizeof base, location);
	snprintf(out, n, "%s%s%s", base, param ? (strchr(base, '?') ? "&" : "?") : "",
	    param ? param : "");
}

/* One try of an upload: POST (a mount first when from is given), then one
 * PUT of the whole, or PATCHes of chunk bytes then a PUT.  1 uploaded, 2
 * mounted, 0 to be tried again (a failure that may pass: in e), -1. */
static int push_once(struct registry *r, const char *digest, int fd,
    uint64_t off, uint64_t len, const char *from, uint64_t chunk,
    struct vs_err *e)
{
	struct resp rs = { 0 };
	char path[1400], url[4200], q[300], range[96];
	int rc = -1;

	if (from)
		snprintf(path, sizeof path, "/v2/%s/blobs/uploads/?mount=%s&from=%s",
		    r->ref.repository, digest, from);
	else
		snprintf(path, sizeof path, "/v2/%s/blobs/uploads/", r->ref.repository);
	if (authed_push(r, "POST", path, NULL, NULL, NULL, &rs, e) < 0)
		goto out;
	if (rs.status == 201 && from) {
		rc = 2;
		goto out;
	}
	if (rs.status != 202 || !rs.location[0]) {
		rc = rs.status >= 500 || rs.status == 429 ? 0 : -1;
		status_error(r, &rs, "start an upload", e);
		goto out;
	}
	snprintf(q, sizeof q, "digest=%s", digest);
	if (chunk == 0 || len <= chunk) {
		struct upbody b = { .fd = fd, .off = off, .len = len };
		upload_url(r, rs.location, q, url, sizeof url);
		if (push_request(r, "PUT", url, &b, NULL, NULL, &rs, e) < 0) {
			rc = r->w.expired || !transient(rs.cc) ? -1 : 0;
			goto out;
		}
	} else {
		uint64_t done = 0;
		char loc[2048];

		snprintf(loc, sizeof loc, "%s", rs.location);
		while (done < len) {
			uint64_t n = len - done < chunk ? len - done : chunk;
			struct upbody b = { .fd = fd, .off = off + done, .len = n };

			upload_url(r, loc, NULL, url, sizeof url);
			snprintf(range, sizeof range, "Content-Range: %llu-%llu",
			    (unsigned long long)done, (unsigned long long)(done + n - 1));
			if (push_request(r, "PATCH", url, &b, NULL, range, &rs, e) < 0) {
				rc = r->w.expired || !transient(rs.cc) ? -1 : 0;
				goto out;
			}
			if (rs.status != 202 && rs.status != 204) {
				rc = rs.status >= 500 || rs.status == 429 ? 0 : -1;
				status_error(r, &rs, "upload a part", e);
				goto out;
			}
			if (rs.location[0])
				snprintf(loc, sizeof loc, "%s", rs.location);
			done += n;
		}
		upload_url(r, loc, q, url, sizeof url);
		if (push_request(r, "PUT", url, NULL, NULL, NULL, &rs, e) < 0) {
			rc = r->w.expired || !transient(rs.cc) ? -1 : 0;
			goto out;
		}
	}
	if (rs.status != 201) {
		rc = rs.status >= 500 || rs.status == 429 ? 0 : -1;
		status_error(r, &rs, "finish an upload", e);
		goto out;
	}
	rc = 1;
out:
	free(rs.body);
	return rc;
}

int registry_push_blob(struct registry *r, const char *digest, int fd,
    uint64_t off, uint64_t len, const char *from, uint64_t chunk,
    struct vs_err *e)
{
	for (int attempt = 1;; attempt++) {
		int rc = push_once(r, digest, fd, off, len, attempt == 1 ? from : NULL,
		    chunk, e);

		if (rc != 0)
			return rc;
		if (attempt >= ATTEMPTS)
			return vs_error_prefix(e, "uploading %s (%d tries)", digest,
			    attempt);
		nap(backoff(attempt, -1));
	}
}

int registry_put_manifest(struct registry *r, const char *reference,
    const char *media_type, const char *body, size_t len, char *digest,
    struct vs_err *e)
{
	struct upbody b = { .fd = -1, .mem = body, .len = len };
	struct resp rs = { 0 };
	char path[1024];
	int rc = -1;

	snprintf(path, sizeof path, "/v2/%s/manifests/%s", r->ref.repository,
	    reference);
	if (authed_push(r, "PUT", path, &b, media_type, NULL, &rs, e) < 0)
		goto out;
	if (rs.status != 201) {
		status_error(r, &rs, "put the manifest", e);
		goto out;
	}
	if (digest)
		snprintf(digest, DIGEST_MAX, "%s", rs.digest);
	rc = 0;
out:
	free(rs.body);
	return rc;
}

/* ---- blobs, in parallel ---- */

/* A blob's download.  Its partial file (blobs/sha256/.<hex>.partial) is
 * opened and locked only while the download runs, never waited for: a blob
 * another process is downloading is tried again a little later, so that two
 * processes can never wait for each other. */
enum xstate { X_QUEUED, X_RUNNING, X_DONE };

struct xfer {
	struct registry *r;
	struct blob_job *job;
	enum xstate state;
	CURL *easy;
	struct curl_slist *hdrs;
	int fd;			/* the partial file, locked; -1 between runs */
	char *partial, *final;
	struct digester d;
	bool hashing;
	uint64_t off;		/* bytes in the file and hashed */
	uint64_t flushed;	/* writeback was started up to here */
	unsigned char *wbuf;	/* received, not yet written: [off - wlen, off) */
	size_t wlen;
	int write_errno;	/* a failed write's errno, or 0 */
	bool checked;		/* the status was looked at */
	bool writing;		/* this response's body goes to the file */
	bool oversize;
	bool bad_range;		/* a 206 for another range than ours */
	int attempts;
	bool authed;
	int redirects;
	double not_before;
	double ended;		/* when its last try ended */
	struct watch w;		/* its silence, across its tries */
	char url[2048];
	struct resp rs;		/* headers, and the body of an error */
};

/* Write what is gathered; all that was hashed is then on disk. */
static int wbuf_flush(struct xfer *x)
{
	uint64_t at = x->off - x->wlen;

	for (size_t done = 0; done < x->wlen; ) {
		ssize_t w = pwrite(x->fd, x->wbuf + done, x->wlen - done,
		    (off_t)(at + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			x->write_errno = errno;
			return -1;
		}
		done += (size_t)w;
	}
	x->wlen = 0;
#ifdef SYNC_FILE_RANGE_WRITE
	/* Start writeback as we go, so that the fsync before the rename
	 * does not wait for the whole blob. */
	if (x->off - x->flushed >= (8u << 20)) {
		sync_file_range(x->fd, (off64_t)x->flushed,
		    (off64_t)(x->off - x->flushed), SYNC_FILE_RANGE_WRITE);
		x->flushed = x->off;
	}
#endif
	return 0;
}

/* Start the file and the digest again from nothing. */
static int xfer_restart(struct xfer *x, struct vs_err *e)
{
	if (ftruncate(x->fd, 0) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", x->partial);
	if (x->hashing)
		digester_free(&x->d);
	x->hashing = false;
	if (digester_init(&x->d, x->job->digest, e) < 0)
		return -1;
	x->hashing = true;
	x->off = x->flushed = 0;
	x->wlen = 0;
	x->job->resumed = 0;
	return 0;
}

/* "bytes START-END/TOTAL": START, or -1. */
static long long range_start(const char *cr)
{
	const char *p = strstr(cr, "bytes ");

	return p && isdigit((unsigned char)p[6]) ? strtoll(p + 6, NULL, 10) : -1;
}

static size_t blob_body(char *buf, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	if (!x->checked) {
		x->checked = true;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->rs.status);
		x->writing = x->rs.status == 200 || x->rs.status == 206;
		if (x->rs.status == 206 &&
		    range_start(x->rs.range) != (long long)x->off) {
			x->bad_range = true;
			return 0;
		}
		if (x->rs.status == 200 && x->off > 0 && xfer_restart(x, NULL) < 0)
			return 0;	/* the registry ignored our Range */
	}
	if (!x->writing) {
		/* An error's body: keep the start, for its message. */
		if (x->rs.len + len > x->rs.max)
			return len;
		return on_body(buf, size, n, &x->rs);
	}
	if (x->off + len > (uint64_t)x->job->size) {
		x->oversize = true;
		return 0;
	}
	/* curl hands over at most 16 KB at a time: gather it into larger
	 * writes. */
	if (x->wlen + len > WBUF && wbuf_flush(x) < 0)
		return 0;
	memcpy(x->wbuf + x->wlen, buf, len);
	x->wlen += len;
	digester_update(&x->d, buf, len);
	x->off += len;
	x->job->fetched += len;
	x->w.heard = now();
	return len;
}

/* End a run of the download: write what is gathered, release the lock and
 * the buffer.  A partial file that holds nothing is removed. */
static void xfer_release(struct xfer *x)
{
	if (x->fd >= 0) {
		if (x->wlen > 0)
			wbuf_flush(x);
		if (x->off == 0 && x->state != X_DONE)
			unlink(x->partial);
		close(x->fd);
		x->fd = -1;
	}
	if (x->hashing)
		digester_free(&x->d);
	x->hashing = false;
	free(x->wbuf);
	x->wbuf = NULL;
}

/* Whether a blob in the layout is whole: its size, then its digest. */
static bool blob_checks(const struct oci_layout *l, const struct blob_job *j)
{
	cleanup_free char *p = layout_blob_path(l, j->digest);
	cleanup_fd int fd = -1;
	struct digester d;
	char got[DIGEST_MAX];
	struct stat st;

	if (!p || (fd = open(p, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) < 0 ||
	    st.st_size != j->size || digester_init(&d, j->digest, NULL) < 0)
		return false;
	if (digester_feed_fd(&d, fd, (uint64_t)st.st_size, NULL) < 0) {
		digester_free(&d);
		return false;
	}
	digester_final(&d, got);
	return strcmp(got, j->digest) == 0;
}

/* The blob is whole in the partial file: check it and move it into place. */
static int xfer_finish(struct xfer *x, struct vs_err *e)
{
	char got[DIGEST_MAX];

	digester_final(&x->d, got);
	x->hashing = false;
	if (strcmp(got, x->job->digest) != 0) {
		unlink(x->partial);
		return vs_error(e, EX_DATAERR, 0,
		    "%s: blob %s is corrupt: its content's digest is %s",
		    x->r->ref.registry, x->job->digest, got);
	}
	if (fsync(x->fd) < 0 || rename(x->partial, x->final) < 0)
		return vs_error(e, vs_code_for_errno(errno, EX_IOERR), errno,
		    "%s", x->final);
	x->state = X_DONE;
	return 0;
}

/* Take the partial file for this process.  1: taken, resumed from what is
 * there; 0: another process has it (try later); 2: the blob is there now;
 * -1: an error. */
static int xfer_claim(struct xfer *x, const struct oci_layout *l,
    struct vs_err *e)
{
	struct stat st, pst;

	for (;;) {
		if (layout_has_blob(l, x->job->digest, x->job->size))
			return 2;
		x->fd = open(x->partial, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (x->fd < 0)
			return vs_error(e, vs_code_for_errno(errno, EX_CANTCREAT),
			    errno, "%s", x->partial);
		if (flock(x->fd, LOCK_EX | LOCK_NB) < 0) {
			close(x->fd);
			x->fd = -1;
			return 0;
		}
		/* The file may have been finished or removed by its owner
		 * after we opened it: hold the one that is under the name. */
		if (fstat(x->fd, &st) == 0 && stat(x->partial, &pst) == 0 &&
		    st.st_ino == pst.st_ino && st.st_dev == pst.st_dev)
			break;
		close(x->fd);
		x->fd = -1;
	}
	if (layout_has_blob(l, x->job->digest, x->job->size)) {
		unlink(x->partial);
		close(x->fd);
		x->fd = -1;
		return 2;
	}
	if ((uint64_t)st.st_size > (uint64_t)x->job->size &&
	    ftruncate(x->fd, 0) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", x->partial);
	if (fstat(x->fd, &st) < 0)
		return vs_error(e, EX_IOERR, errno, "%s", x->partial);
	if (digester_init(&x->d, x->job->digest, e) < 0)
		return -1;
	x->hashing = true;
	if (st.st_size > 0 && digester_feed_fd(&x->d, x->fd,
	    (uint64_t)st.st_size, e) < 0)
		return -1;
	x->off = x->flushed = (uint64_t)st.st_size;
	x->job->resumed = x->off;
	x->wbuf = malloc(WBUF);
	if (x->wbuf == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "blob buffer");
	return 1;
}

static int xfer_start(struct xfer *x, CURLM *multi, struct vs_err *e)
{
	char range[64];
	double t, ready;

	if (x->easy == NULL && (x->easy = curl_easy_init()) == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "curl");
	curl_easy_reset(x->easy);
	free(x->rs.body);
	memset(&x->rs, 0, sizeof x->rs);
	x->rs.retry_after = -1;
	x->rs.max = ERRBODY_MAX;
	x->rs.w = &x->w;
	x->checked = x->writing = x->oversize = x->bad_range = false;
	t = now();
	ready = x->not_before > x->ended ? x->not_before : x->ended;
	if (x->w.heard == 0)
		x->w.heard = t;		/* its first try */
	else if (t > ready)
		x->w.heard += t - ready;	/* waiting for a free slot is no silence */
	common_options(x->r, x->easy, x->url, x->rs.errbuf, &x->w);
	curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, &x->rs);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, blob_body);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	/* Fewer receive calls; curl still hands over 16 KB at a time. */
	curl_easy_setopt(x->easy, CURLOPT_BUFFERSIZE, 128L * 1024);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	if (x->off > 0) {
		snprintf(range, sizeof range, "Range: bytes=%llu-",
		    (unsigned long long)x->off);
		x->hdrs = curl_slist_append(x->hdrs, range);
	}
	if (x->r->authz && own_host(x->r, x->url))
		x->hdrs = curl_slist_append(x->hdrs, x->r->authz);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	if (curl_multi_add_handle(multi, x->easy) != CURLM_OK)
		return vs_error(e, EX_OSERR, 0, "curl_multi_add_handle");
	x->state = X_RUNNING;
	return 0;
}

/* A response that curl says ended well, but whose body is shorter than the
 * blob: whether it was the whole answer, which no try again will mend.  It
 * was when its length was told (Content-Length, chunked, or HTTP/2 and
 * later, which frame their bodies) and, for a 206, when Content-Range gives
 * the blob another length.  A body that ends with its connection may have
 * been cut short, and a 206 of a shorter range than asked is continued. */
static bool short_answer(const struct xfer *x, long st)
{
	curl_off_t cl = -1;
	long version = 0;
	const char *total;

	curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &version);
	if (cl < 0 && !x->rs.chunked && version != CURL_HTTP_VERSION_2_0 &&
	    version != CURL_HTTP_VERSION_3)
		return false;
	if (st == 200)
		return true;
	total = strrchr(x->rs.range, '/');
	return total && isdigit((unsigned char)total[1]) &&
	    strtoll(total + 1, NULL, 10) != (long long)x->job->size;
}

/* A transfer ended: decide what comes next (state X_DONE, or X_QUEUED to
 * go again).  Returns -1 on a failure that trying again will not mend. */
static int xfer_done(struct xfer *x, CURLcode cc, struct vs_err *e)
{
	long st = 0;
	char what[200];

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &st);
	x->rs.status = st;
	snprintf(what, sizeof what, "blob %s", x->job->digest);
	x->state = X_QUEUED;
	x->not_before = 0;
	x->ended = now();
	if (cc == CURLE_OK)
		x->w.heard = x->ended;	/* an answer */
	if (x->wlen > 0 && wbuf_flush(x) < 0)
		return vs_error(e, vs_code_for_errno(x->write_errno, EX_IOERR),
		    x->write_errno, "%s", x->partial);
	if (x->write_errno)
		return vs_error(e, vs_code_for_errno(x->write_errno, EX_IOERR),
		    x->write_errno, "%s", x->partial);
	if (x->oversize) {
		unlink(x->partial);
		return vs_error(e, EX_DATAERR, 0,
		    "%s: %s: the registry sent more than its %lld bytes; refused",
		    x->r->ref.registry, what, (long long)x->job->size);
	}
	if (x->w.expired)
		return no_answer(x->r, what, e);
	if (cc == CURLE_OK && (st == 200 || st == 206) &&
	    x->off < (uint64_t)x->job->size && short_answer(x, st)) {
		unlink(x->partial);
		return vs_error(e, EX_DATAERR, 0,
		    "%s: %s: the registry sent %llu of the %lld bytes the manifest says; refused",
		    x->r->ref.registry, what, (unsigned long long)x->off,
		    (long long)x->job->size);
	}
	if ((cc == CURLE_OK || cc == CURLE_PARTIAL_FILE) && st == 416) {
		/* Our partial file is no prefix of it: start again. */
		if (xfer_restart(x, e) < 0)
			return -1;
	} else if (x->bad_range) {
		if (xfer_restart(x, e) < 0)
			return -1;
	} else if (cc == CURLE_OK && (st == 200 || st == 206) &&
	    x->off == (uint64_t)x->job->size) {
		return xfer_finish(x, e);
	} else if (cc == CURLE_OK && st >= 300 && st < 400 && x->rs.location[0] &&
	    x->redirects++ < 5) {
		follow(x->url, sizeof x->url, x->rs.location);
		return 0;
	} else if (cc == CURLE_OK && st == 401 && own_host(x->r, x->url) &&
	    !x->authed && x->rs.www_auth[0]) {
		/* Only the registry itself is answered with credentials. */
		x->authed = true;
		return authenticate(x->r, x->rs.www_auth, e) < 0 ? -1 : 0;
	} else if (cc == CURLE_OK && st != 429 && st < 500 &&
	    !(st == 200 || st == 206)) {
		if (st == 404) {
			char says[512];
			registry_says(&x->rs, says, sizeof says);
			return vs_error(e, EX_UNAVAILABLE, 0, "%s: %s: not found%s%s",
			    x->r->ref.registry, what, says[0] ? ": " : "", says);
		}
		return status_error(x->r, &x->rs, what, e);
	} else if (cc != CURLE_OK && !transient(cc)) {
		return vs_error(e, EX_UNAVAILABLE, 0, "%s: %s: %s",
		    x->r->ref.registry, what,
		    x->rs.errbuf[0] ? x->rs.errbuf : curl_easy_strerror(cc));
	}
	/* 5xx, 429, a dropped connection, a body cut short or a range to
	 * start again: try again, from where we are. */
	if (++x->attempts >= ATTEMPTS) {
		char says[512];

		if (cc != CURLE_OK)
			return vs_error(e, EX_UNAVAILABLE, 0,
			    "%s: %s: %s (after %d tries)", x->r->ref.registry, what,
			    x->rs.errbuf[0] ? x->rs.errbuf : curl_easy_strerror(cc),
			    x->attempts);
		if (st == 200 || st == 206)
			return vs_error(e, EX_UNAVAILABLE, 0,
			    "%s: %s: the body ended after %llu of %lld bytes (after %d tries)",
			    x->r->ref.registry, what, (unsigned long long)x->off,
			    (long long)x->job->size, x->attempts);
		registry_says(&x->rs, says, sizeof says);
		return vs_error(e, EX_UNAVAILABLE, 0,
		    "%s: %s: HTTP %ld%s%s (after %d tries)", x->r->ref.registry,
		    what, st, says[0] ? ": " : "", says, x->attempts);
	}
	x->not_before = now() + backoff(x->attempts, x->rs.retry_after);
	/* Silent for all the time there is: no more tries. */
	if (cc != CURLE_OK && x->not_before - x->w.heard >= (double)x->r->timeout)
		return no_answer(x->r, what, e);
	return 0;
}

static void xfer_free(struct xfer *x, CURLM *multi)
{
	if (x->easy) {
		if (x->state == X_RUNNING)
			curl_multi_remove_handle(multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	curl_slist_free_all(x->hdrs);
	xfer_release(x);
	free(x->rs.body);
	free(x->partial);
	free(x->final);
}

int registry_fetch_blobs(struct registry *r, const struct oci_layout *l,
    struct blob_job *jobs, size_t n, int parallel, blob_progress_fn progress,
    void *arg, struct vs_err *e)
{
	struct xfer *xs;
	CURLM *multi;
	uint64_t total = 0;
	int rc = -1, running = 0;

	xs = calloc(n ? n : 1, sizeof *xs);
	multi = curl_multi_init();
	if (xs == NULL || multi == NULL) {
		free(xs);
		if (multi)
			curl_multi_cleanup(multi);
		return vs_error(e, EX_OSERR, ENOMEM, "blobs");
	}
	for (size_t i = 0; i < n; i++) {
		struct xfer *x = &xs[i];

		x->r = r;
		x->job = &jobs[i];
		x->fd = -1;
		jobs[i].fetched = jobs[i].resumed = 0;
		jobs[i].present = false;
		/* A digest listed twice is one download. */
		for (size_t k = 0; k < i; k++)
			if (strcmp(jobs[k].digest, jobs[i].digest) == 0) {
				x->state = X_DONE;
				jobs[i].present = true;
				break;
			}
		if (x->state == X_DONE)
			continue;
		/* What the cache has is taken when its digest checks. */
		if (blob_checks(l, &jobs[i])) {
			x->state = X_DONE;
			jobs[i].present = true;
			continue;
		}
		x->final = layout_blob_path(l, jobs[i].digest);
		if (x->final == NULL || asprintf(&x->partial,
		    "%s/blobs/%.6s/.%s.partial", l->root, jobs[i].digest,
		    jobs[i].digest + 7) < 0) {
			x->partial = NULL;
			vs_error(e, EX_DATAERR, 0, "invalid blob digest '%.80s'",
			    jobs[i].digest);
			goto out;
		}
		/* A blob of the wrong content under its name is replaced. */
		unlink(x->final);
		snprintf(x->url, sizeof x->url, "%s/v2/%s/blobs/%s", r->base,
		    r->ref.repository, jobs[i].digest);
		total += (uint64_t)jobs[i].size;
		x->state = X_QUEUED;
	}

	for (;;) {
		bool pending = false;
		double soonest = 1e9, t = now();
		uint64_t done = 0;

		for (size_t i = 0; i < n; i++) {
			struct xfer *x = &xs[i];

			if (x->state == X_QUEUED && running < parallel &&
			    x->not_before <= t) {
				int c = x->fd >= 0 ? 1 : xfer_claim(x, l, e);
				if (c < 0)
					goto out;
				if (c == 2) {
					x->state = X_DONE;
					x->job->present = x->job->resumed == 0 &&
					    x->job->fetched == 0;
				} else if (c == 0) {
					/* Another process is on it: our silence
					 * counts from when we try again. */
					x->not_before = t + 0.1;
					x->w.heard = 0;
				} else if (x->off == (uint64_t)x->job->size) {
					/* All there from an earlier run. */
					if (xfer_finish(x, e) < 0)
						goto out;
					xfer_release(x);
				} else {
					if (xfer_start(x, multi, e) < 0)
						goto out;
					running++;
				}
			}
			if (x->state == X_QUEUED) {
				pending = true;
				if (x->not_before > t && x->not_before < soonest)
					soonest = x->not_before;
			} else if (x->state == X_RUNNING) {
				pending = true;
			}
			if (x->partial)
				done += x->state == X_DONE ? (uint64_t)x->job->size
				    : x->off;
		}
		if (progress)
			progress(arg, done, total);
		if (!pending)
			break;
		int still = 0;
		curl_multi_perform(multi, &still);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
			struct xfer *x;
			char *priv = NULL;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
			x = (struct xfer *)(void *)priv;
			curl_multi_remove_handle(multi, msg->easy_handle);
			running--;
			if (xfer_done(x, msg->data.result, e) < 0)
				goto out;
			/* Between tries, and when done, the lock is let go. */
			if (x->state == X_DONE || x->not_before > 0)
				xfer_release(x);
		}
		if (running > 0) {
			int timeout = 1000;
			if (soonest < 1e9) {
				double w = soonest - now();
				timeout = w <= 0 ? 0 : w < 1 ? (int)(w * 1000) : 1000;
			}
			curl_multi_poll(multi, NULL, 0, timeout, NULL);
		} else if (soonest < 1e9) {
			double w = soonest - now();
			if (w > 0)
				nap(w);
		}
	}
	rc = 0;
out:
	for (size_t i = 0; i < n; i++)
		xfer_free(&xs[i], multi);
	curl_multi_cleanup(multi);
	free(xs);
	return rc;
}
