/*
 * enrich_dry.c
 *		claude_enrich(dry_run => true): the rows a run would send and what
 *		they would cost, paying nothing.  Caller: enrich.c.
 *
 * Rows are read as a run reads them (where_clause, limit_rows,
 * only_missing) and nothing is written.  A row whose request the cache
 * answers is counted cached; every other one is a request.  Input tokens
 * come from the free count_tokens endpoint, for the first SAMPLE rows to
 * send, extrapolated to the rest; output tokens are max_tokens for each
 * request, an upper bound; the cost is priced from both as a run would be
 * (mode => 'batch': at the batch price).  A failing count (an unknown
 * model, a bad key) raises, as the run would fail.
 */
#include "postgres.h"

#include <math.h>

#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "client/message.h"
#include "common/json.h"

#include "functions/enrich.h"

#define SAMPLE			100		/* rows whose input tokens are counted */
#define SHOWN			3		/* prompts shown in NOTICEs */
#define SHOWN_CHARS		300

/* count_tokens' call for a row: the prompt and system the row's request has */
static void
count_call(Enrich *e, const char *prompt, ClaudeCall *c)
{
	claude_call_init(c, CLAUDE_EP_COUNT_TOKENS, NULL);
	claude_call_set_body(c, claude_count_tokens_request(e->args.model, e->args.system, prompt));
	c->cache = e->proto.cache == CLAUDE_CACHE_OFF ? CLAUDE_CACHE_OFF : CLAUDE_CACHE_LOOKUP;
	c->cache_nsp = e->proto.cache_nsp;
	c->bulk = true;
}

/* A finished count_tokens call's count; a bad one raises (ZC002). */
static int64
count_of(ClaudeCall *c)
{
	return claude_count_tokens_of(c->state == CLAUDE_CALL_HIT ? c->hit :
								  c->reply ? claude_json_parse(c->reply, strlen(c->reply)) : NULL,
								  &c->result);
}

/*
 * Count the input tokens of prompts, many calls in flight: each is
 * started when a slot is free (the oldest one waits for one), and
 * collected in order.
 */
static int64
count_input(Enrich *e, char **prompts, int n)
{
	ClaudeCall *calls = palloc0(n * sizeof(ClaudeCall));
	int			started = 0;
	int64		sum = 0;

	for (int i = 0; i < n; i++)
		count_call(e, prompts[i], &calls[i]);
	for (int done = 0; done < n; done++)
	{
		ClaudeCall *c = &calls[done];

		for (; started < n; started++)
		{
			calls[started].wait_slot = started == done;
			if (claude_call_start(&calls[started]) == CLAUDE_CALL_NEW)
				break;
		}
		if (c->state == CLAUDE_CALL_SENT)
		{
			claude_call_wait(c);
			(void) claude_call_finish(c, NULL);
		}
		sum += count_of(c);
		CHECK_FOR_INTERRUPTS();
	}
	return sum;
}

void
claude_enrich_dry_run(Enrich *e, bool batch)
{
	char	  **sample = palloc(SAMPLE * sizeof(char *));
	int			nsample = 0;
	int64		nrows = 0;
	int64		counted;
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "claude_enrich dry run",
											  ALLOCSET_DEFAULT_SIZES);

	while (!e->exhausted)
	{
		MemoryContext old = MemoryContextSwitchTo(tmp);

		claude_enrich_read_rows(e);
		for (int i = 0; i < e->npending; i++)
		{
			EnrichRow  *row = e->pending[i];
			ClaudeCall	call;

			if (nrows++ < SHOWN)
				ereport(NOTICE,
						(errmsg("claude_enrich dry run: the prompt of row %s: %s%s", row->key,
								pnstrdup(row->prompt, pg_mbcliplen(row->prompt, strlen(row->prompt), SHOWN_CHARS)),
								strlen(row->prompt) > SHOWN_CHARS ? "..." : "")));
			claude_enrich_call(e, row, &call);
			if (claude_call_lookup(&call))
				e->cached++;
			else
			{
				if (nsample < SAMPLE)
					sample[nsample++] = MemoryContextStrdup(e->cxt, row->prompt);
				e->requests++;
			}
			claude_enrich_free_row(row);
		}
		e->npending = 0;
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(tmp);

	counted = count_input(e, sample, nsample);
	e->usage.input = nsample == e->requests ? counted :
		round((double) counted * e->requests / nsample);
	e->usage.output = (double) e->requests * e->args.max_tokens;
	ereport(NOTICE,
			(errmsg("claude_enrich dry run: %lld rows of %s, %lld answered by the cache, %lld requests to send%s",
					(long long) nrows, e->relname, (long long) e->cached,
					(long long) e->requests, batch ? " in Message Batches" : ""),
			 nsample == e->requests ?
			 errdetail("input_tokens counted (count_tokens) for every request; output_tokens is max_tokens (%d) for each, an upper bound; cost_usd is priced from both%s.",
					   e->args.max_tokens, batch ? " at the batch price" : "") :
			 errdetail("input_tokens counted (count_tokens) for the first %d requests and extrapolated to %lld; output_tokens is max_tokens (%d) for each, an upper bound; cost_usd is priced from both%s.",
					   nsample, (long long) e->requests, e->args.max_tokens,
					   batch ? " at the batch price" : "")));
}
