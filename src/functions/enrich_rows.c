/*
 * enrich_rows.c
 *		The rows of a claude_enrich call, for both modes: the table looked
 *		at and the statements prepared before any request, rows read in
 *		primary-key order, and replies written back one subtransaction each.
 *		Callers: enrich.c (online mode) and batch.c (batch submission).
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"

#include "access/relation.h"

#include "executor/spi.h"

#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "parser/parser.h"

#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

#include "utils/rls.h"

#include "client/budget.h"
#include "common/pgcompat.h"
#include "common/security.h"
#include "common/spi.h"

#include "functions/enrich.h"

static char *
pk_list(Enrich *e, char **names)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < e->npk; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", quote_identifier(names[i]));
	return buf.data;
}

static char *
param_list(int first, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s$%d", i ? ", " : "", first + i);
	return buf.data;
}

static bool
has_param(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, ParamRef))
		return true;
	return raw_expression_tree_walker(node, has_param, context);
}

/* The one expression clause is, as PL/pgSQL parses one; raises 42601 if not. */
static Node *
one_expression(const char *clause)
{
	List	   *parsed = NIL;
	SelectStmt *sel;
	ResTarget  *target;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		parsed = raw_parser(clause, RAW_PARSE_PLPGSQL_EXPR);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* its position is in the clause, not in the CALL: not reported */
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("where_clause is not a valid expression: %s", edata->message)));
	}
	PG_END_TRY();

	sel = list_length(parsed) == 1 ? (SelectStmt *) linitial_node(RawStmt, parsed)->stmt : NULL;
	target = sel && IsA(sel, SelectStmt) && list_length(sel->targetList) == 1 ?
		linitial_node(ResTarget, sel->targetList) : NULL;
	if (target == NULL || sel->op != SETOP_NONE || sel->distinctClause || sel->intoClause ||
		sel->fromClause || sel->whereClause || sel->groupClause || sel->havingClause ||
		sel->windowClause || sel->valuesLists || sel->sortClause || sel->limitOffset ||
		sel->limitCount || sel->lockingClause || sel->withClause ||
		target->name != NULL || target->indirection != NIL ||
		(IsA(target->val, ColumnRef) &&
		 IsA(llast(castNode(ColumnRef, target->val)->fields), A_Star)))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("where_clause must be exactly one expression"),
				 errdetail("It is a condition on the table's rows, such as: lang = 'en' AND length(body) > 100.")));
	return target->val;
}

/*
 * where_clause must be exactly one expression, nothing before or after it
 * (no "true) OR (true", no second statement, no FROM, no alias), and no
 * $n (the row queries have parameters of their own); in parentheses on
 * one line it must still be one (a trailing -- comment would hide the
 * closing one: refused, though it is embedded on lines of its own too).
 * Refused with 42601 before any row is read; what the expression means
 * (columns, types, rights) is checked when the row query is prepared.
 */
void
claude_enrich_check_where(const char *clause)
{
	if (has_param(one_expression(clause), NULL))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("where_clause must not use parameters ($n)")));
	(void) one_expression(psprintf("(%s)", clause));
}

