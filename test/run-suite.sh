#!/usr/bin/env bash
# The test suite proper; runs as an unprivileged user in a writable tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PGBIN=$(pg_config --bindir)
PGXS_SRC=$(dirname "$(dirname "$(pg_config --pgxs)")")
export PATH="$PGBIN:$PATH"
export PG_REGRESS="$PGXS_SRC/test/regress/pg_regress"
export TESTDIR="$PWD"
# where 17's PostgreSQL::Test::Utils puts what 15's puts under TESTDIR
export TESTDATADIR="$PWD/tmp_check" TESTLOGDIR="$PWD/tmp_check/log"
export CLAUDE_OPENAPI="${CLAUDE_OPENAPI:-$PWD/test/steady/anthropic-openapi.json}"
[ -f "$CLAUDE_OPENAPI" ] || CLAUDE_OPENAPI="$PWD/../shared/anthropic-openapi.json"

rm -rf tmp_check results regression.diffs regression.out
mkdir -p tmp_check

echo "== mock API self-check =="
bash test/mock/selftest.sh | tail -n 1

echo "== pg_regress =="
perl -I test/perl test/regress.pl

echo "== TAP =="
# Two files at a time: they mostly wait (on workers, the mock, timeouts),
# so this halves the wall time on two cores.  Each file has its own
# clusters, ports and mock; the launcher's file, the longest by far,
# goes first so it does not run alone at the end.
tests=${PROVE_TESTS:-$(ls test/t/032_launcher.pl; ls test/t/*.pl | grep -v 032_launcher)}
prove ${PROVE_FLAGS:--j2 --timer} -I "$PGXS_SRC/test/perl" -I test/perl $tests
