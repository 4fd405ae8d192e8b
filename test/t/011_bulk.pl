# Bulk work: claude_complete_many and claude_enrich keep many requests in
# flight, report failures per row, can be cancelled, resume without paying
# twice and show their progress.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('bulk', $mock, cache => 1,
	conf => "claude.max_connections = 4\nclaude.max_requests = 16\nclaude.max_retries = 0\n");
sub requests { $mock->stats->{requests} }

# claude_complete_many: all at once, ordered by ord, errors per prompt
$mock->reset;
my $t0 = time();
my $out = $node->safe_psql('postgres', q{
	SELECT string_agg(ord || ':' || coalesce(completion, '-') || ':' || coalesce(left(error, 30), '-'), ' ' ORDER BY ord)
	FROM claude_complete_many(ARRAY['[[mock:delay=300]] a', '[[mock:status=400]] b', NULL, '',
	                                '[[mock:delay=300]] c', '[[mock:delay=300]] d', '[[mock:delay=300]] e'])});
my $took = time() - $t0;
is($out, '1:[[mock:delay=300]] a:- 2:-:Claude API error 400 invalid_r 3:-:- 4:-:prompt must not be empty 5:[[mock:delay=300]] c:- 6:[[mock:delay=300]] d:- 7:[[mock:delay=300]] e:-',
	'one row per prompt, in order by ord, a failed prompt does not abort the others');
cmp_ok($took, '<', 0.9, sprintf('four 300 ms prompts over 4 connections took %.2f s, not 1.2 s', $took));
is($mock->stats->{max_concurrency}, 4, 'they were in flight together, up to the pool');

# 10,000 prompts through 16 slots: bounded memory, all answered
$out = $node->safe_psql('postgres', q{
	SELECT count(*), count(completion), count(error)
	FROM claude_complete_many(array(SELECT 'many ' || i FROM generate_series(1, 10000) i), cache => false)});
is($out, '10000|10000|0', '10,000 prompts, all answered');

# cancel stops every outstanding request and gives back every slot
$mock->reset;
my $h = start_bg($node, q{SELECT count(*) FROM claude_complete_many(array(SELECT '[[mock:hang]] ' || i FROM generate_series(1, 40) i))});
ok(wait_until(sub { $mock->stats->{concurrency} == 4 }), 'requests are hanging at the mock');
my ($rc, $o, $err, $ms) = cancel_bg($node, $h, 'mock:hang');
like($err, qr/canceling statement/, 'claude_complete_many is cancelled');
cmp_ok($ms, '<', 2000, sprintf('within %.0f ms', $ms));
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'the worker aborted every transfer');
is($node->safe_psql('postgres', q{SELECT count(completion) FROM claude_complete_many(array(SELECT 'after ' || i FROM generate_series(1, 16) i))}),
	'16', 'all 16 slots are free again');

# In a select list claude_complete_many is value-per-call: a row is handed
# on as its reply arrives, while slower prompts are still in flight
$mock->reset;
$out = $node->safe_psql('postgres', q{
	SELECT string_agg(ord::text, ',' ORDER BY t),
	       extract(epoch FROM max(t) FILTER (WHERE ord = 1) - max(t) FILTER (WHERE ord = 2)) > 1
	FROM (SELECT clock_timestamp() t, (r).ord
	      FROM (SELECT claude_complete_many(ARRAY['[[mock:delay=3000]] slow', '[[mock:delay=100]] fast'],
	                                        cache => false) r) s) q});
is($out, '2,1|t', 'in a select list the fast row comes out more than 1 s before the 3 s one');
# in FROM PostgreSQL stores the whole set first: every row, none early
$out = $node->safe_psql('postgres', q{
	SELECT string_agg(ord::text, ',' ORDER BY ord), count(completion)
	FROM claude_complete_many(ARRAY['[[mock:delay=1000]] slow', '[[mock:delay=100]] fast'], cache => false)});
is($out, '1,2|2', 'in FROM every row comes back');
# both ways give the same rows
my $mixed = q{ARRAY['[[mock:delay=200]] a', '[[mock:status=400]] b', NULL, '', 'c', 'd', 'e', 'f', 'g']};
my $in_from = $node->safe_psql('postgres', qq{
	SELECT string_agg(ord || ':' || coalesce(completion, '-') || ':' || coalesce(error, '-'), ' ' ORDER BY ord)
	FROM claude_complete_many($mixed, cache => false)});
my $in_list = $node->safe_psql('postgres', qq{
	SELECT string_agg((r).ord || ':' || coalesce((r).completion, '-') || ':' || coalesce((r).error, '-'), ' ' ORDER BY (r).ord)
	FROM (SELECT claude_complete_many($mixed, cache => false) r) s});
is($in_list, $in_from, 'a select list and FROM give the same rows');
like($in_list, qr/^1:\[\[mock:delay=200\]\] a:- 2:-:Claude API error 400 .* 3:-:- 4:-:prompt must not be empty 5:c:- .* 9:g:-$/,
	'with ord, completion and error per prompt');

