/*
 * usage.h
 *		Usage per database, role and UTC day, in shared memory.
 */
#ifndef CLAUDE_USAGE_H
#define CLAUDE_USAGE_H

#include "datatype/timestamp.h"

#include "common/json.h"
#include "shmem/pack.h"

#define CLAUDE_USAGE_ENTRIES	4096

typedef struct UsageKey
{
	Oid			dbid;
	Oid			role;
	int32		day;			/* days since 2000-01-01, UTC */
} UsageKey;

typedef struct UsageCounts
{
	int64		requests;
	int64		input;
	int64		output;
	int64		cache_write;
	int64		cache_read;
	double		cost;
	int64		unpriced;		/* requests whose model has no price */
} UsageCounts;

/*
 * What Message Batch requests whose results have not settled may spend:
 * reserved against their submitter's budget of the day they are filed
 * under
 */
typedef struct UsageReserve
{
	int64		requests;
	int64		tokens;			/* estimated: input, and max_tokens of output */
	double		cost;			/* estimated, USD */
} UsageReserve;

/* an entry's counts being written to claude_usage_log */
typedef struct UsageFlushed
{
	UsageKey	key;
	UsageCounts counts;
} UsageFlushed;

extern Size claude_usage_shmem_size(void);
extern void claude_usage_shmem_startup(void);
extern int32 claude_usage_today(void);
extern int32 claude_usage_day_of(TimestampTz t);
extern void claude_usage_counts_add(UsageCounts *to, const UsageCounts *from, int sign);
extern void claude_usage_count_request(UsageCounts *to, const ClaudeUsage *usage, double cost);

/* counting: the HTTP worker */
extern void claude_usage_done(const ClaudeRequest *req, bool sent,
							  const ClaudeUsage *usage, double cost);

/* budgets */
extern void claude_usage_loaded(Oid role, int32 day, bool *base, bool *batch);
extern void claude_usage_set_base(Oid role, int32 day, const UsageCounts *base,
								  const UsageReserve *batch);
extern bool claude_usage_within(Oid role, const double limit[3], int64 n,
								bool reserve, int *over);
extern bool claude_usage_reserve_batch(Oid role, int32 day, const double limit[3],
									   const UsageReserve *r, int *over);
extern void claude_usage_settle_batch(Oid dbid, Oid role, int32 day,
									  const UsageReserve *released,
									  const UsageCounts *used);
extern uint32 claude_usage_config_generation(void);
extern void claude_usage_config_bump(void);

/* flushing, and the rows not flushed yet */
extern int	claude_usage_take_new(Oid dbid, UsageFlushed *out);
extern void claude_usage_unflush(const UsageFlushed *f, int n);
extern void claude_usage_flushed(const UsageFlushed *f, int n, bool loaded);
extern int	claude_usage_pending_of(Oid dbid, UsageFlushed **out);

#endif
