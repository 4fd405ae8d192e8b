/*
 * batch_poll.c
 *		Message Batches in the database's worker: poll, download, write back.
 *		Caller: dbworker.c, one step per round.
 *
 * One batch at a time, one step per round of the worker's loop, so trigger
 * jobs and cache writes go on meanwhile.  A batch not ended is polled every
 * claude.batch_poll_interval.  Once ended, its results (JSONL, possibly
 * hundreds of MB) are streamed by the HTTP worker into a temporary file,
 * then read a thousand lines per transaction: each succeeded result is
 * written back by primary key and into the cache under the key an online
 * call would use; errored, canceled and expired requests keep their
 * reason.  Every outcome is recorded in claude_batch_items, so after a
 * crash or restart the worker downloads the results again and skips what
 * it had already written.  Each line has a subtransaction of its own: one
 * bad row cannot hold back the others.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "common/file_perm.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "client/budget.h"
#include "client/cache.h"
#include "client/call.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/secret.h"
#include "common/spi.h"
#include "dbworker/jobs.h"
#include "client/batches.h"
#include "client/message.h"
#include "shmem/slots.h"
#include "shmem/usage.h"
#include "dbworker/batch_poll.h"
#include "dbworker/cachewrite.h"

#define APPLY_LINES		1000
#define TEMP_DIR		"base/" PG_TEMP_FILES_DIR

typedef enum PollPhase
{
	POLL_IDLE,
	POLL_STATUS,				/* GET of the batch under way */
	POLL_RESULTS,				/* download of its results under way */
	POLL_APPLY					/* writing results back */
} PollPhase;

static PollPhase phase = POLL_IDLE;
static int	slot = -1;
static int64 current;			/* local_id of the batch at hand */
static char current_id[128];
static char results_file[MAXPGPATH];
static off_t results_offset;

/* What a round knows about the batch it writes back. */
typedef struct Target
{
	Oid			relid;
	char	   *column;
	bool		cache;
	Oid			role;			/* its submitter, whose usage it is */
	SPIPlanPtr	lookup;
	int			written;
} Target;

static bool
find_tables(ClaudeBatchTables *t)
{
	Oid			nsp;

	return claude_extension_find(&nsp, NULL) && claude_batch_tables(nsp, t);
}

/*
 * A submitting session that died leaves its record 'submitting' with no
 * lock on it: the batch may or may not exist at the API.
 */
static void
fail_orphans(const ClaudeBatchTables *t)
{
	SPITupleTable *rows;
	uint64		n;

	claude_spi_run(psprintf("SELECT local_id FROM %s WHERE status = 'submitting'", t->batches),
				   0, NULL, NULL, SPI_OK_SELECT);
	rows = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		local_id = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull));
		LOCKTAG		tag;

		claude_batch_lock_tag(&tag, local_id);
		if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
			continue;
		claude_batch_record_error(t, local_id,
								  "the submitting session ended before the API answered: "
								  "the batch may exist at the API without its id here", true);
	}
}

static void
start_status(void)
{
	slot = claude_request_submit(CLAUDE_GET, psprintf("%s/%s", CLAUDE_BATCHES_PATH, current_id),
								 NULL, 0, 0, NULL, 0);
	phase = slot < 0 ? POLL_IDLE : POLL_STATUS;
}

