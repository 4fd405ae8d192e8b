-- Streaming: claude_stream returns the answer in pieces, claude_messages_stream
-- every event and then the assembled message.  The mock streams text in
-- pieces of 8 characters and echoes the prompt.
SET claude.cache = off;

-- the pieces make up the whole answer, in order
SELECT string_agg(piece, '' ORDER BY n) AS whole, count(*) >= 1 AS rows
FROM claude_stream('stream me: ünïcödé and a longer tail of words') WITH ORDINALITY AS t(piece, n);
-- in the select list (value-per-call): the same text
SELECT string_agg(p, '') AS whole
FROM (SELECT claude_stream('stream me: ünïcödé and a longer tail of words') AS p) s;

-- each event in order (pings are not rows), then the message
SELECT n, e->>'type' AS type, e->'delta'->>'text' AS text
FROM claude_messages_stream('{"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 50}')
     WITH ORDINALITY AS t(e, n);
-- the message is the one claude_messages returns, but for its id
SELECT (SELECT e - 'id' FROM claude_messages_stream('{"messages": [{"role": "user", "content": "same"}]}') AS e
        WHERE e->>'type' = 'message')
     = claude_messages('{"messages": [{"role": "user", "content": "same"}]}') - 'id' AS same_message;
-- "stream" in a request is the extension's business: it is dropped
SELECT claude_messages('{"messages": [{"role": "user", "content": "x"}], "stream": true}')->'content';
SELECT count(*) FROM claude_messages_stream('{"messages": [{"role": "user", "content": "x"}], "stream": false}');

-- arguments are checked before anything is sent
SELECT claude_stream(NULL);
SELECT claude_stream('');
SELECT claude_stream('x', max_tokens => 0);
SELECT claude_stream('x', temperature => 2);
SELECT claude_messages_stream(NULL);
SELECT claude_messages_stream('{"messages": []}');
SELECT claude_messages_stream('[1]');

-- a role's open streams hold at most a quarter of the pool's connections
-- (4 of 16 here): one more is refused at once, not left waiting
CREATE ROLE claude_streamer;
GRANT EXECUTE ON FUNCTION claude_stream(text, text, int, text, float8),
  claude_messages_stream(jsonb) TO claude_streamer;
SET ROLE claude_streamer;
BEGIN;
DECLARE s1 CURSOR FOR SELECT claude_stream('one');
DECLARE s2 CURSOR FOR SELECT claude_stream('two');
DECLARE s3 CURSOR FOR SELECT claude_stream('three');
DECLARE s4 CURSOR FOR SELECT claude_stream('four');
DECLARE s5 CURSOR FOR SELECT claude_messages_stream('{"messages": [{"role": "user", "content": "five"}]}');
FETCH 1 FROM s1;
FETCH 1 FROM s2;
FETCH 1 FROM s3;
FETCH 1 FROM s4;
FETCH 1 FROM s5;
ROLLBACK;
-- closed, they are given back
SELECT string_agg(p, '') FROM (SELECT claude_stream('after the cursors') AS p) s;
RESET ROLE;
DROP OWNED BY claude_streamer;
DROP ROLE claude_streamer;

-- a cache hit is one row, the whole answer
SET claude.cache = on;
SELECT claude_complete('stream from the cache');
SELECT wait_cached('stream from the cache');
SELECT claude_stream('stream from the cache');
SELECT count(*), max(e->>'type') FROM claude_messages_stream(
  '{"messages": [{"role": "user", "content": "stream from the cache"}]}') AS e;
DROP FUNCTION wait_cached(text);
RESET claude.cache;
