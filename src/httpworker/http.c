/*
 * http.c
 *		An attempt of the HTTP worker as a libcurl transfer: its options, the
 *		body it sends and what it reads.  Caller: dispatch.c (start, end,
 *		stalled attempts); the transfer runs in a pool of pool.c.
 *
 * A share handle adds TLS sessions and DNS for the whole server, whatever
 * pool a transfer is on.  A body is read by curl from us, never handed to
 * it whole, and curl may not rewind it: when a connection closes after the
 * body went out, libcurl 7.88 would send it again on its own, unseen by the
 * retry policy; refused, that is an error the policy sees (dispatch.c).
 * Callbacks never raise errors: they run inside libcurl.
 */
#include "postgres.h"

#include <ctype.h>
#include <curl/curl.h>
#include <limits.h>

#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "common/guc.h"
#include "httpworker/http.h"
#include "httpworker/sse.h"
#include "httpworker/transfer.h"
#include "shmem/slots.h"

/* an HTTP/2 attempt that sent no byte of its body by then is not taken */
#define STALL_MAX_MS	5000
#define STALL_MIN_MS	500

static CURLSH *share = NULL;

/* idle easy handles, reused so that curl keeps their caches warm */
static CURL **idle_easy;
static int	n_idle_easy;

/* The body of an upload comes from its file, never from memory. */
static size_t
read_cb(char *buf, size_t size, size_t nitems, void *userp)
{
	Transfer   *t = userp;
	size_t		n = fread(buf, 1, size * nitems, t->in);

	if (n == 0 && ferror(t->in))
	{
		snprintf(t->file_error, sizeof(t->file_error), "could not read file \"%s\": %m",
				 t->req.input_file);
		t->file_failed = true;
		return CURL_READFUNC_ABORT;
	}
	t->sent += n;
	return n;
}

/* The body of a request held in memory. */
static size_t
read_body(char *buf, size_t size, size_t nitems, void *userp)
{
	Transfer   *t = userp;
	size_t		n = Min(size * nitems, t->req.body_len - t->sent);

	memcpy(buf, t->req.body + t->sent, n);
	t->sent += n;
	return n;
}

/* curl would rewind a body to send it again by itself: never */
static int
refuse_seek(void *userp, curl_off_t offset, int origin)
{
	return CURL_SEEKFUNC_CANTSEEK;
}

/*
 * A successful body of a download goes to its file, never into memory,
 * and ends the transfer past its limit.
 */
