# Shared memory by PostgreSQL's rules.  An ERROR in the HTTP worker while
# it handles a reply, with a lock held, fails that one request: the worker
# lets go of its locks as an auxiliary process does and serves everyone
# else, itself included, without a restart.  A stream whose events do not
# fit claude.max_shared_memory fails its caller with 53200, and the worker
# goes on.  A reply jsonb_in refuses is a bad reply (ZC002), read without
# catching an ERROR outside a subtransaction.  (What no SQL can show -- nothing long or raising under a
# spinlock, a latch read once under its lock -- is left to review.)
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);

# the fault point (src/common/fault.c) is armed from the postmaster's
# environment only: the worker raises once, holding the usage lock
$ENV{CLAUDE_TEST_FAULT} = 'usage_lock';
my $node = new_node('shmem_recovery', $mock,
	conf => "claude.max_retries = 0\nclaude.max_shared_memory = '16MB'\n");
delete $ENV{CLAUDE_TEST_FAULT};
sub sql { $node->safe_psql('postgres', $_[0]) }
my $worker = worker_pid($node);

sub call
{
	my ($q) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '60s'; $q",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}

# ---- 1. an ERROR while handling a reply, the usage lock held
my $log_at = -s $node->logfile;
my ($out, $err) = call("SELECT claude_complete('the faulty one')");
like($err, qr/the HTTP worker could not handle the reply/, 'the request whose handling raised fails');
ok($node->log_contains(qr/fault injected at "usage_lock"/, $log_at), 'the worker reports the error in the log');
is(worker_pid($node), $worker, 'the worker did not exit');

# every request after it takes the same lock, in the worker: held still,
# the worker would wait for itself and every caller with it
my @bg = map { start_bg($node, "SET statement_timeout = '60s'; SELECT claude_complete('concurrent $_')") } 1 .. 3;
($out, $err) = call("SELECT claude_complete('right after')");
is($out, 'right after', 'a call right after succeeds') or diag($err);
for my $i (1 .. 3)
{
	my ($rc, $o, $e) = finish_bg($bg[ $i - 1 ]);
	is($o, "concurrent $i", "concurrent call $i succeeds") or diag($e);
}
is(sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'LWLock' AND wait_event LIKE 'claude%'"),
	'0', 'nobody waits for a claude lock');
is(worker_pid($node), $worker, 'the same worker serves them');

# ---- 2. a stream whose events do not fit claude.max_shared_memory
my $big = 'z' x (20 * 1024 * 1024);
my $sse = join '',
  map { "event: $_->[0]\ndata: $_->[1]\n\n" } (
	[ 'message_start',
		'{"type":"message_start","message":{"id":"msg_big","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}'
	],
	[ 'content_block_start', '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}' ],
	[ 'content_block_delta', '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"' . $big . '"}}' ],
	# the rest comes in later pieces, after the event that did not fit
	([ 'ping', '{"type":"ping"}' ]) x 4000,
	[ 'content_block_stop', '{"type":"content_block_stop","index":0}' ],
	[ 'message_delta', '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":1}}' ],
	[ 'message_stop', '{"type":"message_stop"}' ]);
$mock->fault({ status => 200, headers => { 'content-type' => 'text/event-stream' }, body => $sse });
($out, $err) = call("SELECT count(*) FROM claude_stream('a 20 MB event')");
like($err, qr/53200: .*out of shared memory for a stream's events/,
	'a 20 MB event over a 16 MB limit fails the stream with 53200') or diag(substr($err, 0, 2000));
like($err, qr/claude\.max_shared_memory/, 'naming claude.max_shared_memory');
$mock->clear_faults;
is(worker_pid($node), $worker, 'the HTTP worker is the same process');
($out, $err) = call("SELECT string_agg(p, '') FROM claude_stream('innocent stream') AS p");
is($out, 'innocent stream', 'an innocent stream right after succeeds') or diag($err);
($out, $err) = call("SELECT claude_complete('innocent call')");
is($out, 'innocent call', 'and an innocent call') or diag($err);

# ---- 3. replies read into jsonb without a caught ERROR: on 15 only what
# jsonb_in may refuse goes through a subtransaction, so that must be found
sub reply_with
{
	my ($extra) = @_;
	return '{"id":"msg_x","type":"message","role":"assistant","model":"claude-sonnet-4-6",'
	  . '"content":[{"type":"text","text":"fine"}],"stop_reason":"end_turn","stop_sequence":null,'
	  . '"usage":{"input_tokens":3,"output_tokens":2},' . $extra . '}';
}
for my $case (
	[ 'an exponent numeric cannot hold', '"x":1e999999999', qr/ZC002/ ],
	[ 'a negative one',                  '"x":-1E-999999999', qr/ZC002/ ],
	[ 'a 2000-digit number',             '"x":' . ('7' x 2000), undef ],
	[ 'a small exponent',                '"x":2.5e3', undef ],
	[ 'an escape jsonb refuses',         '"x":"a\\u0000b"', qr/ZC002/ ],
	[ 'an escape it takes',              '"x":"caf\\u00e9"', undef ])
{
	$mock->fault({ body => reply_with($case->[1]) });
	($out, $err) = call(q{SELECT claude_messages('{"messages":[{"role":"user","content":"x"}]}')->'content'->0->>'text'});
	if ($case->[2])
	{
		like($err, $case->[2], "a reply with $case->[0]: ZC002, no other error");
	}
	else
	{
		is($out, 'fine', "a reply with $case->[0] is read") or diag($err);
	}
}
$mock->clear_faults;
is(worker_pid($node), $worker, 'the HTTP worker is the same process at the end');

$node->stop;
done_testing();
