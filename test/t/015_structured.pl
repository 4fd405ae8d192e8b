# Structured output, classification, token counting, models, images and
# prompt caching: bad arguments cost no request, every call goes through
# the cache, limits and accounting, models follow the pages, and a long
# shared system prompt of claude_enrich and the trigger is cached.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;
use JSON::PP;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('structured', $mock, cache => 1);
sub sql { $node->safe_psql('postgres', $_[0]) }
sub requests { $mock->stats->{requests} }
sub last_body { my @r = grep { $_->{path} =~ m{^/v1/messages} } @{ $mock->requests(0) }; return $r[-1]{body} }
# a new session asks /v1/models/{id} once: only Messages requests count here
sub messages { scalar(grep { $_->{path} =~ m{^/v1/messages} } @{ $mock->requests(0) }) }

# nothing is sent for bad arguments
my $before = requests();
for my $bad (
	q|SELECT claude_extract('x', '{"properties": {"a": {"$ref": "#/b"}}}')|,
	q|SELECT claude_extract('x', '{"properties": {"a": {"type": "integer", "minimum": "one"}}}')|,
	q|SELECT claude_extract('x', '{"properties": {"a": {"type": "strnig"}}}')|,
	q|SELECT claude_extract('x', '{"properties": {"a": {"type": "string", "pattern": "("}}}')|,
	q|SELECT claude_extract('x', '[1]')|,
	q|SELECT claude_extract('x', '{"type": "array"}')|,
	q|SELECT claude_extract('x', '{"type": "object"')|,
	q|SELECT claude_classify('x', ARRAY[]::text[])|,
	q|SELECT claude_classify('x', ARRAY['a', 'a'])|,
	q|SELECT claude_classify('x', ARRAY['a', NULL])|,
	q|SELECT claude_count_tokens('')|,
	q|SELECT claude_image('\x00'::bytea, 'image/png')|,
	q|SELECT claude_image('\x89504e470d0a1a0a'::bytea, 'image/tiff')|)
{
	my ($rc, $out, $err) = $node->psql('postgres', $bad);
	isnt($rc, 0, "refused: $bad");
}
is(requests(), $before, 'and not one request was sent');

# the request shapes
my $schema = '{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}';
is(sql("SELECT claude_extract('Bob', '$schema', instructions => 'Names only.', model => 'claude-haiku-4-5')"),
	'{"name": "Bob"}', 'claude_extract returns the object');
my $b = last_body();
is($b->{output_config}{format}{type}, 'json_schema', 'through output_config.format (the model takes structured output)');
is_deeply($b->{output_config}{format}{schema},
	{ type => 'object', properties => { name => { type => 'string' } }, required => ['name'], additionalProperties => JSON::PP::false },
	'its schema is the schema, closed with additionalProperties: false');
ok(!exists $b->{tools} && !exists $b->{tool_choice}, 'and no tool');
is($b->{system} . ' ' . $b->{model}, 'Names only. claude-haiku-4-5', 'instructions are the system prompt; model as given');

is(sql("SELECT claude_classify('a question about billing', ARRAY['bug', 'question'])"), 'question',
	'claude_classify returns one of the labels');
$b = last_body();
is_deeply($b->{output_config}{format}{schema}{properties}{label}{enum}, [ 'bug', 'question' ], 'as an enum the reply must choose from');

# through the cache: the same extraction again costs nothing
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request ? 'output_config'") == 2 }),
	'both structured calls are cached');
$before = messages();
is(sql("SELECT claude_extract('Bob', '$schema', instructions => 'Names only.', model => 'claude-haiku-4-5')"),
	'{"name": "Bob"}', 'the same extraction again');
is(messages(), $before, 'is answered from the cache');
is(sql("SELECT claude_count_tokens('count me')"), '2', 'claude_count_tokens');
is($mock->requests(0)->[-1]{path}, '/v1/messages/count_tokens', 'via /v1/messages/count_tokens');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE response ? 'input_tokens'") == 1 }), 'and cached too');

# models: every page
$mock->reset;
$mock->config({ models_page_size => 2 });
is(sql("SELECT count(*) FROM claude_models()"), '5', 'claude_models returns all 5 models');
is(scalar(grep { $_->{path} =~ m{^/v1/models} } @{ $mock->requests(0) }), 3, 'from 3 pages of 2');
like($mock->requests(0)->[-1]{path}, qr/after_id=/, 'following after_id');

# prompt caching of a long shared system prompt
$mock->reset;
my $long = 'You label support tickets. ' x 200;
sql("CREATE TABLE tickets (id int PRIMARY KEY, subject text, label text);
	INSERT INTO tickets SELECT i, 'ticket ' || i FROM generate_series(1, 5) i;");
sql("CALL claude_enrich('tickets', 'label', 'Label: {subject}', system => '$long')");
my @bodies = grep { $_->{path} eq '/v1/messages' } @{ $mock->requests(0) };
is(scalar(@bodies), 5, 'claude_enrich sent 5 requests');
is(scalar(grep { ref $_->{body}{system} eq 'ARRAY' && $_->{body}{system}[0]{cache_control}{type} eq 'ephemeral' } @bodies), 5,
	'each marks the long system prompt with cache_control');
is(sql("SELECT sum(cache_read_input_tokens) > 0 AND sum(cache_creation_input_tokens) > 0 FROM "
	  . "(SELECT (response->'usage'->>'cache_read_input_tokens')::int AS cache_read_input_tokens, "
	  . "(response->'usage'->>'cache_creation_input_tokens')::int AS cache_creation_input_tokens FROM claude_cache "
	  . "WHERE request->'messages'->0->>'content' LIKE 'Label: ticket %') c"),
	't', 'the first row writes the prompt cache, the others read it');
is(sql("SELECT sum(claude_cost_usd(model, response->'usage')) < "
	  . "sum(claude_cost_usd(model, jsonb_build_object('input_tokens', (response->'usage'->>'input_tokens')::int "
	  . "+ (response->'usage'->>'cache_read_input_tokens')::int + (response->'usage'->>'cache_creation_input_tokens')::int, "
	  . "'output_tokens', response->'usage'->'output_tokens'))) "
	  . "FROM claude_cache WHERE request->'messages'->0->>'content' LIKE 'Label: ticket %'"),
	't', 'which costs less than sending the prompt uncached');

sql("CREATE TABLE short (id int PRIMARY KEY, subject text, label text); INSERT INTO short VALUES (1, 'x');");
sql("CALL claude_enrich('short', 'label', 'Label: {subject}', system => 'Be brief.')");
is(ref last_body()->{system}, '', 'a short system prompt stays a plain string (below the 4,096-byte threshold)');

sql("CREATE TABLE notes (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER s BEFORE INSERT ON notes FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Sum: {body}', 'system=$long');
	INSERT INTO notes VALUES (1, 'hello');");
is(last_body()->{system}[0]{cache_control}{type}, 'ephemeral', 'the trigger marks a long system prompt too');

# accounting sees them like any call
is(sql("SELECT cache_hits >= 1 AND requests >= 10 FROM claude_stats"), 't', 'claude_stats counts these calls');

$node->stop;
$mock->stop;
done_testing();
