/*
 * budget.c
 *		The prices that say what a request costs and the budgets that stop
 *		a role before it spends too much, checked in the calling session.
 *		Callers: the call path, the pipe, batch submission.
 *
 * A budget is checked before a request is queued: under one lock, a role's
 * requests today (flushed, not yet flushed, in flight, and reserved by
 * Message Batches; shmem/usage.c) must stay within requests_per_day, and
 * the request is counted as in flight at once, so concurrent sessions
 * cannot overshoot it.  Tokens and dollars are known only from replies: a
 * role may pass tokens_per_day or usd_per_day by what its requests in
 * flight use.  A Message Batch reserves what it may spend, whole, on the
 * day it is filed under, until its results settle it (reserve.c).
 *
 * claude_budgets and claude_prices are read whole into each session and
 * read again after a change commits (a statement trigger bumps a shared
 * generation counter at commit, and so does COMMIT PREPARED), so changes
 * apply at once, no restart.  The first session to read them leaves a
 * copy in shared memory for the next ones (shmem/sharedconfig.c): a
 * short-lived session's first call then runs no query for them.  A copy
 * is never older than its generation: the generation is read first, and
 * the tables then under a snapshot of that moment, whatever the statement's
 * or the transaction's own (a change is visible before its bump).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "client/budget.h"
#include "client/reserve.h"
#include "common/errors.h"
#include "common/money.h"
#include "common/pgcompat.h"
#include "common/security.h"
#include "common/spi.h"
#include "shmem/sharedconfig.h"
#include "shmem/usage.h"

typedef struct Price
{
	char	   *model;			/* an id or a prefix of ids */
	int64		in;				/* nano-USD per million tokens */
	int64		out;
} Price;

typedef struct Budget
{
	Oid			role;
	int64		limit[3];		/* requests, tokens, nano-USD per day; < 0: none */
} Budget;

static const char *const budget_names[3] = {"requests_per_day", "tokens_per_day", "usd_per_day"};

static struct
{
	uint32		generation;		/* 0: never read */
	LocalTransactionId tainted; /* read by a transaction that changed them:
								 * good only until it ends */
	Oid			dbid;
	MemoryContext cxt;
	Oid			nsp;			/* the extension's schema; invalid: not here */
	Oid			owner;
	Price	   *prices;
	int			nprices;
	Budget	   *budgets;
	int			nbudgets;
} config;

/* Whether this transaction changed claude_prices or claude_budgets. */
static bool changed_here = false;

static void
config_xact_callback(XactEvent event, void *arg)
{
	/* a prepared change is bumped by COMMIT PREPARED */
	if (event == XACT_EVENT_COMMIT && changed_here)
		claude_usage_config_bump();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		changed_here = false;
}

/* A savepoint rolled back may have taken a change this session read. */
static void
config_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && changed_here)
		config.generation = 0;
}

/*
 * This transaction changes the prices or budgets (their statement
 * trigger): every session reads them again once it commits; until it
 * ends, what this session reads of them is good only for itself, and is
 * read again after each change.
 */
void
claude_budget_config_changed(void)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(config_xact_callback, NULL);
		RegisterSubXactCallback(config_subxact_callback, NULL);
		registered = true;
	}
	changed_here = true;
	config.generation = 0;
}

/*
 * A prepared transaction committed (the utility hook, after COMMIT
 * PREPARED): it may have changed the prices or budgets, and no callback of
 * ours saw its commit.  Its changes are visible already.
 */
void
claude_budget_prepared_committed(void)
{
	claude_usage_config_bump();
}

/* Nothing read: no prices, no budgets, no extension. */
static void
forget_config(void)
{
	MemoryContextReset(config.cxt);
	config.nprices = config.nbudgets = 0;
	config.nsp = InvalidOid;
}

/* What a session read, as one blob for the next sessions. */
typedef struct ConfigBlob
{
	Oid			nsp;
	Oid			owner;
	int			nprices;
	int			nbudgets;
	/* then the budgets, the prices' numbers, their models (each with a NUL) */
} ConfigBlob;

static void
pack_config(Oid ext, uint32 generation)
{
	StringInfoData b;
	ConfigBlob	h = {config.nsp, config.owner, config.nprices, config.nbudgets};

	initStringInfo(&b);
	appendBinaryStringInfo(&b, (char *) &h, sizeof(h));
	appendBinaryStringInfo(&b, (char *) config.budgets, config.nbudgets * sizeof(Budget));
	for (int i = 0; i < config.nprices; i++)
	{
		appendBinaryStringInfo(&b, (char *) &config.prices[i].in, sizeof(int64));
		appendBinaryStringInfo(&b, (char *) &config.prices[i].out, sizeof(int64));
	}
	for (int i = 0; i < config.nprices; i++)
		appendBinaryStringInfo(&b, config.prices[i].model, strlen(config.prices[i].model) + 1);
	claude_shared_config_put(MyDatabaseId, ext, generation, b.data, b.len);
	pfree(b.data);
}

