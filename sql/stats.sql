-- The accounting surface: exact columns, prices and costs.
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'claude_stats'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname FROM pg_attribute WHERE attrelid = 'claude_usage'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute WHERE attrelid = 'claude_budgets'::regclass AND attnum > 0 ORDER BY attnum;

-- list prices: 1M input + 1M output tokens of Sonnet cost 3 + 15 USD
SELECT claude_cost_usd('claude-sonnet-4-6', '{"input_tokens": 1000000, "output_tokens": 1000000}');
SELECT claude_cost_usd('claude-sonnet-4-6', '{"input_tokens": 1000000, "output_tokens": 1000000}', batch => true);
-- the longest alias prefix wins; dated ids match their alias
SELECT claude_cost_usd('claude-opus-4-1-20250805', '{"output_tokens": 1000000}'),
       claude_cost_usd('claude-opus-4-5-20251101', '{"output_tokens": 1000000}'),
       claude_cost_usd('claude-haiku-4-5', '{"output_tokens": 1000000}');
-- cache writes 1.25x input (5 min) or 2x (1 h), cache reads 0.1x
SELECT claude_cost_usd('claude-sonnet-4-6', '{"cache_creation_input_tokens": 1000000}'),
       claude_cost_usd('claude-sonnet-4-6', '{"cache_creation_input_tokens": 1000000,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000000}}'),
       claude_cost_usd('claude-sonnet-4-6', '{"cache_read_input_tokens": 1000000}');
-- an unknown model costs NULL, not 0
SELECT claude_cost_usd('some-other-model', '{"input_tokens": 10}') IS NULL AS unknown_is_null;
SELECT count(*) > 0 AS seeded, min(price_date) IS NOT NULL AS dated FROM claude_prices;

-- metrics in the Prometheus text format
SELECT line FROM regexp_split_to_table(claude_metrics(), E'\n') AS line
WHERE line LIKE '# TYPE %' ORDER BY 1;

-- budgets are checked values (terse: the detail names the role)
\set VERBOSITY terse
INSERT INTO claude_budgets VALUES (to_regrole(current_user), -1);
\set VERBOSITY default
SELECT claude_stats_reset();
SELECT requests, succeeded, failed FROM claude_stats;
