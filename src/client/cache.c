/*
 * cache.c
 *		The response cache in claude_cache, from the caller's side: keys,
 *		lookups, coordination of identical requests, hits.  Callers: the call
 *		path and every SQL function that may be answered from the cache.
 *
 * The key is the SHA-256 of the endpoint, the anthropic-version and the
 * request in jsonb's canonical text (sorted keys, fixed spacing), so key
 * order and whitespace do not matter and every parameter does.
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

#include "access/genam.h"

#include "access/table.h"
#include "access/tableam.h"

#include "common/cryptohash.h"

#include "pgstat.h"

#include "utils/fmgroids.h"
#include "utils/lsyscache.h"

#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "client/budget.h"
#include "client/cache.h"
#include "common/guc.h"
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
		claude_dbwork_enqueue(MyDatabaseId, dp);
	}
	npending = 0;
}

static void
count_hit(Oid nsp, const uint8 *key)
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

static void
cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			/* before the commit record: a DSA allocation may raise */
			if (npending > 0)
				hand_over_hits();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* hits happened whether or not the transaction commits */
			if (npending > 0 && (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT))
				hand_over_hits();
			if (owned_lead >= 0 && event != XACT_EVENT_COMMIT &&
				event != XACT_EVENT_PARALLEL_COMMIT)
				release_owned_lead();
			owned_lead = -1;
			break;
		default:
			break;
	}
}

/* ---- lookups ---- */

/*
 * With claude.cache_scope = role the key names the role that pays, so
 * a role is served only replies it paid for: another role's identical
 * prompt is a miss, no reply leaks, and no hit tells what others asked.
 */
static void
compute_key(const char *path, const char *body, Size len, uint8 *key)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	char		scope[32] = "";

	if (claude_cache_scope == CLAUDE_CACHE_SCOPE_ROLE)
		snprintf(scope, sizeof(scope), "role %u\n", claude_request_owner());
	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) scope, strlen(scope)) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) path, strlen(path)) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) "\n", 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) claude_anthropic_version,
							 strlen(claude_anthropic_version)) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) "\n", 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) body, len) < 0 ||
		pg_cryptohash_final(ctx, key, CLAUDE_CACHE_KEY_LEN) < 0)
		elog(ERROR, "claude: could not compute a SHA-256 cache key");
	pg_cryptohash_free(ctx);
}

/* The cached response for key, or NULL; expired entries are misses. */
static Jsonb *
lookup(Oid nsp, const uint8 *key)
{
	Oid			relid = get_relname_relid("claude_cache", nsp);
	Relation	rel;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData skey;
	Snapshot	snap;
	bytea	   *keyval;
	Jsonb	   *result = NULL;
	AttrNumber	resp_att;
	AttrNumber	exp_att;

	if (!OidIsValid(relid))
		return NULL;
	resp_att = get_attnum(relid, "response");
	exp_att = get_attnum(relid, "expires_at");

	keyval = palloc(VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	SET_VARSIZE(keyval, VARHDRSZ + CLAUDE_CACHE_KEY_LEN);
	memcpy(VARDATA(keyval), key, CLAUDE_CACHE_KEY_LEN);

	rel = table_open(relid, AccessShareLock);
	irel = index_open(ClaudePrimaryKeyIndex(rel), AccessShareLock);
	/* the latest snapshot sees entries written since the statement began */
	snap = RegisterSnapshot(GetLatestSnapshot());
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
	UnregisterSnapshot(snap);
	index_close(irel, AccessShareLock);
	table_close(rel, AccessShareLock);
	return result;
}

/* Whether a call uses the cache: its cache argument, else claude.cache. */
bool
claude_cache_wanted(FunctionCallInfo fcinfo, int cache_argno)
{
	if (cache_argno >= 0 && PG_NARGS() > cache_argno && !PG_ARGISNULL(cache_argno))
		return PG_GETARG_BOOL(cache_argno);
	return claude_cache_enabled;
}

/*
 * Start a call: if the cache is on for it, compute its key and look it up
 * in nsp.claude_cache.  Returns true with *hit set on a hit.  On a miss a
 * coordinated call leads its key (see lead_or_wait), so identical requests
 * made meanwhile wait for it; bulk calls, which must not wait on one row,
 * do not coordinate.
 */
bool
claude_cache_begin(bool enabled, Oid nsp, const char *path, const char *body,
				   Size len, bool coordinate, ClaudeCacheCall *call, Jsonb **hit)
{
	memset(call, 0, sizeof(*call));
	call->lead = -1;
	call->enabled = enabled;
	if (!call->enabled)
		return false;

	if (!callbacks_registered)
	{
		RegisterXactCallback(cache_xact_callback, NULL);
		RegisterSubXactCallback(cache_subxact_callback, NULL);
		callbacks_registered = true;
	}
	call->nsp = nsp;
	compute_key(path, body, len, call->key);

	for (;;)
	{
		if ((*hit = lookup(call->nsp, call->key)) != NULL)
		{
			count_hit(call->nsp, call->key);
			claude_stats_cache(true);
			return true;
		}
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