static void
start_download(void)
{
	if (MakePGDirectory(TEMP_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", TEMP_DIR)));
	snprintf(results_file, sizeof(results_file), "%s/%sclaude_batch_%u_%lld", TEMP_DIR,
			 PG_TEMP_FILE_PREFIX, MyDatabaseId, (long long) current);
	slot = claude_request_download(psprintf("%s/%s/results", CLAUDE_BATCHES_PATH, current_id),
								   results_file);
	phase = slot < 0 ? POLL_IDLE : POLL_RESULTS;
}

/* The next batch due for a look, marked as polled now. */
static void
start_next(const ClaudeBatchTables *t)
{
	bool		isnull;
	bool		ended;

	claude_spi_run(psprintf("UPDATE %s SET polled_at = now() WHERE local_id = "
							"(SELECT local_id FROM %s WHERE id IS NOT NULL AND results_at IS NULL "
							"AND status <> 'failed' "
							"AND (polled_at IS NULL OR polled_at <= now() - $1 * interval '1 second') "
							"ORDER BY polled_at NULLS FIRST, local_id LIMIT 1) "
							"RETURNING local_id, id, status = 'ended'", t->batches, t->batches),
				   1, (Oid[]) {INT4OID}, (Datum[]) {Int32GetDatum(claude_batch_poll_interval)},
				   SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return;
	current = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	strlcpy(current_id, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
			sizeof(current_id));
	ended = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (ended)
		start_download();		/* its results were not all written yet */
	else
		start_status();
}

/* The reply of the request in flight; false (recorded) if it failed. */
static bool
take_reply(const ClaudeBatchTables *t, char **reply)
{
	ClaudeResult result;
	ClaudeFailure failure;

	*reply = claude_request_collect(slot, &result);
	slot = -1;
	phase = POLL_IDLE;
	if (!claude_result_failed(&result, *reply, &failure))
		return true;
	/* 404: the batch, or its results, are gone for good */
	claude_batch_record_error(t, current, failure.message, result.http_status == 404);
	return false;
}

static void
status_done(const ClaudeBatchTables *t)
{
	char	   *reply;
	bool		isnull;

	if (!take_reply(t, &reply))
		return;
	claude_batch_record_state(t, current, reply);
	claude_spi_run(psprintf("SELECT status = 'ended' FROM %s WHERE local_id = %lld",
							t->batches, (long long) current), 0, NULL, NULL, SPI_OK_SELECT);
	/* the row may have been deleted meanwhile */
	if (SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		start_download();
}

static void
results_done(const ClaudeBatchTables *t)
{
	char	   *reply;

	if (!take_reply(t, &reply))
	{
		(void) unlink(results_file);
		return;
	}
	results_offset = 0;
	phase = POLL_APPLY;
}

/* One line of the results into a StringInfo; false at the end. */
static bool
read_line(FILE *f, StringInfo line)
{
	char		buf[65536];

	resetStringInfo(line);
	while (fgets(buf, sizeof(buf), f) != NULL)
	{
		appendStringInfoString(line, buf);
		if (line->len > 0 && line->data[line->len - 1] == '\n')
			return true;
	}
	if (ferror(f))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read file \"%s\": %m", results_file)));
	return line->len > 0;
}

static void
set_item(const ClaudeBatchTables *t, const char *custom_id, const char *status,
		 const char *error)
{
	claude_spi_run(psprintf("UPDATE %s SET status = $3, error = $4 WHERE batch = $1 AND custom_id = $2",
							t->items),
				   4, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID},
				   (Datum[]) {Int64GetDatum(current), CStringGetTextDatum(custom_id),
		CStringGetTextDatum(status), CStringGetTextDatum(claude_redact(error ? error : "", 0))},
				   SPI_OK_UPDATE);
}

/* What write_row writes, and why it wrote nothing. */
typedef struct RowWrite
{
	Target	   *target;
	const char *pk;
	text	   *completion;
	char	   *why;
} RowWrite;

static void
write_row_body(void *arg)
{
	RowWrite   *w = arg;

	if (claude_update_by_pk(w->target->relid, w->target->column, w->pk, w->completion,
							w->target->role, NULL, NULL) <= 0)
		w->why = psprintf("no row was written: the row with key %s is gone, or row-level security hides it from role %s",
						  w->pk, GetUserNameFromId(w->target->role, true));
}

/*
 * Write a completion to its row as the batch's submitter, restricted: its
 * privileges, row security and the table's own code apply as to its own
 * UPDATE.  In a subtransaction of its own, so that a refused write leaves
 * the paid reply in the cache and the item; returns why nothing was
 * written, or NULL.
 */
static char *
write_row(Target *target, const char *pk, text *completion)
{
	RowWrite	w = {target, pk, completion, NULL};
	ErrorData  *edata = claude_subxact(write_row_body, &w);

	return edata ? psprintf("not written: %s", edata->message) : w.why;
}

/*
 * A succeeded result: the cache, the row, and the item with its cost.  A
 * row that could not be written keeps its item 'succeeded' (it was paid)
 * with the reason in error: a rerun of claude_enrich fills it from the
 * cache.
 */
