/*
 * cachelead.h
 *		In-flight cache keys: one request per key at a time.
 */
#ifndef CLAUDE_CACHELEAD_H
#define CLAUDE_CACHELEAD_H

#define CLAUDE_CACHE_KEY_LEN 32

#define CLAUDE_LEAD_FINISHED	(-1)	/* the other leader is done: look again */
#define CLAUDE_LEAD_NONE		(-2)	/* no entry free: go uncoordinated */

extern Size claude_cache_shmem_size(void);
extern void claude_cache_shmem_startup(void);
extern int	claude_cache_lead(const uint8 *key);
extern void claude_cache_release_own(int lead);
extern void claude_cache_release_lead(Oid dbid, const uint8 *key, int lead);

#endif
