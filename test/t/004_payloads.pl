# Bodies of any size and any text travel unchanged: a 4 MB prompt, a
# 33 MB prompt (past what fits a fixed-size slot), and every character.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('payloads', $mock);

# 4 MB of mixed one- to four-byte characters; the mock echoes it back
my $r = $node->safe_psql('postgres', q{
	SELECT length(p), octet_length(p), md5(claude_complete(p)) = md5(p)
	FROM (SELECT repeat(E'a"\\\\\n\t\x01é漢😀', 4 * 1024 * 1024 / 15 + 1) AS p) s});
my ($chars, $bytes, $same) = split /\|/, $r;
cmp_ok($bytes, q{>=}, 4 * 1024 * 1024, "a prompt of $bytes bytes");
is($same, 't', 'a 4 MB prompt comes back byte for byte');

# over 32 MB, both ways
$r = $node->safe_psql('postgres', q{
	SELECT octet_length(p), md5(claude_complete(p)) = md5(p)
	FROM (SELECT repeat('0123456789abcdef', 33 * 1024 * 1024 / 16) AS p) s});
is($r, (33 * 1024 * 1024) . '|t', 'a 33 MB prompt and its 33 MB reply');

# every code point from 1 to 0xFFFF except surrogates, and some beyond
$r = $node->safe_psql('postgres', q{
	SELECT claude_complete(p) = p, length(p)
	FROM (SELECT string_agg(chr(i), '') AS p FROM generate_series(1, 65535) i
	      WHERE i NOT BETWEEN 55296 AND 57343) s});
is($r, 't|63487', 'every BMP character survives the round trip');
$r = $node->safe_psql('postgres', q{
	SELECT claude_complete(p) = p
	FROM (SELECT string_agg(chr(i), '') AS p FROM generate_series(65536, 1114111, 97) i) s});
is($r, 't', 'characters beyond the BMP survive the round trip');

# JSON escapes in the prompt are text, not JSON
my $odd = q~\u0041 \" \\\\ "}{" </script>~;
$r = $node->safe_psql('postgres', "SELECT claude_complete(\$q\$$odd\$q\$)");
is($r, $odd, 'JSON-looking text is sent as text');

# the mock saw valid JSON with the exact string (its own parser)
my $reqs = $mock->requests(0);
is($reqs->[-1]{body}{messages}[0]{content}, $odd, 'the request body was valid JSON holding the exact text');

# the same through claude_messages, with a system prompt of 1 MB
$r = $node->safe_psql('postgres', q{
	SELECT claude_messages(jsonb_build_object(
	  'system', repeat('s', 1024 * 1024),
	  'messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', E'line1\nline2 \u2028 end'))
	))->'content'->0->>'text' = E'line1\nline2 \u2028 end'});
is($r, 't', 'claude_messages keeps odd text exactly');

# the worker frees request and reply memory: many large calls in a row work
$r = $node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 20) i
	WHERE claude_complete(repeat('x', 2 * 1024 * 1024) || i) = repeat('x', 2 * 1024 * 1024) || i});
is($r, '20', '20 calls of 2 MB each');

$node->stop;
done_testing();
