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
#include "functions/batch.h"
#include "client/cache.h"
#include "dbworker/dbworker.h"
#include "dbworker/jobs.h"
#include "shmem/slots.h"
#include "common/security.h"
#include "client/budget.h"
#include "common/spi.h"
#include "dbworker/flush.h"

#define IDLE_EXIT_MS	30000
#define START_RETRY_MS	10000
#define USAGE_FLUSH_MS	5000
#define RELEASE_WAIT_MS	5000
#define RELEASE_HOLD_MS	10000

typedef struct DbSlot
{
	Oid			dbid;			/* InvalidOid: unused */
	pid_t		pid;			/* its worker, 0 if none */
	Latch	   *latch;
	TimestampTz start_requested;	/* 0 unless a start is pending */
	TimestampTz held_until;		/* no worker before (see claude_dbwork_release) */
	dsa_pointer head;
	dsa_pointer tail;
} DbSlot;

typedef struct DbWorkShared
{
	slock_t		mutex;
	DbSlot		slots[CLAUDE_MAX_DATABASES];
} DbWorkShared;

static DbWorkShared *dbwork = NULL;
static int	my_slot = -1;

Size
claude_dbwork_shmem_size(void)
{
	return MAXALIGN(sizeof(DbWorkShared));
}

static void
init_dbwork(void *ptr)
{
	DbWorkShared *d = ptr;

	SpinLockInit(&d->mutex);
	for (int i = 0; i < CLAUDE_MAX_DATABASES; i++)
		d->slots[i].head = d->slots[i].tail = InvalidDsaPointer;
}

void
claude_dbwork_shmem_startup(void)
{
	dbwork = claude_shmem_struct("claude db workers", claude_dbwork_shmem_size(),
								 init_dbwork);
}

/*
 * A new record with room for the two texts behind it, or an invalid
 * pointer when shared memory is short.  Never raises: the HTTP worker and
 * transaction callbacks use it.
 */
dsa_pointer
claude_dbwork_record(ClaudeDbRecordKind kind,
					 const char *request, Size request_len,
					 const char *response, Size response_len,
					 ClaudeDbRecord **rec)
{
	Size		size = MAXALIGN(sizeof(ClaudeDbRecord)) + request_len + response_len + 2;
	dsa_pointer dp;
	char	   *p;

	dp = dsa_allocate_extended(claude_area(), size,
							   DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO);
	if (!DsaPointerIsValid(dp))
		return dp;
	*rec = dsa_get_address(claude_area(), dp);
	(*rec)->next = InvalidDsaPointer;
	(*rec)->kind = kind;
	(*rec)->lead = -1;
	(*rec)->request_len = request_len;
	(*rec)->response_len = response_len;
	p = (char *) *rec + MAXALIGN(sizeof(ClaudeDbRecord));
	if (request_len)
		memcpy(p, request, request_len);
	p[request_len] = '\0';
	p += request_len + 1;
	if (response_len)
		memcpy(p, response, response_len);
	p[response_len] = '\0';
	return dp;
}

static void
start_worker(int i, Oid dbid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "claude");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "claude_db_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "claude db worker %u", dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "claude db worker");
	worker.bgw_main_arg = Int32GetDatum(i);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		/* no free background worker slot now: try again later */
		SpinLockAcquire(&dbwork->mutex);
		dbwork->slots[i].start_requested = 0;
		SpinLockRelease(&dbwork->mutex);
	}
}

/*
 * Queue a record for a database, starting its worker if needed.  Returns
 * false (record freed) if no slot is left for another database.
 */
bool
claude_dbwork_enqueue(Oid dbid, dsa_pointer rec)
{
	dsa_area   *area = claude_area();
	int			i;
	int			free_slot = -1;
	Latch	   *latch = NULL;
	bool		start = false;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&dbwork->mutex);
	for (i = 0; i < CLAUDE_MAX_DATABASES; i++)
	{
		if (dbwork->slots[i].dbid == dbid)
			break;
		if (free_slot < 0 && dbwork->slots[i].dbid == InvalidOid)
			free_slot = i;
	}
	if (i == CLAUDE_MAX_DATABASES)
	{
		if (free_slot < 0)
		{
			SpinLockRelease(&dbwork->mutex);
			dsa_free(area, rec);
			return false;
		}
		i = free_slot;
		dbwork->slots[i].dbid = dbid;
	}
	else
	{
		DbSlot	   *s = &dbwork->slots[i];

		if (DsaPointerIsValid(s->tail))
			((ClaudeDbRecord *) dsa_get_address(area, s->tail))->next = rec;
	}
	{
		DbSlot	   *s = &dbwork->slots[i];

		if (!DsaPointerIsValid(s->head))
			s->head = rec;
		s->tail = rec;
		latch = s->latch;
		if (s->pid == 0 && now >= s->held_until &&
			(s->start_requested == 0 ||
			 TimestampDifferenceExceeds(s->start_requested, now, START_RETRY_MS)))
		{
			s->start_requested = now;
			start = true;
		}
	}
	SpinLockRelease(&dbwork->mutex);

	if (latch)
		SetLatch(latch);
	if (start)
		start_worker(i, dbid);
	return true;
}

