/*
 * trigger_check.c
 *		claude_trigger_check(), the event trigger that vets every CREATE
 *		TRIGGER that attaches claude_enrich_trigger.
 *
 * The trigger is the table owner's automation: its AFTER jobs write replies
 * back as the owner.  PostgreSQL lets any role with the TRIGGER privilege
 * (and EXECUTE on the function) create a trigger, which would let such a
 * role write any column of the owner's table as the owner.  So only a role
 * with the owner's privileges may attach it; and its arguments, level,
 * timing and events are checked now, with the messages an INSERT would
 * give, rather than at the first row.
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "common/spi.h"
#include "functions/trigger_args.h"

PG_FUNCTION_INFO_V1(claude_trigger_check);

/* Vet one trigger of rel, if it is ours. */
static void
check_trigger(Relation rel, const Trigger *t, Oid enrich)
{
	ClaudeTriggerArgs args;

	if (t->tgfoid != enrich)
		return;
	if (!has_privs_of_role(GetUserId(), rel->rd_rel->relowner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to attach claude_enrich_trigger to table %s",
						RelationGetRelationName(rel)),
				 errdetail("Its replies are written back as the table's owner, %s.",
						   GetUserNameFromId(rel->rd_rel->relowner, false)),
				 errhint("Only a role with the privileges of the table's owner may create it.")));
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		claude_trigger_error("it must be on a table");
	claude_trigger_check_kind(TRIGGER_FOR_ROW(t->tgtype),
							  TRIGGER_FOR_BEFORE(t->tgtype) || TRIGGER_FOR_AFTER(t->tgtype),
							  (TRIGGER_FOR_INSERT(t->tgtype) || TRIGGER_FOR_UPDATE(t->tgtype)) &&
							  !TRIGGER_FOR_DELETE(t->tgtype) && !TRIGGER_FOR_TRUNCATE(t->tgtype));
	claude_trigger_args(rel, t->tgnargs, t->tgargs, &args);
	if (TRIGGER_FOR_AFTER(t->tgtype) && !OidIsValid(ClaudePrimaryKeyIndex(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s has no primary key", RelationGetRelationName(rel)),
				 errhint("An AFTER claude_enrich_trigger writes results back by primary key.")));
}

Datum
claude_trigger_check(PG_FUNCTION_ARGS)
{
	Oid			nsp = claude_extension_schema(fcinfo);
	Oid			enrich;
	SPITupleTable *created;
	uint64		n;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "claude_trigger_check: not called as an event trigger");
	enrich = LookupFuncName(list_make2(makeString(get_namespace_name(nsp)),
									   makeString("claude_enrich_trigger")),
							0, NULL, true);
	if (!OidIsValid(enrich))
		PG_RETURN_VOID();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "claude_trigger_check: SPI_connect failed");
	/* not read-only: a snapshot of now, which sees the new trigger */
	if (SPI_execute("SELECT t.tgrelid, t.oid FROM pg_catalog.pg_event_trigger_ddl_commands() c "
					"JOIN pg_catalog.pg_trigger t ON t.oid OPERATOR(pg_catalog.=) c.objid "
					"WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "claude_trigger_check: could not read the new triggers");
	created = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(created->vals[i], created->tupdesc, 1, &isnull));
		Oid			tgoid = DatumGetObjectId(SPI_getbinval(created->vals[i], created->tupdesc, 2, &isnull));
		Relation	rel = relation_open(relid, AccessShareLock);

		for (int k = 0; rel->trigdesc && k < rel->trigdesc->numtriggers; k++)
			if (rel->trigdesc->triggers[k].tgoid == tgoid)
				check_trigger(rel, &rel->trigdesc->triggers[k], enrich);
		relation_close(rel, AccessShareLock);
	}
	SPI_finish();
	PG_RETURN_VOID();
}