/* The blob into config (its memory reset); false if it does not add up. */
static bool
unpack_config(const char *blob, Size len)
{
	ConfigBlob	h;
	const char *p = blob + sizeof(h);
	const char *end = blob + len;

	if (len < sizeof(h))
		return false;
	memcpy(&h, blob, sizeof(h));
	if (h.nprices < 0 || h.nbudgets < 0 ||
		end - p < (Size) h.nbudgets * sizeof(Budget) + (Size) h.nprices * 2 * sizeof(int64))
		return false;
	config.nsp = h.nsp;
	config.owner = h.owner;
	config.budgets = MemoryContextAlloc(config.cxt, Max(h.nbudgets, 1) * sizeof(Budget));
	memcpy(config.budgets, p, h.nbudgets * sizeof(Budget));
	p += h.nbudgets * sizeof(Budget);
	config.prices = MemoryContextAlloc(config.cxt, Max(h.nprices, 1) * sizeof(Price));
	for (int i = 0; i < h.nprices; i++)
	{
		memcpy(&config.prices[i].in, p, sizeof(int64));
		memcpy(&config.prices[i].out, p + sizeof(int64), sizeof(int64));
		p += 2 * sizeof(int64);
	}
	for (int i = 0; i < h.nprices; i++)
	{
		const char *nul = memchr(p, '\0', end - p);

		if (nul == NULL)
			return false;
		config.prices[i].model = MemoryContextStrdup(config.cxt, p);
		p = nul + 1;
	}
	config.nprices = h.nprices;
	config.nbudgets = h.nbudgets;
	return true;
}

/*
 * Read claude_prices and claude_budgets again if they changed: from the
 * copy another session left, or from the tables (leaving a copy).
 */
