# What a session waits for, as pg_stat_activity.wait_event names it: on
# PostgreSQL 17 and later custom wait events (ClaudeReply, ClaudeSlot,
# ClaudeRateLimit, ClaudeRetry, ClaudeHttpWorkerMain); before 17 every wait
# of ours is "Extension".  Each wait ends as it should (the reply, or a
# cancel with 57014), the HTTP worker stays up, and a call right after
# succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
# one slot, so that a second session has to wait for it
my $node = new_node('waits', $mock, conf => "claude.max_requests = 1\n");
my $version = $node->safe_psql('postgres', 'SHOW server_version_num');
my $named = $version >= 170000;
my $worker = worker_pid($node);

# the wait event of the session whose query contains $marker, as "type/event"
sub wait_of
{
	my ($marker) = @_;
	return $node->safe_psql('postgres',
		"SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity "
		  . "WHERE query LIKE '%$marker%' AND pid <> pg_backend_pid()");
}

# what we expect: the name on 17+, "Extension" before
sub expect
{
	my ($name) = @_;
	return 'Extension/' . ($named ? $name : 'Extension');
}

sub seen
{
	my ($marker, $name, $what) = @_;
	my $want = expect($name);
	my $last = '';
	my $ok = wait_until(sub { ($last = wait_of($marker)) eq $want }, 30);
	ok($ok, "$what: wait_event is $want") or diag("last seen: '$last'");
}

sub innocent_call
{
	my ($what) = @_;
	is($node->safe_psql('postgres', "SELECT claude_complete('innocent')"),
		'innocent', "$what: an innocent call right after succeeds");
	is(worker_pid($node), $worker, "$what: the HTTP worker is the same process");
}

note($named
	? "PostgreSQL $version: custom wait events"
	: "PostgreSQL $version: before 17 every wait shows as Extension (no custom wait events)");

# the HTTP worker, idle
my $w = $node->safe_psql('postgres',
	"SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity WHERE backend_type = 'claude http worker'");
is($w, expect('ClaudeHttpWorkerMain'), 'the idle HTTP worker waits as ' . expect('ClaudeHttpWorkerMain'));

# a slow reply holds the only slot: its caller waits for the reply, a
# second caller for the slot
my $slow = start_bg($node, "SELECT claude_complete('[[mock:delay=4000]] slow-reply')");
seen('slow-reply', 'ClaudeReply', 'a call waiting for a slow reply');
my $second = start_bg($node, "SELECT claude_complete('second-caller')");
seen('second-caller', 'ClaudeSlot', 'a call waiting for a free slot');
my ($rc, $out, $err) = finish_bg($slow);
is($out, '[[mock:delay=4000]] slow-reply', 'the slow call gets its reply');
($rc, $out, $err) = finish_bg($second);
is($out, 'second-caller', 'the second call gets the slot and its reply');
innocent_call('slow reply and slot');

# a 529 asking for a retry in 60 s: the caller waits for the retry
$mock->reset;
$mock->fault({ status => 529, retry_after_ms => 60000 });
my $retry = start_bg($node, "SELECT claude_complete('wants-retry')");
seen('wants-retry', 'ClaudeRetry', 'a call waiting to be retried');
($rc, $out, $err) = cancel_bg($node, $retry, 'wants-retry');
like($err, qr/canceling statement due to user request/, 'the retry wait is cancelled (57014)');
$mock->clear_faults;
innocent_call('retry');

# two requests a minute: the first goes at once, the second waits for the
# rate limit
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 2\n");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('claude.requests_per_minute') = '2'")
  or die "the setting did not load";
$node->safe_psql('postgres', "SELECT claude_complete('first-of-two')");
my $limited = start_bg($node, "SELECT claude_complete('rate-limited')");
seen('rate-limited', 'ClaudeRateLimit', 'a call held back by the rate limit');
($rc, $out, $err) = cancel_bg($node, $limited, 'rate-limited');
like($err, qr/canceling statement due to user request/, 'the rate-limit wait is cancelled (57014)');
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 0\n");
$node->reload;
$node->poll_query_until('postgres', "SELECT current_setting('claude.requests_per_minute') = '0'")
  or die "the setting did not load";
innocent_call('rate limit');

$node->stop;
$mock->stop;
done_testing();
