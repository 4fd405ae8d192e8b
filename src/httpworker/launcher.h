/*
 * launcher.h
 *		The starter of database workers, a step of the HTTP worker's loop.
 */
#ifndef CLAUDE_LAUNCHER_H
#define CLAUDE_LAUNCHER_H

extern void claude_launcher_init(void);
extern void claude_launcher_shutdown(void);
extern void claude_launcher_step(void);
extern long claude_launcher_timeout_ms(void);

#endif
