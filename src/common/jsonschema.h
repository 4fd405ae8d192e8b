/*
 * jsonschema.h
 *		JSON Schema for structured output: the subset the API accepts, and
 *		the local check of a reply against the caller's whole schema.
 */
#ifndef CLAUDE_JSONSCHEMA_H
#define CLAUDE_JSONSCHEMA_H

#include "utils/jsonb.h"

extern Jsonb *claude_schema_for_api(Jsonb *schema);
extern char *claude_schema_check(Jsonb *schema, Jsonb *value);

/* readers of keyword values (jsonschema_check.c), for jsonschema.c */
extern char *claude_schema_show(JsonbValue *v);
extern bool claude_schema_is_number(JsonbValue *v);
extern bool claude_schema_is_count(JsonbValue *v);
extern bool claude_schema_is_container(JsonbValue *v, bool object);

#endif
