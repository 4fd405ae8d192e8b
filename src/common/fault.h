/*
 * fault.h
 *		Errors and pauses injected for the tests, from the server's
 *		environment only.
 */
#ifndef CLAUDE_FAULT_H
#define CLAUDE_FAULT_H

#include "datatype/timestamp.h"

extern void claude_fault_point(const char *where);
extern void claude_pause_point(const char *where);
extern TimestampTz claude_test_clock_offset(void);

#endif
