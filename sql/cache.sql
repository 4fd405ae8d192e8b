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

-- wait_cached stays for stream.sql
