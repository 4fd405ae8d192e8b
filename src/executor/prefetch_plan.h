/*
 * prefetch_plan.h
 *		The planner_hook that adds ClaudePrefetch scans to finished plans.
 */
#ifndef CLAUDE_PREFETCH_PLAN_H
#define CLAUDE_PREFETCH_PLAN_H

extern void claude_prefetch_install_planner(void);

#endif
