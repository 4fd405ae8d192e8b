-- A hostile role plants pg_temp shadows of every type name the extension's
-- SQL uses, with casts into them that would raise (and could do worse) if
-- they ever ran.  The extension's statements, the ones it runs as its owner
-- above all, must resolve every name to pg_catalog: nothing of pg_temp runs.
CREATE ROLE claude_hostile LOGIN;
GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO claude_hostile;
GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric)
  TO claude_hostile;
GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO claude_hostile;
GRANT EXECUTE ON FUNCTION claude_stream(text, text, int, text, float8),
  claude_messages_stream(jsonb) TO claude_hostile;
GRANT CREATE ON SCHEMA public TO claude_hostile;
-- a budget makes every call read claude_budgets and claude_usage_log as the owner
INSERT INTO claude_budgets VALUES ('claude_hostile', 1000, NULL, 1000);

SET ROLE claude_hostile;
CREATE TABLE hostile_docs (id int PRIMARY KEY, body text, summary text, label text);
CREATE TRIGGER fill_before BEFORE INSERT ON hostile_docs FOR EACH ROW
  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Summarize: {body}');
CREATE TRIGGER fill_after AFTER INSERT ON hostile_docs FOR EACH ROW
  EXECUTE FUNCTION claude_enrich_trigger('label', 'Label: {body}');

DO $$
DECLARE
  shadow text;
  source text;
BEGIN
  FOREACH shadow IN ARRAY ARRAY['float8', 'numeric', 'jsonb', 'text', 'int4', 'int8',
      'oid', 'name', 'bytea', 'bool', 'timestamptz', 'date', 'interval',
      'regclass', 'regrole', 'varchar', 'int2'] LOOP
    EXECUTE format('CREATE TYPE pg_temp.%I AS (x pg_catalog.int4)', shadow);
    FOREACH source IN ARRAY ARRAY['text', 'numeric', 'int8', 'int4', 'jsonb', 'oid',
        'float8', 'name', 'varchar', 'bool'] LOOP
      CONTINUE WHEN source = shadow;
      EXECUTE format('CREATE FUNCTION pg_temp.%I(pg_catalog.%I) RETURNS pg_temp.%I '
                     'LANGUAGE plpgsql AS $f$BEGIN RAISE EXCEPTION %L, current_user; END$f$',
                     'hijack_' || source || '_' || shadow, source, shadow,
                     'pg_temp.' || shadow || ' ran as %');
      EXECUTE format('CREATE CAST (pg_catalog.%I AS pg_temp.%I) WITH FUNCTION pg_temp.%I(pg_catalog.%I) AS IMPLICIT',
                     source, shadow, 'hijack_' || source || '_' || shadow, source);
    END LOOP;
  END LOOP;
END $$;
-- the shadows are in place: in the role's own statements they run
\set VERBOSITY terse
SELECT 2.5::numeric::float8;
SELECT '{}'::pg_catalog.text::jsonb;
\set VERBOSITY default

-- prices and budgets are read as the owner; usage too
SELECT claude_complete('shadowed types, priced call') IS NOT NULL AS answered;
-- streamed: to the caller, and on the wire only (max_tokens above stream_min_tokens)
SELECT string_agg(p, '') AS streamed FROM (SELECT claude_stream('shadowed types, streamed call') AS p) s;
SELECT count(*) > 1 AS events FROM claude_messages_stream('{"messages": [{"role": "user", "content": "shadowed, events"}]}');
SELECT claude_complete('shadowed types, streamed on the wire', max_tokens => 5000) IS NOT NULL AS answered;
-- the BEFORE trigger fills in the statement, the AFTER trigger queues a job as the owner
INSERT INTO hostile_docs VALUES (1, 'the cat sat', NULL, NULL);
SELECT summary IS NOT NULL AS filled_before FROM hostile_docs;
-- claude_enrich, online and as a Message Batch (bookkeeping as the owner)
SET client_min_messages = warning;
CALL claude_enrich('hostile_docs', 'summary', 'Again: {body}', only_missing => false);
CALL claude_enrich('hostile_docs', 'label', 'Batch: {body}', only_missing => false, mode => 'batch');
RESET client_min_messages;
SELECT count(*) AS own_usage_rows FROM claude_usage;
RESET ROLE;
DISCARD TEMP;

-- nothing ran as anyone else, and the role is as it was
SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'claude_hostile';
-- the job and the batch were recorded as the owner and written back as the role
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN EXISTS (SELECT FROM claude_batches WHERE relation = 'hostile_docs'::regclass
                      AND results_at IS NOT NULL);
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT status, requests, rows_written FROM claude_batches WHERE relation = 'hostile_docs'::regclass;
SELECT id, summary LIKE '%Again%' AS online, label LIKE '%Batch%' AS batch FROM hostile_docs;

DELETE FROM claude_jobs WHERE relid = 'hostile_docs'::regclass;
DELETE FROM claude_batches WHERE relation = 'hostile_docs'::regclass;
DELETE FROM claude_budgets WHERE role = 'claude_hostile'::regrole;
DROP TABLE hostile_docs;
REVOKE CREATE ON SCHEMA public FROM claude_hostile;
REVOKE ALL ON FUNCTION claude_complete(text, text, int, text, float8, boolean) FROM claude_hostile;
REVOKE ALL ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) FROM claude_hostile;
REVOKE ALL ON FUNCTION claude_enrich_trigger() FROM claude_hostile;
REVOKE ALL ON FUNCTION claude_stream(text, text, int, text, float8),
  claude_messages_stream(jsonb) FROM claude_hostile;
