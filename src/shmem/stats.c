/*
 * stats.c
 *		Server-wide statistics: counters and a latency histogram in shared
 *		memory, shown by the claude_stats view and claude_metrics().
 *
 * The HTTP worker counts every request it takes, once, when it ends
 * (retries are counted apart), so the figures cover every session and
 * background worker.  Latency is from the moment the worker took the
 * request to its end: queueing for the limits and retries included, as a
 * caller sees it.  Counters are atomics; a reset zeroes them and moves
 * "since", while the gauges (connections, in flight, queued) stay.
 */
#include "postgres.h"

#include <math.h>

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "shmem/ratelimit.h"
#include "shmem/slots.h"
#include "shmem/stats.h"

PG_FUNCTION_INFO_V1(claude_stats_row);
PG_FUNCTION_INFO_V1(claude_stats_reset);
PG_FUNCTION_INFO_V1(claude_metrics);

#define MAX_STATUS	600
#define NBUCKETS	18

/* upper bounds of the latency buckets, in ms; the last one is +Inf */
static const double bucket_ms[NBUCKETS - 1] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 30000,
	60000, 120000, 300000, 600000
};

typedef struct ClaudeStats
{
	slock_t		mutex;			/* protects since */
	TimestampTz since;
	pg_atomic_uint64 requests;
	pg_atomic_uint64 succeeded;
	pg_atomic_uint64 failed;
	pg_atomic_uint64 throttled;
	pg_atomic_uint64 cache_hits;
	pg_atomic_uint64 cache_misses;
	pg_atomic_uint64 input_tokens;
	pg_atomic_uint64 output_tokens;
	pg_atomic_uint64 cache_write_tokens;
	pg_atomic_uint64 cache_read_tokens;
	pg_atomic_uint64 cost_nusd;	/* nano-dollars */
	pg_atomic_uint64 transport_errors;
	pg_atomic_uint64 cancelled;
	pg_atomic_uint64 by_status[MAX_STATUS];
	pg_atomic_uint64 buckets[NBUCKETS];
	pg_atomic_uint64 latency_us;	/* sum */
	pg_atomic_uint32 pending;	/* taken and not ended: a gauge */
} ClaudeStats;

static ClaudeStats *stats = NULL;

Size
claude_stats_shmem_size(void)
{
	return MAXALIGN(sizeof(ClaudeStats));
}

static void
zero_counters(void)
{
	pg_atomic_uint64 *first = &stats->requests;
	pg_atomic_uint64 *last = &stats->latency_us;

	for (pg_atomic_uint64 *c = first; c <= last; c++)
		pg_atomic_write_u64(c, 0);
	pg_atomic_write_u64(&claude_limit_counters->retries, 0);
	pg_atomic_write_u64(&claude_limit_counters->rate_limited, 0);
	pg_atomic_write_u64(&claude_limit_counters->throttled_us, 0);
	SpinLockAcquire(&stats->mutex);
	stats->since = GetCurrentTimestamp();
	SpinLockRelease(&stats->mutex);
}

static void
init_stats(void *ptr)
{
	ClaudeStats *s = ptr;
	pg_atomic_uint64 *first = &s->requests;
	pg_atomic_uint64 *last = &s->latency_us;

	SpinLockInit(&s->mutex);
	s->since = GetCurrentTimestamp();
	for (pg_atomic_uint64 *c = first; c <= last; c++)
		pg_atomic_init_u64(c, 0);
	pg_atomic_init_u32(&s->pending, 0);
}

void
claude_stats_shmem_startup(void)
{
	stats = claude_shmem_struct("claude statistics", claude_stats_shmem_size(), init_stats);
}

void
claude_stats_taken(void)
{
	pg_atomic_fetch_add_u64(&stats->requests, 1);
	pg_atomic_fetch_add_u32(&stats->pending, 1);
}

/* A new HTTP worker holds no request yet. */
void
claude_stats_worker_started(void)
{
	pg_atomic_write_u32(&stats->pending, 0);
}

void
claude_stats_throttled(void)
{
	pg_atomic_fetch_add_u64(&stats->throttled, 1);
}

