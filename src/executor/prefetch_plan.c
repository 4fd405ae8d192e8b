/*
 * prefetch_plan.c
 *		A planner_hook that puts a ClaudePrefetch scan (prefetch_node.c)
 *		above each plan node whose target list or filter calls claude_*
 *		functions once per row, so those calls go out together.
 *
 * Only the finished plan is changed, and only along the path of nodes
 * whose rows reach the top in order, and of each CTE's plan, which runs
 * once (not the inner side of a join, not SubPlans or other InitPlans,
 * not below LockRows or in MERGE).  The node keeps
 * its target list's and filter's other parts: every call-free part is
 * pushed down to be computed as a column of the node below, and the calls
 * and what uses them move up.  A call is read ahead only where it is
 * always evaluated: not under CASE, COALESCE, AND/OR, in a filter after
 * another paid one, in an aggregate or a SubPlan, nor with another
 * volatile function in the same node or a claude_* call in its arguments.
 * A node whose filter calls claude_* gets two scans: one that filters
 * above it, and one that computes its target list above that, so no call
 * is made for a row the filter drops.
 */
#include "postgres.h"

#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/planmain.h"
#include "optimizer/planner.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "executor/prefetch_node.h"
#include "executor/prefetch_plan.h"

/* the scalar functions whose calls may be read ahead, by C symbol */
static const char *const prefetched[] = {
	"claude_complete", "claude_messages", "claude_extract", "claude_classify",
	"claude_count_tokens", "claude_if"
};

typedef struct Rewrite
{
	int			next_id;		/* plan_node_id for the scans added */
	bool		changed;
} Rewrite;

typedef struct Split
{
	List	   *below;			/* the target list of the node below */
	List	   *calls;			/* calls read ahead, over its columns */
	bool		conditional;	/* inside an expression that may skip them */
} Split;

typedef struct KnownFunction
{
	Oid			funcid;			/* hash key */
	bool		prefetched;
} KnownFunction;

static planner_hook_type prev_planner = NULL;

/* what each function seen is, until pg_proc changes */
static HTAB *known = NULL;

static void
forget_known(Datum arg, int cacheid, uint32 hashvalue)
{
	if (known != NULL)
	{
		hash_destroy(known);
		known = NULL;
	}
}

static bool
lookup_prefetched(Oid funcid)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	bool		ours = false;

	if (!HeapTupleIsValid(tup))
		return false;
	if (((Form_pg_proc) GETSTRUCT(tup))->prolang == ClanguageId)
	{
		bool		binnull,
					srcnull;
		Datum		bin = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &binnull);
		Datum		src = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &srcnull);

		if (!binnull && !srcnull &&
			strcmp(TextDatumGetCString(bin), "$libdir/claude") == 0)
		{
			char	   *symbol = TextDatumGetCString(src);

			for (int i = 0; i < lengthof(prefetched) && !ours; i++)
				ours = strcmp(symbol, prefetched[i]) == 0;
		}
	}
	ReleaseSysCache(tup);
	return ours;
}

/* Whether funcid is one of the calls read ahead: planned often, so cached. */
static bool
is_prefetched(Oid funcid)
{
	KnownFunction *entry;
	bool		found;

	if (known == NULL)
	{
		HASHCTL		ctl;
		static bool registered = false;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(KnownFunction);
		ctl.hcxt = CacheMemoryContext;
		known = hash_create("claude read-ahead functions", 64, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		if (!registered)
		{
			CacheRegisterSyscacheCallback(PROCOID, forget_known, (Datum) 0);
			registered = true;
		}
	}
	entry = hash_search(known, &funcid, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->prefetched;
	/* looked up first: the lookup may invalidate the table */
	found = lookup_prefetched(funcid);
	if (known != NULL)
	{
		entry = hash_search(known, &funcid, HASH_ENTER, NULL);
		entry->prefetched = found;
	}
	return found;
}

static bool
is_call(Node *node)
{
	return node != NULL && IsA(node, FuncExpr) && is_prefetched(((FuncExpr *) node)->funcid);
}

static bool
has_call(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (is_call(node))
		return true;
	return expression_tree_walker(node, has_call, context);
}

/* A call with a call in its arguments: it is left as it is. */
static bool
has_nested_call(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (is_call(node))
		return expression_tree_walker(node, has_call, NULL);
	return expression_tree_walker(node, has_nested_call, context);
}

static bool
volatile_other(Oid funcid, void *context)
{
	return func_volatile(funcid) == PROVOLATILE_VOLATILE && !is_prefetched(funcid);
}

/* Another volatile function: its calls must keep their order with ours. */
static bool
has_other_volatile(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, NextValueExpr) ||
		check_functions_in_node(node, volatile_other, context))
		return true;
	return expression_tree_walker(node, has_other_volatile, context);
}

