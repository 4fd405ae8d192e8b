/*
 * dbworker.h
 *		The per-database background worker.
 */
#ifndef CLAUDE_DBWORKER_H
#define CLAUDE_DBWORKER_H

#include "fmgr.h"

extern void claude_cache_insert(const char *table, const uint8 *key,
								const char *request, const char *response, int ttl);
extern PGDLLEXPORT void claude_db_worker_main(Datum arg);

#endif
