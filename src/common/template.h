/*
 * template.h
 *		Prompt templates with {column} placeholders.
 */
#ifndef CLAUDE_TEMPLATE_H
#define CLAUDE_TEMPLATE_H

#include "access/tupdesc.h"

typedef struct ClaudeTemplatePart
{
	bool		literal;
	char	   *text;			/* literal text */
	int			column;			/* index into columns */
} ClaudeTemplatePart;

typedef struct ClaudeTemplate
{
	int			nparts;
	ClaudeTemplatePart *parts;
	int			ncolumns;
	char	  **columns;		/* distinct column names, in order of use */
} ClaudeTemplate;

extern ClaudeTemplate *claude_template_parse(const char *tmpl, TupleDesc desc,
											 const char *relname);
extern char *claude_template_render(const ClaudeTemplate *t, char **values);
extern char *claude_inputs_md5_sql(char **operands, int n);
extern char *claude_inputs_md5_of_columns(const char *alias, char **columns, int n);

#endif
