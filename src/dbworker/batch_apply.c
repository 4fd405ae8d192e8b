/*
 * batch_apply.c
 *		A Message Batch's results written back, a chunk at a time.
 *		Caller: batch_poll.c.
 *
 * A chunk is up to APPLY_LINES lines (APPLY_BYTES) of the results file,
 * read by the C scanner (batch_read.c) as the HTTP worker reads replies
 * (no jsonb parser meets what the server sent), and written in one
 * transaction of the worker, set-wise: one statement finds the request of
 * every line, one stores the replies in the cache, one writes the rows (as
 * the batch's submitter, restricted, each only while its prompt inputs are
 * those it was asked with) and two record the items, so a thousand rows
 * cost about what a few do.  Should any of it fail (a line that is not JSON, a check
 * or trigger refusing one row), the chunk is rolled back and written again
 * a line at a time, each in a subtransaction of its own, where a refused
 * cache entry or row write costs that line nothing else: its item stays
 * 'succeeded' (it was paid) with the reason.  A result that breaks the
 * schema of a batch with labels or a schema (reply_check) is 'errored'
 * with the path, unwritten and uncached.
 *
 * A succeeded result's text is converted to the database's encoding as a
 * reply's is; its usage is read as a reply's is, bad usage (a fraction, a
 * count out of range) being unknown: the answer is kept and written, the
 * request counted, its tokens and cost NULL.  A result is priced by its
 * request's model, as online calls are and as its reservation was made,
 * whatever model the result names: items, the batch and claude_usage
 * agree.  Errored, canceled and expired requests keep their reason.  Every
 * outcome is recorded in claude_batch_items: after a restart the worker
 * reads the results again and skips what was written.  The requests a
 * chunk settles give back their reservation, and what they used counts on
 * the day the batch is filed under, when the chunk's transaction commits
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

#include "client/budget.h"
#include "client/cache.h"
#include "client/message.h"
#include "client/reserve.h"
#include "client/structured.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/secret.h"
#include "common/security.h"
#include "common/spi.h"
#include "dbworker/batch_apply.h"
#include "dbworker/batch_read.h"
#include "dbworker/cachewrite.h"
#include "dbworker/writeback.h"
#include "shmem/stats.h"
#include "shmem/usage.h"

#define APPLY_LINES		1000
#define APPLY_BYTES		(16 * 1024 * 1024)

/* What a round knows about the batch it writes back. */
typedef struct Target
{
	int64		batch;			/* local_id */
	const char *batch_id;		/* the API's, for messages */
	Oid			relid;
	char	   *column;
	bool		cache;
	Oid			role;			/* its submitter, whose usage it is */
	int32		day;			/* the day it is filed under, and its usage counted on */
	char	  **inputs;			/* the columns its prompts use */
	int			ninputs;
	ClaudeReplyCheck check;		/* labels or a schema; schema NULL: free text */
	int			written;
} Target;


/* A chunk of lines and, once written, what it paid for. */
typedef struct Chunk
{
	const ClaudeBatchTables *t;
	Target	   *target;
	int			nlines;
	char	  **lines;
	char	   *cid;			/* of a chunk of one line, once read */
	/* set by the body */
	int			written;
	int			nbilled;
	ClaudeUsage *billed;		/* usage known, to bill once the chunk is in */
	int64	   *billed_cost;	/* nano-USD */
	UsageReserve released;		/* by the requests it settles */
	UsageCounts used;			/* what they used */
	char		model[CLAUDE_USAGE_MODEL_LEN];	/* ... counted under the first's */
} Chunk;

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

/* n values of a type (NULL pointers are NULLs) as an array */
static Datum
array_of(Datum *d, bool *nulls, int n, Oid type, int16 len, bool byval, char align)
{
	return PointerGetDatum(construct_md_array(d, nulls, 1, (int[]) {n}, (int[]) {1},
											  type, len, byval, align));
}

