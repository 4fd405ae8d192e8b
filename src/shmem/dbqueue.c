/*
 * dbqueue.c
 *		Work handed to per-database workers through shared memory, and the
 *		table of those workers.  Callers: whoever queues work or wakes a
 *		database (any process, commit callbacks included: claude_dbwork_wake);
 *		the launcher (httpworker/launcher.c), the only one that starts a
 *		worker; the workers themselves; the utility hook (release, forget).
 *
 * Two locks.  A spinlock guards a small fixed array of databases that want
 * the launcher's attention and the launcher's latch: a wake-up touches
 * nothing else, so it is safe from a commit callback (no DSA, no ERROR).
 * When the array is full, the launcher is told to look at every database
 * instead: a wake-up is never dropped.  An LWLock (tranche
 * "claude_dbqueue") guards the records (one list in the DSA area, each
 * record naming its database) and the workers' table, one entry per
 * possible background worker, so it cannot run out either.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "common/waits.h"
#include "shmem/area.h"
#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"

#define WAKE_MAX		64		/* databases awaiting the launcher; more: look at all */
#define HOLD_MAX		16		/* databases held at once (DROP DATABASE ...) */
#define AFTER_MAX		CLAUDE_DBWORK_AFTER_MAX	/* wake-ups waiting for a session to end */
#define HOLD_MS			10000	/* no worker for a held database for this long */
#define ATTACH_MS		60000	/* a started worker that never attached: forgotten */

typedef struct DbWorker
{
	Oid			dbid;			/* InvalidOid: free */
	uint32		generation;		/* of this use of the entry */
	pid_t		pid;			/* 0 until the worker attaches */
	Latch	   *latch;
	bool		probe;			/* started to look; leaves at once if idle */
	bool		wake;			/* look again before leaving */
	bool		stop;			/* leave now: its database is held */
	TimestampTz started_at;
} DbWorker;

typedef struct DbHold
{
	Oid			dbid;
	TimestampTz until;
} DbHold;

typedef struct DbWorkShared
{
	/* wake-ups: the spinlock, fixed memory only */
	slock_t		wake_mutex;
	Latch	   *launcher_latch;
	bool		rescan;			/* look at every database */
	bool		probed;			/* every database looked at since start-up */
	int			nwake;
	Oid			wake[WAKE_MAX];
	int			nafter;
	ClaudeDbWakeAfter after[AFTER_MAX];

	/* the rest: the LWLock */
	LWLock	   *lock;
	dsa_pointer head;			/* records of every database, oldest first */
	dsa_pointer tail;
	DbHold		holds[HOLD_MAX];
	int			nworkers;
	DbWorker	workers[FLEXIBLE_ARRAY_MEMBER];
} DbWorkShared;

static DbWorkShared *dbwork = NULL;
static int	my_entry = -1;
static uint32 my_generation;

static Size
dbwork_size(int nworkers)
{
	return MAXALIGN(add_size(offsetof(DbWorkShared, workers),
							 mul_size(sizeof(DbWorker), nworkers)));
}

/* One entry per background worker the server can run: never too few. */
void
claude_dbwork_request_shmem(void)
{
	RequestAddinShmemSpace(dbwork_size(max_worker_processes));
}

static void
init_dbwork(void *ptr)
{
	DbWorkShared *d = ptr;

	memset(d, 0, dbwork_size(max_worker_processes));
	SpinLockInit(&d->wake_mutex);
	d->lock = claude_named_lock(CLAUDE_LOCK_DBQUEUE);
	d->head = d->tail = InvalidDsaPointer;
	d->nworkers = max_worker_processes;
}

void
claude_dbwork_shmem_startup(void)
{
	dbwork = claude_shmem_struct("claude db workers", dbwork_size(max_worker_processes),
								 init_dbwork);
}

/* ---- wake-ups: from anywhere ---- */

