/*
 * trigger_args.h
 *		The arguments of a claude_enrich_trigger, checked the same way when
 *		the trigger is created and when it fires.
 */
#ifndef CLAUDE_TRIGGER_ARGS_H
#define CLAUDE_TRIGGER_ARGS_H

#include "client/message.h"
#include "client/structured.h"
#include "common/pgcompat.h"
#include "common/template.h"
#include "utils/rel.h"

typedef struct ClaudeTriggerArgs
{
	int			target;			/* attribute number of the target column */
	ClaudeTemplate *tmpl;
	ClaudeCompleteArgs call;
	ClaudeReplyCheck check;		/* 'labels=' or 'schema=': schema NULL if none */
} ClaudeTriggerArgs;

pg_noreturn extern void claude_trigger_error(const char *msg);
extern void claude_trigger_check_kind(bool row, bool before_or_after, bool insert_or_update_only);
extern void claude_trigger_args(Relation rel, int nargs, char **args, ClaudeTriggerArgs *out);

#endif
