/*
 * dispatch.c
 *		The HTTP worker's queue: who goes next, retries, and results.
 *		Caller: worker.c; it drives http.c.
 *
 * Requests wait in one queue per role and leave in turn, one role after
 * the other, as fast as the rate limits allow and never more at once than
 * the pool can carry (claude.max_connections, times the streams of a
 * connection once the server multiplexes): a role's backlog of thousands
 * cannot hold back another role's single call for more than the next free
 * connection.  Within a role, requests keep their order; a retry goes
 * ahead of newer requests.  What is retried, and when, is outcome.c's.  A
 * request waiting for a retry or for the limits costs its caller nothing:
 * the caller sleeps on its latch and can cancel at any time.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/guc.h"
#include "common/money.h"

#include "httpworker/dispatch.h"
#include "httpworker/transfer.h"
#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"

#include "shmem/slots.h"
#include "shmem/stats.h"
#include "shmem/usage.h"
#include "httpworker/http.h"
#include "httpworker/sse.h"

/* times an attempt starts again on another connection before it fails */
#define MAX_RESTARTS		3

/* how often the HTTP/2 connections are looked at */
#define WATCH_MS			500

/* streams per connection counted on once the server speaks HTTP/2 */
#define STREAMS_PER_CONNECTION	100

/* The requests of one role waiting to start. */
typedef struct RoleQueue
{
	Oid			role;			/* meaningless while waiting is empty */
	dlist_head	waiting;
} RoleQueue;

static Transfer *transfers;		/* indexed by slot */
static RoleQueue *queues;		/* at most one per slot */
static int	nqueues;			/* entries ever used */
static int	next_queue;			/* whose turn it is */
static int	nrunning;
static dlist_head backoff = DLIST_STATIC_INIT(backoff);
static dlist_head running = DLIST_STATIC_INIT(running);
static long limit_wait_ms = -1;	/* until the next request may go */

void
claude_dispatch_init(void)
{
	transfers = calloc(claude_shared->nslots, sizeof(Transfer));
	queues = calloc(claude_shared->nslots, sizeof(RoleQueue));
	if (transfers == NULL || queues == NULL)
		elog(ERROR, "claude: out of memory");
	claude_stats_worker_started();
	claude_dispatch_configure();
}

/*
 * Settings the worker reads itself: the limits and the size of the shared
 * memory area (at start and on reload).
 */
void
claude_dispatch_configure(void)
{
	claude_limits_configure(claude_requests_per_minute,
							claude_input_tokens_per_minute,
							claude_output_tokens_per_minute);
	claude_area_apply_limit();
}

/* Queue a transfer to start; ahead of its role's others for a retry. */
static void
make_waiting(Transfer *t, bool ahead)
{
	RoleQueue  *q = NULL;
	int			unused = -1;

	for (int i = 0; i < nqueues; i++)
	{
		if (queues[i].role == t->req.role)
		{
			q = &queues[i];
			break;
		}
		if (unused < 0 && dlist_is_empty(&queues[i].waiting))
			unused = i;			/* empty: free for another role */
	}
	if (q == NULL)
	{
		q = &queues[unused >= 0 ? unused : nqueues++];
		q->role = t->req.role;
		dlist_init(&q->waiting);
	}
	t->state = XFER_WAITING;
	if (ahead)
		dlist_push_head(&q->waiting, &t->node);
	else
		dlist_push_tail(&q->waiting, &t->node);
}

/* Take a transfer off its waiting queue (or any other list). */
static void
unlink_transfer(Transfer *t)
{
	dlist_delete(&t->node);
	t->node.prev = t->node.next = NULL;	/* detached (see dispatch_fail) */
	if (t->state == XFER_RUNNING)
		nrunning--;
}

/* The queue whose turn it is, or NULL when nothing waits. */
static RoleQueue *
queue_in_turn(void)
{
	for (int n = 0; n < nqueues; n++)
	{
		RoleQueue  *q = &queues[(next_queue + n) % nqueues];

		if (!dlist_is_empty(&q->waiting))
		{
			next_queue = (next_queue + n) % nqueues;
			return q;
		}
	}
	return NULL;
}