/*
 * Tell the launcher a database may have work.  Only a spinlock over fixed
 * memory and a latch: safe in a commit callback.  The latch is a PGPROC's,
 * which outlives its process: at worst a stray wake-up.
 */
void
claude_dbwork_wake(Oid dbid)
{
	Latch	   *latch;
	int			i;

	if (dbwork == NULL || !OidIsValid(dbid))
		return;					/* not preloaded: no launcher */
	SpinLockAcquire(&dbwork->wake_mutex);
	for (i = 0; i < dbwork->nwake; i++)
		if (dbwork->wake[i] == dbid)
			break;
	if (i == dbwork->nwake)
	{
		if (dbwork->nwake < WAKE_MAX)
			dbwork->wake[dbwork->nwake++] = dbid;
		else
			dbwork->rescan = true;
	}
	latch = dbwork->launcher_latch;
	SpinLockRelease(&dbwork->wake_mutex);
	if (latch)
		SetLatch(latch);
}

/* A worker left or found work: the launcher may go on (the next probe). */
static void
poke_launcher(void)
{
	claude_set_latch_guarded(&dbwork->wake_mutex, &dbwork->launcher_latch);
}

/*
 * Rows written into the work tables by a session of its own (a restore):
 * wake the launcher for the database once that session has ended, when
 * the rest (the tables' triggers, keys) is restored too.  Commit callbacks
 * too.  Full: a plain wake-up, never a drop.
 */
void
claude_dbwork_wake_after(Oid dbid, int pid)
{
	bool		queued = false;
	int			i;

	if (dbwork == NULL)
		return;					/* not preloaded: no launcher */
	SpinLockAcquire(&dbwork->wake_mutex);
	for (i = 0; i < dbwork->nafter; i++)
		if (dbwork->after[i].dbid == dbid && dbwork->after[i].pid == pid)
			break;
	if (i < dbwork->nafter)
		queued = true;
	else if (dbwork->nafter < AFTER_MAX)
	{
		dbwork->after[dbwork->nafter].dbid = dbid;
		dbwork->after[dbwork->nafter++].pid = pid;
		queued = true;
	}
	SpinLockRelease(&dbwork->wake_mutex);
	if (!queued)
		claude_dbwork_wake(dbid);
}

/* Wake the worker of a database to look for queued jobs and batches. */
void
claude_jobs_kick(Oid dbid)
{
	claude_dbwork_wake(dbid);
}

static DbWorker *
worker_of(Oid dbid)
{
	for (int i = 0; i < dbwork->nworkers; i++)
		if (dbwork->workers[i].dbid == dbid)
			return &dbwork->workers[i];
	return NULL;
}

/*
 * Queue a record for a database: its worker is woken, or the launcher is
 * asked for one.  Never drops the record.  The tail is resolved under the
 * LWLock (an ERROR there releases it), never under a spinlock.
 */
void
claude_dbwork_enqueue(Oid dbid, dsa_pointer dp)
{
	ClaudeDbRecord *rec = dsa_get_address(claude_area(), dp);
	DbWorker   *w;
	Latch	   *latch = NULL;

	rec->dbid = dbid;
	rec->next = InvalidDsaPointer;
	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	if (DsaPointerIsValid(dbwork->tail))
		((ClaudeDbRecord *) dsa_get_address(claude_area(), dbwork->tail))->next = dp;
	else
		dbwork->head = dp;
	dbwork->tail = dp;
	w = worker_of(dbid);
	if (w && !w->stop)
	{
		w->wake = true;
		latch = w->latch;
	}
	LWLockRelease(dbwork->lock);
	if (latch)
		SetLatch(latch);
	else
		claude_dbwork_wake(dbid);
}

/* ---- the launcher (httpworker/launcher.c) ---- */

/* The launcher's latch: wake-ups set it. */
void
claude_dbwork_launcher_attach(Latch *latch)
{
	SpinLockAcquire(&dbwork->wake_mutex);
	dbwork->launcher_latch = latch;
	SpinLockRelease(&dbwork->wake_mutex);
}

