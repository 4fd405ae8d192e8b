/*
 * batch_apply.c
 *		A Message Batch's results written back, a chunk at a time.
 *		Caller: batch_poll.c.
 *
 * A chunk is up to APPLY_LINES lines (APPLY_BYTES) of the results file,
 * written in one transaction of the worker, set-wise: one statement finds
 * the request of every line, one stores the replies in the cache, one
 * writes the rows (as the batch's submitter, restricted) and two record
 * the items, so a thousand rows cost about what a few do.  Should any of
 * it fail (a line that is not JSON, a check or trigger refusing one row),
 * the chunk is rolled back and written again line by line, each line in a
 * subtransaction of its own, so that one bad line or row holds back no
 * other and keeps its own reason.  Succeeded results are written back by
 * primary key and into the cache under the key an online call would use;
 * errored, canceled and expired requests keep their reason.  Every outcome
 * is recorded in claude_batch_items: after a restart the worker reads the
 * results again and skips what was written.
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "client/batches.h"
#include "client/budget.h"
#include "client/cache.h"
#include "client/message.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/secret.h"
#include "common/spi.h"
#include "dbworker/batch_apply.h"
#include "dbworker/cachewrite.h"
#include "dbworker/writeback.h"
#include "shmem/usage.h"

#define APPLY_LINES		1000
#define APPLY_BYTES		(16 * 1024 * 1024)

/* the batch at hand, for messages */
static int64 batch;
static const char *batch_id;
static const char *file;

/* What a round knows about the batch it writes back. */
typedef struct Target
{
	Oid			relid;
	char	   *column;
	bool		cache;
	Oid			role;			/* its submitter, whose usage it is */
	SPIPlanPtr	lookup;			/* one line's request, row by row */
	int			written;
} Target;

/* what the request of a result line is, and the line's parts */
#define LOOKUP_COLUMNS \
	"i.custom_id, i.pk::text, i.status, r->>'type', (r->'message')::text, " \
	"coalesce((r->'error'->'error'->>'type') || ': ' || " \
	"(r->'error'->'error'->>'message'), r->'error'->>'type', r->>'type'), " \
	"i.request::text, i.cache_key"

static void
prepare_lookup(const ClaudeBatchTables *t, Target *target)
{
	target->lookup = SPI_prepare(psprintf("SELECT " LOOKUP_COLUMNS " "
										  "FROM (SELECT j->'result' AS r, j->>'custom_id' AS cid "
										  "FROM (SELECT $1::jsonb AS j) a) s "
										  "JOIN %s i ON i.batch = $2 AND i.custom_id = s.cid",
										  t->items),
								 2, (Oid[]) {TEXTOID, INT8OID});
	if (target->lookup == NULL)
		elog(ERROR, "claude: could not prepare the result lookup");
}

/* What a succeeded result cost, counted against its submitter. */
static void
add_usage(Oid role, const char *message, const char *request)
{
	ClaudeUsage u;
	double		price_in;
	double		price_out;

	if (claude_reply_usage(message, strlen(message), &u))
	{
		claude_price_of(request, strlen(request), &price_in, &price_out);
		claude_usage_add(role, &u, claude_usage_cost(&u, price_in, price_out, true));
	}
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
				 errmsg("could not read file \"%s\": %m", file)));
	return line->len > 0;
}

