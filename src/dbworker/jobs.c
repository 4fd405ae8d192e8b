/*
 * jobs.c
 *		The durable job queue of AFTER triggers, run by the database's
 *		worker.  Caller: dbworker.c.
 *
 * Jobs are claimed with FOR UPDATE SKIP LOCKED in a transaction of their
 * own that also counts the attempt and commits before anything is sent,
 * so a failing job's attempts are never rolled back with it; the claim
 * takes no job that has had claude.max_retries + 1 attempts, and fails
 * such a job instead.  Claimed jobs go through one pipe (client/pipe.c),
 * as many at once as the pool and the rate limits allow, each sent in a
 * subtransaction of its own; each reply is written back by primary key and
 * its job deleted, in a subtransaction, so one bad row cannot hurt the
 * others.  A job with a reply_check (a trigger's labels= or schema=) has
 * its reply checked by the pipe: one that breaks the schema fails the job
 * with the path, is not written and is not cached.  The requests in flight outlive any error of the worker
 * (claude_pipe_keep_slots): an error elsewhere re-sends nothing.
 * Failures the one retry policy retries (common/retry.c: 429, 5xx,
 * connection, timeout, as the server's x-should-retry and retry-after say)
 * come back after the jobs' backoff until claude.max_retries retries are
 * used; other failures, and the last one, leave the job 'failed' with its
 * error (jobs_record.c) until claude_jobs_retry().  A job whose row is
 * gone is finished quietly; one a newer job of its row and column
 * superseded (trigger.c marks it) is never claimed, and its reply is not
 * written.  Jobs 'running' when a worker starts belong to a worker that
 * died, and those an aborted round lost track of are not in flight: both
 * are queued again.
 *
 * Each request is paid by the role that fired the trigger (the call's
 * payer: its budget and cache scope apply); a job that role cannot pay for now (a
 * spent budget; the API's billing_error, whatever its status) waits, its
 * attempt not counted, and is looked at again after a while (a budget: by
 * the next UTC day at the latest), or at once when the UTC day changes,
 * claude_budgets or claude_prices change, the settings are reloaded or
 * claude_jobs_retry() is called; one whose role is gone fails.  The
 * reply is written as the table's owner, restricted, and only while the
 * table still has the trigger that asked.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "client/budget.h"
#include "client/pipe.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/retry.h"
#include "common/secret.h"
#include "common/security.h"
#include "common/spi.h"
#include "common/template.h"
#include "dbworker/jobs.h"
#include "dbworker/jobs_record.h"
#include "dbworker/writeback.h"
#include "shmem/usage.h"

#define JOBS_WINDOW		256
#define CLAIM_AT_LEAST	16

static MemoryContext jobs_cxt = NULL;
static ClaudePipe *jobs_pipe = NULL;
static Job *inflight[JOBS_WINDOW];
static Oid	nsp = InvalidOid;	/* the extension's schema, if installed */
static char *jobs_table;
static int	max_attempts;
static Oid	worker_user;		/* who keeps the books: the worker's own user */
static uint32 seen_generation;	/* of prices and budgets, for waiting jobs */
static bool lost_track = false; /* a round aborted: 'running' jobs may not be in flight */
static bool reloaded = false;	/* the settings were reloaded: waiting jobs may go */
static int32 seen_day = -1;		/* the budgets' UTC day: a new one, waiting jobs may go */

/* how long a job refused by a budget waits before a new look */
#define WAITING_RECHECK_S	60
/* and one refused for billing: each look is a request the API refuses */
#define BILLING_RECHECK_S	300

/* The settings were reloaded (a new key, say): look at waiting jobs again. */
void
claude_jobs_reloaded(void)
{
	reloaded = true;
}

/*
 * At worker start: find the extension and queue again what a dead worker
 * left running.  A job is tried claude.max_retries + 1 times, each attempt
 * a request with no HTTP retries of its own (see submit_job).
 */
void
claude_jobs_start(void)
{
	if (jobs_cxt == NULL)
	{
		max_attempts = claude_max_retries + 1;
		jobs_cxt = AllocSetContextCreate(TopMemoryContext, "claude jobs",
										 ALLOCSET_DEFAULT_SIZES);
		worker_user = GetUserId();
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
			bool		first = jobs_pipe == NULL;

			jobs_table = quote_qualified_identifier(get_namespace_name(nsp), "claude_jobs");
			if (first)
			{
				jobs_pipe = claude_pipe_create(JOBS_WINDOW);
				claude_pipe_keep_slots(jobs_pipe);
			}
			MemoryContextSwitchTo(old);
			/* found again: what is in flight goes on, the rest is queued again */
			if (!first)
				lost_track = true;
			else
				claude_spi_run(psprintf("UPDATE %s SET status = 'queued', updated_at = now() "
										"WHERE status = 'running'", jobs_table), 0, NULL, NULL, SPI_OK_UPDATE);
		}
		else
			nsp = InvalidOid;
	}
	claude_xact_end();
}

