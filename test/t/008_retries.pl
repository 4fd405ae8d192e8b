# Retries: which failures are retried, how often, how long apart, and that
# a wait for a retry can be cancelled.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('retries', $mock);

sub call
{
	my ($sql, $settings) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', ($settings // '') . $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}

# 529, 429, 500 and a reset in a row, then success: exactly 4 retries.
# retry-after-ms keeps the test fast; the backoff itself is tested below
$mock->reset;
$mock->fault([
	{ status => 529, retry_after_ms => 50 },
	{ status => 429, retry_after_ms => 50 },
	{ status => 500, retry_after_ms => 50 },
	{ reset => \1 } ]);
my ($out, $err) = call("SELECT claude_complete('survives')", 'SET claude.max_retries = 4;');
is($out, 'survives', 'the call succeeds after 529, 429, 500 and a reset');
is($mock->stats->{requests}, 5, 'after exactly 4 retries');

# a 400 is tried once
$mock->reset;
$mock->fault({ status => 400 });
($out, $err) = call("SELECT claude_complete('bad')");
like($err, qr/ZC400: Claude API error 400 invalid_request_error/, 'a 400 fails');
is($mock->stats->{requests}, 1, 'and is not retried');
for my $status (401, 403, 404, 413)
{
	$mock->reset;
	$mock->fault({ status => $status, retry_after_ms => 10 });
	call("SELECT claude_complete('not retried')");
	is($mock->stats->{requests}, 1, "a $status is not retried");
}
for my $status (408, 409, 502, 503, 504)
{
	$mock->reset;
	$mock->fault({ status => $status, retry_after_ms => 10 });
	($out) = call("SELECT claude_complete('retried')");
	is($mock->stats->{requests} . " $out", '2 retried', "a $status is retried");
}

# claude.max_retries bounds the attempts; the error names the last type
$mock->reset;
$mock->fault({ status => 529, retry_after_ms => 10, count => 10 });
($out, $err) = call("SELECT claude_complete('overloaded')", 'SET claude.max_retries = 2;');
like($err, qr/ZC500: Claude API error 529 overloaded_error/, 'after the last attempt the error names overloaded_error');
like($err, qr/attempts: 3/, 'and says how many attempts were made');
is($mock->stats->{requests}, 3, 'claude.max_retries = 2 means 3 attempts');
$mock->clear_faults;

$mock->reset;
$mock->fault({ status => 529, count => 3 });
($out, $err) = call("SELECT claude_complete('no retries')", 'SET claude.max_retries = 0;');
is($mock->stats->{requests}, 1, 'claude.max_retries = 0: one attempt');
$mock->clear_faults;

# x-should-retry overrides the status
$mock->reset;
$mock->fault({ status => 529, should_retry => 'false' });
call("SELECT claude_complete('should not')");
is($mock->stats->{requests}, 1, 'x-should-retry: false stops a retry');

# retry-after: 2 delays the next attempt by at least 2 s
$mock->reset;
$mock->fault({ status => 429, retry_after => '2' });
($out) = call("SELECT claude_complete('after two')");
my $r = $mock->requests(0);
is($out, 'after two', 'a 429 with retry-after: 2 is retried');
my $gap = $r->[1]{t_start} - $r->[0]{t_end};
cmp_ok($gap, '>=', 1990, sprintf('retry-after: 2 waited %.0f ms', $gap));

# an HTTP date in retry-after
$mock->reset;
my @t = gmtime(time() + 3);
my $date = sprintf('%s, %02d %s %d %02d:%02d:%02d GMT', (qw(Sun Mon Tue Wed Thu Fri Sat))[$t[6]],
	$t[3], (qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec))[$t[4]], $t[5] + 1900, @t[2, 1, 0]);
$mock->fault({ status => 503, retry_after => $date });
($out) = call("SELECT claude_complete('after a date')");
$r = $mock->requests(0);
$gap = $r->[1]{t_start} - $r->[0]{t_end};
cmp_ok($gap, '>=', 1000, sprintf('retry-after as an HTTP date waited %.0f ms', $gap));

# without retry-after: exponential backoff 0.5, 1, 2 s less up to 25% jitter
$mock->reset;
$mock->fault({ status => 500, count => 3 });
($out) = call("SELECT claude_complete('backoff')");
$r = $mock->requests(0);
is($out, 'backoff', 'succeeds after three 500s');
my @gaps = map { $r->[$_]{t_start} - $r->[ $_ - 1 ]{t_end} } 1 .. 3;
for my $i (0 .. 2)
{
	my $base = 500 * 2**$i;
	cmp_ok($gaps[$i], '>=', $base * 0.75 - 5, sprintf('backoff %d: %.0f ms >= %.0f', $i + 1, $gaps[$i], $base * 0.75));
	cmp_ok($gaps[$i], '<', $base + 500, sprintf('backoff %d: %.0f ms, not much more than %d', $i + 1, $gaps[$i], $base));
}

# timeouts are retried
$mock->reset;
$mock->fault({ hang => \1 });
($out) = call("SELECT claude_complete('slow then fine')", 'SET claude.request_timeout = 300;');
is($out, 'slow then fine', 'a timed-out attempt is retried');

# cancel during the backoff returns at once and sends nothing more
$mock->reset;
$mock->fault({ status => 429, retry_after => '30' });
my $bg = start_bg($node, "SELECT claude_complete('cancel me')");
ok(wait_until(sub { $mock->stats->{requests} == 1 && $mock->stats->{concurrency} == 0 }),
	'the first attempt failed');
usleep_ms(200);
my ($rc, $o, $e, $ms) = cancel_bg($node, $bg, 'cancel me');
like($e, qr/canceling statement due to user request/, 'cancel during the backoff');
cmp_ok($ms, '<', 2000, sprintf('returned %.0f ms after the cancel', $ms));
# the 429 paused everything for 30 s: a new call is held, then cancelled
($rc, $o, $e) = $node->psql('postgres', "SET statement_timeout = 500; SELECT claude_complete('held by the pause')");
like($e, qr/statement timeout/, 'the 429 pause holds other calls too');
is($mock->stats->{requests}, 1, 'no request was sent after the cancel');

$node->stop;
done_testing();

sub usleep_ms { Time::HiRes::usleep($_[0] * 1000) }