static size_t
write_output(Transfer *t, char *data, size_t n)
{
	if (t->out == NULL && (t->out = fopen(t->req.output_file, "w")) == NULL)
	{
		snprintf(t->file_error, sizeof(t->file_error), "could not create file \"%s\": %m",
				 t->req.output_file);
		t->file_failed = true;
		return 0;
	}
	if (t->req.max_output > 0 && (Size) ftello(t->out) + n > t->req.max_output)
	{
		t->too_large = true;
		return 0;
	}
	if (fwrite(data, 1, n, t->out) != n)
	{
		snprintf(t->file_error, sizeof(t->file_error), "could not write file \"%s\": %m",
				 t->req.output_file);
		t->file_failed = true;
		return 0;
	}
	return n;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	Transfer   *t = userp;
	size_t		n = size * nmemb;

	if (t->sse && t->event_stream)
	{
		long		status = 0;

		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300)
			return claude_streamed_write(t, data, n);
	}

	if (t->req.output_file)
	{
		long		status = 0;

		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300)
			return write_output(t, data, n);
	}
	/* past claude.max_reply_size the transfer ends, nothing more is kept */
	if (t->body_len + n > t->req.max_reply)
	{
		t->too_large = true;
		return 0;
	}
	if (t->body_len + n > t->body_cap)
	{
		size_t		cap = Max(t->body_cap * 2, 16384);
		char	   *grown;

		while (cap < t->body_len + n)
			cap *= 2;
		cap = Min(cap, t->req.max_reply);
		if ((grown = realloc(t->body, cap)) == NULL)
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

/* Copy a header value without surrounding blanks into buf. */
static void
header_value(const char *v, size_t len, char *buf, size_t size)
{
	while (len > 0 && (*v == ' ' || *v == '\t'))
		v++, len--;
	while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
		len--;
	len = Min(len, size - 1);
	memcpy(buf, v, len);
	buf[len] = '\0';
}

/* Forget what headers said: a new response (interim or final) begins. */
static void
forget_headers(Transfer *t)
{
	t->request_id[0] = '\0';
	t->retry_after_ms = -1;
	t->should_retry = -1;
	t->event_stream = false;
	t->header_status = 0;
	t->headers_final = false;
	claude_server_limits_init(&t->server);
}

/*
 * request-id as callers and the log may see it: the key this request sent
 * replaced in the whole value first (a cut key would no longer be found),
 * then printable ASCII only ('?' for other bytes), cut to
 * CLAUDE_REQUEST_ID_LEN characters.
 */
static void
take_request_id(Transfer *t, const char *v, size_t len)
{
	const char *key = t->req.api_key;
	size_t		keylen = key ? strlen(key) : 0;
	int			out = 0;

	while (len > 0 && (*v == ' ' || *v == '\t'))
		v++, len--;
	while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
					   v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	for (size_t i = 0; i < len && out < CLAUDE_REQUEST_ID_LEN;)
	{
		unsigned char c = v[i];

		if (keylen > 0 && c == (unsigned char) key[0] && len - i >= keylen &&
			memcmp(v + i, key, keylen) == 0)
		{
			for (int k = 0; k < 8 && out < CLAUDE_REQUEST_ID_LEN; k++)
				t->request_id[out++] = '*';
			i += keylen;
			continue;
		}
		t->request_id[out++] = (c >= 0x20 && c < 0x7f) ? c : '?';
		i++;
	}
	t->request_id[out] = '\0';
}

/*
 * Headers, as curl hands them over.  Only the final response's count: a
 * status line starts a response (a 103's headers are forgotten), and once
 * the final response's headers ended, whatever comes (trailers, after the
 * body) is ignored.  The proxy's CONNECT response is never handed over.
 */
static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	Transfer   *t = userp;
	size_t		n = size * nmemb;
	const char *colon;
	size_t		namelen;
	char		value[128];

	if (t->headers_final)
		return n;
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
	{
		const char *sp = memchr(data, ' ', n);

		forget_headers(t);
		/* "HTTP/1.1 103 Early Hints", "HTTP/2 200 " */
		if (sp && data + n - sp > 3 && isdigit((unsigned char) sp[1]) &&
			isdigit((unsigned char) sp[2]) && isdigit((unsigned char) sp[3]))
			t->header_status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
		return n;
	}
	if (n > 0 && n <= 2 && (data[0] == '\r' || data[0] == '\n'))
	{
		/* the end of a response's headers: an interim one's, or the last */
		t->headers_final = t->header_status < 100 || t->header_status >= 200;
		return n;
	}
	if ((colon = memchr(data, ':', n)) == NULL)
		return n;
	namelen = colon - data;

#define IS(name) (namelen == strlen(name) && pg_strncasecmp(data, name, namelen) == 0)
	if (IS("request-id"))
	{
		take_request_id(t, colon + 1, n - namelen - 1);
		return n;
	}
	header_value(colon + 1, n - namelen - 1, value, sizeof(value));
	if (IS("retry-after-ms"))
		t->retry_after_ms = strtod(value, NULL);
	else if (IS("retry-after") && t->retry_after_ms < 0)
	{
		char	   *end;
		double		secs = strtod(value, &end);

		if (end == value)
		{
			/* an HTTP date */
			time_t		when = curl_getdate(value, NULL);

			secs = when < 0 ? -1 : difftime(when, time(NULL));
		}
		if (secs >= 0)
			t->retry_after_ms = secs * 1000;
	}
	else if (IS("content-type"))
		t->event_stream = pg_strncasecmp(value, "text/event-stream", 17) == 0;
	else if (IS("x-should-retry"))
		t->should_retry = (pg_strcasecmp(value, "true") == 0) ? 1 :
			(pg_strcasecmp(value, "false") == 0) ? 0 : -1;
	else
		(void) claude_server_limits_header(&t->server, data, namelen, value);
#undef IS
	return n;
}

