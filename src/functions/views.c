/*
 * views.c
 *		The functions behind the views over shared state: claude_usage's
 *		rows not yet flushed, and the trigger that makes every session read
 *		prices and budgets again.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgrprotos.h"

#include "shmem/area.h"
#include "shmem/usage.h"

PG_FUNCTION_INFO_V1(claude_usage_pending);
PG_FUNCTION_INFO_V1(claude_config_changed);

/*
 * claude_usage_pending(): usage of this database not yet in
 * claude_usage_log; a role sees its own rows only, a superuser all.
 */
Datum
claude_usage_pending(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	UsageFlushed *rows;
	int			n;
	bool		all = superuser();
	Oid			me = GetUserId();

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();
	n = claude_usage_pending_of(MyDatabaseId, &rows);
	for (int i = 0; i < n; i++)
	{
		UsageCounts *c = &rows[i].counts;
		Datum		values[9];
		bool		nulls[9] = {0};

		if (!all && rows[i].key.role != me)
			continue;
		values[0] = DateADTGetDatum(rows[i].key.day);
		values[1] = ObjectIdGetDatum(rows[i].key.role);
		values[2] = Int64GetDatum(c->requests);
		values[3] = Int64GetDatum(c->input);
		values[4] = Int64GetDatum(c->output);
		values[5] = Int64GetDatum(c->cache_write);
		values[6] = Int64GetDatum(c->cache_read);
		values[7] = DirectFunctionCall1(float8_numeric, Float8GetDatum(c->cost));
		values[8] = Int64GetDatum(c->unpriced);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Bumped at commit by a change of claude_prices or claude_budgets. */
static bool bump_at_commit = false;

static void
config_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && bump_at_commit)
		claude_usage_config_bump();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		bump_at_commit = false;
}

/* Statement trigger on claude_prices and claude_budgets. */
Datum
claude_config_changed(PG_FUNCTION_ARGS)
{
	static bool registered = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "claude_config_changed: not called as a trigger");
	if (!registered)
	{
		RegisterXactCallback(config_xact_callback, NULL);
		registered = true;
	}
	bump_at_commit = true;
	return PointerGetDatum(NULL);
}
