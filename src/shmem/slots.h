/*
 * slots.h
 *		Shared-memory request slots between backends and the HTTP worker.
 *
 * A backend takes a free slot, puts a packed request (pack.h) into the
 * DSA area, queues the slot and sleeps on its latch.  The HTTP worker picks
 * queued slots, runs the transfer and stores the result back in the slot.
 * Whoever gives up a slot last frees it: the owner after reading a result,
 * the worker for a slot its owner cancelled.
 */
#ifndef CLAUDE_SLOTS_H
#define CLAUDE_SLOTS_H

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/dsa.h"

#include "common/errors.h"
#include "common/waits.h"
#include "shmem/area.h"

typedef enum ClaudeSlotState
{
	SLOT_FREE = 0,
	SLOT_QUEUED,				/* waiting for the worker */
	SLOT_RUNNING,				/* the worker owns the transfer */
	SLOT_DONE,					/* result ready for the owner */
	SLOT_CANCELLED				/* owner gone; the worker frees it */
} ClaudeSlotState;

typedef struct ClaudeSlot
{
	slock_t		mutex;			/* protects state */
	ClaudeSlotState state;
	bool		in_ring;		/* still referenced by the submit queue */
	uint32		generation;		/* bumped on every reuse */
	Latch	   *owner_latch;
	pid_t		owner_pid;
	dsa_pointer request;		/* packed request; the worker frees it */
	Oid			stream_role;	/* an open stream's role (streamshare.c) */
	ClaudeResult result;
	/* a stream's events not taken yet (events.c), under mutex */
	dsa_pointer events_head;
	dsa_pointer events_tail;
	void	   *events_tail_chunk;	/* its address in the worker that pushed it */
	Size		events_bytes;
	bool		events_blocked; /* the worker holds more: wake it on taking */
	pg_atomic_uint32 waiting_for;	/* ClaudeWait the worker last noted */
} ClaudeSlot;

/* a chunk of a stream's events, NUL-terminated items */
typedef struct ClaudeEventChunk
{
	dsa_pointer next;
	Size		len;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} ClaudeEventChunk;

typedef struct ClaudeShared
{

	slock_t		mutex;			/* protects the fields below */
	int			nslots;
	int			nfree;
	int			queue_head;
	int			queue_len;
	pid_t		worker_pid;
	Latch	   *worker_latch;
	uint32		worker_incarnation;

	pg_atomic_uint32 cancel_pending;	/* a running slot was cancelled */
	ConditionVariable slot_freed;

	/* counters for the statistics views */
	pg_atomic_uint64 requests;
	pg_atomic_uint64 connections_opened;
	pg_atomic_uint32 connections_open;
	pg_atomic_uint32 in_flight;
} ClaudeShared;

extern ClaudeShared *claude_shared;
extern ClaudeSlot *claude_slots;

extern void claude_slots_request_shmem(void);
extern void claude_slots_shmem_startup(void);

/* backend side */
/* one slot in this many is kept for single calls; a session's bulk work takes at most as many */
#define CLAUDE_SLOTS_RESERVED 4

extern int	claude_slot_acquire(bool wait, bool bulk);
extern void claude_slot_submit(int slot, dsa_pointer request);
extern void claude_wake_worker(void);
extern bool claude_slot_poll(int slot);
extern void claude_slot_wait(int slot);
extern bool claude_slot_wait_events(int slot);
extern void claude_slot_keep(int slot);
extern void claude_slot_abandon(int slot);
extern void claude_slot_abandon_quietly(int slot);
extern char *claude_slot_take(int slot, ClaudeResult *result);

/* worker side */
extern int	claude_queue_pop(void);
extern void claude_slot_finish(int slot, const ClaudeResult *result);
extern void claude_slot_release_cancelled(int slot);
extern void claude_slot_note_wait(int slot, ClaudeWait what);
extern bool claude_slot_is_cancelled(int slot);
extern void claude_worker_register_self(void);
extern void claude_worker_unregister_self(void);

#endif
