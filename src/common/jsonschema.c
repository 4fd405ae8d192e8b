/*
 * jsonschema.c
 *		JSON Schema for structured output.  Callers: functions/tools.c.
 *
 * The API's strict structured output (output_config.format, strict tools)
 * takes only a subset of JSON Schema: it refuses numeric and length bounds
 * and wants "additionalProperties": false on every object.
 * claude_schema_for_api gives that subset, as the official SDKs do: a
 * dropped bound goes into the description, where the model still reads
 * it, and every object is closed.  claude_schema_check then checks a reply
 * against the caller's whole schema, bounds included, and names the path
 * of the first violation.
 *
 * A schema is read once, by claude_schema_for_api, which rejects what it
 * cannot understand (22023) before anything is sent; the check assumes
 * that and skips anything malformed.  Unknown keywords (title, $comment,
 * examples...) are ignored.  Nesting is bounded by check_stack_depth.
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

/* keywords the API refuses and the check enforces: they become description */
static const char *const bounds[] = {
	"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
	"minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
	"minProperties", "maxProperties", "format", NULL
};

/* keywords whose meaning the check does not know: the schema is refused */
static const char *const unsupported[] = {
	"$ref", "$defs", "definitions", "oneOf", "not", "if", "then", "else",
	"patternProperties", "propertyNames", "dependentRequired", "dependentSchemas",
	"dependencies", "prefixItems", "contains", "minContains", "maxContains",
	"unevaluatedProperties", "unevaluatedItems", "additionalItems", NULL
};

/* the string formats the API accepts (as the SDKs list them) */
static const char *const formats[] = {
	"date-time", "time", "date", "duration", "email", "hostname", "uri",
	"ipv4", "ipv6", "uuid", NULL
};

static const char *const types[] = {
	"object", "array", "string", "number", "integer", "boolean", "null", NULL
};

static bool
listed(const char *const *list, const char *s, int len)
{
	for (; *list; list++)
		if ((int) strlen(*list) == len && memcmp(*list, s, len) == 0)
			return true;
	return false;
}

static void
bad_schema(const char *path, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("schema %s: %s", path, what),
			 errhint("claude_extract understands type, properties, required, additionalProperties, items, enum, const, anyOf, allOf and the bounds (minimum, maxLength, maxItems...).")));
}

/* A value as JSON text, cut to a readable length. */
static char *
show(JsonbValue *v)
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

static bool
is_number(JsonbValue *v)
{
	return v->type == jbvNumeric;
}

/* a whole number from 0 up, as minLength and maxItems take */
static bool
is_count(JsonbValue *v)
{
	return is_number(v) &&
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v->val.numeric),
										  DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) >= 0 &&
		DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v->val.numeric),
										 DirectFunctionCall2(numeric_trunc, NumericGetDatum(v->val.numeric),
															 Int32GetDatum(0))));
}

static bool
is_container(JsonbValue *v, bool object)
{
	return v->type == jbvBinary &&
		(object ? JsonContainerIsObject(v->val.binary.data) : JsonContainerIsArray(v->val.binary.data));
}

/* ---- the subset sent to the API ---- */

static JsonbValue *subset(JsonbContainer *schema, JsonbParseState **st, const char *path);

static void
push_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
}

/* Push the schemas of an object (properties) or an array (anyOf). */
static void
subset_each(JsonbValue *v, bool object, JsonbParseState **st, const char *path)
{
	JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
	JsonbValue	x;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	int			i = 0;

	while ((tok = JsonbIteratorNext(&it, &x, true)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_OBJECT || tok == WJB_BEGIN_ARRAY ||
			tok == WJB_END_OBJECT || tok == WJB_END_ARRAY)
		{
			pushJsonbValue(st, tok, NULL);
			continue;
		}
		if (tok == WJB_KEY)
		{
			key = pnstrdup(x.val.string.val, x.val.string.len);
			pushJsonbValue(st, WJB_KEY, &x);
			continue;
		}
		{
			char	   *at = object ? psprintf("%s.%s", path, key) : psprintf("%s[%d]", path, i++);

			if (!is_container(&x, true))
				bad_schema(at, "must be a schema object");
			subset(x.val.binary.data, st, at);
		}
	}
}

