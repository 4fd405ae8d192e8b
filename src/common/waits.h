/*
 * waits.h
 *		What a process of ours waits for, as pg_stat_activity.wait_event
 *		names it (custom wait events on 17+, "Extension" before).
 */
#ifndef CLAUDE_WAITS_H
#define CLAUDE_WAITS_H

#include "storage/latch.h"
#include "storage/spin.h"

typedef enum ClaudeWait
{
	CLAUDE_WAIT_REPLY,			/* a request's reply from the HTTP worker */
	CLAUDE_WAIT_RATE_LIMIT,		/* the worker holds it back for the rate limits */
	CLAUDE_WAIT_RETRY,			/* the worker waits to try it again */
	CLAUDE_WAIT_STREAM,			/* a stream's next events */
	CLAUDE_WAIT_SLOT,			/* a free request slot */
	CLAUDE_WAIT_CACHE_LEAD,		/* another session asking the same (cache) */
	CLAUDE_WAIT_DB_WORKER_EXIT, /* a database's worker to leave */
	CLAUDE_WAIT_HTTP_WORKER_MAIN,	/* the HTTP worker, idle or on sockets */
	CLAUDE_WAIT_DB_WORKER_MAIN, /* a database's worker, idle */
	CLAUDE_WAIT_COUNT
} ClaudeWait;

extern uint32 claude_wait_event(ClaudeWait what);
extern void claude_set_latch_guarded(slock_t *mutex, Latch *const *latch);

#endif
