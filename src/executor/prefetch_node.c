/*
 * prefetch_node.c
 *		The ClaudePrefetch scan: reads rows ahead of the one it hands on, so
 *		their claude_* calls are in flight together, and hands them on in
 *		their order with the values a one-at-a-time run gives.
 *
 * The plan (prefetch_plan.c) put it above the node that made the calls:
 * that node now computes everything else as columns, and this one holds
 * the calls (custom_exprs) and the filter and target list that use them.
 * A row read is copied into the window and its calls evaluated in capture
 * mode (prefetch_window.c); the oldest row is then evaluated for real, in
 * replay mode.  The window grows as rows are handed on (1, 2, 4, ... up to
 * claude.prefetch, read when the statement starts), and never holds more
 * rows than a known LIMIT still needs.  EvalPlanQual rechecks and
 * claude.prefetch = 0 go one row at a time.
 *
 * ExecEnd does not run after an error, so the window's calls are let go
 * from its memory context's reset callback; an error raised here decides
 * how: a cancel or statement_timeout cancels them, any other error
 * detaches them and their paid replies still reach the cache.
 */
#include "postgres.h"

#include "commands/explain.h"
#if PG_VERSION_NUM >= 180000
#include "commands/explain_format.h"
#endif
#include "executor/executor.h"
#include "nodes/extensible.h"
#include "utils/errcodes.h"
#include "utils/memutils.h"

#include "common/guc.h"

#include "executor/prefetch_node.h"
#include "executor/prefetch_window.h"

typedef struct PrefetchState
{
	CustomScanState css;
	List	   *calls;			/* ExprState * of the calls read ahead */
	ExprState  *limit_offset;	/* a LIMIT above: its OFFSET and count */
	ExprState  *limit_count;
	int			max_rows;		/* claude.prefetch when the statement began */
	int64		bound;			/* rows that can still be wanted; -1: unknown */
	bool		bound_read;
	ClaudeWindow *window;
	TupleTableSlot **rows;		/* a ring of rows read ahead */
	int			head;
	int			nrows;
	int			target;			/* rows to hold now: grows as rows go on */
	int64		handed;			/* rows handed on or filtered out */
	bool		drop_head;		/* handed on: forget it at the next call */
	bool		child_done;
} PrefetchState;

static Node *create_state(CustomScan *cscan);
static void begin_scan(CustomScanState *node, EState *estate, int eflags);
static TupleTableSlot *exec_scan(CustomScanState *node);
static void end_scan(CustomScanState *node);
static void rescan(CustomScanState *node);
static void explain_scan(CustomScanState *node, List *ancestors, ExplainState *es);

const CustomScanMethods claude_prefetch_scan_methods = {
	.CustomName = "ClaudePrefetch",
	.CreateCustomScanState = create_state,
};

static const CustomExecMethods exec_methods = {
	.CustomName = "ClaudePrefetch",
	.BeginCustomScan = begin_scan,
	.ExecCustomScan = exec_scan,
	.EndCustomScan = end_scan,
	.ReScanCustomScan = rescan,
	.ExplainCustomScan = explain_scan,
};

void
claude_prefetch_register(void)
{
	RegisterCustomScanMethods(&claude_prefetch_scan_methods);
	claude_window_install();
}

static Node *
create_state(CustomScan *cscan)
{
	PrefetchState *ps = (PrefetchState *) newNode(sizeof(PrefetchState), T_CustomScanState);

	ps->css.methods = &exec_methods;
	return (Node *) ps;
}

