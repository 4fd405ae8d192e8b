/*
 * jsonscan.c
 *		A JSON walker that never raises: what the HTTP worker reads of a
 *		reply (usage), and what a caller reads of an error reply.
 *
 * PostgreSQL's parser decodes \u escapes into the database's encoding (a
 * worker with no database has SQL_ASCII, and raises on "caf\u00e9") and
 * recurses once per level of nesting (and raises "stack depth limit
 * exceeded").  This walker is a loop over the bytes with an explicit stack
 * bounded by CLAUDE_JSON_MAX_DEPTH; it hands each scalar to a callback with
 * the keys that lead to it, undecoded, and decodes a string only when asked,
 * into UTF-8, by itself.  It allocates nothing but its stack.
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "common/json.h"

typedef enum ScanState
{
	S_VALUE,					/* a value is expected */
	S_AFTER_VALUE,				/* a value ended */
	S_KEY_OR_END,				/* after '{' */
	S_KEY,						/* after ',' in an object */
	S_VALUE_OR_END				/* after '[' */
} ScanState;

static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int
hex4(const char *p)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
		v = v * 16 + (isdigit((unsigned char) p[i]) ? p[i] - '0' :
					  (tolower((unsigned char) p[i]) - 'a' + 10));
	return v;
}

/* The code unit of the \u escape whose 'u' is at p, or -1. */
static int
scan_u(const char *p, const char *end)
{
	for (int i = 1; i <= 4; i++)
		if (p + i >= end || !isxdigit((unsigned char) p[i]))
			return -1;
	return hex4(p + 1);
}

/*
 * Past the closing quote of a string that starts after p's quote, or NULL.
 * A surrogate escape counts only as a pair: a lone one is no character
 * (jsonb refuses it too), so a text holding one is not JSON, whoever reads
 * it.
 */
static const char *
scan_string(const char *p, const char *end)
{
	while (p < end)
	{
		unsigned char c = *p;

		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c == '\\')
		{
			if (++p >= end)
				return NULL;
			if (*p == 'u')
			{
				int			u = scan_u(p, end);

				if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
					return NULL;
				p += 4;
				if (u >= 0xD800 && u <= 0xDBFF)
				{
					/* its low half must follow */
					if (end - p < 3 || p[1] != '\\' || p[2] != 'u' ||
						(u = scan_u(p + 2, end)) < 0xDC00 || u > 0xDFFF)
						return NULL;
					p += 6;
				}
			}
			else if (strchr("\"\\/bfnrt", *p) == NULL)
				return NULL;
		}
		p++;
	}
	return NULL;
}

static const char *
scan_digits(const char *p, const char *end)
{
	const char *start = p;

	while (p < end && *p >= '0' && *p <= '9')
		p++;
	return p > start ? p : NULL;
}

/* Past a number or a literal (true, false, null), or NULL. */
static const char *
scan_bare(const char *p, const char *end)
{
	static const char *const literals[] = {"true", "false", "null"};

	for (int i = 0; i < lengthof(literals); i++)
	{
		size_t		n = strlen(literals[i]);

		if ((size_t) (end - p) >= n && memcmp(p, literals[i], n) == 0)
			return p + n;
	}
	if (p < end && *p == '-')
		p++;
	if ((p = scan_digits(p, end)) == NULL)
		return NULL;
	if (p < end && *p == '.' && (p = scan_digits(p + 1, end)) == NULL)
		return NULL;
	if (p < end && (*p == 'e' || *p == 'E'))
	{
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if ((p = scan_digits(p, end)) == NULL)
			return NULL;
	}
	return p;
}

/*
 * Walk json, calling found for every scalar with the keys of the objects
 * around it (path[0] is the key in the root object; an array element has
 * a NULL key).  False if it is not one well-formed JSON value, or nests
 * deeper than CLAUDE_JSON_MAX_DEPTH.  Never raises.
 */
