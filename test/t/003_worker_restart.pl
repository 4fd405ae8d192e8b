# A dead HTTP worker never leaves callers hanging: they get an error, the
# postmaster starts a new worker, and calls work again.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('restart', $mock, conf => "restart_after_crash = on\n");

is($node->safe_psql('postgres', "SELECT claude_complete('before')"), 'before', 'calls work');

# SIGTERM: the worker exits with code 1 and is restarted alone
my $h = start_bg($node, "SELECT claude_complete('[[mock:hang]] in flight')");
ok(wait_until(sub { $mock->stats->{concurrency} == 1 }), 'a request is in flight');
my $old = worker_pid($node);
kill 'TERM', $old;
my ($rc, $out, $err) = finish_bg($h);
isnt($rc, 0, 'the waiting caller fails');
like($err, qr/claude HTTP worker failure: the HTTP worker exited while the request was in flight/,
	'with an error that names the worker');
my $new = wait_for_worker($node, $old);
isnt($new, $old, "a new worker runs (pid $new)");
is($node->safe_psql('postgres', "SELECT claude_complete('after term')"), 'after term', 'calls work again');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"),
	'1', 'no other session was disturbed: the postmaster restarted only the worker');

# pg_terminate_backend on the worker works the same way
$h = start_bg($node, "SELECT claude_complete('[[mock:hang]] in flight 2')");
ok(wait_until(sub { $mock->stats->{concurrency} >= 1 }), 'a request is in flight');
$old = worker_pid($node);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old)");
($rc, $out, $err) = finish_bg($h);
like($err, qr/claude HTTP worker failure/, 'pg_terminate_backend on the worker fails the caller');
wait_for_worker($node, $old);
is($node->safe_psql('postgres', "SELECT claude_complete('after terminate')"), 'after terminate', 'calls work again');

# SIGKILL: the postmaster resets shared memory and restarts everything;
# callers get an error, never a hang
$h = start_bg($node, "SELECT claude_complete('[[mock:hang]] killed')");
ok(wait_until(sub { $mock->stats->{concurrency} >= 1 }), 'a request is in flight');
$old = worker_pid($node);
kill 'KILL', $old;
($rc, $out, $err) = finish_bg($h);
isnt($rc, 0, 'the caller of a killed worker gets an error');
like($err, qr/terminating connection because of crash of another server process|server closed the connection/,
	'the crash restart ends the session');
$node->poll_query_until('postgres', 'SELECT 1', '1');
wait_for_worker($node, $old);
is($node->safe_psql('postgres', "SELECT claude_complete('after kill')"), 'after kill', 'calls work after the crash restart');

$node->stop;
done_testing();
