/*
 * endpoint.c
 *		The table of API endpoints: the one place that names their paths and
 *		says how each is called.  Adding an endpoint is an entry here and
 *		the SQL function that builds its request.
 */
#include "postgres.h"

#include "client/endpoint.h"

static const ClaudeEndpoint endpoints[] = {
	/* path, method, streams, idempotent, cacheable, reply */
	[CLAUDE_EP_MESSAGES] = {"/v1/messages", CLAUDE_POST, true, true, true, CLAUDE_REPLY_MESSAGE},
	[CLAUDE_EP_COUNT_TOKENS] = {"/v1/messages/count_tokens", CLAUDE_POST, false, true, true, CLAUDE_REPLY_JSON},
	[CLAUDE_EP_MODELS] = {"/v1/models", CLAUDE_GET, false, true, false, CLAUDE_REPLY_JSON},
	[CLAUDE_EP_MODEL] = {"/v1/models/%s", CLAUDE_GET, false, true, false, CLAUDE_REPLY_JSON},
	/* once its body went out the server may have made the batch */
	[CLAUDE_EP_BATCH_CREATE] = {"/v1/messages/batches", CLAUDE_POST, false, false, false, CLAUDE_REPLY_JSON},
	[CLAUDE_EP_BATCH] = {"/v1/messages/batches/%s", CLAUDE_GET, false, true, false, CLAUDE_REPLY_JSON},
	[CLAUDE_EP_BATCH_RESULTS] = {"/v1/messages/batches/%s/results", CLAUDE_GET, false, true, false, CLAUDE_REPLY_FILE},
	[CLAUDE_EP_BATCH_CANCEL] = {"/v1/messages/batches/%s/cancel", CLAUDE_POST, false, true, false, CLAUDE_REPLY_JSON},
};

const ClaudeEndpoint *
claude_endpoint(ClaudeEndpointId id)
{
	if ((int) id < 0 || id >= lengthof(endpoints))
		elog(ERROR, "claude: unknown endpoint %d", (int) id);
	return &endpoints[id];
}
