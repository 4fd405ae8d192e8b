/*
 * batch.c
 *		claude_enrich(mode => 'batch'): rows sent to the Message Batches API
 *		from the calling session; and claude_batch_cancel.  Caller: enrich.c.
 *
 * Rows are read as in online mode.  A row already answered in the cache is
 * filled at once; a row still waiting in an unfinished batch is skipped;
 * every other row becomes one request of a batch (custom_id -> primary key
 * in claude_batch_items), split whenever a batch would exceed
 * claude.batch_max_requests or claude.batch_max_size.
 *
 * A batch is paid for once the API accepts it, so its record is committed
 * before it is sent: a 'submitting' row in claude_batches with its items
 * (each with the MD5 of its row's prompt inputs, so that its result goes
 * only to a row that still holds them), and with it the batch's
 * reservation of its requests and estimated cost against the caller's
 * budget (client/budget.c), which its results settle.  The creation is
 * sent once, never again.  The reply's id is committed before anything
 * else of it is read.  An error reply, or a failure before the body went
 * out, deletes the record (nothing was created); a creation whose outcome
 * is unknown (a timeout or a cut after the body went out, a 200 without a
 * usable id) leaves it 'uncertain', saying what is known, its rows held
 * from reruns until an admin gives it its id or deletes it.  While it
 * submits, the session holds an advisory lock on the record, so the
 * database's worker can tell a submission whose session died from one
 * under way.  A record deleted (or claude_batches truncated) gives back what
 * its pending requests reserve.  Bookkeeping runs as the extension's owner: the caller needs
 * EXECUTE on claude_enrich, not rights on the tables.  The worker polls the
 * batches and writes results back (batch_poll.c).
 */
#include "postgres.h"

#include <math.h>

#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"

#include "pgstat.h"

#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "client/budget.h"
#include "client/cache.h"
#include "client/request.h"

#include "common/guc.h"
#include "common/money.h"
#include "common/secret.h"
#include "common/security.h"
#include "common/spi.h"
#include "client/batches.h"

#include "functions/enrich.h"
#include "shmem/dbqueue.h"

PG_FUNCTION_INFO_V1(claude_batch_cancel);
PG_FUNCTION_INFO_V1(claude_batches_forget);

/* field4 of our advisory locks, apart from pg_advisory_lock's 1 and 2 */
#define LOCKTAG_CLAUDE_SUBMIT 0x434D	/* a column whose rows are submitted */
#define ITEM_OVERHEAD	64		/* {"custom_id":"r…","params":…}, and "]}" */

typedef struct Submission
{
	Enrich	   *e;
	ClaudeBatchTables tables;
	Oid			owner;			/* of the extension */
	Oid			caller;
	ClaudeRoleSwitch as_owner;
	bool		cache;
	SPIPlanPtr	new_batch;
	SPIPlanPtr	new_item;
	char	  **waiting;		/* sorted keys of rows in unfinished batches */
	int			nwaiting;
	int64		local_id;		/* the batch being filled, 0 if none */
	int32		day;			/* the day it is filed under */
	UsageReserve est;			/* what its requests may spend */
	File		file;			/* its body (UTF-8), a temporary file */
	off_t		size;			/* bytes in the file */
	StringInfoData buf;			/* bytes not yet in the file */
	int			nitems;
	int64		submitted;
	int64		from_cache;
	int64		skipped;
	int			nbatches;
	StringInfoData ids;
} Submission;

static Oid
extension_owner(void)
{
	Oid			owner;

	if (!claude_extension_find(NULL, &owner))
		elog(ERROR, "claude: extension not found");
	return owner;
}

/* Bookkeeping runs as the extension's owner, rows of the table as the caller. */
static void
as_owner(Submission *s)
{
	claude_become(&s->as_owner, s->owner, false);
}

static void
as_caller(Submission *s)
{
	claude_unbecome(&s->as_owner);
}