static void
free_job(Job *job)
{
	if (job->request)
		pfree(job->request);
	if (job->check.schema)
		pfree(job->check.schema);
	pfree(job->target);
	pfree(job->pk);
	if (job->inputs)
		pfree(job->inputs);
	if (job->inputs_md5)
		pfree(job->inputs_md5);
	pfree(job);
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
	JobError	e = {o->error, CLAUDE_ERRCODE_BAD_RESPONSE, o->result};
	ClaudeFailure failure;
	char	   *why;

	if (o->completion)
	{
		claude_job_write_back(jobs_table, nsp, o->job, o->completion);
		return;
	}
	if (o->result && claude_result_failed(o->result, NULL, &failure))
		e.sqlerrcode = failure.sqlerrcode;
	else if (o->job->check.schema)
		e.sqlerrcode = CLAUDE_ERRCODE_SCHEMA;
	/* no request: its budget refused it as it went, or a cached reply failed its check */
	if (o->result == NULL &&
		(o->job->check.schema == NULL || !claude_budget_allows(o->job->role, &why)))
		e.sqlerrcode = CLAUDE_ERRCODE_BUDGET;
	if (e.sqlerrcode == CLAUDE_ERRCODE_BUDGET)
		claude_job_waiting(jobs_table, o->job, &e, WAITING_RECHECK_S);
	/* from the reply's error.type, never from a text the server wrote */
	else if (o->result && o->result->billing_error)
		claude_job_waiting(jobs_table, o->job, &e, BILLING_RECHECK_S);
	else
		claude_job_failed_or_retry(jobs_table, o->job, &e, max_attempts - 1);
}

/* A job's request is over: record its outcome in a subtransaction. */
static void
job_done(void *arg, int64 tag, text *completion, const char *error,
		 const ClaudeResult *result)
{
	JobOutcome	o = {inflight[tag], completion, error, result};
	ErrorData  *edata;
	ClaudeRoleSwitch as_worker;

	inflight[tag] = NULL;
	/* the books are kept as the worker's own user, whoever the job's role */
	claude_become(&as_worker, worker_user, false);
	if ((edata = claude_subxact(record_outcome, &o)) != NULL)
		claude_job_failed(jobs_table, o.job,
						  &(JobError) {claude_redact(edata->message, 0), edata->sqlerrcode, NULL});
	claude_unbecome(&as_worker);
	free_job(o.job);
}

/*
 * Whether a job may be sent now, checked before anything is paid: the
 * table still has the trigger that queued it, the role that fired it
 * exists and its budget allows one more request.  If not, the job waits
 * (a spent budget) or fails, visibly.
 */
static bool
job_sendable(int tag)
{
	Job		   *job = inflight[tag];
	char	   *why;
	char	   *error = NULL;
	int			code = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;

	if (get_rel_name(job->relid) == NULL)
	{
		/* the table is gone, and its rows with it: nothing to do */
		inflight[tag] = NULL;
		claude_spi_run(psprintf("DELETE FROM %s WHERE id = %lld", jobs_table, (long long) job->id),
					   0, NULL, NULL, SPI_OK_DELETE);
		free_job(job);
		return false;
	}
	if (!claude_job_armed(nsp, job->relid, job->target))
		error = psprintf("no claude_enrich_trigger of table %s fills column \"%s\"",
						 get_rel_name(job->relid), job->target);
	else if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->role)))
		error = psprintf("role %u, which fired the trigger and pays for the job, no longer exists",
						 job->role);
	else if (!claude_budget_allows(job->role, &why))
	{
		error = claude_budget_message(job->role, why);
		code = CLAUDE_ERRCODE_BUDGET;
	}
	if (error == NULL)
		return true;
	inflight[tag] = NULL;
	if (code == CLAUDE_ERRCODE_BUDGET)
		claude_job_waiting(jobs_table, job, &(JobError) {error, code, NULL}, WAITING_RECHECK_S);
	else
		claude_job_failed(jobs_table, job, &(JobError) {error, code, NULL});
	free_job(job);
	return false;
}

/*
 * Send a job's request, paid by the role that fired the trigger: its
 * budget applies, its cache scope serves the request.  No HTTP retries:
 * a job that fails is tried again by the queue (set_failed_or_retry).
 */
