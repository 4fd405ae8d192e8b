# The response cache: identical requests are paid once; a paid reply is
# kept whatever happens to the caller; concurrent identical requests make
# one API request; expiry, bypass, purge and privileges.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('cache', $mock, cache => 1, init => { allows_streaming => 1 });

sub requests { $mock->stats->{requests} }
sub cached
{
	my ($prompt) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM claude_cache WHERE request->'messages'->0->>'content' = '$prompt'");
}
sub wait_cached
{
	my ($prompt) = @_;
	return wait_until(sub { cached($prompt) == 1 }, 30);
}

# miss, then hit
$mock->reset;
is($node->safe_psql('postgres', "SELECT claude_complete('first')"), 'first', 'a miss is answered');
ok(wait_cached('first'), 'and stored');
is($node->safe_psql('postgres', "SELECT claude_complete('first')"), 'first', 'the same request again');
is(requests(), 1, 'was answered from the cache');
is($node->safe_psql('postgres',
	q{SELECT claude_messages('{"max_tokens": 1024, "messages": [{"content": "first", "role": "user"}]}')->'content'->0->>'text'}),
	'first', 'claude_messages with the same effective request, keys in another order');
is(requests(), 1, 'hits the same entry as claude_complete');
# every parameter is part of the key
$node->safe_psql('postgres', "SELECT claude_complete('first', max_tokens => 5)");
$node->safe_psql('postgres', "SELECT claude_complete('first', temperature => 0.5)");
$node->safe_psql('postgres', "SELECT claude_complete('first', model => 'claude-haiku-4-5')");
$node->safe_psql('postgres', "SELECT claude_complete('first', system => 'sys')");
is(requests(), 5, 'max_tokens, temperature, model and system each make a new key');
$node->safe_psql('postgres', "SET claude.anthropic_version = '2023-01-01'; SELECT claude_complete('first')");
is(requests(), 6, 'so does anthropic-version');

# a hit survives the rollback of the transaction that paid for it
$mock->reset;
$node->safe_psql('postgres', "BEGIN; SELECT claude_complete('rolled back'); ROLLBACK;");
my ($rc, $out, $err) = $node->psql('postgres',
	"BEGIN; SELECT claude_complete('errored'); SELECT 1/0; COMMIT;");
like($err, qr/division by zero/, 'a transaction that fails after paying');
ok(wait_cached('rolled back') && wait_cached('errored'), 'both replies are in the cache');
$node->safe_psql('postgres', "SELECT claude_complete('rolled back'), claude_complete('errored')");
is(requests(), 2, 'and are served from it');

# a reply the caller never read because it was cancelled is kept too
$mock->reset;
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = 200; SELECT claude_complete('[[mock:delay=600]] cancelled')");
like($err, qr/statement timeout/, 'the caller gave up');
ok(wait_until(sub { $mock->stats->{requests} == 1 }), 'the request reached the API');
# the worker aborted the transfer: nothing was paid, nothing stored
is(cached('[[mock:delay=600]] cancelled'), '0', 'an aborted transfer stores nothing');

# read-only transactions hit
is($node->safe_psql('postgres',
	"BEGIN TRANSACTION READ ONLY; SELECT claude_complete('first'); COMMIT;"), 'first',
	'a hit in a read-only transaction');

# ten sessions asking the same new prompt at once: one API request
$mock->reset;
my @bg = map { start_bg($node, "SELECT claude_complete('[[mock:delay=500]] stampede')") } 1 .. 10;
my $ok = 0;
for (@bg) { my ($r, $o) = finish_bg($_); $ok++ if $o eq '[[mock:delay=500]] stampede'; }
is($ok, 10, 'ten concurrent identical calls all get the answer');
is(requests(), 1, 'from exactly one API request');

# a failed leader does not hold back the others
$mock->reset;
$mock->fault({ status => 400, delay_ms => 300 });
@bg = map { start_bg($node, "SET claude.max_retries = 0; SELECT claude_complete('[[mock:delay=100]] leader fails')") } 1 .. 3;
$ok = 0;
for (@bg) { my ($r, $o) = finish_bg($_); $ok++ if $o eq '[[mock:delay=100]] leader fails'; }
is($ok, 2, 'when the leader fails, a waiting session sends its own request and the third hits the cache');
is(requests(), 2, 'two API requests in all');

