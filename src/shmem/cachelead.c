/*
 * cachelead.c
 *		One request per cache key at a time: a caller that misses leads its
 *		key in a shared table; callers that find the key led sleep until
 *		the entry is released (after the reply is in the table) and look
 *		again.  Callers: client/cache.c, and whoever stores the reply.
 */
#include "postgres.h"

#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "common/guc.h"
#include "common/waits.h"
#include "shmem/area.h"
#include "shmem/cachelead.h"

/* an in-flight entry older than this is taken to be abandoned */
#define LEAD_STALE_MS (10 * 60 * 1000)

typedef struct InflightEntry
{
	Oid			dbid;			/* InvalidOid: free */
	uint8		key[CLAUDE_CACHE_KEY_LEN];
	pid_t		leader;
	TimestampTz since;
} InflightEntry;

typedef struct CacheShared
{
	LWLock	   *lock;
	ConditionVariable released;
	int			nentries;
	InflightEntry entries[FLEXIBLE_ARRAY_MEMBER];
} CacheShared;

static CacheShared *cache = NULL;

Size
claude_cache_shmem_size(void)
{
	return add_size(offsetof(CacheShared, entries),
					mul_size(claude_max_requests, sizeof(InflightEntry)));
}

static void
init_cache(void *ptr)
{
	CacheShared *c = ptr;

	c->lock = claude_named_lock(CLAUDE_LOCK_CACHE_LEAD);
	ConditionVariableInit(&c->released);
	c->nentries = claude_max_requests;
}

void
claude_cache_shmem_startup(void)
{
	cache = claude_shmem_struct("claude cache", claude_cache_shmem_size(), init_cache);
}

static int
find_entry(Oid dbid, const uint8 *key)
{
	for (int i = 0; i < cache->nentries; i++)
		if (cache->entries[i].dbid == dbid &&
			memcmp(cache->entries[i].key, key, CLAUDE_CACHE_KEY_LEN) == 0)
			return i;
	return -1;
}

static void
release_entry(int i)
{
	cache->entries[i].dbid = InvalidOid;
	cache->entries[i].leader = 0;
}

/* Free an entry if it is still the one for this key. */
void
claude_cache_release_lead(Oid dbid, const uint8 *key, int lead)
{
	if (lead < 0 || lead >= cache->nentries)
		return;
	LWLockAcquire(cache->lock, LW_EXCLUSIVE);
	if (cache->entries[lead].dbid == dbid &&
		memcmp(cache->entries[lead].key, key, CLAUDE_CACHE_KEY_LEN) == 0)
		release_entry(lead);
	LWLockRelease(cache->lock);
	ConditionVariableBroadcast(&cache->released);
}

/*
 * Lead the request for this key, or wait for the session that leads it.
 * Returns the entry now led, CLAUDE_LEAD_FINISHED or CLAUDE_LEAD_NONE.
 */
int
claude_cache_lead(const uint8 *key)
{
	int			lead = CLAUDE_LEAD_NONE;
	bool		waited = false;

	for (;;)
	{
		int			i;

		LWLockAcquire(cache->lock, LW_EXCLUSIVE);
		i = find_entry(MyDatabaseId, key);
		if (i >= 0 && TimestampDifferenceExceeds(cache->entries[i].since,
												 GetCurrentTimestamp(),
												 LEAD_STALE_MS))
		{
			release_entry(i);
			i = -1;
		}
		if (i < 0 && waited)
		{
			LWLockRelease(cache->lock);
			lead = CLAUDE_LEAD_FINISHED;
			break;
		}
		if (i < 0)
		{
			/* no leader: lead, if an entry is free; else go uncoordinated */
			for (int j = 0; j < cache->nentries; j++)
			{
				if (cache->entries[j].dbid == InvalidOid)
				{
					InflightEntry *e = &cache->entries[j];

					e->dbid = MyDatabaseId;
					memcpy(e->key, key, CLAUDE_CACHE_KEY_LEN);
					e->leader = MyProcPid;
					e->since = GetCurrentTimestamp();
					lead = j;
					break;
				}
			}
			LWLockRelease(cache->lock);
			break;
		}
		LWLockRelease(cache->lock);
		waited = true;
		ConditionVariableTimedSleep(&cache->released, 1000,
									claude_wait_event(CLAUDE_WAIT_CACHE_LEAD));
	}
	ConditionVariableCancelSleep();
	return lead;
}

/* A backend gives back the entry it leads (its call failed). */
void
claude_cache_release_own(int lead)
{
	LWLockAcquire(cache->lock, LW_EXCLUSIVE);
	if (cache->entries[lead].leader == MyProcPid)
		release_entry(lead);
	LWLockRelease(cache->lock);
	ConditionVariableBroadcast(&cache->released);
}
