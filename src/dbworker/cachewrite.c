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

#include "common/json.h"
#include "common/spi.h"
#include "dbworker/cachewrite.h"
#include "shmem/cachelead.h"

static bytea *
key_datum(const uint8 *key)
{
	bytea	   *k = palloc(VARHDRSZ + CLAUDE_CACHE_KEY_LEN);

	SET_VARSIZE(k, VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	memcpy(VARDATA(k), key, CLAUDE_CACHE_KEY_LEN);
	return k;
}

/*
 * INSERT into a claude_cache table of the rows of source, a query whose
 * columns are a key, a request and a reply (both jsonb) and the reply's
 * input and output tokens (NULL: unknown, as the caller read its usage),
 * to expire after $4 seconds (0: never), replacing older entries of the
 * same keys.  Each key may come once.  Nothing in it reads what the server
 * sent: a reply is stored whatever its usage holds.
 */
char *
claude_cache_upsert(const char *table, const char *source)
{
	return psprintf("INSERT INTO %s AS c (key, model, request, response, input_tokens, "
					"output_tokens, created_at, expires_at, hits) "
					"SELECT s.k, s.r->>'model', s.q, s.r, s.i, s.o, now(), "
					"CASE WHEN $4 > 0 THEN now() + $4 * interval '1 second' END, 0 "
					"FROM (%s) s(k, q, r, i, o) "
					"ON CONFLICT (key) DO UPDATE SET model = excluded.model, "
					"request = excluded.request, response = excluded.response, "
					"input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
					"created_at = excluded.created_at, expires_at = excluded.expires_at",
					table, source);
}

/*
 * Store a reply (parsed, in the server's encoding) in a claude_cache table,
 * replacing an older entry of the same key, with its usage as read
 * (NULL: unknown).  ttl in seconds, 0: never expires.
 */
void
claude_cache_insert(const char *table, const uint8 *key, const char *request,
					Jsonb *response, const ClaudeUsage *usage, int ttl)
{
	Oid			types[6] = {BYTEAOID, TEXTOID, JSONBOID, INT4OID, INT4OID, INT4OID};
	Datum		values[6];

	values[0] = PointerGetDatum(key_datum(key));
	values[1] = CStringGetTextDatum(request);
	values[2] = JsonbPGetDatum(response);
	values[3] = Int32GetDatum(ttl);
	/* counts within CLAUDE_MAX_TOKENS, as claude_reply_usage read them */
	values[4] = usage ? Int32GetDatum((int32) usage->input) : (Datum) 0;
	values[5] = usage ? Int32GetDatum((int32) usage->output) : (Datum) 0;
	if (claude_spi_exec(claude_cache_upsert(table, "SELECT $1, $2::jsonb, $3, $5, $6"),
						6, types, values, usage ? NULL : "    nn") != SPI_OK_INSERT)
		elog(ERROR, "claude: could not store a reply in %s", table);
}

/*
 * A paid reply the HTTP worker handed over (UTF-8, as it came), stored if
 * the database can hold it: a reply whose text its encoding cannot take
 * is not cached, as its caller got ZC002 for it.
 */
static void
apply_write(ClaudeDbRecord *rec, const char *table)
{
	const char *request = (const char *) rec + MAXALIGN(sizeof(ClaudeDbRecord));
	const char *response = request + rec->request_len + 1;
	Jsonb	   *reply = claude_json_parse(response, rec->response_len);
	ClaudeUsage usage;
	bool		known = claude_reply_usage(response, rec->response_len, &usage);

	if (reply == NULL)
	{
		elog(DEBUG1, "claude: a reply the database cannot hold is not cached");
		return;
	}
	claude_cache_insert(table, rec->key, pg_any_to_server(request, rec->request_len, PG_UTF8),
						reply, known ? &usage : NULL, rec->ttl);
}

/*
 * Count hits.  Hits of an entry under a first-version key move it to the
 * key its request has now (client/cache.c), unless that key is taken.
 */
static void
apply_hits(ClaudeDbRecord *rec, const char *table)
{
	Oid			types[4] = {BYTEAOID, INT8OID, TIMESTAMPTZOID, BYTEAOID};
	Datum		values[4];

	values[0] = PointerGetDatum(key_datum(rec->key));
	values[1] = Int64GetDatum(rec->hits);
	values[2] = TimestampTzGetDatum(rec->at);
	values[3] = PointerGetDatum(key_datum(rec->rekey ? rec->new_key : rec->key));
	if (SPI_execute_with_args(psprintf("UPDATE %s SET hits = hits + $2, "
									   "last_hit_at = greatest(last_hit_at, $3), "
									   "key = CASE WHEN $4 = key OR EXISTS (SELECT FROM %s WHERE key = $4) "
									   "THEN key ELSE $4 END "
									   "WHERE key = $1", table, table),
							  4, types, values, NULL, false, 0) != SPI_OK_UPDATE)
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
