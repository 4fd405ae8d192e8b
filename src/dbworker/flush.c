/*
 * flush.c
 *		The database worker writes its database's new usage (shmem/usage.c)
 *		to claude_usage_log, by role, day and model, every few seconds and when it exits, so usage
 *		survives restarts (an immediate shutdown loses at most those
 *		seconds).  Caller: dbworker.c.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "client/budget.h"
#include "common/fault.h"
#include "common/money.h"
#include "common/spi.h"
#include "dbworker/flush.h"
#include "shmem/usage.h"

static UsageFlushed *flushing = NULL;
static int	nflushing = 0;

/* Give what was being flushed back to delta: the write did not commit. */
static void
unflush(void)
{
	claude_usage_unflush(flushing, nflushing);
	nflushing = 0;
}

static void
unflush_at_exit(int code, Datum arg)
{
	unflush();
}

/*
 * Usage by model is added to its row; a role's total of a day is set to
 * what its rows now hold, all models: the base budgets count from.
 */
static void
write_row(const char *table, UsageFlushed *f)
{
	UsageCounts *c = &f->counts;

	if (f->key.kind == USAGE_DB)
	{
		claude_spi_run(psprintf("SELECT " CLAUDE_SQL_USAGE_SUMS " FROM %s WHERE day OPERATOR(pg_catalog.=) $1 "
								"AND role::pg_catalog.oid OPERATOR(pg_catalog.=) $2", table),
					   2, (Oid[]) {DATEOID, OIDOID},
					   (Datum[]) {DateADTGetDatum(f->key.day), ObjectIdGetDatum(f->key.role)},
					   SPI_OK_SELECT);
		claude_usage_counts_read(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, c);
		return;
	}
	claude_spi_run(psprintf("INSERT INTO %s AS u (day, role, model, requests, input_tokens, output_tokens, "
							"cache_write_tokens, cache_read_tokens, cost_usd, unpriced_requests) "
							"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
							"ON CONFLICT (day, role, model) DO UPDATE SET requests = u.requests + excluded.requests, "
							"input_tokens = u.input_tokens + excluded.input_tokens, "
							"output_tokens = u.output_tokens + excluded.output_tokens, "
							"cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens, "
							"cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens, "
							"cost_usd = u.cost_usd + excluded.cost_usd, "
							"unpriced_requests = u.unpriced_requests + excluded.unpriced_requests", table),
				   10, (Oid[]) {DATEOID, OIDOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
				   NUMERICOID, INT8OID},
				   (Datum[]) {DateADTGetDatum(f->key.day), ObjectIdGetDatum(f->key.role),
					   CStringGetTextDatum(f->key.model),
					   Int64GetDatum(c->requests), Int64GetDatum(c->input), Int64GetDatum(c->output),
					   Int64GetDatum(c->cache_write), Int64GetDatum(c->cache_read),
				   claude_nanos_numeric(c->cost), Int64GetDatum(c->unpriced)}, SPI_OK_INSERT);
}

/*
 * Write this database's new usage to claude_usage_log in a transaction of
 * its own, and forget entries of past days once they are written.
 */
void
claude_usage_flush(void)
{
	static bool registered = false;
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
		flushing = MemoryContextAlloc(TopMemoryContext,
									  CLAUDE_USAGE_ENTRIES * sizeof(UsageFlushed));

	/* take what is new, and drop what is old and written */
	nflushing = claude_usage_take_new(MyDatabaseId, flushing);
	if (nflushing == 0)
		return;

	PG_TRY();
	{
		claude_xact_begin();
		/* dropped since: there is nowhere to keep it */
		gone = !claude_extension_find(&nsp, NULL);
		table = gone ? NULL : quote_qualified_identifier(get_namespace_name(nsp), "claude_usage_log");
		/* readers of claude_usage ask their snapshot whether this committed */
		if (!gone)
			claude_usage_flushing_xid(flushing, nflushing, GetTopTransactionId());
		/* usage by model first: a total's rows then hold it */
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; !gone && i < nflushing; i++)
				if (flushing[i].key.kind == (pass == 0 ? USAGE_MODEL : USAGE_DB))
					write_row(table, &flushing[i]);
		claude_xact_end();
		/* committed, not yet marked written: claude_usage counts it once */
		claude_pause_point("usage_written");
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		unflush();
		PG_RE_THROW();
	}
	PG_END_TRY();

	claude_usage_flushed(flushing, nflushing, !gone);
	nflushing = 0;
}

/*
 * At the worker's start (the launcher probes every database at start-up):
 * today's usage of every role in this database's claude_usage_log into
 * shared memory, so that budgets checked in the other databases of the
 * server count it from now on, not only once a session here checks one.
 * Totals a session or a flush loaded already are left as they are.
 */
void
claude_usage_load_today(void)
{
	int32		day = claude_usage_today();
	Oid			nsp;

	claude_xact_begin();
	if (claude_extension_find(&nsp, NULL))
	{
		SPITupleTable *rows;
		uint64		n;

		claude_spi_run(psprintf("SELECT role::pg_catalog.oid, " CLAUDE_SQL_USAGE_SUMS " FROM %s "
								"WHERE day OPERATOR(pg_catalog.=) $1 GROUP BY role",
								quote_qualified_identifier(get_namespace_name(nsp), "claude_usage_log")),
					   1, (Oid[]) {DATEOID}, (Datum[]) {DateADTGetDatum(day)}, SPI_OK_SELECT);
		rows = SPI_tuptable;
		n = SPI_processed;
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;
			UsageCounts c;

			claude_usage_counts_read(rows->vals[i], rows->tupdesc, 2, &c);
			claude_usage_set_base(DatumGetObjectId(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull)),
								  day, &c, NULL);
		}
	}
	claude_xact_end();
}
