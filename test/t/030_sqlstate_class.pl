# Every SQLSTATE of the extension's own is in one implementation-defined
# class, ZC (SPEC: first character 5-9 or I-Z): the codes errors.h defines,
# no code made anywhere else, README's Errors table the same list, and what
# calls raise when the server fails them.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my @ours = qw(ZC000 ZC001 ZC002 ZC003 ZC400 ZC401 ZC402 ZC404 ZC408 ZC422 ZC429 ZC4B2 ZC500);

sub slurp { local (@ARGV, $/) = @_; return <> }

# the codes defined, each in class ZC, and only in errors.h
my $h = slurp('src/common/errors.h');
my @defined = sort map { join '', split /','/ } ($h =~ /MAKE_SQLSTATE\('([^)]*)'\)/g);
is_deeply(\@defined, \@ours, 'errors.h defines these codes');
like($_, qr/^[5-9I-Z][0-9A-Z]{4}$/, "$_ is in an implementation-defined class") for @defined;
my @elsewhere = grep { $_ ne 'src/common/errors.h' && slurp($_) =~ /MAKE_SQLSTATE/ }
  glob('src/*.c src/*/*.c src/*/*.h');
is_deeply(\@elsewhere, [], 'no other source file makes a SQLSTATE of its own');
# the SQL script raises only standard conditions by name, or ours
my $sql = join '', map { slurp($_) } glob('sql/claude--*.sql');
for my $code ($sql =~ /ERRCODE\s*=\s*'([^']*)'/g)
{
	ok($code =~ /^[a-z_]+$/ || grep({ $_ eq $code } @ours), "the script raises $code: a named condition or ours");
}
# nothing names a code of the old class
my @old = grep { slurp($_) =~ /\bCL[0-9]{3}\b/ }
  glob('README.md src/*/*.[ch] sql/*.sql expected/*.out test/t/*.pl');
is_deeply(\@old, [], 'no file names a code of the old class CL');
# README's Errors table lists the same codes
my $readme = slurp('README.md');
my @documented = sort ($readme =~ /^\| (ZC[0-9A-Z]{3}) \|/mg);
is_deeply(\@documented, \@ours, "README's Errors table lists every code");

# what the server's failures raise
my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('sqlstate_class', $mock, conf => "claude.max_retries = 0\n");
sub sqlstate
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "none: $err";
}
for my $c ([400, 'ZC400'], [401, 'ZC401'], [403, 'ZC401'], [404, 'ZC404'], [408, 'ZC408'],
	[413, 'ZC400'], [422, 'ZC400'], [429, 'ZC429'], [500, 'ZC500'], [529, 'ZC500'])
{
	my ($status, $want) = @$c;
	$mock->reset;
	$mock->fault({ status => $status });
	is(sqlstate("SELECT claude_complete('x')"), $want, "a $status raises $want");
}
$mock->clear_faults;
is(sqlstate("SELECT claude_complete('[[mock:reset]] x')"), 'ZC001', 'a reset connection raises ZC001');
is(sqlstate("SELECT claude_complete('[[mock:malformed]] x')"), 'ZC002', 'a malformed reply raises ZC002');
is(sqlstate("SET claude.request_timeout = 300; SELECT claude_complete('[[mock:hang]] x')"), 'ZC408',
	'claude.request_timeout raises ZC408');
$node->safe_psql('postgres', "INSERT INTO claude_budgets (role, requests_per_day) VALUES (current_user::regrole, 0)");
is(sqlstate("SELECT claude_complete('over budget')"), 'ZC402', 'a spent budget raises ZC402');

$mock->stop;
done_testing();
