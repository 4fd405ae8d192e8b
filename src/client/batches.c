/*
 * batches.c
 *		The claude_batches and claude_batch_items tables, as both sides of a
 *		Message Batch see them: submission (functions/batch.c) and the
 *		database worker's polling (dbworker/batch_poll.c).
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "client/batches.h"
#include "client/reserve.h"
#include "common/errors.h"
#include "common/json.h"
#include "common/money.h"
#include "common/spi.h"

/* field4 of our advisory locks, apart from pg_advisory_lock's 1 and 2 */
#define LOCKTAG_CLAUDE_BATCH 0x434C		/* a batch being submitted */

/* The qualified names of the tables in schema nsp; false if they are gone. */
bool
claude_batch_tables(Oid nsp, ClaudeBatchTables *t)
{
	char	   *name = get_namespace_name(nsp);

	if (name == NULL || !OidIsValid(get_relname_relid("claude_batches", nsp)))
		return false;
	t->nsp = nsp;
	t->schema = pstrdup(quote_identifier(name));
	t->batches = quote_qualified_identifier(name, "claude_batches");
	t->items = quote_qualified_identifier(name, "claude_batch_items");
	t->cache = quote_qualified_identifier(name, "claude_cache");
	return true;
}

/*
 * Whether id is of the form the API gives its batch ids: a stored id,
 * which goes into an endpoint's path, is never a path of its own ("../..",
 * another endpoint).
 */
bool
claude_batch_id_valid(const char *id)
{
	static const char prefix[] = "msgbatch_";
	size_t		n = strlen(id);

	if (n <= sizeof(prefix) - 1 || n > 100 || strncmp(id, prefix, sizeof(prefix) - 1) != 0 ||
		strspn(id + sizeof(prefix) - 1,
			   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
		n - (sizeof(prefix) - 1))
		return false;
	return true;
}

void
claude_batch_lock_tag(LOCKTAG *tag, int64 local_id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) ((uint64) local_id >> 32),
						 (uint32) local_id, LOCKTAG_CLAUDE_BATCH);
}

/* A member of a MessageBatch object that is a string without escapes, or NULL. */
static char *
member_string(const char *json, const char *key)
{
	Size		n;
	const char *v = claude_json_member(json, strlen(json), key, &n);

	return v ? claude_json_plain_string(v, n) : NULL;
}

/*
 * A count of request_counts as a whole number (NULL when absent or not
 * one); the UPDATE clamps it to 0..requests, whatever the server says.
 */
static Datum
member_count(const char *counts, const char *key, bool *isnull)
{
	Size		n;
	const char *v = counts ? claude_json_member(counts, strlen(counts), key, &n) : NULL;
	char		buf[64];
	char	   *end;
	double		d;

	*isnull = true;
	if (v == NULL || n == 0 || n >= sizeof(buf) || !(*v == '-' || isdigit((unsigned char) *v)))
		return (Datum) 0;
	memcpy(buf, v, n);
	buf[n] = '\0';
	d = strtod(buf, &end);
	if (*end != '\0' || !isfinite(d) || d != floor(d))
		return (Datum) 0;
	*isnull = false;
	return Float8GetDatum(d);
}

/* A count of the server's, NULL or within 0..requests, as SQL. */
static char *
clamped(const char *param)
{
	return psprintf("CASE WHEN %s IS NOT NULL THEN least(greatest(%s, 0), requests)::int END",
					param, param);
}

/*
 * A time of the API's (RFC 3339), or NULL when absent or not one: only
 * digits and the date's punctuation (no "infinity", "now" or "epoch"),
 * and an input error is the value's, never the caller's.
 */
static Datum
member_time(const char *json, const char *key, bool *isnull)
{
	char	   *s = member_string(json, key);
	Datum		result = (Datum) 0;

	*isnull = true;
	if (s == NULL || strlen(s) > 40 || strspn(s, "0123456789-:.TZtz+ ") != strlen(s))
		return (Datum) 0;
	*isnull = !claude_timestamptz_in(s, &result);
	return result;
}

