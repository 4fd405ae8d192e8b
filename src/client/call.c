/*
 * call.c
 *		The call path of every process that sends: a request filled from
 *		the session's settings, budget and cache, submitted to the HTTP
 *		worker, waited for cancellably and collected.  Callers: SQL functions,
 *		the pipe, the database worker.
 */
#include "postgres.h"

#include <math.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "postmaster/autovacuum.h"

#include "client/budget.h"
#include "client/cache.h"
#include "client/call.h"

#include "common/guc.h"
#include "common/pgcompat.h"
#include "common/secret.h"
#include "shmem/streamshare.h"

/*
 * Fill a request from the calling session's settings.  The key is looked
 * up now, so an unconfigured key fails before anything is queued.
 */
static void
claude_request_from_settings(ClaudeRequest *req, ClaudeMethod method,
							 const char *path, const char *body, Size body_len)
{
	const char *base = claude_base_url;
	int			baselen = strlen(base);

	while (baselen > 0 && base[baselen - 1] == '/')
		baselen--;

	memset(req, 0, sizeof(*req));
	req->method = method;
	req->timeout_ms = claude_request_timeout;
	req->max_reply = claude_max_reply_size;
	req->max_retries = claude_max_retries;
	req->url = psprintf("%.*s%s", baselen, base, path);
	req->api_key = claude_resolve_api_key();
	req->version = claude_anthropic_version;
	req->ca_file = claude_ca_file;
	/* plain http is loopback only (common/guc.c): a proxy would see the key */
	req->proxy = pg_strncasecmp(base, "http:", 5) == 0 ? "" : claude_proxy;
	req->body = body;
	req->body_len = body_len;
}

/*
 * Whether a Messages request goes streamed on the wire although its caller
 * wants the Message alone: a long answer (max_tokens above
 * claude.stream_min_tokens) or extended thinking.  A stream is bounded by
 * claude.request_timeout between events, so it is never cut off midway
 * and paid for again.
 */
static bool
should_stream(const char *path, const char *body, Size len, int max_tokens)
{
	Size		vlen;

	if (max_tokens <= 0 || body == NULL || strcmp(path, "/v1/messages") != 0)
		return false;
	if (max_tokens > claude_stream_min_tokens)
		return true;
	return memmem(body, len, "\"thinking\"", 10) != NULL &&
		claude_json_member(body, len, "thinking", &vlen) != NULL;
}

/*
 * body_len is the size of input_file when there is one, and the most a
 * download (output_file) may write.
 */
static int
submit(ClaudeMethod method, const char *path, const char *body, Size body_len,
	   int max_tokens, ClaudeCacheCall *cache, const char *input_file,
	   const char *output_file, bool not_idempotent, int flags)
{
	ClaudeRequest req;
	char	   *utf8 = NULL;
	int			slot;
	dsa_pointer packed;
	Oid			role = claude_request_owner();

	claude_require_shared();
	/* nobody asked: ANALYZE of an expression index over a call, say */
	if (AmAutoVacuumWorkerProcess())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("autovacuum does not make Claude API requests"),
				 errdetail("The request would be paid by role %s, who did not ask for it.",
						   GetUserNameFromId(role, true)),
				 errhint("Do not index or analyze expressions that call claude_* functions; store their results in a column.")));
	/* Messages requests are priced and come under their role's budget */
	if (max_tokens > 0)
		claude_budget_prepare(role);
	if (flags & (CLAUDE_SUBMIT_STREAM_TEXT | CLAUDE_SUBMIT_STREAM_EVENTS))
		slot = claude_stream_slot_acquire(role);
	else
		slot = claude_slot_acquire((flags & CLAUDE_SUBMIT_WAIT) != 0,
								   (flags & CLAUDE_SUBMIT_BULK) != 0);
	if (slot < 0)
		return -1;
	if (body)
		utf8 = pg_server_to_any(body, body_len, PG_UTF8);
	claude_request_from_settings(&req, method, path, utf8,
								 utf8 == NULL ? 0 :
								 utf8 == body ? body_len : strlen(utf8));
	req.dbid = MyDatabaseId;
	req.role = role;
	req.price_in = req.price_out = -1;
	req.reserved_day = -1;
	if (max_tokens > 0)
	{
		req.input_tokens = ceil(req.body_len / 4.0);
		req.output_tokens = max_tokens;
		claude_price_of(body, body_len, &req.price_in, &req.price_out);
	}
	if (input_file)
	{
		req.input_file = input_file;
		req.body_len = body_len;
	}
	req.output_file = output_file;
	if (output_file)
	{
		/* a download: body_len bounds what it writes; one attempt */
		req.max_output = body_len;
		req.max_retries = 0;
	}
	/* retried only after an error reply, never once it may have been acted on */
	req.not_idempotent = not_idempotent;
	if (flags & CLAUDE_SUBMIT_STREAM_TEXT)
		req.stream = CLAUDE_STREAM_TEXT;
	else if (flags & CLAUDE_SUBMIT_STREAM_EVENTS)
		req.stream = CLAUDE_STREAM_EVENTS;
	else if (method == CLAUDE_POST && !input_file &&
			 should_stream(path, req.body, req.body_len, max_tokens))
		req.stream = CLAUDE_STREAM_ASSEMBLE;
	claude_cache_request(cache, &req);

	packed = claude_request_pack(&req);
	explicit_bzero((char *) req.api_key, strlen(req.api_key));
	if (max_tokens > 0)
	{
		/* last, so that nothing can fail with the reservation held */
		char	   *why = NULL;
		int32		day = claude_budget_reserve(role, &why);

		if (day == -2)
		{
			dsa_free(claude_area(), packed);
			claude_budget_refuse(role, why);
		}
		claude_request_set_reservation(packed, day);
	}
	claude_slot_submit(slot, packed);
	return slot;
}

