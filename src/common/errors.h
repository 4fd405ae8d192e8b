/*
 * errors.h
 *		SQLSTATEs of the claude extension and reporting of failed requests.
 *
 * Class ZC is ours: an implementation-defined class begins with 5-9 or I-Z,
 * the SQL standard keeps the others (test/t/030_sqlstate_class.pl checks
 * every code here).  The codes follow the HTTP status they mostly stand
 * for, so they are easy to remember.
 */
#ifndef CLAUDE_ERRORS_H
#define CLAUDE_ERRORS_H

#include "utils/dsa.h"

/* the class itself: bulk work whose rows failed in more than one way */
#define CLAUDE_ERRCODE_CLASS		MAKE_SQLSTATE('Z','C','0','0','0')
#define CLAUDE_ERRCODE_CONNECTION	MAKE_SQLSTATE('Z','C','0','0','1')
#define CLAUDE_ERRCODE_BAD_RESPONSE	MAKE_SQLSTATE('Z','C','0','0','2')
#define CLAUDE_ERRCODE_WORKER		MAKE_SQLSTATE('Z','C','0','0','3')
#define CLAUDE_ERRCODE_INVALID_REQUEST	MAKE_SQLSTATE('Z','C','4','0','0')
#define CLAUDE_ERRCODE_AUTH			MAKE_SQLSTATE('Z','C','4','0','1')
#define CLAUDE_ERRCODE_BUDGET		MAKE_SQLSTATE('Z','C','4','0','2')
/* the API's billing_error (HTTP 402 in its docs; ZC402 is our own budget) */
#define CLAUDE_ERRCODE_BILLING		MAKE_SQLSTATE('Z','C','4','B','2')
#define CLAUDE_ERRCODE_NOT_FOUND	MAKE_SQLSTATE('Z','C','4','0','4')
#define CLAUDE_ERRCODE_TIMEOUT		MAKE_SQLSTATE('Z','C','4','0','8')
#define CLAUDE_ERRCODE_SCHEMA		MAKE_SQLSTATE('Z','C','4','2','2')
#define CLAUDE_ERRCODE_RATE_LIMITED	MAKE_SQLSTATE('Z','C','4','2','9')
#define CLAUDE_ERRCODE_SERVER		MAKE_SQLSTATE('Z','C','5','0','0')

/* what to do when the shared memory area is full (SQLSTATE 53200) */
#define CLAUDE_SHMEM_HINT "Close cursors over claude_stream and claude_messages_stream that are no longer read, or raise claude.max_shared_memory."

/* Why a transfer produced no HTTP response. */
typedef enum ClaudeTransportError
{
	CLAUDE_TE_NONE = 0,
	CLAUDE_TE_CONNECT,			/* DNS, TCP, TLS, reset, truncated reply */
	CLAUDE_TE_TIMEOUT,			/* claude.request_timeout elapsed */
	CLAUDE_TE_WORKER,			/* the HTTP worker exited or is missing */
	CLAUDE_TE_INTERNAL,			/* out of memory and the like */
	CLAUDE_TE_SHMEM,			/* claude.max_shared_memory reached */
	CLAUDE_TE_REPLY				/* a reply the worker could not handle */
} ClaudeTransportError;

/* request-id as a caller sees it: printable ASCII, at most this long */
#define CLAUDE_REQUEST_ID_LEN	64

typedef struct ClaudeResult
{
	int			http_status;	/* 0 when there was no response */
	ClaudeTransportError transport;
	int			attempts;
	double		elapsed_ms;
	char		request_id[CLAUDE_REQUEST_ID_LEN + 1];
	char		message[256];	/* transport error text */
	bool		body_sent;		/* a body from a file was read whole: it may have arrived */
	bool		has_retry_after;	/* the last reply said when to retry: */
	double		retry_after_ms; /* after this long (common/retry.c) */
	int8		should_retry;	/* its x-should-retry, a ClaudeShouldRetry */
	bool		billing_error;	/* an error reply of type billing_error */
	dsa_pointer body;			/* response body, owner frees */
	Size		body_len;
} ClaudeResult;

/* A failed request, described without raising (for per-row errors). */
typedef struct ClaudeFailure
{
	int			sqlerrcode;
	char	   *message;
	char	   *detail;
	char	   *hint;
} ClaudeFailure;

extern bool claude_result_failed(const ClaudeResult *result, const char *body,
								 ClaudeFailure *failure);
extern void claude_check_result(const ClaudeResult *result, const char *body);

#endif
