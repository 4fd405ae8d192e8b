/*
 * worker.c
 *		The one HTTP worker of the server: its main loop.  Started by the
 *		postmaster (registered in _PG_init).
 *
 * It sleeps in a WaitEventSet on its latch (new or cancelled requests),
 * on curl's sockets (through one epoll descriptor, see http.c) and on
 * curl's timer.  It never sleeps while work is waiting.  On SIGTERM it
 * exits with code 1, so the postmaster restarts it alone; its exit
 * callback fails the requests it had in flight, so no caller hangs.
 */
#include "postgres.h"

#include "storage/procsignal.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"

#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/pgcompat.h"
#include "common/waits.h"
#include "httpworker/dispatch.h"
#include "httpworker/http.h"
#include "httpworker/launcher.h"
#include "httpworker/worker.h"
#include "shmem/slots.h"

void
claude_register_http_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "claude");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "claude_http_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "claude http worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "claude http worker");
	RegisterBackgroundWorker(&worker);
}

/* Until curl's timer, the queue or the launcher needs the worker; -1 for no limit. */
static long
sleep_ms(void)
{
	long		t[] = {claude_http_timeout_ms(), claude_dispatch_timeout_ms(),
	claude_launcher_timeout_ms()};
	long		ms = -1;

	for (int i = 0; i < lengthof(t); i++)
		if (t[i] >= 0 && (ms < 0 || t[i] < ms))
			ms = t[i];
	return ms;
}

static void
worker_exit(int code, Datum arg)
{
	/* an ERROR ends the worker (FATAL): it may have left a lock held */
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	claude_launcher_shutdown();
	claude_dispatch_shutdown();
	claude_worker_unregister_self();
}

void
claude_http_worker_main(Datum arg)
{
	WaitEventSet *set;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	/* no database: this only makes the worker visible in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	claude_require_shared();
	claude_http_init();
	claude_dispatch_init();
	claude_worker_register_self();
	before_shmem_exit(worker_exit, (Datum) 0);
	claude_launcher_init();

	set = ClaudeCreateWaitEventSet(3);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, claude_http_pollable_fd(), NULL, NULL);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "claude worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	elog(LOG, "claude http worker started");

	for (;;)
	{
		WaitEvent	events[3];
		int			nevents;
		bool		sockets_ready = false;
		int			slot;
		MemoryContext old = MemoryContextSwitchTo(loop_cxt);

		while ((slot = claude_queue_pop()) >= 0)
			claude_dispatch_enqueue(slot);
		claude_dispatch_abort_cancelled();
		claude_dispatch_run();
		claude_dispatch_drive(false);
		/* the one starter of database workers (launcher.c) */
		claude_launcher_step();

		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_cxt);

		nevents = WaitEventSetWait(set, sleep_ms(), events, lengthof(events),
								   claude_wait_event(CLAUDE_WAIT_HTTP_WORKER_MAIN));
		for (int i = 0; i < nevents; i++)
		{
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if (events[i].events & WL_SOCKET_READABLE)
				sockets_ready = true;
		}

		/* as every process must: DROP DATABASE waits for this */
		if (ProcSignalBarrierPending)
			ProcessProcSignalBarrier();
		if (ShutdownRequestPending)
			proc_exit(1);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			claude_dispatch_configure();
		}

		old = MemoryContextSwitchTo(loop_cxt);
		claude_dispatch_drive(sockets_ready);
		MemoryContextSwitchTo(old);
	}
}