/*
 * Queue a request for the HTTP worker and return its slot, or -1 when no
 * slot is free and flags lack CLAUDE_SUBMIT_WAIT.  max_tokens > 0 marks a
 * request that draws from the token limits: max_tokens output tokens, and
 * input tokens estimated at four bytes of body each (corrected from the
 * reply's usage).
 */
int
claude_request_submit(ClaudeMethod method, const char *path,
					  const char *body, Size body_len, int max_tokens,
					  ClaudeCacheCall *cache, int flags)
{
	return submit(method, path, body, body_len, max_tokens, cache, NULL, NULL, false, flags);
}

/*
 * Queue a GET whose successful body the HTTP worker writes to output_file
 * (relative to the data directory), for replies too large for memory, up
 * to max_bytes (0: no limit); an error reply still comes back in the slot.
 * One attempt: its caller decides when to try again.  -1 when no slot is
 * free.
 */
int
claude_request_download(const char *path, const char *output_file, Size max_bytes)
{
	return submit(CLAUDE_GET, path, NULL, max_bytes, 0, NULL, NULL, output_file, false, 0);
}

/*
 * Queue a POST that creates something at the API (a batch), its body the
 * size bytes of input_file (UTF-8, relative to the data directory, read by
 * the HTTP worker): sent again only after an error reply (the server
 * refused it), never after a transport error or timeout, since once its
 * body went out the server may have acted on it (the result's body_sent
 * says whether it did).  Waits for a slot.
 */
int
claude_request_create(const char *path, const char *input_file, Size size)
{
	return submit(CLAUDE_POST, path, NULL, size, 0, NULL, input_file, NULL, true, CLAUDE_SUBMIT_WAIT);
}

/*
 * The reply of a finished request as it came, UTF-8 (NULL if none), and the
 * slot given back.  Never raises for what a server sent: a reply that is
 * not valid UTF-8 (or holds a NUL byte) is a failed request (ZC002).  Those
 * who read it convert what they take of it with claude_utf8_to_server.
 */
char *
claude_request_collect(int slot, ClaudeResult *result)
{
	char	   *response = claude_slot_take(slot, result);

	if (response == NULL)
		return NULL;
	if (!pg_verify_mbstr(PG_UTF8, response, result->body_len, true))
	{
		pfree(response);
		result->transport = CLAUDE_TE_REPLY;
		strlcpy(result->message, "the reply is not valid UTF-8", sizeof(result->message));
		return NULL;
	}
	return response;
}

/* One request, start to finish: the reply, or the request's error. */
char *
claude_http_call(ClaudeMethod method, const char *path,
				 const char *body, Size body_len, int max_tokens,
				 ClaudeCacheCall *cache, ClaudeResult *result)
{
	int			slot = claude_request_submit(method, path, body, body_len,
											 max_tokens, cache, CLAUDE_SUBMIT_WAIT);
	char	   *response;

	claude_slot_wait(slot);
	response = claude_request_collect(slot, result);
	claude_check_result(result, response);
	claude_cache_sent(cache);
	return response ? response : pstrdup("");
}
