/*
 * batches.h
 *		Message Batches: the claude_batches and claude_batch_items tables,
 *		shared by submission and the worker's polling.
 */
#ifndef CLAUDE_BATCHES_H
#define CLAUDE_BATCHES_H

#include "storage/lock.h"

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
extern bool claude_batch_id_valid(const char *id);
extern void claude_batch_lock_tag(LOCKTAG *tag, int64 local_id);
extern void claude_batch_record_state(const ClaudeBatchTables *t, int64 local_id,
									  const char *batch_json);
extern void claude_batch_record_created(const ClaudeBatchTables *t, int64 local_id,
										const char *reply);
extern void claude_batch_record_error(const ClaudeBatchTables *t, int64 local_id,
									  const char *error, bool fatal);
extern void claude_batch_release_pending(const ClaudeBatchTables *t, int64 local_id);

#endif
