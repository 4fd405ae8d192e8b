/*
 * metrics.c
 *		claude_metrics_shared(): the server-wide metrics of shared memory as
 *		rows (metric, type, help, labels, value, or a histogram's bounds,
 *		cumulative counts, sum and count), the shape postgres_exporter's
 *		query files map.  The SQL functions claude_metrics_rows() (these plus
 *		the job and batch gauges of the database) and claude_metrics() (the
 *		same rows in the Prometheus text format) are built on it, so both
 *		forms carry the same names and labels.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "functions/views.h"
#include "shmem/ratelimit.h"
#include "shmem/slots.h"
#include "shmem/stats.h"

PG_FUNCTION_INFO_V1(claude_metrics_shared);

#define NCOLS 9

/* One sample; labels is a JSON object of fixed words (no escaping needed). */
static void
sample(ReturnSetInfo *rsinfo, const char *name, const char *type,
	   const char *help, const char *labels, double value)
{
	Datum		values[NCOLS] = {0};
	bool		nulls[NCOLS] = {0};

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(type);
	values[2] = CStringGetTextDatum(help);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(labels ? labels : "{}"));
	values[4] = Float8GetDatum(value);
	nulls[5] = nulls[6] = nulls[7] = nulls[8] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

#define U64(c) pg_atomic_read_u64(&claude_stats_shared->c)

/*
 * A histogram as postgres_exporter's HISTOGRAM usage reads it: the upper
 * bounds in seconds (the +Inf bucket is the count), the cumulative counts
 * of those bounds, the sum in seconds and the count.
 */
static void
histogram(ReturnSetInfo *rsinfo, const char *name, const char *help,
		  pg_atomic_uint64 *buckets, uint64 sum_us)
{
	uint64		counts[CLAUDE_STATS_NBUCKETS];
	uint64		total = claude_read_buckets(buckets, counts);
	Datum		bounds[CLAUDE_STATS_NBUCKETS - 1];
	Datum		cumulative[CLAUDE_STATS_NBUCKETS - 1];
	uint64		below = 0;
	Datum		values[NCOLS] = {0};
	bool		nulls[NCOLS] = {0};

	for (int b = 0; b < CLAUDE_STATS_NBUCKETS - 1; b++)
	{
		below += counts[b];
		bounds[b] = Float8GetDatum(claude_stats_bucket_ms[b] / 1000.0);
		cumulative[b] = Int64GetDatum((int64) below);
	}
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum("histogram");
	values[2] = CStringGetTextDatum(help);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	nulls[4] = true;
	values[5] = PointerGetDatum(construct_array(bounds, CLAUDE_STATS_NBUCKETS - 1, FLOAT8OID,
												sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[6] = PointerGetDatum(construct_array(cumulative, CLAUDE_STATS_NBUCKETS - 1, INT8OID,
												sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[7] = Float8GetDatum(sum_us / 1e6);
	values[8] = Int64GetDatum((int64) total);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

Datum
claude_metrics_shared(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const char *requests = "claude_requests_total";
	const char *requests_help =
		"Requests to the Claude API that ended, by final HTTP status (error: no response; cancelled: the caller gave up).";
	const char *tokens_help = "Tokens billed, by kind.";
	char		labels[64];
	bool		worker_up;

	InitMaterializedSRF(fcinfo, 0);
	claude_require_shared();

	for (int s = 0; s < CLAUDE_STATS_MAX_STATUS; s++)
	{
		uint64		n = pg_atomic_read_u64(&claude_stats_shared->by_status[s]);

		if (n == 0)
			continue;
		snprintf(labels, sizeof(labels), "{\"status\": \"%d\"}", s);
		sample(rsinfo, requests, "counter", requests_help, labels, n);
	}
	sample(rsinfo, requests, "counter", requests_help, "{\"status\": \"error\"}", U64(transport_errors));
	sample(rsinfo, requests, "counter", requests_help, "{\"status\": \"cancelled\"}", U64(cancelled));
	sample(rsinfo, "claude_retries_total", "counter", "Attempts repeated after a retryable failure.", NULL,
		   pg_atomic_read_u64(&claude_limit_counters->retries));
	sample(rsinfo, "claude_rate_limited_total", "counter", "HTTP 429 replies received.", NULL,
		   pg_atomic_read_u64(&claude_limit_counters->rate_limited));
	sample(rsinfo, "claude_throttled_total", "counter", "Requests that waited for the local rate limits.", NULL,
		   U64(throttled));
	sample(rsinfo, "claude_throttled_seconds_total", "counter",
		   "Time requests spent waiting for the local rate limits.", NULL,
		   pg_atomic_read_u64(&claude_limit_counters->throttled_us) / 1e6);
	sample(rsinfo, "claude_cache_hits_total", "counter", "Calls answered from claude_cache.", NULL,
		   U64(cache_hits));
	sample(rsinfo, "claude_cache_misses_total", "counter", "Calls the cache could not answer.", NULL,
		   U64(cache_misses));
	sample(rsinfo, "claude_tokens_total", "counter", tokens_help, "{\"type\": \"input\"}", U64(input_tokens));
	sample(rsinfo, "claude_tokens_total", "counter", tokens_help, "{\"type\": \"output\"}", U64(output_tokens));
	sample(rsinfo, "claude_tokens_total", "counter", tokens_help, "{\"type\": \"cache_write\"}",
		   U64(cache_write_tokens));
	sample(rsinfo, "claude_tokens_total", "counter", tokens_help, "{\"type\": \"cache_read\"}",
		   U64(cache_read_tokens));
	sample(rsinfo, "claude_cost_usd_total", "counter",
		   "USD of the requests at claude_prices (models without a price are not counted).", NULL,
		   U64(cost_nusd) / 1e9);
	SpinLockAcquire(&claude_shared->mutex);
	worker_up = claude_shared->worker_pid != 0;
	SpinLockRelease(&claude_shared->mutex);
	sample(rsinfo, "claude_worker_up", "gauge", "1 while the HTTP worker runs.", NULL, worker_up);
	sample(rsinfo, "claude_connections", "gauge", "Connections open to the API.", NULL,
		   pg_atomic_read_u32(&claude_shared->connections_open));
	sample(rsinfo, "claude_in_flight", "gauge", "Requests on the wire now.", NULL,
		   pg_atomic_read_u32(&claude_shared->in_flight));
	sample(rsinfo, "claude_queued", "gauge", "Requests waiting for the worker, the rate limits or a retry.", NULL,
		   claude_queued_now());
	histogram(rsinfo, "claude_request_duration_seconds",
			  "Time from the worker taking a request to its end, retries included.",
			  claude_stats_shared->buckets, U64(latency_us));
	histogram(rsinfo, "claude_time_to_first_token_seconds",
			  "Time from the worker taking a streamed request to its first token.",
			  claude_stats_shared->ttft_buckets, U64(ttft_us));
	return (Datum) 0;
}
