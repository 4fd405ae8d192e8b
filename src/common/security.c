/*
 * security.c
 *		Pinned search_path and role switches for the extension's SQL.
 *		Callers: whatever runs with more rights than its caller.
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
#include "catalog/pg_type_d.h"
#include "miscadmin.h"
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/bytea.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "common/security.h"

/*
 * Settings (name, value) from here on, at a GUC nest level of their own;
 * returns the level for claude_pop_settings.
 */
int
claude_push_settings(const char *const settings[][2], int n)
{
	int			nest = NewGUCNestLevel();

	for (int i = 0; i < n; i++)
		(void) set_config_option(settings[i][0], settings[i][1],
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/* Parse from here on under the safe search_path; returns the level to pop. */
int
claude_pin_search_path(void)
{
	static const char *const safe[][2] = {{"search_path", CLAUDE_SAFE_SEARCH_PATH}};

	return claude_push_settings(safe, lengthof(safe));
}

void
claude_pop_settings(int nest)
{
	if (nest < 0)
		return;					/* nothing was pinned */
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
	claude_pop_settings(s->nest);
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

/*
 * expr (text) as a value of a column of type typid/typmod, with the
 * assignment semantics of INSERT and UPDATE: a too-long string fails
 * rather than being cut.  Where text has no assignment cast (numbers,
 * json), the type's input function converts it and fails on what does
 * not fit.  Every name is qualified.
 */
char *
claude_assigned_text(const char *expr, Oid typid, int32 typmod)
{
	Oid			text_type = TEXTOID;

	if (can_coerce_type(1, &text_type, &typid, COERCION_ASSIGNMENT))
		return pstrdup(expr);
	return psprintf("%s::%s", expr,
					format_type_extended(typid, typmod,
										 FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
}

/* how values print: fixed wherever a key is printed to be parsed elsewhere */
static const char *const output_settings[][2] = {
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "3"},
	{"bytea_output", "hex"},
};

/*
 * From here on, values print the same whatever the session set: a primary
 * key printed by one session (DateStyle = 'SQL, DMY', extra_float_digits =
 * -10) parses back to the same row in the database worker.  Returns the
 * nest level to pop with claude_pop_settings.
 */
int
claude_pin_output_settings(void)
{
	/* the defaults print as the fixed settings do: nothing to pin (hot path) */
	if (DateStyle == USE_ISO_DATES && IntervalStyle == INTSTYLE_POSTGRES &&
		extra_float_digits > 0 && bytea_output == BYTEA_OUTPUT_HEX)
		return -1;
	return claude_push_settings(output_settings, lengthof(output_settings));
}

/* The same for a whole process (the database worker), at its start. */
void
claude_fix_output_settings(void)
{
	for (int i = 0; i < lengthof(output_settings); i++)
		SetConfigOption(output_settings[i][0], output_settings[i][1], PGC_USERSET, PGC_S_SESSION);
}
