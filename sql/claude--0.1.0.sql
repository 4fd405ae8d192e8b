-- claude extension, version 0.1.0
\echo Use "CREATE EXTENSION claude" to load this file. \quit

CREATE FUNCTION claude_complete(
    prompt text,
    model text DEFAULT NULL,
    max_tokens int DEFAULT NULL,
    system text DEFAULT NULL,
    temperature float8 DEFAULT NULL,
    cache boolean DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'claude_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION claude_complete(text, text, int, text, float8, boolean) IS
'Send one user message to Claude and return the text of the reply';

CREATE FUNCTION claude_messages(
    request jsonb,
    cache boolean DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'claude_messages'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION claude_messages(jsonb, boolean) IS
'Send a full Messages API request body and return the whole response object';

-- Calls spend money: nobody may call them until an admin grants it.
REVOKE EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION claude_messages(jsonb, boolean) FROM PUBLIC;
