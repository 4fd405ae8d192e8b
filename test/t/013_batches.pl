# Message Batches: claude_enrich(mode => 'batch') submits from the calling
# session and returns; the database's worker polls, streams the results and
# writes them back by primary key and into the cache, across restarts;
# errored, expired and canceled requests keep their reason; batches split
# at the size limits; costs are recorded at half price.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('batches', $mock, cache => 1,
	conf => "claude.batch_poll_interval = 1\nclaude.max_retries = 2\nrestart_after_crash = on\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
sub requests_to
{
	my ($method, $path) = @_;
	return grep { $_->{method} eq $method && $_->{path} =~ $path } @{ $mock->requests(0) };
}
sub batch_done
{
	my ($id) = @_;
	return wait_until(sub { sql("SELECT results_at IS NOT NULL FROM claude_batches WHERE id = '$id'") eq 't' }, 60);
}
# "status: error" of the item of a batch for the row with key id
sub item_of
{
	my ($batch, $id) = @_;
	return sql("SELECT i.status || ': ' || i.error FROM claude_batch_items i JOIN claude_batches b "
		  . "ON b.local_id = i.batch WHERE b.id = '$batch' AND i.pk->>'id' = '$id'");
}
# CALL claude_enrich in batch mode; returns (stderr, batch ids named in the NOTICE)
sub enrich_batch
{
	my ($table, $template, $set) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		($set // '') . "CALL claude_enrich('$table', 'summary', '$template', mode => 'batch')");
	is($rc, 0, "CALL claude_enrich($table, mode => 'batch') succeeded") or diag($err);
	my ($ids) = $err =~ /Message Batch(?:es)?: ([^;]+);/;
	return ($err, $ids ? split(/, /, $ids) : ());
}

$mock->config({ batch_delay_ms => 1500 });
sql(q{
	CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 10) i;
	UPDATE docs SET body = '[[mock:batch_errored]]' WHERE id = 3;
	UPDATE docs SET body = '[[mock:batch_expired]]' WHERE id = 4;});

# a reply already paid for is not paid again
is(sql("SELECT claude_complete('Summarize: doc 1')"), 'Summarize: doc 1', 'row 1\'s prompt is answered online first');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache") == 1 }), 'and cached');

