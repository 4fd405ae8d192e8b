# Helpers shared by the TAP tests: a cluster wired to a mock API, and
# psql sessions that run in the background.
package ClaudeTest;

use strict;
use warnings;
use Exporter 'import';
use File::Basename ();
use IPC::Run;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(new_node write_key_file worker_pid wait_for_worker
  start_bg finish_bg cancel_bg wait_until);

# Write a key file only the cluster's owner can read; returns its path.
# Named after the test file too: test files running at once (prove -j)
# share tmp_check, and two of them may name a node alike.
sub write_key_file
{
	my ($name, $key) = @_;
	my $test = File::Basename::basename($0, '.pl');
	my $path = "$PostgreSQL::Test::Utils::tmp_check/${test}_$name.key";
	open my $fh, '>', $path or die "cannot write $path: $!";
	print $fh "$key\n";
	close $fh;
	chmod 0600, $path;
	return $path;
}

# A started cluster with claude preloaded and pointed at $mock.
#   key => API key for the key file (default 'test-key')
#   conf => extra postgresql.conf lines
#   preload => 0 to leave shared_preload_libraries alone
#   init => { ... } options for PostgreSQL::Test::Cluster::init
#   cache => 1 to keep the response cache on (most tests count requests)
sub new_node
{
	my ($name, $mock, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });
	my $conf = '';
	$conf .= "shared_preload_libraries = 'claude'\n" if $opts{preload} // 1;
	$conf .= "claude.cache = off\n" unless $opts{cache};
	if ($mock)
	{
		my $keyfile = write_key_file($name, $opts{key} // 'test-key');
		$conf .= "claude.base_url = '" . $mock->base_url . "'\n";
		$conf .= "claude.ca_file = '" . $mock->ca_file . "'\n";
		$conf .= "claude.api_key_file = '$keyfile'\n";
	}
	$conf .= $opts{conf} // '';
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION claude');
	wait_for_worker($node) if $opts{preload} // 1;
	return $node;
}

sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'claude http worker'");
}

# Wait until a worker other than $old_pid runs; returns its pid.
sub wait_for_worker
{
	my ($node, $old_pid) = @_;
	$old_pid //= 0;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'claude http worker' AND pid <> $old_pid")
	  or die "the claude http worker did not start";
	return worker_pid($node);
}

# Run psql with $sql in the background; returns a handle for finish_bg.
sub start_bg
{
	my ($node, $sql, $db) = @_;
	my %h = (stdout => '', stderr => '');
	$h{run} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db // 'postgres'), '-c', $sql ],
		'<', \undef, '>', \$h{stdout}, '2>', \$h{stderr});
	return \%h;
}

# Wait for a background psql to end; returns (exit code, stdout, stderr).
sub finish_bg
{
	my ($h) = @_;
	$h->{run}->finish;
	chomp $h->{stdout};
	return ($h->{run}->result(0), $h->{stdout}, $h->{stderr});
}

# Cancel the background call whose query contains $marker; returns
# (exit code, stdout, stderr, ms from sending the cancel to the call's end).
sub cancel_bg
{
	my ($node, $h, $marker) = @_;
	my $t0 = time();
	$node->safe_psql('postgres',
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%$marker%' AND pid <> pg_backend_pid()");
	my @r = finish_bg($h);
	return (@r, (time() - $t0) * 1000);
}

# Poll $cond (a sub) every 10 ms until true or $timeout seconds pass.
sub wait_until
{
	my ($cond, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		return 1 if $cond->();
		usleep(10_000);
	}
	return 0;
}

1;
