/*
 * stream.h
 *		A streamed Messages call, as the backend reads it.
 */
#ifndef CLAUDE_STREAM_H
#define CLAUDE_STREAM_H

#include "client/request.h"
#include "common/errors.h"

typedef struct ClaudeStream
{
	ClaudeCall	call;			/* call.reply: the Message, UTF-8, at the end */
	char	   *items;			/* taken, NUL-terminated items */
	Size		len;
	Size		pos;
} ClaudeStream;

extern bool claude_stream_begin(ClaudeStream *st, const ClaudeCall *call);
extern const char *claude_stream_next(ClaudeStream *st);
extern bool claude_stream_ready(ClaudeStream *st);
extern void claude_stream_abandon(ClaudeStream *st);
extern char *claude_stream_item_text(const char *item);

#endif
