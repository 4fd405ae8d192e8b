/*
 * views.c
 *		The functions behind the views over shared state: claude_stats,
 *		claude_progress, claude_usage's rows not yet
 *		flushed; and the trigger that makes every session read prices and
 *		budgets again.
 */
#include "postgres.h"

#include <math.h>

#include "access/transam.h"
#include "catalog/pg_authid.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/snapmgr.h"

#include "utils/timestamp.h"

#include "client/budget.h"
#include "common/money.h"
#include "functions/views.h"
#include "shmem/progress.h"
#include "shmem/ratelimit.h"
#include "shmem/slots.h"
#include "shmem/stats.h"
#include "shmem/usage.h"

PG_FUNCTION_INFO_V1(claude_stats_row);
PG_FUNCTION_INFO_V1(claude_stats_reset);
PG_FUNCTION_INFO_V1(claude_progress_rows);
PG_FUNCTION_INFO_V1(claude_usage_pending);
PG_FUNCTION_INFO_V1(claude_config_changed);
PG_FUNCTION_INFO_V1(claude_shared_memory_size);

/* ---- claude_stats and claude_metrics() ---- */

/* A consistent enough copy of a histogram: counts and their total. */
uint64
claude_read_buckets(pg_atomic_uint64 *buckets, uint64 *counts)
{
	uint64		total = 0;

	for (int b = 0; b < CLAUDE_STATS_NBUCKETS; b++)
		total += counts[b] = pg_atomic_read_u64(&buckets[b]);
	return total;
}

/* The q-quantile in ms, interpolated within its bucket; NULL if empty. */
static bool
quantile(const uint64 *counts, uint64 total, double q, double *ms)
{
	double		rank = q * total;
	uint64		below = 0;

	if (total == 0)
		return false;
	for (int b = 0; b < CLAUDE_STATS_NBUCKETS; b++)
	{
		double		lo = b == 0 ? 0 : claude_stats_bucket_ms[b - 1];

		if (counts[b] > 0 && below + counts[b] >= rank)
		{
			if (b == CLAUDE_STATS_NBUCKETS - 1)
				*ms = lo;		/* beyond the last bound: say the bound */
			else
				*ms = lo + (claude_stats_bucket_ms[b] - lo) * (rank - below) / counts[b];
			return true;
		}
		below += counts[b];
	}
	*ms = claude_stats_bucket_ms[CLAUDE_STATS_NBUCKETS - 2];
	return true;
}

/* Three quantiles of a histogram into values (NULL where it is empty). */
static void
quantiles(pg_atomic_uint64 *buckets, Datum *values, bool *nulls)
{
	static const double qs[3] = {0.5, 0.95, 0.99};
	uint64		counts[CLAUDE_STATS_NBUCKETS];
	uint64		total = claude_read_buckets(buckets, counts);
	double		ms;

	for (int q = 0; q < 3; q++)
	{
		if (quantile(counts, total, qs[q], &ms))
			values[q] = Float8GetDatum(round(ms * 10) / 10);
		else
			nulls[q] = true;
	}
}

/* Requests waiting for the worker, the rate limits or a retry. */
uint32
claude_queued_now(void)
{
	uint32		pending = pg_atomic_read_u32(&claude_stats_shared->pending);
	uint32		in_flight = pg_atomic_read_u32(&claude_shared->in_flight);
	int			queue_len;

	SpinLockAcquire(&claude_shared->mutex);
	queue_len = claude_shared->queue_len;
	SpinLockRelease(&claude_shared->mutex);
	return queue_len + (pending > in_flight ? pending - in_flight : 0);
}

#define U64(c) pg_atomic_read_u64(&claude_stats_shared->c)

Datum
claude_stats_row(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[21];
	bool		nulls[21] = {0};
	int			i = 0;

	claude_require_shared();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "claude_stats_row: return type must be a row type");
	values[i++] = Int64GetDatum(U64(requests));
	values[i++] = Int64GetDatum(U64(succeeded));
	values[i++] = Int64GetDatum(U64(failed));
	values[i++] = Int64GetDatum(pg_atomic_read_u64(&claude_limit_counters->retries));
	values[i++] = Int64GetDatum(pg_atomic_read_u64(&claude_limit_counters->rate_limited));
	values[i++] = Int64GetDatum(U64(throttled));
	values[i++] = Int64GetDatum(U64(cache_hits));
	values[i++] = Int64GetDatum(U64(cache_misses));
	values[i++] = Int64GetDatum(U64(input_tokens));
	values[i++] = Int64GetDatum(U64(output_tokens));
	values[i++] = claude_nanos_numeric((int64) Min(U64(cost_nusd), (uint64) PG_INT64_MAX));
	quantiles(claude_stats_shared->buckets, values + i, nulls + i);
	i += 3;
	quantiles(claude_stats_shared->ttft_buckets, values + i, nulls + i);
	i += 3;
	values[i++] = Int32GetDatum(pg_atomic_read_u32(&claude_shared->connections_open));
	values[i++] = Int32GetDatum(pg_atomic_read_u32(&claude_shared->in_flight));
	values[i++] = Int32GetDatum(claude_queued_now());
	SpinLockAcquire(&claude_stats_shared->mutex);
	values[i++] = TimestampTzGetDatum(claude_stats_shared->since);
	SpinLockRelease(&claude_stats_shared->mutex);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

