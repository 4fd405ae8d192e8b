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
/* token counts of a reply */
typedef struct ClaudeUsage
{
	double		input;
	double		output;
	double		cache_write;	/* all cache writes ... */
	double		cache_write_1h; /* ... of which the 1-hour ones */
	double		cache_read;
} ClaudeUsage;

extern bool claude_reply_usage(const char *json, Size len, ClaudeUsage *usage);
extern double claude_usage_cost(const ClaudeUsage *u, double price_in, double price_out,
								bool batch);

#endif
