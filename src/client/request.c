/*
 * request.c
 *		One call to the API, start to finish, from any process: built from
 *		the caller's choices and the session's settings, answered by the
 *		cache or submitted to the HTTP worker under its payer's budget,
 *		waited for cancellably and collected.  Callers: the SQL functions,
 *		the pipe, streams, the database worker.
 *
 * The body is printed once, by claude_call_set_body, in jsonb's canonical
 * text: that text is what is sent and what the cache key is made of, so a
 * request has the same key whoever built it.
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "postmaster/autovacuum.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "client/budget.h"
#include "client/cache.h"
#include "client/request.h"

#include "common/guc.h"
#include "common/json.h"
#include "common/pgcompat.h"
#include "common/secret.h"
#include "shmem/dbqueue.h"
#include "shmem/stats.h"
#include "shmem/streamshare.h"

/*
 * A call to endpoint (id: what its path names, a batch's; else NULL),
 * paid by the role whose rights the statement runs with: the definer in
 * a SECURITY DEFINER function, the table's owner in ANALYZE, whatever
 * role a database worker switched to; never the session's user, which
 * may be a superuser who only caused it.  HTTP retries as
 * claude.max_retries says; no cache until the caller asks for it.
 */
void
claude_call_init(ClaudeCall *c, ClaudeEndpointId endpoint, const char *id)
{
	memset(c, 0, sizeof(*c));
	c->endpoint = claude_endpoint(endpoint);
	c->path = id ? psprintf(c->endpoint->path, id) : pstrdup(c->endpoint->path);
	c->payer = GetUserId();
	c->max_retries = claude_max_retries;
	c->slot = -1;
	c->cached.lead = -1;
}

/*
 * The body of a call, and its model and max_tokens read from it.  It is
 * printed only when it goes out (claude_call_body): a cache hit hashes its
 * binary form.
 */
void
claude_call_set_body(ClaudeCall *c, Jsonb *body)
{
	JsonbValue *v = claude_json_get(&body->root, "max_tokens");

	c->json = body;
	c->body = NULL;
	c->body_len = 0;
	c->model = claude_json_get_string(&body->root, "model");
	c->max_tokens = 0;
	if (v != NULL && v->type == jbvNumeric)
	{
		bool		out_of_range = false;
		int32		n = numeric_int4_opt_error(v->val.numeric, &out_of_range);

		/* a hostile 1e100 or NaN in claude_messages' body: clamped */
		if (out_of_range)
			n = numeric_is_nan(v->val.numeric) ? 0 :
				DatumGetFloat8(DirectFunctionCall1(numeric_float8,
												   NumericGetDatum(v->val.numeric))) > 0 ? INT_MAX : 0;
		c->max_tokens = Max(n, 0);
	}
}

/* The body's canonical text, printed at the first use; NULL: no body. */
const char *
claude_call_body(ClaudeCall *c)
{
	if (c->body == NULL && c->json != NULL)
		c->body = claude_json_print(c->json, &c->body_len);
	return c->body;
}

/*
 * Fill a request from the calling session's settings.  The key is looked
 * up now, so an unconfigured key fails before anything is queued.
 */
static void
request_from_settings(ClaudeRequest *req, const ClaudeCall *c, const char *body, Size body_len)
{
	const char *base = claude_base_url;
	int			baselen = strlen(base);

	while (baselen > 0 && base[baselen - 1] == '/')
		baselen--;

	memset(req, 0, sizeof(*req));
	req->method = c->endpoint->method;
	req->reply = c->endpoint->reply;
	req->timeout_ms = claude_request_timeout;
	req->max_reply = claude_max_reply_size;
	req->max_retries = c->max_retries;
	req->url = psprintf("%.*s%s", baselen, base, c->path);
	req->api_key = claude_resolve_api_key();
	req->version = claude_anthropic_version;
	req->ca_file = claude_ca_file;
	/* plain http is loopback only (common/guc.c): a proxy would see the key */
	req->proxy = pg_strncasecmp(base, "http:", 5) == 0 ? "" : claude_proxy;
	req->body = body;
	req->body_len = body_len;
}

/*
 * Whether a call goes streamed on the wire although its caller wants the
 * Message alone: a long answer (max_tokens above claude.stream_min_tokens)
 * or extended thinking.  A stream is bounded by claude.request_timeout
 * between events, so it is never cut off midway and paid for again.
 */
static bool
should_stream(const ClaudeCall *c)
{
	if (!c->endpoint->streams || c->json == NULL || c->input_file || c->max_tokens <= 0)
		return false;
	if (c->max_tokens > claude_stream_min_tokens)
		return true;
	return claude_json_get(&c->json->root, "thinking") != NULL;
}

