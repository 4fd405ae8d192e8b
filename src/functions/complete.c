/*
 * complete.c
 *		claude_complete and claude_messages, called from SQL; and the SQL
 *		arguments the calls share, turned into a request.
 *
 * Requests are built as jsonb and printed by PostgreSQL's own JSON output
 * (claude_call_set_body), so every string is escaped correctly.  Arguments
 * are checked before any request is queued: nothing is spent on a call
 * that cannot succeed.
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "utils/builtins.h"

#include "client/request.h"

#include "common/guc.h"
#include "common/json.h"
#include "common/spi.h"

#include "client/message.h"
#include "functions/complete.h"

PG_FUNCTION_INFO_V1(claude_complete);
PG_FUNCTION_INFO_V1(claude_messages);

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
		claude_invalid_argument("request must be a JSON object");

	messages = claude_json_get_container(&req->root, "messages", true);
	if (messages == NULL || (n = JsonContainerSize(messages)) == 0)
		claude_invalid_argument("request must have a non-empty \"messages\" array");

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
		claude_invalid_argument("\"model\" must be a non-empty string");
	if ((v = claude_json_get(&req->root, "max_tokens")) != NULL &&
		(v->type != jbvNumeric || !numeric_is_integer(v->val.numeric) ||
		 numeric_to_double(v->val.numeric) < 1))
		claude_invalid_argument("\"max_tokens\" must be an integer of at least 1");
	if ((v = claude_json_get(&req->root, "temperature")) != NULL &&
		(v->type != jbvNumeric || numeric_is_nan(v->val.numeric) ||
		 numeric_to_double(v->val.numeric) < 0 || numeric_to_double(v->val.numeric) > 1))
		claude_invalid_argument("\"temperature\" must be a number between 0 and 1");
	if ((v = claude_json_get(&req->root, "stream")) != NULL && v->type != jbvBool)
		claude_invalid_argument("\"stream\" must be a boolean");
}

/*
 * The request with model and max_tokens from the settings where absent,
 * and without "stream": whether a request streams is the extension's
 * choice (claude.stream_min_tokens, claude_messages_stream), and it is no
 * part of the cache key.
 */
static Jsonb *
apply_defaults(Jsonb *req)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	claude_jsonb_push_string(&state, "model", claude_default_model);
	claude_jsonb_push_numeric(&state, "max_tokens", int64_to_numeric(claude_default_max_tokens));
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	req = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
											 JsonbPGetDatum(JsonbValueToJsonb(res)),
											 JsonbPGetDatum(req)));
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(req),
											  CStringGetTextDatum("stream")));
}

/* A claude_messages request checked and completed: the request to send. */
Jsonb *
claude_messages_request(Jsonb *req)
{
	validate_messages_request(req);
	return apply_defaults(req);
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
			claude_invalid_argument("model must not be empty (use NULL for claude.default_model)");
	}
	if (max_tokens_arg >= 0 && !PG_ARGISNULL(max_tokens_arg))
	{
		a->max_tokens = PG_GETARG_INT32(max_tokens_arg);
		if (a->max_tokens < 1)
			claude_invalid_argument("max_tokens must be at least 1");
	}
	if (system_arg >= 0 && !PG_ARGISNULL(system_arg))
	{
		a->system = text_to_cstring(PG_GETARG_TEXT_PP(system_arg));
		if (a->system[0] == '\0')
			claude_invalid_argument("system must not be empty (use NULL for none)");
	}
	if (temperature_arg >= 0 && !PG_ARGISNULL(temperature_arg))
	{
		double		temperature = PG_GETARG_FLOAT8(temperature_arg);

		if (isnan(temperature) || temperature < 0 || temperature > 1)
			claude_invalid_argument("temperature must be between 0 and 1");
		a->temperature = DatumGetNumeric(DirectFunctionCall1(float8_numeric,
															 Float8GetDatum(temperature)));
	}
}

/*
 * The cache of a call made from SQL: its cache argument (cache_argno < 0:
 * none), else claude.cache; policy says how a miss goes when it is on.
 */
void
claude_call_cache_arg(ClaudeCall *c, FunctionCallInfo fcinfo, int cache_argno,
					  ClaudeCachePolicy policy)
{
	bool		on = claude_cache_enabled;

	if (cache_argno >= 0 && PG_NARGS() > cache_argno && !PG_ARGISNULL(cache_argno))
		on = PG_GETARG_BOOL(cache_argno);
	c->cache = on ? policy : CLAUDE_CACHE_OFF;
	c->cache_nsp = claude_extension_schema(fcinfo);
}

Datum
claude_complete(PG_FUNCTION_ARGS)
{
	text	   *prompt;
	ClaudeCompleteArgs args;
	ClaudeCall call;
	text	   *result_text;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	claude_require_shared();

	prompt = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(prompt) == 0)
		claude_invalid_argument("prompt must not be empty");
	claude_complete_args(fcinfo, 1, 2, 3, 4, &args);

	claude_call_init(&call, CLAUDE_EP_MESSAGES, NULL);
	claude_call_set_body(&call, claude_complete_request(&args, text_to_cstring(prompt)));
	claude_call_cache_arg(&call, fcinfo, 5, CLAUDE_CACHE_LEAD);
	if (claude_call_run(&call) == NULL)
	{
		if (call.state == CLAUDE_CALL_DEFERRED)
			PG_RETURN_NULL();
		PG_RETURN_TEXT_P(claude_jsonb_reply_text(call.hit));
	}
	if ((result_text = claude_complete_text(call.reply)) == NULL)
		claude_bad_reply(&call.result);
	PG_RETURN_TEXT_P(result_text);
}

Datum
claude_messages(PG_FUNCTION_ARGS)
{
	ClaudeCall call;
	char	   *reply_text;
	Jsonb	   *reply;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	claude_require_shared();

	claude_call_init(&call, CLAUDE_EP_MESSAGES, NULL);
	claude_call_set_body(&call, claude_messages_request(PG_GETARG_JSONB_P(0)));
	claude_call_cache_arg(&call, fcinfo, 1, CLAUDE_CACHE_LEAD);
	if ((reply_text = claude_call_run(&call)) == NULL)
	{
		if (call.state == CLAUDE_CALL_DEFERRED)
			PG_RETURN_NULL();
		PG_RETURN_JSONB_P(call.hit);
	}
	reply = claude_json_parse(reply_text, strlen(reply_text));
	if (reply == NULL || !JB_ROOT_IS_OBJECT(reply) || JB_ROOT_IS_SCALAR(reply) ||
		claude_json_get_container(&reply->root, "content", true) == NULL)
		claude_bad_reply(&call.result);
	PG_RETURN_JSONB_P(reply);
}