static void
begin_scan(CustomScanState *node, EState *estate, int eflags)
{
	PrefetchState *ps = (PrefetchState *) node;
	CustomScan *cscan = (CustomScan *) node->ss.ps.plan;
	List	   *limit = linitial(cscan->custom_private);
	TupleDesc	desc = node->ss.ss_ScanTupleSlot->tts_tupleDescriptor;

	outerPlanState(ps) = ExecInitNode(outerPlan(cscan), estate, eflags);
	ps->calls = ExecInitExprList(cscan->custom_exprs, &node->ss.ps);
	if (limit != NIL)
	{
		ps->limit_offset = ExecInitExpr(linitial(limit), &node->ss.ps);
		ps->limit_count = ExecInitExpr(lsecond(limit), &node->ss.ps);
	}
	/* EvalPlanQual rechecks one row: it goes as it is */
	ps->max_rows = estate->es_epq_active ? 0 : claude_prefetch;
	ps->bound = -1;
	ps->target = 1;
	if (ps->max_rows == 0 || (eflags & EXEC_FLAG_EXPLAIN_ONLY))
		return;
	ps->window = claude_window_create(ps->max_rows);
	ps->rows = palloc(ps->max_rows * sizeof(TupleTableSlot *));
	for (int i = 0; i < ps->max_rows; i++)
		ps->rows[i] = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
}

/* A LIMIT's count and offset, once the statement runs: its parameters are set. */
static void
read_bound(PrefetchState *ps)
{
	ExprContext *econtext = ps->css.ss.ps.ps_ExprContext;
	bool		isnull;
	Datum		count;

	ps->bound_read = true;
	if (ps->limit_count == NULL)
		return;
	count = ExecEvalExprSwitchContext(ps->limit_count, econtext, &isnull);
	if (isnull || DatumGetInt64(count) < 0)
		return;
	ps->bound = DatumGetInt64(count);
	if (ps->limit_offset)
	{
		Datum		offset = ExecEvalExprSwitchContext(ps->limit_offset, econtext, &isnull);

		if (!isnull && DatumGetInt64(offset) > 0)
			ps->bound = DatumGetInt64(offset) > PG_INT64_MAX - ps->bound ? -1 :
				ps->bound + DatumGetInt64(offset);
	}
}

/* Make row the scan tuple the filter, the calls and the target list read. */
static void
load_row(PrefetchState *ps, TupleTableSlot *row)
{
	TupleTableSlot *scan = ps->css.ss.ss_ScanTupleSlot;
	int			natts = scan->tts_tupleDescriptor->natts;

	slot_getallattrs(row);
	ExecClearTuple(scan);
	memcpy(scan->tts_values, row->tts_values, natts * sizeof(Datum));
	memcpy(scan->tts_isnull, row->tts_isnull, natts * sizeof(bool));
	ExecStoreVirtualTuple(scan);
	ps->css.ss.ps.ps_ExprContext->ecxt_scantuple = scan;
}

/* Read rows ahead up to the window, and start their calls. */
static void
read_ahead(PrefetchState *ps)
{
	ExprContext *econtext = ps->css.ss.ps.ps_ExprContext;
	int			want = ps->target;

	if (ps->bound >= 0)
		want = (int) Min((int64) want, ps->bound - ps->handed);
	while (ps->nrows < want && !ps->child_done)
	{
		TupleTableSlot *slot = ExecProcNode(outerPlanState(ps));
		int			i = (ps->head + ps->nrows) % ps->max_rows;
		void	   *saved;
		ListCell   *lc;

		if (TupIsNull(slot))
		{
			ps->child_done = true;
			break;
		}
		ExecCopySlot(ps->rows[i], slot);
		ps->nrows++;
		load_row(ps, ps->rows[i]);
		saved = claude_window_enter(ps->window, i, CLAUDE_WINDOW_CAPTURE);
		foreach(lc, ps->calls)
		{
			bool		isnull;

			(void) ExecEvalExprSwitchContext(lfirst(lc), econtext, &isnull);
		}
		claude_window_leave(saved);
		ResetExprContext(econtext);
	}
	claude_window_pump(ps->window);
}