/* Queue the call for the HTTP worker: its slot, or -1 when none is free. */
static int
submit(ClaudeCall *c)
{
	ClaudeRequest req;
	char	   *utf8 = NULL;
	int			slot;
	dsa_pointer packed;
	bool		priced = c->endpoint->reply == CLAUDE_REPLY_MESSAGE;

	claude_require_shared();
	/* nobody asked: ANALYZE of an expression index over a call, say */
	if (AmAutoVacuumWorkerProcess())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("autovacuum does not make Claude API requests"),
				 errdetail("The request would be paid by role %s, who did not ask for it.",
						   GetUserNameFromId(c->payer, true)),
				 errhint("Do not index or analyze expressions that call claude_* functions; store their results in a column.")));
	/* Messages requests are priced and come under their role's budget */
	if (priced)
		claude_budget_prepare(c->payer);
	if (c->stream == CLAUDE_STREAM_TEXT || c->stream == CLAUDE_STREAM_EVENTS)
		slot = claude_stream_slot_acquire(c->payer);
	else
		slot = claude_slot_acquire(c->wait_slot, c->bulk);
	if (slot < 0)
		return -1;
	if (claude_call_body(c))
		utf8 = pg_server_to_any(c->body, c->body_len, PG_UTF8);
	request_from_settings(&req, c, utf8,
						  utf8 == NULL ? 0 : utf8 == c->body ? c->body_len : strlen(utf8));
	req.dbid = MyDatabaseId;
	req.role = c->payer;
	req.price_in = req.price_out = -1;
	claude_usage_model_key(req.model, c->model);
	req.reserved_day = -1;
	if (priced)
	{
		/* input tokens guessed at four bytes each, corrected from the usage */
		req.input_tokens = ceil(req.body_len / 4.0);
		req.output_tokens = c->max_tokens;
		claude_price_of(c->model, &req.price_in, &req.price_out);
	}
	if (c->input_file)
	{
		req.input_file = c->input_file;
		req.body_len = c->body_len;
	}
	req.output_file = c->output_file;
	req.max_output = c->max_output;
	/* retried only after an error reply, never once it may have been acted on */
	req.not_idempotent = !c->endpoint->idempotent;
	if (c->stream == CLAUDE_STREAM_TEXT || c->stream == CLAUDE_STREAM_EVENTS)
		req.stream = c->stream;
	else if (should_stream(c))
		req.stream = CLAUDE_STREAM_ASSEMBLE;
	claude_cache_request(&c->cached, &req);
	req.cache_by_caller = c->cache_checked;

	packed = claude_request_pack(&req);
	explicit_bzero((char *) req.api_key, strlen(req.api_key));
	if (priced)
	{
		/* last, so that nothing can fail with the reservation held */
		char	   *why = NULL;
		int32		day = claude_budget_reserve(c->payer, &why);

		if (day == -2)
		{
			dsa_free(claude_area(), packed);
			claude_budget_refuse(c->payer, why);
		}
		claude_request_set_reservation(packed, day);
	}
	claude_slot_submit(slot, packed);
	return slot;
}

/*
 * Look the call up in the cache if its policy and endpoint allow: true
 * with c->hit set on a hit.  On a miss a CLAUDE_CACHE_LEAD call leads its
 * key: identical calls made meanwhile wait for its reply.
 */
bool
claude_call_lookup(ClaudeCall *c)
{
	if (!claude_cache_begin(c->cache != CLAUDE_CACHE_OFF && c->endpoint->cacheable,
							c->cache_nsp, c->payer, c->path, c->json, &c->body,
							&c->body_len, c->cache == CLAUDE_CACHE_LEAD,
							&c->cached, &c->hit))
		return false;
	c->state = CLAUDE_CALL_HIT;
	return true;
}

/*
 * Start the call: the cache, then (bulk work) the payer's budget, then a
 * slot at the HTTP worker.  CLAUDE_CALL_NEW when no slot is free and the
 * call does not wait for one: start it again later.
 */
ClaudeCallState
claude_call_start(ClaudeCall *c)
{
	char	   *why;

	Assert(c->state == CLAUDE_CALL_NEW);
	if (claude_call_lookup(c))
		return c->state;
	/* a spent budget fails this call of bulk work, not the others */
	if (c->bulk && c->endpoint->reply == CLAUDE_REPLY_MESSAGE &&
		!claude_budget_allows(c->payer, &why))
	{
		c->refused = claude_budget_message(c->payer, why);
		c->state = CLAUDE_CALL_REFUSED;
		return c->state;
	}
	if ((c->slot = submit(c)) >= 0)
		c->state = CLAUDE_CALL_SENT;
	return c->state;
}

/* Whether a started call's reply is here, without waiting. */
bool
claude_call_poll(ClaudeCall *c)
{
	return c->state == CLAUDE_CALL_SENT && claude_slot_poll(c->slot);
}

