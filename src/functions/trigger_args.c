/*
 * trigger_args.c
 *		The arguments of claude_enrich_trigger(target_column,
 *		prompt_template [, 'model=...', 'max_tokens=...', 'system=...',
 *		'labels=["a", "b"]' | 'schema={...}']):
 *		checked when the trigger is created (trigger_check.c) and when it
 *		fires (trigger.c), with the same messages.
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "executor/spi.h"

#include "common/guc.h"
#include "common/json.h"
#include "mb/pg_wchar.h"
#include "functions/trigger_args.h"

void
claude_trigger_error(const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("claude_enrich_trigger: %s", msg),
			 errhint("Arguments: (target_column, prompt_template [, 'model=...', 'max_tokens=...', 'system=...', 'labels=[\"a\", \"b\"]' or 'schema={...}']).")));
}

/* Row level, BEFORE or AFTER, on INSERT or UPDATE (and nothing else). */
void
claude_trigger_check_kind(bool row, bool before_or_after, bool insert_or_update_only)
{
	if (!row || !before_or_after || !insert_or_update_only)
		claude_trigger_error("it must be a BEFORE or AFTER ... FOR EACH ROW trigger on INSERT or UPDATE");
}

/* A whole number from 1 to INT_MAX, and nothing after it. */
static bool
parse_positive(const char *s, int *out)
{
	char	   *end;
	long		v;

	if (!isdigit((unsigned char) *s))
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > INT_MAX)
		return false;
	*out = (int) v;
	return true;
}

/*
 * The JSON of a 'labels=' or 'schema=' option: JSON, not a list of its own,
 * so that any label (a comma, a quote) round-trips through the trigger's
 * arguments and pg_dump.
 */
static Jsonb *
option_json(const char *opt, const char *value)
{
	char	   *utf8 = pg_server_to_any(value, strlen(value), PG_UTF8);
	Jsonb	   *json = claude_json_parse(utf8, strlen(utf8));

	if (json == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("claude_enrich_trigger: option \"%s\" is not valid JSON", opt),
				 errhint("Write 'labels=[\"a\", \"b\"]' or 'schema={\"type\": \"object\", ...}'.")));
	return json;
}

/* The target column, the template and the options, or an error. */
void
claude_trigger_args(Relation rel, int nargs, char **args, ClaudeTriggerArgs *out)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (nargs < 2)
		claude_trigger_error("it needs a target column and a prompt template");
	out->target = SPI_fnumber(desc, args[0]);
	if (out->target <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("claude_enrich_trigger: column \"%s\" of table %s does not exist",
						args[0], RelationGetRelationName(rel))));
	out->tmpl = claude_template_parse(args[1], desc, RelationGetRelationName(rel));

	memset(&out->call, 0, sizeof(out->call));
	memset(&out->check, 0, sizeof(out->check));
	out->call.model = claude_default_model;
	out->call.max_tokens = claude_default_max_tokens;
	for (int i = 2; i < nargs; i++)
	{
		char	   *opt = args[i];

		if (strncmp(opt, "model=", 6) == 0 && opt[6])
			out->call.model = opt + 6;
		else if (strncmp(opt, "system=", 7) == 0 && opt[7])
			out->call.system = opt + 7;
		else if (strncmp(opt, "max_tokens=", 11) == 0 &&
				 parse_positive(opt + 11, &out->call.max_tokens))
			continue;
		else if ((strncmp(opt, "labels=", 7) == 0 || strncmp(opt, "schema=", 7) == 0) &&
				 out->check.schema == NULL)
		{
			Jsonb	   *json = option_json(opt, opt + 7);

			out->check.field = opt[0] == 'l' ? "label" : NULL;
			out->check.schema = opt[0] == 'l' ? claude_labels_schema_json(json) :
				claude_object_schema(json);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("claude_enrich_trigger: invalid option \"%s\"", opt),
					 errhint("Options are 'model=<id>', 'max_tokens=<positive integer>', 'system=<text>', and one of 'labels=<JSON array of strings>' and 'schema=<JSON Schema object>'.")));
	}
}
