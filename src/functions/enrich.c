/*
 * enrich.c
 *		CALL claude_enrich(tbl, target_column, prompt_template, ...): fill a
 *		column for every row, many requests in flight at once.  Called from
 *		SQL; batch mode goes on in batch.c.
 *
 * Rows are read in primary-key order, batch_size at a time (keyset
 * pagination, so commits in between lose no place), and their prompts
 * kept in flight through a pipe (client/pipe.c).  Each reply is written back by
 * primary key as soon as it arrives; every batch_size rows are committed,
 * so an interrupted run keeps what it finished, and a rerun (only_missing)
 * continues with the rest, its paid but uncommitted replies coming from
 * the cache.  A row whose request fails is counted and the run goes on,
 * unless the failure concerns the run rather than the row (a spent budget,
 * billing, the key, an unknown model: run_error) or max_failures is
 * reached: then nothing more is sent, the requests in flight are
 * collected, what was filled is committed and the call raises.  It raises
 * too when every row it attempted failed.  Inside a transaction block,
 * where COMMIT is not allowed, it commits with that transaction, and says
 * so.  The CALL returns its counts as INOUT parameters.
 *
 * With labels or a schema each row's request is claude_classify's or
 * claude_extract's (client/structured.c) and the pipe checks each reply:
 * a row whose reply breaks the schema fails with the reason, unwritten and
 * uncached.  In batch mode the batch keeps them (claude_batches.reply_check)
 * and the database worker checks each result the same way.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "executor/spi.h"
#include "funcapi.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "utils/memutils.h"

#include "client/pipe.h"
#include "client/structured.h"
#include "functions/complete.h"
#include "common/errors.h"
#include "common/guc.h"

#include "common/spi.h"

#include "functions/enrich.h"
#include "shmem/progress.h"

PG_FUNCTION_INFO_V1(claude_enrich);

#define PIPE_WINDOW		256
#define NOTICE_EVERY_MS	10000
#define MAX_REPORTED_FAILURES 10

/* the arguments after schema (labels and schema: 9 and 10) */
#define ARG_WHERE		11
#define ARG_LIMIT		12
#define ARG_MAX_FAILURES 13
#define ARG_DRY_RUN		14

/* what one online run has seen go wrong */
typedef struct EnrichRun
{
	Enrich	   *e;
	ClaudeCall *submitting;		/* the call being submitted: a cache hit or
								 * a refusal is handed over inside submit */
	int64		max_failures;	/* -1: none */
	int			errcode;		/* the failures' SQLSTATE; 0: none yet */
	bool		mixed;			/* they have more than one */
	int			stop_errcode;	/* a failure of the whole run: no more rows */
	char	   *first_error;	/* the first failure: row and message */
	char	   *stop_error;
} EnrichRun;

/*
 * A failure that concerns the run rather than its row: every other row
 * would fail the same way (and some of them would be paid for).
 */
static bool
run_error(int code)
{
	return code == CLAUDE_ERRCODE_BUDGET || code == CLAUDE_ERRCODE_BILLING ||
		code == CLAUDE_ERRCODE_AUTH || code == CLAUDE_ERRCODE_NOT_FOUND;
}

/* The SQLSTATE of a row's failure, from what done was given. */
static int
failure_code(EnrichRun *run, const ClaudeResult *result, bool write_failed)
{
	ClaudeFailure failure;

	if (write_failed)
		return run->e->write_errcode;
	if (result == NULL)
		return run->submitting && run->submitting->state == CLAUDE_CALL_REFUSED ?
			CLAUDE_ERRCODE_BUDGET : CLAUDE_ERRCODE_SCHEMA;
	/* the status and transport say it (billing from the reply's error.type) */
	if (claude_result_failed(result, NULL, &failure))
		return failure.sqlerrcode;
	/* a reply that came: not a Message, or not what labels or schema ask */
	return run->e->check.schema ? CLAUDE_ERRCODE_SCHEMA : CLAUDE_ERRCODE_BAD_RESPONSE;
}

