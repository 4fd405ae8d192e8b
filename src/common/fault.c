/*
 * fault.c
 *		An ERROR raised on purpose where a test needs one that nothing a
 *		role or a server can cause: the error recovery of the HTTP worker
 *		(httpworker/dispatch.c) with a lock held.
 *
 * Armed only by the environment of the postmaster (CLAUDE_TEST_FAULT=where),
 * which no role can set; fires once per process.  Unset, a fault point
 * costs one getenv per process.
 */
#include "postgres.h"

#include <stdlib.h>

#include "common/fault.h"

void
claude_fault_point(const char *where)
{
	static const char *armed = NULL;
	static bool looked = false;

	if (!looked)
	{
		armed = getenv("CLAUDE_TEST_FAULT");
		looked = true;
	}
	if (armed == NULL || strcmp(armed, where) != 0)
		return;
	armed = NULL;				/* once */
	elog(ERROR, "claude: fault injected at \"%s\" (CLAUDE_TEST_FAULT)", where);
}
