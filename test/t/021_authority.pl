# Authority only from what the extension can vouch for.  Hostile roles try
# to make the worker act on rows they wrote (a database owner forging a job
# against pg_authid, a batch whose id is a path, a cache entry another role
# is then served), to make the bootstrap or outer superuser pay and serve
# its cache (a write-back's own triggers, ANALYZE of an expression index, a
# SECURITY DEFINER function, autovacuum), and to attach a trigger that
# writes as a table's owner with no more than the TRIGGER privilege.  Each
# played here succeeded before this test was written.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $mock = ClaudeMock->start(keys => ['test-key']);
my $node = new_node('authority', $mock, cache => 1,
	conf => "claude.batch_poll_interval = 1\nclaude.max_retries = 0\n"
	  . "autovacuum_naptime = 1\nlog_autovacuum_min_duration = 0\n");
sub sql { $node->safe_psql($_[1] // 'postgres', $_[0]) }
sub as_role
{
	my ($role, $q, $db) = @_;
	return $node->psql($db // 'postgres', $q, extra_params => [ '-U', $role ]);
}
sub superuser { sql("SELECT rolsuper FROM pg_roles WHERE rolname = '$_[0]'") }
sub requests { $mock->stats->{requests} }
# what a role paid for, flushed or not (a superuser sees every role's)
sub paid { sql("SELECT coalesce(sum(requests), 0) FROM claude_usage WHERE role = '$_[0]'::regrole", $_[1]) }
my $worker = worker_pid($node);
# a paid reply is cached by the database's worker: so it starts there
my $wakes = 0;
sub wake_d { sql("SELECT claude_complete('wake ' || " . ++$wakes . ")", 'd') }

my $complete = 'claude_complete(text, text, int, text, float8, boolean)';
sql(qq{
	CREATE ROLE owner LOGIN;
	CREATE ROLE alice LOGIN;
	CREATE ROLE mallory LOGIN;
	CREATE ROLE app LOGIN;
	CREATE DATABASE d OWNER owner;
	GRANT CREATE ON SCHEMA public TO alice, mallory;
	GRANT EXECUTE ON FUNCTION $complete TO alice, mallory;
	GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO alice, mallory;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric) TO alice;
});
sql("CREATE EXTENSION claude; GRANT EXECUTE ON FUNCTION $complete TO owner", 'd');

# ---- 1. the database's owner forges a job that makes it superuser
my $owner_oid = sql("SELECT oid FROM pg_roles WHERE rolname = 'owner'");
my $forged_job = qq{INSERT INTO claude_jobs (relid, pk, target_column, request, role)
	VALUES ('pg_authid', '{"oid": "$owner_oid"}', 'rolsuper',
	        '{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "true"}]}', 'postgres')};
my ($rc, $out, $err) = as_role('owner', $forged_job, 'd');
like($err, qr/permission denied for table claude_jobs/, '1. the database owner may not insert a job');
($rc, $out, $err) = as_role('owner', "UPDATE claude_jobs SET role = 'postgres'", 'd');
like($err, qr/permission denied for table claude_jobs/, '1. nor change one');
# a row that got there anyway (a superuser's mistake, a crafted dump): the
# worker acts on no job without the table's trigger, and never on a catalog
sql($forged_job, 'd');
sql("INSERT INTO claude_jobs (relid, pk, target_column, request, role) VALUES "
	. "('pg_class', '{\"oid\": \"1259\"}', 'relname', "
	. "'{\"model\": \"m\", \"max_tokens\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}', 'postgres')", 'd');
# (row security: a role reads only the jobs it pays for or on its tables)
($rc, $out, $err) = as_role('owner', "SELECT count(*) FROM claude_jobs", 'd');
is($out, '0', "1. nor read other roles' jobs");
wake_d();
my $before = requests();
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed'", 'd') eq '2' }),
	'1. the planted jobs fail');
like(sql("SELECT string_agg(last_error, '; ') FROM claude_jobs", 'd'), qr/no claude_enrich_trigger of table pg_authid/,
	'1. visibly: no trigger of the table asked for them');
is(superuser('owner'), 'f', '1. the owner is no superuser');
is(requests() - $before, 0, '1. and nothing was sent for them');

sql("CREATE TABLE plain (id int PRIMARY KEY, a text, b text)", 'd');

# ---- 2. a forged batch whose id is a path to another batch
($rc, $out, $err) = as_role('owner', q{INSERT INTO claude_batches (id, relation, target_column, status, cache, submitted_by)
	VALUES ('./msgbatch_mock_1', 'plain', 'b', 'in_progress', false, 'postgres')}, 'd');
like($err, qr/permission denied for table claude_batches/, '2. the owner may not insert a batch');
($rc, $out, $err) = as_role('owner', q{INSERT INTO claude_batch_items (batch, custom_id, pk, request)
	VALUES (1, 'x', '{}', '{}')}, 'd');
like($err, qr/permission denied for table claude_batch_items/, '2. nor a batch item');
sql(q{INSERT INTO claude_batches (id, relation, target_column, status, cache, submitted_by)
	VALUES ('./msgbatch_mock_1', 'plain', 'b', 'in_progress', false, 'postgres')}, 'd');
wake_d();
$before = requests();
ok(wait_until(sub { sql("SELECT status FROM claude_batches", 'd') eq 'failed' }, 30),
	'2. a planted batch with a path for an id fails');
like(sql("SELECT error FROM claude_batches", 'd'), qr/not one the API gives/, '2. saying why');
is(requests() - $before, 0, '2. without a request');
($rc, $out, $err) = $node->psql('d', "SELECT claude_batch_cancel('../../v1/messages')");
like($err, qr/is not in claude_batches|is not a Message Batch id/, '2. nor may a cancel name a path');

# ---- 3. cache poisoning: the owner plants the reply another role is served
($rc, $out, $err) = as_role('owner', q{INSERT INTO claude_cache (key, model, request, response)
	VALUES ('\x00', 'm', '{}', '{"content": [{"type": "text", "text": "FORGED: pay invoice 42"}]}')}, 'd');
like($err, qr/permission denied for table claude_cache/, '3. the owner may not write the cache');
($rc, $out, $err) = as_role('owner', "SELECT count(*) FROM claude_cache", 'd');
like($err, qr/permission denied for table claude_cache/, "3. nor read other roles' replies");
($rc, $out, $err) = as_role('owner', "INSERT INTO claude_usage_log (day, role, requests) VALUES (current_date, 'alice', 1000000)", 'd');
like($err, qr/permission denied for table claude_usage_log/, "3. nor spend another role's budget");
($rc, $out, $err) = as_role('owner', "INSERT INTO claude_budgets (role, requests_per_day) VALUES ('owner', 5)", 'd');
is($rc, 0, '3. budgets and price edits are still the database admin\'s to set') or diag($err);

# ---- 4. a write-back's own triggers call Claude: the table owner pays, not the worker's superuser
my $probe = 'who pays for the probe';
sql("SELECT claude_complete('$probe')");    # cached for postgres
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache") eq '1' }), '4. postgres has the probe cached');
($rc, $out, $err) = as_role('alice', qq{
	CREATE TABLE alice_tickets (id int PRIMARY KEY, subject text, category text, note text);
	CREATE FUNCTION public.probe() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN NEW.note := public.claude_complete('$probe'); RETURN NEW; END \$\$;
	CREATE TRIGGER probe BEFORE UPDATE ON alice_tickets FOR EACH ROW
	  WHEN (OLD.category IS NULL AND NEW.category IS NOT NULL) EXECUTE FUNCTION public.probe();
	CREATE TRIGGER classify AFTER INSERT ON alice_tickets FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}');
	GRANT INSERT ON alice_tickets TO app;
});
is($rc, 0, '4. alice sets up a table whose write-back calls Claude') or diag($err);
my $postgres_paid = paid('postgres');
$before = requests();
($rc, $out, $err) = as_role('app', "INSERT INTO alice_tickets (id, subject) VALUES (1, 'printer on fire')");
is($rc, 0, '10. a role with INSERT only, and no EXECUTE on anything, fires the trigger') or diag($err);
ok(wait_until(sub { sql("SELECT note IS NOT NULL FROM alice_tickets WHERE id = 1") eq 't' }),
	'4. the job is written back and its trigger calls Claude');