static bool
submit_job(Job *job, int tag)
{
	ClaudeCall	call;

	claude_call_init(&call, CLAUDE_EP_MESSAGES, NULL);
	claude_call_set_body(&call, job->request);
	call.payer = job->role;
	call.max_retries = 0;
	call.cache = claude_cache_enabled ? CLAUDE_CACHE_LOOKUP : CLAUDE_CACHE_OFF;
	call.cache_nsp = nsp;
	/* a structured reply is checked: one that breaks the schema fails the job, uncached */
	return claude_pipe_submit_checked(jobs_pipe, tag, &call,
									  job->check.schema ? &job->check : NULL, job_done, NULL);
}

/*
 * The SQL of the MD5 of a job's inputs (the names at attno, a text[]), as
 * its row's write-back checks it, or NULL when it has none.
 */
static char *
inputs_check(HeapTuple tup, TupleDesc desc, int attno)
{
	Datum	   *names;
	bool	   *nulls;
	bool		isnull;
	int			n;
	char	  **columns;
	Datum		d = SPI_getbinval(tup, desc, attno, &isnull);

	if (isnull)
		return NULL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &names, &nulls, &n);
	if (n == 0)
		return NULL;
	columns = palloc(n * sizeof(char *));
	for (int i = 0; i < n; i++)
		columns[i] = TextDatumGetCString(names[i]);
	return claude_inputs_md5_of_columns(NULL, columns, n);
}

/*
 * Claim due jobs up to the jobs_pipe's room, counting their attempt;
 * returns how many.  They are sent once the claim has committed.  A due
 * job that had every attempt claude.max_retries allows, whatever brought
 * it here, is failed by the claim instead of taken.
 */
static int
claim(void)
{
	int			room = claude_pipe_room(jobs_pipe);
	uint64		n;
	SPITupleTable *claimed;

	/* claim in bunches, not one job per round trip */
	if (room == 0 || (room < CLAIM_AT_LEAST && claude_pipe_outstanding(jobs_pipe) > 0))
		return 0;

	/* one a newer job of its row and column replaced is superseded, not sent */
	claude_spi_run(psprintf("UPDATE %s j SET updated_at = now(), "
					 "status = CASE WHEN c.newer THEN 'superseded' WHEN attempts < %d THEN 'running' ELSE 'failed' END, "
					 "attempts = CASE WHEN NOT c.newer AND attempts < %d THEN attempts + 1 ELSE attempts END, "
					 "last_error = CASE WHEN c.newer OR attempts < %d THEN last_error "
					 "ELSE format('gave up after %%s attempts (claude.max_retries + 1 = %d)', attempts) "
					 "|| coalesce(': ' || last_error, '') END "
					 "FROM (SELECT id, EXISTS (SELECT FROM %s n WHERE n.relid = d.relid AND n.target_column = d.target_column "
					 "AND n.pk = d.pk AND n.id > d.id) AS newer "
					 "FROM %s d WHERE status IN ('queued', 'waiting') AND next_attempt_at <= now() "
					 "ORDER BY id LIMIT %d FOR UPDATE OF d SKIP LOCKED) c WHERE j.id = c.id "
					 "RETURNING j.id, relid, target_column, pk::text, attempts, request, "
					 "NULL, role::oid, inputs_md5, "
					 "inputs, status = 'running', reply_check",
					 jobs_table, max_attempts, max_attempts, max_attempts, max_attempts, jobs_table, jobs_table, room),
				   0, NULL, NULL, SPI_OK_UPDATE_RETURNING);
	n = SPI_processed;
	claimed = SPI_tuptable;
	for (uint64 r = 0; r < n; r++)
	{
		HeapTuple	tup = claimed->vals[r];
		TupleDesc	desc = claimed->tupdesc;
		bool		isnull;
		MemoryContext old;
		Job		   *job;
		int			tag = 0;
		char	   *inputs;
		Datum		d;

		if (!DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull)))
			continue;			/* failed (it had every attempt) or superseded */
		inputs = inputs_check(tup, desc, 10);
		old = MemoryContextSwitchTo(jobs_cxt);
		job = palloc0(sizeof(Job));

		job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		job->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		job->target = SPI_getvalue(tup, desc, 3);
		job->pk = SPI_getvalue(tup, desc, 4);
		job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		job->request = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull));
		job->role = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		job->inputs_md5 = SPI_getvalue(tup, desc, 9);
		job->inputs = inputs ? pstrdup(inputs) : NULL;
		d = SPI_getbinval(tup, desc, 12, &isnull);
		claude_reply_check_read(isnull ? NULL : DatumGetJsonbP(d), &job->check);
		MemoryContextSwitchTo(old);
		while (inflight[tag] != NULL)
			tag++;
		inflight[tag] = job;
	}
	return (int) n;
}

/* A claimed job being sent, for its subtransaction. */
typedef struct Send
{
	int			tag;
	bool		no_slot;		/* every slot is taken: collect, then again */
} Send;

