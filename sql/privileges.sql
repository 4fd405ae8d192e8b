-- Spending functions are not executable by PUBLIC.
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute
FROM pg_proc p WHERE p.proname LIKE 'claude\_%' ORDER BY 1;
-- nor are requests, replies and batches readable (claude_jobs: a role's
-- own rows only); list prices are
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') AS public_can_read
FROM pg_class c WHERE c.relname LIKE 'claude\_%' AND c.relkind IN ('r', 'v') ORDER BY 1;

-- the database's owner sets budgets and prices; the extension's own rows
-- (what the worker acts on) are nobody's to write or read but its code's,
-- save the jobs a role pays for or has on its tables (row security: it
-- reads and cancels them)
SELECT c.relname,
       (SELECT string_agg(p, ',') FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
        WHERE has_table_privilege('pg_database_owner', c.oid, p)) AS database_owner_may
FROM pg_class c WHERE c.relname LIKE 'claude\_%' AND c.relkind = 'r' ORDER BY 1;
SELECT c.relname, has_sequence_privilege('pg_database_owner', c.oid, 'USAGE,SELECT,UPDATE') AS database_owner_may
FROM pg_class c WHERE c.relname LIKE 'claude\_%' AND c.relkind = 'S' ORDER BY 1;

CREATE ROLE claude_plain LOGIN;
CREATE ROLE claude_granted LOGIN;
GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO claude_granted;

-- the key is never shown, not even to a superuser
SET claude.api_key = 'sk-ant-regress-secret-123456';
SHOW claude.api_key;
SELECT current_setting('claude.api_key');
SELECT count(*) FROM pg_settings WHERE name = 'claude.api_key';
-- a session's key travels with its requests: the mock refuses this one
\set VERBOSITY sqlstate
SELECT claude_complete('wrong key');
\set VERBOSITY default
RESET claude.api_key;
SELECT claude_complete('right key again');

SET ROLE claude_plain;
\set VERBOSITY terse
SELECT claude_complete('not granted');
-- 42501 only: the server's wording of it changed in 16
\set VERBOSITY sqlstate
SHOW claude.api_key;
SELECT current_setting('claude.api_key');
SHOW claude.api_key_file;
SHOW claude.proxy;
\set VERBOSITY terse
SELECT count(*) FROM pg_settings WHERE name IN ('claude.api_key', 'claude.api_key_file', 'claude.proxy');
SET claude.api_key = 'x';
SET claude.base_url = 'https://evil.example.com';
SET claude.ca_file = '/tmp/ca.pem';
SET claude.proxy = 'http://evil.example.com:3128';
SET claude.anthropic_version = '2099-01-01';
SET claude.cache_ttl = 5;
SET claude.cache_scope = 'database';
SET claude.max_reply_size = '1GB';
-- user-level settings are fine
SET claude.default_model = 'claude-haiku-4-5';
SET claude.request_timeout = '30s';
RESET ROLE;

SET ROLE claude_granted;
SELECT claude_complete('granted');
RESET ROLE;
\set VERBOSITY default

-- base_url must be https, or http on loopback only
\set VERBOSITY terse
SET claude.base_url = 'http://example.com';
SET claude.base_url = 'ftp://127.0.0.1';
SET claude.base_url = '';
\set VERBOSITY default
SET claude.base_url = 'http://127.0.0.1:1';
RESET claude.base_url;

-- unknown claude.* settings are refused
SET claude.no_such_setting = 1;

DROP ROLE claude_plain;
REVOKE ALL ON FUNCTION claude_complete(text, text, int, text, float8, boolean) FROM claude_granted;
DROP ROLE claude_granted;
