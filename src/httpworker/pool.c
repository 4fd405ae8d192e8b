/*
 * pool.c
 *		The HTTP worker's connections: libcurl multi handles, one that takes
 *		new transfers and older ones, retired, that keep theirs until they
 *		end.  Callers: worker.c (sockets, timers), http.c (transfers join
 *		and leave) and dispatch.c (finished transfers, retiring a pool).
 *
 * curl tells us which sockets to watch; we keep them in an epoll set of our
 * own, whose descriptor the worker's WaitEventSet watches next to its
 * latch.  A multi handle is a connection cache (keep-alive, HTTP/2
 * multiplexing).  libcurl 7.88 gives every new request to a server known to
 * multiplex to the HTTP/2 connection it has, even one that stopped
 * answering, and takes an idle one whatever its MAX_CONCURRENT_STREAMS
 * (even 0); it offers no way to close one connection, and no PING from a
 * multi handle (curl_easy_upkeep serves curl_easy_perform's cache only).
 * So a pool whose HTTP/2 connection stalled is retired (dispatch.c): new
 * transfers and retries go to a new multi handle and its new connections,
 * while the old one finishes what it has and is then closed with all its
 * connections.  Callbacks never raise errors: they run inside libcurl.
 */
#include "postgres.h"

#include <curl/curl.h>
#include <sys/epoll.h>

#include "utils/timestamp.h"

#include "common/guc.h"
#include "httpworker/http.h"
#include "httpworker/transfer.h"

#define EPOLL_BATCH 64

/* HTTP/2 connections silent this long get no new request */
#define SILENT_MS	(60 * 1000)

typedef struct Pool
{
	CURLM	   *multi;			/* NULL: a free entry */
	int			attached;		/* transfers on it */
	bool		retired;		/* takes no new transfer */
	TimestampTz timer_deadline; /* -1: no timer */
	TimestampTz heard_at;		/* an HTTP/2 answer's last byte came */
	TimestampTz oldest_waiting; /* claude_pool_watch: since when one waits */
} Pool;

static Pool *pools;
static int	npools;
static int	current = -1;		/* the pool new transfers join; -1: none yet */
static int	epfd = -1;
static bool multiplexing = false;	/* the server speaks HTTP/2 */

/* epoll's data for a socket: its pool and the socket */
#define EPOLL_DATA(pool, s) (((uint64) (pool) << 32) | (uint32) (s))

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	int			pool = (int) (intptr_t) userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		if (socketp)
			(void) epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		if (pools[pool].multi)
			curl_multi_assign(pools[pool].multi, s, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.u64 = EPOLL_DATA(pool, s);
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;

	if (socketp)
	{
		if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0)
			elog(LOG, "claude: epoll_ctl MOD failed: %m");
	}
	else
	{
		/* a descriptor a closed pool left behind may still be in the set */
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0 &&
			(errno != EEXIST || epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0))
			elog(LOG, "claude: epoll_ctl ADD failed: %m");
		curl_multi_assign(pools[pool].multi, s, (void *) 1);
	}
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	Pool	   *p = &pools[(int) (intptr_t) userp];

	if (timeout_ms < 0)
		p->timer_deadline = -1;
	else
		p->timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														timeout_ms);
	return 0;
}

void
claude_http_init(void)
{
	CURLcode	rc = curl_global_init(CURL_GLOBAL_DEFAULT);

	if (rc != CURLE_OK)
		elog(ERROR, "claude: curl_global_init failed: %s", curl_easy_strerror(rc));

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		elog(ERROR, "claude: epoll_create1 failed: %m");
}

int
claude_http_pollable_fd(void)
{
	return epfd;
}

/* A new pool for new transfers; false if there is no memory for one. */
static bool
open_pool(void)
{
	int			i;
	CURLM	   *m;

	for (i = 0; i < npools && pools[i].multi != NULL; i++)
		;
	if (i == npools)
	{
		Pool	   *grown = realloc(pools, (npools + 1) * sizeof(Pool));

		if (grown == NULL)
			return false;
		pools = grown;
		pools[npools++].multi = NULL;
	}
	if ((m = curl_multi_init()) == NULL)
		return false;
	curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(m, CURLMOPT_SOCKETDATA, (void *) (intptr_t) i);
	curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(m, CURLMOPT_TIMERDATA, (void *) (intptr_t) i);
	curl_multi_setopt(m, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long) claude_max_connections);
	curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) claude_max_connections);
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long) claude_max_connections);
	pools[i].multi = m;
	pools[i].attached = 0;
	pools[i].retired = false;
	pools[i].timer_deadline = -1;
	pools[i].heard_at = GetCurrentTimestamp();
	pools[i].oldest_waiting = 0;
	current = i;
	return true;
}

/* A retired pool whose transfers are over goes, with its connections. */
static void
close_pool(int i)
{
	CURLM	   *m = pools[i].multi;

	pools[i].multi = NULL;		/* its sockets' REMOVE callbacks find it gone */
	pools[i].timer_deadline = -1;
	curl_multi_cleanup(m);
}

/* Start a transfer's attempt (t->easy) on the current pool. */
bool
claude_pool_attach(Transfer *t)
{
	if (current < 0 && !open_pool())
		return false;
	if (curl_multi_add_handle(pools[current].multi, t->easy) != CURLM_OK)
		return false;
	t->pool = current;
	pools[current].attached++;
	return true;
}

/* Stop a transfer's attempt: it leaves its pool. */
void
claude_pool_detach(Transfer *t)
{
	Pool	   *p = &pools[t->pool];

	curl_multi_remove_handle(p->multi, t->easy);
	if (--p->attached == 0 && p->retired)
		close_pool(t->pool);
	t->pool = -1;
}

