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

-- The response cache.  Written only by the extension's database worker
-- (outside callers' transactions, so paid replies survive rollbacks) and
-- read by the call functions directly; closed to everyone else.
CREATE TABLE claude_cache (
    key bytea PRIMARY KEY,
    model text,
    request jsonb,
    response jsonb,
    input_tokens int,
    output_tokens int,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    hits bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz
);
REVOKE ALL ON claude_cache FROM PUBLIC;
COMMENT ON TABLE claude_cache IS
'Replies of the Claude API by SHA-256 of the canonical request';
-- paid replies are worth a backup
SELECT pg_catalog.pg_extension_config_dump('claude_cache', '');

CREATE FUNCTION claude_cache_purge(older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM @extschema@.claude_cache
        WHERE expires_at <= now()
           OR created_at < now() - older_than
        RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION claude_cache_purge(interval) IS
'Delete expired cache entries, and those created longer ago than older_than; returns how many';
REVOKE EXECUTE ON FUNCTION claude_cache_purge(interval) FROM PUBLIC;
