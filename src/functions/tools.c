/*
 * tools.c
 *		Structured output (claude_extract, claude_classify), token counting,
 *		the model list and image blocks, called from SQL.
 *
 * claude_extract and claude_classify ask for an object that fits a JSON
 * Schema: through native structured output (output_config.format) where
 * the model's /v1/models entry says it takes it, else a forced strict
 * tool.  Both are sent the API's subset of the schema
 * (common/jsonschema.c), and the reply is checked against the whole of
 * it before it is returned or cached.  Their requests are printed in jsonb's canonical form
 * and go through the same path as claude_messages: cache, limits, budgets,
 * statistics.  Every argument is checked before anything is sent.
 */
#include "postgres.h"

#include <math.h>

#include <ctype.h>
#include <limits.h>

#include "catalog/pg_type_d.h"
#include "common/base64.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "client/models.h"
#include "client/request.h"
#include "client/structured.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/jsonschema.h"
#include "client/message.h"
#include "functions/complete.h"

/* claude_models() follows at most this many pages */
#define MAX_MODEL_PAGES 100

PG_FUNCTION_INFO_V1(claude_extract);
PG_FUNCTION_INFO_V1(claude_classify);
PG_FUNCTION_INFO_V1(claude_count_tokens);
PG_FUNCTION_INFO_V1(claude_models);
PG_FUNCTION_INFO_V1(claude_image);

#define IMAGE_MAX_BYTES (5 * 1024 * 1024)

/*
 * Send a structured request; the object the reply gives, checked against
 * the caller's whole schema.  A reply without one, or one that breaks the
 * schema, is an error, counted failed and never cached: the call stores
 * its reply only once it passed (cache_checked).
 */
static Jsonb *
call_structured(FunctionCallInfo fcinfo, Jsonb *schema, const char *input, bool labels)
{
	ClaudeCompleteArgs args;
	ClaudeCall	call;
	char	   *reply_text;
	Jsonb	   *value;
	const char *why;
	bool		native;

	/* arguments: input, (schema or labels), instructions, model, temperature, max_tokens */
	claude_complete_args(fcinfo, 3, 5, 2, 4, &args);
	claude_call_init(&call, CLAUDE_EP_MESSAGES, NULL);
	claude_call_set_body(&call, claude_structured_request(&args, input, schema, labels, &native));
	claude_call_cache_arg(&call, fcinfo, -1, CLAUDE_CACHE_LEAD);
	call.cache_checked = true;
	reply_text = claude_call_run(&call);
	if (call.state == CLAUDE_CALL_DEFERRED)
		return NULL;
	value = claude_structured_object(reply_text ? claude_json_parse(reply_text, strlen(reply_text)) : call.hit,
									 labels ? "classify" : "extract", native, &why);
	if (value == NULL)
	{
		claude_call_reject(&call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("%s", why),
				 errhint("With stop_reason max_tokens, raise max_tokens.")));
	}
	if ((why = claude_schema_check(schema, value)) != NULL)
	{
		claude_call_reject(&call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_SCHEMA),
				 errmsg("the reply does not fit the schema: %s", why),
				 errhint("The reply was not cached: calling again asks again.")));
	}
	claude_call_keep(&call);
	return value;
}

/*
 * claude_extract(input, schema, instructions, model, temperature,
 * max_tokens): the object, checked against the whole schema.
 */
Datum
claude_extract(PG_FUNCTION_ARGS)
{
	Jsonb	   *value;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1))
		claude_invalid_argument("schema must not be NULL");
	claude_require_shared();
	value = call_structured(fcinfo, claude_object_schema(PG_GETARG_JSONB_P(1)),
							text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	if (value == NULL)
		PG_RETURN_NULL();		/* read ahead */
	PG_RETURN_JSONB_P(value);
}

/*
 * claude_classify(input, labels, instructions, model, temperature,
 * max_tokens): exactly one of labels.
 */