/* HTTP worker, now and then: databases with work and no worker get one. */
void
claude_dbwork_ensure_running(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < CLAUDE_MAX_DATABASES; i++)
	{
		Oid			dbid = InvalidOid;

		SpinLockAcquire(&dbwork->mutex);
		if (dbwork->slots[i].dbid != InvalidOid && dbwork->slots[i].pid == 0 &&
			DsaPointerIsValid(dbwork->slots[i].head) && now >= dbwork->slots[i].held_until &&
			(dbwork->slots[i].start_requested == 0 ||
			 TimestampDifferenceExceeds(dbwork->slots[i].start_requested, now,
										START_RETRY_MS)))
		{
			dbwork->slots[i].start_requested = now;
			dbid = dbwork->slots[i].dbid;
		}
		SpinLockRelease(&dbwork->mutex);
		if (OidIsValid(dbid))
			start_worker(i, dbid);
	}
}

/* The slot of a database, or -1. */
static int
slot_of(Oid dbid)
{
	for (int i = 0; i < CLAUDE_MAX_DATABASES; i++)
		if (dbwork->slots[i].dbid == dbid)
			return i;
	return -1;
}

/*
 * Before a command that needs a database to itself (DROP DATABASE, ALTER
 * DATABASE ... SET TABLESPACE or RENAME, CREATE DATABASE ... TEMPLATE):
 * ask its worker to leave, start none for a while, and wait (cancellably,
 * a few seconds at most) until it is gone.  Its queued work stays queued.
 */
void
claude_dbwork_release(Oid dbid)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RELEASE_WAIT_MS);

	for (;;)
	{
		int			i;
		pid_t		pid = 0;

		SpinLockAcquire(&dbwork->mutex);
		if ((i = slot_of(dbid)) >= 0)
		{
			dbwork->slots[i].held_until =
				TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RELEASE_HOLD_MS);
			pid = dbwork->slots[i].pid;
		}
		SpinLockRelease(&dbwork->mutex);
		if (pid == 0 || GetCurrentTimestamp() >= deadline)
			return;
		(void) kill(pid, SIGTERM);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* After DROP DATABASE: its queued work has nowhere to go. */
void
claude_dbwork_forget(Oid dbid)
{
	dsa_pointer dp = InvalidDsaPointer;
	int			i;

	SpinLockAcquire(&dbwork->mutex);
	if ((i = slot_of(dbid)) >= 0 && dbwork->slots[i].pid == 0)
	{
		dp = dbwork->slots[i].head;
		dbwork->slots[i].head = dbwork->slots[i].tail = InvalidDsaPointer;
		dbwork->slots[i].dbid = InvalidOid;
		dbwork->slots[i].held_until = 0;
	}
	SpinLockRelease(&dbwork->mutex);
	while (DsaPointerIsValid(dp))
	{
		ClaudeDbRecord *rec = dsa_get_address(claude_area(), dp);
		dsa_pointer next = rec->next;

		if (rec->kind == DBREC_CACHE_WRITE)
			claude_cache_release_lead(dbid, rec->key, rec->lead);
		dsa_free(claude_area(), dp);
		dp = next;
	}
}

/* Wake (or start) the worker of a database to look for queued jobs. */
void
claude_jobs_kick(Oid dbid)
{
	ClaudeDbRecord *rec;
	dsa_pointer dp = claude_dbwork_record(DBREC_JOBS, NULL, 0, NULL, 0, &rec);

	if (DsaPointerIsValid(dp))
		(void) claude_dbwork_enqueue(dbid, dp);
}

/*
 * HTTP worker, at start: every database that accepts connections gets a
 * look for jobs left queued or running before a restart or crash.
 */
void
claude_dbwork_scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *dbs = NIL;
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			/* the list must outlive the transaction */
			MemoryContext old = MemoryContextSwitchTo(caller);

			dbs = lappend_oid(dbs, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);

	foreach(lc, dbs)
		claude_jobs_kick(lfirst_oid(lc));
	list_free(dbs);
}

/* ---- the worker ---- */

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

/* Take the whole queue of this worker's database. */
static dsa_pointer
take_queue(void)
{
	dsa_pointer head;

	SpinLockAcquire(&dbwork->mutex);
	head = dbwork->slots[my_slot].head;
	dbwork->slots[my_slot].head = dbwork->slots[my_slot].tail = InvalidDsaPointer;
	SpinLockRelease(&dbwork->mutex);
	return head;
}

static void
db_worker_exit(int code, Datum arg)
{
	SpinLockAcquire(&dbwork->mutex);
	dbwork->slots[my_slot].pid = 0;
	dbwork->slots[my_slot].latch = NULL;
	dbwork->slots[my_slot].start_requested = 0;
	SpinLockRelease(&dbwork->mutex);
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

	my_slot = DatumGetInt32(arg);
	claude_require_shared();
	SpinLockAcquire(&dbwork->mutex);
	dbid = dbwork->slots[my_slot].dbid;
	if (dbwork->slots[my_slot].pid != 0 || !OidIsValid(dbid))
	{
		/* another worker got there first */
		SpinLockRelease(&dbwork->mutex);
		proc_exit(0);
	}
	dbwork->slots[my_slot].pid = MyProcPid;
	dbwork->slots[my_slot].latch = MyLatch;
	SpinLockRelease(&dbwork->mutex);
	before_shmem_exit(db_worker_exit, (Datum) 0);

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
		dsa_pointer dp = take_queue();

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
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), IDLE_EXIT_MS))
		{
			bool		empty;

			SpinLockAcquire(&dbwork->mutex);
			empty = !DsaPointerIsValid(dbwork->slots[my_slot].head);
			if (empty)
			{
				dbwork->slots[my_slot].dbid = InvalidOid;
				dbwork->slots[my_slot].pid = 0;
				dbwork->slots[my_slot].latch = NULL;
			}
			SpinLockRelease(&dbwork->mutex);
			if (empty)
				break;
		}

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
