/*
 * flush.c
 *		The database worker writes its database's new usage (shmem/usage.c)
 *		to claude_usage_log, every few seconds and when it exits, so usage
 *		survives restarts (an immediate shutdown loses at most those
 *		seconds).  Caller: dbworker.c.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

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
			c->cost = claude_spi_float(tup, desc, 6);
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

	claude_usage_flushed(flushing, nflushing, !gone);
	nflushing = 0;
}