/* A request ended: its outcome, latency, tokens and cost (< 0: unknown). */
void
claude_stats_done(int http_status, bool transport_error, bool cancelled,
				  double latency_ms, const ClaudeUsage *usage, double cost)
{
	int			b = 0;

	pg_atomic_fetch_sub_u32(&stats->pending, 1);
	if (!cancelled && !transport_error && http_status >= 200 && http_status < 300)
		pg_atomic_fetch_add_u64(&stats->succeeded, 1);
	else
		pg_atomic_fetch_add_u64(&stats->failed, 1);
	if (cancelled)
		pg_atomic_fetch_add_u64(&stats->cancelled, 1);
	else if (transport_error)
		pg_atomic_fetch_add_u64(&stats->transport_errors, 1);
	else if (http_status > 0 && http_status < MAX_STATUS)
		pg_atomic_fetch_add_u64(&stats->by_status[http_status], 1);

	if (usage)
		claude_stats_billed(usage, cost);

	if (cancelled)
		return;					/* its latency is the caller's patience */
	while (b < NBUCKETS - 1 && latency_ms > bucket_ms[b])
		b++;
	pg_atomic_fetch_add_u64(&stats->buckets[b], 1);
	pg_atomic_fetch_add_u64(&stats->latency_us, (uint64) (latency_ms * 1000));
}

/*
 * Tokens and cost (< 0: unknown) billed: of a reply, or of a Message Batch
 * result as it is written back.
 */
void
claude_stats_billed(const ClaudeUsage *usage, double cost)
{
	pg_atomic_fetch_add_u64(&stats->input_tokens, (uint64) usage->input);
	pg_atomic_fetch_add_u64(&stats->output_tokens, (uint64) usage->output);
	pg_atomic_fetch_add_u64(&stats->cache_write_tokens, (uint64) usage->cache_write);
	pg_atomic_fetch_add_u64(&stats->cache_read_tokens, (uint64) usage->cache_read);
	if (cost > 0)
		pg_atomic_fetch_add_u64(&stats->cost_nusd, (uint64) (cost * 1e9 + 0.5));
}

void
claude_stats_cache(bool hit)
{
	if (stats)
		pg_atomic_fetch_add_u64(hit ? &stats->cache_hits : &stats->cache_misses, 1);
}

/* A consistent enough copy of the histogram: counts and their total. */
static uint64
read_buckets(uint64 *counts)
{
	uint64		total = 0;

	for (int b = 0; b < NBUCKETS; b++)
		total += counts[b] = pg_atomic_read_u64(&stats->buckets[b]);
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
	for (int b = 0; b < NBUCKETS; b++)
	{
		double		lo = b == 0 ? 0 : bucket_ms[b - 1];

		if (counts[b] > 0 && below + counts[b] >= rank)
		{
			if (b == NBUCKETS - 1)
				*ms = lo;		/* beyond the last bound: say the bound */
			else
				*ms = lo + (bucket_ms[b] - lo) * (rank - below) / counts[b];
			return true;
		}
		below += counts[b];
	}
	*ms = bucket_ms[NBUCKETS - 2];
	return true;
}

static uint32
queued_now(void)
{
	uint32		pending = pg_atomic_read_u32(&stats->pending);
	uint32		in_flight = pg_atomic_read_u32(&claude_shared->in_flight);
	int			queue_len;

	SpinLockAcquire(&claude_shared->mutex);
	queue_len = claude_shared->queue_len;
	SpinLockRelease(&claude_shared->mutex);
	return queue_len + (pending > in_flight ? pending - in_flight : 0);
}

#define U64(c) pg_atomic_read_u64(&stats->c)

Datum
claude_stats_row(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[18];
	bool		nulls[18] = {0};
	uint64		counts[NBUCKETS];
	uint64		total;
	double		ms;
	int			i = 0;

	claude_require_shared();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "claude_stats_row: return type must be a row type");
	total = read_buckets(counts);
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
	values[i++] = DirectFunctionCall1(float8_numeric, Float8GetDatum(U64(cost_nusd) / 1e9));
	for (int q = 0; q < 3; q++)
	{
		static const double qs[3] = {0.5, 0.95, 0.99};

		if (quantile(counts, total, qs[q], &ms))
			values[i] = Float8GetDatum(round(ms * 10) / 10);
		else
			nulls[i] = true;
		i++;
	}
	values[i++] = Int32GetDatum(pg_atomic_read_u32(&claude_shared->connections_open));
	values[i++] = Int32GetDatum(pg_atomic_read_u32(&claude_shared->in_flight));
	values[i++] = Int32GetDatum(queued_now());
	SpinLockAcquire(&stats->mutex);
	values[i++] = TimestampTzGetDatum(stats->since);
	SpinLockRelease(&stats->mutex);
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
	zero_counters();
	PG_RETURN_VOID();
}

/* ---- Prometheus text exposition format ---- */

