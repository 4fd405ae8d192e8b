/*
 * dbqueue.h
 *		Work queued in shared memory for each database's worker.
 */
#ifndef CLAUDE_DBQUEUE_H
#define CLAUDE_DBQUEUE_H

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "utils/dsa.h"

#include "shmem/pack.h"

typedef enum ClaudeDbRecordKind
{
	DBREC_CACHE_WRITE,			/* a paid response to keep */
	DBREC_CACHE_HITS,			/* hits to count */
	DBREC_JOBS					/* look for queued jobs */
} ClaudeDbRecordKind;

typedef struct ClaudeDbRecord
{
	dsa_pointer next;
	Oid			dbid;			/* whose record */
	ClaudeDbRecordKind kind;
	Oid			nsp;			/* schema of claude_cache */
	uint8		key[32];
	int			ttl;			/* seconds; 0 never expires */
	int			lead;			/* in-flight entry to release, or -1 */
	int64		hits;
	TimestampTz at;
	bool		rekey;			/* hits under a first-version key: move the
								 * entry to new_key */
	uint8		new_key[32];
	Size		request_len;
	Size		response_len;
	/* request and response text follow, each NUL-terminated */
} ClaudeDbRecord;

typedef enum ClaudeDbWant
{
	DBWORK_RUNNING,				/* it has a worker: woken */
	DBWORK_HELD,				/* held (DROP DATABASE ...): none for now */
	DBWORK_START,				/* start one for the entry given */
	DBWORK_NO_ENTRY				/* every entry taken: try again later */
} ClaudeDbWant;

/* a wake-up for when a session has ended (rows restored) */
typedef struct ClaudeDbWakeAfter
{
	Oid			dbid;
	int			pid;
} ClaudeDbWakeAfter;

#define CLAUDE_DBWORK_AFTER_MAX 16

extern void claude_dbwork_request_shmem(void);
extern void claude_dbwork_shmem_startup(void);

/* queueing and waking, from any process (wake: commit callbacks too) */
extern dsa_pointer claude_dbwork_record(ClaudeDbRecordKind kind,
										const char *request, Size request_len,
										const char *response, Size response_len,
										ClaudeDbRecord **rec);
extern void claude_dbwork_enqueue(Oid dbid, dsa_pointer rec);
extern void claude_dbwork_wake(Oid dbid);
extern void claude_dbwork_wake_after(Oid dbid, int pid);
extern void claude_jobs_kick(Oid dbid);
extern void claude_cache_store(const ClaudeRequest *req, const char *response,
							   Size len);

/* the launcher, the one process that starts database workers */
extern void claude_dbwork_launcher_attach(Latch *latch);
extern int	claude_dbwork_take_wakes(Oid *dbs, int max, bool *rescan,
									 bool *probed, ClaudeDbWakeAfter *after,
									 int *nafter);
extern void claude_dbwork_set_probed(bool probed);
extern ClaudeDbWant claude_dbwork_want(Oid dbid, bool probe, int *entry,
									   uint32 *generation);
extern void claude_dbwork_start_failed(int entry, uint32 generation);
extern bool claude_dbwork_maintain(void);

/* commands that need a database alone (the utility hook) */
extern void claude_dbwork_release(Oid dbid, int wait_ms);
extern void claude_dbwork_forget(Oid dbid);

/* the database's worker */
extern Oid	claude_dbwork_attach(int entry, uint32 generation, bool *probe);
extern dsa_pointer claude_dbwork_take(void);
extern void claude_dbwork_discard(void);
extern void claude_dbwork_found_work(void);
extern bool claude_dbwork_stopping(void);
extern bool claude_dbwork_leave_if_idle(void);

#endif
