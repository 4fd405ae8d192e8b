/*
 * batch_poll.c
 *		Message Batches in the database's worker: poll, download, and the
 *		rounds of writing back.  Caller: dbworker.c, one step per round.
 *
 * A batch not ended is polled every claude.batch_poll_interval, one status
 * request at a time.  Once ended, its results (JSONL, possibly hundreds of
 * MB) are streamed by the HTTP worker into a temporary file, up to
 * MAX_DOWNLOADS batches at once, then written back a chunk per round
 * (batch_apply.c), one batch at a time; trigger jobs and cache writes go on
 * meanwhile, and a slow download holds back neither the polling of other
 * batches nor their write-back.
 *
 * A download is bounded: in size by claude.batch_max_results_size (by
 * default claude.max_reply_size for each request of the batch) and
 * temp_file_limit, and in time by a least rate (shmem/pack.h).  One that
 * fails, for any reason, is abandoned, its file removed, the reason
 * recorded and logged, and is tried again a poll interval later.  After a
 * crash or restart the worker downloads the results again; the items say
 * what had been written.
 *
 * Each batch's step runs in a subtransaction of its own: an error is that
 * batch's, recorded on it, and costs no other batch or job anything.  The
 * requests in flight survive any error (claude_slot_keep): whoever sent
 * one takes its result.
 */
#include "postgres.h"

#include <sys/stat.h>
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
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "client/batches.h"
#include "client/request.h"
#include "common/errors.h"
#include "common/guc.h"
#include "common/spi.h"
#include "dbworker/batch_apply.h"
#include "dbworker/batch_poll.h"
#include "shmem/slots.h"

#define TEMP_DIR		"base/" PG_TEMP_FILES_DIR
#define MAX_DOWNLOADS	4

/* A batch whose results are being downloaded, or are in their file. */
typedef struct Download
{
	int64		batch;			/* local_id; 0: a free entry */
	char		id[128];
	ClaudeCall	call;			/* call.slot -1 once the results are in the file */
	Size		limit;			/* bytes */
	const char *limit_name;		/* the setting that sets it */
	char		file[MAXPGPATH];
} Download;

static Download downloads[MAX_DOWNLOADS];
static Download *applying = NULL;	/* the one being written back */
static off_t apply_offset;

/* the status request under way */
static ClaudeCall status_call;
static int	status_slot = -1;
static int64 status_batch;
static char status_id[128];

/* What a step of one batch works on, for its subtransaction. */
typedef struct Step
{
	const ClaudeBatchTables *t;
	int64		batch;
	char	   *id;
	int			requests;
	bool		ended;
	Download   *d;
	ClaudeResult result;
	char	   *reply;
	char	   *why;			/* a request that failed: its reason */
	bool		fatal;			/* ... and the batch is gone for good */
	ClaudeApplyStep applied;
} Step;

static bool
find_tables(ClaudeBatchTables *t)
{
	Oid			nsp;

	return claude_extension_find(&nsp, NULL) && claude_batch_tables(nsp, t);
}

/* The entry of a batch, or (0) a free one; NULL if there is none. */
static Download *
download_of(int64 batch)
{
	for (int i = 0; i < MAX_DOWNLOADS; i++)
		if (downloads[i].batch == batch)
			return &downloads[i];
	return NULL;
}

static void
forget_download(Download *d)
{
	if (d->call.slot >= 0)
		claude_slot_abandon(d->call.slot);
	(void) unlink(d->file);
	if (applying == d)
		applying = NULL;
	memset(d, 0, sizeof(*d));
	d->call.slot = -1;
}

/*
 * A submitting session that died leaves its record 'submitting' with no
 * lock on it: the batch may or may not exist at the API.
 */
