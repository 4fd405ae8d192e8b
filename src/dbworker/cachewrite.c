/*
 * cachewrite.c
 *		Writes to claude_cache, in the database's worker: paid replies the
 *		HTTP worker handed over, hits the sessions counted, and replies of
 *		Message Batches.  Callers: dbworker.c, batch_poll.c.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "dbworker/cachewrite.h"
#include "shmem/cachelead.h"
#include "common/spi.h"

/*
 * INSERT into a claude_cache table of the rows of source, a query whose
 * columns are a key, a request and a reply (both jsonb), to expire after
 * $4 seconds (0: never), replacing older entries of the same keys.  Each
 * key may come once.
 */
char *
claude_cache_upsert(const char *table, const char *source)
{
	return psprintf("INSERT INTO %s AS c (key, model, request, response, input_tokens, "
					"output_tokens, created_at, expires_at, hits) "
					"SELECT s.k, s.r->>'model', s.q, s.r, (s.r->'usage'->>'input_tokens')::int, "
					"(s.r->'usage'->>'output_tokens')::int, now(), "
					"CASE WHEN $4 > 0 THEN now() + $4 * interval '1 second' END, 0 "
					"FROM (%s) s(k, q, r) "
					"ON CONFLICT (key) DO UPDATE SET model = excluded.model, "
					"request = excluded.request, response = excluded.response, "
					"input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
					"created_at = excluded.created_at, expires_at = excluded.expires_at",
					table, source);
}

/*
 * Store a reply in a claude_cache table (server encoding), replacing an
 * older entry of the same key.  ttl in seconds, 0: never expires.
 */
void
claude_cache_insert(const char *table, const uint8 *key, const char *request,
					const char *response, int ttl)
{
	Oid			types[4] = {BYTEAOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[4];
	bytea	   *k = palloc(VARHDRSZ + CLAUDE_CACHE_KEY_LEN);

	SET_VARSIZE(k, VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	memcpy(VARDATA(k), key, CLAUDE_CACHE_KEY_LEN);
	values[0] = PointerGetDatum(k);
	values[1] = CStringGetTextDatum(request);
	values[2] = CStringGetTextDatum(response);
	values[3] = Int32GetDatum(ttl);
	/* the fence: the reply is parsed once, not for each use */
	if (claude_spi_exec(claude_cache_upsert(table, "SELECT $1, $2::jsonb, $3::jsonb OFFSET 0"),
						4, types, values, NULL) != SPI_OK_INSERT)
		elog(ERROR, "claude: could not store a reply in %s", table);
}

static void
apply_write(ClaudeDbRecord *rec, const char *table)
{
	const char *request = (const char *) rec + MAXALIGN(sizeof(ClaudeDbRecord));
	const char *response = request + rec->request_len + 1;

	claude_cache_insert(table, rec->key,
						pg_any_to_server(request, rec->request_len, PG_UTF8),
						pg_any_to_server(response, rec->response_len, PG_UTF8),
						rec->ttl);
}

static void
apply_hits(ClaudeDbRecord *rec, const char *table)
{
	Oid			types[3] = {BYTEAOID, INT8OID, TIMESTAMPTZOID};
	Datum		values[3];
	bytea	   *key = palloc(VARHDRSZ + sizeof(rec->key));

	SET_VARSIZE(key, VARHDRSZ + sizeof(rec->key));
	memcpy(VARDATA(key), rec->key, sizeof(rec->key));
	values[0] = PointerGetDatum(key);
	values[1] = Int64GetDatum(rec->hits);
	values[2] = TimestampTzGetDatum(rec->at);
	if (SPI_execute_with_args(psprintf("UPDATE %s SET hits = hits + $2, "
									   "last_hit_at = greatest(last_hit_at, $3) "
									   "WHERE key = $1", table),
							  3, types, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not count cache hits in %s", table);
}

/* Apply a record of the cache's (a reply or hits), in its schema's table. */
void
claude_cache_apply(ClaudeDbRecord *rec)
{
	char	   *nspname = get_namespace_name(rec->nsp);
	char	   *table;

	if (nspname == NULL)
		return;					/* the extension was dropped since */
	table = quote_qualified_identifier(nspname, "claude_cache");
	if (rec->kind == DBREC_CACHE_WRITE)
		apply_write(rec, table);
	else
		apply_hits(rec, table);
}
