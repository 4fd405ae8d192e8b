# No role acts beyond its own rights.  A hostile role, with no more than the
# grants README recommends, tries every way the extension could run its
# code or its writes with more rights than its own: search_path shadows in
# the extension's SQL, the table's own triggers and domain checks during a
# worker's write-back, writes to tables it may only read (or not at all),
# row security, budgets, the shared cache, the request slots, and an API
# error that echoes the key.  It must stay a plain role, every protected
# table must stay as it was, and nothing may be paid for it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeMock;
use ClaudeTest;

my $key = 'sk-ant-api03-hostileTESTkey-0123456789abcdefXYZ';
my $mock = ClaudeMock->start(keys => [$key]);
my $node = new_node('hostile', $mock, cache => 1, key => $key, init => { allows_streaming => 1 },
	conf => "claude.batch_poll_interval = 1\nclaude.max_retries = 0\nclaude.max_connections = 2\n");
sub sql { $node->safe_psql('postgres', $_[0]) }
sub as_role
{
	my ($role, $q) = @_;
	return $node->psql('postgres', $q, extra_params => [ '-U', $role ]);
}
sub superuser { sql("SELECT rolsuper FROM pg_roles WHERE rolname = '$_[0]'") }
sub mock_count { $mock->stats->{requests} }

sql(q{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE alice LOGIN;
	GRANT CREATE ON SCHEMA public TO mallory, alice;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO mallory, alice;
	GRANT EXECUTE ON FUNCTION claude_complete_many(text[], text, int, text, float8, boolean) TO mallory, alice;
	GRANT EXECUTE ON PROCEDURE claude_enrich(regclass, name, text, text, int, text, boolean, int, text, text[], jsonb, text, int, int, boolean, bigint, bigint, bigint, bigint, bigint, bigint, numeric)
	  TO mallory, alice;
	GRANT EXECUTE ON FUNCTION claude_enrich_trigger() TO mallory, alice;
	GRANT SELECT ON claude_progress TO mallory, alice;
});

# A function that makes mallory a superuser when, and only when, it runs
# with a superuser's rights; it never fails, so the attack goes unnoticed.
my $escalate = q{
	CREATE FUNCTION public.escalate() RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			EXECUTE 'ALTER ROLE mallory SUPERUSER';
		EXCEPTION WHEN OTHERS THEN NULL;
		END;
		RETURN true;
	END $$;
};
my ($rc, $out, $err) = as_role('mallory', $escalate);
is($rc, 0, 'mallory defines a function that escalates when run by a superuser') or diag($err);

# ---- 1. search_path: a temporary float8 with a cast, and EXECUTE only
($rc, $out, $err) = as_role('mallory', q{
	CREATE TYPE pg_temp.float8 AS (x int);
	CREATE FUNCTION pg_temp.hijack(pg_catalog.numeric) RETURNS pg_temp.float8 LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.escalate(); RETURN NULL; END $$;
	CREATE CAST (pg_catalog.numeric AS pg_temp.float8) WITH FUNCTION pg_temp.hijack(pg_catalog.numeric) AS IMPLICIT;
	SELECT claude_complete('price me', cache => false);
});
is($rc, 0, 'a call with a pg_temp.float8 planted succeeds') or diag($err);
is(superuser('mallory'), 'f', 'the price query ran none of it: mallory is no superuser');

# ---- 2. search_path in the AFTER trigger's INSERT, with INSERT only
sql(q{
	CREATE TABLE alice_tickets (id int PRIMARY KEY, subject text, category text);
	ALTER TABLE alice_tickets OWNER TO alice;
	CREATE TRIGGER classify AFTER INSERT ON alice_tickets FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}');
	GRANT INSERT ON alice_tickets TO mallory;
});
($rc, $out, $err) = as_role('mallory', q{
	CREATE TYPE pg_temp.jsonb AS (x int);
	CREATE FUNCTION pg_temp.hijack(pg_catalog.text) RETURNS pg_temp.jsonb LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.escalate(); RETURN NULL; END $$;
	CREATE CAST (pg_catalog.text AS pg_temp.jsonb) WITH FUNCTION pg_temp.hijack(pg_catalog.text) AS IMPLICIT;
	INSERT INTO alice_tickets VALUES (1, 'printer on fire');
});
is($rc, 0, 'an INSERT with a pg_temp.jsonb planted queues its job') or diag($err);
is(superuser('mallory'), 'f', 'the job INSERT ran none of it: mallory is no superuser');
ok(wait_until(sub { sql("SELECT category IS NOT NULL FROM alice_tickets WHERE id = 1") eq 't' }),
	'and the job still fills the row');

