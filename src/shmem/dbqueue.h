/*
 * dbqueue.h
 *		Work queued in shared memory for each database's worker.
 */
#ifndef CLAUDE_DBQUEUE_H
#define CLAUDE_DBQUEUE_H

#include "datatype/timestamp.h"
#include "utils/dsa.h"

#include "shmem/pack.h"

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

/* queueing, from any process */
extern dsa_pointer claude_dbwork_record(ClaudeDbRecordKind kind,
										const char *request, Size request_len,
										const char *response, Size response_len,
										ClaudeDbRecord **rec);
extern bool claude_dbwork_enqueue(Oid dbid, dsa_pointer rec);
extern void claude_jobs_kick(Oid dbid);
extern void claude_cache_store(const ClaudeRequest *req, const char *response,
							   Size len);

/* the HTTP worker now and then; commands that need a database alone */
extern void claude_dbwork_ensure_running(void);
extern void claude_dbwork_release(Oid dbid);
extern void claude_dbwork_forget(Oid dbid);

/* the database's worker */
extern Oid	claude_dbwork_attach(int slot);
extern dsa_pointer claude_dbwork_take(void);
extern bool claude_dbwork_leave_if_idle(void);

#endif
