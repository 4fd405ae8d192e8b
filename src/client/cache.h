/*
 * cache.h
 *		The response cache: keys, lookups, and one request per key at a time.
 */
#ifndef CLAUDE_CACHE_H
#define CLAUDE_CACHE_H

#include "fmgr.h"
#include "utils/jsonb.h"

#include "shmem/cachelead.h"
#include "shmem/pack.h"

/* What a backend knows about the cache for one call. */
typedef struct ClaudeCacheCall
{
	bool		enabled;
	Oid			nsp;			/* the extension's schema */
	uint8		key[CLAUDE_CACHE_KEY_LEN];
	int			lead;			/* in-flight entry this call leads, or -1 */
} ClaudeCacheCall;

extern bool claude_cache_begin(bool enabled, Oid nsp, Oid payer, const char *path,
							   const Jsonb *body, char **text, Size *text_len,
							   bool coordinate, ClaudeCacheCall *call, Jsonb **hit);
extern void claude_cache_request(const ClaudeCacheCall *call, ClaudeRequest *req);
extern void claude_cache_sent(ClaudeCacheCall *call);
extern void claude_cache_abandon(ClaudeCacheCall *call);

#endif
