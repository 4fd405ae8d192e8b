# Triggers commit while the HTTP worker (the launcher) is killed again and
# again: the commit callbacks only set flags and latches, so no PANIC, the
# server never restarts, and every job finishes.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('wake', $mock, conf => "claude.max_retries = 5\n");
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }

my @dbs = qw(s1 s2 s3);
for my $db (@dbs)
{
	sql("CREATE DATABASE $db");
	sql(q{CREATE EXTENSION claude;
		CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
		CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
		  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}');}, $db);
}
my $started = sql("SELECT pg_postmaster_start_time()");
$mock->config({ latency_ms => 20 });

# two sessions per database, each committing 150 times
my @bg;
for my $db (@dbs)
{
	for my $s (0, 1)
	{
		push @bg, start_bg($node, qq{DO \$\$ BEGIN FOR i IN 1..150 LOOP
			INSERT INTO tickets VALUES ($s * 1000 + i, 'row ' || i); COMMIT; END LOOP; END \$\$}, $db);
	}
}
# meanwhile the HTTP worker dies and comes back, ten times
my $kills = 0;
for (1 .. 10)
{
	my $old = worker_pid($node);
	next unless $old;
	kill 'TERM', $old;
	$kills++;
	wait_for_worker($node, $old);
	select(undef, undef, undef, 0.3);
}
my $ok = 1;
for my $h (@bg)
{
	my ($rc, $out, $err) = finish_bg($h);
	$ok = 0, diag($err) if $rc != 0;
}
ok($ok, 'every session committed all its rows');
cmp_ok($kills, '>=', 5, "the HTTP worker was killed $kills times");

my $pending = q{SELECT count(*) FROM claude_jobs WHERE status IN ('queued', 'running', 'waiting')};
ok(wait_until(sub { !grep { sql($pending, $_) ne '0' } @dbs }, 180), 'every job finishes');
for my $db (@dbs)
{
	is(sql("SELECT count(*) FROM tickets", $db), '300', "$db: 300 rows");
	# a job done is deleted; a failed one stays
	is(sql("SELECT count(*) FROM claude_jobs", $db), '0', "$db: no job left, none failed");
	is(sql("SELECT count(*) FROM tickets WHERE category = 'Classify: ' || subject", $db),
		'300', "$db: every result written back");
}
is(sql("SELECT pg_postmaster_start_time()"), $started, 'the server never restarted');
my $log = slurp_file($node->logfile);
unlike($log, qr/PANIC/, 'no PANIC in the log');
unlike($log, qr/terminated by signal|all server processes terminated/, 'no process crashed');

$node->stop;
done_testing();
