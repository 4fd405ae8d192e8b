/*
 * json.h
 *		Small helpers over PostgreSQL's jsonb for reading API replies.
 */
#ifndef CLAUDE_JSON_H
#define CLAUDE_JSON_H

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

extern Jsonb *claude_json_parse(const char *text, Size len);
extern char *claude_json_print(const Jsonb *j, Size *len);
extern JsonbValue *claude_json_get(JsonbContainer *obj, const char *key);
extern char *claude_json_get_string(JsonbContainer *obj, const char *key);
extern JsonbContainer *claude_json_get_container(JsonbContainer *obj,
												 const char *key, bool array);
extern void claude_json_push_key(JsonbParseState **state, const char *key);
extern char *claude_utf8_to_server(const char *s, Size len);
extern bool claude_reply_text(const char *json, Size len, StringInfo out);
extern bool claude_reply_is_message(const char *json, Size len);
/* token counts of a reply */
typedef struct ClaudeUsage
{
	double		input;
	double		output;
	double		cache_write;	/* all cache writes ... */
	double		cache_write_1h; /* ... of which the 1-hour ones */
	double		cache_read;
} ClaudeUsage;

/* jsonscan.c: reading what a server sent without ever raising */
#define CLAUDE_JSON_MAX_DEPTH	1000
#define CLAUDE_MAX_TOKENS		1e9	/* larger token counts are not believed */

typedef struct ClaudeJsonKey
{
	const char *key;			/* undecoded, in the text; NULL in an array */
	int			len;
	int			index;			/* in an array: the element's position */
} ClaudeJsonKey;

typedef void (*ClaudeJsonFound) (void *arg, const ClaudeJsonKey *path, int depth,
								 const char *token, int len, bool string);

extern bool claude_json_scan(const char *json, Size len, ClaudeJsonFound found, void *arg);
extern bool claude_json_key_is(const ClaudeJsonKey *k, const char *name);
extern bool claude_json_unescape(const char *s, int len, StringInfo out);
extern bool claude_json_unescape_raw(const char *s, int len, char *raw, int *outlen);

/* a member of an object: its key undecoded, its value as it stands */
typedef void (*ClaudeJsonMember) (void *arg, const char *key, int keylen,
								  const char *value, Size len);
extern bool claude_json_members(const char *json, Size len, ClaudeJsonMember found,
								void *arg);
extern const char *claude_json_member(const char *json, Size len, const char *key,
									  Size *vlen);
extern char *claude_json_plain_string(const char *value, Size len);
extern bool claude_reply_usage(const char *json, Size len, ClaudeUsage *usage);
extern void claude_reply_error(const char *json, Size len, StringInfo type,
							   StringInfo message);
extern bool claude_reply_error_is(const char *json, Size len, const char *type);
extern void claude_usage_add(ClaudeUsage *sum, const ClaudeUsage *u);
extern bool claude_timestamptz_in(const char *s, Datum *value);

#endif
