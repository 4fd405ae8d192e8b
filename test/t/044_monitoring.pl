# Monitoring that plugs in: Debian's prometheus-postgres-exporter (0.11.1)
# runs monitoring/queries.yaml as a pg_monitor member against the cluster;
# its scrape carries the claude metrics with their labels and the values of
# claude_stats and of the job queue (a histogram's buckets, sum and count
# included), the same samples as claude_metrics(); promtool accepts the
# scrape and the alert rules; every metric the Grafana dashboard uses is in
# the scrape; pg_monitor reads the queue and progress, never the requests.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster;
use Test::More;
use JSON::PP;
use IPC::Run;
use HTTP::Tiny;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use ClaudeMock;
use ClaudeTest;

my $root = abs_path(dirname(__FILE__) . '/../..');
my $exporter = '/usr/bin/prometheus-postgres-exporter';
my $promtool = '/usr/bin/promtool';
-x $_ or BAIL_OUT("$_ missing: run test/install-deps.sh") for $exporter, $promtool;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('monitoring', $mock);
sub sql { $node->safe_psql('postgres', $_[0]) }
sub as_watcher { $node->psql('postgres', $_[0], extra_params => [ '-U', 'watcher' ]) }

# ---- requests through the mock: four succeed (the default model twice,
# claude-haiku-4-5 and a model name that needs escaping), one fails with 400
sql("SELECT claude_stats_reset()");
sql("SELECT claude_complete('one')");
sql("SELECT claude_complete('two')");
sql("SELECT claude_complete('three', model => 'claude-haiku-4-5')");
sql(q{SELECT claude_complete('four', model => E'we"ird\\\\mo\ndel')});
$mock->fault({ status => 400 });
my ($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('bad')");
like($err, qr/Claude API error 400/, 'a 400 fails the call');

# ---- a queue the worker leaves alone: failed jobs, one not due, and a
# status of the jobs lane (counted generically), behind forced row security
sql(q{CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
	ALTER TABLE claude_jobs DROP CONSTRAINT claude_jobs_status_check;
	ALTER TABLE claude_jobs ENABLE ROW LEVEL SECURITY;
	ALTER TABLE claude_jobs FORCE ROW LEVEL SECURITY;
	INSERT INTO claude_jobs (relid, pk, target_column, request, role, status, next_attempt_at, created_at)
	SELECT 'docs', jsonb_build_object('id', g), 'summary',
	       '{"messages": [{"role": "user", "content": "SECRET-PROMPT"}]}', current_user::regrole, s,
	       now() + interval '1 year', now() - interval '1 hour'
	FROM (VALUES (1, 'failed'), (2, 'failed'), (3, 'queued'), (4, 'superseded')) v(g, s);
	INSERT INTO claude_batches (id, relation, target_column, status, requests, succeeded, errored,
	                            cache, submitted_by, polled_at)
	VALUES ('msgbatch_monitor', 'docs', 'summary', 'in_progress', 10, 3, 1, false, current_user::regrole,
	        now() + interval '1 year');
	CREATE ROLE watcher LOGIN IN ROLE pg_monitor;});

# ---- pg_monitor: counts and progress, never the requests
($rc, $out, $err) = as_watcher("SELECT status || '=' || jobs FROM claude_queue ORDER BY status");
is($out, "failed=2\nqueued=1\nsuperseded=1", 'pg_monitor reads claude_queue, row security or not');
($rc, $out, $err) = as_watcher("SELECT mode, rows_total, rows_done FROM claude_progress");
is($rc . $out, "0batch|10|3", 'and claude_progress (the batch)');
# (claude_jobs' row security: a role reads only the jobs it pays for or has on its tables)
($rc, $out, $err) = as_watcher("SELECT count(*) FROM claude_jobs WHERE request::text LIKE '%SECRET-PROMPT%'");
is($rc . ':' . $out, '0:0', 'but not the requests in claude_jobs');
($rc, $out, $err) = as_watcher("SELECT claude_metrics() LIKE '%claude_queue_jobs{database=\"postgres\",status=\"failed\"} 2%'");
is($out, 't', 'claude_metrics() has the job gauges, labelled');
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM claude_queue', extra_params => [ '-U', 'nobody' ]);
like($err, qr/permission denied/, 'a plain role reads no queue');

# ---- the exporter, as watcher, with the query file
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = sprintf('host=%s port=%d user=watcher dbname=postgres sslmode=disable', $node->host, $node->port);
my ($eout, $eerr) = ('', '');
local $ENV{DATA_SOURCE_NAME} = $dsn;
my $exp = IPC::Run::start(
	[ $exporter, "--extend.query-path=$root/monitoring/queries.yaml", "--web.listen-address=127.0.0.1:$port",
		'--disable-default-metrics', '--disable-settings-metrics', '--no-collector.database',
		'--no-collector.bgwriter' ],
	'<', \undef, '>', \$eout, '2>', \$eerr);
END { local $?; $exp->kill_kill if $exp }
my $http = HTTP::Tiny->new(timeout => 10);
my $scrape = '';
wait_until(sub {
	my $r = $http->get("http://127.0.0.1:$port/metrics");
	$scrape = $r->{success} ? $r->{content} : '';
	return $scrape =~ /^claude_batches_open\{/m;
}) or diag("exporter: $eerr");

# name{labels} => value, labels sorted, the exporter's own labels left out
sub samples
{
	my %s;
	for (split /\n/, $_[0])
	{
		next unless /^(claude_\w+)(?:\{(.*)\})? (\S+)$/;
		my ($name, $l, $v) = ($1, $2 // '', $3);
		my @l = sort grep { !/^server=/ } ($l =~ /(\w+="(?:[^"\\]|\\.)*")/g);
		$s{ $name . (@l ? '{' . join(',', @l) . '}' : '') } = $v;
	}
	return \%s;
}
my $got = samples($scrape);
like($scrape, qr/^pg_exporter_user_queries_load_error\{[^}]*\} 0$/m, 'the exporter loads the query file');
like($scrape, qr/^pg_exporter_last_scrape_error 0$/m, 'and runs every query without an error');
sub stats_col { sql("SELECT $_[0] FROM claude_stats") }

is($got->{'claude_requests_total{status="200"}'}, 4, 'claude_requests_total{status="200"} through the exporter');
is($got->{'claude_requests_total{status="400"}'}, 1, 'claude_requests_total{status="400"}');
is($got->{'claude_tokens_total{type="input"}'}, stats_col('input_tokens'), 'input tokens match claude_stats');
is($got->{'claude_tokens_total{type="output"}'}, stats_col('output_tokens'), 'output tokens match claude_stats');
ok(abs($got->{'claude_cost_usd_total'} - stats_col('cost_usd')) < 1e-9 && $got->{'claude_cost_usd_total'} > 0,
	'cost matches claude_stats');
is($got->{'claude_worker_up'}, 1, 'the worker is up');
is($got->{'claude_queue_jobs{database="postgres",status="failed"}'}, 2, 'failed jobs by database');
is($got->{'claude_queue_jobs{database="postgres",status="queued"}'}, 1, 'queued jobs');
is($got->{'claude_queue_jobs{database="postgres",status="waiting"}'}, 0, 'no waiting jobs: still a sample');
is($got->{'claude_queue_jobs{database="postgres",status="superseded"}'}, 1, 'any other status counted');
cmp_ok($got->{'claude_queue_oldest_seconds{database="postgres",status="failed"}'}, '>=', 3600, 'the oldest job is an hour old');
is($got->{'claude_batches_open{database="postgres",status="in_progress"}'}, 1, 'the batch in progress');
is($got->{'claude_batches_items{database="postgres",status="in_progress"}'} . '/'
	  . $got->{'claude_batches_items_done{database="postgres",status="in_progress"}'}, '10/4', 'its items, 4 of 10 done');
unlike($scrape, qr/SECRET-PROMPT/, 'no prompt in the scrape');

# usage by model (flushed or not) as claude_usage sums it for a superuser;
# a model label escaped as the exporter escapes it (" \ and a newline);
# the default model's three requests include the one that failed with 400
my %models = (sql("SHOW claude.default_model") => 3, 'claude-haiku-4-5' => 1, qq{we"ird\\mo\ndel} => 1);
for my $m (sort keys %models)
{
	my $l = 'database="postgres",model="' . ($m =~ s/\\/\\\\/gr =~ s/"/\\"/gr =~ s/\n/\\n/gr) . '"';
	my @want = split /\|/, sql("SELECT sum(requests), sum(input_tokens), sum(output_tokens), sum(cost_usd) "
		  . "FROM claude_usage WHERE model = " . $node->safe_psql('postgres', "SELECT quote_literal(\$\$$m\$\$)"));
	my @have = map { $got->{$_} } "claude_model_requests_total{$l}", "claude_model_tokens_total{$l,type=\"input\"}",
	  "claude_model_tokens_total{$l,type=\"output\"}", "claude_model_cost_usd_total{$l}";
	is_deeply([ map { defined ? $_ + 0 : 'missing' } @have ], [ map { $_ + 0 } @want ],
		"requests, tokens and cost of model {$l} equal claude_usage's");
	is($have[0], $models{$m}, "$models{$m} request(s) of that model");
}
ok($got->{"claude_model_cost_usd_total{database=\"postgres\",model=\"claude-haiku-4-5\"}"} > 0, 'a priced model has a cost');

# the histogram: cumulative buckets up to +Inf = count = 5 requests; sum as in shared memory
like($scrape, qr/^# TYPE claude_request_duration_seconds histogram$/m, 'a histogram');
my @b = map { [ $_ =~ /le="([^"]+)"\} (\S+)/ ] } grep { /^claude_request_duration_seconds_bucket/ } split /\n/, $scrape;
is(scalar(@b), 18, '17 bounds and +Inf');
is($b[-1][0] . ' ' . $b[-1][1], '+Inf 5', 'the +Inf bucket counts every request');
ok(!grep({ $b[$_][1] < $b[ $_ - 1 ][1] } 1 .. $#b), 'buckets are cumulative');
is($got->{'claude_request_duration_seconds_count'}, 5, '_count');
is(sql("SELECT sum FROM claude_metrics_shared() WHERE metric = 'claude_request_duration_seconds'") + 0,
	$got->{'claude_request_duration_seconds_sum'} + 0, '_sum as in shared memory');

# ---- claude_metrics() carries the same samples and labels
my $text = samples(sql("SELECT claude_metrics()"));
is_deeply([ sort keys %$text ], [ sort keys %$got ], 'claude_metrics() has the same samples and labels as the scrape');
is_deeply([ map { $text->{$_} } grep { /_total/ } sort keys %$text ], [ map { $got->{$_} } grep { /_total/ } sort keys %$text ],
	'and the same counter values');

# ---- promtool: the scrape and the rules
my $scrape_file = $node->basedir . '/scrape.txt';
PostgreSQL::Test::Utils::append_to_file($scrape_file, $scrape);
my ($pout, $perr) = ('', '');
ok(IPC::Run::run([ $promtool, 'check', 'metrics' ], '<', $scrape_file, '>', \$pout, '2>', \$perr),
	'promtool check metrics passes on the scrape') or diag("$pout$perr");
ok(IPC::Run::run([ $promtool, 'check', 'rules', "$root/monitoring/alerts.yaml" ], '>', \$pout, '2>', \$perr),
	'promtool check rules monitoring/alerts.yaml') or diag("$pout$perr");
ok(IPC::Run::run([ $promtool, 'test', 'rules', "$root/monitoring/alerts.test.yaml" ], '>', \$pout, '2>', \$perr),
	'promtool test rules monitoring/alerts.test.yaml') or diag("$pout$perr");

# a database name that needs escaping, and a session that asks for fewer digits
$node->safe_psql('postgres', q{CREATE DATABASE "we""ird\db"});
my $weird = $node->safe_psql('we"ird\db',
	"CREATE EXTENSION claude; SET extra_float_digits = -15; SELECT claude_metrics()");
like($weird, qr/^claude_queue_jobs\{database="we\\"ird\\\\db",status="failed"\} 0$/m, 'label values are escaped');
like($weird, qr/^claude_request_duration_seconds_sum \Q$got->{'claude_request_duration_seconds_sum'}\E$/m,
	'and values printed in full');
($pout, $perr) = ('', '');
ok(IPC::Run::run([ $promtool, 'check', 'metrics' ], '<', \$weird, '>', \$pout, '2>', \$perr),
	'promtool check metrics passes on claude_metrics()') or diag("$pout$perr");

# ---- auto-discovering, the exporter reads each database's queue, the server's figures once
$exp->kill_kill;
$node->safe_psql('postgres', 'CREATE DATABASE app2');
$node->safe_psql('app2', 'CREATE EXTENSION claude');
$port = PostgreSQL::Test::Cluster::get_free_port();
$exp = IPC::Run::start(
	[ $exporter, "--extend.query-path=$root/monitoring/queries.yaml", "--web.listen-address=127.0.0.1:$port",
		'--disable-default-metrics', '--disable-settings-metrics', '--no-collector.database',
		'--no-collector.bgwriter', '--auto-discover-databases', '--include-databases=postgres,app2' ],
	'<', \undef, '>', \$eout, '2>', \$eerr);
wait_until(sub {
	my $r = $http->get("http://127.0.0.1:$port/metrics");
	$scrape = $r->{success} ? $r->{content} : '';
	return $scrape =~ /^claude_queue_jobs\{database="app2"/m && $scrape =~ /^claude_requests_total\{/m;
}) or diag("exporter: $eerr");
my @failed = $scrape =~ /^claude_queue_jobs\{database="([^,]*)",[^}]*status="failed"\} (\d+)$/mg;
is_deeply({@failed}, { postgres => 2, app2 => 0 }, 'each database its own queue');
my @ok = $scrape =~ /^claude_requests_total\{[^}]*status="200"\} (\d+)$/mg;
is("@ok", '4', 'and the server-wide figures once (master)');

# ---- the dashboard parses and uses only metrics of the scrape
my $dash = decode_json(slurp_file("$root/monitoring/grafana-dashboard.json"));
my %sample_names = map { /^(\w+)/; ($1 => 1) } keys %$got;
my @used = map { $_->{expr} =~ /\b(claude_\w+)/g } map { @{ $_->{targets} } } @{ $dash->{panels} };
my @missing = grep { !$sample_names{$_} && !$sample_names{ $_ =~ s/_bucket$/_count/r } } @used;
ok(@used >= 20, scalar(@used) . ' metric uses in the dashboard');
is_deeply(\@missing, [], 'every metric of the dashboard is in the scrape');
# the expressions of the rules: "expr:" and the lines indented below it
my $rules = slurp_file("$root/monitoring/alerts.yaml");
my @alert_used;
push @alert_used, $2 =~ /\b(claude_\w+)/g while $rules =~ /^( +)expr:(.*\n(?:\1 .*\n)*)/mg;
ok(@alert_used >= 10, scalar(@alert_used) . ' metric uses in the alerts');
is_deeply([ grep { !$sample_names{$_} } @alert_used ], [], 'and every metric of the alerts');

done_testing();
