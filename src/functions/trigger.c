/*
 * trigger.c
 *		claude_enrich_trigger(target_column, prompt_template [, 'model=...',
 *		'max_tokens=...', 'system=...']) and claude_jobs_retry(relation,
 *		older_than, error_like), called by the executor and from SQL.
 *
 * BEFORE ROW: fills NEW.target_column synchronously.  AFTER ROW: queues a
 * job in claude_jobs within the inserting transaction (a rollback leaves
 * none) and returns at once; when the transaction commits, the launcher
 * is told to look (wake.c); the new job supersedes the older ones of the
 * same row and column.  It runs with the rights of whoever fired it; only
 * its statement on claude_jobs runs as the extension's owner.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "client/request.h"
#include "client/structured.h"
#include "common/json.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/security.h"
#include "common/spi.h"
#include "common/template.h"
#include "client/message.h"
#include "functions/complete.h"
#include "functions/trigger_args.h"
#include "functions/wake.h"
#include "shmem/dbqueue.h"
#include "shmem/slots.h"

PG_FUNCTION_INFO_V1(claude_enrich_trigger);

/* The values of the template's columns in a row, printed as claude_enrich prints them. */
static char **
input_values(ClaudeTemplate *t, HeapTuple tuple, TupleDesc desc)
{
	char	  **values = palloc(Max(t->ncolumns, 1) * sizeof(char *));
	int			nest = claude_pin_output_settings();

	for (int i = 0; i < t->ncolumns; i++)
		values[i] = SPI_getvalue(tuple, desc, SPI_fnumber(desc, t->columns[i]));
	claude_pop_settings(nest);
	return values;
}

/*
 * {"column": "text value", ...} of the row's primary key, printed under
 * fixed settings so that the worker finds the same row whatever this
 * session's DateStyle or extra_float_digits.
 */
static char *
primary_key_json(Relation rel, HeapTuple tuple)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			pkidx = ClaudePrimaryKeyIndex(rel);
	Relation	idx;
	StringInfoData buf;
	int			nest;

	if (!OidIsValid(pkidx))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s has no primary key", RelationGetRelationName(rel)),
				 errhint("An AFTER claude_enrich_trigger writes results back by primary key.")));
	idx = index_open(pkidx, AccessShareLock);
	nest = claude_pin_output_settings();
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
	{
		int			attno = idx->rd_index->indkey.values[i];

		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, NameStr(TupleDescAttr(desc, attno - 1)->attname));
		appendStringInfoString(&buf, ": ");
		escape_json(&buf, SPI_getvalue(tuple, desc, attno));
	}
	appendStringInfoChar(&buf, '}');
	claude_pop_settings(nest);
	index_close(idx, AccessShareLock);
	return buf.data;
}

/* Whether a column has the same value in both tuples (binary equality). */
static bool
same_value(HeapTuple a, HeapTuple b, TupleDesc desc, int attno)
{
	Form_pg_attribute att = TupleDescAttr(desc, attno - 1);
	bool		anull;
	bool		bnull;
	Datum		av = heap_getattr(a, attno, desc, &anull);
	Datum		bv = heap_getattr(b, attno, desc, &bnull);

	if (anull || bnull)
		return anull && bnull;
	return datumIsEqual(av, bv, att->attbyval, att->attlen);
}

/*
 * Whether the row needs a reply.  INSERT: when the target is NULL (a value
 * the statement gives is kept).  UPDATE: when a column the prompt uses
 * changed and the statement left the target alone (or set it NULL): a
 * changed input gets a new reply; an UPDATE of other columns, of the
 * target itself, or a job's own write-back, gets none.
 */
static bool
wanted(TriggerData *td, ClaudeTemplate *tmpl, int target)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	HeapTuple	newtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	bool		input_changed = false;

	if (heap_attisnull(newtup, target, desc) == false &&
		(!TRIGGER_FIRED_BY_UPDATE(td->tg_event) ||
		 !same_value(td->tg_trigtuple, newtup, desc, target)))
		return false;
	if (!TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		return true;
	for (int i = 0; i < tmpl->ncolumns && !input_changed; i++)
		input_changed = !same_value(td->tg_trigtuple, newtup, desc,
									SPI_fnumber(desc, tmpl->columns[i]));
	return input_changed;
}

