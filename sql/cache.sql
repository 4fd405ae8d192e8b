-- The response cache.  Entries are written by the database's worker, a
-- moment after the call: wait for them.
CREATE FUNCTION wait_cached(p text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..600 LOOP
    IF EXISTS (SELECT FROM claude_cache WHERE request->'messages'->0->>'content' = p) THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
  RETURN false;
END $$;

\d claude_cache

SELECT claude_messages('{"messages": [{"role": "user", "content": "regress cache"}]}')->>'id' AS first_id \gset
SELECT wait_cached('regress cache');
-- a hit is the stored reply (the mock numbers its replies)
SELECT claude_messages('{"messages": [{"content": "regress cache", "role": "user"}]}')->>'id' = :'first_id' AS same_reply;
SELECT claude_complete('regress cache');
SELECT model, request, input_tokens, output_tokens, expires_at IS NULL AS never_expires,
       octet_length(key) AS key_bytes
FROM claude_cache WHERE request->'messages'->0->>'content' = 'regress cache';

-- cache => false sends the request again
SELECT claude_messages('{"messages": [{"role": "user", "content": "regress cache"}]}', cache => false)->>'id' <> :'first_id' AS fresh_reply;

-- hits work in a read-only transaction
BEGIN TRANSACTION READ ONLY;
SELECT claude_complete('regress cache');
COMMIT;

-- claude.cache_ttl sets expires_at
SET claude.cache_ttl = '1h';
SELECT claude_complete('regress ttl');
SELECT wait_cached('regress ttl');
SELECT expires_at - created_at AS lifetime FROM claude_cache
WHERE request->'messages'->0->>'content' = 'regress ttl';
RESET claude.cache_ttl;

-- purge: expired entries only, or everything older than the interval
SELECT claude_cache_purge() AS expired_purged;
SELECT claude_cache_purge('0 seconds') >= 2 AS all_purged;
SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' LIKE 'regress%';

-- closed to PUBLIC
SELECT has_table_privilege('public', 'claude_cache', 'SELECT') AS public_reads,
       has_function_privilege('public', 'claude_cache_purge(interval)', 'EXECUTE') AS public_purges;

-- No paid reply is lost to a new key: entries stored under keys of the
-- first version (SHA-256 of the path, the anthropic-version and the body's
-- canonical text, fixed here) answer the same requests, whichever function
-- makes them.
SET claude.cache_scope = database;
INSERT INTO claude_cache (key, model, request, response) VALUES
  ('\xfa12de5f453f7748d4a1222ce79b3fb2cc20f635831913e3e733a285cf10a843', 'claude-pinned',
   '{"model": "claude-pinned", "system": "pinned system", "messages": [{"role": "user", "content": "regress pinned key"}], "max_tokens": 7, "temperature": 0.25}',
   '{"id": "msg_pinned", "type": "message", "role": "assistant", "model": "claude-pinned", "content": [{"type": "text", "text": "pinned answer"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}'),
  ('\x1006ae285c174ae25c1e46ce3459775739054fb80a8f338ca1b71e83c80026b9', 'claude-pinned', NULL,
   '{"id": "msg_pinned_system", "type": "message", "role": "assistant", "model": "claude-pinned", "content": [{"type": "text", "text": "pinned long system"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}');
SELECT claude_complete('regress pinned key', model => 'claude-pinned', max_tokens => 7,
                       system => 'pinned system', temperature => 0.25);
SELECT claude_messages('{"temperature": 0.25, "max_tokens": 7, "messages": [{"content": "regress pinned key", "role": "user"}], "system": "pinned system", "model": "claude-pinned"}')->>'id' AS messages_id;
SELECT ord, completion, error FROM claude_complete_many(ARRAY['regress pinned key'], model => 'claude-pinned',
                       max_tokens => 7, system => 'pinned system', temperature => 0.25);
SELECT completion FROM claude_stream('regress pinned key', model => 'claude-pinned', max_tokens => 7,
                       system => 'pinned system', temperature => 0.25) AS s(completion);
-- a long system prompt goes as a block marked for prompt caching
CREATE TABLE pinned (id int PRIMARY KEY, x text, y text);
DO $$ BEGIN
  EXECUTE format('CREATE TRIGGER pinned BEFORE INSERT ON pinned FOR EACH ROW '
                 'EXECUTE FUNCTION claude_enrich_trigger(%L, %L, %L, %L, %L)',
                 'y', 'pinned row {x}', 'model=claude-pinned', 'max_tokens=7', 'system=' || repeat('s', 4096));
END $$;
INSERT INTO pinned VALUES (1, '1') RETURNING y;
DROP TABLE pinned;
-- then the database's worker, counting their hits, moves them to the keys
-- their requests have now (the binary jsonb's), and they answer from there
DO $$ BEGIN
  FOR i IN 1..600 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM claude_cache WHERE key IN
      ('\xfa12de5f453f7748d4a1222ce79b3fb2cc20f635831913e3e733a285cf10a843',
       '\x1006ae285c174ae25c1e46ce3459775739054fb80a8f338ca1b71e83c80026b9'));
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT response->>'id' AS id, octet_length(key) AS key_bytes, hits > 0 AS hits_counted,
       key NOT IN ('\xfa12de5f453f7748d4a1222ce79b3fb2cc20f635831913e3e733a285cf10a843',
                   '\x1006ae285c174ae25c1e46ce3459775739054fb80a8f338ca1b71e83c80026b9') AS moved
  FROM claude_cache WHERE model = 'claude-pinned' ORDER BY 1;
SELECT claude_complete('regress pinned key', model => 'claude-pinned', max_tokens => 7,
                       system => 'pinned system', temperature => 0.25);
DELETE FROM claude_cache WHERE model = 'claude-pinned';
RESET claude.cache_scope;

-- wait_cached stays for stream.sql
