/*
 * usage_int.h
 *		The shared usage table, kept by usage.c and read by usage_pending.c;
 *		no one else reads it.
 */
#ifndef CLAUDE_USAGE_INT_H
#define CLAUDE_USAGE_INT_H

#include "access/transam.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"

#include "shmem/usage.h"

typedef struct UsageEntry
{
	UsageKey	key;
	bool		loaded;			/* base holds claude_usage_log's rows */
	UsageCounts base;			/* in claude_usage_log */
	UsageCounts delta;			/* not yet */
	UsageCounts flushing;		/* being written now */
	int64		reserved;		/* requests in flight under a budget */
	bool		batch_loaded;	/* batch holds claude_batch_items' pending */
	UsageReserve batch;			/* batch requests not settled */
	int64		spent[3];		/* USAGE_SERVER: see spent() */
	TransactionId flush_xid;	/* USAGE_MODEL: writing flushing, if valid */
	UsageCounts written;		/* USAGE_MODEL: written last round, */
	TransactionId written_xid;	/* by this transaction */
} UsageEntry;

typedef struct UsageShared
{
	LWLock	   *lock;
	pg_atomic_uint32 config_generation;
	bool		full_reported;
} UsageShared;

extern UsageShared *claude_usage_state;
extern HTAB *claude_usage_entries;

#endif
