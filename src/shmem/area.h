/*
 * area.h
 *		Named structs in shared memory and the DSA area for bodies.
 */
#ifndef CLAUDE_AREA_H
#define CLAUDE_AREA_H

#include "utils/dsa.h"

extern void claude_area_request_shmem(void);
extern void claude_area_shmem_startup(void);
extern void claude_require_shared(void);
extern void *claude_shmem_struct(const char *name, Size size,
								 void (*init) (void *ptr));
extern dsa_area *claude_area(void);
extern void claude_area_apply_limit(void);
extern Size claude_area_total_size(void);

#endif