static int
compare_keys(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Keys of the rows already waiting in unfinished batches of this column. */
static void
load_waiting(Submission *s)
{
	Enrich	   *e = s->e;

	as_owner(s);
	if (SPI_execute_with_args(psprintf("SELECT i.pk::text FROM %s i JOIN %s b ON b.local_id = i.batch "
									   "WHERE b.relation = $1 AND b.target_column = $2 "
									   "AND b.results_at IS NULL AND b.status <> 'failed' "
									   "AND i.status = 'pending' ORDER BY 1",
									   s->tables.items, s->tables.batches),
							  2, (Oid[]) {OIDOID, TEXTOID},
							  (Datum[]) {ObjectIdGetDatum(e->relid), CStringGetTextDatum(e->target)},
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "claude_enrich: could not read claude_batch_items");
	as_caller(s);
	s->nwaiting = (int) SPI_processed;
	s->waiting = palloc(Max(s->nwaiting, 1) * sizeof(char *));
	for (int i = 0; i < s->nwaiting; i++)
		s->waiting[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	/* sort in C: the collation's ORDER BY need not agree with strcmp */
	qsort(s->waiting, s->nwaiting, sizeof(char *), compare_keys);
	SPI_freetuptable(SPI_tuptable);
}

static void
prepare_plans(Submission *s)
{
	as_owner(s);
	s->new_batch = SPI_prepare(psprintf("INSERT INTO %s (relation, target_column, cache, submitted_by, inputs, "
										"reply_check) VALUES ($1, $2, $3, $4, $5, $6) RETURNING local_id, created_at",
										s->tables.batches),
							   6, (Oid[]) {REGCLASSOID, NAMEOID, BOOLOID, REGROLEOID, TEXTARRAYOID, JSONBOID});
	s->new_item = SPI_prepare(psprintf("INSERT INTO %s (batch, custom_id, pk, request, cache_key, "
									   "est_tokens, est_cost_usd, inputs_md5) "
									   "VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7, $8)",
									   s->tables.items),
							  8, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID, BYTEAOID, INT8OID, NUMERICOID, TEXTOID});
	as_caller(s);
	if (s->new_batch == NULL || s->new_item == NULL)
		elog(ERROR, "claude_enrich: could not prepare statements: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(s->new_batch);
	SPI_keepplan(s->new_item);
}

/*
 * The body of a batch being filled; at most one, closed (and deleted) when
 * the batch is sent, or by the next submission of the session after an
 * error.
 */
static File body_file = -1;

static void
close_body(void)
{
	if (body_file >= 0)
		FileClose(body_file);
	body_file = -1;
}

static void
flush_body(Submission *s)
{
	if (s->buf.len == 0)
		return;
	if (FileWrite(s->file, s->buf.data, s->buf.len, s->size, WAIT_EVENT_BUFFILE_WRITE) != s->buf.len)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", FilePathName(s->file))));
	s->size += s->buf.len;
	resetStringInfo(&s->buf);
}

/* Append UTF-8 bytes to the body of the batch. */
static void
append_body(Submission *s, const char *data, Size len)
{
	appendBinaryStringInfo(&s->buf, data, len);
	if (s->buf.len >= 65536)
		flush_body(s);
}

static void
start_batch(Submission *s)
{
	Datum		values[6];
	Datum	   *names = palloc(Max(s->e->tmpl->ncolumns, 1) * sizeof(Datum));
	bool		isnull;
	Jsonb	   *check = claude_reply_check_json(&s->e->check);

	for (int i = 0; i < s->e->tmpl->ncolumns; i++)
		names[i] = CStringGetTextDatum(s->e->tmpl->columns[i]);
	values[0] = ObjectIdGetDatum(s->e->relid);
	values[1] = CStringGetDatum(s->e->target);
	values[2] = BoolGetDatum(s->cache);
	values[3] = ObjectIdGetDatum(s->caller);
	values[4] = PointerGetDatum(construct_array(names, s->e->tmpl->ncolumns, TEXTOID, -1, false,
												TYPALIGN_INT));
	/* labels or a schema: the worker checks each result against it */
	values[5] = check ? JsonbPGetDatum(check) : (Datum) 0;
	as_owner(s);
	if (SPI_execute_plan(s->new_batch, values, check ? NULL : "     n", false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "claude_enrich: could not record a batch");
	as_caller(s);
	s->local_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											  1, &isnull));
	s->day = claude_usage_day_of(DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																   SPI_tuptable->tupdesc, 2, &isnull)));
	memset(&s->est, 0, sizeof(s->est));
	close_body();
	body_file = s->file = OpenTemporaryFile(true);
	s->size = 0;
	resetStringInfo(&s->buf);
	append_body(s, "{\"requests\":[", 13);
	s->nitems = 0;
}

