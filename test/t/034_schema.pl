# Guaranteed structure: claude_extract and claude_classify send the API's
# subset of the schema (the mock refuses, as the API does, any keyword
# strict structured output refuses and any object left open), through
# output_config.format for a model whose /v1/models entry says it takes
# structured output and a strict tool otherwise, and check the reply
# against the whole schema: a reply that breaks it is an error naming the
# path, is not cached and counts as failed.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('schema', $mock, cache => 1);
sub sql { $node->safe_psql('postgres', $_[0]) }
sub posts { [ grep { $_->{path} eq '/v1/messages' } @{ $mock->requests(0) } ] }
sub last_body { posts()->[-1]{body} }
sub messages { scalar(@{ posts() }) }

# the model without structured output takes the strict tool
$mock->config({ model_overrides => { 'claude-plain' => { structured_outputs => JSON::PP::false } } });

# every bound the API refuses, nested in objects and arrays
my $schema = q|{"type": "object", "required": ["rating", "name", "tags", "address"],
  "properties": {
    "rating": {"type": "integer", "minimum": 1, "maximum": 5, "description": "Stars"},
    "name": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[^0-9]*$"},
    "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1000, "multipleOf": 0.5},
    "tags": {"type": "array", "minItems": 1, "maxItems": 4, "uniqueItems": true,
             "items": {"type": "string", "maxLength": 3, "format": "idn-email"}},
    "when": {"type": "string", "format": "date"},
    "address": {"type": "object", "properties": {"zip": {"type": "integer", "maximum": 99999}},
                "additionalProperties": {"type": "string"}, "minProperties": 1}}}|;
$schema =~ s/\s+/ /g;

sub extract
{
	my ($input, $model, $extra) = @_;
	$model = $model ? ", model => '$model'" : '';
	$extra //= '';
	return $node->psql('postgres', "SELECT claude_extract('$input', '$schema'$model$extra)");
}

sub refused_keywords
{
	my ($s) = @_;
	my @found;
	my $walk;
	$walk = sub {
		my ($x) = @_;
		return unless ref $x eq 'HASH';
		push @found, grep { /^(minimum|maximum|exclusive\w+|multipleOf|minLength|maxLength|pattern|maxItems|uniqueItems|minProperties)$/ } keys %$x;
		push @found, 'open object' if ($x->{type} // '') eq 'object' && !(defined $x->{additionalProperties} && !$x->{additionalProperties});
		$walk->($_) for values %{ $x->{properties} // {} };
		$walk->($x->{items}) if $x->{items};
	};
	$walk->($s);
	return @found;
}

# native structured output, a reply that fits
my ($rc, $out, $err) = extract('Alice');
is($rc, 0, 'a reply that fits the whole schema is returned') or diag($err);
my $v = decode_json($out);
ok($v->{rating} >= 1 && $v->{rating} <= 5, "the rating is within its bounds ($v->{rating})");
my $b = last_body();
is($b->{output_config}{format}{type}, 'json_schema', 'a model with structured_outputs gets output_config.format');
ok(!exists $b->{tools} && !exists $b->{tool_choice}, 'and no tool');
my $sent = $b->{output_config}{format}{schema};
is_deeply([ refused_keywords($sent) ], [], 'the schema sent holds no keyword the API refuses, and every object is closed');
like($sent->{properties}{rating}{description}, qr/^Stars\n\n\{(?=.*minimum: 1)(?=.*maximum: 5)[^}]*\}$/,
	'the dropped bounds are carried into the description');
is($sent->{properties}{when}{format}, 'date', 'a format the API knows is kept');
like($sent->{properties}{tags}{items}{description}, qr/format: "idn-email"/, 'another goes to the description');
is($sent->{properties}{tags}{minItems}, 1, 'minItems 1 is kept');

# a good reply is cached; the same call again sends nothing
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' = 'Alice'") == 1 }),
	'the good reply is cached');
my $n = messages();
($rc, $out, $err) = extract('Alice');
is($rc, 0, 'the same call again');
is(messages(), $n, 'is answered from the cache');

# an out-of-range rating: refused with its path, not cached, counted failed
my $failed = sql("SELECT failed FROM claude_stats");
($rc, $out, $err) = extract('[[mock:schema_break=bound]] Bob');
isnt($rc, 0, 'a reply with rating 76 is refused');
like($err, qr/the reply does not fit the schema: \$\.rating: 76 is above the maximum 5/, 'naming the path and the bound');
is(sql("SELECT failed FROM claude_stats"), $failed + 1, 'claude_stats counts it failed');
($rc, $out, $err) = $node->psql('postgres', "DO \$\$ BEGIN PERFORM claude_extract('[[mock:schema_break=bound]] Bob', '$schema'); "
	  . "EXCEPTION WHEN SQLSTATE 'ZC422' THEN RAISE NOTICE 'caught ZC422'; END \$\$");
