/*
 * jobs.h
 *		The job queue of AFTER triggers, run in the database's worker.
 */
#ifndef CLAUDE_JOBS_H
#define CLAUDE_JOBS_H

extern void claude_jobs_start(void);
extern bool claude_jobs_step(void);
extern void claude_jobs_aborted(void);
extern void claude_jobs_reloaded(void);

#endif
