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
 * results again and skips what was written.  The requests a chunk settles
 * give back their reservation, and what they used counts on the day the
 * batch is filed under, when the chunk's transaction commits
 * (client/reserve.c).
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "client/cache.h"
#include "client/message.h"
#include "client/reserve.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/secret.h"
#include "common/security.h"
#include "common/spi.h"
#include "dbworker/batch_apply.h"
#include "dbworker/batch_lines.h"
#include "dbworker/cachewrite.h"
#include "dbworker/writeback.h"

#define APPLY_LINES		1000
#define APPLY_BYTES		(16 * 1024 * 1024)

/* the results file at hand, for messages */
static const char *file;

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

/*
 * The items are found by their key, a chunk's worth: a join that read them
 * all (what the planner picks for a thousand keys) would make each chunk
 * cost the whole batch.
 */
static int
join_by_key(void)
{
	static const char *const by_key[][2] = {{"enable_hashjoin", "off"}, {"enable_mergejoin", "off"}};

	return claude_push_settings(by_key, lengthof(by_key));
}

/* A chunk of lines and, once written, what it paid for. */
typedef struct Chunk
{
	const ClaudeBatchTables *t;
	ClaudeBatchTarget *target;
	int			nlines;
	char	  **lines;
	/* set by the body: the succeeded results */
	int			nok;
	char	  **message;
	char	  **model;			/* {"model": the request's} */
	int			written;
	UsageReserve released;		/* by the requests it settles */
} Chunk;

/*
 * The replies of a chunk into the cache, each key once, with their
 * requests as the items hold them.
 */
static void
cache_chunk(const ClaudeBatchTables *t, ClaudeBatchTarget *target, int n, char **cids, char **messages)
{
	if (n == 0)
		return;
	if (claude_spi_exec(claude_cache_upsert(t->cache,
											psprintf("SELECT DISTINCT ON (i.cache_key) i.cache_key, i.request, "
													 "u.m::jsonb FROM unnest($2::text[], $3::text[]) u(c, m) "
													 "JOIN %s i ON i.batch = $1 AND i.custom_id = u.c "
													 "WHERE length(i.cache_key) = %d ORDER BY i.cache_key",
													 t->items, CLAUDE_CACHE_KEY_LEN)),
						4, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, INT4OID},
						(Datum[]) {Int64GetDatum(target->batch), text_array(cids, n), text_array(messages, n),
						Int32GetDatum(claude_cache_ttl)},
						NULL) != SPI_OK_INSERT)
		elog(ERROR, "claude: could not store batch results in %s", t->cache);
}

/* Whether a custom_id was seen before in this chunk (the first one counts). */
static bool
seen_before(HTAB *seen, const char *cid)
{
	char		key[NAMEDATALEN * 2] = {0};
	bool		found;

	strlcpy(key, cid, sizeof(key));
	(void) hash_search(seen, key, HASH_ENTER, &found);
	return found;
}

/* A result line as the C scanner reads it; NULL parts are absent. */
typedef struct ResultLine
{
	char	   *cid;
	bool		succeeded;
	char	   *message;		/* succeeded: the Message, as it stands */
	char	   *usage;			/* its usage object, as it stands */
	char	   *model;			/* its model, decoded */
	char	   *type;			/* otherwise: its type */
	char	   *line;			/* and the line, for its error */
} ResultLine;

/* Two members of an object, found in one pass: their values as they stand. */
typedef struct Pick
{
	const char *name[2];
	const char *value[2];
	Size		len[2];
} Pick;

static void
pick_found(void *arg, const char *key, int keylen, const char *value, Size len)
{
	Pick	   *p = arg;

	for (int i = 0; i < 2; i++)
		if (strlen(p->name[i]) == keylen && memcmp(p->name[i], key, keylen) == 0)
			p->value[i] = value, p->len[i] = len;
}

static bool
pick(const char *json, Size len, Pick *p, const char *a, const char *b)
{
	memset(p, 0, sizeof(*p));
	p->name[0] = a;
	p->name[1] = b;
	return claude_json_members(json, len, pick_found, p) &&
		p->value[0] != NULL && p->value[1] != NULL;
}

/* A string without escapes (ids, types, names), or NULL. */
static char *
plain_string(const char *v, Size n)
{
	if (n < 2 || v[0] != '"' || memchr(v, '\\', n) != NULL)
		return NULL;
	return pnstrdup(v + 1, n - 2);
}

/*
 * A line read without the jsonb parser, the way the HTTP worker reads
 * replies; false for anything unusual, which the line-by-line way then
 * handles (and records) as before.
 */
