/*
 * reserve.h
 *		Message Batch reservations in shared memory, changed with the
 *		transaction that changes the batches.
 */
#ifndef CLAUDE_RESERVE_H
#define CLAUDE_RESERVE_H

#include "storage/lock.h"

#include "shmem/usage.h"

extern void claude_reserve_lock_tag(LOCKTAG *tag, Oid role);
extern void claude_reserve_room(void);
extern void claude_reserve_made(Oid role, int32 day, const UsageReserve *r);
extern void claude_reserve_settle(Oid role, int32 day, const char *model,
								  const UsageReserve *released, const UsageCounts *used);

#endif
