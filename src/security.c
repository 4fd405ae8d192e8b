/*
 * security.c
 *		Pinned search_path and role switches for the extension's SQL.
 *
 * Whatever runs with more rights than its caller (the extension's owner,
 * a database worker) parses its statements under a search_path of
 * pg_catalog then pg_temp, so no object a caller made (a temporary type,
 * a cast, an operator) can stand in for a system one.  Writes to a user's
 * table run as the role that asked, under SECURITY_RESTRICTED_OPERATION,
 * as VACUUM and REFRESH MATERIALIZED VIEW do: the table's triggers,
 * defaults and checks get that role's rights and no more, and any setting
 * they change is undone.  An error needs no cleanup here: (sub)transaction
 * abort restores the user and pops the GUC nest levels.
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "security.h"

/* Parse from here on under the safe search_path; returns the level to pop. */
int
claude_pin_search_path(void)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("search_path", CLAUDE_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

void
claude_unpin_search_path(int nest)
{
	AtEOXact_GUC(false, nest);
}

/*
 * Act as role until claude_unbecome: restricted for a user's table (no
 * SET ROLE, no temporary objects, settings undone), plain for the
 * extension's own tables.
 */
void
claude_become(ClaudeRoleSwitch *s, Oid role, bool restricted)
{
	GetUserIdAndSecContext(&s->save_user, &s->save_sec);
	SetUserIdAndSecContext(role, s->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   (restricted ? SECURITY_RESTRICTED_OPERATION : 0));
	s->nest = claude_pin_search_path();
}

void
claude_unbecome(ClaudeRoleSwitch *s)
{
	claude_unpin_search_path(s->nest);
	SetUserIdAndSecContext(s->save_user, s->save_sec);
}

/* The owner of a relation (invalid if it is gone), from the syscache. */
Oid
claude_rel_owner(Oid relid)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tp))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return owner;
}