typedef struct Post
{
	Submission *s;
	bool		rejected;		/* nothing was created: an error reply, or no body sent */
	char	   *reply;			/* a successful reply */
	ClaudeResult result;
	TimestampTz sent_at;
} Post;

/* The creation, sent once; raises unless the API accepted it. */
static void
post_batch(void *arg)
{
	Post	   *post = arg;
	Submission *s = post->s;
	ClaudeCall	call;
	ClaudeFailure failure;

	post->sent_at = GetCurrentTimestamp();
	post->rejected = true;		/* until it is queued */
	/* its body the file's bytes, UTF-8; sent once: not idempotent */
	claude_call_init(&call, CLAUDE_EP_BATCH_CREATE, NULL);
	call.input_file = FilePathName(s->file);
	call.body_len = (Size) s->size;
	call.wait_slot = true;
	(void) claude_call_start(&call);
	post->rejected = false;		/* from now on it may go out */
	claude_call_wait(&call);
	(void) claude_call_finish(&call, &failure);
	post->reply = call.reply;
	post->result = call.result;
	/* certain: an error reply, or a failure before the body went out */
	post->rejected = post->result.http_status >= 400 ||
		(post->result.http_status == 0 && !post->result.body_sent &&
		 post->result.transport != CLAUDE_TE_WORKER);
	claude_check_result(&post->result, post->reply);
}

/* The id of an accepted batch, committed before anything else of the reply. */
static void
record_created(void *arg)
{
	Post	   *post = arg;

	claude_batch_record_created(&post->s->tables, post->s->local_id, post->reply);
}

/*
 * A creation whose outcome is unknown: what is known of it, for whoever
 * resolves the record.
 */
static char *
uncertain(Post *post, const char *why)
{
	return psprintf("the batch may exist at the API: its creation (%d requests, %lld bytes, sent at %s%s%s) "
					"ended with \"%s\" after its body went out, and was not sent again; "
					"its rows are held until this record is given the batch's id or deleted",
					post->s->nitems, (long long) post->s->size, timestamptz_to_str(post->sent_at),
					post->result.request_id[0] ? ", request-id " : "", post->result.request_id, why);
}

/*
 * POST the batch being filled.  Returns normally once the API accepted it
 * and its id is committed; otherwise raises, having deleted the record
 * (nothing was created) or marked it uncertain (outcome unknown).
 */
