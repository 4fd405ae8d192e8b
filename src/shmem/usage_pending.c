/*
 * usage_pending.c
 *		What claude_usage_log may not show a reader yet, from the shared
 *		usage table of usage.c: the usage by model that is new, being
 *		written, or written last round, each with the transaction that
 *		writes it.  Callers: dbworker/flush.c, the view claude_usage.
 *
 * A row is counted once whatever the reader's snapshot: written usage is
 * kept for a round, so a snapshot taken before its write committed still
 * counts it here, and one that sees the commit does not count it twice.
 */
#include "postgres.h"

#include "storage/lwlock.h"

#include "shmem/usage.h"
#include "shmem/usage_int.h"

/* The transaction that writes f: until it commits, f is pending. */
void
claude_usage_flushing_xid(const UsageFlushed *f, int n, TransactionId xid)
{
	LWLockAcquire(claude_usage_state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		UsageEntry *e = hash_search(claude_usage_entries, &f[i].key, HASH_FIND, NULL);

		if (e && e->key.kind == USAGE_MODEL)
			e->flush_xid = xid;
	}
	LWLockRelease(claude_usage_state->lock);
}

/*
 * The usage by model of a database that claude_usage_log may not show a
 * snapshot: new, being written, written last round (each with its
 * writer, for the caller to ask its snapshot), palloc'd; returns how many.
 */
int
claude_usage_pending_of(Oid dbid, UsagePending **out)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	int			n = 0;

	*out = palloc(CLAUDE_USAGE_ENTRIES * sizeof(UsagePending));
	LWLockAcquire(claude_usage_state->lock, LW_SHARED);
	hash_seq_init(&seq, claude_usage_entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		UsagePending *p = &(*out)[n];

		if (e->key.kind != USAGE_MODEL || e->key.dbid != dbid)
			continue;
		p->key = e->key;
		p->delta = e->delta;
		p->flushing = e->flushing;
		p->flush_xid = e->flush_xid;
		p->written = e->written;
		p->written_xid = e->written_xid;
		n++;
	}
	LWLockRelease(claude_usage_state->lock);
	return n;
}
