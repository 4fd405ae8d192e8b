# Shared rate limits: token buckets in shared memory pace every session
# evenly; a 429 or a server reporting nothing left pauses everyone.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use POSIX qw(strftime);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('limits', $mock, conf => "claude.requests_per_minute = 30\n");

sub starts
{
	my @r = grep { $_->{path} eq '/v1/messages' } @{ $mock->requests(0) };
	return map { $_->{t_start} } @r;
}

# 30 requests per minute, five sessions making two calls each
$mock->reset;
my $t0 = time();
my @bg = map {
	my $s = $_;
	start_bg($node, "SELECT claude_complete('session $s call 1'); SELECT claude_complete('session $s call 2')")
} 1 .. 5;
my $ok = 0;
for (@bg) { my ($rc, $out) = finish_bg($_); $ok++ if $rc == 0; }
my $took = time() - $t0;
is($ok, 5, 'all ten calls succeed');
my @s = sort { $a <=> $b } starts();
is(scalar(@s), 10, 'the mock saw ten requests');
my @gaps = map { ($s[$_] - $s[ $_ - 1 ]) / 1000 } 1 .. $#s;
my $bad = grep { $_ < 1.7 || $_ > 2.4 } @gaps;
is($bad, 0, 'requests start about 2 s apart: ' . join(' ', map { sprintf '%.2f', $_ } @gaps));
ok($took > 15 && $took < 21, sprintf('the ten calls took %.1f s (18 +- 3)', $took));
is($mock->stats->{by_status}{429} // 0, 0, 'no 429 reached the mock');

# a reload changes the limit: 600/min is 10 per second
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 600\n");
$node->reload;
$mock->reset;
$t0 = time();
$node->safe_psql('postgres', "SELECT claude_complete('fast ' || i) FROM generate_series(1, 11) i");
$took = time() - $t0;
ok($took > 0.8 && $took < 2.5, sprintf('after a reload 11 calls at 600/min took %.2f s', $took));

# the input-token limit paces large prompts by their size: 6000 tokens a
# minute is 100 a second; a prompt of 1200 bytes is estimated at ~300+
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 0\nclaude.input_tokens_per_minute = 6000\n");
$node->reload;
$mock->reset;
$node->safe_psql('postgres', "SELECT claude_complete(repeat('x', 1200) || i) FROM generate_series(1, 3) i");
@s = sort { $a <=> $b } starts();
@gaps = map { ($s[$_] - $s[ $_ - 1 ]) / 1000 } 1 .. $#s;
$bad = grep { $_ < 2.5 } @gaps;
is($bad, 0, 'large prompts are paced by their size: ' . join(' ', map { sprintf '%.2f', $_ } @gaps));
# small prompts go faster under the same limit (once the bucket has
# refilled from the large ones)
sleep(4);
$mock->reset;
$t0 = time();
$node->safe_psql('postgres', "SELECT claude_complete('small ' || i) FROM generate_series(1, 5) i");
ok(time() - $t0 < 2, 'small prompts are not held back as long');

# the output-token limit reserves max_tokens and refunds what was unused:
# 600 a minute is 10 a second; max_tokens 10 uses 1 or 2
$node->append_conf('postgresql.conf', "claude.input_tokens_per_minute = 0\nclaude.output_tokens_per_minute = 600\n");
$node->reload;
$mock->reset;
$t0 = time();
$node->safe_psql('postgres', "SELECT claude_complete('o' || i, max_tokens => 10) FROM generate_series(1, 8) i");
$took = time() - $t0;
ok($took < 4, sprintf('unused max_tokens are refunded: 8 calls took %.2f s (no refund: 7 s)', $took));
$node->append_conf('postgresql.conf', "claude.output_tokens_per_minute = 0\n");
$node->reload;

# first come, first served across sessions: at one request a second,
# callers that queued 150 ms apart are sent in that order
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 60\n");
$node->reload;
$node->safe_psql('postgres', "SELECT claude_complete('drain the bucket')");
$mock->reset;
my @q;
for my $i (1 .. 4)
{
	push @q, start_bg($node, "SELECT claude_complete('queued $i')");
	usleep(150_000);
}
finish_bg($_) for @q;
my @order = map { $_->{body}{messages}[0]{content} } sort { $a->{t_start} <=> $b->{t_start} } @{ $mock->requests(0) };
is(join(',', @order), 'queued 1,queued 2,queued 3,queued 4', 'requests leave in the order they were queued');
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 0\n");
$node->reload;

# a 429 seen by one session pauses the others until its retry-after
$mock->reset;
$mock->fault({ status => 429, retry_after => '2' });
my $a = start_bg($node, "SELECT claude_complete('first')");
ok(wait_until(sub { $mock->stats->{by_status}{429} }), 'one session got a 429');
my $b = start_bg($node, "SELECT claude_complete('second')");
finish_bg($a);
finish_bg($b);
my @r = @{ $mock->requests(0) };
my ($first429) = grep { $_->{status} == 429 } @r;
my @later = grep { $_->{n} > $first429->{n} } @r;
is(scalar(@later), 2, 'both calls were sent after the 429');
my $held = (grep { $_->{t_start} - $first429->{t_end} < 1900 } @later);
is($held, 0, 'the other session was held for the retry-after too');

# headers saying nothing is left until 3 s from now hold every request
$mock->reset;
my $reset = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time() + 3));
$mock->config({ ratelimit_headers => {
	'anthropic-ratelimit-requests-remaining' => '0',
	'anthropic-ratelimit-requests-reset' => $reset } });
$node->safe_psql('postgres', "SELECT claude_complete('reports zero')");
$mock->config({ ratelimit_headers => undef });
my $t_zero = time();
$node->safe_psql('postgres', "SELECT claude_complete('after reset')");
my $waited = time() - $t_zero;
ok($waited > 1.0, sprintf('a request after "0 remaining, reset at %s" waited %.1f s', $reset, $waited));

# cancel during a throttle wait returns at once
$node->append_conf('postgresql.conf', "claude.requests_per_minute = 1\n");
$node->reload;
$node->safe_psql('postgres', "SELECT claude_complete('takes the only token')");
$mock->reset;
my $h = start_bg($node, "SELECT claude_complete('throttled')");
usleep(300_000);
my ($rc, $out, $err, $ms) = cancel_bg($node, $h, 'throttled');
like($err, qr/canceling statement due to user request/, 'a throttled call can be cancelled');
cmp_ok($ms, '<', 2000, sprintf('it returned %.0f ms after the cancel', $ms));
is($mock->stats->{requests}, 0, 'and was never sent');

$node->stop;
done_testing();

sub usleep { Time::HiRes::usleep($_[0]) }
