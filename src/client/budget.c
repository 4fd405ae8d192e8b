/*
 * usage.c
 *		What each role spends per day, the prices that say what it costs,
 *		and the budgets that stop a role before it spends too much.
 *
 * Usage lives in a fixed-size shared hash keyed by (database, role, UTC
 * day).  The HTTP worker adds every Messages request that reached the API,
 * with its tokens and cost; the database's worker flushes what is new to
 * claude_usage_log every few seconds and when it exits, so usage survives
 * restarts (an immediate shutdown loses at most those seconds).  The view
 * claude_usage adds what is not flushed yet.
 *
 * A budget is checked in the calling session before a request is queued:
 * under one lock, a role's requests today (flushed, not yet flushed, and
 * in flight) must stay within requests_per_day, and the request is
 * counted as in flight at once, so concurrent sessions cannot overshoot
 * it.  Tokens and dollars are known only from replies: a role may pass
 * tokens_per_day or usd_per_day by what its requests in flight use.
 *
 * claude_budgets and claude_prices are read whole into each session and
 * read again after a change commits (a statement trigger bumps a shared
 * generation counter at commit), so changes apply at once, no restart.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "dbworker/dbworker.h"
#include "common/errors.h"
#include "shmem/slots.h"
#include "common/security.h"
#include "shmem/stats.h"
#include "client/budget.h"
#include "common/spi.h"

PG_FUNCTION_INFO_V1(claude_usage_pending);
PG_FUNCTION_INFO_V1(claude_config_changed);

#define USAGE_ENTRIES	4096

typedef struct UsageKey
{
	Oid			dbid;
	Oid			role;
	int32		day;			/* days since 2000-01-01, UTC */
} UsageKey;

typedef struct UsageCounts
{
	int64		requests;
	int64		input;
	int64		output;
	int64		cache_write;
	int64		cache_read;
	double		cost;
	int64		unpriced;		/* requests whose model has no price */
} UsageCounts;

typedef struct UsageEntry
{
	UsageKey	key;
	bool		loaded;			/* base holds claude_usage_log's row */
	UsageCounts base;			/* in claude_usage_log */
	UsageCounts delta;			/* not yet */
	UsageCounts flushing;		/* being written now */
	int64		reserved;		/* requests in flight under a budget */
} UsageEntry;

typedef struct UsageShared
{
	LWLock	   *lock;
	pg_atomic_uint32 config_generation;
	bool		full_reported;
} UsageShared;

static UsageShared *usage = NULL;
static HTAB *usage_hash = NULL;

Oid			claude_request_role = InvalidOid;