/* A placeholder bound by an enclosing expression: it cannot move alone. */
static bool
has_placeholder(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, CaseTestExpr) || IsA(node, CoerceToDomainValue))
		return true;
	return expression_tree_walker(node, has_placeholder, context);
}

/* Expressions whose arguments are always evaluated, all of them. */
static bool
evaluates_all(Node *node)
{
	switch (nodeTag(node))
	{
		case T_FuncExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_ScalarArrayOpExpr:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_ConvertRowtypeExpr:
		case T_CollateExpr:
		case T_CoerceToDomain:
		case T_ArrayExpr:
		case T_RowExpr:
		case T_MinMaxExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_FieldSelect:
			return true;
		case T_BoolExpr:
			return ((BoolExpr *) node)->boolop == NOT_EXPR;
		default:
			return false;
	}
}

/* A column of the node below computing expr (an existing one if equal). */
static Node *
push_down(Split *split, Node *expr)
{
	ListCell   *lc;
	AttrNumber	attno = 0;

	foreach(lc, split->below)
	{
		TargetEntry *te = lfirst(lc);

		if (equal(te->expr, expr))
		{
			attno = te->resno;
			break;
		}
	}
	if (attno == 0)
	{
		attno = list_length(split->below) + 1;
		split->below = lappend(split->below,
							   makeTargetEntry((Expr *) copyObject(expr), attno, NULL, false));
	}
	return (Node *) makeVar(INDEX_VAR, attno, exprType(expr), exprTypmod(expr),
							exprCollation(expr), 0);
}

static Node *
split_expr(Node *node, Split *split)
{
	Node	   *result;
	bool		conditional = split->conditional;

	if (node == NULL)
		return NULL;
	/* the walkers take a CaseWhen only inside its CaseExpr, already conditional */
	if (IsA(node, List) || IsA(node, CaseWhen))
		return expression_tree_mutator(node, split_expr, split);
	if (IsA(node, Const))
		return copyObject(node);
	/* what only its own node can evaluate goes down whole, calls and all */
	if (IsA(node, Aggref) || IsA(node, WindowFunc) || IsA(node, GroupingFunc) ||
		IsA(node, SubPlan) || IsA(node, AlternativeSubPlan))
		return push_down(split, node);
	if (!has_call(node, NULL))
	{
		if (!has_placeholder(node, NULL))
			return push_down(split, node);
		return expression_tree_mutator(node, split_expr, split);
	}
	if (is_call(node))
	{
		result = expression_tree_mutator(node, split_expr, split);
		if (!conditional && !list_member(split->calls, result))
			split->calls = lappend(split->calls, result);
		return result;
	}
	if (!evaluates_all(node))
		split->conditional = true;
	result = expression_tree_mutator(node, split_expr, split);
	split->conditional = conditional;
	return result;
}