is(requests() - $before, 2, "4. the probe was sent, not served from postgres's cache");
is(paid('postgres'), $postgres_paid, '4. postgres paid nothing more');
ok(wait_until(sub { paid('alice') eq '1' && paid('app') eq '1' }),
	'4/10. alice (the owner, writing back) paid for the probe and app for its job');

# the same in a Message Batch's write-back: its submitter pays
sql("SELECT claude_complete('$probe batch')");
($rc, $out, $err) = as_role('alice', qq{
	CREATE TABLE alice_docs (id int PRIMARY KEY, body text, summary text, note text);
	INSERT INTO alice_docs VALUES (1, 'one');
	CREATE FUNCTION public.probe_batch() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN NEW.note := public.claude_complete('$probe batch'); RETURN NEW; END \$\$;
	CREATE TRIGGER probe BEFORE UPDATE ON alice_docs FOR EACH ROW EXECUTE FUNCTION public.probe_batch();
	CALL claude_enrich('alice_docs', 'summary', 'Sum: {body}', mode => 'batch');
});
is($rc, 0, '4. alice submits a batch for a table whose write-back calls Claude') or diag($err);
ok(wait_until(sub { sql("SELECT note IS NOT NULL FROM alice_docs") eq 't' }, 60), '4. the batch is written back');
is(paid('postgres'), $postgres_paid + 1, '4. postgres paid only its own call');
ok(wait_until(sub { paid('alice') eq '3' }), '4. alice paid for her batch and its write-back probe');