/*
 * A BEFORE trigger's structured reply: the checked value, cached only
 * once it passed; a reply that breaks the schema fails the statement
 * (ZC422), is not cached, and the row is not written.
 */
static text *
checked_reply(ClaudeCall *call, const ClaudeReplyCheck *check)
{
	char	   *reply_text = claude_call_run(call);
	Jsonb	   *reply = reply_text ? claude_json_parse(reply_text, strlen(reply_text)) : call->hit;
	text	   *value;
	bool		broken;
	char	   *why = claude_structured_value(call->json, check, reply, &value, &broken);

	if (why == NULL)
	{
		claude_call_keep(call);
		return value;
	}
	claude_call_reject(call);
	ereport(ERROR,
			(errcode(broken ? CLAUDE_ERRCODE_SCHEMA : CLAUDE_ERRCODE_BAD_RESPONSE),
			 errmsg("claude_enrich_trigger: %s", why),
			 errhint("The reply was not cached: the next row with this prompt asks again.")));
}

/*
 * Queue the job of an AFTER trigger.  claude_jobs is closed to the
 * inserting role: this one INSERT runs as the extension's owner, with
 * values computed beforehand and no expression of the user's inside.
 */
static void
queue_job(TriggerData *td, HeapTuple tuple, ClaudeCall *call, Oid nsp,
		  ClaudeTemplate *tmpl, char **inputs, const ClaudeReplyCheck *check)
{
	Oid			types[8] = {OIDOID, TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTARRAYOID, TEXTARRAYOID, JSONBOID};
	Datum		values[8];
	char		nulls8[8] = "       n";
	Datum	   *names = palloc(Max(tmpl->ncolumns, 1) * sizeof(Datum));
	Datum	   *texts = palloc(Max(tmpl->ncolumns, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(tmpl->ncolumns, 1) * sizeof(bool));
	char	  **operands = palloc(Max(tmpl->ncolumns, 1) * sizeof(char *));
	Oid			jobs = get_relname_relid("claude_jobs", nsp);
	Oid			owner = claude_rel_owner(jobs);
	ClaudeRoleSwitch as_owner;
	char	   *jobs_name = quote_qualified_identifier(get_namespace_name(nsp), "claude_jobs");

	/* made by CREATE EXTENSION: its owner is the extension's */
	if (!OidIsValid(owner))
		elog(ERROR, "claude_enrich_trigger: claude_jobs is missing");
	values[0] = ObjectIdGetDatum(RelationGetRelid(td->tg_relation));
	values[1] = CStringGetTextDatum(primary_key_json(td->tg_relation, tuple));
	values[2] = CStringGetTextDatum(td->tg_trigger->tgargs[0]);
	values[3] = CStringGetTextDatum(claude_call_body(call));
	/* the job is its payer's, the inserting role's, whose budget it uses */
	values[4] = ObjectIdGetDatum(call->payer);
	for (int i = 0; i < tmpl->ncolumns; i++)
	{
		names[i] = CStringGetTextDatum(tmpl->columns[i]);
		nulls[i] = inputs[i] == NULL;
		texts[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(inputs[i]);
		operands[i] = psprintf("$7[%d]", i + 1);
	}
	values[5] = PointerGetDatum(construct_array(names, tmpl->ncolumns, TEXTOID, -1, false, TYPALIGN_INT));
	/* the inputs' MD5 as the worker checks it before writing back */
	values[6] = PointerGetDatum(construct_md_array(texts, nulls, 1, (int[]) {tmpl->ncolumns},
												   (int[]) {1}, TEXTOID, -1, false, TYPALIGN_INT));
	/* what the worker checks the reply against: {"schema": ..., "field": ...} */
	if (check->schema)
	{
		values[7] = JsonbPGetDatum(claude_reply_check_json(check));
		nulls8[7] = ' ';
	}
	claude_become(&as_owner, owner, false);

	/*
	 * A kept plan: parsing and planning it cost more than the row itself.
	 * The new job supersedes the older ones of its row and column that are
	 * not done: none of them is sent again, and a reply of one in flight
	 * is not written.  One the worker holds at this instant is skipped,
	 * never waited for (the worker may be waiting for this row): the
	 * worker's claim and claude_jobs_retry find it superseded later.
	 */
	if (claude_spi_exec(psprintf("WITH new AS (INSERT INTO %s (relid, pk, target_column, request, role, inputs, inputs_md5, reply_check) "
								 "VALUES ($1, $2::pg_catalog.jsonb, $3, $4::pg_catalog.jsonb, $5, $6, %s, $8) "
								 "RETURNING relid, pk, target_column), "
								 "old AS (SELECT o.id FROM %s o, new WHERE o.relid OPERATOR(pg_catalog.=) new.relid "
								 "AND o.target_column OPERATOR(pg_catalog.=) new.target_column "
								 "AND o.pk OPERATOR(pg_catalog.=) new.pk "
								 "AND o.status OPERATOR(pg_catalog.<>) 'superseded' FOR UPDATE OF o SKIP LOCKED) "
								 "UPDATE %s j SET status = 'superseded', updated_at = pg_catalog.now() FROM old "
								 "WHERE j.id OPERATOR(pg_catalog.=) old.id",
								 jobs_name, claude_inputs_md5_sql(operands, tmpl->ncolumns), jobs_name, jobs_name),
						8, types, values, nulls8) != SPI_OK_UPDATE)
		elog(ERROR, "claude_enrich_trigger: could not queue a job");
	claude_unbecome(&as_owner);
	claude_jobs_kick_on_commit();
}

Datum
claude_enrich_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *trig;
	TupleDesc	desc;
	HeapTuple	tuple;
	int			target;
	ClaudeTemplate *tmpl;
	ClaudeTriggerArgs targs;
	ClaudeCompleteArgs args;
	char	  **values;
	ClaudeCall	call;

	if (!CALLED_AS_TRIGGER(fcinfo))
		claude_trigger_error("not called as a trigger");
	claude_trigger_check_kind(TRIGGER_FIRED_FOR_ROW(td->tg_event),
							  TRIGGER_FIRED_BEFORE(td->tg_event) || TRIGGER_FIRED_AFTER(td->tg_event),
							  TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event));
	claude_require_shared();

	trig = td->tg_trigger;
	desc = RelationGetDescr(td->tg_relation);
	tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	claude_trigger_args(td->tg_relation, trig->tgnargs, trig->tgargs, &targs);
	target = targs.target;
	tmpl = targs.tmpl;
	args = targs.call;

	/* nothing to do: no request, no job (the write-back of a job is such an UPDATE) */
	if (!wanted(td, tmpl, target))
		return PointerGetDatum(tuple);

	claude_cache_shared_system(&args);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "claude_enrich_trigger: SPI_connect failed");
	values = input_values(tmpl, tuple, desc);
	claude_call_init(&call, CLAUDE_EP_MESSAGES, NULL);
	/* with labels or a schema: claude_classify's or claude_extract's request */
	if (targs.check.schema)
	{
		bool		native;

		claude_call_set_body(&call, claude_structured_request(&args, claude_template_render(tmpl, values),
															  targs.check.schema,
															  targs.check.field != NULL, &native));
	}
	else
		claude_call_set_body(&call, claude_complete_request(&args, claude_template_render(tmpl, values)));

	if (TRIGGER_FIRED_BEFORE(td->tg_event))
	{
		text	   *reply;
		Oid			typinput;
		Oid			typioparam;
		Datum		value;
		bool		isnull = false;
		Form_pg_attribute att = TupleDescAttr(desc, target - 1);

		claude_call_cache_arg(&call, fcinfo, -1, CLAUDE_CACHE_LEAD);
		call.cache_checked = targs.check.schema != NULL;
		if (targs.check.schema)
			reply = checked_reply(&call, &targs.check);
		else if (claude_call_run(&call) == NULL)
			reply = claude_jsonb_reply_text(call.hit);
		else if ((reply = claude_complete_text(call.reply)) == NULL)
			claude_bad_reply(&call.result);
		getTypeInputInfo(att->atttypid, &typinput, &typioparam);
		value = OidInputFunctionCall(typinput, text_to_cstring(reply), typioparam, att->atttypmod);
		tuple = heap_modify_tuple_by_cols(tuple, desc, 1, &target, &value, &isnull);
		tuple = SPI_copytuple(tuple);
	}
	else
		queue_job(td, tuple, &call, claude_extension_schema(fcinfo), tmpl, values, &targs.check);
	SPI_finish();
	return PointerGetDatum(tuple);
}

