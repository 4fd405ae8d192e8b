/*
 * structured.c
 *		Requests for an object that fits a JSON Schema, and the object a
 *		reply gives, checked against the caller's whole schema.  Callers:
 *		claude_extract and claude_classify (functions/tools.c),
 *		claude_enrich and its trigger (functions/), the pipe that sends
 *		bulk work (pipe.c).
 *
 * The request asks through native structured output (output_config.format)
 * where the model's /v1/models entry says it takes it, else through a
 * forced tool marked strict; either way it is sent the API's subset of
 * the schema (common/jsonschema.c).  A labels request is claude_classify's:
 * {label: {type: string, enum: labels}}, so that one bulk row and one
 * claude_classify call of the same prompt share their cache key.
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "client/models.h"
#include "client/structured.h"
#include "common/json.h"
#include "common/jsonschema.h"

#define EXTRACT_TOOL	"extract"
#define EXTRACT_DESC	"Record the data requested, taken from the user's message."
#define CLASSIFY_TOOL	"classify"
#define CLASSIFY_DESC	"Record the one label that fits the user's message best."

static Jsonb *
parse(const char *json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/*
 * The caller's schema as an object's: a JSON object describing an object,
 * "type": "object" added where it says no type.  22023 otherwise.
 */
Jsonb *
claude_object_schema(Jsonb *schema)
{
	char	   *type;

	if (!JB_ROOT_IS_OBJECT(schema) || JB_ROOT_IS_SCALAR(schema))
		claude_invalid_argument("schema must be a JSON Schema object, such as {\"type\": \"object\", \"properties\": {...}}");
	type = claude_json_get_string(&schema->root, "type");
	if (claude_json_get(&schema->root, "type") != NULL && (type == NULL || strcmp(type, "object") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema must describe an object (\"type\": \"object\")"),
				 errhint("Wrap other values in an object property.")));
	if (type == NULL)
		schema = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
													JsonbPGetDatum(parse("{\"type\": \"object\"}")),
													JsonbPGetDatum(schema)));
	/* unreadable for the API: refused now, before any row is sent */
	(void) claude_schema_for_api(schema);
	return schema;
}

/* {label: one of labels}: distinct, non-empty labels, at least one; 22023 otherwise. */
Jsonb *
claude_labels_schema(char **labels, int n)
{
	StringInfoData schema;

	if (n == 0)
		claude_invalid_argument("labels must not be empty");
	initStringInfo(&schema);
	appendStringInfoString(&schema, "{\"type\": \"object\", \"required\": [\"label\"], "
						   "\"properties\": {\"label\": {\"type\": \"string\", \"enum\": [");
	for (int i = 0; i < n; i++)
	{
		if (labels[i] == NULL || labels[i][0] == '\0')
			claude_invalid_argument("labels must not contain NULL or empty strings");
		for (int j = 0; j < i; j++)
			if (strcmp(labels[i], labels[j]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("labels must be distinct: \"%s\" appears twice", labels[i])));
		if (i > 0)
			appendStringInfoString(&schema, ", ");
		escape_json(&schema, labels[i]);
	}
	appendStringInfoString(&schema, "]}}}");
	return parse(schema.data);
}

