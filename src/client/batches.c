/*
 * batches.c
 *		The claude_batches and claude_batch_items tables, as both sides of a
 *		Message Batch see them: submission (functions/batch.c) and the
 *		database worker's polling (dbworker/batch_poll.c).
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "client/batches.h"
#include "client/reserve.h"
#include "common/errors.h"
#include "common/json.h"
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
 * The API path of a batch and suffix ("" or "/results"...), or NULL if id
 * is not of the form the API gives its ids: a stored id is never a path
 * of its own ("../..", another endpoint).
 */
char *
claude_batch_path(const char *id, const char *suffix)
{
	static const char prefix[] = "msgbatch_";
	size_t		n = strlen(id);

	if (n <= sizeof(prefix) - 1 || n > 100 || strncmp(id, prefix, sizeof(prefix) - 1) != 0 ||
		strspn(id + sizeof(prefix) - 1,
			   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
		n - (sizeof(prefix) - 1))
		return NULL;
	return psprintf("%s/%s%s", CLAUDE_BATCHES_PATH, id, suffix);
}

void
claude_batch_lock_tag(LOCKTAG *tag, int64 local_id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) ((uint64) local_id >> 32),
						 (uint32) local_id, LOCKTAG_CLAUDE_BATCH);
}

/* The API's view of a batch (a MessageBatch object, UTF-8) into its row. */
void
claude_batch_record_state(const ClaudeBatchTables *t, int64 local_id,
						  const char *batch_json)
{
	char	   *server = claude_utf8_to_server(batch_json, strlen(batch_json));

	if (server == NULL)
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_BAD_RESPONSE),
				 errmsg("the Claude API sent a Message Batch the database encoding cannot hold")));
	claude_spi_run(psprintf("UPDATE %s SET id = coalesce(id, r->>'id'), "
							"status = r->>'processing_status', "
							"processing = (r->'request_counts'->>'processing')::int, "
							"succeeded = (r->'request_counts'->>'succeeded')::int, "
							"errored = (r->'request_counts'->>'errored')::int, "
							"canceled = (r->'request_counts'->>'canceled')::int, "
							"expired = (r->'request_counts'->>'expired')::int, "
							"created_at = coalesce((r->>'created_at')::timestamptz, created_at), "
							"ended_at = (r->>'ended_at')::timestamptz, "
							"expires_at = (r->>'expires_at')::timestamptz, "
							"polled_at = now(), error = NULL "
							"FROM (SELECT $2::jsonb AS r) s WHERE local_id = $1", t->batches),
				   2, (Oid[]) {INT8OID, TEXTOID},
				   (Datum[]) {Int64GetDatum(local_id), CStringGetTextDatum(server)},
				   SPI_OK_UPDATE);
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
							"pg_catalog.sum(i.est_cost_usd)::pg_catalog.float8 "
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
		r.cost = claude_spi_float(tup, rows->tupdesc, 5);
		claude_reserve_settle(DatumGetObjectId(SPI_getbinval(tup, rows->tupdesc, 1, &isnull)),
							  claude_usage_day_of(DatumGetTimestampTz(SPI_getbinval(tup, rows->tupdesc, 2,
																					&isnull))),
							  &r, NULL);
	}
}
