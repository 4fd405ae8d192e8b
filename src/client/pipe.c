/*
 * pipe.c
 *		Many requests in flight from one session: claude_complete_many,
 *		claude_enrich and the database worker's job queue send through it.
 *
 * A pipe keeps up to a window of requests queued at the HTTP worker and
 * hands each reply over as soon as it arrives; the worker's pool and the
 * shared rate limits decide how fast they go.  A backend never blocks on a
 * slot while it holds finished ones: it collects those first.  A failed
 * request is reported for its row and the others go on; a cancel gives
 * back every slot through the queue's abort callbacks.
 */
#include "postgres.h"

#include "pgstat.h"

#include "client/budget.h"
#include "client/cache.h"
#include "client/call.h"
#include "client/pipe.h"

#include "client/message.h"
#include "common/waits.h"

typedef struct PipeItem
{
	int64		tag;
	int			slot;
} PipeItem;

struct ClaudePipe
{
	bool		cache;			/* use the cache */
	bool		keep;			/* its slots outlive aborts (claude_slot_keep) */
	Oid			nsp;			/* schema of claude_cache */
	int			window;
	int			n;
	PipeItem   *items;
};

ClaudePipe *
claude_pipe_create(int window, bool cache, Oid nsp)
{
	ClaudePipe *p = palloc0(sizeof(ClaudePipe));

	p->cache = cache;
	p->nsp = nsp;
	claude_require_shared();
	/* a session's share of the server's slots */
	p->window = Max(1, Min(window, claude_shared->nslots / CLAUDE_SLOTS_RESERVED));
	p->items = palloc(p->window * sizeof(PipeItem));
	return p;
}

/*
 * The requests of this pipe outlive the transactions that sent them: an
 * abort cancels none (the database worker's jobs), and the pipe's owner
 * takes every reply.
 */
void
claude_pipe_keep_slots(ClaudePipe *p)
{
	p->keep = true;
}

bool
claude_pipe_full(ClaudePipe *p)
{
	return p->n >= p->window;
}

int
claude_pipe_room(ClaudePipe *p)
{
	return p->window - p->n;
}

int
claude_pipe_outstanding(ClaudePipe *p)
{
	return p->n;
}

/*
 * Send one request body of claude_complete's shape, or answer it from the
 * cache at once.  Returns false, sending nothing, when no request slot is
 * free: collect, then submit again.
 */
bool
claude_pipe_submit(ClaudePipe *p, int64 tag, const char *body, int max_tokens,
				   ClaudePipeDone done, void *arg)
{
	ClaudeCacheCall cache;
	Jsonb	   *hit;
	int			slot;
	char	   *why;

	Assert(!claude_pipe_full(p));
	if (claude_cache_begin(p->cache, p->nsp, "/v1/messages", body, strlen(body),
						   false, &cache, &hit))
	{
		done(arg, tag, claude_jsonb_reply_text(hit), NULL, NULL);
		return true;
	}
	/* a spent budget fails this request, not the others */
	if (!claude_budget_allows(claude_request_owner(), &why))
	{
		done(arg, tag, NULL, claude_budget_message(claude_request_owner(), why), NULL);
		return true;
	}
	/* with nothing of ours in flight, waiting for a slot cannot deadlock */
	slot = claude_request_submit(CLAUDE_POST, "/v1/messages", body, strlen(body),
								 max_tokens, &cache,
								 CLAUDE_SUBMIT_BULK | (p->n == 0 ? CLAUDE_SUBMIT_WAIT : 0));
	if (slot < 0)
		return false;
	if (p->keep)
		claude_slot_keep(slot);
	p->items[p->n].tag = tag;
	p->items[p->n].slot = slot;
	p->n++;
	return true;
}

static void
finish_item(PipeItem *item, ClaudePipeDone done, void *arg)
{
	ClaudeResult result;
	ClaudeFailure failure;
	char	   *reply = claude_request_collect(item->slot, &result);
	text	   *completion;

	if (claude_result_failed(&result, reply, &failure))
		done(arg, item->tag, NULL, failure.message, &result);
	else if ((completion = claude_complete_text(reply)) == NULL)
		done(arg, item->tag, NULL,
			 "the Claude API sent a reply that is not a Messages response", &result);
	else
		done(arg, item->tag, completion, NULL, &result);
}

/* Hand every finished request to done, without waiting; true if any. */
bool
claude_pipe_poll(ClaudePipe *p, ClaudePipeDone done, void *arg)
{
	bool		any = false;

	for (int i = 0; i < p->n;)
	{
		if (claude_slot_poll(p->items[i].slot))
		{
			PipeItem	item = p->items[i];

			p->items[i] = p->items[--p->n];
			finish_item(&item, done, arg);
			any = true;
		}
		else
			i++;
	}
	return any;
}

/*
 * Sleep until at least one request in flight is finished, and hand every
 * finished one to done.
 */
void
claude_pipe_collect(ClaudePipe *p, ClaudePipeDone done, void *arg)
{
	for (;;)
	{
		if (claude_pipe_poll(p, done, arg) || p->n == 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000, claude_wait_event(CLAUDE_WAIT_REPLY));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}
