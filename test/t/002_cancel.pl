# Every wait can be cancelled: query cancel, statement_timeout and
# pg_terminate_backend end a call at once, the worker aborts the transfer,
# and the request slot is reused.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
# few slots, so that a leaked slot would soon block every call
my $node = new_node('cancel', $mock, conf => "claude.max_requests = 3\n");

sub hung_call_in_background
{
	my $h = start_bg($node, "SELECT claude_complete('[[mock:hang]] ' || pg_backend_pid())");
	ok(wait_until(sub { $mock->stats->{concurrency} == 1 }), 'the request reached the mock');
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT claude_complete(''[[mock:hang]]%' AND pid <> pg_backend_pid()");
	return ($h, $pid);
}

# query cancel
for my $round (1 .. 4)
{
	my ($h, $pid) = hung_call_in_background();
	# the measured time includes starting the psql that sends the cancel
	my $t0 = time();
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
	my ($rc, $out, $err) = finish_bg($h);
	my $ms = (time() - $t0) * 1000;
	like($err, qr/canceling statement due to user request/, "round $round: cancel gives the usual error");
	cmp_ok($ms, '<', 2000, sprintf('round %d: the call ended %.0f ms after the cancel', $round, $ms));
	ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), "round $round: the worker aborted the transfer");
}

# statement_timeout, SQLSTATE 57014
my $t0 = time();
my ($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = 300; SELECT claude_complete('[[mock:hang]] timeout')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
my $ms = (time() - $t0) * 1000;
like($err, qr/57014: canceling statement due to statement timeout/, 'statement_timeout cancels with 57014');
cmp_ok($ms, '<', 2300, sprintf('statement_timeout of 300 ms ended the call after %.0f ms (psql included)', $ms));
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'the worker aborted the timed-out transfer');

# pg_terminate_backend
my ($h, $pid) = hung_call_in_background();
$t0 = time();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
($rc, $out, $err) = finish_bg($h);
$ms = (time() - $t0) * 1000;
like($err, qr/terminating connection due to administrator command/, 'pg_terminate_backend ends the session');
cmp_ok($ms, '<', 2000, sprintf('the session ended %.0f ms after pg_terminate_backend', $ms));
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'the worker aborted the transfer of the terminated session');

# claude.request_timeout bounds one attempt with an error of its own class
($rc, $out, $err) = $node->psql('postgres',
	"SET claude.request_timeout = 300; SET claude.max_retries = 0; SELECT claude_complete('[[mock:hang]] slow')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ZC408: Claude API request timed out/, 'claude.request_timeout raises ZC408');

# after all that, every one of the 3 slots is free again: 3 calls at once
my @bg = map { start_bg($node, "SELECT claude_complete('[[mock:delay=200]] after $_')") } 1 .. 3;
my $ok = 0;
for (@bg) { my ($r, $o) = finish_bg($_); $ok++ if $r == 0 && $o =~ /after/; }
is($ok, 3, 'all request slots were returned');
is($mock->stats->{max_concurrency} >= 1 ? 1 : 0, 1, 'the mock served them');

# more callers than slots: the extra ones wait for a slot, then succeed
@bg = map { start_bg($node, "SELECT claude_complete('[[mock:delay=100]] queue $_')") } 1 .. 10;
$ok = 0;
for (@bg) { my ($r, $o) = finish_bg($_); $ok++ if $r == 0 && $o =~ /queue/; }
is($ok, 10, '10 callers share 3 slots');

# a caller waiting for a free slot can be cancelled too
my @hung = map { start_bg($node, "SELECT claude_complete('[[mock:hang]] hog $_')") } 1 .. 3;
ok(wait_until(sub { $mock->stats->{concurrency} == 3 }), 'all 3 slots busy');
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = 300; SELECT claude_complete('no slot for me')");
like($err, qr/canceling statement due to statement timeout/, 'waiting for a slot is cancellable');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%[[mock:hang]] hog%' AND pid <> pg_backend_pid()");
finish_bg($_) for @hung;
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'hung transfers aborted');
is($node->safe_psql('postgres', "SELECT claude_complete('done')"), 'done', 'calls work afterwards');

$node->stop;
done_testing();
