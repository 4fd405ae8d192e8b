/*
 * ratelimit.h
 *		Shared rate limits: token buckets, server feedback and counters.
 *
 * Only the HTTP worker draws from the buckets, at dispatch time, so every
 * path that sends (single calls, bulk, triggers, batches) is paced by the
 * same buckets and callers are served in the order they queued.  The state
 * lives in shared memory so that statistics can show it.
 */
#ifndef CLAUDE_RATELIMIT_H
#define CLAUDE_RATELIMIT_H

#include "datatype/timestamp.h"
#include "port/atomics.h"

/* What one request costs, as reserved before it is sent. */
typedef struct ClaudeCost
{
	double		requests;
	double		input_tokens;	/* estimated from the body */
	double		output_tokens;	/* max_tokens */
} ClaudeCost;

/* What a reply's headers say about the server's own limits. */
typedef struct ClaudeServerLimits
{
	/* requests, input tokens, output tokens, and tokens combined */
	double		limit[4];		/* < 0: unknown */
	double		remaining[4];	/* < 0: unknown */
	TimestampTz reset[4];		/* when full again; 0: unknown */
} ClaudeServerLimits;

typedef struct ClaudeLimitCounters
{
	pg_atomic_uint64 retries;
	pg_atomic_uint64 rate_limited;	/* 429s received */
	pg_atomic_uint64 throttled_us;	/* time requests waited for the limits */
} ClaudeLimitCounters;

extern ClaudeLimitCounters *claude_limit_counters;

extern Size claude_limits_shmem_size(void);
extern void claude_limits_shmem_startup(void);

/* worker side */
extern void claude_limits_configure(int rpm, int itpm, int otpm);
extern long claude_limits_admit(const ClaudeCost *cost, TimestampTz now);
extern void claude_limits_settle(const ClaudeCost *reserved, double input_used,
								 double output_used);
extern void claude_limits_pause_until(TimestampTz until);
extern void claude_limits_feedback(const ClaudeServerLimits *server, TimestampTz now);
extern void claude_server_limits_init(ClaudeServerLimits *server);
extern bool claude_server_limits_header(ClaudeServerLimits *server,
										const char *name, size_t namelen,
										const char *value);

#endif
