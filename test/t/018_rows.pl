# Every reply lands on its own row, once, intact: keys whatever the session
# printed them with, assignment semantics (a reply that does not fit fails
# its row alone), no endless trigger loop, no value of the user's
# overwritten, no cache entry held by a caught error, jobs of prepared
# transactions, no malformed reply cached, and checked arguments.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(encode_base64);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('rows', $mock, cache => 1,
	conf => "claude.max_retries = 0\nmax_prepared_transactions = 4\n");
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }
sub requests { $mock->stats->{requests} }
my ($rc, $out, $err);

# ---- keys printed under any session settings reach their own rows
sql(q{
	CREATE TABLE by_date (d date PRIMARY KEY, body text, summary text);
	CREATE TRIGGER f AFTER INSERT ON by_date FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'S: {body}');
	CREATE TABLE by_float (k float8 PRIMARY KEY, body text, summary text);
	CREATE TRIGGER f AFTER INSERT ON by_float FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'S: {body}');
});
sql("SET DateStyle = 'SQL, DMY'; INSERT INTO by_date VALUES ('2024-01-02', 'second of January'), ('2024-02-01', 'first of February')");
sql("SET extra_float_digits = -10; INSERT INTO by_float VALUES (1, 'one'), (1.000001, 'one and a bit')");
ok(wait_until(sub { sql("SELECT count(summary) FROM by_date") eq '2' && sql("SELECT count(summary) FROM by_float") eq '2' }),
	'every job is written back');
is(sql("SELECT string_agg(d || ' ' || summary, ', ' ORDER BY d) FROM by_date"),
	'2024-01-02 S: second of January, 2024-02-01 S: first of February',
	'DateStyle = SQL, DMY: each date key got its own reply');
is(sql("SELECT string_agg(k || ' ' || summary, ', ' ORDER BY k) FROM by_float"),
	'1 S: one, 1.000001 S: one and a bit', 'extra_float_digits = -10: 1.000001 did not overwrite 1');

# keys swapped while their jobs are in flight: neither reply lands on the other row
sql(q{
	CREATE TABLE swap (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER f AFTER INSERT ON swap FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Swap: {body}');
});
$mock->config({ latency_ms => 1500 });
sql("INSERT INTO swap VALUES (1, 'apple'), (2, 'pear')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE relid = 'swap'::regclass AND status = 'running'") eq '2' }),
	'two jobs in flight');
sql("UPDATE swap SET id = 3 WHERE id = 1; UPDATE swap SET id = 1 WHERE id = 2; UPDATE swap SET id = 2 WHERE id = 3;");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE relid = 'swap'::regclass") eq '0' }), 'both jobs end');
$mock->config({ latency_ms => 0 });
is(sql("SELECT count(*) FROM swap WHERE summary IS NOT NULL AND summary <> 'Swap: ' || body"), '0',
	'no reply landed on a row that did not ask it (the keys were swapped)');

# ---- assignment semantics: a reply that does not fit fails its row alone
sql(q{
	CREATE TABLE small (id int PRIMARY KEY, body text, label varchar(5), n int);
	INSERT INTO small VALUES (1, 'x'), (2, 'yy'), (3, 'zzz');
});
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('small', 'label', 'L{body}')");
is($rc, 0, 'claude_enrich goes on past replies too long for varchar(5)') or diag($err);
is(sql("SELECT string_agg(id || ':' || coalesce(label, '-'), ' ' ORDER BY id) FROM small"), '1:Lx 2:Lyy 3:Lzzz',
	'replies that fit are written');
sql("UPDATE small SET label = NULL");
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('small', 'label', 'Longer {body}')");
isnt($rc, 0, 'a run whose every reply is too long raises (issue 29)');
like($err, qr/0 rows filled \(0 from the cache\), 3 failed/, 'counted as failed rows');
like($err, qr/value too long for type character varying\(5\)/, 'with the type\'s own error');
is(sql("SELECT count(label) FROM small"), '0', 'nothing cut to 5 characters');
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('small', 'n', '{id}')");
is(sql("SELECT string_agg(id || ':' || coalesce(n::text, '-'), ' ' ORDER BY id) FROM small"), '1:1 2:2 3:3',
	'an int target takes replies that are numbers');
sql("UPDATE small SET n = NULL WHERE id = 2");
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('small', 'n', 'not a number {id}')");
like($err, qr/invalid input syntax for type integer/, 'a reply that is no number fails its row with the type\'s error');
sql(q{
	CREATE TABLE small_jobs (id int PRIMARY KEY, body text, label varchar(5));
	CREATE TRIGGER f AFTER INSERT ON small_jobs FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('label', 'Too long: {body}');
	INSERT INTO small_jobs VALUES (1, 'x');
});
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE relid = 'small_jobs'::regclass") eq 'failed' }),
	'a trigger job whose reply does not fit ends failed');
like(sql("SELECT last_error FROM claude_jobs WHERE relid = 'small_jobs'::regclass"), qr/value too long/,
	'with the type\'s error, not a cut value');
