-- claude extension, version 0.1.0
\echo Use "CREATE EXTENSION claude" to load this file. \quit

-- COST: a call is a network round trip (about 10,000 times a simple
-- operator), so the planner runs cheap filters first and, under a LIMIT,
-- computes the calls after the sort.
CREATE FUNCTION claude_complete(
    prompt text,
    model text DEFAULT NULL,
    max_tokens int DEFAULT NULL,
    system text DEFAULT NULL,
    temperature float8 DEFAULT NULL,
    cache boolean DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'claude_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 10000;

COMMENT ON FUNCTION claude_complete(text, text, int, text, float8, boolean) IS
'Send one user message to Claude and return the text of the reply';

CREATE FUNCTION claude_messages(
    request jsonb,
    cache boolean DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'claude_messages'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 10000;

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
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    -- '-1 day' would mean "everything created before tomorrow"
    IF older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'claude_cache_purge(''30 days'') deletes entries created more than 30 days ago.';
    END IF;
    WITH gone AS (
        DELETE FROM @extschema@.claude_cache
        WHERE expires_at <= now()
           OR created_at < now() - older_than
        RETURNING 1)
    SELECT count(*) INTO n FROM gone;
    RETURN n;
END
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

-- Streaming: a row per call (value-per-call), so that a cursor or
-- single-row mode gets the first words while Claude is still writing.
CREATE FUNCTION claude_stream(
    prompt text,
    model text DEFAULT NULL,
    max_tokens int DEFAULT NULL,
    system text DEFAULT NULL,
    temperature float8 DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'claude_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION claude_stream(text, text, int, text, float8) IS
'Complete a prompt, a row for each piece of the answer as it arrives (use it in the select list, through a cursor or single-row mode); a cache hit is one row';
REVOKE EXECUTE ON FUNCTION claude_stream(text, text, int, text, float8) FROM PUBLIC;

CREATE FUNCTION claude_messages_stream(request jsonb)
RETURNS SETOF jsonb
AS 'MODULE_PATHNAME', 'claude_messages_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION claude_messages_stream(jsonb) IS
'Send a Messages API request streamed: a row for each server-sent event as it arrives, then the assembled message';
REVOKE EXECUTE ON FUNCTION claude_messages_stream(jsonb) FROM PUBLIC;

CREATE PROCEDURE claude_enrich(
    tbl regclass,
    target_column name,
    prompt_template text,
    model text DEFAULT NULL,
    max_tokens int DEFAULT NULL,
    system text DEFAULT NULL,
    only_missing boolean DEFAULT true,
    batch_size int DEFAULT 100,
    mode text DEFAULT 'online',
    labels text[] DEFAULT NULL,
    schema jsonb DEFAULT NULL,
    where_clause text DEFAULT NULL,
    limit_rows int DEFAULT NULL,
    max_failures int DEFAULT NULL,
    dry_run boolean DEFAULT false,
    INOUT filled bigint DEFAULT NULL,
    INOUT failed bigint DEFAULT NULL,
    INOUT cached bigint DEFAULT NULL,
    INOUT requests bigint DEFAULT NULL,
    INOUT input_tokens bigint DEFAULT NULL,
    INOUT output_tokens bigint DEFAULT NULL,
    INOUT cost_usd numeric DEFAULT NULL)
AS 'MODULE_PATHNAME', 'claude_enrich'
LANGUAGE C;
COMMENT ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) IS
'Fill target_column of every row (where_clause, limit_rows) from a prompt template ({column}), many requests at once, committing every batch_size rows; with labels one of them, with schema the checked object; returns filled, failed, cached, requests, tokens and cost; raises when every row failed or max_failures is reached; dry_run estimates without paying';
REVOKE EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) FROM PUBLIC;

CREATE FUNCTION claude_progress_rows(
    OUT pid int, OUT relation regclass, OUT target_column name, OUT mode text,
    OUT rows_done bigint, OUT rows_total bigint, OUT rows_failed bigint,
    OUT started_at timestamptz, OUT updated_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'claude_progress_rows'
LANGUAGE C VOLATILE;

-- Jobs of AFTER claude_enrich_trigger triggers: a logged table, so queued
-- work survives crashes; a role reads only its own jobs (row security at
-- the end of this file), and writes none.
CREATE TABLE claude_jobs (
    id bigserial PRIMARY KEY,
    relid regclass NOT NULL,
    pk jsonb NOT NULL,
    target_column name NOT NULL,
    request jsonb NOT NULL,
    role regrole NOT NULL,
    -- the columns the prompt uses, and the MD5 of their values (printed
    -- under fixed settings) when queued: the reply is written only to a
    -- row that still holds them
    inputs text[] NOT NULL DEFAULT '{}',
    inputs_md5 text,
    -- waiting: its role cannot pay now (a spent budget, a billing error);
    -- superseded: a newer job of the same row and column was queued, so
    -- this one is never sent again
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'waiting', 'done', 'failed', 'superseded')),
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    -- of the last error: its SQLSTATE, the HTTP status and the API's
    -- request-id of the last reply (NULL when there was none)
    sqlstate text,
    http_status int,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claude_jobs_due ON claude_jobs (next_attempt_at, id) WHERE status IN ('queued', 'waiting');
REVOKE ALL ON claude_jobs FROM PUBLIC;
REVOKE ALL ON SEQUENCE claude_jobs_id_seq FROM PUBLIC;
COMMENT ON TABLE claude_jobs IS
'Queued, waiting, failed and superseded jobs of AFTER claude_enrich_trigger triggers; done jobs are deleted. A role sees and may delete the jobs it pays for and those on its tables';
SELECT pg_catalog.pg_extension_config_dump('claude_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('claude_jobs_id_seq', '');

-- Runs with the rights of the role that fired it (not SECURITY DEFINER):
-- the target column's type input and domain checks run as that role.  Only
-- its INSERT into claude_jobs runs as the extension's owner (in C, with a
-- pinned search_path and nothing of the user's inside).
CREATE FUNCTION claude_enrich_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'claude_enrich_trigger'
LANGUAGE C;
COMMENT ON FUNCTION claude_enrich_trigger() IS
'Trigger: (target_column, prompt_template [, ''model=...'', ''max_tokens=...'', ''system=...'']); BEFORE fills the column now, AFTER queues a job';
REVOKE EXECUTE ON FUNCTION claude_enrich_trigger() FROM PUBLIC;

-- Every filter given must match; a role retries only the jobs it pays for
-- (a superuser: all), so PUBLIC may call it (see the end of this file).
CREATE FUNCTION claude_jobs_retry(
    relation regclass DEFAULT NULL,
    older_than interval DEFAULT NULL,
    error_like text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'claude_jobs_retry'
LANGUAGE C VOLATILE;

-- Prices, USD per million tokens.  A row names a model id or an alias that
-- prefixes ids (claude-sonnet-4-5 covers claude-sonnet-4-5-20250929); the
-- longest match wins.  A model with no row costs NULL, not 0.
--
-- claude_prices is what admins read and edit with plain SQL: the list
-- prices this version ships (claude_list_prices, made by CREATE EXTENSION
-- and never dumped) with the admins' own rows and edits
-- (claude_price_overrides, dumped) laid over them.  A dump holds only what
-- an admin changed, so a restore never meets the shipped rows twice.
CREATE TABLE claude_list_prices (
    model text PRIMARY KEY,
    input_usd_per_mtok numeric NOT NULL,
    output_usd_per_mtok numeric NOT NULL,
    price_date date NOT NULL
);
COMMENT ON TABLE claude_list_prices IS
'The list prices this version of claude ships; edit claude_prices instead';
INSERT INTO claude_list_prices VALUES
    ('claude-opus-4-7', 5, 25, '2026-05-06'),
    ('claude-opus-4-6', 5, 25, '2026-05-06'),
    ('claude-opus-4-5', 5, 25, '2026-05-06'),
    ('claude-opus-4-1', 15, 75, '2026-05-06'),
    ('claude-opus-4-0', 15, 75, '2026-05-06'),
    ('claude-opus-4-2025', 15, 75, '2026-05-06'),
    ('claude-sonnet-4', 3, 15, '2026-05-06'),
    ('claude-3-7-sonnet', 3, 15, '2026-05-06'),
    ('claude-haiku-4-5', 1, 5, '2026-05-06'),
    ('claude-3-5-haiku', 0.80, 4, '2026-05-06'),
    ('claude-3-haiku', 0.25, 1.25, '2026-05-06');
GRANT SELECT ON claude_list_prices TO PUBLIC;

-- a row per model an admin added, changed or removed (removed: a list
-- price that no longer applies)
CREATE TABLE claude_price_overrides (
    model text PRIMARY KEY,
    input_usd_per_mtok numeric CHECK (input_usd_per_mtok >= 0),
    output_usd_per_mtok numeric CHECK (output_usd_per_mtok >= 0),
    price_date date,
    removed boolean NOT NULL DEFAULT false,
    CHECK (removed OR (input_usd_per_mtok IS NOT NULL AND output_usd_per_mtok IS NOT NULL
                       AND price_date IS NOT NULL))
);
COMMENT ON TABLE claude_price_overrides IS
'The rows of claude_prices an admin added, changed or removed; edit claude_prices instead';
GRANT SELECT ON claude_price_overrides TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('claude_price_overrides', '');

CREATE VIEW claude_prices AS
SELECT model, input_usd_per_mtok, output_usd_per_mtok, price_date
FROM claude_price_overrides WHERE NOT removed
UNION ALL
SELECT l.model, l.input_usd_per_mtok, l.output_usd_per_mtok, l.price_date
FROM claude_list_prices l
WHERE NOT EXISTS (SELECT FROM claude_price_overrides o WHERE o.model = l.model);
COMMENT ON VIEW claude_prices IS
'USD per million input and output tokens by model id or alias prefix; cache writes cost 1.25x (5 min) or 2x (1 h) input, cache reads 0.1x, batches 0.5x.  Edit it with plain INSERT, UPDATE and DELETE';
GRANT SELECT ON claude_prices TO PUBLIC;

-- INSERT, UPDATE and DELETE on claude_prices, as on a table: they run with
-- the rights of whoever edits (who needs them on claude_price_overrides)
CREATE FUNCTION claude_prices_edit()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.input_usd_per_mtok IS NULL OR NEW.output_usd_per_mtok IS NULL OR NEW.price_date IS NULL THEN
            RAISE EXCEPTION 'a price needs input_usd_per_mtok, output_usd_per_mtok and price_date'
                USING ERRCODE = 'not_null_violation';
        END IF;
        IF (TG_OP = 'INSERT' OR NEW.model IS DISTINCT FROM OLD.model)
           AND EXISTS (SELECT FROM @extschema@.claude_prices p WHERE p.model = NEW.model) THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "claude_prices_pkey"'
                USING ERRCODE = 'unique_violation', DETAIL = format('Key (model)=(%s) already exists.', NEW.model);
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR NEW.model IS DISTINCT FROM OLD.model) THEN
        IF EXISTS (SELECT FROM @extschema@.claude_list_prices l WHERE l.model = OLD.model) THEN
            INSERT INTO @extschema@.claude_price_overrides AS o (model, removed) VALUES (OLD.model, true)
            ON CONFLICT (model) DO UPDATE SET removed = true, input_usd_per_mtok = NULL,
                output_usd_per_mtok = NULL, price_date = NULL;
        ELSE
            DELETE FROM @extschema@.claude_price_overrides o WHERE o.model = OLD.model;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO @extschema@.claude_price_overrides AS o
            (model, input_usd_per_mtok, output_usd_per_mtok, price_date, removed)
        VALUES (NEW.model, NEW.input_usd_per_mtok, NEW.output_usd_per_mtok, NEW.price_date, false)
        ON CONFLICT (model) DO UPDATE SET input_usd_per_mtok = excluded.input_usd_per_mtok,
            output_usd_per_mtok = excluded.output_usd_per_mtok, price_date = excluded.price_date,
            removed = false;
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$$;
REVOKE EXECUTE ON FUNCTION claude_prices_edit() FROM PUBLIC;
CREATE TRIGGER claude_prices_edit INSTEAD OF INSERT OR UPDATE OR DELETE ON claude_prices
    FOR EACH ROW EXECUTE FUNCTION claude_prices_edit();

-- What a reply's usage object cost, from claude_prices; batch work is half
-- price.  Exact, rounded half up to the nano-USD as the extension counts it.
CREATE FUNCTION claude_cost_usd(model text, usage jsonb, batch boolean DEFAULT false)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- positional: a parameter named like a column of claude_prices loses to it
    SELECT trim_scale(round((coalesce(($2->>'input_tokens')::numeric, 0) * p.input_usd_per_mtok
            + coalesce(($2->>'output_tokens')::numeric, 0) * p.output_usd_per_mtok
            + CASE WHEN $2->'cache_creation' IS NOT NULL AND jsonb_typeof($2->'cache_creation') = 'object'
                   THEN coalesce(($2->'cache_creation'->>'ephemeral_5m_input_tokens')::numeric, 0) * 1.25
                      + coalesce(($2->'cache_creation'->>'ephemeral_1h_input_tokens')::numeric, 0) * 2
                   ELSE coalesce(($2->>'cache_creation_input_tokens')::numeric, 0) * 1.25
              END * p.input_usd_per_mtok
            + coalesce(($2->>'cache_read_input_tokens')::numeric, 0) * 0.1 * p.input_usd_per_mtok)
           / 1000000 * CASE WHEN $3 THEN 0.5 ELSE 1 END, 9))
    FROM @extschema@.claude_prices p
    WHERE starts_with($1, p.model)
    ORDER BY length(p.model) DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION claude_cost_usd(text, jsonb, boolean) IS
'USD cost of a reply''s usage object at claude_prices (NULL for an unknown model); batch => half price';

-- Message Batches submitted by claude_enrich(mode => 'batch').  id is the
-- API's batch id, NULL while the batch is being submitted.  'uncertain':
-- its creation may have succeeded without its id reaching us (a timeout or
-- a cut after the body went out); its rows are held until an admin sets
-- its id or deletes it.  Closed to PUBLIC: requests are private.
CREATE TABLE claude_batches (
    local_id bigserial PRIMARY KEY,
    id text UNIQUE,
    relation regclass NOT NULL,
    target_column name NOT NULL,
    -- the columns its prompts use: a result is written only to a row that
    -- still holds the values it was asked with (claude_batch_items.inputs_md5)
    inputs text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'submitting'
        CHECK (status IN ('submitting', 'in_progress', 'canceling', 'ended', 'failed', 'uncertain')),
    requests int NOT NULL DEFAULT 0,
    processing int,
    succeeded int,
    errored int,
    canceled int,
    expired int,
    rows_written int NOT NULL DEFAULT 0,
    input_tokens bigint,
    output_tokens bigint,
    cost_usd numeric,
    cache boolean NOT NULL,
    submitted_by regrole NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    expires_at timestamptz,
    results_at timestamptz,
    polled_at timestamptz,
    error text
);
REVOKE ALL ON claude_batches FROM PUBLIC;
REVOKE ALL ON SEQUENCE claude_batches_local_id_seq FROM PUBLIC;
COMMENT ON TABLE claude_batches IS
'Message Batches of claude_enrich(mode => ''batch''): API state, counts, tokens and cost; results_at is set once every result is written back';
SELECT pg_catalog.pg_extension_config_dump('claude_batches', '');
SELECT pg_catalog.pg_extension_config_dump('claude_batches_local_id_seq', '');

-- One row per request of a batch: custom_id -> primary key of the row.
CREATE TABLE claude_batch_items (
    batch bigint NOT NULL REFERENCES claude_batches (local_id) ON DELETE CASCADE,
    custom_id text NOT NULL CHECK (custom_id ~ '^[a-zA-Z0-9_-]{1,64}$'),
    pk jsonb NOT NULL,
    request jsonb NOT NULL,
    cache_key bytea,
    -- MD5 of the row's prompt inputs when submitted, as claude_jobs.inputs_md5
    inputs_md5 text,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'errored', 'canceled', 'expired')),
    error text,
    input_tokens int,
    output_tokens int,
    cost_usd numeric,
    -- what a pending request may spend, reserved against its submitter's
    -- budget until its result settles it: max_tokens of output and the
    -- request's bytes / 4 of input, at the batch price
    est_tokens bigint NOT NULL DEFAULT 0,
    est_cost_usd numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (batch, custom_id)
);
REVOKE ALL ON claude_batch_items FROM PUBLIC;
COMMENT ON TABLE claude_batch_items IS
'The requests of each Message Batch: custom_id, the row''s primary key, the request, and its outcome';
SELECT pg_catalog.pg_extension_config_dump('claude_batch_items', '');

