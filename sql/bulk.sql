-- claude_complete_many: one row per prompt; ord is the prompt's position
SELECT * FROM claude_complete_many(ARRAY['one', 'two', NULL, '', '[[mock:status=404]] gone', 'six'])
ORDER BY ord;
SELECT count(*) FROM claude_complete_many(NULL);
SELECT count(*) FROM claude_complete_many('{}');
SELECT ord, completion FROM claude_complete_many(ARRAY['a', 'b'], model => 'claude-haiku-4-5',
       max_tokens => 10, system => 'terse', temperature => 0.1, cache => false) ORDER BY ord;
\set VERBOSITY terse
SELECT * FROM claude_complete_many(ARRAY['x'], max_tokens => 0);
SELECT * FROM claude_complete_many(ARRAY['x'], temperature => 2);
SELECT * FROM claude_complete_many(ARRAY[['a'], ['b']]);
\set VERBOSITY default

-- claude_enrich fills a column from a template
CREATE TABLE items (id int PRIMARY KEY, "Item Name" text, qty int, label text);
INSERT INTO items VALUES (1, 'apple', 3, NULL), (2, 'pear', NULL, NULL), (3, 'fig', 1, 'set already');
SET client_min_messages = warning;   -- the summary NOTICE carries timings
CALL claude_enrich('items', 'label', '{{{Item Name}}} x{qty}');
RESET client_min_messages;
SELECT * FROM items ORDER BY id;
SELECT count(*) FROM claude_progress;

-- checked before any request
\set VERBOSITY terse
CALL claude_enrich('items', 'label', 'Item {nope}');
CALL claude_enrich('items', 'label', 'Item {Item Name');
CALL claude_enrich('items', 'label', 'Item }');
CALL claude_enrich('items', 'label', '');
CALL claude_enrich('items', 'nope', '{qty}');
CALL claude_enrich('items', 'id', '{qty}');
CALL claude_enrich('items', 'label', '{qty}', batch_size => 0);
CALL claude_enrich('items', 'label', '{qty}', mode => 'fast');
-- batch mode commits its records, so not inside a transaction block
BEGIN;
CALL claude_enrich('items', 'label', '{qty}', mode => 'batch');
ROLLBACK;
-- nothing missing: no batch
CALL claude_enrich('items', 'label', '{qty}', mode => 'batch');
SELECT count(*) FROM claude_batches;
SET claude.batch_max_requests = 0;
-- 22023 only: 16 added units to the range in the message
\set VERBOSITY sqlstate
SET claude.batch_max_size = '512B';
\set VERBOSITY terse
CALL claude_enrich(NULL, 'label', '{qty}');
CREATE TABLE nokey (a text, b text);
CALL claude_enrich('nokey', 'b', '{a}');
\set VERBOSITY default

SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute
FROM pg_proc p WHERE p.proname IN ('claude_complete_many', 'claude_enrich') ORDER BY 1;
DROP TABLE items, nokey;
