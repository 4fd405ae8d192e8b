/*
 * jsonschema_check.c
 *		The local check of a reply against the caller's whole JSON Schema,
 *		and the readers of keyword values jsonschema.c shares.  Callers:
 *		functions/tools.c, common/jsonschema.c.
 *
 * The schema was read by claude_schema_for_api, which refused what this
 * file could not understand; anything malformed is skipped here.  The
 * first violation is reported with its path ($.a.b[2]).
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_collation_d.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/numeric.h"

#include "common/json.h"
#include "common/jsonschema.h"

/* A value as JSON text, cut to a readable length. */
char *
claude_schema_show(JsonbValue *v)
{
	char	   *s;
	int			len;

	if (v->type == jbvBinary)
		s = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	else
	{
		Jsonb	   *j = JsonbValueToJsonb(v);

		s = JsonbToCString(NULL, &j->root, VARSIZE(j));
	}
	len = strlen(s);
	if (len > 60)
	{
		len = pg_mbcliplen(s, len, 57);
		s = psprintf("%.*s...", len, s);
	}
	return s;
}

bool
claude_schema_is_number(JsonbValue *v)
{
	return v->type == jbvNumeric;
}

/* a whole number from 0 up, as minLength and maxItems take */
bool
claude_schema_is_count(JsonbValue *v)
{
	return claude_schema_is_number(v) &&
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v->val.numeric),
										  DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) >= 0 &&
		DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v->val.numeric),
										 DirectFunctionCall2(numeric_trunc, NumericGetDatum(v->val.numeric),
															 Int32GetDatum(0))));
}

bool
claude_schema_is_container(JsonbValue *v, bool object)
{
	return v->type == jbvBinary &&
		(object ? JsonContainerIsObject(v->val.binary.data) : JsonContainerIsArray(v->val.binary.data));
}

/* ---- the local check ---- */

typedef struct Check
{
	StringInfoData path;
	char	   *why;			/* the first violation, or NULL */
} Check;

static bool check(JsonbContainer *schema, JsonbValue *v, Check *c);

static bool
fail(Check *c, const char *fmt,...) pg_attribute_printf(2, 3);

static bool
fail(Check *c, const char *fmt,...)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfo(&s, "%s: ", c->path.data);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&s, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&s, needed);
	}
	c->why = s.data;
	return false;
}

static int
num_cmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a), NumericGetDatum(b)));
}

/* Whether two JSON values are equal, as enum and const compare them. */
static bool
json_equal(JsonbValue *a, JsonbValue *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return a->val.boolean == b->val.boolean;
		case jbvNumeric:
			return num_cmp(a->val.numeric, b->val.numeric) == 0;
		case jbvString:
			return a->val.string.len == b->val.string.len &&
				memcmp(a->val.string.val, b->val.string.val, a->val.string.len) == 0;
		case jbvBinary:
			return JsonContainerIsObject(a->val.binary.data) == JsonContainerIsObject(b->val.binary.data) &&
				compareJsonbContainers(a->val.binary.data, b->val.binary.data) == 0;
		default:
			return false;
	}
}

/* The JSON type name of a value; integer for a whole number. */
static const char *
type_of(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvBool:
			return "boolean";
		case jbvString:
			return "string";
		case jbvNumeric:
			return DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v->val.numeric),
													DirectFunctionCall2(numeric_trunc,
																		NumericGetDatum(v->val.numeric),
																		Int32GetDatum(0)))) ? "integer" : "number";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "object" : "array";
		default:
			return "unknown";
	}
}

static bool
type_matches(const char *want, int len, const char *is)
{
	if (len == 6 && memcmp(want, "number", 6) == 0 && strcmp(is, "integer") == 0)
		return true;
	return (int) strlen(is) == len && memcmp(want, is, len) == 0;
}

