/*
 * prefetch_node.h
 *		The ClaudePrefetch custom scan: rows read ahead, calls sent together.
 */
#ifndef CLAUDE_PREFETCH_NODE_H
#define CLAUDE_PREFETCH_NODE_H

#include "nodes/extensible.h"

extern PGDLLIMPORT const CustomScanMethods claude_prefetch_scan_methods;

extern void claude_prefetch_register(void);

#endif
