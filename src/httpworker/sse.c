/*
 * sse.c
 *		A streamed Messages reply in the HTTP worker: server-sent events
 *		parsed as they arrive and assembled into exactly the Message a
 *		non-streamed request gets.  Caller: http.c, inside curl's callbacks.
 *
 * Everything here runs inside libcurl's write callback, so nothing may
 * raise: memory is malloc'd, every buffer counts against the reply's limit
 * (claude.max_reply_size), the JSON of each event is checked by the
 * non-recursive walker before anything reads it, and numbers are clamped.
 * What the events carry is kept as it stands, for sse_message.c.
 */
#include "postgres.h"

#include "httpworker/sse_int.h"

const char *const claude_sse_field_names[NFIELDS] = {"text", "thinking", "signature", "citations", "input"};

bool
claude_sse_buf_grow(Buf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = Max(b->cap * 2, 256);
		char	   *grown;

		while (cap < b->len + n + 1)
			cap *= 2;
		if ((grown = realloc(b->data, cap)) == NULL)
			return false;
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return true;
}

/* Add to a buffer of the stream's, within the reply's limit. */
static bool
buf_add(ClaudeSse *s, Buf *b, const char *data, size_t n)
{
	if (n > s->limit - s->held || !claude_sse_buf_grow(b, data, n))
		return false;
	s->held += n;
	return true;
}

static bool
buf_set(ClaudeSse *s, Buf *b, const char *data, size_t n)
{
	s->held -= b->len;
	b->len = 0;
	return buf_add(s, b, data, n);
}