# ---- 3. the BEFORE trigger: the target's domain check runs as the caller
($rc, $out, $err) = as_role('mallory', q{
	CREATE DOMAIN checked_text AS text CHECK (public.escalate());
	CREATE TABLE mallory_before (id int PRIMARY KEY, body text, summary checked_text);
	CREATE TRIGGER fill BEFORE INSERT ON mallory_before FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Sum: {body}');
	INSERT INTO mallory_before VALUES (1, 'x');
});
is($rc, 0, 'a BEFORE trigger fills a domain-typed column') or diag($err);
is(superuser('mallory'), 'f', 'its domain check ran as mallory: no superuser');

# ---- 4. the worker's write-back runs the table's triggers as its owner, restricted
($rc, $out, $err) = as_role('mallory', q{
	CREATE TABLE mallory_docs (id int PRIMARY KEY, body text, summary text);
	INSERT INTO mallory_docs VALUES (1, 'one'), (2, 'two');
	CREATE FUNCTION public.on_update() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM public.escalate(); RETURN NEW; END $$;
	CREATE TRIGGER sneaky BEFORE UPDATE ON mallory_docs FOR EACH ROW EXECUTE FUNCTION public.on_update();
	CALL claude_enrich('mallory_docs', 'summary', 'Batch: {body}', mode => 'batch');
});
is($rc, 0, 'mallory submits a Message Batch for her table') or diag($err);
ok(wait_until(sub { sql("SELECT count(summary) FROM mallory_docs") eq '2' }, 60),
	'the worker writes the results back');
is(superuser('mallory'), 'f', 'her BEFORE UPDATE trigger ran as mallory, not as the worker: no superuser');
($rc, $out, $err) = as_role('mallory', q{
	CREATE TABLE mallory_jobs (id int PRIMARY KEY, body text, summary text);
	CREATE TRIGGER sneaky BEFORE UPDATE ON mallory_jobs FOR EACH ROW EXECUTE FUNCTION public.on_update();
	CREATE TRIGGER fill AFTER INSERT ON mallory_jobs FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Job: {body}');
	INSERT INTO mallory_jobs VALUES (1, 'job');
});
is($rc, 0, 'mallory queues a trigger job') or diag($err);
ok(wait_until(sub { sql("SELECT summary IS NOT NULL FROM mallory_jobs") eq 't' }), 'the job is written back');
is(superuser('mallory'), 'f', 'as the table owner, restricted: no superuser');

# a restricted write-back: the table's code cannot change role or make temporary objects
($rc, $out, $err) = as_role('mallory', q{
	CREATE TABLE mallory_temp (id int PRIMARY KEY, body text, summary text, note text);
	INSERT INTO mallory_temp VALUES (1, 'x');
	CREATE FUNCTION public.make_temp() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			CREATE TEMP TABLE sneaky_temp (x int);
			NEW.note := 'temp table made';
		EXCEPTION WHEN OTHERS THEN NEW.note := SQLERRM;
		END;
		RETURN NEW;
	END $$;
	CREATE TRIGGER t BEFORE UPDATE ON mallory_temp FOR EACH ROW EXECUTE FUNCTION public.make_temp();
	CALL claude_enrich('mallory_temp', 'summary', 'Batch: {body}', mode => 'batch');
});
ok(wait_until(sub { sql("SELECT summary IS NOT NULL FROM mallory_temp") eq 't' }, 60), 'a write-back with a trigger');
like(sql("SELECT note FROM mallory_temp"), qr/security-restricted operation/,
	'runs under SECURITY_RESTRICTED_OPERATION');

# ---- 5. writes where mallory has no right to write
sql(q{
	CREATE TABLE alice_docs (id int PRIMARY KEY, owner name, body text, summary text);
	ALTER TABLE alice_docs OWNER TO alice;
	INSERT INTO alice_docs VALUES (1, 'alice', 'a1'), (2, 'alice', 'a2'), (3, 'mallory', 'm3');
	GRANT SELECT ON alice_docs TO mallory;
});
my $n0 = mock_count();
for my $mode ('online', 'batch')
{
	($rc, $out, $err) = as_role('mallory',
		"CALL claude_enrich('alice_docs', 'summary', '{body}', mode => '$mode')");
	like($err, qr/permission denied to update column "summary" of table alice_docs/,
		"$mode mode with SELECT only: refused");
}
($rc, $out, $err) = as_role('mallory',
	"CALL claude_enrich('pg_catalog.pg_description', 'description', 'Pwned {objoid}', only_missing => false, mode => 'batch')");
