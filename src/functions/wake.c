/*
 * wake.c
 *		Telling the launcher, once a transaction commits, that its database
 *		has work: claude_jobs_kick_on_commit (trigger.c, claude_jobs_retry)
 *		and claude_work_arrived(), the statement trigger on claude_jobs and
 *		claude_batches that catches rows written by anyone else (pg_restore
 *		above all: its rows arrive after CREATE EXTENSION).
 *
 * Rows that arrive by the statement triggers alone (COPY or INSERT into the
 * tables, not through claude_enrich_trigger or claude_enrich) wake the
 * launcher only once their session has ended: a restore writes them before
 * it creates the tables' keys and triggers, which their jobs need.
 *
 * The commit callback only sets flags and a latch (claude_dbwork_wake):
 * an ERROR after the commit record would be a PANIC.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "miscadmin.h"

#include "common/pgcompat.h"
#include "functions/wake.h"
#include "shmem/dbqueue.h"

PG_FUNCTION_INFO_V1(claude_work_arrived);

static bool work_queued = false;
static bool rows_arrived = false;	/* by the statement triggers alone */
static bool callback_registered = false;

static void
wake_on_commit(XactEvent event, void *arg)
{
	/* prepared: the worker watches until COMMIT PREPARED (see jobs.c) */
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PREPARE) && work_queued)
		claude_dbwork_wake(MyDatabaseId);
	/* a restore: the launcher waits for this session to end (see above) */
	else if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PREPARE) && rows_arrived)
		claude_dbwork_wake_after(MyDatabaseId, MyProcPid);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PREPARE || event == XACT_EVENT_ABORT)
		work_queued = rows_arrived = false;
}

static void
register_callback(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(wake_on_commit, NULL);
		callback_registered = true;
	}
}

/* Tell the launcher, once this transaction commits, to look here. */
void
claude_jobs_kick_on_commit(void)
{
	register_callback();
	work_queued = true;
}

/* AFTER INSERT ... FOR EACH STATEMENT on claude_jobs and claude_batches. */
Datum
claude_work_arrived(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "claude_work_arrived: not called as a trigger");
	/* a database worker's own rows: it is here already */
	if (!AmBackgroundWorkerProcess())
	{
		register_callback();
		rows_arrived = true;
	}
	return PointerGetDatum(NULL);
}
