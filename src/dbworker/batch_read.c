/*
 * batch_read.c
 *		A line of a Message Batch's results read by the C scanner, as the
 *		HTTP worker reads replies: no jsonb parser meets what the server
 *		sent.  Caller: batch_apply.c.
 *
 * A succeeded result keeps its Message as it came (UTF-8) and its usage
 * as a reply's is read: bad usage (a fraction, a count out of range) is
 * unknown.  Another result keeps its reason, in the database's encoding.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "common/json.h"
#include "dbworker/batch_read.h"

/* Two members of an object, found in one pass: their values as they stand. */
typedef struct Pick
{
	const char *name[2];
	const char *value[2];
	Size		len[2];
} Pick;

static void
pick_found(void *arg, const char *key, int keylen, const char *value, Size len)
{
	Pick	   *p = arg;

	for (int i = 0; i < 2; i++)
		if (strlen(p->name[i]) == keylen && memcmp(p->name[i], key, keylen) == 0)
			p->value[i] = value, p->len[i] = len;
}

static bool
pick(const char *json, Size len, Pick *p, const char *a, const char *b)
{
	memset(p, 0, sizeof(*p));
	p->name[0] = a;
	p->name[1] = b;
	return claude_json_members(json, len, pick_found, p) && p->value[0] != NULL;
}

/*
 * The reason of a result that did not succeed: "type: message" of its
 * error, else the result's type, in the server's encoding.
 */
static char *
result_error(const char *result, Size len, const char *type)
{
	Size		n;
	const char *error = claude_json_member(result, len, "error", &n);
	StringInfoData etype;
	StringInfoData message;
	char	   *server;

	if (error == NULL)
		return pstrdup(type);
	initStringInfo(&etype);
	initStringInfo(&message);
	claude_reply_error(error, n, &etype, &message);
	if (etype.len == 0)
		return pstrdup(type);
	if (message.len > 0)
		appendStringInfo(&etype, ": %s", message.data);
	server = claude_utf8_to_server(etype.data, etype.len);
	return server ? server : pstrdup(type);
}

/*
 * A line read without the jsonb parser, the way the HTTP worker reads
 * replies; false for a line that is not a result at all.
 */
bool
claude_batch_scan_line(char *line, ResultLine *r)
{
	Size		len = strlen(line);
	Pick		p;
	Pick		q;

	memset(r, 0, sizeof(*r));
	if (!pg_verify_mbstr(PG_UTF8, line, len, true) || !claude_json_scan(line, len, NULL, NULL) ||
		!pick(line, len, &p, "custom_id", "result") || p.value[1] == NULL ||
		(r->cid = claude_json_plain_string(p.value[0], p.len[0])) == NULL ||
		!pick(p.value[1], p.len[1], &q, "type", "message") ||
		(r->type = claude_json_plain_string(q.value[0], q.len[0])) == NULL)
		return false;
	r->succeeded = strcmp(r->type, "succeeded") == 0;
	if (!r->succeeded)
		r->error = result_error(p.value[1], p.len[1], r->type);
	else if (q.value[1] != NULL && *q.value[1] == '{')
	{
		r->message = pnstrdup(q.value[1], q.len[1]);
		r->usage_known = claude_reply_usage(r->message, q.len[1], &r->usage);
	}
	return true;
}
