# One connection pool for the whole server: short-lived sessions reuse the
# worker's connections, which never exceed claude.max_connections.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('pool', $mock, conf => "claude.max_connections = 4\n");

# 100 calls from 100 sessions, 20 at a time, each with a little latency so
# that they overlap and press against the cap
$mock->reset;
my $ok = 0;
for my $wave (0 .. 4)
{
	my @bg = map {
		my $i = $wave * 20 + $_;
		[ $i, start_bg($node, "SELECT claude_complete('[[mock:delay=50]] session $i')") ]
	} 1 .. 20;
	for my $b (@bg)
	{
		my ($rc, $out) = finish_bg($b->[1]);
		$ok++ if $rc == 0 && $out eq "[[mock:delay=50]] session $b->[0]";
	}
}
is($ok, 100, '100 calls from 100 short-lived sessions all succeed');
my $st = $mock->stats;
is($st->{requests}, 100, 'the mock saw exactly 100 requests');
cmp_ok($st->{tcp_connections}, '<=', 4, "at most claude.max_connections TCP connections ($st->{tcp_connections})");
cmp_ok($st->{tls_handshakes}, '<=', 4, "at most claude.max_connections TLS handshakes ($st->{tls_handshakes})");
cmp_ok($st->{max_concurrency}, '<=', 4, "never more than 4 requests at once on HTTP/1.1 ($st->{max_concurrency})");
cmp_ok($st->{max_concurrency}, '>=', 2, 'requests from different sessions did overlap');

# connections stay open between calls (keep-alive)
$mock->reset;
$node->safe_psql('postgres', "SELECT claude_complete('again ' || i) FROM generate_series(1, 20) i");
is($mock->stats->{tcp_connections}, 0, 'sequential calls reuse the pooled connections');

# HTTP/2: many streams share a single connection
my $mock2 = ClaudeMock->start(keys => ['test-key'], http2 => 1);
$node->append_conf('postgresql.conf', "claude.base_url = '" . $mock2->base_url . "'\n" .
	"claude.ca_file = '" . $mock2->ca_file . "'\nclaude.max_connections = 2\n");
$node->restart;
wait_for_worker($node);
my @bg = map { start_bg($node, "SELECT claude_complete('[[mock:delay=300]] h2 $_')") } 1 .. 30;
$ok = 0;
for my $b (@bg) { my ($rc) = finish_bg($b); $ok++ if $rc == 0; }
is($ok, 30, '30 concurrent calls over HTTP/2 succeed');
$st = $mock2->stats;
cmp_ok($st->{tcp_connections}, '<=', 2, "HTTP/2: at most 2 connections ($st->{tcp_connections})");
cmp_ok($st->{max_concurrency}, '>', 2, "HTTP/2: more requests at once than connections ($st->{max_concurrency})");
my @versions = map { $_->{http_version} } @{ $mock2->requests(0) };
ok((grep { $_ eq '2.0' } @versions) == 30, 'all requests used HTTP/2');

$node->stop;
done_testing();
