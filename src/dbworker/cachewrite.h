/*
 * cachewrite.h
 *		Writes to claude_cache, in the database's worker.
 */
#ifndef CLAUDE_CACHEWRITE_H
#define CLAUDE_CACHEWRITE_H

#include "common/json.h"
#include "shmem/dbqueue.h"

extern char *claude_cache_upsert(const char *table, const char *source);
extern void claude_cache_insert(const char *table, const uint8 *key, const char *request,
								Jsonb *response, const ClaudeUsage *usage, int ttl);
extern void claude_cache_apply(ClaudeDbRecord *rec);

#endif
