/*
 * usage.c
 *		Usage per (database, role, UTC day) in a shared hash: counted by the
 *		HTTP worker and the batch write-back, checked against budgets by
 *		client/budget.c, flushed to claude_usage_log by dbworker/flush.c.
 *
 * An entry holds what claude_usage_log says (base), what is new (delta),
 * what is being written (flushing), the requests in flight under a budget
 * (reserved) and what the Message Batch requests filed under its day may
 * spend until their results settle (batch, as claude_batch_items says once
 * loaded, then kept up to date by client/reserve.c).  Also the generation
 * of prices and budgets, bumped at commit of a change, so every session
 * reads them again.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "utils/timestamp.h"

#include "common/fault.h"
#include "shmem/area.h"
#include "shmem/dbqueue.h"
#include "shmem/usage.h"

typedef struct UsageEntry
{
	UsageKey	key;
	bool		loaded;			/* base holds claude_usage_log's row */
	UsageCounts base;			/* in claude_usage_log */
	UsageCounts delta;			/* not yet */
	UsageCounts flushing;		/* being written now */
	int64		reserved;		/* requests in flight under a budget */
	bool		batch_loaded;	/* batch holds claude_batch_items' pending */
	UsageReserve batch;			/* batch requests not settled */
} UsageEntry;

typedef struct UsageShared
{
	LWLock	   *lock;
	pg_atomic_uint32 config_generation;
	bool		full_reported;
} UsageShared;

static UsageShared *usage = NULL;
static HTAB *usage_hash = NULL;

Size
claude_usage_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(UsageShared)),
					hash_estimate_size(CLAUDE_USAGE_ENTRIES, sizeof(UsageEntry)));
}

void
claude_usage_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	usage = ShmemInitStruct("claude usage", sizeof(UsageShared), &found);
	if (!found)
	{
		usage->lock = claude_named_lock(CLAUDE_LOCK_USAGE);
		pg_atomic_init_u32(&usage->config_generation, 1);
		usage->full_reported = false;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(UsageKey);
	info.entrysize = sizeof(UsageEntry);
	usage_hash = ShmemInitHash("claude usage entries", CLAUDE_USAGE_ENTRIES, CLAUDE_USAGE_ENTRIES,
							   &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The entry of a key, made if missing; NULL when the table is full (said
 * once in the log if report: not at the end of a transaction).
 */
static UsageEntry *
entry_for(Oid dbid, Oid role, int32 day, bool report)
{
	UsageKey	key;
	UsageEntry *e;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.dbid = dbid;
	key.role = role;
	key.day = day;
	e = hash_search(usage_hash, &key, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		if (report && !usage->full_reported)
			elog(LOG, "claude: usage table full (%d entries): usage is not recorded until the database workers flush it",
				 CLAUDE_USAGE_ENTRIES);
		usage->full_reported = true;
		return NULL;
	}
	if (!found)
	{
		memset((char *) e + sizeof(UsageKey), 0, sizeof(UsageEntry) - sizeof(UsageKey));
		e->key = key;
	}
	return e;
}

void
claude_usage_counts_add(UsageCounts *to, const UsageCounts *from, int sign)
{
	to->requests += sign * from->requests;
	to->input += sign * from->input;
	to->output += sign * from->output;
	to->cache_write += sign * from->cache_write;
	to->cache_read += sign * from->cache_read;
	to->cost += sign * from->cost;
	to->unpriced += sign * from->unpriced;
}

/* One request that reached the API, and its usage if known, into c. */
void
claude_usage_count_request(UsageCounts *c, const ClaudeUsage *u, double cost)
{
	c->requests++;
	if (u)
	{
		c->input += (int64) u->input;
		c->output += (int64) u->output;
		c->cache_write += (int64) u->cache_write;
		c->cache_read += (int64) u->cache_read;
	}
	if (cost >= 0)
		c->cost += cost;
	else if (u)
		c->unpriced++;
}

static void
record(Oid dbid, Oid role, const UsageCounts *c, int32 reserved_day, bool *was_clean)
{
	UsageEntry *e;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	/* the tests' ERROR with a lock held, in the HTTP worker (common/fault.c) */
	claude_fault_point("usage_lock");
	if (reserved_day >= 0 && (e = entry_for(dbid, role, reserved_day, true)) != NULL && e->reserved > 0)
		e->reserved--;
	if (c && (e = entry_for(dbid, role, claude_usage_today(), true)) != NULL)
	{
		*was_clean = e->delta.requests == 0;
		claude_usage_counts_add(&e->delta, c, 1);
	}
	LWLockRelease(usage->lock);
}

/*
 * HTTP worker: a Messages request is over.  Usage counts it when it reached
 * the API; its budget reservation, if any, is released either way.  The
 * first new usage of a database wakes that database's worker to flush it.
 */
void
claude_usage_done(const ClaudeRequest *req, bool sent, const ClaudeUsage *u, double cost)
{
	UsageCounts c;
	bool		was_clean = false;

	if (!OidIsValid(req->dbid) || !OidIsValid(req->role))
		return;
	memset(&c, 0, sizeof(c));
	claude_usage_count_request(&c, u, cost);
	record(req->dbid, req->role, sent ? &c : NULL, req->reserved_day, &was_clean);
	if (sent && was_clean)
		claude_jobs_kick(req->dbid);
}

/* Days since 2000-01-01 of a time, UTC: the day usage is counted on. */
int32
claude_usage_day_of(TimestampTz t)
{
	return (int32) (t / USECS_PER_DAY);
}

/* the tests may move the clock of the day (common/fault.c) */
int32
claude_usage_today(void)
{
	return claude_usage_day_of(GetCurrentTimestamp() + claude_test_clock_offset());
}

/* ---- budgets (client/budget.c) ---- */

/*
 * Whether the entry of role on day holds claude_usage_log's row (*base)
 * and the pending batch requests of claude_batch_items (*batch), or needs
 * none (the table is full).
 */
void
claude_usage_loaded(Oid role, int32 day, bool *base, bool *batch)
{
	UsageEntry *e;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day, true);
	*base = e == NULL || e->loaded;
	*batch = e == NULL || e->batch_loaded;
	LWLockRelease(usage->lock);
}

/* What the tables say, for the parts of the entry not loaded yet. */
void
claude_usage_set_base(Oid role, int32 day, const UsageCounts *base, const UsageReserve *batch)
{
	UsageEntry *e;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day, true);
	if (e != NULL && !e->loaded)
	{
		e->base = *base;
		e->loaded = true;
	}
	if (e != NULL && !e->batch_loaded)
	{
		e->batch = *batch;
		e->batch_loaded = true;
	}
	LWLockRelease(usage->lock);
}

