/*
 * reserve.c
 *		What Message Batches reserve against budgets, changed in shared
 *		memory (shmem/usage.c) with the transaction that changes the
 *		batches.  Callers: budget.c, batches.c, functions/batch.c, the
 *		batch write-back of dbworker/.
 *
 * A batch reserves its requests, tokens and cost on the day it is filed
 * under before the transaction that records it commits (budget.c); should
 * that transaction not commit, the reservation goes back.  A settlement
 * (results written back, requests left without one, a record deleted)
 * releases what its items reserved and counts what they used only once
 * the transaction that records it has committed: until then the
 * reservation stands, so a check never sees less than the tables will.
 *
 * Settlements are applied by the commit callback: after the commit is
 * visible, before the transaction's locks go.  A settling transaction
 * holds the role's reservation lock exclusively from the first settlement
 * on, and a session that reads a role's reservations from the tables
 * holds it shared (budget.c), so the reading either sees a settlement in
 * neither the tables nor shared memory, or in both.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "client/reserve.h"
#include "common/money.h"

/* field4 of the role's reservation lock, apart from our other advisory locks */
#define LOCKTAG_CLAUDE_RESERVE 0x4352

/* A change of this transaction, for its end. */
typedef struct Pending
{
	Oid			role;
	int32		day;
	SubTransactionId subid;
	char		model[CLAUDE_USAGE_MODEL_LEN];	/* settle: what used counts under */
	bool		settle;			/* else a reservation made, undone by an abort */
	UsageReserve r;				/* released, or reserved */
	UsageCounts used;			/* settle: what the requests used */
} Pending;

/* in TopTransactionContext; NULL outside a transaction that has any */
static Pending *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;

void
claude_reserve_lock_tag(LOCKTAG *tag, Oid role)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, role, 0, LOCKTAG_CLAUDE_RESERVE);
}

/* Nothing here may raise: the commit is recorded already. */
static void
xact_end(bool commit)
{
	for (int i = 0; i < npending; i++)
	{
		Pending    *p = &pending[i];

		/* a commit applies settlements, an abort undoes reservations */
		if (p->settle == commit)
			claude_usage_settle_batch(MyDatabaseId, p->role, p->day, p->model, &p->r,
									  p->settle ? &p->used : NULL);
	}
	pending = NULL;
	npending = maxpending = 0;
}

static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_PREPARE && npending > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that changes what Message Batches reserve"),
				 errdetail("It deleted a Message Batch with requests still pending.")));
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		xact_end(event == XACT_EVENT_COMMIT);
}

/* Among the first n entries, the one role's settlements on day of model go to. */
static Pending *
find_settle(Oid role, int32 day, const char *model, SubTransactionId subid, int n)
{
	for (int i = 0; i < n; i++)
		if (pending[i].settle && pending[i].role == role && pending[i].day == day &&
			pending[i].subid == subid &&
			memcmp(pending[i].model, model, CLAUDE_USAGE_MODEL_LEN) == 0)
			return &pending[i];
	return NULL;
}

static void
add_to(Pending *to, const Pending *from)
{
	to->r.requests += from->r.requests;
	to->r.tokens += from->r.tokens;
	to->r.cost = claude_nanos_add(to->r.cost, from->r.cost);
	claude_usage_counts_add(&to->used, &from->used, 1);
}

/*
 * A subtransaction's changes go to its parent (a line's settlement joins
 * its chunk's), or with its abort.
 */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (int i = 0; i < npending; i++)
	{
		Pending		p = pending[i];
		Pending    *into;

		if (p.subid == mySubid)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
			{
				if (!p.settle)
					claude_usage_settle_batch(MyDatabaseId, p.role, p.day, p.model, &p.r, NULL);
				continue;
			}
			p.subid = parentSubid;
			if (p.settle && (into = find_settle(p.role, p.day, p.model, parentSubid, kept)) != NULL)
			{
				add_to(into, &p);
				continue;
			}
		}
		pending[kept++] = p;
	}
	npending = kept;
}

/*
 * Room for one more change, so that recording one after shared memory has
 * changed cannot fail.
 */
void
claude_reserve_room(void)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		registered = true;
	}
	if (pending == NULL)
	{
		maxpending = 8;
		pending = MemoryContextAlloc(TopTransactionContext, maxpending * sizeof(Pending));
	}
	else if (npending == maxpending)
	{
		maxpending *= 2;
		pending = repalloc(pending, maxpending * sizeof(Pending));
	}
}

static Pending *
append(Oid role, int32 day, bool settle)
{
	Pending    *p;

	Assert(pending != NULL && npending < maxpending);
	p = &pending[npending++];
	memset(p, 0, sizeof(*p));
	p->role = role;
	p->day = day;
	p->subid = GetCurrentSubTransactionId();
	p->settle = settle;
	return p;
}

/*
 * A reservation r was made in shared memory (after claude_reserve_room):
 * undone should this transaction not commit.
 */
void
claude_reserve_made(Oid role, int32 day, const UsageReserve *r)
{
	append(role, day, false)->r = *r;
}

/*
 * Requests of role's batches filed under day are settled in this
 * transaction: what they reserved (released) goes back and what they used
 * counts, under model, once it commits.
 */
void
claude_reserve_settle(Oid role, int32 day, const char *model, const UsageReserve *released,
					  const UsageCounts *used)
{
	LOCKTAG		tag;
	Pending		add;
	Pending    *p;
	char		key[CLAUDE_USAGE_MODEL_LEN];

	if (released->requests == 0 && (used == NULL || used->requests == 0))
		return;
	claude_reserve_lock_tag(&tag, role);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	memset(&add, 0, sizeof(add));
	add.r = *released;
	if (used != NULL)
		add.used = *used;
	claude_usage_model_key(key, model);
	if ((p = find_settle(role, day, key, GetCurrentSubTransactionId(), npending)) != NULL)
	{
		add_to(p, &add);
		return;
	}
	claude_reserve_room();
	p = append(role, day, true);
	memcpy(p->model, key, CLAUDE_USAGE_MODEL_LEN);
	p->r = add.r;
	p->used = add.used;
}
