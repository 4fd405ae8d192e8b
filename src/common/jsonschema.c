/*
 * jsonschema.c
 *		The subset of a JSON Schema that strict structured output takes.
 *		Callers: functions/tools.c.
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

/* ---- the subset sent to the API ---- */

static JsonbValue *subset(JsonbContainer *schema, JsonbParseState **st, const char *path);

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

			if (!claude_schema_is_container(&x, true))
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

			if (claude_schema_is_container(&v, false))
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
			if (!claude_schema_is_container(&v, true))
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
			if (!claude_schema_is_container(&v, true))
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
			if (!claude_schema_is_container(&v, false) || JsonContainerSize(v.val.binary.data) == 0)
				bad_schema(path, psprintf("\"%s\" must be a non-empty array of schemas", name));
			pushJsonbValue(st, WJB_KEY, &k);
			subset_each(&v, false, st, path);
			continue;
		}
		else if (strcmp(name, "required") == 0 || strcmp(name, "enum") == 0)
		{
			if (!claude_schema_is_container(&v, false))
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
				ok = claude_schema_is_count(&v);
			else if (strncmp(name, "max", 3) == 0 && strcmp(name, "maximum") != 0)
				ok = claude_schema_is_count(&v);
			else if (strncmp(name, "exclusive", 9) == 0)
				ok = claude_schema_is_number(&v) || v.type == jbvBool;	/* draft 4 took a boolean */
			else
				ok = claude_schema_is_number(&v);
			if (ok && strcmp(name, "multipleOf") == 0)
				ok = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v.val.numeric),
													   DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))) > 0;
			if (!ok)
				bad_schema(path, psprintf("\"%s\" has a value of the wrong kind: %s", name, claude_schema_show(&v)));
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
			appendStringInfo(&dropped, "%s%s: %s", dropped.len ? ", " : "", name, claude_schema_show(&v));
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

		claude_json_push_key(st, "description");
		d.type = jbvString;
		d.val.string.val = description;
		d.val.string.len = strlen(description);
		pushJsonbValue(st, WJB_VALUE, &d);
	}
	if (object)
	{
		JsonbValue	f;

		claude_json_push_key(st, "additionalProperties");
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

