# Streams a hostile role opens and leaves idle.  Open streams hold a share
# of the request slots and of the pool's connections per role, as bulk work
# does, and a role past its share is refused at once (53400) instead of
# waiting for cursors that may never close; every other role's calls go on.
# While a reader is idle the HTTP worker pauses its transfer, so shared
# memory holds a bounded window of events, not the whole answer; the DSA
# area has a size limit (claude.max_shared_memory) with a clear error when
# it is full, and memory comes back when streams close.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
$mock->config({ stream_chunk_chars => 4096 });

# a quarter of min(32 slots, 8 connections): 2 open streams per role, and
# all roles' streams together leave a quarter (2) of the connections free
my $node = new_node('authority_streams', $mock,
	conf => "claude.max_requests = 32\nclaude.max_connections = 8\nclaude.max_retries = 0\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
my $worker = worker_pid($node);

my @hostile = qw(mallory trudy eve oscar);
for my $r (@hostile, 'alice')
{
	sql(qq{CREATE ROLE $r LOGIN;
		GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO $r;});
}
for my $r (@hostile)
{
	sql(qq{GRANT EXECUTE ON FUNCTION claude_stream(text, text, int, text, float8) TO $r;
		GRANT EXECUTE ON FUNCTION claude_messages_stream(jsonb) TO $r;});
}

# A psql session of a role that goes on after errors; each statement is
# its own savepoint, so a refused open leaves the cursors before it open.
sub session
{
	my ($role) = @_;
	my $s = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', $role ]);
	$s->query_safe("\\set VERBOSITY verbose");
	$s->query_safe("\\set ON_ERROR_ROLLBACK on");
	$s->query_safe("SET statement_timeout = '20s'");
	return $s;
}

# (output, error text) of a query in a session
sub try_q
{
	my ($s, $q) = @_;
	$s->{stderr} = '';
	my $out = $s->query($q);
	my $err = $s->{stderr};
	$s->{stderr} = '';
	return ($out, $err);
}

# Open a cursor over a stream and take its first row; the error, if any.
sub open_stream
{
	my ($s, $name, $call) = @_;
	my ($out, $err) = try_q($s, "DECLARE $name CURSOR FOR SELECT $call; FETCH 1 FROM $name;");
	return $err;
}

# An answer that pauses at the server after its first piece: the stream
# holds its connection for as long as its cursor is open.
sub held { "claude_stream('[[mock:stream_pause=600000]] $_[0]')" }

# alice, with nothing but claude_complete, under a 20 s statement_timeout
sub alice_call
{
	my ($what) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '20s'; SELECT claude_complete('$what')",
		extra_params => [ '-U', 'alice' ]);
	return ($out, $err);
}

