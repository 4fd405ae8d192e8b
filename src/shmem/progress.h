/*
 * progress.h
 *		Running bulk work, visible to every session in claude_progress.
 */
#ifndef CLAUDE_PROGRESS_H
#define CLAUDE_PROGRESS_H

#include "datatype/timestamp.h"

#define CLAUDE_MAX_PROGRESS 64

typedef struct ProgressEntry
{
	pid_t		pid;			/* 0: free */
	Oid			dbid;
	Oid			role;			/* whose work it is */
	Oid			relid;
	NameData	column;
	char		mode[16];
	int64		total;
	int64		done;
	int64		failed;
	TimestampTz started;
	TimestampTz updated;
} ProgressEntry;

extern Size claude_progress_shmem_size(void);
extern void claude_progress_shmem_startup(void);
extern void claude_progress_begin(Oid relid, const char *column, const char *mode,
								  int64 total);
extern void claude_progress_update(int64 done, int64 failed);
extern void claude_progress_end(void);
extern void claude_progress_entry(int i, ProgressEntry *e);

#endif
