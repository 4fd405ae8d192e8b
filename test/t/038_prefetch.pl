# Read-ahead (issue 28): claude_* calls of a statement go out together
# (claude.prefetch rows at a time) and rows keep their order and results;
# LIMIT bounds what is sent, the first failing row raises its error and the
# replies already paid for are cached, a cancel aborts the window, SCROLL
# cursors and prepared statements work, every fallback runs one at a time,
# cheap quals run before paid ones, and EXPLAIN sends nothing.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
# the cache is off for the node (counts would otherwise hit it); case 4 turns
# it on for its session
my $node = new_node('prefetch', $mock, conf => "claude.max_retries = 0\n");
sub sql { $node->safe_psql('postgres', $_[0]) }

# the GUC must exist (and off cases below then set it); main has none
my $has_guc = sql("SELECT count(*) FROM pg_settings WHERE name = 'claude.prefetch'");
is(sql("SELECT coalesce((SELECT setting || ',' || min_val || ',' || max_val || ',' || context
	FROM pg_settings WHERE name = 'claude.prefetch'), 'none')"),
	'32,0,256,user', 'claude.prefetch: default 32, 0 to 256, user-settable');
my $OFF = $has_guc ? 'SET claude.prefetch = 0; ' : '';

# Run $sql with every reply delayed by $latency ms; returns (rc, stdout,
# stderr, stats) with the mock's counters for this statement alone, and
# {msgs} the number of /v1/messages requests.
sub run
{
	my ($sql, $latency) = @_;
	wait_until(sub { $mock->stats->{concurrency} == 0 })
	  or fail('requests of the last statement are still in flight');
	$mock->reset;
	$mock->config({ latency_ms => $latency // 0 });
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	my $st = $mock->stats;
	# Messages requests only: claude_classify also asks /v1/models once
	$st->{msgs} = $st->{by_path}{'/v1/messages'} // 0;
	return ($rc, $out, $err, $st);
}

# the /v1/messages requests whose prompt matches $re, from the mock's records
sub matching
{
	my ($re) = @_;
	return grep { $_->{path} eq '/v1/messages' && JSON::PP->new->canonical->encode($_->{body}) =~ $re }
	  @{ $mock->requests(0) };
}
sub count_of { return scalar(my @r = matching($_[0])) }

# the largest number of /v1/messages requests whose prompt matches $re that
# were open at once, from the mock's request records
sub peak_of
{
	my ($re) = @_;
	my @ev;
	for my $r (matching($re))
	{
		push @ev, [ $r->{t_start}, 1 ], [ $r->{t_end} // 9e99, -1 ];
	}
	my ($n, $peak) = (0, 0);
	for my $e (sort { $a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] } @ev)
	{
		$n += $e->[1];
		$peak = $n if $n > $peak;
	}
	return $peak;
}

sql(q{
	CREATE TABLE t24 (id int PRIMARY KEY, body text, c text);
	INSERT INTO t24 SELECT i, CASE WHEN i % 2 = 0 THEN 'rain on day ' ELSE 'sun on day ' END || i, NULL
	  FROM generate_series(1, 24) i;
	CREATE TABLE u24 (id int, c text);
	CREATE TABLE pt (id int, c text) PARTITION BY RANGE (id);
	CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (1) TO (13);
	CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (13) TO (25);
	INSERT INTO pt SELECT i, NULL FROM generate_series(1, 24) i;
	CREATE MATERIALIZED VIEW mv AS SELECT id, claude_complete('mv ' || id) AS c FROM t24 WITH NO DATA;
	CREATE TABLE big (id int, body text);
	INSERT INTO big SELECT i, 'big ' || i FROM generate_series(1, 2000) i;});

# ---- 1. order and results equal a one-at-a-time run
# rows stored out of id order, replies coming back out of order (delays by
# row), a NULL prompt, two identical prompts, two claude calls per row
sql(q{
	CREATE TABLE o30 (id int, body text, p text);
	INSERT INTO o30 SELECT i, CASE WHEN i % 3 = 0 THEN 'rain ' ELSE 'sun ' END || i,
	    CASE WHEN i = 11 THEN NULL WHEN i = 13 THEN 'order same' WHEN i = 14 THEN 'order same'
	         ELSE '[[mock:delay=' || ((i * 37) % 5) * 40 || ']] order ' || i END
	  FROM generate_series(1, 30) i ORDER BY (i * 7) % 30;});
my @order = map { $_->[1] } sort { $a->[0] <=> $b->[0] } map { [ ($_ * 7) % 30, $_ ] } 1 .. 30;
my $expect = join("\n", map {
	my $p = $_ == 11 ? '' : ($_ == 13 || $_ == 14) ? 'order same' : '[[mock:delay=' . (($_ * 37) % 5) * 40 . "]] order $_";
	"$_|$p|" . ($_ % 3 == 0 ? 'rain' : 'sun') } @order);
my $q1 = q{SELECT id, claude_complete(p), claude_classify(body, ARRAY['sun', 'rain']) FROM o30};
my ($rc, $off, $err) = run($OFF . $q1);
my $out;
is($off, $expect, 'one at a time: rows in stored order, each with its own reply');
my ($rc2, $on, $err2, $st) = run($q1);
is($rc2, 0, 'with read-ahead the statement succeeds') or diag($err2);
is($on, $off, 'with read-ahead: the same rows, in the same order, with the same results');
cmp_ok($st->{max_concurrency}, '>', 1, "and its requests overlapped (peak $st->{max_concurrency})");
my $q1w = q{SELECT id, claude_complete(p) FROM o30 WHERE claude_if(body, 'mentions rain')};
(undef, $off) = run($OFF . $q1w);
(undef, $on) = run($q1w);
is($on, $off, 'a WHERE filter: the same rows in the same order as one at a time');
is(scalar(() = $on =~ /\n/g) + 1, 10, 'the ten rows the condition is true of');

# ---- 2. several requests in flight for each kind of statement; one with
# claude.prefetch = 0
my @kinds = (
	[ 'SELECT', q{SELECT id, claude_complete('s ' || id) FROM t24},
	  sub { $_[0] eq join("\n", map { "$_|s $_" } 1 .. 24) } ],
	[ 'UPDATE', q{UPDATE t24 SET c = claude_complete('u ' || id)},
	  sub { sql(q{SELECT count(*) FROM t24 WHERE c = 'u ' || id}) == 24 } ],
	[ 'UPDATE of a partitioned table', q{UPDATE pt SET c = claude_complete('pu ' || id)},
	  sub { sql(q{SELECT count(*) || ',' || count(DISTINCT tableoid) FROM pt WHERE c = 'pu ' || id}) eq '24,2' } ],
	[ 'INSERT ... SELECT', q{TRUNCATE u24; INSERT INTO u24 SELECT id, claude_complete('i ' || id) FROM t24},
	  sub { sql(q{SELECT count(*) FROM u24 WHERE c = 'i ' || id}) == 24 } ],
	[ 'CREATE TABLE AS', q{DROP TABLE IF EXISTS ct24; CREATE TABLE ct24 AS SELECT id, claude_complete('c ' || id) AS c FROM t24},
	  sub { sql(q{SELECT count(*) FROM ct24 WHERE c = 'c ' || id}) == 24 } ],
	[ 'REFRESH MATERIALIZED VIEW', q{REFRESH MATERIALIZED VIEW mv},
	  sub { sql(q{SELECT count(*) FROM mv WHERE c = 'mv ' || id}) == 24 } ],
	[ 'COPY (query) TO', q{COPY (SELECT id, claude_complete('cp ' || id) FROM t24) TO STDOUT},
	  sub { $_[0] eq join("\n", map { "$_\tcp $_" } 1 .. 24) } ],
	[ 'WHERE claude_if', q{SELECT id FROM t24 WHERE claude_if(body, 'mentions rain')},
	  sub { $_[0] eq join("\n", map { $_ * 2 } 1 .. 12) } ],
	[ 'WHERE claude_classify = label', q{SELECT id FROM t24 WHERE claude_classify(body, ARRAY['sun', 'rain']) = 'rain'},
	  sub { $_[0] eq join("\n", map { $_ * 2 } 1 .. 12) } ],
	[ 'a CTE', q{WITH x AS (SELECT id, claude_complete('w ' || id) AS c FROM t24) SELECT id, c FROM x},
	  sub { $_[0] eq join("\n", map { "$_|w $_" } 1 .. 24) } ],
	[ 'a data-modifying CTE', q{WITH x AS (UPDATE t24 SET c = claude_complete('wu ' || id) RETURNING id) SELECT count(*) FROM x},
	  sub { $_[0] eq '24' && sql(q{SELECT count(*) FROM t24 WHERE c = 'wu ' || id}) == 24 } ],
);
for my $k (@kinds)
{
	my ($name, $q, $check) = @$k;
	($rc, $on, $err, $st) = run($q, 200);
	is($rc, 0, "$name with read-ahead succeeds") or diag($err);
	ok($check->($on), "$name: every row got its own reply");
	cmp_ok($st->{max_concurrency}, '>=', 4, "$name: requests in flight at once (peak $st->{max_concurrency})");
	($rc, $off, $err, $st) = run($OFF . $q, 30);
	is($rc, 0, "$name with claude.prefetch = 0 succeeds") or diag($err);
	ok($check->($off), "$name, prefetch 0: every row got its own reply");
	is($st->{max_concurrency}, 1, "$name, prefetch 0: one request at a time");
}

# ---- 3. LIMIT k never sends more than k
($rc, $out, $err, $st) = run(q{SELECT id, claude_complete('lim ' || id) FROM big LIMIT 5}, 50);
is($out, join("\n", map { "$_|lim $_" } 1 .. 5), 'LIMIT 5 over 2,000 rows: the first five');
cmp_ok($st->{msgs}, '<=', 5, "sent at most 5 requests ($st->{msgs})");
($rc, $out, $err, $st) = run(q{SELECT id, claude_complete('limo ' || id) FROM big LIMIT 5 OFFSET 3}, 50);
is($out, join("\n", map { "$_|limo $_" } 4 .. 8), 'LIMIT 5 OFFSET 3: rows 4 to 8');
cmp_ok($st->{msgs}, '<=', 8, "sent at most 8 requests ($st->{msgs})");
($rc, $out, $err, $st) = run(q{SET plan_cache_mode = force_generic_plan;
	PREPARE lim(int, text) AS SELECT id, claude_complete('limp ' || $2 || ' ' || id) FROM big LIMIT $1;
	EXECUTE lim(5, 'a'); EXECUTE lim(2, 'b');}, 50);
is($out, join("\n", (map { "$_|limp a $_" } 1 .. 5), (map { "$_|limp b $_" } 1 .. 2)),
	'a generic plan with LIMIT $1: five rows, then two');
my $n = count_of(qr/limp a /);
cmp_ok($n, '<=', 5, "LIMIT \$1 = 5 sent at most 5 requests ($n)");
$n = count_of(qr/limp b /);
cmp_ok($n, '<=', 2, "LIMIT \$1 = 2 sent at most 2 requests ($n)");
($rc, $out, $err, $st) = run(q{PREPARE lima(int, text) AS SELECT claude_complete('lima ' || $2 || ' ' || id) FROM big LIMIT $1;
	} . join(' ', map { "EXECUTE lima(5, 'x$_');" } 1 .. 7), 20);
is(scalar(my @rows = split /\n/, $out), 35, 'LIMIT $1 executed 7 times (custom, then generic plans): 35 rows');
for my $i (1 .. 7)
{
	$n = count_of(qr/lima x$i /);
	cmp_ok($n, '<=', 5, "EXECUTE $i sent at most 5 requests ($n)");
}

# ---- 4. an error in row 7 of 40: that row's error; what was sent is cached
sql(q{
	CREATE TABLE e40 (id int, p text);
	INSERT INTO e40 SELECT i, CASE WHEN i = 7 THEN '[[mock:delay=300]][[mock:status=400]][[mock:error_message=row seven is refused]] ' ELSE '' END
	    || 'errcase ' || i FROM generate_series(1, 40) i;});
my $cache_on = 'SET claude.cache = on; ';
($rc, $out, $err) = run($cache_on . q{SELECT id, claude_complete(p) FROM e40}, 100);
like($err, qr/Claude API error 400 invalid_request_error: row seven is refused/, "row 7's error is raised");
my %sent = map { JSON::PP->new->encode($_->{body}) =~ /errcase (\d+)/; ($1 => 1) } matching(qr/errcase \d+/);
delete $sent{7};
my $nsent = keys %sent;
note("sent before the error: rows " . join(',', sort { $a <=> $b } keys %sent));
ok(wait_until(sub { sql(q{SELECT count(*) FROM claude_cache WHERE request::text LIKE '%errcase %'}) == $nsent }),
	"all $nsent other requests sent before the error reach the cache")
  or diag(sql(q{SELECT count(*) FROM claude_cache WHERE request::text LIKE '%errcase %'}) . ' cached');
($rc, $out, $err, $st) = run($cache_on . q{SELECT id, claude_complete(p) FROM e40 WHERE id <> 7}, 0);
is($out, join("\n", map { "$_|errcase $_" } grep { $_ != 7 } 1 .. 40), 'the rerun without row 7 returns the 39 rows');
is($st->{msgs}, 39 - $nsent, 'and sends only the rows not sent the first time: none is paid twice');

# the first failing row in order wins over a later one that fails sooner,
# and over a later row whose arguments raise
sql(q{
	CREATE TABLE e2 (id int, p text);
	INSERT INTO e2 SELECT i, CASE WHEN i = 9 THEN '[[mock:delay=300]][[mock:status=400]][[mock:error_message=row nine]] '
	    WHEN i = 12 THEN '[[mock:status=403]][[mock:error_message=row twelve]] ' ELSE '' END || 'first ' || i
	  FROM generate_series(1, 16) i;});
($rc, $out, $err) = run(q{SELECT id, claude_complete(p) FROM e2}, 20);
like($err, qr/error 400 invalid_request_error: row nine/, 'row 9 fails late, row 12 early: row 9\'s error is raised');
# (an error computing a row's arguments comes when the row is read ahead, up
# to claude.prefetch rows early: README, Read-ahead)
($rc, $out, $err) = run(($has_guc ? 'SET claude.prefetch = 4; ' : '')
	. q{SELECT id, claude_complete(p || (100 / (id - 16))) FROM e2}, 20);
like($err, qr/row nine/, 'row 16, more than a window after row 9, divides by zero in its arguments: row 9\'s error comes first');
($rc, $out, $err) = run(q{SELECT id, claude_complete(p || (100 / (id - 5))) FROM e2}, 20);
like($err, qr/division by zero/, 'and row 5\'s division by zero comes before row 9');

# ---- 5. a cancel or statement_timeout mid-window aborts everything in flight
# (the first rows answer, so the window grows; then every row hangs)
sql(q{CREATE TABLE cx40 (id int, p text);
	INSERT INTO cx40 SELECT i, CASE WHEN i > 7 THEN '[[mock:hang]] ' ELSE '' END || 'cancelcase ' || i
	  FROM generate_series(1, 40) i;});
$mock->reset;
my $h = start_bg($node, q{SELECT id, claude_complete(p) FROM cx40 /* cancel-me */});
ok(wait_until(sub { $mock->stats->{concurrency} >= 4 }, 15), 'several hanging requests are in flight at once')
  or diag('in flight: ' . $mock->stats->{concurrency});
my $ms;
($rc, $out, $err, $ms) = cancel_bg($node, $h, 'cancel-me');
like($err, qr/canceling statement due to user request/, 'pg_cancel_backend ends the statement');
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }, 10), 'and every request in flight is aborted');
($rc, $out, $err, $st) = run(q{SET statement_timeout = '3s'; SELECT id, claude_complete(p) FROM cx40}, 0);
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout ends the statement');
cmp_ok($st->{max_concurrency}, '>=', 4, "with several requests in flight ($st->{max_concurrency})");
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }, 10), 'and every request in flight is aborted');
is(sql(q{SELECT count(claude_complete('after cancel ' || i)) FROM generate_series(1, 8) i}), '8', 'calls work afterwards');

