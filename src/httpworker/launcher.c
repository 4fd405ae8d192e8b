/*
 * launcher.c
 *		The one process that starts database workers: the HTTP worker, a step
 *		of its loop (claude_launcher_step).  Caller: worker.c.
 *
 * The HTTP worker is the one permanent process of ours, so launching from
 * it costs no background worker slot of its own.  A database gets a worker
 * when something wakes it (shmem/dbqueue.c: a committed job, a batch, a
 * record to write) or, at start-up and after a crash, when a probe finds
 * work there: a worker started to look, one database at a time, that
 * leaves at once where the extension is absent or nothing waits.  Rows a
 * restore writes into the work tables wake it once the restoring session
 * has ended (functions/wake.c).  When
 * every slot is taken the start is tried again each second, and said once
 * in the log until it succeeds.  Databases that asked for a worker while
 * none could start are not lost if this process restarts: the shared
 * "probed" mark is cleared, and the next launcher looks at every database.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "httpworker/launcher.h"
#include "shmem/dbqueue.h"

#define WAKES_PER_STEP	64
#define TICK_MS			1000
#define AFTER_LIMIT_MS	600000	/* a session that writes rows for longer: start anyway */

/* a wake-up for when a session has ended (rows restored) */
typedef struct WakeAfter
{
	Oid			dbid;
	int			pid;
	TimestampTz since;
} WakeAfter;

static MemoryContext launcher_cxt = NULL;
static List *to_probe = NIL;	/* databases still to look at */
static List *retry = NIL;		/* databases whose worker could not start */
static List *after = NIL;		/* WakeAfters */
static bool loaded = false;		/* to_probe filled by this process */
static bool said_full = false;	/* "no slot free" logged, not yet resolved */
static int	failed_starts = 0;	/* in a row, no start between */
static TimestampTz last_tick = 0;

void
claude_launcher_init(void)
{
	launcher_cxt = AllocSetContextCreate(TopMemoryContext, "claude launcher",
										 ALLOCSET_SMALL_SIZES);
	claude_dbwork_launcher_attach(MyLatch);
}

/* At exit: wake-ups set no latch of a process that is gone. */
void
claude_launcher_shutdown(void)
{
	claude_dbwork_launcher_attach(NULL);
}

/* Every database that takes connections (not templates), in launcher_cxt. */
static void
add_all_databases(void)
{
	Relation	rel = table_open(DatabaseRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
	HeapTuple	tup;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			MemoryContext old = MemoryContextSwitchTo(launcher_cxt);

			to_probe = list_append_unique_oid(to_probe, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Whether a database (still) exists and takes connections. */
static bool
database_ok(Oid dbid)
{
	HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dbid));
	bool		ok = false;

	if (HeapTupleIsValid(tup))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		ok = db->datallowconn && !db->datistemplate;
		ReleaseSysCache(tup);
	}
	return ok;
}

/*
 * No start now.  The first failure in a row is not told: the slot of a
 * worker that has just left is free once the postmaster has seen it go.
 */
static void
no_slot(const char *why)
{
	if (said_full || ++failed_starts < 2)
		return;
	said_full = true;
	ereport(LOG,
			(errmsg("claude: a database worker cannot start now: %s", why),
			 errdetail("The launcher tries again every second and says so once."),
			 errhint("Raise \"max_worker_processes\" if this persists.")));
}

/*
 * Start the worker of a database (probe: to look only) unless it has one.
 * Returns false when it must be tried again later; *started: a new one.
 */
static bool
start_worker(Oid dbid, bool probe, bool *started)
{
	BackgroundWorker worker;
	int			entry;
	uint32		generation;

	*started = false;
	switch (claude_dbwork_want(dbid, probe, &entry, &generation))
	{
		case DBWORK_RUNNING:
			return true;
		case DBWORK_HELD:
			return false;
		case DBWORK_NO_ENTRY:
			no_slot("every worker entry is taken");
			return false;
		case DBWORK_START:
			break;
	}
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "claude");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "claude_db_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "claude db worker %u", dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "claude db worker");
	worker.bgw_main_arg = Int32GetDatum(entry);
	memcpy(worker.bgw_extra, &generation, sizeof(generation));
	if (!RegisterDynamicBackgroundWorker(&worker, NULL))
	{
		claude_dbwork_start_failed(entry, generation);
		no_slot("no background worker slot is free");
		return false;
	}
	*started = true;
	failed_starts = 0;
	said_full = false;
	return true;
}