bool
claude_json_scan(const char *json, Size len, ClaudeJsonFound found, void *arg)
{
	ClaudeJsonKey path[CLAUDE_JSON_MAX_DEPTH];
	char		stack[CLAUDE_JSON_MAX_DEPTH];	/* '{' or '[' per level */
	int			depth = 0;
	const char *p = json;
	const char *end = json + len;
	ScanState	state = S_VALUE;

	for (;;)
	{
		p = skip_ws(p, end);
		switch (state)
		{
			case S_KEY_OR_END:
			case S_KEY:
				if (state == S_KEY_OR_END && p < end && *p == '}')
				{
					p++;
					depth--;
					state = S_AFTER_VALUE;
					break;
				}
				if (p >= end || *p != '"')
					return false;
				path[depth - 1].key = p + 1;
				if ((p = scan_string(p + 1, end)) == NULL)
					return false;
				path[depth - 1].len = p - 1 - path[depth - 1].key;
				p = skip_ws(p, end);
				if (p >= end || *p != ':')
					return false;
				p++;
				state = S_VALUE;
				break;
			case S_VALUE_OR_END:
				if (p < end && *p == ']')
				{
					p++;
					depth--;
					state = S_AFTER_VALUE;
					break;
				}
				/* FALLTHROUGH */
			case S_VALUE:
				if (p >= end)
					return false;
				if (*p == '{' || *p == '[')
				{
					if (depth == CLAUDE_JSON_MAX_DEPTH)
						return false;
					stack[depth] = *p;
					path[depth].key = NULL;
					path[depth].len = 0;
					path[depth].index = 0;
					depth++;
					state = *p == '{' ? S_KEY_OR_END : S_VALUE_OR_END;
					p++;
					break;
				}
				{
					const char *start = p;
					bool		string = *p == '"';

					p = string ? scan_string(p + 1, end) : scan_bare(p, end);
					if (p == NULL)
						return false;
					if (found)
						found(arg, path, depth,
							  string ? start + 1 : start,
							  string ? p - start - 2 : p - start, string);
				}
				state = S_AFTER_VALUE;
				break;
			case S_AFTER_VALUE:
				if (depth == 0)
					return p == end;
				if (p >= end)
					return false;
				if (*p == ',')
				{
					state = stack[depth - 1] == '{' ? S_KEY : S_VALUE;
					path[depth - 1].index++;
				}
				else if (*p == (stack[depth - 1] == '{' ? '}' : ']'))
					depth--;
				else
					return false;
				p++;
				break;
		}
	}
}

/* Whether a key (undecoded) is exactly name; keys we look for need no escapes. */
bool
claude_json_key_is(const ClaudeJsonKey *k, const char *name)
{
	return k->key != NULL && k->len == (int) strlen(name) && memcmp(k->key, name, k->len) == 0;
}

/* Where unescaped bytes go: a StringInfo, a raw buffer, or nowhere. */
typedef struct Sink
{
	StringInfo	si;
	char	   *raw;
	int			n;
} Sink;

static void
sink_put(Sink *k, const char *b, int n)
{
	if (k->si)
		appendBinaryStringInfo(k->si, b, n);
	else if (k->raw)
		memcpy(k->raw + k->n, b, n);
	k->n += n;
}

static void
append_utf8(Sink *out, unsigned int c)
{
	unsigned char b[4];
	int			n;

	if (c < 0x80)
		b[0] = c, n = 1;
	else if (c < 0x800)
		b[0] = 0xC0 | (c >> 6), b[1] = 0x80 | (c & 0x3F), n = 2;
	else if (c < 0x10000)
		b[0] = 0xE0 | (c >> 12), b[1] = 0x80 | ((c >> 6) & 0x3F),
			b[2] = 0x80 | (c & 0x3F), n = 3;
	else
		b[0] = 0xF0 | (c >> 18), b[1] = 0x80 | ((c >> 12) & 0x3F),
			b[2] = 0x80 | ((c >> 6) & 0x3F), b[3] = 0x80 | (c & 0x3F), n = 4;
	sink_put(out, (char *) b, n);
}

/*
 * Decode a string found by claude_json_scan (well-formed, so surrogates
 * come in pairs) into UTF-8 bytes: \u0000 becomes U+FFFD and the result
 * is false (no PostgreSQL text can hold it).  Raw bytes are copied as
 * they are; the caller validates them.  With out NULL it only checks, and
 * allocates nothing (the HTTP worker).
 */