# LIMIT 1 stops after the first reply; the prompts still in flight are let
# go at once and their slots given back
$mock->reset;
$out = $node->safe_psql('postgres', q{
	SET statement_timeout = '20s';
	SELECT (claude_complete_many(ARRAY['[[mock:hang]] 1', '[[mock:delay=100]] fast', '[[mock:hang]] 3',
	                                   '[[mock:hang]] 4', '[[mock:hang]] 5', '[[mock:hang]] 6'], cache => false)).*
	LIMIT 1});
is($out, '2|[[mock:delay=100]] fast|', 'LIMIT 1 returns the first reply while the others hang');
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'the worker aborted the hanging transfers');
ok(wait_until(sub { $node->safe_psql('postgres', q{SELECT in_flight = 0 AND queued = 0 FROM claude_stats}) eq 't' }),
	'nothing is left in flight or queued');
is($node->safe_psql('postgres', q{SELECT claude_complete('after the limit', cache => false)}), 'after the limit',
	'a following claude_complete works');
is($node->safe_psql('postgres', q{SELECT count(completion) FROM claude_complete_many(array(SELECT 'limit ' || i FROM generate_series(1, 16) i), cache => false)}),
	'16', 'all 16 slots are free again');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle'}),
	'0', 'no session is stuck');
# a cursor closed early lets go the same way; one still open keeps reading
$mock->reset;
$out = $node->safe_psql('postgres', q{
	SET statement_timeout = '20s';
	BEGIN;
	DECLARE c CURSOR FOR SELECT (claude_complete_many(ARRAY['[[mock:hang]] a', '[[mock:delay=100]] b', '[[mock:delay=600]] c'],
	                                                  cache => false)).ord;
	FETCH 1 c;
	FETCH 1 c;
	CLOSE c;
	COMMIT;});
is($out, "2\n3", 'a cursor fetches rows as their replies arrive');
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'closing it aborted the hanging transfer');
# a FETCH inside a savepoint rolled back: the cursor stays open, and so do
# the requests its rows wait for
$mock->reset;
$out = $node->safe_psql('postgres', q{
	SET statement_timeout = '20s';
	BEGIN;
	DECLARE c CURSOR FOR SELECT (r).ord, (r).completion
	  FROM (SELECT claude_complete_many(ARRAY['[[mock:delay=100]] a', '[[mock:delay=1500]] b'], cache => false) r) s;
	SAVEPOINT s;
	FETCH 1 c;
	ROLLBACK TO s;
	FETCH 1 c;
	COMMIT;});
is($out, "1|[[mock:delay=100]] a\n2|[[mock:delay=1500]] b", 'a cursor goes on after ROLLBACK TO a savepoint it fetched in');
# an error caught by an EXCEPTION block ends the loop's query: what it had in
# flight is let go at once
$mock->reset;
$node->safe_psql('postgres', q{
	SET statement_timeout = '20s';
	DO $$
	DECLARE r record;
	BEGIN
	  BEGIN
	    FOR r IN SELECT (claude_complete_many(ARRAY['[[mock:delay=100]] a', '[[mock:hang]] b', '[[mock:hang]] c'],
	                                          cache => false)).ord LOOP
	      RAISE EXCEPTION 'stop at %', r.ord;
	    END LOOP;
	  EXCEPTION WHEN raise_exception THEN NULL;
	  END;
	END $$;});
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'an error caught in PL/pgSQL aborted the hanging transfers');
is($node->safe_psql('postgres', q{SELECT count(completion) FROM claude_complete_many(array(SELECT 'caught ' || i FROM generate_series(1, 16) i), cache => false)}),
	'16', 'and every slot is free again');
# cancel while value-per-call waits
$h = start_bg($node, q{SELECT (claude_complete_many(array(SELECT '[[mock:hang]] vpc ' || i FROM generate_series(1, 40) i))).ord});
ok(wait_until(sub { $mock->stats->{concurrency} == 4 }), 'select-list requests are hanging at the mock');
($rc, $o, $err, $ms) = cancel_bg($node, $h, 'mock:hang]] vpc');
like($err, qr/canceling statement/, 'the select-list form is cancelled');
cmp_ok($ms, '<', 2000, sprintf('within %.0f ms', $ms));
ok(wait_until(sub { $mock->stats->{concurrency} == 0 }), 'the worker aborted every transfer');

# claude_enrich
$node->safe_psql('postgres', q{
	CREATE TABLE docs ("Doc Id" int, part text, "Body" text, n numeric, summary text,
	                   PRIMARY KEY ("Doc Id", part));
	INSERT INTO docs SELECT i, 'p' || (i % 3), 'body ' || i, i / 2.0, NULL FROM generate_series(1, 300) i;
	UPDATE docs SET "Body" = NULL WHERE "Doc Id" = 5;
	UPDATE docs SET "Body" = '[[mock:status=400]] broken' WHERE "Doc Id" = 9;
	UPDATE docs SET summary = 'keep me' WHERE "Doc Id" = 10;});

