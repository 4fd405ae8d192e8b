/*
 * errors.c
 *		Turning a failed request into a SQL error or a per-row failure.
 *		Callers: every place that collects a result.
 *
 * Every class of failure has its own SQLSTATE (errors.h); the text carries
 * the API's error.type and message, the detail the request-id.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "common/errors.h"
#include "common/json.h"
#include "common/secret.h"

#define MAX_API_MESSAGE 1000

static int
errcode_for_status(int status)
{
	switch (status)
	{
		case 401:
		case 403:
			return CLAUDE_ERRCODE_AUTH;
		case 404:
			return CLAUDE_ERRCODE_NOT_FOUND;
		case 408:
			return CLAUDE_ERRCODE_TIMEOUT;
		case 429:
			return CLAUDE_ERRCODE_RATE_LIMITED;
	}
	return status >= 500 ? CLAUDE_ERRCODE_SERVER : CLAUDE_ERRCODE_INVALID_REQUEST;
}

static char *
hint_for_status(int status)
{
	switch (status)
	{
		case 401:
			return pstrdup("Check the key in claude.api_key_file (or claude.api_key).");
		case 403:
			return pstrdup("The API key lacks permission for this request.");
		case 429:
			return pstrdup("Lower the request rate, or set claude.requests_per_minute and the token limits.");
		case 529:
			return pstrdup("The API is overloaded; retry later.");
	}
	return NULL;
}

static char *
request_detail(const ClaudeResult *result, const char *extra)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (extra)
		appendStringInfo(&buf, "%s ", extra);
	if (result->http_status)
		appendStringInfo(&buf, "HTTP status %d", result->http_status);
	if (result->request_id[0])
		appendStringInfo(&buf, "%srequest-id: %s", buf.len ? ", " : "",
						 result->request_id);
	if (result->attempts > 1)
		appendStringInfo(&buf, "%sattempts: %d", buf.len ? ", " : "",
						 result->attempts);
	if (buf.len == 0)
		return NULL;
	appendStringInfoChar(&buf, '.');
	return buf.data;
}

/*
 * A text of the server's, decoded to UTF-8, fit for the database: as it is
 * in a UTF-8 database when valid, else its printable ASCII with '?' for
 * the rest (never a conversion error instead of the API's message).
 */
static char *
readable(StringInfo s)
{
	if (GetDatabaseEncoding() == PG_UTF8 && pg_verify_mbstr(PG_UTF8, s->data, s->len, true))
		return s->data;
	for (int i = 0; i < s->len; i++)
		if ((unsigned char) s->data[i] >= 0x80 || (unsigned char) s->data[i] < 0x20)
			s->data[i] = '?';
	return s->data;
}

static bool
describe_failure(const ClaudeResult *result, const char *body,
				 ClaudeFailure *failure)
{
	memset(failure, 0, sizeof(*failure));

	switch (result->transport)
	{
		case CLAUDE_TE_NONE:
			break;
		case CLAUDE_TE_CONNECT:
			failure->sqlerrcode = CLAUDE_ERRCODE_CONNECTION;
			failure->message = psprintf("could not reach the Claude API: %s",
										result->message);
			failure->detail = request_detail(result, NULL);
			failure->hint = pstrdup("Check claude.base_url, claude.proxy and claude.ca_file.");
			return true;
		case CLAUDE_TE_TIMEOUT:
			failure->sqlerrcode = CLAUDE_ERRCODE_TIMEOUT;
			failure->message = psprintf("Claude API request timed out: %s",
										result->message);
			failure->detail = request_detail(result, NULL);
			failure->hint = pstrdup("Raise claude.request_timeout for long replies.");
			return true;
		case CLAUDE_TE_WORKER:
			failure->sqlerrcode = CLAUDE_ERRCODE_WORKER;
			failure->message = psprintf("claude HTTP worker failure: %s",
										result->message);
			return true;
		case CLAUDE_TE_INTERNAL:
			failure->sqlerrcode = ERRCODE_INTERNAL_ERROR;
			failure->message = psprintf("claude HTTP worker error: %s",
										result->message);
			return true;
		case CLAUDE_TE_SHMEM:
			failure->sqlerrcode = ERRCODE_OUT_OF_MEMORY;
			failure->message = pstrdup(result->message);
			failure->hint = pstrdup(CLAUDE_SHMEM_HINT);
			return true;
		case CLAUDE_TE_REPLY:
			failure->sqlerrcode = CLAUDE_ERRCODE_BAD_RESPONSE;
			failure->message = psprintf("the Claude API sent a reply that could not be read: %s",
										result->message);
			failure->detail = request_detail(result, NULL);
			return true;
	}

	if (result->http_status >= 200 && result->http_status < 300)
		return false;

	{
		StringInfoData type;
		StringInfoData msg;

		initStringInfo(&type);
		initStringInfo(&msg);
		if (body)
			claude_reply_error(body, strlen(body), &type, &msg);
		failure->sqlerrcode = errcode_for_status(result->http_status);
		if (result->http_status >= 300 && result->http_status < 400)
			failure->message = psprintf("Claude API redirect %d not followed",
										result->http_status);
		else
			/* redacted whole, then cut: a cut key would no longer be found */
			failure->message = psprintf("Claude API error %d %s: %s",
										result->http_status,
										type.len ? claude_redact(readable(&type), 100) : "http_error",
										msg.len ? claude_redact(readable(&msg), MAX_API_MESSAGE) :
										"(no error message in the reply)");
		failure->detail = request_detail(result, NULL);
		failure->hint = hint_for_status(result->http_status);
		/* whatever its status: paying is the account's problem, not the request's */
		if (result->http_status >= 400 &&
			(result->billing_error || strcmp(type.data, "billing_error") == 0))
		{
			failure->sqlerrcode = CLAUDE_ERRCODE_BILLING;
			failure->message = psprintf("Claude API billing error (HTTP %d billing_error): %s",
										result->http_status,
										msg.len ? claude_redact(readable(&msg), MAX_API_MESSAGE) :
										"(no error message in the reply)");
			failure->hint = pstrdup("Check the plan, credit balance and spend limits of the key's organization in the Anthropic Console; "
									"retrying with the same key will not succeed.");
		}
	}
	return true;
}

/*
 * Describe the failure of a finished request, if it failed, with every
 * text redacted: what it says may be stored (a row's error, a job's
 * last_error) or shown to any role.  A 2xx status with a body counts as
 * success; the caller validates the body.
 */
bool
claude_result_failed(const ClaudeResult *result, const char *body,
					 ClaudeFailure *failure)
{
	if (!describe_failure(result, body, failure))
		return false;
	failure->message = claude_redact(failure->message, 0);
	failure->detail = claude_redact(failure->detail, 0);
	return true;
}

static void
claude_raise_failure(const ClaudeFailure *failure)
{
	ereport(ERROR,
			(errcode(failure->sqlerrcode),
			 errmsg_internal("%s", failure->message),
			 failure->detail ? errdetail_internal("%s", failure->detail) : 0,
			 failure->hint ? errhint("%s", failure->hint) : 0));
	pg_unreachable();
}

void
claude_check_result(const ClaudeResult *result, const char *body)
{
	ClaudeFailure failure;

	if (claude_result_failed(result, body, &failure))
		claude_raise_failure(&failure);
}