/* How long the HTTP worker may sleep for the launcher's sake; -1: no limit. */
long
claude_launcher_timeout_ms(void)
{
	return (retry != NIL || to_probe != NIL || after != NIL) ? TICK_MS : -1;
}

/* Keep wake-ups for when their sessions end; return those due now. */
static List *
due_after(ClaudeDbWakeAfter *taken, int ntaken, bool tick)
{
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext old = MemoryContextSwitchTo(launcher_cxt);
	List	   *due = NIL;
	ListCell   *lc;

	for (int i = 0; i < ntaken; i++)
	{
		WakeAfter  *w = palloc(sizeof(WakeAfter));

		w->dbid = taken[i].dbid;
		w->pid = taken[i].pid;
		w->since = now;
		after = lappend(after, w);
	}
	foreach(lc, after)
	{
		WakeAfter  *w = lfirst(lc);

		if (!tick)
			break;
		if (BackendPidGetProc(w->pid) == NULL ||
			TimestampDifferenceExceeds(w->since, now, AFTER_LIMIT_MS))
		{
			due = lappend_oid(due, w->dbid);
			after = foreach_delete_current(after, lc);
			pfree(w);
		}
	}
	MemoryContextSwitchTo(old);
	return due;
}

/* Wake or start the worker of a database; if it cannot be now, later. */
static void
start_or_retry(Oid dbid, bool probe)
{
	bool		started;

	if (database_ok(dbid) && !start_worker(dbid, probe, &started))
	{
		MemoryContext old = MemoryContextSwitchTo(launcher_cxt);

		retry = list_append_unique_oid(retry, dbid);
		MemoryContextSwitchTo(old);
	}
}

/*
 * A step of the launcher: cheap unless a database was woken or a second
 * has passed.  Never while in recovery: a standby runs no worker.
 */
void
claude_launcher_step(void)
{
	Oid			woken[WAKES_PER_STEP];
	int			nwoken;
	ClaudeDbWakeAfter taken[CLAUDE_DBWORK_AFTER_MAX];
	int			ntaken;
	List	   *due;
	bool		rescan;
	bool		probed;
	bool		probing;
	bool		tick;
	List	   *again;
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;

	if (RecoveryInProgress())
		return;
	tick = TimestampDifferenceExceeds(last_tick, GetCurrentTimestamp(), TICK_MS);
	nwoken = claude_dbwork_take_wakes(woken, WAKES_PER_STEP, &rescan, &probed,
									  taken, &ntaken);
	due = due_after(taken, ntaken, tick);
	/* probes go on as soon as the last one is over */
	if (nwoken == 0 && !rescan && !tick && to_probe == NIL)
		return;
	if (tick)
		last_tick = GetCurrentTimestamp();
	probing = claude_dbwork_maintain();

	/* more woken than taken: next time round, at once */
	if (nwoken == WAKES_PER_STEP)
		SetLatch(MyLatch);
	if (nwoken == 0 && due == NIL && !(rescan || (!probed && !loaded)) &&
		(retry == NIL || !tick) && (to_probe == NIL || probing))
		return;

	again = tick ? retry : NIL;
	if (tick)
		retry = NIL;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	if (rescan || (!probed && !loaded))
	{
		add_all_databases();
		loaded = true;
	}
	for (int i = 0; i < nwoken; i++)
		start_or_retry(woken[i], false);
	foreach(lc, again)
		start_or_retry(lfirst_oid(lc), false);
	list_free(again);
	/* rows restored, their session gone: a worker looks (and leaves if idle) */
	foreach(lc, due)
		start_or_retry(lfirst_oid(lc), true);
	list_free(due);

	/* one probe at a time: parallel queries keep their workers */
	while (!probing && to_probe != NIL)
	{
		Oid			dbid = linitial_oid(to_probe);
		bool		started = false;

		if (database_ok(dbid) && !start_worker(dbid, true, &started))
			break;				/* stays first: tried again next second */
		/* one that has a worker needs no probe: on to the next */
		probing = started;
		to_probe = list_delete_first(to_probe);
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);

	/* what waits here is lost if this process goes: the next one looks at all */
	if (loaded || probed)
		claude_dbwork_set_probed(retry == NIL && to_probe == NIL && after == NIL);
}
