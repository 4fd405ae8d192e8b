# The API as it is today (issue 27): a billing_error, whatever its HTTP
# status, is not retried, pauses nobody else and raises ZC4B2 with a hint;
# a trigger's job that meets it waits, its attempt not counted, until it is
# released; output_config.effort passes through claude_messages; the
# spec's models have list prices.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('billing', $mock, conf => "claude.max_retries = 2\n");
sub sql { $node->safe_psql('postgres', $_[0]) }

my $complete = 'claude_complete(text, text, int, text, float8, boolean)';
sql(qq{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	GRANT EXECUTE ON FUNCTION $complete TO alice, bob;
	GRANT EXECUTE ON FUNCTION claude_messages(jsonb, boolean) TO alice;
	CREATE TABLE t (id int PRIMARY KEY, subject text, answer text);
	GRANT INSERT ON t TO alice;
	CREATE TRIGGER ask AFTER INSERT ON t FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('answer', 'Say: {subject}', 'max_tokens=20');});

# (exit code, stdout, SQLSTATE, stderr) of $q run by $role
sub as_role
{
	my ($role, $q) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $q,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	my $state = $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
	return ($rc, $out, $state, $err);
}

# the Messages requests the mock got whose last message contains $marker
sub attempts
{
	my ($marker) = @_;
	return scalar grep {
		$_->{path} eq '/v1/messages' && ref $_->{body} eq 'HASH'
		  && ($_->{body}{messages}[-1]{content} // '') =~ /\Q$marker\E/
	} @{ $mock->requests };
}

sub stats { sql("SELECT retries || ',' || rate_limited || ',' || throttled FROM claude_stats") }

# ---- a billing_error is not retried, is its own error, pauses nobody
for my $status (400, 402, 403, 429)
{
	$mock->reset;
	sql('SELECT claude_stats_reset()');
	my ($rc, $out, $state, $err) = as_role('alice', "SELECT claude_complete('[[mock:billing=$status]] pay $status')");
	is($state, 'ZC4B2', "a billing_error with status $status raises ZC4B2");
	like($err, qr/billing error \(HTTP $status billing_error\): Your credit balance is too low/,
		"its message names billing ($status)");
	like($err, qr/HINT:\s+Check the plan, credit balance and spend limits .* Anthropic Console; retrying with the same key will not succeed/,
		"its hint says where to look ($status)");
	is(attempts("pay $status"), 1, "it is sent once, not retried ($status), despite x-should-retry and retry-after");
	# another role right after: served, not held back by any pause
	($rc, $out) = as_role('bob', "SELECT claude_complete('bob after $status')");
	is($out, "bob after $status", "another role's request then succeeds ($status)");
	is(attempts("bob after $status"), 1, "at its first attempt ($status)");
	is(stats(), '0,0,0', "no retry, no rate limit counted, nobody throttled by a pause ($status)");
}

# the same error as a stream's error event (a streamed call)
$mock->reset;
my ($rc, $out, $state, $err) = as_role('alice',
	"SET claude.stream_min_tokens = 10; SELECT claude_complete('[[mock:stream_error=billing_error\@0]] streamed', max_tokens => 100)");
is($state, 'ZC4B2', 'a billing_error event of a stream raises ZC4B2');
is(attempts('streamed'), 1, 'and is not retried');

# concurrent: while alice meets billing_error, bob's call in flight goes on
$mock->reset;
sql('SELECT claude_stats_reset()');
my $bg = start_bg($node, "SELECT claude_complete('[[mock:delay=300]] bob meanwhile')");
($rc, $out, $state) = as_role('alice', "SELECT claude_complete('[[mock:billing=429]] pay again')");
is($state, 'ZC4B2', 'a 429 billing_error during another call');
my ($bgrc, $bgout) = finish_bg($bg);
is($bgout, '[[mock:delay=300]] bob meanwhile', 'the call in flight succeeds');
is(attempts('bob meanwhile'), 1, 'at its first attempt');
is(stats(), '0,0,0', 'and nothing was retried, rate limited or throttled');

# a server's text that says billing_error is not a billing_error
$mock->reset;
$mock->fault({ status => 400, error_type => 'invalid_request_error', message => 'x billing_error: y', count => 1 });
($rc, $out, $state) = as_role('alice', "SELECT claude_complete('not billing')");
is($state, 'ZC400', 'an invalid_request_error whose message says billing_error stays ZC400');

# ---- a job that meets billing_error waits, its attempt not counted
sub job_row { sql("SELECT status || ',' || attempts FROM claude_jobs WHERE pk->>'id' = '$_[0]'") }

$mock->reset;
$mock->fault({ status => 429, error_type => 'billing_error', should_retry => 'true', retry_after => 1, count => 1 });
as_role('alice', "INSERT INTO t VALUES (1, 'first job')");
ok(wait_until(sub { job_row(1) eq 'waiting,0' }), 'a job refused with a 429 billing_error waits, attempts 0');
like(sql("SELECT last_error FROM claude_jobs WHERE pk->>'id' = '1'"), qr/billing error \(HTTP 429 billing_error\)/,
	'saying why');
is(attempts('first job'), 1, 'it was sent once');
is(sql("SELECT next_attempt_at > now() + interval '4 minutes' FROM claude_jobs WHERE pk->>'id' = '1'"), 't',
	'its next look is five minutes away (each look is a request)');
is(sql("SELECT rate_limited FROM claude_stats"), '0', 'not counted as a rate limit');
# the credits are topped up (the fault is used); an admin releases it
is(sql('SELECT claude_jobs_retry()'), '1', 'claude_jobs_retry() releases the waiting job');
ok(wait_until(sub { sql("SELECT answer FROM t WHERE id = 1") eq 'Say: first job' }), 'which then runs');
is(sql("SELECT count(*) FROM claude_jobs"), '0', 'and is done');

# released by a reload of the settings (a new key, say)
$mock->fault({ status => 402, error_type => 'billing_error', count => 1 });
as_role('alice', "INSERT INTO t VALUES (2, 'second job')");
ok(wait_until(sub { job_row(2) eq 'waiting,0' }), 'a job refused with a 402 billing_error waits');
sql('SELECT pg_reload_conf()');
ok(wait_until(sub { sql("SELECT answer FROM t WHERE id = 2") eq 'Say: second job' }),
	'a reload of the settings releases it');

# a failure whose text says billing_error fails the job as any 400 does
$mock->fault({ status => 400, error_type => 'invalid_request_error', message => 'x billing_error: y', count => 1 });
as_role('alice', "INSERT INTO t VALUES (3, 'third job')");
ok(wait_until(sub { job_row(3) eq 'failed,1' }), 'a job whose 400 merely mentions billing_error fails');

# ---- output_config.effort reaches the wire unchanged
$mock->reset;
for my $effort (qw(low medium high))
{
	($rc, $out, $state, $err) = as_role('alice', qq{SELECT claude_messages('{"messages": [{"role": "user", "content": "effort $effort"}],
		"output_config": {"effort": "$effort"}}') ? 'content'});
	is($out, 't', "claude_messages with effort $effort") or diag($err);
	my ($rec) = grep { ($_->{body}{messages}[-1]{content} // '') eq "effort $effort" } @{ $mock->requests };
	is_deeply($rec && $rec->{body}{output_config}, { effort => $effort }, "output_config.effort $effort sent as it was");
}

# ---- list prices: every model of the spec's Model list has one, but
# claude-mythos-preview (no published price known here)
my @models = qw(claude-opus-4-7 claude-opus-4-6 claude-sonnet-4-6 claude-haiku-4-5
  claude-haiku-4-5-20251001 claude-opus-4-5 claude-opus-4-5-20251101 claude-sonnet-4-5
  claude-sonnet-4-5-20250929 claude-opus-4-1 claude-opus-4-1-20250805 claude-opus-4-0
  claude-opus-4-20250514 claude-sonnet-4-0 claude-sonnet-4-20250514 claude-3-haiku-20240307);
for my $m (@models)
{
	is(sql("SELECT claude_cost_usd('$m', '{\"input_tokens\": 1000000}') IS NOT NULL"), 't', "$m has a price");
}
is(sql("SELECT string_agg(model || '=' || input_usd_per_mtok || '/' || output_usd_per_mtok, ' ' ORDER BY model)
	FROM claude_list_prices WHERE model IN ('claude-sonnet-4-6', 'claude-sonnet-4-5')"),
	'claude-sonnet-4-5=3/15 claude-sonnet-4-6=3/15', 'Sonnet 4.6 and 4.5 are listed');
is(sql("SELECT count(*) FROM claude_prices WHERE model IN ('claude-sonnet-4-6', 'claude-sonnet-4-5')"), '2',
	'and shown in claude_prices');
is(sql("SELECT claude_cost_usd('claude-mythos-preview', '{\"input_tokens\": 1}') IS NULL"), 't',
	'a model without a list price costs NULL');
# an admin adds one
sql("INSERT INTO claude_prices VALUES ('claude-mythos-preview', 25, 125, '2026-12-01')");
is(sql("SELECT claude_cost_usd('claude-mythos-preview', '{\"input_tokens\": 1000000}') = 25"), 't',
	'an admin adds a price through claude_prices');

$node->stop;
$mock->stop;
done_testing();
