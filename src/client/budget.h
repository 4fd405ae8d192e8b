/*
 * budget.h
 *		Prices and per-role budgets, as the calling session reads them.
 */
#ifndef CLAUDE_BUDGET_H
#define CLAUDE_BUDGET_H

#include "common/json.h"
#include "common/pgcompat.h"
#include "shmem/pack.h"
#include "shmem/usage.h"

/* backends: price a Messages request, and admit it under its role's budget */
extern void claude_price_of(const char *model, double *price_in, double *price_out);
extern void claude_budget_config_changed(void);
extern void claude_budget_prepared_committed(void);
extern void claude_budget_prepare(Oid role);
extern int32 claude_budget_reserve(Oid role, char **why);
pg_noreturn extern void claude_budget_refuse(Oid role, const char *why);
extern void claude_budget_reserve_batch(Oid role, int32 day, const UsageReserve *r);
extern bool claude_budget_allows(Oid role, char **why);
extern char *claude_budget_message(Oid role, const char *why);

#endif
