# Settings that decide who learns the key and where requests go.  A key
# set per database, role or function would be readable by every role in
# pg_db_role_setting or pg_proc: it is refused, an entry made earlier is
# warned about at connection (never printed), and RESET still removes it.
# claude.base_url takes plain http:// only when its host is a loopback
# address (parsed by libcurl, as the request will be), never with a user
# name or password; claude.proxy is checked the same way.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA qw(sha256_hex);
use ClaudeMock;
use ClaudeTest;

my ($kfile, $kdb, $krole, $knew) = (
	'sk-ant-authority-file-0123456789', 'sk-ant-authority-db-0123456789',
	'sk-ant-authority-role-0123456789', 'sk-ant-authority-new-0123456789');
# a password in postgresql.conf must stay out of the log; one typed in SQL
# (statement logging records that) must not come back in the error
my ($conf_pw, $sql_pw) = ('conf-s3cret-pw-0123456789', 'sql-s3cret-pw-0123456789');
my @secrets = ($kfile, $kdb, $krole, $knew, $conf_pw, $sql_pw);
sub h { substr(sha256_hex($_[0]), 0, 16) }

# true when $text holds none of the secrets; prints none of them either way
sub no_secret
{
	my ($text) = @_;
	return !grep { index($text, $_) >= 0 } @secrets;
}

my $mock = ClaudeMock->start(keys => [ $kfile, $kdb, $krole ]);
my $node = new_node('authority', $mock, key => $kfile, preload => 0);
# a URL as a test name: no password in the test output
sub shown { $_[0] =~ s/\Q$sql_pw\E/PASSWORD/r }
sub sql { $node->safe_psql('postgres', $_[0]) }
sub try_sql
{
	my ($q, @as) = @_;
	return $node->psql('postgres', $q,
		extra_params => [ '-v', 'VERBOSITY=verbose', @as ]);
}

