# Without shared_preload_libraries the extension installs, and every call
# fails with an error that says how to fix the configuration.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use ClaudeTest;

my $node = new_node('nopreload', undef, preload => 0);
my ($rc, $out, $err) = $node->psql('postgres', "SELECT claude_complete('hi')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000: claude must be loaded via shared_preload_libraries/, 'claude_complete says what is wrong');
like($err, qr/HINT:  Add 'claude' to shared_preload_libraries in postgresql.conf and restart the server/,
	'and how to fix it');
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT claude_messages('{"messages": [{"role": "user", "content": "hi"}]}')});
like($err, qr/claude must be loaded via shared_preload_libraries/, 'claude_messages too');
is($node->safe_psql('postgres', "SELECT claude_complete(NULL) IS NULL"), 't', 'a NULL prompt is still NULL');

# settings are there, and a SET made before the library loads is kept
is($node->safe_psql('postgres', "SET claude.default_model = 'm1'; LOAD 'claude'; SHOW claude.default_model"),
	'm1', 'a SET before loading is kept');

$node->stop;
done_testing();
