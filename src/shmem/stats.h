/*
 * stats.h
 *		Server-wide statistics in shared memory: claude_stats, claude_metrics.
 */
#ifndef CLAUDE_STATS_H
#define CLAUDE_STATS_H

#include "port/atomics.h"
#include "storage/spin.h"

#include "common/json.h"

#define CLAUDE_STATS_MAX_STATUS	600
#define CLAUDE_STATS_NBUCKETS	18


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
	pg_atomic_uint64 by_status[CLAUDE_STATS_MAX_STATUS];
	pg_atomic_uint64 buckets[CLAUDE_STATS_NBUCKETS];
	pg_atomic_uint64 ttft_buckets[CLAUDE_STATS_NBUCKETS];	/* streams */
	pg_atomic_uint64 ttft_us;	/* sum */
	pg_atomic_uint64 latency_us;	/* sum; the last counter */
	pg_atomic_uint32 pending;	/* taken and not ended: a gauge */
} ClaudeStats;

extern ClaudeStats *claude_stats_shared;
extern const double claude_stats_bucket_ms[CLAUDE_STATS_NBUCKETS - 1];

extern Size claude_stats_shmem_size(void);
extern void claude_stats_shmem_startup(void);

/* HTTP worker: a request taken, and how it ended */
extern void claude_stats_worker_started(void);
extern void claude_stats_taken(void);
extern void claude_stats_throttled(void);
extern void claude_stats_done(int http_status, bool transport_error, bool cancelled,
							  double latency_ms, const ClaudeUsage *usage, int64 cost);

extern void claude_stats_ttft(double ms);
extern void claude_stats_billed(const ClaudeUsage *usage, int64 cost);

/* backends */
extern void claude_stats_cache(bool hit);
extern void claude_stats_refused(void);
extern void claude_stats_zero(void);

#endif
