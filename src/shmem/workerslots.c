/*
 * workerslots.c
 *		The HTTP worker in shared memory: its pid and latch, set when it
 *		starts and cleared when it exits, and the slots a previous or
 *		exiting worker left running, failed so that no caller hangs.
 *		Caller: httpworker/worker.c.
 */
#include "postgres.h"

#include "miscadmin.h"

#include "shmem/slots.h"

/* Fail every slot a previous or exiting worker left running. */
static void
fail_running_slots(const char *why)
{
	ClaudeResult result;

	memset(&result, 0, sizeof(result));
	result.transport = CLAUDE_TE_WORKER;
	result.body = InvalidDsaPointer;
	strlcpy(result.message, why, sizeof(result.message));

	for (int i = 0; i < claude_shared->nslots; i++)
	{
		ClaudeSlot *s = &claude_slots[i];
		ClaudeSlotState state;
		bool		in_ring;

		SpinLockAcquire(&s->mutex);
		state = s->state;
		in_ring = s->in_ring;
		SpinLockRelease(&s->mutex);
		if (state == SLOT_RUNNING)
			claude_slot_finish(i, &result);
		else if (state == SLOT_CANCELLED && !in_ring)
			claude_slot_release_cancelled(i);
	}
}

void
claude_worker_register_self(void)
{
	(void) claude_area();
	fail_running_slots("the HTTP worker restarted while the request was in flight");

	SpinLockAcquire(&claude_shared->mutex);
	claude_shared->worker_pid = MyProcPid;
	claude_shared->worker_latch = MyLatch;
	claude_shared->worker_incarnation++;
	SpinLockRelease(&claude_shared->mutex);
}

void
claude_worker_unregister_self(void)
{
	SpinLockAcquire(&claude_shared->mutex);
	claude_shared->worker_pid = 0;
	claude_shared->worker_latch = NULL;
	SpinLockRelease(&claude_shared->mutex);

	fail_running_slots("the HTTP worker exited while the request was in flight");
	pg_atomic_write_u32(&claude_shared->in_flight, 0);
	pg_atomic_write_u32(&claude_shared->connections_open, 0);
}
