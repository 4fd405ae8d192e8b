/*
 * pack.h
 *		A request as it travels from a backend to the HTTP worker.
 *
 * Everything the transfer needs is resolved in the calling session (its
 * settings, the key) and packed into one DSA chunk: a fixed header and
 * NUL-terminated strings behind it.  The worker reads it in place.
 */
#ifndef CLAUDE_PACK_H
#define CLAUDE_PACK_H

#include "utils/dsa.h"

/* How a Messages request is streamed (its body then gets "stream": true). */
typedef enum ClaudeStreamMode
{
	CLAUDE_STREAM_NONE = 0,		/* one JSON reply */
	CLAUDE_STREAM_ASSEMBLE,		/* streamed, the caller gets the Message */
	CLAUDE_STREAM_TEXT,			/* ... and each piece of text as it comes */
	CLAUDE_STREAM_EVENTS		/* ... and each event as it comes */
} ClaudeStreamMode;

typedef enum ClaudeMethod
{
	CLAUDE_GET,
	CLAUDE_POST
} ClaudeMethod;

/*
 * What a successful reply is (client/endpoint.c says it per endpoint).  A
 * Message is priced: it draws from the token limits and its role's
 * budget, its usage is counted, and it is cached only whole.
 */
typedef enum ClaudeReplyKind
{
	CLAUDE_REPLY_JSON = 0,		/* any JSON object */
	CLAUDE_REPLY_MESSAGE,		/* a Message */
	CLAUDE_REPLY_FILE			/* written to output_file */
} ClaudeReplyKind;

/* bytes of a model id kept with usage, its NUL included */
#define CLAUDE_USAGE_MODEL_LEN	64

typedef struct ClaudeRequest
{
	ClaudeMethod method;
	ClaudeReplyKind reply;
	int			timeout_ms;
	Size		max_reply;		/* bytes of body kept in memory, at most */
	int			max_retries;	/* the caller's policy (client/request.h) */
	bool		not_idempotent; /* sent once: never retried (max_retries 0) */
	double		input_tokens;	/* estimate, for the rate limits */
	double		output_tokens;	/* max_tokens, reserved from the limits */
	/* where a successful reply is cached (cache_dbid invalid: nowhere) */
	Oid			cache_dbid;
	Oid			cache_nsp;
	uint8		cache_key[32];
	int			cache_ttl;
	int			cache_lead;
	bool		cache_by_caller;	/* the caller stores it once it checked it */
	/* whose request it is, what it costs, and a budget reservation */
	Oid			dbid;
	Oid			role;
	int64		price_in;		/* nano-USD per million tokens; < 0: unknown */
	int64		price_out;
	char		model[CLAUDE_USAGE_MODEL_LEN];	/* usage is counted under it */
	int32		reserved_day;	/* a budget reservation on that day, or -1 */
	const char *url;
	const char *api_key;
	const char *version;
	const char *ca_file;
	const char *proxy;
	const char *body;			/* NULL for GET */
	Size		body_len;
	const char *input_file;		/* body_len bytes of body are here instead */
	const char *output_file;	/* a 2xx body goes here, not to the slot */
	Size		max_output;		/* ... bytes of it at most, 0: no limit */
	ClaudeStreamMode stream;
} ClaudeRequest;

/*
 * A download (output_file) must come at least this fast, in bytes a second
 * over each claude.request_timeout, and end within the time this rate
 * allows its max_output: a trickling server holds nothing for long.
 */
#define CLAUDE_DOWNLOAD_MIN_RATE	1024

static inline double
claude_download_time_ms(const ClaudeRequest *req)
{
	return req->timeout_ms + (double) req->max_output / CLAUDE_DOWNLOAD_MIN_RATE * 1000;
}

extern void claude_request_unpack(const char *blob, ClaudeRequest *req);
extern Size claude_request_packed_size(const char *blob);
extern dsa_pointer claude_request_pack(const ClaudeRequest *req);
extern void claude_request_set_reservation(dsa_pointer dp, int32 day);

#endif