Size
claude_usage_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(UsageShared)),
					hash_estimate_size(USAGE_ENTRIES, sizeof(UsageEntry)));
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
		usage->lock = &(GetNamedLWLockTranche("claude"))[1].lock;
		pg_atomic_init_u32(&usage->config_generation, 1);
		usage->full_reported = false;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(UsageKey);
	info.entrysize = sizeof(UsageEntry);
	usage_hash = ShmemInitHash("claude usage entries", USAGE_ENTRIES, USAGE_ENTRIES,
							   &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

static int32
today(void)
{
	return (int32) (GetCurrentTimestamp() / USECS_PER_DAY);
}

/* The entry of a key, made if missing; NULL when the table is full. */
static UsageEntry *
entry_for(Oid dbid, Oid role, int32 day)
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
		if (!usage->full_reported)
			elog(LOG, "claude: usage table full (%d entries): usage is not recorded until the database workers flush it",
				 USAGE_ENTRIES);
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

static void
counts_add(UsageCounts *to, const UsageCounts *from, int sign)
{
	to->requests += sign * from->requests;
	to->input += sign * from->input;
	to->output += sign * from->output;
	to->cache_write += sign * from->cache_write;
	to->cache_read += sign * from->cache_read;
	to->cost += sign * from->cost;
	to->unpriced += sign * from->unpriced;
}

static void
counts_of(UsageCounts *c, const ClaudeUsage *u, double cost)
{
	memset(c, 0, sizeof(*c));
	c->requests = 1;
	if (u)
	{
		c->input = (int64) u->input;
		c->output = (int64) u->output;
		c->cache_write = (int64) u->cache_write;
		c->cache_read = (int64) u->cache_read;
	}
	if (cost >= 0)
		c->cost = cost;
	else if (u)
		c->unpriced = 1;
}

static void
record(Oid dbid, Oid role, const UsageCounts *c, int32 reserved_day, bool *was_clean)
{
	UsageEntry *e;

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	if (reserved_day >= 0 && (e = entry_for(dbid, role, reserved_day)) != NULL && e->reserved > 0)
		e->reserved--;
	if (c && (e = entry_for(dbid, role, today())) != NULL)
	{
		*was_clean = e->delta.requests == 0;
		counts_add(&e->delta, c, 1);
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
	counts_of(&c, u, cost);
	record(req->dbid, req->role, sent ? &c : NULL, req->reserved_day, &was_clean);
	if (sent && was_clean)
		claude_jobs_kick(req->dbid);
}

/* Database worker: the usage of a batch result, in its own database. */
void
claude_usage_add(Oid role, const ClaudeUsage *u, double cost)
{
	UsageCounts c;
	bool		was_clean = false;

	counts_of(&c, u, cost);
	record(MyDatabaseId, role, &c, -1, &was_clean);
	claude_stats_billed(u, cost);
}

/* ---- prices and budgets, as this session last read them ---- */

typedef struct Price
{
	char	   *model;			/* an id or a prefix of ids */
	double		in;
	double		out;
} Price;

typedef struct Budget
{
	Oid			role;
	double		limit[3];		/* requests, tokens, usd per day; < 0: none */
} Budget;

static const char *const budget_names[3] = {"requests_per_day", "tokens_per_day", "usd_per_day"};

static struct
{
	uint32		generation;		/* 0: never read */
	Oid			dbid;
	MemoryContext cxt;
	Oid			nsp;			/* the extension's schema; invalid: not here */
	Oid			owner;
	Price	   *prices;
	int			nprices;
	Budget	   *budgets;
	int			nbudgets;
} config;

static double
getfloat(HeapTuple tup, TupleDesc desc, int att)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, att, &isnull);

	return isnull ? -1 : DatumGetFloat8(d);
}

