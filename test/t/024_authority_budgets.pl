# Budgets apply the moment their change commits, and Message Batches
# reserve what they may spend (issue 23, items 8 and 9):
#  8a a statement that began before a budget committed does not hand the
#     old settings to later sessions;
#  8b a REPEATABLE READ transaction sees a budget committed after its
#     snapshot, and so does its session after COMMIT;
#  8c a budget set by PREPARE TRANSACTION applies at COMMIT PREPARED;
#     and a transaction that changes a budget reads each of its changes;
#  9  a submitted batch reserves its requests (and its estimated cost)
#     across calls, sessions and a restart, concurrent submissions cannot
#     both pass, online calls see the reservation, results settle it
#     without counting twice, and a batch the API refuses or a record
#     deleted gives it back.
# Requests are counted by the mock API itself.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('authority', $mock,
	conf => "max_prepared_transactions = 4\nclaude.batch_poll_interval = 1\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
sub as_role
{
	my ($role, $q) = @_;
	return $node->psql('postgres', $q, extra_params => [ '-U', $role ]);
}
# Messages requests and batches the API received
sub online { $mock->stats->{by_path}{'/v1/messages'} // 0 }
sub batches { $mock->stats->{batches} }
# successes of one call in each of n new sessions of role
sub fresh_sessions
{
	my ($role, $tag, $n) = @_;
	my $ok = 0;
	for my $i (1 .. $n)
	{
		my ($rc, $out, $err) = as_role($role, "SELECT try_calls('$tag $i', 1)");
		die "try_calls: $err" if $rc != 0;
		$ok += $out;
	}
	return $ok;
}
sub new_role
{
	my ($role) = @_;
	sql("CREATE ROLE $role LOGIN;
		GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO $role;
		GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO $role;");
}
# a table of n rows owned by role, for claude_enrich
sub new_table
{
	my ($table, $role, $n) = @_;
	sql("CREATE TABLE $table (id int PRIMARY KEY, body text, summary text);
		INSERT INTO $table SELECT i, '$table ' || i FROM generate_series(1, $n) i;
		ALTER TABLE $table OWNER TO $role;");
}
# psql as role in the background, for finish_bg
sub start_as
{
	my ($role, $q) = @_;
	my %h = (stdout => '', stderr => '');
	$h{run} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-U', $role, '-c', $q ],
		'<', \undef, '>', \$h{stdout}, '2>', \$h{stderr});
	return \%h;
}
sub batch_call
{
	my ($table) = @_;
	return "CALL claude_enrich('$table', 'summary', 'Sum: {body}', mode => 'batch')";
}

# n calls; each refused by a budget is caught; returns how many passed
sql(q{CREATE FUNCTION try_calls(tag text, n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    ok int := 0;
BEGIN
    FOR i IN 1 .. n LOOP
        BEGIN
            PERFORM claude_complete(tag || ' ' || i, cache => false);
            ok := ok + 1;
        EXCEPTION WHEN SQLSTATE 'ZC402' THEN
            NULL;
        END;
    END LOOP;
    RETURN ok;
END $$;});

my ($rc, $out, $err, $before);

# ---- 8a: a statement older than the change reads the new settings
new_role('ra');
sql("SELECT claude_complete('warm 8a', cache => false)");
my $bg = start_bg($node,
	"WITH s AS MATERIALIZED (SELECT pg_sleep(2)) SELECT claude_complete('8a', cache => false) IS NOT NULL FROM s");
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") == 1 }),
	'8a: a statement has begun');
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('ra', 0)");
($rc, $out, $err) = finish_bg($bg);
is($out, 't', '8a: its call, made after the budget committed, passes (it is not ra\'s)') or diag($err);
$before = online();
is(fresh_sessions('ra', '8a later', 4), 0, '8a: 4 of 4 later sessions of ra are refused');
is(online() - $before, 0, '8a: and the API saw none of their calls');

# ---- 8b: REPEATABLE READ
new_role('rb');
$before = online();
$bg = start_bg($node, "SET ROLE rb; BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; SELECT pg_sleep(2);
	SELECT try_calls('8b in', 3); COMMIT; SELECT try_calls('8b after', 2);");
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") == 1 }),
	'8b: a REPEATABLE READ transaction has its snapshot');
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rb', 1)");
($rc, $out, $err) = finish_bg($bg);
my @counts = split /\n/, $out;
is("$counts[-2] $counts[-1]", '1 0',
	'8b: a budget of 1 committed after the snapshot: 1 of 3 calls pass in the transaction, 0 of 2 after COMMIT')
  or diag($err);
is(online() - $before, 1, '8b: the API saw 1 request');

# ---- 8c: PREPARE TRANSACTION, COMMIT PREPARED
new_role('rc');
sql("SELECT claude_complete('warm 8c', cache => false)");
sql("BEGIN; INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rc', 0); PREPARE TRANSACTION 'budget_8c';");
is(fresh_sessions('rc', '8c prepared', 1), 1, '8c: a prepared budget does not apply yet');
sql("COMMIT PREPARED 'budget_8c'");
$before = online();
is(fresh_sessions('rc', '8c committed', 4), 0, '8c: after COMMIT PREPARED, 4 of 4 new sessions of rc are refused');
is(online() - $before, 0, '8c: and the API saw none of their calls');
sql("BEGIN; UPDATE claude_budgets SET requests_per_day = 100 WHERE role = 'rc'::regrole; PREPARE TRANSACTION 'budget_8c2';
	ROLLBACK PREPARED 'budget_8c2';");
is(fresh_sessions('rc', '8c rolled back', 1), 0, '8c: ROLLBACK PREPARED leaves it as it was');

# ---- the transaction that changes a budget reads its own change, each one
new_role('rt');
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rt', 100)");
my $try_rt = "SET ROLE rt; SELECT try_calls('rt', 1); RESET ROLE;";
is(sql("BEGIN; UPDATE claude_budgets SET requests_per_day = 0 WHERE role = 'rt'::regrole; $try_rt
	UPDATE claude_budgets SET requests_per_day = 100 WHERE role = 'rt'::regrole; $try_rt
	SAVEPOINT s; UPDATE claude_budgets SET requests_per_day = 0 WHERE role = 'rt'::regrole; $try_rt
	ROLLBACK TO s; $try_rt ROLLBACK;") =~ s/\n/ /gr, '0 1 0 1',
	'a transaction that changes a budget twice, and once in a savepoint rolled back, reads each state');
is(fresh_sessions('rt', 'rt after', 1), 1, 'and none of it reaches another session');

# ---- 9: a batch reserves its requests
new_role('rq');
new_table("q$_", 'rq', 3) for 1 .. 2;
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rq', 3)");
$mock->config({ batch_delay_ms => 3000 });
my $batches0 = batches();
($rc, $out, $err) = as_role('rq', batch_call('q1'));
is($rc, 0, '9: requests_per_day = 3: a batch of 3 rows is accepted') or diag($err);
($rc, $out, $err) = as_role('rq', batch_call('q2'));
like($err, qr/daily budget of role rq is spent \(requests_per_day 3\)/, '9: a second batch of 3, in another CALL, is refused');
is(batches() - $batches0, 1, '9: the API received one batch');
$before = online();
is(fresh_sessions('rq', '9 online', 1), 0, '9: an online call is refused while the batch is pending');
is(online() - $before, 0, '9: and not sent');
ok(wait_until(sub { sql("SELECT results_at IS NOT NULL FROM claude_batches WHERE relation = 'q1'::regclass") eq 't' }, 60),
	'9: the batch is written back');
is(sql("SELECT requests FROM claude_usage WHERE role = 'rq'::regrole"), '3', '9: its 3 results count once in claude_usage');
is(fresh_sessions('rq', '9 settled', 1), 0, '9: the budget is still spent');
sql("UPDATE claude_budgets SET requests_per_day = 4 WHERE role = 'rq'::regrole");
$before = online();
is(fresh_sessions('rq', '9 raised', 2), 1, '9: raised to 4: one more call passes, not 4 (reservation and results are not both counted)');
is(online() - $before, 1, '9: the API saw 1');

# ---- 9: concurrent submissions
new_role('rcc');
new_table("c$_", 'rcc', 3) for 1 .. 2;
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rcc', 3)");
$batches0 = batches();
my @bg = map { start_as('rcc', batch_call("c$_")) } 1 .. 2;
my ($passed, $refused) = (0, 0);
for my $h (@bg)
{
	my ($brc, $bout, $berr) = finish_bg($h);
	$passed++ if $brc == 0;
	$refused++ if $berr =~ /daily budget of role rcc is spent/;
}
is("$passed $refused", '1 1', '9: two concurrent CALLs of 3 rows each with 3 requests left: one passes, one is refused');
is(batches() - $batches0, 1, '9: the API received one batch');

# ---- 9: the estimated cost is reserved too
new_role('rd');
new_table('d1', 'rd', 3);
sql("INSERT INTO claude_budgets (role, usd_per_day) VALUES ('rd', 0.01)");
$batches0 = batches();
($rc, $out, $err) = as_role('rd', batch_call('d1'));
like($err, qr/daily budget of role rd is spent \(usd_per_day 0.01\)/,
	'9: 3 rows of up to 1,024 output tokens at the batch price (about $0.023) do not fit $0.01');
is(batches() - $batches0, 0, '9: and nothing was sent');

# ---- 9: a batch that is not created, or a record deleted, gives its reservation back
new_role('rx');
new_table('x1', 'rx', 2);
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rx', 2)");
$mock->config({ batch_delay_ms => 600000 });
$mock->fault({ status => 400 });
($rc, $out, $err) = as_role('rx', batch_call('x1'));
like($err, qr/Claude API error 400/, '9: a batch the API refuses fails the CALL');
($rc, $out, $err) = as_role('rx', batch_call('x1'));
is($rc, 0, '9: and reserves nothing: the same 2 rows fit afterwards') or diag($err);
is(fresh_sessions('rx', '9 x pending', 1), 0, '9: while they are pending, rx cannot call');
sql("DELETE FROM claude_batches WHERE relation = 'x1'::regclass");
$before = online();
is(fresh_sessions('rx', '9 x deleted', 3), 2, '9: once the record is deleted, its 2 requests are rx\'s again');
is(online() - $before, 2, '9: the API saw those 2');

# ---- 9: reservations survive a restart; a canceled batch gives them back
new_role('rr');
new_table("r$_", 'rr', 2) for 1 .. 2;
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('rr', 2)");
$mock->config({ batch_delay_ms => 600000 });
($rc, $out, $err) = as_role('rr', batch_call('r1'));
is($rc, 0, '9: rr (requests_per_day = 2) submits a batch of 2') or diag($err);
$node->stop('immediate');
$node->start;
$before = online();
is(fresh_sessions('rr', '9 restarted', 1), 0, '9: after an immediate restart the batch still holds rr\'s budget');
$batches0 = batches();
($rc, $out, $err) = as_role('rr', batch_call('r2'));
like($err, qr/daily budget of role rr is spent \(requests_per_day 2\)/, '9: and a new batch is refused');
is(batches() - $batches0, 0, '9: before it is sent');
my $id = sql("SELECT id FROM claude_batches WHERE relation = 'r1'::regclass");
sql("SELECT claude_batch_cancel('$id')");
ok(wait_until(sub { sql("SELECT results_at IS NOT NULL FROM claude_batches WHERE id = '$id'") eq 't' }, 60),
	'9: the batch, canceled, is written back');
is(fresh_sessions('rr', '9 canceled', 3), 2, '9: its canceled requests cost nothing: rr has 2 calls again');
is(online() - $before, 2, '9: the API saw those 2');

$node->stop;
$mock->stop;
done_testing();