my ($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; CALL claude_enrich('docs', 'summary', 'Summarize: {body}', mode => 'batch'); COMMIT;");
like($err, qr/cannot run inside a transaction block/, 'batch mode refuses to run inside a transaction block');

$mock->reset;
$mock->config({ batch_delay_ms => 1500 });
my ($notice, @ids) = enrich_batch('docs', 'Summarize: {body}');
is(scalar(@ids), 1, 'one batch was submitted');
like($ids[0], qr/^msgbatch_mock_\d+$/, "the NOTICE names it: $ids[0]");
like($notice, qr/9 rows of docs submitted .* 1 rows filled from the cache/, 'the cached row was filled, not submitted');
is(sql("SELECT summary FROM docs WHERE id = 1"), 'Summarize: doc 1', 'row 1 filled at once from the cache');
is(sql("SELECT count(summary) FROM docs"), '1', 'the others wait for the batch');

my @creates = requests_to('POST', qr{^/v1/messages/batches$});
is(scalar(@creates), 1, 'one POST /v1/messages/batches');
my @custom = map { $_->{custom_id} } @{ $creates[0]{body}{requests} };
is(scalar(@custom), 9, 'with 9 requests');
is(scalar(grep { /^[a-zA-Z0-9_-]{1,64}$/ } @custom), 9, 'every custom_id matches ^[a-zA-Z0-9_-]{1,64}$');
is(sql("SELECT count(*) FROM claude_batch_items i JOIN claude_batches b ON b.local_id = i.batch WHERE b.id = '$ids[0]'"),
	'9', 'custom_id -> primary key kept in claude_batch_items');
is(sql("SELECT status || ' ' || requests FROM claude_batches WHERE id = '$ids[0]'"), 'in_progress 9',
	'claude_batches shows the batch in progress');
is(sql("SELECT mode || ' ' || rows_total || ' ' || batch_id FROM claude_progress"), "batch 9 $ids[0]",
	'claude_progress shows it');

ok(batch_done($ids[0]), 'the worker wrote the results back after the batch ended');
is(sql("SELECT count(summary) FROM docs"), '8', 'every succeeded row is filled');
is(sql("SELECT summary FROM docs WHERE id = 7"), 'Summarize: doc 7', 'with its own reply');
is(sql("SELECT count(*) FROM docs WHERE id IN (3, 4) AND summary IS NULL"), '2', 'errored and expired rows stay empty');
is(sql("SELECT string_agg(status || ': ' || coalesce(error, ''), ', ' ORDER BY custom_id) FROM claude_batch_items "
	  . "WHERE status <> 'succeeded'"),
	'errored: invalid_request_error: mock batch item error, expired: expired',
	'and their reasons are recorded');
is(sql("SELECT concat_ws(' ', status, succeeded, errored, expired, canceled, rows_written) FROM claude_batches WHERE id = '$ids[0]'"),
	'ended 7 1 1 0 7', 'the batch counts match');
is(sql("SELECT count(*) FROM claude_progress"), '0', 'and it left claude_progress');
is(sql("SELECT count(*) FROM claude_cache"), '8', 'succeeded results are in the cache');
is(sql("SELECT count(*) FROM pg_ls_tmpdir()"), '0', 'the request body and results files are gone');

# costs at the batch discount
is(sql("SELECT cost_usd > 0 AND cost_usd * 2 = (SELECT sum(claude_cost_usd('claude-sonnet-4-6', "
	  . "jsonb_build_object('input_tokens', input_tokens, 'output_tokens', output_tokens))) "
	  . "FROM claude_batch_items WHERE status = 'succeeded') FROM claude_batches WHERE id = '$ids[0]'"),
	't', 'the batch cost is half the list price of its tokens');
is(sql("SELECT input_tokens = (SELECT sum(input_tokens) FROM claude_batch_items) FROM claude_batches WHERE id = '$ids[0]'"),
	't', 'and its tokens are the sum of its requests');
is(sql("SELECT claude_cost_usd('unknown-model', '{\"input_tokens\": 10}') IS NULL"), 't', 'an unknown model costs NULL');

# the cache has the key an online call uses
my $before = $mock->stats->{requests};
is(sql("SELECT claude_complete('Summarize: doc 6')"), 'Summarize: doc 6', 'an online call of a batch prompt');
is($mock->stats->{requests}, $before, 'is served from the cache the batch filled');

# split at the limits
sql("CREATE TABLE many (id int PRIMARY KEY, body text, summary text);
	INSERT INTO many SELECT i, 'item ' || i FROM generate_series(1, 10) i;");
my @split;
($notice, @split) = enrich_batch('many', 'Split: {body}', 'SET claude.batch_max_requests = 4; ');
is(scalar(@split), 3, 'claude.batch_max_requests = 4 splits 10 rows into 3 batches');
is(sql("SELECT string_agg(requests::text, ',' ORDER BY local_id) FROM claude_batches WHERE relation = 'many'::regclass"),
	'4,4,2', 'of 4, 4 and 2 requests');
ok(batch_done($_), "batch $_ finished") for @split;
is(sql("SELECT count(summary) FROM many"), '10', 'every row of the split batches is filled');

sql("UPDATE many SET summary = NULL");
$mock->reset;
$mock->config({ batch_delay_ms => 200 });
my $padding = 'x' x 300;
($notice, @split) = enrich_batch('many', "Size: {body} $padding", "SET claude.batch_max_size = '2kB'; ");
cmp_ok(scalar(@split), '>', 1, 'claude.batch_max_size = 2kB splits them too (' . scalar(@split) . ' batches)');
my @bodies = map { $_->{body_bytes} } requests_to('POST', qr{^/v1/messages/batches$});
is(scalar(grep { $_ <= 2048 } @bodies), scalar(@bodies), 'no batch body is over 2 kB (' . join(', ', @bodies) . ')');
ok(batch_done($_), "batch $_ finished") for @split;
is(sql("SELECT count(summary) FROM many"), '10', 'and every row is filled');

# a rerun skips rows that wait in a batch not yet ended
sql("UPDATE many SET summary = NULL");
$mock->config({ batch_delay_ms => 3000 });
my @first;
($notice, @first) = enrich_batch('many', 'Again: {body}');
my $creates = scalar(requests_to('POST', qr{^/v1/messages/batches$}));
($notice) = enrich_batch('many', 'Again: {body}');
like($notice, qr/10 rows of many skipped: they wait in Message Batches/, 'a rerun does not submit waiting rows again');
is(scalar(requests_to('POST', qr{^/v1/messages/batches$})), $creates, 'no new batch was created');

# a restart between submission and results
$node->stop('immediate');
$node->start;
ok(batch_done($first[0]), 'after an immediate shutdown the batch still completes');
is(sql("SELECT count(summary) FROM many"), '10', 'and its rows are filled');

# cancel
sql("UPDATE many SET summary = NULL");
$mock->config({ batch_delay_ms => 60000 });
my @cancel;
($notice, @cancel) = enrich_batch('many', 'Cancel: {body}');
is(sql("SELECT claude_batch_cancel('$cancel[0]')"), 'canceling', 'claude_batch_cancel returns the new status');
ok(batch_done($cancel[0]), 'the canceled batch ends');
is(sql("SELECT canceled || ' ' || (SELECT count(*) FROM claude_batch_items WHERE batch = b.local_id AND status = 'canceled') "
	  . "FROM claude_batches b WHERE id = '$cancel[0]'"), '10 10', 'with every request canceled');
is(sql("SELECT count(summary) FROM many"), '0', 'and no row written');
($rc, $out, $err) = $node->psql('postgres', "SELECT claude_batch_cancel('msgbatch_unknown')");
like($err, qr/is not in claude_batches/, 'an unknown batch id is an error');

# submission errors
$mock->reset;
$mock->fault({ status => 400 });
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('many', 'summary', 'Fail: {body}', mode => 'batch')");
like($err, qr/Claude API error 400/, 'an error reply fails the CALL');
is(sql("SELECT count(*) FROM claude_batches WHERE status = 'submitting' OR id IS NULL"), '0',
	'and leaves no record: nothing was created');
# a 529 on creation is a refusal: retried (issue 24 keeps that, and
# never resends once the body may have been acted on)
$mock->fault({ status => 529 });
my @retried;
($notice, @retried) = enrich_batch('many', 'Retry: {body}');
is(scalar(@retried), 1, 'a 529 on batch creation is retried');
ok(batch_done($retried[0]), 'and that batch completes');
sql("UPDATE many SET summary = NULL");
# a reply cut short: the API may have created the batch
$creates = scalar(requests_to('POST', qr{^/v1/messages/batches$}));
$mock->fault({ truncate => 1, count => 3 });
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('many', 'summary', 'Cut: {body}', mode => 'batch')");
like($err, qr/could not reach the Claude API/, 'a reply cut short fails the CALL');
is(scalar(requests_to('POST', qr{^/v1/messages/batches$})), $creates + 1, 'without a blind retry of the POST');
$mock->clear_faults;
like(sql("SELECT status || ': ' || error FROM claude_batches WHERE id IS NULL"), qr/^uncertain: the batch may exist/,
	'the record is uncertain: the batch may exist');

# a session that dies while submitting
sql("DELETE FROM claude_batches WHERE id IS NULL");
$mock->fault({ hang => 1 });
my $bg = start_bg($node, "CALL claude_enrich('many', 'summary', 'Die: {body}', mode => 'batch')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_batches WHERE status = 'submitting'") == 1 }), 'a submission is under way');
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('many', 'summary', 'Twice: {body}', mode => 'batch')");
like($err, qr/another session is submitting Message Batches for column "summary" of many/,
	'a second submission for the same column meanwhile is refused');
sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%Die: {body}%' AND pid <> pg_backend_pid()");
finish_bg($bg);
ok(wait_until(sub { sql("SELECT status FROM claude_batches WHERE id IS NULL") eq 'uncertain' }), 'the worker marks it uncertain');
like(sql("SELECT error FROM claude_batches WHERE id IS NULL"), qr/session ended before the API answered/, 'with the reason');
$mock->clear_faults;

# plain roles: EXECUTE is enough to submit; the bookkeeping stays closed
sql("CREATE ROLE analyst LOGIN; GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO analyst;
	CREATE TABLE mine (id int PRIMARY KEY, body text, summary text); ALTER TABLE mine OWNER TO analyst;
	INSERT INTO mine VALUES (1, 'analyst row');");
$mock->config({ batch_delay_ms => 200 });
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('mine', 'summary', 'Mine: {body}', mode => 'batch')",
	extra_params => [ '-U', 'analyst' ]);
is($rc, 0, 'a role with EXECUTE on claude_enrich submits a batch') or diag($err);
ok(wait_until(sub { sql("SELECT summary FROM mine") eq 'Mine: analyst row' }), 'and gets its row filled');
($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM claude_batch_items', extra_params => [ '-U', 'analyst' ]);
like($err, qr/permission denied/, 'but cannot read claude_batch_items');
is(sql("SELECT submitted_by FROM claude_batches WHERE relation = 'mine'::regclass"), 'analyst', 'the batch records its submitter');

# results are written back set-wise: one UPDATE a chunk, not one a row
# (a statement trigger counts them); one row refused falls back to row by
# row for its chunk, and the refused row keeps its reason
sql(q{
	CREATE TABLE statements (tbl text);
	CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN INSERT INTO public.statements VALUES (TG_TABLE_NAME); RETURN NULL; END $$;
	CREATE TABLE setwise (id int PRIMARY KEY, body text, summary text);
	INSERT INTO setwise SELECT i, 'row ' || i FROM generate_series(1, 30) i;
	UPDATE setwise SET body = 'twin' WHERE id IN (29, 30);
	CREATE TRIGGER count AFTER UPDATE ON setwise FOR EACH STATEMENT EXECUTE FUNCTION count_statement();
	CREATE TABLE refusing (id int PRIMARY KEY, body text,
		summary text CHECK (summary NOT LIKE '%refuse me%'));
	INSERT INTO refusing SELECT i, 'row ' || i FROM generate_series(1, 30) i;
	UPDATE refusing SET body = 'refuse me' WHERE id = 7;
	CREATE TRIGGER count AFTER UPDATE ON refusing FOR EACH STATEMENT EXECUTE FUNCTION count_statement();});
$mock->config({ batch_delay_ms => 1500 });
my ($setwise_err, @setwise) = enrich_batch('setwise', 'Set: {body}');
my ($refusing_err, @refusing) = enrich_batch('refusing', 'Set: {body}');
sql("DELETE FROM setwise WHERE id = 5");
ok(batch_done($setwise[0]), 'a batch of 30 results is written back');
is(sql("SELECT count(summary) || ' ' || count(*) FILTER (WHERE summary = 'Set: ' || body) FROM setwise"), '29 29',
	'every row still there has its own reply (two rows ask the same)');
is(sql("SELECT count(*) FROM statements WHERE tbl = 'setwise'"), '1', 'in one UPDATE');
like(item_of($setwise[0], 5),
	qr/^succeeded: no row was written: the row with key \{"id": 5\} is gone/, 'a row deleted meanwhile is reported');
is(sql("SELECT rows_written || ' ' || succeeded FROM claude_batches WHERE id = '$setwise[0]'"), '29 30',
	'and not counted as written');
is(sql("SELECT count(*) FROM claude_cache WHERE response->'content'->0->>'text' = 'Set: twin'"), '1',
	'the two rows asking the same share one cache entry');
ok(batch_done($refusing[0]), 'a batch with a row its table refuses is written back');
is(sql("SELECT count(summary) FROM refusing"), '29', 'every other row is filled');
like(item_of($refusing[0], 7),
	qr/^succeeded: not written: new row for relation "refusing" violates check constraint/,
	'the refused row keeps the reason');
is(sql("SELECT count(*) FROM statements WHERE tbl = 'refusing'"), '29', 'written row by row after the chunk failed');
is(sql("SELECT rows_written || ' ' || (cost_usd > 0) FROM claude_batches WHERE id = '$refusing[0]'"), '29 true',
	'with the count and the cost right');

# a result line cut short (hostile or broken server): its chunk goes line
# by line, the others are written, and its request is left with a reason
sql(q{
	CREATE TABLE cut (id int PRIMARY KEY, body text, summary text);
	INSERT INTO cut SELECT i, 'row ' || i FROM generate_series(1, 10) i;
	UPDATE cut SET body = '[[mock:batch_malformed]]' WHERE id = 4;
	CREATE TRIGGER count AFTER UPDATE ON cut FOR EACH STATEMENT EXECUTE FUNCTION count_statement();});
my ($cut_err, @cut) = enrich_batch('cut', 'Cut: {body}');
ok(batch_done($cut[0]), 'a batch with a result line cut short ends');
is(sql("SELECT count(summary) FROM cut"), '9', 'every other row is filled');
is(sql("SELECT count(*) FROM statements WHERE tbl = 'cut'"), '9', 'line by line');
like(item_of($cut[0], 4),
	qr/^errored: the batch results have no line for this request/, 'the cut line\'s request is errored with a reason');
like(slurp_file($node->logfile), qr/a result line of Message Batch \Q$cut[0]\E could not be read/,
	'and the line is logged');

ok(wait_until(sub { sql("SELECT count(*) FROM pg_ls_tmpdir()") == 0 }), 'no temporary file is left behind');

$node->stop;
$mock->stop;
done_testing();
