/*
 * pipe.h
 *		Many requests in flight from one session.
 */
#ifndef CLAUDE_PIPE_H
#define CLAUDE_PIPE_H

#include "fmgr.h"

typedef struct ClaudePipe ClaudePipe;

#include "client/request.h"
#include "client/structured.h"
#include "shmem/slots.h"

/*
 * A finished request: its completion, or else the error that ended it;
 * result is NULL when no request was made (a cache hit).
 */
typedef void (*ClaudePipeDone) (void *arg, int64 tag, text *completion,
								const char *error, const ClaudeResult *result);

/*
 * Inside done, the call a result belongs to (its reply as it came, UTF-8,
 * or NULL), valid until done returns: a pipe passes &call->result.
 */
static inline const ClaudeCall *
claude_pipe_call_of(const ClaudeResult *result)
{
	return (const ClaudeCall *) ((const char *) result - offsetof(ClaudeCall, result));
}

extern ClaudePipe *claude_pipe_create(int window);
extern void claude_pipe_keep_slots(ClaudePipe *p);
extern bool claude_pipe_full(ClaudePipe *p);
extern int	claude_pipe_room(ClaudePipe *p);
extern int	claude_pipe_outstanding(ClaudePipe *p);
extern bool claude_pipe_submit(ClaudePipe *p, int64 tag, ClaudeCall *c,
							   ClaudePipeDone done, void *arg);
extern bool claude_pipe_submit_checked(ClaudePipe *p, int64 tag, ClaudeCall *c,
									   const ClaudeReplyCheck *check,
									   ClaudePipeDone done, void *arg);
extern bool claude_pipe_poll(ClaudePipe *p, ClaudePipeDone done, void *arg);
extern void claude_pipe_collect(ClaudePipe *p, ClaudePipeDone done, void *arg);
extern void claude_pipe_abandon(ClaudePipe *p);

#endif
