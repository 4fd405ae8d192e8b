/*
 * streamshare.c
 *		How many streams may be open at once: each role's share of the
 *		request slots and of the pool's connections.  Caller: the call path
 *		(client/request.c), when claude_stream or claude_messages_stream opens.
 *
 * A stream read through a cursor may sit idle as long as the cursor is
 * open.  The HTTP worker then pauses its transfer, which keeps its slot and
 * its connection (such a stream has a connection of its own, see
 * httpworker/streamed.c).  So, as bulk work does with the slots, the open
 * streams of one role hold at most a quarter of the slots and connections,
 * and those of all roles never the last quarter: no role's idle cursors
 * can hold up another role's calls.  An open past the share fails at once
 * (53400) rather than wait: the wait could be for the same session's own
 * cursors, which it can never close while it waits.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"

#include "common/guc.h"
#include "shmem/slots.h"
#include "shmem/streamshare.h"

typedef struct StreamShare
{
	LWLock	   *lock;			/* serializes counting and claiming */
} StreamShare;

static StreamShare *share = NULL;

static void
init_share(void *ptr)
{
	((StreamShare *) ptr)->lock = claude_named_lock(CLAUDE_LOCK_STREAMS);
}

Size
claude_streams_shmem_size(void)
{
	return MAXALIGN(sizeof(StreamShare));
}

void
claude_streams_shmem_startup(void)
{
	share = claude_shmem_struct("claude streams", sizeof(StreamShare), init_share);
}

/* What streams share out: a slot and a connection each. */
static int
room(void)
{
	return Min(claude_shared->nslots, claude_max_connections);
}

static int
per_role(void)
{
	return Max(1, room() / CLAUDE_SLOTS_RESERVED);
}

/* all but a quarter, and at least one connection, when there are two */
static int
all_roles(void)
{
	return Max(1, room() - Max(1, room() / CLAUDE_SLOTS_RESERVED));
}

/* Open streams of role, and of every role. */
static void
count_streams(Oid role, int *mine, int *all)
{
	volatile ClaudeSlot *slots = claude_slots;

	*mine = *all = 0;
	for (int i = 0; i < claude_shared->nslots; i++)
	{
		Oid			r = slots[i].stream_role;

		if (OidIsValid(r))
		{
			(*all)++;
			if (r == role)
				(*mine)++;
		}
	}
}

static void
refuse_if_over(Oid role, int mine, int all)
{
	if (mine >= per_role())
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many open streams for role \"%s\"",
						GetUserNameFromId(role, false)),
				 errdetail("A role may have %d streams of claude_stream and claude_messages_stream open at once "
						   "(a quarter of the smaller of claude.max_connections, %d, and claude.max_requests, %d); "
						   "it has %d.",
						   per_role(), claude_max_connections, claude_shared->nslots, mine),
				 errhint("Close cursors over claude_stream or claude_messages_stream that are no longer read.")));
	if (all >= all_roles())
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many open streams on the server"),
				 errdetail("The streams of all roles may hold %d of the smaller of claude.max_connections, %d, "
						   "and claude.max_requests, %d: a quarter (at least one) is kept for other calls.",
						   all_roles(), claude_max_connections, claude_shared->nslots),
				 errhint("Close cursors over claude_stream or claude_messages_stream that are no longer read, "
						 "or raise claude.max_connections.")));
}

/*
 * A request slot for a stream of role, within its share; waits, as bulk
 * work does, while others' requests hold all but the last quarter.
 */
int
claude_stream_slot_acquire(Oid role)
{
	int			mine;
	int			all;
	int			slot;
	bool		claimed = false;

	/* refused before any wait */
	LWLockAcquire(share->lock, LW_SHARED);
	count_streams(role, &mine, &all);
	LWLockRelease(share->lock);
	refuse_if_over(role, mine, all);

	slot = claude_slot_acquire(true, true);

	LWLockAcquire(share->lock, LW_EXCLUSIVE);
	count_streams(role, &mine, &all);
	if (mine < per_role() && all < all_roles())
	{
		claude_slots[slot].stream_role = role;
		claimed = true;
	}
	LWLockRelease(share->lock);
	if (!claimed)
	{
		/* others opened theirs while this one waited for a slot */
		claude_slot_abandon(slot);
		refuse_if_over(role, mine, all);
	}
	return slot;
}