static void
load_config(void)
{
	uint32		generation = claude_usage_config_generation();
	ClaudeRoleSwitch as_owner;
	bool		isnull;
	Oid			ext;
	char	   *blob;
	Size		len;

	if (config.generation == generation && config.dbid == MyDatabaseId &&
		(config.tainted == InvalidLocalTransactionId || config.tainted == ClaudeMyLxid()))
		return;
	config.tainted = changed_here ? ClaudeMyLxid() : InvalidLocalTransactionId;
	if (config.cxt == NULL)
		config.cxt = AllocSetContextCreate(TopMemoryContext, "claude prices and budgets",
										   ALLOCSET_SMALL_SIZES);
	forget_config();

	ext = get_extension_oid("claude", true);
	if (OidIsValid(ext) &&
		(blob = claude_shared_config_get(MyDatabaseId, ext, generation, &len)) != NULL)
	{
		bool		ok = unpack_config(blob, len);

		pfree(blob);
		if (ok)
		{
			config.generation = generation;
			config.dbid = MyDatabaseId;
			return;
		}
		forget_config();
	}

	/* not older than generation, nor than what this transaction changed */
	PushActiveSnapshot(GetLatestSnapshot());
	SPI_connect();
	if (OidIsValid(ext) && claude_extension_find(&config.nsp, &config.owner))
	{
		const char *schema;

		schema = quote_identifier(get_namespace_name(config.nsp));

		/* the tables are closed to PUBLIC: read them as their owner */
		claude_become(&as_owner, config.owner, false);
		if (SPI_execute(psprintf("SELECT model, " CLAUDE_SQL_NANOS("input_usd_per_mtok") ", "
								 CLAUDE_SQL_NANOS("output_usd_per_mtok") " FROM %s.claude_prices",
								 schema), true, 0) == SPI_OK_SELECT)
		{
			config.prices = MemoryContextAlloc(config.cxt, Max(SPI_processed, 1) * sizeof(Price));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				Price	   *p = &config.prices[config.nprices++];

				p->model = MemoryContextStrdup(config.cxt,
											   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
				p->in = claude_spi_nanos(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
				p->out = claude_spi_nanos(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
			}
		}
		if (SPI_execute(psprintf("SELECT role::pg_catalog.oid, requests_per_day, tokens_per_day, "
								 CLAUDE_SQL_NANOS("usd_per_day") " FROM %s.claude_budgets", schema),
						true, 0) == SPI_OK_SELECT)
		{
			config.budgets = MemoryContextAlloc(config.cxt, Max(SPI_processed, 1) * sizeof(Budget));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				Budget	   *b = &config.budgets[config.nbudgets++];

				b->role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
				for (int k = 0; k < 3; k++)
					b->limit[k] = claude_spi_nanos(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, k + 2);
			}
		}
		claude_unbecome(&as_owner);
	}
	SPI_finish();
	PopActiveSnapshot();
	config.generation = generation;
	config.dbid = MyDatabaseId;
	/* others copy only what holds for them: nothing uncommitted */
	if (OidIsValid(config.nsp) && config.tainted == InvalidLocalTransactionId)
		pack_config(ext, generation);
}

/* List prices of a Messages request's model: the longest matching row. */
void
claude_price_of(const char *model, int64 *price_in, int64 *price_out)
{
	int			best = -1;
	Size		best_len = 0;

	*price_in = *price_out = -1;
	if (model == NULL)
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

/*
 * Nano-USD of a usage of model at claude_prices (batch: half price), or -1
 * when the model has no price.  The one place a cost is computed from
 * what a reply used: the HTTP worker does the same with the prices the
 * request carried (common/money.c).
 */
int64
claude_cost_nanos(const char *model, const ClaudeUsage *u, bool batch)
{
	int64		price_in;
	int64		price_out;

	claude_price_of(model, &price_in, &price_out);
	return claude_cost_of_usage(u, price_in, price_out, batch);
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
 * Make sure the entry of role on day holds what the tables say (after a
 * restart, say): its usage in claude_usage_log, and what its Message
 * Batches filed under day reserve.  Under the role's reservation lock,
 * shared, and a snapshot taken after it: a settlement is in both the
 * tables and shared memory, or in neither (reserve.c).  The snapshot
 * leaves out this transaction's own changes: shared memory has its
 * reservations already, and gets its settlements when it commits.  May
 * raise.
 */
static void
load_usage(Oid role, int32 day)
{
	UsageCounts base;
	UsageReserve batch;
	ClaudeRoleSwitch as_owner;
	LOCKTAG		tag;
	bool		base_loaded;
	bool		batch_loaded;
	const char *schema;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	claude_usage_loaded(role, day, &base_loaded, &batch_loaded);
	if (base_loaded && batch_loaded)
		return;
	load_config();
	if (!OidIsValid(config.nsp))
		return;
	schema = quote_identifier(get_namespace_name(config.nsp));

	memset(&base, 0, sizeof(base));
	memset(&batch, 0, sizeof(batch));
	claude_reserve_lock_tag(&tag, role);
	(void) LockAcquire(&tag, ShareLock, false, false);
	PushCopiedSnapshot(GetLatestSnapshot());
	GetActiveSnapshot()->curcid = FirstCommandId;
	SPI_connect();
	claude_become(&as_owner, config.owner, false);
	/* a row per model */
	if (SPI_execute_with_args(psprintf("SELECT " CLAUDE_SQL_USAGE_SUMS " FROM %s.claude_usage_log "
									   "WHERE day OPERATOR(pg_catalog.=) $1 "
									   "AND role::pg_catalog.oid OPERATOR(pg_catalog.=) $2", schema),
							  2, (Oid[]) {DATEOID, OIDOID},
							  (Datum[]) {DateADTGetDatum(day), ObjectIdGetDatum(role)},
							  NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "claude: could not read claude_usage_log");
	claude_usage_counts_read(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &base);
	/* the requests of its batches filed under day that have no result yet */
	if (SPI_execute_with_args(psprintf("SELECT pg_catalog.count(*), "
									   "coalesce(pg_catalog.sum(i.est_tokens), 0)::pg_catalog.int8, "
									   CLAUDE_SQL_NANOS("coalesce(pg_catalog.sum(i.est_cost_usd), 0)") " "
									   "FROM %s.claude_batches b JOIN %s.claude_batch_items i "
									   "ON i.batch OPERATOR(pg_catalog.=) b.local_id "
									   "WHERE b.submitted_by::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
									   "AND b.created_at OPERATOR(pg_catalog.>=) $2 "
									   "AND b.created_at OPERATOR(pg_catalog.<) $3 "
									   "AND i.status OPERATOR(pg_catalog.=) 'pending'", schema, schema),
							  3, (Oid[]) {OIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
							  (Datum[]) {ObjectIdGetDatum(role),
								  TimestampTzGetDatum((TimestampTz) day * USECS_PER_DAY),
							  TimestampTzGetDatum((TimestampTz) (day + 1) * USECS_PER_DAY)},
							  NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "claude: could not read claude_batch_items");
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	batch.requests = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	batch.tokens = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	batch.cost = claude_spi_nanos(tup, desc, 3);
	claude_unbecome(&as_owner);
	SPI_finish();
	PopActiveSnapshot();
	claude_usage_set_base(role, day, &base, &batch);
	LockRelease(&tag, ShareLock, false);
}

/* Usage counts from columns att.. of CLAUDE_SQL_USAGE_SUMS. */
void
claude_usage_counts_read(HeapTuple tup, TupleDesc desc, int att, UsageCounts *c)
{
	bool		isnull;

	c->requests = DatumGetInt64(SPI_getbinval(tup, desc, att, &isnull));
	c->input = DatumGetInt64(SPI_getbinval(tup, desc, att + 1, &isnull));
	c->output = DatumGetInt64(SPI_getbinval(tup, desc, att + 2, &isnull));
	c->cache_write = DatumGetInt64(SPI_getbinval(tup, desc, att + 3, &isnull));
	c->cache_read = DatumGetInt64(SPI_getbinval(tup, desc, att + 4, &isnull));
	c->cost = claude_spi_nanos(tup, desc, att + 5);
	c->unpriced = DatumGetInt64(SPI_getbinval(tup, desc, att + 6, &isnull));
}

/* Before a request of a role with a budget: see load_usage.  May raise. */
void
claude_budget_prepare(Oid role)
{
	if (budget_of(role) == NULL || RecoveryInProgress())
		return;
	load_usage(role, claude_usage_today());
}

/* "usd_per_day 1.5": the limit a role reached, as its column says it */
static char *
limit_text(const Budget *b, int over)
{
	if (over == 2)
		return psprintf("%s %s", budget_names[over],
						DatumGetCString(DirectFunctionCall1(numeric_out,
															claude_nanos_numeric(b->limit[over]))));
	return psprintf("%s " INT64_FORMAT, budget_names[over], b->limit[over]);
}

/*
 * Role's limits of a day in this database (< 0: none) and what it spent
 * today on the whole server, this database's part read from its tables
 * if not yet (others' are loaded by their workers).  Returns the day.
 */
int32
claude_budget_status(Oid role, int64 limit[3], int64 used[3])
{
	Budget	   *b = budget_of(role);
	int32		day = claude_usage_today();

	for (int k = 0; k < 3; k++)
		limit[k] = b ? b->limit[k] : -1;
	if (!RecoveryInProgress())
		load_usage(role, day);
	claude_usage_spent(role, day, used);
	return day;
}

/* why, for a standby: its usage is never recorded, so it cannot count */
static const char standby_why[] = "standby";

/*
 * Whether role's budget allows one more request today; if reserve, count
 * it as in flight at once.  Never raises; false with *why set.
 */
static bool
budget_allows(Oid role, bool reserve, char **why)
{
	Budget	   *b = budget_of(role);
	int			over;

	if (b == NULL)
		return true;
	if (RecoveryInProgress())
	{
		*why = (char *) standby_why;
		return false;
	}
	if (claude_usage_within(role, b->limit, 1, reserve, &over))
		return true;
	*why = limit_text(b, over);
	return false;
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
	return budget_allows(role, true, why) ? claude_usage_today() : -2;
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
			 errdetail("Usage is counted per UTC day in claude_usage; Message Batches not written back yet hold what they may spend."),
			 why == standby_why ?
			 errhint("Make the call on the primary.") :
			 errhint("An administrator can raise it in claude_budgets; the change applies at once.")));
}

/* Whether role may send one more request now (reserving nothing). */
bool
claude_budget_allows(Oid role, char **why)
{
	claude_budget_prepare(role);
	return budget_allows(role, false, why);
}

/*
 * A Message Batch of role filed under day, about to be committed and sent:
 * reserve r, what it may spend, until its results settle it, if the
 * role's budget of that day holds it whole with all that is spent and
 * reserved; raises if not.  A role without a budget reserves too, so that
 * a budget set later counts what is pending.  Should the transaction not
 * commit, the reservation goes back (reserve.c).
 */
void
claude_budget_reserve_batch(Oid role, int32 day, const UsageReserve *r)
{
	static const int64 none[3] = {-1, -1, -1};
	Budget	   *b;
	int			over;

	load_usage(role, day);
	b = budget_of(role);
	claude_reserve_room();
	if (!claude_usage_reserve_batch(role, day, b ? b->limit : none, r, &over))
		claude_budget_refuse(role, limit_text(b, over));
	claude_reserve_made(role, day, r);
}
