#include "doc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER:
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

json_t *doc_read(FILE *in, bool *present, struct vs_err *e)
{
	cleanup_free char *buf = NULL;
	size_t len = 0, cap = 0, i;
	json_error_t jerr;
	json_t *doc;

	*present = false;
	for (;;) {
		size_t n;

		if (cap - len < 4096) {
			char *nb;
			cap = cap ? cap * 2 : 8192;
			if (cap > DOC_MAX_BYTES + 1)
				cap = DOC_MAX_BYTES + 1;
			if (cap - len == 0)
				return vs_error(e, EX_DATAERR, 0,
				    "pipeline document on stdin is larger than %u bytes",
				    DOC_MAX_BYTES), NULL;
			nb = realloc(buf, cap);
			if (nb == NULL)
				return vs_error(e, EX_OSERR, errno, "stdin"), NULL;
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, in);
		len += n;
		if (n == 0) {
			if (ferror(in))
				return vs_error(e, EX_IOERR, errno, "stdin"), NULL;
			break;
		}
	}
	for (i = 0; i < len; i++)
		if (!strchr(" \t\r\n", buf[i]))
			break;
	if (i == len)
		return json_object();

	/* Offsets in messages count from 1, as jansson's do. */
	doc = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES |
	    JSON_ALLOW_NUL, &jerr);
	if (doc == NULL)
		return vs_error(e, EX_DATAERR, 0,
		    "invalid pipeline document on stdin at byte %d: %s",
		    jerr.position, jerr.text), NULL;
	if (!json_is_object(doc)) {
		vs_error(e, EX_DATAERR, 0,
		    "invalid pipeline document on stdin at byte %zu: expected a JSON object, got %s",
		    i + 1, type_name(doc));
		json_decref(doc);
		return NULL;
	}
	*present = true;
	return doc;
}

json_t *doc_read_stdin(bool *present, struct vs_err *e)
{
	*present = false;
	if (isatty(STDIN_FILENO))
		return json_object();
	return doc_read(stdin, present, e);
}

json_t *doc_input(bool from_stdin, const char *hint, struct vs_err *e)
{
	bool present;
	json_t *doc;

	if (!from_stdin) {
		doc = json_object();
		if (doc == NULL)
			vs_error(e, EX_OSERR, ENOMEM, "document");
		return doc;
	}
	doc = doc_read_stdin(&present, e);
	if (doc != NULL && !present) {
		json_decref(doc);
		vs_error(e, EX_USAGE, 0, "no pipeline document on stdin: %s", hint);
		return NULL;
	}
	return doc;
}

int doc_write(FILE *out, const json_t *doc, struct vs_err *e)
{
	/* (15 significant digits: a number written with up to 15, as every
	 * measurement here is, comes back as written, where 17 would show
	 * the binary's noise, 0.58999999999999997 for 0.59) */
	if (json_dumpf(doc, out, JSON_COMPACT | JSON_REAL_PRECISION(15)) != 0 ||
	    fputc('\n', out) == EOF)
		return vs_error(e, EX_IOERR, errno, "stdout");
	return 0;
}

int doc_set(json_t *doc, const char *name, json_t *obj, struct vs_err *e)
{
	if (obj == NULL)
		return vs_error(e, EX_OSERR, ENOMEM, "building the %s section",
		    name);
	if (json_object_set_new(doc, name, obj) != 0)
		return vs_error(e, EX_OSERR, ENOMEM, "building the %s section",
		    name);
	return 0;
}

const char *doc_need_str(const json_t *doc, const char *section,
    const char *key, const char *hint, struct vs_err *e)
{
	const json_t *sec = json_object_get(doc, section);
	const json_t *v;

	if (!json_is_object(sec)) {
		vs_error(e, EX_DATAERR, 0,
		    "pipeline document has no '%s' section%s%s", section,
		    hint ? ": " : "", hint ? hint : "");
		return NULL;
	}
	v = json_object_get(sec, key);
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		vs_error(e, EX_DATAERR, 0,
		    "pipeline document's %s.%s is %s, not a path%s%s", section,
		    key, v ? type_name(v) : "missing", hint ? ": " : "",
		    hint ? hint : "");
		return NULL;
	}
	return json_string_value(v);
}
