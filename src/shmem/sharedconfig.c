/*
 * sharedconfig.c
 *		Each database's prices and budgets as a session last read them, so
 *		that the next session to start copies them rather than query.
 *		Caller: client/budget.c.
 *
 * A copy is good for one installation of the extension (its pg_extension
 * oid) in one database, at one value of the generation counter that a
 * change of claude_prices or claude_budgets bumps at commit
 * (shmem/usage.c).  A session that finds no good copy reads the tables and
 * leaves its own; what a copy holds is opaque here, a blob in the DSA area.
 * A short-lived session's first call paid two queries for them.
 */
#include "postgres.h"

#include "storage/lwlock.h"
#include "utils/dsa.h"

#include "shmem/area.h"
#include "shmem/sharedconfig.h"

#define SHARED_CONFIGS	16

typedef struct ConfigCopy
{
	Oid			dbid;			/* invalid: free */
	Oid			ext;
	uint32		generation;
	Size		len;
	dsa_pointer blob;
	uint64		used;
} ConfigCopy;

typedef struct ConfigShared
{
	LWLock	   *lock;
	uint64		clock;
	ConfigCopy	copies[SHARED_CONFIGS];
} ConfigShared;

static ConfigShared *shared = NULL;

static void
init_shared(void *ptr)
{
	((ConfigShared *) ptr)->lock = claude_named_lock(CLAUDE_LOCK_CONFIG);
}

Size
claude_shared_config_shmem_size(void)
{
	return MAXALIGN(sizeof(ConfigShared));
}

void
claude_shared_config_shmem_startup(void)
{
	shared = claude_shmem_struct("claude shared config", sizeof(ConfigShared), init_shared);
}

static ConfigCopy *
find(Oid dbid)
{
	for (int i = 0; i < SHARED_CONFIGS; i++)
		if (shared->copies[i].dbid == dbid)
			return &shared->copies[i];
	return NULL;
}

/* A palloc'd copy of the blob good for (dbid, ext, generation), or NULL. */
char *
claude_shared_config_get(Oid dbid, Oid ext, uint32 generation, Size *len)
{
	dsa_area   *area = claude_area();
	ConfigCopy *c;
	char	   *blob = NULL;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	c = find(dbid);
	if (c != NULL && c->ext == ext && c->generation == generation)
	{
		blob = palloc(c->len);
		memcpy(blob, dsa_get_address(area, c->blob), c->len);
		*len = c->len;
		c->used = ++shared->clock;
	}
	LWLockRelease(shared->lock);
	return blob;
}

/*
 * Leave blob as the copy for (dbid, ext, generation), unless a copy of a
 * later generation is there already; the least used copy of another
 * database makes room.  Best effort: without memory it leaves nothing.
 */
void
claude_shared_config_put(Oid dbid, Oid ext, uint32 generation, const char *blob, Size len)
{
	dsa_area   *area = claude_area();
	dsa_pointer mine = dsa_allocate_extended(area, Max(len, 1), DSA_ALLOC_NO_OOM);
	dsa_pointer old = InvalidDsaPointer;
	ConfigCopy *c;

	if (!DsaPointerIsValid(mine))
		return;
	memcpy(dsa_get_address(area, mine), blob, len);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	c = find(dbid);
	if (c != NULL && c->ext == ext && (int32) (c->generation - generation) >= 0)
	{
		LWLockRelease(shared->lock);
		dsa_free(area, mine);
		return;
	}
	if (c == NULL)
	{
		c = &shared->copies[0];
		for (int i = 1; i < SHARED_CONFIGS && OidIsValid(c->dbid); i++)
			if (!OidIsValid(shared->copies[i].dbid) || shared->copies[i].used < c->used)
				c = &shared->copies[i];
	}
	if (OidIsValid(c->dbid))
		old = c->blob;
	c->dbid = dbid;
	c->ext = ext;
	c->generation = generation;
	c->len = len;
	c->blob = mine;
	c->used = ++shared->clock;
	LWLockRelease(shared->lock);
	if (DsaPointerIsValid(old))
		dsa_free(area, old);
}
