/*
 * streamshare.h
 *		Open streams: each role's share of the request slots and connections.
 */
#ifndef CLAUDE_STREAMSHARE_H
#define CLAUDE_STREAMSHARE_H

extern Size claude_streams_shmem_size(void);
extern void claude_streams_shmem_startup(void);
extern int	claude_stream_slot_acquire(Oid role);

#endif