/*
 * New transfers go to a new pool: this one keeps its transfers until they
 * end, and then closes.  Nothing to do if it was retired already.
 */
void
claude_pool_retire(int pool, const char *why)
{
	if (pool < 0 || pool != current)
		return;
	ereport(LOG,
			(errmsg("claude: %s", why),
			 errdetail("New requests and retries go to new connections.")));
	pools[pool].retired = true;
	current = -1;
	if (pools[pool].attached == 0)
		close_pool(pool);
}

/*
 * Note an attempt still running (dispatch.c, twice a second): whether an
 * HTTP/2 attempt of the current pool waits, since when, and whether it got
 * a byte of its answer.
 */
void
claude_pool_watch(Transfer *t, TimestampTz now)
{
	Pool	   *p;
	curl_off_t	body = 0;
	long		headers = 0;

	if (t->pool < 0 || t->pool != current || !t->h2 || t->on_connection == 0)
		return;
	p = &pools[t->pool];
	curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &body);
	curl_easy_getinfo(t->easy, CURLINFO_HEADER_SIZE, &headers);
	if (body + headers != t->heard_bytes)
	{
		t->heard_bytes = body + headers;
		p->heard_at = now;
	}
	if (p->oldest_waiting == 0 || t->on_connection < p->oldest_waiting)
		p->oldest_waiting = t->on_connection;
}

/*
 * After claude_pool_watch of every running attempt: a current pool whose
 * HTTP/2 connections got no byte for SILENT_MS while an attempt waited
 * there at least as long is retired.  Requests cannot be told from long
 * answers there, and those waiting wait on until their timeout; but new
 * requests no longer join them, so a silent connection holds the server no
 * longer than that, whatever claude.request_timeout.
 */
void
claude_pool_retire_silent(TimestampTz now)
{
	Pool	   *p;
	TimestampTz since = TimestampTzPlusMilliseconds(now, -SILENT_MS);
	bool		silent;

	if (current < 0)
		return;
	p = &pools[current];
	silent = p->oldest_waiting != 0 && p->oldest_waiting < since && p->heard_at < since;
	p->oldest_waiting = 0;
	if (silent)
		claude_pool_retire(current,
						   "no request on an HTTP/2 connection to the Claude API got a byte for a minute");
}

/* Milliseconds until a pool's timer fires, or -1. */
long
claude_http_timeout_ms(void)
{
	TimestampTz first = -1;
	long		secs;
	int			usecs;

	for (int i = 0; i < npools; i++)
		if (pools[i].multi && pools[i].timer_deadline >= 0 &&
			(first < 0 || pools[i].timer_deadline < first))
			first = pools[i].timer_deadline;
	if (first < 0)
		return -1;
	TimestampDifference(GetCurrentTimestamp(), first, &secs, &usecs);
	return secs * 1000 + (usecs + 999) / 1000;
}

/*
 * The next transfer curl finished, with its outcome (status 0 when there
 * was no response), or NULL when none is left.
 */
Transfer *
claude_http_next_done(CURLcode *code, long *status)
{
	for (int i = 0; i < npools; i++)
	{
		CURLMsg    *msg;
		int			left;

		while (pools[i].multi && (msg = curl_multi_info_read(pools[i].multi, &left)) != NULL)
		{
			Transfer   *t;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
			*status = 0;
			*code = msg->data.result;
			if (msg->data.result == CURLE_OK && t->h2)
				pools[i].heard_at = GetCurrentTimestamp();
			if (msg->data.result == CURLE_OK)
			{
				long		version = 0;

				curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, status);
				curl_easy_getinfo(msg->easy_handle, CURLINFO_HTTP_VERSION, &version);
				/* a reader's stream asked for HTTP/1.1: it says nothing */
				if (!claude_streamed_reader(t))
					multiplexing = version == CURL_HTTP_VERSION_2_0;
			}
			return t;
		}
	}
	return NULL;
}

/* Whether the server's last reply came over HTTP/2, many streams a connection. */
bool
claude_http_multiplexing(void)
{
	return multiplexing;
}

/*
 * Let curl act on ready sockets and on its timers; finished transfers are
 * then read with claude_http_next_done.
 */
void
claude_http_drive(bool sockets_ready)
{
	int			running;
	TimestampTz now;

	if (sockets_ready)
	{
		struct epoll_event events[EPOLL_BATCH];
		int			n;

		do
		{
			n = epoll_wait(epfd, events, EPOLL_BATCH, 0);
			for (int i = 0; i < n; i++)
			{
				int			pool = (int) (events[i].data.u64 >> 32);
				curl_socket_t s = (curl_socket_t) (uint32) events[i].data.u64;
				int			flags = 0;

				/* a pool closed in this batch: its sockets are closed too */
				if (pool >= npools || pools[pool].multi == NULL)
					continue;
				if (events[i].events & EPOLLIN)
					flags |= CURL_CSELECT_IN;
				if (events[i].events & EPOLLOUT)
					flags |= CURL_CSELECT_OUT;
				if (events[i].events & (EPOLLERR | EPOLLHUP))
					flags |= CURL_CSELECT_ERR;
				curl_multi_socket_action(pools[pool].multi, s, flags, &running);
			}
		} while (n == EPOLL_BATCH);
	}

	now = GetCurrentTimestamp();
	for (int i = 0; i < npools; i++)
	{
		if (pools[i].multi && pools[i].timer_deadline >= 0 && now >= pools[i].timer_deadline)
		{
			pools[i].timer_deadline = -1;
			curl_multi_socket_action(pools[i].multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
	}
}
