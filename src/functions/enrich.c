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
 * the cache.  A row whose request fails is reported at the end; the run
 * goes on.  Inside a transaction block, where COMMIT is not allowed, it
 * commits with that transaction, and says so.
 *
 * With labels or a schema each row's request is claude_classify's or
 * claude_extract's (client/structured.c) and the pipe checks each reply:
 * a row whose reply breaks the schema fails with the reason, unwritten and
 * uncached.  In batch mode the batch keeps them (claude_batches.reply_check)
 * and the database worker checks each result the same way.
 */
#include "postgres.h"

#include "executor/spi.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "utils/memutils.h"

#include "client/pipe.h"
#include "client/structured.h"
#include "functions/complete.h"
#include "common/guc.h"

#include "common/spi.h"

#include "functions/enrich.h"
#include "shmem/progress.h"

PG_FUNCTION_INFO_V1(claude_enrich);

#define PIPE_WINDOW		256
#define NOTICE_EVERY_MS	10000
#define MAX_REPORTED_FAILURES 10

static void
row_done(void *arg, int64 tag, text *completion, const char *error,
		 const ClaudeResult *result)
{
	Enrich	   *e = arg;
	EnrichRow  *row = e->inflight[tag];
	const char *why = error ? error : claude_enrich_write(e, row, completion);

	e->inflight[tag] = NULL;
	if (why == NULL)
		e->done++;
	else
	{
		if (e->failed < MAX_REPORTED_FAILURES)
			appendStringInfo(&e->failures, "\nrow %s: %s", row->key, why);
		e->failed++;
	}
	e->since_commit++;
	claude_enrich_free_row(row);
	claude_progress_update(e->done, e->failed);
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

Datum
claude_enrich(PG_FUNCTION_ARGS)
{
	Enrich	   *e;
	char	   *target;
	char	   *mode;
	bool		only_missing;
	bool		atomic;
	ClaudePipe *pipe;
	MemoryContext tmp;
	MemoryContext cxt;

	for (int i = 0; i < 3; i++)
		if (PG_ARGISNULL(i))
			claude_invalid_argument("tbl, target_column and prompt_template must not be NULL");
	claude_require_shared();
	mode = PG_ARGISNULL(8) ? "online" : text_to_cstring(PG_GETARG_TEXT_PP(8));
	if (strcmp(mode, "online") != 0 && strcmp(mode, "batch") != 0)
		claude_invalid_argument("mode must be 'online' or 'batch'");

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
	if (atomic && strcmp(mode, "batch") == 0)
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
			e->want_pkjson = true;
		}
		claude_enrich_prepare(e, target, text_to_cstring(PG_GETARG_TEXT_PP(2)), only_missing);
		e->pending = palloc(e->batch_size * sizeof(EnrichRow *));
		if (strcmp(mode, "batch") == 0)
		{
			claude_enrich_batch(e, fcinfo);
			MemoryContextSwitchTo(old);
			SPI_finish();
			MemoryContextDelete(cxt);
			PG_RETURN_VOID();
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

		if (e->pending_pos == e->npending && !e->exhausted)
			claude_enrich_read_rows(e);
		while (e->pending_pos < e->npending && !claude_pipe_full(pipe))
		{
			EnrichRow  *row = e->pending[e->pending_pos];
			int			tag = 0;
			ClaudeCall	call;

			while (e->inflight[tag] != NULL)
				tag++;
			e->inflight[tag] = row;
			claude_enrich_call(e, row, &call);
			if (!claude_pipe_submit_checked(pipe, tag, &call,
											e->check.schema ? &e->check : NULL, row_done, e))
			{
				e->inflight[tag] = NULL;
				break;
			}
			e->pending_pos++;
		}
		if (claude_pipe_outstanding(pipe) > 0)
			claude_pipe_collect(pipe, row_done, e);
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);

		if (!atomic && e->since_commit >= e->batch_size)
		{
			SPI_commit();
			e->since_commit = 0;
		}
		if (TimestampDifferenceExceeds(e->last_notice, GetCurrentTimestamp(), NOTICE_EVERY_MS))
			report(e, false);
		if (e->exhausted && e->pending_pos == e->npending &&
			claude_pipe_outstanding(pipe) == 0)
			break;
	}

	report(e, true);
	claude_progress_end();
	SPI_finish();
	MemoryContextDelete(cxt);
	PG_RETURN_VOID();
}
