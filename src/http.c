/*
 * http.c
 *		Transfers of the HTTP worker, on one libcurl multi handle.
 *
 * curl tells us which sockets to watch; we keep them in an epoll set of our
 * own, whose descriptor the worker's WaitEventSet watches next to its
 * latch.  One multi handle means one connection cache (keep-alive, HTTP/2
 * multiplexing), and a share handle adds TLS sessions and DNS for the
 * whole server.  Callbacks never raise errors: they run inside libcurl.
 */
#include "postgres.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "lib/ilist.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "http.h"
#include "queue.h"
#include "request.h"

#define MAX_RESPONSE_BYTES	((size_t) 1 << 30)
#define EPOLL_BATCH 64

typedef struct Transfer
{
	int			slot;
	CURL	   *easy;
	struct curl_slist *headers;
	char	   *body;			/* malloc'd response */
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	int			timeout_ms;
	TimestampTz started;
	char		request_id[64];
	char		errbuf[CURL_ERROR_SIZE];
	dlist_node	node;
} Transfer;

static CURLM *multi = NULL;
static CURLSH *share = NULL;
static int	epfd = -1;
static TimestampTz timer_deadline = -1;	/* -1: no timer */
static Transfer *transfers;		/* indexed by slot */
static dlist_head active = DLIST_STATIC_INIT(active);

/* idle easy handles, reused so that curl keeps their caches warm */
static CURL **idle_easy;
static int	n_idle_easy;

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		if (socketp)
			(void) epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(multi, s, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
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
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0)
			elog(LOG, "claude: epoll_ctl ADD failed: %m");
		curl_multi_assign(multi, s, (void *) 1);
	}
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_deadline = -1;
	else
		timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 timeout_ms);
	return 0;
}

static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	curl_socket_t s = socket(addr->family, addr->socktype, addr->protocol);

	if (s != CURL_SOCKET_BAD)
	{
		pg_atomic_fetch_add_u64(&claude_shared->connections_opened, 1);
		pg_atomic_fetch_add_u32(&claude_shared->connections_open, 1);
	}
	return s;
}

static int
close_socket_cb(void *clientp, curl_socket_t s)
{
	pg_atomic_fetch_sub_u32(&claude_shared->connections_open, 1);
	return close(s);
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	Transfer   *t = userp;
	size_t		n = size * nmemb;

	if (t->body_len + n > t->body_cap)
	{
		size_t		cap = Max(t->body_cap * 2, 16384);
		char	   *grown;

		while (cap < t->body_len + n)
			cap *= 2;
		if (cap > MAX_RESPONSE_BYTES ||
			(grown = realloc(t->body, cap)) == NULL)
		{
			t->too_large = true;
			return 0;
		}
		t->body = grown;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	return n;
}

static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	Transfer   *t = userp;
	size_t		n = size * nmemb;

	if (n > 11 && pg_strncasecmp(data, "request-id:", 11) == 0)
	{
		const char *v = data + 11;
		size_t		len = n - 11;

		while (len > 0 && (*v == ' ' || *v == '\t'))
			v++, len--;
		while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
						   v[len - 1] == ' '))
			len--;
		len = Min(len, sizeof(t->request_id) - 1);
		memcpy(t->request_id, v, len);
		t->request_id[len] = '\0';
	}
	return n;
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

	multi = curl_multi_init();
	share = curl_share_init();
	if (multi == NULL || share == NULL)
		elog(ERROR, "claude: could not initialize libcurl");
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) claude_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) claude_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) claude_max_connections);

	transfers = calloc(claude_shared->nslots, sizeof(Transfer));
	idle_easy = calloc(claude_shared->nslots, sizeof(CURL *));
	if (transfers == NULL || idle_easy == NULL)
		elog(ERROR, "claude: out of memory");
}

int
claude_http_pollable_fd(void)
{
	return epfd;
}

/* Milliseconds until curl's timer fires, or -1. */
long
claude_http_timeout_ms(void)
{
	long		secs;
	int			usecs;

	if (timer_deadline < 0)
		return -1;
	TimestampDifference(GetCurrentTimestamp(), timer_deadline, &secs, &usecs);
	return secs * 1000 + (usecs + 999) / 1000;
}

static void
set_header(Transfer *t, const char *name, const char *value)
{
	char	   *line = psprintf("%s: %s", name, value);

	t->headers = curl_slist_append(t->headers, line);
	explicit_bzero(line, strlen(line));
	pfree(line);
}

static void
end_transfer(Transfer *t)
{
	curl_multi_remove_handle(multi, t->easy);
	curl_slist_free_all(t->headers);
	free(t->body);
	curl_easy_reset(t->easy);
	idle_easy[n_idle_easy++] = t->easy;
	dlist_delete(&t->node);
	pg_atomic_fetch_sub_u32(&claude_shared->in_flight, 1);
	memset(t, 0, sizeof(Transfer));
	t->slot = -1;
}

static void
fail_start(int slot, const char *why)
{
	ClaudeResult r;

	memset(&r, 0, sizeof(r));
	r.transport = CLAUDE_TE_INTERNAL;
	r.body = InvalidDsaPointer;
	strlcpy(r.message, why, sizeof(r.message));
	claude_slot_finish(slot, &r);
}

