/*
 * batch_read.h
 *		A line of a Message Batch's results, read.
 */
#ifndef CLAUDE_BATCH_READ_H
#define CLAUDE_BATCH_READ_H

#include "common/json.h"

/* A result line as the C scanner reads it; NULL parts are absent. */
typedef struct ResultLine
{
	char	   *cid;
	char	   *type;
	bool		succeeded;
	char	   *message;		/* succeeded: the Message, as it stands (UTF-8) */
	bool		usage_known;
	ClaudeUsage usage;
	char	   *error;			/* otherwise: its reason, in the server's encoding */
} ResultLine;

extern bool claude_batch_scan_line(char *line, ResultLine *r);

#endif
