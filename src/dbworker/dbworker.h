/*
 * dbworker.h
 *		The per-database background worker.
 */
#ifndef CLAUDE_DBWORKER_H
#define CLAUDE_DBWORKER_H

#include "fmgr.h"

extern PGDLLEXPORT void claude_db_worker_main(Datum arg);

#endif
