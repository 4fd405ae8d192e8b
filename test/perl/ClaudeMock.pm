=pod

=head1 NAME

ClaudeMock - start and control the TLS mock Anthropic API server in TAP tests

=head1 SYNOPSIS

  use ClaudeMock;

  my $m = ClaudeMock->start(http2 => 0, keys => ['sk-test'], latency_ms => 0);
  my $url = $m->base_url;          # https://127.0.0.1:PORT
  my $ca  = $m->ca_file;           # CA certificate to trust
  $m->fault({status => 529, count => 2});
  $m->config({rpm => 600});
  my $stats = $m->stats;           # hashref
  my $reqs  = $m->requests(0);     # arrayref of request records
  $m->reset;
  $m->stop;                        # also done by DESTROY / END

=head1 DESCRIPTION

Uses only core Perl modules.  The server (C<../mock/mock-api.js>, relative to
this file) and its certificate script (C<../mock/make-certs.sh>) are run with
C<node> (C<$ENV{NODE}>, C<node> in C<PATH>, or C</usr/bin/node>) and
C<openssl>.  The server's stderr goes to C<log_file> (in the certificate
directory).  The server is started with C<--exit-on-stdin-eof>, so it goes
away with the test process even if that is killed.

=cut

package ClaudeMock;

use strict;
use warnings;

use Carp;
use Cwd ();
use File::Basename ();
use File::Path ();
use File::Spec;
use File::Temp ();
use HTTP::Tiny;
use IO::Handle;
use IO::Select;
use IPC::Open3 ();
use JSON::PP;
use POSIX ();
use Scalar::Util ();
use Symbol ();
use Time::HiRes ();

our $VERSION = '1.00';

my $MOCK_DIR = Cwd::abs_path(
	File::Spec->catdir(
		File::Basename::dirname(File::Spec->rel2abs(__FILE__)),
		File::Spec->updir, 'mock'));

my %live;    # "pid" => weak ref to object, for END

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub _find_node
{
	return $ENV{NODE} if $ENV{NODE} && -x $ENV{NODE};
	for my $d (File::Spec->path)
	{
		my $p = File::Spec->catfile($d, 'node');
		return $p if -f $p && -x $p;
	}
	return '/usr/bin/node' if -x '/usr/bin/node';
	croak "ClaudeMock: cannot find node (set \$ENV{NODE})";
}

sub _slurp
{
	my ($file) = @_;
	open(my $fh, '<', $file) or return '';
	local $/;
	my $s = <$fh>;
	close $fh;
	return defined $s ? $s : '';
}

=pod

=head1 METHODS

=over

=item ClaudeMock->start(%opts)

