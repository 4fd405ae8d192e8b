/*
 * endpoint.h
 *		The API endpoints the extension calls, and what each one is.
 */
#ifndef CLAUDE_ENDPOINT_H
#define CLAUDE_ENDPOINT_H

#include "shmem/pack.h"

typedef enum ClaudeEndpointId
{
	CLAUDE_EP_MESSAGES,
	CLAUDE_EP_COUNT_TOKENS,
	CLAUDE_EP_MODELS,
	CLAUDE_EP_MODEL,
	CLAUDE_EP_BATCH_CREATE,
	CLAUDE_EP_BATCH,
	CLAUDE_EP_BATCH_RESULTS,
	CLAUDE_EP_BATCH_CANCEL
} ClaudeEndpointId;

typedef struct ClaudeEndpoint
{
	const char *path;			/* "%s" where an id goes (a batch's) */
	ClaudeMethod method;
	bool		streams;		/* may go streamed on the wire (SSE) */
	bool		idempotent;		/* may be sent again after a transport error */
	bool		cacheable;		/* its replies may be kept in claude_cache */
	ClaudeReplyKind reply;
} ClaudeEndpoint;

extern const ClaudeEndpoint *claude_endpoint(ClaudeEndpointId id);

#endif