/* The oldest row, evaluated for real: true if it passes the filter. */
static TupleTableSlot *
hand_on(PrefetchState *ps, TupleTableSlot *row, bool replay)
{
	ExprContext *econtext = ps->css.ss.ps.ps_ExprContext;
	ExprState  *qual = ps->css.ss.ps.qual;
	ProjectionInfo *proj = ps->css.ss.ps.ps_ProjInfo;
	TupleTableSlot *result = NULL;
	void	   *saved = NULL;

	load_row(ps, row);
	if (replay)
		saved = claude_window_enter(ps->window, ps->head, CLAUDE_WINDOW_REPLAY);
	if (qual == NULL || ExecQual(qual, econtext))
		result = proj ? ExecProject(proj) : ps->css.ss.ss_ScanTupleSlot;
	if (replay)
		claude_window_leave(saved);
	return result;
}

static TupleTableSlot *
exec_window(PrefetchState *ps)
{
	for (;;)
	{
		TupleTableSlot *result;

		read_ahead(ps);
		if (ps->nrows == 0)
			return NULL;
		result = hand_on(ps, ps->rows[ps->head], true);
		ps->handed++;
		ps->target = (int) Min((int64) ps->max_rows, Max(1, 2 * ps->handed));
		if (result != NULL)
		{
			/* its values stay valid until the next call */
			ps->drop_head = true;
			return result;
		}
		claude_window_forget_row(ps->window, ps->head);
		ps->head = (ps->head + 1) % ps->max_rows;
		ps->nrows--;
		ResetExprContext(ps->css.ss.ps.ps_ExprContext);
	}
}

static TupleTableSlot *
exec_scan(CustomScanState *node)
{
	PrefetchState *ps = (PrefetchState *) node;
	TupleTableSlot *volatile result = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	void	   *outer = claude_window_current();

	ResetExprContext(node->ss.ps.ps_ExprContext);
	if (ps->window == NULL)
	{
		for (;;)
		{
			TupleTableSlot *slot = ExecProcNode(outerPlanState(ps));

			if (TupIsNull(slot))
				return NULL;
			if ((result = hand_on(ps, slot, false)) != NULL)
				return result;
			ResetExprContext(node->ss.ps.ps_ExprContext);
		}
	}
	if (ps->drop_head)
	{
		claude_window_forget_row(ps->window, ps->head);
		ps->head = (ps->head + 1) % ps->max_rows;
		ps->nrows--;
		ps->drop_head = false;
	}
	if (!ps->bound_read)
		read_bound(ps);
	PG_TRY();
	{
		result = exec_window(ps);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		bool		cancel;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		cancel = edata->sqlerrcode == ERRCODE_QUERY_CANCELED;
		FreeErrorData(edata);
		claude_window_release(ps->window, cancel);
		claude_window_leave(outer);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return result;
}

/* Everything read ahead goes; paid replies still reach the cache. */
static void
forget_all(PrefetchState *ps)
{
	if (ps->window == NULL)
		return;
	claude_window_release(ps->window, false);
	while (ps->nrows > 0)
	{
		claude_window_forget_row(ps->window, ps->head);
		ExecClearTuple(ps->rows[ps->head]);
		ps->head = (ps->head + 1) % ps->max_rows;
		ps->nrows--;
	}
	ps->drop_head = false;
}

static void
end_scan(CustomScanState *node)
{
	PrefetchState *ps = (PrefetchState *) node;

	forget_all(ps);
	if (ps->rows)
		for (int i = 0; i < ps->max_rows; i++)
			ExecDropSingleTupleTableSlot(ps->rows[i]);
	ExecEndNode(outerPlanState(ps));
}

static void
rescan(CustomScanState *node)
{
	PrefetchState *ps = (PrefetchState *) node;
	PlanState  *child = outerPlanState(ps);

	forget_all(ps);
	ps->head = 0;
	ps->handed = 0;
	ps->target = 1;
	ps->child_done = false;
	ps->bound_read = false;
	ps->bound = -1;
	if (child->chgParam == NULL)
		ExecReScan(child);
}

static void
explain_scan(CustomScanState *node, List *ancestors, ExplainState *es)
{
	PrefetchState *ps = (PrefetchState *) node;

	ExplainPropertyInteger("Prefetch", "rows", ps->max_rows, es);
	if (es->analyze && ps->window)
		ExplainPropertyInteger("Requests Read Ahead", NULL,
							   claude_window_sent(ps->window), es);
}
