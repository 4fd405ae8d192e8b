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

#include "client/message.h"
#include "client/pipe.h"
#include "client/structured.h"
#include "common/json.h"
#include "common/waits.h"

typedef struct PipeItem
{
	int64		tag;
	ClaudeCall	call;			/* started: its slot, cache entry, result */
	const ClaudeReplyCheck *check;	/* a structured reply's, or NULL */
	Jsonb	   *request;		/* with a check: the body, the pipe's copy */
} PipeItem;

struct ClaudePipe
{
	MemoryContext cxt;			/* the pipe's: copies of checked requests */
	bool		keep;			/* its slots outlive aborts (claude_slot_keep) */
	int			window;
	int			n;
	PipeItem   *items;
};

ClaudePipe *
claude_pipe_create(int window)
{
	ClaudePipe *p = palloc0(sizeof(ClaudePipe));

	claude_require_shared();
	p->cxt = CurrentMemoryContext;
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
 * Start one call of claude_complete's shape as bulk work (its cache
 * policy the caller's: CLAUDE_CACHE_LOOKUP, as bulk work must not wait on
 * one row), or answer it at once from the cache, or fail it at once when
 * its payer's budget is spent.  Returns false, sending nothing, when no
 * request slot is free: collect, then submit again.
 */
bool
claude_pipe_submit(ClaudePipe *p, int64 tag, ClaudeCall *c,
				   ClaudePipeDone done, void *arg)
{
	return claude_pipe_submit_checked(p, tag, c, NULL, done, arg);
}

/*
 * The same for a structured request (client/structured.c) whose reply
 * must pass check, which stays valid until done is called: done gets the
 * checked value as completion, or why the reply was refused.  A refused
 * reply is not cached, and identical calls ask again; a passing one is
 * cached by claude_call_keep.
 */
bool
claude_pipe_submit_checked(ClaudePipe *p, int64 tag, ClaudeCall *c,
						   const ClaudeReplyCheck *check, ClaudePipeDone done, void *arg)
{
	PipeItem   *item;
	text	   *value;
	char	   *why;
	bool		broken;

	Assert(!claude_pipe_full(p));
	c->bulk = true;
	c->cache_checked = check != NULL;
	/* with nothing of ours in flight, waiting for a slot cannot deadlock */
	c->wait_slot = p->n == 0;
	switch (claude_call_start(c))
	{
		case CLAUDE_CALL_HIT:
			if (check == NULL)
				done(arg, tag, claude_jsonb_reply_text(c->hit), NULL, NULL);
			else if ((why = claude_structured_value(c->json, check, c->hit, &value, &broken)) != NULL)
				done(arg, tag, NULL, why, NULL);
			else
				done(arg, tag, value, NULL, NULL);
			return true;
		case CLAUDE_CALL_REFUSED:
			done(arg, tag, NULL, c->refused, NULL);
			return true;
		case CLAUDE_CALL_SENT:
			break;
		default:
			return false;
	}
	if (p->keep)
		claude_slot_keep(c->slot);
	item = &p->items[p->n++];
	item->tag = tag;
	item->call = *c;
	item->check = check;
	/* a checked reply is cached with its request, kept here till then */
	item->request = check ? (Jsonb *) MemoryContextAlloc(p->cxt, VARSIZE(c->json)) : NULL;
	if (check)
		memcpy(item->request, c->json, VARSIZE(c->json));
	/* what was asked stays with its caller, whose memory may go */
	item->call.path = item->call.body = item->call.model = NULL;
	item->call.json = item->request;
	return true;
}

/* done gets &c->result, with c whole: claude_pipe_call_of */
static void
finish_item(PipeItem *item, ClaudePipeDone done, void *arg)
{
	ClaudeFailure failure;
	ClaudeCall *c = &item->call;
	text	   *completion = NULL;
	char	   *why = NULL;
	bool		broken;

	if (!claude_call_finish(c, &failure))
		why = pstrdup(failure.message);
	else if (item->check)
	{
		why = claude_structured_value(item->request, item->check,
									  c->reply ? claude_json_parse(c->reply, strlen(c->reply)) : NULL,
									  &completion, &broken);
		/* cached once it passed; refused, identical calls ask again */
		if (why == NULL)
			claude_call_keep(c);
		else
			claude_call_reject(c);
	}
	if (item->check || why)
	{
		if (item->request)
			pfree(item->request);
		c->json = item->request = NULL;
		done(arg, item->tag, why ? NULL : completion, why, &c->result);
	}
	else if ((completion = claude_complete_text(c->reply)) == NULL)
		done(arg, item->tag, NULL,
			 "the Claude API sent a reply that is not a Messages response", &c->result);
	else
		done(arg, item->tag, completion, NULL, &c->result);
}

/* Hand every finished request to done, without waiting; true if any. */
bool
claude_pipe_poll(ClaudePipe *p, ClaudePipeDone done, void *arg)
{
	bool		any = false;

	for (int i = 0; i < p->n;)
	{
		if (claude_call_poll(&p->items[i].call))
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
 * Give up every request in flight (its owner stopped reading, or its
 * memory is going): the transfers are aborted and the slots given back;
 * no reply is handed over.  Nothing here raises, so a memory context
 * callback may call it during an abort.  A pipe's calls never lead a
 * cache key (CLAUDE_CACHE_LOOKUP): there is none to give back.
 */
void
claude_pipe_abandon(ClaudePipe *p)
{
	while (p->n > 0)
	{
		ClaudeCall *c = &p->items[--p->n].call;

		Assert(c->cache != CLAUDE_CACHE_LEAD);
		claude_call_detach(c, true);
	}
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