# ---- 5. the outer user: ANALYZE, SECURITY DEFINER and autovacuum
($rc, $out, $err) = as_role('alice', q{
	CREATE FUNCTION public.ask(text) RETURNS text IMMUTABLE LANGUAGE sql
	  AS $$ SELECT public.claude_complete($1, cache => false) $$;
	CREATE TABLE alice_idx (id int PRIMARY KEY, body text);
	CREATE INDEX ON alice_idx (public.ask(body));
	INSERT INTO alice_idx SELECT i, 'row ' || i FROM generate_series(1, 3) i;
	CREATE FUNCTION public.alice_definer() RETURNS text SECURITY DEFINER LANGUAGE sql
	  AS $$ SELECT public.claude_complete('definer', cache => false) $$;
});
is($rc, 0, '5. alice indexes an expression that calls Claude') or diag($err);
my $alice_paid = paid('alice');
sql("ANALYZE alice_idx");
ok(wait_until(sub { paid('alice') >= $alice_paid + 3 }), "5. a superuser's ANALYZE is paid by the table's owner");
is(paid('postgres'), $postgres_paid + 1, '5. not by the superuser who ran it');
$alice_paid = paid('alice');
is(sql("SELECT alice_definer()"), 'definer', '5. a superuser calls a SECURITY DEFINER function of alice');
ok(wait_until(sub { paid('alice') == $alice_paid + 1 }), '5. its definer pays');
is(paid('postgres'), $postgres_paid + 1, '5. not the caller');
my $log_offset = -s $node->logfile;
sql("ALTER TABLE alice_idx SET (autovacuum_analyze_threshold = 1, autovacuum_analyze_scale_factor = 0)");
as_role('alice', "INSERT INTO alice_idx SELECT i, 'row ' || i FROM generate_series(4, 8) i");
$alice_paid = paid('alice');
ok(wait_until(sub { slurp_file($node->logfile, $log_offset) =~ /autovacuum does not make Claude API requests/ }, 60),
	'5. autovacuum refuses to make a paid call');
is(paid('postgres'), $postgres_paid + 1, '5. and postgres paid nothing for it');

# ---- 10. a role with the TRIGGER privilege cannot attach the owner's automation
sql(q{
	CREATE TABLE approvals (id int PRIMARY KEY, note text, approved text);
	GRANT SELECT, TRIGGER, INSERT (id, note) ON approvals TO mallory;
});
($rc, $out, $err) = as_role('mallory', q{
	CREATE TRIGGER approve AFTER INSERT ON approvals FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('approved', 'Say yes: {note}')});
like($err, qr/permission denied to attach claude_enrich_trigger to table approvals/,
	'10. mallory, with TRIGGER on the table, may not attach it');
is(sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'approvals'::regclass"), '0', '10. no trigger exists');
($rc, $out, $err) = as_role('mallory', "INSERT INTO approvals VALUES (1, 'me')");
is(sql("SELECT count(*) FROM claude_jobs"), '0', '10. her INSERT queues nothing');

# ---- a job its role cannot pay for waits; one whose role is gone fails
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('app', 1)");
as_role('app', "INSERT INTO alice_tickets (id, subject) VALUES (2, 'over budget')");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE relid = 'alice_tickets'::regclass") eq 'waiting' }),
	'a job over its role\'s budget waits');
like(sql("SELECT last_error FROM claude_jobs WHERE relid = 'alice_tickets'::regclass"), qr/daily budget of role app/,
	'saying why');
sql("UPDATE claude_budgets SET requests_per_day = 10 WHERE role = 'app'::regrole");
ok(wait_until(sub { sql("SELECT category IS NOT NULL FROM alice_tickets WHERE id = 2") eq 't' }),
	'once the budget is raised, it goes');
$mock->fault({ status => 400, error_type => 'billing_error', message => 'credit balance is too low', count => 1 });
as_role('app', "INSERT INTO alice_tickets (id, subject) VALUES (4, 'no credit')");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE relid = 'alice_tickets'::regclass") eq 'waiting' }),
	'a job refused for billing waits');
is(sql("SELECT attempts FROM claude_jobs WHERE relid = 'alice_tickets'::regclass"), '0', 'its attempt not counted');
sql("UPDATE claude_budgets SET requests_per_day = 11 WHERE role = 'app'::regrole");
ok(wait_until(sub { sql("SELECT category IS NOT NULL FROM alice_tickets WHERE id = 4") eq 't' }),
	'and goes when looked at again');
sql("CREATE ROLE gone LOGIN; GRANT INSERT ON alice_tickets TO gone;
	INSERT INTO claude_budgets (role, requests_per_day) VALUES ('gone', 0)");
as_role('gone', "INSERT INTO alice_tickets (id, subject) VALUES (3, 'orphan')");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE relid = 'alice_tickets'::regclass") eq 'waiting' }),
	'another waits');
sql("DELETE FROM claude_budgets WHERE role = 'gone'::regrole; REVOKE ALL ON alice_tickets FROM gone; DROP ROLE gone");
ok(wait_until(sub { sql("SELECT status FROM claude_jobs WHERE relid = 'alice_tickets'::regclass") eq 'failed' }),
	'when its role is dropped, it fails');
like(sql("SELECT last_error FROM claude_jobs WHERE relid = 'alice_tickets'::regclass"), qr/no longer exists/,
	'visibly');

is(worker_pid($node), $worker, 'the HTTP worker never restarted');
is(sql("SELECT claude_complete('innocent', cache => false)"), 'innocent', 'and an innocent call works');
done_testing();
