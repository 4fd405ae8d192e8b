/*
 * usage.h
 *		Usage per database, role and day; prices; per-role budgets.
 */
#ifndef CLAUDE_USAGE_H
#define CLAUDE_USAGE_H

#include "common/json.h"
#include "shmem/pack.h"

extern Size claude_usage_shmem_size(void);
extern void claude_usage_shmem_startup(void);

/* backends: price a Messages request, and admit it under its role's budget */
extern Oid	claude_request_role;	/* InvalidOid: the current user */
extern void claude_price_of(const char *body, Size len, double *price_in,
							double *price_out);
extern void claude_budget_prepare(Oid role);
extern int32 claude_budget_reserve(Oid role, char **why);
extern void claude_budget_refuse(Oid role, const char *why) pg_attribute_noreturn();
extern void claude_budget_check(Oid role, int64 n);
extern bool claude_budget_allows(Oid role, char **why);
extern char *claude_budget_message(Oid role, const char *why);
extern Oid	claude_request_owner(void);

/* HTTP worker: a Messages request ended; sent: it reached the API */
extern void claude_usage_done(const ClaudeRequest *req, bool sent,
							  const ClaudeUsage *usage, double cost);

/* database worker */
extern void claude_usage_add(Oid role, const ClaudeUsage *usage, double cost);
extern void claude_usage_flush(void);

#endif
