/*
 * call.h
 *		Sending a request and collecting its reply, from any process.
 */
#ifndef CLAUDE_CALL_H
#define CLAUDE_CALL_H

#include "shmem/pack.h"
#include "shmem/slots.h"

struct ClaudeCacheCall;
/* claude_request_submit: wait for a free slot; bulk work (see claude_slot_acquire) */
#define CLAUDE_SUBMIT_WAIT	1
#define CLAUDE_SUBMIT_BULK	2
#define CLAUDE_SUBMIT_STREAM_TEXT	4	/* hand each piece of text over */
#define CLAUDE_SUBMIT_STREAM_EVENTS	8	/* hand each event over */

extern int	claude_request_submit(ClaudeMethod method, const char *path,
								  const char *body, Size body_len, int max_tokens,
								  struct ClaudeCacheCall *cache, int flags);
extern int	claude_request_download(const char *path, const char *output_file, Size max_bytes);
extern int	claude_request_create(const char *path, const char *input_file, Size size);
extern char *claude_request_collect(int slot, ClaudeResult *result);
extern char *claude_http_call(ClaudeMethod method, const char *path,
							  const char *body, Size body_len, int max_tokens,
							  struct ClaudeCacheCall *cache, ClaudeResult *result);

#endif
