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

CREATE FUNCTION claude_complete_many(
    prompts text[],
    model text DEFAULT NULL,
    max_tokens int DEFAULT NULL,
    system text DEFAULT NULL,
    temperature float8 DEFAULT NULL,
    cache boolean DEFAULT NULL)
RETURNS TABLE(ord int, completion text, error text)
AS 'MODULE_PATHNAME', 'claude_complete_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION claude_complete_many(text[], text, int, text, float8, boolean) IS
'Send every prompt at once (bounded by the pool and the rate limits); one row per prompt, ord its position';
REVOKE EXECUTE ON FUNCTION claude_complete_many(text[], text, int, text, float8, boolean) FROM PUBLIC;

CREATE PROCEDURE claude_enrich(
    tbl regclass,
    target_column name,
    prompt_template text,
    model text DEFAULT NULL,
    max_tokens int DEFAULT NULL,
    system text DEFAULT NULL,
    only_missing boolean DEFAULT true,
    batch_size int DEFAULT 100,
    mode text DEFAULT 'online')
AS 'MODULE_PATHNAME', 'claude_enrich'
LANGUAGE C;
COMMENT ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text) IS
'Fill target_column of every row from a prompt template ({column}), many requests at once, committing every batch_size rows';
REVOKE EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text) FROM PUBLIC;

CREATE FUNCTION claude_progress_rows(
    OUT pid int, OUT relation regclass, OUT target_column name, OUT mode text,
    OUT rows_done bigint, OUT rows_total bigint, OUT rows_failed bigint,
    OUT started_at timestamptz, OUT updated_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'claude_progress_rows'
LANGUAGE C VOLATILE;

CREATE VIEW claude_progress AS
SELECT pid, relation, target_column, mode, rows_done, rows_total, rows_failed,
       round(100.0 * (rows_done + rows_failed) / nullif(rows_total, 0), 1) AS percent,
       round(rate, 1) AS rows_per_second,
       make_interval(secs => round((rows_total - rows_done - rows_failed) / nullif(rate, 0))) AS eta,
       started_at, updated_at
FROM claude_progress_rows(),
     LATERAL (SELECT ((rows_done + rows_failed) /
                      nullif(extract(epoch FROM updated_at - started_at), 0))::numeric AS rate) r;
COMMENT ON VIEW claude_progress IS 'Running claude_enrich work in this database';

-- Jobs of AFTER claude_enrich_trigger triggers: a logged table, so queued
-- work survives crashes; closed to PUBLIC (requests are private).
CREATE TABLE claude_jobs (
    id bigserial PRIMARY KEY,
    relid regclass NOT NULL,
    pk jsonb NOT NULL,
    target_column name NOT NULL,
    request jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claude_jobs_due ON claude_jobs (next_attempt_at, id) WHERE status = 'queued';
REVOKE ALL ON claude_jobs FROM PUBLIC;
REVOKE ALL ON SEQUENCE claude_jobs_id_seq FROM PUBLIC;
COMMENT ON TABLE claude_jobs IS
'Queued and failed requests of AFTER claude_enrich_trigger triggers; done jobs are deleted';
SELECT pg_catalog.pg_extension_config_dump('claude_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('claude_jobs_id_seq', '');

-- SECURITY DEFINER: the trigger queues jobs in claude_jobs, which the
-- inserting role cannot read or write.
CREATE FUNCTION claude_enrich_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'claude_enrich_trigger'
LANGUAGE C SECURITY DEFINER;
COMMENT ON FUNCTION claude_enrich_trigger() IS
'Trigger: (target_column, prompt_template [, ''model=...'', ''max_tokens=...'', ''system=...'']); BEFORE fills the column now, AFTER queues a job';
REVOKE EXECUTE ON FUNCTION claude_enrich_trigger() FROM PUBLIC;

CREATE FUNCTION claude_jobs_retry()
RETURNS bigint
AS 'MODULE_PATHNAME', 'claude_jobs_retry'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_jobs_retry() IS 'Queue every failed job again; returns how many';
REVOKE EXECUTE ON FUNCTION claude_jobs_retry() FROM PUBLIC;
