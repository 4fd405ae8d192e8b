# Jobs a role can manage (issue 29): a plain table owner sees its jobs and
# those others pay for on its tables, retries only the ones it pays for,
# with filters, and may cancel them; another role (the database's owner
# too) sees none, cannot retry, cancel, forge or change them, nor use the
# sequence.  A newer job of a row and column supersedes the older ones,
# which are never sent again.  Jobs record sqlstate, http_status and
# request_id.  A job its budget refuses waits, its attempt not counted,
# rechecked by the next UTC day at the latest, and runs on the next day
# (a faked clock: CLAUDE_TEST_CLOCK_FILE).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $clock = PostgreSQL::Test::Utils::tempdir() . '/clock';
$ENV{CLAUDE_TEST_CLOCK_FILE} = $clock;
my $node = new_node('jobs_manage', $mock, conf => "claude.max_retries = 0\n");
delete $ENV{CLAUDE_TEST_CLOCK_FILE};

sub sql { $node->safe_psql('d', $_[0]) }

# (exit code, stdout, stderr) of $q run by $role in database d
sub as_role
{
	my ($role, $q) = @_;
	return $node->psql('d', $q, extra_params => [ '-U', $role ]);
}
sub as { my ($rc, $out, $err) = as_role(@_); die "$_[0]: $err" if $rc; return $out }
sub messages { $mock->stats->{by_path}{'/v1/messages'} // 0 }
sub jobs { sql("SELECT string_agg(pk->>'id' || ':' || status, ',' ORDER BY (pk->>'id')::int, id) FROM claude_jobs") }

$node->safe_psql('postgres', q{
	CREATE ROLE tabowner LOGIN;
	CREATE ROLE clerk LOGIN;
	CREATE ROLE other LOGIN;
	CREATE ROLE dbo LOGIN;
	CREATE DATABASE d OWNER dbo;});
sql(q{CREATE EXTENSION claude;
	GRANT CREATE ON SCHEMA public TO tabowner;
	GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO tabowner;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO tabowner;});
as('tabowner', q{
	CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER fill AFTER INSERT OR UPDATE ON docs FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Sum: {body}', 'max_tokens=20');
	GRANT INSERT, SELECT ON docs TO clerk;});

# ---- a failure's sqlstate, http_status and request_id
$mock->fault({ status => 500, count => 1 });
as('tabowner', "INSERT INTO docs (id, body) VALUES (1, 'five hundred')");
ok(wait_until(sub { jobs() eq '1:failed' }), 'a job that met a 500 failed');
my ($last) = grep { $_->{path} eq '/v1/messages' } reverse @{ $mock->requests };
is(sql("SELECT concat_ws(',', sqlstate, http_status, request_id) FROM claude_jobs"),
	"ZC500,500,req_mock_$last->{n}", 'with its sqlstate, HTTP status and the request-id of the reply');

# ---- who sees, retries, cancels, forges
$mock->fault({ status => 400, message => 'clerk fails', count => 1 });
as('clerk', "INSERT INTO docs (id, body) VALUES (2, 'by the clerk')");
ok(wait_until(sub { jobs() eq '1:failed,2:failed' }), "the clerk's job failed too");
is(as('tabowner', "SELECT string_agg(pk->>'id', ',' ORDER BY id) FROM claude_jobs"), '1,2',
	'the table owner sees its job and the one the clerk pays for on its table');
is(as('clerk', "SELECT string_agg(pk->>'id' || ':' || sqlstate, ',') FROM claude_jobs"), '2:ZC400',
	'the clerk sees only the job it pays for');
for my $role ('other', 'dbo')
{
	is(as($role, 'SELECT count(*) FROM claude_jobs'), '0', "$role sees no job");
	is(as($role, 'SELECT claude_jobs_retry()'), '0', "$role retries none");
	is(as($role, 'DELETE FROM claude_jobs'), '', "$role may delete");
	my ($rc, $out, $err) = as_role($role, q{INSERT INTO claude_jobs (relid, pk, target_column, request, role)
		VALUES ('docs', '{"id": "1"}', 'summary', '{"model": "m", "max_tokens": 5, "messages": []}', 'tabowner')});
	like($err, qr/permission denied for table claude_jobs/, "$role may not forge a job");
	($rc, $out, $err) = as_role($role, "UPDATE claude_jobs SET role = '$role', status = 'queued'");
	like($err, qr/permission denied for table claude_jobs/, "$role may not change one");
	($rc, $out, $err) = as_role($role, "SELECT nextval('claude_jobs_id_seq')");
	like($err, qr/permission denied for sequence claude_jobs_id_seq/, "$role may not use the sequence");
}
is(jobs(), '1:failed,2:failed', "and nobody else's DELETE cancelled a job");
is(as('tabowner', 'SELECT claude_jobs_retry(relation => \'pg_class\')'), '0', 'a filter on another table moves none');
my $before = messages();
is(as('tabowner', 'SELECT claude_jobs_retry()'), '1', "the owner retries its own job, not the clerk's");
ok(wait_until(sub { jobs() eq '2:failed' }), 'which is done');
is(messages() - $before, 1, 'in one request');
is(as('clerk', 'DELETE FROM claude_jobs RETURNING pk->>\'id\''), '2', 'the clerk cancels its failed job');
is(jobs(), '', 'gone');

# ---- superseded jobs are never sent; the filters of claude_jobs_retry
$mock->fault({ status => 400, message => 'alpha', count => 4 });
as('tabowner', "INSERT INTO docs (id, body) SELECT i, 'doc ' || i FROM generate_series(10, 13) i");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'") eq '4' }), '4 jobs failed');
$mock->fault({ status => 400, message => 'beta', count => 4 });
as('tabowner', "INSERT INTO docs (id, body) SELECT i, 'doc ' || i FROM generate_series(14, 17) i");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'") eq '8' }), '8 jobs failed');
# three rows change: their new jobs supersede the failed ones, and fail too
$mock->fault({ status => 400, message => 'gamma', count => 3 });
as('tabowner', "UPDATE docs SET body = body || ' again' WHERE id IN (10, 14, 15)");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'") eq '8' }), 'their new jobs failed');
is(jobs(), '10:superseded,10:failed,11:failed,12:failed,13:failed,14:superseded,14:failed,'
	. '15:superseded,15:failed,16:failed,17:failed', 'the older jobs of the changed rows are superseded');
$before = messages();
is(as('tabowner', "SELECT claude_jobs_retry(error_like => '%beta%')"), '2', 'error_like: the two live beta jobs');
ok(wait_until(sub { sql("SELECT count(*) FROM docs WHERE id IN (16, 17) AND summary IS NOT NULL") eq '2' }),
	'are done');
is(as('tabowner', "SELECT claude_jobs_retry(older_than => '1 hour')"), '0', 'older_than: none failed an hour ago');
sql("UPDATE claude_jobs SET updated_at = now() - interval '2 hours' WHERE pk->>'id' = '11'");
is(as('tabowner', "SELECT claude_jobs_retry(relation => 'docs', older_than => '1 hour', error_like => 'Claude API error 400%')"),
	'1', 'all three filters: the one that failed two hours ago');
# a job the trigger could not mark (the worker held it at that instant):
# the claim and claude_jobs_retry find the newer job and supersede it
sql("UPDATE claude_jobs SET status = 'queued' WHERE pk->>'id' = '14' AND status = 'superseded'");
sql("UPDATE claude_jobs SET status = 'failed' WHERE pk->>'id' = '10' AND status = 'superseded'");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE pk->>'id' = '14' ORDER BY id LIMIT 1") eq 'superseded' }),
	'the worker does not send a queued job a newer one replaced');