static bool
unescape(const char *s, int len, Sink *out)
{
	const char *end = s + len;
	bool		nul = false;

	while (s < end)
	{
		unsigned int c;

		if (*s != '\\')
		{
			/* a run up to the next escape, at once */
			const char *run = memchr(s, '\\', end - s);

			if (run == NULL)
				run = end;
			sink_put(out, s, run - s);
			s = run;
			continue;
		}
		s++;
		switch (*s)
		{
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case 'u':
				c = hex4(s + 1);
				s += 4;
				if (c >= 0xD800 && c <= 0xDBFF && end - s >= 7 && s[1] == '\\' && s[2] == 'u')
				{
					unsigned int lo = hex4(s + 3);

					if (lo >= 0xDC00 && lo <= 0xDFFF)
					{
						c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
						s += 6;
					}
				}
				nul |= c == 0;
				if (c == 0 || (c >= 0xD800 && c <= 0xDFFF))
					c = 0xFFFD;
				break;
			default:
				c = (unsigned char) *s;	/* " \ / */
				break;
		}
		append_utf8(out, c);
		s++;
	}
	return !nul;
}

bool
claude_json_unescape(const char *s, int len, StringInfo out)
{
	Sink		k = {out, NULL, 0};

	return unescape(s, len, &k);
}

/*
 * The same into raw, which has room for len bytes (decoding never makes a
 * string longer); *outlen gets the bytes written.  Allocates nothing.
 */
bool
claude_json_unescape_raw(const char *s, int len, char *raw, int *outlen)
{
	Sink		k = {NULL, raw, 0};
	bool		ok = unescape(s, len, &k);

	*outlen = k.n;
	return ok;
}

/* ---- members of an object, as they stand in the text ---- */

/* The end of the value at p in well-formed JSON, or NULL. */
static const char *
skip_value(const char *p, const char *end)
{
	int			depth = 0;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return scan_string(p + 1, end);
	if (*p != '{' && *p != '[')
		return scan_bare(p, end);
	while (p < end)
	{
		if (*p == '"')
		{
			if ((p = scan_string(p + 1, end)) == NULL)
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if ((*p == '}' || *p == ']') && --depth == 0)
			return p + 1;
		p++;
	}
	return NULL;
}

/*
 * Call found for every member of the object json (checked well-formed by
 * claude_json_scan), with its key undecoded and its value's text, so a
 * value can be copied as it is.  False if json is not an object.  Never
 * raises, allocates nothing, and does not recurse.
 */
bool
claude_json_members(const char *json, Size len, ClaudeJsonMember found, void *arg)
{
	const char *p = json;
	const char *end = json + len;

	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return false;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}')
		return true;
	for (;;)
	{
		const char *key;
		const char *value;

		if (p >= end || *p != '"')
			return false;
		key = p + 1;
		if ((p = scan_string(p + 1, end)) == NULL)
			return false;
		{
			int			keylen = p - 1 - key;

			p = skip_ws(p, end);
			if (p >= end || *p != ':')
				return false;
			value = skip_ws(p + 1, end);
			if ((p = skip_value(value, end)) == NULL)
				return false;
			found(arg, key, keylen, value, p - value);
		}
		p = skip_ws(p, end);
		if (p < end && *p == ',')
		{
			p = skip_ws(p + 1, end);
			continue;
		}
		return p < end && *p == '}';
	}
}

typedef struct MemberFind
{
	const char *key;
	const char *value;
	Size		len;
} MemberFind;

static void
member_found(void *arg, const char *key, int keylen, const char *value, Size len)
{
	MemberFind *f = arg;

	if (f->value == NULL && keylen == (int) strlen(f->key) && memcmp(key, f->key, keylen) == 0)
		f->value = value, f->len = len;
}

/* The text of member key of the object json, or NULL. */
const char *
claude_json_member(const char *json, Size len, const char *key, Size *vlen)
{
	MemberFind	f = {key, NULL, 0};

	if (!claude_json_members(json, len, member_found, &f))
		return NULL;
	*vlen = f.len;
	return f.value;
}

/*
 * A value as it stands that is a string without escapes (ids, types,
 * names, times), its text; NULL for anything else.
 */
char *
claude_json_plain_string(const char *value, Size len)
{
	if (len < 2 || value[0] != '"' || value[len - 1] != '"' || memchr(value, '\\', len) != NULL)
		return NULL;
	return pnstrdup(value + 1, len - 2);
}

/* ---- the usage object of a reply ---- */

typedef struct UsageScan
{
	ClaudeUsage *usage;
	bool		found;
	bool		bad;			/* a count out of range */
} UsageScan;

