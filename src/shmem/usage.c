/*
 * usage.c
 *		Usage per (database, role, UTC day, model) in a shared hash: counted
 *		by the HTTP worker and the batch write-back, checked against budgets
 *		by client/budget.c, flushed to claude_usage_log by dbworker/flush.c.
 *
 * Three kinds of entry.  A database's total of a role and day (USAGE_DB)
 * holds what claude_usage_log says (base), what is new (delta), what is
 * being written (flushing), the requests in flight under a budget
 * (reserved) and what the Message Batch requests filed under its day may
 * spend until their results settle (batch, as claude_batch_items says once
 * loaded, then kept up to date by client/reserve.c).  Its usage by model
 * (USAGE_MODEL) holds delta, flushing and written (for claude_usage, which
 * must count a row once whatever its snapshot sees) only, and goes a round
 * after it is written, so that no role fills the table with model names.  What a role spent on a
 * day on the whole server (USAGE_SERVER) is the sum of its databases'
 * totals, kept up to date with each change of one: a budget check reads
 * one entry.  Also the generation of prices and budgets, bumped at commit
 * of a change, so every session reads them again.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "utils/timestamp.h"

#include "common/fault.h"
#include "common/money.h"
#include "shmem/area.h"
#include "shmem/dbqueue.h"
#include "shmem/usage.h"
#include "shmem/usage_int.h"

UsageShared *claude_usage_state = NULL;
HTAB	   *claude_usage_entries = NULL;

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
	claude_usage_state = ShmemInitStruct("claude usage", sizeof(UsageShared), &found);
	if (!found)
	{
		claude_usage_state->lock = claude_named_lock(CLAUDE_LOCK_USAGE);
		pg_atomic_init_u32(&claude_usage_state->config_generation, 1);
		claude_usage_state->full_reported = false;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(UsageKey);
	info.entrysize = sizeof(UsageEntry);
	claude_usage_entries = ShmemInitHash("claude usage entries", CLAUDE_USAGE_ENTRIES, CLAUDE_USAGE_ENTRIES,
							   &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/* A model id as usage keeps it: cut to fit, on a character boundary. */
void
claude_usage_model_key(char *to, const char *model)
{
	int			n = model ? pg_mbcliplen(model, strlen(model), CLAUDE_USAGE_MODEL_LEN - 1) : 0;

	memset(to, 0, CLAUDE_USAGE_MODEL_LEN);
	if (n > 0)
		memcpy(to, model, n);
}

static void
make_key(UsageKey *key, Oid dbid, Oid role, int32 day, UsageKind kind, const char *model)
{
	memset(key, 0, sizeof(*key));
	key->dbid = dbid;
	key->role = role;
	key->day = day;
	key->kind = kind;
	if (model)
		memcpy(key->model, model, CLAUDE_USAGE_MODEL_LEN);
	key->model[CLAUDE_USAGE_MODEL_LEN - 1] = '\0';
}

/*
 * What a database's total of a role counts against limits: requests used,
 * in flight and reserved by batches; tokens and nano-USD used and reserved
 * by batches.
 */
static void
spent(const UsageEntry *e, int64 value[3])
{
	UsageCounts used = e->base;

	claude_usage_counts_add(&used, &e->delta, 1);
	claude_usage_counts_add(&used, &e->flushing, 1);
	value[0] = used.requests + e->reserved + e->batch.requests;
	value[1] = used.input + used.output + used.cache_write + used.cache_read + e->batch.tokens;
	value[2] = claude_nanos_add(used.cost, e->batch.cost);
}

/* The sum over databases of what a role spent on a day, by a scan. */
static void
sum_databases(Oid role, int32 day, int64 value[3])
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;

	memset(value, 0, 3 * sizeof(int64));
	hash_seq_init(&seq, claude_usage_entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		int64		v[3];

		if (e->key.kind != USAGE_DB || e->key.role != role || e->key.day != day)
			continue;
		spent(e, v);
		value[0] += v[0];
		value[1] += v[1];
		value[2] = claude_nanos_add(value[2], v[2]);
	}
}

/*
 * A database's total e changed from before (spent() of it then): its
 * role's server-wide sum follows, if there is one.
 */