/*
 * The API's view of a batch (a MessageBatch object, UTF-8) into its row,
 * read without the jsonb parser: whatever it holds, the row takes what it
 * can.  A processing_status outside the known ones is taken as in progress
 * (and noted in error), counts are clamped to the batch's requests, times
 * that are not times are left out.
 */
void
claude_batch_record_state(const ClaudeBatchTables *t, int64 local_id,
						  const char *batch_json)
{
	static const char *const count_names[] = {"processing", "succeeded", "errored", "canceled", "expired"};
	static const char *const time_names[] = {"created_at", "ended_at", "expires_at"};
	Datum		values[12];
	char		nulls[12];
	Size		n;
	const char *counts = NULL;
	char	   *status = NULL;
	char	   *id = NULL;
	char	   *note = NULL;

	memset(nulls, ' ', sizeof(nulls));
	if (claude_json_scan(batch_json, strlen(batch_json), NULL, NULL))
	{
		const char *c = claude_json_member(batch_json, strlen(batch_json), "request_counts", &n);

		counts = c && *c == '{' ? pnstrdup(c, n) : NULL;
		status = member_string(batch_json, "processing_status");
		id = member_string(batch_json, "id");
	}
	else
		batch_json = "{}";
	if (status == NULL || (strcmp(status, "in_progress") != 0 && strcmp(status, "canceling") != 0 &&
						   strcmp(status, "ended") != 0))
	{
		note = status && strlen(status) <= 32 && strspn(status, "abcdefghijklmnopqrstuvwxyz_") == strlen(status) ?
			psprintf("the API reports processing_status \"%s\", taken as in progress", status) :
			"the API reports no processing_status this extension knows, taken as in progress";
		status = NULL;
	}
	values[0] = Int64GetDatum(local_id);
	values[1] = id && claude_batch_id_valid(id) ? CStringGetTextDatum(id) : (Datum) 0;
	nulls[1] = values[1] ? ' ' : 'n';
	values[2] = status ? CStringGetTextDatum(status) : (Datum) 0;
	nulls[2] = status ? ' ' : 'n';
	for (int i = 0; i < lengthof(count_names); i++)
	{
		bool		isnull;

		values[3 + i] = member_count(counts, count_names[i], &isnull);
		nulls[3 + i] = isnull ? 'n' : ' ';
	}
	for (int i = 0; i < 3; i++)
	{
		bool		isnull;

		values[8 + i] = member_time(batch_json, time_names[i], &isnull);
		nulls[8 + i] = isnull ? 'n' : ' ';
	}
	values[11] = note ? CStringGetTextDatum(note) : (Datum) 0;
	nulls[11] = note ? ' ' : 'n';
	if (claude_spi_exec(psprintf("UPDATE %s SET id = coalesce(id, $2), "
								 "status = CASE WHEN $3 IS NOT NULL THEN $3 "
								 "WHEN status = 'ended' THEN status ELSE 'in_progress' END, "
								 "processing = %s, succeeded = %s, errored = %s, canceled = %s, expired = %s, "
								 "created_at = coalesce($9, created_at), ended_at = $10, expires_at = $11, "
								 "polled_at = now(), error = $12 WHERE local_id = $1", t->batches,
								 clamped("$4"), clamped("$5"), clamped("$6"), clamped("$7"), clamped("$8")),
						12, (Oid[]) {INT8OID, TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID,
						FLOAT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID},
						values, nulls) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record the state of a Message Batch");
}

typedef struct CreatedReply
{
	const ClaudeBatchTables *t;
	int64		local_id;
	const char *reply;
} CreatedReply;

static void
record_state_of(void *arg)
{
	CreatedReply *c = arg;

	claude_batch_record_state(c->t, c->local_id, c->reply);
}

/*
 * The reply of a batch's creation: its id goes into the record before
 * anything else, in a statement that cannot fail on what the server sent,
 * then what else it says.  Raises when the reply has no id this extension
 * can use (the batch may exist all the same).
 */
void
claude_batch_record_created(const ClaudeBatchTables *t, int64 local_id, const char *reply)
{
	char	   *id = reply && claude_json_scan(reply, strlen(reply), NULL, NULL) ?
		member_string(reply, "id") : NULL;
	ErrorData  *edata;
	CreatedReply state = {t, local_id, reply};

	if (id == NULL || !claude_batch_id_valid(id))
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the Claude API accepted the Message Batch without an id this extension can use")));
	claude_spi_run(psprintf("UPDATE %s SET id = $2, status = 'in_progress', polled_at = now() "
							"WHERE local_id = $1", t->batches),
				   2, (Oid[]) {INT8OID, TEXTOID},
				   (Datum[]) {Int64GetDatum(local_id), CStringGetTextDatum(id)}, SPI_OK_UPDATE);
	if ((edata = claude_subxact(record_state_of, &state)) != NULL)
		ereport(WARNING,
				(errmsg("claude: Message Batch %s is recorded, but not the rest of its state: %s",
						id, edata->message)));
}

/* A failed request about a batch; fatal ends it for good. */
void
claude_batch_record_error(const ClaudeBatchTables *t, int64 local_id,
						  const char *error, bool fatal)
{
	claude_spi_run(psprintf("UPDATE %s SET error = $2, polled_at = now(), "
							"status = CASE WHEN $3 THEN 'failed' ELSE status END "
							"WHERE local_id = $1", t->batches),
				   3, (Oid[]) {INT8OID, TEXTOID, BOOLOID},
				   (Datum[]) {Int64GetDatum(local_id), CStringGetTextDatum(error),
		BoolGetDatum(fatal)}, SPI_OK_UPDATE);
}

/*
 * The requests still pending in a batch (local_id > 0) or in every batch
 * (0) will have no result: what they reserve goes back to their
 * submitters once this transaction commits.  For a record about to be
 * deleted, or a batch whose results lack them.
 */
void
claude_batch_release_pending(const ClaudeBatchTables *t, int64 local_id)
{
	SPITupleTable *rows;
	uint64		n;

	claude_spi_run(psprintf("SELECT b.submitted_by::pg_catalog.oid, b.created_at, pg_catalog.count(*), "
							"pg_catalog.sum(i.est_tokens)::pg_catalog.int8, "
							CLAUDE_SQL_NANOS("pg_catalog.sum(i.est_cost_usd)") " "
							"FROM %s b JOIN %s i ON i.batch OPERATOR(pg_catalog.=) b.local_id "
							"WHERE i.status OPERATOR(pg_catalog.=) 'pending' "
							"AND ($1 OPERATOR(pg_catalog.=) 0 OR b.local_id OPERATOR(pg_catalog.=) $1) "
							"GROUP BY b.local_id",
							t->batches, t->items),
				   1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(local_id)}, SPI_OK_SELECT);
	rows = SPI_tuptable;
	n = SPI_processed;
	for (uint64 k = 0; k < n; k++)
	{
		HeapTuple	tup = rows->vals[k];
		bool		isnull;
		UsageReserve r;

		r.requests = DatumGetInt64(SPI_getbinval(tup, rows->tupdesc, 3, &isnull));
		r.tokens = DatumGetInt64(SPI_getbinval(tup, rows->tupdesc, 4, &isnull));
		r.cost = claude_spi_nanos(tup, rows->tupdesc, 5);
		claude_reserve_settle(DatumGetObjectId(SPI_getbinval(tup, rows->tupdesc, 1, &isnull)),
							  claude_usage_day_of(DatumGetTimestampTz(SPI_getbinval(tup, rows->tupdesc, 2,
																					&isnull))),
							  NULL, &r, NULL);
	}
}
