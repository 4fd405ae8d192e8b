/*
 * complete.h
 *		claude_messages' checks, shared with claude_messages_stream.
 */
#ifndef CLAUDE_COMPLETE_H
#define CLAUDE_COMPLETE_H

#include "utils/jsonb.h"

extern char *claude_messages_body(Jsonb *req, int *max_tokens);

#endif
