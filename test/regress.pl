# Run the pg_regress suite against a temporary instance that talks to a
# fresh mock API.  Called by run-suite.sh with PG_REGRESS and PATH set.
use strict;
use warnings;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use ClaudeMock;

my $root = abs_path(dirname(__FILE__) . '/..');
chdir $root or die;
my @tests = split ' ', `make -s -C $root print-regress 2>/dev/null` ||
  die "cannot read the REGRESS list";

mkdir "$root/tmp_check";
my $mock = ClaudeMock->start(keys => ['regress-key'], certdir => "$root/tmp_check/certs");
my $keyfile = "$root/tmp_check/api_key";
open my $k, '>', $keyfile or die;
print $k "regress-key\n";
close $k;
chmod 0600, $keyfile;

my $conf = "$root/tmp_check/regress.conf";
open my $c, '>', $conf or die;
print $c "shared_preload_libraries = 'claude'\n";
print $c "claude.base_url = '" . $mock->base_url . "'\n";
print $c "claude.ca_file = '" . $mock->ca_file . "'\n";
print $c "claude.api_key_file = '$keyfile'\n";
print $c "claude.batch_poll_interval = 1\n";
close $c;

my $rc = system($ENV{PG_REGRESS},
	"--temp-instance=$root/tmp_check/regress_instance",
	"--temp-config=$conf",
	"--bindir=" . `pg_config --bindir` =~ s/\s+$//r,
	"--inputdir=$root", "--outputdir=$root",
	'--dbname=contrib_regression', '--load-extension=claude',
	@tests);
$mock->stop;
exit($rc == 0 ? 0 : 1);