static void
changed(const UsageEntry *e, const int64 before[3])
{
	UsageKey	key;
	UsageEntry *s;
	int64		after[3];

	make_key(&key, InvalidOid, e->key.role, e->key.day, USAGE_SERVER, NULL);
	if ((s = hash_search(claude_usage_entries, &key, HASH_FIND, NULL)) == NULL)
		return;
	spent(e, after);
	s->spent[0] += after[0] - before[0];
	s->spent[1] += after[1] - before[1];
	s->spent[2] = claude_nanos_add(s->spent[2], after[2] - before[2]);
}

/*
 * The entry of a key, made if missing; NULL when the table is full (said
 * once in the log if report: not at the end of a transaction).  A new
 * server-wide sum starts from the databases' totals.
 */
static UsageEntry *
entry_for(Oid dbid, Oid role, int32 day, UsageKind kind, const char *model, bool report)
{
	UsageKey	key;
	UsageEntry *e;
	bool		found;

	make_key(&key, dbid, role, day, kind, model);
	e = hash_search(claude_usage_entries, &key, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		if (report && !claude_usage_state->full_reported)
			elog(LOG, "claude: usage table full (%d entries): usage is not recorded until the database workers flush it",
				 CLAUDE_USAGE_ENTRIES);
		claude_usage_state->full_reported = true;
		return NULL;
	}
	if (!found)
	{
		memset((char *) e + sizeof(UsageKey), 0, sizeof(UsageEntry) - sizeof(UsageKey));
		e->key = key;
		if (kind == USAGE_SERVER)
			sum_databases(role, day, e->spent);
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
	to->cost = claude_nanos_add(to->cost, sign * from->cost);
	to->unpriced += sign * from->unpriced;
}

/* One request that reached the API, and its usage if known, into c. */
void
claude_usage_count_request(UsageCounts *c, const ClaudeUsage *u, int64 cost)
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
		c->cost = claude_nanos_add(c->cost, cost);
	else if (u)
		c->unpriced++;
}

/*
 * Usage c of model counts in a database's total e (and its server-wide
 * sum) and by model (under '' once the table is 3/4 full: model names,
 * which any role picks, never crowd out the totals budgets read).
 * *was_clean: nothing of e was waiting to be flushed.
 */
static void
count_in(UsageEntry *e, const char *model, const UsageCounts *c, bool report, bool *was_clean)
{
	UsageEntry *m;
	int64		before[3];
	UsageKey	key;

	spent(e, before);
	if (was_clean)
		*was_clean = e->delta.requests == 0;
	claude_usage_counts_add(&e->delta, c, 1);
	changed(e, before);
	make_key(&key, e->key.dbid, e->key.role, e->key.day, USAGE_MODEL, model);
	if (hash_get_num_entries(claude_usage_entries) >= CLAUDE_USAGE_ENTRIES / 4 * 3 &&
		hash_search(claude_usage_entries, &key, HASH_FIND, NULL) == NULL)
		model = NULL;
	m = entry_for(e->key.dbid, e->key.role, e->key.day, USAGE_MODEL, model, report);
	if (m != NULL)
		claude_usage_counts_add(&m->delta, c, 1);
}

static void
record(Oid dbid, Oid role, const char *model, const UsageCounts *c, int32 reserved_day,
	   bool *was_clean)
{
	int64		before[3];
	UsageEntry *e;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	/* the tests' ERROR with a lock held, in the HTTP worker (common/fault.c) */
	claude_fault_point("usage_lock");
	if (reserved_day >= 0 &&
		(e = entry_for(dbid, role, reserved_day, USAGE_DB, NULL, true)) != NULL && e->reserved > 0)
	{
		spent(e, before);
		e->reserved--;
		changed(e, before);
	}
	if (c && (e = entry_for(dbid, role, claude_usage_today(), USAGE_DB, NULL, true)) != NULL)
		count_in(e, model, c, true, was_clean);
	LWLockRelease(claude_usage_state->lock);
}

/*
 * HTTP worker: a Messages request is over.  Usage counts it when it reached
 * the API; its budget reservation, if any, is released either way.  The
 * first new usage of a database wakes that database's worker to flush it.
 */
