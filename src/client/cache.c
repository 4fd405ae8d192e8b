/*
 * cache.c
 *		The response cache in claude_cache, from the caller's side: keys,
 *		lookups, coordination of identical requests, hits.  Caller: the
 *		call's lifecycle (request.c).
 *
 * The key is the SHA-256 of the endpoint, the anthropic-version and the
 * request in jsonb's binary form, which is canonical (keys sorted and
 * unique, no whitespace): key order and spacing do not matter and every
 * parameter does.  A hit never prints the request.  Keys of the first
 * version hashed the request's canonical text instead (common/json.c's
 * printer); entries stored under them are still found, by a second lookup
 * on a miss, and moved to their new key by the database's worker when it
 * counts the hit, so no paid reply is lost.  Keys are computed here and
 * nowhere else.
 *
 * Lookups read the table's primary key index directly, with the latest
 * snapshot: no SQL, no privilege check (the table is closed to PUBLIC, the
 * functions that read it are not), and they work in read-only transactions
 * and on hot standbys.  Hits are counted in the backend and handed to the
 * database's worker at the end of the transaction, so a hit is no write.
 *
 * Writes never happen in the caller's transaction: the HTTP worker hands
 * every successful reply to the database's worker, which inserts it in a
 * transaction of its own.  A reply that was paid for is kept even if the
 * caller rolls back, errors out or is cancelled before it reads it.
 *
 * One request per key at a time: a caller that misses takes an in-flight
 * entry for its key; callers that find the entry taken sleep until the
 * entry is released (after the reply is in the table) and look again.
 */
#include "postgres.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "pgstat.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "client/budget.h"
#include "client/cache.h"
#include "common/fault.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/pgcompat.h"
#include "shmem/dbqueue.h"
#include "shmem/stats.h"

/* hits counted in this transaction, handed over at its end */
typedef struct PendingHit
{
	Oid			nsp;
	uint8		key[CLAUDE_CACHE_KEY_LEN];
	int64		hits;
	TimestampTz at;
	bool		rekey;			/* key is a first version's: move to new_key */
	uint8		new_key[CLAUDE_CACHE_KEY_LEN];
} PendingHit;

#define MAX_PENDING_HITS 64
static PendingHit pending[MAX_PENDING_HITS];
static int	npending = 0;
static int	owned_lead = -1;
static SubTransactionId owned_lead_subid;	/* that took it */
static bool callbacks_registered = false;

/* ---- hits ---- */

static void
hand_over_hits(void)
{
	for (int i = 0; i < npending; i++)
	{
		ClaudeDbRecord *rec;
		dsa_pointer dp = claude_dbwork_record(DBREC_CACHE_HITS, NULL, 0, NULL, 0, &rec);

		if (!DsaPointerIsValid(dp))
			break;				/* out of shared memory: hits are a hint */
		rec->nsp = pending[i].nsp;
		memcpy(rec->key, pending[i].key, CLAUDE_CACHE_KEY_LEN);
		rec->hits = pending[i].hits;
		rec->at = pending[i].at;
		rec->rekey = pending[i].rekey;
		memcpy(rec->new_key, pending[i].new_key, CLAUDE_CACHE_KEY_LEN);
		claude_dbwork_enqueue(MyDatabaseId, dp);
	}
	npending = 0;
}

static void
count_hit(Oid nsp, const uint8 *key, const uint8 *new_key)
{
	TimestampTz now = GetCurrentTimestamp();

	if (RecoveryInProgress())
		return;					/* a standby cannot write them */
	for (int i = 0; i < npending; i++)
	{
		if (memcmp(pending[i].key, key, CLAUDE_CACHE_KEY_LEN) == 0)
		{
			pending[i].hits++;
			pending[i].at = now;
			return;
		}
	}
	if (npending == MAX_PENDING_HITS)
		hand_over_hits();
	pending[npending].nsp = nsp;
	memcpy(pending[npending].key, key, CLAUDE_CACHE_KEY_LEN);
	pending[npending].hits = 1;
	pending[npending].at = now;
	pending[npending].rekey = new_key != NULL;
	if (new_key != NULL)
		memcpy(pending[npending].new_key, new_key, CLAUDE_CACHE_KEY_LEN);
	npending++;
}

/* Give back the key this backend leads: others waiting for it look again. */
static void
release_owned_lead(void)
{
	claude_cache_release_own(owned_lead);
	owned_lead = -1;
}

/*
 * A subtransaction that failed (a PL/pgSQL EXCEPTION block caught the call)
 * gives back the key it led, or the same request later in the transaction,
 * and everyone else's, would wait for it.
 */
static void
cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && owned_lead >= 0 && owned_lead_subid >= mySubid)
		release_owned_lead();
}

