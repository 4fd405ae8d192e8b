-- The mock answers with the text of the last user message.
SELECT claude_complete('Hello, Claude');
SELECT claude_complete('Hi', model => 'claude-haiku-4-5', max_tokens => 5,
                       system => 'Be brief', temperature => 0.5);
SELECT claude_complete('Hi', NULL, NULL, NULL, NULL, NULL);

-- a NULL prompt is NULL, with no request
SELECT claude_complete(NULL) IS NULL AS is_null;

-- strings survive the trip unchanged: quotes, backslashes, control
-- characters, any Unicode
SELECT claude_complete(s) = s AS round_trip
FROM (VALUES (E'quote " backslash \\ slash / tab \t newline \n cr \r'),
             (E'control \x01\x02\x1f bell \x07'),
             ('unicode: é ß 漢字 emoji 😀 rtl שלום'),
             ('json-ish: {"a": [1, 2]} \u0000 not an escape'),
             (repeat('x', 100000))) AS t(s);

-- invalid arguments fail before any request
\set VERBOSITY terse
SELECT claude_complete('');
SELECT claude_complete('Hi', max_tokens => 0);
SELECT claude_complete('Hi', max_tokens => -5);
SELECT claude_complete('Hi', temperature => 1.5);
SELECT claude_complete('Hi', temperature => -0.1);
SELECT claude_complete('Hi', temperature => 'NaN');
SELECT claude_complete('Hi', model => '');
SELECT claude_complete('Hi', system => '');

-- API errors carry the error type and message, one SQLSTATE per class
-- (no retries here: they have TAP tests of their own)
SET claude.max_retries = 0;
SELECT claude_complete('[[mock:status=400]] bad');
SELECT claude_complete('[[mock:status=401]] key');
SELECT claude_complete('[[mock:status=404]] model');
SELECT claude_complete('[[mock:status=429]] slow down');
SELECT claude_complete('[[mock:status=529]] busy');
SELECT claude_complete('[[mock:malformed]] broken');
\set VERBOSITY sqlstate
SELECT claude_complete('[[mock:status=400]] bad');
SELECT claude_complete('[[mock:status=413]] big');
SELECT claude_complete('[[mock:status=401]] key');
SELECT claude_complete('[[mock:status=403]] forbidden');
SELECT claude_complete('[[mock:status=404]] model');
SELECT claude_complete('[[mock:status=429]] slow down');
SELECT claude_complete('[[mock:status=500]] oops');
SELECT claude_complete('[[mock:status=529]] busy');
SELECT claude_complete('[[mock:malformed]] broken');
SELECT claude_complete('[[mock:reset]] reset');
SET claude.request_timeout = 200;
SELECT claude_complete('[[mock:hang]] hang');
RESET claude.request_timeout;
-- a cancel is 57014, like any other
SET statement_timeout = 200;
SELECT claude_complete('[[mock:hang]] hang');
RESET statement_timeout;
\set VERBOSITY default

-- the request-id is in the detail
DO $$
BEGIN
  PERFORM claude_complete('[[mock:status=529]] busy');
EXCEPTION WHEN OTHERS THEN
  DECLARE d text; s text;
  BEGIN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, s = RETURNED_SQLSTATE;
    RAISE NOTICE 'sqlstate %, detail mentions request-id: %', s, d LIKE '%request-id: req_mock_%';
  END;
END $$;

RESET claude.max_retries;
-- calls work again after all of that, in the same session
SELECT claude_complete('still here');
