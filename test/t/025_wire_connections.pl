# The connections the HTTP worker shares between every session and role:
# an answer reaches only the caller that asked, every attempt is one the
# retry policy chose, and no connection or header holds the server
# (issue 24, items 1, 4, 7 and 9).  Each case is played against a hostile
# server (the mock's connection faults: test/mock/mock-api.js), and after
# each the HTTP worker is the same process and an innocent call succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $plain = ClaudeMock->start(keys => ['test-key'], plain => 1, certdir => $mock->certdir);
my $h2 = ClaudeMock->start(keys => ['test-key'], http2 => 1, certdir => $mock->certdir);
my $node = new_node('wire', $mock, cache => 1,
	conf => "claude.max_retries = 0\nclaude.request_timeout = '20s'\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
my $pid = worker_pid($node);

my $complete = 'claude_complete(text, text, int, text, float8, boolean)';
sql("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT EXECUTE ON FUNCTION $complete TO alice, bob");

# A call as $role: (rc, stdout, stderr).
sub call
{
	my ($role, $q) = @_;
	return $node->psql('postgres', $q, extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
}

# What $role gets for $prompt (the mock echoes it).
sub answer
{
	my ($role, $prompt) = @_;
	my ($rc, $out, $err) = call($role, "SELECT claude_complete('$prompt')");
	return $rc == 0 ? $out : "error: $err";
}

sub innocent
{
	return $node->psql('postgres',
		"SET statement_timeout = '10s'; SELECT claude_complete('innocent ' || random(), cache => false)");
}

# After every case: same worker, next call fine.
sub unharmed
{
	my ($what) = @_;
	is(worker_pid($node), $pid, "$what: the HTTP worker is the same process");
	my ($rc, $out, $err) = innocent();
	is($rc, 0, "$what: an innocent call succeeds") or diag($err);
}

# Send new sessions' requests to $m.
sub point_at
{
	my ($m) = @_;
	my $url = $m->base_url;
	sql("ALTER SYSTEM SET claude.base_url = '$url'; SELECT pg_reload_conf()");
	ok(wait_until(sub { sql("SHOW claude.base_url") eq $url }), "requests go to $url");
}

sub posts { $_[0]->stats->{by_path}{'/v1/messages'} // 0 }
sub retries { sql("SELECT retries FROM claude_stats") }

# ---- 4. libcurl never sends a body again by itself
# A reused connection that the server closes once it has read the body: curl
# 7.88 used to rewind and send the POST again, unseen by the retry policy.
for my $how ([ close_unanswered => 'closed without an answer' ], [ reset => 'reset' ])
{
	my ($fault, $what) = @$how;
	innocent();    # a connection in the pool
	my $before = posts($mock);
	$mock->fault({ $fault => \1 });
	my ($rc, $out, $err) = call('alice', "SELECT claude_complete('[$fault] pay me once', cache => false)");
	like($err, qr/ZC001/, "4. a reused connection $what after the body, max_retries = 0: ZC001") or diag($err);
	is(posts($mock) - $before, 1, "4. $what: the server got the POST once");
	unharmed("4. $what");
}
innocent();
my ($before, $retried) = (posts($mock), retries());
$mock->fault({ close_unanswered => \1 });
my ($rc, $out, $err) = call('alice',
	"SET claude.max_retries = 2; SELECT claude_complete('retried by the policy', cache => false)");
is($out, 'retried by the policy', '4. with max_retries = 2 the call succeeds') or diag($err);
is(posts($mock) - $before, 2, '4. after two POSTs');
is(retries() - $retried, 1, '4. the second one is a retry of the policy, in claude_stats');
unharmed('4. retried');
innocent();
$before = posts($mock);
$mock->fault({ close_unanswered => \1 });
($rc, $out, $err) = $node->psql('postgres', "SELECT string_agg(t, '') FROM claude_stream('streamed once') t",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ZC001/, '4. a stream\'s body is not sent again either: ZC001') or diag($out, $err);
is(posts($mock) - $before, 1, '4. the server got the streamed POST once');
unharmed('4. streamed');

# ---- 7. one HTTP/2 connection never holds every request
point_at($h2);
innocent() for 1 .. 2;    # the server is known to multiplex
my $sessions = $h2->stats->{http2_sessions};
$h2->fault({ stall_connection => \1 });
($rc, $out, $err) = $node->psql('postgres',
	"SET claude.request_timeout = '3s'; SET claude.max_retries = 2; SET statement_timeout = '40s'; "
	  . "SELECT claude_complete('after a stalled connection', cache => false)");
is($out, 'after a stalled connection', '7. a connection that stops answering: the retry goes elsewhere') or diag($err);
cmp_ok($h2->stats->{http2_sessions}, '>', $sessions, '7. on a new HTTP/2 connection');
unharmed('7. a stalled connection');
$h2->fault({ zero_streams => \1 });
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('then zero streams', cache => false)");
is($out, 'then zero streams', '7. the reply before SETTINGS_MAX_CONCURRENT_STREAMS = 0 arrives') or diag($err);
($rc, $out, $err) = $node->psql('postgres',
	"SET claude.max_retries = 0; SET statement_timeout = '15s'; "
	  . "SELECT claude_complete('beside zero streams', cache => false)");
is($out, 'beside zero streams', '7. a connection that allows no stream is not waited on (20 s timeout, no retry)')
  or diag($err);
unharmed('7. zero streams');

# ---- 1. a reply that comes twice reaches no one else
# The same reply written twice: in the same write, or the copy 0.3 s later
# on the idle keep-alive connection, where the next request, of another
# role, used to read it as its own answer.
my $n = 0;
for my $case ([ $mock, 'TLS' ], [ $plain, 'plain HTTP' ])
{
	my ($m, $label) = @$case;
	point_at($m);
	innocent();
	$m->fault({ duplicate_after_ms => 0 });
	$n++;
	is(answer('alice', "alice $n: my salary is 123k"), "alice $n: my salary is 123k",
		"1. $label, copy in the same write: alice gets her answer");
	is(answer('bob', "bob $n: the weather"), "bob $n: the weather", "1. $label, copy in the same write: bob gets his");
	unharmed("1. $label, copy in the same write");

	innocent();
	my $since = $m->requests(0)->[-1]{n};
	$m->fault({ duplicate_after_ms => 300 });
	$n++;
	is(answer('alice', "alice $n: my salary is 123k"), "alice $n: my salary is 123k",
		"1. $label, copy 0.3 s later: alice gets her answer");
	ok(wait_until(sub { grep { $_->{duplicated} } @{ $m->requests($since) } }), "1. $label: the copy was sent");
	usleep(100_000);
	is(answer('bob', "bob $n: the weather"), "bob $n: the weather", "1. $label, copy 0.3 s later: bob gets his own answer");
	ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request::text LIKE '%bob $n:%'") eq '1' }),
		"1. $label: bob's reply is cached");
	is(sql("SELECT count(*) FROM claude_cache WHERE request::text NOT LIKE '%alice%' AND response::text LIKE '%123k%'"),
		'0', "1. $label: nothing of alice's is cached under another request's key");
	unharmed("1. $label, copy 0.3 s later");

	# a check before reuse leaves a race: for a while no HTTP/1.1
	# connection to that server is reused, even a copy on its way misses
	my $conns = $m->stats->{tcp_connections};
	innocent() for 1 .. 2;
	is($m->stats->{tcp_connections} - $conns, 2, "1. $label: then for a while each request has a new connection");
	$m->fault({ duplicate_after_ms => 400 });
	$n++;
	is(answer('alice', "alice $n: my salary is 123k"), "alice $n: my salary is 123k", "1. $label, race: alice");
	is(answer('bob', "bob $n: at once"), "bob $n: at once", "1. $label, race: bob right after her");
	usleep(600_000);
	is(answer('bob', "bob $n: once the copy came"), "bob $n: once the copy came", "1. $label, race: bob once the copy came");
	unharmed("1. $label, race");
}

# ---- 7 and 9. nothing holds the server more than 60 s
# A call waits on an HTTP/2 connection that stopped answering, with a long
# request_timeout: after a minute of silence new requests go elsewhere.
# Meanwhile a 429 tells the server to wait 600 s: its caller gives up, and
# the pause it set lasts at most 60 s (a reload would clear it: none here).
point_at($h2);
innocent();
my $since = $h2->requests(0)->[-1]{n};
$h2->fault({ stall_connection => \1 });
my $log_at = -s $node->logfile;
my $silent = start_bg($node,
	"SET claude.request_timeout = '300s'; SELECT claude_complete('[silent] waits on', cache => false)");
ok(wait_until(sub { grep { ($_->{outcome} // '') eq 'stalled' } @{ $h2->requests($since) } }),
	'7. a call waits on a silent HTTP/2 connection');
point_at($mock);
innocent();
$mock->fault({ status => 429, retry_after => '600' });
($rc, $out, $err) = $node->psql('postgres',
	"SET claude.max_retries = 1; SET statement_timeout = '3s'; SELECT claude_complete('told to wait 600 s', cache => false)");
like($err, qr/statement timeout/, '9. the caller told to wait 600 s gives up');
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '90s'; SELECT claude_complete('after retry-after: 600', cache => false)");
is($out, 'after retry-after: 600', '9. the next call goes out within 60 s, not 600') or diag($err);
unharmed('9. retry-after: 600');
point_at($h2);
ok($node->wait_for_log(qr/no request on an HTTP\/2 connection to the Claude API got a byte for a minute/, $log_at),
	'7. a minute later its connection takes no new request');
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '10s'; SELECT claude_complete('beside the silent one', cache => false)");
is($out, 'beside the silent one', '7. a call beside the one waiting on the silent connection succeeds') or diag($err);
ok($silent->{run}->pumpable, '7. while that one still waits (its request_timeout is 300 s)');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%[silent]%' AND pid <> pg_backend_pid()");
finish_bg($silent);
unharmed('7. a silent connection');

done_testing();
