/*
 * spi.h
 *		The extension's own statements: SPI, transactions, subtransactions.
 */
#ifndef CLAUDE_SPI_H
#define CLAUDE_SPI_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "fmgr.h"
#include "utils/elog.h"

extern Oid	claude_extension_schema(FunctionCallInfo fcinfo);
extern bool claude_extension_find(Oid *nsp, Oid *owner);
extern int	claude_spi_exec(const char *sql, int nargs, Oid *types, Datum *values,
							const char *nulls);
extern void claude_spi_run(const char *sql, int nargs, Oid *types, Datum *values,
						   int expect);
extern double claude_spi_float(HeapTuple tup, TupleDesc desc, int att);
extern void claude_xact_begin(void);
extern void claude_xact_end(void);
extern ErrorData *claude_subxact(void (*fn) (void *arg), void *arg);

#endif
