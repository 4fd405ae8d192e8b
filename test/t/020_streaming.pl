# Streaming: rows as the answer is written, long answers bounded by the
# silence between events rather than their length, every event type
# assembled into the Message a plain request gets, cancels, errors and cuts
# before and after the first row, and a server that sends what it should not.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('streaming', $mock, cache => 1);
$node->safe_psql('postgres', 'SET claude.cache = off');

sub call
{
	my ($sql, $settings) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET claude.cache = off;\n" . ($settings // '') . $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}

sub last_request { my $r = $mock->requests; return $r->[-1] }

my $long = join(' ', map { "word$_" } 1 .. 12);

# ---- the first row comes while Claude is still writing
$mock->reset;
my ($out, $err) = call(qq{
BEGIN;
DECLARE c CURSOR FOR SELECT claude_stream('[[mock:stream_pause=2000]] $long');
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
FETCH 1 FROM c;
SELECT extract(epoch FROM clock_timestamp()) - :t0 AS first_s;
FETCH ALL FROM c;
SELECT extract(epoch FROM clock_timestamp()) - :t0 AS all_s;
COMMIT;});
my @lines = split /\n/, $out;
my ($first_s) = grep { /^[0-9.]+$/ } @lines;
my ($all_s) = reverse grep { /^[0-9.]+$/ } @lines;
ok(defined $first_s && defined $all_s, 'timings read') or diag("$out\n$err");
ok($first_s < $all_s - 1.0, "the first row ($first_s s) came long before the last ($all_s s)");
ok($all_s >= 1.9, 'the last row came after the pause of the answer');
like($lines[0] . $lines[1], qr/^\[\[mock/, 'the first row is the start of the answer');
is($mock->stats->{requests}, 1, 'one request');
ok(last_request()->{stream}, 'sent with "stream": true');

# ---- a 3-second answer with pings, under a 1-second request_timeout
$mock->reset;
($out, $err) = call(
	"SELECT string_agg(p, '') FROM (SELECT claude_stream('[[mock:stream_delay=250]][[mock:ping=200]] $long') AS p) s;",
	"SET claude.request_timeout = '1s';");
is($out, "[[mock:stream_delay=250]][[mock:ping=200]] $long", 'a 3 s stream succeeds under request_timeout = 1s')
  or diag($err);
is($mock->stats->{requests}, 1, 'in one request');

# the same long answer through claude_complete: above stream_min_tokens it
# streams, so it is paid once; not streamed, every attempt times out and
# is paid again
$mock->reset;
($out, $err) = call("SELECT claude_complete('[[mock:stream_delay=250]][[mock:ping=200]] $long', max_tokens => 200);",
	"SET claude.request_timeout = '1s'; SET claude.stream_min_tokens = 100;");
is($out, "[[mock:stream_delay=250]][[mock:ping=200]] $long", 'claude_complete above stream_min_tokens streams and succeeds')
  or diag($err);
is($mock->stats->{requests}, 1, 'the long answer is paid once');
ok(last_request()->{stream}, 'it went streamed');
$mock->reset;
($out, $err) = call("SELECT claude_complete('[[mock:delay=1500]] $long', max_tokens => 200);",
	"SET claude.request_timeout = '1s'; SET claude.stream_min_tokens = 1000; SET claude.max_retries = 2;");
like($err, qr/ZC408/, 'not streamed, the same long answer times out');
is($mock->stats->{requests}, 3, 'after being paid for on every attempt');
ok(!last_request()->{stream}, 'below stream_min_tokens a request is not streamed');

# extended thinking always streams
$mock->reset;
($out, $err) = call(q{SELECT claude_messages('{"messages": [{"role": "user", "content": "think"}], "thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}')->'content'->0->>'text'});
is($out, 'think', 'a request with thinking gets its Message');
ok(last_request()->{stream}, 'and was streamed');

# ---- every event type assembles to the Message a plain request gets
for my $bytes (0, 1)
{
	$mock->reset;
	$mock->config({ stream_write_bytes => $bytes });
	my $req = q{'{"messages": [{"role": "user", "content": "[[mock:rich]] compare"}], "max_tokens": 300}'};
	($out, $err) = call(qq{
SELECT claude_messages($req) AS plain \\gset
SET claude.stream_min_tokens = 1;
SELECT claude_messages($req) AS assembled \\gset
SELECT e AS last FROM claude_messages_stream($req) AS e WHERE e->>'type' = 'message' \\gset
SELECT :'plain'::jsonb = :'assembled'::jsonb, :'plain'::jsonb = :'last'::jsonb,
       jsonb_array_length(:'plain'::jsonb->'content'),
       (SELECT string_agg(b->>'type', ',') FROM jsonb_array_elements(:'plain'::jsonb->'content') b);
});
	is($out, "t|t|4|thinking,redacted_thinking,text,tool_use",
		"thinking, signature, redacted thinking, citations and tool input assemble to the plain Message"
		  . ($bytes ? ' (the stream cut into single bytes)' : ''))
	  or diag("$out\n$err");
	my @streamed = map { $_->{stream} ? 1 : 0 } @{ $mock->requests };
	is("@streamed", '0 1 1', 'one plain request, two streamed');
}
$mock->config({ stream_write_bytes => 0 });

# the events of claude_messages_stream, in order
$mock->reset;
($out) = call(q{SELECT string_agg(e->>'type', ',' ORDER BY n) FROM claude_messages_stream(
  '{"messages": [{"role": "user", "content": "[[mock:rich]] events"}], "max_tokens": 300}') WITH ORDINALITY AS t(e, n)});
like($out, qr/^message_start,content_block_start,content_block_delta,.*content_block_stop,message_delta,message_stop,message$/,
	'claude_messages_stream: each event, then the message');
like($out, qr/content_block_delta.*content_block_delta/, 'with every delta a row');

# ---- cancel mid-stream: the transfer ends, usage is kept
$mock->reset;
$node->safe_psql('postgres', 'CREATE ROLE streamer LOGIN');
$node->safe_psql('postgres', 'GRANT EXECUTE ON FUNCTION claude_stream(text, text, int, text, float8) TO streamer');
my $h = ClaudeTest::start_bg($node,
	"SET ROLE streamer; SET claude.cache = off; SELECT claude_stream('[[mock:stream_delay=500]] cancel-me $long')");
ok(wait_until(sub { $mock->stats->{requests} >= 1 }), 'the stream started');
usleep(800_000);
my ($rc, $o, $e, $ms) = ClaudeTest::cancel_bg($node, $h, 'cancel-me');
like($e, qr/canceling statement due to user request/, 'a cancel ends the stream');
ok(wait_until(sub { (last_request()->{stream_end} // '') eq 'client_closed' }, 10),
	'and the mock sees the connection closed');
ok(wait_until(sub {
	$node->safe_psql('postgres', "SELECT coalesce(sum(input_tokens), 0) > 0 FROM claude_usage WHERE role = 'streamer'::regrole::oid") eq 't' }, 10),
	'the usage of the cancelled stream is recorded as far as it is known');

# a cursor closed before the end aborts the transfer
$mock->reset;
($out, $err) = call(qq{
BEGIN;
DECLARE c CURSOR FOR SELECT claude_stream('[[mock:stream_delay=300]] close-me $long');
FETCH 1 FROM c;
CLOSE c;
COMMIT;});
like($out, qr/mock/, 'the first row came');
ok(wait_until(sub { (last_request()->{stream_end} // '') eq 'client_closed' }, 10),
	'closing the cursor closes the transfer');

# ---- errors before and after the first row
$mock->reset;
$mock->fault({ stream_error => 'overloaded_error', stream_error_after => 0 });
($out, $err) = call("SELECT string_agg(p, '') FROM (SELECT claude_stream('retried $long') AS p) s");
is($out, "retried $long", 'an error event before the first row is retried');
is($mock->stats->{requests}, 2, 'once');

$mock->reset;
$mock->fault({ stream_cut_after => 0 });
($out, $err) = call("SELECT string_agg(p, '') FROM (SELECT claude_stream('cut early $long') AS p) s");
is($out, "cut early $long", 'a cut before the first row is retried');
is($mock->stats->{requests}, 2, 'once, too');

my $late = "[[mock:stream_error=overloaded_error\@3]] late $long";
$mock->reset;
($out, $err) = call(qq{
BEGIN;
DECLARE c CURSOR FOR SELECT claude_stream('$late');
FETCH 1 FROM c;
FETCH ALL FROM c;
COMMIT;});
ok($out ne '' && index($late, $out) == 0, 'rows came before the error, the start of the answer') or diag($out);
like($err, qr/ZC500: Claude API error 529 overloaded_error/, 'an error event after them fails the statement as a 529');
is($mock->stats->{requests}, 1, 'and is not retried: rows were returned');

$mock->reset;
($out, $err) = call("SELECT claude_stream('[[mock:stream_cut=3]] cut late $long')");
like($err, qr/ZC001/, 'a cut after rows fails the statement as a connection error');
is($mock->stats->{requests}, 1, 'not retried');

# a stream that ends without message_stop is ZC002 and never cached
$mock->reset;
($out, $err) = call("SELECT claude_complete('[[mock:stream_no_stop]] unfinished', max_tokens => 200)",
	"SET claude.cache = on; SET claude.stream_min_tokens = 100;");
like($err, qr/ZC002.*message_stop/, 'a stream without message_stop is ZC002');
($out, $err) = call("SELECT count(*) FROM claude_messages_stream('{\"messages\": [{\"role\": \"user\", \"content\": \"[[mock:stream_no_stop]] events\"}]}')");
like($err, qr/ZC002/, 'claude_messages_stream says so too');
sleep 1;
is($node->safe_psql('postgres', "SELECT count(*) FROM claude_cache WHERE request::text LIKE '%unfinished%'"),
	'0', 'and nothing of it is cached');

# ---- a hostile server
for my $case (
	[ 'data that is not JSON', "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\n\n" ],
	[ 'a block index out of range',
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1}}}\n\n"
		  . "data: {\"type\":\"content_block_delta\",\"index\":99999999999,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n" ],
	[ 'a delta of a block never started',
		"data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":1}}}\n\n"
		  . "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n"
		  . "data: {\"type\":\"message_stop\"}\n\n" ],
	[ 'nesting deeper than anything', "data: " . ('[' x 100000) . "\n\n" ])
{
	$mock->reset;
	$mock->fault({ status => 200, headers => { 'content-type' => 'text/event-stream' }, body => $case->[1] });
	($out, $err) = call("SELECT claude_complete('hostile', max_tokens => 200)", 'SET claude.stream_min_tokens = 100;');
	like($err, qr/ZC002/, "$case->[0]: ZC002");
}
$mock->reset;
# what is kept counts, not the events' wrapping (026 plays 100,000 pings)
$mock->config({ stream_chunk_chars => 64 });
($out, $err) = call("SELECT count(*) FROM claude_stream('" . ('x' x 70000) . "')", "SET claude.max_reply_size = '64kB';");
like($err, qr/ZC002.*claude.max_reply_size/, 'a stream whose text is larger than claude.max_reply_size is ZC002');
$mock->config({ stream_chunk_chars => 8 });
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude http worker'"),
	'1', 'the HTTP worker is still there');
($out) = call("SELECT claude_complete('still works')");
is($out, 'still works', 'and serves the next call');

# ---- time to first token in the statistics
($out) = call(q{SELECT ttft_p50_ms IS NOT NULL AND ttft_p50_ms > 0, ttft_p99_ms >= ttft_p50_ms FROM claude_stats});
is($out, 't|t', 'claude_stats has time-to-first-token percentiles');
($out) = call(q{SELECT substring(claude_metrics() FROM 'claude_time_to_first_token_seconds_count (\d+)')::int > 5});
is($out, 't', 'claude_metrics() has the histogram');

done_testing();