static bool
scan_result(char *line, ResultLine *r)
{
	Size		len = strlen(line);
	Pick		p;
	Pick		q = {{"type", "message"}};

	memset(r, 0, sizeof(*r));
	if (!pg_verifymbstr(line, len, true) || !claude_json_scan(line, len, NULL, NULL) ||
		!pick(line, len, &p, "custom_id", "result") ||
		(r->cid = plain_string(p.value[0], p.len[0])) == NULL ||
		!claude_json_members(p.value[1], p.len[1], pick_found, &q) ||
		q.value[0] == NULL || (r->type = plain_string(q.value[0], q.len[0])) == NULL)
		return false;
	r->succeeded = strcmp(r->type, "succeeded") == 0;
	if (!r->succeeded)
	{
		r->line = line;
		return true;
	}
	if (q.value[1] == NULL || *q.value[1] != '{' ||
		!pick(q.value[1], q.len[1], &p, "usage", "model") || *p.value[0] != '{' ||
		(r->model = plain_string(p.value[1], p.len[1])) == NULL)
		return false;
	r->message = pnstrdup(q.value[1], q.len[1]);
	r->usage = pnstrdup(p.value[0], p.len[0]);
	return true;
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
	ClaudeBatchTarget *target = c->target;
	ResultLine *results = palloc(Max(c->nlines, 1) * sizeof(ResultLine));
	char	  **cids = palloc(Max(c->nlines, 1) * sizeof(char *));
	char	  **errlines = palloc(Max(c->nlines, 1) * sizeof(char *));
	SPITupleTable *found;
	int			nfound;
	int			nok = 0;
	int			nother = 0;
	char	  **ok_cid;
	Datum	   *ok_pk;
	Datum	   *ok_completion;
	char	  **ok_error;
	char	  **ok_usage;
	char	  **ok_reply_model;
	bool	   *written;
	char	  **other_cid;
	char	  **other_status;
	char	  **other_error;
	HASHCTL		hctl = {.keysize = NAMEDATALEN * 2, .entrysize = NAMEDATALEN * 2};
	HTAB	   *seen;
	int			nest;

	for (int i = 0; i < c->nlines; i++)
	{
		if (!scan_result(c->lines[i], &results[i]))
			elog(ERROR, "claude: a result line is not as expected");
		cids[i] = results[i].cid;
		errlines[i] = results[i].line;
	}
	/* each item found by its key; only a failed request's line is parsed */
	nest = join_by_key();
	if (claude_spi_exec(psprintf("SELECT u.o, i.pk::text, i.status, "
								 "jsonb_build_object('model', i.request->'model')::text, "
								 "CASE WHEN u.line IS NOT NULL THEN (SELECT "
								 "coalesce((r->'error'->'error'->>'type') || ': ' || "
								 "(r->'error'->'error'->>'message'), r->'error'->>'type', r->>'type') "
								 "FROM (SELECT u.line::jsonb->'result' AS r) x) END, "
								 "i.est_tokens, i.est_cost_usd::pg_catalog.float8 "
								 "FROM unnest($1::text[], $3::text[]) WITH ORDINALITY u(cid, line, o) "
								 "JOIN %s i ON i.batch = $2 AND i.custom_id = u.cid "
								 "ORDER BY u.o", t->items),
						3, (Oid[]) {TEXTARRAYOID, INT8OID, TEXTARRAYOID},
						(Datum[]) {text_array(cids, c->nlines), Int64GetDatum(target->batch),
						text_array(errlines, c->nlines)},
						NULL) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read claude_batch_items");
	found = SPI_tuptable;
	nfound = (int) SPI_processed;
	if (nfound < c->nlines)
		elog(WARNING, "claude: Message Batch %s has %d results for requests it does not know",
			 target->batch_id, c->nlines - nfound);

	ok_cid = palloc(Max(nfound, 1) * sizeof(char *));
	ok_pk = palloc(Max(nfound, 1) * sizeof(Datum));
	ok_completion = palloc(Max(nfound, 1) * sizeof(Datum));
	ok_error = palloc(Max(nfound, 1) * sizeof(char *));
	ok_usage = palloc(Max(nfound, 1) * sizeof(char *));
	ok_reply_model = palloc(Max(nfound, 1) * sizeof(char *));
	written = palloc(Max(nfound, 1) * sizeof(bool));
	other_cid = palloc(Max(nfound, 1) * sizeof(char *));
	other_status = palloc(Max(nfound, 1) * sizeof(char *));
	other_error = palloc(Max(nfound, 1) * sizeof(char *));
	c->message = palloc(Max(nfound, 1) * sizeof(char *));
	c->model = palloc(Max(nfound, 1) * sizeof(char *));
	seen = hash_create("claude batch chunk", Max(nfound, 16), &hctl, HASH_ELEM | HASH_STRINGS);

	for (int i = 0; i < nfound; i++)
	{
		HeapTuple	tup = found->vals[i];
		TupleDesc	desc = found->tupdesc;
		bool		isnull;
		int64		o = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		ResultLine *r = &results[o - 1];
		text	   *completion;

		/* written before a restart, or a line repeated */
		if (strcmp(SPI_getvalue(tup, desc, 3), "pending") != 0 || seen_before(seen, r->cid))
			continue;
		c->released.requests++;
		c->released.tokens += DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		c->released.cost += claude_spi_float(tup, desc, 7);
		if (!r->succeeded)
		{
			bool		known = strcmp(r->type, "errored") == 0 ||
				strcmp(r->type, "canceled") == 0 || strcmp(r->type, "expired") == 0;

			other_cid[nother] = r->cid;
			other_status[nother] = known ? r->type : "errored";
			other_error[nother++] = claude_redact(known ? SPI_getvalue(tup, desc, 5) :
												  psprintf("unknown result type \"%s\"", r->type), 0);
			continue;
		}
		completion = claude_complete_text(r->message);
		if (completion == NULL)
		{
			other_cid[nother] = r->cid;
			other_status[nother] = "errored";
			other_error[nother++] = "the Claude API sent a result that is not a Messages response";
			continue;
		}
		ok_cid[nok] = r->cid;
		ok_pk[nok] = CStringGetTextDatum(SPI_getvalue(tup, desc, 2));
		ok_completion[nok] = PointerGetDatum(completion);
		ok_usage[nok] = r->usage;
		ok_reply_model[nok] = r->model;
		c->message[nok] = r->message;
		c->model[nok++] = SPI_getvalue(tup, desc, 4);
	}
	hash_destroy(seen);

	if (target->cache)
		cache_chunk(t, target, nok, ok_cid, c->message);
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
								 "input_tokens = (v.u OPERATOR(pg_catalog.->>) 'input_tokens')::pg_catalog.int4, "
								 "output_tokens = (v.u OPERATOR(pg_catalog.->>) 'output_tokens')::pg_catalog.int4, "
								 "cost_usd = %s.claude_cost_usd(v.m, v.u, true) "
								 "FROM (SELECT u.c, u.u::jsonb AS u, u.m, u.e "
								 "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) u(c, u, m, e)) v "
								 "WHERE i.batch OPERATOR(pg_catalog.=) $1 AND i.custom_id OPERATOR(pg_catalog.=) v.c",
								 t->items, t->schema),
						5, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
						(Datum[]) {Int64GetDatum(target->batch), text_array(ok_cid, nok),
							text_array(ok_usage, nok), text_array(ok_reply_model, nok),
						text_array(ok_error, nok)},
						NULL) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record batch results");
	if (nother > 0 &&
		claude_spi_exec(psprintf("UPDATE %s i SET status = u.s, error = u.e "
								 "FROM unnest($2::text[], $3::text[], $4::text[]) u(c, s, e) "
								 "WHERE i.batch = $1 AND i.custom_id = u.c", t->items),
						4, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
						(Datum[]) {Int64GetDatum(target->batch), text_array(other_cid, nother),
						text_array(other_status, nother), text_array(other_error, nother)},
						NULL) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record batch results");
	claude_pop_settings(nest);
	c->nok = nok;
}