static void
set_header(Transfer *t, const char *name, const char *value)
{
	char	   *line = psprintf("%s: %s", name, value);

	t->headers = curl_slist_append(t->headers, line);
	explicit_bzero(line, strlen(line));
	pfree(line);
}

/*
 * Close the files of an attempt; false (file_error set) if a download was
 * not written in full.
 */
bool
claude_http_close_files(Transfer *t)
{
	bool		ok = !t->file_failed;

	if (t->in != NULL)
		fclose(t->in);
	t->in = NULL;

	if (t->out != NULL && fclose(t->out) != 0 && ok)
	{
		snprintf(t->file_error, sizeof(t->file_error), "could not write file \"%s\": %m",
				 t->req.output_file);
		ok = false;
	}
	t->out = NULL;
	t->file_failed = false;
	return ok;
}

/* Stop the current attempt, if any, and keep its handle for reuse. */
void
claude_http_end(Transfer *t)
{
	(void) claude_http_close_files(t);
	if (t->easy == NULL)
		return;
	if (t->pool >= 0)
		claude_pool_detach(t);
	if (t->sse)
		claude_streamed_running--;
	curl_slist_free_all(t->headers);
	curl_easy_reset(t->easy);
	idle_easy[n_idle_easy++] = t->easy;
	t->easy = NULL;
	t->headers = NULL;
}

/* Free what an attempt read: its body and its stream. */
void
claude_http_free(Transfer *t)
{
	free(t->body);
	t->body = NULL;
	t->body_len = t->body_cap = 0;
	claude_sse_free(t->sse);
	t->sse = NULL;
}

/* The share handle and the idle easy handles, on the first attempt. */
static bool
init_share(void)
{
	if (idle_easy == NULL &&
		(idle_easy = calloc(claude_shared->nslots, sizeof(CURL *))) == NULL)
		return false;
	if ((share = curl_share_init()) == NULL)
		return false;
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return true;
}

/* A POST's body: read by curl from us, and never rewound. */
static void
set_body(Transfer *t, CURL *e)
{
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) t->req.body_len);
	if (t->req.input_file)
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
	else if (t->req.stream == CLAUDE_STREAM_NONE || !claude_streamed_body(t, e))
	{
		if (t->req.body == NULL)
			t->req.body_len = 0;
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_body);
	}
	curl_easy_setopt(e, CURLOPT_READDATA, t);
	curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, refuse_seek);
	curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
}

/*
 * Which connection may carry the attempt: connguard.c judges it just before
 * the request goes out.  A restarted attempt takes a new one; and while
 * its server is known to have sent what no request asked for, an HTTP/1.1
 * connection serves one request and closes.
 */
static void
set_connection(Transfer *t, CURL *e)
{
	bool		http1 = claude_streamed_reader(t) || !claude_http_multiplexing() ||
		pg_strncasecmp(t->req.url, "http:", 5) == 0;
	bool		spoilt = http1 && claude_conn_spoilt(t->req.url);

	curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, t->fresh || spoilt ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, spoilt ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, claude_conn_open_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, claude_conn_close_socket);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, claude_conn_prereq);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
}

