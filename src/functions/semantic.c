/*
 * semantic.c
 *		Semantic helpers for SQL: claude_if (a condition, for WHERE),
 *		claude_summarize (an aggregate) and claude_rank (scores for ORDER BY).
 *
 * Each request forces one tool marked strict whose input is all the answer
 * is read from, and the answer is checked here (a boolean, a string, one
 * score per candidate in range): the model's word is never taken on trust.
 * Every request goes through the one lifecycle (client/request.h), so the
 * cache, budgets, limits and statistics apply as to claude_messages.
 *
 * claude_summarize keeps its inputs only up to one part (a share of the
 * model's input limit): a part that would overflow is summarized at once and
 * its summary moves up a level, so the state stays bounded whatever the
 * group's size, and the order of the inputs is kept.
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "client/message.h"
#include "client/models.h"
#include "client/request.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/secret.h"
#include "functions/complete.h"
#include "shmem/area.h"

PG_FUNCTION_INFO_V1(claude_if);
PG_FUNCTION_INFO_V1(claude_summarize_step);
PG_FUNCTION_INFO_V1(claude_summarize_final);
PG_FUNCTION_INFO_V1(claude_rank);

/* claude_rank scores at most this many candidates (one request) */
#define RANK_MAX_CANDIDATES 100

/* a reply quoted in an error is cut to this many bytes */
#define QUOTE_MAX 200

/*
 * The input limit of model, in tokens, as /v1/models/{id} gives it; when
 * that is unknown, the smallest window of the current models.
 */
static int
semantic_max_input_tokens(const char *model)
{
	ClaudeModelInfo info;

	if (claude_model_info(model, &info) && info.max_input_tokens > 0)
		return info.max_input_tokens;
	return 200000;
}

/*
 * A reply's value, printed for an error message: any key in it replaced
 * (a server could echo one), cut short.
 */
static char *
quote_value(JsonbValue *v)
{
	char	   *s;

	if (v == NULL)
		return "nothing";
	if (v->type == jbvBinary)
		s = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	else
		s = JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
	return claude_redact(s, QUOTE_MAX);
}

/*
 * One request (call) forcing the strict tool `name`, whose input is the one
 * property key (key_schema, JSON text), on the user message user; the
 * value of key in the reply's call of the tool.  *hit says whether the
 * cache answered.  The reply is cached only once its caller has checked
 * the value and kept it (claude_call_keep); refused (reject), it is not.
 */
static JsonbValue *
semantic_call(FunctionCallInfo fcinfo, const ClaudeCompleteArgs *args, const char *user,
			  const char *name, const char *description, const char *key,
			  const char *key_schema, ClaudeCall *call, bool *hit)
{
	StringInfoData req;
	char	   *reply_text;
	Jsonb	   *reply;
	JsonbContainer *content;
	JsonbValue *input;

	initStringInfo(&req);
	appendStringInfoString(&req, "{\"model\": ");
	escape_json(&req, args->model);
	appendStringInfo(&req, ", \"max_tokens\": %d, \"system\": ", args->max_tokens);
	escape_json(&req, args->system);
	appendStringInfoString(&req, ", \"messages\": [{\"role\": \"user\", \"content\": ");
	escape_json(&req, user);
	appendStringInfo(&req, "}], \"tools\": [{\"name\": \"%s\", \"description\": ", name);
	escape_json(&req, description);
	appendStringInfo(&req, ", \"strict\": true, \"input_schema\": {\"type\": \"object\", "
					 "\"properties\": {\"%s\": %s}, \"required\": [\"%s\"], "
					 "\"additionalProperties\": false}}], "
					 "\"tool_choice\": {\"type\": \"tool\", \"name\": \"%s\"}}",
					 key, key_schema, key, name);

	claude_call_init(call, CLAUDE_EP_MESSAGES, NULL);
	claude_call_set_body(call, DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
																  CStringGetDatum(req.data))));
	claude_call_cache_arg(call, fcinfo, -1, CLAUDE_CACHE_LEAD);
	call->cache_checked = true;
	reply_text = claude_call_run(call);
	if (call->state == CLAUDE_CALL_DEFERRED)
		return NULL;
	if (hit)
		*hit = reply_text == NULL;
	reply = reply_text ? claude_json_parse(reply_text, strlen(reply_text)) : call->hit;
	if (reply == NULL || !JB_ROOT_IS_OBJECT(reply) || JB_ROOT_IS_SCALAR(reply) ||
		(content = claude_json_get_container(&reply->root, "content", true)) == NULL)
	{
		claude_call_reject(call);
		claude_bad_reply(&call->result);
	}
	if ((input = claude_reply_tool_input(content, name)) == NULL)
	{
		claude_call_reject(call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the reply does not call the tool \"%s\"", name),
				 errhint("With stop_reason max_tokens, raise claude.default_max_tokens.")));
	}
	return claude_json_get(input->val.binary.data, key);
}

