/*
 * worker.h
 *		The HTTP background worker.
 */
#ifndef CLAUDE_WORKER_H
#define CLAUDE_WORKER_H

extern void claude_register_http_worker(void);
extern PGDLLEXPORT void claude_http_worker_main(Datum arg);

#endif