# hits are counted, lazily
ok(wait_until(sub {
	$node->safe_psql('postgres',
		"SELECT max(hits) >= 3 AND bool_or(last_hit_at IS NOT NULL) FROM claude_cache WHERE request = '{\"model\": \"claude-sonnet-4-6\", \"messages\": [{\"role\": \"user\", \"content\": \"first\"}], \"max_tokens\": 1024}'") eq 't' }),
	'hits and last_hit_at are counted');

# cache => false and claude.cache = off bypass reads and writes
$mock->reset;
$node->safe_psql('postgres', "SELECT claude_complete('first', cache => false)");
$node->safe_psql('postgres', "SET claude.cache = off; SELECT claude_complete('first')");
$node->safe_psql('postgres', "SELECT claude_complete('not stored', cache => false)");
$node->safe_psql('postgres', q{SELECT claude_messages('{"messages": [{"role": "user", "content": "not stored either"}]}', cache => false)});
is(requests(), 4, 'bypassing the cache sends every request');
$node->safe_psql('postgres', "SET claude.cache = off; SELECT claude_complete('cached anyway', cache => true)");
ok(wait_cached('cached anyway'), 'cache => true overrides claude.cache = off');
sleep(1);
is(cached('not stored') + cached('not stored either'), 0, 'bypassed replies are not stored');

# expiry: claude.cache_ttl sets expires_at; expired entries are not served
$mock->reset;
$node->safe_psql('postgres', "SET claude.cache_ttl = 1; SELECT claude_complete('short lived')");
ok(wait_cached('short lived'), 'stored with a TTL');
is($node->safe_psql('postgres',
	"SELECT expires_at - created_at = interval '1 second' FROM claude_cache WHERE request->'messages'->0->>'content' = 'short lived'"),
	't', 'expires_at is created_at + claude.cache_ttl');
sleep(2);
$node->safe_psql('postgres', "SELECT claude_complete('short lived')");
is(requests(), 2, 'an expired entry is not served');
is($node->safe_psql('postgres', "SELECT claude_cache_purge()"), '0', 'purge: the renewed entry has not expired');

# purge
my $n = $node->safe_psql('postgres', "SELECT count(*) FROM claude_cache");
is($node->safe_psql('postgres', "SELECT claude_cache_purge('0 seconds')"), $n, 'purge(0) deletes every entry and counts them');
is($node->safe_psql('postgres', "SELECT count(*) FROM claude_cache"), '0', 'the cache is empty');

# privileges: PUBLIC cannot read it, a granted role uses it all the same
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO app;});
($rc, $out, $err) = $node->psql('postgres', "SET ROLE app; SELECT count(*) FROM claude_cache");
like($err, qr/permission denied for table claude_cache/, 'PUBLIC cannot read the cache');
($rc, $out, $err) = $node->psql('postgres', "SET ROLE app; SELECT claude_cache_purge()");
like($err, qr/permission denied for function claude_cache_purge/, 'nor purge it');
$mock->reset;
$node->safe_psql('postgres', "SET ROLE app; SELECT claude_complete('for app')");
ok(wait_cached('for app'), 'a granted role\'s reply is stored');
is($node->safe_psql('postgres', "SET ROLE app; SELECT claude_complete('for app')"), 'for app', 'and served to it');
is(requests(), 1, 'from the cache');

# a hot standby serves hits (and stores nothing)
$node->safe_psql('postgres', "SELECT claude_complete('replicated')");
ok(wait_cached('replicated'), 'an entry to replicate');
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
$mock->reset;
is($standby->safe_psql('postgres', "SELECT claude_complete('replicated')"), 'replicated', 'a hit on the standby');
is($standby->safe_psql('postgres', "SELECT claude_complete('standby miss')"), 'standby miss', 'a miss on the standby is answered');
is(requests(), 1, 'only the miss went to the API');
$standby->stop;

$node->stop;
done_testing();