/* Take over a slot the worker popped from the submit queue. */
void
claude_dispatch_enqueue(int slot)
{
	Transfer   *t = &transfers[slot];

	memset(t, 0, sizeof(Transfer));
	t->slot = slot;
	claude_request_unpack(dsa_get_address(claude_area(), claude_slots[slot].request),
						  &t->req);
	claude_streamed_own_request(t);
	t->cost.requests = 1;
	t->cost.input_tokens = t->req.input_tokens;
	t->cost.output_tokens = t->req.output_tokens;
	t->created = t->queued_at = GetCurrentTimestamp();
	make_waiting(t, false);
	claude_stats_taken();
}

/*
 * The end of a request, for the statistics and, for a Messages request,
 * the usage of its role.
 */
static void
account(Transfer *t, int http_status, bool transport_error, bool cancelled)
{
	const ClaudeUsage *u = t->have_usage ? &t->usage : NULL;
	int64		cost = u ? claude_cost_of_usage(u, t->req.price_in, t->req.price_out, false) : -1;

	if (t->accounted)
		return;
	t->accounted = true;
	claude_stats_done(http_status, transport_error, cancelled,
					  (double) (GetCurrentTimestamp() - t->created) / 1000.0, u, cost);
	if (t->req.reply == CLAUDE_REPLY_MESSAGE)
		claude_usage_done(&t->req, t->attempts > 0, u, cost);
}

