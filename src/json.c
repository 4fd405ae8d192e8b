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

/* The parsed text as jsonb, or NULL if it is not valid JSON. */
Jsonb *
claude_json_parse(const char *text, Size len)
{
	JsonLexContext *lex;
	JsonParseErrorType err;

#if PG_VERSION_NUM >= 160000
	lex = makeJsonLexContextCstringLen(NULL, (char *) text, len,
									   GetDatabaseEncoding(), false);
#else
	lex = makeJsonLexContextCstringLen((char *) text, len,
									   GetDatabaseEncoding(), false);
#endif
	err = pg_parse_json(lex, &nullSemAction);
	if (err != JSON_SUCCESS)
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
