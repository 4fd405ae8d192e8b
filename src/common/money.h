/*
 * money.h
 *		Money as integer nano-USD (1e-9 USD) in C, exact numeric in SQL.
 */
#ifndef CLAUDE_MONEY_H
#define CLAUDE_MONEY_H

#include "access/htup.h"
#include "access/tupdesc.h"

#include "common/json.h"

/* what a request or a price may be worth at most: 1e9 USD */
#define CLAUDE_MAX_NANOS		INT64CONST(1000000000000000000)

/*
 * SQL text turning a numeric USD expression into int8 nano-USD (clamped
 * to [0, CLAUDE_MAX_NANOS], rounded half away from zero; NULL stays NULL:
 * the functions are strict, unlike GREATEST), and int8 nano-USD
 * into an exact numeric: never through float8.
 */
#define CLAUDE_SQL_NANOS(usd) \
	"pg_catalog.round(pg_catalog.numeric_smaller(pg_catalog.numeric_larger(" usd ", 0), " \
	"1000000000) OPERATOR(pg_catalog.*) 1000000000)::pg_catalog.int8"
#define CLAUDE_SQL_USD(nanos) \
	"pg_catalog.trim_scale((" nanos ")::pg_catalog.numeric OPERATOR(pg_catalog.*) 0.000000001)"

extern int64 claude_cost_of_usage(const ClaudeUsage *u, int64 price_in, int64 price_out,
								  bool batch);
extern int64 claude_nanos_add(int64 a, int64 b);
extern Datum claude_nanos_numeric(int64 nanos);
extern int64 claude_spi_nanos(HeapTuple tup, TupleDesc desc, int att);

#endif
