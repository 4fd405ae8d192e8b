/*
 * progress.c
 *		Progress of running bulk work in shared memory, for claude_progress.
 *
 * Each backend has at most one entry (one claude_enrich at a time); it is
 * cleared when the work ends, fails or the backend exits.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "shmem/progress.h"
#include "shmem/slots.h"

#define MAX_PROGRESS 64

typedef struct ProgressEntry
{
	pid_t		pid;			/* 0: free */
	Oid			dbid;
	Oid			role;			/* whose work it is */
	Oid			relid;
	NameData	column;
	char		mode[16];
	int64		total;
	int64		done;
	int64		failed;
	TimestampTz started;
	TimestampTz updated;
} ProgressEntry;

typedef struct ProgressShared
{
	slock_t		mutex;
	ProgressEntry entries[MAX_PROGRESS];
} ProgressShared;

static ProgressShared *progress = NULL;
static int	mine = -1;
static bool callbacks_registered = false;

PG_FUNCTION_INFO_V1(claude_progress_rows);

Size
claude_progress_shmem_size(void)
{
	return MAXALIGN(sizeof(ProgressShared));
}

static void
init_progress(void *ptr)
{
	SpinLockInit(&((ProgressShared *) ptr)->mutex);
}

void
claude_progress_shmem_startup(void)
{
	progress = claude_shmem_struct("claude progress", claude_progress_shmem_size(),
								   init_progress);
}

void
claude_progress_end(void)
{
	if (mine < 0)
		return;
	SpinLockAcquire(&progress->mutex);
	progress->entries[mine].pid = 0;
	SpinLockRelease(&progress->mutex);
	mine = -1;
}

static void
progress_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT)
		claude_progress_end();
}

static void
progress_exit_callback(int code, Datum arg)
{
	claude_progress_end();
}

void
claude_progress_begin(Oid relid, const char *column, const char *mode, int64 total)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!callbacks_registered)
	{
		RegisterXactCallback(progress_xact_callback, NULL);
		before_shmem_exit(progress_exit_callback, (Datum) 0);
		callbacks_registered = true;
	}
	claude_progress_end();
	SpinLockAcquire(&progress->mutex);
	for (int i = 0; i < MAX_PROGRESS; i++)
	{
		if (progress->entries[i].pid == 0)
		{
			ProgressEntry *e = &progress->entries[i];

			e->pid = MyProcPid;
			e->dbid = MyDatabaseId;
			e->role = GetUserId();
			e->relid = relid;
			namestrcpy(&e->column, column);
			strlcpy(e->mode, mode, sizeof(e->mode));
			e->total = total;
			e->done = e->failed = 0;
			e->started = e->updated = now;
			mine = i;
			break;
		}
	}
	SpinLockRelease(&progress->mutex);
}

void
claude_progress_update(int64 done, int64 failed)
{
	if (mine < 0)
		return;
	SpinLockAcquire(&progress->mutex);
	progress->entries[mine].done = done;
	progress->entries[mine].failed = failed;
	progress->entries[mine].updated = GetCurrentTimestamp();
	SpinLockRelease(&progress->mutex);
}

/*
 * The running work of this database, for the claude_progress view: a role
 * sees its own (and that of roles whose privileges it has), members of
 * pg_read_all_stats see all.
 */
Datum
claude_progress_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();
	for (int i = 0; i < MAX_PROGRESS; i++)
	{
		ProgressEntry e;
		Datum		values[9];
		bool		nulls[9] = {0};

		SpinLockAcquire(&progress->mutex);
		e = progress->entries[i];
		SpinLockRelease(&progress->mutex);
		if (e.pid == 0 || e.dbid != MyDatabaseId ||
			!(all || has_privs_of_role(GetUserId(), e.role)))
			continue;
		values[0] = Int32GetDatum(e.pid);
		values[1] = ObjectIdGetDatum(e.relid);
		values[2] = NameGetDatum(&e.column);
		values[3] = CStringGetTextDatum(e.mode);
		values[4] = Int64GetDatum(e.done);
		values[5] = Int64GetDatum(e.total);
		values[6] = Int64GetDatum(e.failed);
		values[7] = TimestampTzGetDatum(e.started);
		values[8] = TimestampTzGetDatum(e.updated);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
