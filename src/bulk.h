/*
 * bulk.h
 *		Many requests in flight from one session.
 */
#ifndef CLAUDE_BULK_H
#define CLAUDE_BULK_H

#include "fmgr.h"

typedef struct ClaudePipe ClaudePipe;

/* A finished request: its completion, or else the error that ended it. */
typedef void (*ClaudePipeDone) (void *arg, int64 tag, text *completion,
								const char *error);

extern ClaudePipe *claude_pipe_create(int window);
extern bool claude_pipe_full(ClaudePipe *p);
extern int	claude_pipe_outstanding(ClaudePipe *p);
extern bool claude_pipe_submit(ClaudePipe *p, FunctionCallInfo fcinfo,
							   int cache_argno, int64 tag, const char *body,
							   int max_tokens, ClaudePipeDone done, void *arg);
extern void claude_pipe_collect(ClaudePipe *p, ClaudePipeDone done, void *arg);

#endif