PG_FUNCTION_INFO_V1(claude_jobs_retry);

/*
 * claude_jobs_retry(relation, older_than, error_like): queue again, from
 * scratch, the failed jobs that match every filter given (of relation;
 * failed at least older_than ago, by updated_at; last_error LIKE
 * error_like), and let the matching waiting jobs (a spent budget, a
 * billing_error) be looked at now; returns how many jobs it moved.  Only
 * jobs the caller pays for move (their payer is a role whose privileges it
 * has; a superuser's: all): no role spends another's money.  Superseded
 * jobs never move.  Runs as claude_jobs' owner, as the trigger's INSERT,
 * with the caller and its filters as parameters.
 */
Datum
claude_jobs_retry(PG_FUNCTION_ARGS)
{
	Oid			nsp = claude_extension_schema(fcinfo);
	char	   *jobs = quote_qualified_identifier(get_namespace_name(nsp), "claude_jobs");
	Oid			owner = claude_rel_owner(get_relname_relid("claude_jobs", nsp));
	Oid			types[5] = {REGCLASSOID, INTERVALOID, TEXTOID, OIDOID, BOOLOID};
	Datum		values[5];
	char		nulls[6] = "     ";
	const char *match;
	ClaudeRoleSwitch as_owner;
	int64		n;

	if (!OidIsValid(owner))
		elog(ERROR, "claude_jobs_retry: claude_jobs is missing");
	for (int i = 0; i < 3; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	values[3] = ObjectIdGetDatum(GetUserId());
	values[4] = BoolGetDatum(superuser());
	match = "($5 OR pg_catalog.pg_has_role($4, role, 'USAGE')) "
		"AND ($1 IS NULL OR relid OPERATOR(pg_catalog.=) $1) "
		"AND ($2 IS NULL OR updated_at OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.-) $2)) "
		"AND ($3 IS NULL OR last_error OPERATOR(pg_catalog.~~) $3)";

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "claude_jobs_retry: SPI_connect failed");
	claude_become(&as_owner, owner, false);
	/* one a newer job of its row and column replaced (see queue_job) stays */
	if (claude_spi_exec(psprintf("UPDATE %s o SET status = 'superseded', updated_at = pg_catalog.now() "
								 "WHERE status OPERATOR(pg_catalog.=) ANY ('{failed,waiting}') AND %s "
								 "AND EXISTS (SELECT FROM %s n WHERE n.relid OPERATOR(pg_catalog.=) o.relid "
								 "AND n.target_column OPERATOR(pg_catalog.=) o.target_column "
								 "AND n.pk OPERATOR(pg_catalog.=) o.pk AND n.id OPERATOR(pg_catalog.>) o.id)",
								 jobs, match, jobs),
						5, types, values, nulls) != SPI_OK_UPDATE)
		elog(ERROR, "claude_jobs_retry: could not look for superseded jobs");
	if (claude_spi_exec(psprintf("UPDATE %s SET status = 'queued', attempts = 0, "
								 "next_attempt_at = pg_catalog.now(), last_error = NULL, sqlstate = NULL, "
								 "http_status = NULL, request_id = NULL, updated_at = pg_catalog.now() "
								 "WHERE status OPERATOR(pg_catalog.=) 'failed' AND %s", jobs, match),
						5, types, values, nulls) != SPI_OK_UPDATE)
		elog(ERROR, "claude_jobs_retry: could not requeue jobs");
	n = (int64) SPI_processed;
	if (claude_spi_exec(psprintf("UPDATE %s SET next_attempt_at = pg_catalog.now(), updated_at = pg_catalog.now() "
								 "WHERE status OPERATOR(pg_catalog.=) 'waiting' AND %s", jobs, match),
						5, types, values, nulls) != SPI_OK_UPDATE)
		elog(ERROR, "claude_jobs_retry: could not release waiting jobs");
	n += (int64) SPI_processed;
	claude_unbecome(&as_owner);
	SPI_finish();
	if (n > 0)
		claude_jobs_kick_on_commit();
	PG_RETURN_INT64(n);
}