static void
metric(StringInfo out, const char *name, const char *type, const char *help)
{
	appendStringInfo(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
counter(StringInfo out, const char *name, const char *help, uint64 value)
{
	metric(out, name, "counter", help);
	appendStringInfo(out, "%s " UINT64_FORMAT "\n", name, value);
}

static void
gauge(StringInfo out, const char *name, const char *help, uint64 value)
{
	metric(out, name, "gauge", help);
	appendStringInfo(out, "%s " UINT64_FORMAT "\n", name, value);
}

Datum
claude_metrics(PG_FUNCTION_ARGS)
{
	StringInfoData out;
	uint64		counts[NBUCKETS];
	uint64		total;
	uint64		cumulative = 0;

	claude_require_shared();
	initStringInfo(&out);
	total = read_buckets(counts);

	metric(&out, "claude_requests_total", "counter",
		   "Requests to the Claude API that ended, by final HTTP status (error: no response; cancelled: the caller gave up).");
	for (int s = 0; s < MAX_STATUS; s++)
	{
		uint64		n = pg_atomic_read_u64(&stats->by_status[s]);

		if (n > 0)
			appendStringInfo(&out, "claude_requests_total{status=\"%d\"} " UINT64_FORMAT "\n", s, n);
	}
	appendStringInfo(&out, "claude_requests_total{status=\"error\"} " UINT64_FORMAT "\n",
					 U64(transport_errors));
	appendStringInfo(&out, "claude_requests_total{status=\"cancelled\"} " UINT64_FORMAT "\n",
					 U64(cancelled));
	counter(&out, "claude_retries_total", "Attempts repeated after a retryable failure.",
			pg_atomic_read_u64(&claude_limit_counters->retries));
	counter(&out, "claude_rate_limited_total", "HTTP 429 replies received.",
			pg_atomic_read_u64(&claude_limit_counters->rate_limited));
	counter(&out, "claude_throttled_total", "Requests that waited for the local rate limits.",
			U64(throttled));
	metric(&out, "claude_throttled_seconds_total", "counter",
		   "Time requests spent waiting for the local rate limits.");
	appendStringInfo(&out, "claude_throttled_seconds_total %.6f\n",
					 pg_atomic_read_u64(&claude_limit_counters->throttled_us) / 1e6);
	counter(&out, "claude_cache_hits_total", "Calls answered from claude_cache.", U64(cache_hits));
	counter(&out, "claude_cache_misses_total", "Calls the cache could not answer.", U64(cache_misses));
	metric(&out, "claude_tokens_total", "counter", "Tokens billed, by kind.");
	appendStringInfo(&out, "claude_tokens_total{type=\"input\"} " UINT64_FORMAT "\n", U64(input_tokens));
	appendStringInfo(&out, "claude_tokens_total{type=\"output\"} " UINT64_FORMAT "\n", U64(output_tokens));
	appendStringInfo(&out, "claude_tokens_total{type=\"cache_write\"} " UINT64_FORMAT "\n", U64(cache_write_tokens));
	appendStringInfo(&out, "claude_tokens_total{type=\"cache_read\"} " UINT64_FORMAT "\n", U64(cache_read_tokens));
	metric(&out, "claude_cost_usd_total", "counter",
		   "USD of the requests at claude_prices (models without a price are not counted).");
	appendStringInfo(&out, "claude_cost_usd_total %.9f\n", U64(cost_nusd) / 1e9);
	gauge(&out, "claude_connections", "Connections open to the API.",
		  pg_atomic_read_u32(&claude_shared->connections_open));
	gauge(&out, "claude_in_flight", "Requests on the wire now.",
		  pg_atomic_read_u32(&claude_shared->in_flight));
	gauge(&out, "claude_queued", "Requests waiting for the worker, the rate limits or a retry.",
		  queued_now());

	metric(&out, "claude_request_duration_seconds", "histogram",
		   "Time from the worker taking a request to its end, retries included.");
	for (int b = 0; b < NBUCKETS; b++)
	{
		cumulative += counts[b];
		if (b < NBUCKETS - 1)
			appendStringInfo(&out, "claude_request_duration_seconds_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
							 bucket_ms[b] / 1000.0, cumulative);
		else
			appendStringInfo(&out, "claude_request_duration_seconds_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n",
							 cumulative);
	}
	appendStringInfo(&out, "claude_request_duration_seconds_sum %.6f\n", U64(latency_us) / 1e6);
	appendStringInfo(&out, "claude_request_duration_seconds_count " UINT64_FORMAT "\n", total);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