/* A chunk, set-wise, or line by line should that fail. */
static void
apply_chunk(const ClaudeBatchTables *t, ClaudeBatchTarget *target, char **lines, int n)
{
	Chunk		c = {t, target, n, lines};
	ErrorData  *edata = claude_subxact(chunk_body, &c);
	UsageCounts used;

	if (edata != NULL)
	{
		elog(DEBUG1, "claude: results of Message Batch %s written line by line: %s",
			 target->batch_id, edata->message);
		for (int i = 0; i < n; i++)
			claude_batch_apply_line(t, target, lines[i]);
		return;
	}
	target->written += c.written;
	/* the chunk is in: what it paid for counts, in place of what it reserved */
	memset(&used, 0, sizeof(used));
	for (int i = 0; i < c.nok; i++)
		claude_batch_usage(&used, c.message[i], c.model[i]);
	claude_reserve_settle(target->role, target->day, &c.released, &used);
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
	ClaudeBatchTarget target;
	bool		isnull;
	FILE	   *f;
	StringInfoData line;
	char	  **lines = palloc(APPLY_LINES * sizeof(char *));
	int			n = 0;
	Size		bytes = 0;
	bool		more = true;

	file = path;
	/* locked before the role's reservation lock, as a deletion of it does */
	claude_spi_run(psprintf("SELECT relation::oid, target_column::text, cache, submitted_by::oid, "
							"created_at FROM %s WHERE local_id = %lld FOR NO KEY UPDATE",
							t->batches, (long long) local_id),
				   0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return CLAUDE_APPLY_GONE;	/* deleted meanwhile */
	target.relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	target.column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	target.cache = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	target.role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	target.day = claude_usage_day_of(DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																	   SPI_tuptable->tupdesc, 5, &isnull)));
	target.batch = local_id;
	target.batch_id = id;
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
							t->batches, target.written, (long long) local_id),
				   0, NULL, NULL, SPI_OK_UPDATE);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more ? CLAUDE_APPLY_MORE : CLAUDE_APPLY_ALL_READ;
}