/*
 * Hits happened whether or not the transaction commits.  They go to shared
 * memory before the commit (which may raise, as any allocation may), never
 * after it, where an ERROR would be a PANIC; an aborted transaction's wait
 * for the next one's commit or a full list.
 */
static void
cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (npending > 0)
				hand_over_hits();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			owned_lead = -1;
			break;
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (owned_lead >= 0)
				release_owned_lead();
			owned_lead = -1;
			break;
		default:
			break;
	}
}

/* ---- lookups ---- */

/* what a version 2 key hashes first: no version 1 input starts so */
#define KEY_V2_TAG "jsonb 2\n"

/*
 * SHA-256 of the request.  With claude.cache_scope = role the key names
 * the role that pays, so a role is served only replies it paid for:
 * another role's identical prompt is a miss, no reply leaks, and no hit
 * tells what others asked.
 */
static void
compute_key(bool v2, Oid payer, const char *path, const char *body, Size len,
			uint8 *key)
{
	/*
	 * OpenSSL directly, the digest fetched once: pg_cryptohash fetches it
	 * from the provider under a lock and allocates a context at every
	 * call, a tenth of a cache hit.
	 */
	static const EVP_MD *sha256 = NULL;
	static EVP_MD_CTX *ctx = NULL;
	char		scope[32] = "";
	unsigned int keylen = 0;
	const char *tag = v2 ? KEY_V2_TAG : "";

	if (sha256 == NULL)
		sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (ctx == NULL)
		ctx = EVP_MD_CTX_new();
	if (claude_cache_scope == CLAUDE_CACHE_SCOPE_ROLE)
		snprintf(scope, sizeof(scope), "role %u\n", payer);
	if (sha256 == NULL || ctx == NULL ||
		!EVP_DigestInit_ex(ctx, sha256, NULL) ||
		!EVP_DigestUpdate(ctx, tag, strlen(tag)) ||
		!EVP_DigestUpdate(ctx, scope, strlen(scope)) ||
		!EVP_DigestUpdate(ctx, path, strlen(path)) ||
		!EVP_DigestUpdate(ctx, "\n", 1) ||
		!EVP_DigestUpdate(ctx, claude_anthropic_version, strlen(claude_anthropic_version)) ||
		!EVP_DigestUpdate(ctx, "\n", 1) ||
		!EVP_DigestUpdate(ctx, body, len) ||
		!EVP_DigestFinal_ex(ctx, key, &keylen) ||
		keylen != CLAUDE_CACHE_KEY_LEN)
	{
		ERR_clear_error();
		elog(ERROR, "claude: could not compute a SHA-256 cache key");
	}
}

/*
 * Where nsp.claude_cache is, found once per backend: a hit is a few
 * microseconds, and three catalog lookups were a tenth of it.  Any
 * invalidation of the table (DROP EXTENSION, ALTER) forgets it.
 */
static struct
{
	Oid			nsp;
	Oid			relid;
	AttrNumber	resp_att;
	AttrNumber	exp_att;
}			cache_table;

static void
forget_cache_table(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == cache_table.relid)
		cache_table.relid = InvalidOid;
}

static bool
find_cache_table(Oid nsp)
{
	static bool registered = false;

	if (OidIsValid(cache_table.relid) && cache_table.nsp == nsp)
		return true;
	if (!registered)
	{
		CacheRegisterRelcacheCallback(forget_cache_table, (Datum) 0);
		registered = true;
	}
	cache_table.relid = InvalidOid;
	cache_table.nsp = nsp;
	cache_table.resp_att = InvalidAttrNumber;
	cache_table.exp_att = InvalidAttrNumber;
	cache_table.relid = get_relname_relid("claude_cache", nsp);
	if (!OidIsValid(cache_table.relid))
		return false;
	cache_table.resp_att = get_attnum(cache_table.relid, "response");
	cache_table.exp_att = get_attnum(cache_table.relid, "expires_at");
	return true;
}