# ---- 6. a SCROLL cursor, FETCH BACKWARD: right rows, no request repeated
($rc, $out, $err, $st) = run(q{BEGIN;
	DECLARE c SCROLL CURSOR FOR SELECT id, claude_complete('cur ' || id) FROM t24;
	FETCH 5 FROM c; FETCH BACKWARD 2 FROM c; FETCH ALL FROM c; FETCH ABSOLUTE 1 FROM c; COMMIT;}, 20);
is($out, join("\n", map { "$_|cur $_" } 1 .. 5, 4, 3, 4 .. 24, 1), 'FETCH 5, BACKWARD 2, ALL, ABSOLUTE 1 return the right rows')
  or diag($err);
is($st->{msgs}, 24, 'each row was requested once: rows fetched again are not sent again');
($rc, $out, $err, $st) = run(q{BEGIN; DECLARE n NO SCROLL CURSOR FOR SELECT id, claude_complete('ncur ' || id) FROM big;
	FETCH 5 FROM n; CLOSE n; COMMIT;}, 20);
is($out, join("\n", map { "$_|ncur $_" } 1 .. 5), 'a cursor over 2,000 rows, 5 fetched');
cmp_ok($st->{msgs}, '<=', 12, "read ahead about what it consumed ($st->{msgs} requests)");

