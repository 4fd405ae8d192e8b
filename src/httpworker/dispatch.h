/*
 * dispatch.h
 *		The HTTP worker's queue: rate limits, retries and results.
 */
#ifndef CLAUDE_DISPATCH_H
#define CLAUDE_DISPATCH_H

extern void claude_dispatch_init(void);
extern void claude_dispatch_enqueue(int slot);
extern void claude_dispatch_run(void);
extern long claude_dispatch_timeout_ms(void);
extern void claude_dispatch_abort_cancelled(void);
extern void claude_dispatch_shutdown(void);
extern void claude_dispatch_configure(void);
extern void claude_dispatch_drive(bool sockets_ready);

#endif