/* The same from a text[] (claude_classify's and claude_enrich's labels). */
Jsonb *
claude_labels_schema_array(ArrayType *labels)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **l;
	int			n;

	if (ARR_NDIM(labels) > 1)
		claude_invalid_argument("labels must be a one-dimensional array");
	deconstruct_array(labels, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	l = palloc(Max(n, 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
		l[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	return claude_labels_schema(l, n);
}

/* The same from a JSON array of strings (a trigger's 'labels=[...]'). */
Jsonb *
claude_labels_schema_json(Jsonb *labels)
{
	char	  **l;
	int			n;

	if (!JB_ROOT_IS_ARRAY(labels) || JB_ROOT_IS_SCALAR(labels))
		claude_invalid_argument("labels must be a JSON array of strings, such as [\"a\", \"b\"]");
	n = JsonContainerSize(&labels->root);
	l = palloc(Max(n, 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&labels->root, i);

		if (v->type != jbvString)
			claude_invalid_argument("labels must be a JSON array of strings, such as [\"a\", \"b\"]");
		l[i] = pnstrdup(v->val.string.val, v->val.string.len);
	}
	return claude_labels_schema(l, n);
}

/*
 * The request for an object that fits schema (a labels schema when
 * labels) drawn from input, as claude_extract (claude_classify) sends it:
 * output_config.format where the model takes structured output (*native),
 * else a forced strict tool.  a->system is sent as plain text.
 */
Jsonb *
claude_structured_request(const ClaudeCompleteArgs *a, const char *input,
						  Jsonb *schema, bool labels, bool *native)
{
	ClaudeModelInfo info;
	StringInfoData req;
	Jsonb	   *api_schema = claude_schema_for_api(schema);
	char	   *api = JsonbToCString(NULL, &api_schema->root, VARSIZE(api_schema));
	const char *name = labels ? CLASSIFY_TOOL : EXTRACT_TOOL;

	*native = claude_model_info(a->model, &info) && info.structured_outputs;
	initStringInfo(&req);
	appendStringInfoString(&req, "{\"model\": ");
	escape_json(&req, a->model);
	appendStringInfo(&req, ", \"max_tokens\": %d", a->max_tokens);
	if (a->system)
	{
		appendStringInfoString(&req, ", \"system\": ");
		escape_json(&req, a->system);
	}
	if (a->temperature)
		appendStringInfo(&req, ", \"temperature\": %s",
						 DatumGetCString(DirectFunctionCall1(numeric_out,
															 NumericGetDatum(a->temperature))));
	appendStringInfoString(&req, ", \"messages\": [{\"role\": \"user\", \"content\": ");
	escape_json(&req, input);
	appendStringInfoString(&req, "}]");
	if (*native)
		appendStringInfo(&req, ", \"output_config\": {\"format\": {\"type\": \"json_schema\", \"schema\": %s}}}",
						 api);
	else
	{
		appendStringInfo(&req, ", \"tools\": [{\"name\": \"%s\", \"strict\": true, \"description\": ", name);
		escape_json(&req, labels ? CLASSIFY_DESC : EXTRACT_DESC);
		appendStringInfo(&req, ", \"input_schema\": %s}], \"tool_choice\": {\"type\": \"tool\", \"name\": \"%s\"}}",
						 api, name);
	}
	return parse(req.data);
}

/*
 * The object a reply gives: the tool's input, or the JSON of its text with
 * native structured output.  NULL with *why set when there is none.
 */
Jsonb *
claude_structured_object(Jsonb *reply, const char *name, bool native, const char **why)
{
	JsonbContainer *content;
	char	   *stop_reason;

	*why = "the reply is not a Message";
	if (reply == NULL || !JB_ROOT_IS_OBJECT(reply) || JB_ROOT_IS_SCALAR(reply) ||
		(content = claude_json_get_container(&reply->root, "content", true)) == NULL)
		return NULL;
	if (!native)
	{
		JsonbValue *input = claude_reply_tool_input(content, name);

		if (input != NULL)
			return JsonbValueToJsonb(input);
	}
	for (int i = 0; native && i < JsonContainerSize(content); i++)
	{
		JsonbValue *block = getIthJsonbValueFromContainer(content, i);
		char	   *type;
		char	   *text;
		char	   *utf8;
		Jsonb	   *value;

		if (block->type != jbvBinary)
			continue;
		type = claude_json_get_string(block->val.binary.data, "type");
		if (type == NULL || strcmp(type, "text") != 0)
			continue;
		text = claude_json_get_string(block->val.binary.data, "text");
		utf8 = text ? pg_server_to_any(text, strlen(text), PG_UTF8) : NULL;
		value = utf8 ? claude_json_parse(utf8, strlen(utf8)) : NULL;
		*why = "the reply's text is not a JSON object";
		if (value == NULL || JB_ROOT_IS_SCALAR(value) || !JB_ROOT_IS_OBJECT(value))
			return NULL;
		return value;
	}
	stop_reason = claude_json_get_string(&reply->root, "stop_reason");
	*why = psprintf(native ? "the reply has no text block (stop_reason: %s)" :
					"the reply does not call the tool \"%s\" (stop_reason: %s)",
					native ? (stop_reason ? stop_reason : "none") : name,
					stop_reason ? stop_reason : "none");
	return NULL;
}

/*
 * For bulk work: the value a reply to request gives, checked (*value: the
 * field's text, or the object's JSON), and NULL; or why the reply is
 * refused: *broken when it gave an object that breaks the schema ("the
 * reply does not fit the schema: $.path: what"), else it gave none (broken
 * may be NULL).  Whether the request was native, and its tool, are read from the request.
 */
char *
claude_structured_value(Jsonb *request, const ClaudeReplyCheck *check, Jsonb *reply,
						text **value, bool *broken)
{
	bool		native = claude_json_get(&request->root, "output_config") != NULL;
	JsonbContainer *choice = claude_json_get_container(&request->root, "tool_choice", false);
	char	   *name = choice ? claude_json_get_string(choice, "name") : NULL;
	const char *why;
	char	   *bad;
	Jsonb	   *object = claude_structured_object(reply, name ? name : EXTRACT_TOOL, native, &why);

	*value = NULL;
	if (broken)
		*broken = object != NULL;
	if (object == NULL)
		return pstrdup(why);
	if ((bad = claude_schema_check(check->schema, object)) != NULL)
		return psprintf("the reply does not fit the schema: %s", bad);
	if (check->field)
	{
		char	   *s = claude_json_get_string(&object->root, check->field);

		if (s == NULL)
			return psprintf("the reply does not fit the schema: $.%s: missing", check->field);
		*value = cstring_to_text(s);
	}
	else
		*value = cstring_to_text(JsonbToCString(NULL, &object->root, VARSIZE(object)));
	if (broken)
		*broken = false;
	return NULL;
}

/*
 * What a reply must be, as a trigger's job and a Message Batch keep it:
 * {"schema": {...}} or {"schema": {...}, "field": "label"}; NULL for none.
 */
Jsonb *
claude_reply_check_json(const ClaudeReplyCheck *check)
{
	JsonbParseState *st = NULL;
	JsonbValue	v;

	if (check->schema == NULL)
		return NULL;
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	claude_json_push_key(&st, "schema");
	v.type = jbvBinary;
	v.val.binary.data = &check->schema->root;
	v.val.binary.len = VARSIZE(check->schema) - VARHDRSZ;
	pushJsonbValue(&st, WJB_VALUE, &v);
	if (check->field)
		claude_jsonb_push_string(&st, "field", check->field);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* The same read back, in the current memory context; schema NULL for none. */
void
claude_reply_check_read(Jsonb *json, ClaudeReplyCheck *check)
{
	JsonbValue *schema = json ? claude_json_get(&json->root, "schema") : NULL;
	char	   *field = json ? claude_json_get_string(&json->root, "field") : NULL;

	check->schema = NULL;
	check->field = NULL;
	if (schema == NULL || schema->type != jbvBinary)
		return;
	check->schema = JsonbValueToJsonb(schema);
	/* the one field there is */
	check->field = field && strcmp(field, "label") == 0 ? "label" : NULL;
}