is(sql("SELECT label IS NULL FROM small_jobs"), 't', 'and the row keeps NULL');
# a row the UPDATE does not write (here a trigger skips it) is not counted as filled
sql(q{
	CREATE TABLE skipped (id int PRIMARY KEY, body text, summary text);
	INSERT INTO skipped VALUES (1, 'a'), (2, 'b'), (3, 'c');
	CREATE FUNCTION skip_two() RETURNS trigger LANGUAGE plpgsql AS
	  $$ BEGIN IF NEW.id = 2 THEN RETURN NULL; END IF; RETURN NEW; END $$;
	CREATE TRIGGER skip BEFORE UPDATE ON skipped FOR EACH ROW EXECUTE FUNCTION skip_two();
});
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('skipped', 'summary', 'Skip: {body}')");
like($err, qr/2 rows of skipped filled, 1 failed/, 'an UPDATE that wrote no row counts as failed, not filled');
like($err, qr/row \(2\): no row was written/, 'and says so for that row');
my $bad_utf8 = encode_base64('{"type":"message","content":[{"type":"text","text":"bad ' . "\xff" . '"}],'
	  . '"usage":{"input_tokens":1,"output_tokens":1}}', '');
sql("CREATE TABLE utf (id int PRIMARY KEY, body text, summary text); INSERT INTO utf SELECT i, 'u' || i FROM generate_series(1, 10) i");
$mock->fault({ body_base64 => $bad_utf8 });
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('utf', 'summary', 'U: {body}')");
is($rc, 0, 'raw invalid UTF-8 in one reply does not abort claude_enrich') or diag($err);
is(sql("SELECT count(summary) FROM utf"), '9', 'the other nine rows are filled');

# ---- no endless loop, and no value of the user's overwritten
sql(q{
	CREATE TABLE loop (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER f AFTER INSERT OR UPDATE ON loop FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Loop: {body}');
});
sub jobs_queued { sql("SELECT last_value FROM claude_jobs_id_seq") }
my $j0 = jobs_queued();
sql("INSERT INTO loop VALUES (1, 'once')");
ok(wait_until(sub { sql("SELECT summary FROM loop") eq 'Loop: once' }), 'an AFTER INSERT OR UPDATE trigger fills the row');
ok(!wait_until(sub { jobs_queued() - $j0 > 1 }, 3),
	'and its own write-back queues no new job (one job, no loop, even served from the cache)');
my $n0;
sql("UPDATE loop SET body = 'twice'");
ok(wait_until(sub { sql("SELECT summary FROM loop") eq 'Loop: twice' }), 'changing an input column gets a new reply');
$n0 = requests();
sql("UPDATE loop SET id = id");
sql("INSERT INTO loop VALUES (2, 'given', 'mine')");
sleep 1;
is(sql("SELECT count(*) FROM claude_jobs WHERE relid = 'loop'::regclass"), '0',
	'an UPDATE of no input and an INSERT with the target given queue nothing');
is(sql("SELECT summary FROM loop WHERE id = 2"), 'mine', 'the value the user gave is kept');
is(requests() - $n0, 0, 'and nothing is paid');

# ---- a call caught by an EXCEPTION block gives its cache entry back
$mock->fault({ status => 500 });
($rc, $out, $err) = $node->psql('postgres', q{
	SET statement_timeout = '10s';
	BEGIN;
	DO $$ BEGIN PERFORM claude_complete('caught once'); EXCEPTION WHEN others THEN NULL; END $$;
	SELECT claude_complete('caught once');
	COMMIT;});
is($rc, 0, 'after an EXCEPTION block caught a failed call, the same call in the transaction succeeds')
  or diag($err);
is($out, 'caught once', 'with its reply');

# ---- jobs of a prepared transaction
sql("CREATE DATABASE prepared_db");
sql("CREATE EXTENSION claude", 'prepared_db');
sql("CREATE TABLE p (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER f AFTER INSERT ON p FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('summary', 'P: {body}');",
	'prepared_db');
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'prepared_db' AND backend_type = 'claude db worker'") eq '0' }),
	'no database worker runs for the database');
sql("BEGIN; INSERT INTO p VALUES (1, 'prepared'); PREPARE TRANSACTION 'with_job';", 'prepared_db');
sleep 2;
sql("COMMIT PREPARED 'with_job'", 'prepared_db');
ok(wait_until(sub { sql("SELECT summary FROM p", 'prepared_db') eq 'P: prepared' }, 20),
	'the job of a prepared transaction runs after COMMIT PREPARED');

# ---- a malformed reply is never cached
$mock->fault({ body => '{"type":"message","content":"not an array","usage":{"input_tokens":1,"output_tokens":1}}' });
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('malformed once')");
like($err, qr/not a Messages response/, 'a reply whose content is no array fails the call');
sleep 1;
$n0 = requests();
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('malformed once')");
is($out, 'malformed once', 'the same call again gets a real reply, not one from the cache');
is(requests() - $n0, 1, 'because the malformed one was not stored');

# ---- arguments
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_cache_purge('-1 day')");
like($err, qr/older_than must not be negative/, 'claude_cache_purge of a negative interval is an error');
isnt(sql("SELECT count(*) FROM claude_cache"), '0', 'and deletes nothing');
for my $opt ('max_tokens=5abc', 'max_tokens=4294967297', 'max_tokens=-3', 'max_tokens=')
{
	($rc, $out, $err) = $node->psql('postgres', "CREATE TABLE o (id int PRIMARY KEY, a text, b text);
		CREATE TRIGGER t BEFORE INSERT ON o FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('b', '{a}', '$opt');
		INSERT INTO o VALUES (1, 'x');");
	like($err, qr/invalid option "\Q$opt\E"/, "trigger option $opt is refused");
	sql("DROP TABLE IF EXISTS o");
}

done_testing();