/* Start an attempt of a transfer; false if curl could not take it. */
bool
claude_http_begin(Transfer *t)
{
	ClaudeRequest *req = &t->req;
	CURL	   *e;

	claude_http_free(t);
	t->too_large = false;
	t->stream_failed = NULL;
	t->first_token = 0;
	t->paused = false;
	t->events_lost = false;
	(void) claude_http_close_files(t);
	t->errbuf[0] = '\0';
	forget_headers(t);

	if (req->input_file && (t->in = fopen(req->input_file, "r")) == NULL)
	{
		snprintf(t->file_error, sizeof(t->file_error), "could not open file \"%s\": %m",
				 req->input_file);
		t->file_failed = true;
		return false;
	}
	if (share == NULL && !init_share())
		return false;
	e = n_idle_easy > 0 ? idle_easy[--n_idle_easy] : curl_easy_init();
	if (e == NULL)
		return false;
	t->easy = e;
	t->pool = -1;
	t->sent = 0;
	t->refused = CONN_TAKEN;
	t->h2 = false;
	t->on_connection = 0;
	t->taken = false;
	t->heard_bytes = 0;

	set_header(t, "x-api-key", req->api_key);
	set_header(t, "anthropic-version", req->version);
	if (req->method == CLAUDE_POST && req->body_len > 0)
		t->headers = curl_slist_append(t->headers, "content-type: application/json");
	/* no 100-continue round trip before large bodies */
	t->headers = curl_slist_append(t->headers, "Expect:");
	t->headers = curl_slist_append(t->headers, "user-agent: claude-postgresql/0.1");

	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	if (req->method == CLAUDE_POST)
		set_body(t, e);
	curl_easy_setopt(e, CURLOPT_SHARE, share);
	/* a reader's stream may pause: not on a connection others share */
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, claude_streamed_reader(t) ?
					 (long) CURL_HTTP_VERSION_1_1 : (long) CURL_HTTP_VERSION_2TLS);
	/*
	 * Wait to multiplex only on a server known to multiplex: on a cold pool
	 * every request would wait on the first connection, and on one request
	 * that never gets its headers.
	 */
	curl_easy_setopt(e, CURLOPT_PIPEWAIT,
					 claude_http_multiplexing() && !claude_streamed_reader(t) ? 1L : 0L);
	set_connection(t, e);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (req->ca_file && req->ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
	/* an empty proxy turns off proxies from the environment, too */
	curl_easy_setopt(e, CURLOPT_PROXY, req->proxy ? req->proxy : "");
	/* the proxy's CONNECT reply is not the API's: its headers never count */
	curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	if (req->output_file)
	{
		/*
		 * A download may take long, but not trickle: at least
		 * CLAUDE_DOWNLOAD_MIN_RATE a second over each claude.request_timeout,
		 * and all of it within the time that rate allows its limit.
		 */
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, (long) CLAUDE_DOWNLOAD_MIN_RATE);
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long) Max(req->timeout_ms / 1000, 1));
		if (req->max_output > 0)
			curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
							 (long) Min(claude_download_time_ms(req), (double) LONG_MAX));
	}
	else if (t->sse)
	{
		/* a stream may take long: give up only when it stalls */
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long) Max(req->timeout_ms / 1000, 1));
	}
	else
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(req->timeout_ms, 30000));
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);

	if (!claude_pool_attach(t))
	{
		claude_http_end(t);
		return false;
	}
	return true;
}

/*
 * When to look whether an attempt on an HTTP/2 connection was taken (see
 * below), or 0: not such an attempt, or not yet given one.
 */
static TimestampTz
stall_check(const Transfer *t)
{
	int			ms = Max(STALL_MIN_MS, Min(STALL_MAX_MS, t->req.timeout_ms / 4));

	if (t->easy == NULL || !t->h2 || t->on_connection == 0 || t->taken ||
		t->req.method != CLAUDE_POST || t->req.body_len == 0)
		return 0;
	return TimestampTzPlusMilliseconds(t->on_connection, ms);
}

/*
 * Whether an attempt waits on an HTTP/2 connection that does not take it:
 * a while after it got the connection, not a byte of its body went out
 * and no answer came.  libcurl 7.88 queues a request on an idle connection
 * whose server allows no stream (MAX_CONCURRENT_STREAMS 0) until it times
 * out; nothing of it was sent, so it may start again elsewhere.
 */
bool
claude_http_stalled(Transfer *t, TimestampTz now)
{
	TimestampTz due = stall_check(t);
	curl_off_t	uploaded = 0;
	long		header_size = 0;

	if (due == 0 || now < due)
		return false;
	curl_easy_getinfo(t->easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
	curl_easy_getinfo(t->easy, CURLINFO_HEADER_SIZE, &header_size);
	if (uploaded > 0 || header_size > 0)
	{
		t->taken = true;		/* no need to look again */
		return false;
	}
	return true;
}

