# Semantic helpers: claude_if filters rows in a WHERE clause, claude_summarize
# summarizes a group in parts when it does not fit one request (keeping the
# order of ORDER BY, refused as a window function), claude_rank scores
# candidates for ORDER BY ... LIMIT; a reply that breaks the tool's shape is
# an error, a repeat is a cache hit, and a spent budget refuses.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('semantic', $mock, cache => 1);
sub sql { $node->safe_psql('postgres', $_[0]) }
sub requests { $mock->stats->{requests} }
sub bodies { [ map { $_->{body} } grep { $_->{path} eq '/v1/messages' } @{ $mock->requests(0) } ] }

# ---- claude_if
sql("CREATE TABLE reviews (id int PRIMARY KEY, body text);
	INSERT INTO reviews VALUES (1, 'heavy rain all day'), (2, 'sunny and warm'),
	  (3, 'Rain again tomorrow'), (4, NULL)");
$mock->reset;
is(sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM reviews WHERE claude_if(body, 'mentions rain')"),
	'1,3', 'claude_if in a WHERE clause keeps the rows the condition is true of');
is(requests(), 3, 'one request per row with a body; the NULL body is NULL, not sent');
my $b = bodies()->[-1];
is($b->{tool_choice}{name}, 'record_answer', 'the tool record_answer is forced');
ok($b->{tools}[0]{strict}, 'and marked strict');
is($b->{tools}[0]{input_schema}{properties}{result}{type}, 'boolean', 'its input is one boolean');
like(sql("EXPLAIN (COSTS OFF) SELECT id FROM reviews WHERE claude_if(body, 'x') AND body <> 'y'"),
	qr/Filter: claude_if\(body.*\n.*\n\s*->  Seq Scan on reviews\n\s*Filter: \(body <> 'y'::text\)$/,
	'the planner evaluates the cheap qual first (COST): in the scan, below the read-ahead that calls');

my $before = requests();
for my $bad (q|SELECT claude_if('x', NULL)|, q|SELECT claude_if('x', '')|,
	q|SELECT claude_if('x', 'y', model => '')|)
{
	my ($rc, $out, $err) = $node->psql('postgres', $bad);
	isnt($rc, 0, "refused: $bad");
}
is(sql("SELECT claude_if(NULL, 'y') IS NULL"), 't', 'NULL input: NULL');
is(requests(), $before, 'and none of these sent a request');

# the cache: the same filter again costs nothing
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request->'tool_choice'->>'name' = 'record_answer'") == 3 }),
	'the three answers are cached');
$before = requests();
is(sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM reviews WHERE claude_if(body, 'mentions rain')"),
	'1,3', 'the same filter again');
is(requests(), $before, 'is answered from the cache: the mock saw no request');

my ($rc, $out, $err) = $node->psql('postgres', q|SELECT claude_if('[[mock:semantic_bad]] rain', 'mentions rain')|);
like($err, qr/the reply's answer is not a boolean: "yes"/, 'a reply whose answer is not a boolean is an error naming it');
$before = requests();
($rc, $out, $err) = $node->psql('postgres', q|SELECT claude_if('[[mock:semantic_bad]] rain', 'mentions rain')|);
like($err, qr/not a boolean/, 'asked again, it is the same error');
is(requests(), $before + 1, 'from a new request: a reply that breaks the shape is not cached');

# ---- claude_summarize
sql("CREATE TABLE notes (grp int, id int, body text)");
my @names = qw(Alpha Beta Gamma Delta Epsilon Zeta);
for my $i (0 .. $#names)
{
	sql("INSERT INTO notes VALUES (1, $i, '$names[$i] wrote about the weather today')");
}
# 50 tokens: parts of 100 bytes, two notes each
my $small = "SET claude.summarize_part_tokens = 50; SET claude.cache = off; SET client_min_messages = debug1;";
$mock->reset;
($rc, $out, $err) = $node->psql('postgres', "$small SELECT claude_summarize(body ORDER BY id) FROM notes");
is($out, join(' ', @names), 'claude_summarize of a group larger than one request');
is(requests(), 3, 'took 3 requests: two parts (as the step went), then the summaries and the rest');
like($err, qr/claude_summarize: 3 requests \(0 from the cache\) for 6 inputs/, 'and logs at DEBUG1 how many');
my $first = bodies()->[0]{messages}[0]{content};
ok($first =~ /Alpha/ && $first =~ /Beta/ && $first !~ /Gamma/, 'the first part holds the first two notes');
like(bodies()->[-1]{messages}[0]{content}, qr/<text>\nAlpha Beta\n<\/text>\n<text>\nGamma Delta\n<\/text>\n<text>\nEpsilon/,
	'the last request: the summaries of the parts, then the notes kept');

($rc, $out, $err) = $node->psql('postgres', "$small SELECT claude_summarize(body ORDER BY id DESC) FROM notes");
is($out, join(' ', reverse @names), 'ORDER BY inside the call keeps its order');

# a group of 40: summaries of summaries, still in order, state in levels
sql("INSERT INTO notes SELECT 2, i, 'Note' || lpad(i::text, 2, '0') || ' says little about the weather' FROM generate_series(1, 40) i");
$mock->reset;
($rc, $out, $err) = $node->psql('postgres', "$small SELECT claude_summarize(body ORDER BY id) FROM notes WHERE grp = 2");
# the mock's summary of more than 6 names keeps the first and the last
my @seen = $out =~ /Note(\d\d)/g;
ok(@seen >= 2 && $seen[0] eq '01' && $seen[-1] eq '40' && !grep({ $seen[$_] <= $seen[$_ - 1] } 1 .. $#seen),
	"a group of 40 notes summarized in levels, in order: $out");
my $n = requests();
like($err, qr/claude_summarize: $n requests \(0 from the cache\) for 40 inputs/, "DEBUG1 counts the $n requests the mock saw");
cmp_ok($n, '>', 20, 'more than one request per two notes: summaries were summarized again');

is(sql("SELECT claude_summarize(body, 'In one line.') IS NULL FROM notes WHERE false"), 't', 'an empty group: NULL');
is(sql("SELECT claude_summarize(NULL::text) IS NULL"), 't', 'a group of NULLs: NULL');
$mock->reset;
is(sql("SELECT claude_summarize(body, 'In one line.') FROM notes WHERE grp = 1 AND id < 2"), 'Alpha Beta',
	'claude_summarize(input, instructions)');
like(bodies()->[-1]{system}, qr/\n\nIn one line\.$/, 'the instructions end the system prompt');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_summarize(body, id::text) FROM notes WHERE grp = 1");
like($err, qr/instructions must be the same for every row of a group/, 'instructions that change within a group are refused');

$mock->reset;
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_summarize(body) OVER (ORDER BY id) FROM notes WHERE grp = 1");
like($err, qr/claude_summarize cannot be used as a window function/, 'refused as a window function');
is(requests(), 0, 'before any request');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_summarize('[[mock:semantic_bad]] Gone')");
like($err, qr/the reply's summary is not a string: 42/, 'a summary that is not a string is an error naming it');

# ---- claude_rank
$mock->reset;
is(sql("SELECT string_agg(ord || ':' || score, ' ') FROM (SELECT * FROM claude_rank('red apple pie',
	  ARRAY['green pear', 'red apple', 'apple pie with red cherries', NULL, 'blue sky'])
	  ORDER BY score DESC LIMIT 2) r"),
	'3:1 2:0.667', 'claude_rank ... ORDER BY score DESC LIMIT 2: the best two, ord their position');
is(requests(), 1, 'in one request');
$b = bodies()->[-1];
is($b->{tool_choice}{name} . ' ' . $b->{tools}[0]{input_schema}{properties}{scores}{type}, 'record_scores array',
	'the strict tool record_scores returns an array');
is(() = $b->{messages}[0]{content} =~ /<candidate>/g, 4, 'the NULL candidate is not sent');
is(sql("SELECT count(*) FROM claude_rank('red apple pie', ARRAY['green pear', 'red apple', NULL, 'blue sky'])"), '3',
	'a row for each candidate that is not NULL');
$before = requests();
is(sql("SELECT count(*) FROM claude_rank('q', NULL)") . sql("SELECT count(*) FROM claude_rank('q', '{}')")
	  . sql("SELECT count(*) FROM claude_rank('q', ARRAY[NULL]::text[])")
	  . sql("SELECT count(*) FROM claude_rank(NULL, ARRAY['x'])"), '0000', 'NULL, empty or all-NULL candidates, a NULL query: no rows');
($rc, $out, $err) = $node->psql('postgres', "SELECT * FROM claude_rank('', ARRAY['x'])");
like($err, qr/query must not be NULL or empty/, 'an empty query is refused');
($rc, $out, $err) = $node->psql('postgres', "SELECT * FROM claude_rank('q', array_fill('x'::text, ARRAY[101]))");
like($err, qr/claude_rank scores at most 100 candidates/, '101 candidates are refused');
is(requests(), $before, 'and none of these sent a request');
is(sql("SELECT count(*) FROM claude_rank('q', array_fill('x'::text, ARRAY[100]))"), '100', '100 are scored');
($rc, $out, $err) = $node->psql('postgres', "SELECT * FROM claude_rank('[[mock:semantic_bad]] red', ARRAY['red', 'blue'])");
like($err, qr/the reply's scores are not an array of 2 numbers: \[0\.25\]/, 'one score too few is an error naming the reply');

# ---- budgets
sql("CREATE ROLE carol LOGIN; GRANT EXECUTE ON FUNCTION claude_if(text, text, text) TO carol;
	GRANT EXECUTE ON FUNCTION claude_rank(text, text[]) TO carol;
	GRANT EXECUTE ON FUNCTION claude_summarize(text) TO carol;
	GRANT SELECT ON notes TO carol;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('carol', 0)");
# the size of claude_summarize's parts comes from /v1/models/{id}, which
# is free: only Messages requests count here
$before = scalar @{ bodies() };
for my $q (q|SELECT claude_if('rain today', 'mentions rain')|, q|SELECT * FROM claude_rank('red', ARRAY['red'])|,
	q|SELECT claude_summarize(body) FROM notes WHERE grp = 1|)
{
	($rc, $out, $err) = $node->psql('postgres', $q, extra_params => [ '-U', 'carol' ]);
	like($err, qr/budget of role carol is spent/, "a spent budget refuses: $q");
}
is(scalar @{ bodies() }, $before, 'and no Messages request was sent');

$node->stop;
$mock->stop;
done_testing();
