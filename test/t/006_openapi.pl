# Every request shape the extension builds is valid against the official
# OpenAPI description: Steady serves ../shared/anthropic-openapi.json and
# answers 400 to any request that does not match it.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster;
use Test::More;
use HTTP::Tiny;
use IPC::Run;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use ClaudeTest;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $spec = $ENV{CLAUDE_OPENAPI} // "$root/../shared/anthropic-openapi.json";
my $steady = "$root/test/steady/node_modules/.bin/steady";
# CI always has ../shared beside the clone; a user's clone may not
if (!-f $spec && !$ENV{CI})
{
	plan skip_all => "no OpenAPI description at $spec (put anthropic-openapi.json in ../shared)";
}
ok(-f $spec, "the OpenAPI description is at $spec") or BAIL_OUT('no OpenAPI file');
ok(-x $steady, 'Steady is installed (test/install-deps.sh)') or BAIL_OUT('no Steady');

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $steady_log = "$PostgreSQL::Test::Utils::log_path/steady.log";
my $h = IPC::Run::start([ $steady, '--host', '127.0.0.1', '-p', $port, '--log-format', 'json', $spec ],
	'<', \undef, '>', $steady_log, '2>&1');
my $up = wait_until(sub { HTTP::Tiny->new(timeout => 1)->get("http://127.0.0.1:$port/")->{status} != 599 }, 60);
ok($up, 'Steady is listening');

my $node = new_node('openapi', undef, conf => "claude.base_url = 'http://127.0.0.1:$port'\nclaude.api_key = 'sk-steady'\nclaude.batch_poll_interval = 1\n");