static void
orphans_uncertain(const ClaudeBatchTables *t)
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
		claude_spi_run(psprintf("UPDATE %s SET status = 'uncertain', error = 'the batch may exist at "
								"the API: the submitting session ended before the API answered; "
								"its rows are held until this record is given the batch''s id or deleted' "
								"WHERE local_id = %lld AND status = 'submitting'",
								t->batches, (long long) local_id), 0, NULL, NULL, SPI_OK_UPDATE);
		LockRelease(&tag, ExclusiveLock, false);
	}
}

/*
 * What a batch's results may take on disk: claude.batch_max_results_size,
 * by default claude.max_reply_size for each of its requests, and never
 * more than temp_file_limit.
 */
static Size
results_limit(int requests, const char **name)
{
	double		limit = claude_batch_max_results_size > 0 ?
		(double) claude_batch_max_results_size * 1024 * 1024 :
		(double) Max(requests, 1) * claude_max_reply_size;

	*name = claude_batch_max_results_size > 0 ? "claude.batch_max_results_size" :
		"claude.batch_max_results_size (0: claude.max_reply_size for each request)";
	if (temp_file_limit >= 0 && (double) temp_file_limit * 1024 < limit)
	{
		limit = (double) temp_file_limit * 1024;
		*name = "temp_file_limit";
	}
	return (Size) Max(Min(limit, (double) (SIZE_MAX / 2)), 1);
}

static void
start_download(Step *s)
{
	Download   *d = download_of(0);

	if (d == NULL)
		return;					/* full: it is picked again once there is room */
	if (MakePGDirectory(TEMP_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", TEMP_DIR)));
	snprintf(d->file, sizeof(d->file), "%s/%sclaude_batch_%u_%lld", TEMP_DIR,
			 PG_TEMP_FILE_PREFIX, MyDatabaseId, (long long) s->batch);
	d->limit = results_limit(s->requests, &d->limit_name);
	/* one attempt: the next poll tries again */
	claude_call_init(&d->call, CLAUDE_EP_BATCH_RESULTS, s->id);
	d->call.output_file = d->file;
	d->call.max_output = d->limit;
	d->call.max_retries = 0;
	if (claude_call_start(&d->call) != CLAUDE_CALL_SENT)
	{
		d->call.slot = -1;
		return;
	}
	claude_slot_keep(d->call.slot);
	d->batch = s->batch;
	strlcpy(d->id, s->id, sizeof(d->id));
}

/* Look at a batch picked as due: its results if it ended, else its state. */
static void
start_batch(void *arg)
{
	Step	   *s = arg;

	if (!claude_batch_id_valid(s->id))
	{
		claude_batch_record_error(s->t, s->batch, "the batch id is not one the API gives", true);
		return;
	}
	if (s->ended)
	{
		start_download(s);		/* its results were not all written yet */
		return;
	}
	/* no retries of its own: the next poll is one */
	claude_call_init(&status_call, CLAUDE_EP_BATCH, s->id);
	status_call.max_retries = 0;
	if (claude_call_start(&status_call) != CLAUDE_CALL_SENT)
		return;
	status_slot = status_call.slot;
	claude_slot_keep(status_slot);
	status_batch = s->batch;
	strlcpy(status_id, s->id, sizeof(status_id));
}

/*
 * A step of one batch in a subtransaction of its own: an error is
 * recorded on the batch (tried again a poll interval later) and logged.
 */
static void
batch_step(Step *s, void (*fn) (void *arg))
{
	ErrorData  *edata = claude_subxact(fn, s);

	if (edata == NULL)
		return;
	elog(LOG, "claude: Message Batch %s: %s", s->id ? s->id : "(no id)", edata->message);
	claude_batch_record_error(s->t, s->batch, edata->message, false);
}

/*
 * The next batch due for a look, marked as polled now, and looked at: not
 * one already at hand, nor an ended one while every download is taken.
 */
static void
start_next(const ClaudeBatchTables *t)
{
	Datum		busy[MAX_DOWNLOADS];
	int			nbusy = 0;
	bool		room = download_of(0) != NULL;
	Step		s;
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	for (int i = 0; i < MAX_DOWNLOADS; i++)
		if (downloads[i].batch != 0)
			busy[nbusy++] = Int64GetDatum(downloads[i].batch);
	claude_spi_run(psprintf("UPDATE %s SET polled_at = now() WHERE local_id = "
							"(SELECT local_id FROM %s WHERE id IS NOT NULL AND results_at IS NULL "
							"AND status NOT IN ('failed', 'uncertain') AND local_id <> ALL($2) "
							"AND (status <> 'ended' OR $3) "
							"AND (polled_at IS NULL OR polled_at <= now() - $1 * interval '1 second') "
							"ORDER BY polled_at NULLS FIRST, local_id LIMIT 1) "
							"RETURNING local_id, id, status = 'ended', requests", t->batches, t->batches),
				   3, (Oid[]) {INT4OID, INT8ARRAYOID, BOOLOID},
				   (Datum[]) {Int32GetDatum(claude_batch_poll_interval),
					   PointerGetDatum(construct_array(busy, nbusy, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
				   BoolGetDatum(room)}, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(&s, 0, sizeof(s));
	s.t = t;
	s.batch = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	s.id = SPI_getvalue(tup, desc, 2);
	s.ended = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	s.requests = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	batch_step(&s, start_batch);
}

/*
 * Whether a request of a batch failed, and why (s->why); a 404 says the
 * batch, or its results, are gone for good.
 */
static bool
request_failed(Step *s, const char *what)
{
	ClaudeFailure failure;

	if (!claude_result_failed(&s->result, s->reply, &failure))
		return false;
	s->why = psprintf("%s: %s", what, failure.message);
	s->fatal = s->result.http_status == 404;
	return true;
}

static void
record_failure(void *arg)
{
	Step	   *s = arg;

	elog(LOG, "claude: Message Batch %s: %s", s->id, s->why);
	claude_batch_record_error(s->t, s->batch, s->why, s->fatal);
}

static void
status_done(void *arg)
{
	Step	   *s = arg;

	claude_batch_record_state(s->t, s->batch, s->reply);
	claude_spi_run(psprintf("SELECT status = 'ended', requests FROM %s WHERE local_id = %lld",
							s->t->batches, (long long) s->batch), 0, NULL, NULL, SPI_OK_SELECT);
	/* the row may have been deleted meanwhile */
	if (SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool) {false})))
	{
		s->requests = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
												  &(bool) {false}));
		start_download(s);
	}
}

