/*
 * json.c
 *		Parsing replies into jsonb without throwing, reading their fields and
 *		their text.  Callers: SQL functions, the call path, the HTTP worker.
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "catalog/namespace.h"

#include "mb/pg_wchar.h"

#include "utils/fmgrprotos.h"
#include "utils/resowner.h"

#include "common/json.h"
#include "common/pgcompat.h"
#ifdef CLAUDE_SOFT_INPUT
#include "nodes/miscnodes.h"
#endif

/* The SQLSTATEs jsonb_in raises for what its text holds, on 15. */
static bool
bad_json(int sqlerrcode)
{
	/* SQL_ASCII refuses \u escapes above 007F as "not supported" */
	return sqlerrcode == ERRCODE_UNTRANSLATABLE_CHARACTER ||
		sqlerrcode == ERRCODE_CHARACTER_NOT_IN_REPERTOIRE ||
		sqlerrcode == ERRCODE_INVALID_TEXT_REPRESENTATION ||
		sqlerrcode == ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE ||
		sqlerrcode == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||
		sqlerrcode == ERRCODE_FEATURE_NOT_SUPPORTED;
}

/* The SQLSTATEs timestamptz_in raises for a bad value, on 15. */
static bool
bad_datetime(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION;
}

/*
 * An input function's value of str, or false if str is bad input of its
 * type; anything else (a cancel, out of memory) is raised.  16 and later
 * say so without raising.  15 can only catch the error, and only in a
 * subtransaction: out of a transaction (or in parallel mode) the error
 * goes on.  Never in the HTTP worker: replies are read by the processes
 * that run SQL.
 */
static bool
input_soft(PGFunction fn, char *str, bool (*bad) (int sqlerrcode), Datum *value)
{
#ifdef CLAUDE_SOFT_INPUT
	ErrorSaveContext escontext = {T_ErrorSaveContext};

	return DirectInputFunctionCallSafe(fn, str, InvalidOid, -1,
									   (Node *) &escontext, value);
#else
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = false;

	if (!IsTransactionState() || IsInParallelMode())
	{
		*value = DirectFunctionCall3(fn, CStringGetDatum(str), ObjectIdGetDatum(InvalidOid),
									 Int32GetDatum(-1));
		return true;
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*value = DirectFunctionCall3(fn, CStringGetDatum(str), ObjectIdGetDatum(InvalidOid),
									 Int32GetDatum(-1));
		ReleaseCurrentSubTransaction();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (!bad(edata->sqlerrcode))
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
#endif
}

/*
 * A reply (UTF-8, as it came) as jsonb in the database's encoding, or NULL
 * if it is not JSON, nests too deep, or holds what jsonb or the database's
 * encoding cannot (\u0000, a character with no equivalent): a bad reply,
 * whoever reads it, never an error of another class.
 */
#ifndef CLAUDE_SOFT_INPUT
/*
 * On 15, what jsonb_in may refuse in JSON the scanner took: a \u escape
 * (\u0000, a lone surrogate, a character the encoding lacks), a number
 * numeric_in may not hold (an exponent, or over 1000 characters), or a text
 * large enough to pass jsonb's limits.  Only that pays for a subtransaction.
 */
#define JSONB_SAFE_LEN	(16 * 1024 * 1024)

static void
note_number(void *arg, const ClaudeJsonKey *path, int depth, const char *tok, int len,
			bool string)
{
	if (!string && (len > 1000 || memchr(tok, 'e', len) || memchr(tok, 'E', len)))
		*(bool *) arg = true;
}
#endif

Jsonb *
claude_json_parse(const char *text, Size len)
{
	char	   *server;
	Datum		value;

#ifdef CLAUDE_SOFT_INPUT
	if (!claude_json_scan(text, len, NULL, NULL) ||
		(server = claude_utf8_to_server(text, len)) == NULL)
		return NULL;
#else
	bool		risky = len > JSONB_SAFE_LEN || memmem(text, len, "\\u", 2) != NULL;

	if (!claude_json_scan(text, len, risky ? NULL : note_number, &risky) ||
		(server = claude_utf8_to_server(text, len)) == NULL)
		return NULL;
	if (!risky)
		return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(server)));
#endif
	if (!input_soft(jsonb_in, server, bad_json, &value))
		return NULL;
	return DatumGetJsonbP(value);
}

/*
 * The one printer of request bodies: jsonb's canonical text (keys shortest
 * first, fixed spacing), what goes on the wire.  Keys of the cache's first
 * version were the SHA-256 of this text (client/cache.c).
 */
char *
claude_json_print(const Jsonb *j, Size *len)
{
	char	   *text = JsonbToCString(NULL, (JsonbContainer *) &j->root, VARSIZE(j));

	*len = strlen(text);
	return text;
}

JsonbValue *
claude_json_get(JsonbContainer *obj, const char *key)
{
	if (obj == NULL || !JsonContainerIsObject(obj))
		return NULL;
	return getKeyJsonValueFromContainer(obj, key, strlen(key), NULL);
}