static bool
check_type(JsonbValue *t, JsonbValue *v, Check *c)
{
	const char *is = type_of(v);

	if (t->type == jbvString)
	{
		if (type_matches(t->val.string.val, t->val.string.len, is))
			return true;
		return fail(c, "%s is %s %s, not %s %.*s", claude_schema_show(v), is[0] == 'a' || is[0] == 'i' || is[0] == 'o' ? "an" : "a", is,
					t->val.string.val[0] == 'a' || t->val.string.val[0] == 'i' || t->val.string.val[0] == 'o' ? "an" : "a",
					t->val.string.len, t->val.string.val);
	}
	if (claude_schema_is_container(t, false))
	{
		JsonbIterator *it = JsonbIteratorInit(t->val.binary.data);
		JsonbValue	x;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &x, true)) != WJB_DONE)
			if (tok == WJB_ELEM && x.type == jbvString &&
				type_matches(x.val.string.val, x.val.string.len, is))
				return true;
		return fail(c, "%s is of type %s, which the schema does not allow", claude_schema_show(v), is);
	}
	return true;
}

static bool
check_number(JsonbContainer *schema, JsonbValue *v, Check *c)
{
	Numeric		n = v->val.numeric;
	JsonbValue *b;
	JsonbValue *ex;

	if ((b = claude_json_get(schema, "minimum")) && claude_schema_is_number(b))
	{
		ex = claude_json_get(schema, "exclusiveMinimum");
		if (ex && ex->type == jbvBool && ex->val.boolean ? num_cmp(n, b->val.numeric) <= 0 :
			num_cmp(n, b->val.numeric) < 0)
			return fail(c, "%s is below the minimum %s", claude_schema_show(v), claude_schema_show(b));
	}
	if ((b = claude_json_get(schema, "maximum")) && claude_schema_is_number(b))
	{
		ex = claude_json_get(schema, "exclusiveMaximum");
		if (ex && ex->type == jbvBool && ex->val.boolean ? num_cmp(n, b->val.numeric) >= 0 :
			num_cmp(n, b->val.numeric) > 0)
			return fail(c, "%s is above the maximum %s", claude_schema_show(v), claude_schema_show(b));
	}
	if ((b = claude_json_get(schema, "exclusiveMinimum")) && claude_schema_is_number(b) &&
		num_cmp(n, b->val.numeric) <= 0)
		return fail(c, "%s is not above the exclusive minimum %s", claude_schema_show(v), claude_schema_show(b));
	if ((b = claude_json_get(schema, "exclusiveMaximum")) && claude_schema_is_number(b) &&
		num_cmp(n, b->val.numeric) >= 0)
		return fail(c, "%s is not below the exclusive maximum %s", claude_schema_show(v), claude_schema_show(b));
	if ((b = claude_json_get(schema, "multipleOf")) && claude_schema_is_number(b) &&
		num_cmp(b->val.numeric, DatumGetNumeric(DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) > 0)
	{
		Numeric		rem = DatumGetNumeric(DirectFunctionCall2(numeric_mod, NumericGetDatum(n),
															  NumericGetDatum(b->val.numeric)));

		if (num_cmp(rem, DatumGetNumeric(DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) != 0)
			return fail(c, "%s is not a multiple of %s", claude_schema_show(v), claude_schema_show(b));
	}
	return true;
}

/* A count keyword's value, or -1 when it is absent (or no count). */
static double
count_of(JsonbContainer *schema, const char *key)
{
	JsonbValue *b = claude_json_get(schema, key);

	if (b == NULL || !claude_schema_is_count(b))
		return -1;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(b->val.numeric)));
}

static bool
check_string(JsonbContainer *schema, JsonbValue *v, Check *c)
{
	int			chars = pg_mbstrlen_with_len(v->val.string.val, v->val.string.len);
	double		b;
	JsonbValue *p;

	if ((b = count_of(schema, "minLength")) >= 0 && chars < b)
		return fail(c, "%s has %d characters, fewer than minLength %.0f", claude_schema_show(v), chars, b);
	if ((b = count_of(schema, "maxLength")) >= 0 && chars > b)
		return fail(c, "%s has %d characters, more than maxLength %.0f", claude_schema_show(v), chars, b);
	if ((p = claude_json_get(schema, "pattern")) && p->type == jbvString &&
		!DatumGetBool(DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
											  PointerGetDatum(cstring_to_text_with_len(v->val.string.val,
																					   v->val.string.len)),
											  PointerGetDatum(cstring_to_text_with_len(p->val.string.val,
																					   p->val.string.len)))))
		return fail(c, "%s does not match the pattern %s", claude_schema_show(v), claude_schema_show(p));
	return true;
}