static void
row_done(void *arg, int64 tag, text *completion, const char *error,
		 const ClaudeResult *result)
{
	EnrichRun  *run = arg;
	Enrich	   *e = run->e;
	EnrichRow  *row = e->inflight[tag];
	const char *why = error ? error : claude_enrich_write(e, row, completion);

	e->inflight[tag] = NULL;
	if (result == NULL && run->submitting && run->submitting->state == CLAUDE_CALL_HIT)
		e->cached++;
	if (result != NULL)
	{
		const ClaudeCall *c = claude_pipe_call_of(result);
		ClaudeUsage u;

		/* each attempt is a request; one that never left counts none */
		e->requests += Max(result->attempts, result->http_status ? 1 : 0);
		if (c->reply && claude_reply_usage(c->reply, strlen(c->reply), &u))
			claude_usage_add(&e->usage, &u);
	}
	if (why == NULL)
		e->done++;
	else
	{
		int			code = failure_code(run, result, error == NULL);
		char	   *line = psprintf("row %s: %s", row->key, why);

		if (e->failed < MAX_REPORTED_FAILURES)
			appendStringInfo(&e->failures, "\n%s", line);
		e->failed++;
		if (run->first_error == NULL)
			run->first_error = MemoryContextStrdup(e->cxt, line);
		if (run->errcode != 0 && run->errcode != code)
			run->mixed = true;
		run->errcode = code;
		if (run_error(code) && run->stop_errcode == 0)
		{
			run->stop_errcode = code;
			run->stop_error = MemoryContextStrdup(e->cxt, why);
		}
	}
	e->since_commit++;
	claude_enrich_free_row(row);
	claude_progress_update(e->done, e->failed);
}

/* Whether to send no more rows. */
static bool
stopping(EnrichRun *run)
{
	return run->stop_errcode != 0 ||
		(run->max_failures >= 0 && run->e->failed >= run->max_failures);
}

/*
 * labels (text[]) or schema (jsonb), at most one: what each row's reply
 * must be.  Refused (22023) before any row is read.
 */
void
claude_enrich_check(FunctionCallInfo fcinfo, int labels_arg, int schema_arg,
					ClaudeReplyCheck *check)
{
	bool		has_labels = PG_NARGS() > labels_arg && !PG_ARGISNULL(labels_arg);
	bool		has_schema = PG_NARGS() > schema_arg && !PG_ARGISNULL(schema_arg);

	check->schema = NULL;
	check->field = NULL;
	if (has_labels && has_schema)
		claude_invalid_argument("give labels or schema, not both");
	if (has_labels)
	{
		check->schema = claude_labels_schema_array(PG_GETARG_ARRAYTYPE_P(labels_arg));
		check->field = "label";
	}
	else if (has_schema)
		check->schema = claude_object_schema(PG_GETARG_JSONB_P_COPY(schema_arg));
}

static void
report(Enrich *e, bool final)
{
	double		secs = (double) (GetCurrentTimestamp() - e->started) / USECS_PER_SEC;
	int64		finished = e->done + e->failed;
	double		rate = secs > 0 ? finished / secs : 0;

	if (final)
		ereport(NOTICE,
				(errmsg("claude_enrich: %lld rows of %s filled, %lld failed, in %.1f s (%.1f rows/s)",
						(long long) e->done, e->relname, (long long) e->failed, secs, rate),
				 e->failed ? errdetail_internal("First failures:%s", e->failures.data) : 0,
				 e->failed ? errhint("Fix the cause and CALL claude_enrich again: it continues with the rows still missing.") : 0));
	else
		ereport(NOTICE,
				(errmsg("claude_enrich: %lld of %lld rows done (%.0f%%), %.1f rows/s, about %.0f s left",
						(long long) finished, (long long) e->total,
						e->total ? 100.0 * finished / e->total : 100.0, rate,
						rate > 0 ? (e->total - finished) / rate : 0)));
	e->last_notice = GetCurrentTimestamp();
}

/*
 * The run failed: what was filled is committed already (unless atomic);
 * raise with the run's error, else with the SQLSTATE the failures share,
 * else with our class's.
 */
pg_noreturn static void
raise_failed(EnrichRun *run, bool atomic)
{
	Enrich	   *e = run->e;
	int			code = run->stop_errcode ? run->stop_errcode :
		run->mixed ? CLAUDE_ERRCODE_CLASS : run->errcode;
	char	   *what;

	if (run->stop_errcode)
		what = psprintf("claude_enrich stopped at the first error that every row would meet: %s",
						run->stop_error);
	else if (run->max_failures >= 0 && e->failed >= run->max_failures)
		what = psprintf("claude_enrich stopped: %lld rows of %s failed, max_failures is %lld",
						(long long) e->failed, e->relname, (long long) run->max_failures);
	else
		what = psprintf("claude_enrich failed: all %lld rows of %s it attempted failed",
						(long long) e->failed, e->relname);
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", what),
			 errdetail("%lld rows filled (%lld from the cache), %lld failed, %lld requests; first error: %s",
					   (long long) e->done, (long long) e->cached, (long long) e->failed,
					   (long long) e->requests, run->first_error),
			 atomic ?
			 errhint("Nothing is kept: it ran inside a transaction block, which this error aborts. Fix the cause and CALL claude_enrich again.") :
			 errhint("The rows filled are committed. Fix the cause and CALL claude_enrich again: it continues with the rows still missing.")));
	pg_unreachable();
}

