/*
 * security.h
 *		Running the extension's SQL immune to search_path, and running it
 *		as another role: the extension's owner for bookkeeping, the role
 *		that asked (restricted) for writes to its tables.
 */
#ifndef CLAUDE_SECURITY_H
#define CLAUDE_SECURITY_H

/* the search_path every statement of the extension is parsed under */
#define CLAUDE_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

typedef struct ClaudeRoleSwitch
{
	Oid			save_user;
	int			save_sec;
	int			nest;			/* GUC nest level to pop */
} ClaudeRoleSwitch;

extern int	claude_push_settings(const char *const settings[][2], int n);
extern int	claude_pin_search_path(void);
extern void claude_pop_settings(int nest);
extern void claude_become(ClaudeRoleSwitch *s, Oid role, bool restricted);
extern void claude_unbecome(ClaudeRoleSwitch *s);
extern Oid	claude_rel_owner(Oid relid);
extern char *claude_assigned_text(const char *expr, Oid typid, int32 typmod);
extern int	claude_pin_output_settings(void);
extern void claude_fix_output_settings(void);

#endif
