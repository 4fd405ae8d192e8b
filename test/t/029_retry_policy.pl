# One retry policy: a direct call (retried by the HTTP worker) and a
# trigger's job (retried by its database worker) treat every failure the
# same way, x-should-retry and retry-after included (src/common/retry.c).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('retry_policy', $mock, conf => "claude.max_retries = 1\n");
sub sql { $node->safe_psql('postgres', $_[0]) }

sql(q{
	CREATE TABLE t (id int PRIMARY KEY, subject text, answer text);
	CREATE TRIGGER ask AFTER INSERT ON t FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('answer', 'Say: {subject}', 'max_tokens=20');});

# Whether a direct call retries a failure: one attempt fails, the next would succeed.
sub direct
{
	my ($fault, $n) = @_;
	$mock->reset;
	$mock->fault([ { %$fault, count => 1 } ]);
	my ($rc, $out) = $node->psql('postgres', "SELECT claude_complete('direct $n')");
	$mock->clear_faults;
	return $out eq "direct $n" ? 'retried' : 'not retried';
}

# Whether a job retries it: completed after a retry, or failed at once.
sub job
{
	my ($fault, $n) = @_;
	$mock->reset;
	$mock->fault([ { %$fault, count => 1 } ]);
	sql("INSERT INTO t VALUES ($n, 'job $n')");
	my $done = wait_until(sub {
		sql("SELECT count(*) FROM t WHERE id = $n AND answer IS NOT NULL") == 1
		  || sql("SELECT count(*) FROM claude_jobs WHERE pk->>'id' = '$n' AND status = 'failed'") == 1 }, 60);
	$mock->clear_faults;
	return 'timed out' unless $done;
	my $filled = sql("SELECT count(*) FROM t WHERE id = $n AND answer IS NOT NULL");
	sql("DELETE FROM claude_jobs WHERE pk->>'id' = '$n'");
	return $filled ? 'retried' : 'not retried';
}

my @cases = (
	[ 'a 400', { status => 400 }, 'not retried' ],
	[ 'a 401', { status => 401 }, 'not retried' ],
	[ 'a 404', { status => 404 }, 'not retried' ],
	[ 'a 408', { status => 408 }, 'retried' ],
	[ 'a 409', { status => 409 }, 'retried' ],
	[ 'a 413', { status => 413 }, 'not retried' ],
	[ 'a 422', { status => 422 }, 'not retried' ],
	[ 'a 429', { status => 429, retry_after_ms => 10 }, 'retried' ],
	[ 'a 500', { status => 500 }, 'retried' ],
	[ 'a 529', { status => 529 }, 'retried' ],
	[ 'a connection reset', { reset => \1 }, 'retried' ],
	[ 'a 529 with x-should-retry: false', { status => 529, should_retry => 'false' }, 'not retried' ],
	[ 'a 422 with x-should-retry: true', { status => 422, should_retry => 'true' }, 'retried' ],
	[ 'a 400 with x-should-retry: true', { status => 400, should_retry => 'true' }, 'not retried' ],
);
my $n = 0;
for my $c (@cases)
{
	my ($what, $fault, $want) = @$c;
	$n++;
	is(direct($fault, $n), $want, "$what: a direct call");
	is(job($fault, $n), $want, "$what: a job, the same");
}

# a job waits what the server's retry-after says, as a direct call does
$mock->reset;
$mock->fault([ { status => 503, retry_after => '40', count => 1 } ]);
sql("INSERT INTO t VALUES (1000, 'later')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE last_error IS NOT NULL") == 1 }, 60),
	'a job answered 503 with retry-after: 40 is queued again');
cmp_ok(sql("SELECT extract(epoch FROM next_attempt_at - updated_at) FROM claude_jobs"), '>=', 35,
	'for when the server said, not its own backoff');
sql("DELETE FROM claude_jobs");

$mock->stop;
done_testing();
