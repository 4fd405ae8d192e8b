/*
 * dbworker.h
 *		Per-database background workers and the work handed to them.
 */
#ifndef CLAUDE_DBWORKER_H
#define CLAUDE_DBWORKER_H

#include "datatype/timestamp.h"
#include "utils/dsa.h"

#define CLAUDE_MAX_DATABASES 64

typedef enum ClaudeDbRecordKind
{
	DBREC_CACHE_WRITE,			/* a paid response to keep */
	DBREC_CACHE_HITS,			/* hits to count */
	DBREC_JOBS					/* look for queued jobs */
} ClaudeDbRecordKind;

typedef struct ClaudeDbRecord
{
	dsa_pointer next;
	ClaudeDbRecordKind kind;
	Oid			nsp;			/* schema of claude_cache */
	uint8		key[32];
	int			ttl;			/* seconds; 0 never expires */
	int			lead;			/* in-flight entry to release, or -1 */
	int64		hits;
	TimestampTz at;
	Size		request_len;
	Size		response_len;
	/* request and response text follow, each NUL-terminated */
} ClaudeDbRecord;

extern Size claude_dbwork_shmem_size(void);
extern void claude_dbwork_shmem_startup(void);
extern dsa_pointer claude_dbwork_record(ClaudeDbRecordKind kind,
										const char *request, Size request_len,
										const char *response, Size response_len,
										ClaudeDbRecord **rec);
extern bool claude_dbwork_enqueue(Oid dbid, dsa_pointer rec);
extern void claude_dbwork_ensure_running(void);
extern void claude_dbwork_release(Oid dbid);
extern void claude_dbwork_forget(Oid dbid);
extern void claude_dbwork_install_hooks(void);
extern void claude_jobs_kick(Oid dbid);
extern void claude_dbwork_scan_databases(void);
extern void claude_cache_insert(const char *table, const uint8 *key,
								const char *request, const char *response, int ttl);
extern PGDLLEXPORT void claude_db_worker_main(Datum arg);

#endif
