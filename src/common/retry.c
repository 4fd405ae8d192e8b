/*
 * retry.c
 *		The one retry decision, from plain data: whether a failed attempt is
 *		tried again and after how long.  Callers: httpworker/outcome.c (every
 *		request, retried by the HTTP worker) and dbworker/jobs.c (trigger jobs,
 *		whose requests the HTTP worker sends once, retried by their database
 *		worker).  The retry policy is changed here, and only here.
 *
 * Retried: 408, 409, 429, 5xx (529 included), connection errors and
 * timeouts, and any other error status the server marks x-should-retry:
 * true.  Never retried: a billing_error (out of credits, a spend limit:
 * the same key fails again, whatever the status it came with), 400, 401,
 * 403, 404, 413, a status the server marks x-should-retry: false, a reply
 * that could not be read, a request whose
 * body may have arrived without a reply (a Message Batch creation), a
 * stream its caller has begun to read.  The wait is the server's
 * retry-after (up to 10 minutes), else exponential backoff with 0-25%
 * jitter, capped: the callers' policies differ only in its steps.
 */
#include "postgres.h"

#include <math.h>

#include "common/pg_prng.h"

#include "common/retry.h"

/* a request retried by the HTTP worker: 0.5 s doubling to 8 s */
#define REQUEST_FIRST_MS	500
#define REQUEST_MAX_MS		8000

/* a job retried by its database worker: 1 s doubling to 5 minutes */
#define JOB_FIRST_MS		1000
#define JOB_MAX_MS			(300 * 1000)

/* the longest wait a server's retry-after may ask for */
#define RETRY_AFTER_MAX_MS	(10 * 60 * 1000)

ClaudeRetryPolicy
claude_retry_policy_requests(int max_retries)
{
	ClaudeRetryPolicy p = {max_retries, REQUEST_FIRST_MS, REQUEST_MAX_MS};

	return p;
}

ClaudeRetryPolicy
claude_retry_policy_jobs(int max_retries)
{
	ClaudeRetryPolicy p = {max_retries, JOB_FIRST_MS, JOB_MAX_MS};

	return p;
}

/* Whether a failure of this kind may go another way next time; why not. */
static const char *
not_retryable(const ClaudeAttempt *a)
{
	int			status = a->http_status;

	if (a->delivered)
		return "its caller has begun to read it";
	switch (a->transport)
	{
		case CLAUDE_TE_NONE:
			break;
		case CLAUDE_TE_CONNECT:
		case CLAUDE_TE_TIMEOUT:
			return a->not_idempotent ? "its body may have arrived" : NULL;
		case CLAUDE_TE_WORKER:
		case CLAUDE_TE_SHMEM:
			return NULL;		/* nothing reached the server, or room comes back */
		case CLAUDE_TE_INTERNAL:
		case CLAUDE_TE_REPLY:
			return "the failure is not the server's";
	}
	if (status < 400)
		return "not a failure of the server's";
	if (a->billing)
		return "the account cannot pay (billing_error)";
	if (status == 400 || status == 401 || status == 403 || status == 404 || status == 413)
		return "the request itself was refused";
	if (a->should_retry == CLAUDE_SHOULD_RETRY_FALSE)
		return "the server said x-should-retry: false";
	if (a->should_retry == CLAUDE_SHOULD_RETRY_TRUE)
		return NULL;
	if (status == 408 || status == 409 || status == 429 || status >= 500)
		return NULL;
	return "the status is not one retried";
}

/*
 * Whether to try again after this attempt, and when.  Pure but for the
 * jitter; never raises, so any process may call it anywhere.
 */
ClaudeRetryDecision
claude_retry_decide(const ClaudeAttempt *a, const ClaudeRetryPolicy *policy)
{
	ClaudeRetryDecision d = {false, 0, NULL};
	double		backoff;

	if ((d.reason = not_retryable(a)) != NULL)
		return d;
	if (a->attempt > policy->max_retries)
	{
		d.reason = "every retry was used";
		return d;
	}
	d.retry = true;
	/* NaN fails the test: no usable retry-after */
	if (a->retry_after_ms >= 0)
	{
		d.delay_ms = Min(a->retry_after_ms, RETRY_AFTER_MAX_MS);
		d.reason = "the server said when";
		return d;
	}
	backoff = Min(policy->first_ms * pow(2, Max(a->attempt, 1) - 1), policy->max_ms);
	d.delay_ms = backoff * (1.0 - 0.25 * pg_prng_double(&pg_global_prng_state));
	d.reason = "backoff";
	return d;
}

/*
 * The attempt a finished request's result describes, the attempt-th of its
 * caller.  No result: refused before the HTTP worker took it (a budget),
 * nothing was sent, as when there is no worker.
 */
void
claude_retry_attempt_of(const ClaudeResult *result, int attempt, ClaudeAttempt *a)
{
	memset(a, 0, sizeof(*a));
	a->attempt = attempt;
	a->retry_after_ms = -1;
	if (result == NULL)
	{
		a->transport = CLAUDE_TE_WORKER;
		return;
	}
	a->http_status = result->http_status;
	a->transport = result->transport;
	a->should_retry = (ClaudeShouldRetry) result->should_retry;
	a->billing = result->billing_error;
	if (result->has_retry_after)
		a->retry_after_ms = result->retry_after_ms;
}