/*
 * Push the API's subset of one schema, after checking that it is one the
 * local check understands; the object, once it is the outermost.
 */
static JsonbValue *
subset(JsonbContainer *schema, JsonbParseState **st, const char *path)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbValue	k;
	JsonbIteratorToken tok;
	StringInfoData dropped;
	char	   *description = NULL;
	bool		object = false;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();
	initStringInfo(&dropped);
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(schema);
	(void) JsonbIteratorNext(&it, &v, true);	/* WJB_BEGIN_OBJECT */
	while ((tok = JsonbIteratorNext(&it, &k, true)) == WJB_KEY)
	{
		const char *key = k.val.string.val;
		int			len = k.val.string.len;
		char	   *name = pnstrdup(key, len);

		(void) JsonbIteratorNext(&it, &v, true);	/* WJB_VALUE */
		if (listed(unsupported, key, len))
			bad_schema(path, psprintf("the keyword \"%s\" is not supported", name));
		if (strcmp(name, "type") == 0)
		{
			bool		ok = v.type == jbvString && listed(types, v.val.string.val, v.val.string.len);

			if (is_container(&v, false))
			{
				JsonbIterator *ti = JsonbIteratorInit(v.val.binary.data);
				JsonbValue	t;

				ok = JsonContainerSize(v.val.binary.data) > 0;
				while ((tok = JsonbIteratorNext(&ti, &t, true)) != WJB_DONE)
					if (tok == WJB_ELEM)
					{
						ok = ok && t.type == jbvString && listed(types, t.val.string.val, t.val.string.len);
						if (t.type == jbvString && t.val.string.len == 6 &&
							memcmp(t.val.string.val, "object", 6) == 0)
							object = true;
					}
			}
			else if (ok && strcmp(pnstrdup(v.val.string.val, v.val.string.len), "object") == 0)
				object = true;
			if (!ok)
				bad_schema(path, "\"type\" must be one of object, array, string, number, integer, boolean, null (or an array of them)");
		}
		else if (strcmp(name, "properties") == 0)
		{
			if (!is_container(&v, true))
				bad_schema(path, "\"properties\" must be an object of schemas");
			object = true;
			pushJsonbValue(st, WJB_KEY, &k);
			subset_each(&v, true, st, path);
			continue;
		}
		else if (strcmp(name, "items") == 0 || strcmp(name, "additionalProperties") == 0)
		{
			bool		additional = name[0] == 'a';

			if (additional && v.type == jbvBool)
				continue;		/* closed below in any case */
			if (!is_container(&v, true))
				bad_schema(path, additional ? "\"additionalProperties\" must be a boolean or a schema" :
						   "\"items\" must be a schema object");
			if (additional)
				continue;		/* checked locally; the API gets false */
			pushJsonbValue(st, WJB_KEY, &k);
			subset(v.val.binary.data, st, psprintf("%s[*]", path));
			continue;
		}
		else if (strcmp(name, "anyOf") == 0 || strcmp(name, "allOf") == 0)
		{
			if (!is_container(&v, false) || JsonContainerSize(v.val.binary.data) == 0)
				bad_schema(path, psprintf("\"%s\" must be a non-empty array of schemas", name));
			pushJsonbValue(st, WJB_KEY, &k);
			subset_each(&v, false, st, path);
			continue;
		}
		else if (strcmp(name, "required") == 0 || strcmp(name, "enum") == 0)
		{
			if (!is_container(&v, false))
				bad_schema(path, psprintf("\"%s\" must be an array", name));
			if (name[0] == 'r')
			{
				JsonbIterator *ri = JsonbIteratorInit(v.val.binary.data);
				JsonbValue	r;

				while ((tok = JsonbIteratorNext(&ri, &r, true)) != WJB_DONE)
					if (tok == WJB_ELEM && r.type != jbvString)
						bad_schema(path, "\"required\" must be an array of strings");
			}
		}
		else if (strcmp(name, "description") == 0)
		{
			if (v.type != jbvString)
				bad_schema(path, "\"description\" must be a string");
			description = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		else if (listed(bounds, key, len))
		{
			bool		ok;

			if (strcmp(name, "pattern") == 0 || strcmp(name, "format") == 0)
				ok = v.type == jbvString;
			else if (strcmp(name, "uniqueItems") == 0)
				ok = v.type == jbvBool;
			else if (strncmp(name, "min", 3) == 0 && strcmp(name, "minimum") != 0)
				ok = is_count(&v);
			else if (strncmp(name, "max", 3) == 0 && strcmp(name, "maximum") != 0)
				ok = is_count(&v);
			else if (strncmp(name, "exclusive", 9) == 0)
				ok = is_number(&v) || v.type == jbvBool;	/* draft 4 took a boolean */
			else
				ok = is_number(&v);
			if (ok && strcmp(name, "multipleOf") == 0)
				ok = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v.val.numeric),
													   DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) > 0;
			if (!ok)
				bad_schema(path, psprintf("\"%s\" has a value of the wrong kind: %s", name, show(&v)));
			/* an invalid regular expression fails now, not at the reply */
			if (strcmp(name, "pattern") == 0)
				(void) DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
											   PointerGetDatum(cstring_to_text("")),
											   PointerGetDatum(cstring_to_text_with_len(v.val.string.val,
																						v.val.string.len)));
			/* what the API takes of them: a known format, minItems 0 or 1 */
			if ((strcmp(name, "format") == 0 && listed(formats, v.val.string.val, v.val.string.len)) ||
				(strcmp(name, "minItems") == 0 &&
				 DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v.val.numeric),
												   DirectFunctionCall1(int4_numeric, Int32GetDatum(1)))) <= 0))
			{
				pushJsonbValue(st, WJB_KEY, &k);
				pushJsonbValue(st, WJB_VALUE, &v);
				continue;
			}
			appendStringInfo(&dropped, "%s%s: %s", dropped.len ? ", " : "", name, show(&v));
			continue;
		}
		else if (strcmp(name, "const") != 0 && strcmp(name, "title") != 0 &&
				 strcmp(name, "default") != 0)
			continue;			/* unknown to the API: not sent */
		pushJsonbValue(st, WJB_KEY, &k);
		pushJsonbValue(st, WJB_VALUE, &v);
	}
	if (dropped.len > 0)
		description = psprintf("%s%s{%s}", description ? description : "",
							   description ? "\n\n" : "", dropped.data);
	if (description)
	{
		JsonbValue	d;

		push_key(st, "description");
		d.type = jbvString;
		d.val.string.val = description;
		d.val.string.len = strlen(description);
		pushJsonbValue(st, WJB_VALUE, &d);
	}
	if (object)
	{
		JsonbValue	f;

		push_key(st, "additionalProperties");
		f.type = jbvBool;
		f.val.boolean = false;
		pushJsonbValue(st, WJB_VALUE, &f);
	}
	return pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/*
 * The subset of schema (an object) that strict structured output accepts:
 * bounds moved into the description, every object closed.  Raises 22023
 * for a schema the local check could not understand.
 */
