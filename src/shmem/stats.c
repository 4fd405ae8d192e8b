/*
 * stats.c
 *		Server-wide statistics: counters and a latency histogram in shared
 *		memory, counted by the HTTP worker and the cache lookups, shown by
 *		functions/views.c (claude_stats, claude_metrics()).
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

#include "utils/timestamp.h"

#include "shmem/ratelimit.h"
#include "shmem/slots.h"
#include "shmem/stats.h"

ClaudeStats *claude_stats_shared = NULL;

/* upper bounds of the latency buckets, in ms; the last one is +Inf */
const double claude_stats_bucket_ms[CLAUDE_STATS_NBUCKETS - 1] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 30000,
	60000, 120000, 300000, 600000
};

Size
claude_stats_shmem_size(void)
{
	return MAXALIGN(sizeof(ClaudeStats));
}

/* claude_stats_reset(): counters to zero, "since" to now; gauges stay. */
void
claude_stats_zero(void)
{
	pg_atomic_uint64 *first = &claude_stats_shared->requests;
	pg_atomic_uint64 *last = &claude_stats_shared->latency_us;
	TimestampTz now;

	for (pg_atomic_uint64 *c = first; c <= last; c++)
		pg_atomic_write_u64(c, 0);
	pg_atomic_write_u64(&claude_limit_counters->retries, 0);
	pg_atomic_write_u64(&claude_limit_counters->rate_limited, 0);
	pg_atomic_write_u64(&claude_limit_counters->throttled_us, 0);
	now = GetCurrentTimestamp();
	SpinLockAcquire(&claude_stats_shared->mutex);
	claude_stats_shared->since = now;
	SpinLockRelease(&claude_stats_shared->mutex);
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
	claude_stats_shared = claude_shmem_struct("claude statistics", claude_stats_shmem_size(), init_stats);
}

void
claude_stats_taken(void)
{
	pg_atomic_fetch_add_u64(&claude_stats_shared->requests, 1);
	pg_atomic_fetch_add_u32(&claude_stats_shared->pending, 1);
}

/* A new HTTP worker holds no request yet. */
void
claude_stats_worker_started(void)
{
	pg_atomic_write_u32(&claude_stats_shared->pending, 0);
}

void
claude_stats_throttled(void)
{
	pg_atomic_fetch_add_u64(&claude_stats_shared->throttled, 1);
}

/* A request ended: its outcome, latency, tokens and cost (< 0: unknown). */
void
claude_stats_done(int http_status, bool transport_error, bool cancelled,
				  double latency_ms, const ClaudeUsage *usage, int64 cost)
{
	int			b = 0;

	pg_atomic_fetch_sub_u32(&claude_stats_shared->pending, 1);
	if (!cancelled && !transport_error && http_status >= 200 && http_status < 300)
		pg_atomic_fetch_add_u64(&claude_stats_shared->succeeded, 1);
	else
		pg_atomic_fetch_add_u64(&claude_stats_shared->failed, 1);
	if (cancelled)
		pg_atomic_fetch_add_u64(&claude_stats_shared->cancelled, 1);
	else if (transport_error)
		pg_atomic_fetch_add_u64(&claude_stats_shared->transport_errors, 1);
	else if (http_status > 0 && http_status < CLAUDE_STATS_MAX_STATUS)
		pg_atomic_fetch_add_u64(&claude_stats_shared->by_status[http_status], 1);

	if (usage)
		claude_stats_billed(usage, cost);

	if (cancelled)
		return;					/* its latency is the caller's patience */
	while (b < CLAUDE_STATS_NBUCKETS - 1 && latency_ms > claude_stats_bucket_ms[b])
		b++;
	pg_atomic_fetch_add_u64(&claude_stats_shared->buckets[b], 1);
	pg_atomic_fetch_add_u64(&claude_stats_shared->latency_us, (uint64) (latency_ms * 1000));
}

/*
 * HTTP worker: a streamed request's first token (text, thinking or tool
 * input) came ms after the worker took it.
 */
void
claude_stats_ttft(double ms)
{
	int			b = 0;

	while (b < CLAUDE_STATS_NBUCKETS - 1 && ms > claude_stats_bucket_ms[b])
		b++;
	pg_atomic_fetch_add_u64(&claude_stats_shared->ttft_buckets[b], 1);
	pg_atomic_fetch_add_u64(&claude_stats_shared->ttft_us, (uint64) (ms * 1000));
}

/*
 * Tokens and cost (< 0: unknown) billed: of a reply, or of a Message Batch
 * result as it is written back.
 */
void
claude_stats_billed(const ClaudeUsage *usage, int64 cost)
{
	pg_atomic_fetch_add_u64(&claude_stats_shared->input_tokens, (uint64) usage->input);
	pg_atomic_fetch_add_u64(&claude_stats_shared->output_tokens, (uint64) usage->output);
	pg_atomic_fetch_add_u64(&claude_stats_shared->cache_write_tokens, (uint64) usage->cache_write);
	pg_atomic_fetch_add_u64(&claude_stats_shared->cache_read_tokens, (uint64) usage->cache_read);
	if (cost > 0)
		pg_atomic_fetch_add_u64(&claude_stats_shared->cost_nusd, (uint64) cost);
}

/*
 * A reply the worker counted a success that its caller refused (it broke
 * the schema asked for): a failure after all.
 */
void
claude_stats_refused(void)
{
	uint64		n;

	if (claude_stats_shared == NULL)
		return;
	n = pg_atomic_read_u64(&claude_stats_shared->succeeded);
	/* zeroed meanwhile: nothing to take back */
	while (n > 0 && !pg_atomic_compare_exchange_u64(&claude_stats_shared->succeeded, &n, n - 1))
		;
	pg_atomic_fetch_add_u64(&claude_stats_shared->failed, 1);
}

void
claude_stats_cache(bool hit)
{
	if (claude_stats_shared)
		pg_atomic_fetch_add_u64(hit ? &claude_stats_shared->cache_hits : &claude_stats_shared->cache_misses, 1);
}
