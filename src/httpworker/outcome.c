/*
 * outcome.c
 *		What a failed attempt tells its caller: the class of the failure (its
 *		SQLSTATE, see common/errors.c) and its message.  Caller: dispatch.c.
 */
#include "postgres.h"

#include "common/guc.h"
#include "httpworker/sse.h"
#include "httpworker/transfer.h"

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
	if (code == CURLE_OPERATION_TIMEDOUT)
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
