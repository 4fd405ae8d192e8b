/*
 * utility.h
 *		The ProcessUtility hook: database workers step aside; the key is not
 *		stored where every role reads it.
 */
#ifndef CLAUDE_UTILITY_H
#define CLAUDE_UTILITY_H

extern void claude_install_utility_hook(bool with_dbwork);

#endif
