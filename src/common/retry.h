/*
 * retry.h
 *		The one retry decision: whether a failed attempt is tried again,
 *		and when.  Used by the HTTP worker (httpworker/outcome.c) for every
 *		request and by the database worker for trigger jobs (dbworker/jobs.c),
 *		each with its own policy.  See retry.c.
 */
#ifndef CLAUDE_RETRY_H
#define CLAUDE_RETRY_H

#include "common/errors.h"

/* x-should-retry as the server sent it; zero is "absent" */
typedef enum ClaudeShouldRetry
{
	CLAUDE_SHOULD_RETRY_ABSENT = 0,
	CLAUDE_SHOULD_RETRY_TRUE,
	CLAUDE_SHOULD_RETRY_FALSE
} ClaudeShouldRetry;

/* How often and how long apart a caller tries: passed explicitly. */
typedef struct ClaudeRetryPolicy
{
	int			max_retries;	/* retries after the first attempt */
	double		first_ms;		/* backoff before the first retry */
	double		max_ms;			/* the backoff doubles up to this */
} ClaudeRetryPolicy;

/* What an attempt came to, as plain data. */
typedef struct ClaudeAttempt
{
	int			http_status;	/* 0: no response */
	ClaudeTransportError transport; /* why there was no response */
	int			attempt;		/* 1 for the first */
	double		retry_after_ms; /* the server's retry-after(-ms), < 0: none */
	ClaudeShouldRetry should_retry;
	bool		not_idempotent; /* its body may have arrived without a reply */
	bool		delivered;		/* the caller has begun to read it (a stream) */
	bool		billing;		/* the reply's error.type is billing_error */
} ClaudeAttempt;

typedef struct ClaudeRetryDecision
{
	bool		retry;
	double		delay_ms;		/* before the next attempt, when retry */
	const char *reason;			/* why, for logs and tests */
} ClaudeRetryDecision;

extern ClaudeRetryPolicy claude_retry_policy_requests(int max_retries);
extern ClaudeRetryPolicy claude_retry_policy_jobs(int max_retries);
extern ClaudeRetryDecision claude_retry_decide(const ClaudeAttempt *a,
											   const ClaudeRetryPolicy *policy);
extern void claude_retry_attempt_of(const ClaudeResult *result, int attempt,
									ClaudeAttempt *a);

#endif
