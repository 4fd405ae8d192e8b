/*
 * prefetch_window.h
 *		The calls of rows read ahead: started when a row is read (capture),
 *		taken over when the row is reached (replay).
 */
#ifndef CLAUDE_PREFETCH_WINDOW_H
#define CLAUDE_PREFETCH_WINDOW_H

typedef struct ClaudeWindow ClaudeWindow;

typedef enum ClaudeWindowMode
{
	CLAUDE_WINDOW_CAPTURE,		/* a row read ahead: start its calls */
	CLAUDE_WINDOW_REPLAY		/* the row reached: its calls take them over */
} ClaudeWindowMode;

extern void claude_window_install(void);
extern ClaudeWindow *claude_window_create(int rows);
extern void *claude_window_enter(ClaudeWindow *w, int row, ClaudeWindowMode mode);
extern void claude_window_leave(void *saved);
extern void *claude_window_current(void);
extern void claude_window_pump(ClaudeWindow *w);
extern void claude_window_forget_row(ClaudeWindow *w, int row);
extern void claude_window_release(ClaudeWindow *w, bool cancel);
extern int64 claude_window_sent(ClaudeWindow *w);

#endif
