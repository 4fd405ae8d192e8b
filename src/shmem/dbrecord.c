/*
 * dbrecord.c
 *		Records for the database workers' queue (shmem/dbqueue.c): a paid
 *		reply to keep in the cache, hits to count.  Callers: the HTTP worker
 *		(claude_cache_store), client/cache.c (hits).
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "shmem/area.h"
#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"

/*
 * A new record with room for the two texts behind it, or an invalid
 * pointer when shared memory is short.  Never raises for want of memory;
 * not for commit callbacks (a new DSA segment may be needed).
 */
dsa_pointer
claude_dbwork_record(ClaudeDbRecordKind kind,
					 const char *request, Size request_len,
					 const char *response, Size response_len,
					 ClaudeDbRecord **rec)
{
	Size		size = MAXALIGN(sizeof(ClaudeDbRecord)) + request_len + response_len + 2;
	dsa_pointer dp;
	char	   *p;

	dp = dsa_allocate_extended(claude_area(), size,
							   DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO);
	if (!DsaPointerIsValid(dp))
		return dp;
	*rec = dsa_get_address(claude_area(), dp);
	(*rec)->next = InvalidDsaPointer;
	(*rec)->kind = kind;
	(*rec)->lead = -1;
	(*rec)->request_len = request_len;
	(*rec)->response_len = response_len;
	p = (char *) *rec + MAXALIGN(sizeof(ClaudeDbRecord));
	if (request_len)
		memcpy(p, request, request_len);
	p[request_len] = '\0';
	p += request_len + 1;
	if (response_len)
		memcpy(p, response, response_len);
	p[response_len] = '\0';
	return dp;
}


/* HTTP worker: hand a successful reply to the database's worker. */
void
claude_cache_store(const ClaudeRequest *req, const char *response, Size len)
{
	ClaudeDbRecord *rec;
	dsa_pointer dp;

	if (!OidIsValid(req->cache_dbid))
		return;
	dp = claude_dbwork_record(DBREC_CACHE_WRITE, req->body, req->body_len,
							  response, len, &rec);
	if (DsaPointerIsValid(dp))
	{
		rec->nsp = req->cache_nsp;
		memcpy(rec->key, req->cache_key, CLAUDE_CACHE_KEY_LEN);
		rec->ttl = req->cache_ttl;
		rec->lead = req->cache_lead;
		rec->at = GetCurrentTimestamp();
		claude_dbwork_enqueue(req->cache_dbid, dp);
		return;
	}
	elog(LOG, "claude: could not hand a reply to the cache writer");
	claude_cache_release_lead(req->cache_dbid, req->cache_key, req->cache_lead);
}