-- a record deleted gives back what its pending requests reserve
CREATE FUNCTION claude_batches_forget()
RETURNS trigger
AS 'MODULE_PATHNAME', 'claude_batches_forget'
LANGUAGE C;
REVOKE EXECUTE ON FUNCTION claude_batches_forget() FROM PUBLIC;
CREATE TRIGGER claude_batches_forget BEFORE DELETE ON claude_batches
    FOR EACH ROW EXECUTE FUNCTION claude_batches_forget();
CREATE TRIGGER claude_batches_forget_all BEFORE TRUNCATE ON claude_batches
    FOR EACH STATEMENT EXECUTE FUNCTION claude_batches_forget();

CREATE FUNCTION claude_batch_cancel(batch_id text)
RETURNS text
AS 'MODULE_PATHNAME', 'claude_batch_cancel'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_batch_cancel(text) IS
'Ask the API to cancel a Message Batch; its finished rows are still written back. Returns the new status';
REVOKE EXECUTE ON FUNCTION claude_batch_cancel(text) FROM PUBLIC;

CREATE VIEW claude_progress AS
SELECT pid, relation, target_column, mode, rows_done, rows_total, rows_failed,
       round(100.0 * (rows_done + rows_failed) / nullif(rows_total, 0), 1) AS percent,
       round(rate, 1) AS rows_per_second,
       make_interval(secs => round((rows_total - rows_done - rows_failed) / nullif(rate, 0))) AS eta,
       started_at, updated_at, batch_id