static CustomScan *
make_scan(Plan *below, List *tlist, List *qual, List *calls, List *limit, Rewrite *rw)
{
	CustomScan *cs = makeNode(CustomScan);
	Plan	   *plan = &cs->scan.plan;
	ListCell   *lc;

	foreach(lc, below->targetlist)
	{
		TargetEntry *te = lfirst(lc);
		Node	   *e = (Node *) te->expr;

		cs->custom_scan_tlist =
			lappend(cs->custom_scan_tlist,
					makeTargetEntry((Expr *) makeVar(OUTER_VAR, te->resno, exprType(e),
													 exprTypmod(e), exprCollation(e), 0),
									te->resno, te->resname, false));
	}
	plan->startup_cost = below->startup_cost;
	plan->total_cost = below->total_cost;
	plan->plan_rows = below->plan_rows;
	plan->plan_width = below->plan_width;
	plan->parallel_aware = false;
	plan->parallel_safe = false;
	plan->plan_node_id = rw->next_id++;
	plan->targetlist = tlist;
	plan->qual = qual;
	plan->lefttree = below;
	plan->extParam = bms_copy(below->extParam);
	plan->allParam = bms_copy(below->allParam);
	cs->scan.scanrelid = 0;
	cs->custom_exprs = calls;
	cs->custom_private = list_make1(limit);
	cs->methods = &claude_prefetch_scan_methods;
	rw->changed = true;
	return cs;
}

/* The target list's calls move up into a scan above p, or NULL. */
static CustomScan *
split_tlist(Plan *p, List *limit, Rewrite *rw)
{
	Split		split = {0};
	List	   *tlist = NIL;
	ListCell   *lc;

	if (!has_call((Node *) p->targetlist, NULL))
		return NULL;
	foreach(lc, p->targetlist)
	{
		TargetEntry *te = flatCopyTargetEntry(lfirst(lc));

		te->expr = (Expr *) split_expr((Node *) te->expr, &split);
		tlist = lappend(tlist, te);
	}
	if (split.calls == NIL)
		return NULL;
	p->targetlist = split.below;
	return make_scan(p, tlist, NIL, split.calls, limit, rw);
}

/*
 * The filter's calls move up into a scan above p, or NULL: the quals from
 * the first with a call on, after which calls are conditional.  An inner
 * join's join quals are filters too.
 */
static CustomScan *
split_qual(Plan *p, List *limit, Rewrite *rw)
{
	Split		split = {0};
	Join	   *join = NULL;
	List	   *quals = p->qual;
	List	   *keep = NIL;
	List	   *moved = NIL;
	List	   *tlist = NIL;
	ListCell   *lc;

	if (IsA(p, NestLoop) || IsA(p, HashJoin) || IsA(p, MergeJoin))
	{
		join = (Join *) p;
		if (join->jointype == JOIN_INNER)
			quals = list_concat_copy(join->joinqual, p->qual);
		else if (has_call((Node *) join->joinqual, NULL))
			return NULL;
	}
	if (!has_call((Node *) quals, NULL))
		return NULL;
	split.below = list_copy(p->targetlist);
	foreach(lc, quals)
	{
		Node	   *q = lfirst(lc);

		if (moved == NIL && !has_call(q, NULL))
			keep = lappend(keep, q);
		else
		{
			split.conditional = moved != NIL;
			moved = lappend(moved, split_expr(q, &split));
		}
	}
	if (split.calls == NIL)
		return NULL;
	foreach(lc, p->targetlist)
	{
		TargetEntry *te = flatCopyTargetEntry(lfirst(lc));
		Node	   *e = (Node *) te->expr;

		te->expr = (Expr *) makeVar(INDEX_VAR, te->resno, exprType(e), exprTypmod(e),
									exprCollation(e), 0);
		tlist = lappend(tlist, te);
	}
	if (join && join->jointype == JOIN_INNER)
	{
		join->joinqual = keep;
		p->qual = NIL;
	}
	else
		p->qual = keep;
	p->targetlist = split.below;
	return make_scan(p, tlist, moved, split.calls, limit, rw);
}

