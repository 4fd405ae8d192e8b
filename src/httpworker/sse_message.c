/*
 * sse_message.c
 *		The Message a streamed reply makes, assembled from its events (see
 *		sse.c); its error event as an error reply; its usage so far.
 *		Caller: the HTTP worker's queue, when an attempt ends.
 *
 * The Message is built as text, without raising: the message of
 * message_start, each content block of content_block_start with the fields
 * its deltas accumulated put in (text, thinking, signature, citations, and
 * a tool's input parsed from its partial JSON), stop_reason and
 * stop_sequence from message_delta, and usage merged from both.  Values are
 * copied as they stand, escapes and all.
 */
#include "postgres.h"

#include "httpworker/sse_int.h"

typedef struct Emit
{
	ClaudeSse  *s;
	Buf			out;
	bool		ok;
	bool		first;
	const Block *block;			/* writing a block; NULL: the message */
	const Buf  *usage;			/* merging into usage: message_delta's */
} Emit;

/* The Message is a copy of what is held: it does not count twice. */
static void
put(Emit *e, const char *data, size_t n)
{
	if (e->ok && !claude_sse_buf_grow(&e->out, data, n))
		e->ok = false;
}

static void
put_str(Emit *e, const char *str)
{
	put(e, str, strlen(str));
}

static void
put_key(Emit *e, const char *key, int keylen)
{
	put_str(e, e->first ? "\"" : ", \"");
	put(e, key, keylen);
	put_str(e, "\": ");
	e->first = false;
}

static bool
key_is(const char *key, int keylen, const char *name)
{
	return keylen == (int) strlen(name) && memcmp(key, name, keylen) == 0;
}

/* A field a block's deltas filled, in place of its start value. */
static void
put_field(Emit *e, const Block *b, int f)
{
	const Buf  *v = &b->field[f];

	if (f == F_CITATIONS)
	{
		put_str(e, "[");
		put(e, v->data, v->len);
		put_str(e, "]");
	}
	else if (f == F_INPUT)
	{
		/* the tool's input is the JSON its pieces make up ({} if none) */
		if (v->len > 0 && claude_json_scan(v->data, v->len, NULL, NULL))
			put(e, v->data, v->len);
		else if (v->len == 0)
			put_str(e, "{}");
		else
			e->ok = false;
	}
	else
	{
		put_str(e, "\"");
		put(e, v->data, v->len);
		put_str(e, "\"");
	}
}

static void
block_member(void *arg, const char *key, int keylen, const char *value, Size len)
{
	Emit	   *e = arg;

	for (int f = 0; f < NFIELDS; f++)
		if (e->block->has[f] && key_is(key, keylen, claude_sse_field_names[f]))
			return;				/* written after, from the deltas */
	put_key(e, key, keylen);
	put(e, value, len);
}

static void
put_block(Emit *e, const Block *b)
{
	put_str(e, "{");
	e->first = true;
	e->block = b;
	if (!claude_json_members(b->start.data, b->start.len, block_member, e))
		e->ok = false;
	for (int f = 0; f < NFIELDS; f++)
	{
		if (!b->has[f])
			continue;
		put_key(e, claude_sse_field_names[f], strlen(claude_sse_field_names[f]));
		put_field(e, b, f);
	}
	put_str(e, "}");
}

/* message_start's usage, each count message_delta also gives replaced */
static void
usage_member(void *arg, const char *key, int keylen, const char *value, Size len)
{
	Emit	   *e = arg;
	size_t		vlen;
	const char *later;
	char		name[64];

	if (keylen >= (int) sizeof(name))
		return;
	memcpy(name, key, keylen);
	name[keylen] = '\0';
	later = e->usage->len ? claude_json_member(e->usage->data, e->usage->len, name, &vlen) : NULL;
	put_key(e, key, keylen);
	if (later && !(vlen == 4 && memcmp(later, "null", 4) == 0))
		put(e, later, vlen);
	else
		put(e, value, len);
}

typedef struct UsageMerge
{
	Emit	   *e;
	const char *start;			/* message_start's usage */
	size_t		start_len;
} UsageMerge;

/* counts only message_delta gives */
static void
usage_extra(void *arg, const char *key, int keylen, const char *value, Size len)
{
	UsageMerge *m = arg;
	char		name[64];
	size_t		vlen;

	if (keylen >= (int) sizeof(name))
		return;
	memcpy(name, key, keylen);
	name[keylen] = '\0';
	if (m->start && claude_json_member(m->start, m->start_len, name, &vlen))
		return;
	put_key(m->e, key, keylen);
	put(m->e, value, len);
}

