/*
 * stats.h
 *		Server-wide statistics in shared memory: claude_stats, claude_metrics.
 */
#ifndef CLAUDE_STATS_H
#define CLAUDE_STATS_H

#include "common/json.h"

extern Size claude_stats_shmem_size(void);
extern void claude_stats_shmem_startup(void);

/* HTTP worker: a request taken, and how it ended */
extern void claude_stats_worker_started(void);
extern void claude_stats_taken(void);
extern void claude_stats_throttled(void);
extern void claude_stats_done(int http_status, bool transport_error, bool cancelled,
							  double latency_ms, const ClaudeUsage *usage, double cost);

extern void claude_stats_billed(const ClaudeUsage *usage, double cost);

/* backends */
extern void claude_stats_cache(bool hit);

#endif
