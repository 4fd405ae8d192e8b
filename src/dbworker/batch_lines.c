/*
 * batch_lines.c
 *		A Message Batch's results written back one line at a time, each in
 *		a subtransaction of its own: the way of a chunk that failed as a
 *		whole.  Caller: batch_apply.c.
 *
 * Each line is parsed by PostgreSQL's jsonb and its request found; a
 * succeeded result goes into the cache, its row, and its item; errored,
 * canceled and expired requests keep their reason.  A row the table
 * refuses keeps its item 'succeeded' (it was paid) with the reason, so
 * that one bad line or row holds back no other.  Each request settled
 * gives back its reservation, and what it used counts, with the commit.
 */
#include "postgres.h"

#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "client/budget.h"
#include "client/cache.h"
#include "client/message.h"
#include "client/reserve.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/secret.h"
#include "common/spi.h"
#include "dbworker/batch_lines.h"
#include "dbworker/cachewrite.h"
#include "dbworker/writeback.h"
#include "shmem/stats.h"
#include "shmem/usage.h"

static void
prepare_lookup(const ClaudeBatchTables *t, ClaudeBatchTarget *target)
{
	target->lookup = SPI_prepare(psprintf("SELECT i.custom_id, i.pk::text, i.status, r->>'type', "
										  "(r->'message')::text, "
										  "coalesce((r->'error'->'error'->>'type') || ': ' || "
										  "(r->'error'->'error'->>'message'), r->'error'->>'type', r->>'type'), "
										  "i.request::text, i.cache_key, i.est_tokens, "
										  "i.est_cost_usd::pg_catalog.float8 "
										  "FROM (SELECT j->'result' AS r, j->>'custom_id' AS cid "
										  "FROM (SELECT $1::jsonb AS j) a) s "
										  "JOIN %s i ON i.batch = $2 AND i.custom_id = s.cid",
										  t->items),
								 2, (Oid[]) {TEXTOID, INT8OID});
	if (target->lookup == NULL)
		elog(ERROR, "claude: could not prepare the result lookup");
}

/*
 * A succeeded result, and what it used and cost, added to what its
 * submitter's settlement counts (a request even if its usage is unreadable);
 * billed in claude_stats at once.
 */
void
claude_batch_usage(UsageCounts *to, const char *message, const char *request)
{
	ClaudeUsage u;
	double		price_in;
	double		price_out;
	double		cost;

	if (!claude_reply_usage(message, strlen(message), &u))
	{
		claude_usage_count_request(to, NULL, -1);
		return;
	}
	claude_price_of(request, strlen(request), &price_in, &price_out);
	cost = claude_usage_cost(&u, price_in, price_out, true);
	claude_usage_count_request(to, &u, cost);
	claude_stats_billed(&u, cost);
}


static void
set_item(const ClaudeBatchTables *t, ClaudeBatchTarget *target, const char *custom_id, const char *status,
		 const char *error)
{
	claude_spi_run(psprintf("UPDATE %s SET status = $3, error = $4 WHERE batch = $1 AND custom_id = $2",
							t->items),
				   4, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID},
				   (Datum[]) {Int64GetDatum(target->batch), CStringGetTextDatum(custom_id),
		CStringGetTextDatum(status), CStringGetTextDatum(claude_redact(error ? error : "", 0))},
				   SPI_OK_UPDATE);
}

/* What write_row writes, and why it wrote nothing. */
typedef struct RowWrite
{
	ClaudeBatchTarget *target;
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
write_row(ClaudeBatchTarget *target, const char *pk, text *completion)
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
apply_message(const ClaudeBatchTables *t, ClaudeBatchTarget *target, const char *custom_id,
			  const char *pk, const char *message, const char *request, Datum key,
			  bool key_null, UsageCounts *used)
{
	text	   *completion = claude_complete_text(message);
	char	   *not_written;

	if (completion == NULL)
	{
		set_item(t, target, custom_id, "errored", "the Claude API sent a result that is not a Messages response");
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
							  (Datum[]) {Int64GetDatum(target->batch), CStringGetTextDatum(custom_id),
			CStringGetTextDatum(message),
			not_written ? CStringGetTextDatum(claude_redact(not_written, 0)) : (Datum) 0},
							  not_written ? NULL : "   n") != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not record a batch result");
	if (not_written == NULL)
		target->written++;
	claude_batch_usage(used, message, request);
}

/* One result line, and what is known of it should it fail. */
typedef struct Line
{
	const ClaudeBatchTables *t;
	ClaudeBatchTarget *target;
	const char *text;
	char	   *custom_id;		/* once known */
	UsageReserve reserved;		/* by its request, if pending */
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
	bool		isnull;
	UsageCounts used;

	/* bytes from the network: no invalid text reaches a table */
	(void) pg_verifymbstr(l->text, strlen(l->text), false);
	if (l->target->lookup == NULL)
		prepare_lookup(l->t, l->target);
	if (SPI_execute_plan(l->target->lookup,
						 (Datum[]) {CStringGetTextDatum(l->text), Int64GetDatum(l->target->batch)},
						 NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "claude: could not read claude_batch_items");
	if (SPI_processed != 1)
	{
		elog(WARNING, "claude: Message Batch %s has a result for a request it does not know",
			 l->target->batch_id);
		return;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (strcmp(SPI_getvalue(tup, desc, 3), "pending") != 0)
		return;					/* written before a restart */
	l->custom_id = SPI_getvalue(tup, desc, 1);
	l->reserved.requests = 1;
	l->reserved.tokens = DatumGetInt64(SPI_getbinval(tup, desc, 9, &isnull));
	l->reserved.cost = claude_spi_float(tup, desc, 10);
	type = SPI_getvalue(tup, desc, 4);
	key = SPI_getbinval(tup, desc, 8, &key_null);
	if (!key_null)
		key = PointerGetDatum(PG_DETOAST_DATUM_COPY(key));
	memset(&used, 0, sizeof(used));
	if (type != NULL && strcmp(type, "succeeded") == 0)
		apply_message(l->t, l->target, l->custom_id, SPI_getvalue(tup, desc, 2),
					  SPI_getvalue(tup, desc, 5), SPI_getvalue(tup, desc, 7),
					  key, key_null, &used);
	else if (type != NULL &&
			 (strcmp(type, "errored") == 0 || strcmp(type, "canceled") == 0 ||
			  strcmp(type, "expired") == 0))
		set_item(l->t, l->target, l->custom_id, type, SPI_getvalue(tup, desc, 6));
	else
		set_item(l->t, l->target, l->custom_id, "errored",
				 psprintf("unknown result type \"%s\"", type ? type : ""));
	claude_reserve_settle(l->target->role, l->target->day, &l->reserved, &used);
}

/* One result line, in a subtransaction; a failure is the item's error. */
void
claude_batch_apply_line(const ClaudeBatchTables *t, ClaudeBatchTarget *target, const char *text)
{
	Line		l = {t, target, text, NULL};
	ErrorData  *edata = claude_subxact(apply_line_body, &l);

	if (edata == NULL)
		return;
	if (l.custom_id != NULL)
	{
		set_item(t, target, l.custom_id, "errored", edata->message);
		claude_reserve_settle(target->role, target->day, &l.reserved, NULL);
	}
	else
		elog(WARNING, "claude: a result line of Message Batch %s could not be read: %s",
			 target->batch_id, edata->message);
}