is(as('tabowner', "BEGIN; SELECT claude_jobs_retry(); "
	. "SELECT status FROM claude_jobs WHERE pk->>'id' = '10' ORDER BY id LIMIT 1; COMMIT"), "5\nsuperseded",
	'claude_jobs_retry retries the 5 others, not a failed job a newer one replaced');
ok(wait_until(sub { sql("SELECT count(*) FROM docs WHERE id BETWEEN 10 AND 17 AND summary IS NOT NULL") eq '8' }),
	'every row is filled');
ok(wait_until(sub { jobs() eq '' }), 'and the superseded jobs went with the jobs that superseded them');
is(messages() - $before, 8, '8 requests for 8 live failed jobs, none for the 3 superseded ones');
is(sql("SELECT summary FROM docs WHERE id = 14"), 'Sum: doc 14 again', 'a changed row has the reply to its new text');

# ---- a job its budget refuses waits, and runs on the next UTC day
my $day = 86400;
my $midnight = (int(time() / $day) + 2) * $day;    # the end of tomorrow
sub set_clock
{
	my ($fake) = @_;
	open my $fh, '>', "$clock.tmp" or die;
	print $fh int($fake - time()), "\n";
	close $fh;
	rename "$clock.tmp", $clock or die;
}
set_clock($midnight - 3600);
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('tabowner', 2)");
# the clock is read once a second: spend until the budget of the fake day refuses
my $spent = 0;
ok(wait_until(sub {
	my ($rc, $out, $err) = as_role('tabowner', "SELECT claude_complete('spend " . $spent++ . "')");
	return $err =~ /daily budget/;
}), 'tabowner spends its budget of the (fake) day');
as('tabowner', "INSERT INTO docs (id, body) VALUES (20, 'next day')");
ok(wait_until(sub { jobs() eq '20:waiting' }), 'its job waits');
is(sql("SELECT concat_ws(',', attempts, sqlstate, http_status, last_error ~ 'daily budget of role tabowner') "
	. "FROM claude_jobs"), '0,ZC402,t', 'its attempt not counted, with ZC402 and why');
ok(sql("SELECT next_attempt_at <= now() + interval '61 seconds' FROM claude_jobs") eq 't',
	'looked at again within a minute');
# 20 seconds before the fake midnight: the next look is then, not a minute on
set_clock($midnight - 20);
ok(wait_until(sub {
	as('tabowner', 'SELECT claude_jobs_retry()');
	sql("SELECT status = 'waiting' AND next_attempt_at < now() + interval '21 seconds' FROM claude_jobs") eq 't';
}), 'a job refused 20 s before the UTC day ends is looked at again when it does');
is(sql("SELECT summary FROM docs WHERE id = 20"), '', 'not filled yet');
set_clock($midnight + 5);
ok(wait_until(sub { sql("SELECT summary FROM docs WHERE id = 20") eq 'Sum: next day' }),
	'past midnight the job runs and fills its row');
is(jobs(), '', 'and is done');

done_testing();