static void
send_job(void *arg)
{
	Send	   *s = arg;
	Job		   *job = inflight[s->tag];

	s->no_slot = false;
	if (!job_sendable(s->tag))
		return;
	/* first: a cache hit hands the job back (and frees it) at once */
	job->sent = true;
	/* with room in the jobs_pipe, no slot means one is about to be free */
	if (!submit_job(job, s->tag))
	{
		job->sent = false;
		s->no_slot = true;
	}
}

/*
 * Send the claimed jobs, each in a subtransaction: one that cannot be
 * sent (a budget spent as it went, a key missing) is recorded and the
 * others go on.
 */
static void
send_claimed(void)
{
	for (int tag = 0; tag < JOBS_WINDOW; tag++)
	{
		Job		   *job = inflight[tag];
		ErrorData  *edata = NULL;
		Send		s = {tag, true};

		if (job == NULL || job->sent)
			continue;
		while (s.no_slot && (edata = claude_subxact(send_job, &s)) == NULL && s.no_slot)
			claude_pipe_collect(jobs_pipe, job_done, NULL);
		if (edata == NULL)
			continue;
		inflight[tag] = NULL;
		if (edata->sqlerrcode == CLAUDE_ERRCODE_BUDGET)
			claude_job_waiting(jobs_table, job, &(JobError) {claude_redact(edata->message, 0), edata->sqlerrcode, NULL},
						WAITING_RECHECK_S);
		else
			claude_job_failed(jobs_table, job, &(JobError) {claude_redact(edata->message, 0), edata->sqlerrcode, NULL});
		free_job(job);
	}
}

/*
 * Jobs 'running' in the table that are not in flight here (a round that
 * aborted lost track of them) are queued again; their attempts stand.
 */
static void
requeue_lost(void)
{
	Datum	   *ids = palloc(JOBS_WINDOW * sizeof(Datum));
	int			n = 0;

	for (int tag = 0; tag < JOBS_WINDOW; tag++)
		if (inflight[tag] != NULL && inflight[tag]->sent)
			ids[n++] = Int64GetDatum(inflight[tag]->id);
	claude_spi_run(psprintf("UPDATE %s SET status = 'queued', updated_at = now() "
							"WHERE status = 'running' AND id <> ALL($1)", jobs_table),
				   1, (Oid[]) {INT8ARRAYOID},
				   (Datum[]) {PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
															  TYPALIGN_DOUBLE))},
				   SPI_OK_UPDATE);
	lost_track = false;
}

/*
 * One round: hand back finished jobs, claim due ones and, once the claim
 * has committed, send them.  Returns whether there is job work left (in
 * flight or queued, due or not).
 */
bool
claude_jobs_step(void)
{
	bool		more;
	int			claimed;

	/* the extension may have been created since the worker started */
	if (!OidIsValid(nsp))
		claude_jobs_start();
	if (!OidIsValid(nsp))
		return false;
	claude_xact_begin();
	if (lost_track)
		requeue_lost();
	/* a budget, a price, a setting (the key) or the day changed: waiting jobs may go now */
	if (claude_usage_config_generation() != seen_generation || reloaded ||
		claude_usage_today() != seen_day)
	{
		seen_generation = claude_usage_config_generation();
		seen_day = claude_usage_today();
		reloaded = false;
		claude_spi_run(psprintf("UPDATE %s SET next_attempt_at = now() WHERE status = 'waiting'",
								jobs_table), 0, NULL, NULL, SPI_OK_UPDATE);
	}
	claude_pipe_poll(jobs_pipe, job_done, NULL);
	claimed = claim();
	if (claimed > 0)
	{
		/* the claim and its attempts are in before anything is sent */
		claude_xact_end();
		claude_xact_begin();
		send_claimed();
	}
	/* a job whose row was held may be left 'running': look next round */
	if (claude_jobs_record_skipped())
		lost_track = true;
	more = claude_pipe_outstanding(jobs_pipe) > 0;
	if (!more)
	{
		claude_spi_run(psprintf("SELECT 1 FROM %s WHERE status IN ('queued', 'waiting') LIMIT 1", jobs_table),
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

/*
 * After an error that aborted a whole round: the requests in flight go on
 * (their slots are kept) and their replies come back as ever, but what the
 * round recorded is gone; jobs claimed and not yet sent are forgotten, and
 * every job 'running' in the table but not in flight is queued again at
 * the next round.  Attempts stay counted: the claim bounds them.  The
 * extension is looked for again (it may be what went).
 */
void
claude_jobs_aborted(void)
{
	if (!OidIsValid(nsp))
		return;
	nsp = InvalidOid;
	for (int tag = 0; tag < JOBS_WINDOW; tag++)
		if (inflight[tag] != NULL && !inflight[tag]->sent)
		{
			free_job(inflight[tag]);
			inflight[tag] = NULL;
		}
	lost_track = true;
}
