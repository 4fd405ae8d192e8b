# claude_enrich reports what it did and fails loudly: a CALL prints filled,
# failed, cached, requests, tokens and cost; a script stops (psql exits
# nonzero) when every row failed, when max_failures is reached, and at the
# first error that concerns the run (budget, unknown model), with what was
# filled committed; where_clause is one expression, run with the caller's
# rights, hostile ones refused before any request; limit_rows samples;
# dry_run sends no completion and estimates.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
# 16 request slots: a session keeps 4 in flight, so a stop is visible
my $node = new_node('enrichreport', $mock, cache => 1, conf => "claude.max_requests = 16\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
sub posts { scalar grep { $_->{path} eq '/v1/messages' } @{ $mock->requests(0) } }
sub counts_posted { scalar grep { $_->{path} eq '/v1/messages/count_tokens' } @{ $mock->requests(0) } }
# a script: psql with ON_ERROR_STOP, the SQLSTATE in each error
sub script
{
	my ($q, $user) = @_;
	return $node->psql('postgres', "\\set VERBOSITY verbose\n$q",
		extra_params => [ $user ? ('-U', $user) : () ]);
}
sub nano_usd { my ($n) = @_; return sprintf('%d.%09d', int($n / 1e9), $n % 1e9) }

sql(q{INSERT INTO claude_prices VALUES ('enrich-model', 1, 2, '2026-11-29');
	CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	INSERT INTO docs SELECT i, 'doc number ' || i, NULL FROM generate_series(1, 10) i;});
my $call = q{CALL claude_enrich('docs', 'summary', 'Sum: {body}', model => 'enrich-model', max_tokens => 50};

# ---- dry_run: no completion, nothing written, an estimate
my ($posts, $counts) = (posts(), counts_posted());
my ($rc, $out, $err) = script("$call, dry_run => true)");
is($rc, 0, 'a dry run succeeds') or diag($err);
is(posts(), $posts, 'a dry run sends no /v1/messages request');
is(counts_posted() - $counts, 10, 'it counts the input tokens of each of the 10 rows (count_tokens)');
is(sql('SELECT count(summary) FROM docs'), 0, 'it writes nothing');
my $exact = sql(q{SELECT sum(claude_count_tokens('Sum: ' || body, 'enrich-model')) FROM docs});
my ($f, $fl, $c, $r, $in, $o, $cost) = split /\|/, $out;
is("$f|$fl|$c|$r", '0|0|0|10', 'it reports 10 requests to send, none filled');
is($in, $exact, 'input_tokens is the count of every prompt');
is($o, 500, 'output_tokens is max_tokens for each row, an upper bound');
is($cost, nano_usd($in * 1000 + 500 * 2000), 'cost_usd is priced from both, exactly');
like($err, qr/the prompt of row \(1\): Sum: doc number 1/, 'it shows sample prompts');
like($err, qr/output_tokens is max_tokens \(50\) for each, an upper bound/, 'and says what the numbers are');
($rc, $out, $err) = script("$call, dry_run => true, mode => 'batch')");
is($rc, 0, 'a dry run in batch mode succeeds');
is((split /\|/, $out)[6], nano_usd(($in * 1000 + 500 * 2000) / 2), 'priced at the batch price');
is(sql('SELECT count(*) FROM claude_batches'), 0, 'and submits no batch');

# ---- limit_rows, where_clause, then the rest: what a CALL prints
$posts = posts();
($rc, $out, $err) = script("$call, limit_rows => 3)");
is($rc, 0, 'a sample run succeeds') or diag($err);
like($out, qr/^3\|0\|0\|3\|/, 'limit_rows => 3: 3 rows filled, 3 requests');
is(sql('SELECT string_agg(id::text, \',\' ORDER BY id) FROM docs WHERE summary IS NOT NULL'), '1,2,3',
	'the first 3 rows by key');
($rc, $out, $err) = script("$call, where_clause => 'id % 2 = 0 AND body <> ''x''')");
like($out, qr/^4\|0\|0\|4\|/, 'where_clause: the 4 even rows left') or diag($err);
($rc, $out, $err) = script("$call)");
is($rc, 0, 'the rest succeeds');
($f, $fl, $c, $r, $in, $o, $cost) = split /\|/, $out;
is("$f|$fl|$c|$r", '3|0|0|3', 'filled 3, failed 0, cached 0, 3 requests');
ok($in > 0 && $o > 0, 'with the tokens of the replies');
is($cost, nano_usd($in * 1000 + $o * 2000), 'cost_usd from the price table, exactly');
is(posts() - $posts, 10, 'each row was sent once');
is(sql('SELECT count(summary) FROM docs'), 10, 'every row is filled');

# rows answered by the cache: no request
ok(wait_until(sub { sql('SELECT count(*) FROM claude_cache') >= 10 }), 'the replies are cached');
$posts = posts();
($rc, $out, $err) = script("$call, only_missing => false, limit_rows => 4)");
like($out, qr/^4\|0\|4\|0\|0\|0\|0\.000000000$/, 'from the cache: 4 filled, 4 cached, no request, no cost')
  or diag($err);
is(posts(), $posts, 'and nothing was sent');
($rc, $out, $err) = script("$call, only_missing => false, dry_run => true)");
like($out, qr/^0\|0\|10\|0\|0\|0\|0\.000000000$/, 'a dry run sees every request in the cache: 10 cached, 0 to send')
  or diag($err);

# a dry run counts the first 100 requests and extrapolates (bodies of one length: exact)
sql(q{CREATE TABLE wide (id int PRIMARY KEY, body text, summary text);
	INSERT INTO wide SELECT i, 'body ' || lpad(i::text, 3, '0'), NULL FROM generate_series(1, 150) i;});
$counts = counts_posted();
($rc, $out, $err) = script(q{CALL claude_enrich('wide', 'summary', 'Sum: {body}', model => 'enrich-model', dry_run => true)});
is(counts_posted() - $counts, 100, 'a dry run of 150 rows counts 100 of them');
is((split /\|/, $out)[4], 150 * sql(q{SELECT claude_count_tokens('Sum: body 001', 'enrich-model')}),
	'and extrapolates to the 150');
like($err, qr/counted \(count_tokens\) for the first 100 requests and extrapolated to 150/, 'saying so');

# ---- hostile where clauses: refused before any request
$posts = posts();
for my $w ('true) OR (true', '1; DROP TABLE docs', 'true /* unterminated', 'true, false',
	'true FROM pg_class', 'id AS x', '$1 = 1', 'true) --', 'true --', '')
{
	(my $lit = $w) =~ s/'/''/g;
	($rc, $out, $err) = script("$call, only_missing => false, where_clause => '$lit')");
	isnt($rc, 0, "where_clause '$w' is refused");
	like($err, qr/ERROR:  42601/, '  with 42601') or diag($err);
}
($rc, $out, $err) = script("$call, only_missing => false, where_clause => E'false -- none\\n')");
is($out, '0|0|0|0|0|0|0.000000000', 'a comment ended by a newline is kept from the parenthesis: \'false\' filters every row')
  or diag($err);
($rc, $out, $err) = script("$call, limit_rows => -1)");
like($err, qr/ERROR:  22023/, 'a negative limit_rows is refused');
($rc, $out, $err) = script("$call, max_failures => 0)");
like($err, qr/ERROR:  22023/, 'max_failures 0 is refused');
is(posts(), $posts, 'no request for any of them');
is(sql('SELECT count(*) FROM docs'), 10, 'the table is still there');

# where_clause runs with the caller's rights
sql(q{CREATE ROLE analyst LOGIN;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO analyst;
	CREATE TABLE secret (x int); INSERT INTO secret VALUES (1);
	CREATE TABLE mine (id int PRIMARY KEY, body text, summary text);
	INSERT INTO mine VALUES (1, 'a', NULL), (2, 'b', NULL);
	ALTER TABLE mine OWNER TO analyst;});
($rc, $out, $err) = script(q{CALL claude_enrich('mine', 'summary', '{body}', where_clause => 'EXISTS (SELECT FROM secret)')}, 'analyst');
like($err, qr/ERROR:  42501: permission denied for table secret/, 'a where_clause reads with the caller\'s rights');
is(posts(), $posts, 'refused before any request');

# ---- every row failed: a text reply for an int column
sql(q{CREATE TABLE nums (id int PRIMARY KEY, body text, n int);
	INSERT INTO nums SELECT i, 'word ' || i FROM generate_series(1, 5) i;});
($rc, $out, $err) = script(q{CALL claude_enrich('nums', 'n', 'Say: {body}'); SELECT 'after'});
isnt($rc, 0, 'every row failed: the script stops with a nonzero exit code');
unlike($out, qr/after/, 'the statement after it does not run');
like($err, qr/ERROR:  22P02: claude_enrich failed: all 5 rows of nums it attempted failed/, 'with the rows\' SQLSTATE and what happened');
like($err, qr/DETAIL:  0 rows filled \(0 from the cache\), 5 failed, 5 requests; first error: row \(\d\): invalid input syntax for type integer/,
	'the detail gives the counts and the first error');
like($err, qr/HINT:  The rows filled are committed\. Fix the cause and CALL claude_enrich again/, 'the hint how to resume');

# ---- max_failures: no more rows sent once reached
sql(q{CREATE TABLE bad (id int PRIMARY KEY, body text, summary text);
	INSERT INTO bad SELECT i, CASE WHEN i = 1 THEN 'fine' ELSE '[[mock:status=400]] ' || i END FROM generate_series(1, 20) i;});
$posts = posts();
($rc, $out, $err) = script(q{CALL claude_enrich('bad', 'summary', '{body}', max_failures => 3)});
isnt($rc, 0, 'max_failures reached: the script stops');
like($err, qr/ERROR:  ZC400: claude_enrich stopped: \d+ rows of bad failed, max_failures is 3/, 'saying so, with the failures\' SQLSTATE');
ok(posts() - $posts < 20, 'and not every row was sent (' . (posts() - $posts) . ' of 20)');
is(sql('SELECT count(summary) FROM bad'), 1, 'the row filled before is committed');

# ---- an unknown model: the first 404 stops the run
sql(q{CREATE TABLE many (id int PRIMARY KEY, body text, summary text);
	INSERT INTO many SELECT i, 'row ' || i FROM generate_series(1, 20) i;});
$mock->fault({ status => 404, error_type => 'not_found_error', message => 'model: claude-nope', count => 20 });
$posts = posts();
($rc, $out, $err) = script(q{CALL claude_enrich('many', 'summary', '{body}', model => 'claude-nope')});
$mock->clear_faults;
isnt($rc, 0, 'an unknown model: the script stops');
like($err, qr/ERROR:  ZC404: claude_enrich stopped at the first error that every row would meet: Claude API error 404 not_found_error/,
	'with ZC404, at the first one');
ok(posts() - $posts <= 4, 'only the requests in flight were sent (' . (posts() - $posts) . ')');

# ---- a budget spent after 4 of 20 rows: 4 filled, committed, then a raise
sql(q{CREATE ROLE spender LOGIN;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO spender;
	ALTER TABLE many OWNER TO spender;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('spender', 4);});
($rc, $out, $err) = script(q{CALL claude_enrich('many', 'summary', 'Budget {body}')}, 'spender');
isnt($rc, 0, 'a budget spent: the script stops');
like($err, qr/ERROR:  ZC402: claude_enrich stopped at the first error that every row would meet: daily budget of role spender is spent/,
	'with ZC402');
like($err, qr/DETAIL:  4 rows filled \(0 from the cache\), 1 failed, 4 requests/, 'after 4 rows filled');
is(sql('SELECT count(summary) FROM many'), 4, 'the 4 rows filled are committed: a rerun resumes');

$node->stop;
done_testing();