/* Hand the outcome of the last attempt to the caller. */
static void
finish(Transfer *t, CURLcode code, long status)
{
	ClaudeResult r;

	/* the caller reads every event before the result */
	(void) claude_streamed_push(t, true);
	memset(&r, 0, sizeof(r));
	r.body = InvalidDsaPointer;
	r.attempts = t->attempts;
	r.elapsed_ms = (double) (GetCurrentTimestamp() - t->started) / 1000.0;
	r.body_sent = t->in != NULL && ftello(t->in) >= (off_t) t->req.body_len;
	strlcpy(r.request_id, t->request_id, sizeof(r.request_id));
	claude_outcome_retry_hints(&r, t);

	if (code != CURLE_OK)
		claude_outcome_failure(&r, code, t);
	else
	{
		r.http_status = (int) status;
		if (t->stream_failed)
		{
			r.transport = CLAUDE_TE_REPLY;
			strlcpy(r.message, t->stream_failed, sizeof(r.message));
		}
		/*
		 * a Messages reply only if a caller would take it: never cache
		 * garbage; one its caller checks first is its caller's to store
		 */
		if (t->req.cache_by_caller)
			;
		else if (status >= 200 && status < 300 && !t->stream_failed &&
			(t->req.reply != CLAUDE_REPLY_MESSAGE || claude_reply_is_message(t->body, t->body_len)))
			claude_cache_store(&t->req, t->body, t->body_len);
		else if (status >= 200 && status < 300 && OidIsValid(t->req.cache_dbid))
			claude_cache_release_lead(t->req.cache_dbid, t->req.cache_key, t->req.cache_lead);
		if (t->req.output_file && !claude_http_close_files(t))
		{
			r.transport = CLAUDE_TE_INTERNAL;
			strlcpy(r.message, t->file_error, sizeof(r.message));
		}
		if (t->body_len > 0)
		{
			r.body = dsa_allocate_extended(claude_area(), t->body_len,
										   DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
			if (DsaPointerIsValid(r.body))
			{
				memcpy(dsa_get_address(claude_area(), r.body), t->body, t->body_len);
				r.body_len = t->body_len;
			}
			else
				claude_outcome_shmem_full(&r, psprintf("a reply of %zu bytes", t->body_len));
		}
	}
	/* events that did not fit leave the caller no whole answer */
	if (t->events_lost && r.transport == CLAUDE_TE_NONE)
		claude_outcome_shmem_full(&r, "a stream's events");
	account(t, r.http_status, r.transport != CLAUDE_TE_NONE, false);
	if (t->first_token)
		claude_stats_ttft((double) (t->first_token - t->created) / 1000.0);
	claude_http_end(t);
	claude_http_free(t);
	unlink_transfer(t);
	t->finished = true;
	claude_slot_finish(t->slot, &r);
	claude_streamed_forget(t);
}

/*
 * Fail a request whose handling raised, wherever it got to: unless its
 * slot has a result, it gets this one (ZC002), and the worker goes on.
 */
static void
dispatch_fail(Transfer *t, const char *why)
{
	ClaudeResult r;

	if (t->finished)
		return;
	if (t->node.next != NULL)
		unlink_transfer(t);
	claude_http_end(t);
	(void) claude_streamed_push(t, true);
	claude_http_free(t);
	account(t, 0, true, false);
	memset(&r, 0, sizeof(r));
	r.body = InvalidDsaPointer;
	r.transport = CLAUDE_TE_REPLY;
	r.attempts = t->attempts;
	r.body_sent = t->req.input_file != NULL;	/* for all we know */
	strlcpy(r.message, why, sizeof(r.message));
	t->finished = true;
	claude_slot_finish(t->slot, &r);
	claude_streamed_forget(t);
}

/*
 * Read the usage an attempt reported (for the limits, the statistics and
 * the cost) and add it to the request's: every attempt that reached the
 * API was paid, a retry's on top of a cut one's.  Return what the
 * reservation did not use to the token buckets.
 */
static void
settle(Transfer *t, long status)
{
	ClaudeUsage u;
	bool		known = false;
	double		input = 0;
	double		output = 0;

	/* bad counts in a reply are unknown: its tokens are not believed */
	if (status >= 200 && status < 300 && t->body_len > 0 && t->req.reply == CLAUDE_REPLY_MESSAGE &&
		!t->stream_failed)
		known = claude_reply_usage(t->body, t->body_len, &u);
	/* a stream cut short, or ended by an error event: paid as far as it came */
	else if (t->sse)
		known = claude_sse_usage(t->sse, &u);
	if (known)
	{
		claude_usage_add(&t->usage, &u);
		t->have_usage = true;
		input = u.input + u.cache_write, output = u.output;
	}
	else if (status >= 200 && status < 300)
		input = t->cost.input_tokens, output = t->cost.output_tokens;
	claude_limits_settle(&t->cost, input, output);
}

static void attempt_done(Transfer *t, CURLcode code, long status);

/*
 * Start an attempt again, on another connection, when the one it was given
 * was refused before anything of it was sent: it is the same attempt,
 * neither counted again nor a retry.  A stalled HTTP/2 connection retires
 * its pool first.  False when it has been restarted too often.
 */
static bool
restart_attempt(Transfer *t)
{
	ConnRefusal why = t->refused;

	if (why == CONN_TAKEN || why == CONN_RESEND || t->restarts >= MAX_RESTARTS)
		return false;
	if (why == CONN_UNSOLICITED)
		ereport(LOG,
				(errmsg("claude: a connection to the Claude API held data no request asked for"),
				 errdetail("Its HTTP/1.1 connections are not reused for a minute.")));
	if (why == CONN_STALLED)
		claude_pool_retire(t->pool, "an HTTP/2 connection to the Claude API did not take a request");
	claude_http_end(t);
	t->restarts++;
	/* a new pool has no connection to refuse */
	t->fresh = why != CONN_STALLED;
	if (!claude_http_begin(t))
		attempt_done(t, CURLE_OUT_OF_MEMORY, 0);
	return true;
}

/* Called by http.c when an attempt ends, with or without a response. */
static void
attempt_done(Transfer *t, CURLcode code, long status)
{
	TimestampTz now = GetCurrentTimestamp();
	double		delay;

	if (code == CURLE_ABORTED_BY_CALLBACK && restart_attempt(t))
		return;
	/* an HTTP/2 connection that let a request time out takes no new one */
	if (code == CURLE_OPERATION_TIMEDOUT && t->h2)
		claude_pool_retire(t->pool, "a request timed out on an HTTP/2 connection to the Claude API");
	pg_atomic_fetch_sub_u32(&claude_shared->in_flight, 1);
	claude_streamed_outcome(t, code, &status);
	/* out of credits is this key's account, not a rate: nobody else waits */
	t->billing = code == CURLE_OK && status >= 400 &&
		claude_reply_error_is(t->body, t->body_len, "billing_error");
	if (!t->billing)
		claude_limits_feedback(&t->server, now);
	settle(t, code == CURLE_OK ? status : 0);
	if (code == CURLE_OK && status == 429 && !t->billing)
		pg_atomic_fetch_add_u64(&claude_limit_counters->rate_limited, 1);

	delay = claude_outcome_retry_ms(t, code, status);
	if (delay < 0)
	{
		finish(t, code, status);
		return;
	}

	/* a 429 holds back every request, not just this one (never a billing_error: not retried) */
	if (code == CURLE_OK && status == 429 && !t->billing)
		claude_limits_pause_until(TimestampTzPlusMilliseconds(now, (int64) delay));
	pg_atomic_fetch_add_u64(&claude_limit_counters->retries, 1);
	claude_http_end(t);
	unlink_transfer(t);
	t->state = XFER_BACKOFF;
	claude_slot_note_wait(t->slot, CLAUDE_WAIT_RETRY);
	t->due = TimestampTzPlusMilliseconds(now, (int64) delay);
	dlist_push_tail(&backoff, &t->node);
}

static void
start_attempt(Transfer *t, TimestampTz now)
{
	if (t->throttled)
	{
		pg_atomic_fetch_add_u64(&claude_limit_counters->throttled_us, now - t->queued_at);
		claude_stats_throttled();
	}
	t->throttled = false;
	t->state = XFER_RUNNING;
	claude_slot_note_wait(t->slot, CLAUDE_WAIT_REPLY);
	t->attempts++;
	t->restarts = 0;
	t->fresh = false;
	t->started = now;
	dlist_push_tail(&running, &t->node);
	nrunning++;
	pg_atomic_fetch_add_u32(&claude_shared->in_flight, 1);
	pg_atomic_fetch_add_u64(&claude_shared->requests, 1);
	if (!claude_http_begin(t))
		attempt_done(t, CURLE_OUT_OF_MEMORY, 0);
}

/*
 * Start what the limits and the pool let through now, the roles taking
 * turns.  Past the pool's capacity requests wait here, not in curl, so
 * that whoever comes next is chosen by turn rather than by arrival.
 */
void
claude_dispatch_run(void)
{
	TimestampTz now = GetCurrentTimestamp();
	dlist_mutable_iter iter;
	int			capacity = claude_max_connections *
		(claude_http_multiplexing() ? STREAMS_PER_CONNECTION : 1);
	RoleQueue  *q;

	dlist_foreach_modify(iter, &backoff)
	{
		Transfer   *t = dlist_container(Transfer, node, iter.cur);

		if (t->due <= now)
		{
			dlist_delete(&t->node);
			t->queued_at = now;
			make_waiting(t, true);
		}
	}

	limit_wait_ms = -1;
	while (nrunning < capacity && (q = queue_in_turn()) != NULL)
	{
		Transfer   *t = dlist_head_element(Transfer, node, &q->waiting);
		long		wait = claude_limits_admit(&t->cost, now);

		if (wait > 0)
		{
			t->throttled = true;
			claude_slot_note_wait(t->slot, CLAUDE_WAIT_RATE_LIMIT);
			limit_wait_ms = wait;
			break;
		}
		unlink_transfer(t);
		next_queue = (q - queues + 1) % nqueues;
		start_attempt(t, now);
	}
}

/* How long the worker may sleep before the queue needs it, or -1. */
long
claude_dispatch_timeout_ms(void)
{
	long		timeout = limit_wait_ms;
	TimestampTz now = GetCurrentTimestamp();
	dlist_iter	iter;

	dlist_foreach(iter, &backoff)
	{
		Transfer   *t = dlist_container(Transfer, node, iter.cur);
		long		ms = t->due <= now ? 0 : (long) ((t->due - now + 999) / 1000);

		if (timeout < 0 || ms < timeout)
			timeout = ms;
	}
	/* the connections of running attempts are watched (watch_connections) */
	if (!dlist_is_empty(&running) && (timeout < 0 || timeout > WATCH_MS))
		timeout = WATCH_MS;
	return timeout;
}

static void
abort_list(dlist_head *list)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, list)
	{
		Transfer   *t = dlist_container(Transfer, node, iter.cur);
		ClaudeUsage u;

		if (!claude_slot_is_cancelled(t->slot))
			continue;
		if (t->state == XFER_RUNNING)
		{
			claude_http_end(t);
			pg_atomic_fetch_sub_u32(&claude_shared->in_flight, 1);
			claude_limits_settle(&t->cost, 0, 0);
			/* a stream cut short by its caller was paid for as far as it came */
			if (t->sse && claude_sse_usage(t->sse, &u))
			{
				claude_usage_add(&t->usage, &u);
				t->have_usage = true;
			}
		}
		account(t, 0, false, true);
		claude_http_free(t);
		unlink_transfer(t);
		claude_slot_release_cancelled(t->slot);
		claude_streamed_forget(t);
	}
}