void
claude_usage_done(const ClaudeRequest *req, bool sent, const ClaudeUsage *u, int64 cost)
{
	UsageCounts c;
	bool		was_clean = false;

	if (!OidIsValid(req->dbid) || !OidIsValid(req->role))
		return;
	memset(&c, 0, sizeof(c));
	claude_usage_count_request(&c, u, cost);
	record(req->dbid, req->role, req->model, sent ? &c : NULL, req->reserved_day, &was_clean);
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
 * Whether this database's total of role on day holds claude_usage_log's
 * rows (*base) and the pending batch requests of claude_batch_items
 * (*batch), or needs none (the table is full).
 */
void
claude_usage_loaded(Oid role, int32 day, bool *base, bool *batch)
{
	UsageEntry *e;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day, USAGE_DB, NULL, true);
	*base = e == NULL || e->loaded;
	*batch = e == NULL || e->batch_loaded;
	LWLockRelease(claude_usage_state->lock);
}

/*
 * What the tables of this database say, for the parts of its total not
 * loaded yet (batch NULL: that part is left for later).
 */
void
claude_usage_set_base(Oid role, int32 day, const UsageCounts *base, const UsageReserve *batch)
{
	int64		before[3];
	UsageEntry *e;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day, USAGE_DB, NULL, true);
	if (e != NULL)
	{
		spent(e, before);
		if (!e->loaded)
		{
			e->base = *base;
			e->loaded = true;
		}
		if (batch != NULL && !e->batch_loaded)
		{
			e->batch = *batch;
			e->batch_loaded = true;
		}
		changed(e, before);
	}
	LWLockRelease(claude_usage_state->lock);
}

/*
 * What role spent on day on the whole server (see spent()), into value[];
 * its server-wide sum made if missing.  Under the lock, exclusive.
 */
static void
server_spent(Oid role, int32 day, int64 value[3])
{
	UsageEntry *s = entry_for(InvalidOid, role, day, USAGE_SERVER, NULL, true);

	if (s != NULL)
		memcpy(value, s->spent, 3 * sizeof(int64));
	else
		sum_databases(role, day, value);
}

/* What role spent on day on the whole server: requests, tokens, nano-USD. */
void
claude_usage_spent(Oid role, int32 day, int64 value[3])
{
	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	server_spent(role, day, value);
	LWLockRelease(claude_usage_state->lock);
}

/*
 * Whether n more requests of role stay within limit[] today (requests,
 * tokens, nano-USD; < 0: no limit), counting what it spent in every
 * database: the requests must fit, of tokens and dollars some must be
 * left.  If reserve, one is counted in flight in this database at once,
 * under the same lock.  Else *over is the limit reached.
 */
bool
claude_usage_within(Oid role, const int64 limit[3], int64 n, bool reserve, int *over)
{
	int64		before[3];
	UsageEntry *e;
	bool		ok = true;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, claude_usage_today(), USAGE_DB, NULL, true);
	if (e != NULL)
	{
		int64		value[3];

		server_spent(role, claude_usage_today(), value);
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
		{
			spent(e, before);
			e->reserved++;
			changed(e, before);
		}
	}
	LWLockRelease(claude_usage_state->lock);
	return ok;
}

/*
 * Reserve r for a Message Batch filed under day if it fits every limit[]
 * whole with all that is spent and reserved on the server; else *over is
 * the limit it passes.  A full table reserves nothing and refuses nothing.
 */
bool
claude_usage_reserve_batch(Oid role, int32 day, const int64 limit[3], const UsageReserve *r,
						   int *over)
{
	int64		before[3];
	UsageEntry *e;
	bool		ok = true;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day, USAGE_DB, NULL, true);
	if (e != NULL)
	{
		int64		value[3];

		server_spent(role, day, value);
		value[0] += r->requests;
		value[1] += r->tokens;
		value[2] = claude_nanos_add(value[2], r->cost);
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
			spent(e, before);
			e->batch.requests += r->requests;
			e->batch.tokens += r->tokens;
			e->batch.cost = claude_nanos_add(e->batch.cost, r->cost);
			changed(e, before);
		}
	}
	LWLockRelease(claude_usage_state->lock);
	return ok;
}

/*
 * Batch requests filed under day are settled, or their reservation undone:
 * released goes back (from an entry that holds reservations) and used, if
 * any, counts, under model.  Never raises: called at the end of a
 * transaction.
 */
