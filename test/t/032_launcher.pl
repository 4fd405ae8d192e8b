# One launcher starts the database workers.  8 databases, the extension in
# 5, jobs left running and a Message Batch unfinished by a crash (-m
# immediate): after the restart no worker lingers where the extension is
# absent or nothing waits, at most one database is probed at a time, every
# job and batch finishes unaided, and idle workers leave.  With no worker
# slot free the launcher says so once and succeeds later; DROP DATABASE with
# a worker running succeeds, and no worker is started for it afterwards.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('launch', $mock,
	conf => "claude.batch_poll_interval = 1\nrestart_after_crash = on\n");
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }

my @with = qw(e1 e2 e3 e4);    # and postgres
my @without = qw(n1 n2 n3);
sql("CREATE DATABASE $_") for @with, @without;
sql("CREATE EXTENSION claude", $_) for @with;
for my $db (qw(e1 e2))
{
	sql(q{CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
		CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
		  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}');}, $db);
}
sql(q{CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 3) i;}, 'e3');

# work the crash leaves behind: jobs in flight (their replies hang) and a
# batch that ends some seconds after its creation
$mock->config({ batch_delay_ms => 20000 });
$mock->fault({ hang => 1, count => 4 });
sql("INSERT INTO tickets VALUES (1, 'one'), (2, 'two')", $_) for qw(e1 e2);
ok(wait_until(sub { $mock->stats->{concurrency} >= 4 }, 60), 'four jobs are in flight');
sql("CALL claude_enrich('docs', 'summary', 'Sum: {body}', mode => 'batch')", 'e3');
is(sql("SELECT count(*) FROM claude_batches WHERE results_at IS NULL", 'e3'), '1', 'a batch is unfinished');
is(sql("SELECT count(*) FROM claude_jobs WHERE status = 'running'", $_), '2', "$_: two jobs are running")
  for qw(e1 e2);

$node->stop('immediate');
$mock->clear_faults;
$node->start;

# watch the database workers until every job and batch is done
my $watch = q{SELECT string_agg(pid || ':' || datname, ' ') FROM pg_stat_activity
	WHERE backend_type = 'claude db worker'};
my %seen;              # pid => [datname, first seen, last seen]
my $most_idle = 0;     # most workers at once where nothing waits
my %idle_db = map { $_ => 1 } (@without, 'e4', 'postgres');
# a job done is deleted; a failed one stays
my $done = q{SELECT (SELECT count(*) FROM claude_jobs) = 0
	AND (SELECT count(*) FROM tickets WHERE category IS NULL) = 0};
my $finished = wait_until(
	sub {
		my $now = time();
		my $idle = 0;
		for (split / /, sql($watch))
		{
			my ($pid, $db) = split /:/;
			$seen{$pid} //= [ $db, $now ];
			$seen{$pid}[2] = $now;
			$idle++ if $idle_db{$db};
		}
		$most_idle = $idle if $idle > $most_idle;
		return sql($done, 'e1') eq 't' && sql($done, 'e2') eq 't'
		  && sql("SELECT count(*) FROM claude_batches WHERE results_at IS NULL", 'e3') eq '0';
	},
	120);
ok($finished, 'every job and the batch finish after the crash, nobody calling anything');
is(sql("SELECT string_agg(category, ',' ORDER BY id) FROM tickets", $_), 'Classify: one,Classify: two',
	"$_: the jobs' results are written back") for qw(e1 e2);
like(sql("SELECT string_agg(summary, ',' ORDER BY id) FROM docs", 'e3'), qr/^Sum: doc 1,Sum: doc 2,Sum: doc 3$/,
	"e3: the batch's results are written back");

my @lingered = grep { $seen{$_}[0] !~ /^e[123]$/ && $seen{$_}[2] - $seen{$_}[1] > 3 } keys %seen;
is(join(' ', map { "$seen{$_}[0]($_)" } @lingered), '',
	'no worker lingers where the extension is absent or nothing waits');
cmp_ok($most_idle, '<=', 1, 'at most one database is probed at a time');

# idle workers leave, and none comes back where nothing waits
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker'") eq '0' }, 120),
	'idle workers leave');
my $since = time();
my $stray = 0;
while (time() - $since < 5)
{
	$stray++ if sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker'") ne '0';
	usleep(200_000);
}
is($stray, 0, 'and none is started again where nothing waits');

# new work wakes the launcher, which starts a worker again
sql("INSERT INTO tickets VALUES (3, 'three')", 'e1');
ok(wait_until(sub { sql("SELECT category FROM tickets WHERE id = 3", 'e1') eq 'Classify: three' }, 60),
	'a new job after the workers left is done');

# a restore: a database dumped with a job in flight and an unfinished
# batch comes back in new databases; their rows arrive after CREATE
# EXTENSION, and wake the launcher at commit
my $tmp = $node->basedir;
$mock->config({ batch_delay_ms => 15000 });
$mock->fault({ hang => 1, count => 1 });
sql("INSERT INTO tickets VALUES (10, 'ten')", 'e1');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'running'", 'e1') eq '1' }, 60),
	'e1: a job in flight');