# ---- 7. a prepared statement with prefetch on and off: 5 custom plans, then
# the generic one (shown by EXPLAIN VERBOSE of the 11th)
# (without the setting, as on the code before it, every EXECUTE is "on")
{
	my $on = $has_guc ? 'RESET claude.prefetch; ' : '';
	my $s = "PREPARE ps(text) AS SELECT id, claude_complete('ps ' || \$1 || ' ' || id) FROM t24;\n";
	for my $i (1 .. 10)
	{
		$s .= ($i % 2 ? $on : $OFF) . "EXECUTE ps('x$i');\n";
	}
	$s .= "EXPLAIN (VERBOSE, COSTS OFF) EXECUTE ps('x11');";
	($rc, $out, $err) = run($s, 50);
	is($rc, 0, 'PREPARE and ten EXECUTEs') or diag($err);
	like($out, qr/'ps '::text \|\| \$1/, 'executions 6 to 10 use the generic plan') or diag($out);
	for my $i (1 .. 10)
	{
		my $peak = peak_of(qr/ps x$i /);
		if ($i % 2) { cmp_ok($peak, '>', 1, "EXECUTE $i, prefetch on: requests overlap ($peak)") }
		else { is($peak, 1, "EXECUTE $i, claude.prefetch = 0: one at a time") }
	}
}