Datum
claude_classify(PG_FUNCTION_ARGS)
{
	Jsonb	   *labels;
	Jsonb	   *value;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1))
		claude_invalid_argument("labels must not be NULL");
	claude_require_shared();
	labels = claude_labels_schema_array(PG_GETARG_ARRAYTYPE_P(1));

	/* the check made it one of the labels, exactly */
	value = call_structured(fcinfo, labels, text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	if (value == NULL)
		PG_RETURN_NULL();		/* read ahead */
	PG_RETURN_TEXT_P(cstring_to_text(claude_json_get_string(&value->root, "label")));
}

/* claude_count_tokens(prompt, model, system): input tokens of the message. */
Datum
claude_count_tokens(PG_FUNCTION_ARGS)
{
	ClaudeCompleteArgs args;
	ClaudeCall	call;
	char	   *reply_text;
	char	   *prompt;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	claude_require_shared();
	prompt = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (prompt[0] == '\0')
		claude_invalid_argument("prompt must not be empty");
	claude_complete_args(fcinfo, 1, -1, 2, -1, &args);

	claude_call_init(&call, CLAUDE_EP_COUNT_TOKENS, NULL);
	claude_call_set_body(&call, claude_count_tokens_request(args.model, args.system, prompt));
	claude_call_cache_arg(&call, fcinfo, -1, CLAUDE_CACHE_LEAD);
	reply_text = claude_call_run(&call);
	if (call.state == CLAUDE_CALL_DEFERRED)
		PG_RETURN_NULL();
	PG_RETURN_INT32((int32) claude_count_tokens_of(reply_text ?
												   claude_json_parse(reply_text, strlen(reply_text)) :
												   call.hit, &call.result));
}

/* Whether s holds exactly n digits. */
static bool
digits(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!isdigit((unsigned char) s[i]))
			return false;
	return true;
}

/*
 * A model's created_at: RFC 3339 (2025-02-19T08:30:00Z, or with a fraction
 * and an offset such as +02:00) and nothing else, read as timestamptz.
 * timestamptz_in alone would take "now", "infinity" and whatever DateStyle
 * reads, and fail with 22007: any other text, or a field out of range, is
 * a bad reply (ZC002).
 */
static Datum
model_created_at(const char *s, const ClaudeResult *result)
{
	const char *p = s;
	Datum		value = (Datum) 0;

	/* each test reads a byte only once those before it were no NUL */
	if (!(digits(p, 4) && p[4] == '-' && digits(p + 5, 2) && p[7] == '-' && digits(p + 8, 2) &&
		  p[10] == 'T' && digits(p + 11, 2) && p[13] == ':' && digits(p + 14, 2) &&
		  p[16] == ':' && digits(p + 17, 2)))
		claude_bad_reply(result);
	p += 19;
	if (*p == '.' && isdigit((unsigned char) p[1]))
	{
		p++;
		while (isdigit((unsigned char) *p))
			p++;
	}
	if (*p == 'Z')
		p++;
	else if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2))
		p += 6;
	else
		claude_bad_reply(result);	/* no offset */
	if (*p != '\0')
		claude_bad_reply(result);

	/* month 13, hour 25: the reply's fault */
	if (!claude_timestamptz_in(s, &value))
		claude_bad_reply(result);
	return value;
}

