/*
 * progress.c
 *		Progress of running bulk work (claude_enrich) in shared memory,
 *		shown by the claude_progress view (functions/views.c).
 *
 * Each backend has at most one entry (one claude_enrich at a time); it is
 * cleared when the work ends, fails or the backend exits.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "shmem/progress.h"
#include "shmem/area.h"

typedef struct ProgressShared
{
	slock_t		mutex;
	ProgressEntry entries[CLAUDE_MAX_PROGRESS];
} ProgressShared;

static ProgressShared *progress = NULL;
static int	mine = -1;
static bool callbacks_registered = false;

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
	Oid			role = GetUserId();

	if (!callbacks_registered)
	{
		RegisterXactCallback(progress_xact_callback, NULL);
		before_shmem_exit(progress_exit_callback, (Datum) 0);
		callbacks_registered = true;
	}
	claude_progress_end();
	SpinLockAcquire(&progress->mutex);
	for (int i = 0; i < CLAUDE_MAX_PROGRESS; i++)
	{
		if (progress->entries[i].pid == 0)
		{
			ProgressEntry *e = &progress->entries[i];

			e->pid = MyProcPid;
			e->dbid = MyDatabaseId;
			e->role = role;
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
	TimestampTz now;

	if (mine < 0)
		return;
	/* a system call, not under the spinlock */
	now = GetCurrentTimestamp();
	SpinLockAcquire(&progress->mutex);
	progress->entries[mine].done = done;
	progress->entries[mine].failed = failed;
	progress->entries[mine].updated = now;
	SpinLockRelease(&progress->mutex);
}

/* A copy of entry i (pid 0: free), for the claude_progress view. */
void
claude_progress_entry(int i, ProgressEntry *e)
{
	SpinLockAcquire(&progress->mutex);
	*e = progress->entries[i];
	SpinLockRelease(&progress->mutex);
}
