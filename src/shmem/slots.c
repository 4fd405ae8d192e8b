/*
 * slots.c
 *		Request slots in shared memory: taken by a backend, queued for the
 *		HTTP worker, finished by it, handed back.  Callers: the call path
 *		(client/) and the HTTP worker.
 *
 * Slot ownership: a backend owns the slots it acquired until it takes the
 * result.  If it errors out, is cancelled or exits first, the slot is
 * marked cancelled and the worker, which may still be using the request
 * body, frees it.  Backends remember their slots so that transaction abort
 * and process exit give them back without any PG_TRY in the callers.
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"

#include "pgstat.h"
#include "storage/ipc.h"

#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/guc.h"
#include "common/waits.h"

#include "shmem/slots.h"
#include "shmem/usage.h"

ClaudeShared *claude_shared = NULL;
ClaudeSlot *claude_slots = NULL;
static int *freelist;			/* nfree entries in use */
static int *ring;				/* queue_len entries from queue_head */

/*
 * slots this backend owns, and the subtransaction that acquired each
 * (KEPT_SUBID: one that outlives every transaction, given back at exit)
 */
#define KEPT_SUBID	((SubTransactionId) PG_UINT32_MAX)
static int *owned;
static SubTransactionId *owned_subid;
static int	nowned;
static bool callbacks_registered = false;

/* replies this large leave the DSA area trimmed after them */
#define DSA_TRIM_BYTES	(1024 * 1024)

/* how long a queued request waits for a missing worker before failing */
#define WORKER_ABSENT_LIMIT_MS	10000

static Size
queue_shmem_size(int nslots)
{
	Size		size = MAXALIGN(sizeof(ClaudeShared));

	size = add_size(size, mul_size(nslots, sizeof(ClaudeSlot)));
	size = add_size(size, mul_size(2 * nslots, sizeof(int)));
	return size;
}

void
claude_slots_request_shmem(void)
{
	RequestAddinShmemSpace(queue_shmem_size(claude_max_requests));
}

void
claude_slots_shmem_startup(void)
{
	bool		found;
	char	   *base;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("claude", queue_shmem_size(claude_max_requests),
						   &found);
	claude_shared = (ClaudeShared *) base;
	claude_slots = (ClaudeSlot *) (base + MAXALIGN(sizeof(ClaudeShared)));
	freelist = (int *) (claude_slots + claude_max_requests);
	ring = freelist + claude_max_requests;

	if (!found)
	{
		ClaudeShared *s = claude_shared;

		memset(s, 0, sizeof(ClaudeShared));
		SpinLockInit(&s->mutex);
		s->nslots = claude_max_requests;
		pg_atomic_init_u32(&s->cancel_pending, 0);
		ConditionVariableInit(&s->slot_freed);
		pg_atomic_init_u64(&s->requests, 0);
		pg_atomic_init_u64(&s->connections_opened, 0);
		pg_atomic_init_u32(&s->connections_open, 0);
		pg_atomic_init_u32(&s->in_flight, 0);

		for (int i = 0; i < s->nslots; i++)
		{
			ClaudeSlot *slot = &claude_slots[i];

			memset(slot, 0, sizeof(ClaudeSlot));
			SpinLockInit(&slot->mutex);
			pg_atomic_init_u32(&slot->waiting_for, CLAUDE_WAIT_REPLY);
			slot->state = SLOT_FREE;
			slot->request = InvalidDsaPointer;
			slot->result.body = InvalidDsaPointer;
			/* hand out low slot numbers first */
			freelist[s->nslots - 1 - i] = i;
		}
		s->nfree = s->nslots;
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
free_slot_memory(ClaudeSlot *slot)
{
	if (DsaPointerIsValid(slot->request))
		dsa_free(claude_area(), slot->request);
	if (DsaPointerIsValid(slot->result.body))
		dsa_free(claude_area(), slot->result.body);
	slot->request = InvalidDsaPointer;
	slot->result.body = InvalidDsaPointer;
	while (DsaPointerIsValid(slot->events_head))
	{
		dsa_pointer next = ((ClaudeEventChunk *) dsa_get_address(claude_area(),
																 slot->events_head))->next;

		dsa_free(claude_area(), slot->events_head);
		slot->events_head = next;
	}
	slot->events_tail = InvalidDsaPointer;
	slot->events_bytes = 0;
	slot->events_blocked = false;
}

/* Put a slot whose memory is already freed back on the free list. */
static void
slot_to_freelist(int i)
{
	ClaudeSlot *slot = &claude_slots[i];

	SpinLockAcquire(&slot->mutex);
	slot->state = SLOT_FREE;
	slot->owner_latch = NULL;
	slot->owner_pid = 0;
	slot->stream_role = InvalidOid;
	SpinLockRelease(&slot->mutex);

	SpinLockAcquire(&claude_shared->mutex);
	freelist[claude_shared->nfree++] = i;
	SpinLockRelease(&claude_shared->mutex);
	/* all: a bulk waiter may not take what a single call may */
	ConditionVariableBroadcast(&claude_shared->slot_freed);
}

/*
 * Wake the HTTP worker, if there is one: its latch is read once, under the
 * lock, since an exiting worker clears it.
 */
void
claude_wake_worker(void)
{
	claude_set_latch_guarded(&claude_shared->mutex, &claude_shared->worker_latch);
}

/* ---- backend side ---- */

/* Queue a slot (marked in_ring) for the worker, and wake it. */
static void
push_ring(int slot)
{
	SpinLockAcquire(&claude_shared->mutex);
	ring[(claude_shared->queue_head + claude_shared->queue_len) % claude_shared->nslots] = slot;
	claude_shared->queue_len++;
	SpinLockRelease(&claude_shared->mutex);
	claude_wake_worker();
}

static void
forget_owned(int slot)
{
	for (int i = nowned - 1; i >= 0; i--)
	{
		if (owned[i] == slot)
		{
			owned[i] = owned[nowned - 1];
			owned_subid[i] = owned_subid[nowned - 1];
			nowned--;
			return;
		}
	}
}

static void abandon(int slot, bool in_callback);

/*
 * From an abort or exit callback, where nothing may raise: a slot is only
 * marked, never freed here (see abandon).
 */
static void
abandon_owned(SubTransactionId from_subid, bool exiting)
{
	for (int i = nowned - 1; i >= 0; i--)
	{
		if (owned_subid[i] == KEPT_SUBID ? exiting : owned_subid[i] >= from_subid)
			abandon(owned[i], true);
	}
}

static void
queue_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		abandon_owned(InvalidSubTransactionId, false);
}

static void
queue_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		abandon_owned(mySubid, false);
}