Options: C<http2 =E<gt> 1>, C<plain =E<gt> 1> (plain HTTP/1.1, no TLS: C<base_url>
is then C<http://...>), C<keys =E<gt> [...]>, C<latency_ms =E<gt> N>,
C<certdir =E<gt> DIR> (default: a new temporary directory under
C<$ENV{TESTDATADIR}> or the system temp dir), C<max_lifetime_s =E<gt> S>
(default 3600), C<timeout =E<gt> S> (seconds to wait for the server to come up,
default 60).

=cut

sub start
{
	my ($class, %opts) = @_;

	my $node = _find_node();
	my $script = File::Spec->catfile($MOCK_DIR, 'mock-api.js');
	my $certs = File::Spec->catfile($MOCK_DIR, 'make-certs.sh');
	croak "ClaudeMock: $script not found" unless -f $script;
	croak "ClaudeMock: $certs not found" unless -f $certs;

	my $dir = $opts{certdir};
	if (!defined $dir)
	{
		my $base =
		  ($ENV{TESTDATADIR} && -d $ENV{TESTDATADIR})
		  ? $ENV{TESTDATADIR}
		  : File::Spec->tmpdir;
		$dir = File::Temp::tempdir('claude_mock_XXXXXX', DIR => $base, CLEANUP => 1);
	}
	$dir = File::Spec->rel2abs($dir);
	File::Path::make_path($dir) unless -d $dir;
	croak "ClaudeMock: cannot create $dir" unless -d $dir;
	chmod 0755, $dir;

	my $out = '';
	{
		my $pid = open(my $fh, '-|');
		croak "ClaudeMock: fork failed: $!" unless defined $pid;
		if (!$pid)
		{
			exec('bash', '-c', 'exec bash "$0" "$1" 2>&1', $certs, $dir)
			  or POSIX::_exit(127);
		}
		local $/;
		$out = <$fh> // '';
		close $fh;
		croak "ClaudeMock: make-certs.sh failed ($?): $out" if $? != 0;
	}
	chmod 0644, "$dir/ca.pem", "$dir/server.pem";

	my $log = File::Spec->catfile($dir, "mock-api.$$." . int(rand(1e9)) . '.log');
	open(my $logfh, '>', $log) or croak "ClaudeMock: cannot open $log: $!";

	my @cmd = (
		$node, $script,
		'--cert' => "$dir/server.pem",
		'--key' => "$dir/server.key",
		'--host' => '127.0.0.1',
		'--port' => ($opts{port} // 0),
		'--control-port' => ($opts{control_port} // 0),
		'--max-lifetime-s' => ($opts{max_lifetime_s} // 3600),
		'--exit-on-stdin-eof');
	push @cmd, '--http2' if $opts{http2};
	push @cmd, '--plain' if $opts{plain};
	push @cmd, '--keys' => join(',', @{ $opts{keys} })
	  if $opts{keys} && @{ $opts{keys} };
	push @cmd, '--latency-ms' => $opts{latency_ms} if $opts{latency_ms};

	my ($in, $rd) = (Symbol::gensym, Symbol::gensym);
	my $pid = IPC::Open3::open3($in, $rd, '>&' . fileno($logfh), @cmd);
	close $logfh;
	$in->autoflush(1);

	# read the ready line
	my $buf = '';
	my $sel = IO::Select->new($rd);
	my $deadline = Time::HiRes::time() + ($opts{timeout} // 60);
	while ($buf !~ /\n/)
	{
		my $left = $deadline - Time::HiRes::time();
		last if $left <= 0;
		next unless $sel->can_read($left < 0.5 ? $left : 0.5);
		my $n = sysread($rd, $buf, 4096, length $buf);
		last if !defined $n || $n == 0;
	}
	my ($line) = $buf =~ /^([^\n]*)\n/;
	my $ready = eval { $line && $JSON->decode($line) };
	if (!$ready || !$ready->{port} || !$ready->{control_port})
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
		croak "ClaudeMock: mock server did not start (got '"
		  . ($line // $buf) . "'):\n" . _slurp($log);
	}

	my $self = bless {
		pid => $pid,
		owner => $$,
		stdin => $in,
		stdout => $rd,
		port => $ready->{port},
		control_port => $ready->{control_port},
		certdir => $dir,
		ca_file => "$dir/ca.pem",
		log_file => $log,
		http2 => $opts{http2} ? 1 : 0,
		plain => $opts{plain} ? 1 : 0,
		http => HTTP::Tiny->new(
			timeout => 60,
			keep_alive => 1,
			proxy => undef,
			http_proxy => undef,
			https_proxy => undef,
			no_proxy => ['127.0.0.1', 'localhost']),
	}, $class;
	$live{$pid} = $self;
	Scalar::Util::weaken($live{$pid});
	return $self;
}

=pod

=item port, control_port, pid, ca_file, certdir, log_file, base_url

Accessors.  C<base_url> is C<https://127.0.0.1:PORT> (C<http://> for a plain
server).

=cut

sub port { $_[0]{port} }
sub control_port { $_[0]{control_port} }
sub pid { $_[0]{pid} }
sub ca_file { $_[0]{ca_file} }
sub certdir { $_[0]{certdir} }
sub log_file { $_[0]{log_file} }
sub base_url { ($_[0]{plain} ? 'http' : 'https') . '://127.0.0.1:' . $_[0]{port} }

sub _control
{
	my ($self, $method, $path, $data) = @_;
	croak "ClaudeMock: server is not running" unless $self->{pid};
	my %args;
	if (defined $data)
	{
		$args{content} = $JSON->encode($data);
		$args{headers} = { 'content-type' => 'application/json' };
	}
	my $url = "http://127.0.0.1:$self->{control_port}$path";
	my $r = $self->{http}->request($method, $url, \%args);
	if (!$r->{success})
	{
		croak "ClaudeMock: $method $path failed: $r->{status} $r->{reason}: "
		  . ($r->{content} // '');
	}
	return $JSON->decode($r->{content});
}

=pod

=item fault(\%fault | [\%fault, ...])

Appends faults to the server's fault queue.  Fields: C<status>, C<error_type>,
C<message>, C<retry_after>, C<retry_after_ms>, C<should_retry>, C<headers>,
C<delay_ms>, C<hang>, C<reset>, C<malformed>, C<truncate>, C<body>,
C<body_base64>, C<count>, and for streamed replies (C<"stream": true>; a
request that does not stream ignores them): C<stream_error> (an error type:
an C<error> event), C<stream_error_after> (after that many
content_block_delta events, default 0), C<stream_cut_after> (kill the
connection, or the HTTP/2 stream, after that many deltas), C<stream_no_stop>
(true: no message_stop), C<stream_pause_ms> (a pause after the first delta).
Wire faults: C<raw_response_base64> (these bytes exactly, over HTTP/1.1, then
the connection closes), C<early_hints> (headers of a 103 before the reply),
C<trailers> (trailer fields after the body), C<stream_keep_open> (true: pings
after message_stop, never closed); and faults of the connection itself:
C<duplicate_after_ms> (the reply written as raw bytes twice, the copy N ms
later or in the same write; HTTP/1.1), C<close_unanswered> (the body read, the
connection closed without an answer), C<stall_connection> (this request and
every later one on its connection left unanswered, the connection open),
C<zero_streams> (HTTP/2: the session advertises
SETTINGS_MAX_CONCURRENT_STREAMS 0, then the request is answered).
See the comments at the top of F<mock-api.js> for the matching
C<[[mock:...]]> directives.  Returns the number of queued entries.

=item clear_faults()

=item config(\%config)

Any of C<latency_ms>, C<keys> (arrayref or undef), C<rpm> (number or undef),
C<ratelimit_headers> (hashref or undef), C<batch_delay_ms>,
C<models_page_size>, C<hang_handshakes>, and for streams
C<stream_chunk_chars> (code points per delta, default 8),
C<stream_write_bytes> (write each event in pieces of this many bytes; 0, the
default, writes it whole), C<stream_delay_ms> (between events, default 0),
C<ping_ms> (a ping event every so often while a stream waits; 0 = none).
Returns the resulting config.

=item stats()

=item requests($since)

Arrayref of request records with C<n> greater than C<$since> (default 0).

=item reset()

=cut

sub fault
{
	my ($self, $f) = @_;
	return $self->_control('POST', '/faults', $f)->{queued};
}

sub clear_faults
{
	my ($self) = @_;
	$self->_control('DELETE', '/faults');
	return;
}

sub config
{
	my ($self, $c) = @_;
	return $self->_control('POST', '/config', $c // {});
}

sub stats
{
	my ($self) = @_;
	return $self->_control('GET', '/stats');
}

sub requests
{
	my ($self, $since) = @_;
	$since //= 0;
	return $self->_control('GET', "/requests?since=$since");
}

sub reset
{
	my ($self) = @_;
	$self->_control('POST', '/reset');
	return;
}

=pod

=item stop()

Stops the server (SIGTERM, then SIGKILL after 5 s).  Idempotent.

=back

=cut

sub stop
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return unless $pid;
	return if $self->{owner} != $$;    # a forked child must not stop it
	delete $live{$pid};
	$self->{pid} = undef;
	close $self->{stdin} if $self->{stdin};
	kill 'TERM', $pid;
	my $deadline = Time::HiRes::time() + 5;
	while (Time::HiRes::time() < $deadline)
	{
		my $r = waitpid($pid, POSIX::WNOHANG());
		last if $r == $pid || $r == -1;
		Time::HiRes::sleep(0.02);
	}
	if (kill(0, $pid))
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	close $self->{stdout} if $self->{stdout};
	delete $self->{http};
	# copy the server's stderr (normally empty) to ours, i.e. the test log
	my $log = _slurp($self->{log_file});
	print STDERR "# ClaudeMock server log ($self->{log_file}):\n$log"
	  if $log ne '';
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($@, $!, $?);
	eval { $self->stop };
	return;
}

END
{
	local $?;
	for my $pid (keys %live)
	{
		my $m = $live{$pid};
		eval { $m->stop } if $m;
	}
}

1;
