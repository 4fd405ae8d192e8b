/*
 * http.h
 *		The HTTP worker's libcurl multi handle: the server's connection pool.
 */
#ifndef CLAUDE_HTTP_H
#define CLAUDE_HTTP_H

extern void claude_http_init(void);
extern int	claude_http_pollable_fd(void);
extern long claude_http_timeout_ms(void);
extern void claude_http_drive(bool sockets_ready);

#endif
