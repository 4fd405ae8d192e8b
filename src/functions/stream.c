/*
 * stream.c
 *		claude_stream and claude_messages_stream, called from SQL: rows as
 *		the answer is written.
 *
 * Both return a row per call (value-per-call), so a cursor, libpq's
 * single-row mode or a driver's fetch size hands the client each piece as
 * it comes, while Claude is still writing.  Closing the cursor before the
 * end aborts the transfer.
 */
#include "postgres.h"

#include "funcapi.h"
#include "utils/builtins.h"

#include "client/message.h"
#include "client/stream.h"
#include "common/guc.h"
#include "common/json.h"
#include "common/spi.h"
#include "functions/complete.h"
#include "shmem/area.h"

PG_FUNCTION_INFO_V1(claude_stream);
PG_FUNCTION_INFO_V1(claude_messages_stream);

typedef struct StreamCall
{
	ClaudeStream st;
	Jsonb	   *hit;			/* a cache hit, returned as one row */
	bool		any;			/* claude_stream: a row was returned */
	bool		message_sent;	/* claude_messages_stream: the last row */
	ExprContext *econtext;
} StreamCall;

/* The query ended or its cursor closed before the end. */
static void
stream_shutdown(Datum arg)
{
	claude_stream_abandon(&((StreamCall *) DatumGetPointer(arg))->st);
}

/* Start the call; a cache hit needs no request. */
static StreamCall *
stream_start(FunctionCallInfo fcinfo, FuncCallContext *fc, Jsonb *request,
			 ClaudeStreamMode mode)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	StreamCall *sc = palloc0(sizeof(StreamCall));
	ClaudeCall	call;

	claude_call_init(&call, CLAUDE_EP_MESSAGES, NULL);
	claude_call_set_body(&call, request);
	claude_call_cache_arg(&call, fcinfo, -1, CLAUDE_CACHE_LEAD);
	call.stream = mode;
	if (!claude_stream_begin(&sc->st, &call))
		sc->hit = sc->st.call.hit;
	if (rsinfo && IsA(rsinfo, ReturnSetInfo) && rsinfo->econtext)
	{
		sc->econtext = rsinfo->econtext;
		RegisterExprContextCallback(sc->econtext, stream_shutdown, PointerGetDatum(sc));
	}
	fc->user_fctx = sc;
	return sc;
}

/* The end of the rows: the callback must not outlive the call's memory. */
static void
stream_end(StreamCall *sc)
{
	if (sc->econtext)
		UnregisterExprContextCallback(sc->econtext, stream_shutdown, PointerGetDatum(sc));
}

/*
 * claude_stream(prompt, model, max_tokens, system, temperature): the text
 * of the answer, a row for what has come since the last one.
 */
Datum
claude_stream(PG_FUNCTION_ARGS)
{
	FuncCallContext *fc;
	StreamCall *sc;
	MemoryContext caller = CurrentMemoryContext;
	StringInfoData piece;
	const char *item;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		ClaudeCompleteArgs args;
		text	   *prompt;

		fc = SRF_FIRSTCALL_INIT();
		if (PG_ARGISNULL(0))
			SRF_RETURN_DONE(fc);
		claude_require_shared();
		prompt = PG_GETARG_TEXT_PP(0);
		if (VARSIZE_ANY_EXHDR(prompt) == 0)
			claude_invalid_argument("prompt must not be empty");
		old = MemoryContextSwitchTo(fc->multi_call_memory_ctx);
		claude_complete_args(fcinfo, 1, 2, 3, 4, &args);
		(void) stream_start(fcinfo, fc, claude_complete_request(&args, text_to_cstring(prompt)),
							CLAUDE_STREAM_TEXT);
		MemoryContextSwitchTo(old);
	}
	fc = SRF_PERCALL_SETUP();
	sc = fc->user_fctx;
	if (sc == NULL)
		SRF_RETURN_DONE(fc);
	if (sc->hit)
	{
		text	   *whole = claude_jsonb_reply_text(sc->hit);

		sc->hit = NULL;
		SRF_RETURN_NEXT(fc, PointerGetDatum(whole));
	}

	/* what has come, at least one piece that is not empty */
	MemoryContextSwitchTo(fc->multi_call_memory_ctx);
	initStringInfo(&piece);
	while (piece.len == 0 || claude_stream_ready(&sc->st))
	{
		if ((item = claude_stream_next(&sc->st)) == NULL)
			break;
		appendStringInfoString(&piece, item);
	}
	MemoryContextSwitchTo(caller);
	if (piece.len == 0)
	{
		text	   *whole;

		/* a server that answered with the Message at once: its text */
		if (!sc->any && sc->st.call.reply && (whole = claude_complete_text(sc->st.call.reply)) != NULL &&
			VARSIZE_ANY_EXHDR(whole) > 0)
		{
			sc->any = true;
			SRF_RETURN_NEXT(fc, PointerGetDatum(whole));
		}
		stream_end(sc);
		SRF_RETURN_DONE(fc);
	}
	sc->any = true;
	SRF_RETURN_NEXT(fc, CStringGetTextDatum(claude_stream_item_text(piece.data)));
}

/*
 * claude_messages_stream(request): each event as it comes (ping aside),
 * then the assembled Message.
 */
Datum
claude_messages_stream(PG_FUNCTION_ARGS)
{
	FuncCallContext *fc;
	StreamCall *sc;
	MemoryContext caller = CurrentMemoryContext;
	const char *item;
	Jsonb	   *row;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;

		fc = SRF_FIRSTCALL_INIT();
		if (PG_ARGISNULL(0))
			SRF_RETURN_DONE(fc);
		claude_require_shared();
		old = MemoryContextSwitchTo(fc->multi_call_memory_ctx);
		(void) stream_start(fcinfo, fc, claude_messages_request(PG_GETARG_JSONB_P(0)),
							CLAUDE_STREAM_EVENTS);
		MemoryContextSwitchTo(old);
	}
	fc = SRF_PERCALL_SETUP();
	sc = fc->user_fctx;
	if (sc == NULL || sc->message_sent)
	{
		if (sc)
			stream_end(sc);
		SRF_RETURN_DONE(fc);
	}
	if (sc->hit)
	{
		sc->message_sent = true;
		SRF_RETURN_NEXT(fc, JsonbPGetDatum(sc->hit));
	}

	MemoryContextSwitchTo(fc->multi_call_memory_ctx);
	item = claude_stream_next(&sc->st);
	MemoryContextSwitchTo(caller);
	if (item != NULL)
	{
		if ((row = claude_json_parse(item, strlen(item))) == NULL)
			claude_bad_reply(&sc->st.call.result);
		SRF_RETURN_NEXT(fc, JsonbPGetDatum(row));
	}
	sc->message_sent = true;
	row = claude_json_parse(sc->st.call.reply, strlen(sc->st.call.reply));
	if (row == NULL || !JB_ROOT_IS_OBJECT(row) || JB_ROOT_IS_SCALAR(row) ||
		claude_json_get_container(&row->root, "content", true) == NULL)
		claude_bad_reply(&sc->st.call.result);
	SRF_RETURN_NEXT(fc, JsonbPGetDatum(row));
}
