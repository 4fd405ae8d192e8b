/*
 * wake.h
 *		The launcher told at commit that this database has work.
 */
#ifndef CLAUDE_WAKE_H
#define CLAUDE_WAKE_H

extern void claude_jobs_kick_on_commit(void);

#endif
