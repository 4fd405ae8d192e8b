/*
 * http.h
 *		The HTTP worker's connections, for its main loop (pool.c): libcurl
 *		multi handles, their sockets and timers.
 */
#ifndef CLAUDE_HTTP_H
#define CLAUDE_HTTP_H

extern void claude_http_init(void);
extern int	claude_http_pollable_fd(void);
extern long claude_http_timeout_ms(void);
extern void claude_http_drive(bool sockets_ready);

#endif
