/*
 * complete.c
 *		claude_complete and claude_messages, called from SQL.
 *
 * Requests are built as jsonb and printed by PostgreSQL's own JSON output,
 * so every string is escaped correctly.  Arguments are checked before any
 * request is queued: nothing is spent on a call that cannot succeed.
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "utils/builtins.h"

#include "client/call.h"

#include "common/guc.h"
#include "common/json.h"

#include "client/message.h"
#include "functions/complete.h"

PG_FUNCTION_INFO_V1(claude_complete);
PG_FUNCTION_INFO_V1(claude_messages);

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
	if ((v = claude_json_get(&req->root, "stream")) != NULL && v->type != jbvBool)
		invalid_argument("\"stream\" must be a boolean");
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
	push_string(&state, "model", claude_default_model, strlen(claude_default_model));
	push_numeric(&state, "max_tokens", int64_to_numeric(claude_default_max_tokens));
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	req = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
											 JsonbPGetDatum(JsonbValueToJsonb(res)),
											 JsonbPGetDatum(req)));
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(req),
											  CStringGetTextDatum("stream")));
}

/*
 * A claude_messages request checked and completed, as the body to send;
 * *max_tokens its max_tokens.
 */
char *
claude_messages_body(Jsonb *req, int *max_tokens)
{
	JsonbValue *v;

	validate_messages_request(req);
	req = apply_defaults(req);
	v = claude_json_get(&req->root, "max_tokens");
	*max_tokens = (int) Min(numeric_to_double(v->val.numeric), INT_MAX);
	return JsonbToCString(NULL, &req->root, VARSIZE(req));
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
	char	   *body;
	char	   *reply_text;
	Jsonb	   *reply;
	ClaudeResult result;
	int			max_tokens;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	claude_require_shared();

	body = claude_messages_body(PG_GETARG_JSONB_P(0), &max_tokens);
	claude_send(fcinfo, 1, "/v1/messages", body, max_tokens, &reply_text, &reply, &result);
	if (reply)
		PG_RETURN_JSONB_P(reply);
	reply = claude_json_parse(reply_text, strlen(reply_text));
	if (reply == NULL || !JB_ROOT_IS_OBJECT(reply) || JB_ROOT_IS_SCALAR(reply) ||
		claude_json_get_container(&reply->root, "content", true) == NULL)
		claude_bad_reply(&result);
	PG_RETURN_JSONB_P(reply);
}
