/*
 * complete_many.c
 *		claude_complete_many(prompts text[], ...): every prompt in flight at
 *		once through a pipe (client/pipe.c), a row per reply as it arrives.
 */
#include "postgres.h"

#include "funcapi.h"

#include "utils/builtins.h"

#include "client/cache.h"
#include "client/message.h"
#include "client/pipe.h"
#include "functions/complete.h"

#include "common/spi.h"

PG_FUNCTION_INFO_V1(claude_complete_many);

static void
emit_row(void *arg, int64 tag, text *completion, const char *error,
		 const ClaudeResult *result)
{
	ReturnSetInfo *rsinfo = arg;
	Datum		values[3];
	bool		nulls[3] = {false, completion == NULL, error == NULL};

	values[0] = Int32GetDatum((int32) tag);
	values[1] = completion ? PointerGetDatum(completion) : (Datum) 0;
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * Rows come back as replies arrive, each with the 1-based position of its
 * prompt in ord: ORDER BY ord for the input order.
 */
Datum
claude_complete_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ClaudeCompleteArgs args;
	ArrayType  *prompts;
	Datum	   *elems;
	bool	   *isnull;
	int			n;
	int			next = 0;
	ClaudePipe *pipe;
	ClaudeCall	proto;
	MemoryContext tmp;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	claude_require_shared();
	claude_complete_args(fcinfo, 1, 2, 3, 4, &args);
	prompts = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(prompts) > 1)
		claude_invalid_argument("prompts must be a one-dimensional array");
	deconstruct_array(prompts, TEXTOID, -1, false, TYPALIGN_INT, &elems, &isnull, &n);

	claude_call_init(&proto, CLAUDE_EP_MESSAGES, NULL);
	claude_call_cache_arg(&proto, fcinfo, 5, CLAUDE_CACHE_LOOKUP);
	pipe = claude_pipe_create(n);
	tmp = AllocSetContextCreate(CurrentMemoryContext, "claude_complete_many",
								ALLOCSET_DEFAULT_SIZES);
	while (next < n || claude_pipe_outstanding(pipe) > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(tmp);

		while (next < n && !claude_pipe_full(pipe))
		{
			char	   *prompt;
			ClaudeCall	call = proto;

			if (isnull[next])
				emit_row(rsinfo, next + 1, NULL, NULL, NULL);
			else if ((prompt = TextDatumGetCString(elems[next]))[0] == '\0')
				emit_row(rsinfo, next + 1, NULL, "prompt must not be empty", NULL);
			else
			{
				claude_call_set_body(&call, claude_complete_request(&args, prompt));
				if (!claude_pipe_submit(pipe, next + 1, &call, emit_row, rsinfo))
					break;
			}
			next++;
		}
		if (claude_pipe_outstanding(pipe) > 0)
			claude_pipe_collect(pipe, emit_row, rsinfo);
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
	}
	return (Datum) 0;
}
