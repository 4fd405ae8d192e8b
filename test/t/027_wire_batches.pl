# Message Batches and the database worker against a hostile server
# (issue 24, items 3, 5, 6, 10, 11 and the batch part of 15):
#  3  an error in one step of the database worker (a batch status it does
#     not know, a reply whose usage the cache cannot take) re-sends no job;
#     a job's attempts never pass claude.max_retries + 1, the claim included;
#  5  a creation answered 200 with an unknown processing_status keeps its id;
#     a creation is never sent twice once it may have been acted on: a 529
#     (a refusal) is retried, a reply cut short or a timeout leaves the
#     record 'uncertain', its rows held;
#  6  bad usage in a result line is unknown (answer kept, request counted,
#     tokens and cost not believed), the request's model prices a result in
#     items, batches and claude_usage alike, and budgets settle exactly;
# 10  the results download is bounded by claude.batch_max_results_size
#     (by default claude.max_reply_size a request) and by temp_file_limit;
# 11  a trickling download is abandoned, retried later, and holds back no
#     other batch;
#     a result lands only on a row whose prompt inputs are still those it
#     was asked with; LATIN1 and SQL_ASCII databases convert results like
#     replies; claude_progress counts stay within the batch (15).
# After each case: the HTTP worker's PID is unchanged and an innocent call
# succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('wirebat', $mock, cache => 1,
	conf => "claude.batch_poll_interval = 1\nclaude.max_retries = 3\n");