/* claude_models(): every model the key may use, following the pages. */
Datum
claude_models(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *after = NULL;
	bool		more = true;
	List	   *seen = NIL;		/* every last_id so far */
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();
	while (more)
	{
		ClaudeCall	call;
		char	   *reply_text;
		Jsonb	   *reply;
		JsonbContainer *data;
		JsonbValue *has_more;
		char	   *last;
		int			n;

		claude_call_init(&call, CLAUDE_EP_MODELS, NULL);
		call.path = psprintf("%s?limit=1000", call.path);
		if (after)
		{
			/* model ids are [a-z0-9.-]: nothing to escape in a query */
			for (char *p = after; *p; p++)
				if (!(isalnum((unsigned char) *p) || *p == '-' || *p == '.' || *p == '_'))
					claude_bad_reply(&call.result);
			call.path = psprintf("%s&after_id=%s", call.path, after);
		}
		reply_text = claude_call_run(&call);
		reply = claude_json_parse(reply_text, strlen(reply_text));
		if (reply == NULL || (data = claude_json_get_container(&reply->root, "data", true)) == NULL)
			claude_bad_reply(&call.result);
		n = JsonContainerSize(data);
		for (int i = 0; i < n; i++)
		{
			JsonbValue *m = getIthJsonbValueFromContainer(data, i);
			Datum		values[3];
			bool		nulls[3] = {false, false, false};
			char	   *id;
			char	   *name;
			char	   *created;

			if (m->type != jbvBinary)
				continue;
			id = claude_json_get_string(m->val.binary.data, "id");
			name = claude_json_get_string(m->val.binary.data, "display_name");
			created = claude_json_get_string(m->val.binary.data, "created_at");
			if (id == NULL)
				continue;
			values[0] = CStringGetTextDatum(id);
			values[1] = name ? CStringGetTextDatum(name) : (Datum) 0;
			nulls[1] = name == NULL;
			if (created)
				values[2] = model_created_at(created, &call.result);
			nulls[2] = created == NULL;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		has_more = claude_json_get(&reply->root, "has_more");
		last = claude_json_get_string(&reply->root, "last_id");
		/* a page that does not move on, or comes back, ends the list */
		more = has_more && has_more->type == jbvBool && has_more->val.boolean && last && n > 0;
		foreach(lc, seen)
			if (more && strcmp((char *) lfirst(lc), last) == 0)
				more = false;
		seen = lappend(seen, last);
		more = more && list_length(seen) < MAX_MODEL_PAGES;
		after = last;
	}
	return (Datum) 0;
}

/* Whether data starts like an image of media_type. */
static bool
looks_like(const char *media_type, const unsigned char *d, int len)
{
	if (strcmp(media_type, "image/png") == 0)
		return len >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0;
	if (strcmp(media_type, "image/jpeg") == 0)
		return len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
	if (strcmp(media_type, "image/gif") == 0)
		return len >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0);
	return len >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0;
}

/* claude_image(data, media_type): a base64 image block for claude_messages. */
Datum
claude_image(PG_FUNCTION_ARGS)
{
	bytea	   *data;
	char	   *media_type;
	int			len;
	int			enclen;
	char	   *b64;
	StringInfoData block;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	data = PG_GETARG_BYTEA_PP(0);
	media_type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strcmp(media_type, "image/jpeg") != 0 && strcmp(media_type, "image/png") != 0 &&
		strcmp(media_type, "image/gif") != 0 && strcmp(media_type, "image/webp") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported image media type \"%s\"", media_type),
				 errhint("Use image/jpeg, image/png, image/gif or image/webp.")));
	len = VARSIZE_ANY_EXHDR(data);
	if (len == 0)
		claude_invalid_argument("image data must not be empty");
	if (len > IMAGE_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("image of %d bytes is larger than the API accepts (5 MB)", len)));
	if (!looks_like(media_type, (unsigned char *) VARDATA_ANY(data), len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the data is not an image of type %s", media_type)));

	enclen = pg_b64_enc_len(len);
	b64 = palloc(enclen + 1);
	/* const uint8 * from 18, const char * before */
	enclen = pg_b64_encode((const void *) VARDATA_ANY(data), len, b64, enclen);
	if (enclen < 0)
		elog(ERROR, "claude_image: base64 encoding failed");
	b64[enclen] = '\0';
	initStringInfo(&block);
	appendStringInfoString(&block, "{\"type\": \"image\", \"source\": {\"type\": \"base64\", \"media_type\": ");
	escape_json(&block, media_type);
	appendStringInfo(&block, ", \"data\": \"%s\"}}", b64);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(block.data)));
}