static void
send_batch(Submission *s)
{
	LOCKTAG		tag;
	Post		post = {s, false};
	ErrorData  *edata;

	/* all of it must fit the budget, with what is reserved already */
	s->est.requests = s->nitems;
	claude_budget_reserve_batch(s->caller, s->day, &s->est);
	append_body(s, "]}", 2);
	flush_body(s);
	as_owner(s);
	claude_spi_run(psprintf("UPDATE %s SET requests = $2 WHERE local_id = $1", s->tables.batches),
				   2, (Oid[]) {INT8OID, INT4OID},
				   (Datum[]) {Int64GetDatum(s->local_id), Int32GetDatum(s->nitems)},
				   SPI_OK_UPDATE);
	as_caller(s);
	claude_batch_lock_tag(&tag, s->local_id);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	SPI_commit();

	/* the commit began a new transaction: the subtransaction is in it */
	edata = claude_subxact(post_batch, &post);
	close_body();

	as_owner(s);
	if (edata == NULL)
		edata = claude_subxact(record_created, &post);
	if (edata == NULL)
	{
		if (SPI_execute(psprintf("SELECT id FROM %s WHERE local_id = %lld", s->tables.batches,
								 (long long) s->local_id), false, 1) != SPI_OK_SELECT)
			elog(ERROR, "claude_enrich: could not read claude_batches");
		appendStringInfo(&s->ids, "%s%s", s->nbatches ? ", " : "",
						 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		s->nbatches++;
		s->submitted += s->nitems;
	}
	else if (post.rejected)
		claude_spi_run(psprintf("DELETE FROM %s WHERE local_id = %lld", s->tables.batches,
								(long long) s->local_id), 0, NULL, NULL, SPI_OK_DELETE);
	else
		claude_spi_run(psprintf("UPDATE %s SET status = 'uncertain', error = $2 WHERE local_id = $1",
								s->tables.batches),
					   2, (Oid[]) {INT8OID, TEXTOID},
					   (Datum[]) {Int64GetDatum(s->local_id),
		CStringGetTextDatum(claude_redact(uncertain(&post, edata->message), 0))}, SPI_OK_UPDATE);
	as_caller(s);
	SPI_commit();
	LockRelease(&tag, ExclusiveLock, true);
	s->local_id = 0;

	if (edata != NULL)
	{
		if (s->nbatches > 0)
			ereport(NOTICE,
					(errmsg("claude_enrich: %lld rows were submitted before the error, in %s",
							(long long) s->submitted, s->ids.data)));
		ReThrowError(edata);
	}
}

static bool
waiting_in_batch(Submission *s, const char *pkjson)
{
	return s->nwaiting > 0 &&
		bsearch(&pkjson, s->waiting, s->nwaiting, sizeof(char *), compare_keys) != NULL;
}

static void
add_row(Submission *s, EnrichRow *row)
{
	Enrich	   *e = s->e;
	ClaudeCall	call;
	const char *body;
	Size		len;
	Datum		values[8];
	bool		nulls[8] = {false, false, false, false, false, false, false, false};
	ClaudeUsage est = {0};
	int64		cost;
	char		custom_id[16];
	char		head[64];
	bytea	   *key;
	char	   *utf8;
	Size		utf8_len;

	if (waiting_in_batch(s, row->pkjson))
	{
		s->skipped++;
		return;
	}
	claude_enrich_call(e, row, &call);
	if (claude_call_lookup(&call))
	{
		/* a cached reply that does not fit is reported and the row skipped */
		text	   *value = claude_jsonb_reply_text(call.hit);
		bool		broken;
		char	   *why = e->check.schema == NULL ? NULL :
			claude_structured_value(call.json, &e->check, call.hit, &value, &broken);

		why = why ? why : claude_enrich_write(e, row, value);

		e->cached++;
		e->failed += why != NULL;
		if (why != NULL)
			ereport(NOTICE,
					(errmsg("claude_enrich: row %s not filled from the cache: %s", row->key, why)));
		else
			s->from_cache++;
		return;
	}

	body = claude_call_body(&call);
	len = call.body_len;
	utf8 = pg_server_to_any(body, len, PG_UTF8);
	utf8_len = utf8 == body ? len : strlen(utf8);
	if (s->local_id != 0 &&
		(s->nitems >= claude_batch_max_requests ||
		 s->size + s->buf.len + utf8_len + ITEM_OVERHEAD > (Size) claude_batch_max_size))
		send_batch(s);
	if (s->local_id == 0)
		start_batch(s);

	snprintf(custom_id, sizeof(custom_id), "r%d", ++s->nitems);
	snprintf(head, sizeof(head), "%s{\"custom_id\":\"%s\",\"params\":",
			 s->nitems > 1 ? "," : "", custom_id);
	append_body(s, head, strlen(head));
	append_body(s, utf8, utf8_len);
	append_body(s, "}", 1);

	/* what it may spend: max_tokens of output, input as the call path guesses it */
	est.input = ceil(utf8_len / 4.0);
	est.output = call.max_tokens;
	cost = Max(claude_cost_nanos(call.model, &est, true), 0);
	values[5] = Int64GetDatum((int64) (est.input + est.output));
	values[6] = claude_nanos_numeric(cost);
	s->est.tokens += DatumGetInt64(values[5]);
	s->est.cost = claude_nanos_add(s->est.cost, cost);

	values[0] = Int64GetDatum(s->local_id);
	values[1] = CStringGetTextDatum(custom_id);
	values[2] = CStringGetTextDatum(row->pkjson);
	values[3] = PointerGetDatum(cstring_to_text_with_len(body, len));
	values[7] = CStringGetTextDatum(row->inputs_md5);
	if (call.cached.enabled)
	{
		key = palloc(VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
		SET_VARSIZE(key, VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
		memcpy(VARDATA(key), call.cached.key, CLAUDE_CACHE_KEY_LEN);
		values[4] = PointerGetDatum(key);
	}
	else
		nulls[4] = true;
	as_owner(s);
	if (SPI_execute_plan(s->new_item, values, (char[]) {' ', ' ', ' ', ' ', nulls[4] ? 'n' : ' ', ' ', ' ', ' '},
						 false, 0) != SPI_OK_INSERT)
		elog(ERROR, "claude_enrich: could not record a batch request");
	as_caller(s);
}

/* claude_enrich(mode => 'batch'), in a non-atomic CALL after prepare(). */
void
claude_enrich_batch(Enrich *e, FunctionCallInfo fcinfo)
{
	Submission	s;
	LOCKTAG		tag;
	MemoryContext tmp = AllocSetContextCreate(e->cxt, "claude_enrich batch rows",
											  ALLOCSET_DEFAULT_SIZES);

	memset(&s, 0, sizeof(s));
	s.e = e;
	s.cache = e->proto.cache != CLAUDE_CACHE_OFF;
	s.caller = e->proto.payer;	/* who pays: the calls its rows would be */
	if (!claude_batch_tables(claude_extension_schema(fcinfo), &s.tables))
		elog(ERROR, "claude_enrich: claude_batches is missing");
	s.owner = extension_owner();
	initStringInfo(&s.buf);
	initStringInfo(&s.ids);
	close_body();				/* left by an earlier submission that failed */
	prepare_plans(&s);

	/*
	 * One submission per column at a time, across commits: a second one
	 * would not see the first one's rows as waiting yet.
	 */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, e->relid,
						 hash_bytes((const unsigned char *) e->target, strlen(e->target)),
						 LOCKTAG_CLAUDE_SUBMIT);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("another session is submitting Message Batches for column \"%s\" of %s",
						e->target, e->relname),
				 errhint("Wait for it to return, then CALL again: rows it submitted are skipped.")));
	PG_TRY();
	{
		load_waiting(&s);
		while (!e->exhausted)
		{
			MemoryContext old = MemoryContextSwitchTo(tmp);

			claude_enrich_read_rows(e);
			for (int i = 0; i < e->npending; i++)
			{
				add_row(&s, e->pending[i]);
				claude_enrich_free_row(e->pending[i]);
			}
			e->npending = 0;
			MemoryContextSwitchTo(old);
			MemoryContextReset(tmp);
			CHECK_FOR_INTERRUPTS();
		}
		if (s.local_id != 0)
			send_batch(&s);
		else
			SPI_commit();		/* the rows filled from the cache */
	}
	PG_FINALLY();
	{
		LockRelease(&tag, ExclusiveLock, true);
	}
	PG_END_TRY();
	e->done = s.from_cache;		/* reported; tokens come with the results */
	e->requests = s.submitted;

	if (s.skipped > 0)
		ereport(NOTICE,
				(errmsg("claude_enrich: %lld rows of %s skipped: they wait in Message Batches that have not ended",
						(long long) s.skipped, e->relname)));
	if (s.nbatches == 0)
		ereport(NOTICE,
				(errmsg("claude_enrich: no Message Batch needed for %s, %lld rows filled from the cache",
						e->relname, (long long) s.from_cache)));
	else
	{
		ereport(NOTICE,
				(errmsg("claude_enrich: %lld rows of %s submitted in %d Message Batch%s: %s; %lld rows filled from the cache",
						(long long) s.submitted, e->relname, s.nbatches,
						s.nbatches > 1 ? "es" : "", s.ids.data, (long long) s.from_cache),
				 errhint("The database's worker writes results back when a batch ends; see claude_batches and claude_progress.")));
		/* the worker polls the new batches */
		claude_jobs_kick(MyDatabaseId);
	}
}

