/*
 * guc.c
 *		Definitions of the claude.* settings.  Called by _PG_init; read
 *		everywhere.
 *
 * Every setting has one variable and is defined in _PG_init, before any SET
 * of it could be lost.  Endpoint and key settings are superuser-only; the
 * values a session sees travel with each request (client/request.c), so a
 * superuser's SET affects that session alone.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "port/pg_bswap.h"
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
int			claude_batch_max_results_size = 0;	/* MB; 0: max_reply_size a request */
int			claude_max_shared_memory = 1024 * 1024;	/* kB */
int			claude_summarize_part_tokens = 0;
int			claude_prefetch = 32;

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

/*
 * A key stored per database or role is readable by every role in
 * pg_db_role_setting; new ones are refused (functions/utility.c), but one
 * made earlier, or while the library was not loaded, reaches us here as a
 * connection applies it.  It keeps working; the warning says how to move
 * it.  Returning false would print the value, so this never does.
 */
static bool
check_api_key(char **newval, void **extra, GucSource source)
{
	const char *reset;

	/* a client backend: a person sees it, and no worker repeats it */
	if (*newval == NULL || (*newval)[0] == '\0' || MyBackendType != B_BACKEND)
		return true;
	if (source == PGC_S_DATABASE)
		reset = "ALTER DATABASE ... RESET claude.api_key";
	else if (source == PGC_S_USER)
		reset = "ALTER ROLE ... RESET claude.api_key";
	else if (source == PGC_S_DATABASE_USER)
		reset = "ALTER ROLE ... IN DATABASE ... RESET claude.api_key";
	else if (source == PGC_S_GLOBAL)
		reset = "ALTER ROLE ALL RESET claude.api_key";
	else
		return true;

	/* the name ends the message: the log redaction cuts what follows it */
	ereport(WARNING,
			(errmsg("a database or role setting holds \"claude.api_key\""),
			 errdetail("Every role can read it in pg_db_role_setting. It is still used."),
			 errhint("Put the key in the file named by claude.api_key_file, remove the entry with %s, "
					 "and replace the key, which has been readable.", reset)));
	return true;
}

/* Whether a URL has the part (curl has no "not there" value for parts). */
static bool
url_has(CURLU *u, CURLUPart part)
{
	char	   *s;

	if (curl_url_get(u, part, &s, 0) != CURLUE_OK)
		return false;
	curl_free(s);
	return true;
}

/* A loopback address, or the name localhost; curl normalises IPv4 forms. */
static bool
is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	char		buf[INET6_ADDRSTRLEN];
	size_t		len = strlen(host);

	if (pg_strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (pg_ntoh32(a4.s_addr) >> 24) == 127;
	if (len < 3 || len - 2 >= sizeof(buf) || host[0] != '[' || host[len - 1] != ']')
		return false;
	memcpy(buf, host + 1, len - 2);
	buf[len - 2] = '\0';
	return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/*
 * Why a URL is unfit for an endpoint (proxy false) or a proxy, or NULL.
 * Parsed by libcurl, as the request will be, so the host checked is the
 * host connected to.
 */
static const char *
url_problem(CURLU *u, bool proxy)
{
	char	   *scheme = NULL;
	char	   *host = NULL;
	const char *problem = NULL;

	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		problem = "It must name a scheme and a host.";
	else if (proxy)
	{
		static const char *const schemes[] = {
			"http", "https", "socks4", "socks4a", "socks5", "socks5h"
		};

		problem = "It must start with http://, https://, socks4://, socks4a://, socks5:// or socks5h://.";
		for (int i = 0; i < lengthof(schemes); i++)
			if (pg_strcasecmp(scheme, schemes[i]) == 0)
				problem = NULL;
	}
	else if (url_has(u, CURLUPART_QUERY) || url_has(u, CURLUPART_FRAGMENT))
		problem = "It must have no query or fragment: request paths are appended to it.";
	else if (pg_strcasecmp(scheme, "https") == 0)
		problem = NULL;
	/* plain HTTP only where nothing crosses a network */
	else if (pg_strcasecmp(scheme, "http") != 0 || !is_loopback(host))
		problem = "It must start with https:// (plain http:// is accepted for 127.0.0.0/8, [::1] and localhost only).";
	if (scheme)
		curl_free(scheme);
	if (host)
		curl_free(host);
	return problem;
}

/* The check hook of a URL setting; a user name or password is never shown. */
static bool
check_url(const char *name, const char *url, bool proxy)
{
	CURLU	   *u = curl_url();
	CURLUcode	rc;
	const char *problem = NULL;
	bool		ok = false;

	if (u == NULL)
	{
		GUC_check_errmsg("out of memory");
		return false;
	}
	rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (rc != CURLUE_OK)
		GUC_check_errdetail("It is not a URL: %s.", curl_url_strerror(rc));
	else if (url_has(u, CURLUPART_USER) || url_has(u, CURLUPART_PASSWORD) ||
			 url_has(u, CURLUPART_OPTIONS))
	{
		/* our own message: the default one quotes the value */
		GUC_check_errmsg("%s must not hold a user name or password", name);
		GUC_check_errdetail("The value is written to the server log when it changes.");
	}
	else if ((problem = url_problem(u, proxy)) != NULL)
		GUC_check_errdetail("%s", problem);
	else
		ok = true;
	curl_url_cleanup(u);
	return ok;
}

static bool
check_base_url(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("claude.base_url must not be empty.");
		return false;
	}
	return check_url("claude.base_url", *newval, false);
}

static bool
check_proxy(char **newval, void **extra, GucSource source)
{
	/* empty: no proxy, not even one from the environment */
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	return check_url("claude.proxy", *newval, true);
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
							   check_api_key, NULL, show_api_key);
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
							   PGC_SUSET, GUC_SUPERUSER_ONLY, check_proxy, NULL, NULL);
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
	/* for tests: parts small enough that a few rows need several requests */
	DefineCustomIntVariable("claude.summarize_part_tokens",
							"Tokens of one claude_summarize part; 0: from the model's input limit.",
							NULL, &claude_summarize_part_tokens, 0, 0, 1000000,
							PGC_USERSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
	DefineCustomIntVariable("claude.prefetch",
							"Rows a statement reads ahead to send their claude_* calls together.",
							"0 sends each row's calls when the row is reached. Read when a "
							"statement starts.",
							&claude_prefetch, 32, 0, 256,
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
	DefineCustomIntVariable("claude.batch_max_results_size",
							"Largest results download of a Message Batch; 0 means claude.max_reply_size for each of its requests.",
							"temp_file_limit bounds it too.",
							&claude_batch_max_results_size, 0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);

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

	MarkGUCPrefixReserved("claude");
}
