/*
 * fault.h
 *		Errors and pauses injected for the tests, from the server's
 *		environment only.
 */
#ifndef CLAUDE_FAULT_H
#define CLAUDE_FAULT_H

extern void claude_fault_point(const char *where);
extern void claude_pause_point(const char *where);

#endif
