/*
 * stream.c
 *		A streamed Messages call from a backend: pieces of text or events
 *		handed over as the HTTP worker reads them, then the Message.
 *		Callers: claude_stream and claude_messages_stream.
 *
 * The call goes through the cache, the budget and the limits like any
 * other (its cache key is that of the same request not streamed), and the
 * wait is cancellable at every point.  A cache hit has no events: the
 * caller gets the Message at once.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "client/call.h"
#include "client/stream.h"
#include "common/errors.h"
#include "common/json.h"
#include "shmem/events.h"

/*
 * Start a streamed request (body the canonical text of a Messages
 * request) in mode CLAUDE_STREAM_TEXT or CLAUDE_STREAM_EVENTS.  False
 * with *hit set when the cache answers.
 */
bool
claude_stream_begin(ClaudeStream *st, const char *body, int max_tokens,
					ClaudeStreamMode mode, bool cache, Oid nsp, Jsonb **hit)
{
	memset(st, 0, sizeof(*st));
	st->slot = -1;
	if (claude_cache_begin(cache, nsp, "/v1/messages", body, strlen(body), true,
						   &st->cache, hit))
		return false;
	st->slot = claude_request_submit(CLAUDE_POST, "/v1/messages", body, strlen(body),
									 max_tokens, &st->cache,
									 CLAUDE_SUBMIT_WAIT |
									 (mode == CLAUDE_STREAM_TEXT ? CLAUDE_SUBMIT_STREAM_TEXT :
									  CLAUDE_SUBMIT_STREAM_EVENTS));
	return true;
}

/*
 * The next item (UTF-8, NUL-terminated): a piece of text or an event's
 * data.  NULL once the stream is over: then st->reply is the Message, or
 * the request's error was raised.
 */
const char *
claude_stream_next(ClaudeStream *st)
{
	for (;;)
	{
		bool		done;

		if (st->items != NULL && st->pos < st->len)
		{
			const char *item = st->items + st->pos;

			st->pos += strlen(item) + 1;
			return item;
		}
		if (st->items)
			pfree(st->items);
		st->items = NULL;
		if (st->slot < 0)
			return NULL;

		done = claude_slot_wait_events(st->slot);
		/* every event comes before the result: take them first */
		if ((st->items = claude_events_take(st->slot, &st->len)) != NULL)
		{
			st->pos = 0;
			continue;
		}
		if (!done)
			continue;
		st->reply = claude_request_collect(st->slot, &st->result);
		st->slot = -1;
		claude_check_result(&st->result, st->reply);
		claude_cache_sent(&st->cache);
		return NULL;
	}
}

/* Whether the next item is already here, so taking it will not wait. */
bool
claude_stream_ready(ClaudeStream *st)
{
	return st->items != NULL && st->pos < st->len;
}

/*
 * Give up a stream whose caller stopped reading (a cursor closed before
 * the end): the transfer is aborted.
 */
void
claude_stream_abandon(ClaudeStream *st)
{
	if (st->slot >= 0)
	{
		claude_slot_abandon(st->slot);
		claude_cache_abandon(&st->cache);
	}
	st->slot = -1;
}

/* An item in the database's encoding; a reply it cannot hold is ZC002. */
char *
claude_stream_item_text(const char *item)
{
	Size		len = strlen(item);
	char	   *text = pg_verify_mbstr(PG_UTF8, item, len, true) ?
		claude_utf8_to_server(item, len) : NULL;

	if (text == NULL)
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the Claude API streamed text the database encoding cannot hold")));
	return text;
}