static void
queue_exit_callback(int code, Datum arg)
{
	abandon_owned(InvalidSubTransactionId, true);
}

static void
register_backend_callbacks(void)
{
	if (callbacks_registered)
		return;
	owned = MemoryContextAlloc(TopMemoryContext,
							   claude_shared->nslots * sizeof(int));
	owned_subid = MemoryContextAlloc(TopMemoryContext,
									 claude_shared->nslots * sizeof(SubTransactionId));
	nowned = 0;
	RegisterXactCallback(queue_xact_callback, NULL);
	RegisterSubXactCallback(queue_subxact_callback, NULL);
	before_shmem_exit(queue_exit_callback, (Datum) 0);
	callbacks_registered = true;
}

/*
 * Take a free slot; if none is free, sleep (interruptibly) until one is,
 * or return -1 at once when !wait.  Bulk work leaves the last quarter of
 * the slots to single calls, so that no backlog can keep them waiting.
 */
int
claude_slot_acquire(bool wait, bool bulk)
{
	int			slot = -1;
	ClaudeSlot *s;
	int			reserve;

	claude_require_shared();
	register_backend_callbacks();
	(void) claude_area();
	reserve = bulk ? claude_shared->nslots / CLAUDE_SLOTS_RESERVED : 0;

	for (;;)
	{
		SpinLockAcquire(&claude_shared->mutex);
		if (claude_shared->nfree > reserve)
			slot = freelist[--claude_shared->nfree];
		SpinLockRelease(&claude_shared->mutex);
		if (slot >= 0 || !wait)
			break;
		ConditionVariableTimedSleep(&claude_shared->slot_freed, 1000,
									claude_wait_event(CLAUDE_WAIT_SLOT));
	}
	ConditionVariableCancelSleep();
	if (slot < 0)
		return -1;

	s = &claude_slots[slot];
	SpinLockAcquire(&s->mutex);
	s->generation++;
	s->owner_latch = MyLatch;
	s->owner_pid = MyProcPid;
	s->request = InvalidDsaPointer;
	memset(&s->result, 0, sizeof(ClaudeResult));
	s->result.body = InvalidDsaPointer;
	SpinLockRelease(&s->mutex);
	pg_atomic_write_u32(&s->waiting_for, CLAUDE_WAIT_REPLY);

	owned[nowned] = slot;
	owned_subid[nowned] = GetCurrentSubTransactionId();
	nowned++;
	return slot;
}