like($err, qr/permission denied to update column "description" of table pg_description/,
	'a system catalog: refused');
is(mock_count(), $n0, 'none of them sent a request');
is(sql("SELECT count(summary) FROM alice_docs"), '0', 'alice_docs is unchanged');
is(sql("SELECT count(*) FROM pg_description WHERE description LIKE '%Pwned%'"), '0', 'pg_description is unchanged');
is(sql("SELECT count(*) FROM claude_batches WHERE relation = 'alice_docs'::regclass OR relation = 'pg_description'::regclass"),
	'0', 'and no batch was recorded');

# row security: mallory may update her own rows only
sql(q{
	ALTER TABLE alice_docs ENABLE ROW LEVEL SECURITY;
	CREATE POLICY see_all ON alice_docs FOR SELECT USING (true);
	CREATE POLICY own_rows ON alice_docs FOR UPDATE USING (owner = current_user);
	GRANT UPDATE (summary) ON alice_docs TO mallory;
});
$n0 = mock_count();
($rc, $out, $err) = as_role('mallory', "CALL claude_enrich('alice_docs', 'summary', 'Online: {body}')");
is($rc, 0, 'online mode under row security runs') or diag($err);
is(sql("SELECT string_agg(id || ':' || coalesce(summary, '-'), ' ' ORDER BY id) FROM alice_docs"),
	'1:- 2:- 3:Online: m3', 'only the row the UPDATE policy lets mallory update is filled');
is(mock_count() - $n0, 1, 'and only that one is paid for');
sql("UPDATE alice_docs SET summary = NULL");
$n0 = mock_count();
($rc, $out, $err) = as_role('mallory', "CALL claude_enrich('alice_docs', 'summary', 'Batched: {body}', mode => 'batch')");
is($rc, 0, 'batch mode under row security runs') or diag($err);
ok(wait_until(sub { sql("SELECT count(*) FROM claude_batches WHERE relation = 'alice_docs'::regclass AND results_at IS NOT NULL") eq '1' }, 60),
	'its batch is written back');
is(sql("SELECT string_agg(id || ':' || coalesce(summary, '-'), ' ' ORDER BY id) FROM alice_docs"),
	'1:- 2:- 3:Batched: m3', 'alice\'s rows are untouched');
is(sql("SELECT requests FROM claude_batches WHERE relation = 'alice_docs'::regclass"), '1',
	'and only mallory\'s row was submitted');

# another session's temporary table
my $bg = start_bg($node, "BEGIN; CREATE TEMP TABLE theirs (id int PRIMARY KEY, body text, summary text); "
	  . "INSERT INTO theirs VALUES (1, 'x'); COMMIT; SELECT pg_sleep(60)");
ok(wait_until(sub { sql("SELECT count(*) FROM pg_class WHERE relname = 'theirs' AND relpersistence = 't'") eq '1' }),
	'another session has a temporary table');
my $theirs = sql("SELECT oid FROM pg_class WHERE relname = 'theirs' AND relpersistence = 't'");
$n0 = mock_count();
($rc, $out, $err) = $node->psql('postgres', "CALL claude_enrich('$theirs'::oid::regclass, 'summary', '{body}')");
like($err, qr/cannot access temporary tables of other sessions/, 'claude_enrich on it is refused');
is(mock_count(), $n0, 'before any request');
$node->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()");
finish_bg($bg);

# ---- 6. budgets: a batch must fit whole
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('mallory', 100)");
my $used = sql("SELECT coalesce(sum(requests), 0) FROM claude_usage WHERE role = 'mallory'::regrole");
sql("UPDATE claude_budgets SET requests_per_day = $used + 2 WHERE role = 'mallory'::regrole");
($rc, $out, $err) = as_role('mallory', q{
	CREATE TABLE mallory_many (id int PRIMARY KEY, body text, summary text);
	INSERT INTO mallory_many SELECT i, 'many ' || i FROM generate_series(1, 5) i;
});
$n0 = mock_count();
($rc, $out, $err) = as_role('mallory', "CALL claude_enrich('mallory_many', 'summary', 'Many: {body}', mode => 'batch')");
like($err, qr/daily budget of role mallory is spent/, 'a batch of 5 requests with 2 left in the budget is refused');
is(mock_count(), $n0, 'before it is sent');
is(sql("SELECT count(*) FROM claude_batches WHERE relation = 'mallory_many'::regclass"), '0', 'and no batch is recorded');
sql("DELETE FROM claude_budgets WHERE role = 'mallory'::regrole");

