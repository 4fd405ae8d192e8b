-- BEFORE ROW fills the column in the statement itself
CREATE TABLE notes (id int PRIMARY KEY, "Body" text, words int, summary text);
CREATE TRIGGER summarize BEFORE INSERT OR UPDATE ON notes FOR EACH ROW
  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Summary of {Body} ({words} words) {{x}}',
                                         'model=claude-haiku-4-5', 'max_tokens=30', 'system=Be brief');
INSERT INTO notes VALUES (1, 'first note', 2), (2, NULL, NULL) RETURNING *;
UPDATE notes SET "Body" = 'changed' WHERE id = 1 RETURNING summary;

-- AFTER ROW queues a job in the same transaction
CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}');
BEGIN;
INSERT INTO tickets VALUES (1, 'printer on fire');
SELECT relid, pk, target_column, request, status, attempts FROM claude_jobs;
ROLLBACK;
SELECT count(*) FROM claude_jobs;

-- arguments, level, timing and events are checked as the trigger is created
\set VERBOSITY terse
CREATE TABLE bad (id int PRIMARY KEY, a text, b text);
CREATE TRIGGER t1 BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b');
CREATE TRIGGER t2 BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{a}', 'temperature=1');
CREATE TRIGGER t3 BEFORE DELETE ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{a}');
CREATE TRIGGER t3 AFTER INSERT ON bad FOR EACH STATEMENT EXECUTE FUNCTION claude_enrich_trigger('b', '{a}');
CREATE TRIGGER t3 BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('c', '{a}');
CREATE TRIGGER t3 BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{c}');
CREATE TABLE nokey (a text, b text);
CREATE TRIGGER t4 AFTER INSERT ON nokey FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{a}');
SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('bad'::regclass, 'nokey'::regclass);
-- and again as it fires (one made while the check was off)
ALTER EVENT TRIGGER claude_trigger_check DISABLE;
CREATE TRIGGER t1 BEFORE INSERT ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b');
CREATE TRIGGER t3 BEFORE DELETE ON bad FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{a}');
CREATE TRIGGER t4 AFTER INSERT ON nokey FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{a}');
ALTER EVENT TRIGGER claude_trigger_check ENABLE;
INSERT INTO bad VALUES (1, 'x');
DROP TRIGGER t1 ON bad;
INSERT INTO bad VALUES (1, 'x');
DELETE FROM bad;
DROP TRIGGER t3 ON bad;
INSERT INTO nokey VALUES ('x');
SELECT claude_enrich_trigger();
\set VERBOSITY default

SELECT claude_jobs_retry();
SELECT has_table_privilege('public', 'claude_jobs', 'SELECT') AS public_reads_jobs,
       has_function_privilege('public', 'claude_jobs_retry(regclass, interval, text)', 'EXECUTE') AS public_retries;
DROP TABLE notes, tickets, bad, nokey;
