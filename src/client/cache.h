/*
 * cache.h
 *		The response cache: keys, lookups, and one request per key at a time.
 */
#ifndef CLAUDE_CACHE_H
#define CLAUDE_CACHE_H

#include "fmgr.h"
#include "utils/jsonb.h"

#include "shmem/pack.h"

#define CLAUDE_CACHE_KEY_LEN 32

/* What a backend knows about the cache for one call. */
typedef struct ClaudeCacheCall
{
	bool		enabled;
	Oid			nsp;			/* the extension's schema */
	uint8		key[CLAUDE_CACHE_KEY_LEN];
	int			lead;			/* in-flight entry this call leads, or -1 */
} ClaudeCacheCall;

extern Size claude_cache_shmem_size(void);
extern void claude_cache_shmem_startup(void);

/* backend side */
extern bool claude_cache_wanted(FunctionCallInfo fcinfo, int cache_argno);
extern bool claude_cache_begin(bool enabled, Oid nsp, const char *path,
							   const char *body, Size len, bool coordinate,
							   ClaudeCacheCall *call, Jsonb **hit);
extern void claude_cache_request(const ClaudeCacheCall *call, ClaudeRequest *req);
extern void claude_cache_sent(ClaudeCacheCall *call);

/* HTTP worker side */
extern void claude_cache_store(const ClaudeRequest *req, const char *response,
							   Size len);
extern void claude_cache_release_lead(Oid dbid, const uint8 *key, int lead);

#endif
