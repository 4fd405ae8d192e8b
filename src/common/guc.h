/*
 * guc.h
 *		The claude.* settings and the API key.
 */
#ifndef CLAUDE_GUC_H
#define CLAUDE_GUC_H

extern char *claude_api_key_setting;
extern char *claude_api_key_file;
extern char *claude_base_url;
extern char *claude_ca_file;
extern char *claude_proxy;
extern char *claude_anthropic_version;
extern char *claude_default_model;
extern int	claude_default_max_tokens;
extern int	claude_stream_min_tokens;
extern int	claude_request_timeout;
extern int	claude_max_retries;
extern bool claude_cache_enabled;
extern int	claude_cache_ttl;
extern int	claude_cache_scope;
extern int	claude_max_reply_size;
extern int	claude_max_connections;
extern int	claude_max_requests;
extern int	claude_requests_per_minute;
extern int	claude_input_tokens_per_minute;
extern int	claude_output_tokens_per_minute;
extern int	claude_batch_poll_interval;
extern int	claude_batch_max_requests;
extern int	claude_batch_max_size;
extern int	claude_batch_max_results_size;
extern int	claude_max_shared_memory;
extern int	claude_summarize_part_tokens;
extern int	claude_prefetch;

typedef enum ClaudeCacheScope
{
	CLAUDE_CACHE_SCOPE_ROLE,	/* a role is served only what it paid for */
	CLAUDE_CACHE_SCOPE_DATABASE /* every role of the database shares */
} ClaudeCacheScope;

extern void claude_define_gucs(void);

#endif