static void
apply_message(const ClaudeBatchTables *t, Target *target, const char *custom_id,
			  const char *pk, const char *message, const char *request, Datum key,
			  bool key_null)
{
	text	   *completion = claude_complete_text(message);
	char	   *not_written;

	if (completion == NULL)
	{
		set_item(t, custom_id, "errored", "the Claude API sent a result that is not a Messages response");
		return;
	}
	if (target->cache && !key_null)
	{
		bytea	   *k = DatumGetByteaPP(key);

		if (VARSIZE_ANY_EXHDR(k) == CLAUDE_CACHE_KEY_LEN)
			claude_cache_insert(t->cache, (uint8 *) VARDATA_ANY(k), request, message,
								claude_cache_ttl);
	}
	not_written = write_row(target, pk, completion);
	if (claude_spi_exec(psprintf("UPDATE %s SET status = 'succeeded', error = $4, "
							"input_tokens = (m OPERATOR(pg_catalog.->) 'usage' OPERATOR(pg_catalog.->>) 'input_tokens')::pg_catalog.int4, "
							"output_tokens = (m OPERATOR(pg_catalog.->) 'usage' OPERATOR(pg_catalog.->>) 'output_tokens')::pg_catalog.int4, "
							"cost_usd = %s.claude_cost_usd(m OPERATOR(pg_catalog.->>) 'model', m OPERATOR(pg_catalog.->) 'usage', true) "
							"FROM (SELECT $3::pg_catalog.jsonb AS m) s "
							"WHERE batch OPERATOR(pg_catalog.=) $1 AND custom_id OPERATOR(pg_catalog.=) $2",
							t->items, t->schema),
							  4, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID},
							  (Datum[]) {Int64GetDatum(current), CStringGetTextDatum(custom_id),
			CStringGetTextDatum(message),
			not_written ? CStringGetTextDatum(claude_redact(not_written, 0)) : (Datum) 0},
							  not_written ? NULL : "   n") != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record a batch result");
	if (not_written == NULL)
		target->written++;
	{
		ClaudeUsage u;
		double		price_in;
		double		price_out;

		if (claude_reply_usage(message, strlen(message), &u))
		{
			claude_price_of(request, strlen(request), &price_in, &price_out);
			claude_usage_add(target->role, &u, claude_usage_cost(&u, price_in, price_out, true));
		}
	}
}

/* One result line, and what is known of it should it fail. */
typedef struct Line
{
	const ClaudeBatchTables *t;
	Target	   *target;
	const char *text;
	char	   *custom_id;		/* once known */
} Line;

