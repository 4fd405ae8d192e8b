/*
 * batch_poll.c
 *		Message Batches in the database's worker: poll, download, and the
 *		rounds of writing back.  Caller: dbworker.c, one step per round.
 *
 * One batch at a time, one step per round of the worker's loop, so trigger
 * jobs and cache writes go on meanwhile.  A batch not ended is polled every
 * claude.batch_poll_interval.  Once ended, its results (JSONL, possibly
 * hundreds of MB) are streamed by the HTTP worker into a temporary file,
 * then written back a chunk per round (batch_apply.c).  After a crash or
 * restart the worker downloads the results again; the items say what had
 * been written.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "common/file_perm.h"
#include "common/file_utils.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"

#include "client/batches.h"
#include "client/call.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/spi.h"
#include "dbworker/batch_apply.h"
#include "dbworker/batch_poll.h"
#include "shmem/slots.h"

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
	slot = claude_request_submit(CLAUDE_GET, claude_batch_path(current_id, ""),
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
	slot = claude_request_download(claude_batch_path(current_id, "/results"), results_file);
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
	if (claude_batch_path(current_id, "") == NULL)
	{
		claude_batch_record_error(t, current, "the batch id is not one the API gives", true);
		current = 0;
		return;
	}
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

/* Every line written: totals, and the batch is done. */
static void
finish_batch(const ClaudeBatchTables *t)
{
	Datum		id = Int64GetDatum(current);
	Oid			type = INT8OID;

	claude_batch_release_pending(t, current);
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
			switch (claude_batch_apply_some(&t, current, current_id, results_file,
											&results_offset))
			{
				case CLAUDE_APPLY_MORE:
					break;
				case CLAUDE_APPLY_ALL_READ:
					finish_batch(&t);
					break;
				case CLAUDE_APPLY_GONE:
					(void) unlink(results_file);
					phase = POLL_IDLE;
					break;
			}
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
