/*
 * structured.h
 *		Requests for an object that fits a JSON Schema, and the object a
 *		reply gives, checked: claude_extract, claude_classify,
 *		claude_enrich and its trigger build and read them the same way, so
 *		their cache keys are shared.
 */
#ifndef CLAUDE_STRUCTURED_H
#define CLAUDE_STRUCTURED_H

#include "utils/array.h"
#include "utils/jsonb.h"

#include "client/message.h"

/* What a reply must be: an object fitting schema; field: the one value taken */
typedef struct ClaudeReplyCheck
{
	Jsonb	   *schema;			/* the caller's whole schema */
	const char *field;			/* "label" for labels; NULL: the whole object */
} ClaudeReplyCheck;

extern Jsonb *claude_object_schema(Jsonb *schema);
extern Jsonb *claude_labels_schema(char **labels, int n);
extern Jsonb *claude_labels_schema_array(ArrayType *labels);
extern Jsonb *claude_labels_schema_json(Jsonb *labels);
extern Jsonb *claude_structured_request(const ClaudeCompleteArgs *a, const char *input,
										Jsonb *schema, bool labels, bool *native);
extern Jsonb *claude_structured_object(Jsonb *reply, const char *name, bool native,
									   const char **why);
extern char *claude_structured_value(Jsonb *request, const ClaudeReplyCheck *check,
									 Jsonb *reply, text **value, bool *broken);
extern Jsonb *claude_reply_check_json(const ClaudeReplyCheck *check);
extern void claude_reply_check_read(Jsonb *json, ClaudeReplyCheck *check);

#endif