static Datum
text_array(char **values, int n)
{
	Datum	   *d = palloc(Max(n, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(n, 1) * sizeof(bool));

	for (int i = 0; i < n; i++)
	{
		nulls[i] = values[i] == NULL;
		d[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(values[i]);
	}
	return array_of(d, nulls, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/* Whole numbers of n values (INT4OID or INT8OID), NULL where !known[i]. */
static Datum
number_array(int64 *values, bool *known, int n, Oid type)
{
	Datum	   *d = palloc(Max(n, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(n, 1) * sizeof(bool));

	for (int i = 0; i < n; i++)
	{
		nulls[i] = !known[i];
		d[i] = type == INT4OID ? Int32GetDatum((int32) values[i]) : Int64GetDatum(values[i]);
	}
	return type == INT4OID ? array_of(d, nulls, n, INT4OID, 4, true, TYPALIGN_INT) :
		array_of(d, nulls, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
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

/*
 * fn(arg) as part of the chunk; in a chunk of one line, in a
 * subtransaction of its own whose failure is returned, the line's other
 * work standing.
 */
static char *
guarded(Chunk *c, void (*fn) (void *arg), void *arg)
{
	ErrorData  *edata;

	if (c->nlines > 1)
	{
		fn(arg);
		return NULL;
	}
	edata = claude_subxact(fn, arg);
	return edata ? edata->message : NULL;
}

/* The succeeded results of a chunk, on their way to the tables. */
typedef struct Succeeded
{
	Chunk	   *c;
	int			n;
	char	  **cid;
	Datum	   *pk;				/* text */
	Datum	   *md5;			/* text, or 0 */
	Datum	   *completion;		/* text */
	Datum	   *message;		/* jsonb, or 0: the database cannot hold it */
	int64	   *input;
	int64	   *output;
	int64	   *cost;			/* nano-USD */
	bool	   *known;			/* usage */
	bool	   *priced;			/* cost */
	char	  **error;
	bool	   *written;
} Succeeded;

/* The replies into the cache, each key once, with their requests as the items hold them. */
static void
cache_body(void *arg)
{
	Succeeded  *s = arg;
	Chunk	   *c = s->c;
	bool	   *nulls = palloc(Max(s->n, 1) * sizeof(bool));

	for (int i = 0; i < s->n; i++)
		nulls[i] = s->message[i] == (Datum) 0;
	if (claude_spi_exec(claude_cache_upsert(c->t->cache,
											psprintf("SELECT DISTINCT ON (i.cache_key) i.cache_key, i.request, "
													 "u.m, u.i, u.o FROM ROWS FROM (unnest($2::text[]), "
													 "unnest($3::jsonb[]), unnest($5::int4[]), unnest($6::int4[])) "
													 "u(c, m, i, o) JOIN %s i ON i.batch = $1 AND i.custom_id = u.c "
													 "WHERE length(i.cache_key) = %d AND u.m IS NOT NULL "
													 "ORDER BY i.cache_key",
													 c->t->items, CLAUDE_CACHE_KEY_LEN)),
						6, (Oid[]) {INT8OID, TEXTARRAYOID, JSONBARRAYOID, INT4OID, INT4ARRAYOID, INT4ARRAYOID},
						(Datum[]) {Int64GetDatum(c->target->batch), text_array(s->cid, s->n),
							array_of(s->message, nulls, s->n, JSONBOID, -1, false, TYPALIGN_INT),
							Int32GetDatum(claude_cache_ttl),
							number_array(s->input, s->known, s->n, INT4OID),
						number_array(s->output, s->known, s->n, INT4OID)},
						NULL) != SPI_OK_INSERT)
		elog(ERROR, "claude: could not store batch results in %s", c->t->cache);
}

/* The rows, as the submitter, where their inputs are unchanged. */
static void
rows_body(void *arg)
{
	Succeeded  *s = arg;
	Target	   *target = s->c->target;

	if (!claude_update_by_pks(target->relid, target->column, s->n, s->completion, s->pk,
							  s->md5, target->inputs, target->ninputs, target->role, s->written))
		memset(s->written, 0, Max(s->n, 1) * sizeof(bool));
}

/* A note added to an item's reason. */
static void
add_note(char **error, const char *note)
{
	*error = *error ? psprintf("%s; %s", *error, note) : pstrdup(note);
}

/* Cache, rows and items of the succeeded results. */
static void
write_succeeded(Succeeded *s)
{
	Chunk	   *c = s->c;
	Target	   *target = c->target;
	char	   *why;
	char	   *refused = NULL;

	if (target->cache && s->n > 0 && (why = guarded(c, cache_body, s)) != NULL)
		add_note(&s->error[0], psprintf("not cached: %s", why));
	if (s->n > 0 && (refused = guarded(c, rows_body, s)) != NULL)
	{
		memset(s->written, 0, Max(s->n, 1) * sizeof(bool));
		add_note(&s->error[0], psprintf("not written: %s", refused));
	}
	for (int i = 0; i < s->n; i++)
	{
		if (s->written[i])
			c->written++;
		else if (refused == NULL)
			add_note(&s->error[i],
					 psprintf("no row was written: the row with key %s is gone, its prompt inputs changed "
							  "since the batch was submitted, or row-level security hides it from role %s",
							  TextDatumGetCString(s->pk[i]), GetUserNameFromId(target->role, true)));
		if (s->error[i] != NULL)
			s->error[i] = claude_redact(s->error[i], 0);
	}
	if (s->n > 0 &&
		claude_spi_exec(psprintf("UPDATE %s i SET status = 'succeeded', error = v.e, input_tokens = v.i, "
								 "output_tokens = v.o, cost_usd = " CLAUDE_SQL_USD("v.u") " "
								 "FROM ROWS FROM (unnest($2::text[]), unnest($3::text[]), unnest($4::int4[]), "
								 "unnest($5::int4[]), unnest($6::int8[])) v(c, e, i, o, u) "
								 "WHERE i.batch OPERATOR(pg_catalog.=) $1 AND i.custom_id OPERATOR(pg_catalog.=) v.c",
								 c->t->items),
						6, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID},
						(Datum[]) {Int64GetDatum(target->batch), text_array(s->cid, s->n),
							text_array(s->error, s->n), number_array(s->input, s->known, s->n, INT4OID),
							number_array(s->output, s->known, s->n, INT4OID),
						number_array(s->cost, s->priced, s->n, INT8OID)},
						NULL) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record batch results");
}

static Succeeded *
new_succeeded(Chunk *c, int n)
{
	Succeeded  *s = palloc0(sizeof(Succeeded));

	n = Max(n, 1);
	s->c = c;
	s->cid = palloc0(n * sizeof(char *));
	s->pk = palloc0(n * sizeof(Datum));
	s->md5 = palloc0(n * sizeof(Datum));
	s->completion = palloc0(n * sizeof(Datum));
	s->message = palloc0(n * sizeof(Datum));
	s->input = palloc0(n * sizeof(int64));
	s->output = palloc0(n * sizeof(int64));
	s->cost = palloc0(n * sizeof(int64));
	s->known = palloc0(n * sizeof(bool));
	s->priced = palloc0(n * sizeof(bool));
	s->error = palloc0(n * sizeof(char *));
	s->written = palloc0(n * sizeof(bool));
	return s;
}

/*
 * A succeeded result into s, priced by its request's model, counted in
 * what the chunk used.  False when it gives no value: *why says why (a
 * result that breaks the batch's schema: paid for, counted, neither
 * written nor cached).
 */
static bool
add_succeeded(Succeeded *s, ResultLine *r, HeapTuple tup, TupleDesc desc, char **why)
{
	Chunk	   *c = s->c;
	text	   *completion = NULL;
	int			k = s->n;
	char	   *model = SPI_getvalue(tup, desc, 4);
	bool		isnull;
	int64		cost;

	*why = NULL;
	if (r->message && c->target->check.schema)
		*why = claude_structured_value(DatumGetJsonbP(SPI_getbinval(tup, desc, 8, &isnull)),
									   &c->target->check, claude_json_parse(r->message, strlen(r->message)),
									   &completion, NULL);
	else if (r->message)
		completion = claude_complete_text(r->message);
	if (completion == NULL && *why == NULL)
		return false;
	cost = r->usage_known ? claude_cost_nanos(model, &r->usage, true) : -1;
	if (c->model[0] == '\0')	/* a claude_enrich batch has one model */
		claude_usage_model_key(c->model, model);
	claude_usage_count_request(&c->used, r->usage_known ? &r->usage : NULL, cost);
	if (r->usage_known)
	{
		c->billed[c->nbilled] = r->usage;
		c->billed_cost[c->nbilled++] = cost;
	}
	if (*why)
		return false;
	s->cid[k] = r->cid;
	s->pk[k] = CStringGetTextDatum(SPI_getvalue(tup, desc, 2));
	s->md5[k] = SPI_getbinval(tup, desc, 7, &isnull);
	if (isnull)
		s->md5[k] = (Datum) 0;
	s->completion[k] = PointerGetDatum(completion);
	s->message[k] = PointerGetDatum(claude_json_parse(r->message, strlen(r->message)));
	if (s->message[k] == (Datum) 0 && c->target->cache)
		s->error[k] = "not cached: the database encoding cannot hold the reply";
	s->known[k] = r->usage_known;
	s->input[k] = (int64) r->usage.input;
	s->output[k] = (int64) r->usage.output;
	s->cost[k] = cost;
	s->priced[k] = cost >= 0;
	s->n++;
	return true;
}

/* The other outcomes of a chunk: status and reason. */
static void
write_others(Chunk *c, int n, char **cid, char **status, char **error)
{
	if (n > 0 &&
		claude_spi_exec(psprintf("UPDATE %s i SET status = u.s, error = u.e "
								 "FROM unnest($2::text[], $3::text[], $4::text[]) u(c, s, e) "
								 "WHERE i.batch = $1 AND i.custom_id = u.c", c->t->items),
						4, (Oid[]) {INT8OID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
						(Datum[]) {Int64GetDatum(c->target->batch), text_array(cid, n),
						text_array(status, n), text_array(error, n)},
						NULL) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record batch results");
}

/*
 * A chunk; any error rolls it all back (the caller's subtransaction), to
 * be written again line by line.
 */
static void
chunk_body(void *arg)
{
	Chunk	   *c = arg;
	Target	   *target = c->target;
	ResultLine *results = palloc(Max(c->nlines, 1) * sizeof(ResultLine));
	char	  **cids = palloc(Max(c->nlines, 1) * sizeof(char *));
	SPITupleTable *found;
	int			nfound;
	int			nother = 0;
	Succeeded  *ok;
	char	  **other_cid;
	char	  **other_status;
	char	  **other_error;
	HASHCTL		hctl = {.keysize = NAMEDATALEN * 2, .entrysize = NAMEDATALEN * 2};
	HTAB	   *seen;
	int			nest;

	for (int i = 0; i < c->nlines; i++)
	{
		if (!claude_batch_scan_line(c->lines[i], &results[i]))
			elog(ERROR, "claude: a result line is not as expected");
		cids[i] = results[i].cid;
	}
	if (c->nlines == 1)
		c->cid = results[0].cid;
	/* each item found by its key */
	nest = join_by_key();
	if (claude_spi_exec(psprintf("SELECT u.o, i.pk::text, i.status, "
								 "i.request->>'model', "
								 "i.est_tokens, " CLAUDE_SQL_NANOS("i.est_cost_usd") ", i.inputs_md5, i.request "
								 "FROM unnest($1::text[]) WITH ORDINALITY u(cid, o) "
								 "JOIN %s i ON i.batch = $2 AND i.custom_id = u.cid "
								 "ORDER BY u.o", c->t->items),
						2, (Oid[]) {TEXTARRAYOID, INT8OID},
						(Datum[]) {text_array(cids, c->nlines), Int64GetDatum(target->batch)},
						NULL) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read claude_batch_items");
	claude_pop_settings(nest);
	found = SPI_tuptable;
	nfound = (int) SPI_processed;
	if (nfound < c->nlines)
		elog(WARNING, "claude: Message Batch %s has %d results for requests it does not know",
			 target->batch_id, c->nlines - nfound);

	ok = new_succeeded(c, nfound);
	c->billed = palloc(Max(nfound, 1) * sizeof(ClaudeUsage));
	c->billed_cost = palloc(Max(nfound, 1) * sizeof(int64));
	other_cid = palloc(Max(nfound, 1) * sizeof(char *));
	other_status = palloc(Max(nfound, 1) * sizeof(char *));
	other_error = palloc(Max(nfound, 1) * sizeof(char *));
	seen = hash_create("claude batch chunk", Max(nfound, 16), &hctl, HASH_ELEM | HASH_STRINGS);

	for (int i = 0; i < nfound; i++)
	{
		HeapTuple	tup = found->vals[i];
		TupleDesc	desc = found->tupdesc;
		bool		isnull;
		ResultLine *r = &results[DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)) - 1];
		bool		known;
		char	   *why = NULL;

		/* written before a restart, or a line repeated */
		if (strcmp(SPI_getvalue(tup, desc, 3), "pending") != 0 || seen_before(seen, r->cid))
			continue;
		c->released.requests++;
		c->released.tokens += DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		c->released.cost = claude_nanos_add(c->released.cost, claude_spi_nanos(tup, desc, 6));
		if (r->succeeded && add_succeeded(ok, r, tup, desc, &why))
			continue;
		known = strcmp(r->type, "errored") == 0 || strcmp(r->type, "canceled") == 0 ||
			strcmp(r->type, "expired") == 0;
		other_cid[nother] = r->cid;
		other_status[nother] = known ? r->type : "errored";
		other_error[nother++] = claude_redact(why ? why : r->succeeded ?
											  "the Claude API sent a result that is not a Messages response" :
											  known ? r->error :
											  psprintf("unknown result type \"%s\"", r->type), 0);
	}
	hash_destroy(seen);

	write_succeeded(ok);
	write_others(c, nother, other_cid, other_status, other_error);
}

/* A line whose chunk of one failed: its request errored, if it is known. */
static void
line_failed(Chunk *c, const char *why)
{
	SPITupleTable *rows;

	if (c->cid == NULL)
	{
		elog(WARNING, "claude: a result line of Message Batch %s could not be read: %s",
			 c->target->batch_id, why);
		return;
	}
	claude_spi_run(psprintf("UPDATE %s SET status = 'errored', error = $3 "
							"WHERE batch = $1 AND custom_id = $2 AND status = 'pending' "
							"RETURNING est_tokens, " CLAUDE_SQL_NANOS("est_cost_usd"), c->t->items),
				   3, (Oid[]) {INT8OID, TEXTOID, TEXTOID},
				   (Datum[]) {Int64GetDatum(c->target->batch), CStringGetTextDatum(c->cid),
		CStringGetTextDatum(claude_redact(why, 0))}, SPI_OK_UPDATE_RETURNING);
	rows = SPI_tuptable;
	if (SPI_processed == 1)
	{
		bool		isnull;
		UsageReserve r = {1, DatumGetInt64(SPI_getbinval(rows->vals[0], rows->tupdesc, 1, &isnull)),
		claude_spi_nanos(rows->vals[0], rows->tupdesc, 2)};

		claude_reserve_settle(c->target->role, c->target->day, NULL, &r, NULL);
	}
}

/*
 * A chunk, set-wise, or line by line should that fail.  What it settles
 * counts, and what it used is billed, once it is in.
 */
static void
apply_chunk(const ClaudeBatchTables *t, Target *target, char **lines, int n)
{
	Chunk		c;
	ErrorData  *edata;

	memset(&c, 0, sizeof(c));
	c.t = t;
	c.target = target;
	c.nlines = n;
	c.lines = lines;
	if ((edata = claude_subxact(chunk_body, &c)) != NULL)
	{
		if (n == 1)
			line_failed(&c, edata->message);
		else
		{
			elog(DEBUG1, "claude: results of Message Batch %s written line by line: %s",
				 target->batch_id, edata->message);
			for (int i = 0; i < n; i++)
				apply_chunk(t, target, &lines[i], 1);
		}
		return;
	}
	target->written += c.written;
	claude_reserve_settle(target->role, target->day, c.model, &c.released, &c.used);
	for (int i = 0; i < c.nbilled; i++)
		claude_stats_billed(&c.billed[i], c.billed_cost[i]);
}

/* The record's view of the batch; false if it is gone. */
static bool
load_target(const ClaudeBatchTables *t, int64 local_id, const char *id, Target *target)
{
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum	   *names;
	Datum		rc;
	int			n;

	/* locked before the role's reservation lock, as a deletion of it does */
	claude_spi_run(psprintf("SELECT relation::oid, target_column::text, cache, submitted_by::oid, "
							"created_at, inputs, reply_check FROM %s WHERE local_id = %lld FOR NO KEY UPDATE",
							t->batches, (long long) local_id),
				   0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(target, 0, sizeof(*target));
	target->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	target->column = SPI_getvalue(tup, desc, 2);
	target->cache = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	target->role = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	target->day = claude_usage_day_of(DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull)));
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 6, &isnull)), TEXTOID, -1, false,
					  TYPALIGN_INT, &names, NULL, &n);
	target->inputs = palloc(Max(n, 1) * sizeof(char *));
	for (int i = 0; i < n; i++)
		target->inputs[i] = TextDatumGetCString(names[i]);
	target->ninputs = n;
	rc = SPI_getbinval(tup, desc, 7, &isnull);
	claude_reply_check_read(isnull ? NULL : DatumGetJsonbP(rc), &target->check);
	target->batch = local_id;
	target->batch_id = id;
	return true;
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
	FILE	   *f;
	StringInfoData line;
	char	  **lines = palloc(APPLY_LINES * sizeof(char *));
	int			n = 0;
	Size		bytes = 0;
	bool		more = true;

	file = path;
	if (!load_target(t, local_id, id, &target))
		return CLAUDE_APPLY_GONE;	/* deleted meanwhile */
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
		/* JSONL: blank lines, and blanks around a line, are nothing */
		while (line.len > 0 && (line.data[line.len - 1] == '\n' || line.data[line.len - 1] == '\r' ||
								line.data[line.len - 1] == ' ' || line.data[line.len - 1] == '\t'))
			line.data[--line.len] = '\0';
		if (line.len == 0 || strspn(line.data, " \t") == line.len)
			continue;
		lines[n++] = pstrdup(line.data);
		bytes += line.len;
	}
	*offset = ftello(f);
	FreeFile(f);
	if (n > 0)
		apply_chunk(t, &target, lines, n);
	claude_spi_run(psprintf("UPDATE %s SET rows_written = rows_written + %d WHERE local_id = %lld",
							t->batches, target.written, (long long) local_id),
				   0, NULL, NULL, SPI_OK_UPDATE);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more ? CLAUDE_APPLY_MORE : CLAUDE_APPLY_ALL_READ;
}
