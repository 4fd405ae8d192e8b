/*
 * writeback.h
 *		A reply written back to its row by primary key, as a role.
 */
#ifndef CLAUDE_WRITEBACK_H
#define CLAUDE_WRITEBACK_H

extern int64 claude_update_by_pk(Oid relid, const char *target, const char *pkjson,
								 text *value, Oid role, const char *inputs,
								 const char *inputs_md5);
extern bool claude_update_by_pks(Oid relid, const char *target, int n, Datum *values,
								 Datum *pks, Datum *md5s, char **inputs, int ninputs,
								 Oid role, bool *written);

#endif