/* Look at the table and prepare the statements; fails before any request. */
void
claude_enrich_prepare(Enrich *e, const char *target, const char *template_text, bool only_missing)
{
	Relation	rel = relation_open(e->relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *qualname;
	char	  **pk_names;
	char	   *pks;
	char	   *assigned = NULL;	/* $1 as the target column takes it */
	StringInfoData cols;
	StringInfoData where;
	const char *lock;
	Oid			pkidx = ClaudePrimaryKeyIndex(rel);

	e->relname = pstrdup(RelationGetRelationName(rel));
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  e->relname);
	/* nothing is paid for a write that cannot happen */
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("claude_enrich cannot run during recovery"),
				 errhint("Call it on the primary.")));
	if (RELATION_IS_OTHER_TEMP(rel))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot access temporary tables of other sessions")));
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", e->relname)));
	if (!OidIsValid(pkidx))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s has no primary key", e->relname),
				 errhint("claude_enrich writes each result back by primary key.")));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), target) == 0)
		{
			if (att->attgenerated)
				claude_invalid_argument("the target column is a generated column");
			/* as the executor checks it: on the table, else on the column */
			if (pg_class_aclcheck(e->relid, GetUserId(), ACL_UPDATE) != ACLCHECK_OK &&
				pg_attribute_aclcheck(e->relid, att->attnum, GetUserId(), ACL_UPDATE) != ACLCHECK_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to update column \"%s\" of table %s",
								target, e->relname),
						 errdetail("claude_enrich writes the results with the rights of the role that calls it.")));
			assigned = claude_assigned_text("$1", att->atttypid, att->atttypmod);
		}
	}
	if (assigned == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table %s does not exist", target, e->relname)));
	e->tmpl = claude_template_parse(template_text, desc, e->relname);

	{
		Relation	idx = index_open(pkidx, AccessShareLock);

		e->npk = idx->rd_index->indnkeyatts;
		e->pk_types = palloc(e->npk * sizeof(Oid));
		e->pk_len = palloc(e->npk * sizeof(int16));
		e->pk_byval = palloc(e->npk * sizeof(bool));
		pk_names = palloc(e->npk * sizeof(char *));
		for (int i = 0; i < e->npk; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, idx->rd_index->indkey.values[i] - 1);

			pk_names[i] = pstrdup(NameStr(att->attname));
			e->pk_types[i] = att->atttypid;
			get_typlenbyval(att->atttypid, &e->pk_len[i], &e->pk_byval[i]);
			if (strcmp(pk_names[i], target) == 0)
				claude_invalid_argument("the target column is part of the primary key");
		}
		index_close(idx, AccessShareLock);
	}
	relation_close(rel, AccessShareLock);
	pks = pk_list(e, pk_names);

	/* SELECT pk..., ROW(pk...)::text, column::text... [, jsonb_build_object(pk...)::text] */
	initStringInfo(&cols);
	appendStringInfo(&cols, "%s, ROW(%s)::pg_catalog.text", pks, pks);
	for (int i = 0; i < e->tmpl->ncolumns; i++)
		appendStringInfo(&cols, ", %s::pg_catalog.text AS claude_column_%d",
						 quote_identifier(e->tmpl->columns[i]), i);
	/* only batches keep the key as jsonb (claude_batch_items.pk) */
	if (e->want_pkjson)
	{
		appendStringInfoString(&cols, ", pg_catalog.jsonb_build_object(");
		for (int i = 0; i < e->npk; i++)
			appendStringInfo(&cols, "%s%s, %s", i ? ", " : "",
							 quote_literal_cstr(pk_names[i]), quote_identifier(pk_names[i]));
		appendStringInfoString(&cols, ")::pg_catalog.text");
		/* a batch's result is written only to a row that still holds these */
		appendStringInfo(&cols, ", %s",
						 claude_inputs_md5_of_columns(NULL, e->tmpl->columns, e->tmpl->ncolumns));
	}
	initStringInfo(&where);
	appendStringInfoString(&where, only_missing ?
						   psprintf("%s IS NULL", quote_identifier(target)) : "true");
	/* on lines of its own: a trailing comment cannot hide the parenthesis */
	if (e->where_clause)
		appendStringInfo(&where, " AND (\n%s\n)", e->where_clause);

	/*
	 * Under row security, read only rows the caller may update: a locking
	 * read applies the UPDATE policies too, so no row is paid for that its
	 * write would skip.
	 */
	lock = check_enable_rls(e->relid, InvalidOid, false) == RLS_ENABLED ?
		" FOR NO KEY UPDATE" : "";
	e->first = SPI_prepare(psprintf("SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT %d%s",
									cols.data, qualname, where.data, pks, e->batch_size, lock),
						   0, NULL);
	e->next = SPI_prepare(psprintf("SELECT %s FROM %s WHERE %s AND (%s) > (%s) ORDER BY %s LIMIT %d%s",
								   cols.data, qualname, where.data, pks,
								   param_list(1, e->npk), pks, e->batch_size, lock),
						  e->npk, e->pk_types);
	{
		Oid		   *types = palloc((e->npk + 1) * sizeof(Oid));

		types[0] = TEXTOID;
		memcpy(types + 1, e->pk_types, e->npk * sizeof(Oid));
		e->update = SPI_prepare(psprintf("UPDATE %s SET %s = %s WHERE (%s) = (%s)",
										 qualname, quote_identifier(target), assigned,
										 pks, param_list(2, e->npk)),
								e->npk + 1, types);
	}
	if (e->first == NULL || e->next == NULL || e->update == NULL)
		elog(ERROR, "claude_enrich: could not prepare statements: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(e->first);
	SPI_keepplan(e->next);
	SPI_keepplan(e->update);

	if (SPI_execute(psprintf("SELECT pg_catalog.count(*) FROM %s WHERE %s", qualname, where.data),
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "claude_enrich: could not count rows");
	e->total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										   1, &(bool) {false}));
	if (e->limit_rows >= 0)
		e->total = Min(e->total, e->limit_rows);
	e->last = palloc(e->npk * sizeof(Datum));
}

