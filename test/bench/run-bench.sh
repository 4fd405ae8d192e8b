#!/usr/bin/env bash
# make bench: how much the extension adds to a call, and how well its shared
# HTTP worker keeps connections, measured against bare libcurl and curl(1).
#
# Installs what it needs, builds and installs the extension, then (as the
# postgres OS user when run as root) starts the TLS mock API and a throwaway
# cluster in a temporary directory and measures, REPS times each, side by side:
#   a. per-call cost: N sequential requests from bare_client (one libcurl easy
#      handle, kept alive) vs. N claude_complete() calls in one statement and
#      vs. N one-call statements from one psql session;
#   b. 100 short-lived psql sessions (10 at a time) each making one call: how
#      many TLS handshakes the mock saw, vs. 100 curl(1) processes;
#   c. a cache hit vs. the primary-key lookup it needs;
#   d. a shared requests-per-minute limit against the mock enforcing it;
#   e. claude_complete_many and claude_enrich at 200 ms latency (HTTP/1.1, 2);
#   f. an INSERT of 10,000 rows with an AFTER trigger, until all are filled;
#   g. a Message Batch of 20,000 2 kB rows: submission, write-back, memory;
#   h. a single call of one role beside another role's 2 x 3,000 bulk prompts;
#   i. streaming: the first row of claude_stream through a cursor vs. a bare
#      streaming libcurl client's first delta; the HTTP worker's CPU time per
#      request, streamed and not;
#   j. 100 short-lived sessions over a 20 ms round trip (test/bench/
#      delay-proxy.js), through the worker's pool, vs. 100 curl processes;
#   k. the HTTP worker's CPU time per request over 100,000 requests at zero
#      latency, and its RSS every 10,000 (1,000,000 with BENCH_LONG=1).
#   l. the natural SQL at 200 ms latency over 1,000 rows: SELECT id,
#      claude_complete(...) FROM t and UPDATE t SET c = claude_complete(...)
#      against claude_complete_many of the same prompts, and the SELECT with
#      claude.prefetch = 0 over 20 rows against one at a time's 5 rows/s.
# Reports medians.  No timing assertions: it fails only if something does not
# run.
#
# Environment: BENCH_N (default 2000), BENCH_REPS (3), BENCH_SESSIONS (100),
# BENCH_PARALLEL (10), BENCH_BULK_N (1000), BENCH_TRIGGER_N (10000),
# BENCH_BATCH_N (20000), BENCH_STREAM_N (100), BENCH_CPU_N (5000), BENCH_CAP_N
# (100000), BENCH_LONG=1 (1,000,000 requests), BENCH_PREFETCH_N (1000),
# BENCH_PREFETCH_OFF_N (20), BENCH_ONLY=prefetch (section l alone, in about
# a minute), BENCH_KEEP=1 keeps the temporary directory.
set -euo pipefail

