/*
 * prefetch_window.c
 *		The calls of the rows a statement read ahead (prefetch_node.c).
 *
 * A row read ahead has its claude_* calls evaluated once in capture mode:
 * each builds its request as it always does, and claude_call_run hands it
 * here (claude_call_run_hook) instead of waiting; it is started as bulk
 * work and the function returns at once.  When the row is reached, the
 * same calls are evaluated again in replay mode: each finds the request it
 * builds among its row's, and takes over that call's life (a hit, a reply
 * to wait for, or one already collected), so everything a function does
 * with its reply (checks, errors, caching) happens at its row, in order.
 * A call replay does not find (a condition went another way, a request
 * not read ahead) simply runs as usual.
 *
 * Identical requests in the window are started once.  The window's slots
 * are kept through aborts: when the statement stops early (LIMIT, an
 * error) they are detached, so paid replies still reach the cache, and on
 * a cancel they are cancelled (prefetch_node.c says which).
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "client/request.h"
#include "shmem/slots.h"

#include "executor/prefetch_window.h"

typedef struct ReadCall
{
	MemoryContext cxt;			/* all of the call's memory */
	ClaudeCall	call;			/* the window's copy: its request and life */
	int			refs;			/* rows that asked exactly this */
} ReadCall;

typedef struct ReadRow
{
	List	   *calls;			/* ReadCall *, in the order the row made them */
} ReadRow;

struct ClaudeWindow
{
	MemoryContext cxt;			/* all of this; its reset lets every call go */
	int			nrows;
	ReadRow    *rows;
	List	   *pending;		/* ReadCall * not started yet, oldest first */
	List	   *live;			/* every ReadCall of the window */
	int			in_flight;		/* started, not collected */
	int			max_in_flight;	/* a session's share of bulk slots */
	bool		bulk;			/* past the first call: bulk work */
	int64		sent;
	/* while a row's calls are evaluated */
	int			row;
	ClaudeWindowMode mode;
};

static ClaudeWindow *current = NULL;

static bool
same_request(const ClaudeCall *a, const ClaudeCall *b)
{
	return a->endpoint == b->endpoint && a->payer == b->payer &&
		(a->cache == CLAUDE_CACHE_OFF) == (b->cache == CLAUDE_CACHE_OFF) &&
		a->cache_nsp == b->cache_nsp && a->max_retries == b->max_retries &&
		a->cache_checked == b->cache_checked && a->stream == b->stream &&
		strcmp(a->path, b->path) == 0 &&
		a->json != NULL && b->json != NULL &&
		VARSIZE(a->json) == VARSIZE(b->json) &&
		memcmp(a->json, b->json, VARSIZE(a->json)) == 0;
}

/* Start what waits for a slot, oldest first, while the share allows. */
void
claude_window_pump(ClaudeWindow *w)
{
	while (w->pending != NIL && w->in_flight < w->max_in_flight)
	{
		ReadCall   *rc = linitial(w->pending);
		MemoryContext old = MemoryContextSwitchTo(rc->cxt);
		ClaudeCallState state;

		/* with nothing of ours in flight, waiting for a slot cannot deadlock */
		rc->call.wait_slot = w->in_flight == 0;
		state = claude_call_start(&rc->call);
		MemoryContextSwitchTo(old);
		if (state == CLAUDE_CALL_NEW)
			return;
		w->pending = list_delete_first(w->pending);
		if (state == CLAUDE_CALL_SENT)
		{
			/* an abort leaves it to claude_window_release */
			claude_slot_keep(rc->call.slot);
			w->in_flight++;
			w->sent++;
		}
	}
}

/* A row read ahead made call c: start it, or share an identical one. */
static void
capture(ClaudeWindow *w, ClaudeCall *c)
{
	ReadRow    *row = &w->rows[w->row];
	ReadCall   *rc = NULL;
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, w->live)
	{
		if (same_request(&((ReadCall *) lfirst(lc))->call, c))
		{
			rc = lfirst(lc);
			break;
		}
	}
	if (rc == NULL)
	{
		MemoryContext cxt = AllocSetContextCreate(w->cxt, "claude read-ahead call",
												  ALLOCSET_SMALL_SIZES);

		old = MemoryContextSwitchTo(cxt);
		rc = palloc0(sizeof(ReadCall));
		rc->cxt = cxt;
		rc->call = *c;
		rc->call.json = palloc(VARSIZE(c->json));
		memcpy(rc->call.json, c->json, VARSIZE(c->json));
		rc->call.path = pstrdup(c->path);
		rc->call.model = c->model ? pstrdup(c->model) : NULL;
		rc->call.body = NULL;
		rc->call.body_len = 0;
		/* read ahead never waits on another session's identical call */
		if (rc->call.cache == CLAUDE_CACHE_LEAD)
			rc->call.cache = CLAUDE_CACHE_LOOKUP;
		/* a statement's first call is a single call; what follows is bulk */
		rc->call.bulk = w->bulk;
		w->bulk = true;
		MemoryContextSwitchTo(w->cxt);
		w->live = lappend(w->live, rc);
		w->pending = lappend(w->pending, rc);
		MemoryContextSwitchTo(old);
	}
	rc->refs++;
	old = MemoryContextSwitchTo(w->cxt);
	row->calls = lappend(row->calls, rc);
	MemoryContextSwitchTo(old);
	claude_window_pump(w);
}