# invalid calls fail before any request
$mock->reset;
($rc, $o, $err) = $node->psql('postgres', q{CREATE TABLE nopk (a text, b text); CALL claude_enrich('nopk', 'b', '{a}')});
like($err, qr/table nopk has no primary key/, 'a table without a primary key is refused');
($rc, $o, $err) = $node->psql('postgres', q{CALL claude_enrich('docs', 'summary', 'About {body}')});
like($err, qr/prompt template names column "body", which table docs does not have/, 'an unknown column is refused');
($rc, $o, $err) = $node->psql('postgres', q{CALL claude_enrich('docs', 'nothing', '{Body}')});
like($err, qr/column "nothing" of table docs does not exist/, 'an unknown target is refused');
is(requests(), 0, 'and no request was sent');

# cancel a slow run midway; what was committed stays
$mock->reset;
$h = start_bg($node, q{CALL claude_enrich('docs', 'summary', '[[mock:delay=100]] {{{Doc Id}/{part}}}: {Body} n={n}', batch_size => 20)});
ok(wait_until(sub { $node->safe_psql('postgres',
	"SELECT rows_done >= 60 AND rows_total = 299 FROM claude_progress") eq 't' }),
	'claude_progress shows the run from another session');
($rc, $o, $err) = cancel_bg($node, $h, 'claude_enrich');
like($err, qr/canceling statement/, 'the run is cancelled');
my $kept = $node->safe_psql('postgres', "SELECT count(*) FROM docs WHERE summary IS NOT NULL AND summary <> 'keep me'");
cmp_ok($kept, '>=', 40, "$kept rows were committed before the cancel");
is(($kept + 1) % 20, 0, 'in whole batches of batch_size (the failed row 9 counts in the first)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM claude_progress'), '0', 'the progress entry is gone');
my $sent_first = $mock->stats->{by_status}{200};

# rerun: continues with the rest, paid replies come from the cache
$mock->reset;
($rc, $o, $err) = $node->psql('postgres',
	q{CALL claude_enrich('docs', 'summary', '[[mock:delay=100]] {{{Doc Id}/{part}}}: {Body} n={n}', batch_size => 20)});
like($err, qr/claude_enrich: 298 rows of docs filled|claude_enrich: \d+ rows of docs filled, 1 failed/, 'the rerun reports what it did');
my $sent_again = $mock->stats->{by_status}{200};
cmp_ok($sent_again, '<=', 299 - $kept, "the rerun sent $sent_again requests for the " . (299 - $kept) . ' rows left');
cmp_ok($sent_first + $sent_again, '<=', 298 + 4, "no row was paid twice ($sent_first + $sent_again successful requests, 298 rows, 4 connections in flight at the cancel)");
like($err, qr/1 failed.*\n.*row \(9,p0\): Claude API error 400/s, 'the failed row is reported with its key');

is($node->safe_psql('postgres', q{SELECT summary FROM docs WHERE "Doc Id" = 4}),
	'[[mock:delay=100]] {4/p1}: body 4 n=2.0000000000000000', 'the template renders braces, quoted and non-text columns');
is($node->safe_psql('postgres', q{SELECT summary FROM docs WHERE "Doc Id" = 5}),
	'[[mock:delay=100]] {5/p2}:  n=2.5000000000000000', 'a NULL column renders as empty text');
is($node->safe_psql('postgres', q{SELECT summary FROM docs WHERE "Doc Id" = 10}), 'keep me', 'a filled row is left alone');
is($node->safe_psql('postgres', 'SELECT count(*) FROM docs WHERE summary IS NULL'), '1', 'every row but the failed one is filled');

# only_missing => false redoes every row; inside a transaction block it
# commits with the transaction, and says so
$mock->reset;
($rc, $o, $err) = $node->psql('postgres', q{
	BEGIN;
	CALL claude_enrich('docs', 'summary', 'again {Doc Id} {part}', only_missing => false, batch_size => 50);
	ROLLBACK;});
like($err, qr/runs inside a transaction block: its results are committed with that transaction/, 'a transaction block is announced');
is(requests(), 300, 'only_missing => false requested every row');
is($node->safe_psql('postgres', q{SELECT summary FROM docs WHERE "Doc Id" = 10}), 'keep me', 'the rollback undid the writes');
$mock->reset;
$node->safe_psql('postgres', q{CALL claude_enrich('docs', 'summary', 'again {Doc Id} {part}', only_missing => false, batch_size => 50)});
is(requests(), 0, 'a rerun after the rollback pays nothing: the replies were cached');
is($node->safe_psql('postgres', q{SELECT summary FROM docs WHERE "Doc Id" = 10}), 'again 10 p1', 'and writes them');

$node->stop;
done_testing();
