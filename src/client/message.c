/*
 * message.c
 *		A Messages request of one user message, and the text of a reply.
 *		Callers: the SQL functions, the pipe, the trigger, the database
 *		worker's write-backs.
 *
 * The request is built as jsonb and printed by claude_call_set_body, the
 * printer of every body, so a prompt's cache key does not depend on who
 * built it.
 */
#include "postgres.h"

#include <math.h>

#include "utils/builtins.h"

#include "utils/json.h"
#include "utils/numeric.h"

#include "client/message.h"
#include "shmem/slots.h"

#include "common/guc.h"
#include "common/json.h"
#include "common/spi.h"

void
claude_invalid_argument(const char *msg)
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
 * The input of the first tool_use block of content (a reply's "content")
 * that calls tool name, when it is an object; NULL if there is none.
 */
JsonbValue *
claude_reply_tool_input(JsonbContainer *content, const char *name)
{
	for (int i = 0; i < JsonContainerSize(content); i++)
	{
		JsonbValue *block = getIthJsonbValueFromContainer(content, i);
		char	   *type;
		char	   *tool;
		JsonbValue *input;

		if (block->type != jbvBinary)
			continue;
		type = claude_json_get_string(block->val.binary.data, "type");
		tool = claude_json_get_string(block->val.binary.data, "name");
		input = claude_json_get(block->val.binary.data, "input");
		if (type && strcmp(type, "tool_use") == 0 && tool && strcmp(tool, name) == 0 &&
			input && input->type == jbvBinary && JsonContainerIsObject(input->val.binary.data))
			return input;
	}
	return NULL;
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

/* A member key: val, pushed into an object being built. */
void
claude_jsonb_push_string(JsonbParseState **state, const char *key, const char *val)
{
	JsonbValue	v;

	claude_json_push_key(state, key);
	v.type = jbvString;
	v.val.string.val = (char *) val;
	v.val.string.len = strlen(val);
	pushJsonbValue(state, WJB_VALUE, &v);
}

void
claude_jsonb_push_numeric(JsonbParseState **state, const char *key, Numeric num)
{
	JsonbValue	v;

	claude_json_push_key(state, key);
	v.type = jbvNumeric;
	v.val.numeric = num;
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * The request of one user message: the same request, and so the same
 * cache key, as claude_messages makes of the same values.
 */
Jsonb *
claude_complete_request(const ClaudeCompleteArgs *a, const char *prompt)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	claude_jsonb_push_string(&state, "model", a->model);
	if (a->system && a->cache_system)
	{
		claude_json_push_key(&state, "system");
		pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		claude_jsonb_push_string(&state, "type", "text");
		claude_jsonb_push_string(&state, "text", a->system);
		claude_json_push_key(&state, "cache_control");
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		claude_jsonb_push_string(&state, "type", "ephemeral");
		pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	}
	else if (a->system)
		claude_jsonb_push_string(&state, "system", a->system);
	claude_json_push_key(&state, "messages");
	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	claude_jsonb_push_string(&state, "role", "user");
	claude_jsonb_push_string(&state, "content", prompt);
	pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	claude_jsonb_push_numeric(&state, "max_tokens", int64_to_numeric(a->max_tokens));
	if (a->temperature)
		claude_jsonb_push_numeric(&state, "temperature", a->temperature);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
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

/* The count_tokens request of one user message (system NULL: none). */
Jsonb *
claude_count_tokens_request(const char *model, const char *system, const char *prompt)
{
	StringInfoData req;

	initStringInfo(&req);
	appendStringInfoString(&req, "{\"model\": ");
	escape_json(&req, model);
	if (system)
	{
		appendStringInfoString(&req, ", \"system\": ");
		escape_json(&req, system);
	}
	appendStringInfoString(&req, ", \"messages\": [{\"role\": \"user\", \"content\": ");
	escape_json(&req, prompt);
	appendStringInfoString(&req, "}]}");
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(req.data)));
}

/*
 * The input_tokens of a count_tokens reply (NULL: none): a whole number
 * from 0, nothing else is believed; else it raises (ZC002).
 */
int64
claude_count_tokens_of(Jsonb *reply, const struct ClaudeResult *result)
{
	JsonbValue *count = reply ? claude_json_get(&reply->root, "input_tokens") : NULL;
	double		tokens;

	if (count == NULL || count->type != jbvNumeric)
		claude_bad_reply(result);
	tokens = strtod(DatumGetCString(DirectFunctionCall1(numeric_out,
														NumericGetDatum(count->val.numeric))), NULL);
	if (!(tokens >= 0 && tokens <= CLAUDE_MAX_TOKENS) || tokens != floor(tokens))
		claude_bad_reply(result);
	return (int64) tokens;
}