Jsonb *
claude_schema_for_api(Jsonb *schema)
{
	JsonbParseState *st = NULL;

	if (JB_ROOT_IS_SCALAR(schema) || !JB_ROOT_IS_OBJECT(schema))
		bad_schema("$", "must be an object");
	return JsonbValueToJsonb(subset(&schema->root, &st, "$"));
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
		return fail(c, "%s is %s %s, not %s %.*s", show(v), is[0] == 'a' || is[0] == 'i' || is[0] == 'o' ? "an" : "a", is,
					t->val.string.val[0] == 'a' || t->val.string.val[0] == 'i' || t->val.string.val[0] == 'o' ? "an" : "a",
					t->val.string.len, t->val.string.val);
	}
	if (is_container(t, false))
	{
		JsonbIterator *it = JsonbIteratorInit(t->val.binary.data);
		JsonbValue	x;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &x, true)) != WJB_DONE)
			if (tok == WJB_ELEM && x.type == jbvString &&
				type_matches(x.val.string.val, x.val.string.len, is))
				return true;
		return fail(c, "%s is of type %s, which the schema does not allow", show(v), is);
	}
	return true;
}

static bool
check_number(JsonbContainer *schema, JsonbValue *v, Check *c)
{
	Numeric		n = v->val.numeric;
	JsonbValue *b;
	JsonbValue *ex;

	if ((b = claude_json_get(schema, "minimum")) && is_number(b))
	{
		ex = claude_json_get(schema, "exclusiveMinimum");
		if (ex && ex->type == jbvBool && ex->val.boolean ? num_cmp(n, b->val.numeric) <= 0 :
			num_cmp(n, b->val.numeric) < 0)
			return fail(c, "%s is below the minimum %s", show(v), show(b));
	}
	if ((b = claude_json_get(schema, "maximum")) && is_number(b))
	{
		ex = claude_json_get(schema, "exclusiveMaximum");
		if (ex && ex->type == jbvBool && ex->val.boolean ? num_cmp(n, b->val.numeric) >= 0 :
			num_cmp(n, b->val.numeric) > 0)
			return fail(c, "%s is above the maximum %s", show(v), show(b));
	}
	if ((b = claude_json_get(schema, "exclusiveMinimum")) && is_number(b) &&
		num_cmp(n, b->val.numeric) <= 0)
		return fail(c, "%s is not above the exclusive minimum %s", show(v), show(b));
	if ((b = claude_json_get(schema, "exclusiveMaximum")) && is_number(b) &&
		num_cmp(n, b->val.numeric) >= 0)
		return fail(c, "%s is not below the exclusive maximum %s", show(v), show(b));
	if ((b = claude_json_get(schema, "multipleOf")) && is_number(b) &&
		num_cmp(b->val.numeric, DatumGetNumeric(DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) > 0)
	{
		Numeric		rem = DatumGetNumeric(DirectFunctionCall2(numeric_mod, NumericGetDatum(n),
															  NumericGetDatum(b->val.numeric)));

		if (num_cmp(rem, DatumGetNumeric(DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) != 0)
			return fail(c, "%s is not a multiple of %s", show(v), show(b));
	}
	return true;
}

/* A count keyword's value, or -1 when it is absent (or no count). */
static double
count_of(JsonbContainer *schema, const char *key)
{
	JsonbValue *b = claude_json_get(schema, key);

	if (b == NULL || !is_count(b))
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
		return fail(c, "%s has %d characters, fewer than minLength %.0f", show(v), chars, b);
	if ((b = count_of(schema, "maxLength")) >= 0 && chars > b)
		return fail(c, "%s has %d characters, more than maxLength %.0f", show(v), chars, b);
	if ((p = claude_json_get(schema, "pattern")) && p->type == jbvString &&
		!DatumGetBool(DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
											  PointerGetDatum(cstring_to_text_with_len(v->val.string.val,
																					   v->val.string.len)),
											  PointerGetDatum(cstring_to_text_with_len(p->val.string.val,
																					   p->val.string.len)))))
		return fail(c, "%s does not match the pattern %s", show(v), show(p));
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

	if (req && is_container(req, false))
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
		sub = props && is_container(props, true) ?
			getKeyJsonValueFromContainer(props->val.binary.data, k.val.string.val,
										 k.val.string.len, NULL) : NULL;
		if (sub && is_container(sub, true))
		{
			if (!check_at(sub->val.binary.data, &v, c, k.val.string.val, k.val.string.len, 0))
				return false;
		}
		else if (sub == NULL && extra && extra->type == jbvBool && !extra->val.boolean)
		{
			path_push(c, k.val.string.val, k.val.string.len, 0);
			return fail(c, "the key is not allowed (additionalProperties is false)");
		}
		else if (sub == NULL && extra && is_container(extra, true))
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

		if (items && is_container(items, true) && !check_at(items->val.binary.data, e, c, NULL, 0, i))
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

		if (!is_container(s, true))
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
	return fail(c, "%s matches none of anyOf (the first: %s)", show(v), first ? first : "?");
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
		return fail(c, "%s is not the constant %s", show(v), show(kw));
	if ((kw = claude_json_get(schema, "enum")) && is_container(kw, false))
	{
		int			n = JsonContainerSize(kw->val.binary.data);
		bool		ok = false;

		for (int i = 0; i < n && !ok; i++)
			ok = json_equal(getIthJsonbValueFromContainer(kw->val.binary.data, i), v);
		if (!ok)
			return fail(c, "%s is not one of the enum %s", show(v), show(kw));
	}
	if ((kw = claude_json_get(schema, "anyOf")) && is_container(kw, false) &&
		!check_combined(kw, false, v, c))
		return false;
	if ((kw = claude_json_get(schema, "allOf")) && is_container(kw, false) &&
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