/* The cached response for key in snap, or NULL; expired entries are misses. */
static Jsonb *
lookup(Oid nsp, const uint8 *key, Snapshot snap)
{
	Oid			relid;
	Relation	rel;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData skey;
	bytea	   *keyval;
	Jsonb	   *result = NULL;
	AttrNumber	resp_att;
	AttrNumber	exp_att;

	if (!find_cache_table(nsp))
		return NULL;
	relid = cache_table.relid;
	resp_att = cache_table.resp_att;
	exp_att = cache_table.exp_att;

	keyval = palloc(VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	SET_VARSIZE(keyval, VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	memcpy(VARDATA(keyval), key, CLAUDE_CACHE_KEY_LEN);

	/* dropped since it was found: a miss */
	rel = try_table_open(relid, AccessShareLock);
	if (rel == NULL)
	{
		cache_table.relid = InvalidOid;
		return NULL;
	}
	irel = index_open(ClaudePrimaryKeyIndex(rel), AccessShareLock);
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_BYTEAEQ, PointerGetDatum(keyval));
	scan = ClaudeIndexBeginscan(rel, irel, snap, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	slot = table_slot_create(rel, NULL);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		expires = slot_getattr(slot, exp_att, &isnull);

		if (isnull || DatumGetTimestampTz(expires) > GetCurrentTimestamp())
		{
			Datum		resp = slot_getattr(slot, resp_att, &isnull);

			if (!isnull)
				result = DatumGetJsonbPCopy(resp);
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(irel, AccessShareLock);
	table_close(rel, AccessShareLock);
	return result;
}

/*
 * A hit of key: counted, handed over at the end of the transaction.  An
 * entry found under a first-version key is moved to the call's key then.
 */
static bool
found(ClaudeCacheCall *call, const uint8 *key, Snapshot snap, Jsonb **hit)
{
	if ((*hit = lookup(call->nsp, key, snap)) == NULL)
		return false;
	count_hit(call->nsp, key, key == call->key ? NULL : call->key);
	claude_stats_cache(true);
	return true;
}

/*
 * Start a call: if the cache is on for it, compute its key and look it up
 * in nsp.claude_cache.  Returns true with *hit set on a hit.  On a miss a
 * coordinated call leads its key (see lead_or_wait), so identical requests
 * made meanwhile wait for it; bulk calls, which must not wait on one row,
 * do not coordinate.  The request's text, needed for a key of the first
 * version, is printed into *text unless the caller has it.
 */
bool
claude_cache_begin(bool enabled, Oid nsp, Oid payer, const char *path,
				   const Jsonb *body, char **text, Size *text_len,
				   bool coordinate, ClaudeCacheCall *call, Jsonb **hit)
{
	bool		first = true;

	memset(call, 0, sizeof(*call));
	call->lead = -1;
	call->enabled = enabled && body != NULL;
	if (!call->enabled)
		return false;

	if (!callbacks_registered)
	{
		RegisterXactCallback(cache_xact_callback, NULL);
		RegisterSubXactCallback(cache_subxact_callback, NULL);
		callbacks_registered = true;
	}
	call->nsp = nsp;
	compute_key(true, payer, path, VARDATA(body), VARSIZE(body) - VARHDRSZ, call->key);

	for (;; first = false)
	{
		/*
		 * The latest snapshot sees entries written since the statement
		 * began.  One for both keys: the worker's move of an entry from its
		 * first-version key to call->key, committed between two lookups,
		 * would hide it from both.
		 */
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		bool		hitnow = found(call, call->key, snap, hit);

		if (!hitnow && first)
		{
			uint8		v1[CLAUDE_CACHE_KEY_LEN];

			if (*text == NULL)
				*text = claude_json_print(body, text_len);
			compute_key(false, payer, path, *text, *text_len, v1);
			claude_pause_point("cache_first_version");
			hitnow = found(call, v1, snap, hit);
		}
		UnregisterSnapshot(snap);
		if (hitnow)
			return true;
		if (RecoveryInProgress() || !coordinate)
		{
			claude_stats_cache(false);
			return false;		/* a standby cannot store the reply */
		}
		call->lead = claude_cache_lead(call->key);
		if (call->lead != CLAUDE_LEAD_FINISHED)
			break;
	}
	if (call->lead < 0)
		call->lead = -1;
	owned_lead = call->lead;
	owned_lead_subid = GetCurrentSubTransactionId();
	claude_stats_cache(false);
	return false;
}

/* Ask the HTTP worker to store the reply of this request. */
void
claude_cache_request(const ClaudeCacheCall *call, ClaudeRequest *req)
{
	if (call == NULL || !call->enabled || RecoveryInProgress())
		return;
	req->cache_dbid = MyDatabaseId;
	req->cache_nsp = call->nsp;
	memcpy(req->cache_key, call->key, CLAUDE_CACHE_KEY_LEN);
	req->cache_ttl = claude_cache_ttl;
	req->cache_lead = call->lead;
}

/*
 * A call given up before its reply (a stream its cursor closed): others
 * waiting for the same key must not wait for it.
 */
void
claude_cache_abandon(ClaudeCacheCall *call)
{
	if (call != NULL && call->lead >= 0 && owned_lead == call->lead)
		release_owned_lead();
}

/* The reply arrived: its in-flight entry now belongs to the writer. */
void
claude_cache_sent(ClaudeCacheCall *call)
{
	if (call != NULL && call->lead >= 0 && owned_lead == call->lead)
		owned_lead = -1;
}
