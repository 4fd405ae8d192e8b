/*
 * flush.h
 *		Writing usage to claude_usage_log, in the database worker.
 */
#ifndef CLAUDE_FLUSH_H
#define CLAUDE_FLUSH_H

extern void claude_usage_flush(void);
extern void claude_usage_load_today(void);

#endif