my @valid = (
	[ 'claude_complete, defaults', q{SELECT claude_complete('Hello') IS NOT NULL} ],
	[ 'claude_complete, every argument',
		q{SELECT claude_complete('Hello', model => 'claude-haiku-4-5', max_tokens => 100,
		  system => 'Be brief', temperature => 0.2) IS NOT NULL} ],
	[ 'claude_complete, odd text', q{SELECT claude_complete(E'quotes " \\\\ \n\t\x01 漢字 😀') IS NOT NULL} ],
	[ 'claude_messages, defaults applied',
		q{SELECT claude_messages('{"messages": [{"role": "user", "content": "Hi"}]}') ? 'content'} ],
	[ 'claude_messages, multi-turn with system blocks and cache_control',
		q{SELECT claude_messages('{"model": "claude-sonnet-4-6", "max_tokens": 64,
		  "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
		  "messages": [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
		               {"role": "user", "content": [{"type": "text", "text": "Three"}]}]}') ? 'content'} ],
	[ 'claude_messages, tools and tool_choice',
		q{SELECT claude_messages('{"max_tokens": 64,
		  "tools": [{"name": "record", "description": "Record fields",
		             "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}],
		  "tool_choice": {"type": "tool", "name": "record"},
		  "messages": [{"role": "user", "content": "Alice"}]}') ? 'content'} ],
	[ 'claude_messages, image block',
		q{SELECT claude_messages(jsonb_build_object('messages', jsonb_build_array(jsonb_build_object(
		  'role', 'user', 'content', jsonb_build_array(
		    jsonb_build_object('type', 'image', 'source', jsonb_build_object('type', 'base64',
		      'media_type', 'image/png', 'data', encode('\x89504e470d0a1a0a'::bytea, 'base64'))),
		    jsonb_build_object('type', 'text', 'text', 'What is this?')))))) ? 'content'} ],
	[ 'claude_messages, sampling parameters and metadata',
		q{SELECT claude_messages('{"messages": [{"role": "user", "content": "Hi"}], "temperature": 1,
		  "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"], "metadata": {"user_id": "u1"}}') ? 'content'} ],
	# issue 27: output_config.effort passes through claude_messages
	[ 'claude_messages, output_config.effort',
		q{SELECT claude_messages('{"model": "claude-opus-4-7", "messages": [{"role": "user", "content": "Hi"}],
		  "output_config": {"effort": "low"}}') ? 'content'} ],
);
for my $case (@valid)
{
	my ($name, $sql) = @$case;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	is($out, 't', "accepted: $name") or diag($err);
}

# Steady answers with generated examples, not a tool call: for these only
# the request is checked (Steady answers 400 to an invalid one)
my @shapes = (
	[ 'claude_extract (structured output or a strict tool, as the model says)',
		q{SELECT claude_extract('Alice is 30', '{"type": "object", "properties": {"name": {"type": "string"},
		  "age": {"type": "integer", "minimum": 0}}, "required": ["name", "age"]}', instructions => 'Extract.',
		  temperature => 0.2, max_tokens => 200)} ],
	[ 'claude_classify (an enum, with temperature and max_tokens)',
		q{SELECT claude_classify('It crashes', ARRAY['bug', 'question', 'request'], model => 'claude-haiku-4-5',
		  temperature => 0, max_tokens => 50)} ],
	# Steady makes up the model's capabilities: both shapes claude_extract
	# builds are sent here as it builds them
	[ 'claude_extract native shape: output_config.format with the API subset',
		q{SELECT claude_messages('{"model": "claude-sonnet-4-6", "max_tokens": 200, "temperature": 0.2,
		  "messages": [{"role": "user", "content": "Alice is 30"}],
		  "output_config": {"format": {"type": "json_schema", "schema": {"type": "object",
		    "properties": {"age": {"type": "integer", "description": "{minimum: 0}"},
		                   "tags": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "date"}}},
		    "required": ["age"], "additionalProperties": false}}}}')} ],
	[ 'claude_extract fallback shape: a forced tool marked strict',
		q{SELECT claude_messages('{"model": "claude-sonnet-4-6", "max_tokens": 200,
		  "messages": [{"role": "user", "content": "Alice is 30"}],
		  "tools": [{"name": "extract", "strict": true, "description": "Record the data requested.",
		             "input_schema": {"type": "object", "properties": {"age": {"type": "integer"}},
		                              "required": ["age"], "additionalProperties": false}}],
		  "tool_choice": {"type": "tool", "name": "extract"}}')} ],
	[ 'claude_enrich with a long system prompt marked for prompt caching',
		q{CREATE TABLE pc (id int PRIMARY KEY, t text, s text); INSERT INTO pc VALUES (1, 'row');
		  CALL claude_enrich('pc', 's', 'Label: {t}', system => repeat('Shared instructions. ', 300))} ],
	# issue 27, bulk structured output: each row's request is
	# claude_classify's or claude_extract's, with system as instructions
	[ 'claude_enrich with labels (one request a row, an enum)',
		q{CREATE TABLE bl (id int PRIMARY KEY, t text, s text, j jsonb); INSERT INTO bl VALUES (1, 'It crashes');
		  CALL claude_enrich('bl', 's', 'Ticket: {t}', system => 'Classify.', max_tokens => 50,
		                     labels => ARRAY['bug', 'question'])} ],
	[ 'claude_enrich with a schema (bounds moved to descriptions)',
		q{CALL claude_enrich('bl', 'j', 'Ticket: {t}', model => 'claude-haiku-4-5',
		                     schema => '{"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}}')} ],
	[ 'claude_enrich_trigger with a schema (BEFORE)',
		q{CREATE TABLE bt (id int PRIMARY KEY, t text, j jsonb);
		  CREATE TRIGGER bt BEFORE INSERT ON bt FOR EACH ROW EXECUTE FUNCTION
		    claude_enrich_trigger('j', 'Ticket: {t}', 'max_tokens=50', 'schema={"properties": {"k": {"type": "string", "enum": ["a", "b"]}}}');
		  INSERT INTO bt VALUES (1, 'x')} ],
	[ 'claude_stream (streamed: "stream": true)',
		q{SELECT count(*) FROM claude_stream('Hello', max_tokens => 100, system => 'Be brief')} ],
	[ 'claude_messages_stream with tools',
		q{SELECT count(*) FROM claude_messages_stream('{"max_tokens": 64,
		  "tools": [{"name": "record", "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}}}],
		  "messages": [{"role": "user", "content": "Alice"}]}')} ],
	[ 'claude_messages with extended thinking (streamed)',
		q{SELECT claude_messages('{"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
		  "messages": [{"role": "user", "content": "Think"}]}')} ],
	[ 'claude_complete above claude.stream_min_tokens (streamed)',
		q{SET claude.stream_min_tokens = 10; SELECT claude_complete('Hello', max_tokens => 100)} ],
	# semantic helpers: a strict forced tool each (one request per shape:
	# Steady's answer is no tool call, so each stops after its first)
	[ 'claude_if (strict tool with a boolean)',
		q{SELECT claude_if(E'It rained "all" day é', 'mentions rain', model => 'claude-haiku-4-5')} ],
	[ 'claude_summarize(input) (strict tool with a string)',
		q{SELECT claude_summarize(t ORDER BY t) FROM (VALUES ('one'), ('two')) v(t)} ],
	[ 'claude_summarize(input, instructions)',
		q{SELECT claude_summarize(t, 'In French.') FROM (VALUES ('one')) v(t)} ],
	[ 'claude_rank (strict tool with an array of numbers)',
		q{SELECT * FROM claude_rank('red fruit', ARRAY['apple', NULL, 'sky'])} ],
);
for my $case (@shapes)
{
	my ($name, $sql) = @$case;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	unlike($err, qr/Claude API error 4\d\d/, "accepted: $name") or diag($err);
}
my ($crc, $cout, $cerr) = $node->psql('postgres', q{SELECT claude_count_tokens('Hello', system => 'Be brief') > 0});
is($cout, 't', 'accepted: claude_count_tokens') or diag($cerr);
($crc, $cout, $cerr) = $node->psql('postgres', q{SELECT count(*) > 0 FROM claude_models()});
is($cout, 't', 'accepted: claude_models') or diag($cerr);

# Message Batches: claude_enrich's create, the worker's poll, and cancel
$node->safe_psql('postgres', q{
	CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	INSERT INTO docs VALUES (1, 'one'), (2, E'two \u00e9 "quoted"');});
my ($brc, $bout, $berr) = $node->psql('postgres',
	q{CALL claude_enrich('docs', 'summary', 'Summarize: {body}', system => 'Be brief', max_tokens => 50, mode => 'batch')});
is($brc, 0, 'accepted: a Message Batch created by claude_enrich') or diag($berr);
my $batch = $node->safe_psql('postgres', 'SELECT id FROM claude_batches');
ok(wait_until(sub { grep { m{"path":"/v1/messages/batches/\Q$batch\E"} } split /\n/, slurp_file($steady_log) }, 30),
	'the worker polls the batch');
($brc, $bout, $berr) = $node->psql('postgres', "SELECT claude_batch_cancel('$batch') IS NOT NULL");
is($bout, 't', 'accepted: claude_batch_cancel') or diag($berr);
# issue 27: a batch of claude_enrich with labels (claude_classify's request per row)
($brc, $bout, $berr) = $node->psql('postgres',
	q{CALL claude_enrich('docs', 'summary', 'Classify: {body}', max_tokens => 50, labels => ARRAY['a', 'b'], mode => 'batch')});
is($brc, 0, 'accepted: a Message Batch of claude_enrich with labels') or diag($berr);

# the check is real: a request the extension passes through unchecked but
# the schema forbids is refused by Steady
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT claude_messages('{"messages": [{"role": "user", "content": "Hi"}], "top_k": "five"}')});
like($err, qr/Claude API error 400/, 'Steady refuses an invalid request (the validator is active)');
# issue 27: and it checks effort's values
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT claude_messages('{"messages": [{"role": "user", "content": "Hi"}], "output_config": {"effort": "extreme"}}')});
like($err, qr/Claude API error 400/, 'Steady refuses an unknown effort');

# and Steady's own log agrees: every request reached it, two were refused
my @log = split /\n/, slurp_file($steady_log);
my @lines = grep { /"path":"\/v1\/messages"/ } @log;
is(scalar(grep { /"status":200/ } @lines), scalar(@valid) + scalar(@shapes), 'Steady logged every valid request as 200');
for my $path ('/v1/messages/count_tokens', '/v1/models', '/v1/models/claude-sonnet-4-6', '/v1/models/claude-haiku-4-5')
{
	my @l = grep { /"path":"\Q$path\E[?"]/ } @log;
	ok(@l && !grep({ !/"status":200/ } @l), "and every request to $path") or diag(join("\n", @l));
}
is(scalar(grep { /"status":400/ } @lines), 2, 'and only the two invalid ones as 400');
my @batch_lines = grep { m{"path":"/v1/messages/batches} } @log;
cmp_ok(scalar(@batch_lines), '>=', 3, 'the batch requests reached Steady');
is(scalar(grep { !/"status":200/ } @batch_lines), 0, 'and every one was valid') or diag(join("\n", @batch_lines));

$node->stop;
$h->kill_kill;
done_testing();