/* The status request, if it is over. */
static void
poll_status(const ClaudeBatchTables *t)
{
	Step		s;
	ClaudeFailure failure;

	if (status_slot < 0 || !claude_slot_poll(status_slot))
		return;
	memset(&s, 0, sizeof(s));
	s.t = t;
	s.batch = status_batch;
	s.id = status_id;
	(void) claude_call_finish(&status_call, &failure);
	s.reply = status_call.reply;
	s.result = status_call.result;
	status_slot = -1;
	batch_step(&s, request_failed(&s, "polling failed") ? record_failure : status_done);
}

/*
 * Every download that is over: its file is written back next or, failed,
 * it is abandoned (the reason recorded) and tried again later.
 */
static void
poll_downloads(const ClaudeBatchTables *t)
{
	for (int i = 0; i < MAX_DOWNLOADS; i++)
	{
		Download   *d = &downloads[i];
		Step		s;
		ClaudeFailure failure;
		struct stat st;

		if (d->batch == 0 || d->call.slot < 0 || !claude_slot_poll(d->call.slot))
			continue;
		memset(&s, 0, sizeof(s));
		s.t = t;
		s.batch = d->batch;
		s.id = pstrdup(d->id);
		(void) claude_call_finish(&d->call, &failure);
		s.reply = d->call.reply;
		s.result = d->call.result;
		/* cut at its limit (the worker stops writing just short of it): say which */
		if (s.result.transport == CLAUDE_TE_REPLY && stat(d->file, &st) == 0 &&
			(Size) st.st_size + 65536 >= d->limit)
		{
			s.why = psprintf("results download abandoned: the results are larger than %zu bytes, "
							 "the limit %s sets for this batch; raise it and they are downloaded again",
							 d->limit, d->limit_name);
			forget_download(d);
			batch_step(&s, record_failure);
		}
		else if (request_failed(&s, "results download abandoned"))
		{
			forget_download(d);
			batch_step(&s, record_failure);
		}
	}
}