/*
 * Take the databases woken since the last call (at most max); *rescan:
 * every database must be looked at (wake-ups overflowed); *probed: every
 * database has been looked at since shared memory was made.
 */
int
claude_dbwork_take_wakes(Oid *dbs, int max, bool *rescan, bool *probed,
						 ClaudeDbWakeAfter *after, int *nafter)
{
	int			n;

	SpinLockAcquire(&dbwork->wake_mutex);
	n = Min(dbwork->nwake, max);
	memcpy(dbs, dbwork->wake, n * sizeof(Oid));
	memmove(dbwork->wake, dbwork->wake + n, (dbwork->nwake - n) * sizeof(Oid));
	dbwork->nwake -= n;
	*rescan = dbwork->rescan;
	dbwork->rescan = false;
	*probed = dbwork->probed;
	*nafter = dbwork->nafter;
	memcpy(after, dbwork->after, dbwork->nafter * sizeof(ClaudeDbWakeAfter));
	dbwork->nafter = 0;
	SpinLockRelease(&dbwork->wake_mutex);
	return n;
}

/* Every database has been looked at (or must be again: false). */
void
claude_dbwork_set_probed(bool probed)
{
	SpinLockAcquire(&dbwork->wake_mutex);
	dbwork->probed = probed;
	SpinLockRelease(&dbwork->wake_mutex);
}

static DbHold *
hold_of(Oid dbid, TimestampTz now)
{
	for (int i = 0; i < HOLD_MAX; i++)
		if (dbwork->holds[i].dbid == dbid && dbwork->holds[i].until > now)
			return &dbwork->holds[i];
	return NULL;
}

/*
 * A database wants a worker (probe: only to look).  Its worker, if any, is
 * woken (DBWORK_RUNNING); a held one gets none (DBWORK_HELD); else an entry
 * is reserved for a new worker (DBWORK_START, *entry and *generation to
 * hand it).
 */
ClaudeDbWant
claude_dbwork_want(Oid dbid, bool probe, int *entry, uint32 *generation)
{
	TimestampTz now = GetCurrentTimestamp();
	DbWorker   *w;
	Latch	   *latch = NULL;
	ClaudeDbWant result = DBWORK_NO_ENTRY;

	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	if ((w = worker_of(dbid)) != NULL)
	{
		/* a stopping worker: its database is held, no new one yet */
		if (!w->stop)
		{
			w->wake = true;
			latch = w->latch;
		}
		result = w->stop ? DBWORK_HELD : DBWORK_RUNNING;
	}
	else if (hold_of(dbid, now))
		result = DBWORK_HELD;
	else
	{
		for (int i = 0; i < dbwork->nworkers; i++)
		{
			w = &dbwork->workers[i];
			if (OidIsValid(w->dbid))
				continue;
			w->dbid = dbid;
			w->generation++;
			w->pid = 0;
			w->latch = NULL;
			w->probe = probe;
			w->wake = false;
			w->stop = false;
			w->started_at = now;
			*entry = i;
			*generation = w->generation;
			result = DBWORK_START;
			break;
		}
	}
	LWLockRelease(dbwork->lock);
	if (latch)
		SetLatch(latch);
	return result;
}

/* The worker of an entry could not be started: the entry is free again. */
void
claude_dbwork_start_failed(int entry, uint32 generation)
{
	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	if (dbwork->workers[entry].generation == generation &&
		dbwork->workers[entry].pid == 0)
		dbwork->workers[entry].dbid = InvalidOid;
	LWLockRelease(dbwork->lock);
}

/*
 * Now and then: workers of held databases are told to leave, entries of
 * workers that never came are freed.  Returns whether a probe is still
 * under way (it has not left, nor found work).
 */
