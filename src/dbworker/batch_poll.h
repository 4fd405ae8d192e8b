/*
 * batch_poll.h
 *		Message Batches in the database's worker: poll, download, write back.
 */
#ifndef CLAUDE_BATCH_POLL_H
#define CLAUDE_BATCH_POLL_H

extern bool claude_batch_poll_step(void);
extern bool claude_batch_poll_busy(void);
extern void claude_batch_poll_aborted(void);

#endif