/* The path of a member (key) or an element (index). */
static void
path_push(Check *c, const char *key, int keylen, int index)
{
	bool		plain = keylen > 0;

	if (key == NULL)
	{
		appendStringInfo(&c->path, "[%d]", index);
		return;
	}
	for (int i = 0; i < keylen; i++)
		if (!(isalnum((unsigned char) key[i]) || key[i] == '_'))
			plain = false;
	if (plain)
		appendStringInfo(&c->path, ".%.*s", keylen, key);
	else
	{
		appendStringInfoChar(&c->path, '[');
		escape_json(&c->path, pnstrdup(key, keylen));
		appendStringInfoChar(&c->path, ']');
	}
}

static void
path_pop(Check *c, int len)
{
	c->path.len = len;
	c->path.data[len] = '\0';
}

/* Check a member or element with the path extended, restored if it fits. */
static bool
check_at(JsonbContainer *schema, JsonbValue *v, Check *c, const char *key, int keylen, int index)
{
	int			len = c->path.len;

	path_push(c, key, keylen, index);
	if (!check(schema, v, c))
		return false;
	path_pop(c, len);
	return true;
}

static bool
check_object(JsonbContainer *schema, JsonbContainer *obj, Check *c)
{
	JsonbValue *req = claude_json_get(schema, "required");
	JsonbValue *props = claude_json_get(schema, "properties");
	JsonbValue *extra = claude_json_get(schema, "additionalProperties");
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	double		b;
	int			n = JsonContainerSize(obj);

	if (req && claude_schema_is_container(req, false))
	{
		it = JsonbIteratorInit(req->val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			char	   *name;

			if (tok != WJB_ELEM || k.type != jbvString)
				continue;
			name = pnstrdup(k.val.string.val, k.val.string.len);
			if (claude_json_get(obj, name) == NULL)
			{
				path_push(c, name, strlen(name), 0);
				return fail(c, "the required key is missing");
			}
		}
	}
	if ((b = count_of(schema, "minProperties")) >= 0 && n < b)
		return fail(c, "the object has %d properties, fewer than minProperties %.0f", n, b);
	if ((b = count_of(schema, "maxProperties")) >= 0 && n > b)
		return fail(c, "the object has %d properties, more than maxProperties %.0f", n, b);

	it = JsonbIteratorInit(obj);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		JsonbValue *sub;

		if (tok != WJB_KEY)
			continue;
		(void) JsonbIteratorNext(&it, &v, true);
		sub = props && claude_schema_is_container(props, true) ?
			getKeyJsonValueFromContainer(props->val.binary.data, k.val.string.val,
										 k.val.string.len, NULL) : NULL;
		if (sub && claude_schema_is_container(sub, true))
		{
			if (!check_at(sub->val.binary.data, &v, c, k.val.string.val, k.val.string.len, 0))
				return false;
		}
		else if (sub == NULL && extra && extra->type == jbvBool && !extra->val.boolean)
		{
			path_push(c, k.val.string.val, k.val.string.len, 0);
			return fail(c, "the key is not allowed (additionalProperties is false)");
		}
		else if (sub == NULL && extra && claude_schema_is_container(extra, true))
		{
			if (!check_at(extra->val.binary.data, &v, c, k.val.string.val, k.val.string.len, 0))
				return false;
		}
	}
	return true;
}

