/*
 * views.h
 *		What functions/metrics.c shares with views.c: a histogram's copy and
 *		the queued gauge, read the same way by claude_stats and the metrics.
 */
#ifndef CLAUDE_VIEWS_H
#define CLAUDE_VIEWS_H

#include "port/atomics.h"

extern uint64 claude_read_buckets(pg_atomic_uint64 *buckets, uint64 *counts);
extern uint32 claude_queued_now(void);

#endif