void
claude_sse_buf_free(Buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static bool
broken(ClaudeSse *s, const char *why)
{
	s->state = SSE_BROKEN;
	s->why = why;
	return false;
}

ClaudeSse *
claude_sse_create(ClaudeStreamMode mode, size_t limit)
{
	ClaudeSse  *s = calloc(1, sizeof(ClaudeSse));

	if (s == NULL)
		return NULL;
	s->mode = mode;
	s->limit = limit;
	s->state = SSE_OPEN;
	return s;
}

void
claude_sse_free(ClaudeSse *s)
{
	if (s == NULL)
		return;
	claude_sse_buf_free(&s->line);
	claude_sse_buf_free(&s->data);
	claude_sse_buf_free(&s->message);
	for (int i = 0; i < s->nblocks; i++)
	{
		claude_sse_buf_free(&s->blocks[i].start);
		for (int f = 0; f < NFIELDS; f++)
			claude_sse_buf_free(&s->blocks[i].field[f]);
	}
	free(s->blocks);
	claude_sse_buf_free(&s->stop_reason);
	claude_sse_buf_free(&s->stop_sequence);
	claude_sse_buf_free(&s->usage);
	claude_sse_buf_free(&s->error);
	claude_sse_buf_free(&s->outbox);
	free(s);
}

/* The member key of an object, or NULL; *len its length. */
static const char *
member(const Buf *b, const char *key, size_t *len)
{
	return claude_json_member(b->data, b->len, key, len);
}

static const char *
member_of(const char *json, size_t jlen, const char *key, size_t *len)
{
	return json ? claude_json_member(json, jlen, key, len) : NULL;
}

/* A member's string value without its quotes (escapes kept), or NULL. */
const char *
claude_sse_string(const char *json, size_t jlen, const char *key, size_t *len)
{
	const char *v = member_of(json, jlen, key, len);

	if (v == NULL || *len < 2 || v[0] != '"')
		return NULL;
	*len -= 2;
	return v + 1;
}

/* The block of an event's "index", made if new; NULL if out of range. */
static Block *
block_of(ClaudeSse *s, const Buf *ev)
{
	size_t		len;
	const char *v = member(ev, "index", &len);
	long		i = 0;

	if (v == NULL || len == 0 || len > 5)
		return NULL;
	for (size_t k = 0; k < len; k++)
	{
		if (v[k] < '0' || v[k] > '9')
			return NULL;
		i = i * 10 + (v[k] - '0');
	}
	if (i >= MAX_BLOCKS || i > s->nblocks)
		return NULL;			/* blocks come in order */
	if (i == s->nblocks)
	{
		Block	   *grown = realloc(s->blocks, (s->nblocks + 1) * sizeof(Block));

		if (grown == NULL)
			return NULL;
		s->blocks = grown;
		memset(&s->blocks[s->nblocks++], 0, sizeof(Block));
	}
	return &s->blocks[i];
}

/* Hand an item to the caller: an event's data, or a piece of text. */
static bool
deliver(ClaudeSse *s, const char *data, size_t n)
{
	s->delivered = true;
	return buf_add(s, &s->outbox, data, n) && buf_add(s, &s->outbox, "", 1);
}

/*
 * Decode the text of a JSON string into b, or into the outbox as an item.
 * A \u0000 fails the stream, as it fails claude_complete: no PostgreSQL
 * text holds it, and items are NUL-terminated.
 */
static bool
add_decoded(ClaudeSse *s, Buf *b, const char *v, size_t vlen)
{
	char	   *raw = malloc(vlen + 1);
	int			rlen;
	bool		ok;

	if (raw == NULL)
		return broken(s, "out of memory");
	if (!claude_json_unescape_raw(v, (int) vlen, raw, &rlen))
	{
		free(raw);
		return broken(s, "the stream sent \\u0000 in a delta");
	}
	ok = b == &s->outbox ? deliver(s, raw, rlen) : buf_add(s, b, raw, rlen);
	free(raw);
	return ok ? true : broken(s, "the stream is larger than claude.max_reply_size");
}

static bool
on_delta(ClaudeSse *s, const Buf *ev)
{
	Block	   *b = block_of(s, ev);
	size_t		dlen,
				tlen,
				vlen;
	const char *delta = member(ev, "delta", &dlen);
	const char *type = claude_sse_string(delta, dlen, "type", &tlen);
	const char *v;

#define TYPE_IS(name) (tlen == strlen(name) && memcmp(type, name, tlen) == 0)
	if (b == NULL || type == NULL)
		return broken(s, "a content_block_delta event without its block");
	if (TYPE_IS("text_delta") && (v = claude_sse_string(delta, dlen, "text", &vlen)) != NULL)
	{
		s->text_started = true;
		b->has[F_TEXT] = true;
		if (!buf_add(s, &b->field[F_TEXT], v, vlen))
			return broken(s, "the stream is larger than claude.max_reply_size");
		if (s->mode == CLAUDE_STREAM_TEXT)
			return add_decoded(s, &s->outbox, v, vlen);
		return true;
	}
	if (TYPE_IS("input_json_delta") && (v = claude_sse_string(delta, dlen, "partial_json", &vlen)) != NULL)
	{
		b->has[F_INPUT] = true;
		s->text_started = true;
		return add_decoded(s, &b->field[F_INPUT], v, vlen);
	}
	if (TYPE_IS("thinking_delta") && (v = claude_sse_string(delta, dlen, "thinking", &vlen)) != NULL)
	{
		s->text_started = true;
		b->has[F_THINKING] = true;
		return buf_add(s, &b->field[F_THINKING], v, vlen) ? true :
			broken(s, "the stream is larger than claude.max_reply_size");
	}
	if (TYPE_IS("signature_delta") && (v = claude_sse_string(delta, dlen, "signature", &vlen)) != NULL)
	{
		b->has[F_SIGNATURE] = true;
		return buf_add(s, &b->field[F_SIGNATURE], v, vlen) ? true :
			broken(s, "the stream is larger than claude.max_reply_size");
	}
	if (TYPE_IS("citations_delta") && (v = member_of(delta, dlen, "citation", &vlen)) != NULL)
	{
		bool		ok = (!b->has[F_CITATIONS] || buf_add(s, &b->field[F_CITATIONS], ",", 1)) &&
			buf_add(s, &b->field[F_CITATIONS], v, vlen);

		b->has[F_CITATIONS] = true;
		return ok ? true : broken(s, "the stream is larger than claude.max_reply_size");
	}
#undef TYPE_IS
	return true;				/* a delta of a kind not known yet */
}

/* One whole event: its data checked, then read by its type. */
static bool
dispatch_event(ClaudeSse *s)
{
	Buf		   *ev = &s->data;
	size_t		tlen,
				vlen;
	const char *type;
	const char *v;
	bool		ok = true;

	if (!claude_json_scan(ev->data, ev->len, NULL, NULL))
		return broken(s, "the stream sent an event whose data is not JSON");
	if ((type = claude_sse_string(ev->data, ev->len, "type", &tlen)) == NULL)
		return broken(s, "the stream sent an event without a type");

#define TYPE_IS(name) (tlen == strlen(name) && memcmp(type, name, tlen) == 0)
	if (TYPE_IS("ping"))
		return true;
	if (TYPE_IS("error"))
	{
		s->state = SSE_ERROR;
		return buf_set(s, &s->error, ev->data, ev->len);
	}
	if (s->mode == CLAUDE_STREAM_EVENTS && !deliver(s, ev->data, ev->len))
		return broken(s, "the stream is larger than claude.max_reply_size");
	if (TYPE_IS("message_start"))
	{
		if ((v = member(ev, "message", &vlen)) == NULL || *v != '{')
			return broken(s, "a message_start event without its message");
		ok = buf_set(s, &s->message, v, vlen);
	}
	else if (TYPE_IS("content_block_start"))
	{
		Block	   *b = block_of(s, ev);

		if (b == NULL || (v = member(ev, "content_block", &vlen)) == NULL || *v != '{')
			return broken(s, "a content_block_start event without its block");
		ok = buf_set(s, &b->start, v, vlen);
	}
	else if (TYPE_IS("content_block_delta"))
		return on_delta(s, ev);
	else if (TYPE_IS("message_delta"))
	{
		size_t		dlen;
		const char *delta = member(ev, "delta", &dlen);

		if ((v = member_of(delta, dlen, "stop_reason", &vlen)) != NULL)
			ok = buf_set(s, &s->stop_reason, v, vlen);
		if (ok && (v = member_of(delta, dlen, "stop_sequence", &vlen)) != NULL)
			ok = buf_set(s, &s->stop_sequence, v, vlen);
		if (ok && (v = member(ev, "usage", &vlen)) != NULL && *v == '{')
			ok = buf_set(s, &s->usage, v, vlen);
	}
	else if (TYPE_IS("message_stop"))
	{
		if (s->message.len == 0)
			return broken(s, "a message_stop event before message_start");
		s->state = SSE_STOPPED;
	}
#undef TYPE_IS
	return ok ? true : broken(s, "the stream is larger than claude.max_reply_size");
}

/* A line of the stream (without its end). */
static bool
on_line(ClaudeSse *s, const char *l, size_t n)
{
	const char *colon;
	size_t		name_len;
	const char *value;
	size_t		vlen;

	if (n == 0)
	{
		bool		ok = true;

		if (s->have_data)
			ok = dispatch_event(s);
		/* an event counts against the limit while read, not for ever */
		s->held -= s->data.len;
		s->data.len = 0;
		s->have_data = false;
		s->event[0] = '\0';
		return ok;
	}
	if (l[0] == ':')
		return true;			/* a comment */
	colon = memchr(l, ':', n);
	name_len = colon ? colon - l : n;
	value = colon ? colon + 1 : l + n;
	vlen = n - (value - l);
	if (vlen > 0 && value[0] == ' ')
		value++, vlen--;
	if (name_len == 4 && memcmp(l, "data", 4) == 0)
	{
		if (s->have_data && !buf_add(s, &s->data, "\n", 1))
			return broken(s, "the stream is larger than claude.max_reply_size");
		s->have_data = true;
		return buf_add(s, &s->data, value, vlen) ? true :
			broken(s, "the stream is larger than claude.max_reply_size");
	}
	if (name_len == 5 && memcmp(l, "event", 5) == 0)
	{
		vlen = Min(vlen, MAX_EVENT_NAME);
		memcpy(s->event, value, vlen);
		s->event[vlen] = '\0';
	}
	return true;				/* id, retry and unknown fields */
}

/*
 * Read more of the stream; false once it is broken (claude_sse_why says
 * why).  Events after message_stop or an error are not read.
 */
bool
claude_sse_feed(ClaudeSse *s, const char *data, size_t n)
{
	const char *end = data + n;

	if (s->state == SSE_BROKEN)
		return false;
	while (data < end && s->state == SSE_OPEN)
	{
		const char *nl = data;

		while (nl < end && *nl != '\n' && *nl != '\r')
			nl++;
		if (nl == data && s->after_cr && *data == '\n')
		{
			s->after_cr = false;	/* the \n of a \r\n */
			data++;
			continue;
		}
		s->after_cr = false;
		if (!buf_add(s, &s->line, data, nl - data))
			return broken(s, "the stream is larger than claude.max_reply_size");
		if (nl == end)
			break;
		s->after_cr = *nl == '\r';
		if (!on_line(s, s->line.data ? s->line.data : "", s->line.len))
			return false;
		s->held -= s->line.len;
		s->line.len = 0;
		data = nl + 1;
	}
	return true;
}

ClaudeSseState
claude_sse_state(const ClaudeSse *s)
{
	return s->state;
}

const char *
claude_sse_why(const ClaudeSse *s)
{
	return s->why ? s->why : "the stream ended without message_stop";
}

/* Whether the first token (text, thinking or tool input) came. */
bool
claude_sse_started_text(const ClaudeSse *s)
{
	return s->text_started;
}

/* Items for the caller not taken yet. */
const char *
claude_sse_outbox(const ClaudeSse *s, size_t *len)
{
	*len = s->outbox.len - s->outbox_from;
	return s->outbox.data + s->outbox_from;
}

void
claude_sse_outbox_taken(ClaudeSse *s, size_t n)
{
	s->outbox_from += n;
	if (s->outbox_from == s->outbox.len)
	{
		s->held -= s->outbox.len;
		s->outbox.len = s->outbox_from = 0;
	}
}

/* Whether anything was handed to the caller: then nothing can be retried. */
bool
claude_sse_delivered(const ClaudeSse *s)
{
	return s->delivered;
}
