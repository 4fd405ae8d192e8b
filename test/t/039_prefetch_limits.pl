# Read-ahead (issue 28) against the limits 038 does not reach: an
# EvalPlanQual recheck of a row another session updated, every one of the
# six functions read ahead, a requests_per_day budget, the fair share of
# request slots, and hostile roles (no EXECUTE; look-alike functions and
# operators first in search_path).
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
# 16 request slots: a session's bulk share is 16 / 4 = 4 (case 4)
my $node = new_node('prefetch_limits', $mock,
	conf => "claude.max_retries = 0\nclaude.max_requests = 16\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
my $OFF = 'SET claude.prefetch = 0; ';

# Run $sql (as $role if given) with replies delayed by $latency ms; returns
# (rc, stdout, stderr, the mock's stats for this statement alone).
sub run
{
	my ($sql, $latency, $role) = @_;
	wait_until(sub { $mock->stats->{concurrency} == 0 })
	  or fail('requests of the last statement are still in flight');
	$mock->reset;
	$mock->config({ latency_ms => $latency // 0 });
	my ($rc, $out, $err) = $node->psql('postgres', $sql,
		$role ? (extra_params => [ '-U', $role ]) : ());
	return ($rc, $out, $err, $mock->stats);
}

# how many times each prompt was sent to /v1/messages, from the mock's records
sub prompts_sent
{
	my %n;
	for my $r (@{ $mock->requests(0) })
	{
		next unless $r->{path} eq '/v1/messages' && ref $r->{body} eq 'HASH';
		my $c = $r->{body}{messages}[-1]{content};
		$c = join('', map { $_->{text} // '' } @$c) if ref $c eq 'ARRAY';
		$n{$c}++;
	}
	return \%n;
}

# the "ERROR:  SQLSTATE: message" line of psql's verbose stderr
sub error_line
{
	my ($err) = @_;
	my ($line) = $err =~ /^(?:psql:[^\n]*?)?(ERROR:\s+\w{5}:[^\n]*)/m;
	return $line // "(no error) $err";
}

# a new role that may call claude_complete, with a daily budget
sub budget_role
{
	my ($role, $column, $limit) = @_;
	sql(qq{CREATE ROLE $role LOGIN;
		GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO $role;
		INSERT INTO claude_budgets (role, $column) VALUES ('$role', $limit);});
}

# the error lines of two runs as two roles, each role's name left out
sub without_role
{
	my ($line, $role) = @_;
	$line =~ s/\b$role\b/ROLE/g;
	return $line;
}

sql(q{CREATE TABLE s12 (id int PRIMARY KEY, body text, c text);
	INSERT INTO s12 SELECT i, CASE WHEN i % 3 = 0 THEN 'rain on day ' ELSE 'sun on day ' END || i, NULL
	  FROM generate_series(1, 12) i;
	GRANT SELECT ON s12 TO PUBLIC;});

# ---- 1. EvalPlanQual: a row updated by another session while the UPDATE
# reads ahead is rechecked with its new version, its call made alone
sql(q{CREATE TABLE ep (id int PRIMARY KEY, body text, c text);
	INSERT INTO ep SELECT i, 'old ' || i, NULL FROM generate_series(1, 12) i;});
my $epq = q{UPDATE ep SET c = claude_complete('epq ' || body) WHERE id <= 12};
like(sql("EXPLAIN (COSTS OFF) $epq"), qr/Custom Scan \(ClaudePrefetch\)/, 'EPQ: the UPDATE reads ahead');
my $b = $node->background_psql('postgres');
$b->query_safe(q{BEGIN; UPDATE ep SET body = 'new 5' WHERE id = 5;});
$mock->reset;
$mock->config({ latency_ms => 200 });
my $h = start_bg($node, "$epq /* epq-marker */");
ok( wait_until(sub {
			sql(q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%epq-marker%'
				AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()}) == 1
		}, 30),
	'EPQ: the UPDATE waits for the row the other session updated');
$b->query_safe('COMMIT');
$b->quit;
my ($rc, $out, $err) = finish_bg($h);
is($rc, 0, 'EPQ: the UPDATE finishes once the other session commits') or diag($err);
my $st = $mock->stats;
cmp_ok($st->{max_concurrency}, '>', 1, "EPQ: its requests overlapped (peak $st->{max_concurrency})");
is(sql(q{SELECT c FROM ep WHERE id = 5}), 'epq new 5', 'EPQ: the rechecked row got the reply to its NEW version');
is(sql(q{SELECT count(*) FROM ep WHERE id <> 5 AND c = 'epq old ' || id}), '11', 'EPQ: every other row its own reply');
my $sent = prompts_sent();
is($sent->{'epq new 5'}, 1, 'EPQ: the recheck sent its call once');
my @dup = grep { $sent->{$_} > 1 } sort keys %$sent;
is("@dup", '', 'EPQ: no request sent twice');
is(scalar(grep { /^epq old (\d+)$/ && $1 != 5 } keys %$sent), 11, 'EPQ: each other row sent once');
note('read ahead with the old version of row 5: ' . ($sent->{'epq old 5'} // 0));

# ---- 2. all six functions read ahead, with the results of a one-at-a-time run
my $msgreq = q{jsonb_build_object('max_tokens', 32, 'messages',
	jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'msgs ' || id)))};
my @six = (
	[ 'claude_complete', q{SELECT id, claude_complete('six ' || body) FROM s12} ],
	# the Message's id is the mock's request counter: left out
	[ 'claude_messages', qq{SELECT id, claude_messages($msgreq) - 'id' FROM s12} ],
	[ 'claude_extract', q{SELECT id, claude_extract(body, '{"type": "object", "properties": {"weather": {"type": "string"}}, "required": ["weather"]}') FROM s12} ],
	[ 'claude_classify', q{SELECT id, claude_classify(body, ARRAY['sun', 'rain']) FROM s12} ],
	[ 'claude_count_tokens', q{SELECT id, claude_count_tokens('count ' || body) FROM s12}, '/v1/messages/count_tokens' ],
	[ 'claude_if', q{SELECT id, claude_if(body, 'mentions rain') FROM s12} ],
);
for my $f (@six)
{
	my ($name, $q, $path) = @$f;
	$path //= '/v1/messages';
	like(sql("EXPLAIN (COSTS OFF) $q"), qr/ClaudePrefetch/, "$name: EXPLAIN shows the node");
	my ($rc1, $on, $err1, $st1) = run($q, 200);
	is($rc1, 0, "$name with read-ahead succeeds") or diag($err1);
	cmp_ok($st1->{max_concurrency}, '>', 1, "$name: requests overlapped (peak $st1->{max_concurrency})");
	is($st1->{by_path}{$path} // 0, 12, "$name: 12 requests to $path");
	my ($rc0, $off, $err0, $st0) = run($OFF . $q, 0);
	is($rc0, 0, "$name with claude.prefetch = 0 succeeds") or diag($err0);
	is($st0->{max_concurrency}, 1, "$name, prefetch 0: one at a time");
	is($on, $off, "$name: the same rows and results as claude.prefetch = 0");
	is(scalar(my @l = split /\n/, $on), 12, "$name: 12 rows");
}

# ---- 3. a requests_per_day budget of 5 over 12 rows: requests_per_day is
# counted under one lock as each request is started, read ahead or not,
# so the role never passes it, not even by a window's reservations: the
# mock sees exactly 5; the 6th row fails, with the error (and SQLSTATE)
# a one-at-a-time run gives there
my %bud;
for my $mode ('on', 'off')
{
	my $role = "bud_$mode";
	budget_role($role, 'requests_per_day', 5);
	# rows as they arrive, so the failing row shows
	my $q = ($mode eq 'off' ? $OFF : '') . q{\set VERBOSITY verbose
		DO $$DECLARE cur refcursor; r record; BEGIN
		  OPEN cur NO SCROLL FOR SELECT id, claude_complete('bud ' || id) AS c FROM s12;
		  LOOP
		    FETCH cur INTO r;
		    EXIT WHEN NOT FOUND;
		    RAISE NOTICE 'row % %', r.id, r.c;
		  END LOOP; END$$;};
	my ($rcb, $outb, $errb, $stb) = run($q, 100, $role);
	isnt($rcb, 0, "budget, prefetch $mode: the statement fails");
	my @rows = $errb =~ /NOTICE:\s+\w*:?\s*row (\d+) bud \d+/g;
	$bud{$mode} = { rows => "@rows", error => error_line($errb), sent => $stb->{by_path}{'/v1/messages'} // 0 };
	is($bud{$mode}{rows}, '1 2 3 4 5', "budget, prefetch $mode: rows 1 to 5 answered, then the error");
	like($bud{$mode}{error}, qr/ERROR:\s+ZC402: daily budget of role $role is spent \(requests_per_day 5\)/,
		"budget, prefetch $mode: ZC402 names the budget") or diag($errb);
	is($bud{$mode}{sent}, 5, "budget, prefetch $mode: exactly 5 requests reached the API, none past the budget");
	is(sql("SELECT requests FROM claude_usage WHERE role = '$role'::regrole"), '5',
		"budget, prefetch $mode: claude_usage counts 5");
}
is(without_role($bud{on}{error}, 'bud_on'), without_role($bud{off}{error}, 'bud_off'),
	'budget: read ahead fails with the error of the one-at-a-time run');
# the plain statement too (read ahead: a window of rows started at once)
budget_role('bud_plain', 'requests_per_day', 5);
($rc, $out, $err, $st) = run(q{\set VERBOSITY verbose
	SELECT id, claude_complete('budplain ' || id) FROM s12}, 100, 'bud_plain');
like(error_line($err), qr/ZC402: daily budget of role bud_plain is spent \(requests_per_day 5\)/,
	'budget, a plain SELECT read ahead: ZC402');
cmp_ok($st->{max_concurrency}, '>', 1, "budget, a plain SELECT: its requests overlapped ($st->{max_concurrency})");
is($st->{by_path}{'/v1/messages'} // 0, 5, 'budget, a plain SELECT: exactly 5 requests reached the API');

# a tokens_per_day budget: tokens are known only from replies, so a call
# started while the budget still allowed it may pass it by what it uses.
# One at a time that is one request; read ahead, every request in flight
# was started while the budget allowed it, and at most the session's bulk
# share (4) is in flight: the spend stays under budget + 4 requests'
# tokens (with no bound on the window's bulk share it would be up to 12).
# The statement still fails with the one-at-a-time run's ZC402.
my %tok;
for my $mode ('on', 'off')
{
	my $role = "tok_$mode";
	budget_role($role, 'tokens_per_day', 1000);
	($rc, $out, $err, $st) = run(($mode eq 'off' ? $OFF : '') . q{\set VERBOSITY verbose
		SELECT id, claude_complete(repeat('t', 400) || ' ' || id) FROM s12}, 100, $role);
	my $spent = sql("SELECT input_tokens + output_tokens || ',' || requests FROM claude_usage WHERE role = '$role'::regrole");
	my ($tokens, $requests) = split /,/, $spent;
	$tok{$mode} = { error => error_line($err), tokens => $tokens, requests => $requests,
		sent => $st->{by_path}{'/v1/messages'} // 0, peak => $st->{max_concurrency} };
	note("tokens budget, prefetch $mode: $tokens tokens in $requests requests, peak $st->{max_concurrency}");
	like($tok{$mode}{error}, qr/ZC402: daily budget of role $role is spent \(tokens_per_day 1000\)/,
		"tokens budget, prefetch $mode: ZC402 names the budget") or diag($err);
	is($requests, $tok{$mode}{sent}, "tokens budget, prefetch $mode: claude_usage counts every request sent");
	cmp_ok($requests, '<', 12, "tokens budget, prefetch $mode: the budget stopped the statement");
}
my $per = $tok{off}{tokens} / $tok{off}{requests};
cmp_ok($tok{off}{tokens}, '<', 1000 + $per + 1, 'tokens budget, one at a time: passed by one request at most');
cmp_ok($tok{on}{tokens}, '<', 1000 + 4 * $per + 1,
	"tokens budget, read ahead: passed by at most the share's 4 requests ($tok{on}{tokens} tokens, $per a request)");
is(without_role($tok{on}{error}, 'tok_on'), without_role($tok{off}{error}, 'tok_off'),
	'tokens budget: the same error as the one-at-a-time run');

# ---- 4. fair share: 16 slots, a session's bulk share is 4; a read-ahead
# over 40 rows that hang after the 7th never has more than 4 in flight, and
# another session's single call is answered meanwhile
sql(q{CREATE TABLE fs40 (id int, p text);
	INSERT INTO fs40 SELECT i, CASE WHEN i > 7 THEN '[[mock:hang]] ' ELSE '' END || 'fair ' || i
	  FROM generate_series(1, 40) i;});
$mock->reset;
$mock->config({ latency_ms => 0 });
$h = start_bg($node, q{SELECT id, claude_complete(p) FROM fs40 /* fair-marker */});
ok(wait_until(sub { $mock->stats->{concurrency} >= 4 }, 20), 'fair share: 4 hanging requests in flight')
  or diag('in flight: ' . $mock->stats->{concurrency});
# time for the window (14 rows by now) to start more, were it allowed to
usleep(1_000_000);
$st = $mock->stats;
cmp_ok($st->{max_concurrency}, '<=', 4, "fair share: never more than the share of 4 in flight ($st->{max_concurrency})");
($rc, $out, $err) = $node->psql('postgres', q{SET statement_timeout = '30s'; SELECT claude_complete('fair other session')});
is($out, 'fair other session', 'fair share: another session\'s single call is answered meanwhile') or diag($err);
my $ms;
($rc, $out, $err, $ms) = cancel_bg($node, $h, 'fair-marker');
like($err, qr/canceling statement due to user request/, 'fair share: the read-ahead is cancelled');
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }, 10), 'fair share: and nothing is left in flight');

# ---- 5. hostile roles
# a role without EXECUTE: refused before any request
sql(q{CREATE ROLE noexec LOGIN;});
for my $q ([ 'claude_complete', q{SELECT id, claude_complete('noexec ' || id) FROM s12} ],
	[ 'claude_if', q{SELECT id FROM s12 WHERE claude_if(body, 'mentions rain')} ])
{
	($rc, $out, $err, $st) = run($q->[1], 0, 'noexec');
	like($err, qr/permission denied for function $q->[0]/, "no EXECUTE on $q->[0]: refused when read ahead");
	is($st->{requests}, 0, "no EXECUTE on $q->[0]: no request sent");
}
# a role whose search_path puts its own claude_complete and || first
sql(q{CREATE ROLE hostile LOGIN; GRANT CREATE ON DATABASE postgres TO hostile;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO hostile;});
$node->safe_psql('postgres', q{CREATE SCHEMA evil;
	-- STABLE and not inlinable: nothing but its name keeps it from being read ahead
	CREATE FUNCTION evil.claude_complete(p text) RETURNS text LANGUAGE plpgsql STABLE
	  AS $$BEGIN RETURN pg_catalog.textcat('evil ', p); END$$;
	-- IMMUTABLE (a lie: it says NOTICE), so the real call beside it is read ahead
	CREATE FUNCTION evil.cat(a text, b text) RETURNS text LANGUAGE plpgsql IMMUTABLE
	  AS $$BEGIN RAISE NOTICE 'evil cat %', b; RETURN pg_catalog.textcat('op:', pg_catalog.textcat(a, b)); END$$;
	CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.cat);},
	extra_params => [ '-U', 'hostile' ]);
my $path = 'SET search_path = evil, pg_catalog, public; ';
my $fake = q{SELECT id, claude_complete('fake ' || id::text) FROM s12};
($rc, $out, $err, $st) = run($path . "EXPLAIN (VERBOSE, COSTS OFF) $fake", 0, 'hostile');
unlike($out, qr/ClaudePrefetch/, 'a look-alike claude_complete first in search_path: no ClaudePrefetch node')
  or diag($out);
like(sql_as_hostile(q{EXPLAIN (COSTS OFF) SELECT id, evil.claude_complete('fake ' || id) FROM s12}),
	qr/^Seq Scan on s12\s*$/, 'nor when it is named with its schema');
($rc, $out, $err, $st) = run($path . $fake, 200, 'hostile');
is($out, join("\n", map { "$_|evil op:fake $_" } 1 .. 12), 'the look-alike is evaluated as the role\'s function (and its ||)')
  or diag($err);
is($st->{requests}, 0, 'and sends nothing');
# the real function, qualified, with the role's || in its arguments: read
# ahead, the operator run once per row, as one at a time
my $real = q{SELECT id, public.claude_complete('real ' || id::text) FROM s12};
like(sql_as_hostile($path . "EXPLAIN (COSTS OFF) $real"), qr/ClaudePrefetch/, 'the real claude_complete beside the role\'s ||: read ahead');
my ($rc1, $on, $err1, $st1) = run($path . $real, 200, 'hostile');
my ($rc0, $off, $err0) = run($OFF . $path . $real, 0, 'hostile');
is($on, join("\n", map { "$_|op:real $_" } 1 .. 12), 'the role\'s || built the prompts') or diag($err1);
is($on, $off, 'the same results as claude.prefetch = 0');
cmp_ok($st1->{max_concurrency}, '>', 1, "its requests overlapped ($st1->{max_concurrency})");
my $notices_on = () = $err1 =~ /evil cat/g;
my $notices_off = () = $err0 =~ /evil cat/g;
is($notices_on, 12, 'the role\'s || ran once per row with read-ahead (not again at replay)');
is($notices_off, 12, 'and once per row one at a time');

sub sql_as_hostile
{
	my ($q) = @_;
	my ($r, $o, $e) = $node->psql('postgres', $q, extra_params => [ '-U', 'hostile' ]);
	return $o . $e;
}

$node->stop;
done_testing();
