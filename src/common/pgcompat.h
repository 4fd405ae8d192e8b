/*
 * pgcompat.h
 *		Every difference between the PostgreSQL releases we build against,
 *		in one place.  15 is the oldest supported; 17 and 18 are tested too.
 */
#ifndef CLAUDE_PGCOMPAT_H
#define CLAUDE_PGCOMPAT_H

#if PG_VERSION_NUM < 150000
#error "claude needs PostgreSQL 15 or later"
#endif

/* 18 drops pg_attribute_noreturn() for a specifier before the declaration */
#if PG_VERSION_NUM < 180000
#define pg_noreturn pg_attribute_noreturn()
#endif

/* 17 moves the local transaction id into MyProc->vxid */
#if PG_VERSION_NUM >= 170000
#define ClaudeMyLxid() (MyProc->vxid.lxid)
#else
#define ClaudeMyLxid() (MyProc->lxid)
#endif

/* 17 renames IsAutoVacuumWorkerProcess() (postmaster/autovacuum.h on 15) */
#if PG_VERSION_NUM < 170000
#define AmAutoVacuumWorkerProcess() IsAutoVacuumWorkerProcess()
#endif

/* 17 replaces the flag IsBackgroundWorker by MyBackendType (miscadmin.h) */
#if PG_VERSION_NUM < 170000
#define AmBackgroundWorkerProcess() IsBackgroundWorker
#endif

/*
 * 18 asks whether a deferrable primary key will do; before 18 one never
 * counted (relcache skipped it), so "false" keeps the same answer.
 */
#if PG_VERSION_NUM >= 180000
#define ClaudePrimaryKeyIndex(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define ClaudePrimaryKeyIndex(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/* 18 adds instrumentation to index scans (NULL: none) */
#if PG_VERSION_NUM >= 180000
#define ClaudeIndexBeginscan(heap, index, snap, nkeys, norderbys) \
	index_beginscan((heap), (index), (snap), NULL, (nkeys), (norderbys))
#else
#define ClaudeIndexBeginscan(heap, index, snap, nkeys, norderbys) \
	index_beginscan((heap), (index), (snap), (nkeys), (norderbys))
#endif

/*
 * 17 gives a wait event set to a resource owner instead of a memory
 * context; NULL there means it lives as long as the process, as
 * TopMemoryContext did.
 */
#if PG_VERSION_NUM >= 170000
#define ClaudeCreateWaitEventSet(n) CreateWaitEventSet(NULL, (n))
#else
#define ClaudeCreateWaitEventSet(n) CreateWaitEventSet(TopMemoryContext, (n))
#endif

/*
 * 16 lets input functions report bad input softly (ErrorSaveContext); on
 * 15 it can only be caught in a subtransaction (common/json.c).
 */
#if PG_VERSION_NUM >= 160000
#define CLAUDE_SOFT_INPUT 1
#endif

#endif							/* CLAUDE_PGCOMPAT_H */