/* The argument argno as a string that must be neither NULL nor empty. */
static char *
required_text(FunctionCallInfo fcinfo, int argno, const char *what)
{
	char	   *s;

	if (PG_ARGISNULL(argno) ||
		(s = text_to_cstring(PG_GETARG_TEXT_PP(argno)))[0] == '\0')
		claude_invalid_argument(psprintf("%s must not be NULL or empty", what));
	return s;
}

/* claude_if(input, condition, model): whether condition is true of input. */
Datum
claude_if(PG_FUNCTION_ARGS)
{
	ClaudeCompleteArgs args;
	char	   *condition;
	StringInfoData user;
	JsonbValue *answer;
	ClaudeCall	call;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	condition = required_text(fcinfo, 1, "condition");
	claude_require_shared();
	claude_complete_args(fcinfo, 2, -1, -1, -1, &args);
	args.system = "Decide whether the condition is true of the text, both in the user's "
		"message. Record the answer with the tool.";
	initStringInfo(&user);
	appendStringInfo(&user, "<condition>\n%s\n</condition>\n<text>\n%s\n</text>",
					 condition, text_to_cstring(PG_GETARG_TEXT_PP(0)));
	answer = semantic_call(fcinfo, &args, user.data, "record_answer",
						   "Record whether the condition is true of the text.", "result",
						   "{\"type\": \"boolean\", \"description\": "
						   "\"true if the condition holds for the text\"}", &call, NULL);
	if (call.state == CLAUDE_CALL_DEFERRED)
		PG_RETURN_NULL();
	if (answer == NULL || answer->type != jbvBool)
	{
		claude_call_reject(&call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the reply's answer is not a boolean: %s", quote_value(answer))));
	}
	claude_call_keep(&call);
	PG_RETURN_BOOL(answer->val.boolean);
}

/* One level of claude_summarize's state: texts in order, and their size. */
typedef struct SumLevel
{
	List	   *texts;
	Size		bytes;
} SumLevel;

typedef struct SumState
{
	MemoryContext cxt;			/* the aggregate's: holds all of this */
	char	   *instructions;	/* NULL: none */
	Size		part;			/* bytes of texts one request takes */
	List	   *levels;			/* SumLevel *: level n + 1 holds summaries of
								 * inputs older than all of level n's */
	int64		inputs;
	int			requests;
	int			hits;
} SumState;

/* Refuse claude_summarize as a window function. */
static void
summarize_not_window(FunctionCallInfo fcinfo, MemoryContext *cxt)
{
	int			kind = AggCheckCallContext(fcinfo, cxt);

	if (kind == AGG_CONTEXT_WINDOW)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("claude_summarize cannot be used as a window function"),
				 errdetail("Each frame would cost its own requests."),
				 errhint("Summarize in a subquery with GROUP BY and join its result.")));
	if (kind == 0)
		elog(ERROR, "claude_summarize called in non-aggregate context");
}

/*
 * One request: the summary of texts, in the current memory context; of a
 * part (not the last request) it must be short enough to be summarized again.
 */
static char *
summarize_texts(FunctionCallInfo fcinfo, SumState *st, List *texts, bool part)
{
	ClaudeCompleteArgs args;
	StringInfoData user;
	ListCell   *lc;
	JsonbValue *summary;
	ClaudeCall	call;
	bool		hit;
	char	   *s;

	claude_complete_args(fcinfo, -1, -1, -1, -1, &args);
	args.system = "Summarize the texts in the user's message, which come in order; "
		"some may be summaries of earlier texts. Record the summary with the tool.";
	if (st->instructions)
		args.system = psprintf("%s\n\n%s", args.system, st->instructions);
	initStringInfo(&user);
	foreach(lc, texts)
		appendStringInfo(&user, "<text>\n%s\n</text>\n", (char *) lfirst(lc));
	summary = semantic_call(fcinfo, &args, user.data, "record_summary",
							"Record the summary of the texts.", "summary",
							"{\"type\": \"string\"}", &call, &hit);
	st->requests++;
	st->hits += hit;
	if (summary == NULL || summary->type != jbvString)
	{
		claude_call_reject(&call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the reply's summary is not a string: %s", quote_value(summary))));
	}
	s = pnstrdup(summary->val.string.val, summary->val.string.len);
	/*
	 * Summaries of at most a quarter part keep a level's flush to 4 or more
	 * of them, so levels grow as log4 of the inputs.
	 */
	if (part && strlen(s) > st->part / 4)
	{
		claude_call_reject(&call);
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a summary of %zu bytes is longer than a quarter of a part of %zu bytes",
						strlen(s), st->part),
				 errhint("Lower claude.default_max_tokens.")));
	}
	claude_call_keep(&call);
	return s;
}

