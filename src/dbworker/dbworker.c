/*
 * dbworker.c
 *		The per-database background worker's main loop: drain the records
 *		queued for its database (shmem/dbqueue.c), run the job queue and the
 *		batches a step at a time, flush usage, leave when idle.
 *
 * Work that must happen in a database but outside any caller's transaction
 * (storing paid replies in the cache, counting cache hits) is queued in
 * shared memory per database.  Only the launcher (httpworker/launcher.c)
 * starts a worker: when a database is woken, or to probe one after a start
 * or a crash.  Where the extension is absent a worker leaves at once; a
 * probe that finds nothing to do leaves at once; any other worker leaves
 * after IDLE_EXIT_MS without work, and when the launcher asks (DROP
 * DATABASE).  Each record is applied in a transaction of its own, so one
 * bad record cannot hold back the others.
 *
 * Each step of the loop (a record, a round of jobs, of batches, the usage
 * flush) is contained: its pieces run in subtransactions of their own, and
 * an error that still aborts a step costs that step's own work alone.  The
 * requests in flight are kept across aborts (claude_slot_keep), so no
 * error re-sends or cancels a request of another step.
 */
#include "postgres.h"

#include <signal.h>

#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"

#include "utils/guc.h"
#include "utils/memutils.h"

#include "utils/timestamp.h"

#include "access/tableam.h"

#include "common/security.h"
#include "common/spi.h"
#include "common/waits.h"
#include "dbworker/dbworker.h"
#include "dbworker/flush.h"
#include "dbworker/jobs.h"
#include "shmem/area.h"
#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"

#include "shmem/slots.h"
#include "dbworker/batch_poll.h"
#include "dbworker/cachewrite.h"

#define IDLE_EXIT_MS	30000
#define USAGE_FLUSH_MS	5000

/*
 * After an error: log it and abort.  The requests in flight stay (their
 * slots are kept); aborted, the step that raised makes up for what its
 * transaction had recorded (aborted: NULL for a step with nothing to).
 */
static void
recover(MemoryContext cxt, void (*aborted) (void))
{
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	if (aborted)
		aborted();
}

/* Apply one record in a transaction of its own; errors are logged. */
static void
apply_record(ClaudeDbRecord *rec)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (RecoveryInProgress() || rec->kind == DBREC_JOBS)
		return;					/* a standby cannot write; jobs: a wake-up */

	PG_TRY();
	{
		claude_xact_begin();
		pgstat_report_activity(STATE_RUNNING, "claude: storing cache entries");
		claude_cache_apply(rec);
		claude_xact_end();
	}
	PG_CATCH();
	{
		recover(cxt, NULL);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* A round of the job queue or the batches; true if it has work left. */
static bool
run_step(MemoryContext cxt, bool (*step) (void), void (*aborted) (void))
{
	volatile bool more = false;

	PG_TRY();
	{
		more = step();
	}
	PG_CATCH();
	{
		recover(cxt, aborted);
		more = true;
	}
	PG_END_TRY();
	return more;
}

static bool
flush_usage(void)
{
	claude_usage_flush();
	return false;
}

static bool
load_usage(void)
{
	claude_usage_load_today();
	return false;
}

/* Whether the extension is installed here (a standby: cannot tell, no). */
static bool
extension_here(void)
{
	bool		found;

	claude_xact_begin();
	found = claude_extension_find(NULL, NULL);
	claude_xact_end();
	return found;
}

void
claude_db_worker_main(Datum arg)
{
	Oid			dbid;
	bool		probe = false;
	uint32		generation;
	TimestampTz idle_since = GetCurrentTimestamp();
	TimestampTz flushed_at = 0;
	MemoryContext work_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	claude_require_shared();
	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));
	dbid = claude_dbwork_attach(DatumGetInt32(arg), generation, &probe);
	if (!OidIsValid(dbid))
		proc_exit(0);			/* the launcher gave up on this start */

	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	/* not the database's default: its owner may have set one for us */
	SetConfigOption("search_path", CLAUDE_SAFE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION);
	/* keys of jobs and batches parse as their sessions printed them */
	claude_fix_output_settings();
	work_cxt = AllocSetContextCreate(TopMemoryContext, "claude db worker",
									 ALLOCSET_DEFAULT_SIZES);
	/* no extension, nothing to do: no worker lingers here */
	if (!extension_here())
	{
		/* its records cannot be applied: none is left to wake a new worker */
		claude_dbwork_discard();
		proc_exit(0);
	}
	if (!RecoveryInProgress())
	{
		/* budgets of every database count what was spent here today */
		(void) run_step(work_cxt, load_usage, NULL);
		claude_jobs_start();
	}

	for (;;)
	{
		dsa_pointer dp = claude_dbwork_take();
		bool		worked = DsaPointerIsValid(dp);

		while (DsaPointerIsValid(dp))
		{
			ClaudeDbRecord *rec = dsa_get_address(claude_area(), dp);
			dsa_pointer next = rec->next;
			MemoryContext old = MemoryContextSwitchTo(work_cxt);

			apply_record(rec);
			MemoryContextSwitchTo(old);
			MemoryContextReset(work_cxt);
			if (rec->kind == DBREC_CACHE_WRITE)
				claude_cache_release_lead(dbid, rec->key, rec->lead);
			dsa_free(claude_area(), dp);
			dp = next;
			idle_since = GetCurrentTimestamp();
		}

		if (!RecoveryInProgress())
		{
			bool		jobs = run_step(work_cxt, claude_jobs_step, claude_jobs_aborted);
			bool		batches = run_step(work_cxt, claude_batch_poll_step, claude_batch_poll_aborted);

			if (jobs || batches)
				idle_since = GetCurrentTimestamp();
			worked |= jobs || batches;
			if (TimestampDifferenceExceeds(flushed_at, GetCurrentTimestamp(), USAGE_FLUSH_MS))
			{
				(void) run_step(work_cxt, flush_usage, NULL);
				flushed_at = GetCurrentTimestamp();
			}
			MemoryContextReset(work_cxt);
		}

		/* a probe that found work stays as the database's worker */
		if (probe && worked)
		{
			claude_dbwork_found_work();
			probe = false;
		}
		if (ShutdownRequestPending || claude_dbwork_stopping())
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			claude_jobs_reloaded();
		}

		/* leave when idle (a probe: at once), unless work arrived meanwhile */
		if ((probe ||
			 TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), IDLE_EXIT_MS)) &&
			claude_dbwork_leave_if_idle())
			break;

		/* results being written back go on at once */
		if (!claude_batch_poll_busy())
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, claude_wait_event(CLAUDE_WAIT_DB_WORKER_MAIN));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* what this database used since the last flush survives the exit */
	if (!RecoveryInProgress())
		(void) run_step(work_cxt, flush_usage, NULL);
	proc_exit(0);
}
