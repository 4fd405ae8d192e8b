/*
 * request.h
 *		One call to the API as a value: what is asked, who pays, how it is
 *		cached, retried and streamed; and its lifecycle, from any process.
 *
 *		claude_call_init(&c, endpoint, id);	payer, retries from the session
 *		claude_call_set_body(&c, jsonb);	printed only if it goes out
 *		(set c.cache, c.max_retries, c.stream, c.bulk ... as needed)
 *		claude_call_start(&c);				cache, budget, submit
 *		claude_call_poll / claude_call_wait
 *		claude_call_finish(&c, ...);		collect, cache, usage
 *
 * claude_call_run does all of it for one synchronous call.
 */
#ifndef CLAUDE_REQUEST_H
#define CLAUDE_REQUEST_H

#include "utils/jsonb.h"

#include "client/cache.h"
#include "client/endpoint.h"
#include "common/errors.h"
#include "shmem/pack.h"
#include "shmem/slots.h"

typedef enum ClaudeCachePolicy
{
	CLAUDE_CACHE_OFF = 0,
	CLAUDE_CACHE_LEAD,			/* on a miss, identical calls wait for this one */
	CLAUDE_CACHE_LOOKUP			/* never waits on another call: bulk work */
} ClaudeCachePolicy;

typedef enum ClaudeCallState
{
	CLAUDE_CALL_NEW,			/* not started, or no slot was free */
	CLAUDE_CALL_HIT,			/* answered by the cache: hit */
	CLAUDE_CALL_REFUSED,		/* bulk work its payer's budget refused: refused */
	CLAUDE_CALL_SENT,			/* at the HTTP worker: slot */
	CLAUDE_CALL_DONE,			/* collected: reply, result */
	CLAUDE_CALL_DEFERRED		/* read ahead (claude_call_run_hook): the
								 * caller returns at once, its value unused */
} ClaudeCallState;

typedef struct ClaudeCall
{
	/* what is asked */
	const ClaudeEndpoint *endpoint;
	char	   *path;
	Jsonb	   *json;			/* the body; NULL: none (or input_file) */
	char	   *body;			/* its canonical text, database encoding, once
								 * printed (claude_call_body) */
	Size		body_len;
	char	   *model;			/* the body's "model", which prices it; NULL: none */
	int			max_tokens;		/* the body's "max_tokens"; 0: none */
	/* who pays and how it goes */
	Oid			payer;			/* pays; its budget and cache scope apply */
	ClaudeCachePolicy cache;
	Oid			cache_nsp;		/* the schema of claude_cache */
	int			max_retries;	/* HTTP retries at the worker: the caller's policy */
	ClaudeStreamMode stream;	/* TEXT, EVENTS: handed over as they come */
	bool		bulk;			/* bulk slots; a refused budget fails this call only */
	bool		wait_slot;		/* wait for a free slot */
	bool		cache_checked;	/* cached only by claude_call_keep, once the
								 * caller checked the reply */
	const char *input_file;		/* the body is body_len bytes of it, UTF-8 */
	const char *output_file;	/* a 2xx body goes here, max_output bytes at most */
	Size		max_output;
	/* its life */
	ClaudeCallState state;
	ClaudeCacheCall cached;
	int			slot;
	Jsonb	   *hit;
	char	   *refused;
	char	   *reply;			/* UTF-8 as it came; NULL: none */
	ClaudeResult result;
} ClaudeCall;

extern void claude_call_init(ClaudeCall *c, ClaudeEndpointId endpoint, const char *id);
extern void claude_call_set_body(ClaudeCall *c, Jsonb *body);
extern const char *claude_call_body(ClaudeCall *c);
extern bool claude_call_lookup(ClaudeCall *c);
extern ClaudeCallState claude_call_start(ClaudeCall *c);
extern bool claude_call_poll(ClaudeCall *c);
extern void claude_call_wait(ClaudeCall *c);
extern bool claude_call_finish(ClaudeCall *c, ClaudeFailure *failure);
extern void claude_call_abandon(ClaudeCall *c);
extern void claude_call_keep(ClaudeCall *c);
extern void claude_call_reject(ClaudeCall *c);
extern void claude_call_detach(ClaudeCall *c, bool cancel);
extern char *claude_call_run(ClaudeCall *c);

/*
 * Read-ahead (executor/prefetch_*.c) takes claude_call_run over: it starts
 * a call and marks it CLAUDE_CALL_DEFERRED, or sets the call's life from
 * one it started for the same request earlier (HIT, SENT or DONE) and
 * returns true; false: run as usual.
 */
typedef bool (*claude_call_run_hook_type) (ClaudeCall *c);
extern PGDLLIMPORT claude_call_run_hook_type claude_call_run_hook;

#endif
