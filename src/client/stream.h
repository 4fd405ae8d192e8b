/*
 * stream.h
 *		A streamed Messages call, as the backend reads it.
 */
#ifndef CLAUDE_STREAM_H
#define CLAUDE_STREAM_H

#include "client/cache.h"
#include "common/errors.h"

typedef struct ClaudeStream
{
	int			slot;			/* -1 once collected (or a cache hit) */
	ClaudeCacheCall cache;
	char	   *items;			/* taken, NUL-terminated items */
	Size		len;
	Size		pos;
	ClaudeResult result;
	char	   *reply;			/* the Message, UTF-8, at the end */
} ClaudeStream;

extern bool claude_stream_begin(ClaudeStream *st, const char *body, int max_tokens,
								ClaudeStreamMode mode, bool cache, Oid nsp, Jsonb **hit);
extern const char *claude_stream_next(ClaudeStream *st);
extern bool claude_stream_ready(ClaudeStream *st);
extern void claude_stream_abandon(ClaudeStream *st);
extern char *claude_stream_item_text(const char *item);

#endif
