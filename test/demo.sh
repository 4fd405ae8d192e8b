#!/usr/bin/env bash
# make demo: install dependencies, build, install the extension into the
# system's PostgreSQL 15, start a throwaway cluster of it and run example
# queries.  With ANTHROPIC_API_KEY set they go to the real API; otherwise
# to the bundled mock, which echoes the prompt back.
# KEEP=1 leaves the server running and prints how to connect.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/lib.sh"

echo "make demo installs the extension into the system's PostgreSQL 15 (as root or through sudo),"
echo "then runs examples on a throwaway cluster of it; the system's own clusters are left alone."
build_and_install "$ROOT"

DIR=$(mktemp -d /tmp/claude-demo.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
PGBIN=$(pg_bindir)
PORT=$(( 20000 + RANDOM % 20000 ))
as_user() { run_unprivileged env -C "$DIR" "$@"; }

MOCK_PID=
cleanup() {
	if [ "${KEEP:-0}" != 1 ]; then
		as_user "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
		[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true
		rm -rf "$DIR"
	fi
}
trap cleanup EXIT

as_user "$PGBIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
# the key goes into a file only the server can read; it is never printed
umask 077
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
	echo "Using the real Claude API (ANTHROPIC_API_KEY is set)."
	printf '%s\n' "$ANTHROPIC_API_KEY" > "$DIR/api_key"
	ENDPOINT=""
else
	echo "ANTHROPIC_API_KEY is not set: using the bundled mock API (it echoes the prompt)."
	as_user bash "$ROOT/test/mock/make-certs.sh" "$DIR/certs"
	run_unprivileged node "$ROOT/test/mock/mock-api.js" --cert "$DIR/certs/server.pem" \
		--key "$DIR/certs/server.key" --port 0 --control-port 0 --keys demo-key \
		--max-lifetime-s 7200 > "$DIR/mock.out" 2> "$DIR/mock.err" &
	for _ in $(seq 100); do grep -q port "$DIR/mock.out" 2>/dev/null && break; sleep 0.1; done
	MOCK_PORT=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$DIR/mock.out")
	# the node process itself: runuser does not pass signals on
	MOCK_PID=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$DIR/mock.out")
	[ -n "$MOCK_PORT" ] || { echo "the mock did not start:"; cat "$DIR/mock.err"; exit 1; }
	echo demo-key > "$DIR/api_key"
	ENDPOINT="claude.base_url = 'https://127.0.0.1:$MOCK_PORT'
claude.ca_file = '$DIR/certs/ca.pem'"
fi
umask 022
[ "$(id -u)" = 0 ] && chown postgres: "$DIR/api_key"
cat >> "$DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
shared_preload_libraries = 'claude'
claude.api_key_file = '$DIR/api_key'
$ENDPOINT
CONF
as_user "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null

PSQL=("$PGBIN/psql" -X -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
as_user "${PSQL[@]}" -e <<'SQL'
CREATE EXTENSION claude;
SELECT claude_complete('In one sentence: why is the sky blue?', max_tokens => 100);
SELECT claude_complete('Translate to French: good morning', system => 'Reply with the translation only.');
SELECT r->'usage' AS usage, r->>'stop_reason' AS stop_reason
FROM claude_messages('{"max_tokens": 50, "messages": [{"role": "user", "content": "Say hi"}]}') AS r;
-- one pooled worker serves every session
SELECT backend_type, count(*) FROM pg_stat_activity WHERE backend_type LIKE 'claude%' GROUP BY 1;
SQL
as_user "${PSQL[@]}" -e <<'SQL'
-- fill a column from a prompt template, many requests at once
CREATE TABLE tickets (id int PRIMARY KEY, subject text, category text);
INSERT INTO tickets VALUES (1, 'App crashes on login'), (2, 'How do I export my data?'), (3, 'Please add dark mode');
CALL claude_enrich('tickets', 'category', 'Answer bug, question or request only. Ticket: {subject}', max_tokens => 10);
SELECT id, subject, category FROM tickets ORDER BY id;
-- structured output: exactly one label, or a JSON object that fits a schema
SELECT claude_classify('The app crashes when I log in', ARRAY['bug', 'question', 'request']);
SELECT claude_extract('Invoice 1042 from ACME Corp, total 99.50 EUR',
  '{"type": "object", "properties": {"customer": {"type": "string"}, "total": {"type": "number"}},
    "required": ["customer", "total"]}');
SQL
if [ -z "${ANTHROPIC_API_KEY:-}" ]; then
	# the mock ends batches within a second; the real API may take hours
	echo "The same rows through the Message Batches API (half price), written back by a worker:"
	as_user "${PSQL[@]}" -q -c "ALTER SYSTEM SET claude.batch_poll_interval = 1" -c "SELECT pg_reload_conf()" >/dev/null
	as_user "${PSQL[@]}" -c "CALL claude_enrich('tickets', 'category', 'Batch: {subject}', mode => 'batch', only_missing => false)"
	for _ in $(seq 300); do
		[ "$(as_user "${PSQL[@]}" -Atc "SELECT count(*) FROM claude_batches WHERE results_at IS NULL")" = 0 ] && break
		sleep 0.1
	done
	as_user "${PSQL[@]}" -e -c "SELECT id, status, requests, succeeded, rows_written, cost_usd FROM claude_batches" \
		-c "SELECT id, category FROM tickets ORDER BY id"
fi
as_user "${PSQL[@]}" -e <<'SQL'
-- what it all did and cost
SELECT requests, succeeded, failed, cache_hits, input_tokens, output_tokens, cost_usd, latency_p50_ms FROM claude_stats;
SELECT day, role, requests, input_tokens, output_tokens, cost_usd FROM claude_usage;
SQL
echo "An error, with its SQLSTATE class:"
as_user "${PSQL[@]}" -v VERBOSITY=verbose -c "SELECT claude_complete('x', max_tokens => 0)" 2>&1 | head -2 || true

if [ "${KEEP:-0}" = 1 ]; then
	echo
	echo "The server keeps running. Connect:  psql -h $DIR -p $PORT -U postgres"
	echo "Stop it:  $PGBIN/pg_ctl -D $DIR/data stop"
fi
echo "demo finished"
