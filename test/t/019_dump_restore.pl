# A dump restores: a database with queued and failed jobs, a Message Batch,
# cached replies, edited, added and removed prices, budgets and usage is
# dumped by a superuser and restored into fresh databases with pg_restore
# --exit-on-error and with psql -1; everything comes back once, the shipped
# prices are not restored twice, and the sequences go on.  The database's
# (plain) owner dumps and restores what an admin of the database sets
# (budgets, price edits) and its own tables, never the extension's own rows
# (jobs, batches, cache, usage): it can neither read them nor plant them.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('dump', $mock, cache => 1,
	conf => "claude.max_retries = 0\nclaude.batch_poll_interval = 1\n");
my $tmp = $node->basedir;
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }

sql("CREATE ROLE dbowner LOGIN; CREATE DATABASE src OWNER dbowner");
sql("CREATE EXTENSION claude", 'src');
sql(q{GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO dbowner;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO dbowner;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO dbowner;},
	'src');
my ($rc, $out, $err) = $node->psql('src', q{
	CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 4) i;
	CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
	CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}');
	SELECT claude_complete('cached one'), claude_complete('cached two');},
	extra_params => [ '-U', 'dbowner' ]);
is($rc, 0, 'the owner sets up its database') or diag($err);
($rc, $out, $err) = $node->psql('src', "CALL claude_enrich('docs', 'summary', 'Sum: {body}', mode => 'batch')",
	extra_params => [ '-U', 'dbowner' ]);
is($rc, 0, 'and submits a Message Batch') or diag($err);
ok(wait_until(sub { sql("SELECT count(*) FROM claude_batches WHERE results_at IS NOT NULL", 'src') eq '1' }, 60),
	'whose results are written back');
$mock->fault({ status => 400, count => 1 });
sql("INSERT INTO tickets VALUES (1, 'failing')", 'src');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'", 'src') eq '1' }), 'a failed job');
sql(q{
	UPDATE claude_prices SET input_usd_per_mtok = 4 WHERE model = 'claude-sonnet-4';
	INSERT INTO claude_prices VALUES ('my-model', 1, 2, '2026-11-29');
	DELETE FROM claude_prices WHERE model = 'claude-3-haiku';
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('dbowner', 100);
}, 'src');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_usage_log", 'src') ne '0' }, 30), 'usage is flushed');

# what must come back
my $state = q{SELECT concat_ws(' | ',
	(SELECT count(*) FROM claude_cache),
	(SELECT string_agg(status, ',' ORDER BY id) FROM claude_jobs),
	(SELECT string_agg(status || ':' || rows_written, ',') FROM claude_batches),
	(SELECT count(*) FROM claude_batch_items),
	(SELECT string_agg(role::text || ':' || requests_per_day, ',') FROM claude_budgets),
	(SELECT sum(requests) FROM claude_usage_log),
	(SELECT input_usd_per_mtok FROM claude_prices WHERE model = 'claude-sonnet-4'),
	(SELECT count(*) FROM claude_prices WHERE model = 'my-model'),
	(SELECT count(*) FROM claude_prices WHERE model = 'claude-3-haiku'),
	-- rows beyond the shipped list (one added, one removed): whatever prices ship
	(SELECT count(*) FROM claude_prices) - (SELECT count(*) FROM claude_list_prices),
	(SELECT string_agg(id || '=' || coalesce(summary, '-'), ',' ORDER BY id) FROM docs))};
my $want = sql($state, 'src');
like($want, qr/^\d+ \| failed \| ended:4 \| 4 \| dbowner:100 \| \d+ \| 4 \| 1 \| 0 \| 0 \| 1=Sum: doc 1,/,
	"the database to dump: $want");

# dumps by the superuser and by the database's owner, custom and plain
my @private = map { ('--exclude-table-data', $_) }
  qw(claude_cache claude_jobs claude_jobs_id_seq claude_batches claude_batches_local_id_seq
  claude_batch_items claude_usage_log);