void
claude_slot_submit(int slot, dsa_pointer request)
{
	ClaudeSlot *s = &claude_slots[slot];

	SpinLockAcquire(&s->mutex);
	s->request = request;
	s->state = SLOT_QUEUED;
	s->in_ring = true;
	SpinLockRelease(&s->mutex);

	push_ring(slot);
}

bool
claude_slot_poll(int slot)
{
	ClaudeSlot *s = &claude_slots[slot];
	bool		done;

	SpinLockAcquire(&s->mutex);
	done = (s->state == SLOT_DONE);
	SpinLockRelease(&s->mutex);
	return done;
}

/* Whether a slot has a result, or (events) a stream's events to take. */
static bool
slot_ready(int slot, bool events)
{
	ClaudeSlot *s = &claude_slots[slot];
	bool		ready;

	SpinLockAcquire(&s->mutex);
	ready = s->state == SLOT_DONE || (events && DsaPointerIsValid(s->events_head));
	SpinLockRelease(&s->mutex);
	return ready;
}

/*
 * Sleep until the slot is ready.  Cancel, statement_timeout and
 * termination arrive as latch wake-ups and leave through
 * CHECK_FOR_INTERRUPTS; the abort callbacks then give the slot back.
 */
static void
wait_ready(int slot, bool events)
{
	TimestampTz absent_since = 0;

	for (;;)
	{
		ClaudeWait	what;

		if (slot_ready(slot, events))
			return;

		/* what the worker holds it for, as pg_stat_activity shows it */
		what = pg_atomic_read_u32(&claude_slots[slot].waiting_for);
		if (events && what == CLAUDE_WAIT_REPLY)
			what = CLAUDE_WAIT_STREAM;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000, claude_wait_event(what));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		/* no worker to serve a queued request: do not wait forever */
		if (claude_shared->worker_pid != 0)
			absent_since = 0;
		else if (absent_since == 0)
			absent_since = GetCurrentTimestamp();
		else if (TimestampDifferenceExceeds(absent_since, GetCurrentTimestamp(),
											WORKER_ABSENT_LIMIT_MS))
		{
			claude_slot_abandon(slot);
			ereport(ERROR,
					(errcode(CLAUDE_ERRCODE_WORKER),
					 errmsg("the claude HTTP worker is not running"),
					 errhint("Check the server log for why the worker exited.")));
		}
	}
}

/*
 * The worker notes why a request has not gone yet (the rate limits, a
 * retry's delay) or that it has: for its owner's wait event only.
 */
void
claude_slot_note_wait(int slot, ClaudeWait what)
{
	pg_atomic_write_u32(&claude_slots[slot].waiting_for, what);
}

/* Sleep until the slot has a result. */
void
claude_slot_wait(int slot)
{
	wait_ready(slot, false);
}

/*
 * Sleep until a stream's slot has events to take or a result; true if it
 * has the result.
 */
bool
claude_slot_wait_events(int slot)
{
	wait_ready(slot, true);
	return claude_slot_poll(slot);
}

/*
 * Copy the result out of a finished slot and free it.  Returns the
 * response body as a NUL-terminated palloc'd string, or NULL if none.
 */
char *
claude_slot_take(int slot, ClaudeResult *result)
{
	ClaudeSlot *s = &claude_slots[slot];
	char	   *body = NULL;

	Assert(s->state == SLOT_DONE);
	*result = s->result;
	if (DsaPointerIsValid(s->result.body))
	{
		body = palloc(s->result.body_len + 1);
		memcpy(body, dsa_get_address(claude_area(), s->result.body),
			   s->result.body_len);
		body[s->result.body_len] = '\0';
	}
	result->body = InvalidDsaPointer;
	free_slot_memory(s);
	/* give a large reply's memory back to the system, not to the next one */
	if (result->body_len > DSA_TRIM_BYTES)
		dsa_trim(claude_area());
	forget_owned(slot);
	slot_to_freelist(slot);
	return body;
}

/*
 * A slot whose owner takes its result whatever happens in between (the
 * database worker's jobs and batch requests): no abort gives it back, only
 * taking its result, abandoning it or the process's exit.  An error in
 * one piece of the worker's work then cancels no other request.
 */
void
claude_slot_keep(int slot)
{
	for (int i = nowned - 1; i >= 0; i--)
		if (owned[i] == slot)
			owned_subid[i] = KEPT_SUBID;
}

/*
 * Give up a slot in any state.  A request the worker may be reading is left
 * to the worker to free.  So is a finished one given up in a callback
 * (in_callback): freeing its reply or events may map a DSA segment, which
 * can raise, so the slot goes on the submit queue, cancelled, and the
 * worker frees it when it pops it.  Its stream share is given back at
 * once: the session may open another stream right after closing this one,
 * before the worker has got round to freeing it.
 */
