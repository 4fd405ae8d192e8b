# Exact money, usage by model, server-wide budgets, claude_my_budget and
# budgets edited by role name (issue 29, "exact money"):
#  1 costs are integer nano-USD inside and exact numeric in SQL: 10,000
#    replies sum to the exact decimal in claude_usage_log, claude_usage and
#    claude_stats, and claude_cost_usd() keeps sub-cent digits;
#  2 usage is kept per role, day and model;
#  3 a budget holds across the databases of the server, also after a
#    restart (another database's usage is loaded by its worker);
#  4 claude_my_budget shows a role its own limits, use and what is left;
#  5 claude_budgets rows are found by role name; a role sees neither
#    another's budget nor its usage.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('money', $mock);
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }
sub as_role
{
	my ($role, $q, $db) = @_;
	return $node->psql($db // 'postgres', $q, extra_params => [ '-U', $role ]);
}

# ---- 1. exact sums over 10,000 replies
# claude-3-5-haiku: 0.80 and 4 USD per million tokens, which a float sums
# with drift (4.477103999999979 for 4.477104)
my $N = 10000;
sql("SELECT claude_stats_reset()");
is(sql("SELECT count(*) FROM claude_complete_many(array(SELECT 'money ' || lpad(i::text, 5, '0') "
	  . "FROM generate_series(1, $N) i), model => 'claude-3-5-haiku', cache => false) WHERE error IS NULL"),
	$N, "$N requests through claude_complete_many");
ok(wait_until(sub { sql("SELECT coalesce(sum(requests), 0) FROM claude_usage_log") eq $N }, 60),
	'flushed to claude_usage_log');
my $exact = "(SELECT (sum(input_tokens) * 0.80 + sum(output_tokens) * 4) / 1000000 FROM claude_usage_log)";
is(sql("SELECT sum(cost_usd) = $exact AND trim_scale(sum(cost_usd))::text = trim_scale($exact)::text "
	  . "AND $exact > 0 FROM claude_usage_log"), 't', 'sum(cost_usd) of the log is the exact decimal')
  or diag(sql("SELECT sum(cost_usd) || ' vs ' || $exact FROM claude_usage_log"));
is(sql("SELECT cost_usd = $exact FROM claude_usage WHERE model = 'claude-3-5-haiku'"), 't',
	'claude_usage: exact');
is(sql("SELECT cost_usd = $exact FROM claude_stats"), 't', 'claude_stats: exact')
  or diag(sql("SELECT cost_usd FROM claude_stats"));
is(sql("SELECT pg_typeof(cost_usd) FROM claude_stats"), 'numeric', 'money is numeric');
is(sql("SELECT claude_cost_usd('claude-3-haiku', '{\"cache_read_input_tokens\": 1}')"), '0.000000025',
	'claude_cost_usd keeps nano-USD: one cached token at 0.25 USD per million x 0.1');
is(sql("SELECT claude_cost_usd('claude-3-5-haiku', '{\"input_tokens\": 3, \"output_tokens\": 3}')"), '0.0000144',
	'and has no float digits');

# ---- 2. usage by model
sql("SELECT claude_complete('other model', model => 'claude-haiku-4-5', cache => false)");
ok(wait_until(sub { sql("SELECT string_agg(model || ':' || requests, ' ' ORDER BY model) FROM claude_usage")
	  eq "claude-3-5-haiku:$N claude-haiku-4-5:1" }),
	'claude_usage has a row per model');

# ---- 3-5. roles, budgets by name, two databases
sql("CREATE DATABASE dbb");
sql("CREATE EXTENSION claude", 'dbb');
for my $db ('postgres', 'dbb')
{
	sql("CREATE ROLE analyst LOGIN; CREATE ROLE other LOGIN;") if $db eq 'postgres';
	sql("GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO analyst, other;
		INSERT INTO claude_budgets (role, requests_per_day) VALUES ('analyst', 1), ('other', 100);", $db);
}

# 5. by name: UPDATE, DELETE and INSERT find the row by the role's name
sql("UPDATE claude_budgets SET requests_per_day = 3 WHERE role = 'analyst'");
is(sql("SELECT requests_per_day FROM claude_budgets WHERE role = 'analyst'"), '3', 'UPDATE ... WHERE role = name');
sql("UPDATE claude_budgets SET requests_per_day = 3 WHERE 'analyst' = role", 'dbb');
is(sql("SELECT requests_per_day FROM claude_budgets WHERE role = 'analyst'", 'dbb'), '3', 'either way round');
is(sql("SELECT count(*) FROM claude_budgets WHERE role <> 'analyst'"), '1', '<> too');
sql("DELETE FROM claude_budgets WHERE role = 'other'");
is(sql("SELECT count(*) FROM claude_budgets WHERE role = 'other'"), '0', 'DELETE ... WHERE role = name');
sql("INSERT INTO claude_budgets (role, usd_per_day) VALUES ('other', 5)");
my ($rc, $out, $err) = $node->psql('postgres', "UPDATE claude_budgets SET requests_per_day = 1 WHERE role = 'nobody'");
like($err, qr/role "nobody" does not exist/, 'a name that is no role is an error, not an oid');
is(sql("SELECT 'analyst'::regrole = 'analyst'::regrole::oid::regrole, 'analyst'::regrole::oid = 'analyst'::regrole"),
	't|t', 'comparisons of roles and oids mean what they meant');

# 4. claude_my_budget, and 3. server-wide: 3 requests a day in each database
# means 3 in all
($rc, $out, $err) = as_role('analyst', "SELECT requests_per_day, requests_used, requests_left, "
	  . "resets_at = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day' "
	  . "FROM claude_my_budget");
is($out, '3|0|3|t', 'claude_my_budget: limit, nothing used, all left, the end of the UTC day') or diag($err);
for my $i (1 .. 2)
{
	($rc, $out, $err) = as_role('analyst', "SELECT claude_complete('a $i', cache => false)");
	is($rc, 0, "analyst's call $i in the first database") or diag($err);
}
($rc, $out, $err) = as_role('analyst', "SELECT claude_complete('b 1', cache => false)", 'dbb');
is($rc, 0, 'a third in the second database') or diag($err);
($rc, $out, $err) = as_role('analyst', "SELECT claude_complete('b 2', cache => false)", 'dbb');
like($err, qr/daily budget of role analyst is spent \(requests_per_day 3\)/, 'a fourth is refused there');
($rc, $out, $err) = as_role('analyst', "SELECT claude_complete('a 3', cache => false)");
like($err, qr/budget/, 'and in the first: 3 in all, not 3 in each');
($rc, $out, $err) = as_role('analyst', "SELECT requests_used || ' ' || requests_left || ' ' || role FROM claude_my_budget", 'dbb');
is($out, '3 0 analyst', 'claude_my_budget counts every database');
($rc, $out, $err) = as_role('other', "SELECT role || ' ' || usd_per_day || ' ' || (usd_used = 0) || ' ' || "
	  . "usd_left || ' ' || (requests_per_day IS NULL) FROM claude_my_budget");
is($out, 'other 5 true 5 true', 'another role sees only its own budget, in numeric USD');

# hostile: neither another's budget row nor its usage
($rc, $out, $err) = as_role('other', "SELECT * FROM claude_budgets");
like($err, qr/permission denied/, 'claude_budgets is closed to roles');
($rc, $out, $err) = as_role('other', "SELECT count(*) FROM claude_usage WHERE role = 'analyst'");
is($out, '0', "nor do they see another's usage");
($rc, $out, $err) = as_role('other', "SELECT count(*) FROM claude_my_budget WHERE role = 'analyst'");
is($out, '0', 'claude_my_budget has no row of another role');

# after a restart another database's usage is only in its claude_usage_log:
# its worker loads it
ok(wait_until(sub { sql("SELECT coalesce(sum(requests), 0) FROM claude_usage_log WHERE role = 'analyst'") eq '2' }),
	'the first database flushed its 2');
ok(wait_until(sub { sql("SELECT coalesce(sum(requests), 0) FROM claude_usage_log WHERE role = 'analyst'", 'dbb') eq '1' }),
	'the second its 1');
$node->restart;
ok(wait_until(sub {
	(as_role('analyst', "SELECT requests_used FROM claude_my_budget", 'dbb'))[1] eq '3' }),
	'after a restart the second database counts the first one\'s usage');
($rc, $out, $err) = as_role('analyst', "SELECT claude_complete('b 3', cache => false)", 'dbb');
like($err, qr/budget/, 'and refuses');
($rc, $out, $err) = as_role('analyst', "SELECT claude_complete('a 4', cache => false)");
like($err, qr/budget/, 'so does the first');

done_testing();
