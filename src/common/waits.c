/*
 * waits.c
 *		Wait event ids for what our processes wait for.  Callers: every
 *		WaitLatch, WaitEventSetWait and ConditionVariableTimedSleep of ours.
 *
 * From PostgreSQL 17 an extension names its waits: WaitEventExtensionNew
 * gives each name an id in shared memory, the same in every process, and
 * pg_stat_activity.wait_event shows the name.  Each process asks once per
 * name, at its first wait of that kind (it takes a lock, so never under a
 * spinlock: callers ask before they sleep).  Before 17 all of them are
 * PG_WAIT_EXTENSION, shown as "Extension".
 */
#include "postgres.h"

#include "utils/wait_event.h"

#include "common/waits.h"

#if PG_VERSION_NUM >= 170000
static const char *const names[CLAUDE_WAIT_COUNT] = {
	[CLAUDE_WAIT_REPLY] = "ClaudeReply",
	[CLAUDE_WAIT_RATE_LIMIT] = "ClaudeRateLimit",
	[CLAUDE_WAIT_RETRY] = "ClaudeRetry",
	[CLAUDE_WAIT_STREAM] = "ClaudeStream",
	[CLAUDE_WAIT_SLOT] = "ClaudeSlot",
	[CLAUDE_WAIT_CACHE_LEAD] = "ClaudeCacheLead",
	[CLAUDE_WAIT_DB_WORKER_EXIT] = "ClaudeDbWorkerExit",
	[CLAUDE_WAIT_HTTP_WORKER_MAIN] = "ClaudeHttpWorkerMain",
	[CLAUDE_WAIT_DB_WORKER_MAIN] = "ClaudeDbWorkerMain",
};

static uint32 ids[CLAUDE_WAIT_COUNT];
#endif

uint32
claude_wait_event(ClaudeWait what)
{
#if PG_VERSION_NUM >= 170000
	Assert((int) what < CLAUDE_WAIT_COUNT);
	if (ids[what] == 0)
		ids[what] = WaitEventExtensionNew(names[what]);
	return ids[what];
#else
	return PG_WAIT_EXTENSION;
#endif
}

/*
 * Wake the process whose latch *latch is, NULL when it has none: the
 * pointer is read under mutex, which guards its changes, and set after,
 * since SetLatch may do a system call.
 */
void
claude_set_latch_guarded(slock_t *mutex, Latch *const *latch)
{
	Latch	   *l;

	SpinLockAcquire(mutex);
	l = *latch;
	SpinLockRelease(mutex);
	if (l != NULL)
		SetLatch(l);
}
