# The key: rotation on reload without failing calls in flight, the
# fallbacks, and never a trace of it in logs, errors or pg_stat_activity.
# Settings travel with each request, so a superuser's SET of the endpoint
# affects that session alone.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA qw(sha256_hex);
use ClaudeMock;
use ClaudeTest;

my ($k1, $k2, $kenv, $ksys) =
  ('sk-test-key-one-1111', 'sk-test-key-two-2222', 'sk-test-key-env-3333', 'sk-test-key-sys-4444');
sub h { substr(sha256_hex($_[0]), 0, 16) }

my $mock = ClaudeMock->start(keys => [ $k1, $k2, $kenv, $ksys ]);
local $ENV{ANTHROPIC_API_KEY} = $kenv;
my $node = new_node('secrets', $mock, key => $k1,
	conf => "log_statement = 'all'\nlog_min_messages = debug1\n");
my $keyfile = "$PostgreSQL::Test::Utils::tmp_check/005_secrets_secrets.key";    # written by new_node

is($node->safe_psql('postgres', "SELECT claude_complete('one')"), 'one', 'a call with the key file');
is($mock->stats->{keys}{ h($k1) }, 1, 'the mock saw the key from the file');

# rotate while a call is in flight: it finishes, new calls use the new key
my $bg = start_bg($node, "SELECT claude_complete('[[mock:delay=1500]] in flight')");
ok(wait_until(sub { $mock->stats->{concurrency} == 1 }), 'a call is in flight');
write_key_file('secrets', $k2);
$node->reload;
$mock->config({ keys => [ $k2, $kenv, $ksys ] });    # the old key is revoked
is($node->safe_psql('postgres', "SELECT claude_complete('two')"), 'two', 'a new call uses the rotated key');
my ($rc, $out) = finish_bg($bg);
is($out, '[[mock:delay=1500]] in flight', 'the call in flight during the rotation succeeded');
is($mock->stats->{keys}{ h($k2) }, 1, 'the mock saw the new key');

# without claude.api_key_file the postmaster's ANTHROPIC_API_KEY is used
$node->safe_psql('postgres', "ALTER SYSTEM SET claude.api_key_file = ''");
$node->reload;
is($node->safe_psql('postgres', "SELECT claude_complete('env')"), 'env', 'a call with ANTHROPIC_API_KEY');
is($mock->stats->{keys}{ h($kenv) }, 1, 'the mock saw the key from the environment');

# claude.api_key set with ALTER SYSTEM: works, and stays out of the log
# although log_statement = all and the reload logs changed parameters
$node->safe_psql('postgres', "ALTER SYSTEM SET claude.api_key = '$ksys'");
$node->reload;
is($node->safe_psql('postgres', "SELECT claude_complete('sys')"), 'sys', 'a call with claude.api_key');
is($mock->stats->{keys}{ h($ksys) }, 1, 'the mock saw claude.api_key');

# an error whose text carries the key (a misbehaving proxy) is redacted
$mock->fault({ status => 401, error_type => 'authentication_error',
	message => "key $ksys is not valid" });
my ($r, $o, $err) = $node->psql('postgres', "SELECT claude_complete('echo key')");
like($err, qr/key \*\*\*\*\*\*\*\* is not valid/, 'an error that quoted the key is redacted');
unlike($err, qr/\Q$ksys\E/, 'the client never sees the key');

# nothing in pg_stat_activity while a call runs
$bg = start_bg($node, "SELECT claude_complete('[[mock:delay=500]] activity')");
ok(wait_until(sub { $mock->stats->{concurrency} == 1 }), 'a call is in flight');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%sk-test-key%' AND pid <> pg_backend_pid()"),
	'0', 'pg_stat_activity shows no key');
finish_bg($bg);

$node->safe_psql('postgres', "ALTER SYSTEM RESET claude.api_key");
$node->reload;
my $log = slurp_file($node->logfile);
for my $k ($k1, $k2, $kenv, $ksys)
{
	unlike($log, qr/\Q$k\E/, "the server log never shows key $k");
}
like($log, qr/parameter "claude.api_key" \[value redacted\]|claude.api_key \[value redacted\]/,
	'the redacted mentions are in the log');

# a superuser's SET of the endpoint applies to that session only
my $other = ClaudeMock->start(keys => [$k2]);
write_key_file('secrets', $k2);
$node->safe_psql('postgres', "ALTER SYSTEM SET claude.api_key_file = '$keyfile'");
$node->reload;
$mock->reset;
my $session = "SET claude.base_url = '" . $other->base_url . "'; SET claude.ca_file = '" .
  $other->ca_file . "'; SELECT claude_complete('[[mock:delay=300]] to other')";
$bg = start_bg($node, $session);
is($node->safe_psql('postgres', "SELECT claude_complete('[[mock:delay=300]] to main')"),
	'[[mock:delay=300]] to main', 'a concurrent session keeps the configured endpoint');
($rc, $out) = finish_bg($bg);
is($out, '[[mock:delay=300]] to other', 'the session with SET reached its own endpoint');
is($other->stats->{requests}, 1, 'the other endpoint got exactly that request');
is($mock->stats->{requests}, 1, 'the configured endpoint got only the other session\'s request');

# TLS is always verified: another CA, or the system CAs, reject the mock
for my $ca ($other->ca_file, '')
{
	($rc, $out, $err) = $node->psql('postgres',
		"SET claude.ca_file = '$ca'; SELECT claude_complete('unverified')",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ZC001: could not reach the Claude API: .*(SSL certificate|certificate verify)/i,
		"a server the CA bundle '$ca' does not vouch for is refused");
}

# claude.proxy: requests tunnel through it (the mock's control port is a
# CONNECT proxy); a proxy that is down is a connection failure
$other->reset;
my $proxy = 'http://127.0.0.1:' . $other->control_port;
my $via = "SET claude.base_url = '" . $other->base_url . "'; SET claude.ca_file = '" .
  $other->ca_file . "'; SET claude.proxy = '$proxy'; SELECT claude_complete('via proxy')";
is($node->safe_psql('postgres', $via), 'via proxy', 'a call through claude.proxy');
is($other->stats->{proxy_tunnels}, 1, 'the proxy carried it');
($rc, $out, $err) = $node->psql('postgres',
	"SET claude.proxy = 'http://127.0.0.1:1'; SELECT claude_complete('no proxy there')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ZC001: could not reach the Claude API/, 'a proxy that is down gives ZC001');

$node->stop;
done_testing();