# ---- 7. the cache is per role
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice''s private question')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request::text LIKE '%private question%'") eq '1' }),
	'alice\'s reply is cached');
$n0 = mock_count();
($rc, $out, $err) = as_role('mallory', "SELECT claude_complete('alice''s private question')");
is(mock_count() - $n0, 1, 'mallory asking the same is a miss: her own request, no leak, no oracle');
$n0 = mock_count();
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('alice''s private question')");
is(mock_count() - $n0, 0, 'alice is still served her own reply');
sub scope_is
{
	my ($scope) = @_;
	return wait_until(sub { sql("SHOW claude.cache_scope") eq $scope });
}
sql("ALTER SYSTEM SET claude.cache_scope = 'database'");
sql("SELECT pg_reload_conf()");
ok(scope_is('database'), 'claude.cache_scope = database, server-wide');
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('shared question')");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_cache WHERE request::text LIKE '%shared question%'") eq '1' }),
	'with cache_scope = database a reply is cached for all');
$n0 = mock_count();
($rc, $out, $err) = as_role('mallory', "SELECT claude_complete('shared question')");
is(mock_count() - $n0, 0, 'and served to another role');
($rc, $out, $err) = as_role('mallory', "SET claude.cache_scope = 'role'");
like($err, qr/permission denied to set parameter/, 'claude.cache_scope is superuser-only');
sql("ALTER SYSTEM RESET claude.cache_scope");
sql("SELECT pg_reload_conf()");
ok(scope_is('role'), 'and back to role');

