/*
 * streamed.c
 *		A streamed transfer in the HTTP worker: the body it sends (with
 *		"stream": true), its events handed to the reader, paused while the
 *		reader is behind, and what the stream comes to.  Callers: http.c
 *		(the curl side) and dispatch.c (the request's life).
 *
 * The stream of claude_stream or claude_messages_stream is read through a
 * cursor that may sit idle for as long as it is open.  So such a stream
 * holds no more than a window of shared memory: its request is copied out
 * of the DSA area as soon as the worker takes it, and when the reader has
 * not taken the last window the transfer is paused (curl stops reading,
 * the server's writes wait in TCP) until it has.  A paused HTTP/2 stream
 * would stall its whole connection in libcurl 7.88, so these streams go
 * over HTTP/1.1, a connection each: what they hold is counted per role
 * (shmem/streamshare.c).  Nothing here raises: most of it runs inside
 * libcurl's callbacks.
 */
#include "postgres.h"

#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "httpworker/sse.h"
#include "httpworker/transfer.h"
#include "shmem/events.h"
#include "shmem/slots.h"

/* what a streamed body starts with, before the request's first member */
#define STREAM_PREFIX	"{\"stream\": true, "

int			claude_streamed_running = 0;	/* attempts streaming now */

/* Whether a reader takes the stream's events as they come (and may idle). */
bool
claude_streamed_reader(const Transfer *t)
{
	return t->req.stream == CLAUDE_STREAM_TEXT || t->req.stream == CLAUDE_STREAM_EVENTS;
}

/*
 * A reader's stream keeps its request in the worker's memory: the packed
 * request is copied and its DSA chunk freed at once.  Without memory for
 * the copy it stays where it is, freed with the slot as any other.
 */
void
claude_streamed_own_request(Transfer *t)
{
	ClaudeSlot *slot = &claude_slots[t->slot];
	const char *blob;
	Size		size;

	if (!claude_streamed_reader(t) || !DsaPointerIsValid(slot->request))
		return;
	blob = dsa_get_address(claude_area(), slot->request);
	size = claude_request_packed_size(blob);
	if ((t->own_request = malloc(size)) == NULL)
		return;
	memcpy(t->own_request, blob, size);
	claude_request_unpack(t->own_request, &t->req);
	/* the slot is the worker's while it runs: no backend reads this */
	dsa_free(claude_area(), slot->request);
	slot->request = InvalidDsaPointer;
}

/* The transfer is over: its request (and t->req's strings) go. */
void
claude_streamed_forget(Transfer *t)
{
	free(t->own_request);
	t->own_request = NULL;
}

/* The body, read by curl: the prefix, then the request after its brace. */
static size_t
read_body(char *buf, size_t size, size_t nitems, void *userp)
{
	Transfer   *t = userp;
	size_t		want = size * nitems;
	size_t		n = 0;

	while (n < want && t->sent < t->send_len)
	{
		const char *from;
		size_t		avail;

		if (t->sent < t->prefix_len)
			from = STREAM_PREFIX + t->sent, avail = t->prefix_len - t->sent;
		else
			from = t->req.body + 1 + (t->sent - t->prefix_len), avail = t->send_len - t->sent;
		avail = Min(avail, want - n);
		memcpy(buf + n, from, avail);
		n += avail;
		t->sent += avail;
	}
	return n;
}

/*
 * Send an attempt's body with "stream": true, and read its events; false
 * (it goes as it is) if the body is no object or there is no memory.
 */
bool
claude_streamed_body(Transfer *t, CURL *e)
{
	const char *body = t->req.body;
	size_t		len = t->req.body_len;
	size_t		ws;

	if (body == NULL || len < 2 || body[0] != '{' ||
		(t->sse = claude_sse_create(t->req.stream, t->req.max_reply)) == NULL)
		return false;
	/* "{}" has no member to put a comma before */
	ws = strspn(body + 1, " \t\r\n");
	t->prefix_len = strlen(STREAM_PREFIX) - (ws + 1 < len && body[1 + ws] == '}' ? 2 : 0);
	t->send_len = t->prefix_len + len - 1;
	t->sent = 0;
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) t->send_len);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_body);
	curl_easy_setopt(e, CURLOPT_READDATA, t);
	/* never rewound: http.c refuses that for every body */
	claude_streamed_running++;
	return true;
}