static void
abandon(int slot, bool in_callback)
{
	ClaudeSlot *s = &claude_slots[slot];
	ClaudeSlotState state;
	bool		queue = false;

	forget_owned(slot);
	SpinLockAcquire(&s->mutex);
	state = s->state;
	s->stream_role = InvalidOid;
	if (state == SLOT_QUEUED || state == SLOT_RUNNING)
		s->state = SLOT_CANCELLED;
	else if (in_callback && state == SLOT_DONE &&
			 (DsaPointerIsValid(s->result.body) || DsaPointerIsValid(s->events_head)))
	{
		s->state = SLOT_CANCELLED;
		s->in_ring = queue = true;
	}
	SpinLockRelease(&s->mutex);

	if (queue)
		push_ring(slot);
	else if (state == SLOT_QUEUED || state == SLOT_RUNNING)
	{
		pg_atomic_write_u32(&claude_shared->cancel_pending, 1);
		claude_wake_worker();
	}
	else
	{
		free_slot_memory(s);
		slot_to_freelist(slot);
	}
}

void
claude_slot_abandon(int slot)
{
	abandon(slot, false);
}

/*
 * The same where nothing may raise (a memory context callback, which may
 * run during an abort): a finished slot's memory is left to the worker.
 */
void
claude_slot_abandon_quietly(int slot)
{
	abandon(slot, true);
}

/* ---- worker side ---- */

/*
 * Next queued slot, now marked running, or -1.  Slots cancelled while
 * queued are freed on the way.
 */
/*
 * A request its caller gave up before the worker took it: nothing was
 * sent, but a budget reservation it holds must be given back.
 */
static void
release_dropped(int slot)
{
	ClaudeRequest req;

	/* a finished slot given up in a callback has no request left */
	if (DsaPointerIsValid(claude_slots[slot].request))
	{
		claude_request_unpack(dsa_get_address(claude_area(), claude_slots[slot].request), &req);
		if (req.reply == CLAUDE_REPLY_MESSAGE)
			claude_usage_done(&req, false, NULL, -1);
	}
	claude_slot_release_cancelled(slot);
}

int
claude_queue_pop(void)
{
	for (;;)
	{
		int			slot;
		ClaudeSlot *s;
		bool		cancelled;

		SpinLockAcquire(&claude_shared->mutex);
		if (claude_shared->queue_len == 0)
		{
			SpinLockRelease(&claude_shared->mutex);
			return -1;
		}
		slot = ring[claude_shared->queue_head];
		claude_shared->queue_head = (claude_shared->queue_head + 1) % claude_shared->nslots;
		claude_shared->queue_len--;
		SpinLockRelease(&claude_shared->mutex);

		s = &claude_slots[slot];
		SpinLockAcquire(&s->mutex);
		cancelled = (s->state == SLOT_CANCELLED);
		s->in_ring = false;
		if (s->state == SLOT_QUEUED)
			s->state = SLOT_RUNNING;
		SpinLockRelease(&s->mutex);

		if (!cancelled)
			return slot;
		release_dropped(slot);
	}
}

bool
claude_slot_is_cancelled(int slot)
{
	ClaudeSlot *s = &claude_slots[slot];
	bool		cancelled;

	SpinLockAcquire(&s->mutex);
	cancelled = (s->state == SLOT_CANCELLED);
	SpinLockRelease(&s->mutex);
	return cancelled;
}

void
claude_slot_release_cancelled(int slot)
{
	free_slot_memory(&claude_slots[slot]);
	slot_to_freelist(slot);
}

/*
 * Store a result and wake the owner; the request body is freed here since
 * the transfer is over.
 */
void
claude_slot_finish(int slot, const ClaudeResult *result)
{
	ClaudeSlot *s = &claude_slots[slot];
	Latch	   *latch = NULL;
	bool		cancelled;

	if (DsaPointerIsValid(s->request))
		dsa_free(claude_area(), s->request);
	s->request = InvalidDsaPointer;

	SpinLockAcquire(&s->mutex);
	cancelled = (s->state == SLOT_CANCELLED);
	if (!cancelled)
	{
		s->result = *result;
		s->state = SLOT_DONE;
		latch = s->owner_latch;
	}
	SpinLockRelease(&s->mutex);

	if (cancelled)
	{
		if (DsaPointerIsValid(result->body))
			dsa_free(claude_area(), result->body);
		claude_slot_release_cancelled(slot);
	}
	else if (latch)
		SetLatch(latch);
}
