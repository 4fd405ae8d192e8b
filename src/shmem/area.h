/*
 * area.h
 *		Named structs in shared memory and the DSA area for bodies.
 */
#ifndef CLAUDE_AREA_H
#define CLAUDE_AREA_H

#include "storage/lwlock.h"
#include "utils/dsa.h"

/* the LWLock tranches, as wait events name them */
#define CLAUDE_LOCK_AREA		"claude_area"
#define CLAUDE_LOCK_CACHE_LEAD	"claude_cache_lead"
#define CLAUDE_LOCK_USAGE		"claude_usage"
#define CLAUDE_LOCK_CONFIG		"claude_config"
#define CLAUDE_LOCK_STREAMS		"claude_streams"
#define CLAUDE_LOCK_DBQUEUE		"claude_dbqueue"

extern void claude_area_request_shmem(void);
extern void claude_area_shmem_startup(void);
extern void claude_require_shared(void);
extern LWLock *claude_named_lock(const char *name);
extern void *claude_shmem_struct(const char *name, Size size,
								 void (*init) (void *ptr));
extern dsa_area *claude_area(void);
extern void claude_area_apply_limit(void);
extern Size claude_area_total_size(void);

#endif
