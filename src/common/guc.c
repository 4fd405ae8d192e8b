/*
 * guc.c
 *		Definitions of the claude.* settings.  Called by _PG_init; read
 *		everywhere.
 *
 * Every setting has one variable and is defined in _PG_init, before any SET
 * of it could be lost.  Endpoint and key settings are superuser-only; the
 * values a session sees travel with each request (client/call.c), so a
 * superuser's SET affects that session alone.
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "common/guc.h"

char	   *claude_api_key_setting = NULL;
char	   *claude_api_key_file = NULL;
char	   *claude_base_url = NULL;
char	   *claude_ca_file = NULL;
char	   *claude_proxy = NULL;
char	   *claude_anthropic_version = NULL;
char	   *claude_default_model = NULL;
int			claude_default_max_tokens = 1024;
int			claude_stream_min_tokens = 4096;
int			claude_request_timeout = 120000;
int			claude_max_retries = 3;
bool		claude_cache_enabled = true;
int			claude_cache_ttl = 0;
int			claude_cache_scope = CLAUDE_CACHE_SCOPE_ROLE;
int			claude_max_reply_size = 64 * 1024 * 1024;
int			claude_max_connections = 16;
int			claude_max_requests = 1024;
int			claude_requests_per_minute = 0;
int			claude_input_tokens_per_minute = 0;
int			claude_output_tokens_per_minute = 0;
int			claude_batch_poll_interval = 60;
int			claude_batch_max_requests = 100000;
int			claude_batch_max_size = 256 * 1024 * 1024;
int			claude_max_shared_memory = 1024 * 1024;	/* kB */

static const struct config_enum_entry cache_scope_options[] = {
	{"role", CLAUDE_CACHE_SCOPE_ROLE, false},
	{"database", CLAUDE_CACHE_SCOPE_DATABASE, false},
	{NULL, 0, false}
};

static const char *
show_api_key(void)
{
	return (claude_api_key_setting && claude_api_key_setting[0]) ? "********" : "";
}

static bool
check_base_url(char **newval, void **extra, GucSource source)
{
	const char *url = *newval;

	if (url == NULL || url[0] == '\0')
	{
		GUC_check_errdetail("claude.base_url must not be empty.");
		return false;
	}
	if (pg_strncasecmp(url, "https://", 8) == 0)
		return true;
	/* plain HTTP only where nothing crosses a network */
	if (pg_strncasecmp(url, "http://localhost", 16) == 0 ||
		pg_strncasecmp(url, "http://127.", 11) == 0 ||
		pg_strncasecmp(url, "http://[::1]", 12) == 0)
		return true;
	GUC_check_errdetail("claude.base_url must start with https:// (plain http:// is accepted for loopback addresses only).");
	return false;
}

void
claude_define_gucs(void)
{
	DefineCustomStringVariable("claude.api_key",
							   "API key for the Claude API.",
							   "Prefer claude.api_key_file: a key set here can appear in statement logs.",
							   &claude_api_key_setting, "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, show_api_key);
	DefineCustomStringVariable("claude.api_key_file",
							   "File that holds the API key, used when claude.api_key is empty.",
							   NULL, &claude_api_key_file, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("claude.base_url",
							   "Base URL of the Claude API (a proxy or a test server).",
							   NULL, &claude_base_url, "https://api.anthropic.com",
							   PGC_SUSET, 0, check_base_url, NULL, NULL);
	DefineCustomStringVariable("claude.ca_file",
							   "PEM bundle of CAs that verify the server; empty means the system CAs.",
							   NULL, &claude_ca_file, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("claude.proxy",
							   "HTTP(S) proxy URL; empty means no proxy.",
							   NULL, &claude_proxy, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("claude.anthropic_version",
							   "Value of the anthropic-version header.",
							   NULL, &claude_anthropic_version, "2023-06-01",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("claude.default_model",
							   "Model used when a call names none.",
							   NULL, &claude_default_model, "claude-sonnet-4-6",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.default_max_tokens",
							"max_tokens used when a call gives none.",
							NULL, &claude_default_max_tokens, 1024, 1, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.stream_min_tokens",
							"Messages requests with more max_tokens are streamed on the wire.",
							"A streamed request is bounded by claude.request_timeout between "
							"events, not as a whole, so a long answer is never cut off and paid again.",
							&claude_stream_min_tokens, 4096, 0, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.request_timeout",
							"Time limit of one attempt of a request.",
							NULL, &claude_request_timeout, 120000, 1, 24 * 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.max_retries",
							"Retries after the first attempt of a request.",
							NULL, &claude_max_retries, 3, 0, 100,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("claude.cache",
							 "Serve identical requests from claude_cache.",
							 NULL, &claude_cache_enabled, true,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.cache_ttl",
							"Lifetime of new cache entries; 0 means they never expire.",
							NULL, &claude_cache_ttl, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomEnumVariable("claude.cache_scope",
							 "Who is served a cached reply: the role that paid for it (role), or every role of the database (database).",
							 NULL, &claude_cache_scope, CLAUDE_CACHE_SCOPE_ROLE, cache_scope_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.max_reply_size",
							"Largest reply accepted; a larger one fails as it arrives, never buffered whole.",
							NULL, &claude_max_reply_size, 64 * 1024 * 1024, 1024, INT_MAX,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.requests_per_minute",
							"Requests per minute for the whole server; 0 means no limit.",
							NULL, &claude_requests_per_minute, 0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.input_tokens_per_minute",
							"Input tokens per minute for the whole server; 0 means no limit.",
							NULL, &claude_input_tokens_per_minute, 0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.output_tokens_per_minute",
							"Output tokens per minute for the whole server; 0 means no limit.",
							NULL, &claude_output_tokens_per_minute, 0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.batch_poll_interval",
							"How often Message Batches are polled.",
							NULL, &claude_batch_poll_interval, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.batch_max_requests",
							"Requests per Message Batch; more rows are split into several batches.",
							NULL, &claude_batch_max_requests, 100000, 1, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.batch_max_size",
							"Bytes per Message Batch request body; more are split into several batches.",
							NULL, &claude_batch_max_size, 256 * 1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_USERSET, GUC_UNIT_BYTE, NULL, NULL, NULL);

	DefineCustomIntVariable("claude.max_shared_memory",
							"Largest size of the shared memory area for request and reply bodies and stream events.",
							"A request or reply that would pass it fails with SQLSTATE 53200.",
							&claude_max_shared_memory, 1024 * 1024, 8 * 1024, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);

	/* sizes of shared memory can only be set at start-up */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("claude.max_connections",
								"Connections the HTTP worker's pool may open.",
								NULL, &claude_max_connections, 16, 1, 1024,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("claude.max_requests",
								"Request slots in shared memory.",
								NULL, &claude_max_requests, 1024, 1, 65536,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("claude");
#else
	EmitWarningsOnPlaceholders("claude");
#endif
}
