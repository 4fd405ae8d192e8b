/*
 * usage.h
 *		Usage per database, role, UTC day and model, in shared memory, and
 *		what each role spent today on the whole server.
 */
#ifndef CLAUDE_USAGE_H
#define CLAUDE_USAGE_H

#include "datatype/timestamp.h"

#include "common/json.h"
#include "shmem/pack.h"

#define CLAUDE_USAGE_ENTRIES	4096

/* what an entry of the shared hash counts */
typedef enum UsageKind
{
	USAGE_MODEL,				/* a database's usage by model, until flushed */
	USAGE_DB,					/* a database's total: what budgets count */
	USAGE_SERVER				/* the sum over databases (dbid invalid) */
} UsageKind;

typedef struct UsageKey
{
	Oid			dbid;
	Oid			role;
	int32		day;			/* days since 2000-01-01, UTC */
	int32		kind;			/* UsageKind */
	char		model[CLAUDE_USAGE_MODEL_LEN];	/* USAGE_MODEL: else empty */
} UsageKey;

typedef struct UsageCounts
{
	int64		requests;
	int64		input;
	int64		output;
	int64		cache_write;
	int64		cache_read;
	int64		cost;			/* nano-USD */
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
	int64		cost;			/* estimated, nano-USD */
} UsageReserve;

/* an entry's counts being written to claude_usage_log */
typedef struct UsageFlushed
{
	UsageKey	key;
	UsageCounts counts;
} UsageFlushed;

/*
 * An entry's usage by model that claude_usage_log may not show: new, being
 * written by flush_xid (InvalidTransactionId: not yet), and written by
 * written_xid (committed) the last round
 */
typedef struct UsagePending
{
	UsageKey	key;
	UsageCounts delta;
	UsageCounts flushing;
	TransactionId flush_xid;
	UsageCounts written;
	TransactionId written_xid;
} UsagePending;

extern Size claude_usage_shmem_size(void);
extern void claude_usage_shmem_startup(void);
extern int32 claude_usage_today(void);
extern int32 claude_usage_day_of(TimestampTz t);
extern void claude_usage_counts_add(UsageCounts *to, const UsageCounts *from, int sign);
extern void claude_usage_count_request(UsageCounts *to, const ClaudeUsage *usage, int64 cost);

/* counting: the HTTP worker */
extern void claude_usage_done(const ClaudeRequest *req, bool sent,
							  const ClaudeUsage *usage, int64 cost);
extern void claude_usage_model_key(char *to, const char *model);

/* budgets */
extern void claude_usage_loaded(Oid role, int32 day, bool *base, bool *batch);
extern void claude_usage_set_base(Oid role, int32 day, const UsageCounts *base,
								  const UsageReserve *batch);
extern void claude_usage_spent(Oid role, int32 day, int64 value[3]);
extern bool claude_usage_within(Oid role, const int64 limit[3], int64 n,
								bool reserve, int *over);
extern bool claude_usage_reserve_batch(Oid role, int32 day, const int64 limit[3],
									   const UsageReserve *r, int *over);
extern void claude_usage_settle_batch(Oid dbid, Oid role, int32 day, const char *model,
									  const UsageReserve *released,
									  const UsageCounts *used);
extern uint32 claude_usage_config_generation(void);
extern void claude_usage_config_bump(void);

/* flushing, and the rows not flushed yet */
extern int	claude_usage_take_new(Oid dbid, UsageFlushed *out);
extern void claude_usage_unflush(const UsageFlushed *f, int n);
extern void claude_usage_flushed(const UsageFlushed *f, int n, bool loaded);
extern void claude_usage_flushing_xid(const UsageFlushed *f, int n, TransactionId xid);
extern int	claude_usage_pending_of(Oid dbid, UsagePending **out);

#endif