sub dsa { sql('SELECT claude_shared_memory_size()') }
# the HTTP worker's resident memory, for the log
sub worker_rss
{
	open my $f, '<', "/proc/$worker/status" or return '?';
	my ($kb) = map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$f>;
	return sprintf('%.1f MB', ($kb // 0) / 1024);
}
sub mb { sprintf('%.1f MB', $_[0] / 1048576) }

# wait until no request is in flight or queued
sub quiet
{
	return wait_until(sub { sql('SELECT in_flight + queued FROM claude_stats') eq '0' }, 30);
}

# ---- 1. one role opens more streams than its share and leaves them idle
my $m1 = session('mallory');
$m1->query_safe('BEGIN');
my (@opened, @refused, @other);
for my $i (1 .. 34)
{
	my $err = open_stream($m1, "c$i", held("idle cursor $i of mallory"));
	if ($err eq '') { push @opened, $i }
	elsif ($err =~ /53400/) { push @refused, $err }
	else { push @other, $err; last }
}
is(scalar @opened, 2, 'mallory opens 2 streams, its share') or diag("opened: @opened");
is(scalar @refused, 32, 'every further open is refused') or diag(join("\n", @other));
like($refused[0] // '', qr/53400: .*open streams.*mallory/s, 'with 53400 configuration_limit_exceeded, naming the role');
like($refused[0] // '', qr/HINT: .*[Cc]lose/s, 'and a hint to close cursors');
is(scalar @other, 0, 'no open waited for statement_timeout or failed otherwise');

# the share is the role's, whatever the session
my $m2 = session('mallory');
$m2->query_safe('BEGIN');
my $err = open_stream($m2, 'x', held('a second session of mallory'));
like($err, qr/53400/, "another session of the same role is refused too");

my ($out, $aerr) = alice_call('alice while mallory idles');
is($out, 'alice while mallory idles', "another role's call succeeds while mallory's streams sit idle") or diag($aerr);

# ---- 2. several hostile roles: streams leave a quarter of the pool
my %s = (mallory => $m1);
for my $r (qw(trudy eve))
{
	$s{$r} = session($r);
	$s{$r}->query_safe('BEGIN');
	for my $i (1 .. 2)
	{
		is(open_stream($s{$r}, "c$i", held("cursor $i of $r")), '', "$r opens stream $i of its share");
	}
}
my $o = session('oscar');
$o->query_safe('BEGIN');
$err = open_stream($o, 'c1', held('one stream too many for the server'));
like($err, qr/53400: .*open streams/s, 'a fourth role is refused: the streams of all roles hold their three quarters');
is(sql('SELECT connections <= 8 FROM claude_stats'), 't', 'the pool stays within claude.max_connections');
($out, $aerr) = alice_call('alice beside six held streams');
is($out, 'alice beside six held streams', "another role's call still gets a connection") or diag($aerr);

for my $r (qw(mallory trudy eve))
{
	$s{$r}->query_safe('ROLLBACK');
}
$m2->quit;
$o->quit;
ok(quiet(), 'the held streams end with their transactions');

# ---- 3. idle readers pin no memory: 6 idle claude_messages_stream cursors over a 4 MB prompt
my $big = q{claude_messages_stream(jsonb_build_object('max_tokens', 64, 'messages', jsonb_build_array(
	jsonb_build_object('role', 'user', 'content', repeat('idle reader ', 349526)))))};

# Each role opens two and reads one event of each; returns the area's size
# once the worker has gone as far as it goes while nobody reads.
sub open_idle
{
	for my $r (qw(mallory trudy eve))
	{
		$s{$r} = session($r) unless $s{$r};
		$s{$r}->query_safe('BEGIN');
		for my $i (1 .. 2)
		{
			is(open_stream($s{$r}, "m$i", $big), '', "$r opens a 4 MB stream and reads its first event");
		}
	}
	sleep 3;
	my $size = dsa();
	sleep 1;
	my $again = dsa();
	return $again > $size ? $again : $size;
}

# Closed, committed, or the backend gone: every stream ends.
sub close_idle
{
	$s{mallory}->query_safe('CLOSE m1; CLOSE m2;');
	$s{mallory}->query_safe('COMMIT');
	$s{trudy}->query_safe('COMMIT');
	sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'eve'");
	eval { $s{eve}->{run}->finish };
	delete $s{eve};
	return quiet();
}

my $before = dsa();
note('HTTP worker RSS before: ' . worker_rss());
my $idle = open_idle();
note('DSA area: before ' . mb($before) . ', while 6 readers are idle ' . mb($idle));
note('HTTP worker RSS while they are idle: ' . worker_rss());
# a window of events per stream, and the 4 MB request on its way to the
# worker (which copies it out); the worker does not read on for idle readers
cmp_ok($idle - $before, '<', 12 * 1048576,
	'six idle 4 MB streams grow shared memory by less than 12 MB (' . mb($idle - $before) . ')');
($out, $aerr) = alice_call('alice beside idle readers');
is($out, 'alice beside idle readers', "another role's call succeeds beside the idle readers") or diag($aerr);

# a reader that comes back gets the rest, to the assembled message
($out, $err) = try_q($s{mallory}, q{DO $$
DECLARE c refcursor := 'm1'; e jsonb; n int := 1; last text;
BEGIN
	LOOP
		FETCH c INTO e;
		EXIT WHEN NOT FOUND;
		n := n + 1;
		last := e->>'type';
	END LOOP;
	RAISE NOTICE 'read % events, the last a %', n, last;
END $$;});
like($err, qr/read \d{4,} events, the last a message\b/, 'a reader that comes back reads the rest of its stream') or diag($err);

ok(close_idle(), 'every stream ends: cursor closed, transaction committed, backend gone');
my $after;
wait_until(sub { ($after = dsa()) - $before <= 5 * 1048576 }, 10);
note('DSA area after they close: ' . mb($after));
# PostgreSQL's DSA keeps a segment that held only large bodies for reuse
cmp_ok($after - $before, '<=', 5 * 1048576,
	'shared memory comes back, but for a segment kept for the next 4 MB body (' . mb($after - $before) . ')');

# the same again: what was freed is used again, nothing piles up
my $idle2 = open_idle();
ok(close_idle(), 'the second round ends too');
note('DSA area while a second round is idle: ' . mb($idle2));
cmp_ok($idle2, '<=', $idle + 1048576, 'a second round of idle streams takes no more than the first (' . mb($idle2) . ')');

# ---- 4. the DSA area has a limit, and a clear error when it is full
sql("ALTER SYSTEM SET claude.max_shared_memory = '16MB'");
sql('SELECT pg_reload_conf()');
wait_until(sub { sql('SHOW claude.max_shared_memory') eq '16MB' });
my ($rc, $o2, $e2) = $node->psql('postgres',
	"SET statement_timeout = '20s'; SELECT length(claude_complete(repeat('too big ', 3 * 1024 * 1024)))",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e2, qr/53200: out of shared memory for a request/, 'a 24 MB prompt over a 16 MB limit fails at once with 53200');
like($e2, qr/claude\.max_shared_memory/, 'naming claude.max_shared_memory');

my $reply = '{"id":"msg_big","type":"message","role":"assistant","model":"claude-sonnet-4-6",'
  . '"content":[{"type":"text","text":"' . ('y' x (20 * 1024 * 1024)) . '"}],'
  . '"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}';
$mock->fault({ status => 200, body => $reply });
($rc, $o2, $e2) = $node->psql('postgres',
	"SET statement_timeout = '20s'; SELECT length(claude_complete('a 20 MB reply'))",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e2, qr/53200: .*out of shared memory for a reply/, 'a 20 MB reply over the limit fails the call with 53200, not the worker')
  or diag($e2);
$mock->clear_faults;

sql('ALTER SYSTEM RESET claude.max_shared_memory');
sql('SELECT pg_reload_conf()');

# ---- the worker never went away, and serves an innocent call
$_->quit for values %s;
is(worker_pid($node), $worker, 'the HTTP worker is the same process throughout');
($out, $aerr) = alice_call('innocent at the end');
is($out, 'innocent at the end', 'and an innocent call succeeds') or diag($aerr);

done_testing();