/* Sleep, cancellably, until a started call's reply is here. */
void
claude_call_wait(ClaudeCall *c)
{
	Assert(c->state == CLAUDE_CALL_SENT);
	claude_slot_wait(c->slot);
}

/*
 * Collect a finished call: c->reply as it came, UTF-8 (NULL if none), and
 * c->result; the slot is given back.  A reply that is not valid UTF-8 (or
 * holds a NUL byte) is a failed call (ZC002): nothing a server sends
 * raises here.  With failure NULL a failed call raises its error;
 * otherwise it returns false with failure filled.
 */
bool
claude_call_finish(ClaudeCall *c, ClaudeFailure *failure)
{
	Assert(c->state == CLAUDE_CALL_SENT);
	c->reply = claude_slot_take(c->slot, &c->result);
	c->slot = -1;
	c->state = CLAUDE_CALL_DONE;
	if (c->reply != NULL && !pg_verify_mbstr(PG_UTF8, c->reply, c->result.body_len, true))
	{
		pfree(c->reply);
		c->reply = NULL;
		c->result.transport = CLAUDE_TE_REPLY;
		strlcpy(c->result.message, "the reply is not valid UTF-8", sizeof(c->result.message));
	}
	if (failure == NULL)
		claude_check_result(&c->result, c->reply);
	else if (claude_result_failed(&c->result, c->reply, failure))
		return false;
	/* its in-flight cache entry now belongs to the writer */
	if (!c->cache_checked)
		claude_cache_sent(&c->cached);
	return true;
}

/*
 * Give up a started call whose caller stopped waiting (a stream's cursor
 * closed): the transfer is aborted, and identical calls waiting for its
 * reply look again.
 */
void
claude_call_abandon(ClaudeCall *c)
{
	if (c->state == CLAUDE_CALL_SENT)
	{
		claude_slot_abandon(c->slot);
		claude_cache_abandon(&c->cached);
	}
	c->slot = -1;
	c->state = CLAUDE_CALL_DONE;
}

/*
 * A call with cache_checked whose reply its caller checked and took: the
 * reply goes to the database's worker to be cached, the way the HTTP
 * worker hands over any other, and identical calls waiting for it find
 * it there.  Nothing for a hit or a call that was not sent.
 */
void
claude_call_keep(ClaudeCall *c)
{
	ClaudeRequest req;
	const char *body;

	if (!c->cache_checked || c->state != CLAUDE_CALL_DONE || c->reply == NULL ||
		!c->cached.enabled)
		return;
	memset(&req, 0, sizeof(req));
	claude_cache_request(&c->cached, &req);
	body = claude_call_body(c);
	req.body = body ? pg_server_to_any(body, c->body_len, PG_UTF8) : NULL;
	req.body_len = req.body == NULL ? 0 : req.body == body ? c->body_len : strlen(req.body);
	claude_cache_store(&req, c->reply, c->result.body_len);
	claude_cache_sent(&c->cached);
	c->cache_checked = false;
}

/*
 * A call with cache_checked whose reply its caller refused: not cached,
 * identical calls waiting for it send their own, and the statistics count
 * it failed.
 */
void
claude_call_reject(ClaudeCall *c)
{
	if (!c->cache_checked || c->state != CLAUDE_CALL_DONE)
		return;
	claude_cache_abandon(&c->cached);
	claude_stats_refused();
	c->cache_checked = false;
}

/*
 * Give up a started call from a cleanup path: never raises.  Unless
 * cancel, its reply is still worth having (a row read ahead that the
 * statement never reached): it goes on at the HTTP worker, which caches
 * it.
 */
void
claude_call_detach(ClaudeCall *c, bool cancel)
{
	if (c->state == CLAUDE_CALL_SENT)
	{
		claude_slot_detach(c->slot, cancel);
		if (cancel)
			claude_cache_abandon(&c->cached);
		else
			claude_cache_sent(&c->cached);
	}
	c->slot = -1;
	c->state = CLAUDE_CALL_DONE;
}

claude_call_run_hook_type claude_call_run_hook = NULL;

/*
 * One synchronous call: NULL when the cache answered (c->hit), else the
 * reply (UTF-8, "" if none); a failed call raises its error.  Read ahead
 * (claude_call_run_hook), it may come back CLAUDE_CALL_DEFERRED: NULL, and
 * the caller returns at once.
 */
char *
claude_call_run(ClaudeCall *c)
{
	c->wait_slot = true;
	if (claude_call_run_hook == NULL || !claude_call_run_hook(c))
		(void) claude_call_start(c);
	if (c->state == CLAUDE_CALL_HIT || c->state == CLAUDE_CALL_DEFERRED)
		return NULL;
	if (c->state == CLAUDE_CALL_SENT)
	{
		claude_call_wait(c);
		(void) claude_call_finish(c, NULL);
	}
	return c->reply ? c->reply : pstrdup("");
}