bool
claude_dbwork_maintain(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Latch	   *latches[HOLD_MAX];
	int			nlatches = 0;
	bool		probing = false;

	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	for (int i = 0; i < dbwork->nworkers; i++)
	{
		DbWorker   *w = &dbwork->workers[i];

		if (!OidIsValid(w->dbid))
			continue;
		if (w->pid == 0 && TimestampDifferenceExceeds(w->started_at, now, ATTACH_MS))
		{
			w->dbid = InvalidOid;
			continue;
		}
		if (!w->stop && hold_of(w->dbid, now))
		{
			w->stop = true;
			if (w->latch && nlatches < HOLD_MAX)
				latches[nlatches++] = w->latch;
		}
		probing |= w->probe;
	}
	LWLockRelease(dbwork->lock);
	for (int i = 0; i < nlatches; i++)
		SetLatch(latches[i]);
	return probing;
}

/* ---- commands that need a database alone (the utility hook) ---- */

/*
 * Before DROP DATABASE, ALTER DATABASE ... SET TABLESPACE or RENAME, CREATE
 * DATABASE ... TEMPLATE: hold the database (no worker for a while), ask the
 * launcher to make its worker leave, and wait for that, cancellably and a
 * few seconds at most.  Its queued work stays queued.
 */
void
claude_dbwork_release(Oid dbid, int wait_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		DbHold	   *h;
		bool		gone;

		LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
		if ((h = hold_of(dbid, now)) == NULL)
		{
			/* a free (or expired) place; none: wait for one */
			for (int i = 0; i < HOLD_MAX && h == NULL; i++)
				if (dbwork->holds[i].until <= now)
					h = &dbwork->holds[i];
		}
		if (h)
		{
			h->dbid = dbid;
			h->until = TimestampTzPlusMilliseconds(now, HOLD_MS);
		}
		gone = worker_of(dbid) == NULL;
		LWLockRelease(dbwork->lock);
		if (h)
			claude_dbwork_wake(dbid);
		if ((h && gone) || now >= deadline)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, claude_wait_event(CLAUDE_WAIT_DB_WORKER_EXIT));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Unlink the records of a database (all, if dbid is invalid); returns them. */
static dsa_pointer
unlink_records(Oid dbid)
{
	dsa_area   *area = claude_area();
	dsa_pointer dp = dbwork->head;
	dsa_pointer prev = InvalidDsaPointer;
	dsa_pointer taken = InvalidDsaPointer;
	ClaudeDbRecord *last = NULL;

	while (DsaPointerIsValid(dp))
	{
		ClaudeDbRecord *rec = dsa_get_address(area, dp);
		dsa_pointer next = rec->next;

		if (rec->dbid == dbid)
		{
			if (DsaPointerIsValid(prev))
				((ClaudeDbRecord *) dsa_get_address(area, prev))->next = next;
			else
				dbwork->head = next;
			if (dbwork->tail == dp)
				dbwork->tail = prev;
			rec->next = InvalidDsaPointer;
			if (last)
				last->next = dp;
			else
				taken = dp;
			last = rec;
		}
		else
			prev = dp;
		dp = next;
	}
	return taken;
}

/* Free a chain of records (their cache leads given back). */
static void
free_records(dsa_pointer dp)
{
	while (DsaPointerIsValid(dp))
	{
		ClaudeDbRecord *rec = dsa_get_address(claude_area(), dp);
		dsa_pointer next = rec->next;

		if (rec->kind == DBREC_CACHE_WRITE)
			claude_cache_release_lead(rec->dbid, rec->key, rec->lead);
		dsa_free(claude_area(), dp);
		dp = next;
	}
}

/* After DROP DATABASE: its queued work has nowhere to go; no more hold. */
void
claude_dbwork_forget(Oid dbid)
{
	dsa_pointer dp;

	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	dp = unlink_records(dbid);
	for (int i = 0; i < HOLD_MAX; i++)
		if (dbwork->holds[i].dbid == dbid)
			dbwork->holds[i].until = 0;
	LWLockRelease(dbwork->lock);
	free_records(dp);
}

