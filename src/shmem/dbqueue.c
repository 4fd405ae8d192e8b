/*
 * dbqueue.c
 *		Work handed to per-database workers through shared memory: one queue
 *		of records per database (paid replies to cache, hits to count, a
 *		look for jobs), and starting a database's worker when its work has
 *		none.  Callers: whoever queues work; the worker that drains it.
 *
 * Whoever queues work for a database that has no worker starts one; the
 * HTTP worker also restarts the worker of any database with work left
 * (after a crash, say).  A worker leaves after a while without work.
 */
#include "postgres.h"

#include <signal.h>

#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"

#include "storage/proc.h"
#include "storage/spin.h"

#include "common/waits.h"
#include "shmem/area.h"
#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"

#define START_RETRY_MS	10000
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
						 10, claude_wait_event(CLAUDE_WAIT_DB_WORKER_EXIT));
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

/* HTTP worker: hand a successful reply to the database's worker. */
void
claude_cache_store(const ClaudeRequest *req, const char *response, Size len)
{
	ClaudeDbRecord *rec;
	dsa_pointer dp;

	if (!OidIsValid(req->cache_dbid))
		return;
	dp = claude_dbwork_record(DBREC_CACHE_WRITE, req->body, req->body_len,
							  response, len, &rec);
	if (DsaPointerIsValid(dp))
	{
		rec->nsp = req->cache_nsp;
		memcpy(rec->key, req->cache_key, CLAUDE_CACHE_KEY_LEN);
		rec->ttl = req->cache_ttl;
		rec->lead = req->cache_lead;
		rec->at = GetCurrentTimestamp();
		if (claude_dbwork_enqueue(req->cache_dbid, dp))
			return;
	}
	elog(LOG, "claude: could not hand a reply to the cache writer");
	claude_cache_release_lead(req->cache_dbid, req->cache_key, req->cache_lead);
}

/* ---- the database's worker ---- */

/* The worker: take the whole queue of its database. */
dsa_pointer
claude_dbwork_take(void)
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

/*
 * The worker of a slot takes it: returns the slot's database, or
 * InvalidOid when another worker got there first.
 */
Oid
claude_dbwork_attach(int slot)
{
	Oid			dbid;

	my_slot = slot;
	SpinLockAcquire(&dbwork->mutex);
	dbid = dbwork->slots[my_slot].dbid;
	if (dbwork->slots[my_slot].pid != 0 || !OidIsValid(dbid))
	{
		SpinLockRelease(&dbwork->mutex);
		return InvalidOid;
	}
	dbwork->slots[my_slot].pid = MyProcPid;
	dbwork->slots[my_slot].latch = MyLatch;
	SpinLockRelease(&dbwork->mutex);
	before_shmem_exit(db_worker_exit, (Datum) 0);
	return dbid;
}

/* An idle worker leaves its slot, unless work arrived meanwhile. */
bool
claude_dbwork_leave_if_idle(void)
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
	return empty;
}