static bool
check_array(JsonbContainer *schema, JsonbContainer *arr, Check *c)
{
	JsonbValue *items = claude_json_get(schema, "items");
	JsonbValue *unique = claude_json_get(schema, "uniqueItems");
	int			n = JsonContainerSize(arr);
	double		b;

	if ((b = count_of(schema, "minItems")) >= 0 && n < b)
		return fail(c, "the array has %d items, fewer than minItems %.0f", n, b);
	if ((b = count_of(schema, "maxItems")) >= 0 && n > b)
		return fail(c, "the array has %d items, more than maxItems %.0f", n, b);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(arr, i);

		if (items && claude_schema_is_container(items, true) && !check_at(items->val.binary.data, e, c, NULL, 0, i))
			return false;
		if (unique && unique->type == jbvBool && unique->val.boolean)
			for (int j = 0; j < i; j++)
			{
				CHECK_FOR_INTERRUPTS();
				if (json_equal(getIthJsonbValueFromContainer(arr, j), e))
					return fail(c, "items %d and %d are equal (uniqueItems)", j, i);
			}
	}
	return true;
}

/* anyOf: one of the schemas; allOf: each of them. */
static bool
check_combined(JsonbValue *list, bool all, JsonbValue *v, Check *c)
{
	int			n = JsonContainerSize(list->val.binary.data);
	char	   *first = NULL;

	for (int i = 0; i < n; i++)
	{
		JsonbValue *s = getIthJsonbValueFromContainer(list->val.binary.data, i);
		int			len = c->path.len;

		if (!claude_schema_is_container(s, true))
			continue;
		if (check(s->val.binary.data, v, c))
		{
			if (!all)
				return true;
			continue;
		}
		if (all)
			return false;
		if (first == NULL)
			first = c->why;
		path_pop(c, len);
	}
	if (all)
		return true;
	c->why = NULL;
	return fail(c, "%s matches none of anyOf (the first: %s)", claude_schema_show(v), first ? first : "?");
}

static bool
check(JsonbContainer *schema, JsonbValue *v, Check *c)
{
	JsonbValue *kw;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();
	if ((kw = claude_json_get(schema, "type")) && !check_type(kw, v, c))
		return false;
	if ((kw = claude_json_get(schema, "const")) && !json_equal(kw, v))
		return fail(c, "%s is not the constant %s", claude_schema_show(v), claude_schema_show(kw));
	if ((kw = claude_json_get(schema, "enum")) && claude_schema_is_container(kw, false))
	{
		int			n = JsonContainerSize(kw->val.binary.data);
		bool		ok = false;

		for (int i = 0; i < n && !ok; i++)
			ok = json_equal(getIthJsonbValueFromContainer(kw->val.binary.data, i), v);
		if (!ok)
			return fail(c, "%s is not one of the enum %s", claude_schema_show(v), claude_schema_show(kw));
	}
	if ((kw = claude_json_get(schema, "anyOf")) && claude_schema_is_container(kw, false) &&
		!check_combined(kw, false, v, c))
		return false;
	if ((kw = claude_json_get(schema, "allOf")) && claude_schema_is_container(kw, false) &&
		!check_combined(kw, true, v, c))
		return false;
	switch (v->type)
	{
		case jbvNumeric:
			return check_number(schema, v, c);
		case jbvString:
			return check_string(schema, v, c);
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ?
				check_object(schema, v->val.binary.data, c) :
				check_array(schema, v->val.binary.data, c);
		default:
			return true;
	}
}

/*
 * Whether value fits schema, whole: NULL when it does, else the path of
 * the first violation and what is wrong, as "$.rating: 76 is above the
 * maximum 5".  schema was read by claude_schema_for_api.
 */
char *
claude_schema_check(Jsonb *schema, Jsonb *value)
{
	Check		c;
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(schema) || !JB_ROOT_IS_OBJECT(schema))
		return NULL;
	if (JB_ROOT_IS_SCALAR(value))
		(void) JsonbExtractScalar(&value->root, &v);
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	}
	initStringInfo(&c.path);
	appendStringInfoChar(&c.path, '$');
	c.why = NULL;
	if (check(&schema->root, &v, &c))
		return NULL;
	return c.why;
}