static void
set_item(const ClaudeBatchTables *t, const char *custom_id, const char *status,
		 const char *error)
{
	claude_spi_run(psprintf("UPDATE %s SET status = $3, error = $4 WHERE batch = $1 AND custom_id = $2",
							t->items),
				   4, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID},
				   (Datum[]) {Int64GetDatum(batch), CStringGetTextDatum(custom_id),
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
							  (Datum[]) {Int64GetDatum(batch), CStringGetTextDatum(custom_id),
			CStringGetTextDatum(message),
			not_written ? CStringGetTextDatum(claude_redact(not_written, 0)) : (Datum) 0},
							  not_written ? NULL : "   n") != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record a batch result");
	if (not_written == NULL)
		target->written++;
	add_usage(target->role, message, request);
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

	if (l->target->lookup == NULL)
		prepare_lookup(l->t, l->target);
	if (SPI_execute_plan(l->target->lookup,
						 (Datum[]) {CStringGetTextDatum(l->text), Int64GetDatum(batch)},
						 NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read claude_batch_items");
	if (SPI_processed != 1)
	{
		elog(WARNING, "claude: Message Batch %s has a result for a request it does not know",
			 batch_id);
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
			 batch_id, edata->message);
}


/* n text values (NULL pointers are NULLs) as a text[] */
static Datum
text_array(char **values, int n)
{
	Datum	   *d = palloc(Max(n, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(n, 1) * sizeof(bool));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = values[i] == NULL;
		d[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(values[i]);
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID, -1, false,
											  TYPALIGN_INT));
}

/* A chunk of lines and, once written, what it paid for. */
typedef struct Chunk
{
	const ClaudeBatchTables *t;
	Target	   *target;
	int			nlines;
	char	  **lines;
	/* succeeded and written into the items, by the chunk's body */
	int			nok;
	char	  **message;
	char	  **request;
	int			written;
} Chunk;

/* The replies of a chunk into the cache, each key once. */
static void
cache_chunk(const ClaudeBatchTables *t, int n, bytea **keys, char **requests, char **messages)
{
	Datum	   *k = palloc(Max(n, 1) * sizeof(Datum));

	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
		k[i] = PointerGetDatum(keys[i]);
	if (claude_spi_exec(psprintf("INSERT INTO %s AS c (key, model, request, response, input_tokens, "
								 "output_tokens, created_at, expires_at, hits) "
								 "SELECT DISTINCT ON (u.k) u.k, r->>'model', u.q::jsonb, r, "
								 "(r->'usage'->>'input_tokens')::int, (r->'usage'->>'output_tokens')::int, "
								 "now(), CASE WHEN $4 > 0 THEN now() + $4 * interval '1 second' END, 0 "
								 "FROM unnest($1::bytea[], $2::text[], $3::text[]) u(k, q, m), "
								 "LATERAL (SELECT u.m::jsonb AS r) s ORDER BY u.k "
								 "ON CONFLICT (key) DO UPDATE SET model = excluded.model, "
								 "request = excluded.request, response = excluded.response, "
								 "input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
								 "created_at = excluded.created_at, expires_at = excluded.expires_at",
								 t->cache),
						4, (Oid[]) {BYTEAARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4OID},
						(Datum[]) {PointerGetDatum(construct_array(k, n, BYTEAOID, -1, false, TYPALIGN_INT)),
						text_array(requests, n), text_array(messages, n), Int32GetDatum(claude_cache_ttl)},
						NULL) != SPI_OK_INSERT)
		elog(ERROR, "claude: could not store batch results in %s", t->cache);
}

/*
 * A chunk set-wise; any error rolls it all back (the caller's
 * subtransaction) for the line-by-line way.
 */
static void
chunk_body(void *arg)
{
	Chunk	   *c = arg;
	const ClaudeBatchTables *t = c->t;
	Target	   *target = c->target;
	SPITupleTable *found;
	int			nfound;
	int			nok = 0;
	int			nother = 0;
	int			nkeys = 0;
	char	  **ok_cid;
	Datum	   *ok_pk;
	Datum	   *ok_completion;
	char	  **ok_error;
	bool	   *written;
	char	  **other_cid;
	char	  **other_status;
	char	  **other_error;
	bytea	  **keys;
	char	  **key_request;
	char	  **key_message;

	if (claude_spi_exec(psprintf("SELECT DISTINCT ON (i.custom_id) " LOOKUP_COLUMNS " "
								 "FROM unnest($1::text[]) WITH ORDINALITY u(line, o), "
								 "LATERAL (SELECT j->'result' AS r, j->>'custom_id' AS cid "
								 "FROM (SELECT u.line::jsonb AS j) a) s "
								 "JOIN %s i ON i.batch = $2 AND i.custom_id = s.cid "
								 "ORDER BY i.custom_id, u.o", t->items),
						2, (Oid[]) {TEXTARRAYOID, INT8OID},
						(Datum[]) {text_array(c->lines, c->nlines), Int64GetDatum(batch)},
						NULL) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read claude_batch_items");
	found = SPI_tuptable;
	nfound = (int) SPI_processed;
	if (nfound < c->nlines)
		elog(WARNING, "claude: Message Batch %s has %d results for requests it does not know or had already",
			 batch_id, c->nlines - nfound);

	ok_cid = palloc(Max(nfound, 1) * sizeof(char *));
	ok_pk = palloc(Max(nfound, 1) * sizeof(Datum));
	ok_completion = palloc(Max(nfound, 1) * sizeof(Datum));
	ok_error = palloc(Max(nfound, 1) * sizeof(char *));
	written = palloc(Max(nfound, 1) * sizeof(bool));
	other_cid = palloc(Max(nfound, 1) * sizeof(char *));
	other_status = palloc(Max(nfound, 1) * sizeof(char *));
	other_error = palloc(Max(nfound, 1) * sizeof(char *));
	keys = palloc(Max(nfound, 1) * sizeof(bytea *));
	key_request = palloc(Max(nfound, 1) * sizeof(char *));
	key_message = palloc(Max(nfound, 1) * sizeof(char *));
	c->message = palloc(Max(nfound, 1) * sizeof(char *));
	c->request = palloc(Max(nfound, 1) * sizeof(char *));

	for (int i = 0; i < nfound; i++)
	{
		HeapTuple	tup = found->vals[i];
		TupleDesc	desc = found->tupdesc;
		char	   *cid = SPI_getvalue(tup, desc, 1);
		char	   *type = SPI_getvalue(tup, desc, 4);
		text	   *completion;
		bool		key_null;
		Datum		key;

		/* written before a restart */
		if (strcmp(SPI_getvalue(tup, desc, 3), "pending") != 0)
			continue;
		if (type == NULL || strcmp(type, "succeeded") != 0)
		{
			bool		known = type != NULL &&
				(strcmp(type, "errored") == 0 || strcmp(type, "canceled") == 0 ||
				 strcmp(type, "expired") == 0);

			other_cid[nother] = cid;
			other_status[nother] = known ? type : "errored";
			other_error[nother++] = claude_redact(known ? SPI_getvalue(tup, desc, 6) :
												  psprintf("unknown result type \"%s\"",
														   type ? type : ""), 0);
			continue;
		}
		completion = claude_complete_text(SPI_getvalue(tup, desc, 5));
		if (completion == NULL)
		{
			other_cid[nother] = cid;
			other_status[nother] = "errored";
			other_error[nother++] = "the Claude API sent a result that is not a Messages response";
			continue;
		}
		ok_cid[nok] = cid;
		ok_pk[nok] = CStringGetTextDatum(SPI_getvalue(tup, desc, 2));
		ok_completion[nok] = PointerGetDatum(completion);
		c->message[nok] = SPI_getvalue(tup, desc, 5);
		c->request[nok] = SPI_getvalue(tup, desc, 7);
		key = SPI_getbinval(tup, desc, 8, &key_null);
		if (target->cache && !key_null &&
			VARSIZE_ANY_EXHDR(DatumGetByteaPP(key)) == CLAUDE_CACHE_KEY_LEN)
		{
			keys[nkeys] = DatumGetByteaPCopy(key);
			key_request[nkeys] = c->request[nok];
			key_message[nkeys++] = c->message[nok];
		}
		nok++;
	}

	cache_chunk(t, nkeys, keys, key_request, key_message);
	if (!claude_update_by_pks(target->relid, target->column, nok, ok_completion, ok_pk,
							  target->role, written))
		memset(written, 0, Max(nok, 1) * sizeof(bool));
	c->written = 0;
	for (int i = 0; i < nok; i++)
	{
		if (written[i])
		{
			ok_error[i] = NULL;
			c->written++;
		}
		else
			ok_error[i] = claude_redact(psprintf("no row was written: the row with key %s is gone, or row-level security hides it from role %s",
												 TextDatumGetCString(ok_pk[i]),
												 GetUserNameFromId(target->role, true)), 0);
	}
	if (nok > 0 &&
		claude_spi_exec(psprintf("UPDATE %s i SET status = 'succeeded', error = v.e, "
								 "input_tokens = (v.m OPERATOR(pg_catalog.->) 'usage' OPERATOR(pg_catalog.->>) 'input_tokens')::pg_catalog.int4, "
								 "output_tokens = (v.m OPERATOR(pg_catalog.->) 'usage' OPERATOR(pg_catalog.->>) 'output_tokens')::pg_catalog.int4, "
								 "cost_usd = %s.claude_cost_usd(v.m OPERATOR(pg_catalog.->>) 'model', v.m OPERATOR(pg_catalog.->) 'usage', true) "
								 "FROM (SELECT u.c, u.m::pg_catalog.jsonb AS m, u.e "
								 "FROM unnest($2::text[], $3::text[], $4::text[]) u(c, m, e)) v "
								 "WHERE i.batch OPERATOR(pg_catalog.=) $1 AND i.custom_id OPERATOR(pg_catalog.=) v.c",
								 t->items, t->schema),
						4, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
						(Datum[]) {Int64GetDatum(batch), text_array(ok_cid, nok),
						text_array(c->message, nok), text_array(ok_error, nok)},
						NULL) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record batch results");
	if (nother > 0 &&
		claude_spi_exec(psprintf("UPDATE %s i SET status = u.s, error = u.e "
								 "FROM unnest($2::text[], $3::text[], $4::text[]) u(c, s, e) "
								 "WHERE i.batch = $1 AND i.custom_id = u.c", t->items),
						4, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
						(Datum[]) {Int64GetDatum(batch), text_array(other_cid, nother),
						text_array(other_status, nother), text_array(other_error, nother)},
						NULL) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record batch results");
	c->nok = nok;
}

/* A chunk, set-wise, or line by line should that fail. */
static void
apply_chunk(const ClaudeBatchTables *t, Target *target, char **lines, int n)
{
	Chunk		c = {t, target, n, lines};
	ErrorData  *edata = claude_subxact(chunk_body, &c);

	if (edata != NULL)
	{
		elog(DEBUG1, "claude: results of Message Batch %s written line by line: %s",
			 batch_id, edata->message);
		for (int i = 0; i < n; i++)
			apply_line(t, target, lines[i]);
		return;
	}
	target->written += c.written;
	/* the chunk is in: what it paid for counts */
	for (int i = 0; i < c.nok; i++)
		add_usage(target->role, c.message[i], c.request[i]);
}

/*
 * Up to APPLY_LINES result lines of the batch's results file, from
 * *offset on, as one or more chunks.  Returns whether lines are left, or
 * that the batch is gone.
 */
ClaudeApplyStep
claude_batch_apply_some(const ClaudeBatchTables *t, int64 local_id, const char *id,
						const char *path, off_t *offset)
{
	Target		target;
	bool		isnull;
	FILE	   *f;
	StringInfoData line;
	char	  **lines = palloc(APPLY_LINES * sizeof(char *));
	int			n = 0;
	Size		bytes = 0;
	bool		more = true;

	batch = local_id;
	batch_id = id;
	file = path;
	claude_spi_run(psprintf("SELECT relation::oid, target_column::text, cache, submitted_by::oid FROM %s "
							"WHERE local_id = %lld", t->batches, (long long) batch),
				   0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return CLAUDE_APPLY_GONE;	/* deleted meanwhile */
	target.relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	target.column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	target.cache = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	target.role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	target.written = 0;
	target.lookup = NULL;

	f = AllocateFile(file, PG_BINARY_R);
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", file)));
	if (fseeko(f, *offset, SEEK_SET) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not seek in file \"%s\": %m", file)));
	initStringInfo(&line);
	pgstat_report_activity(STATE_RUNNING, "claude: writing Message Batch results back");
	while (n < APPLY_LINES && bytes < APPLY_BYTES && (more = read_line(f, &line)))
	{
		while (line.len > 0 && (line.data[line.len - 1] == '\n' || line.data[line.len - 1] == '\r'))
			line.data[--line.len] = '\0';
		if (line.len == 0)
			continue;
		lines[n++] = pstrdup(line.data);
		bytes += line.len;
	}
	*offset = ftello(f);
	FreeFile(f);
	apply_chunk(t, &target, lines, n);
	claude_spi_run(psprintf("UPDATE %s SET rows_written = rows_written + %d WHERE local_id = %lld",
							t->batches, target.written, (long long) batch),
				   0, NULL, NULL, SPI_OK_UPDATE);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more ? CLAUDE_APPLY_MORE : CLAUDE_APPLY_ALL_READ;
}
