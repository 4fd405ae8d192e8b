/*
 * utility.h
 *		The ProcessUtility hook: database workers step aside.
 */
#ifndef CLAUDE_UTILITY_H
#define CLAUDE_UTILITY_H

extern void claude_dbwork_install_hooks(void);

#endif
