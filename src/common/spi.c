/*
 * spi.c
 *		Statements of the extension's own: finding the extension, running
 *		SPI, transactions and subtransactions for per-row work.  Callers: SQL
 *		functions and the database worker alike.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/memutils.h"

#include "utils/lsyscache.h"

#include "utils/snapmgr.h"

#include "common/spi.h"

/* A transaction with SPI and a snapshot, for the worker's own work. */
void
claude_xact_begin(void)
{
	/* now() is the statement start: keep it current in a worker */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * The schema and owner of the extension in this database, or false when it
 * is not installed.  Needs an SPI connection; either output may be NULL.
 */
bool
claude_extension_find(Oid *nsp, Oid *owner)
{
	bool		isnull;

	if (SPI_execute("SELECT extnamespace, extowner FROM pg_catalog.pg_extension "
					"WHERE extname OPERATOR(pg_catalog.=) 'claude'::pg_catalog.name",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read pg_extension");
	if (SPI_processed != 1)
		return false;
	if (nsp)
		*nsp = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (owner)
		*owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

/*
 * Statements with parameters come back row after row (a job, a batch
 * result): each is prepared once and kept, the least recently used given
 * up past KEPT_PLANS.  PostgreSQL's plan cache replans a kept plan when
 * what it uses changes.
 */
#define KEPT_PLANS	32

static struct
{
	char	   *sql;
	SPIPlanPtr	plan;
	uint64		used;
}			kept[KEPT_PLANS];
static uint64 kept_clock = 0;

static SPIPlanPtr
kept_plan(const char *sql, int nargs, Oid *types)
{
	int			victim = 0;
	SPIPlanPtr	plan;

	for (int i = 0; i < KEPT_PLANS; i++)
	{
		if (kept[i].sql != NULL && strcmp(kept[i].sql, sql) == 0)
		{
			kept[i].used = ++kept_clock;
			return kept[i].plan;
		}
		if (kept[i].used < kept[victim].used)
			victim = i;
	}
	if ((plan = SPI_prepare(sql, nargs, types)) == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "claude: could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (kept[victim].sql != NULL)
	{
		SPI_freeplan(kept[victim].plan);
		pfree(kept[victim].sql);
	}
	kept[victim].sql = MemoryContextStrdup(TopMemoryContext, sql);
	kept[victim].plan = plan;
	kept[victim].used = ++kept_clock;
	return plan;
}

/*
 * Run a statement through SPI; nulls as for SPI_execute_plan.  Returns
 * SPI's code.
 */
int
claude_spi_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	if (nargs == 0)
		return SPI_execute(sql, false, 0);
	return SPI_execute_plan(kept_plan(sql, nargs, types), values, nulls, false, 0);
}

/* Run a statement through SPI that must return expect. */
void
claude_spi_run(const char *sql, int nargs, Oid *types, Datum *values, int expect)
{
	int			ret = claude_spi_exec(sql, nargs, types, values, NULL);

	if (ret != expect)
		elog(ERROR, "claude: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
}

/*
 * Run fn(arg) in a subtransaction of its own: NULL when it succeeded, else
 * its error (the subtransaction rolled back), in the caller's context, so
 * that one row's failure is recorded and the others go on.
 */
ErrorData *
claude_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

void
claude_xact_end(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* The schema of the extension, as the schema of the function called. */
Oid
claude_extension_schema(FunctionCallInfo fcinfo)
{
	return get_func_namespace(fcinfo->flinfo->fn_oid);
}

/* A float8 column of an SPI row; -1 for NULL. */
double
claude_spi_float(HeapTuple tup, TupleDesc desc, int att)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, att, &isnull);

	return isnull ? -1 : DatumGetFloat8(d);
}
