/*
 * budget.h
 *		Prices and per-role budgets, as the calling session reads them.
 */
#ifndef CLAUDE_BUDGET_H
#define CLAUDE_BUDGET_H

#include "common/json.h"
#include "common/money.h"
#include "common/pgcompat.h"
#include "shmem/pack.h"
#include "shmem/usage.h"

/* the columns of claude_usage_log summed, for claude_usage_counts_read */
#define CLAUDE_SQL_USAGE_SUMS \
	"coalesce(pg_catalog.sum(requests), 0)::pg_catalog.int8, " \
	"coalesce(pg_catalog.sum(input_tokens), 0)::pg_catalog.int8, " \
	"coalesce(pg_catalog.sum(output_tokens), 0)::pg_catalog.int8, " \
	"coalesce(pg_catalog.sum(cache_write_tokens), 0)::pg_catalog.int8, " \
	"coalesce(pg_catalog.sum(cache_read_tokens), 0)::pg_catalog.int8, " \
	CLAUDE_SQL_NANOS("coalesce(pg_catalog.sum(cost_usd), 0)") ", " \
	"coalesce(pg_catalog.sum(unpriced_requests), 0)::pg_catalog.int8"

extern void claude_usage_counts_read(HeapTuple tup, TupleDesc desc, int att, UsageCounts *c);

/* backends: price a Messages request, and admit it under its role's budget */
extern void claude_price_of(const char *model, int64 *price_in, int64 *price_out);
extern int64 claude_cost_nanos(const char *model, const ClaudeUsage *u, bool batch);
extern void claude_budget_config_changed(void);
extern void claude_budget_prepared_committed(void);
extern void claude_budget_prepare(Oid role);
extern int32 claude_budget_reserve(Oid role, char **why);
pg_noreturn extern void claude_budget_refuse(Oid role, const char *why);
extern void claude_budget_reserve_batch(Oid role, int32 day, const UsageReserve *r);
extern bool claude_budget_allows(Oid role, char **why);
extern int32 claude_budget_status(Oid role, int64 limit[3], int64 used[3]);
extern char *claude_budget_message(Oid role, const char *why);

#endif
