/*
 * secret.h
 *		Where the API key comes from, and keeping it out of logs.
 */
#ifndef CLAUDE_SECRET_H
#define CLAUDE_SECRET_H

extern char *claude_resolve_api_key(void);
extern void claude_install_log_redaction(void);
extern char *claude_redact(const char *text, int maxlen);

#endif