# ---- 8. every fallback runs one call at a time
sql(q{
	CREATE TABLE f6 (id int PRIMARY KEY, body text, c text);
	CREATE TABLE g6 (id int PRIMARY KEY, body text);
	INSERT INTO f6 SELECT i, 'rain ' || i, NULL FROM generate_series(1, 6) i;
	INSERT INTO g6 SELECT i, 'rain ' || i FROM generate_series(1, 6) i;
	CREATE TABLE h6 (c text);});
my @fallbacks = (
	[ 'CASE WHEN', q{SELECT CASE WHEN id > 0 THEN claude_complete('fb case ' || id) END FROM f6} ],
	[ 'COALESCE', q{SELECT COALESCE(claude_complete('fb coalesce ' || id), 'none') FROM f6} ],
	[ 'OR in WHERE', q{SELECT id FROM f6 WHERE id > 100 OR claude_if(body, 'mentions rain')} ],
	[ 'AND inside an expression', q{SELECT id > 0 AND claude_if(body, 'mentions rain') FROM f6} ],
	[ 'FILTER of an aggregate', q{SELECT count(*) FILTER (WHERE claude_if(body, 'mentions rain')) FROM f6} ],
	[ 'random() in the target list', q{SELECT claude_complete('fb random ' || id), random() FROM f6} ],
	[ 'random() in the arguments', q{SELECT claude_complete('fb random ' || id || (random() < 2)) FROM f6} ],
	[ 'FOR UPDATE', q{SELECT id, claude_complete('fb forupdate ' || id) FROM f6 FOR UPDATE} ],
	[ 'SKIP LOCKED', q{SELECT id, claude_complete('fb skiplocked ' || id) FROM f6 FOR UPDATE SKIP LOCKED} ],
	[ 'a scalar subquery', q{SELECT (SELECT claude_complete('fb sub ' || f6.id)) FROM f6} ],
	[ 'EXISTS', q{SELECT id FROM f6 WHERE EXISTS (SELECT 1 FROM g6 WHERE g6.id = f6.id AND claude_if(g6.body, 'mentions rain'))} ],
	[ 'the inner side of a join', q{SELECT f6.id, s.c FROM f6, LATERAL (SELECT claude_complete('fb inner ' || f6.id || ' ' || g6.id) AS c FROM g6 WHERE g6.id = f6.id) s} ],
	[ 'an aggregate argument', q{SELECT string_agg(claude_complete('fb agg ' || id), ',') FROM f6} ],
	[ 'MERGE', q{MERGE INTO f6 USING g6 ON f6.id = g6.id WHEN MATCHED THEN UPDATE SET c = claude_complete('fb merge ' || g6.id)} ],
	[ 'ON CONFLICT DO UPDATE SET', q{INSERT INTO f6 SELECT id, body FROM g6 ON CONFLICT (id) DO UPDATE SET c = claude_complete('fb conflict ' || excluded.id)} ],
	[ 'RETURNING', q{UPDATE f6 SET c = 'r' RETURNING claude_complete('fb returning ' || id)} ],
	[ 'VALUES', q{SELECT * FROM (VALUES } . join(', ', map { "(claude_complete('fb values $_'))" } 1 .. 6) . q{) v(c)} ],
	[ 'INSERT ... VALUES', q{INSERT INTO h6 VALUES } . join(', ', map { "(claude_complete('fb insvalues $_'))" } 1 .. 6) ],
	[ 'nested calls', q{SELECT claude_complete(claude_complete('fb nested ' || id)) FROM f6} ],
);
for my $f (@fallbacks)
{
	my ($name, $q) = @$f;
	($rc, $out, $err, $st) = run($q, 60);
	is($rc, 0, "fallback $name: succeeds") or diag($err);
	cmp_ok($st->{msgs}, '>=', 6, "fallback $name: sent its requests ($st->{msgs})");
	is($st->{max_concurrency}, 1, "fallback $name: one at a time");
}

