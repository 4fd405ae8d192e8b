/*
 * json.c
 *		Parsing replies without throwing, and reading fields of them.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "json.h"

static JsonLexContext *
make_lexer(const char *json, Size len, int encoding, bool need_escapes)
{
#if PG_VERSION_NUM >= 160000
	return makeJsonLexContextCstringLen(NULL, (char *) json, len, encoding,
										need_escapes);
#else
	return makeJsonLexContextCstringLen((char *) json, len, encoding,
										need_escapes);
#endif
}

/* The parsed text as jsonb, or NULL if it is not valid JSON. */
Jsonb *
claude_json_parse(const char *text, Size len)
{
	JsonLexContext *lex = make_lexer(text, len, GetDatabaseEncoding(), false);

	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(pnstrdup(text, len))));
}

JsonbValue *
claude_json_get(JsonbContainer *obj, const char *key)
{
	if (obj == NULL || !JsonContainerIsObject(obj))
		return NULL;
	return getKeyJsonValueFromContainer(obj, key, strlen(key), NULL);
}

char *
claude_json_get_string(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = claude_json_get(obj, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

JsonbContainer *
claude_json_get_container(JsonbContainer *obj, const char *key, bool array)
{
	JsonbValue *v = claude_json_get(obj, key);
	JsonbContainer *c;

	if (v == NULL || v->type != jbvBinary)
		return NULL;
	c = v->val.binary.data;
	if (array ? !JsonContainerIsArray(c) : !JsonContainerIsObject(c))
		return NULL;
	return c;
}

/*
 * Reading the text of a Messages reply in one pass of the JSON parser,
 * without building jsonb: claude_complete's hot path.
 */
#if PG_VERSION_NUM >= 160000
#define SEM_RETURN JsonParseErrorType
#define SEM_OK return JSON_SUCCESS
#else
#define SEM_RETURN void
#define SEM_OK return
#endif

typedef struct ReplyTextState
{
	int			depth;			/* objects and arrays open */
	bool		root_content;	/* the root field being read is "content" */
	int			content_depth;	/* depth of the content array, 0 if outside */
	const char *block_field;	/* field being read in a content block */
	bool		block_is_text;
	char	   *block_text;
	StringInfo	out;
	bool		found;
} ReplyTextState;

#define IN_BLOCK(st) ((st)->content_depth > 0 && (st)->depth == (st)->content_depth + 1)

static SEM_RETURN
rt_object_start(void *state)
{
	ReplyTextState *st = state;

	st->depth++;
	if (IN_BLOCK(st))
	{
		st->block_is_text = false;
		st->block_text = NULL;
		st->block_field = NULL;
	}
	SEM_OK;
}

static SEM_RETURN
rt_object_end(void *state)
{
	ReplyTextState *st = state;

	if (IN_BLOCK(st) && st->block_is_text && st->block_text)
		appendStringInfoString(st->out, st->block_text);
	st->depth--;
	SEM_OK;
}

static SEM_RETURN
rt_array_start(void *state)
{
	ReplyTextState *st = state;

	st->depth++;
	if (st->depth == 2 && st->root_content && st->content_depth == 0)
	{
		st->content_depth = st->depth;
		st->found = true;
	}
	SEM_OK;
}

static SEM_RETURN
rt_array_end(void *state)
{
	ReplyTextState *st = state;

	if (st->depth == st->content_depth)
		st->content_depth = 0;
	st->depth--;
	SEM_OK;
}

static SEM_RETURN
rt_field_start(void *state, char *fname, bool isnull)
{
	ReplyTextState *st = state;

	if (st->depth == 1)
		st->root_content = (strcmp(fname, "content") == 0);
	else if (IN_BLOCK(st))
		st->block_field = fname;
	SEM_OK;
}

static SEM_RETURN
rt_scalar(void *state, char *token, JsonTokenType tokentype)
{
	ReplyTextState *st = state;

	if (!IN_BLOCK(st) || st->block_field == NULL || tokentype != JSON_TOKEN_STRING)
		SEM_OK;
	if (strcmp(st->block_field, "type") == 0)
		st->block_is_text = (strcmp(token, "text") == 0);
	else if (strcmp(st->block_field, "text") == 0)
		st->block_text = token;
	SEM_OK;
}

/*
 * Append the concatenated text blocks of a Messages reply to out.  Returns
 * false if the reply is not valid JSON or has no top-level content array.
 */
bool
claude_reply_text(const char *json, Size len, StringInfo out)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	ReplyTextState st;

	memset(&st, 0, sizeof(st));
	st.out = out;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = rt_object_start;
	sem.object_end = rt_object_end;
	sem.array_start = rt_array_start;
	sem.array_end = rt_array_end;
	sem.object_field_start = rt_field_start;
	sem.scalar = rt_scalar;

	lex = make_lexer(json, len, GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS)
		return false;
	return st.found;
}

/* ---- usage of a reply: rate limits, statistics and costs ---- */

typedef struct UsageState
{
	int			depth;
	bool		in_usage;
	bool		in_creation;	/* usage.cache_creation */
	const char *field;
	ClaudeUsage *usage;
	bool		found;
} UsageState;

static SEM_RETURN
us_object_start(void *state)
{
	UsageState *st = state;

	st->depth++;
	SEM_OK;
}

static SEM_RETURN
us_object_end(void *state)
{
	UsageState *st = state;

	if (st->depth == 2)
		st->in_usage = false;
	if (st->depth == 3)
		st->in_creation = false;
	st->depth--;
	SEM_OK;
}

static SEM_RETURN
us_field_start(void *state, char *fname, bool isnull)
{
	UsageState *st = state;

	if (st->depth == 1)
	{
		st->in_usage = (strcmp(fname, "usage") == 0);
		st->found |= st->in_usage;
	}
	if (st->depth == 2 && st->in_usage)
		st->in_creation = (strcmp(fname, "cache_creation") == 0);
	st->field = (st->in_usage && (st->depth == 2 || (st->depth == 3 && st->in_creation))) ?
		fname : NULL;
	SEM_OK;
}

static SEM_RETURN
us_scalar(void *state, char *token, JsonTokenType tokentype)
{
	UsageState *st = state;
	ClaudeUsage *u = st->usage;
	double		v;

	if (st->field == NULL || tokentype != JSON_TOKEN_NUMBER)
		SEM_OK;
	v = strtod(token, NULL);
	if (st->depth == 3)
	{
		if (strcmp(st->field, "ephemeral_1h_input_tokens") == 0)
			u->cache_write_1h += v;
	}
	else if (strcmp(st->field, "input_tokens") == 0)
		u->input += v;
	else if (strcmp(st->field, "cache_creation_input_tokens") == 0)
		u->cache_write += v;
	else if (strcmp(st->field, "cache_read_input_tokens") == 0)
		u->cache_read += v;
	else if (strcmp(st->field, "output_tokens") == 0)
		u->output += v;
	SEM_OK;
}

/*
 * The "usage" object of a reply: input, output, cache write (of which 1 h)
 * and cache read tokens.  Never raises: it runs in the HTTP worker.
 */
bool
claude_reply_usage(const char *json, Size len, ClaudeUsage *usage)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	UsageState	st;

	memset(&st, 0, sizeof(st));
	memset(usage, 0, sizeof(*usage));
	memset(&sem, 0, sizeof(sem));
	st.usage = usage;
	sem.semstate = &st;
	sem.object_start = us_object_start;
	sem.object_end = us_object_end;
	sem.object_field_start = us_field_start;
	sem.scalar = us_scalar;
	lex = make_lexer(json, len, PG_UTF8, true);
	return pg_parse_json(lex, &sem) == JSON_SUCCESS && st.found;
}

/*
 * USD for a reply's usage at list prices per million tokens, or -1 when
 * the price is unknown: cache writes cost 1.25x input (2x for one hour),
 * cache reads 0.1x, and batches half of it all.
 */
double
claude_usage_cost(const ClaudeUsage *u, double price_in, double price_out, bool batch)
{
	double		cost;

	if (price_in < 0 || price_out < 0)
		return -1;
	cost = u->input * price_in + u->output * price_out +
		(u->cache_write - u->cache_write_1h) * price_in * 1.25 +
		u->cache_write_1h * price_in * 2 +
		u->cache_read * price_in * 0.1;
	return cost / 1000000.0 * (batch ? 0.5 : 1);
}
