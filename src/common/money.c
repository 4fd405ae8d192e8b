/*
 * money.c
 *		Money in integer nano-USD: a usage's cost at a price, sums that
 *		saturate, and the exact numeric SQL sees.  Callers: everyone.
 *
 * Prices are nano-USD per million tokens (USD per MTok x 1e9).  A cost is
 * summed over its token kinds in 128 bits, in units of 1/40 of a nano-USD
 * per million tokens so that the 1.25x cache writes and 0.1x cache reads
 * stay integers, and divided once at the end, rounding half up: exact for
 * every price with at most nine decimals, and never more than half a
 * nano-USD off.  Float never touches money.
 */
#include "postgres.h"

#include "common/int.h"
#include "executor/spi.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

#include "common/money.h"

/* a token count from a reply, as an integer in [0, CLAUDE_MAX_TOKENS] */
static int64
tokens(double n)
{
	if (!(n > 0))
		return 0;
	if (n > CLAUDE_MAX_TOKENS)
		return (int64) CLAUDE_MAX_TOKENS;
	return (int64) n;
}

static int64
price(int64 p)
{
	return Min(Max(p, 0), CLAUDE_MAX_NANOS);
}

/*
 * Nano-USD of a reply's usage at prices per million tokens, or -1 when
 * a price is unknown (< 0): cache writes cost 1.25x input (2x for one
 * hour), cache reads 0.1x, and batches half of it all.  Clamped to
 * CLAUDE_MAX_NANOS.
 */
int64
claude_cost_of_usage(const ClaudeUsage *u, int64 price_in, int64 price_out, bool batch)
{
	int64		write_1h = tokens(u->cache_write_1h);
	int64		write_5m = Max(tokens(u->cache_write) - write_1h, 0);
	int128		pin;
	int128		units;
	int128		divisor = (int128) 40000000 * (batch ? 2 : 1);
	int128		cost;

	if (price_in < 0 || price_out < 0)
		return -1;
	pin = price(price_in);
	/* at most 5 terms of 80 x 1e9 x 1e18: far below 2^127 */
	units = 40 * tokens(u->input) * pin +
		40 * tokens(u->output) * (int128) price(price_out) +
		50 * write_5m * pin +
		80 * write_1h * pin +
		4 * tokens(u->cache_read) * pin;
	cost = (units + divisor / 2) / divisor;
	return cost > CLAUDE_MAX_NANOS ? CLAUDE_MAX_NANOS : (int64) cost;
}

/* a + b, saturating: a hostile price or count never wraps a sum around */
int64
claude_nanos_add(int64 a, int64 b)
{
	int64		r;

	if (!pg_add_s64_overflow(a, b, &r))
		return r;
	return b > 0 ? PG_INT64_MAX : PG_INT64_MIN;
}

/* nano-USD as an exact numeric of USD, without trailing zeros. */
Datum
claude_nanos_numeric(int64 nanos)
{
	return DirectFunctionCall1(numeric_trim_scale,
							   NumericGetDatum(int64_div_fast_to_numeric(nanos, 9)));
}

/* An int8 column of nano-USD (CLAUDE_SQL_NANOS), -1 when NULL. */
int64
claude_spi_nanos(HeapTuple tup, TupleDesc desc, int att)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, att, &isnull);

	return isnull ? -1 : DatumGetInt64(d);
}
