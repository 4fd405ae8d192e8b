/*
 * budgets.c
 *		claude_my_budget: the calling role's daily budget in this database,
 *		what it spent today on the whole server, and what is left.
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "client/budget.h"
#include "common/money.h"
#include "shmem/area.h"
#include "shmem/usage.h"

PG_FUNCTION_INFO_V1(claude_my_budget_row);

static Datum
int64_datum(int64 v)
{
	return Int64GetDatum(v);
}

/*
 * Always the caller's own row (GetUserId(): the role a call is paid by),
 * so it is open to every role.  Limits NULL: none.
 */
Datum
claude_my_budget_row(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[11];
	bool		nulls[11] = {0};
	Oid			me = GetUserId();
	int64		limit[3];
	int64		used[3];
	int32		day;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "claude_my_budget_row: return type must be a row type");
	claude_require_shared();
	day = claude_budget_status(me, limit, used);

	values[0] = ObjectIdGetDatum(me);
	for (int k = 0; k < 3; k++)
	{
		Datum		(*out) (int64) = k == 2 ? claude_nanos_numeric : int64_datum;

		nulls[1 + k] = limit[k] < 0;
		values[1 + k] = out(limit[k]);
		values[4 + k] = out(used[k]);
		nulls[7 + k] = limit[k] < 0;
		values[7 + k] = out(Max(limit[k] - used[k], 0));
	}
	values[10] = TimestampTzGetDatum((TimestampTz) (day + 1) * USECS_PER_DAY);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