/* ---- the database's worker ---- */

/* The worker: take the records of its database, oldest first. */
dsa_pointer
claude_dbwork_take(void)
{
	dsa_pointer head;

	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	head = unlink_records(dbwork->workers[my_entry].dbid);
	dbwork->workers[my_entry].wake = false;
	LWLockRelease(dbwork->lock);
	return head;
}

/* The worker, where the extension is absent: its records go unapplied. */
void
claude_dbwork_discard(void)
{
	free_records(claude_dbwork_take());
}

static void
db_worker_exit(int code, Datum arg)
{
	DbWorker   *w = &dbwork->workers[my_entry];
	Oid			dbid;
	bool		left_work;

	/* an ERROR may have left our lock held */
	LWLockReleaseAll();
	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	if (w->pid != MyProcPid || w->generation != my_generation)
	{
		/* left already (leave_if_idle): the entry may be another's now */
		LWLockRelease(dbwork->lock);
		return;
	}
	dbid = dbwork->workers[my_entry].dbid;
	left_work = dbwork->workers[my_entry].wake;
	dbwork->workers[my_entry].dbid = InvalidOid;
	dbwork->workers[my_entry].pid = 0;
	dbwork->workers[my_entry].latch = NULL;
	for (dsa_pointer dp = dbwork->head; DsaPointerIsValid(dp) && !left_work;)
	{
		ClaudeDbRecord *rec = dsa_get_address(claude_area(), dp);

		left_work = rec->dbid == dbid;
		dp = rec->next;
	}
	LWLockRelease(dbwork->lock);
	/* stopped or failed with work left: the launcher starts another */
	if (left_work)
		claude_dbwork_wake(dbid);
	else
		poke_launcher();
}

/*
 * The worker of an entry takes it: returns its database, or InvalidOid
 * when the entry went to another worker meanwhile.
 */
Oid
claude_dbwork_attach(int entry, uint32 generation, bool *probe)
{
	DbWorker   *w = &dbwork->workers[entry];
	Oid			dbid = InvalidOid;

	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	if (w->generation == generation && w->pid == 0 && OidIsValid(w->dbid))
	{
		dbid = w->dbid;
		w->pid = MyProcPid;
		w->latch = MyLatch;
		*probe = w->probe;
	}
	LWLockRelease(dbwork->lock);
	if (!OidIsValid(dbid))
		return InvalidOid;
	my_entry = entry;
	my_generation = generation;
	before_shmem_exit(db_worker_exit, (Datum) 0);
	return dbid;
}

/* A probe found work: it stays as the database's worker. */
void
claude_dbwork_found_work(void)
{
	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	dbwork->workers[my_entry].probe = false;
	LWLockRelease(dbwork->lock);
	poke_launcher();
}

/* Whether the launcher asked this worker to leave (its database is held). */
bool
claude_dbwork_stopping(void)
{
	bool		stop;

	LWLockAcquire(dbwork->lock, LW_SHARED);
	stop = dbwork->workers[my_entry].stop;
	LWLockRelease(dbwork->lock);
	return stop;
}

/*
 * An idle worker leaves its entry, unless work arrived meanwhile (a record
 * or a wake-up): then it stays.
 */
bool
claude_dbwork_leave_if_idle(void)
{
	DbWorker   *w = &dbwork->workers[my_entry];
	bool		idle;

	LWLockAcquire(dbwork->lock, LW_EXCLUSIVE);
	idle = !w->wake;
	for (dsa_pointer dp = dbwork->head; DsaPointerIsValid(dp) && idle;)
	{
		ClaudeDbRecord *rec = dsa_get_address(claude_area(), dp);

		idle = rec->dbid != w->dbid;
		dp = rec->next;
	}
	if (idle)
	{
		w->dbid = InvalidOid;
		w->pid = 0;
		w->latch = NULL;
	}
	LWLockRelease(dbwork->lock);
	if (idle)
		poke_launcher();
	return idle;
}