my %dump;
($rc, $out, $err) = run_log_capture([ 'pg_dump', '-f', "$tmp/plain_owner.sql", '-U', 'dbowner',
	'-d', $node->connstr('src') ]);
is($rc, 0, "a plain pg_dump by the owner fails: it may not read the extension's own rows");
# (pg_dump 18 reads sequences with a function that says it in its own words)
like($err, qr/permission denied for (table|sequence) claude_|failed to get data for sequence "claude_\w+"; user may lack SELECT privilege/,
	'with permission denied');
for my $who ('postgres', 'dbowner')
{
	for my $fmt ('c', 'p')
	{
		my $file = "$tmp/src_${who}.$fmt";
		($rc, $out, $err) = run_log_capture([ 'pg_dump', '-F', $fmt, '-f', $file, '-U', $who,
			($who eq 'dbowner' ? (@private, $fmt eq 'p' ? ('--no-privileges') : ()) : ()),
			'-d', $node->connstr('src') ]);
		is($rc, 1, "pg_dump -F$fmt by $who succeeds") or diag($err);
		$dump{"$who.$fmt"} = $file;
	}
}

sub run_log_capture
{
	my ($cmd) = @_;
	my ($stdout, $stderr) = ('', '');
	my $ok = IPC::Run::run($cmd, '>', \$stdout, '2>', \$stderr);
	return ($ok ? 1 : 0, $stdout, $stderr);
}

my $n = 0;
for my $who ('postgres', 'dbowner')
{
	for my $fmt ('c', 'p')
	{
		my $db = 'dst' . ++$n;
		sql("CREATE DATABASE $db OWNER dbowner");
		# an untrusted extension is created by a superuser, who grants what the
		# owner had, before the owner restores (ACLs come last in a dump)
		sql("CREATE EXTENSION claude; GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO dbowner", $db)
		  if $who eq 'dbowner';
		# the owner leaves the privileges on the extension's functions to the
		# superuser: only it may grant them
		my @cmd = $fmt eq 'c'
		  ? ('pg_restore', '--exit-on-error', ($who eq 'dbowner' ? ('--no-privileges') : ()),
			'-U', $who, '-d', $node->connstr($db), $dump{"$who.c"})
		  : ('psql', '-X', '-q', '-1', '-v', 'ON_ERROR_STOP=1', '-U', $who, '-d', $node->connstr($db),
			'-f', $dump{"$who.p"});
		($rc, $out, $err) = run_log_capture(\@cmd);
		is($rc, 1, ($fmt eq 'c' ? 'pg_restore --exit-on-error' : 'psql -1') . " by $who succeeds")
		  or diag($err);
		if ($who eq 'postgres')
		{
			is(sql($state, $db), $want, "$db: jobs, batches, cache, prices, budgets, usage and rows came back once");
			is(sql("SELECT nextval('claude_jobs_id_seq') > (SELECT max(id) FROM claude_jobs)", $db), 't',
				"$db: the job ids go on after the restored ones");
		}
		else
		{
			like(sql($state, $db), qr/^0 \| 0 \| dbowner:100 \| 4 \| 1 \| 0 \| 0 \| 1=Sum: doc 1,/,
				"$db: the owner's restore brings budgets, prices and its rows, none of the extension's own rows");
		}
	}
}

# nor can the owner plant the extension's rows from a superuser's dump
sql("CREATE DATABASE planted OWNER dbowner");
sql("CREATE EXTENSION claude", 'planted');
($rc, $out, $err) = run_log_capture([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-U', 'dbowner',
	'-d', $node->connstr('planted'), '-f', $dump{'postgres.p'} ]);
like($err, qr/permission denied for table claude_jobs/, "the owner's restore of a superuser's dump may not write claude_jobs");
is(sql("SELECT (SELECT count(*) FROM claude_jobs) + (SELECT count(*) FROM claude_cache) + "
	. "(SELECT count(*) FROM claude_batches) + (SELECT count(*) FROM claude_usage_log)", 'planted'), '0',
	'and planted no job, cache entry, batch or usage');
done_testing();
