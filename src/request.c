/*
 * request.c
 *		Packing requests for the HTTP worker, and the synchronous call path.
 */
#include "postgres.h"

#include <math.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "cache.h"
#include "errors.h"
#include "guc.h"
#include "queue.h"
#include "request.h"
#include "secret.h"
#include "usage.h"

#define PACKED_MAGIC 0x436c6431	/* "Cld1" */
#define NSTRINGS 8

typedef struct PackedRequest
{
	uint32		magic;
	ClaudeMethod method;
	int			timeout_ms;
	int			max_retries;
	bool		not_idempotent;
	double		input_tokens;
	double		output_tokens;
	Oid			cache_dbid;
	Oid			cache_nsp;
	uint8		cache_key[32];
	int			cache_ttl;
	int			cache_lead;
	Oid			dbid;
	Oid			role;
	double		price_in;
	double		price_out;
	int32		reserved_day;
	Size		body_len;
	Size		offsets[NSTRINGS];	/* 0 for NULL */
} PackedRequest;

static dsa_pointer
claude_request_pack(const ClaudeRequest *req)
{
	const char *strings[NSTRINGS] = {req->url, req->api_key, req->version,
	req->ca_file, req->proxy, req->input_file, req->output_file, req->body};
	Size		lengths[NSTRINGS];
	Size		size = MAXALIGN(sizeof(PackedRequest));
	dsa_pointer dp;
	PackedRequest *packed;
	char	   *p;

	for (int i = 0; i < NSTRINGS; i++)
	{
		lengths[i] = strings[i] == NULL ? 0 :
			(i == NSTRINGS - 1 ? req->body_len : strlen(strings[i]));
		if (strings[i] != NULL)
			size = add_size(size, lengths[i] + 1);
	}

	dp = dsa_allocate_extended(claude_area(), size,
							   DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (!DsaPointerIsValid(dp))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of shared memory for a request of %zu bytes", size)));

	packed = dsa_get_address(claude_area(), dp);
	packed->magic = PACKED_MAGIC;
	packed->method = req->method;
	packed->timeout_ms = req->timeout_ms;
	packed->max_retries = req->max_retries;
	packed->not_idempotent = req->not_idempotent;
	packed->input_tokens = req->input_tokens;
	packed->output_tokens = req->output_tokens;
	packed->cache_dbid = req->cache_dbid;
	packed->cache_nsp = req->cache_nsp;
	memcpy(packed->cache_key, req->cache_key, sizeof(packed->cache_key));
	packed->cache_ttl = req->cache_ttl;
	packed->cache_lead = req->cache_lead;
	packed->dbid = req->dbid;
	packed->role = req->role;
	packed->price_in = req->price_in;
	packed->price_out = req->price_out;
	packed->reserved_day = req->reserved_day;
	packed->body_len = req->body_len;
	p = (char *) packed + MAXALIGN(sizeof(PackedRequest));
	for (int i = 0; i < NSTRINGS; i++)
	{
		if (strings[i] == NULL)
		{
			packed->offsets[i] = 0;
			continue;
		}
		packed->offsets[i] = p - (char *) packed;
		memcpy(p, strings[i], lengths[i]);
		p[lengths[i]] = '\0';
		p += lengths[i] + 1;
	}
	return dp;
}

static void
claude_request_set_reservation(dsa_pointer dp, int32 day)
{
	((PackedRequest *) dsa_get_address(claude_area(), dp))->reserved_day = day;
}

void
claude_request_unpack(const char *blob, ClaudeRequest *req)
{
	const PackedRequest *packed = (const PackedRequest *) blob;
	const char **strings[NSTRINGS] = {&req->url, &req->api_key, &req->version,
	&req->ca_file, &req->proxy, &req->input_file, &req->output_file, &req->body};

	if (packed->magic != PACKED_MAGIC)
		elog(ERROR, "claude: corrupt request in shared memory");
	req->method = packed->method;
	req->timeout_ms = packed->timeout_ms;
	req->max_retries = packed->max_retries;
	req->not_idempotent = packed->not_idempotent;
	req->input_tokens = packed->input_tokens;
	req->output_tokens = packed->output_tokens;
	req->cache_dbid = packed->cache_dbid;
	req->cache_nsp = packed->cache_nsp;
	memcpy(req->cache_key, packed->cache_key, sizeof(req->cache_key));
	req->cache_ttl = packed->cache_ttl;
	req->cache_lead = packed->cache_lead;
	req->dbid = packed->dbid;
	req->role = packed->role;
	req->price_in = packed->price_in;
	req->price_out = packed->price_out;
	req->reserved_day = packed->reserved_day;
	req->body_len = packed->body_len;
	for (int i = 0; i < NSTRINGS; i++)
		*strings[i] = packed->offsets[i] ? blob + packed->offsets[i] : NULL;
}

/*
 * Fill a request from the calling session's settings.  The key is looked
 * up now, so an unconfigured key fails before anything is queued.
 */
static void
claude_request_from_settings(ClaudeRequest *req, ClaudeMethod method,
							 const char *path, const char *body, Size body_len)
{
	const char *base = claude_base_url;
	int			baselen = strlen(base);

	while (baselen > 0 && base[baselen - 1] == '/')
		baselen--;

	memset(req, 0, sizeof(*req));
	req->method = method;
	req->timeout_ms = claude_request_timeout;
	req->max_retries = claude_max_retries;
	req->url = psprintf("%.*s%s", baselen, base, path);
	req->api_key = claude_resolve_api_key();
	req->version = claude_anthropic_version;
	req->ca_file = claude_ca_file;
	req->proxy = claude_proxy;
	req->body = body;
	req->body_len = body_len;
}

static int
submit(ClaudeMethod method, const char *path, const char *body, Size body_len,
	   int max_tokens, ClaudeCacheCall *cache, const char *input_file,
	   const char *output_file, bool not_idempotent, bool wait)
{
	ClaudeRequest req;
	char	   *utf8 = NULL;
	int			slot;
	dsa_pointer packed;
	Oid			role = claude_request_owner();

	claude_require_shared();
	/* Messages requests are priced and come under their role's budget */
	if (max_tokens > 0)
		claude_budget_prepare(role);
	slot = claude_slot_acquire(wait);
	if (slot < 0)
		return -1;
	if (body)
		utf8 = pg_server_to_any(body, body_len, PG_UTF8);
	claude_request_from_settings(&req, method, path, utf8,
								 utf8 == NULL ? 0 :
								 utf8 == body ? body_len : strlen(utf8));
	req.dbid = MyDatabaseId;
	req.role = role;
	req.price_in = req.price_out = -1;
	req.reserved_day = -1;
	if (max_tokens > 0)
	{
		req.input_tokens = ceil(req.body_len / 4.0);
		req.output_tokens = max_tokens;
		claude_price_of(body, body_len, &req.price_in, &req.price_out);
	}
	if (input_file)
	{
		req.input_file = input_file;
		req.body_len = body_len;
	}
	req.output_file = output_file;
	req.not_idempotent = not_idempotent;
	claude_cache_request(cache, &req);

	packed = claude_request_pack(&req);
	explicit_bzero((char *) req.api_key, strlen(req.api_key));
	if (max_tokens > 0)
	{
		/* last, so that nothing can fail with the reservation held */
		char	   *why = NULL;
		int32		day = claude_budget_reserve(role, &why);

		if (day == -2)
		{
			dsa_free(claude_area(), packed);
			claude_budget_refuse(role, why);
		}
		claude_request_set_reservation(packed, day);
	}
	claude_slot_submit(slot, packed);
	return slot;
}

/*
 * Queue a request for the HTTP worker and return its slot, or -1 when no
 * slot is free and !wait.  max_tokens > 0 marks a request that draws from
 * the token limits: max_tokens output tokens, and input tokens estimated
 * at four bytes of body each (corrected from the reply's usage).
 */
int
claude_request_submit(ClaudeMethod method, const char *path,
					  const char *body, Size body_len, int max_tokens,
					  ClaudeCacheCall *cache, bool wait)
{
	return submit(method, path, body, body_len, max_tokens, cache, NULL, NULL, false, wait);
}

/*
 * Queue a GET whose successful body the HTTP worker writes to output_file
 * (relative to the data directory), for replies too large for memory; an
 * error reply still comes back in the slot.  -1 when no slot is free.
 */
int
claude_request_download(const char *path, const char *output_file)
{
	return submit(CLAUDE_GET, path, NULL, 0, 0, NULL, NULL, output_file, false, false);
}

/*
 * Queue a POST that creates something at the API (a batch), its body the
 * size bytes of input_file (UTF-8, relative to the data directory, read by
 * the HTTP worker): retried after an error reply, never after a transport
 * error, which may come after the server acted on it.  Waits for a slot.
 */
int
claude_request_create(const char *path, const char *input_file, Size size)
{
	return submit(CLAUDE_POST, path, NULL, size, 0, NULL, input_file, NULL, true, true);
}

/*
 * The reply of a finished request in the server encoding (NULL if none),
 * and the slot given back.  Does not raise for a failed request.
 */
char *
claude_request_collect(int slot, ClaudeResult *result)
{
	char	   *response = claude_slot_take(slot, result);

	if (response == NULL)
		return NULL;
	return pg_any_to_server(response, strlen(response), PG_UTF8);
}

/* One request, start to finish: the reply, or the request's error. */
char *
claude_http_call(ClaudeMethod method, const char *path,
				 const char *body, Size body_len, int max_tokens,
				 ClaudeCacheCall *cache, ClaudeResult *result)
{
	int			slot = claude_request_submit(method, path, body, body_len,
											 max_tokens, cache, true);
	char	   *response;

	claude_slot_wait(slot);
	response = claude_request_collect(slot, result);
	claude_check_result(result, response);
	claude_cache_sent(cache);
	return response ? response : pstrdup("");
}
