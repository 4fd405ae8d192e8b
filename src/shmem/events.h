/*
 * events.h
 *		A stream's events, from the HTTP worker to the waiting backend.
 */
#ifndef CLAUDE_EVENTS_H
#define CLAUDE_EVENTS_H

extern Size claude_events_push(int slot, const char *data, Size len, bool force,
								   bool *full);
extern char *claude_events_take(int slot, Size *len);

#endif