static void
apply_line_body(void *arg)
{
	Line	   *l = arg;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		key_null;
	Datum		key;
	char	   *type;

	if (SPI_execute_plan(l->target->lookup,
						 (Datum[]) {CStringGetTextDatum(l->text), Int64GetDatum(current)},
						 NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read claude_batch_items");
	if (SPI_processed != 1)
	{
		elog(WARNING, "claude: Message Batch %s has a result for a request it does not know",
			 current_id);
		return;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	l->custom_id = SPI_getvalue(tup, desc, 1);
	type = SPI_getvalue(tup, desc, 4);
	key = SPI_getbinval(tup, desc, 8, &key_null);
	if (!key_null)
		key = PointerGetDatum(PG_DETOAST_DATUM_COPY(key));
	if (strcmp(SPI_getvalue(tup, desc, 3), "pending") != 0)
		 /* written before a restart */ ;
	else if (type != NULL && strcmp(type, "succeeded") == 0)
		apply_message(l->t, l->target, l->custom_id, SPI_getvalue(tup, desc, 2),
					  SPI_getvalue(tup, desc, 5), SPI_getvalue(tup, desc, 7),
					  key, key_null);
	else if (type != NULL &&
			 (strcmp(type, "errored") == 0 || strcmp(type, "canceled") == 0 ||
			  strcmp(type, "expired") == 0))
		set_item(l->t, l->custom_id, type, SPI_getvalue(tup, desc, 6));
	else
		set_item(l->t, l->custom_id, "errored",
				 psprintf("unknown result type \"%s\"", type ? type : ""));
}

/* One result line, in a subtransaction; a failure is the item's error. */
static void
apply_line(const ClaudeBatchTables *t, Target *target, const char *text)
{
	Line		l = {t, target, text, NULL};
	ErrorData  *edata = claude_subxact(apply_line_body, &l);

	if (edata == NULL)
		return;
	if (l.custom_id != NULL)
		set_item(t, l.custom_id, "errored", edata->message);
	else
		elog(WARNING, "claude: a result line of Message Batch %s could not be read: %s",
			 current_id, edata->message);
}

/* Every line written: totals, and the batch is done. */
static void
finish_batch(const ClaudeBatchTables *t)
{
	Datum		id = Int64GetDatum(current);
	Oid			type = INT8OID;

	claude_spi_run(psprintf("UPDATE %s SET status = 'errored', "
							"error = 'the batch results have no line for this request' "
							"WHERE batch = $1 AND status = 'pending'", t->items),
				   1, &type, &id, SPI_OK_UPDATE);
	claude_spi_run(psprintf("UPDATE %s b SET results_at = now(), input_tokens = s.i, "
							"output_tokens = s.o, cost_usd = s.c "
							"FROM (SELECT sum(input_tokens) AS i, sum(output_tokens) AS o, "
							"CASE WHEN bool_or(status = 'succeeded' AND cost_usd IS NULL) THEN NULL "
							"ELSE coalesce(sum(cost_usd), 0) END AS c "
							"FROM %s WHERE batch = $1) s WHERE b.local_id = $1",
							t->batches, t->items),
				   1, &type, &id, SPI_OK_UPDATE);
	(void) unlink(results_file);
	phase = POLL_IDLE;
}

/* Up to APPLY_LINES result lines, from where the last round stopped. */
static void
apply_some(const ClaudeBatchTables *t)
{
	Target		target;
	bool		isnull;
	FILE	   *f;
	StringInfoData line;
	int			n = 0;
	bool		more = true;

	claude_spi_run(psprintf("SELECT relation::oid, target_column::text, cache, submitted_by::oid FROM %s "
							"WHERE local_id = %lld", t->batches, (long long) current),
				   0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		/* deleted meanwhile */
		(void) unlink(results_file);
		phase = POLL_IDLE;
		return;
	}
	target.relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	target.column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	target.cache = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	target.role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	target.written = 0;
	target.lookup = SPI_prepare(psprintf("SELECT i.custom_id, i.pk::text, i.status, r->>'type', "
										 "(r->'message')::text, "
										 "coalesce((r->'error'->'error'->>'type') || ': ' || "
										 "(r->'error'->'error'->>'message'), r->'error'->>'type', r->>'type'), "
										 "i.request::text, i.cache_key "
										 "FROM (SELECT j->'result' AS r, j->>'custom_id' AS cid "
										 "FROM (SELECT $1::jsonb AS j) a) s "
										 "JOIN %s i ON i.batch = $2 AND i.custom_id = s.cid",
										 t->items),
								2, (Oid[]) {TEXTOID, INT8OID});
	if (target.lookup == NULL)
		elog(ERROR, "claude: could not prepare the result lookup");

	f = AllocateFile(results_file, PG_BINARY_R);
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", results_file)));
	if (fseeko(f, results_offset, SEEK_SET) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not seek in file \"%s\": %m", results_file)));
	initStringInfo(&line);
	pgstat_report_activity(STATE_RUNNING, "claude: writing Message Batch results back");
	while (n < APPLY_LINES && (more = read_line(f, &line)))
	{
		while (line.len > 0 && (line.data[line.len - 1] == '\n' || line.data[line.len - 1] == '\r'))
			line.data[--line.len] = '\0';
		if (line.len == 0)
			continue;
		apply_line(t, &target, line.data);
		n++;
	}
	results_offset = ftello(f);
	FreeFile(f);
	claude_spi_run(psprintf("UPDATE %s SET rows_written = rows_written + %d WHERE local_id = %lld",
							t->batches, target.written, (long long) current),
				   0, NULL, NULL, SPI_OK_UPDATE);
	if (!more)
		finish_batch(t);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * One step of the batch at hand, or a look for the next one due.  Returns
 * whether batches are left that are not finished.
 */
bool
claude_batch_poll_step(void)
{
	ClaudeBatchTables t;
	bool		more;

	claude_xact_begin();
	if (!find_tables(&t))
	{
		claude_xact_end();
		return false;
	}
	switch (phase)
	{
		case POLL_IDLE:
			fail_orphans(&t);
			start_next(&t);
			break;
		case POLL_STATUS:
			if (claude_slot_poll(slot))
				status_done(&t);
			break;
		case POLL_RESULTS:
			if (claude_slot_poll(slot))
				results_done(&t);
			break;
		case POLL_APPLY:
			apply_some(&t);
			break;
	}
	more = phase != POLL_IDLE;
	if (!more)
	{
		claude_spi_run(psprintf("SELECT 1 FROM %s WHERE results_at IS NULL AND status <> 'failed' LIMIT 1",
								t.batches), 0, NULL, NULL, SPI_OK_SELECT);
		more = SPI_processed > 0;
	}
	claude_xact_end();
	return more;
}

/* Whether the next step has work now, without waiting for a reply. */
bool
claude_batch_poll_busy(void)
{
	return phase == POLL_APPLY;
}

/* After an error: the request in flight went with the abort; start over. */
void
claude_batch_poll_reset(void)
{
	if (phase == POLL_RESULTS || phase == POLL_APPLY)
		(void) unlink(results_file);
	phase = POLL_IDLE;
	slot = -1;
}