static void
usage_found(void *arg, const ClaudeJsonKey *path, int depth, const char *tok, int len,
			bool string)
{
	UsageScan  *st = arg;
	ClaudeUsage *u = st->usage;
	char		buf[64];
	double		v;
	const ClaudeJsonKey *field = &path[depth - 1];

	if (depth < 2 || !claude_json_key_is(&path[0], "usage"))
		return;
	st->found = true;
	if (string || len >= (int) sizeof(buf) || !(isdigit((unsigned char) *tok) || *tok == '-'))
		return;					/* null, true, false, or not a count */
	memcpy(buf, tok, len);
	buf[len] = '\0';
	v = strtod(buf, NULL);
	if (depth == 3 && claude_json_key_is(&path[1], "cache_creation"))
	{
		if (!claude_json_key_is(field, "ephemeral_1h_input_tokens"))
			return;
	}
	else if (depth != 2)
		return;
	else if (!claude_json_key_is(field, "input_tokens") &&
			 !claude_json_key_is(field, "output_tokens") &&
			 !claude_json_key_is(field, "cache_creation_input_tokens") &&
			 !claude_json_key_is(field, "cache_read_input_tokens"))
		return;
	/* a server's number reaches shared state only within range */
	if (!(v >= 0 && v <= CLAUDE_MAX_TOKENS) || v != floor(v))
	{
		st->bad = true;
		return;
	}
	if (depth == 3)
		u->cache_write_1h = v;
	else if (claude_json_key_is(field, "input_tokens"))
		u->input = v;
	else if (claude_json_key_is(field, "output_tokens"))
		u->output = v;
	else if (claude_json_key_is(field, "cache_creation_input_tokens"))
		u->cache_write = v;
	else
		u->cache_read = v;
}

/*
 * The "usage" object of a reply: input, output, cache write (of which 1 h)
 * and cache read tokens, each a whole number from 0 to CLAUDE_MAX_TOKENS.
 * False when the reply is not JSON, has no usage, or a count is out of
 * range (then nothing of it is used).  Never raises: the HTTP worker and
 * every caller use it alike.
 */
bool
claude_reply_usage(const char *json, Size len, ClaudeUsage *usage)
{
	UsageScan	st = {usage, false, false};

	memset(usage, 0, sizeof(*usage));
	if (!claude_json_scan(json, len, usage_found, &st) || !st.found || st.bad ||
		usage->cache_write_1h > usage->cache_write)
	{
		memset(usage, 0, sizeof(*usage));
		return false;
	}
	return true;
}

/* ---- the error object of an error reply ---- */

typedef struct ErrorScan
{
	StringInfo	type;
	StringInfo	message;
} ErrorScan;

static void
error_found(void *arg, const ClaudeJsonKey *path, int depth, const char *tok, int len,
			bool string)
{
	ErrorScan  *st = arg;
	StringInfo	into;

	if (depth != 2 || !string || !claude_json_key_is(&path[0], "error"))
		return;
	into = claude_json_key_is(&path[1], "type") ? st->type :
		claude_json_key_is(&path[1], "message") ? st->message : NULL;
	if (into != NULL && into->len == 0)
		(void) claude_json_unescape(tok, len, into);
}

/*
 * error.type and error.message of an error reply, decoded to UTF-8 (empty
 * when absent, or the body is not JSON).  Never raises.
 */
void
claude_reply_error(const char *json, Size len, StringInfo type, StringInfo message)
{
	ErrorScan	st = {type, message};

	if (!claude_json_scan(json, len, error_found, &st))
	{
		resetStringInfo(type);
		resetStringInfo(message);
	}
}

typedef struct ErrorTypeScan
{
	int			len;			/* -2: no error.type yet (the first counts), -1: no short string */
	char		type[64];		/* a string of up to 64 bytes decodes into it */
} ErrorTypeScan;

static void
error_type_found(void *arg, const ClaudeJsonKey *path, int depth, const char *tok, int len,
				 bool string)
{
	ErrorTypeScan *st = arg;

	if (st->len != -2 || depth != 2 || !claude_json_key_is(&path[0], "error") ||
		!claude_json_key_is(&path[1], "type"))
		return;
	if (!string || len > (int) sizeof(st->type) ||
		!claude_json_unescape_raw(tok, len, st->type, &st->len))
		st->len = -1;
}

/* Whether error.type is type; allocates nothing, never raises (the HTTP worker's). */
bool
claude_reply_error_is(const char *json, Size len, const char *type)
{
	ErrorTypeScan st = {-2};

	return json != NULL && claude_json_scan(json, len, error_type_found, &st) &&
		st.len == (int) strlen(type) && memcmp(st.type, type, st.len) == 0;
}
