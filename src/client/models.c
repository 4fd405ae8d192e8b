/*
 * models.c
 *		What the API says of one model (GET /v1/models/{id}): whether it
 *		takes structured output, its context window.  Callers: the SQL
 *		functions that shape a request by it (functions/tools.c).
 *
 * Answers are kept per backend for MODEL_TTL_S, keyed by the base URL and
 * the model: a session that extracts from many rows asks once.  A lookup
 * that fails (404, a network error, a reply without capabilities) says
 * "unknown" and is remembered for a shorter time, so a caller falls back
 * to what every model takes without asking again at each call.
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "client/models.h"
#include "client/request.h"
#include "common/guc.h"
#include "common/json.h"

#define MODEL_TTL_S			3600
#define MODEL_FAILED_TTL_S	60
#define MODEL_CACHE_SIZE	16
#define MODEL_ID_MAX		128

typedef struct ModelEntry
{
	char	   *base;			/* claude.base_url it came from */
	char		id[MODEL_ID_MAX + 1];
	bool		known;
	ClaudeModelInfo info;
	TimestampTz expires;
} ModelEntry;

static ModelEntry entries[MODEL_CACHE_SIZE];
static int	next_entry = 0;

/* A count from the reply, clamped to [0, INT_MAX]; 0 if not a number. */
static int
count(JsonbContainer *obj, const char *key)
{
	JsonbValue *v = claude_json_get(obj, key);
	bool		out_of_range = false;
	int32		n;

	if (v == NULL || v->type != jbvNumeric || numeric_is_nan(v->val.numeric))
		return 0;
	n = numeric_int4_opt_error(v->val.numeric, &out_of_range);
	if (out_of_range)
		return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
												  NumericGetDatum(v->val.numeric))) > 0 ? INT_MAX : 0;
	return Max(n, 0);
}

/* Ask the API; false when it did not answer with a model. */
static bool
lookup(const char *model, ClaudeModelInfo *out)
{
	ClaudeCall	call;
	ClaudeFailure failure = {0};
	Jsonb	   *reply;
	JsonbContainer *caps;
	JsonbContainer *so;
	JsonbValue *supported;

	claude_call_init(&call, CLAUDE_EP_MODEL, model);
	call.wait_slot = true;
	(void) claude_call_start(&call);
	claude_call_wait(&call);
	if (!claude_call_finish(&call, &failure) || call.reply == NULL)
	{
		elog(DEBUG1, "claude: no model information for \"%s\": %s", model, failure.message);
		return false;
	}
	reply = claude_json_parse(call.reply, call.result.body_len);
	if (reply == NULL || JB_ROOT_IS_SCALAR(reply) || !JB_ROOT_IS_OBJECT(reply))
		return false;
	out->max_input_tokens = count(&reply->root, "max_input_tokens");
	out->max_tokens = count(&reply->root, "max_tokens");
	caps = claude_json_get_container(&reply->root, "capabilities", false);
	so = caps ? claude_json_get_container(caps, "structured_outputs", false) : NULL;
	supported = so ? claude_json_get(so, "supported") : NULL;
	out->structured_outputs = supported && supported->type == jbvBool && supported->val.boolean;
	return true;
}

/*
 * What the API says of model, asked at most once per MODEL_TTL_S in this
 * backend: false (out zeroed: no structured output, sizes unknown) when
 * it could not say.
 */
bool
claude_model_info(const char *model, ClaudeModelInfo *out)
{
	TimestampTz now = GetCurrentTimestamp();
	ModelEntry *e = NULL;
	bool		known;

	memset(out, 0, sizeof(*out));
	/* the id goes into a path: [A-Za-z0-9._-] only, as model ids are, and no "." or ".." */
	if (model == NULL || !isalnum((unsigned char) model[0]) || strlen(model) > MODEL_ID_MAX)
		return false;
	for (const char *p = model; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '-' || *p == '.' || *p == '_'))
			return false;
	for (int i = 0; i < MODEL_CACHE_SIZE; i++)
		if (entries[i].base && strcmp(entries[i].id, model) == 0 &&
			strcmp(entries[i].base, claude_base_url) == 0 && entries[i].expires > now)
		{
			*out = entries[i].info;
			return entries[i].known;
		}

	known = lookup(model, out);

	e = &entries[next_entry];
	next_entry = (next_entry + 1) % MODEL_CACHE_SIZE;
	if (e->base)
		pfree(e->base);
	e->base = MemoryContextStrdup(TopMemoryContext, claude_base_url);
	strlcpy(e->id, model, sizeof(e->id));
	e->known = known;
	e->info = *out;
	e->expires = TimestampTzPlusMilliseconds(now, (known ? MODEL_TTL_S : MODEL_FAILED_TTL_S) * 1000);
	return known;
}
