/*
 * jobs_record.c
 *		What becomes of a job of the queue (jobs.c): its error recorded with
 *		its SQLSTATE, HTTP status and request-id, waiting, failed or queued
 *		again; its reply written back by primary key.  Caller: jobs.c.
 *
 * A job a newer job of the same row and column superseded (the trigger
 * marks it) is never queued again, and its reply is never written.
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type_d.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "common/errors.h"
#include "common/fault.h"
#include "common/retry.h"
#include "common/security.h"
#include "common/spi.h"
#include "dbworker/jobs_record.h"
#include "dbworker/writeback.h"
#include "shmem/usage.h"

/* a job's row was locked by another transaction when its outcome came */
static bool skipped = false;

/*
 * Whether a job's row was skipped since the last call: the job may be
 * left 'running' while not in flight (jobs.c queues such jobs again).
 */
bool
claude_jobs_record_skipped(void)
{
	bool		was = skipped;

	skipped = false;
	return was;
}

/*
 * Record a job's error along with set (SQL of the other columns, $1 its
 * id, $6 a timestamptz) unless a newer job superseded it meanwhile.  A
 * row another transaction holds (a trigger superseding it, a role
 * cancelling it) is skipped, never waited for: that transaction may be
 * waiting for a row this worker wrote.
 */
static void
record_error(const char *jobs_table, Job *job, const char *set, const JobError *e, TimestampTz at)
{
	const ClaudeResult *r = e->result;
	char		nulls[7] = "      ";

	if (r == NULL || r->http_status == 0)
		nulls[3] = 'n';
	if (r == NULL || r->request_id[0] == '\0')
		nulls[4] = 'n';
	if (claude_spi_exec(psprintf("UPDATE %s SET %s, last_error = $2, sqlstate = $3, http_status = $4, "
							 "request_id = $5, updated_at = now() WHERE id = (SELECT id FROM %s WHERE id = $1 "
							 "AND status <> 'superseded' FOR UPDATE SKIP LOCKED)",
							 jobs_table, set, jobs_table),
					6, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID},
					(Datum[]) {Int64GetDatum(job->id), CStringGetTextDatum(e->message),
						CStringGetTextDatum(unpack_sql_state(e->sqlerrcode)),
						Int32GetDatum(r ? Max(r->http_status, 0) : 0),
						r ? CStringGetTextDatum(r->request_id) : (Datum) 0,
					TimestampTzGetDatum(at)}, nulls) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record the error of job %lld", (long long) job->id);
	if (SPI_processed == 0)
		skipped = true;
}

/*
 * A job its role cannot pay for now (a spent budget, a billing error)
 * waits, its attempt not counted, and is looked at again after recheck_s;
 * one refused by a budget no later than the next UTC day, whose usage
 * starts at zero.
 */
void
claude_job_waiting(const char *jobs_table, Job *job, const JobError *e, int recheck_s)
{
	TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), recheck_s * 1000);

	if (e->sqlerrcode == CLAUDE_ERRCODE_BUDGET)
		at = Min(at, (TimestampTz) (claude_usage_today() + 1) * USECS_PER_DAY -
				 claude_test_clock_offset());
	record_error(jobs_table, job, "status = 'waiting', attempts = attempts - 1, next_attempt_at = $6", e, at);
}

void
claude_job_failed(const char *jobs_table, Job *job, const JobError *e)
{
	record_error(jobs_table, job, "status = 'failed'", e, 0);
}

/*
 * Queue a failed job again when the retry policy says so (common/retry.c,
 * with the jobs' own backoff and claude.max_retries), else fail it.
 */
void
claude_job_failed_or_retry(const char *jobs_table, Job *job, const JobError *e, int max_retries)
{
	ClaudeRetryPolicy policy = claude_retry_policy_jobs(max_retries);
	ClaudeAttempt attempt;
	ClaudeRetryDecision d;

	claude_retry_attempt_of(e->result, job->attempts, &attempt);
	d = claude_retry_decide(&attempt, &policy);
	if (d.retry)
		record_error(jobs_table, job, "status = 'queued', next_attempt_at = $6", e,
					 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) d.delay_ms));
	else
		claude_job_failed(jobs_table, job, e);
}

/*
 * Whether the table still has the claude_enrich_trigger that queued a job
 * for this column: the owner's automation is what allows the worker to
 * write as the owner, so a job it can no longer find writes nothing.
 */
bool
claude_job_armed(Oid nsp, Oid relid, const char *target)
{
	Oid			fn = LookupFuncName(list_make2(makeString(get_namespace_name(nsp)),
											   makeString("claude_enrich_trigger")),
									0, NULL, true);
	Relation	rel;
	bool		armed = false;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return false;
	for (int i = 0; rel->trigdesc && i < rel->trigdesc->numtriggers && !armed; i++)
	{
		Trigger    *t = &rel->trigdesc->triggers[i];

		armed = t->tgfoid == fn && t->tgnargs >= 2 && strcmp(t->tgargs[0], target) == 0 &&
			TRIGGER_FOR_AFTER(t->tgtype);
	}
	relation_close(rel, AccessShareLock);
	return armed;
}

/*
 * Write a reply back by primary key; the job is done either way, and so
 * are the older jobs it superseded.  A superseded job's reply is not
 * written: a newer job asks for that row and column.
 */
void
claude_job_write_back(const char *jobs_table, Oid nsp, Job *job, text *completion)
{
	Datum		id = Int64GetDatum(job->id);
	Oid			idtype = INT8OID;
	Oid			owner = claude_rel_owner(job->relid);
	bool		isnull;

	/* deleted meanwhile (cancelled), superseded, or held: nothing to write */
	claude_spi_run(psprintf("DELETE FROM %s WHERE id = (SELECT id FROM %s WHERE id = $1 FOR UPDATE SKIP LOCKED) "
							"RETURNING status = 'superseded'", jobs_table, jobs_table),
				   1, &idtype, &id, SPI_OK_DELETE_RETURNING);
	if (SPI_processed != 1)
		skipped = true;
	if (SPI_processed != 1 ||
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return;
	claude_spi_run(psprintf("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE relid = $1 AND target_column = $2 "
							"AND pk = $3::jsonb AND status = 'superseded' AND id < $4 FOR UPDATE SKIP LOCKED)",
							jobs_table, jobs_table),
				   4, (Oid[]) {OIDOID, TEXTOID, TEXTOID, INT8OID},
				   (Datum[]) {ObjectIdGetDatum(job->relid), CStringGetTextDatum(job->target),
					   CStringGetTextDatum(job->pk), id}, SPI_OK_DELETE);
	/* the trigger is the table owner's automation: write with its rights */
	if (OidIsValid(owner))
	{
		if (!claude_job_armed(nsp, job->relid, job->target))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no claude_enrich_trigger of table %s fills column \"%s\" any more",
							get_rel_name(job->relid), job->target),
					 errdetail("The reply was not written back.")));
		(void) claude_update_by_pk(job->relid, job->target, job->pk, completion, owner,
								   job->inputs, job->inputs_md5);
	}
}
