/*
 * sse_int.h
 *		The state of a streamed reply, shared by the parser (sse.c) and the
 *		assembly of its Message (sse_message.c); no one else reads it.
 */
#ifndef CLAUDE_SSE_INT_H
#define CLAUDE_SSE_INT_H

#include "httpworker/sse.h"

#define MAX_EVENT_NAME	64
#define MAX_BLOCKS		4096

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

/* the fields deltas accumulate, and the member each one fills */
enum
{
	F_TEXT,						/* text_delta: "text", escaped as sent */
	F_THINKING,					/* thinking_delta */
	F_SIGNATURE,				/* signature_delta */
	F_CITATIONS,				/* citations_delta: objects, comma-separated */
	F_INPUT,					/* input_json_delta: decoded JSON text */
	NFIELDS
};

extern const char *const claude_sse_field_names[NFIELDS];

typedef struct Block
{
	Buf			start;			/* content_block of content_block_start */
	Buf			field[NFIELDS];
	bool		has[NFIELDS];
} Block;

struct ClaudeSse
{
	ClaudeStreamMode mode;
	size_t		limit;			/* bytes held, at most */
	size_t		held;
	ClaudeSseState state;
	const char *why;			/* when broken */
	Buf			line;
	bool		after_cr;
	char		event[MAX_EVENT_NAME + 1];
	Buf			data;
	bool		have_data;
	Buf			message;		/* of message_start */
	Block	   *blocks;
	int			nblocks;
	Buf			stop_reason;	/* values of message_delta, as they stand */
	Buf			stop_sequence;
	Buf			usage;			/* message_delta's usage object */
	Buf			error;			/* an error event's data */
	Buf			outbox;			/* for the caller, NUL-terminated items */
	size_t		outbox_from;	/* taken so far */
	bool		delivered;
	bool		text_started;
};

extern bool claude_sse_buf_grow(Buf *b, const char *data, size_t n);
extern void claude_sse_buf_free(Buf *b);
extern const char *claude_sse_string(const char *json, size_t jlen, const char *key,
									 size_t *len);

#endif