/* Read claude_prices and claude_budgets again if they changed. */
static void
load_config(void)
{
	uint32		generation = pg_atomic_read_u32(&usage->config_generation);
	ClaudeRoleSwitch as_owner;
	bool		isnull;

	if (config.generation == generation && config.dbid == MyDatabaseId)
		return;
	if (config.cxt == NULL)
		config.cxt = AllocSetContextCreate(TopMemoryContext, "claude prices and budgets",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(config.cxt);
	config.nprices = config.nbudgets = 0;
	config.nsp = InvalidOid;

	SPI_connect();
	if (claude_extension_find(&config.nsp, &config.owner))
	{
		const char *schema;

		schema = quote_identifier(get_namespace_name(config.nsp));

		/* the tables are closed to PUBLIC: read them as their owner */
		claude_become(&as_owner, config.owner, false);
		if (SPI_execute(psprintf("SELECT model, input_usd_per_mtok::pg_catalog.float8, "
								 "output_usd_per_mtok::pg_catalog.float8 "
								 "FROM %s.claude_prices", schema), true, 0) == SPI_OK_SELECT)
		{
			config.prices = MemoryContextAlloc(config.cxt, Max(SPI_processed, 1) * sizeof(Price));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				Price	   *p = &config.prices[config.nprices++];

				p->model = MemoryContextStrdup(config.cxt,
											   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
				p->in = getfloat(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
				p->out = getfloat(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
			}
		}
		if (SPI_execute(psprintf("SELECT role::pg_catalog.oid, requests_per_day::pg_catalog.float8, "
								 "tokens_per_day::pg_catalog.float8, usd_per_day::pg_catalog.float8 "
								 "FROM %s.claude_budgets", schema),
						true, 0) == SPI_OK_SELECT)
		{
			config.budgets = MemoryContextAlloc(config.cxt, Max(SPI_processed, 1) * sizeof(Budget));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				Budget	   *b = &config.budgets[config.nbudgets++];

				b->role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
				for (int k = 0; k < 3; k++)
					b->limit[k] = getfloat(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, k + 2);
			}
		}
		claude_unbecome(&as_owner);
	}
	SPI_finish();
	config.generation = generation;
	config.dbid = MyDatabaseId;
}

/*
 * The model of a request body.  Bodies are printed in jsonb's canonical
 * form, whose keys go shortest first, so a top-level "model" comes first.
 */
static bool
body_model(const char *body, Size len, char *model, Size size)
{
	static const char prefix[] = "{\"model\": \"";
	const char *p = body + sizeof(prefix) - 1;
	Size		n = 0;

	if (len < sizeof(prefix) || strncmp(body, prefix, sizeof(prefix) - 1) != 0)
		return false;
	while (p < body + len && *p != '"' && *p != '\\' && n < size - 1)
		model[n++] = *p++;
	model[n] = '\0';
	return p < body + len && *p == '"';
}

/* List prices of a Messages request's model: the longest matching row. */
void
claude_price_of(const char *body, Size len, double *price_in, double *price_out)
{
	char		model[256];
	int			best = -1;
	Size		best_len = 0;

	*price_in = *price_out = -1;
	if (!body_model(body, len, model, sizeof(model)))
		return;
	load_config();
	for (int i = 0; i < config.nprices; i++)
	{
		Size		n = strlen(config.prices[i].model);

		if (n >= best_len && strncmp(model, config.prices[i].model, n) == 0)
			best = i, best_len = n;
	}
	if (best >= 0)
	{
		*price_in = config.prices[best].in;
		*price_out = config.prices[best].out;
	}
}

static Budget *
budget_of(Oid role)
{
	load_config();
	for (int i = 0; i < config.nbudgets; i++)
		if (config.budgets[i].role == role)
			return &config.budgets[i];
	return NULL;
}

/*
 * Before a request of a role with a budget: make sure today's entry holds
 * what claude_usage_log says (after a restart, say).  May raise.
 */
void
claude_budget_prepare(Oid role)
{
	UsageEntry *e;
	bool		loaded;
	UsageCounts base;
	int32		day = today();
	ClaudeRoleSwitch as_owner;

	if (budget_of(role) == NULL || RecoveryInProgress())
		return;
	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day);
	loaded = e == NULL || e->loaded;
	LWLockRelease(usage->lock);
	if (loaded)
		return;

	memset(&base, 0, sizeof(base));
	SPI_connect();
	claude_become(&as_owner, config.owner, false);
	if (SPI_execute_with_args(psprintf("SELECT requests, input_tokens, output_tokens, cache_write_tokens, "
									   "cache_read_tokens, cost_usd::pg_catalog.float8 FROM %s.claude_usage_log "
									   "WHERE day OPERATOR(pg_catalog.=) $1 "
									   "AND role::pg_catalog.oid OPERATOR(pg_catalog.=) $2",
									   quote_identifier(get_namespace_name(config.nsp))),
							  2, (Oid[]) {DATEOID, OIDOID},
							  (Datum[]) {DateADTGetDatum(day), ObjectIdGetDatum(role)},
							  NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		base.requests = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		base.input = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		base.output = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		base.cache_write = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		base.cache_read = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		base.cost = getfloat(tup, desc, 6);
	}
	claude_unbecome(&as_owner);
	SPI_finish();

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, day);
	if (e != NULL && !e->loaded)
	{
		e->base = base;
		e->loaded = true;
	}
	LWLockRelease(usage->lock);
}

/* why, for a standby: its usage is never recorded, so it cannot count */
static const char standby_why[] = "standby";

/*
 * Whether role's budget allows n more requests today; if reserve, count
 * one as in flight at once.  Never raises; false with *why set.
 */
static bool
budget_allows(Oid role, bool reserve, int64 n, char **why)
{
	Budget	   *b = budget_of(role);
	UsageEntry *e;
	bool		ok = true;

	if (b == NULL)
		return true;
	if (RecoveryInProgress())
	{
		*why = (char *) standby_why;
		return false;
	}
	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	e = entry_for(MyDatabaseId, role, today());
	if (e != NULL)
	{
		UsageCounts used = e->base;
		double		value[3];

		counts_add(&used, &e->delta, 1);
		counts_add(&used, &e->flushing, 1);
		value[0] = used.requests + e->reserved + n;
		value[1] = used.input + used.output + used.cache_write + used.cache_read;
		value[2] = used.cost;
		for (int k = 0; k < 3 && ok; k++)
		{
			/* requests: this one must fit; tokens and dollars: some must be left */
			if (b->limit[k] >= 0 && (k == 0 ? value[k] > b->limit[k] : value[k] >= b->limit[k]))
			{
				ok = false;
				*why = psprintf("%s %g", budget_names[k], b->limit[k]);
			}
		}
		if (ok && reserve)
			e->reserved++;
	}
	LWLockRelease(usage->lock);
	return ok;
}

/*
 * Count one more request of role as in flight if its budget allows it;
 * returns the day of the reservation, -1 when the role has no budget, or
 * -2 (with *why) when the budget is spent.  Never raises: the request is
 * packed already.
 */
int32
claude_budget_reserve(Oid role, char **why)
{
	if (budget_of(role) == NULL)
		return -1;
	return budget_allows(role, true, 1, why) ? today() : -2;
}

/* The message of a spent budget. */
char *
claude_budget_message(Oid role, const char *why)
{
	if (why == standby_why)
		return psprintf("role %s has a daily budget, which a standby cannot account for",
						GetUserNameFromId(role, true));
	return psprintf("daily budget of role %s is spent (%s)", GetUserNameFromId(role, true), why);
}

void
claude_budget_refuse(Oid role, const char *why)
{
	ereport(ERROR,
			(errcode(CLAUDE_ERRCODE_BUDGET),
			 errmsg_internal("%s", claude_budget_message(role, why)),
			 why == standby_why ?
			 errdetail("Usage is recorded on the primary only.") :
			 errdetail("Usage is counted per UTC day in claude_usage."),
			 why == standby_why ?
			 errhint("Make the call on the primary.") :
			 errhint("An administrator can raise it in claude_budgets; the change applies at once.")));
}

/* Whether role may send one more request now (reserving nothing). */
bool
claude_budget_allows(Oid role, char **why)
{
	claude_budget_prepare(role);
	return budget_allows(role, false, 1, why);
}

/*
 * A check alone, for work that reserves nothing: n requests about to be
 * sent at once (a batch submission) must all fit.
 */
void
claude_budget_check(Oid role, int64 n)
{
	char	   *why;

	claude_budget_prepare(role);
	if (!budget_allows(role, false, n, &why))
		claude_budget_refuse(role, why);
}

/*
 * The role a request is made for: the session's role (SECURITY DEFINER
 * functions such as the trigger do not change it), or the one a database
 * worker names for a job.
 */
Oid
claude_request_owner(void)
{
	return OidIsValid(claude_request_role) ? claude_request_role : GetOuterUserId();
}

/* ---- flushing to claude_usage_log (database worker) ---- */

typedef struct Flushed
{
	UsageKey	key;
	UsageCounts counts;
} Flushed;

static Flushed *flushing = NULL;
static int	nflushing = 0;

/* Give what was being flushed back to delta: the write did not commit. */
static void
unflush(void)
{
	if (nflushing == 0)
		return;
	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nflushing; i++)
	{
		UsageEntry *e = hash_search(usage_hash, &flushing[i].key, HASH_FIND, NULL);

		if (e)
		{
			counts_add(&e->delta, &e->flushing, 1);
			memset(&e->flushing, 0, sizeof(e->flushing));
		}
	}
	LWLockRelease(usage->lock);
	nflushing = 0;
}

