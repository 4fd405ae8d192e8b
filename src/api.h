/*
 * api.h
 *		Building Messages requests and reading replies, shared by the calls.
 */
#ifndef CLAUDE_API_H
#define CLAUDE_API_H

#include "fmgr.h"
#include "utils/jsonb.h"

typedef struct ClaudeCompleteArgs
{
	char	   *model;
	int			max_tokens;
	char	   *system;			/* NULL: none */
	char	   *temperature;	/* as a JSON number; NULL: none */
} ClaudeCompleteArgs;

extern void invalid_argument(const char *msg) pg_attribute_noreturn();
extern void claude_complete_args(FunctionCallInfo fcinfo, int model_arg,
								 int max_tokens_arg, int system_arg,
								 int temperature_arg, ClaudeCompleteArgs *a);
extern char *claude_complete_body(const ClaudeCompleteArgs *a, const char *prompt);
extern text *claude_complete_text(const char *reply);
extern text *claude_jsonb_reply_text(Jsonb *reply);

#endif