sql("INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(4, 5) i", 'e3');
sql("CALL claude_enrich('docs', 'summary', 'Sum: {body}', mode => 'batch')", 'e3');
for my $db (qw(e1 e3))
{
	command_ok([ 'pg_dump', '-Fc', '-f', "$tmp/$db.dump", '-d', $node->connstr($db) ], "$db is dumped");
	sql("CREATE DATABASE r_$db");
	command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr("r_$db"), "$tmp/$db.dump" ],
		"and restored as r_$db");
}
$mock->clear_faults;
ok(wait_until(sub { sql("SELECT category FROM tickets WHERE id = 10", 'r_e1') eq 'Classify: ten'
	  && sql("SELECT count(*) FROM claude_jobs", 'r_e1') eq '0' }, 90),
	"the restored job is done, nobody calling anything")
  or diag(sql("SELECT status, attempts, last_error FROM claude_jobs", 'r_e1') . ' / '
	  . sql("SELECT string_agg(id || '=' || coalesce(category, '-'), ',') FROM tickets", 'r_e1') . ' / '
	  . sql("SELECT string_agg(datname || ':' || backend_type, ',') FROM pg_stat_activity WHERE backend_type LIKE 'claude%'"));
ok(wait_until(sub { sql("SELECT count(*) FROM claude_batches WHERE results_at IS NULL", 'r_e3') eq '0' }, 90),
	'the restored batch is polled to its end');
is(sql("SELECT string_agg(summary, ',' ORDER BY id) FROM docs WHERE id > 3", 'r_e3'), 'Sum: doc 4,Sum: doc 5',
	"and its results written back");

# no worker slot free: the launcher says so once, and succeeds later.
# max_worker_processes = 3: the HTTP worker, the logical replication
# launcher, and what is left the parallel queries take for a while.
$node->append_conf('postgresql.conf', "max_worker_processes = 3\n");
$node->restart;
wait_for_worker($node);
# over: no worker seen for 3 s on end
my $quiet = 0;
ok(wait_until(sub {
		$quiet = sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker'") eq '0' ? $quiet + 1 : 0;
		usleep(100_000);
		return $quiet >= 30;
	}, 120),
	'the probes after the restart are over');
sql("CREATE TABLE slow AS SELECT i FROM generate_series(1, 200) i;
	ALTER TABLE slow SET (parallel_workers = 2); ANALYZE slow");
my $log_from = -s $node->logfile;
# two queries asking two workers each: every free slot is taken.  A query
# asks for its workers once, at its start: if a probe the sampling above
# missed (it lasts a moment) had the slot then, it is cancelled and run again
my @par;
my $par_since;
my $par_sql = q{SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;
	SET parallel_leader_participation = off;
	SELECT count(pg_sleep(0.05)) FROM slow};
my $par_restarts = 0;
ok(wait_until(sub {
		if (!@par)
		{
			@par = map { start_bg($node, $par_sql) } 1 .. 2;
			$par_since = time();
		}
		return 1 if sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parallel worker'") ne '0';
		return 0 if time() - $par_since < 3;
		sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity
			WHERE query LIKE '%FROM slow' AND pid <> pg_backend_pid()");
		finish_bg($_) for @par;
		@par = ();
		$par_restarts++;
		return 0;
	}, 120),
	'parallel queries hold the free worker slots')
  or diag(sql("SELECT string_agg(backend_type || ':' || coalesce(datname, '-'), ',') FROM pg_stat_activity"));
note("parallel queries run again $par_restarts times");
sql("INSERT INTO tickets VALUES (4, 'four')", 'e1');
sleep 2;
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker'"), '0',
	'no database worker can start meanwhile');
my ($rc, $out, $err);
for my $h (@par)
{
	($rc, $out, $err) = finish_bg($h);
	is($rc, 0, 'the parallel query ends') or diag($err);
}
ok(wait_until(sub { sql("SELECT category FROM tickets WHERE id = 4", 'e1') eq 'Classify: four' }, 60),
	'then the job is done: the launcher tried again');
my $log = slurp_file($node->logfile, $log_from);
my @said = ($log =~ /a database worker cannot start now/g);
# the launcher tried about ten times meanwhile (once a second); it says
# so once per run of failures, and a probe of another database may make a
# run of its own
cmp_ok(scalar @said, '>=', 1, 'the log says that no slot was free');
cmp_ok(scalar @said, '<=', 3, 'but not at every retry');

# DROP DATABASE while its worker runs: asked through the launcher
$mock->fault({ hang => 1, count => 1 });
sql("INSERT INTO tickets VALUES (5, 'five')", 'e2');
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker' AND datname = 'e2'") eq '1' }, 60),
	'e2 has a worker');
ok(wait_until(sub { $mock->stats->{concurrency} >= 1 }, 30), 'with a job in flight');
$log_from = -s $node->logfile;
($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '30s'; DROP DATABASE e2");
is($rc, 0, 'DROP DATABASE succeeds with its worker running') or diag($err);
$mock->clear_faults;
sleep 3;
$log = slurp_file($node->logfile, $log_from);
unlike($log, qr/database \d+ does not exist|"e2" does not exist/, 'no worker is started for the dropped database');
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker' AND datname IS NULL"), '0',
	'nor lingers without one');

$node->stop;
done_testing();