/* Read ahead above p, if it calls claude_* functions where it may. */
static void
rewrite_node(Plan **pp, bool filters, List *limit, Rewrite *rw)
{
	Plan	   *p = *pp;
	Node	   *joinqual = NULL;
	CustomScan *proj;
	CustomScan *filter = NULL;

	if (IsA(p, NestLoop) || IsA(p, HashJoin) || IsA(p, MergeJoin))
		joinqual = (Node *) ((Join *) p)->joinqual;
	if (!has_call((Node *) p->targetlist, NULL) &&
		!(filters && (has_call((Node *) p->qual, NULL) || has_call(joinqual, NULL))))
		return;
	if (has_other_volatile((Node *) p->targetlist, NULL) ||
		has_other_volatile((Node *) p->qual, NULL) || has_other_volatile(joinqual, NULL) ||
		has_nested_call((Node *) p->targetlist, NULL) ||
		has_nested_call((Node *) p->qual, NULL) || has_nested_call(joinqual, NULL))
		return;
	proj = split_tlist(p, limit, rw);
	if (filters)
		filter = split_qual(p, limit, rw);
	if (proj && filter)
		proj->scan.plan.lefttree = &filter->scan.plan;
	if (proj)
		*pp = &proj->scan.plan;
	else if (filter)
		*pp = &filter->scan.plan;
}

/*
 * Whether a LIMIT's expression is known when the statement starts:
 * constants and the statement's parameters (LIMIT $1, with its cast), no
 * column, subquery or volatile function.
 */
static bool
unknown_at_start(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) || IsA(node, SubPlan) || IsA(node, AlternativeSubPlan) ||
		(IsA(node, Param) && ((Param *) node)->paramkind != PARAM_EXTERN))
		return true;
	return expression_tree_walker(node, unknown_at_start, context);
}

/* A LIMIT's offset and count, if the node can read them when it starts. */
static List *
limit_of(Limit *l)
{
	Node	   *parts[2] = {l->limitOffset, l->limitCount};

	if (l->limitOption != LIMIT_OPTION_COUNT || l->limitCount == NULL)
		return NIL;
	for (int i = 0; i < 2; i++)
		if (parts[i] != NULL &&
			(unknown_at_start(parts[i], NULL) || contain_volatile_functions(parts[i])))
			return NIL;
	return list_make2(copyObject(parts[0]), copyObject(parts[1]));
}

/*
 * Walk down the plan from *pp along the nodes whose rows go up in order;
 * limit: the LIMIT that bounds the rows *pp hands on, or NIL.
 */
static void
walk(Plan **pp, List *limit, Rewrite *rw)
{
	Plan	   *p = *pp;
	List	   *below;
	ListCell   *lc;

	if (p == NULL)
		return;
	switch (nodeTag(p))
	{
		case T_Limit:
			walk(&p->lefttree, limit_of((Limit *) p), rw);
			break;
		case T_ModifyTable:
			if (((ModifyTable *) p)->operation != CMD_MERGE)
				walk(&p->lefttree, NIL, rw);
			break;
		case T_Append:
			foreach(lc, ((Append *) p)->appendplans)
				walk((Plan **) &lfirst(lc), limit, rw);
			break;
		case T_MergeAppend:
			foreach(lc, ((MergeAppend *) p)->mergeplans)
				walk((Plan **) &lfirst(lc), limit, rw);
			break;
		case T_Result:
			if (p->lefttree == NULL)
				break;
			below = p->qual ? NIL : limit;
			rewrite_node(pp, false, limit, rw);
			walk(&p->lefttree, below, rw);
			break;
		case T_SubqueryScan:
			below = p->qual ? NIL : limit;
			rewrite_node(pp, true, limit, rw);
			walk(&((SubqueryScan *) p)->subplan, below, rw);
			break;
		case T_Agg:
		case T_Group:
			rewrite_node(pp, false, limit, rw);
			walk(&p->lefttree, NIL, rw);
			break;
		case T_Sort:
		case T_IncrementalSort:
		case T_Material:
		case T_Unique:
		case T_ProjectSet:
		case T_WindowAgg:
			walk(&p->lefttree, NIL, rw);
			break;
		case T_NestLoop:
		case T_HashJoin:
		case T_MergeJoin:
			rewrite_node(pp, true, limit, rw);
			walk(&p->lefttree, NIL, rw);
			break;
		case T_SeqScan:
		case T_SampleScan:
		case T_IndexScan:
		case T_IndexOnlyScan:
		case T_BitmapHeapScan:
		case T_TidScan:
		case T_TidRangeScan:
		case T_FunctionScan:
		case T_CteScan:
		case T_WorkTableScan:
		case T_ForeignScan:
			rewrite_node(pp, true, limit, rw);
			break;
		default:
			break;
	}
}

