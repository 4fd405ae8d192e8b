/*
 * events.c
 *		A stream's events on their way from the HTTP worker to the backend
 *		that waits for them: chunks in the DSA area, chained on the request
 *		slot, at most a window of them at once.  Callers: the worker's
 *		transfers (push) and the client's stream (take).
 *
 * A backend that reads slowly holds up only its own stream: past the
 * window the worker pauses the transfer (httpworker/streamed.c), so an
 * idle reader pins a window of shared memory, not its whole answer, and
 * is woken when the backend has taken what was there.
 */
#include "postgres.h"

#include "storage/latch.h"

#include "shmem/events.h"
#include "shmem/slots.h"

/* bytes of events waiting in a slot before the worker holds back more */
#define EVENTS_WINDOW	(256 * 1024)

/* How much of data (len bytes) fits a window with bytes in it already. */
static Size
fit_window(const char *data, Size len, Size bytes)
{
	Size		room = bytes >= EVENTS_WINDOW ? 0 : EVENTS_WINDOW - bytes;
	const char *end;

	if (len <= room)
		return len;
	end = room > 0 ? memrchr(data, '\0', room) : NULL;
	if (end != NULL)
		return end - data + 1;
	if (bytes == 0)
		return strnlen(data, len - 1) + 1;	/* one item larger than the window */
	return 0;
}

/*
 * Worker: hand over the first whole items (NUL-terminated) of data; all of
 * them if force (the stream is over).  Returns how many bytes were taken:
 * fewer than len when the window is full (the backend then wakes the
 * worker when it has taken what was there), the caller is gone, or shared
 * memory is short (then *full is set).  Raises only where the DSA area
 * does (mapping a new segment): the caller catches that.
 */
Size
claude_events_push(int slot, const char *data, Size len, bool force, bool *full)
{
	ClaudeSlot *s = &claude_slots[slot];
	Size		n;
	Size		bytes;
	dsa_pointer dp;
	ClaudeEventChunk *chunk;
	Latch	   *latch = NULL;

	if (len == 0)
		return 0;

	/*
	 * The search for the last whole item runs outside the spinlock.  Only
	 * this worker adds to events_bytes, the backend only takes it to 0: a
	 * full window still unchanged when that is noted stays full until the
	 * backend takes it (and, told, wakes the worker); one taken meanwhile
	 * is measured again.
	 */
	for (;;)
	{
		SpinLockAcquire(&s->mutex);
		bytes = s->events_bytes;
		SpinLockRelease(&s->mutex);
		n = force ? len : fit_window(data, len, bytes);
		if (n > 0)
			break;
		SpinLockAcquire(&s->mutex);
		if (s->events_bytes == bytes)
		{
			s->events_blocked = true;
			SpinLockRelease(&s->mutex);
			return 0;
		}
		SpinLockRelease(&s->mutex);
	}

	dp = dsa_allocate_extended(claude_area(), offsetof(ClaudeEventChunk, data) + n,
							   DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (!DsaPointerIsValid(dp))
	{
		*full = true;
		return 0;
	}
	chunk = dsa_get_address(claude_area(), dp);
	chunk->next = InvalidDsaPointer;
	chunk->len = n;
	memcpy(chunk->data, data, n);

	SpinLockAcquire(&s->mutex);
	if (s->state != SLOT_RUNNING)
	{
		SpinLockRelease(&s->mutex);
		dsa_free(claude_area(), dp);
		return n;				/* nobody to read them: as good as taken */
	}
	/* no dsa_get_address under a spinlock: the tail is a chunk of ours */
	if (DsaPointerIsValid(s->events_tail))
		((ClaudeEventChunk *) s->events_tail_chunk)->next = dp;
	else
		s->events_head = dp;
	s->events_tail = dp;
	s->events_tail_chunk = chunk;
	s->events_bytes += n;
	/* with these in the slot, the backend that takes them wakes the worker */
	if (n < len)
		s->events_blocked = true;
	latch = s->owner_latch;
	SpinLockRelease(&s->mutex);
	if (latch)
		SetLatch(latch);
	return n;
}

static void
free_chain(dsa_pointer dp)
{
	while (DsaPointerIsValid(dp))
	{
		dsa_pointer next = ((ClaudeEventChunk *) dsa_get_address(claude_area(), dp))->next;

		dsa_free(claude_area(), dp);
		dp = next;
	}
}

/*
 * Backend: take every event waiting in the slot, as one palloc'd run of
 * NUL-terminated items (*len bytes), or NULL if none waits.
 */
char *
claude_events_take(int slot, Size *len)
{
	ClaudeSlot *s = &claude_slots[slot];
	dsa_pointer dp;
	Size		total;
	bool		blocked;
	char	   *out;
	char	   *p;

	SpinLockAcquire(&s->mutex);
	dp = s->events_head;
	total = s->events_bytes;
	blocked = s->events_blocked;
	s->events_head = s->events_tail = InvalidDsaPointer;
	s->events_bytes = 0;
	s->events_blocked = false;
	SpinLockRelease(&s->mutex);
	if (!DsaPointerIsValid(dp))
		return NULL;

	if (blocked)
		claude_wake_worker();
	out = p = palloc_extended(total + 1, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
	if (out == NULL)
	{
		/* the chain is off the slot: free it, or nobody will */
		free_chain(dp);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on request of size %zu.", total + 1)));
	}
	while (DsaPointerIsValid(dp))
	{
		ClaudeEventChunk *chunk = dsa_get_address(claude_area(), dp);
		dsa_pointer next = chunk->next;

		memcpy(p, chunk->data, chunk->len);
		p += chunk->len;
		dsa_free(claude_area(), dp);
		dp = next;
	}
	*p = '\0';
	*len = total;
	return out;
}
