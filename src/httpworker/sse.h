/*
 * sse.h
 *		A streamed Messages reply: server-sent events read as they arrive,
 *		assembled into the Message a non-streamed request gets.
 */
#ifndef CLAUDE_SSE_H
#define CLAUDE_SSE_H

#include "common/json.h"
#include "shmem/pack.h"

typedef struct ClaudeSse ClaudeSse;

typedef enum ClaudeSseState
{
	SSE_OPEN,					/* no message_stop or error yet */
	SSE_STOPPED,				/* message_stop came */
	SSE_ERROR,					/* an error event came */
	SSE_BROKEN					/* not an event stream we can read */
} ClaudeSseState;

extern ClaudeSse *claude_sse_create(ClaudeStreamMode mode, size_t limit);
extern void claude_sse_free(ClaudeSse *s);
extern bool claude_sse_feed(ClaudeSse *s, const char *data, size_t n);
extern ClaudeSseState claude_sse_state(const ClaudeSse *s);
extern const char *claude_sse_why(const ClaudeSse *s);
extern bool claude_sse_started_text(const ClaudeSse *s);
extern const char *claude_sse_outbox(const ClaudeSse *s, size_t *len);
extern void claude_sse_outbox_taken(ClaudeSse *s, size_t n);
extern bool claude_sse_delivered(const ClaudeSse *s);
extern char *claude_sse_message(ClaudeSse *s, size_t *len);
extern const char *claude_sse_error(const ClaudeSse *s, size_t *len, int *status);
extern bool claude_sse_usage(const ClaudeSse *s, ClaudeUsage *usage);

#endif
