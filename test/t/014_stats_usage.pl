# Statistics, Prometheus metrics, usage per role and day, and budgets:
# counters move with hits, misses, retries and errors; the metrics parse
# with the Prometheus client's own parser; usage survives a restart, each
# role sees only its own; a budget stops its role at the limit, even with
# concurrent sessions, and nobody else.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use IPC::Run;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use ClaudeMock;
use ClaudeTest;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('stats', $mock, cache => 1, conf => "claude.max_retries = 2\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
sub as_role
{
	my ($role, $q) = @_;
	return $node->psql('postgres', $q, extra_params => [ '-U', $role ]);
}
sub stats_col { sql("SELECT $_[0] FROM claude_stats") }

# ---- claude_stats
sql("SELECT claude_stats_reset()");
is(stats_col('requests'), '0', 'claude_stats_reset() zeroes the counters');
sql("SELECT claude_complete('one')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache") == 1 }), 'the reply is cached');
sql("SELECT claude_complete('one')");
$mock->fault({ status => 529 });
sql("SELECT claude_complete('two')");
$mock->fault({ status => 429 });
sql("SELECT claude_complete('three')");
$mock->fault({ status => 400 });
my ($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('bad')");
like($err, qr/Claude API error 400/, 'a 400 fails the call');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache") == 3 }), 'three replies cached');

is(sql("SELECT concat_ws(' ', requests, succeeded, failed, retries, rate_limited, cache_hits, cache_misses) FROM claude_stats"),
	'4 3 1 2 1 1 4', 'requests 4, succeeded 3, failed 1, retries 2 (529, 429), rate_limited 1, 1 hit, 4 misses');
is(sql("SELECT s.input_tokens = c.i AND s.output_tokens = c.o FROM claude_stats s, "
	  . "(SELECT sum(input_tokens) i, sum(output_tokens) o FROM claude_cache) c"),
	't', 'tokens are those of the replies');
is(sql("SELECT round(s.cost_usd, 6) = round(c.usd, 6) AND s.cost_usd > 0 FROM claude_stats s, "
	  . "(SELECT sum(claude_cost_usd(model, response->'usage')) usd FROM claude_cache) c"),
	't', 'cost_usd is the list price of those tokens');
is(sql("SELECT latency_p50_ms > 0 AND latency_p50_ms <= latency_p95_ms AND latency_p95_ms <= latency_p99_ms FROM claude_stats"),
	't', 'latency percentiles are ordered');
cmp_ok(stats_col('latency_p99_ms'), '>=', 250, 'and p99 shows the retry backoff (' . stats_col('latency_p99_ms') . ' ms)');
is(sql("SELECT in_flight || ' ' || queued || ' ' || (connections >= 1) FROM claude_stats"), '0 0 true',
	'gauges: nothing in flight or queued, a connection kept');

# ---- claude_metrics() parses with the Prometheus client's parser
my $metrics = sql("SELECT claude_metrics()");
my ($json, $perr) = ('', '');
IPC::Run::run([ '/usr/bin/python3', "$root/test/metrics/check.py" ], '<', \$metrics, '>', \$json, '2>', \$perr)
  or diag("check.py: $perr");
my $m = eval { decode_json($json) } // { problems => ["unparsable: $perr"], values => {} };
is_deeply($m->{problems}, [], 'claude_metrics() parses, with every family and a sound histogram');
my $v = $m->{values};
is($v->{'claude_requests_total{status=200}'}, 3, 'claude_requests_total{status="200"}');
is($v->{'claude_requests_total{status=400}'}, 1, 'claude_requests_total{status="400"}');
is($v->{'claude_retries_total'}, stats_col('retries'), 'claude_retries_total matches claude_stats');
is($v->{'claude_cache_hits_total'}, 1, 'claude_cache_hits_total');
is($v->{'claude_tokens_total{type=input}'}, stats_col('input_tokens'), 'input tokens match');
is($v->{'claude_request_duration_seconds_count'}, 4, 'the histogram counts every request');
like($metrics, qr/^# TYPE claude_request_duration_seconds histogram$/m, 'with # TYPE lines');

sql("CREATE ROLE watcher LOGIN IN ROLE pg_monitor; CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO alice, bob, carol;");
($rc, $out, $err) = as_role('watcher', 'SELECT requests > 0 FROM claude_stats');
is($out, 't', 'pg_monitor members read claude_stats');
($rc, $out, $err) = as_role('watcher', 'SELECT claude_stats_reset()');
like($err, qr/permission denied/, 'but only a superuser resets it');
($rc, $out, $err) = as_role('alice', 'SELECT * FROM claude_stats');
like($err, qr/permission denied/, 'and plain roles do not read it');

# ---- usage per role and day
sql("SET claude.cache = off");
# alice's replies are cached (misses count as requests): one is a hit below
for my $i (1 .. 2) { ($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice $i', cache => true)"); }
($rc, $out, $err) = as_role('bob', "SELECT claude_complete('bob 1', cache => false)");
($rc, $out, $err) = as_role('alice', "SELECT role || ' ' || requests || ' ' || (input_tokens > 0) || ' ' || (cost_usd > 0) FROM claude_usage");
is($out, 'alice 2 true true', 'alice sees her own usage today: 2 requests, tokens, cost');
($rc, $out, $err) = as_role('alice', "SELECT count(*) FROM claude_usage WHERE role = 'bob'::regrole");
is($out, '0', 'but not bob\'s');
($rc, $out, $err) = as_role('alice', "SELECT count(*) FROM claude_usage_log");
like($err, qr/permission denied/, 'nor the log table');
is(sql("SELECT string_agg(role || ':' || requests, ' ' ORDER BY role::text) FROM claude_usage WHERE role IN ('alice', 'bob')"),
	'alice:2 bob:1', 'a superuser sees every role');
is(sql("SELECT day = (now() AT TIME ZONE 'UTC')::date FROM claude_usage WHERE role = 'alice'::regrole"), 't',
	'counted on the UTC day');

($rc, $out, $err) = as_role('alice', "SELECT claude_complete('priceless', model => 'claude-unpriced-1', cache => false)");
is(sql("SELECT unpriced_requests FROM claude_usage WHERE role = 'alice'::regrole AND model = 'claude-unpriced-1'"), '1',
	'a model without a price is counted as unpriced, not as free');

# AFTER trigger jobs count for the role that inserted the row
sql("CREATE TABLE notes (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER s AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('summary', 'Sum: {body}');
	GRANT INSERT ON notes TO alice; GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO alice;");
($rc, $out, $err) = as_role('alice', "INSERT INTO notes VALUES (1, 'queued by alice')");
ok(wait_until(sub { sql("SELECT summary IS NOT NULL FROM notes") eq 't' }), 'the job ran');
# a row per model: alice used two
ok(wait_until(sub { sql("SELECT sum(requests) FROM claude_usage WHERE role = 'alice'::regrole") == 4 }),
	'and counted for alice, who queued it');

# flushed to the table, so it survives a restart
ok(wait_until(sub { sql("SELECT sum(requests) FROM claude_usage_log WHERE role = 'alice'::regrole") eq '4' }, 30),
	'the database worker flushes usage to claude_usage_log');
$node->restart;
is(sql("SELECT sum(requests) FROM claude_usage WHERE role = 'alice'::regrole"), '4', 'usage survives a restart');

# ---- budgets
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('alice', 5)");
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice 5', cache => false)");
is($rc, 0, 'alice makes her 5th request of the day (4 were made before the restart)');
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice 6', cache => false)");
like($err, qr/budget of role alice is spent \(requests_per_day 5\)/, 'the 6th is refused, with "budget" in the message');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('alice 6', cache => false)",
	extra_params => [ '-U', 'alice', '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ZC402/, 'SQLSTATE ZC402');
($rc, $out, $err) = as_role('bob', "SELECT claude_complete('bob 2', cache => false)");
is($rc, 0, 'bob is not affected');
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice 1', cache => true)");
is($rc, 0, 'a cache hit of her own reply costs alice nothing and is allowed');
sql("UPDATE claude_budgets SET requests_per_day = 6 WHERE role = 'alice'::regrole");
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice 7', cache => false)");
is($rc, 0, 'a raised budget applies at once, without a restart');
# new sessions copy the budgets and prices an earlier session left in shared
# memory: five of them read claude_budgets at most once between them
my $budget_reads = sub { sql("SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'claude_budgets'") };
my $reads0 = $budget_reads->();
for my $i (1 .. 5)
{
	($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('fresh session $i', cache => false)");
	is($rc, 0, "a new session's first call ($i)") or diag($err);
}
cmp_ok($budget_reads->() - $reads0, '<=', 1, 'five new sessions read claude_budgets at most once');
# a session whose open transaction changed the budgets leaves no copy of them
sql("CREATE ROLE frank LOGIN; GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO frank;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('frank', 100);");
($rc, $out, $err) = $node->psql('postgres', "BEGIN; UPDATE claude_budgets SET requests_per_day = 0 WHERE role = 'frank'::regrole;
	SELECT claude_complete('uncommitted budget', cache => false); ROLLBACK;");
is($rc, 0, 'a call in a transaction that changed a budget') or diag($err);
($rc, $out, $err) = as_role('frank', "SELECT claude_complete('frank 1', cache => false)");
is($rc, 0, 'the rolled-back budget never reaches another session') or diag($err);
# (a committed change first, so that no copy holds for the next session)
sql("UPDATE claude_budgets SET requests_per_day = 99 WHERE role = 'frank'::regrole");
($rc, $out, $err) = $node->psql('postgres', "BEGIN; UPDATE claude_budgets SET requests_per_day = 0 WHERE role = 'frank'::regrole;
	SELECT claude_complete('uncommitted budget 2', cache => false); ROLLBACK;
	SET ROLE frank; SELECT claude_complete('frank 2', cache => false);");
is($rc, 0, 'nor the rest of its own session') or diag($err);
sql("INSERT INTO claude_budgets (role, tokens_per_day) VALUES ('bob', 1)");
($rc, $out, $err) = as_role('bob', "SELECT claude_complete('bob 3', cache => false)");
like($err, qr/tokens_per_day 1\)/, 'tokens_per_day stops bob once his tokens reach it');

# the plain case: requests_per_day = 2 refuses the third call
sql("CREATE ROLE dave LOGIN; GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO dave;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('dave', 2);");
my @dave = map { [ as_role('dave', "SELECT claude_complete('dave $_', cache => false)") ] } 1 .. 3;
is(join(' ', map { $_->[0] } @dave), '0 0 3', 'dave (requests_per_day = 2): two calls pass, the third fails');
like($dave[2][2], qr/budget/, 'with a budget error');
($rc, $out, $err) = as_role('carol', "SELECT claude_complete('carol 0', cache => false)");
is($rc, 0, 'while carol goes on');

# a cancelled request gives its reservation back (and counts, since it was sent)
sql("CREATE ROLE erin LOGIN; GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO erin;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('erin', 2);");
($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '300ms'; SELECT claude_complete('[[mock:hang]] erin', cache => false)",
	extra_params => [ '-U', 'erin' ]);
like($err, qr/statement timeout/, 'erin\'s first call hangs and is cancelled');
ok(wait_until(sub { sql("SELECT requests FROM claude_usage WHERE role = 'erin'::regrole") eq '1' }),
	'it reached the API, so it counts');
($rc, $out, $err) = as_role('erin', "SELECT claude_complete('erin 2', cache => false)");
is($rc, 0, 'her second call is allowed: the cancelled one holds no reservation') or diag($err);
($rc, $out, $err) = as_role('erin', "SELECT claude_complete('erin 3', cache => false)");
like($err, qr/budget/, 'her third is refused');

# concurrent sessions cannot overshoot
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('carol', 6)");
$mock->reset;
my @bg = map { start_bg($node, "SET ROLE carol; SELECT claude_complete('[[mock:delay=500]] carol $_', cache => false)") } 1 .. 12;
my ($ok, $refused) = (0, 0);
for my $h (@bg)
{
	my ($brc, $bout, $berr) = finish_bg($h);
	$ok++ if $brc == 0;
	$refused++ if $berr =~ /budget/;
}
is("$ok $refused", '5 7', '12 concurrent calls with 5 requests left in the budget: exactly 5 succeed');
is($mock->stats->{requests}, 5, 'and the API saw 5 requests');

# Message Batches count for their submitter as their results are written
sql("GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO bob;
	DELETE FROM claude_budgets WHERE role = 'bob'::regrole;
	CREATE TABLE docs (id int PRIMARY KEY, body text, summary text); ALTER TABLE docs OWNER TO bob;
	INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 3) i;
	ALTER SYSTEM SET claude.batch_poll_interval = 1; SELECT pg_reload_conf();");
$mock->config({ batch_delay_ms => 200 });
sql("SELECT claude_stats_reset()");
my $before = sql("SELECT requests FROM claude_usage WHERE role = 'bob'::regrole");
my $cost_before = sql("SELECT cost_usd FROM claude_usage WHERE role = 'bob'::regrole");
($rc, $out, $err) = as_role('bob', "CALL claude_enrich('docs', 'summary', 'Doc: {body}', mode => 'batch')");
is($rc, 0, 'bob submits a batch') or diag($err);
ok(wait_until(sub { sql("SELECT requests FROM claude_usage WHERE role = 'bob'::regrole") == $before + 3 }, 30),
	'its 3 results count for bob');
ok(wait_until(sub { sql("SELECT results_at IS NOT NULL FROM claude_batches") eq 't' }), 'the batch is written back');
is(sql("SELECT round(u.cost_usd - $cost_before, 9) = round(b.cost_usd, 9) AND b.cost_usd > 0 "
	  . "FROM claude_usage u, claude_batches b WHERE u.role = 'bob'::regrole"), 't',
	'at the batch price: bob\'s cost grew by the batch\'s half-price cost');
is(sql("SELECT s.input_tokens = b.input_tokens AND s.output_tokens = b.output_tokens "
	  . "AND round(s.cost_usd, 6) = round(b.cost_usd, 6) FROM claude_stats s, claude_batches b"),
	't', 'and claude_stats bills the batch\'s tokens and cost too');

$node->stop;
$mock->stop;
done_testing();