/*
 * Hand the stream's events to the backend that waits for them, as many as
 * its window takes; all of them if force (the stream is over).  True if
 * some are still held back.
 */
bool
claude_streamed_push(Transfer *t, bool force)
{
	size_t		len;
	const char *items;
	volatile bool full = false;
	MemoryContext cxt = CurrentMemoryContext;

	if (t->sse == NULL)
		return false;
	items = claude_sse_outbox(t->sse, &len);
	/*
	 * Mapping a new DSM segment can still raise: never through libcurl.
	 * The worker holds no lock of its own wherever it pushes (a callback,
	 * or a reply handed over), so every lock held is the DSA area's.
	 */
	PG_TRY();
	{
		if (len > 0)
			claude_sse_outbox_taken(t->sse, claude_events_push(t->slot, items, len, force,
															   (bool *) &full));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		LWLockReleaseAll();
		full = true;
	}
	PG_END_TRY();
	if (full)
		t->events_lost = true;
	(void) claude_sse_outbox(t->sse, &len);
	return len > 0;
}

/*
 * A 2xx event stream, as it arrives.  While the reader has not taken what
 * it was given the transfer pauses: curl keeps this piece and the rest
 * stays at the server.  Shared memory too full for the events ends it.
 */
size_t
claude_streamed_write(Transfer *t, char *data, size_t n)
{
	if (claude_streamed_push(t, false) && !t->events_lost)
	{
		t->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (t->events_lost || !claude_sse_feed(t->sse, data, n))
		return 0;
	if (t->first_token == 0 && claude_sse_started_text(t->sse))
		t->first_token = GetCurrentTimestamp();
	(void) claude_streamed_push(t, false);
	return t->events_lost ? 0 : n;
}

/*
 * When the worker wakes: events held back go to a reader that made room,
 * and a paused transfer goes on once all of them are out (curl may hand
 * over its kept piece before this returns, and pause again).
 */
void
claude_streamed_resume(Transfer *t)
{
	if (claude_streamed_push(t, false) || !t->paused || t->easy == NULL)
		return;
	t->paused = false;
	if (curl_easy_pause(t->easy, CURLPAUSE_CONT) != CURLE_OK)
		elog(LOG, "claude: could not resume a paused stream");
}

/*
 * Whether a 2xx stream is over though curl still reads it: message_stop or
 * an error event came, and what the server sends after (pings, a stream
 * never closed, a reset) changes nothing.  *status: the reply's.
 */
bool
claude_streamed_over(const Transfer *t, long *status)
{
	ClaudeSseState state;

	if (t->sse == NULL || t->easy == NULL || !t->event_stream)
		return false;
	state = claude_sse_state(t->sse);
	if (state != SSE_STOPPED && state != SSE_ERROR)
		return false;
	*status = 0;
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, status);
	return *status >= 200 && *status < 300;
}

/* The attempt's reply is now body (malloc'd, len bytes and a NUL). */
static void
replace_body(Transfer *t, char *body, size_t len)
{
	free(t->body);
	t->body = body;
	t->body_len = len;
	t->body_cap = len + 1;
}

/*
 * A streamed 2xx reply becomes what a request without stream would have
 * got: the assembled Message, or an error event as the error reply (with
 * its status) it stands for; or, ended short, no Message at all.
 */
void
claude_streamed_outcome(Transfer *t, CURLcode code, long *status)
{
	size_t		len;
	int			error_status;

	if (t->sse == NULL || !t->event_stream || code != CURLE_OK ||
		*status < 200 || *status >= 300)
		return;
	switch (claude_sse_state(t->sse))
	{
		case SSE_STOPPED:
			{
				char	   *message = claude_sse_message(t->sse, &len);

				if (message == NULL)
				{
					t->stream_failed = "the stream's events do not make a Message";
					break;
				}
				replace_body(t, message, len);
				break;
			}
		case SSE_ERROR:
			{
				const char *error = claude_sse_error(t->sse, &len, &error_status);
				char	   *copy = malloc(len + 1);

				if (copy == NULL)
				{
					t->stream_failed = "out of memory for an error event";
					break;
				}
				memcpy(copy, error, len);
				copy[len] = '\0';
				replace_body(t, copy, len);
				*status = error_status;
				break;
			}
		default:
			t->stream_failed = claude_sse_why(t->sse);
			break;
	}
}
