# Bulk structured output: claude_enrich (online and batch) and claude_enrich_trigger
# take labels or a JSON Schema.  Each row's request is claude_classify's or
# claude_extract's for the same prompt (their cache keys are shared); each
# reply is checked against the whole schema; a row whose reply breaks it
# fails alone, with the path, is not written, and its reply is not cached.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('bulkschema', $mock, cache => 1, conf => "claude.batch_poll_interval = 1\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
sub posts { [ grep { $_->{path} eq '/v1/messages' } @{ $mock->requests(0) } ] }
sub messages { scalar(@{ posts() }) }
# the last request whose user message is $content
sub body_of
{
	my ($content) = @_;
	my @b = grep { ($_->{body}{messages}[0]{content} // '') eq $content } @{ posts() };
	return @b ? $b[-1]{body} : undef;
}

# the model without structured output takes the strict tool
$mock->config({ model_overrides => { 'claude-plain' => { structured_outputs => JSON::PP::false } } });

my $labels = q{ARRAY['positive', 'negative', 'neutral']};
my $schema = q|{"type": "object", "required": ["rating", "summary"], "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}, "summary": {"type": "string"}}}|;

sql(q{CREATE TABLE reviews (id int PRIMARY KEY, body text, sentiment text, info jsonb, info_text text);
	INSERT INTO reviews (id, body) VALUES
	  (1, 'a positive review'), (2, 'a negative one'), (3, 'meh [[mock:schema_break=label]]'),
	  (4, 'neutral at best'), (5, 'broken [[mock:schema_break=bound]]'), (6, 'gone [[mock:schema_break=missing]]')});

# ---- labels, online
my ($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('reviews', 'sentiment', 'Review: {body}', labels => $labels)");
is($rc, 0, 'claude_enrich with labels runs') or diag($err);
is(sql("SELECT string_agg(id || '=' || coalesce(sentiment, '-'), ' ' ORDER BY id) FROM reviews"),
	'1=positive 2=negative 3=- 4=neutral 5=positive 6=-',
	'each row gets one of the labels; the rows whose reply gives no label are not written');
like($err, qr/4 rows of reviews filled, 2 failed/, 'two rows failed, the others went on');
like($err, qr/row \(3\): the reply does not fit the schema: \$\.label: "not-a-label" is not one of the enum/, 'with the reason, naming the path');
like($err, qr/row \(6\): the reply does not fit the schema: \$\.label: the required key is missing/, 'a reply without the label too');
my $req = body_of('Review: a positive review');
ok($req->{output_config}{format}{schema}{properties}{label}{enum}
	|| ($req->{tool_choice}{name} // '') eq 'classify', 'a labels request is claude_classify\'s');

# the same prompt through claude_classify: the cache key is shared
my $n = messages();
is(sql("SELECT claude_classify('Review: a negative one', $labels)"), 'negative', 'claude_classify agrees');
is(messages(), $n, 'and is answered from the cache claude_enrich filled: the same request');

# the broken reply was not cached: a rerun asks again for that row alone
$n = messages();
($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('reviews', 'sentiment', 'Review: {body}', labels => $labels)");
is(messages(), $n + 2, 'a rerun sends the two rows whose reply broke the schema: they were not cached');
like($err, qr/ERROR:  claude_enrich failed: all 2 rows of reviews it attempted failed\nDETAIL:  0 rows filled \(0 from the cache\), 2 failed/,
	'and they fail again: every row attempted failed, so the CALL raises (issue 29)');

# ---- a schema, online, through the strict tool, into jsonb and into text
($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('reviews', 'info', 'Review: {body}', model => 'claude-plain', schema => '$schema')");
is($rc, 0, 'claude_enrich with a schema runs') or diag($err);
is(sql("SELECT string_agg(id || '=' || coalesce((info->>'rating'), '-'), ' ' ORDER BY id) FROM reviews"),
	'1=5 2=5 3=5 4=5 5=- 6=-', 'each row gets the checked object; broken rows are not written');
like($err, qr/row \(5\): the reply does not fit the schema: \$\.rating: 76 is above the maximum/, 'the out-of-range rating named')
	or diag($err);
like($err, qr/row \(6\): the reply does not fit the schema: \$\.rating: the required key is missing/, 'the missing key named') or diag($err);
$req = body_of('Review: a positive review');
is($req->{tools}[0]{strict}, JSON::PP::true, 'the model without structured output is sent a strict tool');
ok(!exists $req->{tools}[0]{input_schema}{properties}{rating}{maximum}, 'with the API subset of the schema');
is(sql(q{SELECT claude_extract('Review: a negative one', '} . $schema . q{', model => 'claude-plain')->>'summary'}),
	'Review: a negative one', 'claude_extract of the same prompt');
($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('reviews', 'info_text', 'Review: {body}', model => 'claude-plain', schema => '$schema')");
is(sql("SELECT (info_text::jsonb)->>'rating' FROM reviews WHERE id = 1"), '5', 'a text column gets the object as JSON');

# arguments refused before anything is sent
$n = messages();
($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('reviews', 'info', '{body}', labels => $labels, schema => '$schema')");
like($err, qr/give labels or schema, not both/, 'labels and schema together are refused');
($rc, $out, $err) = $node->psql('postgres', q{CALL claude_enrich('reviews', 'info', '{body}', schema => '{"type": "string"}')});
like($err, qr/schema must describe an object/, 'a schema of a non-object is refused');
($rc, $out, $err) = $node->psql('postgres', q{CALL claude_enrich('reviews', 'info', '{body}', labels => ARRAY['a', 'a'])});
like($err, qr/labels must be distinct/, 'repeated labels are refused');
is(messages(), $n, 'none of them sent anything');

# ---- labels and a schema in batch mode: the worker checks each result
sql(q{CREATE TABLE breviews (id int PRIMARY KEY, body text, sentiment text, info jsonb);
	INSERT INTO breviews (id, body) VALUES
	  (1, 'a positive review'), (2, 'x [[mock:schema_break=label]]'), (3, 'a negative one'),
	  (4, 'y [[mock:schema_break=bound]]')});
sub batch_done
{
	my ($column) = @_;
	return wait_until(sub { sql("SELECT count(*) FROM claude_batches WHERE relation = 'breviews'::regclass "
		. "AND target_column = '$column' AND results_at IS NOT NULL") eq '1' }, 90);
}
($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('breviews', 'sentiment', 'Batch review: {body}', labels => $labels, mode => 'batch')");
is($rc, 0, 'claude_enrich with labels submits a batch') or diag($err);
is(sql("SELECT reply_check->>'field' FROM claude_batches WHERE relation = 'breviews'::regclass"), 'label',
	'the batch keeps what its results must be');
ok(batch_done('sentiment'), 'its results are written back');
is(sql("SELECT string_agg(id || '=' || coalesce(sentiment, '-'), ' ' ORDER BY id) FROM breviews"),
	'1=positive 2=- 3=negative 4=positive', 'each row one of the labels; the broken result is not written')
	or diag(sql("SELECT string_agg(custom_id || ' ' || i.status || ' ' || coalesce(i.error, ''), E'\\n') FROM claude_batch_items i"));
is(sql("SELECT string_agg(i.status, ' ' ORDER BY custom_id) FROM claude_batch_items i JOIN claude_batches b ON b.local_id = i.batch WHERE b.target_column = 'sentiment' AND b.relation = 'breviews'::regclass"),
	'succeeded errored succeeded succeeded', 'its item errored');
like(sql("SELECT i.error FROM claude_batch_items i JOIN claude_batches b ON b.local_id = i.batch WHERE b.target_column = 'sentiment' AND i.status = 'errored'"),
	qr/the reply does not fit the schema: \$\.label: "not-a-label" is not one of the enum/, 'with the reason and the path');
$n = messages();
is(sql("SELECT claude_classify('Batch review: a positive review', $labels)"), 'positive', 'a batch result that fits');
is(messages(), $n, 'was cached under claude_classify\'s key');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_classify('Batch review: x [[mock:schema_break=label]]', $labels)");
is(messages(), $n + 1, 'the broken one was not cached: claude_classify asks');
($rc, $out, $err) = $node->psql('postgres',
	"CALL claude_enrich('breviews', 'info', 'Batch review: {body}', schema => '$schema', mode => 'batch')");
is($rc, 0, 'claude_enrich with a schema submits a batch') or diag($err);
ok(batch_done('info'), 'its results are written back');
is(sql("SELECT string_agg(id || '=' || coalesce(info->>'rating', '-'), ' ' ORDER BY id) FROM breviews"),
	'1=5 2=5 3=5 4=-', 'each row the checked object; the out-of-range rating not written');
like(sql("SELECT i.error FROM claude_batch_items i JOIN claude_batches b ON b.local_id = i.batch WHERE b.target_column = 'info' AND i.status = 'errored'"),
	qr/\$\.rating: 76 is above the maximum 5/, 'its item says why');

# ---- the trigger: BEFORE, labels given as a JSON array (a label with a comma and a quote)
sql(q{CREATE TABLE tickets (id int PRIMARY KEY, body text, kind text);
	CREATE TRIGGER t BEFORE INSERT ON tickets FOR EACH ROW
	EXECUTE FUNCTION claude_enrich_trigger('kind', 'Ticket: {body}', 'labels=["bug, crash", "say \"hi\"", "other"]')});
sql(q{INSERT INTO tickets VALUES (1, 'it is a bug, crash at start')});
is(sql("SELECT kind FROM tickets WHERE id = 1"), 'bug, crash', 'a BEFORE trigger fills one of the labels, commas and all');
sql(q{INSERT INTO tickets VALUES (2, 'I say "hi"')});
is(sql("SELECT kind FROM tickets WHERE id = 2"), 'say "hi"', 'a label with quotes round-trips through the trigger arguments');
$n = messages();
($rc, $out, $err) = $node->psql('postgres', q{INSERT INTO tickets VALUES (3, 'x [[mock:schema_break=label]]')});
like($err, qr/claude_enrich_trigger: the reply does not fit the schema: \$\.label/, 'a broken reply fails the row with the path');
is(sql("SELECT count(*) FROM tickets WHERE id = 3"), '0', 'and the row is not written');
($rc, $out, $err) = $node->psql('postgres', q{INSERT INTO tickets VALUES (3, 'x [[mock:schema_break=label]]')});
is(messages(), $n + 2, 'its reply was not cached: the second try asked again');
like(sql(q{SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 't'}), qr/labels=\["bug, crash"/,
	'the option reads back as it was written');

# options refused when the trigger is created
($rc, $out, $err) = $node->psql('postgres', q{CREATE TRIGGER u BEFORE INSERT ON tickets FOR EACH ROW
	EXECUTE FUNCTION claude_enrich_trigger('kind', '{body}', 'labels=a,b')});
like($err, qr/option "labels=a,b" is not valid JSON/, 'labels that are not a JSON array are refused at CREATE TRIGGER');
($rc, $out, $err) = $node->psql('postgres', q{CREATE TRIGGER u BEFORE INSERT ON tickets FOR EACH ROW
	EXECUTE FUNCTION claude_enrich_trigger('kind', '{body}', 'labels=["a"]', 'schema={}')});
like($err, qr/invalid option "schema=\{\}"/, 'labels and schema together are refused');
($rc, $out, $err) = $node->psql('postgres', q{CREATE TRIGGER u BEFORE INSERT ON tickets FOR EACH ROW
	EXECUTE FUNCTION claude_enrich_trigger('kind', '{body}', 'schema={"type": "array"}')});
like($err, qr/schema must describe an object/, 'a schema of a non-object is refused');

# ---- the trigger: AFTER, a schema, through the job queue
sql(qq{CREATE TABLE notes (id int PRIMARY KEY, body text, info jsonb);
	CREATE TRIGGER n AFTER INSERT ON notes FOR EACH ROW
	EXECUTE FUNCTION claude_enrich_trigger('info', 'Note: {body}', 'schema=$schema')});
$n = messages();
sql(q{INSERT INTO notes VALUES (1, 'fine'), (2, 'bad [[mock:schema_break=bound]]'), (3, 'also fine')});
ok(wait_until(sub { sql("SELECT count(info) FROM notes") == 2
	&& sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'") == 1 }, 60),
	'the AFTER trigger fills the rows whose reply fits, and fails the other');
is(sql("SELECT string_agg(id || '=' || coalesce(info->>'rating', '-'), ' ' ORDER BY id) FROM notes"),
	'1=5 2=- 3=5', 'the broken row is not written');
like(sql("SELECT last_error FROM claude_jobs WHERE status = 'failed'"),
	qr/the reply does not fit the schema: \$\.rating: 76 is above the maximum/, 'its job says why, with the path');
is(sql("SELECT attempts FROM claude_jobs WHERE status = 'failed'"), '1', 'failed at once');
my $sent = messages();
is(sql("SELECT claude_jobs_retry()"), '1', 'claude_jobs_retry requeues it');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'") == 1 && messages() > $sent }, 60),
	'it fails again after asking again: its reply was not cached');
is(sql("SELECT info FROM notes WHERE id = 2"), '', 'and the row is still not written');

done_testing();