# ---- 8. a fair share of the pipe: one role's bulk work cannot starve another's call
$mock->config({ latency_ms => 20 });
my @bulk = map {
	start_bg($node, "SET ROLE mallory; SELECT count(*) FROM claude_complete_many("
		  . "(SELECT array_agg('bulk $_ ' || i) FROM generate_series(1, 700) i), cache => false)")
} 1 .. 2;
ok(wait_until(sub { sql("SELECT in_flight + queued > 100 FROM claude_stats") eq 't' }), 'two sessions of bulk work queue up');
$n0 = mock_count();
($rc, $out, $err) = as_role('alice', "SELECT claude_complete('[single call]', cache => false)");
is($rc, 0, 'another role\'s single call succeeds meanwhile') or diag($err);
my ($single) = grep { ($_->{body}{messages}[0]{content} // '') =~ /single call/ } @{ $mock->requests($n0) };
ok(defined $single, 'the mock saw it');
my $ahead = defined $single ? $single->{n} - $n0 - 1 : -1;
cmp_ok($ahead, '<=', 8, "at most a few bulk requests went ahead of it ($ahead), not the backlog");
is(sql("SELECT in_flight + queued > 50 FROM claude_stats"), 't', 'while the bulk work still had a backlog');
for my $h (@bulk)
{
	my ($brc, $bout, $berr) = finish_bg($h);
	is($bout, '700', 'the bulk work finishes too') or diag($berr);
}
$mock->config({ latency_ms => 0 });

# ---- 9. an API error that echoes the key never shows it
my $prefix = substr($key, 0, 8);
$mock->fault({ status => 400, message => "invalid x-api-key $key" });
($rc, $out, $err) = as_role('mallory', "SELECT error FROM claude_complete_many(ARRAY['echo'], cache => false)");
like($out, qr/invalid x-api-key \*{8}/, 'claude_complete_many: the error column is redacted');
unlike($out, qr/\Q$prefix\E/, 'no part of the key');
$mock->fault({ status => 400, message => ('x' x 990) . $key });
($rc, $out, $err) = as_role('mallory', "SELECT error FROM claude_complete_many(ARRAY['echo cut'], cache => false)");
unlike($out, qr/\Q$prefix\E/, 'a message cut at its limit leaves no prefix of the key');
($rc, $out, $err) = as_role('mallory', q{
	CREATE TABLE mallory_echo (id int PRIMARY KEY, body text, summary text);
	INSERT INTO mallory_echo VALUES (1, 'e');
});
$mock->fault({ status => 400, message => "invalid x-api-key $key" });
($rc, $out, $err) = as_role('mallory', "CALL claude_enrich('mallory_echo', 'summary', 'Echo: {body}')");
like($err, qr/invalid x-api-key \*{8}/, 'claude_enrich: the NOTICE detail is redacted');
unlike($err, qr/\Q$prefix\E/, 'no part of the key');
$mock->fault({ status => 400, message => "invalid x-api-key $key" });
($rc, $out, $err) = as_role('mallory', q{
	CREATE TRIGGER fill AFTER INSERT ON mallory_echo FOR EACH ROW
	  EXECUTE FUNCTION claude_enrich_trigger('summary', 'Job echo: {body}');
	INSERT INTO mallory_echo VALUES (2, 'job');
});
ok(wait_until(sub { sql("SELECT count(*) FROM claude_jobs WHERE status = 'failed' AND relid = 'mallory_echo'::regclass") eq '1' }),
	'a job failing with the echo');
my $last_error = sql("SELECT last_error FROM claude_jobs WHERE relid = 'mallory_echo'::regclass");
like($last_error, qr/invalid x-api-key \*{8}/, 'claude_jobs.last_error is redacted');
unlike($last_error, qr/\Q$prefix\E/, 'no part of the key');

# ---- 10. smaller leaks
$mock->config({ latency_ms => 3000 });
my $slow = start_bg($node, "SET ROLE alice; CALL claude_enrich('alice_tickets', 'category', 'Slow: {subject}', only_missing => false)");
ok(wait_until(sub { sql("SELECT count(*) FROM claude_progress_rows()") eq '1' }), 'alice runs a slow claude_enrich');
($rc, $out, $err) = as_role('mallory', "SELECT count(*) FROM claude_progress_rows()");
is($out, '0', 'mallory does not see alice\'s running work');
($rc, $out, $err) = as_role('alice', "SELECT count(*) FROM claude_progress");
is($out, '1', 'alice sees her own');
finish_bg($slow);
$mock->config({ latency_ms => 0 });

sql(q{CREATE ROLE bob LOGIN; CREATE ROLE "Bob" LOGIN; CREATE ROLE "Carol Smith" LOGIN;
	GRANT EXECUTE ON FUNCTION claude_complete(text, text, int, text, float8, boolean) TO bob;});
($rc, $out, $err) = as_role('bob', "SELECT claude_complete('bob pays', cache => false)");
($rc, $out, $err) = as_role('Bob', "SELECT count(*) FROM claude_usage");
is($out, '0', 'role "Bob" does not see the usage of role bob');
($rc, $out, $err) = as_role('bob', "SELECT count(*) FROM claude_usage");
is($out, '1', 'bob sees his own');
($rc, $out, $err) = as_role('Carol Smith', "SELECT count(*) FROM claude_usage");
is($rc . ':' . $out, '0:0', 'a role with a space in its name reads claude_usage without an error');
for my $v ('NaN', 'Infinity')
{
	($rc, $out, $err) = $node->psql('postgres', "INSERT INTO claude_budgets (role, usd_per_day) VALUES ('bob', '$v')");
	like($err, qr/violates check constraint/, "usd_per_day = $v is refused (it would mean no limit)");
}

# ---- 11. a standby: no enrich, no budgeted call it cannot account for
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('hostile_standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
sql("INSERT INTO claude_budgets (role, requests_per_day) VALUES ('alice', 1000)");
$node->wait_for_catchup($standby);
$standby->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'claude http worker'")
  or die 'no HTTP worker on the standby';
$n0 = mock_count();
($rc, $out, $err) = $standby->psql('postgres', "CALL claude_enrich('alice_docs', 'summary', '{body}', only_missing => false)");
like($err, qr/claude_enrich cannot run during recovery/, 'claude_enrich is refused on a standby');
($rc, $out, $err) = $standby->psql('postgres', "SELECT claude_complete('standby budget', cache => false)",
	extra_params => [ '-U', 'alice' ]);
like($err, qr/role alice has a daily budget, which a standby cannot account for/,
	'a role with a budget is refused on a standby');
is(mock_count(), $n0, 'neither sent a request');
($rc, $out, $err) = $standby->psql('postgres', "SELECT claude_complete('standby free', cache => false)",
	extra_params => [ '-U', 'mallory' ]);
is($rc, 0, 'a role without a budget may call on a standby') or diag($err);
$standby->stop;

is(superuser('mallory'), 'f', 'after all of it, mallory is still no superuser');
done_testing();
