/*
 * message.c
 *		A Messages request from SQL arguments and the text of its reply; and
 *		one synchronous call from a SQL function.  Callers: the SQL functions,
 *		the pipe, the trigger, the database worker's write-backs.
 *
 * Bodies are printed in jsonb's canonical form (keys shortest first), so a
 * prompt's cache key does not depend on who built it.
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"

#include "utils/json.h"

#include "client/cache.h"
#include "client/call.h"
#include "client/message.h"

#include "common/guc.h"
#include "common/json.h"
#include "common/spi.h"

void
invalid_argument(const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", msg)));
}

void
claude_bad_reply(const ClaudeResult *result)
{
	ereport(ERROR,
			(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
			 errmsg("the Claude API sent a reply that is not a Messages response"),
			 result->request_id[0] ?
			 errdetail_internal("HTTP status %d, request-id: %s.",
								result->http_status, result->request_id) : 0));
}

/*
 * Send a request (the canonical text of a validated body) to path, through
 * the cache unless it is off for this call.  Returns the reply as text
 * (reply_text) or, from the cache, as jsonb (cached).  max_tokens > 0
 * marks a Messages request (token limits, budgets, usage).
 */
void
claude_send(FunctionCallInfo fcinfo, int cache_argno, const char *path,
			const char *body, int max_tokens, char **reply_text, Jsonb **cached,
			ClaudeResult *result)
{
	ClaudeCacheCall call;

	*reply_text = NULL;
	*cached = NULL;
	memset(result, 0, sizeof(*result));
	if (claude_cache_begin(claude_cache_wanted(fcinfo, cache_argno),
						   claude_extension_schema(fcinfo), path,
						   body, strlen(body), true, &call, cached))
		return;
	*reply_text = claude_http_call(CLAUDE_POST, path, body, strlen(body),
								   max_tokens, &call, result);
}

/* Concatenated text blocks of a reply held as jsonb. */
text *
claude_jsonb_reply_text(Jsonb *reply)
{
	JsonbContainer *content = claude_json_get_container(&reply->root, "content", true);
	StringInfoData buf;
	int			n = content ? JsonContainerSize(content) : 0;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *block = getIthJsonbValueFromContainer(content, i);
		char	   *type;
		JsonbValue *t;

		if (block->type != jbvBinary)
			continue;
		type = claude_json_get_string(block->val.binary.data, "type");
		if (type == NULL || strcmp(type, "text") != 0)
			continue;
		t = claude_json_get(block->val.binary.data, "text");
		if (t && t->type == jbvString)
			appendBinaryStringInfo(&buf, t->val.string.val, t->val.string.len);
	}
	return cstring_to_text_with_len(buf.data, buf.len);
}

/*
 * Append a JSON string member as jsonb prints it (", " between members,
 * ": " after the key), so that the text below is jsonb's canonical form.
 */
static void
append_member(StringInfo buf, const char *key, const char *value)
{
	appendStringInfo(buf, ", \"%s\": ", key);
	escape_json(buf, value);
}

/*
 * Read and check the arguments claude_complete and the bulk calls share;
 * an argno < 0 means the function has no such argument.
 */
void
claude_complete_args(FunctionCallInfo fcinfo, int model_arg, int max_tokens_arg,
					 int system_arg, int temperature_arg, ClaudeCompleteArgs *a)
{
	a->model = claude_default_model;
	a->max_tokens = claude_default_max_tokens;
	a->system = NULL;
	a->temperature = NULL;
	a->cache_system = false;

	if (model_arg >= 0 && !PG_ARGISNULL(model_arg))
	{
		a->model = text_to_cstring(PG_GETARG_TEXT_PP(model_arg));
		if (a->model[0] == '\0')
			invalid_argument("model must not be empty (use NULL for claude.default_model)");
	}
	if (max_tokens_arg >= 0 && !PG_ARGISNULL(max_tokens_arg))
	{
		a->max_tokens = PG_GETARG_INT32(max_tokens_arg);
		if (a->max_tokens < 1)
			invalid_argument("max_tokens must be at least 1");
	}
	if (system_arg >= 0 && !PG_ARGISNULL(system_arg))
	{
		a->system = text_to_cstring(PG_GETARG_TEXT_PP(system_arg));
		if (a->system[0] == '\0')
			invalid_argument("system must not be empty (use NULL for none)");
	}
	if (temperature_arg >= 0 && !PG_ARGISNULL(temperature_arg))
	{
		double		temperature = PG_GETARG_FLOAT8(temperature_arg);

		if (isnan(temperature) || temperature < 0 || temperature > 1)
			invalid_argument("temperature must be between 0 and 1");
		a->temperature = DatumGetCString(DirectFunctionCall1(numeric_out,
															 DirectFunctionCall1(float8_numeric,
																				 Float8GetDatum(temperature))));
	}
}

/*
 * The request of one user message, printed directly in jsonb's canonical
 * form (keys shorter first, then bytewise: model, system, messages,
 * max_tokens, temperature), so it has the same cache key as the same
 * request made with claude_messages, without building any jsonb.
 */
char *
claude_complete_body(const ClaudeCompleteArgs *a, const char *prompt)
{
	StringInfoData req;

	initStringInfo(&req);
	appendStringInfoString(&req, "{\"model\": ");
	escape_json(&req, a->model);
	if (a->system && a->cache_system)
	{
		/* a block, keys in canonical order: text, type, cache_control */
		appendStringInfoString(&req, ", \"system\": [{\"text\": ");
		escape_json(&req, a->system);
		appendStringInfoString(&req, ", \"type\": \"text\", \"cache_control\": {\"type\": \"ephemeral\"}}]");
	}
	else if (a->system)
		append_member(&req, "system", a->system);
	appendStringInfoString(&req, ", \"messages\": [{\"role\": \"user\", \"content\": ");
	escape_json(&req, prompt);
	appendStringInfo(&req, "}], \"max_tokens\": %d", a->max_tokens);
	if (a->temperature)
		appendStringInfo(&req, ", \"temperature\": %s", a->temperature);
	appendStringInfoChar(&req, '}');
	return req.data;
}

/*
 * Work that sends the same system prompt with many rows (claude_enrich,
 * the trigger) marks a long one for prompt caching: every row after the
 * first reads it at a tenth of the input price.
 */
void
claude_cache_shared_system(ClaudeCompleteArgs *a)
{
	a->cache_system = a->system != NULL && strlen(a->system) >= CLAUDE_CACHE_SYSTEM_MIN;
}

/* The reply's text, read in one parser pass; NULL if it is not a reply. */
text *
claude_complete_text(const char *reply)
{
	StringInfoData out;

	initStringInfo(&out);
	if (reply == NULL || !claude_reply_text(reply, strlen(reply), &out))
		return NULL;
	return cstring_to_text_with_len(out.data, out.len);
}