void
claude_usage_settle_batch(Oid dbid, Oid role, int32 day, const char *model,
						  const UsageReserve *released, const UsageCounts *used)
{
	int64		before[3];
	UsageEntry *e;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	e = entry_for(dbid, role, day, USAGE_DB, NULL, false);
	if (e != NULL && e->batch_loaded)
	{
		spent(e, before);
		e->batch.requests -= released->requests;
		e->batch.tokens -= released->tokens;
		e->batch.cost -= released->cost;
		/* none left: nothing left of the estimates either */
		if (e->batch.requests <= 0)
			memset(&e->batch, 0, sizeof(e->batch));
		changed(e, before);
	}
	if (e != NULL && used != NULL)
		count_in(e, model, used, false, NULL);
	LWLockRelease(claude_usage_state->lock);
}

uint32
claude_usage_config_generation(void)
{
	return pg_atomic_read_u32(&claude_usage_state->config_generation);
}

void
claude_usage_config_bump(void)
{
	if (claude_usage_state != NULL)
		pg_atomic_fetch_add_u32(&claude_usage_state->config_generation, 1);
}

/* ---- flushing (dbworker/flush.c) ---- */

/*
 * Move what is new for a database from delta to flushing and list it in
 * out (room for CLAUDE_USAGE_ENTRIES): its usage by model, then the totals
 * whose rows change.  Drop what is of past days and written.  Returns how
 * many were listed.
 */
int
claude_usage_take_new(Oid dbid, UsageFlushed *out)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	int32		day = claude_usage_today();
	int			n = 0;

	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, claude_usage_entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.kind == USAGE_SERVER)
		{
			/* budgets check today's; a past day's is made again if asked */
			if (e->key.day < day)
				(void) hash_search(claude_usage_entries, &e->key, HASH_REMOVE, NULL);
			continue;
		}
		if (e->key.dbid != dbid)
			continue;
		if (e->key.kind == USAGE_MODEL)
		{
			memset(&e->written, 0, sizeof(e->written));
			e->written_xid = InvalidTransactionId;
			if (e->delta.requests == 0 && e->flushing.requests == 0)
			{
				(void) hash_search(claude_usage_entries, &e->key, HASH_REMOVE, NULL);
				continue;
			}
		}
		if (e->delta.requests > 0)
		{
			e->flushing = e->delta;
			memset(&e->delta, 0, sizeof(e->delta));
			out[n].key = e->key;
			out[n].counts = e->flushing;
			n++;
		}
		else if (e->key.kind == USAGE_DB && e->key.day < day && e->reserved == 0 &&
				 e->flushing.requests == 0)
		{
			int64		before[3];

			spent(e, before);
			memset(&e->base, 0, sizeof(e->base));
			memset(&e->batch, 0, sizeof(e->batch));
			changed(e, before);
			(void) hash_search(claude_usage_entries, &e->key, HASH_REMOVE, NULL);
		}
	}
	claude_usage_state->full_reported = false;
	LWLockRelease(claude_usage_state->lock);
	return n;
}

/* The write did not commit: what was being flushed is new again. */
void
claude_usage_unflush(const UsageFlushed *f, int n)
{
	if (n == 0)
		return;
	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		UsageEntry *e = hash_search(claude_usage_entries, &f[i].key, HASH_FIND, NULL);

		if (e)
		{
			claude_usage_counts_add(&e->delta, &e->flushing, 1);
			memset(&e->flushing, 0, sizeof(e->flushing));
			e->flush_xid = InvalidTransactionId;
		}
	}
	LWLockRelease(claude_usage_state->lock);
}

/*
 * Written: a total's new base is what its rows now hold (in f; loaded
 * unless the extension is gone); usage by model written and not new again
 * is dropped.
 */
void
claude_usage_flushed(const UsageFlushed *f, int n, bool loaded)
{
	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		UsageEntry *e = hash_search(claude_usage_entries, &f[i].key, HASH_FIND, NULL);
		int64		before[3];

		if (e == NULL)
			continue;
		if (e->key.kind == USAGE_MODEL)
		{
			e->written = e->flushing;
			e->written_xid = e->flush_xid;
			memset(&e->flushing, 0, sizeof(e->flushing));
			e->flush_xid = InvalidTransactionId;
			continue;
		}
		spent(e, before);
		memset(&e->flushing, 0, sizeof(e->flushing));
		e->base = f[i].counts;
		e->loaded = loaded;
		changed(e, before);
	}
	LWLockRelease(claude_usage_state->lock);
}
