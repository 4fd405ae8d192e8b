/*
 * progress.h
 *		Running bulk work, visible to every session in claude_progress.
 */
#ifndef CLAUDE_PROGRESS_H
#define CLAUDE_PROGRESS_H

extern Size claude_progress_shmem_size(void);
extern void claude_progress_shmem_startup(void);
extern void claude_progress_begin(Oid relid, const char *column, const char *mode,
								  int64 total);
extern void claude_progress_update(int64 done, int64 failed);
extern void claude_progress_end(void);

#endif