/* Every line written: totals, and the batch is done. */
static void
finish_batch(const ClaudeBatchTables *t, int64 batch)
{
	Datum		id = Int64GetDatum(batch);
	Oid			type = INT8OID;

	claude_batch_release_pending(t, batch);
	claude_spi_run(psprintf("UPDATE %s SET status = 'errored', "
							"error = 'the batch results have no line for this request' "
							"WHERE batch = $1 AND status = 'pending'", t->items),
				   1, &type, &id, SPI_OK_UPDATE);
	claude_spi_run(psprintf("UPDATE %s b SET results_at = now(), input_tokens = s.i, "
							"output_tokens = s.o, cost_usd = s.c, error = NULL "
							"FROM (SELECT sum(input_tokens) AS i, sum(output_tokens) AS o, "
							"CASE WHEN bool_or(status = 'succeeded' AND cost_usd IS NULL) THEN NULL "
							"ELSE coalesce(sum(cost_usd), 0) END AS c "
							"FROM %s WHERE batch = $1) s WHERE b.local_id = $1",
							t->batches, t->items),
				   1, &type, &id, SPI_OK_UPDATE);
}

static void
apply_step(void *arg)
{
	Step	   *s = arg;

	s->applied = claude_batch_apply_some(s->t, s->batch, s->id, s->d->file, &apply_offset);
	if (s->applied == CLAUDE_APPLY_ALL_READ)
		finish_batch(s->t, s->batch);
}

/* A chunk of the batch being written back, or the next one ready. */
static void
apply_some(const ClaudeBatchTables *t)
{
	Step		s;

	if (applying == NULL)
	{
		for (int i = 0; i < MAX_DOWNLOADS && applying == NULL; i++)
			if (downloads[i].batch != 0 && downloads[i].call.slot < 0)
				applying = &downloads[i];
		apply_offset = 0;
		if (applying == NULL)
			return;
	}
	memset(&s, 0, sizeof(s));
	s.t = t;
	s.batch = applying->batch;
	s.id = applying->id;
	s.d = applying;
	s.applied = CLAUDE_APPLY_GONE;
	batch_step(&s, apply_step);
	/* done, gone, or failed: tried again from its start a poll interval later */
	if (s.applied != CLAUDE_APPLY_MORE)
		forget_download(s.d);
}

/*
 * One round: the requests that are over, a chunk written back, and a look
 * for the next batch due.  Returns whether batches are left that are not
 * finished.
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
	poll_status(&t);
	poll_downloads(&t);
	apply_some(&t);
	if (status_slot < 0)
	{
		orphans_uncertain(&t);
		start_next(&t);
	}
	more = status_slot >= 0;
	for (int i = 0; i < MAX_DOWNLOADS && !more; i++)
		more = downloads[i].batch != 0;
	if (!more)
	{
		claude_spi_run(psprintf("SELECT 1 FROM %s WHERE results_at IS NULL "
								"AND status NOT IN ('failed', 'uncertain') LIMIT 1",
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
	if (applying != NULL)
		return true;
	for (int i = 0; i < MAX_DOWNLOADS; i++)
		if (downloads[i].batch != 0 && downloads[i].call.slot < 0)
			return true;
	return false;
}

/*
 * After an error that aborted a whole round: the requests in flight go on,
 * but a chunk may have been rolled back after its offset moved on, so the
 * batch being written back starts again from its first line (lines
 * written are skipped).
 */
void
claude_batch_poll_aborted(void)
{
	apply_offset = 0;
}
