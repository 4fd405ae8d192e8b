/*
 * complete_many.c
 *		claude_complete_many(prompts text[], ...): every prompt in flight at
 *		once through a pipe (client/pipe.c), a row per reply as it arrives.
 *
 * In a select list the function is called once per row (value-per-call):
 * each call hands over the next finished reply, waiting only when none is,
 * and submits more prompts as room frees, so the first row is there while
 * slower replies are still coming.  In FROM, which stores every row before
 * reading any, it fills the tuplestore itself.
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

/* a finished prompt not handed over yet (value-per-call) */
typedef struct ManyRow
{
	int32		ord;
	text	   *completion;
	char	   *error;
} ManyRow;

typedef struct Many
{
	ClaudeCompleteArgs args;
	ClaudeCall	proto;
	Datum	   *elems;
	bool	   *isnull;
	int			n;
	int			next;			/* the next prompt to submit */
	ClaudePipe *pipe;
	MemoryContext tmp;			/* requests and replies, reset every round */
	ClaudePipeDone emit;
	void	   *emit_arg;
	/* value-per-call: finished rows not handed over yet, in cxt */
	MemoryContext cxt;
	ManyRow    *rows;
	int			nrows;
	int			taken;
	MemoryContextCallback release;	/* gives back what is in flight */
} Many;

/* a row (ord, completion, error) */
static void
row_values(int64 tag, text *completion, const char *error,
		   Datum *values, bool *nulls)
{
	nulls[0] = false;
	nulls[1] = completion == NULL;
	nulls[2] = error == NULL;
	values[0] = Int32GetDatum((int32) tag);
	values[1] = completion ? PointerGetDatum(completion) : (Datum) 0;
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
}

static void
store_row(void *arg, int64 tag, text *completion, const char *error,
		  const ClaudeResult *result)
{
	ReturnSetInfo *rsinfo = arg;
	Datum		values[3];
	bool		nulls[3];

	row_values(tag, completion, error, values, nulls);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

static void
queue_row(void *arg, int64 tag, text *completion, const char *error,
		  const ClaudeResult *result)
{
	Many	   *m = arg;
	ManyRow    *row = &m->rows[m->nrows++];

	Assert(m->nrows <= m->n);
	row->ord = (int32) tag;
	row->completion = completion ?
		(text *) MemoryContextAlloc(m->cxt, VARSIZE_ANY(completion)) : NULL;
	if (completion)
		memcpy(row->completion, completion, VARSIZE_ANY(completion));
	row->error = error ? MemoryContextStrdup(m->cxt, error) : NULL;
}

/*
 * Read the arguments into a new state, in the current memory context; NULL
 * when there is nothing to do.
 */
static Many *
many_begin(FunctionCallInfo fcinfo)
{
	Many	   *m;
	ArrayType  *prompts;

	if (PG_ARGISNULL(0))
		return NULL;
	claude_require_shared();
	m = palloc0(sizeof(Many));
	claude_complete_args(fcinfo, 1, 2, 3, 4, &m->args);
	prompts = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(prompts) > 1)
		claude_invalid_argument("prompts must be a one-dimensional array");
	deconstruct_array(prompts, TEXTOID, -1, false, TYPALIGN_INT,
					  &m->elems, &m->isnull, &m->n);
	claude_call_init(&m->proto, CLAUDE_EP_MESSAGES, NULL);
	claude_call_cache_arg(&m->proto, fcinfo, 5, CLAUDE_CACHE_LOOKUP);
	m->pipe = claude_pipe_create(m->n);
	m->tmp = AllocSetContextCreate(CurrentMemoryContext, "claude_complete_many",
								   ALLOCSET_DEFAULT_SIZES);
	return m;
}

/*
 * Submit prompts while the pipe has room; then, unless one finished at
 * once or stop_early says so, wait for at least one reply.  Every
 * finished prompt goes to m->emit.  False once every prompt is done.
 */
