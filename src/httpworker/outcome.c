/*
 * outcome.c
 *		What an attempt comes to: whether and when it is tried again, and
 *		what a failed one tells its caller: the class of the failure (its
 *		SQLSTATE, see common/errors.c) and its message.  Caller: dispatch.c.
 *
 * Whether to retry is common/retry.c's decision, with the requests'
 * policy (claude.max_retries); this file says what the attempt was.
 */
#include "postgres.h"

#include "common/guc.h"
#include "common/retry.h"
#include "httpworker/sse.h"
#include "httpworker/transfer.h"

static ClaudeShouldRetry
should_retry(const Transfer *t)
{
	return t->should_retry == 1 ? CLAUDE_SHOULD_RETRY_TRUE :
		t->should_retry == 0 ? CLAUDE_SHOULD_RETRY_FALSE : CLAUDE_SHOULD_RETRY_ABSENT;
}

/* The attempt, as the retry decision sees it. */
static void
describe_attempt(const Transfer *t, CURLcode code, long status, ClaudeAttempt *a)
{
	memset(a, 0, sizeof(*a));
	a->attempt = t->attempts;
	a->retry_after_ms = t->retry_after_ms;
	a->should_retry = should_retry(t);
	a->not_idempotent = t->req.not_idempotent;
	a->billing = t->billing;
	/* a stream the caller has begun to read, or lost events of, cannot start over */
	a->delivered = t->stream_failed || t->events_lost ||
		(t->sse && (claude_sse_delivered(t->sse) || claude_sse_state(t->sse) == SSE_BROKEN));
	if (code == CURLE_OK)
		a->http_status = (int) status;
	else if (t->too_large)
		a->transport = CLAUDE_TE_REPLY;
	else if (t->file_failed)
		a->transport = CLAUDE_TE_INTERNAL;
	else if (code == CURLE_OPERATION_TIMEDOUT)
		a->transport = CLAUDE_TE_TIMEOUT;
	else
		a->transport = CLAUDE_TE_CONNECT;
}

/* Milliseconds to wait before retrying this attempt, or -1 for no retry. */
double
claude_outcome_retry_ms(const Transfer *t, CURLcode code, long status)
{
	ClaudeAttempt a;
	ClaudeRetryPolicy policy = claude_retry_policy_requests(t->req.max_retries);
	ClaudeRetryDecision d;

	describe_attempt(t, code, status, &a);
	d = claude_retry_decide(&a, &policy);
	return d.retry ? d.delay_ms : -1;
}

/* The server's word on retrying, for a caller that retries itself (jobs). */
void
claude_outcome_retry_hints(ClaudeResult *r, const Transfer *t)
{
	/* NaN is none; the decision clamps, this keeps shared state finite */
	r->has_retry_after = t->retry_after_ms >= 0;
	r->retry_after_ms = r->has_retry_after ? Min(t->retry_after_ms, (double) PG_INT32_MAX) : 0;
	r->should_retry = should_retry(t);
	r->billing_error = t->billing;
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
