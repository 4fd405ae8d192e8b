# The database worker moves an entry found under a first-version key to
# its current key (client/cache.c, dbworker/cachewrite.c).  A call looks
# up both keys in one snapshot: a move that commits between its two
# lookups is seen whole or not at all, so the call is answered from the
# cache, never sent again (which paid twice and replaced the stored reply).
# The pause point (src/common/fault.c) holds the call between the lookups.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $pause = PostgreSQL::Test::Utils::tempdir() . '/pause';
$ENV{CLAUDE_TEST_PAUSE} = 'cache_first_version';
$ENV{CLAUDE_TEST_PAUSE_FILE} = $pause;
my $node = new_node('cache_move', $mock, cache => 1, conf => "claude.cache_scope = database\n");
delete $ENV{CLAUDE_TEST_PAUSE};
delete $ENV{CLAUDE_TEST_PAUSE_FILE};
sub sql { $node->safe_psql('postgres', $_[0]) }

# the key of the first version of cache.sql's pinned request
my $v1 = '\xfa12de5f453f7748d4a1222ce79b3fb2cc20f635831913e3e733a285cf10a843';
my $pinned = qq{INSERT INTO claude_cache (key, model, request, response) VALUES ('$v1', 'claude-pinned', NULL,
  '{"id": "msg_pinned", "type": "message", "role": "assistant", "model": "claude-pinned", "content": [{"type": "text", "text": "pinned answer"}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}')};
my $call = q{SELECT claude_messages('{"temperature": 0.25, "max_tokens": 7, "messages": [{"content": "regress pinned key", "role": "user"}], "system": "pinned system", "model": "claude-pinned"}')->>'id'};

# the current key, as the worker moves the entry after a hit
sql($pinned);
is(sql($call), 'msg_pinned', 'a first-version entry answers');
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE key = '$v1'") eq '0' }),
	'the worker moves it');
my $v2 = sql("SELECT key FROM claude_cache WHERE model = 'claude-pinned'");
isnt($v2, $v1, 'to its current key');
my $sent = $mock->stats->{requests};

# back under the first-version key; a call misses the current key and
# waits before it looks up the first-version one
sql("UPDATE claude_cache SET key = '$v1' WHERE key = '$v2'");
open my $f, '>', $pause or die;
close $f;
my $bg = start_bg($node, "SET statement_timeout = '60s'; $call");
ok(wait_until(sub { sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%regress pinned key%' AND pid <> pg_backend_pid()") eq '1' }),
	'the call waits between its lookups');
# the worker's move (apply_hits) commits meanwhile
sql("UPDATE claude_cache SET key = '$v2' WHERE key = '$v1'");
unlink $pause;
my ($rc, $out, $err) = finish_bg($bg);
is($out, 'msg_pinned', 'the call is answered from the cache') or diag($err);
is($mock->stats->{requests}, $sent, 'nothing is sent');
# a reply sent after it would be stored before this one (the worker's queue
# is in order)
sql("SELECT claude_complete('after the race')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' = 'after the race'") eq '1' }),
	'a later reply is stored');
is(sql("SELECT string_agg(response->>'id', ',') FROM claude_cache WHERE model = 'claude-pinned'"),
	'msg_pinned', 'the stored reply is kept');

$node->stop;
$mock->stop;
done_testing();
