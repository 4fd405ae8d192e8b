/*
 * batch.h
 *		Message Batches: submission (batch.c) and the worker's polling
 *		(batch_poll.c), over the claude_batches and claude_batch_items tables.
 */
#ifndef CLAUDE_BATCH_H
#define CLAUDE_BATCH_H

#include "storage/lock.h"

#define CLAUDE_BATCHES_PATH "/v1/messages/batches"

/* the extension's bookkeeping tables, for SPI */
typedef struct ClaudeBatchTables
{
	Oid			nsp;
	char	   *schema;			/* quoted */
	char	   *batches;		/* qualified names */
	char	   *items;
	char	   *cache;
} ClaudeBatchTables;

extern bool claude_batch_tables(Oid nsp, ClaudeBatchTables *t);
extern void claude_batch_lock_tag(LOCKTAG *tag, int64 local_id);
extern void claude_batch_record_state(const ClaudeBatchTables *t, int64 local_id,
									  const char *batch_json);
extern void claude_batch_record_error(const ClaudeBatchTables *t, int64 local_id,
									  const char *error, bool fatal);

/* batch_poll.c, in the database's worker */
extern bool claude_batch_poll_step(void);
extern bool claude_batch_poll_busy(void);
extern void claude_batch_poll_reset(void);

#endif
