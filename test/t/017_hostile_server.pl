# The HTTP worker serves every session at once: nothing a server sends may
# stop it, stall everyone's traffic or corrupt the books.  For each hostile
# reply: the caller's SQLSTATE and message, the worker's PID unchanged, an
# innocent call right after succeeds, and claude_stats/claude_usage stay
# finite and non-negative.  And the worker answers PostgreSQL's own
# signals: DROP DATABASE and ALTER DATABASE ... SET TABLESPACE finish.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(encode_base64);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('server', $mock,
	conf => "claude.max_retries = 0\nclaude.request_timeout = '20s'\n"
	  . "claude.input_tokens_per_minute = 1000000\nclaude.batch_poll_interval = 1\n");
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }
my $pid = worker_pid($node);

# A call with a reply of the server's choosing: (rc, stdout, stderr).
sub with_reply
{
	my ($fault, $q, $db) = @_;
	$mock->fault($fault);
	return $node->psql($db // 'postgres', $q // "SELECT claude_complete('hostile')",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
}

# After every hostile reply: same worker, next call fine, books sane.
sub unharmed
{
	my ($what) = @_;
	is(worker_pid($node), $pid, "$what: the HTTP worker is the same process");
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '10s'; SELECT claude_complete('innocent ' || random(), cache => false)");
	is($rc, 0, "$what: an innocent call succeeds at once") or diag($err);
	is(sql("SELECT count(*) FROM claude_stats WHERE input_tokens >= 0 AND output_tokens >= 0 "
		  . "AND cost_usd >= 0 AND cost_usd < 1e9 AND requests >= 0"), '1',
		"$what: claude_stats stays finite and non-negative");
	is(sql("SELECT count(*) FROM claude_usage WHERE NOT (input_tokens >= 0 AND output_tokens >= 0 "
		  . "AND cost_usd >= 0 AND cost_usd < 1e9)"), '0',
		"$what: claude_usage stays finite and non-negative");
}

sub message
{
	my ($usage, $text, $extra) = @_;
	return '{"id":"msg_x","type":"message","role":"assistant","model":"claude-sonnet-4-6",'
	  . '"content":[{"type":"text","text":' . ($text // '"ok"') . '}],'
	  . '"stop_reason":"end_turn","stop_sequence":null,'
	  . '"usage":' . ($usage // '{"input_tokens":3,"output_tokens":2}') . ($extra // '') . '}';
}

# ---- 1. \u escapes of non-ASCII characters anywhere
my ($rc, $out, $err) = with_reply({ body => message('{"input_tokens":3,"output_tokens":2,"caf\u00e9":1}',
	'"caf\u00e9 \ud83d\ude00"', ',"unknown":"na\u00efve","tool":{"input":{"k\u00e9y":"\u00e9"}}') });
is($out, "caf\xc3\xa9 \xf0\x9f\x98\x80", 'escapes are decoded: caf\\u00e9 and a surrogate pair') or diag($err);
unharmed('\u00e9 in a reply');

# ---- 2. nesting 16,000 deep, in an unknown field and in usage
my $deep = '[' x 16000 . ']' x 16000;
($rc, $out, $err) = with_reply({ body => message(undef, undef, ",\"deep\":$deep") });
like($err, qr/ZC002/, 'a reply nested 16,000 deep: ZC002, not "stack depth limit exceeded"');
unharmed('nesting 16,000 deep');
($rc, $out, $err) = with_reply({ status => 400, body => "{\"error\":$deep}" });
like($err, qr/ZC400.*Claude API error 400 http_error/s, 'an error body nested 16,000 deep: ZC400, not 54001');
unharmed('a deep error body');

# ---- 3. rate-limit headers that would stop all traffic
($rc, $out, $err) = with_reply({ body => message(), headers => { 'anthropic-ratelimit-requests-remaining' => '0',
	'anthropic-ratelimit-requests-limit' => '0.000001',
	'anthropic-ratelimit-requests-reset' => '2999-01-01T00:00:00Z' } });
is($rc, 0, 'a reply claiming no requests left until 2999 is itself answered');
sql("SELECT pg_reload_conf()");
ok(wait_until(sub {
	my ($r) = $node->psql('postgres', "SET statement_timeout = '2s'; SELECT claude_complete('after reload', cache => false)");
	$r == 0 }, 20), 'after a reload the server\'s pause is gone');
($rc, $out, $err) = with_reply({ body => message(), headers => { 'anthropic-ratelimit-input-tokens-remaining' => 'nan' } });
unharmed('remaining: nan');

# ---- 4 and 5. usage counts out of any range
for my $u ('{"input_tokens":1e15,"output_tokens":2}', '{"input_tokens":1e999,"output_tokens":1e999}',
	'{"input_tokens":-5,"output_tokens":2}', '{"input_tokens":1.5,"output_tokens":2}')
{
	($rc, $out, $err) = with_reply({ body => message($u) });
	is($rc, 0, "usage $u: the reply is still the caller's") or diag($err);
	unharmed("usage $u");
}
ok(wait_until(sub { sql("SELECT count(*) FROM claude_usage_log") ne '0' }, 30), 'usage is flushed');
is(sql("SELECT count(*) FROM claude_usage_log WHERE input_tokens > 1e9 OR input_tokens < 0"), '0',
	'and the log holds no absurd count');

# ---- 6. paging without end
$mock->reset;
$mock->fault([ map { { body => "{\"data\":[{\"id\":\"m$_\",\"display_name\":\"M\",\"created_at\":\"2025-01-01T00:00:00Z\",\"type\":\"model\"}],"
	  . "\"has_more\":true,\"first_id\":\"m$_\",\"last_id\":\"m$_\"}" } } 1 .. 150 ]);
($rc, $out, $err) = $node->psql('postgres', "SELECT count(*) FROM claude_models()");
is($out, '100', 'claude_models follows at most 100 pages of a server that never ends');
is($mock->stats->{requests}, 100, 'and sends no more');
$mock->clear_faults;
$mock->fault([ map { { body => "{\"data\":[{\"id\":\"$_\",\"type\":\"model\"}],\"has_more\":true,\"last_id\":\"$_\"}" } } qw(a b a c) ]);
($rc, $out, $err) = $node->psql('postgres', "SELECT count(*) FROM claude_models()");
is($out, '3', 'and stops when a last_id comes back');
$mock->clear_faults;

# ---- 8. a reply larger than claude.max_reply_size
($rc, $out, $err) = with_reply({ body => message(undef, '"' . ('x' x (2 * 1024 * 1024)) . '"') },
	"SET claude.max_reply_size = '1MB'; SELECT claude_complete('big')");
like($err, qr/ZC002.*larger than claude.max_reply_size/s, 'a 2 MB reply with max_reply_size = 1MB: ZC002');
unharmed('a reply over claude.max_reply_size');

# ---- 9. an error message cut inside a multibyte character
($rc, $out, $err) = with_reply({ status => 400, message => ('x' x 999) . ('é' x 10) },
	"SET client_encoding = 'LATIN1'; SELECT claude_complete('cut')");
like($err, qr/Claude API error 400 invalid_request_error: x{999}/, 'a LATIN1 client gets the API\'s error, cut at a character')
  or diag($err);
unlike($err, qr/invalid byte sequence/, 'not "invalid byte sequence"');

# ---- 10. smaller: counts, content, redirects, \u0000, raw bytes
($rc, $out, $err) = with_reply({ body => '{"input_tokens":-5}' }, "SELECT claude_count_tokens('x')");
like($err, qr/ZC002/, 'count_tokens of -5: ZC002');
($rc, $out, $err) = with_reply({ body => '{"input_tokens":1.5}' }, "SELECT claude_count_tokens('x')");
like($err, qr/ZC002/, 'count_tokens of 1.5: ZC002');
($rc, $out, $err) = with_reply({ body => message(undef, '42') });
like($err, qr/ZC002/, 'a text block whose text is no string: ZC002');
($rc, $out, $err) = with_reply({ body => '{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":0}}' });
like($err, qr/ZC002/, 'content: [] is no reply: ZC002');
($rc, $out, $err) = with_reply({ status => 301, headers => { location => 'https://example.com/' }, body => '' });
like($err, qr/redirect 301 not followed/, 'a 301: "redirect not followed"');
($rc, $out, $err) = with_reply({ body => message(undef, '"a\u0000b"') });
like($err, qr/ZC002/, '\u0000 in claude_complete: ZC002');
($rc, $out, $err) = with_reply({ body => message(undef, '"a\u0000b"') },
	"SELECT claude_messages('{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}')");
like($err, qr/ZC002/, '\u0000 in claude_messages: ZC002 too');
my $bad_utf8 = encode_base64(message(undef, "\"bad \xff\xfe bytes\""), '');
$mock->fault([ {}, { body_base64 => $bad_utf8 }, {} ]);
($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(completion) || ' ' || count(error) || ' ' || bool_and(error IS NULL OR error LIKE '%not valid UTF-8%') "
	  . "FROM claude_complete_many(ARRAY['one', 'two', 'three'], cache => false)");
is($out, '2 1 true', 'raw invalid UTF-8 in one reply fails that prompt alone ("not valid UTF-8")')
  or diag($out, $err);
unharmed('raw invalid UTF-8');

# ---- decoding in the caller's encoding: UTF8, LATIN1, SQL_ASCII
for my $enc ('LATIN1', 'SQL_ASCII')
{
	my $db = lc "db_$enc";
	sql("CREATE DATABASE $db ENCODING '$enc' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
	sql("CREATE EXTENSION claude", $db);
	($rc, $out, $err) = with_reply({ body => message(undef, '"caf\u00e9"') }, "SELECT claude_complete('x') = 'caf' || chr(233)", $db);
	is($out, $enc eq 'LATIN1' ? 't' : 'f', "$enc: an escaped é arrives (as é in LATIN1, as UTF-8 bytes in SQL_ASCII)")
	  or diag($err);
	($rc, $out, $err) = with_reply({ body => message(undef, '"\u65e5\u672c"') }, "SELECT claude_complete('x')", $db);
	if ($enc eq 'LATIN1')
	{
		like($err, qr/ZC002/, 'LATIN1: a reply it cannot hold is ZC002');
	}
	else
	{
		is($rc, 0, 'SQL_ASCII: takes the bytes as they are');
	}
	unharmed("$enc database");
}

# ---- 7. a cold HTTP/2 pool and one connection that never gets a ServerHello
my $mock2 = ClaudeMock->start(keys => ['test-key'], http2 => 1);
$node->append_conf('postgresql.conf', "claude.base_url = '" . $mock2->base_url . "'\n"
	  . "claude.ca_file = '" . $mock2->ca_file . "'\n");
$node->restart;
$pid = wait_for_worker($node);
$mock2->config({ hang_handshakes => 1 });
my $hung = start_bg($node, "SET claude.request_timeout = '25s'; SELECT claude_complete('[hung]', cache => false)");
ok(wait_until(sub { $mock2->stats->{tcp_connections} >= 1 }), 'the first connection of a cold pool hangs in its handshake');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('beside the hung one', cache => false)");
is($rc, 0, 'another call beside it succeeds') or diag($err);
ok($hung->{run}->pumpable, 'while the hung one still waits: the other did not wait on its connection');
$node->safe_psql('postgres', "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%[hung]%' AND pid <> pg_backend_pid()");
finish_bg($hung);
my @bg = map { start_bg($node, "SELECT claude_complete('[[mock:delay=300]] h2 $_', cache => false)") } 1 .. 20;
finish_bg($_) for @bg;
cmp_ok($mock2->stats->{max_concurrency}, '>', 2, 'HTTP/2 still multiplexes once the pool is warm');
$node->append_conf('postgresql.conf', "claude.base_url = '" . $mock->base_url . "'\n"
	  . "claude.ca_file = '" . $mock->ca_file . "'\n");
$node->restart;
$pid = wait_for_worker($node);

# ---- PostgreSQL's own signals: databases can be dropped and moved
sql("CREATE DATABASE gone_plain");
($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '20s'; DROP DATABASE gone_plain");
is($rc, 0, 'DROP DATABASE finishes with the HTTP worker running') or diag($err);
sql("CREATE DATABASE gone_busy");
sql("CREATE EXTENSION claude", 'gone_busy');
sql("CREATE TABLE t (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER f AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION claude_enrich_trigger('summary', 'S: {body}');
	INSERT INTO t VALUES (1, 'x');", 'gone_busy');
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker' AND datname = 'gone_busy'") eq '1' }),
	'a database worker is connected to the database');
($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '20s'; DROP DATABASE gone_busy");
is($rc, 0, 'DROP DATABASE of a database with a worker finishes: the worker steps aside') or diag($err);
my $ts = $node->basedir . '/ts';
mkdir $ts;
sql("CREATE TABLESPACE elsewhere LOCATION '$ts'");
sql("CREATE DATABASE moving");
sql("CREATE EXTENSION claude", 'moving');
sql("SELECT claude_complete('wake the worker')", 'moving');
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude db worker' AND datname = 'moving'") eq '1' }),
	'a database worker is connected to the database to move');
($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '20s'; ALTER DATABASE moving SET TABLESPACE elsewhere");
is($rc, 0, 'ALTER DATABASE ... SET TABLESPACE finishes') or diag($err);
is(worker_pid($node), $pid, 'after all of it the HTTP worker is the same process');

done_testing();
