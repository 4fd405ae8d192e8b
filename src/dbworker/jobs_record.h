/*
 * jobs_record.h
 *		A job of the queue, and what becomes of it: its error recorded, its
 *		reply written back.
 */
#ifndef CLAUDE_JOBS_RECORD_H
#define CLAUDE_JOBS_RECORD_H

#include "client/structured.h"
#include "shmem/slots.h"
#include "utils/jsonb.h"

typedef struct Job
{
	int64		id;
	Oid			relid;
	char	   *target;
	char	   *pk;				/* jsonb text */
	int			attempts;
	Oid			role;			/* who queued it, whose budget it uses */
	char	   *inputs;			/* SQL of the MD5 of its row's inputs, or NULL */
	char	   *inputs_md5;		/* their MD5 when it was queued, or NULL */
	Jsonb	   *request;		/* its request, until it is sent */
	ClaudeReplyCheck check;		/* labels or a schema: what its reply must be */
	bool		sent;			/* its request is in flight */
} Job;

/*
 * Why a job did not succeed, as its row records it: last_error, sqlstate,
 * and the HTTP status and request-id of the reply when there was one.
 */
typedef struct JobError
{
	const char *message;
	int			sqlerrcode;
	const ClaudeResult *result; /* or NULL: no request, or no reply */
} JobError;

extern void claude_job_waiting(const char *jobs_table, Job *job, const JobError *e, int recheck_s);
extern void claude_job_failed(const char *jobs_table, Job *job, const JobError *e);
extern void claude_job_failed_or_retry(const char *jobs_table, Job *job, const JobError *e,
									   int max_retries);
extern bool claude_jobs_record_skipped(void);
extern bool claude_job_armed(Oid nsp, Oid relid, const char *target);
extern void claude_job_write_back(const char *jobs_table, Oid nsp, Job *job, text *completion);

#endif