static void
put_usage(Emit *e, const char *start, size_t start_len)
{
	UsageMerge	m = {e, start, start_len};

	put_str(e, "{");
	e->first = true;
	if (start && !claude_json_members(start, start_len, usage_member, e))
		e->ok = false;
	if (e->usage->len && !claude_json_members(e->usage->data, e->usage->len, usage_extra, &m))
		e->ok = false;
	put_str(e, "}");
}

static void
message_member(void *arg, const char *key, int keylen, const char *value, Size len)
{
	Emit	   *e = arg;
	ClaudeSse  *s = e->s;

	if (key_is(key, keylen, "content"))
	{
		put_key(e, key, keylen);
		put_str(e, "[");
		for (int i = 0; i < s->nblocks; i++)
		{
			if (i > 0)
				put_str(e, ", ");
			if (s->blocks[i].start.len == 0)
				e->ok = false;	/* a delta of a block never started */
			else
				put_block(e, &s->blocks[i]);
			e->first = false;
		}
		put_str(e, "]");
	}
	else if (key_is(key, keylen, "stop_reason") && s->stop_reason.len)
	{
		put_key(e, key, keylen);
		put(e, s->stop_reason.data, s->stop_reason.len);
	}
	else if (key_is(key, keylen, "stop_sequence") && s->stop_sequence.len)
	{
		put_key(e, key, keylen);
		put(e, s->stop_sequence.data, s->stop_sequence.len);
	}
	else if (key_is(key, keylen, "usage") && *value == '{')
	{
		put_key(e, key, keylen);
		put_usage(e, value, len);
	}
	else
	{
		put_key(e, key, keylen);
		put(e, value, len);
	}
}

/*
 * The assembled Message (malloc'd, NUL-terminated), once message_stop
 * came; NULL if it did not or the parts do not make one.
 */
char *
claude_sse_message(ClaudeSse *s, size_t *len)
{
	Emit		e;

	memset(&e, 0, sizeof(e));
	e.s = s;
	e.ok = true;
	e.first = true;
	e.usage = &s->usage;
	if (s->state != SSE_STOPPED)
		return NULL;
	put_str(&e, "{");
	if (!claude_json_members(s->message.data, s->message.len, message_member, &e))
		e.ok = false;
	put_str(&e, "}");
	if (!e.ok || !claude_json_scan(e.out.data, e.out.len, NULL, NULL))
	{
		claude_sse_buf_free(&e.out);
		return NULL;
	}
	*len = e.out.len;
	return e.out.data;
}

/*
 * The data of an error event ({"type": "error", "error": {...}}, as an
 * error reply's body) and the HTTP status the same error has as a reply.
 */
const char *
claude_sse_error(const ClaudeSse *s, size_t *len, int *status)
{
	static const struct
	{
		const char *type;
		int			status;
	}			statuses[] = {
		{"invalid_request_error", 400}, {"authentication_error", 401},
		{"billing_error", 402}, {"permission_error", 403},
		{"not_found_error", 404}, {"request_too_large", 413},
		{"rate_limit_error", 429}, {"api_error", 500},
		{"timeout_error", 504}, {"overloaded_error", 529},
	};
	size_t		elen,
				tlen;
	const char *err = claude_json_member(s->error.data, s->error.len, "error", &elen);
	const char *type = claude_sse_string(err, elen, "type", &tlen);

	*status = 500;
	for (int i = 0; type && i < lengthof(statuses); i++)
		if (tlen == strlen(statuses[i].type) && memcmp(type, statuses[i].type, tlen) == 0)
			*status = statuses[i].status;
	*len = s->error.len;
	return s->error.data;
}

/*
 * The usage known so far: message_start's, with the counts of the last
 * message_delta.  The output is known only from a message_delta (the
 * output_tokens of message_start is a placeholder): without one it counts
 * 0, unknown.  False before message_start, or when a count is bad.
 */
bool
claude_sse_usage(const ClaudeSse *s, ClaudeUsage *usage)
{
	Emit		e;
	bool		ok;
	size_t		len;
	const char *output;

	if (s->message.len == 0)
		return false;
	memset(&e, 0, sizeof(e));
	e.s = (ClaudeSse *) s;
	e.ok = true;
	e.first = true;
	e.usage = &s->usage;
	{
		size_t		ulen;
		const char *u = claude_json_member(s->message.data, s->message.len, "usage", &ulen);

		put_str(&e, "{\"usage\": ");
		e.first = true;
		if (u && *u == '{')
			put_usage(&e, u, ulen);
		else
			put_str(&e, "{}");
		put_str(&e, "}");
	}
	ok = e.ok && claude_reply_usage(e.out.data, e.out.len, usage);
	claude_sse_buf_free(&e.out);
	output = s->usage.len == 0 ? NULL :
		claude_json_member(s->usage.data, s->usage.len, "output_tokens", &len);
	if (output == NULL || (len == 4 && memcmp(output, "null", 4) == 0))
		usage->output = 0;
	return ok;
}
