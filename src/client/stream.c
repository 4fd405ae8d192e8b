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

#include "client/request.h"
#include "client/stream.h"
#include "common/errors.h"
#include "common/json.h"
#include "shmem/events.h"

/*
 * Start a streamed call (its stream mode CLAUDE_STREAM_TEXT or
 * CLAUDE_STREAM_EVENTS).  False with st->call.hit set when the cache
 * answers.
 */
bool
claude_stream_begin(ClaudeStream *st, const ClaudeCall *call)
{
	memset(st, 0, sizeof(*st));
	st->call = *call;
	Assert(call->stream == CLAUDE_STREAM_TEXT || call->stream == CLAUDE_STREAM_EVENTS);
	st->call.wait_slot = true;
	return claude_call_start(&st->call) != CLAUDE_CALL_HIT;
}

/*
 * The next item (UTF-8, NUL-terminated): a piece of text or an event's
 * data.  NULL once the stream is over: then st->call.reply is the
 * Message, or the request's error was raised.
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
		if (st->call.state != CLAUDE_CALL_SENT)
			return NULL;

		done = claude_slot_wait_events(st->call.slot);
		/* every event comes before the result: take them first */
		if ((st->items = claude_events_take(st->call.slot, &st->len)) != NULL)
		{
			st->pos = 0;
			continue;
		}
		if (!done)
			continue;
		(void) claude_call_finish(&st->call, NULL);
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
	claude_call_abandon(&st->call);
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