/* Read the next rows to do into pending. */
void
claude_enrich_read_rows(Enrich *e)
{
	MemoryContext old;
	int			ret;
	int			nest;
	uint64		n;
	char	  **values = palloc(Max(e->tmpl->ncolumns, 1) * sizeof(char *));

	/*
	 * Values print the same whatever the session set: keys kept as jsonb
	 * (batches) parse back in the worker, and prompts (and so cache keys)
	 * do not depend on DateStyle or extra_float_digits.
	 */
	nest = claude_pin_output_settings();
	ret = e->have_last ? SPI_execute_plan(e->next, e->last, NULL, false, 0)
		: SPI_execute_plan(e->first, NULL, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claude_enrich: could not read rows");
	n = SPI_processed;
	/* limit_rows: a page ends the run once it holds the rows still allowed */
	if (e->limit_rows >= 0 && (int64) n >= e->limit_rows - e->read)
	{
		n = e->limit_rows - e->read;
		e->exhausted = true;
	}
	e->read += n;
	old = MemoryContextSwitchTo(e->cxt);
	e->npending = e->pending_pos = 0;
	for (uint64 r = 0; r < n; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EnrichRow  *row = palloc(sizeof(EnrichRow));
		bool		isnull;

		row->pk = palloc(e->npk * sizeof(Datum));
		for (int i = 0; i < e->npk; i++)
		{
			Datum		d = SPI_getbinval(tup, desc, i + 1, &isnull);

			row->pk[i] = datumCopy(d, e->pk_byval[i], e->pk_len[i]);
			if (r == n - 1)
				e->last[i] = datumCopy(d, e->pk_byval[i], e->pk_len[i]);
		}
		row->key = SPI_getvalue(tup, desc, e->npk + 1);
		for (int i = 0; i < e->tmpl->ncolumns; i++)
			values[i] = SPI_getvalue(tup, desc, e->npk + 2 + i);
		row->pkjson = e->want_pkjson ?
			SPI_getvalue(tup, desc, e->npk + 2 + e->tmpl->ncolumns) : NULL;
		row->inputs_md5 = e->want_pkjson ?
			SPI_getvalue(tup, desc, e->npk + 3 + e->tmpl->ncolumns) : NULL;
		row->prompt = claude_template_render(e->tmpl, values);
		e->pending[e->npending++] = row;
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	claude_pop_settings(nest);
	if (n > 0)
		e->have_last = true;
	if (n < (uint64) e->batch_size)
		e->exhausted = true;
}

void
claude_enrich_free_row(EnrichRow *row)
{
	pfree(row->prompt);
	pfree(row->key);
	if (row->pkjson)
		pfree(row->pkjson);
	if (row->inputs_md5)
		pfree(row->inputs_md5);
	pfree(row->pk);
	pfree(row);
}

/* One row's UPDATE, for claude_subxact. */
typedef struct RowWrite
{
	Enrich	   *e;
	EnrichRow  *row;
	text	   *value;
	uint64		written;
} RowWrite;

static void
write_row(void *arg)
{
	RowWrite   *w = arg;
	Datum	   *values = palloc((w->e->npk + 1) * sizeof(Datum));

	values[0] = PointerGetDatum(w->value);
	memcpy(values + 1, w->row->pk, w->e->npk * sizeof(Datum));
	if (SPI_execute_plan(w->e->update, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "claude_enrich: could not update a row");
	w->written = SPI_processed;
}

/*
 * Write a reply to its row, in a subtransaction of its own: a reply that
 * does not fit the column (too long, not a number, a CHECK) fails this row
 * alone, with the type's own error.  Returns why nothing was written, or
 * NULL; a row gone, or hidden from the caller's UPDATE, is not written.
 */
char *
claude_enrich_write(Enrich *e, EnrichRow *row, text *value)
{
	RowWrite	w = {e, row, value, 0};
	ErrorData  *edata = claude_subxact(write_row, &w);

	e->write_errcode = edata ? edata->sqlerrcode : 0;
	if (edata != NULL)
		return edata->message;
	if (w.written == 0)
	{
		e->write_errcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		return "no row was written: it is gone, or row-level security hides it";
	}
	return NULL;
}

/*
 * The call that asks for a row's reply: with labels or a schema, the
 * request claude_classify or claude_extract sends for the same prompt.
 */
void
claude_enrich_call(Enrich *e, EnrichRow *row, ClaudeCall *c)
{
	bool		native;

	*c = e->proto;
	claude_call_set_body(c, e->check.schema == NULL ?
						 claude_complete_request(&e->args, row->prompt) :
						 claude_structured_request(&e->args, row->prompt, e->check.schema,
												   e->check.field != NULL, &native));
}

/*
 * What usage costs at the list prices of model (batch: at the batch
 * price), as numeric built exactly from whole nano-dollars; false when the
 * model has no price.  claude_enrich's one place that turns tokens into
 * money.
 */
bool
claude_enrich_cost(const char *model, const ClaudeUsage *u, bool batch, Numeric *cost)
{
	int64		nano = claude_cost_nanos(model, u, batch);

	if (nano < 0)
		return false;
	*cost = int64_div_fast_to_numeric(nano, 9);
	return true;
}