Datum
claude_stats_reset(PG_FUNCTION_ARGS)
{
	claude_require_shared();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only superusers may reset the claude statistics")));
	claude_stats_zero();
	PG_RETURN_VOID();
}

/*
 * Bytes of shared memory the DSA area takes (request and reply bodies,
 * stream events, replies on their way to the cache): for diagnosis and
 * tests; EXECUTE is revoked from PUBLIC.
 */
Datum
claude_shared_memory_size(PG_FUNCTION_ARGS)
{
	claude_require_shared();
	PG_RETURN_INT64((int64) claude_area_total_size());
}

/* ---- claude_progress ---- */

/*
 * The running work of this database, for the claude_progress view: a role
 * sees its own (and that of roles whose privileges it has), members of
 * pg_read_all_stats see all.
 */
Datum
claude_progress_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();
	for (int i = 0; i < CLAUDE_MAX_PROGRESS; i++)
	{
		ProgressEntry e;
		Datum		values[9];
		bool		nulls[9] = {0};

		claude_progress_entry(i, &e);
		if (e.pid == 0 || e.dbid != MyDatabaseId ||
			!(all || has_privs_of_role(GetUserId(), e.role)))
			continue;
		values[0] = Int32GetDatum(e.pid);
		values[1] = ObjectIdGetDatum(e.relid);
		values[2] = NameGetDatum(&e.column);
		values[3] = CStringGetTextDatum(e.mode);
		values[4] = Int64GetDatum(e.done);
		values[5] = Int64GetDatum(e.total);
		values[6] = Int64GetDatum(e.failed);
		values[7] = TimestampTzGetDatum(e.started);
		values[8] = TimestampTzGetDatum(e.updated);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---- claude_usage ---- */

/*
 * Whether the usage a transaction of the database's worker wrote is in
 * claude_usage_log as snap sees it.  A writer that is set is running or
 * committed (one that fails puts its usage back as new before it aborts),
 * so the snapshot alone decides, and no commit log is read: nothing here
 * can fail however old the writer.
 */
static bool
seen(TransactionId writer, Snapshot snap)
{
	return TransactionIdIsValid(writer) && !XidInMVCCSnapshot(writer, snap);
}

/*
 * claude_usage_pending(): usage of this database that claude_usage_log
 * does not show this statement's snapshot, so that claude_usage counts
 * each request once even while the worker writes it; a role sees its own
 * rows only, a superuser all.
 */
Datum
claude_usage_pending(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	UsagePending *rows;
	int			n;
	bool		all = superuser();
	Oid			me = GetUserId();
	Snapshot	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();
	n = claude_usage_pending_of(MyDatabaseId, &rows);
	for (int i = 0; i < n; i++)
	{
		UsageCounts c = rows[i].delta;
		Datum		values[10];
		bool		nulls[10] = {0};

		if (!all && rows[i].key.role != me)
			continue;
		if (!seen(rows[i].flush_xid, snap))
			claude_usage_counts_add(&c, &rows[i].flushing, 1);
		if (!seen(rows[i].written_xid, snap))
			claude_usage_counts_add(&c, &rows[i].written, 1);
		if (c.requests == 0)
			continue;
		values[0] = DateADTGetDatum(rows[i].key.day);
		values[1] = ObjectIdGetDatum(rows[i].key.role);
		values[2] = CStringGetTextDatum(rows[i].key.model);
		values[3] = Int64GetDatum(c.requests);
		values[4] = Int64GetDatum(c.input);
		values[5] = Int64GetDatum(c.output);
		values[6] = Int64GetDatum(c.cache_write);
		values[7] = Int64GetDatum(c.cache_read);
		values[8] = claude_nanos_numeric(c.cost);
		values[9] = Int64GetDatum(c.unpriced);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Statement trigger on claude_prices and claude_budgets. */
Datum
claude_config_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "claude_config_changed: not called as a trigger");
	claude_budget_config_changed();
	return PointerGetDatum(NULL);
}
