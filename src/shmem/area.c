/*
 * area.c
 *		The ground floor of shared memory: named structs, the check that the
 *		library was preloaded, and the DSA area that holds request and reply
 *		bodies.  Every other file of shmem/ builds on it.
 */
#include "postgres.h"

#include <unistd.h>

#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "common/guc.h"
#include "shmem/area.h"

/*
 * One named LWLock tranche per lock, so that pg_stat_activity's wait events
 * say which lock a process waits for.
 */
static const char *const lock_names[] = {
	CLAUDE_LOCK_AREA, CLAUDE_LOCK_CACHE_LEAD, CLAUDE_LOCK_USAGE,
	CLAUDE_LOCK_CONFIG, CLAUDE_LOCK_STREAMS, CLAUDE_LOCK_DBQUEUE
};

typedef struct AreaShared
{
	LWLock	   *lock;			/* serializes DSA creation */
	int			dsa_tranche;
	dsa_handle	area_handle;
} AreaShared;

static AreaShared *shared = NULL;
static dsa_area *area = NULL;

/*
 * A named struct in shared memory, zeroed and set up by init the first
 * time (in the postmaster, or after a crash).
 */
void *
claude_shmem_struct(const char *name, Size size, void (*init) (void *ptr))
{
	bool		found;
	void	   *ptr;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ptr = ShmemInitStruct(name, size, &found);
	if (!found)
	{
		memset(ptr, 0, size);
		init(ptr);
	}
	LWLockRelease(AddinShmemInitLock);
	return ptr;
}

static void
init_area(void *ptr)
{
	AreaShared *s = ptr;

	s->lock = claude_named_lock(CLAUDE_LOCK_AREA);
	s->dsa_tranche = LWLockNewTrancheId();
	s->area_handle = DSM_HANDLE_INVALID;
}

void
claude_area_request_shmem(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(AreaShared)));
	for (int i = 0; i < lengthof(lock_names); i++)
		RequestNamedLWLockTranche(lock_names[i], 1);
}

/* The lock of a tranche requested above (in shared memory's set-up only). */
LWLock *
claude_named_lock(const char *name)
{
	return &(GetNamedLWLockTranche(name))->lock;
}

void
claude_area_shmem_startup(void)
{
	shared = claude_shmem_struct("claude area", sizeof(AreaShared), init_area);
}

void
claude_require_shared(void)
{
	if (shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("claude must be loaded via shared_preload_libraries"),
				 errhint("Add 'claude' to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * The DSA area is created by whichever process needs it first and pinned,
 * so it lives until the next server restart.
 */
dsa_area *
claude_area(void)
{
	MemoryContext old;

	if (area != NULL)
		return area;

	claude_require_shared();
	old = MemoryContextSwitchTo(TopMemoryContext);
	LWLockRegisterTranche(shared->dsa_tranche, "claude_dsa");
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->area_handle == DSM_HANDLE_INVALID)
	{
		area = dsa_create(shared->dsa_tranche);
		dsa_pin(area);
		claude_area_apply_limit();
		shared->area_handle = dsa_get_handle(area);
	}
	else
		area = dsa_attach(shared->area_handle);
	dsa_pin_mapping(area);
	LWLockRelease(shared->lock);
	MemoryContextSwitchTo(old);
	return area;
}

/*
 * The area's size limit, claude.max_shared_memory: set by the process that
 * creates the area, and again by the HTTP worker at start and on reload.
 * Past it an allocation fails (and the caller reports 53200), never waits.
 */
void
claude_area_apply_limit(void)
{
	dsa_set_size_limit(claude_area(), (size_t) claude_max_shared_memory * 1024);
}

/*
 * Bytes the DSA area's segments take in shared memory.  PostgreSQL 17 says
 * so; before it only dsa_dump() knows, printing to stderr, which is read
 * back from a temporary file.  For diagnosis and tests, not for hot paths.
 */
Size
claude_area_total_size(void)
{
#if PG_VERSION_NUM >= 170000
	return dsa_get_total_size(claude_area());
#else
	dsa_area   *a = claude_area();
	FILE	   *tmp = tmpfile();
	int			saved;
	char		line[256];
	Size		size = 0;

	if (tmp == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create a temporary file: %m")));
	fflush(stderr);
	if ((saved = dup(STDERR_FILENO)) < 0 || dup2(fileno(tmp), STDERR_FILENO) < 0)
	{
		if (saved >= 0)
			close(saved);
		fclose(tmp);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not redirect stderr: %m")));
	}
	PG_TRY();
	{
		dsa_dump(a);
	}
	PG_FINALLY();
	{
		fflush(stderr);
		(void) dup2(saved, STDERR_FILENO);
		close(saved);
	}
	PG_END_TRY();
	rewind(tmp);
	while (fgets(line, sizeof(line), tmp) != NULL)
		if (sscanf(line, " total_segment_size: %zu", &size) == 1)
			break;
	fclose(tmp);
	return size;
#endif
}
