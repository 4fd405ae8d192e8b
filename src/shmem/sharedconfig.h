/*
 * sharedconfig.h
 *		Each database's prices and budgets, shared between its sessions.
 */
#ifndef CLAUDE_SHAREDCONFIG_H
#define CLAUDE_SHAREDCONFIG_H

extern Size claude_shared_config_shmem_size(void);
extern void claude_shared_config_shmem_startup(void);
extern char *claude_shared_config_get(Oid dbid, Oid ext, uint32 generation, Size *len);
extern void claude_shared_config_put(Oid dbid, Oid ext, uint32 generation,
									 const char *blob, Size len);

#endif