/* claude_batch_cancel(batch_id): ask the API to stop a batch. */
Datum
claude_batch_cancel(PG_FUNCTION_ARGS)
{
	ClaudeBatchTables tables;
	char	   *id;
	int64		local_id;
	Oid			submitted_by;
	bool		isnull;
	char	   *reply;
	ClaudeCall	call;
	char	   *status;
	Oid			owner;
	ClaudeRoleSwitch as_owner;

	if (PG_ARGISNULL(0))
		claude_invalid_argument("batch_id must not be NULL");
	id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	claude_require_shared();
	if (!claude_batch_tables(claude_extension_schema(fcinfo), &tables))
		elog(ERROR, "claude_batch_cancel: claude_batches is missing");

	SPI_connect();
	owner = extension_owner();
	claude_become(&as_owner, owner, false);
	if (SPI_execute_with_args(psprintf("SELECT local_id, submitted_by FROM %s "
									   "WHERE id OPERATOR(pg_catalog.=) $1", tables.batches),
							  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(id)},
							  NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "claude_batch_cancel: could not read claude_batches");
	claude_unbecome(&as_owner);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("Message Batch \"%s\" is not in claude_batches", id)));
	local_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	submitted_by = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (!has_privs_of_role(GetUserId(), submitted_by))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to cancel Message Batch \"%s\"", id),
				 errdetail("Only roles with the privileges of its submitter %s may cancel it.",
						   GetUserNameFromId(submitted_by, false))));

	if (!claude_batch_id_valid(id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a Message Batch id", id)));
	claude_call_init(&call, CLAUDE_EP_BATCH_CANCEL, id);
	reply = claude_call_run(&call);
	claude_become(&as_owner, owner, false);
	claude_batch_record_state(&tables, local_id, reply);
	/* poll it again soon: a canceled batch ends quickly */
	claude_spi_run(psprintf("UPDATE %s SET polled_at = NULL WHERE local_id = %lld RETURNING status",
							tables.batches, (long long) local_id),
				   0, NULL, NULL, SPI_OK_UPDATE_RETURNING);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	claude_unbecome(&as_owner);
	SPI_finish();
	claude_jobs_kick(MyDatabaseId);
	PG_RETURN_TEXT_P(cstring_to_text(status));
}

/*
 * BEFORE DELETE on claude_batches, each row, and BEFORE TRUNCATE: what the
 * requests still pending in the records going reserve goes back to their
 * submitters once that commits.  Whoever may delete them: they are read
 * as the extension's owner.
 */
Datum
claude_batches_forget(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ClaudeBatchTables tables;
	ClaudeRoleSwitch as_owner;
	int64		local_id = 0;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "claude_batches_forget: not called as a trigger");
	if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
		local_id = DatumGetInt64(heap_getattr(td->tg_trigtuple,
											  SPI_fnumber(RelationGetDescr(td->tg_relation), "local_id"),
											  RelationGetDescr(td->tg_relation), &isnull));
	if (!claude_batch_tables(RelationGetNamespace(td->tg_relation), &tables))
		elog(ERROR, "claude_batches_forget: claude_batches is missing");
	SPI_connect();
	claude_become(&as_owner, extension_owner(), false);
	claude_batch_release_pending(&tables, local_id);
	claude_unbecome(&as_owner);
	SPI_finish();
	return TRIGGER_FIRED_FOR_ROW(td->tg_event) ? PointerGetDatum(td->tg_trigtuple) : PointerGetDatum(NULL);
}