static void sum_add(FunctionCallInfo fcinfo, SumState *st, int level,
					const char *text, Size len);

/* Summarize level's texts into one text of the level above. */
static void
sum_flush(FunctionCallInfo fcinfo, SumState *st, int level)
{
	SumLevel   *l = list_nth(st->levels, level);
	List	   *texts = l->texts;
	char	   *up;

	l->texts = NIL;
	l->bytes = 0;
	up = summarize_texts(fcinfo, st, texts, true);
	list_free_deep(texts);
	sum_add(fcinfo, st, level + 1, up, strlen(up));
}

/* Add text (len bytes, no longer than a part) to level. */
static void
sum_add(FunctionCallInfo fcinfo, SumState *st, int level, const char *text, Size len)
{
	SumLevel   *l;
	MemoryContext old;

	if (level == list_length(st->levels))
	{
		old = MemoryContextSwitchTo(st->cxt);
		st->levels = lappend(st->levels, palloc0(sizeof(SumLevel)));
		MemoryContextSwitchTo(old);
	}
	l = list_nth(st->levels, level);
	if (l->texts != NIL && l->bytes + len > st->part)
		sum_flush(fcinfo, st, level);
	old = MemoryContextSwitchTo(st->cxt);
	l->texts = lappend(l->texts, pnstrdup(text, len));
	MemoryContextSwitchTo(old);
	l->bytes += len;
}

/*
 * claude_summarize_step(state, input [, instructions]): keep input, first
 * summarizing what is kept if input would not fit in the same request.
 */
Datum
claude_summarize_step(PG_FUNCTION_ARGS)
{
	SumState   *st = PG_ARGISNULL(0) ? NULL : (SumState *) PG_GETARG_POINTER(0);
	MemoryContext cxt;
	char	   *instructions = NULL;
	text	   *input;
	const char *p;
	Size		len;

	summarize_not_window(fcinfo, &cxt);
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
		instructions = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (PG_ARGISNULL(1))
	{
		if (st == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(st);
	}
	if (st == NULL)
	{
		Size		tokens;
		Size		ilen = instructions ? strlen(instructions) : 0;

		claude_require_shared();
		st = MemoryContextAllocZero(cxt, sizeof(SumState));
		st->cxt = cxt;
		st->instructions = instructions ? MemoryContextStrdup(cxt, instructions) : NULL;
		/*
		 * A token is 2 bytes or more of text: half the input limit in bytes
		 * leaves room for the prompt and the wrapping of each text.
		 */
		tokens = claude_summarize_part_tokens > 0 ? claude_summarize_part_tokens :
			semantic_max_input_tokens(claude_default_model) / 2;
		if (ilen >= tokens)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("instructions of %zu bytes leave no room for the texts of a request", ilen)));
		st->part = tokens * 2 - ilen;
	}
	else if ((instructions == NULL) != (st->instructions == NULL) ||
			 (instructions && strcmp(instructions, st->instructions) != 0))
		claude_invalid_argument("instructions must be the same for every row of a group");

	input = PG_GETARG_TEXT_PP(1);
	p = VARDATA_ANY(input);
	len = VARSIZE_ANY_EXHDR(input);
	st->inputs++;
	/* a text longer than a part goes in pieces cut between characters */
	while (len > st->part)
	{
		Size		cut = pg_mbcliplen(p, len, st->part);

		sum_add(fcinfo, st, 0, p, cut);
		p += cut;
		len -= cut;
	}
	sum_add(fcinfo, st, 0, p, len);
	PG_RETURN_POINTER(st);
}

/*
 * claude_summarize_final(state): the summary of everything kept, oldest
 * level first; parts first while it does not fit in one request.  The state
 * is not changed: a final function may be called on it again.
 */
