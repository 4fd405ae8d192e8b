/*
 * message.h
 *		A Messages request of one user message, and reading replies.
 */
#ifndef CLAUDE_MESSAGE_H
#define CLAUDE_MESSAGE_H

#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "common/pgcompat.h"

typedef struct ClaudeCompleteArgs
{
	char	   *model;
	int			max_tokens;
	char	   *system;			/* NULL: none */
	Numeric		temperature;	/* NULL: none */
	bool		cache_system;	/* mark system with cache_control */
} ClaudeCompleteArgs;

/*
 * A system prompt shared by many rows is marked for prompt caching from
 * this size on: about 1,024 tokens, the smallest prefix Sonnet and Opus
 * cache (a shorter one would be billed in full anyway).
 */
#define CLAUDE_CACHE_SYSTEM_MIN 4096

extern void claude_cache_shared_system(ClaudeCompleteArgs *a);

pg_noreturn extern void claude_invalid_argument(const char *msg);
struct ClaudeResult;
pg_noreturn extern void claude_bad_reply(const struct ClaudeResult *result);
extern Jsonb *claude_complete_request(const ClaudeCompleteArgs *a, const char *prompt);
extern Jsonb *claude_count_tokens_request(const char *model, const char *system, const char *prompt);
extern int64 claude_count_tokens_of(Jsonb *reply, const struct ClaudeResult *result);
extern void claude_jsonb_push_string(JsonbParseState **state, const char *key, const char *val);
extern void claude_jsonb_push_numeric(JsonbParseState **state, const char *key, Numeric num);
extern text *claude_complete_text(const char *reply);
extern text *claude_jsonb_reply_text(Jsonb *reply);
extern JsonbValue *claude_reply_tool_input(JsonbContainer *content, const char *name);

#endif
