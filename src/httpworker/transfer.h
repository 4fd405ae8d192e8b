/*
 * transfer.h
 *		A request while the HTTP worker owns it (worker-internal).
 *
 * A transfer waits for the rate limits, runs as a curl transfer, and may
 * wait out a backoff and run again, until it finishes its slot.
 */
#ifndef CLAUDE_TRANSFER_H
#define CLAUDE_TRANSFER_H

#include <curl/curl.h>

#include "datatype/timestamp.h"
#include "lib/ilist.h"

#include "common/errors.h"
#include "common/json.h"
#include "shmem/ratelimit.h"
#include "shmem/pack.h"

/* Why an attempt's connection was refused before anything was sent on it */
typedef enum ConnRefusal
{
	CONN_TAKEN = 0,				/* not refused */
	CONN_CLOSED,				/* the server closed it while idle */
	CONN_UNCLEAR,				/* bytes wait on it that could not be judged */
	CONN_UNSOLICITED,			/* the server sent what no request asked for */
	CONN_STALLED,				/* HTTP/2: the request is not taken */
	CONN_RESEND					/* the body could not be read again */
} ConnRefusal;

typedef enum TransferState
{
	XFER_WAITING,				/* for the rate limits */
	XFER_RUNNING,				/* a curl transfer is under way */
	XFER_BACKOFF				/* waiting to retry */
} TransferState;

typedef struct Transfer
{
	int			slot;
	TransferState state;
	bool		accounted;		/* its statistics and usage are counted */
	bool		finished;		/* its slot has its result */
	ClaudeRequest req;			/* points into the packed request */
	ClaudeCost	cost;
	int			attempts;
	bool		throttled;		/* had to wait for the limits */
	TimestampTz created;		/* taken from the submit queue */
	TimestampTz queued_at;
	TimestampTz due;			/* XFER_BACKOFF: next attempt */
	dlist_node	node;
	int			restarts;		/* of this attempt, before it was sent */
	bool		fresh;			/* restarted: on a new connection */

	/* the current attempt */
	CURL	   *easy;
	int			pool;			/* pool.c: the multi handle it is on */
	ConnRefusal refused;		/* connguard.c: its connection, refused */
	bool		h2;				/* its connection speaks HTTP/2 */
	TimestampTz on_connection;	/* when it was given one (0: not yet) */
	bool		taken;			/* HTTP/2: its body began to go out */
	curl_off_t	heard_bytes;	/* of its answer, when pool.c last looked */
	size_t		sent;			/* of the body, read by curl */
	struct curl_slist *headers;
	char	   *body;			/* malloc'd response */
	size_t		body_len;
	size_t		body_cap;
	bool		too_large;
	FILE	   *in;				/* req.input_file, the body to send */
	FILE	   *out;			/* req.output_file, once a 2xx body comes */
	bool		file_failed;	/* either could not be read or written */
	char		file_error[256];
	TimestampTz started;
	char		request_id[CLAUDE_REQUEST_ID_LEN + 1];
	char		errbuf[CURL_ERROR_SIZE];
	double		retry_after_ms;	/* < 0: no retry-after header */
	int			should_retry;	/* x-should-retry: -1 absent, 0, 1 */
	bool		billing;		/* this attempt's reply is a billing_error */
	int			header_status;	/* of the status line whose headers come */
	bool		headers_final;	/* the final response's headers are in */
	bool		have_usage;		/* some attempt reported its usage */
	ClaudeUsage usage;			/* what the attempts reported, summed */
	ClaudeServerLimits server;

	/* a streamed request (req.stream) */
	struct ClaudeSse *sse;		/* the events of this attempt */
	char	   *own_request;	/* a reader's: the request, out of shared memory */
	size_t		send_len;		/* of the body with "stream": true */
	size_t		prefix_len;
	bool		paused;			/* until the reader takes its events */
	bool		events_lost;	/* shared memory was too full for them */
	bool		event_stream;	/* the reply is text/event-stream */
	const char *stream_failed;	/* a 2xx stream that makes no Message: why */
	TimestampTz first_token;	/* 0 until text, thinking or input came */
} Transfer;

/* http.c */
extern bool claude_http_begin(Transfer *t);
extern void claude_http_end(Transfer *t);
extern bool claude_http_close_files(Transfer *t);
extern void claude_http_free(Transfer *t);
extern bool claude_http_stalled(Transfer *t, TimestampTz now);

/* pool.c */
extern bool claude_http_multiplexing(void);
extern Transfer *claude_http_next_done(CURLcode *code, long *status);
extern bool claude_pool_attach(Transfer *t);
extern void claude_pool_detach(Transfer *t);
extern void claude_pool_retire(int pool, const char *why);
extern void claude_pool_watch(Transfer *t, TimestampTz now);
extern void claude_pool_retire_silent(TimestampTz now);

/* outcome.c */
extern double claude_outcome_retry_ms(const Transfer *t, CURLcode code, long status);
extern void claude_outcome_retry_hints(ClaudeResult *r, const Transfer *t);
extern void claude_outcome_failure(ClaudeResult *r, CURLcode code, const Transfer *t);
extern void claude_outcome_shmem_full(ClaudeResult *r, const char *what);

/* connguard.c */
extern curl_socket_t claude_conn_open_socket(void *clientp, curlsocktype purpose,
											 struct curl_sockaddr *addr);
extern int	claude_conn_close_socket(void *clientp, curl_socket_t s);
extern int	claude_conn_prereq(void *clientp, char *primary_ip, char *local_ip,
							   int primary_port, int local_port);
extern bool claude_conn_spoilt(const char *url);

/* streamed.c */
extern int	claude_streamed_running;
extern bool claude_streamed_reader(const Transfer *t);
extern void claude_streamed_own_request(Transfer *t);
extern void claude_streamed_forget(Transfer *t);
extern bool claude_streamed_body(Transfer *t, CURL *e);
extern bool claude_streamed_push(Transfer *t, bool force);
extern size_t claude_streamed_write(Transfer *t, char *data, size_t n);
extern void claude_streamed_resume(Transfer *t);
extern void claude_streamed_outcome(Transfer *t, CURLcode code, long *status);
extern bool claude_streamed_over(const Transfer *t, long *status);

#endif
