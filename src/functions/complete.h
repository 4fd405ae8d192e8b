/*
 * complete.h
 *		SQL arguments into a request: claude_messages' checks, and the
 *		arguments and cache choice the calls share.
 */
#ifndef CLAUDE_COMPLETE_H
#define CLAUDE_COMPLETE_H

#include "fmgr.h"
#include "utils/jsonb.h"

#include "client/message.h"
#include "client/request.h"

extern Jsonb *claude_messages_request(Jsonb *req);
extern void claude_complete_args(FunctionCallInfo fcinfo, int model_arg,
								 int max_tokens_arg, int system_arg,
								 int temperature_arg, ClaudeCompleteArgs *a);
extern void claude_call_cache_arg(ClaudeCall *c, FunctionCallInfo fcinfo,
								  int cache_argno, ClaudeCachePolicy policy);

#endif