like($err, qr/caught ZC422/, 'with SQLSTATE ZC422');
is(messages(), $n + 2, 'the second identical call went to the API again');
# a later good reply is in the cache: the bad one would have been before it
extract('Carol');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' = 'Carol'") == 1 }),
	'a later good reply is cached');
is(sql("SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' LIKE '%schema_break%'"), '0',
	'the bad reply never was');

# a missing required key
($rc, $out, $err) = extract('[[mock:schema_break=missing]] Dan');
like($err, qr/\$\.rating: the required key is missing/, 'a missing required key is refused with its path');

# a model without structured output: the strict tool, checked the same way
($rc, $out, $err) = extract('Erin', 'claude-plain');
is($rc, 0, 'through a strict tool, a reply that fits') or diag($err);
$b = last_body();
ok(!exists $b->{output_config}, 'a model without structured_outputs gets no output_config');
is($b->{tools}[0]{strict}, JSON::PP::true, 'but a tool marked strict');
is($b->{tool_choice}{type} . ' ' . $b->{tool_choice}{name}, 'tool extract', 'forced with tool_choice');
is_deeply([ refused_keywords($b->{tools}[0]{input_schema}) ], [], 'whose input_schema holds no refused keyword');
($rc, $out, $err) = extract('[[mock:schema_break=bound]] Erin', 'claude-plain');
like($err, qr/\$\.rating: 76 is above the maximum 5/, 'and a rating of 76 from the tool is refused too');

# a model the API does not know (404): the strict tool
($rc, $out, $err) = extract('Fay', 'claude-unlisted');
is(last_body()->{tools}[0]{strict}, JSON::PP::true, 'an unknown model falls back to the strict tool');

# a hostile model id never becomes a path of its own: "..", "a/b", "x?y"
$mock->reset;
for my $m ('..', 'a/../../v1/messages/batches', 'x?y=1')
{
	($rc, $out, $err) = extract('Gia', $m);
}
is(scalar(grep { $_->{path} ne '/v1/messages' } @{ $mock->requests(0) }), 0,
	'a model id that is not [A-Za-z0-9._-] starting with a letter or digit is not looked up');

# the model is looked up once per session
$mock->reset;
$mock->config({ model_overrides => { 'claude-plain' => { structured_outputs => JSON::PP::false } } });
sql("SELECT claude_extract('Gil', '$schema'); SELECT claude_extract('Gus', '$schema');");
is(scalar(grep { $_->{path} eq '/v1/models/claude-sonnet-4-6' } @{ $mock->requests(0) }), 1,
	'two calls in one session ask /v1/models/{id} once');

# temperature and max_tokens reach the request
sql("SELECT claude_extract('Hal', '$schema', temperature => 0.25, max_tokens => 321)");
$b = last_body();
is($b->{temperature} . ' ' . $b->{max_tokens}, '0.25 321', 'claude_extract: temperature and max_tokens in the body');
sql("SELECT claude_classify('Ivy', ARRAY['a', 'b'], temperature => 0, max_tokens => 17, model => 'claude-plain')");
$b = last_body();
is($b->{temperature} . ' ' . $b->{max_tokens}, '0 17', 'claude_classify: temperature and max_tokens in the body');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_classify('x', ARRAY['a'], temperature => 2)");
like($err, qr/temperature must be between 0 and 1/, 'a temperature out of range is refused');

# claude_classify: exactly one of the labels
is(sql("SELECT claude_classify('surely a bug', ARRAY['bug', 'question'])"), 'bug', 'claude_classify: a label');
for my $model ('claude-sonnet-4-6', 'claude-plain')
{
	($rc, $out, $err) = $node->psql('postgres',
		"SELECT claude_classify('[[mock:schema_break=label]] x', ARRAY['bug', 'question'], model => '$model')");
	like($err, qr/\$\.label: "not-a-label" is not one of the enum/, "a label outside the list is refused ($model)");
}

# a schema the check cannot understand costs no request
$n = messages();
for my $bad ('{"properties": {"a": {"oneOf": [{"type": "string"}]}}}', '{"properties": {"a": {"maxLength": -1}}}',
	'{"properties": {"a": {"type": "object", "additionalProperties": 3}}}')
{
	($rc, $out, $err) = $node->psql('postgres', "SELECT claude_extract('x', '$bad')");
	like($err, qr/schema \$/, "refused up front: $bad");
}
is(messages(), $n, 'and nothing was sent');

$node->stop;
$mock->stop;
done_testing();