my $pid = worker_pid($node);
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }
# requests the mock received: POSTs to a path, or any whose body matches
sub posts
{
	my ($path) = @_;
	return scalar grep { $_->{method} eq 'POST' && $_->{path} =~ $path } @{ $mock->requests(0) };
}
sub asked
{
	my ($re) = @_;
	return scalar grep { $_->{path} eq '/v1/messages' && defined $_->{body} && ref $_->{body} eq 'HASH'
		  && ($_->{body}{messages}[0]{content} // '') =~ $re } @{ $mock->requests(0) };
}
sub unharmed
{
	my ($what) = @_;
	is(worker_pid($node), $pid, "$what: the HTTP worker is the same process");
	my ($rc, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '20s'; SELECT claude_complete('innocent ' || random(), cache => false)");
	is($rc, 0, "$what: an innocent call succeeds") or diag($err);
}
# CALL claude_enrich in batch mode: (rc, stderr, batch ids named in the NOTICE)
sub enrich_batch
{
	my ($table, $template, %o) = @_;
	my ($rc, $out, $err) = $node->psql($o{db} // 'postgres',
		($o{set} // '') . "CALL claude_enrich('$table', 'summary', '$template', mode => 'batch')",
		extra_params => [ '-v', 'VERBOSITY=verbose', $o{role} ? ('-U', $o{role}) : () ]);
	my ($ids) = $err =~ /Message Batch(?:es)?: ([^;]+);/;
	return ($rc, $err, $ids ? split(/, /, $ids) : ());
}
sub batch_done
{
	my ($id, $db, $timeout) = @_;
	return wait_until(sub { sql("SELECT results_at IS NOT NULL FROM claude_batches WHERE id = '$id'", $db) eq 't' },
		$timeout // 60);
}
sub batch_of { sql("SELECT $_[1] FROM claude_batches WHERE relation = '$_[0]'::regclass", $_[2]) }
sub message
{
	my ($usage) = @_;
	return '{"id":"msg_x","type":"message","role":"assistant","model":"claude-sonnet-4-6",'
	  . '"content":[{"type":"text","text":"paid answer"}],"stop_reason":"end_turn","stop_sequence":null,'
	  . "\"usage\":$usage}";
}
sub reload { sql("SELECT pg_reload_conf()"); sleep 1 }
sub new_table
{
	my ($name, @bodies) = @_;
	my $i = 0;
	sql("CREATE TABLE $name (id int PRIMARY KEY, body text, summary text);"
		  . join('', map { $i++; "INSERT INTO $name VALUES ($i, \$b\$$_\$b\$);" } @bodies));
}

my ($rc, $out, $err, @ids);

# ---- 3: a batch status the CHECK does not know, while 5 jobs are in flight
$mock->config({ batch_delay_ms => 8000 });
new_table('polled', 'a', 'b');
($rc, $err, @ids) = enrich_batch('polled', 'Polled: {body}');
is($rc, 0, '3: a batch is submitted') or diag($err);
$mock->config({ batch_status => 'validating' });
sql(q{CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
	CREATE TRIGGER classify AFTER INSERT ON tickets FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', '[[mock:delay=2500]] Job: {subject}', 'max_tokens=20');});
sql("INSERT INTO tickets SELECT i, 'ticket ' || i FROM generate_series(1, 5) i");
ok(wait_until(sub { batch_of('polled', 'error') =~ /processing_status "validating"/ }),
	'3: the worker polls the batch, "validating", and notes it');
is(batch_of('polled', 'status'), 'in_progress', '3: the unknown status is taken as in progress');
ok(wait_until(sub { sql("SELECT count(category) FROM tickets") == 5 }, 60), '3: the 5 jobs are done');
is(asked(qr/Job: ticket/), 5, '3: each sent once while the worker polled a batch "validating"');
$mock->config({ batch_status => undef });
ok(batch_done($ids[0]), '3: the batch ends and is written back');
is(sql("SELECT count(summary) FROM polled"), '2', '3: its rows are filled');
unharmed('3: unknown batch status');

# a reply whose usage the cache cannot take (input_tokens 1.5), while 5 jobs are in flight
$mock->reset;
sql("INSERT INTO tickets SELECT i, 'second ' || i FROM generate_series(11, 15) i");
ok(wait_until(sub { asked(qr/Job: second/) == 5 }), '3: 5 more jobs are in flight');
$mock->fault({ body => message('{"input_tokens":1.5,"output_tokens":2}') });
is(sql("SELECT claude_complete('usage 1.5')"), 'paid answer', '3: a reply with input_tokens 1.5 is answered');
ok(wait_until(sub { sql("SELECT count(category) FROM tickets") == 10 }, 60), '3: the jobs are done');
is(asked(qr/Job: second/), 5, '3: and none was sent twice');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' = 'usage 1.5' "
		  . "AND input_tokens IS NULL AND response->'content'->0->>'text' = 'paid answer'") eq '1' }),
	'3: the reply is cached, its tokens unknown');
unharmed('3: usage 1.5 in the cache');

# any error in a step: every cache write and every update of a batch
# refused (as a broken schema would), while 5 jobs are in flight
$mock->reset;
$mock->config({ batch_delay_ms => 1000 });
new_table('refused', 'one');
($rc, $err, @ids) = enrich_batch('refused', 'Refused: {body}');
sql("ALTER TABLE claude_cache ADD CONSTRAINT refuse CHECK (false) NOT VALID;
	ALTER TABLE claude_batches ADD CONSTRAINT refuse CHECK (polled_at IS NULL) NOT VALID;");
sql("INSERT INTO tickets SELECT i, 'third ' || i FROM generate_series(21, 25) i");
ok(wait_until(sub { sql("SELECT count(category) FROM tickets") == 15 }, 60),
	'3: with every cache write and batch update failing, the jobs are done');
is(asked(qr/Job: third/), 5, '3: and none was sent twice');
like(slurp_file($node->logfile), qr/violates check constraint "refuse"/, '3: the errors are logged');
sql("ALTER TABLE claude_cache DROP CONSTRAINT refuse; ALTER TABLE claude_batches DROP CONSTRAINT refuse;");
ok(batch_done($ids[0]), '3: once the schema is fixed the batch is written back');
unharmed('3: a failing step');

# the claim never takes a job past claude.max_retries + 1 attempts
$mock->reset;
sql(q{CREATE TABLE overloaded (id int PRIMARY KEY, subject text, category text);
	CREATE TRIGGER classify AFTER INSERT ON overloaded FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', '[[mock:status=529]] Over: {subject}');
	INSERT INTO overloaded VALUES (1, 'x');});
ok(wait_until(sub { sql("SELECT status || attempts FROM claude_jobs WHERE relid = 'overloaded'::regclass") eq 'queued1' }),
	'3: a job failed once waits for its retry');
sql("UPDATE claude_jobs SET attempts = 10, next_attempt_at = now() WHERE relid = 'overloaded'::regclass AND status = 'queued'");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE relid = 'overloaded'::regclass") eq 'failed' }),
	'3: a job with more attempts than allowed fails');
is(asked(qr/Over: x/), 1, '3: without being sent again');
like(sql("SELECT last_error FROM claude_jobs WHERE relid = 'overloaded'::regclass"), qr/attempts/,
	'3: saying why');
unharmed('3: attempts');

# ---- 5: a creation answered 200 with a processing_status outside the list
$mock->reset;
$mock->config({ batch_delay_ms => 1500, batch_status => 'validating' });
new_table('created', 'one', 'two');
($rc, $err, @ids) = enrich_batch('created', 'Created: {body}');
is($rc, 0, '5: a creation answered "validating" succeeds') or diag($err);
like($ids[0] // '', qr/^msgbatch_mock_\d+$/, '5: the NOTICE names the batch');
is(batch_of('created', "id || ' ' || status"), "$ids[0] in_progress", '5: its id is recorded, in progress');
$mock->config({ batch_status => undef });
ok(batch_done($ids[0]), '5: it is polled and written back');
is(sql("SELECT count(summary) FROM created"), '2', '5: its rows are filled');
unharmed('5: unknown status on creation');

# a creation is never sent twice
new_table('once', 'one', 'two');
$mock->reset;
$mock->fault({ status => 529 });
new_table('refused529', 'one');
($rc, $err) = enrich_batch('refused529', 'Refused by 529: {body}');
is($rc, 0, '5: a 529 on creation (the server refused it) is retried') or diag($err);
is(posts(qr{^/v1/messages/batches$}), 2, '5: two POSTs for one batch');
is(batch_of('refused529', 'count(*)'), '1', '5: one record');
$mock->reset;
$mock->fault({ truncate => 1, count => 3 });
($rc, $err) = enrich_batch('once', 'Once: {body}');
like($err, qr/ZC001: could not reach the Claude API/, '5: a creation reply cut short fails the CALL (ZC001)');
is(posts(qr{^/v1/messages/batches$}), 1, '5: it is not sent again');
is(batch_of('once', 'status'), 'uncertain', '5: the record is left uncertain');
like(batch_of('once', 'error'), qr/may exist at the API.*2 requests/s, '5: saying what is known');
$mock->clear_faults;
($rc, $err) = enrich_batch('once', 'Once: {body}');
like($err, qr/2 rows of once skipped/, '5: a rerun does not pay again for its rows');
is(posts(qr{^/v1/messages/batches$}), 1, '5: nothing more was sent');
sql("DELETE FROM claude_batches WHERE relation = 'once'::regclass");
$mock->fault({ hang => 1 });
($rc, $err) = enrich_batch('once', 'Once: {body}', set => "SET claude.request_timeout = '1s'; ");
like($err, qr/ZC408: .*claude.request_timeout/, '5: a creation that times out fails the CALL (ZC408)');
is(posts(qr{^/v1/messages/batches$}), 2, '5: and is not sent again');
is(batch_of('once', 'status'), 'uncertain', '5: the record is uncertain');
$mock->clear_faults;
sql("DELETE FROM claude_batches WHERE relation = 'once'::regclass");
unharmed('5: creation');

# ---- 6: usage in result lines out of range, and another model
$mock->reset;
$mock->config({ batch_delay_ms => 500 });
sql("CREATE ROLE payer LOGIN;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO payer;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO payer;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('payer', 6);");
new_table('usage_t', '[[mock:batch_usage=1.5]]', '[[mock:batch_usage=3e9]]', '[[mock:batch_usage=-1000000]]', 'fine');
sql("ALTER TABLE usage_t OWNER TO payer");
($rc, $err, @ids) = enrich_batch('usage_t', 'Usage: {body}', role => 'payer');
is($rc, 0, '6: payer submits 4 requests (budget: 6 a day)') or diag($err);
ok(batch_done($ids[0]), '6: the batch is written back');
is(sql("SELECT count(*) FROM usage_t WHERE summary = 'Usage: ' || body"), '4', '6: every paid answer is written');
is(sql("SELECT string_agg(concat_ws(' ', status, input_tokens IS NULL, cost_usd IS NULL), ', ' ORDER BY custom_id) "
	  . "FROM claude_batch_items WHERE batch = (SELECT local_id FROM claude_batches WHERE id = '$ids[0]')"),
	'succeeded t t, succeeded t t, succeeded t t, succeeded f f',
	'6: bad usage is unknown: the item succeeded, its tokens and cost NULL');
is(sql("SELECT (cost_usd IS NULL) || ' ' || (input_tokens = (SELECT input_tokens FROM claude_batch_items i "
	  . "WHERE i.batch = b.local_id AND custom_id = 'r4')) FROM claude_batches b WHERE id = '$ids[0]'"),
	'true true', '6: the batch cost is unknown, its tokens the known ones');
ok(wait_until(sub { sql("SELECT requests || ' ' || (input_tokens = (SELECT i.input_tokens FROM claude_batch_items i "
		  . "JOIN claude_batches b ON b.local_id = i.batch WHERE b.id = '$ids[0]' AND custom_id = 'r4')) "
		  . "FROM claude_usage WHERE role = 'payer'::regrole") eq '4 true' }),
	'6: claude_usage counts the 4 requests and only the known tokens');
is(sql("SELECT count(*) FROM claude_usage WHERE input_tokens < 0 OR cost_usd < 0"), '0', '6: nothing negative');
my $calls = 0;
for my $i (1 .. 3)
{
	($rc) = $node->psql('postgres', "SELECT claude_complete('payer $i', cache => false)", extra_params => [ '-U', 'payer' ]);
	$calls++ if $rc == 0;
}
is($calls, 2, '6: the reservation settled exactly: 2 of payer\'s 6 requests are left');
unharmed('6: bad usage');

sql("CREATE ROLE pricer LOGIN;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO pricer;");
new_table('model_t', '[[mock:batch_model=claude-opus-4-5]] other', 'same');
sql("ALTER TABLE model_t OWNER TO pricer");
($rc, $err, @ids) = enrich_batch('model_t', 'Model: {body}', role => 'pricer');
is($rc, 0, '6: a batch whose result names another model') or diag($err);
ok(batch_done($ids[0]), '6: is written back');
is(sql("SELECT bool_and(cost_usd = claude_cost_usd(request->>'model', jsonb_build_object('input_tokens', input_tokens, "
	  . "'output_tokens', output_tokens), true)) FROM claude_batch_items WHERE batch = "
	  . "(SELECT local_id FROM claude_batches WHERE id = '$ids[0]')"), 't',
	'6: each result is priced by its request\'s model');
ok(wait_until(sub { sql("SELECT abs(u.cost_usd - b.cost_usd) < 1e-9 FROM claude_usage u, claude_batches b "
		  . "WHERE u.role = 'pricer'::regrole AND b.id = '$ids[0]'") eq 't' }),
	'6: as in claude_batches and claude_usage');
unharmed('6: another model');

# ---- 10: a results download larger than its limit
$mock->reset;
$mock->config({ batch_delay_ms => 300 });
sql("ALTER SYSTEM SET claude.max_reply_size = '1MB'");
reload();
new_table('huge', '[[mock:batch_huge=6000000]]');
($rc, $err, @ids) = enrich_batch('huge', 'Huge: {body}');
is($rc, 0, '10: a one-request batch whose results are 6 MB') or diag($err);
ok(wait_until(sub { batch_of('huge', 'error') =~ /larger than/ }, 60),
	'10: the download stops at claude.max_reply_size for its one request');
like(batch_of('huge', 'error'), qr/claude.batch_max_results_size/, '10: naming the setting');
is(batch_of('huge', "status <> 'failed'"), 't', '10: the batch is kept for a retry');
ok(wait_until(sub { sql("SELECT count(*) FROM pg_ls_tmpdir()") eq '0' }), '10: the partial file is gone');
($rc, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET claude.batch_max_results_size = '20MB'");
is($rc, 0, '10: claude.batch_max_results_size can be raised') or diag($err);
reload();
ok(batch_done($ids[0]), '10: then the results are written back');
is(sql("SELECT summary FROM huge"), 'Huge: [[mock:batch_huge=6000000]]', '10: the row is filled');
sql("ALTER SYSTEM SET temp_file_limit = '2MB'");
reload();
new_table('huge2', '[[mock:batch_huge=6000000]] 2');
($rc, $err, @ids) = enrich_batch('huge2', 'Huge: {body}');
ok(wait_until(sub { batch_of('huge2', 'error') =~ /temp_file_limit/ }, 60), '10: temp_file_limit bounds it too');
sql("ALTER SYSTEM RESET temp_file_limit; ALTER SYSTEM RESET claude.max_reply_size; ALTER SYSTEM RESET claude.batch_max_results_size");
reload();
ok(batch_done($ids[0]), '10: and once it is raised the batch completes');
unharmed('10: huge results');

# ---- 11: a trickling download holds back no other batch
$mock->reset;
$mock->config({ batch_delay_ms => 300 });
sql("ALTER SYSTEM SET claude.request_timeout = '3s'");
reload();
new_table('slow', '[[mock:batch_slow=2]] slow');
new_table('quick', 'quick');
my @slow;
($rc, $err, @slow) = enrich_batch('slow', 'Slow: {body}');
ok(wait_until(sub { scalar grep { $_->{path} =~ m{/results$} } @{ $mock->requests(0) } }), '11: a download trickles');
($rc, $err, @ids) = enrich_batch('quick', 'Quick: {body}');
ok(batch_done($ids[0], undef, 30), '11: another batch is written back meanwhile');
is(batch_of('slow', 'results_at IS NULL'), 't', '11: before the trickling one');
ok(batch_done($slow[0]), '11: the slow download is abandoned and retried');
is(scalar(grep { $_->{path} eq "/v1/messages/batches/$slow[0]/results" } @{ $mock->requests(0) }), 3,
	'11: twice, the third download being quick');
like(slurp_file($node->logfile), qr/too slow/, '11: the log says why');
sql("ALTER SYSTEM RESET claude.request_timeout");
reload();
unharmed('11: trickle');

# ---- a result lands only on a row whose prompt inputs are unchanged
$mock->reset;
$mock->config({ batch_delay_ms => 2500 });
new_table('changing', 'one', 'two', 'three');
($rc, $err, @ids) = enrich_batch('changing', 'Changing: {body}');
sql("UPDATE changing SET body = 'TWO' WHERE id = 2");
ok(batch_done($ids[0]), 'inputs: the batch is written back');
is(sql("SELECT string_agg(coalesce(summary, '-'), ',' ORDER BY id) FROM changing"), 'Changing: one,-,Changing: three',
	'inputs: the row whose input changed is not written');
like(sql("SELECT i.status || ': ' || i.error FROM claude_batch_items i JOIN claude_batches b ON b.local_id = i.batch "
	  . "WHERE b.id = '$ids[0]' AND i.custom_id = 'r2'"), qr/^succeeded: no row was written: .*inputs changed/,
	'inputs: its item says so');

# ---- 15: counts out of range stay within the batch in claude_progress
$mock->config({ batch_delay_ms => 60000, batch_counts => { succeeded => 2147483647, errored => -5, processing => 1.5 } });
new_table('counted', 'one');
($rc, $err, @ids) = enrich_batch('counted', 'Counted: {body}');
ok(wait_until(sub { batch_of('counted', 'polled_at > created_at') eq 't' }), '15: the batch is polled');
is(batch_of('counted', "concat_ws(' ', requests, succeeded, errored, processing)"), '1 1 0',
	'15: its counts are clamped to its requests (0..1), a fraction is unknown');
is(sql("SELECT rows_done || ' ' || rows_total || ' ' || rows_failed || ' ' || percent FROM claude_progress "
	  . "WHERE batch_id = '$ids[0]'"), '1 1 0 100.0', '15: claude_progress shows 1 done of 1, 100%');
sql("UPDATE claude_batches SET succeeded = 2147483647, errored = -7 WHERE id = '$ids[0]'");
is(sql("SELECT rows_done || ' ' || rows_failed || ' ' || percent FROM claude_progress WHERE batch_id = '$ids[0]'"),
	'1 0 100.0', '15: claude_progress clamps what the table holds too');
sql("DELETE FROM claude_batches WHERE id = '$ids[0]'");
$mock->config({ batch_counts => undef });
unharmed('15: counts');

# ---- encodings: results converted like replies
$mock->reset;
$mock->config({ batch_delay_ms => 300 });
sql("CREATE DATABASE latin1db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
sql("CREATE DATABASE asciidb ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
my ($e, $i) = ("\xc3\xa9", "\xc3\xaf");	# UTF-8 bytes
for my $db ('latin1db', 'asciidb')
{
	sql("CREATE EXTENSION claude; SET client_encoding = 'UTF8';
		CREATE TABLE enc (id int PRIMARY KEY, body text, summary text);
		INSERT INTO enc VALUES (1, 'caf$e'), (2, 'na${i}ve [[mock:batch_escape]]');", $db);
	($rc, $err, @ids) = enrich_batch('enc', 'Enc: {body}', db => $db);
	is($rc, 0, "$db: a batch with non-ASCII prompts") or diag($err);
	ok(batch_done($ids[0], $db), "$db: is written back");
	is(sql("SET client_encoding = 'UTF8'; SELECT string_agg(i.status || ' ' || e.summary, ', ' ORDER BY e.id) "
		  . "FROM enc e JOIN claude_batch_items i ON i.pk->>'id' = e.id::text", $db),
		"succeeded Enc: caf$e, succeeded Enc: na${i}ve [[mock:batch_escape]]",
		"$db: raw and escaped non-ASCII text is converted, not errored");
	my $before = $mock->stats->{requests};
	is(sql("SET client_encoding = 'UTF8'; SELECT claude_complete('Enc: caf$e')", $db), "Enc: caf$e",
		"$db: the cache serves the same text");
	is($mock->stats->{requests}, $before, "$db: from the cache");
}
unharmed('encodings');

ok(wait_until(sub { sql("SELECT count(*) FROM pg_ls_tmpdir()") eq '0' }), 'no temporary file is left behind');
$node->stop;
$mock->stop;
done_testing();
