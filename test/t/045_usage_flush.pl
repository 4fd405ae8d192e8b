# claude_usage counts a request once while the database worker writes it
# to claude_usage_log: shared memory keeps what is being written and what
# was written last round with the transaction that wrote it, and a reader
# counts it there only when its snapshot does not see that transaction.
# The pause point "usage_written" (src/common/fault.c, dbworker/flush.c)
# holds the worker after its write committed, before it marks it written.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $pause = PostgreSQL::Test::Utils::tempdir() . '/pause';
$ENV{CLAUDE_TEST_PAUSE} = 'usage_written';
$ENV{CLAUDE_TEST_PAUSE_FILE} = $pause;
my $node = new_node('usage_flush', $mock);
delete $ENV{CLAUDE_TEST_PAUSE};
delete $ENV{CLAUDE_TEST_PAUSE_FILE};
sub sql { $node->safe_psql('postgres', $_[0]) }
my $total = q{SELECT coalesce(sum(requests), 0) FROM claude_usage};
my $logged = q{SELECT coalesce(sum(requests), 0) FROM claude_usage_log};

# a first request, written alone: the worker's rounds (every 5 s) start
sql("SELECT claude_complete('flush 0', cache => false)");
ok(wait_until(sub { sql($logged) eq '1' }, 60), 'a first request written');

# right after a round: a snapshot kept to the end, then three requests
# at once, written by the next round, which stops after its commit
my $rr = $node->background_psql('postgres');
$rr->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
is($rr->query_safe($logged), '1', 'the old snapshot: one request written');
open my $fh, '>', $pause or die "cannot write $pause: $!";
close $fh;
sql(q{SELECT claude_complete_many(ARRAY['flush 1', 'flush 2', 'flush 3'], cache => false)});
is(sql($total), '4', 'four requests counted before the write');

ok(wait_until(sub { sql($logged) eq '4' }, 60), 'the worker wrote the three to claude_usage_log');
is(sql($total), '4', 'written, not yet marked: a new snapshot counts them once, not twice');
is($rr->query_safe($total), '4', 'written, not yet marked: the old snapshot still counts them');
is(sql(q{SELECT count(*) FROM claude_metrics_rows()
	WHERE metric = 'claude_model_requests_total' AND value = 4}), '1',
	'the per-model counter of the metrics agrees');

# marked written: a new snapshot reads the log; the old one still counts them
unlink $pause;
ok(wait_until(sub { sql('SELECT count(*) FROM claude_usage_pending()') eq '0' }, 30),
	'once marked written, nothing is pending for a new snapshot');
is(sql($total), '4', 'marked written: a new snapshot counts them once');
is($rr->query_safe($total), '4', 'marked written: the old snapshot counts them once (not lost)');
$rr->query_safe('COMMIT');
is($rr->query_safe($total), '4', 'after its transaction, the same session counts them once');
$rr->quit;

$node->stop;
$mock->stop;
done_testing();