/*
 * What an entry counts against limits: requests used, in flight and
 * reserved by batches; tokens and USD used and reserved by batches.
 */
static void
spent(const UsageEntry *e, double value[3])
{
	UsageCounts used = e->base;

	claude_usage_counts_add(&used, &e->delta, 1);
	claude_usage_counts_add(&used, &e->flushing, 1);
	value[0] = used.requests + e->reserved + e->batch.requests;
	value[1] = used.input + used.output + used.cache_write + used.cache_read + e->batch.tokens;
	value[2] = used.cost + e->batch.cost;
}

/*
 * Whether n more requests of role stay within limit[] today (requests,
 * tokens, USD; < 0: no limit): the requests must fit, of tokens and
 * dollars some must be left.  If reserve, one is counted in flight at
 * once, under the same lock.  Else *over is the limit reached.
 */
bool
claude_usage_within(Oid role, const double limit[3], int64 n, bool reserve, int *over)
{
	UsageEntry *e;
	bool		ok = true;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, claude_usage_today(), true);
	if (e != NULL)
	{
		double		value[3];

		spent(e, value);
		value[0] += n;
		for (int k = 0; k < 3 && ok; k++)
		{
			if (limit[k] >= 0 && (k == 0 ? value[k] > limit[k] : value[k] >= limit[k]))
			{
				ok = false;
				*over = k;
			}
		}
		if (ok && reserve)
			e->reserved++;
	}
	LWLockRelease(usage->lock);
	return ok;
}

/*
 * Reserve r for a Message Batch filed under day if it fits every limit[]
 * whole with all that is spent and reserved; else *over is the limit it
 * passes.  A full table reserves nothing and refuses nothing.
 */
