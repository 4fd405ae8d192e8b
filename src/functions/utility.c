/*
 * utility.c
 *		The ProcessUtility hook: commands that need a database to themselves
 *		make its worker step aside, and the key is refused where every role
 *		could read it.  Installed by _PG_init.
 *
 * ALTER DATABASE/ROLE ... SET and a function's SET clause store their value
 * in pg_db_role_setting or pg_proc, which every role may read, and the
 * check hook of a setting sees them only as PGC_S_TEST, like any other
 * validation: so claude.api_key is refused here, by statement.  RESET (and
 * SET ... TO DEFAULT) stay allowed: they remove an entry.
 *
 * DROP DATABASE, ALTER DATABASE ... SET TABLESPACE or RENAME TO and CREATE
 * DATABASE ... TEMPLATE refuse to run while any other process is connected
 * to the database, and a per-database worker is such a process.  Before
 * them, the launcher is asked to make the worker leave and to start none
 * for a while, and the command waits (cancellably, a few seconds at most);
 * after a DROP, the work queued for the database is dropped too.  After
 * COMMIT PREPARED, sessions read prices and budgets again.
 */
#include "postgres.h"

#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "client/budget.h"
#include "functions/utility.h"
#include "shmem/dbqueue.h"

/* how long a command waits for a database's worker to leave */
#define RELEASE_WAIT_MS	5000

static ProcessUtility_hook_type prev_utility_hook = NULL;
static bool dbwork_hooks = false;

/* Whether a SET clause would store the key (SET TO DEFAULT removes it). */
static bool
sets_api_key(Node *set)
{
	VariableSetStmt *v = (VariableSetStmt *) set;

	return set != NULL && IsA(set, VariableSetStmt) && v->name != NULL &&
		(v->kind == VAR_SET_VALUE || v->kind == VAR_SET_CURRENT) &&
		pg_strcasecmp(v->name, "claude.api_key") == 0;
}

/* Refuse a statement that would store the key where every role reads it. */
static void
refuse_stored_key(Node *stmt)
{
	List	   *options = NIL;
	bool		found = false;
	ListCell   *lc;

	if (IsA(stmt, AlterDatabaseSetStmt))
		found = sets_api_key((Node *) ((AlterDatabaseSetStmt *) stmt)->setstmt);
	else if (IsA(stmt, AlterRoleSetStmt))
		found = sets_api_key((Node *) ((AlterRoleSetStmt *) stmt)->setstmt);
	else if (IsA(stmt, CreateFunctionStmt))
		options = ((CreateFunctionStmt *) stmt)->options;
	else if (IsA(stmt, AlterFunctionStmt))
		options = ((AlterFunctionStmt *) stmt)->actions;

	foreach(lc, options)
	{
		DefElem    *d = lfirst_node(DefElem, lc);

		if (strcmp(d->defname, "set") == 0 && sets_api_key(d->arg))
			found = true;
	}

	/* the name ends the message: the log redaction cuts what follows it */
	if (found)
		ereport(ERROR,
				(errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM),
				 errmsg("database, role and function settings cannot hold \"claude.api_key\""),
				 errdetail("Every role can read them in pg_db_role_setting and pg_proc."),
				 errhint("Put the key in a file readable by the server and set claude.api_key_file to its path "
						 "in postgresql.conf or with ALTER SYSTEM, then reload.")));
}

/* The database a command needs to itself, or InvalidOid. */
static Oid
database_needed(Node *stmt)
{
	const char *name = NULL;
	ListCell   *lc;
	Oid			dbid;

	if (IsA(stmt, DropdbStmt))
		name = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, AlterDatabaseStmt))
	{
		foreach(lc, ((AlterDatabaseStmt *) stmt)->options)
			if (strcmp(lfirst_node(DefElem, lc)->defname, "tablespace") == 0)
				name = ((AlterDatabaseStmt *) stmt)->dbname;
	}
	else if (IsA(stmt, RenameStmt) && ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		name = ((RenameStmt *) stmt)->subname;
	else if (IsA(stmt, CreatedbStmt))
	{
		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *d = lfirst_node(DefElem, lc);

			if (strcmp(d->defname, "template") == 0 && d->arg != NULL)
				name = defGetString(d);
		}
	}
	dbid = name ? get_database_oid(name, true) : InvalidOid;
	/* only for whoever may run the command: nobody else stops the worker */
#if PG_VERSION_NUM >= 160000
	if (OidIsValid(dbid) && !object_ownercheck(DatabaseRelationId, dbid, GetUserId()))
		return InvalidOid;
#else
	if (OidIsValid(dbid) && !pg_database_ownercheck(dbid, GetUserId()))
		return InvalidOid;
#endif
	return dbid;
}

static void
claude_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			   ProcessUtilityContext context, ParamListInfo params,
			   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Oid			dbid = InvalidOid;

	refuse_stored_key(pstmt->utilityStmt);
	if (dbwork_hooks)
		dbid = database_needed(pstmt->utilityStmt);
	if (OidIsValid(dbid))
		claude_dbwork_release(dbid, RELEASE_WAIT_MS);
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
	if (OidIsValid(dbid) && IsA(pstmt->utilityStmt, DropdbStmt))
		claude_dbwork_forget(dbid);
	/* a prepared change of them has no commit callback of ours */
	if (IsA(pstmt->utilityStmt, TransactionStmt) &&
		((TransactionStmt *) pstmt->utilityStmt)->kind == TRANS_STMT_COMMIT_PREPARED)
		claude_budget_prepared_committed();
}

/*
 * Install the hook.  The key is refused whenever the library is loaded;
 * the database workers exist, and step aside, only when it is preloaded.
 */
void
claude_install_utility_hook(bool with_dbwork)
{
	dbwork_hooks = with_dbwork;
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = claude_utility;
}