static void
unflush_at_exit(int code, Datum arg)
{
	unflush();
}

/*
 * Write this database's new usage to claude_usage_log in a transaction of
 * its own, and forget entries of past days once they are written.
 */
void
claude_usage_flush(void)
{
	static bool registered = false;
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	int32		day = today();
	char	   *table;
	volatile bool gone = false;
	Oid			nsp;
	MemoryContext cxt = CurrentMemoryContext;

	if (!registered)
	{
		before_shmem_exit(unflush_at_exit, (Datum) 0);
		registered = true;
	}
	if (flushing == NULL)
		flushing = MemoryContextAlloc(TopMemoryContext, USAGE_ENTRIES * sizeof(Flushed));

	/* take what is new, and drop what is old and written */
	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	nflushing = 0;
	hash_seq_init(&seq, usage_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->key.dbid != MyDatabaseId)
			continue;
		if (e->delta.requests > 0)
		{
			e->flushing = e->delta;
			memset(&e->delta, 0, sizeof(e->delta));
			flushing[nflushing].key = e->key;
			flushing[nflushing].counts = e->flushing;
			nflushing++;
		}
		else if (e->key.day < day && e->reserved == 0 && e->flushing.requests == 0)
			(void) hash_search(usage_hash, &e->key, HASH_REMOVE, NULL);
	}
	usage->full_reported = false;
	LWLockRelease(usage->lock);
	if (nflushing == 0)
		return;

	PG_TRY();
	{
		claude_xact_begin();
		/* dropped since: there is nowhere to keep it */
		gone = !claude_extension_find(&nsp, NULL);
		table = gone ? NULL : quote_qualified_identifier(get_namespace_name(nsp), "claude_usage_log");
		for (int i = 0; !gone && i < nflushing; i++)
		{
			UsageCounts *c = &flushing[i].counts;
			HeapTuple	tup;
			TupleDesc	desc;
			bool		isnull;

			claude_spi_run(psprintf("INSERT INTO %s AS u VALUES ($1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.numeric, $9) "
									"ON CONFLICT (day, role) DO UPDATE SET requests = u.requests + excluded.requests, "
									"input_tokens = u.input_tokens + excluded.input_tokens, "
									"output_tokens = u.output_tokens + excluded.output_tokens, "
									"cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens, "
									"cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens, "
									"cost_usd = u.cost_usd + excluded.cost_usd, "
									"unpriced_requests = u.unpriced_requests + excluded.unpriced_requests "
									"RETURNING requests, input_tokens, output_tokens, cache_write_tokens, "
									"cache_read_tokens, cost_usd::pg_catalog.float8, unpriced_requests", table),
						   9, (Oid[]) {DATEOID, OIDOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, FLOAT8OID, INT8OID},
						   (Datum[]) {DateADTGetDatum(flushing[i].key.day), ObjectIdGetDatum(flushing[i].key.role),
				Int64GetDatum(c->requests), Int64GetDatum(c->input), Int64GetDatum(c->output),
				Int64GetDatum(c->cache_write), Int64GetDatum(c->cache_read), Float8GetDatum(c->cost),
			Int64GetDatum(c->unpriced)}, SPI_OK_INSERT_RETURNING);
			/* the row's totals are the entry's new base */
			tup = SPI_tuptable->vals[0];
			desc = SPI_tuptable->tupdesc;
			c->requests = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			c->input = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			c->output = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			c->cache_write = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
			c->cache_read = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
			c->cost = getfloat(tup, desc, 6);
			c->unpriced = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
		}
		claude_xact_end();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		unflush();
		PG_RE_THROW();
	}
	PG_END_TRY();

	LWLockAcquire(usage->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nflushing; i++)
	{
		e = hash_search(usage_hash, &flushing[i].key, HASH_FIND, NULL);
		if (e)
		{
			memset(&e->flushing, 0, sizeof(e->flushing));
			e->base = flushing[i].counts;
			e->loaded = !gone;
		}
	}
	LWLockRelease(usage->lock);
	nflushing = 0;
}