/* Drop the requests whose callers gave up, wherever they are. */
void
claude_dispatch_abort_cancelled(void)
{
	if (pg_atomic_exchange_u32(&claude_shared->cancel_pending, 0) == 0)
		return;
	for (int i = 0; i < nqueues; i++)
		abort_list(&queues[i].waiting);
	abort_list(&backoff);
	abort_list(&running);
}

/* At exit: stop the transfers; the queue fails their slots. */
void
claude_dispatch_shutdown(void)
{
	dlist_mutable_iter iter;

	if (transfers == NULL)
		return;
	dlist_foreach_modify(iter, &running)
		claude_http_end(dlist_container(Transfer, node, iter.cur));
	/* they end with the worker: count them, give back their reservations */
	for (int i = -2; i < nqueues; i++)
	{
		dlist_head *list = i == -2 ? &backoff : i == -1 ? &running : &queues[i].waiting;

		dlist_foreach_modify(iter, list)
			account(dlist_container(Transfer, node, iter.cur), 0, true, false);
	}
}

/*
 * Hand an attempt's outcome to the queue.  Nothing a server sends may stop
 * the worker: should handling this reply raise anyway (a defect), that one
 * request fails and every other goes on.  The recovery is an auxiliary
 * process's (postmaster/bgwriter.c): replies are handed over from the top
 * of the loop, where the worker holds no lock, sleeps on no condition
 * variable and keeps nothing in reply_cxt, so all of that is let go.  An
 * error in the recovery itself, or anywhere else in the loop, ends the
 * worker: the postmaster starts a new one, and callers in flight get ZC003.
 */