# ---- entries made while the library was not loaded (an older version)
sql(qq{
	SET log_statement = 'none';
	CREATE ROLE plain LOGIN;
	ALTER DATABASE postgres SET claude.api_key = '$kdb';
	ALTER ROLE plain SET claude.api_key = '$krole';
	CREATE FUNCTION public.innocent() RETURNS int LANGUAGE sql AS 'SELECT 1';
});
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'claude'\n");
$node->restart;
# (wait_for_worker would take the connection warning for a failure)
ok(wait_until(sub { (try_sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude http worker'"))[1] eq '1' }),
	'the HTTP worker runs');

my ($rc, $out, $err) = try_sql('SELECT 1');
is($rc, 0, 'a superuser still connects to a database with a key entry');
like($err, qr/WARNING:  a database or role setting holds "claude.api_key"/,
	'and is warned about the entry');
like($err, qr/HINT:  .*claude.api_key_file.*ALTER DATABASE \.\.\. RESET claude.api_key/s,
	'with a hint to move the key to a file and RESET the entry');
ok(no_secret($err), 'the warning holds no key');

($rc, $out, $err) = try_sql('SELECT 1', '-U', 'plain');
is($rc, 0, 'a plain role connects too');
like($err, qr/ALTER ROLE \.\.\. RESET claude.api_key/, 'and is told of the role entry');
like($err, qr/ALTER DATABASE \.\.\. RESET claude.api_key/, 'and of the database entry');
ok(no_secret($err), 'its warnings hold no key');

# what a plain role reads of the old entries: PostgreSQL shows it the value
($rc, $out, $err) = try_sql('SELECT setconfig FROM pg_db_role_setting', '-U', 'plain');
ok(index($out, $kdb) >= 0 && index($out, $krole) >= 0,
	'a plain role reads old entries in pg_db_role_setting (why they are warned about)');
($rc, $out, $err) = try_sql('SHOW claude.api_key', '-U', 'plain');
# (16 reworded the refusal)
like($err, qr/must be superuser or have privileges of pg_read_all_settings|permission denied to examine "claude\.api_key"/,
	'although SHOW is refused');

# an old entry is still used: it outranks the key file, as before
is(sql("SELECT claude_complete('old entry')"), 'old entry', 'a call with the database entry in force');
is($mock->stats->{keys}{ h($kdb) }, 1, 'the mock saw the database entry\'s key');

# ---- new entries are refused at every level, also when nested
my @refused = (
	"ALTER DATABASE postgres SET claude.api_key = '$knew'",
	"ALTER DATABASE postgres SET \"Claude.API_Key\" = '$knew'",
	"ALTER ROLE plain SET claude.api_key = '$knew'",
	"ALTER USER plain SET claude.api_key TO '$knew'",
	"ALTER ROLE plain IN DATABASE postgres SET claude.api_key = '$knew'",
	"ALTER ROLE ALL SET claude.api_key = '$knew'",
	"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SET claude.api_key = '$knew' AS 'SELECT 1'",
	"CREATE PROCEDURE public.p() LANGUAGE sql SET claude.api_key = '$knew' AS 'SELECT 1'",
	"ALTER FUNCTION public.innocent() SET claude.api_key = '$knew'",
	"ALTER ROUTINE public.innocent() SET claude.api_key = '$knew'",
	"SET claude.api_key = '$knew'; ALTER FUNCTION public.innocent() SET claude.api_key FROM CURRENT",
	"SET claude.api_key = '$knew'; ALTER DATABASE postgres SET claude.api_key FROM CURRENT",
	"DO \$\$BEGIN EXECUTE 'ALTER DATABASE postgres SET claude.api_key = ''$knew'''; END\$\$");
for my $i (0 .. $#refused)
{
	($rc, $out, $err) = try_sql($refused[$i]);
	ok($rc != 0 && $err =~ /ERROR:  55P02: database, role and function settings cannot hold "claude.api_key"/,
		"refused: statement $i") or diag(no_secret($err) ? $err : 'the error holds a key');
	like($err, qr/HINT:  .*claude.api_key_file/, "statement $i: the hint names claude.api_key_file");
	ok(no_secret($err), "statement $i: the error holds no key");
}
is(sql("SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ' ') ILIKE '%api_key%'"),
	'2', 'pg_db_role_setting holds the two old entries only');
is(sql("SELECT count(*) FROM pg_proc WHERE array_to_string(proconfig, ' ') ILIKE '%api_key%'"),
	'0', 'no function holds one');

# ---- RESET removes the old entries, and then nothing is warned
for my $q ("ALTER DATABASE postgres RESET claude.api_key",
	"ALTER ROLE plain SET claude.api_key TO DEFAULT",
	"ALTER ROLE plain IN DATABASE postgres RESET claude.api_key",
	"ALTER FUNCTION public.innocent() RESET claude.api_key",
	"ALTER ROLE ALL RESET ALL")
{
	($rc, $out, $err) = try_sql($q);
	is($rc, 0, "allowed: $q") or diag($err);
}
($rc, $out, $err) = try_sql('SELECT setconfig FROM pg_db_role_setting', '-U', 'plain');
ok(no_secret($out), 'a plain role reads no key any more');
unlike($err, qr/claude.api_key/, 'and is warned of nothing');
($rc, $out, $err) = try_sql('SELECT 1');
unlike($err, qr/WARNING/, 'nor is a superuser');

# ---- claude.base_url: plain http only to a loopback host, no user info
my $good_url = $mock->base_url;
my @bad_urls = (
	'http://127.0.0.1@192.0.2.2:18715', 'http://127.0.0.1:18715@192.0.2.2',
	'http://127.example.com', 'http://localhost.example.com', 'http://127.0.0.1.example.com',
	'http://128.0.0.1', 'http://0.0.0.0', 'http://[::2]', 'http://[::ffff:192.0.2.2]',
	'http://user@127.0.0.1', "https://user:$sql_pw\@api.example.com",
	'http://127.0.0.1/#@192.0.2.2', 'https://api.example.com/?x=1',
	'ftp://127.0.0.1', 'file:///tmp/x', '127.0.0.1:18715', 'http://', '');
for my $url (@bad_urls)
{
	($rc, $out, $err) = try_sql("SET claude.base_url = '$url'");
	ok($rc != 0 && $err =~ /ERROR:  22023: .*claude.base_url/, "base_url '" . shown($url) . "' is refused")
	  or diag(no_secret($err) ? $err : 'the error holds a secret');
	ok(no_secret($err), "refusing '" . shown($url) . "' prints no password");
}
for my $url ('https://api.anthropic.com', 'https://gateway.example.com/anthropic/',
	'http://127.0.0.1:18715', 'http://127.1.2.3', 'HTTP://LocalHost:8080', 'http://[::1]:18715', $good_url)
{
	($rc, $out, $err) = try_sql("SET claude.base_url = '$url'; SHOW claude.base_url");
	is($out, $url, "base_url '$url' is accepted") or diag($err);
}

# in postgresql.conf: a reload keeps the old value
for my $url ('http://127.0.0.1@192.0.2.2:18715', 'http://127.example.com', 'http://localhost.example.com')
{
	my $offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', "claude.base_url = '$url'\n");
	$node->reload;
	ok(wait_until(sub { slurp_file($node->logfile, $offset) =~
		  /invalid value for parameter "claude.base_url"|claude.base_url must not hold a user name/ }),
		"the reload refuses '$url' in postgresql.conf");
	is(sql('SHOW claude.base_url'), $good_url, "and keeps the old value");
}
$node->append_conf('postgresql.conf', "claude.base_url = '$good_url'\n");
$node->reload;

# ---- claude.proxy: a URL with a proxy scheme, no user info
for my $proxy ("http://user:$sql_pw\@proxy.example.com:3128", 'http://user@proxy.example.com:3128',
	'ftp://proxy.example.com', 'proxy.example.com:3128')
{
	($rc, $out, $err) = try_sql("SET claude.proxy = '$proxy'");
	ok($rc != 0 && $err =~ /ERROR:  22023: .*claude.proxy/, "proxy '" . shown($proxy) . "' is refused")
	  or diag(no_secret($err) ? $err : 'the error holds a secret');
	ok(no_secret($err), "refusing '" . shown($proxy) . "' prints no password");
}
for my $proxy ('', 'http://proxy.example.com:3128', 'https://proxy.example.com', 'socks5h://127.0.0.1:1080')
{
	($rc, $out, $err) = try_sql("SET claude.proxy = '$proxy'; SHOW claude.proxy");
	is($out, $proxy, "proxy '$proxy' is accepted") or diag($err);
}
my $offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "claude.proxy = 'http://user:$conf_pw\@proxy.example.com:3128'\n");
$node->reload;
ok(wait_until(sub { slurp_file($node->logfile, $offset) =~ /claude.proxy must not hold a user name or password/ }),
	'a reload refuses a proxy with a password in postgresql.conf');
is(sql('SHOW claude.proxy'), '', 'and keeps the old value');
$node->append_conf('postgresql.conf', "claude.proxy = ''\n");
$node->reload;

# a plain http endpoint (loopback) never goes through a proxy: the key would
# cross the network in clear.  The proxy is down; the endpoint answers 404.
($rc, $out, $err) = try_sql("SET claude.base_url = 'http://127.0.0.1:" . $mock->control_port . "'; "
	  . "SET claude.proxy = 'http://127.0.0.1:1'; SELECT claude_complete('plain http')");
like($err, qr/ERROR:  ZC404/, 'a plain http endpoint is reached directly, not through claude.proxy')
  or diag($err);

# ---- an innocent call still works
is(sql("SELECT claude_complete('innocent')"), 'innocent', 'an innocent call works');
is($mock->stats->{keys}{ h($kfile) }, 1, 'with the key from the file');

my $log = slurp_file($node->logfile);
ok(!grep({ index($log, $_) >= 0 } $kfile, $kdb, $krole, $knew, $conf_pw), 'the server log holds no key and no proxy password');
ok($log =~ /WARNING:  a database or role setting holds "claude.api_key"/, 'but the warnings are there');

$node->stop;
done_testing();