static bool
many_round(Many *m, bool stop_early)
{
	MemoryContext old;
	int			before = m->nrows;

	if (m->next >= m->n && claude_pipe_outstanding(m->pipe) == 0)
		return false;
	old = MemoryContextSwitchTo(m->tmp);
	while (m->next < m->n && !claude_pipe_full(m->pipe))
	{
		char	   *prompt;
		ClaudeCall	call = m->proto;
		int			i = m->next;

		if (m->isnull[i])
			m->emit(m->emit_arg, i + 1, NULL, NULL, NULL);
		else if ((prompt = TextDatumGetCString(m->elems[i]))[0] == '\0')
			m->emit(m->emit_arg, i + 1, NULL, "prompt must not be empty", NULL);
		else
		{
			claude_call_set_body(&call, claude_complete_request(&m->args, prompt));
			if (!claude_pipe_submit(m->pipe, i + 1, &call, m->emit, m->emit_arg))
				break;
		}
		m->next++;
	}
	if (claude_pipe_outstanding(m->pipe) > 0 && !(stop_early && m->nrows > before))
		claude_pipe_collect(m->pipe, m->emit, m->emit_arg);
	MemoryContextSwitchTo(old);
	MemoryContextReset(m->tmp);
	return true;
}

/*
 * The state's memory is going: the caller stopped reading (LIMIT, a cursor
 * closed, a rescan), or an error ended the statement.  Give back the slots
 * of the prompts still in flight.  Their slots are kept (the pipe's owner
 * takes every reply), since a FETCH inside a savepoint rolled back must
 * not take them from a cursor that stays open; this callback gives them
 * back however the statement ends, even during an abort.
 */
static void
many_release(void *arg)
{
	claude_pipe_abandon(((Many *) arg)->pipe);
}

static Datum
many_materialize(FunctionCallInfo fcinfo)
{
	Many	   *m;

	InitMaterializedSRF(fcinfo, 0);
	if ((m = many_begin(fcinfo)) == NULL)
		return (Datum) 0;
	m->emit = store_row;
	m->emit_arg = fcinfo->resultinfo;
	while (many_round(m, false))
		;
	return (Datum) 0;
}

/*
 * Rows come back as replies arrive, each with the 1-based position of its
 * prompt in ord: ORDER BY ord for the input order.
 */
Datum
claude_complete_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FuncCallContext *funcctx;
	Many	   *m;

	/* FROM stores every row before reading one: fill its tuplestore */
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_ValuePerCall) ||
		(rsinfo->allowedModes & SFRM_Materialize_Preferred))
		return many_materialize(fcinfo);

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		TupleDesc	desc;

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(desc);
		m = many_begin(fcinfo);
		if (m != NULL)
		{
			m->rows = palloc(Max(m->n, 1) * sizeof(ManyRow));
			m->cxt = AllocSetContextCreate(CurrentMemoryContext,
										   "claude_complete_many rows",
										   ALLOCSET_DEFAULT_SIZES);
			m->emit = queue_row;
			m->emit_arg = m;
			claude_pipe_keep_slots(m->pipe);
			m->release.func = many_release;
			m->release.arg = m;
			MemoryContextRegisterResetCallback(funcctx->multi_call_memory_ctx,
											   &m->release);
		}
		funcctx->user_fctx = m;
		MemoryContextSwitchTo(old);
	}
	funcctx = SRF_PERCALL_SETUP();
	m = funcctx->user_fctx;

	while (m != NULL && m->taken == m->nrows)
	{
		/* every row handed over (each copied into its tuple): start afresh */
		m->taken = m->nrows = 0;
		MemoryContextReset(m->cxt);
		if (!many_round(m, true))
			m = NULL;
	}
	if (m != NULL)
	{
		ManyRow    *row = &m->rows[m->taken++];
		Datum		values[3];
		bool		nulls[3];

		row_values(row->ord, row->completion, row->error, values, nulls);
		SRF_RETURN_NEXT(funcctx,
						HeapTupleGetDatum(heap_form_tuple(funcctx->tuple_desc,
														  values, nulls)));
	}
	SRF_RETURN_DONE(funcctx);
}
