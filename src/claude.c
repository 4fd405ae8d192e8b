/*
 * claude.c
 *		Module entry point, _PG_init only: settings, shared memory, the
 *		HTTP worker and the utility hook.  Calls every folder; nothing calls it.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "common/guc.h"
#include "common/pgcompat.h"
#include "common/secret.h"
#include "executor/prefetch_node.h"
#include "executor/prefetch_plan.h"
#include "functions/utility.h"
#include "httpworker/worker.h"

#include "shmem/cachelead.h"
#include "shmem/dbqueue.h"
#include "shmem/progress.h"
#include "shmem/ratelimit.h"
#include "shmem/sharedconfig.h"
#include "shmem/slots.h"
#include "shmem/stats.h"
#include "shmem/streamshare.h"
#include "shmem/usage.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
claude_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	claude_area_request_shmem();
	claude_slots_request_shmem();
	RequestAddinShmemSpace(claude_limits_shmem_size());
	RequestAddinShmemSpace(claude_cache_shmem_size());
	claude_dbwork_request_shmem();
	RequestAddinShmemSpace(claude_progress_shmem_size());
	RequestAddinShmemSpace(claude_stats_shmem_size());
	RequestAddinShmemSpace(claude_usage_shmem_size());
	RequestAddinShmemSpace(claude_shared_config_shmem_size());
	RequestAddinShmemSpace(claude_streams_shmem_size());
}

static void
claude_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	claude_area_shmem_startup();
	claude_slots_shmem_startup();
	claude_limits_shmem_startup();
	claude_cache_shmem_startup();
	claude_dbwork_shmem_startup();
	claude_progress_shmem_startup();
	claude_stats_shmem_startup();
	claude_usage_shmem_startup();
	claude_shared_config_shmem_startup();
	claude_streams_shmem_startup();
}

void
_PG_init(void)
{
	claude_define_gucs();
	claude_install_log_redaction();
	claude_install_utility_hook(process_shared_preload_libraries_in_progress);

	/* without preloading, calls fail with a hint (claude_require_shared) */
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = claude_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = claude_shmem_startup;

	claude_register_http_worker();
	claude_prefetch_register();
	claude_prefetch_install_planner();
}