char *
claude_json_get_string(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = claude_json_get(obj, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Push an object's key while building a jsonb value. */
void
claude_json_push_key(JsonbParseState **state, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &v);
}

JsonbContainer *
claude_json_get_container(JsonbContainer *obj, const char *key, bool array)
{
	JsonbValue *v = claude_json_get(obj, key);
	JsonbContainer *c;

	if (v == NULL || v->type != jbvBinary)
		return NULL;
	c = v->val.binary.data;
	if (array ? !JsonContainerIsArray(c) : !JsonContainerIsObject(c))
		return NULL;
	return c;
}

/* ---- the text of a Messages reply: claude_complete's hot path ---- */

typedef struct ReplyText
{
	StringInfo	out;			/* UTF-8; NULL: only check */
	bool		found;			/* a content array */
	bool		bad;			/* a text block whose text is no string */
	int			block;			/* the block being read */
	bool		is_text;		/* its type is "text" */
	const char *text;			/* its text, undecoded */
	int			text_len;
} ReplyText;

static void
end_block(ReplyText *st)
{
	if (st->is_text && st->text != NULL)
		st->bad |= !claude_json_unescape(st->text, st->text_len, st->out);
	else if (st->is_text)
		st->bad = true;
	st->is_text = false;
	st->text = NULL;
}

static void
text_found(void *arg, const ClaudeJsonKey *path, int depth, const char *tok, int len,
		   bool string)
{
	ReplyText  *st = arg;

	if (depth < 1 || !claude_json_key_is(&path[0], "content"))
		return;
	if (depth == 1)
	{
		st->bad = true;			/* content is no array */
		return;
	}
	st->found = true;
	if (path[1].key != NULL)
		st->bad = true;			/* content is an object */
	if (depth != 3)
		return;
	if (path[1].index != st->block)
	{
		end_block(st);
		st->block = path[1].index;
	}
	if (claude_json_key_is(&path[2], "type"))
		st->is_text = string && len == 4 && memcmp(tok, "text", 4) == 0;
	else if (claude_json_key_is(&path[2], "text"))
	{
		if (string)
			st->text = tok, st->text_len = len;
		else
			st->bad = true;
	}
}

/*
 * Whether a reply (UTF-8) is a Messages response a caller would accept,
 * read as claude_reply_text does but decoding nothing: only such a reply
 * is worth caching.  Never raises, allocates nothing: the HTTP worker.
 */
bool
claude_reply_is_message(const char *json, Size len)
{
	ReplyText	st;

	memset(&st, 0, sizeof(st));
	if (!claude_json_scan(json, len, text_found, &st))
		return false;
	end_block(&st);
	return st.found && !st.bad;
}

/*
 * The concatenated text blocks of a Messages reply (UTF-8, as it came), in
 * the database's encoding, appended to out.  False when it is not a reply:
 * not JSON, no content array or an empty one, a text block whose text is
 * not a string, or text the database's encoding cannot hold.  Never raises.
 */
bool
claude_reply_text(const char *json, Size len, StringInfo out)
{
	StringInfoData utf8;
	ReplyText	st;
	char	   *server;

	initStringInfo(&utf8);
	memset(&st, 0, sizeof(st));
	st.out = &utf8;
	if (!claude_json_scan(json, len, text_found, &st))
		return false;
	end_block(&st);
	/* an empty content array has no element: found stays false */
	if (!st.found || st.bad ||
		!pg_verify_mbstr(PG_UTF8, utf8.data, utf8.len, true) ||
		(server = claude_utf8_to_server(utf8.data, utf8.len)) == NULL)
		return false;
	appendStringInfoString(out, server);
	return true;
}

/*
 * Add u's counts to sum: the attempts of one request, each count at most
 * CLAUDE_MAX_TOKENS and the attempts few, so the sum stays sane.
 */
void
claude_usage_add(ClaudeUsage *sum, const ClaudeUsage *u)
{
	sum->input += u->input;
	sum->output += u->output;
	sum->cache_write += u->cache_write;
	sum->cache_write_1h += u->cache_write_1h;
	sum->cache_read += u->cache_read;
}

/*
 * UTF-8 text in the database's encoding, or NULL when a character has no
 * equivalent there.  Never raises.  A SQL_ASCII database takes the bytes
 * as they are.
 */
char *
claude_utf8_to_server(const char *s, Size len)
{
	int			enc = GetDatabaseEncoding();
	Oid			proc;
	Size		size;
	char	   *out;

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return pnstrdup(s, len);
	proc = FindDefaultConversionProc(PG_UTF8, enc);
	size = len * MAX_CONVERSION_GROWTH + 1;
	if (!OidIsValid(proc) || len > INT_MAX / MAX_CONVERSION_GROWTH)
		return NULL;
	out = palloc_extended(size, MCXT_ALLOC_HUGE);
	if (pg_do_encoding_conversion_buf(proc, PG_UTF8, enc, (unsigned char *) s, (int) len,
									  (unsigned char *) out, (int) size, true) < (int) len)
	{
		pfree(out);
		return NULL;
	}
	return out;
}

/*
 * A timestamptz from a server's text, whose shape the caller has checked:
 * false when its fields are out of range (month 13, hour 25), an error of
 * the value's, never the caller's; a cancel still goes on.
 */
bool
claude_timestamptz_in(const char *s, Datum *value)
{
	return input_soft(timestamptz_in, unconstify(char *, s), bad_datetime, value);
}
