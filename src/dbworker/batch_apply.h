/*
 * batch_apply.h
 *		A Message Batch's results written back, a chunk at a time.
 */
#ifndef CLAUDE_BATCH_APPLY_H
#define CLAUDE_BATCH_APPLY_H

#include "client/batches.h"

typedef enum ClaudeApplyStep
{
	CLAUDE_APPLY_MORE,			/* lines are left */
	CLAUDE_APPLY_ALL_READ,		/* the file is read to its end */
	CLAUDE_APPLY_GONE			/* the batch's record is gone */
} ClaudeApplyStep;

extern ClaudeApplyStep claude_batch_apply_some(const ClaudeBatchTables *t, int64 local_id,
											   const char *id, const char *path,
											   off_t *offset);

#endif
