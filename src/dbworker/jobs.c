/*
 * jobs.c
 *		The durable job queue of AFTER triggers, run by the database's
 *		worker.  Caller: dbworker.c.
 *
 * Jobs are claimed with FOR UPDATE SKIP LOCKED in a transaction of their
 * own that also counts the attempt, so a failing job's attempts are never
 * rolled back with it.  Claimed jobs go through one pipe (client/pipe.c), as many
 * at once as the pool and the rate limits allow; each reply is written
 * back by primary key and its job deleted, in a subtransaction, so one bad
 * row cannot hurt the others.  Retryable failures (429, 5xx, connection,
 * timeout) come back after an exponential backoff until claude.max_retries
 * retries are used; other failures, and the last one, leave the job
 * 'failed' with its error until claude_jobs_retry().  A job whose row is
 * gone is finished quietly.  Jobs 'running' when a worker starts belong to
 * a worker that died: they are queued again.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "client/budget.h"
#include "client/pipe.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/secret.h"
#include "common/security.h"
#include "common/spi.h"
#include "dbworker/jobs.h"
#include "dbworker/writeback.h"

#define JOBS_WINDOW		256
#define CLAIM_AT_LEAST	16
#define BACKOFF_MAX_S	300

typedef struct Job
{
	int64		id;
	Oid			relid;
	char	   *target;
	char	   *pk;				/* jsonb text */
	int			attempts;
	Oid			role;			/* who queued it, whose budget it uses */
	char	   *inputs;			/* SQL of its row's inputs as text, or NULL */
	char	   *inputs_md5;		/* their MD5 when it was queued, or NULL */
} Job;

static MemoryContext jobs_cxt = NULL;
static ClaudePipe *jobs_pipe = NULL;
static Job *inflight[JOBS_WINDOW];
static Oid	nsp = InvalidOid;	/* the extension's schema, if installed */
static char *jobs_table;
static int	max_attempts;

/*
 * At worker start: find the extension, queue again what a dead worker left
 * running, and send requests with no retries of their own (jobs retry).
 */
void
claude_jobs_start(void)
{
	if (jobs_cxt == NULL)
	{
		char	   *retries = GetConfigOptionByName("claude.max_retries", NULL, false);

		max_attempts = atoi(retries) + 1;
		SetConfigOption("claude.max_retries", "0", PGC_SUSET, PGC_S_OVERRIDE);
		jobs_cxt = AllocSetContextCreate(TopMemoryContext, "claude jobs",
										 ALLOCSET_DEFAULT_SIZES);
	}

	claude_xact_begin();
	{
		Oid			relid = InvalidOid;

		nsp = InvalidOid;
		if (claude_extension_find(&nsp, NULL))
			relid = get_relname_relid("claude_jobs", nsp);
		if (OidIsValid(relid))
		{
			MemoryContext old = MemoryContextSwitchTo(jobs_cxt);

			jobs_table = quote_qualified_identifier(get_namespace_name(nsp), "claude_jobs");
			jobs_pipe = claude_pipe_create(JOBS_WINDOW, claude_cache_enabled, nsp);
			MemoryContextSwitchTo(old);
			claude_spi_run(psprintf("UPDATE %s SET status = 'queued', updated_at = now() "
							 "WHERE status = 'running'", jobs_table), 0, NULL, NULL, SPI_OK_UPDATE);
		}
		else
			nsp = InvalidOid;
	}
	claude_xact_end();
}

static void
set_failed_or_retry(Job *job, const char *error, bool retryable)
{
	Oid			types[3] = {INT8OID, TEXTOID, FLOAT8OID};
	Datum		values[3];

	values[0] = Int64GetDatum(job->id);
	values[1] = CStringGetTextDatum(error);
	values[2] = Float8GetDatum(Min(pow(2, job->attempts - 1), BACKOFF_MAX_S));
	if (retryable && job->attempts < max_attempts)
		claude_spi_run(psprintf("UPDATE %s SET status = 'queued', last_error = $2, updated_at = now(), "
						 "next_attempt_at = now() + $3 * interval '1 second' WHERE id = $1", jobs_table),
				3, types, values, SPI_OK_UPDATE);
	else
		claude_spi_run(psprintf("UPDATE %s SET status = 'failed', last_error = $2, updated_at = now() "
						 "WHERE id = $1", jobs_table), 2, types, values, SPI_OK_UPDATE);
}


/* Write a reply back by primary key; the job is done either way. */
static void
write_back(Job *job, text *completion)
{
	Datum		id = Int64GetDatum(job->id);
	Oid			idtype = INT8OID;

	Oid			owner = claude_rel_owner(job->relid);

	/* the trigger is the table owner's automation: write with its rights */
	if (OidIsValid(owner))
		(void) claude_update_by_pk(job->relid, job->target, job->pk, completion, owner,
								   job->inputs, job->inputs_md5);
	claude_spi_run(psprintf("DELETE FROM %s WHERE id = $1", jobs_table), 1, &idtype, &id, SPI_OK_DELETE);
}

typedef struct JobOutcome
{
	Job		   *job;
	text	   *completion;
	const char *error;
	const ClaudeResult *result;
} JobOutcome;