# ------------------------------------------------------------- inner phase
# Runs as the unprivileged user, in the temporary directory, from a copy of
# this script; everything it needs was copied there.
if [ "${1:-}" = "--inner" ]; then
	T=$2
	BIN=$3
	export HOME=$T PGHOST=$T PGUSER=bench PGDATABASE=postgres
	# the cache must not answer for the API (the GUC exists: always set it)
	export PGOPTIONS='-c claude.cache=off'
	N=${BENCH_N:-2000}
	REPS=${BENCH_REPS:-3}
	SESSIONS=${BENCH_SESSIONS:-100}
	PAR=${BENCH_PARALLEL:-10}
	MAXCONN=16
	cd "$T"

	MOCK_PID=
	cleanup() {
		set +e
		if [ -f "$T/data/postmaster.pid" ]; then
			"$BIN/pg_ctl" -D "$T/data" -m fast -t 20 -w stop >/dev/null 2>&1 ||
				"$BIN/pg_ctl" -D "$T/data" -m immediate -t 10 -w stop >/dev/null 2>&1
		fi
		exec 9>&- # EOF on the mock's stdin: it exits
		exec 8>&- 2>/dev/null # and on the delaying proxy's
		[ -n "${MOCK2_PID:-}" ] && kill "$MOCK2_PID" 2>/dev/null
		if [ -n "$MOCK_PID" ]; then
			for _ in $(seq 50); do kill -0 "$MOCK_PID" 2>/dev/null || break; sleep 0.1; done
			kill "$MOCK_PID" 2>/dev/null
		fi
	}
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	die() { echo "bench: $*" >&2; exit 1; }
	now() { echo "$EPOCHREALTIME"; }
	elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
	median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
	calc() { awk "BEGIN { printf \"$1\", $2 }"; }
	# wait_sql query expected tries [command run each try]: poll every 0.1 s
	wait_sql() {
		for _ in $(seq "$3"); do
			[ "$("${PSQL[@]}" -c "$1")" = "$2" ] && return 0
			[ -n "${4:-}" ] && "$4"
			sleep 0.1
		done
		return 0
	}

	# ---- mock API
	bash "$T/make-certs.sh" "$T/certs"
	mkfifo "$T/mock.in"
	node "$T/mock-api.js" --cert "$T/certs/server.pem" --key "$T/certs/server.key" \
		--port 0 --control-port 0 --keys bench-key --exit-on-stdin-eof \
		<"$T/mock.in" >"$T/mock.out" 2>"$T/mock.err" &
	MOCK_PID=$!
	exec 9>"$T/mock.in"
	for _ in $(seq 100); do
		[ -s "$T/mock.out" ] && break
		kill -0 "$MOCK_PID" 2>/dev/null || { cat "$T/mock.err" >&2; die "the mock API did not start"; }
		sleep 0.1
	done
	APORT=$(grep -o '"port":[0-9]*' "$T/mock.out" | cut -d: -f2)
	CPORT=$(grep -o '"control_port":[0-9]*' "$T/mock.out" | cut -d: -f2)
	[ -n "$APORT" ] && [ -n "$CPORT" ] || die "the mock API did not print its ports"
	URL="https://localhost:$APORT"
	CA="$T/certs/ca.pem"
	mock_reset() { curl -sSf -X POST "http://127.0.0.1:$CPORT/reset" >/dev/null; }
	mock_stat() { curl -sSf "http://127.0.0.1:$CPORT/stats" | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
	check_requests() { # label expected
		local got
		got=$(mock_stat requests)
		[ "$got" = "$2" ] || die "$1: the mock saw $got requests, expected $2"
	}
	# curl_calls parallel base_url prompt: SESSIONS curl(1) processes, a connection each
	curl_calls() {
		seq "$SESSIONS" | xargs -P "$1" -I{} curl -sS --fail --http1.1 -o /dev/null \
			--cacert "$CA" -H 'x-api-key: bench-key' -H 'anthropic-version: 2023-06-01' \
			-H 'content-type: application/json' -H 'Expect:' \
			--data "{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":\"$3 {}\"}]}" \
			"$2/v1/messages"
	}

	# ---- prefetch (issue 28): the SQL people write first against the bulk
	# function, the same prompts (BENCH_PREFETCH_N rows) at 200 ms latency
	# and MAXCONN connections: (a) claude_complete_many, (b) SELECT id,
	# claude_complete(...) FROM t, (c) UPDATE t SET c = claude_complete(...),
	# (d) (b) with claude.prefetch = 0 over BENCH_PREFETCH_OFF_N rows against
	# 1 / latency.  Each form is one statement timed by psql's \timing, its
	# rows sent to /dev/null; the cache is off and the mock must see one
	# request a row.  A form whose plan has no ClaudePrefetch node goes one
	# at a time (5 rows/s), so it runs over the small sample instead.
	# Sets PF_LINES.
	prefetch_bench() {
		local n off lat have
		n=${BENCH_PREFETCH_N:-1000}
		off=${BENCH_PREFETCH_OFF_N:-20}
		[ "$off" -le "$n" ] || off=$n
		lat=200
		have=$("${PSQL[@]}" -c "SELECT count(*) FROM pg_settings WHERE name = 'claude.prefetch'")
		"${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_prefetch;
			CREATE TABLE bench_prefetch (id int PRIMARY KEY, body text, c text);
			INSERT INTO bench_prefetch SELECT i, 'document ' || i, NULL FROM generate_series(1, $n) i" \
			-c "VACUUM ANALYZE bench_prefetch" >/dev/null 2>&1 || die "the prefetch table was not made"
		# the pool's connections are open before anything is timed
		mock_reset
		"${PSQL[@]}" -c "SELECT count(*) FROM claude_complete_many(array(
			SELECT 'prefetch warm ' || i FROM generate_series(1, $((2 * MAXCONN))) i))" >/dev/null ||
			die "prefetch warm-up failed"
		# pf_run label rows sql [settings]: PF_RATE rows/s, PF_ROW_MS ms a
		# row, PF_CONC the mock's peak of requests at once
		pf_run() {
			mock_reset
			curl -sSf -X POST -d "{\"latency_ms\": $lat}" "http://127.0.0.1:$CPORT/config" >/dev/null
			printf 'SET claude.cache = off;\n%s\n\\o /dev/null\n\\timing on\n%s;\n' "${4:-}" "$3" >"$T/prefetch.sql"
			out=$("${PSQL[@]}" -f "$T/prefetch.sql") || die "prefetch $1 failed"
			ms=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n1)
			[ -n "$ms" ] || die "prefetch $1: no timing in: $out"
			check_requests "prefetch $1" "$2"
			PF_RATE=$(calc %.1f "$2 * 1000 / $ms")
			PF_ROW_MS=$(calc %.1f "$ms / $2")
			PF_CONC=$(mock_stat max_concurrency)
		}
		# pf_form label sql: over every row when EXPLAIN (which sends
		# nothing) shows the node, else over the sample, as it goes one at
		# a time; sets PF_ROWS and PF_NODE too
		pf_form() {
			local plan
			plan=$("${PSQL[@]}" -c "EXPLAIN $2" 2>&1) || true
			if [[ $plan == *ClaudePrefetch* ]]; then
				PF_ROWS=$n PF_NODE="ClaudePrefetch in the plan"
				pf_run "$1" "$n" "$2"
			else
				PF_ROWS=$off PF_NODE="NO ClaudePrefetch in the plan"
				pf_run "$1" "$off" "$2 WHERE id <= $off"
			fi
		}
		local a b c d ca cb cc cd nb nc rb rc dms
		pf_run "(a) complete_many" "$n" "SELECT count(*) FROM claude_complete_many(array(
			SELECT 'Summarize: ' || body FROM bench_prefetch ORDER BY id))"
		a=$PF_RATE ca=$PF_CONC
		pf_form "(b) SELECT" "SELECT id, claude_complete('Summarize: ' || body) FROM bench_prefetch"
		b=$PF_RATE cb=$PF_CONC rb=$PF_ROWS nb=$PF_NODE
		pf_form "(c) UPDATE" "UPDATE bench_prefetch SET c = claude_complete('Summarize: ' || body)"
		c=$PF_RATE cc=$PF_CONC rc=$PF_ROWS nc=$PF_NODE
		pf_run "(d) prefetch = 0" "$off" "SELECT id, claude_complete('Summarize: ' || body) FROM bench_prefetch WHERE id <= $off" \
			"$([ "$have" = 1 ] && echo 'SET claude.prefetch = 0;')"
		d=$PF_RATE cd=$PF_CONC dms=$PF_ROW_MS
		curl -sSf -X POST -d '{"latency_ms": 0}' "http://127.0.0.1:$CPORT/config" >/dev/null
		PF_LINES="natural SQL (claude.prefetch), $n rows at $lat ms, $MAXCONN connections; rows/s, peak requests at once:"$'\n'
		[ "$have" = 1 ] ||
			PF_LINES+="  WITHOUT THE FEATURE (no claude.prefetch setting): every call waits for the one before"$'\n'
		PF_LINES+="  (a) claude_complete_many:              $a rows/s ($ca at once)"$'\n'
		PF_LINES+="  (b) SELECT id, claude_complete(...):   $b rows/s ($cb at once, $rb rows; $nb) = $(calc %.2f "$b / $a") of (a) (target >= 0.90)"$'\n'
		PF_LINES+="  (c) UPDATE SET c = claude_complete():  $c rows/s ($cc at once, $rc rows; $nc) = $(calc %.2f "$c / $a") of (a) (target >= 0.90)"$'\n'
		PF_LINES+="  (d) (b) with claude.prefetch = 0:      $d rows/s ($cd at once, $off rows, $dms ms a row) = $(calc %.1f "$d * $lat / 10")% of the one-at-a-time ideal $(calc %.0f "1000 / $lat")/s (target: no slower than without the feature)"
	}

	# ---- throwaway cluster, unix socket in $T
	PORT=
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [ ! -e "$T/.s.PGSQL.$p" ]; then
			PORT=$p
			break
		fi
	done
	[ -n "$PORT" ] || die "no free port"
	export PGPORT=$PORT
	printf 'bench-key\n' >"$T/api.key"
	chmod 600 "$T/api.key"
	"$BIN/initdb" -D "$T/data" -U bench -A trust -E UTF8 --no-sync >"$T/initdb.log" 2>&1 ||
		{ cat "$T/initdb.log" >&2; die "initdb failed"; }
	cat >>"$T/data/postgresql.conf" <<-EOF
		port = $PORT
		listen_addresses = ''
		unix_socket_directories = '$T'
		max_connections = 100
		shared_preload_libraries = 'claude'
		claude.base_url = '$URL'
		claude.ca_file = '$CA'
		claude.api_key_file = '$T/api.key'
		claude.max_connections = $MAXCONN
	EOF
	"$BIN/pg_ctl" -D "$T/data" -l "$T/postgres.log" -t 60 -w start >/dev/null ||
		{ cat "$T/postgres.log" >&2; die "the cluster did not start"; }
	PSQL=("$BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1)
	"${PSQL[@]}" -c 'CREATE EXTENSION claude' >/dev/null
	WPID=
	for _ in $(seq 100); do
		WPID=$("${PSQL[@]}" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'claude http worker'")
		[ -n "$WPID" ] && break
		sleep 0.1
	done
	[ -n "$WPID" ] || die "the claude http worker did not start"
	if [ "${BENCH_ONLY:-}" = prefetch ]; then
		prefetch_bench
		printf '\n== claude bench, prefetch section only (%s cores) ==\n%s\n' "$(nproc)" "$PF_LINES"
		exit 0
	fi
	# warm up both sides (the worker's first connection, node's JIT); from
	# here on count every TLS handshake the worker makes
	mock_reset
	"${PSQL[@]}" -c "SELECT count(claude_complete('warm up ' || i)) FROM generate_series(1, 1000) i" >/dev/null
	EXT_TLS=$(mock_stat tls_handshakes)
	"$T/bare_client" --url "$URL" --cacert "$CA" --key bench-key -n 1000 --prefix 'warm up' >/dev/null

	# N separate statements, for the client round trip
	for i in $(seq "$N"); do echo "SELECT claude_complete('bench $i');"; done >"$T/separate.sql"
	cat >"$T/one.sql" <<-EOF
		SET claude.cache = off;
		\\timing on
		SELECT count(claude_complete('bench ' || i)) FROM generate_series(1, $N) i;
	EOF

	declare -a B_US E1_US ES_US S_WALL S_TLS S_TCP S_CONC C_WALL C_TLS
	echo "bench: $N calls per form, $SESSIONS sessions ($PAR at a time), $REPS rounds; worker pid $WPID"
	for r in $(seq "$REPS"); do
		# bare libcurl, one kept-alive connection
		mock_reset
		out=$("$T/bare_client" --url "$URL" --cacert "$CA" --key bench-key -n "$N") ||
			die "bare_client failed"
		check_requests bare_client "$N"
		B_US[r]=$(echo "$out" | sed -n 's/.*, \([0-9.]*\) us\/request$/\1/p')

		# one statement, N calls; psql's \timing measures the statement alone
		mock_reset
		out=$("${PSQL[@]}" -f "$T/one.sql") || die "one-statement run failed"
		[ "$(echo "$out" | head -n1)" = "$N" ] || die "one-statement run returned: $out"
		ms=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n1)
		[ -n "$ms" ] || die "no timing in: $out"
		check_requests "one statement" "$N"
		EXT_TLS=$((EXT_TLS + $(mock_stat tls_handshakes)))
		E1_US[r]=$(calc %.1f "$ms * 1000 / $N")

		# N statements, one session (wall time of the whole psql run)
		mock_reset
		t0=$(now)
		"${PSQL[@]}" -f "$T/separate.sql" >/dev/null || die "separate-statement run failed"
		t1=$(now)
		check_requests "separate statements" "$N"
		EXT_TLS=$((EXT_TLS + $(mock_stat tls_handshakes)))
		ES_US[r]=$(calc %.1f "$(elapsed "$t0" "$t1") * 1e6 / $N")

		# short-lived sessions, PAR at a time
		mock_reset
		t0=$(now)
		seq "$SESSIONS" | xargs -P "$PAR" -I{} "${PSQL[@]}" \
			-c "SELECT claude_complete('session {} round $r')" >/dev/null ||
			die "short-lived sessions failed"
		t1=$(now)
		check_requests "short-lived sessions" "$SESSIONS"
		S_WALL[r]=$(elapsed "$t0" "$t1")
		S_TLS[r]=$(mock_stat tls_handshakes)
		S_TCP[r]=$(mock_stat tcp_connections)
		S_CONC[r]=$(mock_stat max_concurrency)
		EXT_TLS=$((EXT_TLS + S_TLS[r]))

		# the same number of curl(1) processes, each with its own connection
		mock_reset
		t0=$(now)
		curl_calls "$PAR" "$URL" session || die "curl processes failed"
		t1=$(now)
		check_requests "curl processes" "$SESSIONS"
		C_WALL[r]=$(elapsed "$t0" "$t1")
		C_TLS[r]=$(mock_stat tls_handshakes)

		printf 'round %d: bare %s us, one statement %s us, separate %s us; sessions %s new TLS / %s TCP, %s concurrent, in %.2f s; curl %s TLS in %.2f s\n' \
			"$r" "${B_US[r]}" "${E1_US[r]}" "${ES_US[r]}" "${S_TLS[r]}" "${S_TCP[r]}" "${S_CONC[r]}" "${S_WALL[r]}" \
			"${C_TLS[r]}" "${C_WALL[r]}"
	done

	# ---- cache hit against the primary-key lookup it needs, same session
	HITS=${BENCH_HITS:-20000}
	"${PSQL[@]}" -c "SET claude.cache = on" -c "SELECT claude_complete('cached bench prompt')" >/dev/null
	for _ in $(seq 100); do
		[ "$("${PSQL[@]}" -c "SELECT count(*) FROM claude_cache")" = 1 ] && break
		sleep 0.1
	done
	cat >"$T/hits.sql" <<-EOF
		SET claude.cache = on;
		\\timing on
		DO \$\$ DECLARE k bytea := (SELECT key FROM claude_cache LIMIT 1); r jsonb;
		BEGIN FOR i IN 1..$HITS LOOP SELECT response INTO r FROM claude_cache WHERE key = k; END LOOP; END \$\$;
		DO \$\$ DECLARE t text;
		BEGIN FOR i IN 1..$HITS LOOP t := claude_complete('cached bench prompt'); END LOOP; END \$\$;
	EOF
	declare -a PK_US HIT_US
	for r in $(seq "$REPS"); do
		mock_reset
		out=$("${PSQL[@]}" -f "$T/hits.sql") || die "cache hit run failed"
		check_requests "cache hits" 0
		PK_US[r]=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sed -n 1p | awk -v n="$HITS" '{ printf "%.2f", $1 * 1000 / n }')
		HIT_US[r]=$(echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sed -n 2p | awk -v n="$HITS" '{ printf "%.2f", $1 * 1000 / n }')
		printf 'round %d: primary-key lookup %s us, cache hit %s us\n' "$r" "${PK_US[r]}" "${HIT_US[r]}"
	done
	pk=$(median "${PK_US[@]}")
	hit=$(median "${HIT_US[@]}")

	# ---- shared rate limit against a server that enforces the same limit:
	# sessions call as fast as they can; the extension must keep the server
	# busy at its limit without ever provoking a 429
	RPM=${BENCH_RPM:-6000}
	RL_SECS=${BENCH_RL_SECS:-12}
	RL_WARM=2
	RL_SESSIONS=${BENCH_RL_SESSIONS:-8}
	"${PSQL[@]}" -c "ALTER SYSTEM SET claude.requests_per_minute = $RPM" -c "SELECT pg_reload_conf()" >/dev/null
	mock_reset
	curl -sSf -X POST -d "{\"rpm\": $RPM}" "http://127.0.0.1:$CPORT/config" >/dev/null
	sleep 1
	t0=$(now)
	seq "$RL_SESSIONS" | xargs -P "$RL_SESSIONS" -I{} "${PSQL[@]}" -c "DO \$\$
		DECLARE stop timestamptz := clock_timestamp() + interval '$RL_SECS s';
		BEGIN
			WHILE clock_timestamp() < stop LOOP
				PERFORM claude_complete('limited {} ' || random());
			END LOOP;
		END \$\$" >/dev/null || die "rate-limited sessions failed"
	curl -sSf "http://127.0.0.1:$CPORT/requests?since=0" >"$T/rl.json"
	read -r RL_RATE RL_429_WARM RL_429_TOTAL < <(node -e '
		const [file, t0, warm, secs] = [process.argv[1], +process.argv[2] * 1000, +process.argv[3], +process.argv[4]];
		const r = JSON.parse(require("fs").readFileSync(file, "utf8"));
		const from = t0 + warm * 1000, to = t0 + secs * 1000;
		const ok = r.filter((x) => x.status === 200 && x.t_start >= from && x.t_start < to).length;
		const late429 = r.filter((x) => x.status === 429 && x.t_start >= from).length;
		const all429 = r.filter((x) => x.status === 429).length;
		console.log((ok / ((to - from) / 1000)).toFixed(1), late429, all429);
	' "$T/rl.json" "$t0" "$RL_WARM" "$RL_SECS")
	"${PSQL[@]}" -c "ALTER SYSTEM RESET claude.requests_per_minute" -c "SELECT pg_reload_conf()" >/dev/null
	curl -sSf -X POST -d '{"rpm": null}' "http://127.0.0.1:$CPORT/config" >/dev/null

	# ---- bulk: 1,000 prompts at 200 ms server latency and 16 connections;
	# the ideal is 16 / 0.2 s = 80 requests/s
	BULK_N=${BENCH_BULK_N:-1000}
	IDEAL=$((MAXCONN * 5))
	curl -sSf -X POST -d '{"latency_ms": 200}' "http://127.0.0.1:$CPORT/config" >/dev/null
	bulk_rate() { # label sql [settings]
		local t0 t1
		mock_reset
		curl -sSf -X POST -d '{"latency_ms": 200}' "http://127.0.0.1:$CPORT/config" >/dev/null
		t0=$(now)
		"${PSQL[@]}" -c "SET claude.cache = off; ${3:-} $2" >/dev/null 2>&1 || die "$1 failed"
		t1=$(now)
		calc %.1f "$BULK_N / $(elapsed "$t0" "$t1")"
	}
	"${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_docs; CREATE TABLE bench_docs (id int PRIMARY KEY, body text, summary text);
		INSERT INTO bench_docs SELECT i, 'document ' || i, NULL FROM generate_series(1, $BULK_N) i" >/dev/null
	MANY_RATE=$(bulk_rate complete_many "SELECT count(*) FROM claude_complete_many(array(SELECT 'bulk ' || i FROM generate_series(1, $BULK_N) i))")
	check_requests complete_many "$BULK_N"
	ENRICH_RATE=$(bulk_rate enrich "CALL claude_enrich('bench_docs', 'summary', 'Summarize: {body}', batch_size => 100)")
	check_requests enrich "$BULK_N"
	curl -sSf -X POST -d '{"latency_ms": 0}' "http://127.0.0.1:$CPORT/config" >/dev/null

	# the same over HTTP/2, where the mock multiplexes streams on each connection
	node "$T/mock-api.js" --cert "$T/certs/server.pem" --key "$T/certs/server.key" --http2 \
		--port 0 --control-port 0 --keys bench-key --latency-ms 200 --max-lifetime-s 600 \
		>"$T/mock2.out" 2>"$T/mock2.err" &
	MOCK2_PID=$!
	for _ in $(seq 100); do [ -s "$T/mock2.out" ] && break; sleep 0.1; done
	APORT2=$(grep -o '"port":[0-9]*' "$T/mock2.out" | cut -d: -f2)
	[ -n "$APORT2" ] || die "the HTTP/2 mock did not start"
	"${PSQL[@]}" -c "UPDATE bench_docs SET summary = NULL" >/dev/null
	H2="SET claude.base_url = 'https://localhost:$APORT2';"
	MANY_H2=$(bulk_rate "complete_many over HTTP/2" "SELECT count(*) FROM claude_complete_many(array(SELECT 'bulk2 ' || i FROM generate_series(1, $BULK_N) i))" "$H2")
	ENRICH_H2=$(bulk_rate "enrich over HTTP/2" "CALL claude_enrich('bench_docs', 'summary', 'Summarize: {body}', batch_size => 100)" "$H2")
	kill "$MOCK2_PID" 2>/dev/null
	MOCK2_PID=

	prefetch_bench

	# ---- fair share: one role's single call beside another role's bulk
	# work (two sessions of FAIR_N prompts each) at 20 ms latency; its
	# latency against the same call with nothing else running
	FAIR_N=${BENCH_FAIR_N:-3000}
	curl -sSf -X POST -d '{"latency_ms": 20}' "http://127.0.0.1:$CPORT/config" >/dev/null
	"${PSQL[@]}" -c "DROP ROLE IF EXISTS bench_bulk" -c "CREATE ROLE bench_bulk" \
		-c "GRANT EXECUTE ON FUNCTION claude_complete_many(text[], text, int, text, float8, boolean) TO bench_bulk" >/dev/null
	single_ms() {
		"${PSQL[@]}" -c "DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); t text;
			BEGIN t := claude_complete('single ' || random());
			RAISE NOTICE 'ms=%', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1); END \$\$" 2>&1 |
			sed -n 's/.*ms=\([0-9.]*\).*/\1/p'
	}
	declare -a ALONE_MS BESIDE_MS
	for i in $(seq 5); do ALONE_MS[i]=$(single_ms); done
	FAIR_PIDS=()
	for s in 1 2; do
		"${PSQL[@]}" -c "SET ROLE bench_bulk" -c "SELECT count(*) FROM claude_complete_many(array(SELECT 'fair $s ' || i || ' ' || random() FROM generate_series(1, $FAIR_N) i))" >/dev/null &
		FAIR_PIDS+=($!)
	done
	wait_sql "SELECT in_flight + queued > 200 FROM claude_stats" t 100
	for i in $(seq 5); do
		BESIDE_MS[i]=$(single_ms)
		sleep 0.3
	done
	FAIR_BACKLOG=$("${PSQL[@]}" -c "SELECT in_flight + queued FROM claude_stats")
	wait "${FAIR_PIDS[@]}" || die "bulk sessions failed"
	curl -sSf -X POST -d '{"latency_ms": 0}' "http://127.0.0.1:$CPORT/config" >/dev/null
	FAIR_ALONE=$(median "${ALONE_MS[@]}")
	FAIR_BESIDE=$(median "${BESIDE_MS[@]}")
	printf 'fair share: single call alone %s ms, beside 2 x %s bulk prompts %s ms (backlog still %s)\n' \
		"$FAIR_ALONE" "$FAIR_N" "$FAIR_BESIDE" "$FAIR_BACKLOG"

	# ---- triggers: one INSERT of 10,000 rows with an AFTER trigger; time
	# until every row is filled, against the ideal 16 connections / 20 ms
	TRIG_N=${BENCH_TRIGGER_N:-10000}
	TRIG_IDEAL=$((MAXCONN * 50))
	"${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_tickets;
		CREATE TABLE bench_tickets (id int PRIMARY KEY, subject text, category text);
		CREATE TRIGGER classify AFTER INSERT ON bench_tickets FOR EACH ROW
		  EXECUTE FUNCTION claude_enrich_trigger('category', 'Classify: {subject}')" >/dev/null
	mock_reset
	curl -sSf -X POST -d '{"latency_ms": 20}' "http://127.0.0.1:$CPORT/config" >/dev/null
	"${PSQL[@]}" -c "ALTER SYSTEM SET claude.cache = off" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 1
	t0=$(now)
	"${PSQL[@]}" -c "INSERT INTO bench_tickets SELECT i, 'ticket ' || i FROM generate_series(1, $TRIG_N) i" >/dev/null
	t_insert=$(now)
	wait_sql "SELECT count(category) FROM bench_tickets" "$TRIG_N" 1200
	t1=$(now)
	[ "$("${PSQL[@]}" -c "SELECT count(category) FROM bench_tickets")" = "$TRIG_N" ] || die "trigger jobs did not finish"
	TRIG_INSERT=$(elapsed "$t0" "$t_insert")
	TRIG_ALL=$(elapsed "$t0" "$t1")
	TRIG_REQ=$(mock_stat requests)
	# what the pool itself delivers at this latency (the mock's timers and
	# TLS add a few ms a request): the same number from one session's pipe
	t0=$(now)
	"${PSQL[@]}" -c "SELECT count(*) FROM claude_complete_many(array(SELECT 'pool ' || i FROM generate_series(1, $TRIG_N) i))" >/dev/null ||
		die "claude_complete_many at 20 ms failed"
	t1=$(now)
	TRIG_POOL=$(calc %.1f "$TRIG_N / $(elapsed "$t0" "$t1")")
	"${PSQL[@]}" -c "ALTER SYSTEM RESET claude.cache" -c "SELECT pg_reload_conf()" >/dev/null
	curl -sSf -X POST -d '{"latency_ms": 0}' "http://127.0.0.1:$CPORT/config" >/dev/null

	# ---- Message Batches: BATCH_N rows of 2 kB each through claude_enrich(mode
	# => 'batch'): submission rate, write-back rate once the batch has ended,
	# and the peak memory of the processes that handle the results file
	BATCH_N=${BENCH_BATCH_N:-20000}
	mock_reset
	curl -sSf -X POST -d '{"batch_delay_ms": 0}' "http://127.0.0.1:$CPORT/config" >/dev/null
	"${PSQL[@]}" -c "ALTER SYSTEM SET claude.batch_poll_interval = 1" -c "SELECT pg_reload_conf()" >/dev/null
	"${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_batch; CREATE TABLE bench_batch (id int PRIMARY KEY, body text, summary text);
		INSERT INTO bench_batch SELECT i, i || ' ' || repeat('x', 2000) FROM generate_series(1, $BATCH_N) i" >/dev/null
	t0=$(now)
	"${PSQL[@]}" -c "CALL claude_enrich('bench_batch', 'summary', 'Summarize: {body}', mode => 'batch')" >/dev/null 2>&1 ||
		die "batch submission failed"
	t_submit=$(now)
	DBW_PID=
	rss() { awk '/RssAnon/ { print int($2 / 1024) }' "/proc/$1/status" 2>/dev/null || echo 0; }
	HTTP_RSS=0
	DBW_RSS=0
	# the write-back itself: from the first chunk written to the end
	W_FIRST_T=
	W_FIRST_ROWS=0
	sample_rss() {
		local r
		if [ -z "$W_FIRST_T" ]; then
			r=$("${PSQL[@]}" -c "SELECT coalesce(sum(rows_written), 0) FROM claude_batches WHERE relation = 'bench_batch'::regclass")
			[ "$r" -gt 0 ] && { W_FIRST_T=$(now); W_FIRST_ROWS=$r; }
		fi
		r=$(rss "$WPID")
		[ "$r" -gt "$HTTP_RSS" ] && HTTP_RSS=$r
		[ -n "$DBW_PID" ] || DBW_PID=$("${PSQL[@]}" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'claude db worker' AND datname = current_database()")
		if [ -n "$DBW_PID" ]; then
			r=$(rss "$DBW_PID")
			[ "$r" -gt "$DBW_RSS" ] && DBW_RSS=$r
		fi
		return 0
	}
	wait_sql "SELECT count(*) FROM claude_batches WHERE relation = 'bench_batch'::regclass AND results_at IS NULL" 0 3000 sample_rss
	t1=$(now)
	[ "$("${PSQL[@]}" -c "SELECT count(summary) FROM bench_batch")" = "$BATCH_N" ] || die "batch results were not all written back"
	BATCH_SUBMIT=$(elapsed "$t0" "$t_submit")
	BATCH_APPLY=$(elapsed "$t_submit" "$t1")
	[ -n "$W_FIRST_T" ] || W_FIRST_T=$t_submit
	BATCH_WRITE=$(calc %.0f "($BATCH_N - $W_FIRST_ROWS) / $(elapsed "$W_FIRST_T" "$t1")")
	BATCH_BYTES=$("${PSQL[@]}" -c "SELECT sum(length(summary)) + $BATCH_N * 400 FROM bench_batch")
	"${PSQL[@]}" -c "ALTER SYSTEM RESET claude.batch_poll_interval" -c "SELECT pg_reload_conf()" >/dev/null

	# ---- streaming: the first row of claude_stream through a cursor vs. a
	# bare streaming client's first content_block_delta, with an answer that
	# pauses 50 ms after its first piece; and the HTTP worker's CPU time per
	# request, streamed and not, at zero latency
	STREAM_N=${BENCH_STREAM_N:-100}
	SP='[[mock:stream_pause=50]] streaming bench'
	"${PSQL[@]}" -c "CREATE OR REPLACE FUNCTION bench_first_row(n int, p text) RETURNS float8
	  LANGUAGE plpgsql AS \$\$
	DECLARE c CURSOR (q text) FOR SELECT claude_stream(q); x text; t0 timestamptz; total float8 := 0;
	BEGIN
	  FOR i IN 1..n LOOP
	    t0 := clock_timestamp();
	    OPEN c(p || ' ' || i);
	    FETCH c INTO x;
	    total := total + extract(epoch FROM clock_timestamp() - t0);
	    LOOP FETCH c INTO x; EXIT WHEN NOT FOUND; END LOOP;
	    CLOSE c;
	  END LOOP;
	  RETURN total * 1e6 / n;
	END \$\$" >/dev/null
	declare -a SB_US SE_US
	# warm up both (the cursor's plan, the connections)
	"$T/bare_client" --url "$URL" --cacert "$CA" --key bench-key -n 20 --stream --prefix "$SP warm" >/dev/null ||
		die "bare_client --stream failed"
	"${PSQL[@]}" -c "SELECT bench_first_row(20, '$SP warm')" >/dev/null || die "claude_stream through a cursor failed"
	for r in $(seq "$REPS"); do
		mock_reset
		out=$("$T/bare_client" --url "$URL" --cacert "$CA" --key bench-key -n "$STREAM_N" --stream --prefix "$SP") ||
			die "bare_client --stream failed"
		SB_US[r]=$(echo "$out" | sed -n 's/.*first delta \([0-9.]*\) us$/\1/p')
		mock_reset
		SE_US[r]=$("${PSQL[@]}" -c "SELECT round(bench_first_row($STREAM_N, '$SP round $r')::numeric, 1)") ||
			die "claude_stream through a cursor failed"
		check_requests "claude_stream" "$STREAM_N"
		[ "$(mock_stat streams)" = "$STREAM_N" ] || die "claude_stream: not every request streamed"
	done
	CPU_N=${BENCH_CPU_N:-5000}
	cpu_us() { sed 's/.*) //' "/proc/$WPID/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($12 + $13) * 1e6 / hz }'; }
	# two rounds of each, the first to warm up; the second counts
	for mode in plain streamed plain streamed; do
		[ "$mode" = streamed ] && min=0 || min=1000000
		mock_reset
		c0=$(cpu_us)
		"${PSQL[@]}" -c "SET claude.stream_min_tokens = $min" \
			-c "SELECT count(claude_complete('cpu $mode ' || i)) FROM generate_series(1, $CPU_N) i" >/dev/null ||
			die "the CPU run ($mode) failed"
		c1=$(cpu_us)
		check_requests "CPU run ($mode)" "$CPU_N"
		if [ "$mode" = streamed ]; then
			[ "$(mock_stat streams)" = "$CPU_N" ] || die "the streamed CPU run did not stream"
			CPU_STREAMED=$(calc %.1f "($c1 - $c0) / $CPU_N")
		else
			CPU_PLAIN=$(calc %.1f "($c1 - $c0) / $CPU_N")
		fi
	done
	sb=$(median "${SB_US[@]}")
	se=$(median "${SE_US[@]}")

	# ---- short-lived sessions over a 20 ms round trip: a proxy holds every
	# chunk 10 ms each way (a new connection's first bytes one round trip
	# more, for TCP's handshake); SESSIONS sessions (pgbench -C), PAR at a
	# time, one call each through the worker's pool, against as many curl
	# processes, each with its own connection
	mkfifo "$T/proxy.in"
	node "$T/delay-proxy.js" --target "127.0.0.1:$APORT" --delay-ms 10 \
		<"$T/proxy.in" >"$T/proxy.out" 2>"$T/proxy.err" &
	exec 8>"$T/proxy.in"
	for _ in $(seq 100); do [ -s "$T/proxy.out" ] && break; sleep 0.1; done
	PPORT=$(grep -o '"port":[0-9]*' "$T/proxy.out" | cut -d: -f2)
	[ -n "$PPORT" ] || die "the delaying proxy did not start"
	FAR="https://localhost:$PPORT"
	# the pool's connections to the far server are opened once, as in service
	"${PSQL[@]}" -c "SET claude.base_url = '$FAR'" \
		-c "SELECT count(*) FROM claude_complete_many(array(SELECT 'far warm ' || i FROM generate_series(1, 32) i))" >/dev/null ||
		die "calls through the delaying proxy failed"
	# pgbench -C: a new session for every call, the client's own cost small
	cat >"$T/far.sql" <<-EOF
		SET claude.base_url = '$FAR';
		SELECT claude_complete('far session ' || :client_id || ' ' || random());
	EOF
	# PAR at a time, and 2 (one per core here): with more at once than cores,
	# process start-up rather than round trips decides
	FAR_LINES=
	for fp in "$PAR" 2; do
		declare -a FS_WALL=() FS_TLS=() FC_WALL=() FC_TLS=()
		for r in $(seq "$REPS"); do
			mock_reset
			t0=$(now)
			"$BIN/pgbench" -n -C -c "$fp" -j "$fp" -t $((SESSIONS / fp)) -f "$T/far.sql" postgres \
				>"$T/pgbench.out" 2>&1 || { cat "$T/pgbench.out" >&2; die "short-lived sessions through the proxy failed"; }
			t1=$(now)
			check_requests "far sessions" "$SESSIONS"
			FS_WALL[r]=$(elapsed "$t0" "$t1")
			FS_TLS[r]=$(mock_stat tls_handshakes)
			mock_reset
			t0=$(now)
			curl_calls "$fp" "$FAR" far || die "curl processes through the proxy failed"
			t1=$(now)
			check_requests "far curl processes" "$SESSIONS"
			FC_WALL[r]=$(elapsed "$t0" "$t1")
			FC_TLS[r]=$(mock_stat tls_handshakes)
		done
		fsw=$(median "${FS_WALL[@]}")
		fcw=$(median "${FC_WALL[@]}")
		FAR_LINES+="  $fp at a time: sessions through the worker's pool $(calc %.2f "$fsw") s, $(median "${FS_TLS[@]}") new TLS handshakes; curl processes $(calc %.2f "$fcw") s, $(median "${FC_TLS[@]}") handshakes; $(calc %.1f "$fcw / $fsw")x the throughput (target >= 3x)"$'\n'
	done

	# ---- the HTTP worker's capacity and memory: CAP_N requests at zero
	# latency from the mock's canned fast path, 4 sessions of
	# claude_complete_many at a time; the worker's CPU time per request
	# (/proc) and its RSS every 10,000 requests.  BENCH_LONG=1: 1,000,000
	CAP_N=${BENCH_CAP_N:-100000}
	[ "${BENCH_LONG:-0}" = 1 ] && CAP_N=1000000
	CAP_BATCH=10000
	CAP_SESS=4
	rss_kb() { awk '/RssAnon/ { print $2 }' "/proc/$1/status"; }
	mock_reset
	curl -sSf -X POST -d '{"canned": true}' "http://127.0.0.1:$CPORT/config" >/dev/null
	declare -a CAP_RSS
	c0=$(cpu_us)
	t0=$(now)
	cap_done=0
	while [ "$cap_done" -lt "$CAP_N" ]; do
		pids=()
		for s in $(seq "$CAP_SESS"); do
			"${PSQL[@]}" -c "SELECT count(*) FROM claude_complete_many(array(
				SELECT 'cap $cap_done $s ' || i FROM generate_series(1, $((CAP_BATCH / CAP_SESS))) i))" >/dev/null &
			pids+=($!)
		done
		for p in "${pids[@]}"; do wait "$p" || die "the capacity run failed"; done
		cap_done=$((cap_done + CAP_BATCH))
		CAP_RSS+=("$(rss_kb "$WPID")")
	done
	t1=$(now)
	c1=$(cpu_us)
	check_requests "capacity" "$CAP_N"
	curl -sSf -X POST -d '{"canned": false}' "http://127.0.0.1:$CPORT/config" >/dev/null
	CAP_WALL=$(elapsed "$t0" "$t1")
	CAP_CPU=$(calc %.1f "($c1 - $c0) / $CAP_N")
	CAP_WARM=${CAP_RSS[1]:-${CAP_RSS[0]}}
	CAP_MAX=$(printf '%s\n' "${CAP_RSS[@]}" | sort -n | tail -n1)
	CAP_LAST=${CAP_RSS[-1]}
	if [ "${BENCH_LONG:-0}" = 1 ]; then
		echo "HTTP worker RSS (kB) every $CAP_BATCH requests: ${CAP_RSS[*]}"
	fi

	b=$(median "${B_US[@]}")
	e1=$(median "${E1_US[@]}")
	es=$(median "${ES_US[@]}")
	stls=$(median "${S_TLS[@]}")
	stlsmax=$(printf '%s\n' "${S_TLS[@]}" | sort -n | tail -n1)
	swall=$(median "${S_WALL[@]}")
	ctls=$(median "${C_TLS[@]}")
	cwall=$(median "${C_WALL[@]}")
	cat <<-EOF

		== claude bench ($(nproc) cores, median of $REPS) ==
		per call, one statement:      extension $(calc %.0f "$e1") us   bare curl $(calc %.0f "$b") us   ratio $(calc %.2f "$e1 / $b")x (target <= 1.20x)
		per call, one statement each: extension $(calc %.0f "$es") us   bare curl $(calc %.0f "$b") us   ratio $(calc %.2f "$es / $b")x (includes the psql round trip)
		$SESSIONS short-lived sessions:     $stls new TLS handshakes (max $stlsmax; $EXT_TLS by the worker in the whole bench, target <= $MAXCONN), $SESSIONS calls in $(calc %.2f "$swall") s
		$SESSIONS new connections (curl):   $ctls TLS handshakes, $SESSIONS calls in $(calc %.2f "$cwall") s
		bulk, $BULK_N prompts at 200 ms, $MAXCONN connections (ideal $IDEAL requests/s, target >= 90%):
		  claude_complete_many:       $MANY_RATE requests/s = $(calc %.1f "$MANY_RATE * 100 / $IDEAL")% of ideal
		  claude_enrich:              $ENRICH_RATE requests/s = $(calc %.1f "$ENRICH_RATE * 100 / $IDEAL")% of ideal
		  over HTTP/2 (multiplexed):  complete_many $MANY_H2 requests/s, enrich $ENRICH_H2 requests/s ($(calc %.1f "$MANY_H2 / $IDEAL")x and $(calc %.1f "$ENRICH_H2 / $IDEAL")x the HTTP/1.1 ideal)
		$PF_LINES
		fair share, 20 ms latency, $MAXCONN connections: a single call beside another role's 2 x $FAIR_N bulk prompts
		  median $(calc %.1f "$FAIR_BESIDE") ms, alone $(calc %.1f "$FAIR_ALONE") ms: $(calc %.2f "$FAIR_BESIDE / $FAIR_ALONE")x (target: at most one connection's wait, <= 2x), backlog behind it: $FAIR_BACKLOG requests
		triggers, one INSERT of $TRIG_N rows, 20 ms latency, $MAXCONN connections:
		  INSERT returned in $(calc %.2f "$TRIG_INSERT") s; all rows filled in $(calc %.1f "$TRIG_ALL") s = $(calc %.1f "$TRIG_N / $TRIG_ALL") rows/s = $(calc %.1f "$TRIG_N * 100 / $TRIG_ALL / $TRIG_IDEAL")% of the ideal $TRIG_IDEAL/s ($TRIG_REQ requests)
		  the pool at this latency (claude_complete_many, $TRIG_N prompts): $TRIG_POOL requests/s; the triggers reach $(calc %.1f "$TRIG_N * 100 / $TRIG_ALL / $TRIG_POOL")% of it (target >= 95%)
		cache hit:                    claude_complete $(calc %.1f "$hit") us   primary-key lookup $(calc %.1f "$pk") us   ratio $(calc %.2f "$hit / $pk")x (target <= 3.00x)
		Message Batch of $BATCH_N rows of 2 kB (results about $(calc %.0f "$BATCH_BYTES / 1048576") MB of JSONL):
		  submitted in $(calc %.2f "$BATCH_SUBMIT") s ($(calc %.0f "$BATCH_N / $BATCH_SUBMIT") rows/s); results written back $(calc %.1f "$BATCH_APPLY") s after submission ($(calc %.0f "$BATCH_N / $BATCH_APPLY") rows/s, polling every second)
  write-back from the first chunk written to the last: $BATCH_WRITE rows/s (target >= 5000)
		  private memory (RssAnon, peak of samples every 0.1 s): HTTP worker $HTTP_RSS MB, database worker $DBW_RSS MB (results go through a file)
		streaming, an answer that pauses 50 ms after its first piece, $STREAM_N requests:
		  time to first row:          claude_stream through a cursor $(calc %.0f "$se") us   bare streaming curl $(calc %.0f "$sb") us   ratio $(calc %.2f "$se / $sb")x (target <= 1.20x)
		  HTTP worker CPU per request ($CPU_N at zero latency): not streamed $CPU_PLAIN us, streamed $CPU_STREAMED us ($(calc %.2f "$CPU_STREAMED / $CPU_PLAIN")x)
		$SESSIONS short-lived sessions (pgbench -C) vs $SESSIONS curl processes, one call each, 20 ms round trip (delaying proxy):
		${FAR_LINES%$'\n'}
		HTTP worker capacity, $CAP_N requests at zero latency (canned replies), $CAP_SESS sessions of claude_complete_many:
		  $(calc %.0f "$CAP_N / $CAP_WALL") requests/s; worker CPU $CAP_CPU us/request (target <= 200); RSS $(calc %.1f "$CAP_WARM / 1024") MB after 20,000, $(calc %.1f "$CAP_MAX / 1024") MB at most, $(calc %.1f "$CAP_LAST / 1024") MB at the end (growth $(calc %.2f "($CAP_LAST - $CAP_WARM) / 1024") MB, target < 1 MB)
		rate limit $RPM/min, $RL_SESSIONS sessions: $RL_RATE requests/s = $(calc %.1f "$RL_RATE * 6000 / $RPM")% of the limit (target >= 95%), 429s after warm-up: $RL_429_WARM (target 0; $RL_429_TOTAL in all)
	EOF
	exit 0
fi

# ------------------------------------------------------------- outer phase
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/test/lib.sh"

build_and_install "$ROOT"
cc -O2 -o "$ROOT/test/bench/bare_client" "$ROOT/test/bench/bare_client.c" -lcurl

BIN=$(pg_bindir)
[ -x "$BIN/initdb" ] || BIN=/usr/lib/postgresql/15/bin

T=$(mktemp -d /tmp/claude-bench.XXXXXX)
outer_cleanup() {
	set +e
	# the inner phase stops the cluster; this is for when it was killed
	if [ -f "$T/data/postmaster.pid" ]; then
		run_unprivileged "$BIN/pg_ctl" -D "$T/data" -m immediate -t 10 -w stop >/dev/null 2>&1
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ "${status:-1}" != 0 ]; then
		echo "bench: files kept in $T" >&2
	else
		rm -rf "$T"
	fi
}
trap outer_cleanup EXIT
cp "$ROOT/test/bench/run-bench.sh" "$ROOT/test/bench/bare_client" "$ROOT/test/bench/delay-proxy.js" \
	"$ROOT/test/mock/mock-api.js" "$ROOT/test/mock/make-certs.sh" "$T/"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$T"; fi

status=0
# bounded: the whole bench normally takes about ten minutes
run_unprivileged timeout -k 30 "$([ "${BENCH_LONG:-0}" = 1 ] && echo 10800 || echo 1200)" \
	bash "$T/run-bench.sh" --inner "$T" "$BIN" || status=$?
exit $status