/*
 * The INOUT parameters: filled, failed, cached, requests, input_tokens,
 * output_tokens, cost_usd; a NULL stands for what is not known.
 */
static Datum
result_row(TupleDesc desc, Enrich *e, bool tokens, bool batch_price)
{
	Datum		values[7];
	bool		nulls[7] = {false, false, false, false, !tokens, !tokens, !tokens};
	Numeric		cost;

	values[0] = Int64GetDatum(e->done);
	values[1] = Int64GetDatum(e->failed);
	values[2] = Int64GetDatum(e->cached);
	values[3] = Int64GetDatum(e->requests);
	values[4] = Int64GetDatum((int64) e->usage.input);
	values[5] = Int64GetDatum((int64) e->usage.output);
	if (tokens && claude_enrich_cost(e->args.model, &e->usage, batch_price, &cost))
		values[6] = NumericGetDatum(cost);
	else
		nulls[6] = true;
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

Datum
claude_enrich(PG_FUNCTION_ARGS)
{
	Enrich	   *e;
	EnrichRun	run;
	char	   *target;
	char	   *mode;
	bool		only_missing;
	bool		dry_run;
	bool		atomic;
	ClaudePipe *pipe;
	MemoryContext tmp;
	MemoryContext cxt;
	MemoryContext caller = CurrentMemoryContext;
	TupleDesc	desc;
	Datum		result;

	for (int i = 0; i < 3; i++)
		if (PG_ARGISNULL(i))
			claude_invalid_argument("tbl, target_column and prompt_template must not be NULL");
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "claude_enrich: its INOUT parameters are not a row");
	desc = BlessTupleDesc(CreateTupleDescCopy(desc));
	claude_require_shared();
	mode = PG_ARGISNULL(8) ? "online" : text_to_cstring(PG_GETARG_TEXT_PP(8));
	if (strcmp(mode, "online") != 0 && strcmp(mode, "batch") != 0)
		claude_invalid_argument("mode must be 'online' or 'batch'");
	dry_run = !PG_ARGISNULL(ARG_DRY_RUN) && PG_GETARG_BOOL(ARG_DRY_RUN);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "claude_enrich",
								ALLOCSET_DEFAULT_SIZES);
	e = MemoryContextAllocZero(cxt, sizeof(Enrich));
	e->cxt = cxt;
	e->relid = PG_GETARG_OID(0);
	target = pstrdup(NameStr(*PG_GETARG_NAME(1)));
	only_missing = PG_ARGISNULL(6) ? true : PG_GETARG_BOOL(6);
	e->batch_size = PG_ARGISNULL(7) ? 100 : PG_GETARG_INT32(7);
	if (e->batch_size < 1)
		claude_invalid_argument("batch_size must be at least 1");
	if (!PG_ARGISNULL(ARG_LIMIT) && PG_GETARG_INT32(ARG_LIMIT) < 0)
		claude_invalid_argument("limit_rows must not be negative");
	e->limit_rows = PG_ARGISNULL(ARG_LIMIT) ? -1 : PG_GETARG_INT32(ARG_LIMIT);
	memset(&run, 0, sizeof(run));
	run.e = e;
	run.max_failures = PG_ARGISNULL(ARG_MAX_FAILURES) ? -1 : PG_GETARG_INT32(ARG_MAX_FAILURES);
	if (!PG_ARGISNULL(ARG_MAX_FAILURES) && run.max_failures < 1)
		claude_invalid_argument("max_failures must be at least 1");
	if (!PG_ARGISNULL(ARG_WHERE))
	{
		e->where_clause = MemoryContextStrdup(cxt, text_to_cstring(PG_GETARG_TEXT_PP(ARG_WHERE)));
		claude_enrich_check_where(e->where_clause);
	}
	claude_complete_args(fcinfo, 3, 4, 5, -1, &e->args);
	claude_cache_shared_system(&e->args);
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		claude_enrich_check(fcinfo, 9, 10, &e->check);

		claude_call_init(&e->proto, CLAUDE_EP_MESSAGES, NULL);
		claude_call_cache_arg(&e->proto, fcinfo, -1, CLAUDE_CACHE_LOOKUP);
		MemoryContextSwitchTo(old);
	}

	/* COMMIT is possible only in a CALL outside a transaction block */
	atomic = !(fcinfo->context && IsA(fcinfo->context, CallContext) &&
			   !castNode(CallContext, fcinfo->context)->atomic);
	/* a batch is paid for once submitted: its record must commit at once */
	if (atomic && strcmp(mode, "batch") == 0 && !dry_run)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("claude_enrich with mode => 'batch' cannot run inside a transaction block"),
				 errdetail("It commits the record of each batch before it returns, so that no submitted batch is lost."),
				 errhint("CALL it as a statement of its own.")));
	if (SPI_connect_ext(atomic ? 0 : SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "claude_enrich: SPI_connect failed");

	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		e->target = target;
		/* a batch reads rows in larger pages: it commits per batch, not per page */
		if (strcmp(mode, "batch") == 0)
		{
			e->batch_size = Max(e->batch_size, 1000);
			e->want_pkjson = !dry_run;
		}
		claude_enrich_prepare(e, target, text_to_cstring(PG_GETARG_TEXT_PP(2)), only_missing);
		e->pending = palloc(e->batch_size * sizeof(EnrichRow *));
		if (dry_run || strcmp(mode, "batch") == 0)
		{
			if (dry_run)
				claude_enrich_dry_run(e, strcmp(mode, "batch") == 0);
			else
				claude_enrich_batch(e, fcinfo);
			MemoryContextSwitchTo(caller);
			/* a batch's tokens and cost come with its results */
			result = result_row(desc, e, dry_run, strcmp(mode, "batch") == 0);
			SPI_finish();
			MemoryContextDelete(cxt);
			PG_RETURN_DATUM(result);
		}
		e->inflight = palloc0(PIPE_WINDOW * sizeof(EnrichRow *));
		initStringInfo(&e->failures);
		pipe = claude_pipe_create(PIPE_WINDOW);
		MemoryContextSwitchTo(old);
	}
	if (atomic)
		ereport(NOTICE,
				(errmsg("claude_enrich runs inside a transaction block: its results are committed with that transaction"),
				 errhint("CALL it outside a transaction block to commit every batch_size rows.")));

	e->started = e->last_notice = GetCurrentTimestamp();
	claude_progress_begin(e->relid, target, mode, e->total);
	tmp = AllocSetContextCreate(cxt, "claude_enrich rows", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContext old = MemoryContextSwitchTo(tmp);

		if (e->pending_pos == e->npending && !e->exhausted && !stopping(&run))
			claude_enrich_read_rows(e);
		while (e->pending_pos < e->npending && !claude_pipe_full(pipe) && !stopping(&run))
		{
			EnrichRow  *row = e->pending[e->pending_pos];
			int			tag = 0;
			ClaudeCall	call;
			bool		submitted;

			while (e->inflight[tag] != NULL)
				tag++;
			e->inflight[tag] = row;
			claude_enrich_call(e, row, &call);
			run.submitting = &call;
			submitted = claude_pipe_submit_checked(pipe, tag, &call,
												   e->check.schema ? &e->check : NULL,
												   row_done, &run);
			run.submitting = NULL;
			if (!submitted)
			{
				e->inflight[tag] = NULL;
				break;
			}
			e->pending_pos++;
		}
		/* what is in flight is paid for: collected and written, even when stopping */
		if (claude_pipe_outstanding(pipe) > 0)
			claude_pipe_collect(pipe, row_done, &run);
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);

		if (!atomic && e->since_commit >= e->batch_size)
		{
			SPI_commit();
			e->since_commit = 0;
		}
		if (TimestampDifferenceExceeds(e->last_notice, GetCurrentTimestamp(), NOTICE_EVERY_MS))
			report(e, false);
		if (((e->exhausted && e->pending_pos == e->npending) || stopping(&run)) &&
			claude_pipe_outstanding(pipe) == 0)
			break;
	}

	claude_progress_end();
	/* the summary, with the first ten failures, comes before any error */
	report(e, true);
	if (stopping(&run) || (e->failed > 0 && e->done == 0))
	{
		/* a rerun resumes after what was filled */
		if (!atomic)
			SPI_commit();
		raise_failed(&run, atomic);
	}
	SPI_finish();
	MemoryContextSwitchTo(caller);
	result = result_row(desc, e, true, false);
	MemoryContextDelete(cxt);
	PG_RETURN_DATUM(result);
}