# ---- 9. a cheap filter runs before a paid one
sql(q{CREATE TABLE q40 (id int, body text);
	INSERT INTO q40 SELECT i, CASE WHEN i % 2 = 0 THEN 'rain ' ELSE 'sun ' END || i FROM generate_series(1, 40) i;});
is(sql(q{SELECT string_agg(proname || '=' || (procost >= 10000), ',' ORDER BY proname) FROM pg_proc
	WHERE proname IN ('claude_complete', 'claude_messages', 'claude_extract', 'claude_classify', 'claude_if')}),
	'claude_classify=true,claude_complete=true,claude_extract=true,claude_if=true,claude_messages=true',
	'the paid functions cost 10000 or more');
for my $paid (q{claude_if(body, 'mentions rain')}, q{claude_classify(body, ARRAY['sun', 'rain']) = 'rain'},
	q{claude_complete('cheap ' || body) = 'cheap rain 4'})
{
	my $q = "SELECT id FROM q40 WHERE $paid AND id % 4 = 0";
	($rc, $out, $err, $st) = run($q, 0);
	is($rc, 0, "paid qual written first: $paid") or diag($err);
	is($st->{msgs}, 10, "$paid AND id % 4 = 0 over 40 rows: 10 requests");
	my $plan = sql("EXPLAIN (COSTS OFF) $q");
	my ($filter) = grep { /id % 4/ } split /\n/, $plan;
	ok(defined $filter && ($filter !~ /claude_/ || index($filter, 'id % 4') < index($filter, 'claude_')),
		"EXPLAIN: the cheap qual is evaluated first")
	  or diag($plan);
}

# ---- 10. EXPLAIN without ANALYZE sends nothing and shows the node
($rc, $out, $err, $st) = run(q{EXPLAIN SELECT id, claude_complete('ex ' || id) FROM t24;
	EXPLAIN UPDATE t24 SET c = claude_complete('ex ' || id);
	EXPLAIN SELECT id FROM t24 WHERE claude_if(body, 'mentions rain');}, 0);
is($rc, 0, 'EXPLAIN of read-ahead statements') or diag($err);
is(scalar(() = $out =~ /Custom Scan \(ClaudePrefetch\)/g), 3, 'shows Custom Scan (ClaudePrefetch) in each')
  or diag($out);
like($out, qr/Prefetch: 32/, 'with its window');
is($st->{requests}, 0, 'and sends no request');

$node->stop;
done_testing();
