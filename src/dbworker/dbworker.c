/*
 * dbworker.c
 *		Per-database background workers, started on demand.
 *
 * Work that must happen in a database but outside any caller's transaction
 * (storing paid replies in the cache, counting cache hits) is queued in
 * shared memory per database.  Whoever queues work for a database that has
 * no worker starts one; the HTTP worker also restarts the worker of any
 * database with work left (after a crash, say).  A worker exits after a
 * while without work.  Each record is applied in a transaction of its own,
 * so one bad record cannot hold back the others.
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "client/budget.h"
#include "client/cache.h"
#include "common/security.h"
#include "common/spi.h"
#include "dbworker/dbworker.h"
#include "dbworker/flush.h"
#include "dbworker/jobs.h"
#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"
#include "shmem/slots.h"
#include "dbworker/batch_poll.h"



#define IDLE_EXIT_MS	30000
#define USAGE_FLUSH_MS	5000

/*
 * Store a reply in a claude_cache table (server encoding), replacing an
 * older entry of the same key.  ttl in seconds, 0: never expires.
 */
void
claude_cache_insert(const char *table, const uint8 *key, const char *request,
					const char *response, int ttl)
{
	Oid			types[4] = {BYTEAOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[4];
	bytea	   *k = palloc(VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	char	   *sql;

	SET_VARSIZE(k, VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	memcpy(VARDATA(k), key, CLAUDE_CACHE_KEY_LEN);
	values[0] = PointerGetDatum(k);
	values[1] = CStringGetTextDatum(request);
	values[2] = CStringGetTextDatum(response);
	values[3] = Int32GetDatum(ttl);

	sql = psprintf("INSERT INTO %s AS c (key, model, request, response, input_tokens, "
				   "output_tokens, created_at, expires_at, hits) "
				   "SELECT $1, r->>'model', $2::jsonb, r, (r->'usage'->>'input_tokens')::int, "
				   "(r->'usage'->>'output_tokens')::int, now(), "
				   "CASE WHEN $4 > 0 THEN now() + $4 * interval '1 second' END, 0 "
				   "FROM (SELECT $3::jsonb AS r) s "
				   "ON CONFLICT (key) DO UPDATE SET model = excluded.model, "
				   "request = excluded.request, response = excluded.response, "
				   "input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
				   "created_at = excluded.created_at, expires_at = excluded.expires_at", table);
	if (SPI_execute_with_args(sql, 4, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "claude: could not store a reply in %s", table);
}

static void
apply_write(ClaudeDbRecord *rec, const char *table)
{
	const char *request = (const char *) rec + MAXALIGN(sizeof(ClaudeDbRecord));
	const char *response = request + rec->request_len + 1;

	claude_cache_insert(table, rec->key,
						pg_any_to_server(request, rec->request_len, PG_UTF8),
						pg_any_to_server(response, rec->response_len, PG_UTF8),
						rec->ttl);
}

static void
apply_hits(ClaudeDbRecord *rec, const char *table)
{
	Oid			types[3] = {BYTEAOID, INT8OID, TIMESTAMPTZOID};
	Datum		values[3];
	bytea	   *key = palloc(VARHDRSZ + sizeof(rec->key));

	SET_VARSIZE(key, VARHDRSZ + sizeof(rec->key));
	memcpy(VARDATA(key), rec->key, sizeof(rec->key));
	values[0] = PointerGetDatum(key);
	values[1] = Int64GetDatum(rec->hits);
	values[2] = TimestampTzGetDatum(rec->at);
	if (SPI_execute_with_args(psprintf("UPDATE %s SET hits = hits + $2, "
									   "last_hit_at = greatest(last_hit_at, $3) "
									   "WHERE key = $1", table),
							  3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not count cache hits in %s", table);
}

/*
 * After an error: log it and abort.  The abort gives back every request
 * slot this process owns, the job requests in flight included, so those
 * jobs are queued again.
 */
static void
recover(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	claude_jobs_reset();
	claude_batch_poll_reset();
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
		char	   *nspname;

		claude_xact_begin();
		pgstat_report_activity(STATE_RUNNING, "claude: storing cache entries");
		nspname = get_namespace_name(rec->nsp);
		if (nspname != NULL)
		{
			char	   *table = quote_qualified_identifier(nspname, "claude_cache");

			if (rec->kind == DBREC_CACHE_WRITE)
				apply_write(rec, table);
			else
				apply_hits(rec, table);
		}
		claude_xact_end();
	}
	PG_CATCH();
	{
		recover(cxt);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* A round of the job queue or the batches; true if it has work left. */
static bool
run_step(MemoryContext cxt, bool (*step) (void))
{
	bool		more = false;

	PG_TRY();
	{
		more = step();
	}
	PG_CATCH();
	{
		recover(cxt);
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

void
claude_db_worker_main(Datum arg)
{
	Oid			dbid;
	TimestampTz idle_since = GetCurrentTimestamp();
	TimestampTz flushed_at = 0;
	MemoryContext work_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	claude_require_shared();
	dbid = claude_dbwork_attach(DatumGetInt32(arg));
	if (!OidIsValid(dbid))
		proc_exit(0);			/* another worker got there first */

	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	/* not the database's default: its owner may have set one for us */
	SetConfigOption("search_path", CLAUDE_SAFE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION);
	/* keys of jobs and batches parse as their sessions printed them */
	claude_fix_output_settings();
	work_cxt = AllocSetContextCreate(TopMemoryContext, "claude db worker",
									 ALLOCSET_DEFAULT_SIZES);
	if (!RecoveryInProgress())
		claude_jobs_start();

	for (;;)
	{
		dsa_pointer dp = claude_dbwork_take();

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
			bool		jobs = run_step(work_cxt, claude_jobs_step);
			bool		batches = run_step(work_cxt, claude_batch_poll_step);

			if (jobs || batches)
				idle_since = GetCurrentTimestamp();
			if (TimestampDifferenceExceeds(flushed_at, GetCurrentTimestamp(), USAGE_FLUSH_MS))
			{
				(void) run_step(work_cxt, flush_usage);
				flushed_at = GetCurrentTimestamp();
			}
			MemoryContextReset(work_cxt);
		}

		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* leave when idle, unless work arrived meanwhile */
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), IDLE_EXIT_MS) &&
			claude_dbwork_leave_if_idle())
			break;

		/* results being written back go on at once */
		if (!claude_batch_poll_busy())
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* what this database used since the last flush survives the exit */
	if (!RecoveryInProgress())
		(void) run_step(work_cxt, flush_usage);
	proc_exit(0);
}