FROM (SELECT pid, relation, target_column, mode, rows_done, rows_total, rows_failed,
             started_at, updated_at, NULL::text AS batch_id
      FROM claude_progress_rows()
      UNION ALL
      -- counts within the batch whatever the table holds: 0..requests
      SELECT NULL, relation, target_column, 'batch', d, greatest(requests, 0),
             least(greatest(coalesce(errored, 0)::bigint + coalesce(canceled, 0) + coalesce(expired, 0), 0),
                   greatest(requests, 0) - d),
             created_at, coalesce(polled_at, created_at), id
      FROM claude_batches,
           LATERAL (SELECT least(greatest(coalesce(succeeded, 0), 0), greatest(requests, 0))::bigint AS d) c
      WHERE results_at IS NULL AND status NOT IN ('failed', 'uncertain')
        -- as claude_progress_rows(): one's own work, or all with pg_read_all_stats
        AND (pg_catalog.pg_has_role(submitted_by, 'USAGE')
             OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE'))) w,
     LATERAL (SELECT ((rows_done + rows_failed) /
                      nullif(extract(epoch FROM updated_at - started_at), 0))::numeric AS rate) r;
COMMENT ON VIEW claude_progress IS
'Running claude_enrich work in this database: online runs by session, and Message Batches until their results are written back';

-- ---- statistics, usage and budgets ----

CREATE FUNCTION claude_stats_row(
    OUT requests bigint, OUT succeeded bigint, OUT failed bigint, OUT retries bigint,
    OUT rate_limited bigint, OUT throttled bigint, OUT cache_hits bigint, OUT cache_misses bigint,
    OUT input_tokens bigint, OUT output_tokens bigint, OUT cost_usd numeric,
    OUT latency_p50_ms float8, OUT latency_p95_ms float8, OUT latency_p99_ms float8,
    OUT ttft_p50_ms float8, OUT ttft_p95_ms float8, OUT ttft_p99_ms float8,
    OUT connections int, OUT in_flight int, OUT queued int, OUT since timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'claude_stats_row'
LANGUAGE C VOLATILE;

CREATE VIEW claude_stats AS SELECT * FROM claude_stats_row();
COMMENT ON VIEW claude_stats IS
'Requests of the whole server since the last claude_stats_reset(): outcomes, retries, limits, cache, tokens, cost, latency and time-to-first-token percentiles and the pool''s gauges';

CREATE FUNCTION claude_stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'claude_stats_reset'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_stats_reset() IS 'Zero the counters of claude_stats and claude_metrics() (superuser)';
REVOKE EXECUTE ON FUNCTION claude_stats_reset() FROM PUBLIC;

CREATE FUNCTION claude_shared_memory_size()
RETURNS bigint
AS 'MODULE_PATHNAME', 'claude_shared_memory_size'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_shared_memory_size() IS
'Bytes of shared memory the DSA area of request and reply bodies and stream events takes';

-- server-wide figures: for monitoring roles, not for everyone
REVOKE ALL ON claude_stats FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION claude_stats_row() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION claude_shared_memory_size() FROM PUBLIC;
GRANT SELECT ON claude_stats TO pg_monitor;
GRANT EXECUTE ON FUNCTION claude_stats_row() TO pg_monitor;

-- Usage per role, UTC day and model, as flushed by the database's worker.
-- Money is exact: cost_usd is a sum of nano-USD, never a float.
CREATE TABLE claude_usage_log (
    day date NOT NULL,
    role regrole NOT NULL,
    -- the request's model id (its first 63 bytes); '' when it had none
    model text NOT NULL DEFAULT '',
    requests bigint NOT NULL DEFAULT 0,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cost_usd numeric NOT NULL DEFAULT 0,
    unpriced_requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, role, model)
);
REVOKE ALL ON claude_usage_log FROM PUBLIC;
COMMENT ON TABLE claude_usage_log IS 'Usage per role, UTC day and model (see the view claude_usage)';
SELECT pg_catalog.pg_extension_config_dump('claude_usage_log', '');

CREATE FUNCTION claude_usage_pending(
    OUT day date, OUT role regrole, OUT model text, OUT requests bigint, OUT input_tokens bigint,
    OUT output_tokens bigint, OUT cache_write_tokens bigint, OUT cache_read_tokens bigint,
    OUT cost_usd numeric, OUT unpriced_requests bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'claude_usage_pending'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_usage_pending() IS
'Usage in shared memory not yet flushed to claude_usage_log; a role sees its own rows, a superuser all';

CREATE VIEW claude_usage WITH (security_barrier) AS
SELECT day, role, model,
       sum(requests)::bigint AS requests,
       sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       sum(cache_write_tokens)::bigint AS cache_write_tokens,
       sum(cache_read_tokens)::bigint AS cache_read_tokens,
       sum(cost_usd) AS cost_usd,
       sum(unpriced_requests)::bigint AS unpriced_requests
FROM (SELECT * FROM claude_usage_log
      UNION ALL
      SELECT * FROM claude_usage_pending()) u
WHERE role::pg_catalog.oid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
   OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
GROUP BY day, role, model;
COMMENT ON VIEW claude_usage IS
'Requests, tokens and exact cost per role, UTC day and model in this database; a role sees its own rows, a superuser all (cost_usd leaves out unpriced_requests)';
GRANT SELECT ON claude_usage TO PUBLIC;

-- Per-role daily budgets (NULL: unlimited), enforced before a request is sent.
CREATE TABLE claude_budgets (
    role regrole PRIMARY KEY,
    requests_per_day bigint CHECK (requests_per_day >= 0),
    tokens_per_day bigint CHECK (tokens_per_day >= 0),
    -- NaN and Infinity would mean "no limit" by accident: NULL says it
    usd_per_day numeric CHECK (usd_per_day >= 0 AND usd_per_day < 'Infinity')
);
REVOKE ALL ON claude_budgets FROM PUBLIC;
COMMENT ON TABLE claude_budgets IS
'Daily budgets per role (NULL: unlimited); a call over budget fails with SQLSTATE ZC402';
SELECT pg_catalog.pg_extension_config_dump('claude_budgets', '');

-- sessions read prices and budgets again once a change commits
CREATE FUNCTION claude_config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'claude_config_changed'
LANGUAGE C;
REVOKE EXECUTE ON FUNCTION claude_config_changed() FROM PUBLIC;
CREATE TRIGGER claude_budgets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON claude_budgets
    FOR EACH STATEMENT EXECUTE FUNCTION claude_config_changed();
CREATE TRIGGER claude_prices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON claude_price_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION claude_config_changed();

-- jobs and batches written by anyone (pg_restore above all) wake the
-- launcher at commit, which starts the database's worker
CREATE FUNCTION claude_work_arrived()
RETURNS trigger
AS 'MODULE_PATHNAME', 'claude_work_arrived'
LANGUAGE C;
REVOKE EXECUTE ON FUNCTION claude_work_arrived() FROM PUBLIC;
CREATE TRIGGER claude_jobs_arrived AFTER INSERT ON claude_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION claude_work_arrived();
CREATE TRIGGER claude_batches_arrived AFTER INSERT ON claude_batches
    FOR EACH STATEMENT EXECUTE FUNCTION claude_work_arrived();

-- ---- structured output, token counting, models, images ----

CREATE FUNCTION claude_extract(
    input text,
    schema jsonb,
    instructions text DEFAULT NULL,
    model text DEFAULT NULL,
    temperature float8 DEFAULT NULL,
    max_tokens int DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'claude_extract'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 10000;
COMMENT ON FUNCTION claude_extract(text, jsonb, text, text, float8, int) IS
'Structured output: the JSON object that Claude extracts from input, checked against the whole schema (native structured output or a strict tool)';
REVOKE EXECUTE ON FUNCTION claude_extract(text, jsonb, text, text, float8, int) FROM PUBLIC;

CREATE FUNCTION claude_classify(
    input text,
    labels text[],
    instructions text DEFAULT NULL,
    model text DEFAULT NULL,
    temperature float8 DEFAULT NULL,
    max_tokens int DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'claude_classify'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 10000;
COMMENT ON FUNCTION claude_classify(text, text[], text, text, float8, int) IS
'Exactly one of labels for input (structured output with an enum, checked)';
REVOKE EXECUTE ON FUNCTION claude_classify(text, text[], text, text, float8, int) FROM PUBLIC;

CREATE FUNCTION claude_count_tokens(
    prompt text,
    model text DEFAULT NULL,
    system text DEFAULT NULL)
RETURNS int
AS 'MODULE_PATHNAME', 'claude_count_tokens'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 1000;
COMMENT ON FUNCTION claude_count_tokens(text, text, text) IS
'Input tokens of one user message, from /v1/messages/count_tokens';
REVOKE EXECUTE ON FUNCTION claude_count_tokens(text, text, text) FROM PUBLIC;

CREATE FUNCTION claude_models()
RETURNS TABLE(id text, display_name text, created_at timestamptz)
AS 'MODULE_PATHNAME', 'claude_models'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION claude_models() IS 'The models the API key may use, from /v1/models (every page)';
REVOKE EXECUTE ON FUNCTION claude_models() FROM PUBLIC;

CREATE FUNCTION claude_image(data bytea, media_type text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'claude_image'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION claude_image(bytea, text) IS
'A base64 image content block (image/jpeg, png, gif or webp) to put in a claude_messages request';

-- The database's owner may dump and restore what an admin of the database
-- sets: budgets and price edits.  Jobs, batches, their items, the cache and
-- the usage log are the extension's own rows: only its code writes them,
-- with the true role, and the worker acts on them (as that role, paying as
-- that role), so no other role -- the database's owner included -- may
-- write them, or read what other roles asked.  A superuser dumps and
-- restores those.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pg_database_owner') THEN
        GRANT SELECT, INSERT ON claude_budgets, claude_price_overrides TO pg_database_owner;
    END IF;
END
$$;

-- Only the owner of a table (or a role with its privileges) may attach
-- claude_enrich_trigger to it, since its jobs write back as the owner; the
-- trigger's arguments are checked as it is created.
CREATE FUNCTION claude_trigger_check()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'claude_trigger_check'
LANGUAGE C;
REVOKE EXECUTE ON FUNCTION claude_trigger_check() FROM PUBLIC;
CREATE EVENT TRIGGER claude_trigger_check ON ddl_command_end
    WHEN TAG IN ('CREATE TRIGGER')
    EXECUTE FUNCTION claude_trigger_check();

-- ---- The API as it is today (issue 27) ----
-- List prices of the spec's models that had no row of their own (the
-- prefix claude-sonnet-4 priced them the same).  claude-mythos-preview has
-- no list price here: an admin adds it to claude_prices.
INSERT INTO claude_list_prices VALUES
    ('claude-sonnet-4-6', 3, 15, '2026-05-06'),
    ('claude-sonnet-4-5', 3, 15, '2026-05-06');

-- Semantic helpers (issue 27): one request each, through the cache and the
-- payer's budget.  COST tells the planner a call is a network round trip,
-- so cheaper quals of a WHERE clause are evaluated first.
CREATE FUNCTION claude_if(
    input text,
    condition text,
    model text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'claude_if'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 100000;
COMMENT ON FUNCTION claude_if(text, text, text) IS
'Whether condition is true of input, as Claude judges it (a forced strict tool with a boolean); NULL input: NULL';
REVOKE EXECUTE ON FUNCTION claude_if(text, text, text) FROM PUBLIC;

CREATE FUNCTION claude_summarize_step(internal, text)
RETURNS internal
AS 'MODULE_PATHNAME', 'claude_summarize_step'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION claude_summarize_step(internal, text, text)
RETURNS internal
AS 'MODULE_PATHNAME', 'claude_summarize_step'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION claude_summarize_final(internal)
RETURNS text
AS 'MODULE_PATHNAME', 'claude_summarize_final'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE EXECUTE ON FUNCTION claude_summarize_step(internal, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION claude_summarize_step(internal, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION claude_summarize_final(internal) FROM PUBLIC;

-- no combine function: never parallel; no moving-aggregate functions: a
-- window use is refused
CREATE AGGREGATE claude_summarize(input text) (
    SFUNC = claude_summarize_step,
    STYPE = internal,
    FINALFUNC = claude_summarize_final,
    PARALLEL = UNSAFE
);
CREATE AGGREGATE claude_summarize(input text, instructions text) (
    SFUNC = claude_summarize_step,
    STYPE = internal,
    FINALFUNC = claude_summarize_final,
    PARALLEL = UNSAFE
);
COMMENT ON AGGREGATE claude_summarize(text) IS
'A summary of the group''s texts, in the order of ORDER BY inside the call; summarized in parts when they do not fit one request';
COMMENT ON AGGREGATE claude_summarize(text, text) IS
'A summary of the group''s texts following instructions (the same for every row), in the order of ORDER BY inside the call';
REVOKE EXECUTE ON FUNCTION claude_summarize(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION claude_summarize(text, text) FROM PUBLIC;

CREATE FUNCTION claude_rank(
    query text,
    candidates text[])
RETURNS TABLE (ord int, score float8)
AS 'MODULE_PATHNAME', 'claude_rank'
LANGUAGE C VOLATILE PARALLEL UNSAFE COST 100000 ROWS 100;
COMMENT ON FUNCTION claude_rank(text, text[]) IS
'Each candidate''s relevance to query from 0 to 1, in one request (at most 100 candidates); ord is its 1-based position';
REVOKE EXECUTE ON FUNCTION claude_rank(text, text[]) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- issue 27, bulk structured output: what an AFTER claude_enrich_trigger's
-- reply must be, {"schema": {...}} or {"schema": {...}, "field": "label"}
-- (its 'labels=' or 'schema=' option); NULL: free text.  The worker checks
-- the reply against it before writing or caching it.
ALTER TABLE claude_jobs ADD COLUMN reply_check jsonb;
COMMENT ON COLUMN claude_jobs.reply_check IS
'What the reply of a claude_enrich_trigger with labels= or schema= must be; NULL for free text';
-- and of each result of a Message Batch of claude_enrich(labels => or schema =>)
ALTER TABLE claude_batches ADD COLUMN reply_check jsonb;
COMMENT ON COLUMN claude_batches.reply_check IS
'What each result of a claude_enrich batch with labels or schema must be; NULL for free text';

-- ---- issue 29: money ----

-- Budgets edited by role name: WHERE role = 'analyst' on a regrole column
-- would read 'analyst' as an oid (regrole has no = of its own, so oid's
-- is picked).  These compare the oids as oid's do (oideq, oidne): where
-- they are picked, a comparison means what it meant, only a role's name
-- now reads as that role.
CREATE FUNCTION claude_regrole_eq(regrole, regrole)
RETURNS boolean
AS 'oideq'
LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION claude_regrole_ne(regrole, regrole)
RETURNS boolean
AS 'oidne'
LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION claude_regrole_eq(regrole, regrole) IS 'Whether two roles are the same (the = of regrole)';
COMMENT ON FUNCTION claude_regrole_ne(regrole, regrole) IS 'Whether two roles differ (the <> of regrole)';
CREATE OPERATOR = (
    LEFTARG = regrole, RIGHTARG = regrole, FUNCTION = claude_regrole_eq,
    COMMUTATOR = =, NEGATOR = <>, RESTRICT = eqsel, JOIN = eqjoinsel);
CREATE OPERATOR <> (
    LEFTARG = regrole, RIGHTARG = regrole, FUNCTION = claude_regrole_ne,
    COMMUTATOR = <>, NEGATOR = =, RESTRICT = neqsel, JOIN = neqjoinsel);

-- The calling role's budget: its limits in this database's claude_budgets
-- (NULL: none), what it spent today on the whole server (every database:
-- requests in flight and what its Message Batches reserve included), what
-- is left, and when the UTC day ends.  A role sees only its own.
CREATE FUNCTION claude_my_budget_row(
    OUT role regrole,
    OUT requests_per_day bigint, OUT tokens_per_day bigint, OUT usd_per_day numeric,
    OUT requests_used bigint, OUT tokens_used bigint, OUT usd_used numeric,
    OUT requests_left bigint, OUT tokens_left bigint, OUT usd_left numeric,
    OUT resets_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'claude_my_budget_row'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_my_budget_row() IS
'The calling role''s daily budget, what it spent today on the whole server and what is left (see claude_my_budget)';
CREATE VIEW claude_my_budget AS SELECT * FROM claude_my_budget_row();
COMMENT ON VIEW claude_my_budget IS
'The calling role''s daily budget in this database, what it spent today in every database of the server, what is left, and when the UTC day ends';
GRANT SELECT ON claude_my_budget TO PUBLIC;

-- ---- issue 29: jobs ----
-- A role sees the jobs it pays for (the payer, claude_jobs.role, or a role
-- whose privileges it has) and the jobs on tables it owns (its own
-- automation), as pg_cron's cron.job; a superuser sees all.  It may delete
-- (cancel) them: nothing else can be forged that way.  No role may insert
-- or change a job (the database's owner included): the trigger's INSERT,
-- claude_jobs_retry and the worker run as the extension's owner, a
-- superuser, which row security never restricts.  FORCE: were the table
-- ever owned by a plain role, it would see its own jobs only, not all.
-- The sequence stays closed.
ALTER TABLE claude_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE claude_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY claude_jobs_read ON claude_jobs FOR SELECT
    USING (pg_catalog.pg_has_role(role, 'USAGE')
           OR pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                      WHERE c.oid OPERATOR(pg_catalog.=) relid), 'USAGE'));
CREATE POLICY claude_jobs_cancel ON claude_jobs FOR DELETE
    USING (pg_catalog.pg_has_role(role, 'USAGE')
           OR pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c
                                      WHERE c.oid OPERATOR(pg_catalog.=) relid), 'USAGE'));
GRANT SELECT, DELETE ON claude_jobs TO PUBLIC;
COMMENT ON COLUMN claude_jobs.sqlstate IS 'SQLSTATE of the last error';
COMMENT ON COLUMN claude_jobs.http_status IS 'HTTP status of the last failed attempt''s reply; NULL when there was none';
COMMENT ON COLUMN claude_jobs.request_id IS 'request-id header of the last failed attempt''s reply; NULL when there was none';

-- a new job of a row and column supersedes the older ones: found by this
CREATE INDEX claude_jobs_row ON claude_jobs (relid, target_column, pk);

COMMENT ON FUNCTION claude_jobs_retry(regclass, interval, text) IS
'Queue again the failed jobs the caller pays for (a superuser: all) that match every filter given: relation, failed at least older_than ago, last_error LIKE error_like; and look at matching waiting jobs now. Returns how many jobs it moved';
-- Safe for PUBLIC: a role retries only jobs whose payer it is a member of,
-- so it spends no other role's money, and only requests the table owner's
-- trigger already asked for; its budget still applies.
GRANT EXECUTE ON FUNCTION claude_jobs_retry(regclass, interval, text) TO PUBLIC;

-- ---- issue 29: monitor ----
-- Metrics as rows that postgres_exporter's query files map (monitoring/),
-- the same rows in the Prometheus text format, and the queue counts that
-- pg_monitor reads without reading the requests of claude_jobs.

-- Jobs per relation and status (any status: counted generically), read as
-- the extension's owner so that pg_monitor needs no right on claude_jobs
-- (nor is subject to its row security); only counts and times leave it.
CREATE FUNCTION claude_queue_rows(
    OUT relation regclass, OUT status text, OUT jobs bigint,
    OUT oldest timestamptz, OUT next_attempt_at timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT relid, status, count(*), min(created_at), min(next_attempt_at)
FROM @extschema@.claude_jobs
GROUP BY relid, status
$$;
COMMENT ON FUNCTION claude_queue_rows() IS
'Jobs of claude_enrich_trigger triggers per relation and status, for the view claude_queue';

CREATE VIEW claude_queue AS SELECT * FROM claude_queue_rows();
COMMENT ON VIEW claude_queue IS
'Jobs of this database per relation and status: how many, the oldest, the next attempt (never their requests)';

-- Message Batches not yet written back, per status, as the extension's owner.
CREATE FUNCTION claude_batches_open(
    OUT status text, OUT batches bigint, OUT items bigint, OUT items_done bigint)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT status, count(*), sum(greatest(requests, 0))::bigint,
       sum(least(greatest(coalesce(succeeded, 0)::bigint + coalesce(errored, 0)
                          + coalesce(canceled, 0) + coalesce(expired, 0), 0),
                 greatest(requests, 0)))::bigint
FROM @extschema@.claude_batches
WHERE results_at IS NULL AND status NOT IN ('failed', 'uncertain')
GROUP BY status
$$;
COMMENT ON FUNCTION claude_batches_open() IS
'Message Batches of this database not yet written back, per status: how many, their requests, those the API has finished';

-- Usage of this database by model, summed over every day: the log and what
-- is not yet flushed, as the extension's owner (the view claude_usage shows
-- a role its own rows only).  The same union as claude_usage: the worker
-- takes a row out of pending as it commits it to the log.  Only sums leave
-- it, never role names.
CREATE FUNCTION claude_usage_models(
    OUT model text, OUT requests bigint, OUT input_tokens bigint, OUT output_tokens bigint,
    OUT cache_write_tokens bigint, OUT cache_read_tokens bigint, OUT cost_usd numeric)
RETURNS SETOF record
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT model, sum(requests)::bigint, sum(input_tokens)::bigint, sum(output_tokens)::bigint,
       sum(cache_write_tokens)::bigint, sum(cache_read_tokens)::bigint, sum(cost_usd)
FROM (SELECT model, requests, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_usd
      FROM @extschema@.claude_usage_log
      UNION ALL
      SELECT model, requests, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_usd
      FROM @extschema@.claude_usage_pending()) u
GROUP BY model
$$;
COMMENT ON FUNCTION claude_usage_models() IS
'Requests, tokens and exact cost of this database by model over every day (flushed or not), for claude_metrics_rows()';

-- A sample of a metric.  A histogram's row has le (upper bounds in seconds,
-- +Inf left out), buckets (cumulative counts), sum and count instead of
-- value: the columns of postgres_exporter's HISTOGRAM usage.
CREATE TYPE claude_metric AS (
    metric text, type text, help text, labels jsonb, value float8,
    le float8[], buckets bigint[], sum float8, count bigint);
COMMENT ON TYPE claude_metric IS
'A sample of claude_metrics_rows(): metric, type, help, labels, value; a histogram''s le, buckets, sum and count';

-- The server-wide metrics of shared memory, one row per sample.
CREATE FUNCTION claude_metrics_shared()
RETURNS SETOF claude_metric
AS 'MODULE_PATHNAME', 'claude_metrics_shared'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION claude_metrics_shared() IS
'The server-wide part of claude_metrics_rows(): requests, tokens, cost, pool gauges, latency histograms';

-- Every metric: the server's, and the job and batch gauges of this database
-- (label database).
CREATE FUNCTION claude_metrics_rows()
RETURNS SETOF claude_metric
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT * FROM @extschema@.claude_metrics_shared()
UNION ALL
SELECT m.metric, 'gauge', m.help,
       jsonb_build_object('database', current_database(), 'status', status),
       CASE m.metric WHEN 'claude_queue_jobs' THEN coalesce(jobs, 0)
            ELSE coalesce(extract(epoch FROM now() - oldest), 0) END::float8,
       NULL, NULL, NULL, NULL
FROM (SELECT status, sum(jobs) AS jobs, min(oldest) AS oldest
      FROM @extschema@.claude_queue_rows() GROUP BY status) q
     FULL JOIN (VALUES ('queued'), ('running'), ('waiting'), ('failed')) s(status) USING (status),
     (VALUES (1, 'claude_queue_jobs', 'Jobs of claude_enrich_trigger triggers, by database and status.'),
             (2, 'claude_queue_oldest_seconds', 'Age of the oldest job, by database and status (0: none).'))
       m(ord, metric, help)
UNION ALL
SELECT m.metric, 'gauge', m.help,
       jsonb_build_object('database', current_database(), 'status', status),
       coalesce(CASE m.ord WHEN 1 THEN batches WHEN 2 THEN items ELSE items_done END, 0)::float8,
       NULL, NULL, NULL, NULL
FROM @extschema@.claude_batches_open()
     FULL JOIN (VALUES ('submitting'), ('in_progress'), ('canceling'), ('ended')) s(status) USING (status),
     (VALUES (1, 'claude_batches_open', 'Message Batches not yet written back, by database and status.'),
             (2, 'claude_batches_items', 'Requests of those Message Batches.'),
             (3, 'claude_batches_items_done', 'Requests of those Message Batches that the API has finished.'))
       m(ord, metric, help)
UNION ALL
SELECT m.metric, 'counter', m.help,
       jsonb_build_object('database', current_database(), 'model', u.model)
       || CASE WHEN m.type IS NULL THEN '{}' ELSE jsonb_build_object('type', m.type) END,
       (CASE m.ord WHEN 1 THEN u.requests WHEN 2 THEN u.input_tokens WHEN 3 THEN u.output_tokens
                   WHEN 4 THEN u.cache_write_tokens WHEN 5 THEN u.cache_read_tokens
                   ELSE u.cost_usd END)::float8,
       NULL, NULL, NULL, NULL
FROM @extschema@.claude_usage_models() u,
     (VALUES (1, 'claude_model_requests_total', NULL,
              'Requests counted in claude_usage, by database and model.'),
             (2, 'claude_model_tokens_total', 'input', 'Tokens billed, by database, model and kind.'),
             (3, 'claude_model_tokens_total', 'output', 'Tokens billed, by database, model and kind.'),
             (4, 'claude_model_tokens_total', 'cache_write', 'Tokens billed, by database, model and kind.'),
             (5, 'claude_model_tokens_total', 'cache_read', 'Tokens billed, by database, model and kind.'),
             (6, 'claude_model_cost_usd_total', NULL,
              'USD of the requests at claude_prices, by database and model (unpriced requests not counted).'))
       m(ord, metric, type, help)
$$;
COMMENT ON FUNCTION claude_metrics_rows() IS
'Every metric as rows (metric, type, help, labels, value; a histogram''s le, buckets, sum, count): what postgres_exporter''s query file maps';

-- The same rows in the Prometheus text exposition format.
CREATE FUNCTION claude_metrics()
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
WITH r AS (
    SELECT m.*,
           (SELECT string_agg(format('%s="%s"', key,
                                     replace(replace(replace(l.value, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')),
                              ',' ORDER BY key)
            FROM jsonb_each_text(m.labels) l) AS lbl
    FROM @extschema@.claude_metrics_rows()
         WITH ORDINALITY AS m(metric, type, help, labels, value, le, buckets, sum, count, n)),
lines AS (
    SELECT metric, type, help, n,
           CASE WHEN type <> 'histogram'
           THEN metric || coalesce('{' || lbl || '}', '') || ' ' || value || E'\n'
           ELSE (SELECT string_agg(format(E'%s_bucket{%sle="%s"} %s\n', metric,
                                          coalesce(lbl || ',', ''), b.bound, b.c), '' ORDER BY b.i)
                 FROM (SELECT u.bound::text, u.c, u.i
                       FROM unnest(r.le, r.buckets) WITH ORDINALITY AS u(bound, c, i)
                       UNION ALL SELECT '+Inf', r.count, 2147483647) b(bound, c, i))
                || format(E'%s_sum%s %s\n%s_count%s %s\n',
                          metric, coalesce('{' || lbl || '}', ''), sum,
                          metric, coalesce('{' || lbl || '}', ''), count)
           END AS line
    FROM r)
SELECT string_agg(block, '' ORDER BY first)
FROM (SELECT min(n) AS first,
             format(E'# HELP %s %s\n# TYPE %s %s\n', metric, min(help), metric, min(type))
             || string_agg(line, '' ORDER BY n) AS block
      FROM lines GROUP BY metric) f
$$;
COMMENT ON FUNCTION claude_metrics() IS
'claude_metrics_rows() in the Prometheus text exposition format';

-- for monitoring roles: counts and figures, never requests or replies
REVOKE EXECUTE ON FUNCTION claude_queue_rows(), claude_batches_open(), claude_usage_models(),
    claude_metrics_shared(), claude_metrics_rows(), claude_metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION claude_queue_rows(), claude_batches_open(), claude_usage_models(),
    claude_metrics_shared(), claude_metrics_rows(), claude_metrics() TO pg_monitor;
REVOKE ALL ON claude_queue FROM PUBLIC;
GRANT SELECT ON claude_queue, claude_progress TO pg_monitor;
