/*
 * fault.c
 *		An ERROR raised on purpose where a test needs one that nothing a
 *		role or a server can cause: the error recovery of the HTTP worker
 *		(httpworker/dispatch.c) with a lock held.
 *
 * Armed only by the environment of the postmaster (CLAUDE_TEST_FAULT=where),
 * which no role can set; fires once per process.  Unset, a fault point
 * costs one getenv per process.  So is the tests' clock offset
 * (CLAUDE_TEST_CLOCK_FILE), which moves the UTC day of the budgets.
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

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

/*
 * Wait (cancellably, as pg_sleep: wait event PgSleep) while the file
 * CLAUDE_TEST_PAUSE_FILE exists, the first time this process reaches the
 * point where it names and the file exists.
 */
void
claude_pause_point(const char *where)
{
	static const char *armed = NULL;
	static const char *file = NULL;
	static bool looked = false;

	if (!looked)
	{
		armed = getenv("CLAUDE_TEST_PAUSE");
		file = getenv("CLAUDE_TEST_PAUSE_FILE");
		looked = true;
	}
	if (armed == NULL || file == NULL || strcmp(armed, where) != 0 ||
		access(file, F_OK) != 0)
		return;
	armed = NULL;				/* once */
	while (access(file, F_OK) == 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, WAIT_EVENT_PG_SLEEP);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * How far the tests' clock is ahead of the real one: the whole seconds
 * (may be negative, at most ten years) in the file CLAUDE_TEST_CLOCK_FILE
 * names, read at most once a second per process; 0 when the file is unset,
 * missing or unreadable.  Only the budgets' UTC day (shmem/usage.c) and the
 * jobs' wait for the next one (dbworker/jobs.c) follow it.  Never raises:
 * it is called under an LWLock.
 */
TimestampTz
claude_test_clock_offset(void)
{
	static const char *file = NULL;
	static bool looked = false;
	static TimestampTz offset = 0;
	static TimestampTz read_at = 0;
	TimestampTz now;

	if (!looked)
	{
		file = getenv("CLAUDE_TEST_CLOCK_FILE");
		looked = true;
	}
	if (file == NULL)
		return 0;
	now = GetCurrentTimestamp();
	if (read_at == 0 || now < read_at || now - read_at >= USECS_PER_SEC)
	{
		FILE	   *f = fopen(file, "r");
		long long	s;

		offset = 0;
		if (f != NULL)
		{
			if (fscanf(f, "%lld", &s) == 1 && s > -10LL * 366 * SECS_PER_DAY &&
				s < 10LL * 366 * SECS_PER_DAY)
				offset = (TimestampTz) s * USECS_PER_SEC;
			fclose(f);
		}
		read_at = now;
	}
	return offset;
}
