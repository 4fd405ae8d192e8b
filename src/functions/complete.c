/*
 * api.c
 *		claude_complete and claude_messages.
 *
 * Requests are built as jsonb and printed by PostgreSQL's own JSON output,
 * so every string is escaped correctly.  Arguments are checked before any
 * request is queued: nothing is spent on a call that cannot succeed.
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "client/cache.h"
#include "client/call.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/spi.h"
#include "functions/complete.h"

PG_FUNCTION_INFO_V1(claude_complete);
PG_FUNCTION_INFO_V1(claude_messages);

void
invalid_argument(const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", msg)));
}

static void
push_key(JsonbParseState **state, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &v);
}

static void
push_string(JsonbParseState **state, const char *key, const char *val, int len)
{
	JsonbValue	v;

	if (key)
		push_key(state, key);
	v.type = jbvString;
	v.val.string.val = (char *) val;
	v.val.string.len = len;
	pushJsonbValue(state, key ? WJB_VALUE : WJB_ELEM, &v);
}

static void
push_numeric(JsonbParseState **state, const char *key, Numeric num)
{
	JsonbValue	v;

	push_key(state, key);
	v.type = jbvNumeric;
	v.val.numeric = num;
	pushJsonbValue(state, WJB_VALUE, &v);
}

static bool
numeric_is_integer(Numeric n)
{
	return !numeric_is_nan(n) &&
		DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(n),
										 DirectFunctionCall2(numeric_trunc,
															 NumericGetDatum(n),
															 Int32GetDatum(0))));
}

static double
numeric_to_double(Numeric n)
{
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(n)));
}

/*
 * Check a Messages request body as far as the API would reject it for
 * reasons visible here.
 */
static void
validate_messages_request(Jsonb *req)
{
	JsonbContainer *messages;
	JsonbValue *v;
	int			n = 0;

	if (!JB_ROOT_IS_OBJECT(req) || JB_ROOT_IS_SCALAR(req))
		invalid_argument("request must be a JSON object");

	messages = claude_json_get_container(&req->root, "messages", true);
	if (messages == NULL || (n = JsonContainerSize(messages)) == 0)
		invalid_argument("request must have a non-empty \"messages\" array");

	for (int i = 0; i < n; i++)
	{
		JsonbValue *m = getIthJsonbValueFromContainer(messages, i);
		JsonbContainer *mc;
		char	   *role;
		JsonbValue *content;

		if (m->type != jbvBinary || !JsonContainerIsObject(m->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("messages[%d] must be an object", i)));
		mc = m->val.binary.data;
		role = claude_json_get_string(mc, "role");
		if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("messages[%d].role must be \"user\" or \"assistant\"", i)));
		content = claude_json_get(mc, "content");
		if (content == NULL ||
			!(content->type == jbvString ||
			  (content->type == jbvBinary && JsonContainerIsArray(content->val.binary.data))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("messages[%d].content must be a string or an array of content blocks", i)));
	}

	if ((v = claude_json_get(&req->root, "model")) != NULL &&
		(v->type != jbvString || v->val.string.len == 0))
		invalid_argument("\"model\" must be a non-empty string");
	if ((v = claude_json_get(&req->root, "max_tokens")) != NULL &&
		(v->type != jbvNumeric || !numeric_is_integer(v->val.numeric) ||
		 numeric_to_double(v->val.numeric) < 1))
		invalid_argument("\"max_tokens\" must be an integer of at least 1");
	if ((v = claude_json_get(&req->root, "temperature")) != NULL &&
		(v->type != jbvNumeric || numeric_is_nan(v->val.numeric) ||
		 numeric_to_double(v->val.numeric) < 0 || numeric_to_double(v->val.numeric) > 1))
		invalid_argument("\"temperature\" must be a number between 0 and 1");
	if ((v = claude_json_get(&req->root, "stream")) != NULL && v->type == jbvBool &&
		v->val.boolean)
		invalid_argument("streaming is not supported: remove \"stream\" from the request");
}

/* The request with model and max_tokens from the settings where absent. */
static Jsonb *
apply_defaults(Jsonb *req)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	push_string(&state, "model", claude_default_model, strlen(claude_default_model));
	push_numeric(&state, "max_tokens", int64_to_numeric(claude_default_max_tokens));
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
											  JsonbPGetDatum(JsonbValueToJsonb(res)),
											  JsonbPGetDatum(req)));
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

Datum
claude_complete(PG_FUNCTION_ARGS)
{
	text	   *prompt;
	ClaudeCompleteArgs args;
	char	   *reply;
	Jsonb	   *cached;
	text	   *result_text;
	ClaudeResult result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	claude_require_shared();

	prompt = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(prompt) == 0)
		invalid_argument("prompt must not be empty");
	claude_complete_args(fcinfo, 1, 2, 3, 4, &args);

	claude_send(fcinfo, 5, "/v1/messages", claude_complete_body(&args, text_to_cstring(prompt)),
				args.max_tokens, &reply, &cached, &result);
	if (cached)
		PG_RETURN_TEXT_P(claude_jsonb_reply_text(cached));
	if ((result_text = claude_complete_text(reply)) == NULL)
		claude_bad_reply(&result);
	PG_RETURN_TEXT_P(result_text);
}

Datum
claude_messages(PG_FUNCTION_ARGS)
{
	Jsonb	   *req;
	char	   *reply_text;
	Jsonb	   *reply;
	ClaudeResult result;
	JsonbValue *max_tokens;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	claude_require_shared();

	req = PG_GETARG_JSONB_P(0);
	validate_messages_request(req);
	req = apply_defaults(req);
	max_tokens = claude_json_get(&req->root, "max_tokens");

	claude_send(fcinfo, 1, "/v1/messages", JsonbToCString(NULL, &req->root, VARSIZE(req)),
				(int) Min(numeric_to_double(max_tokens->val.numeric), INT_MAX),
				&reply_text, &reply, &result);
	if (reply)
		PG_RETURN_JSONB_P(reply);
	reply = claude_json_parse(reply_text, strlen(reply_text));
	if (reply == NULL || !JB_ROOT_IS_OBJECT(reply) || JB_ROOT_IS_SCALAR(reply) ||
		claude_json_get_container(&reply->root, "content", true) == NULL)
		claude_bad_reply(&result);
	PG_RETURN_JSONB_P(reply);
}
