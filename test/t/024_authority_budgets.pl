# Budgets apply the moment their change commits (issue 23, item 8):
#  8a a statement that began before a budget committed does not hand the
#     old settings to later sessions;
#  8b a REPEATABLE READ transaction sees a budget committed after its
#     snapshot, and so does its session after COMMIT;
#  8c a budget set by PREPARE TRANSACTION applies at COMMIT PREPARED;
# and a transaction that changes a budget reads each of its own changes.
# Requests are counted by the mock API itself.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
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
# Messages requests the API received
sub online { $mock->stats->{by_path}{'/v1/messages'} // 0 }
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
		GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text) TO $role;");
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
        EXCEPTION WHEN SQLSTATE 'CL402' THEN
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

$node->stop;
$mock->stop;
done_testing();