static void
hand_over(Transfer *t, CURLcode code, long status)
{
	static MemoryContext reply_cxt = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	if (reply_cxt == NULL)
		reply_cxt = AllocSetContextCreate(TopMemoryContext, "claude reply",
										  ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		MemoryContextSwitchTo(reply_cxt);
		attempt_done(t, code, status);
		MemoryContextSwitchTo(cxt);
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		LWLockReleaseAll();
		ConditionVariableCancelSleep();
		FlushErrorState();
		RESUME_INTERRUPTS();
		dispatch_fail(t, "the HTTP worker could not handle the reply");
	}
	PG_END_TRY();
	MemoryContextReset(reply_cxt);
}

/*
 * Look after the HTTP/2 connections, twice a second: an attempt whose body
 * does not start to go out starts again in a new pool, and a pool whose
 * connections went silent takes no new attempt (pool.c).
 */
static void
watch_connections(TimestampTz now)
{
	static TimestampTz next = 0;
	dlist_mutable_iter iter;

	if (now < next)
		return;
	next = TimestampTzPlusMilliseconds(now, WATCH_MS);
	dlist_foreach_modify(iter, &running)
	{
		Transfer   *t = dlist_container(Transfer, node, iter.cur);

		if (!claude_http_stalled(t, now))
			claude_pool_watch(t, now);
		else
		{
			t->refused = CONN_STALLED;
			if (!restart_attempt(t))
			{
				claude_http_end(t);
				hand_over(t, CURLE_ABORTED_BY_CALLBACK, 0);
			}
		}
	}
	claude_pool_retire_silent(now);
}

/*
 * Let curl work on ready sockets and its timer, and hand each finished
 * attempt to the queue.
 */
void
claude_dispatch_drive(bool sockets_ready)
{
	Transfer   *t;
	CURLcode	code;
	long		status;

	claude_http_drive(sockets_ready);
	while ((t = claude_http_next_done(&code, &status)) != NULL)
	{
		/* a stream that reached message_stop is whole, however curl ended */
		if (claude_streamed_over(t, &status))
			code = CURLE_OK;
		hand_over(t, code, status);
	}

	watch_connections(GetCurrentTimestamp());

	/* paused until their readers took what they had; over at message_stop */
	if (claude_streamed_running > 0)
	{
		dlist_mutable_iter iter;

		dlist_foreach_modify(iter, &running)
		{
			t = dlist_container(Transfer, node, iter.cur);
			claude_streamed_resume(t);
			if (claude_streamed_over(t, &status))
				hand_over(t, CURLE_OK, status);
		}
	}
}
