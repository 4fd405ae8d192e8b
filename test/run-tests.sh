#!/usr/bin/env bash
# make test [PG=17|18]: install dependencies, build, install, then run
# pg_regress and the TAP tests as an unprivileged user against the bundled
# mock API.  On 15 (the default) the extension goes into the system's
# PostgreSQL; on 17 and 18 into a private copy of that release's server
# (test/pg-versions.sh), made afresh for each run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/lib.sh"
PG=${1:-15}

bash "$ROOT/test/install-deps.sh"
if [ "$PG" = 15 ]; then
	build_and_install "$ROOT"
else
	bash "$ROOT/test/pg-versions.sh" build "$PG" "$ROOT"
fi
# the layout of src/ is the architecture: no call up a layer, no circle
python3 "$ROOT/test/check-layout.py" "$ROOT"

WORK=$(unprivileged_tree "$ROOT")
SUITE_ENV=()
if [ "$PG" != 15 ]; then
	bash "$ROOT/test/pg-versions.sh" server "$PG" "$WORK/tmp_pg$PG"
	make -C "$ROOT/build/pg$PG" -s PG_CONFIG="$WORK/tmp_pg$PG/bin/pg_config" FOREIGN_HEADERS=1 PG= install
	[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK/tmp_pg$PG"
	SUITE_ENV=(PATH="$WORK/tmp_pg$PG/bin:$PATH")
	echo "== PostgreSQL $PG: $("$WORK/tmp_pg$PG/bin/postgres" --version), headers $("$WORK/tmp_pg$PG/bin/pg_config" --version)"
fi
status=0
run_unprivileged env "${SUITE_ENV[@]}" bash "$WORK/test/run-suite.sh" || status=$?
if [ "$WORK" != "$ROOT" ]; then
	# keep logs of a failed run where the caller can read them
	rm -rf "$ROOT/test/results"
	mkdir -p "$ROOT/test/results"
	cp -a "$WORK/regression.diffs" "$WORK/results" "$WORK/tmp_check/log" \
		"$ROOT/test/results/" 2>/dev/null || true
	[ $status = 0 ] && rm -rf "$WORK"
fi
exit $status
