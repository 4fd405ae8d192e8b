# Triggers: BEFORE fills the row at once; AFTER queues a durable job that
# a per-database worker completes after the INSERT commits, across
# crashes, with retries, failures a person can see, and claude_jobs_retry.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('triggers', $mock,
	conf => "claude.max_connections = 4\nclaude.max_retries = 2\nrestart_after_crash = on\n");
sub requests { $mock->stats->{requests} }
sub sql { $node->safe_psql('postgres', $_[0]) }
sub all_filled
{
	my ($table, $n) = @_;
	return wait_until(sub { sql("SELECT count(category) FROM $table") == $n }, 60);
}

sql(q{
	CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
	CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', '[[mock:delay=400]] Classify: {subject}', 'max_tokens=20');
	CREATE TABLE notes (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER summarize BEFORE INSERT OR UPDATE ON notes FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Sum: {body}', 'system=Be brief');});

# BEFORE: filled synchronously
is(sql("INSERT INTO notes VALUES (1, 'hello') RETURNING summary"), 'Sum: hello', 'a BEFORE trigger fills the row in the INSERT');
is(sql("UPDATE notes SET body = 'bye' WHERE id = 1 RETURNING summary"), 'Sum: bye', 'and in an UPDATE');

# BEFORE: a reply that is not a Message fails the statement with the
# request's request-id in DETAIL, as claude_complete's does
$mock->reset;
$mock->fault({ body => '{"type":"message","content":"not an array","usage":{"input_tokens":1,"output_tokens":1}}' });
my (undef, undef, $bad_reply) = $node->psql('postgres', "INSERT INTO notes VALUES (2, 'not a message')");
like($bad_reply, qr/not a Messages response.*DETAIL:\s+HTTP status 200, request-id: req_mock_\d+/s,
	'a BEFORE trigger given a bad reply says which request it was') or diag($bad_reply);
is(sql("SELECT count(*) FROM notes WHERE id = 2"), '0', 'and the row is not inserted');

# AFTER: the INSERT does not wait for the API
$mock->reset;
my $t0 = time();
sql("INSERT INTO tickets SELECT i, 'ticket ' || i FROM generate_series(1, 20) i");
my $took = time() - $t0;
cmp_ok($took, '<', 0.4, sprintf('an INSERT of 20 rows returned in %.3f s with a 400 ms API', $took));
ok(all_filled('tickets', 20), 'the worker completed every job');
is(sql("SELECT category FROM tickets WHERE id = 7"), '[[mock:delay=400]] Classify: ticket 7', 'with the reply');
is(sql("SELECT count(*) FROM claude_jobs"), '0', 'done jobs are removed');
is(requests(), 20, 'one request per row, none twice');

# ROLLBACK leaves no job
$mock->reset;
sql("BEGIN; INSERT INTO tickets VALUES (100, 'rolled back'); ROLLBACK;");
sleep(1);
is(sql("SELECT count(*) FROM claude_jobs"), '0', 'a rolled-back INSERT leaves no job');
is(requests(), 0, 'and sends nothing');

# a job whose row is gone finishes quietly
sql("BEGIN; INSERT INTO tickets VALUES (101, 'deleted soon'); COMMIT; DELETE FROM tickets WHERE id = 101;");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs") == 0 }), 'the job of a deleted row finished');

# retryable failures back off; after claude.max_retries retries: failed
$mock->reset;
$mock->fault({ status => 529, count => 3 });
sql("INSERT INTO tickets VALUES (200, 'overloaded')");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs") eq 'failed' }, 30), 'a job that keeps failing ends failed');
is(sql("SELECT attempts FROM claude_jobs"), '3', 'after exactly 1 + claude.max_retries attempts');
is(requests(), 3, 'the mock saw each attempt once');
like(sql("SELECT last_error FROM claude_jobs"), qr/overloaded_error/, 'with the last error visible');
my @starts = map { $_->{t_start} } @{ $mock->requests(0) };
cmp_ok($starts[2] - $starts[1], '>=', 1500, 'with a growing backoff between attempts');
is(sql("SELECT claude_jobs_retry()"), '1', 'claude_jobs_retry() requeues it');
ok(all_filled('tickets WHERE id = 200 AND true', 1), 'and then it completes');

# a permanent error is not retried
$mock->reset;
$mock->fault({ status => 400 });
sql("INSERT INTO tickets VALUES (201, 'bad request')");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE pk->>'id' = '201'") eq 'failed' }), 'a 400 fails the job');
is(sql("SELECT attempts FROM claude_jobs WHERE pk->>'id' = '201'"), '1', 'at once');
sql("DELETE FROM claude_jobs");

# jobs survive an immediate shutdown with requests in flight
$mock->reset;
sql("INSERT INTO tickets SELECT i, 'crash ' || i FROM generate_series(1000, 1099) i");
ok(wait_until(sub { requests() >= 8 }), 'requests are in flight');
$node->stop('immediate');
$node->start;
ok(all_filled('tickets WHERE id >= 1000 AND true', 100), 'after the restart every row is filled');
is(sql("SELECT count(*) FROM claude_jobs"), '0', 'and nothing is left queued');

# a plain role inserts; it sees no job but its own (042_jobs_manage.pl)
sql(q{CREATE ROLE clerk LOGIN; GRANT INSERT, SELECT ON tickets TO clerk;});
sql("SET ROLE clerk; INSERT INTO tickets VALUES (300, 'from clerk')");
is(sql("SET ROLE clerk; SELECT count(*) FROM claude_jobs WHERE role <> 'clerk'::regrole"), '0',
	'PUBLIC reads no job it does not pay for');
my ($rc, $out, $err);
ok(all_filled('tickets WHERE id = 300 AND true', 1), 'the plain role\'s row is filled');

# a second database works at the same time
sql("CREATE DATABASE other");
$node->safe_psql('other', q{
	CREATE EXTENSION claude;
	CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
	CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', 'Other: {subject}');});
$node->safe_psql('other', "INSERT INTO tickets SELECT i, 'o' || i FROM generate_series(1, 10) i");
sql("INSERT INTO tickets SELECT i, 'p' || i FROM generate_series(2000, 2009) i");
ok(wait_until(sub { $node->safe_psql('other', "SELECT count(category) FROM tickets") == 10 }),
	'the other database completes its jobs');
ok(all_filled('tickets WHERE id >= 2000 AND id < 2010 AND true', 10), 'and so does this one');

# a cache write that fails in the database worker (here: a constraint)
# does not lose the job requests it has in flight
sql("ALTER TABLE claude_cache ADD CONSTRAINT no_writes CHECK (model IS NULL) NOT VALID");
$mock->reset;
sql("INSERT INTO tickets SELECT i, 'busy ' || i FROM generate_series(3000, 3039) i");
ok(wait_until(sub { requests() >= 4 }), 'jobs are in flight');
sql("SET claude.cache = on; SELECT claude_complete('cached in the worker, which fails')");
ok(all_filled('tickets WHERE id >= 3000 AND id < 3040 AND true', 40), 'every job still completes');
is(sql("SELECT count(*) FROM claude_jobs"), '0', 'none is left behind');
sql("ALTER TABLE claude_cache DROP CONSTRAINT no_writes");

# the write-back's prepared UPDATE is kept across transactions, but not
# past a change of the table: a key column of another type needs another
# statement
sql(q{CREATE TABLE rekeyed (id int PRIMARY KEY, subject text, category text);
	CREATE TRIGGER fill AFTER INSERT ON rekeyed FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', 'Rekey {subject}')});
sql("INSERT INTO rekeyed VALUES (1, 'first')");
ok(wait_until(sub { sql("SELECT category FROM rekeyed WHERE id = 1") ne '' }, 30), 'a job wrote back');
sql("INSERT INTO rekeyed VALUES (2, 'second')");
ok(wait_until(sub { sql("SELECT category FROM rekeyed WHERE id = 2") ne '' }, 30), 'and the next, with the same statement');
sql("ALTER TABLE rekeyed ALTER COLUMN id TYPE text USING 'k' || id");
sql("INSERT INTO rekeyed VALUES ('k3', 'third')");
ok(wait_until(sub { sql("SELECT category FROM rekeyed WHERE id = 'k3'") ne '' }, 30),
	'after the key column became text, the next job writes back too');
is(sql("SELECT count(*) FROM claude_jobs WHERE relid = 'rekeyed'::regclass"), '0', 'and none failed or is left');

# bad trigger arguments are clear errors, as the trigger is created
sql(q{CREATE TABLE bad (id int PRIMARY KEY, a text, b text)});
for my $case (
	[ "claude_enrich_trigger('b')", qr/needs a target column and a prompt template/ ],
	[ "claude_enrich_trigger('nope', '{a}')", qr/column "nope" of table bad does not exist/ ],
	[ "claude_enrich_trigger('b', '{zzz}')", qr/names column "zzz"/ ],
	[ "claude_enrich_trigger('b', '{a}', 'temperature=1')", qr/invalid option "temperature=1"/ ],
	[ "claude_enrich_trigger('b', '{a}', 'max_tokens=0')", qr/invalid option "max_tokens=0"/ ])
{
	my ($args, $re) = @$case;
	($rc, $out, $err) = $node->psql('postgres',
		"CREATE TRIGGER t AFTER INSERT ON bad FOR EACH ROW EXECUTE FUNCTION $args");
	like($err, $re, "$args is refused");
}
is(sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bad'::regclass"), '0', 'and no such trigger exists');

$node->stop;
done_testing();
