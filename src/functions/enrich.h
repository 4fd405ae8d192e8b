/*
 * enrich.h
 *		claude_enrich's view of a table, shared by its online and batch modes.
 */
#ifndef CLAUDE_ENRICH_H
#define CLAUDE_ENRICH_H

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "client/message.h"
#include "client/request.h"
#include "client/structured.h"
#include "common/json.h"
#include "common/template.h"

typedef struct EnrichRow
{
	Datum	   *pk;				/* primary key values */
	char	   *key;			/* the key as text, for reports */
	char	   *pkjson;			/* the key as a jsonb object (batches only) */
	char	   *inputs_md5;		/* of its prompt's values (batches only) */
	char	   *prompt;
} EnrichRow;

typedef struct Enrich
{
	MemoryContext cxt;			/* lives across commits */
	Oid			relid;
	char	   *relname;
	char	   *target;
	int			npk;
	Oid		   *pk_types;
	int16	   *pk_len;
	bool	   *pk_byval;
	ClaudeTemplate *tmpl;
	ClaudeCompleteArgs args;
	ClaudeCall	proto;			/* each row's call: payer, cache */
	ClaudeReplyCheck check;		/* labels or schema: what a reply must be;
								 * check.schema NULL: free text */
	int			batch_size;
	char	   *where_clause;	/* the caller's filter, checked; NULL: none */
	int64		limit_rows;		/* rows to read at most; -1: all */
	int64		read;			/* rows read so far */
	SPIPlanPtr	first;			/* the first rows */
	SPIPlanPtr	next;			/* rows after the last one read */
	SPIPlanPtr	update;
	Datum	   *last;			/* primary key of the last row read */
	bool		have_last;
	bool		exhausted;
	bool		want_pkjson;	/* read each key as jsonb too */
	EnrichRow **pending;		/* read, not yet sent */
	int			npending;
	int			pending_pos;
	EnrichRow **inflight;		/* by tag */
	int64		total;
	int64		done;			/* rows written */
	int64		failed;			/* rows with an error */
	int64		cached;			/* rows answered by the cache */
	int64		requests;		/* requests made, their retries included */
	ClaudeUsage usage;			/* of the replies */
	int			write_errcode;	/* SQLSTATE of claude_enrich_write's failure */
	int64		since_commit;
	StringInfoData failures;
	TimestampTz started;
	TimestampTz last_notice;
} Enrich;

/* enrich_rows.c */
extern void claude_enrich_check_where(const char *clause);
extern void claude_enrich_prepare(Enrich *e, const char *target,
								  const char *template_text, bool only_missing);
extern void claude_enrich_read_rows(Enrich *e);
extern void claude_enrich_free_row(EnrichRow *row);
extern char *claude_enrich_write(Enrich *e, EnrichRow *row, text *value);
extern void claude_enrich_call(Enrich *e, EnrichRow *row, ClaudeCall *c);
extern bool claude_enrich_cost(const char *model, const ClaudeUsage *u, bool batch,
							   Numeric *cost);

/* enrich_dry.c: dry_run => true */
extern void claude_enrich_dry_run(Enrich *e, bool batch);

/* enrich.c */
extern void claude_enrich_check(FunctionCallInfo fcinfo, int labels_arg, int schema_arg,
								ClaudeReplyCheck *check);

/* batch.c: mode => 'batch' */
extern void claude_enrich_batch(Enrich *e, FunctionCallInfo fcinfo);

#endif
