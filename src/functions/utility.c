/*
 * utility.c
 *		The ProcessUtility hook: commands that need a database to themselves
 *		make its worker step aside.  Installed by _PG_init.
 *
 * DROP DATABASE, ALTER DATABASE ... SET TABLESPACE or RENAME TO and CREATE
 * DATABASE ... TEMPLATE refuse to run while any other process is connected
 * to the database, and a per-database worker is such a process.  Before
 * them, the worker is asked to leave and none is started for a while;
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

static ProcessUtility_hook_type prev_utility_hook = NULL;

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
	Oid			dbid = database_needed(pstmt->utilityStmt);

	if (OidIsValid(dbid))
		claude_dbwork_release(dbid);
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

void
claude_dbwork_install_hooks(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = claude_utility;
}
