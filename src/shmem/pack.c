/*
 * pack.c
 *		A request packed into one DSA chunk for the HTTP worker: the fixed
 *		fields, then the strings behind them.  Packed by the call path
 *		(client/request.c), read in place by the worker and the slots.
 */
#include "postgres.h"

#include "common/errors.h"
#include "common/guc.h"
#include "shmem/pack.h"
#include "shmem/slots.h"

#define PACKED_MAGIC 0x436c6431	/* "Cld1" */
#define NSTRINGS 8

/*
 * The request's fixed fields, copied whole, with its strings behind it;
 * the copy's string pointers are NULL, offsets say where each one is.
 */
typedef struct PackedRequest
{
	uint32		magic;
	Size		size;			/* of the whole chunk */
	ClaudeRequest fields;
	Size		offsets[NSTRINGS];	/* 0 for NULL */
} PackedRequest;

/* The string fields of a request; the body last (it has a length). */
static void
string_fields(ClaudeRequest *r, const char **fields[NSTRINGS])
{
	fields[0] = &r->url;
	fields[1] = &r->api_key;
	fields[2] = &r->version;
	fields[3] = &r->ca_file;
	fields[4] = &r->proxy;
	fields[5] = &r->input_file;
	fields[6] = &r->output_file;
	fields[7] = &r->body;
}

dsa_pointer
claude_request_pack(const ClaudeRequest *req)
{
	ClaudeRequest copy = *req;
	const char **fields[NSTRINGS];
	const char *strings[NSTRINGS];
	Size		lengths[NSTRINGS];
	Size		size = MAXALIGN(sizeof(PackedRequest));
	dsa_pointer dp;
	PackedRequest *packed;
	char	   *p;

	string_fields(&copy, fields);
	for (int i = 0; i < NSTRINGS; i++)
	{
		strings[i] = *fields[i];
		*fields[i] = NULL;
		lengths[i] = strings[i] == NULL ? 0 :
			(i == NSTRINGS - 1 ? req->body_len : strlen(strings[i]));
		if (strings[i] != NULL)
			size = add_size(size, lengths[i] + 1);
	}

	dp = dsa_allocate_extended(claude_area(), size,
							   DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (!DsaPointerIsValid(dp))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of shared memory for a request of %zu bytes", size),
				 errdetail("Request and reply bodies share at most claude.max_shared_memory (%d kB).",
						   claude_max_shared_memory),
				 errhint(CLAUDE_SHMEM_HINT)));

	packed = dsa_get_address(claude_area(), dp);
	packed->magic = PACKED_MAGIC;
	packed->size = size;
	packed->fields = copy;
	p = (char *) packed + MAXALIGN(sizeof(PackedRequest));
	for (int i = 0; i < NSTRINGS; i++)
	{
		if (strings[i] == NULL)
		{
			packed->offsets[i] = 0;
			continue;
		}
		packed->offsets[i] = p - (char *) packed;
		memcpy(p, strings[i], lengths[i]);
		p[lengths[i]] = '\0';
		p += lengths[i] + 1;
	}
	return dp;
}

void
claude_request_set_reservation(dsa_pointer dp, int32 day)
{
	((PackedRequest *) dsa_get_address(claude_area(), dp))->fields.reserved_day = day;
}

/* The size of a packed request, to copy it whole. */
Size
claude_request_packed_size(const char *blob)
{
	return ((const PackedRequest *) blob)->size;
}

void
claude_request_unpack(const char *blob, ClaudeRequest *req)
{
	const PackedRequest *packed = (const PackedRequest *) blob;
	const char **fields[NSTRINGS];

	if (packed->magic != PACKED_MAGIC)
		elog(ERROR, "claude: corrupt request in shared memory");
	*req = packed->fields;
	string_fields(req, fields);
	for (int i = 0; i < NSTRINGS; i++)
		*fields[i] = packed->offsets[i] ? blob + packed->offsets[i] : NULL;
}
