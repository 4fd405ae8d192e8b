/*
 * json.h
 *		Small helpers over PostgreSQL's jsonb for reading API replies.
 */
#ifndef CLAUDE_JSON_H
#define CLAUDE_JSON_H

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

extern Jsonb *claude_json_parse(const char *text, Size len);
extern JsonbValue *claude_json_get(JsonbContainer *obj, const char *key);
extern char *claude_json_get_string(JsonbContainer *obj, const char *key);
extern JsonbContainer *claude_json_get_container(JsonbContainer *obj,
												 const char *key, bool array);
extern bool claude_reply_text(const char *json, Size len, StringInfo out);
extern bool claude_reply_usage(const char *json, Size len, double *input,
							   double *output);

#endif
