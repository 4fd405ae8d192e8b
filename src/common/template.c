/*
 * template.c
 *		Prompt templates: "Summarize: {body}", with {{ and }} for braces.
 *		Callers: claude_enrich and the trigger.
 *
 * A template is checked against the table before any request: every
 * {column} must name a column (exactly, as stored: mixed case and spaces
 * are fine).  Values are rendered from the columns' text output, NULL as
 * an empty string.
 */
#include "postgres.h"

#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "common/template.h"

static void
bad_template(const char *msg, const char *tmpl)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid prompt template: %s", msg),
			 errdetail("Template: %s", tmpl),
			 errhint("Write {column} for a column's value and {{ or }} for a literal brace.")));
}

static int
column_index(ClaudeTemplate *t, const char *name)
{
	for (int i = 0; i < t->ncolumns; i++)
		if (strcmp(t->columns[i], name) == 0)
			return i;
	t->columns = repalloc(t->columns, (t->ncolumns + 1) * sizeof(char *));
	t->columns[t->ncolumns] = pstrdup(name);
	return t->ncolumns++;
}

ClaudeTemplate *
claude_template_parse(const char *tmpl, TupleDesc desc, const char *relname)
{
	ClaudeTemplate *t = palloc0(sizeof(ClaudeTemplate));
	StringInfoData lit;
	const char *p = tmpl;

	t->columns = palloc(sizeof(char *));
	t->parts = palloc(sizeof(ClaudeTemplatePart));
	initStringInfo(&lit);

#define ADD_PART(isliteral, value) \
	do { \
		t->parts = repalloc(t->parts, (t->nparts + 1) * sizeof(ClaudeTemplatePart)); \
		t->parts[t->nparts].literal = (isliteral); \
		t->parts[t->nparts].text = (isliteral) ? pstrdup(value) : NULL; \
		t->parts[t->nparts].column = (isliteral) ? -1 : column_index(t, value); \
		t->nparts++; \
	} while (0)

	if (tmpl[0] == '\0')
		bad_template("it is empty", tmpl);
	while (*p)
	{
		if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}'))
		{
			appendStringInfoChar(&lit, p[0]);
			p += 2;
		}
		else if (*p == '}')
			bad_template("a '}' closes nothing", tmpl);
		else if (*p == '{')
		{
			const char *end = strchr(p + 1, '}');
			char	   *name;
			bool		found = false;

			if (end == NULL)
				bad_template("a '{' is not closed", tmpl);
			name = pnstrdup(p + 1, end - p - 1);
			for (int i = 0; i < desc->natts && !found; i++)
			{
				Form_pg_attribute att = TupleDescAttr(desc, i);

				found = !att->attisdropped && strcmp(NameStr(att->attname), name) == 0;
			}
			if (!found)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("prompt template names column \"%s\", which table %s does not have",
								name, relname)));
			if (lit.len > 0)
			{
				ADD_PART(true, lit.data);
				resetStringInfo(&lit);
			}
			ADD_PART(false, name);
			p = end + 1;
		}
		else
			appendStringInfoChar(&lit, *p++);
	}
	if (lit.len > 0)
		ADD_PART(true, lit.data);
#undef ADD_PART
	return t;
}

/* The prompt for one row; values[i] is column i's text, NULL for NULL. */
char *
claude_template_render(const ClaudeTemplate *t, char **values)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < t->nparts; i++)
	{
		if (t->parts[i].literal)
			appendStringInfoString(&buf, t->parts[i].text);
		else if (values[t->parts[i].column])
			appendStringInfoString(&buf, values[t->parts[i].column]);
	}
	return buf.data;
}

/*
 * The SQL expression of the MD5 of a row's prompt inputs, the n operands
 * (SQL expressions: its columns, or the values a trigger read of them): a
 * trigger job's reply, or a Message Batch result, is written only to a row
 * that still holds them.  The one definition of that hash: whoever stores
 * it and whoever checks it evaluate this.
 */
char *
claude_inputs_md5_sql(char **operands, int n)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "pg_catalog.md5(pg_catalog.concat_ws(','");
	for (int i = 0; i < n; i++)
		appendStringInfo(&sql, ", pg_catalog.quote_nullable((%s)::pg_catalog.text)", operands[i]);
	appendStringInfoString(&sql, "))");
	return sql.data;
}

/* The same over columns of a table, each prefixed by alias (NULL: none). */
char *
claude_inputs_md5_of_columns(const char *alias, char **columns, int n)
{
	char	  **operands = palloc(Max(n, 1) * sizeof(char *));

	for (int i = 0; i < n; i++)
		operands[i] = alias ? psprintf("%s.%s", alias, quote_identifier(columns[i])) :
			(char *) quote_identifier(columns[i]);
	return claude_inputs_md5_sql(operands, n);
}