/* The plans below p, in whatever order. */
static List *
children_of(Plan *p)
{
	List	   *children = NIL;

	if (IsA(p, Append))
		children = list_copy(((Append *) p)->appendplans);
	else if (IsA(p, MergeAppend))
		children = list_copy(((MergeAppend *) p)->mergeplans);
	else if (IsA(p, BitmapAnd))
		children = list_copy(((BitmapAnd *) p)->bitmapplans);
	else if (IsA(p, BitmapOr))
		children = list_copy(((BitmapOr *) p)->bitmapplans);
	else if (IsA(p, SubqueryScan))
		children = list_make1(((SubqueryScan *) p)->subplan);
	else if (IsA(p, CustomScan))
		children = list_copy(((CustomScan *) p)->custom_plans);
	if (p->lefttree)
		children = lappend(children, p->lefttree);
	if (p->righttree)
		children = lappend(children, p->righttree);
	return children;
}

/*
 * The highest plan_node_id below p, and the plans of the CTEs whose
 * InitPlans hang there (ctes: 1-based indexes into the statement's
 * subplans).
 */
static int
survey(Plan *p, List **ctes)
{
	int			max = p->plan_node_id;
	ListCell   *lc;

	foreach(lc, p->initPlan)
	{
		SubPlan    *sp = lfirst(lc);

		if (sp->subLinkType == CTE_SUBLINK)
			*ctes = list_append_unique_int(*ctes, sp->plan_id);
	}
	foreach(lc, children_of(p))
		max = Max(max, survey(lfirst(lc), ctes));
	return max;
}

static PlannedStmt *
prefetch_planner(Query *parse, const char *query_string, int cursorOptions,
				 ParamListInfo boundParams)
{
	PlannedStmt *stmt;
	Rewrite		rw = {0};
	List	   *ctes = NIL;
	ListCell   *lc;

	if (prev_planner)
		stmt = prev_planner(parse, query_string, cursorOptions, boundParams);
	else
		stmt = standard_planner(parse, query_string, cursorOptions, boundParams);

	/* rows locked as they are read: a queue's consumers would pay for others' */
	if (parse->rowMarks != NIL || stmt->commandType == CMD_UTILITY)
		return stmt;
	rw.next_id = survey(stmt->planTree, &ctes);
	foreach(lc, stmt->subplans)
	{
		if (lfirst(lc) != NULL)
			rw.next_id = Max(rw.next_id, survey(lfirst(lc), &ctes));
	}
	rw.next_id++;
	walk(&stmt->planTree, NIL, &rw);
	/* a CTE's plan runs once, forward, as far as its readers read */
	foreach(lc, ctes)
		walk((Plan **) &list_nth_cell(stmt->subplans, lfirst_int(lc) - 1)->ptr_value, NIL, &rw);
	/* the planner added a Material for a SCROLL cursor before; again */
	if (rw.changed && (cursorOptions & CURSOR_OPT_SCROLL) &&
		!ExecSupportsBackwardScan(stmt->planTree))
	{
		stmt->planTree = materialize_finished_plan(stmt->planTree);
		stmt->planTree->plan_node_id = rw.next_id++;
	}
	return stmt;
}

void
claude_prefetch_install_planner(void)
{
	prev_planner = planner_hook;
	planner_hook = prefetch_planner;
}
