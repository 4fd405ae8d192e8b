/*
 * outcome.c
 *		What an attempt comes to: whether and when it is tried again, and
 *		what a failed one tells its caller: the class of the failure (its
 *		SQLSTATE, see common/errors.c) and its message.  Caller: dispatch.c.
 *
 * Retried: 408, 409, 429, 5xx, 529, connection errors and timeouts, with
 * exponential backoff (0.5 s doubling to 8 s, 0-25% jitter) unless the
 * server says when (retry-after-ms, retry-after) or that it should not
 * (x-should-retry).  Never retried: 400, 401, 403, 404, 413.
 */
#include "postgres.h"

#include <math.h>

#if PG_VERSION_NUM >= 150000
#include "common/pg_prng.h"
#endif

#include "common/guc.h"
#include "httpworker/sse.h"
#include "httpworker/transfer.h"

#define BACKOFF_FIRST_MS	500
#define BACKOFF_MAX_MS		8000
#define RETRY_AFTER_MAX_MS	(10 * 60 * 1000)

static double
jitter(void)
{
#if PG_VERSION_NUM >= 150000
	return pg_prng_double(&pg_global_prng_state);
#else
	return (double) random() / ((double) MAX_RANDOM_VALUE + 1);
#endif
}

/* Milliseconds to wait before retrying this attempt, or -1 for no retry. */
double
claude_outcome_retry_ms(const Transfer *t, CURLcode code, long status)
{
	double		delay;

	if (t->attempts > t->req.max_retries)
		return -1;
	/* a stream the caller has begun to read cannot start over */
	if (t->sse && (claude_sse_delivered(t->sse) || claude_sse_state(t->sse) == SSE_BROKEN))
		return -1;
	if (t->stream_failed)
		return -1;
	if (code == CURLE_OK)
	{
		if (status < 400 || status == 400 || status == 401 || status == 403 ||
			status == 404 || status == 413)
			return -1;
		if (t->should_retry == 0)
			return -1;
		if (t->should_retry != 1 &&
			!(status == 408 || status == 409 || status == 429 || status >= 500))
			return -1;
	}
	else if (t->too_large || t->file_failed || t->events_lost || t->req.not_idempotent)
		return -1;

	if (t->retry_after_ms >= 0)
		return Min(t->retry_after_ms, RETRY_AFTER_MAX_MS);
	delay = Min(BACKOFF_FIRST_MS * pow(2, t->attempts - 1), BACKOFF_MAX_MS);
	return delay * (1.0 - 0.25 * jitter());
}

/* A result that did not fit claude.max_shared_memory (SQLSTATE 53200). */
void
claude_outcome_shmem_full(ClaudeResult *r, const char *what)
{
	r->transport = CLAUDE_TE_SHMEM;
	snprintf(r->message, sizeof(r->message),
			 "out of shared memory for %s: claude.max_shared_memory (%d kB) is full",
			 what, claude_max_shared_memory);
}

/* Why no connection took the request (see connguard.c and dispatch.c). */
static const char *
refusal_message(ConnRefusal why)
{
	switch (why)
	{
		case CONN_UNSOLICITED:
			return "the server sent data no request asked for, on every connection tried";
		case CONN_STALLED:
			return "no HTTP/2 connection to the server took the request";
		case CONN_RESEND:
			return "the request's body could not be read again for a new connection";
		default:
			return "no connection to the server could take the request";
	}
}

/* The result of an attempt that got no response (code is not CURLE_OK). */
void
claude_outcome_failure(ClaudeResult *r, CURLcode code, const Transfer *t)
{
	if (code == CURLE_OPERATION_TIMEDOUT && t->req.output_file)
	{
		r->transport = CLAUDE_TE_TIMEOUT;
		snprintf(r->message, sizeof(r->message),
				 "the download was too slow: under %d bytes a second for claude.request_timeout (%d ms), "
				 "or longer than %.0f s in all", CLAUDE_DOWNLOAD_MIN_RATE, t->req.timeout_ms,
				 claude_download_time_ms(&t->req) / 1000);
	}
	else if (code == CURLE_OPERATION_TIMEDOUT)
	{
		r->transport = CLAUDE_TE_TIMEOUT;
		snprintf(r->message, sizeof(r->message),
				 "no complete reply within claude.request_timeout (%d ms)",
				 t->req.timeout_ms);
	}
	else if (t->file_failed)
	{
		r->transport = CLAUDE_TE_INTERNAL;
		strlcpy(r->message, t->file_error, sizeof(r->message));
	}
	else if (t->events_lost)
		claude_outcome_shmem_full(r, "a stream's events");
	else if (t->sse && claude_sse_state(t->sse) == SSE_BROKEN)
	{
		r->transport = CLAUDE_TE_REPLY;
		strlcpy(r->message, claude_sse_why(t->sse), sizeof(r->message));
	}
	else if (t->too_large && t->req.output_file && t->req.max_output > 0)
	{
		r->transport = CLAUDE_TE_REPLY;
		snprintf(r->message, sizeof(r->message),
				 "the download is larger than its limit of %zu bytes", t->req.max_output);
	}
	else if (t->too_large)
	{
		r->transport = CLAUDE_TE_REPLY;
		snprintf(r->message, sizeof(r->message),
				 "the reply is larger than claude.max_reply_size (%zu bytes)", t->req.max_reply);
	}
	else if (code == CURLE_SEND_FAIL_REWIND)
	{
		r->transport = CLAUDE_TE_CONNECT;
		strlcpy(r->message, "the connection closed after the request was sent, without a reply "
				"(libcurl does not send it again by itself)", sizeof(r->message));
	}
	else if (t->refused != CONN_TAKEN)
	{
		r->transport = CLAUDE_TE_CONNECT;
		strlcpy(r->message, refusal_message(t->refused), sizeof(r->message));
	}
	else
	{
		r->transport = CLAUDE_TE_CONNECT;
		strlcpy(r->message, t->errbuf[0] ? t->errbuf : curl_easy_strerror(code),
				sizeof(r->message));
	}
}