Datum
claude_summarize_final(PG_FUNCTION_ARGS)
{
	SumState   *st;
	List	   *texts = NIL;
	Size		total = 0;
	char	   *summary;

	summarize_not_window(fcinfo, NULL);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (SumState *) PG_GETARG_POINTER(0);
	for (int i = list_length(st->levels) - 1; i >= 0; i--)
	{
		SumLevel   *l = list_nth(st->levels, i);

		texts = list_concat(texts, l->texts);
		total += l->bytes;
	}
	while (total > st->part)
	{
		List	   *next = NIL;
		List	   *part = NIL;
		Size		bytes = 0;
		Size		next_total = 0;
		ListCell   *lc;

		foreach(lc, texts)
		{
			char	   *t = lfirst(lc);

			if (part != NIL && bytes + strlen(t) > st->part)
			{
				next = lappend(next, summarize_texts(fcinfo, st, part, true));
				next_total += strlen(llast(next));
				part = NIL;
				bytes = 0;
			}
			part = lappend(part, t);
			bytes += strlen(t);
		}
		next = lappend(next, summarize_texts(fcinfo, st, part, true));
		next_total += strlen(llast(next));
		if (next_total >= total)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("the summaries of the parts are no shorter than the parts"),
					 errhint("Lower claude.default_max_tokens.")));
		texts = next;
		total = next_total;
	}
	summary = summarize_texts(fcinfo, st, texts, false);
	ereport(DEBUG1,
			(errmsg_internal("claude_summarize: %d requests (%d from the cache) for " INT64_FORMAT " inputs",
							 st->requests, st->hits, st->inputs)));
	PG_RETURN_TEXT_P(cstring_to_text(summary));
}

/* A reply's score for candidate ord: a number from 0 to 1. */
static double
rank_score(JsonbValue *v, int ord, ClaudeCall *call)
{
	double		score = -1;

	if (v->type == jbvNumeric)
		score = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
												   NumericGetDatum(v->val.numeric)));
	if (!(score >= 0 && score <= 1))
	{
		claude_call_reject(call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the reply's score for candidate %d is %s, not a number from 0 to 1",
						ord, quote_value(v))));
	}
	return score;
}

/*
 * claude_rank(query, candidates): (ord, score) of each candidate that is not
 * NULL, ord its 1-based position, score from 0 (unrelated) to 1.  A NULL
 * query or candidates: no rows, like a NULL input elsewhere.
 */
Datum
claude_rank(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *query;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int		   *ords;
	int			sent = 0;
	ClaudeCompleteArgs args;
	StringInfoData user;
	JsonbValue *scores;
	ClaudeCall	call;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return (Datum) 0;
	query = required_text(fcinfo, 0, "query");
	arr = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(arr) > 1)
		claude_invalid_argument("candidates must be a one-dimensional array");
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	ords = palloc(sizeof(int) * (n + 1));
	initStringInfo(&user);
	appendStringInfo(&user, "<query>\n%s\n</query>\n", query);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			continue;
		if (sent == RANK_MAX_CANDIDATES)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("claude_rank scores at most %d candidates in one call", RANK_MAX_CANDIDATES),
					 errhint("Narrow the candidates first, for instance with a full-text or vector search.")));
		ords[sent++] = i + 1;
		appendStringInfo(&user, "<candidate>\n%s\n</candidate>\n", TextDatumGetCString(elems[i]));
	}
	if (sent == 0)
		return (Datum) 0;
	claude_require_shared();
	claude_complete_args(fcinfo, -1, -1, -1, -1, &args);
	args.system = psprintf("Score how relevant each of the %d candidates in the user's message is "
						   "to the query, from 0 (unrelated) to 1 (exactly what it asks for). "
						   "Record the scores with the tool: one for each candidate, in order.", sent);
	scores = semantic_call(fcinfo, &args, user.data, "record_scores",
						   "Record one relevance score from 0 to 1 for each candidate, in order.",
						   "scores", "{\"type\": \"array\", \"items\": {\"type\": \"number\"}}",
						   &call, NULL);
	if (scores == NULL || scores->type != jbvBinary || !JsonContainerIsArray(scores->val.binary.data) ||
		JsonContainerSize(scores->val.binary.data) != sent)
	{
		claude_call_reject(&call);
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the reply's scores are not an array of %d numbers: %s", sent, quote_value(scores))));
	}
	for (int i = 0; i < sent; i++)
	{
		Datum		values[2];
		bool		isnull[2] = {false, false};

		values[0] = Int32GetDatum(ords[i]);
		values[1] = Float8GetDatum(rank_score(getIthJsonbValueFromContainer(scores->val.binary.data, i),
											  ords[i], &call));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	claude_call_keep(&call);
	return (Datum) 0;
}
