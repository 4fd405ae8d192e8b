/*
 * batch_lines.h
 *		A Message Batch's results written back one line at a time.
 */
#ifndef CLAUDE_BATCH_LINES_H
#define CLAUDE_BATCH_LINES_H

#include "executor/spi.h"

#include "client/batches.h"
#include "shmem/usage.h"

/* What a round knows about the batch it writes back. */
typedef struct ClaudeBatchTarget
{
	int64		batch;			/* local_id */
	const char *batch_id;		/* the API's, for messages */
	Oid			relid;
	char	   *column;
	bool		cache;
	Oid			role;			/* its submitter, whose usage it is */
	int32		day;			/* the day it is filed under, and its usage counted on */
	SPIPlanPtr	lookup;			/* one line's request */
	int			written;
} ClaudeBatchTarget;

extern void claude_batch_apply_line(const ClaudeBatchTables *t, ClaudeBatchTarget *target,
									const char *line);
extern void claude_batch_usage(UsageCounts *to, const char *message, const char *request);

#endif