static void
record_outcome(void *arg)
{
	JobOutcome *o = arg;

	if (o->completion)
		write_back(o->job, o->completion);
	else
		set_failed_or_retry(o->job, o->error,
							o->result == NULL || claude_result_retryable(o->result));
}

/* A job's request is over: record its outcome in a subtransaction. */
static void
job_done(void *arg, int64 tag, text *completion, const char *error,
		 const ClaudeResult *result)
{
	JobOutcome	o = {inflight[tag], completion, error, result};
	ErrorData  *edata;

	inflight[tag] = NULL;
	if ((edata = claude_subxact(record_outcome, &o)) != NULL)
		claude_spi_run(psprintf("UPDATE %s SET status = 'failed', last_error = $2, updated_at = now() "
								"WHERE id = $1", jobs_table), 2, (Oid[]) {INT8OID, TEXTOID},
					   (Datum[]) {Int64GetDatum(o.job->id),
			CStringGetTextDatum(claude_redact(edata->message, 0))}, SPI_OK_UPDATE);
	pfree(o.job->target);
	pfree(o.job->pk);
	if (o.job->inputs)
		pfree(o.job->inputs);
	if (o.job->inputs_md5)
		pfree(o.job->inputs_md5);
	pfree(o.job);
}

/* Claim due jobs up to the jobs_pipe's room and send them. */
static int
claim(void)
{
	int			room = claude_pipe_room(jobs_pipe);
	uint64		n;
	SPITupleTable *claimed;

	/* claim in bunches, not one job per round trip */
	if (room == 0 || (room < CLAIM_AT_LEAST && claude_pipe_outstanding(jobs_pipe) > 0))
		return 0;

	claude_spi_run(psprintf("UPDATE %s j SET status = 'running', attempts = attempts + 1, updated_at = now() "
					 "WHERE id IN (SELECT id FROM %s WHERE status = 'queued' AND next_attempt_at <= now() "
					 "ORDER BY id LIMIT %d FOR UPDATE SKIP LOCKED) "
					 "RETURNING id, relid, target_column, pk::text, attempts, request::text, "
					 "(request->>'max_tokens')::int, role::oid, inputs_md5, "
					 "(SELECT string_agg(format('pg_catalog.quote_nullable(%%I::pg_catalog.text)', c), ', ' ORDER BY o) "
					 "FROM unnest(inputs) WITH ORDINALITY u(c, o))",
					 jobs_table, jobs_table, room), 0, NULL, NULL, SPI_OK_UPDATE_RETURNING);
	n = SPI_processed;
	/* a cache hit is handed back at once, with SPI calls of its own */
	claimed = SPI_tuptable;
	for (uint64 r = 0; r < n; r++)
	{
		HeapTuple	tup = claimed->vals[r];
		TupleDesc	desc = claimed->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(jobs_cxt);
		Job		   *job = palloc(sizeof(Job));
		int			tag = 0;

		job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		job->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		job->target = SPI_getvalue(tup, desc, 3);
		job->pk = SPI_getvalue(tup, desc, 4);
		job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		job->role = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		job->inputs_md5 = SPI_getvalue(tup, desc, 9);
		job->inputs = SPI_getvalue(tup, desc, 10);
		MemoryContextSwitchTo(old);
		while (inflight[tag] != NULL)
			tag++;
		inflight[tag] = job;
		/* with room in the jobs_pipe, submit waits for a slot rather than refuse */
		claude_request_role = job->role;
		while (!claude_pipe_submit(jobs_pipe, tag, SPI_getvalue(tup, desc, 6),
								   DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull)),
								   job_done, NULL))
			claude_pipe_collect(jobs_pipe, job_done, NULL);
		claude_request_role = InvalidOid;
	}
	return (int) n;
}

/*
 * One round: hand back finished jobs, claim and send due ones.  Returns
 * whether there is job work left (in flight or queued, due or not).
 */
bool
claude_jobs_step(void)
{
	bool		more;

	/* the extension may have been created since the worker started */
	if (!OidIsValid(nsp))
		claude_jobs_start();
	if (!OidIsValid(nsp))
		return false;
	claude_xact_begin();
	claude_pipe_poll(jobs_pipe, job_done, NULL);
	claim();
	more = claude_pipe_outstanding(jobs_pipe) > 0;
	if (!more)
	{
		claude_spi_run(psprintf("SELECT 1 FROM %s WHERE status = 'queued' LIMIT 1", jobs_table),
				0, NULL, NULL, SPI_OK_SELECT);
		more = SPI_processed > 0;
	}
	/* a prepared transaction may hold jobs: look again after COMMIT PREPARED */
	if (!more)
	{
		claude_spi_run("SELECT 1 FROM pg_catalog.pg_prepared_xacts "
					   "WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database() LIMIT 1",
					   0, NULL, NULL, SPI_OK_SELECT);
		more = SPI_processed > 0;
	}
	claude_xact_end();
	return more;
}

/* After an error in a round: what was in flight is lost, queue it again. */
void
claude_jobs_reset(void)
{
	claude_request_role = InvalidOid;
	if (!OidIsValid(nsp))
		return;
	memset(inflight, 0, sizeof(inflight));
	MemoryContextReset(jobs_cxt);
	jobs_pipe = NULL;
	claude_jobs_start();
}