/* Begin the transfer of a slot the worker just took from the queue. */
void
claude_http_start(int slot)
{
	Transfer   *t = &transfers[slot];
	ClaudeRequest req;
	CURL	   *e;
	CURLMcode	mrc;

	claude_request_unpack(dsa_get_address(claude_area(),
										  claude_slots[slot].request), &req);

	e = n_idle_easy > 0 ? idle_easy[--n_idle_easy] : curl_easy_init();
	if (e == NULL)
	{
		fail_start(slot, "could not create a curl handle");
		return;
	}

	memset(t, 0, sizeof(Transfer));
	t->slot = slot;
	t->easy = e;
	t->timeout_ms = req.timeout_ms;
	t->started = GetCurrentTimestamp();

	set_header(t, "x-api-key", req.api_key);
	set_header(t, "anthropic-version", req.version);
	if (req.method == CLAUDE_POST)
		t->headers = curl_slist_append(t->headers, "content-type: application/json");
	/* no 100-continue round trip before large bodies */
	t->headers = curl_slist_append(t->headers, "Expect:");
	t->headers = curl_slist_append(t->headers, "user-agent: claude-postgresql/0.1");

	curl_easy_setopt(e, CURLOPT_URL, req.url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	if (req.method == CLAUDE_POST)
	{
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req.body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req.body);
	}
	curl_easy_setopt(e, CURLOPT_SHARE, share);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (req.ca_file && req.ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, req.ca_file);
	/* an empty proxy turns off proxies from the environment, too */
	curl_easy_setopt(e, CURLOPT_PROXY, req.proxy ? req.proxy : "");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) req.timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(req.timeout_ms, 30000));
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);

	dlist_push_tail(&active, &t->node);
	pg_atomic_fetch_add_u32(&claude_shared->in_flight, 1);
	pg_atomic_fetch_add_u64(&claude_shared->requests, 1);

	mrc = curl_multi_add_handle(multi, e);
	if (mrc != CURLM_OK)
	{
		end_transfer(t);
		fail_start(slot, curl_multi_strerror(mrc));
	}
}

static void
complete_transfer(Transfer *t, CURLcode code)
{
	ClaudeResult r;
	long		status = 0;
	int			slot = t->slot;

	memset(&r, 0, sizeof(r));
	r.body = InvalidDsaPointer;
	r.attempts = 1;
	r.elapsed_ms = (double) (GetCurrentTimestamp() - t->started) / 1000.0;
	strlcpy(r.request_id, t->request_id, sizeof(r.request_id));

	if (code == CURLE_OK)
	{
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		r.http_status = (int) status;
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
			{
				r.transport = CLAUDE_TE_INTERNAL;
				snprintf(r.message, sizeof(r.message),
						 "out of shared memory for a reply of %zu bytes", t->body_len);
			}
		}
	}
	else if (code == CURLE_OPERATION_TIMEDOUT)
	{
		r.transport = CLAUDE_TE_TIMEOUT;
		snprintf(r.message, sizeof(r.message),
				 "no complete reply within claude.request_timeout (%d ms)",
				 t->timeout_ms);
	}
	else if (t->too_large)
	{
		r.transport = CLAUDE_TE_INTERNAL;
		snprintf(r.message, sizeof(r.message), "reply too large");
	}
	else
	{
		r.transport = CLAUDE_TE_CONNECT;
		strlcpy(r.message, t->errbuf[0] ? t->errbuf : curl_easy_strerror(code),
				sizeof(r.message));
	}

	end_transfer(t);
	claude_slot_finish(slot, &r);
}

static void
collect_done(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Transfer   *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		complete_transfer(t, msg->data.result);
	}
}

/*
 * Let curl act on ready sockets and on its timer, then hand finished
 * transfers back.
 */
void
claude_http_drive(bool sockets_ready)
{
	int			running;

	if (sockets_ready)
	{
		struct epoll_event events[EPOLL_BATCH];
		int			n;

		do
		{
			n = epoll_wait(epfd, events, EPOLL_BATCH, 0);
			for (int i = 0; i < n; i++)
			{
				int			flags = 0;

				if (events[i].events & EPOLLIN)
					flags |= CURL_CSELECT_IN;
				if (events[i].events & EPOLLOUT)
					flags |= CURL_CSELECT_OUT;
				if (events[i].events & (EPOLLERR | EPOLLHUP))
					flags |= CURL_CSELECT_ERR;
				curl_multi_socket_action(multi, events[i].data.fd, flags, &running);
			}
		} while (n == EPOLL_BATCH);
	}

	if (timer_deadline >= 0 && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_deadline = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	collect_done();
}

/* Abort the transfers whose callers gave up. */
void
claude_http_abort_cancelled(void)
{
	dlist_mutable_iter iter;

	if (pg_atomic_exchange_u32(&claude_shared->cancel_pending, 0) == 0)
		return;

	dlist_foreach_modify(iter, &active)
	{
		Transfer   *t = dlist_container(Transfer, node, iter.cur);

		if (claude_slot_is_cancelled(t->slot))
		{
			int			slot = t->slot;

			end_transfer(t);
			claude_slot_release_cancelled(slot);
		}
	}
}

void
claude_http_shutdown(void)
{
	dlist_mutable_iter iter;

	if (multi == NULL)
		return;
	/* the slots themselves are failed by the queue's exit path */
	dlist_foreach_modify(iter, &active)
	{
		Transfer   *t = dlist_container(Transfer, node, iter.cur);

		curl_multi_remove_handle(multi, t->easy);
		dlist_delete(&t->node);
	}
}
