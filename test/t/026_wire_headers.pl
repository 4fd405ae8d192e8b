# What the wire says, and only that: the final response's headers count
# (not a 103's, not trailers); request-id reaches DETAIL and the log as
# printable ASCII, at most 64 characters, with the key redacted from the
# whole value; a stream ends at message_stop whatever the server does after;
# a stream cut mid-answer and retried counts what each attempt reported;
# one rule for lone surrogates; max_reply_size counts what is kept, not
# pings; a garbage created_at is ZC002.  After every case: the caller's
# SQLSTATE, the HTTP worker's PID unchanged, an innocent call succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(encode_base64);
use JSON::PP;
use ClaudeMock;
use ClaudeTest;

# a key long enough that a cut one would still show its characters
my $key = 'sk-ant-api03-' . ('Zq9x' x 24) . '-AA';
my $secret = qr/Zq9xZq9x/;
my $mock = ClaudeMock->start(keys => [$key]);
my $mock2 = ClaudeMock->start(keys => [$key], http2 => 1);
# every Messages call streams on the wire (max_tokens 1024 > 100)
my $node = new_node('wire', $mock, key => $key,
	conf => "claude.max_retries = 0\nclaude.request_timeout = '5s'\nclaude.stream_min_tokens = 100\n"
	  . "claude.input_tokens_per_minute = 10000000\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
my $pid = worker_pid($node);

my $h2 = "SET claude.base_url = '" . $mock2->base_url . "'; SET claude.ca_file = '" . $mock2->ca_file . "';\n";

# (rc, stdout, stderr) of a call after queueing faults on $m
sub with_faults
{
	my ($m, $faults, $q, $settings) = @_;
	$m->reset;
	$m->fault($faults) if $faults;
	return $node->psql('postgres',
		"SET statement_timeout = '20s';\n" . ($settings // '') . ($q // "SELECT claude_complete('hostile')"),
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
}

sub unharmed
{
	my ($what) = @_;
	$mock->reset;
	is(worker_pid($node), $pid, "$what: the HTTP worker is the same process");
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '10s'; SELECT claude_complete('innocent ' || random(), cache => false)");
	is($rc, 0, "$what: an innocent call succeeds at once") or diag($err);
}

sub message
{
	my ($usage, $text) = @_;
	return '{"id":"msg_x","type":"message","role":"assistant","model":"claude-sonnet-4-6",'
	  . '"content":[{"type":"text","text":' . ($text // '"ok"') . '}],'
	  . '"stop_reason":"end_turn","stop_sequence":null,'
	  . '"usage":' . ($usage // '{"input_tokens":3,"output_tokens":2}') . '}';
}

# server-sent events of a Message whose text comes in the given deltas
sub events
{
	my (%o) = @_;
	my $usage = $o{usage} // '{"input_tokens":3,"output_tokens":1}';
	my $s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_s\",\"type\":\"message\","
	  . "\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,"
	  . "\"stop_sequence\":null,\"usage\":$usage}}\n\n";
	$s .= $o{between} // '';
	$s .= "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
	  . "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
	$s .= "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
	  . "\"delta\":{\"type\":\"text_delta\",\"text\":$_}}\n\n" for @{ $o{deltas} // ['"ok"'] };
	return $s if $o{cut};
	$s .= "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	  . "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
	  . "\"stop_sequence\":null},\"usage\":" . ($o{final_usage} // '{"output_tokens":2}') . "}\n\n"
	  . "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
	return $s;
}
sub sse_fault { return { status => 200, headers => { 'content-type' => 'text/event-stream' }, body => $_[0] } }

my $ERROR_BODY = '{"type":"error","error":{"type":"api_error","message":"boom"}}';
# a whole HTTP/1.1 response, bytes as given (the mock closes the
# connection after it: "connection: close" keeps curl from reusing it)
sub raw
{
	my ($status, $headers, $body) = @_;
	my $r = "HTTP/1.1 $status X\r\n" . join('', map { "$_\r\n" } @$headers)
	  . "connection: close\r\ncontent-length: " . length($body) . "\r\n\r\n" . $body;
	return { raw_response_base64 => encode_base64($r, '') };
}

# ======== request-id: redacted whole, then printable ASCII, 64 characters
my ($rc, $out, $err);
for my $case ([ 'the key itself', $key ], [ 'the key after 40 filler bytes', ('f' x 40) . $key ],
	[ 'the key after 60 filler bytes', ('f' x 60) . $key ])
{
	($rc, $out, $err) = with_faults($mock, raw(500, [ "request-id: $case->[1]", 'content-type: application/json' ], $ERROR_BODY));
	like($err, qr/ZC500.*Claude API error 500 api_error: boom/s, "request-id $case->[0]: the API's error");
	unlike($err, $secret, "request-id $case->[0]: no part of the key in the error");
	like($err, qr/request-id: f*\*{4,}/, "request-id $case->[0]: redacted") or diag($err);
}
($rc, $out, $err) = with_faults($mock, raw(200, [ 'request-id: ' . ('x' x 40) . $key, 'content-type: application/json' ], '{}'));
like($err, qr/ZC002/, 'a bad reply whose request-id echoes the key: ZC002');
unlike($err, $secret, 'and its DETAIL shows no part of the key');
unharmed('request-id echoing the key');

my $rid = "req_\e[31mred\rbare\xffend\x01" . ('y' x 200);
($rc, $out, $err) = with_faults($mock, raw(500, [ "request-id: $rid", 'content-type: application/json' ], $ERROR_BODY));
like($err, qr/Claude API error 500 api_error: boom/, 'request-id with escape sequences, bare CR, \xff: the API\'s error');
my ($shown) = $err =~ /request-id: ([^\n]*)\./;
ok(defined $shown && $shown =~ /^[\x20-\x7e]+$/, 'request-id shows as printable ASCII') or diag($err);
ok(defined $shown && length($shown) <= 64, 'of at most 64 characters (' . length($shown // '') . ')');
unlike($err, qr/[\e\r\xff\x01]/, 'no escape, CR, \xff or control byte reaches the caller');
($rc, $out, $err) = with_faults($mock, raw(500, [ "request-id: $rid", 'content-type: application/json' ], $ERROR_BODY),
	undef, "SET client_encoding = 'LATIN1';");
like($err, qr/ZC500.*Claude API error 500 api_error: boom/s, 'a LATIN1 client gets the API\'s error');
unlike($err, qr/invalid byte sequence|has no equivalent/, 'not an encoding error');
unharmed('request-id of raw bytes');
my $log = slurp_file($node->logfile);
unlike($log, $secret, 'the server log holds no part of the key');
unlike($log, qr/[\e\xff]/, 'nor an escape sequence or \xff from a header');

# ======== only the final response's headers count
my $ok = message();
($rc, $out, $err) = with_faults($mock, { raw_response_base64 => encode_base64(
	"HTTP/1.1 103 Early Hints\r\ncontent-type: text/event-stream\r\nrequest-id: from-103\r\n\r\n"
	  . "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: " . length($ok) . "\r\n\r\n$ok", '') });
is($out, 'ok', 'a 103 saying text/event-stream before a JSON 200 without content-type: the JSON reply') or diag($err);
for my $m ([ 'HTTP/1.1', $mock, '' ], [ 'HTTP/2', $mock2, $h2 ])
{
	my ($v, $srv, $set) = @$m;
	($rc, $out, $err) = with_faults($srv, { early_hints => { 'content-type' => 'text/event-stream' }, body => message() },
		undef, $set);
	is($out, 'ok', "$v: a 103 saying text/event-stream before a JSON 200: the JSON reply") or diag($err);
	($rc, $out, $err) = with_faults($srv, [ { early_hints => { 'x-should-retry' => 'false', 'retry-after' => '600' },
		status => 529 }, {} ], undef, $set . 'SET claude.max_retries = 1;');
	is($rc, 0, "$v: a 103 saying x-should-retry: false before a 529: retried") or diag($err);
	is($srv->stats->{requests}, 2, "$v: once, at once (the 103's retry-after does not count)");
	($rc, $out, $err) = with_faults($srv, [ { status => 529, should_retry => 'false',
		trailers => { 'x-should-retry' => 'true', 'request-id' => 'from-trailer' } }, {} ],
		undef, $set . 'SET claude.max_retries = 1;');
	like($err, qr/ZC500/, "$v: a 529 with x-should-retry: false and the trailer true: not retried");
	like($err, qr/request-id: req_mock_\d+/, "$v: request-id is the header's, not the trailer's");
	is($srv->stats->{requests}, 1, "$v: one request");
	unharmed("$v: 103 and trailers");
}

# ======== a stream ends at message_stop
($rc, $out, $err) = with_faults($mock, { stream_keep_open => JSON::PP::true },
	"SELECT claude_complete('kept open ' || 1)", 'SET claude.cache = on;');
is($out, 'kept open 1', 'a stream kept open after message_stop: claude_complete returns the answer')
  or diag($err);
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request::text LIKE '%kept open 1%'") eq '1' }, 10),
	'and caches it');
($rc, $out, $err) = with_faults($mock, undef, "SELECT claude_complete('kept open ' || 1)", 'SET claude.cache = on;');
is($out . ' ' . $mock->stats->{requests}, 'kept open 1 0', 'served from the cache next time');
($rc, $out, $err) = with_faults($mock2, { stream_keep_open => JSON::PP::true },
	"SELECT claude_complete('kept open h2')", $h2);
is($out, 'kept open h2', 'the same over HTTP/2') or diag($err);
($rc, $out, $err) = with_faults($mock, { stream_keep_open => JSON::PP::true },
	"SELECT string_agg(p, '') FROM (SELECT claude_stream('kept open, streamed') AS p) s");
is($out, 'kept open, streamed', 'claude_stream ends too') or diag($err);
($rc, $out, $err) = with_faults($mock, { stream_keep_open => JSON::PP::true },
	"SELECT string_agg(e->>'type', ' ') FROM claude_messages_stream('{\"messages\": [{\"role\": \"user\", \"content\": \"kept\"}]}') e");
like($out, qr/message_delta message_stop message$/, 'claude_messages_stream ends with the message') or diag($err);
$mock->reset;
$mock->fault({ stream_keep_open => JSON::PP::true });
sql("CREATE TABLE notes (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER s AFTER INSERT ON notes FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'S: {body}', 'max_tokens=200');
	INSERT INTO notes VALUES (1, 'kept open');");
ok(wait_until(sub { sql("SELECT summary FROM notes") eq 'S: kept open' }, 30), 'a streamed trigger job gets its answer')
  or diag(sql("SELECT * FROM claude_jobs"));
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs") eq '0' }, 10), 'and is done');
unharmed('streams kept open');

# ======== a stream cut mid-answer and retried: both attempts' usage
sub books
{
	return sql("SELECT (SELECT concat_ws(' ', requests, input_tokens, output_tokens) FROM claude_stats) || ' | ' || "
		  . "(SELECT concat_ws(' ', sum(requests), sum(input_tokens), sum(output_tokens)) FROM claude_usage)");
}
sql("SELECT claude_stats_reset()");
my $cut = events(usage => '{"input_tokens":1000,"output_tokens":1}', deltas => [ '"Hello, "', '"wor"' ], cut => 1);
my ($before) = books() =~ /\| (\d+) (\d+) (\d+)/ ? [ $1, $2, $3 ] : [ 0, 0, 0 ];
($rc, $out, $err) = with_faults($mock,
	[ { %{ sse_fault($cut . (' ' x (length($cut) + 10))) }, truncate => JSON::PP::true },
	  { body => message('{"input_tokens":1000,"output_tokens":800}', '"Hello, world"') } ],
	"SELECT claude_complete('cut and retried')", 'SET claude.max_retries = 1;');
is($out, 'Hello, world', 'a stream cut mid-answer is retried') or diag($err);
is($mock->stats->{requests}, 2, 'once');
my @after = books() =~ /^(\d+) (\d+) (\d+) \| (\d+) (\d+) (\d+)$/;
is("@after[0..2]", '1 2000 800', 'claude_stats: one request, the input of both attempts, the output of the second');
is(join(' ', $after[3] - $before->[0], $after[4] - $before->[1], $after[5] - $before->[2]), '1 2000 800',
	'claude_usage: the same (the cut attempt\'s output is unknown, not its message_start\'s 1)');

# bad usage in a stream is unknown: the answer kept, the request counted
sql("SELECT claude_stats_reset()");
for my $u ([ '{"input_tokens":1.5,"output_tokens":1}', undef ], [ '{"input_tokens":3,"output_tokens":1}', '{"output_tokens":-7}' ],
	[ '{"input_tokens":1e999,"output_tokens":1}', undef ])
{
	($rc, $out, $err) = with_faults($mock, sse_fault(events(usage => $u->[0], final_usage => $u->[1])));
	is($out, 'ok', "a stream with usage $u->[0] / " . ($u->[1] // 'fine') . ': the answer is the caller\'s') or diag($err);
}
is(sql("SELECT concat_ws(' ', requests, input_tokens, output_tokens) FROM claude_stats"), '3 0 0',
	'counted as requests, their tokens not believed');
unharmed('usage of streams');

# ======== one rule for lone surrogates: ZC002 everywhere
my $messages = "SELECT claude_messages('{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}')";
for my $s ('"a\ud800b"', '"a\udc00b"', '"a\ud800\u0041"', '"a\ud83d"')
{
	($rc, $out, $err) = with_faults($mock, { body => message(undef, $s) });
	like($err, qr/ZC002/, "$s in a reply: ZC002 in claude_complete") or diag("got: $out");
	($rc, $out, $err) = with_faults($mock, { body => message(undef, $s) }, $messages);
	like($err, qr/ZC002/, "$s in a reply: ZC002 in claude_messages");
	($rc, $out, $err) = with_faults($mock, sse_fault(events(deltas => [ '"a"', $s ])));
	like($err, qr/ZC002/, "$s in a text delta: ZC002 in claude_complete") or diag("got: $out");
	($rc, $out, $err) = with_faults($mock, sse_fault(events(deltas => [ '"a"', $s ])),
		"SELECT string_agg(p, '') FROM (SELECT claude_stream('x') AS p) s");
	like($err, qr/ZC002/, "$s in a text delta: ZC002 in claude_stream") or diag("got: $out");
	($rc, $out, $err) = with_faults($mock, sse_fault(events(deltas => [ '"a"', $s ])),
		"SELECT count(*) FROM claude_messages_stream('{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}')");
	like($err, qr/ZC002/, "$s in a text delta: ZC002 in claude_messages_stream");
}
($rc, $out, $err) = with_faults($mock, { body => message(undef, '"\ud83d\ude00 \u00e9"') });
is($out, "\xf0\x9f\x98\x80 \xc3\xa9", 'a surrogate pair is still one character');
unharmed('lone surrogates');

# ======== max_reply_size counts what is kept, not pings
my $ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
my $pings = events(deltas => [ '"hello world!"' ], between => $ping x 100000);
($rc, $out, $err) = with_faults($mock, sse_fault($pings), undef, "SET claude.max_reply_size = '1MB';");
is($out, 'hello world!', '100,000 pings (3.6 MB) around a 12-byte answer pass claude.max_reply_size = 1MB')
  or diag(substr($err, 0, 300));
($rc, $out, $err) = with_faults($mock, sse_fault($pings),
	"SELECT string_agg(p, '') FROM (SELECT claude_stream('x') AS p) s", "SET claude.max_reply_size = '1MB';");
is($out, 'hello world!', 'and through claude_stream') or diag(substr($err, 0, 300));
($rc, $out, $err) = with_faults($mock, sse_fault(events(deltas => [ map { '"' . ('z' x 1000) . '"' } 1 .. 1100 ])),
	undef, "SET claude.max_reply_size = '1MB';");
like($err, qr/ZC002.*larger than claude.max_reply_size/s, 'while 1.1 MB of text still fails it');
unharmed('pings and max_reply_size');

# ======== a garbage created_at in /v1/models
for my $c ('garbage', '2025-13-45T00:00:00Z', 'now', 'infinity', '2025-02-19 junk')
{
	($rc, $out, $err) = with_faults($mock, { body => "{\"data\":[{\"id\":\"m1\",\"display_name\":\"M\",\"created_at\":\"$c\","
		  . "\"type\":\"model\"}],\"has_more\":false,\"first_id\":\"m1\",\"last_id\":\"m1\"}" },
		"SELECT count(*) FROM claude_models()");
	like($err, qr/ZC002/, "created_at \"$c\": ZC002") or diag("got: $out $err");
}
($rc, $out, $err) = with_faults($mock, { body => '{"data":[{"id":"m1","display_name":"M","created_at":"2025-02-19T08:30:00.5+02:00",'
	  . '"type":"model"}],"has_more":false}' },
	"SET timezone = 'UTC'; SELECT created_at FROM claude_models()");
is($out, '2025-02-19 06:30:00.5+00', 'an RFC 3339 created_at is read') or diag($err);
unharmed('created_at');

done_testing();
