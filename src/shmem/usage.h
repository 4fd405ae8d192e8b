/*
 * usage.h
 *		Usage per database, role and UTC day, in shared memory.
 */
#ifndef CLAUDE_USAGE_H
#define CLAUDE_USAGE_H

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

/* an entry's counts being written to claude_usage_log */
typedef struct UsageFlushed
{
	UsageKey	key;
	UsageCounts counts;
} UsageFlushed;

extern Size claude_usage_shmem_size(void);
extern void claude_usage_shmem_startup(void);
extern int32 claude_usage_today(void);
extern void claude_usage_counts_add(UsageCounts *to, const UsageCounts *from, int sign);

/* counting: the HTTP worker, the batch write-back */
extern void claude_usage_done(const ClaudeRequest *req, bool sent,
							  const ClaudeUsage *usage, double cost);
extern void claude_usage_add(Oid role, const ClaudeUsage *usage, double cost);

/* budgets */
extern bool claude_usage_base_loaded(Oid role, int32 day);
extern void claude_usage_set_base(Oid role, int32 day, const UsageCounts *base);
extern bool claude_usage_within(Oid role, const double limit[3], int64 n,
								bool reserve, int *over);
extern uint32 claude_usage_config_generation(void);
extern void claude_usage_config_bump(void);

/* flushing, and the rows not flushed yet */
extern int	claude_usage_take_new(Oid dbid, UsageFlushed *out);
extern void claude_usage_unflush(const UsageFlushed *f, int n);
extern void claude_usage_flushed(const UsageFlushed *f, int n, bool loaded);
extern int	claude_usage_pending_of(Oid dbid, UsageFlushed **out);

#endif