bool
claude_usage_reserve_batch(Oid role, int32 day, const double limit[3], const UsageReserve *r,
						   int *over)
{
	UsageEntry *e;
	bool		ok = true;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day, true);
	if (e != NULL)
	{
		double		value[3];

		spent(e, value);
		value[0] += r->requests;
		value[1] += r->tokens;
		value[2] += r->cost;
		for (int k = 0; k < 3 && ok; k++)
		{
			if (limit[k] >= 0 && value[k] > limit[k])
			{
				ok = false;
				*over = k;
			}
		}
		if (ok)
		{
			e->batch.requests += r->requests;
			e->batch.tokens += r->tokens;
			e->batch.cost += r->cost;
		}
	}
	LWLockRelease(usage->lock);
	return ok;
}

/*
 * Batch requests filed under day are settled, or their reservation undone:
 * released goes back (from an entry that holds reservations) and used, if
 * any, counts.  Never raises: called at the end of a transaction.
 */
void
claude_usage_settle_batch(Oid dbid, Oid role, int32 day, const UsageReserve *released,
						  const UsageCounts *used)
{
	UsageEntry *e;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(dbid, role, day, false);
	if (e != NULL && e->batch_loaded)
	{
		e->batch.requests -= released->requests;
		e->batch.tokens -= released->tokens;
		e->batch.cost -= released->cost;
		/* none left: no rounding of the cost left either */
		if (e->batch.requests <= 0)
			memset(&e->batch, 0, sizeof(e->batch));
	}
	if (e != NULL && used != NULL)
		claude_usage_counts_add(&e->delta, used, 1);
	LWLockRelease(usage->lock);
}

uint32
claude_usage_config_generation(void)
{
	return pg_atomic_read_u32(&usage->config_generation);
}

void
claude_usage_config_bump(void)
{
	if (usage != NULL)
		pg_atomic_fetch_add_u32(&usage->config_generation, 1);
}

/* ---- flushing (dbworker/flush.c) ---- */

/*
 * Move what is new for a database from delta to flushing and list it in
 * out (room for CLAUDE_USAGE_ENTRIES); drop entries of past days that are
 * written.  Returns how many were listed.
 */
int
claude_usage_take_new(Oid dbid, UsageFlushed *out)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	int32		day = claude_usage_today();
	int			n = 0;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, usage_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dbid != dbid)
			continue;
		if (e->delta.requests > 0)
		{
			e->flushing = e->delta;
			memset(&e->delta, 0, sizeof(e->delta));
			out[n].key = e->key;
			out[n].counts = e->flushing;
			n++;
		}
		else if (e->key.day < day && e->reserved == 0 && e->flushing.requests == 0)
			(void) hash_search(usage_hash, &e->key, HASH_REMOVE, NULL);
	}
	usage->full_reported = false;
	LWLockRelease(usage->lock);
	return n;
}

/* The write did not commit: what was being flushed is new again. */
void
claude_usage_unflush(const UsageFlushed *f, int n)
{
	if (n == 0)
		return;
	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		UsageEntry *e = hash_search(usage_hash, &f[i].key, HASH_FIND, NULL);

		if (e)
		{
			claude_usage_counts_add(&e->delta, &e->flushing, 1);
			memset(&e->flushing, 0, sizeof(e->flushing));
		}
	}
	LWLockRelease(usage->lock);
}

/* Written: each row's totals (in f) are its entry's new base. */
void
claude_usage_flushed(const UsageFlushed *f, int n, bool loaded)
{
	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		UsageEntry *e = hash_search(usage_hash, &f[i].key, HASH_FIND, NULL);

		if (e)
		{
			memset(&e->flushing, 0, sizeof(e->flushing));
			e->base = f[i].counts;
			e->loaded = loaded;
		}
	}
	LWLockRelease(usage->lock);
}

/*
 * The usage of a database not yet in claude_usage_log (new or being
 * written), palloc'd; returns how many rows.
 */
int
claude_usage_pending_of(Oid dbid, UsageFlushed **out)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	int			n = 0;

	*out = palloc(CLAUDE_USAGE_ENTRIES * sizeof(UsageFlushed));
	LWLockAcquire(usage->lock, LW_SHARED);
	hash_seq_init(&seq, usage_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		UsageCounts c = e->delta;

		claude_usage_counts_add(&c, &e->flushing, 1);
		if (e->key.dbid != dbid || c.requests == 0)
			continue;
		(*out)[n].key = e->key;
		(*out)[n].counts = c;
		n++;
	}
	LWLockRelease(usage->lock);
	return n;
}