/*
 * The row reached made call c: take over the life of the identical call
 * it started when read ahead.  False: none, or none that went out (no
 * slot, or a budget refused it as bulk work): c runs as a call of its own.
 */
static bool
replay(ClaudeWindow *w, ClaudeCall *c)
{
	ReadRow    *row = &w->rows[w->row];
	ListCell   *lc;

	foreach(lc, row->calls)
	{
		ReadCall   *rc = lfirst(lc);

		if (!same_request(&rc->call, c))
			continue;
		switch (rc->call.state)
		{
			case CLAUDE_CALL_NEW:
				w->pending = list_delete_ptr(w->pending, rc);
				rc->call.state = CLAUDE_CALL_REFUSED;
				return false;
			case CLAUDE_CALL_REFUSED:
			case CLAUDE_CALL_DEFERRED:
				return false;
			case CLAUDE_CALL_SENT:
				{
					MemoryContext old = MemoryContextSwitchTo(rc->cxt);

					claude_call_wait(&rc->call);
					w->in_flight--;
					/* a failed call raises its error here, at its row */
					(void) claude_call_finish(&rc->call, NULL);
					MemoryContextSwitchTo(old);
					claude_window_pump(w);
				}
				/* FALLTHROUGH */
			case CLAUDE_CALL_DONE:
				c->state = CLAUDE_CALL_DONE;
				c->reply = rc->call.reply;
				c->result = rc->call.result;
				c->cached = rc->call.cached;
				c->slot = -1;
				return true;
			case CLAUDE_CALL_HIT:
				c->state = CLAUDE_CALL_HIT;
				c->hit = rc->call.hit;
				c->cached = rc->call.cached;
				return true;
		}
	}
	return false;
}

static bool
window_hook(ClaudeCall *c)
{
	ClaudeWindow *w = current;

	if (w == NULL || c->json == NULL ||
		(c->endpoint != claude_endpoint(CLAUDE_EP_MESSAGES) &&
		 c->endpoint != claude_endpoint(CLAUDE_EP_COUNT_TOKENS)))
		return false;
	if (w->mode == CLAUDE_WINDOW_REPLAY)
		return replay(w, c);
	/* only plain calls go ahead; the others run when their row is reached */
	if (c->stream == CLAUDE_STREAM_NONE && c->input_file == NULL && c->output_file == NULL)
		capture(w, c);
	c->state = CLAUDE_CALL_DEFERRED;
	return true;
}

void
claude_window_install(void)
{
	claude_call_run_hook = window_hook;
}

/* Let every call in flight go; detached unless cancel.  Never raises. */
void
claude_window_release(ClaudeWindow *w, bool cancel)
{
	ListCell   *lc;

	foreach(lc, w->live)
	{
		ReadCall   *rc = lfirst(lc);

		if (rc->call.state == CLAUDE_CALL_SENT)
		{
			claude_call_detach(&rc->call, cancel);
			w->in_flight--;
		}
		else if (rc->call.state == CLAUDE_CALL_NEW)
			rc->call.state = CLAUDE_CALL_REFUSED;
	}
	w->pending = NIL;
	if (current == w)
		current = NULL;
}

/* The executor's memory goes (the statement ended, or failed). */
static void
window_reset(void *arg)
{
	claude_window_release((ClaudeWindow *) arg, false);
}

ClaudeWindow *
claude_window_create(int rows)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "claude read-ahead",
											  ALLOCSET_DEFAULT_SIZES);
	ClaudeWindow *w = MemoryContextAllocZero(cxt, sizeof(ClaudeWindow));
	MemoryContextCallback *cb = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));

	claude_require_shared();
	w->cxt = cxt;
	w->nrows = rows;
	w->rows = MemoryContextAllocZero(cxt, rows * sizeof(ReadRow));
	w->max_in_flight = Max(1, claude_shared->nslots / CLAUDE_SLOTS_RESERVED);
	cb->func = window_reset;
	cb->arg = w;
	MemoryContextRegisterResetCallback(cxt, cb);
	return w;
}

/*
 * Evaluate row's calls in mode from here to claude_window_leave(the value
 * returned), which also follows an error.
 */
void *
claude_window_enter(ClaudeWindow *w, int row, ClaudeWindowMode mode)
{
	ClaudeWindow *saved = current;

	Assert(row >= 0 && row < w->nrows);
	w->row = row;
	w->mode = mode;
	current = w;
	return saved;
}

void
claude_window_leave(void *saved)
{
	current = (ClaudeWindow *) saved;
}

/* What to leave to after an error: the window evaluating now, if any. */
void *
claude_window_current(void)
{
	return current;
}

/*
 * The row was handed on (or filtered out): its calls' memory goes, and a
 * call no other row shares that its replay did not take is detached.
 */
void
claude_window_forget_row(ClaudeWindow *w, int row)
{
	ReadRow    *r = &w->rows[row];
	ListCell   *lc;

	foreach(lc, r->calls)
	{
		ReadCall   *rc = lfirst(lc);

		if (--rc->refs > 0)
			continue;
		if (rc->call.state == CLAUDE_CALL_SENT)
		{
			claude_call_detach(&rc->call, false);
			w->in_flight--;
		}
		w->pending = list_delete_ptr(w->pending, rc);
		w->live = list_delete_ptr(w->live, rc);
		MemoryContextDelete(rc->cxt);
	}
	list_free(r->calls);
	r->calls = NIL;
}

int64
claude_window_sent(ClaudeWindow *w)
{
	return w->sent;
}