/* ---- SQL ---- */

/*
 * claude_usage_pending(): usage of this database not yet in
 * claude_usage_log; a role sees its own rows only, a superuser all.
 */
Datum
claude_usage_pending(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	bool		all = superuser();
	Oid			me = GetUserId();

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();
	LWLockAcquire(usage->lock, LW_SHARED);
	hash_seq_init(&seq, usage_hash);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		UsageCounts c = e->delta;
		Datum		values[9];
		bool		nulls[9] = {0};

		counts_add(&c, &e->flushing, 1);
		if (e->key.dbid != MyDatabaseId || c.requests == 0 || (!all && e->key.role != me))
			continue;
		values[0] = DateADTGetDatum(e->key.day);
		values[1] = ObjectIdGetDatum(e->key.role);
		values[2] = Int64GetDatum(c.requests);
		values[3] = Int64GetDatum(c.input);
		values[4] = Int64GetDatum(c.output);
		values[5] = Int64GetDatum(c.cache_write);
		values[6] = Int64GetDatum(c.cache_read);
		values[7] = DirectFunctionCall1(float8_numeric, Float8GetDatum(c.cost));
		values[8] = Int64GetDatum(c.unpriced);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(usage->lock);
	return (Datum) 0;
}

/* Bumped at commit by a change of claude_prices or claude_budgets. */
static bool bump_at_commit = false;

static void
config_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && bump_at_commit)
		pg_atomic_fetch_add_u32(&usage->config_generation, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		bump_at_commit = false;
}

/* Statement trigger on claude_prices and claude_budgets. */
Datum
claude_config_changed(PG_FUNCTION_ARGS)
{
	static bool registered = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "claude_config_changed: not called as a trigger");
	if (usage != NULL)
	{
		if (!registered)
		{
			RegisterXactCallback(config_xact_callback, NULL);
			registered = true;
		}
		bump_at_commit = true;
	}
	return PointerGetDatum(NULL);
}
