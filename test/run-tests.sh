#!/usr/bin/env bash
# make test: install dependencies, build, install, then run pg_regress and
# the TAP tests as an unprivileged user against the bundled mock API.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/lib.sh"

build_and_install "$ROOT"
# the layout of src/ is the architecture: no call up a layer, no circle
python3 "$ROOT/test/check-layout.py" "$ROOT"

WORK=$(unprivileged_tree "$ROOT")
status=0
run_unprivileged bash "$WORK/test/run-suite.sh" || status=$?
if [ "$WORK" != "$ROOT" ]; then
	# keep logs of a failed run where the caller can read them
	rm -rf "$ROOT/test/results"
	mkdir -p "$ROOT/test/results"
	cp -a "$WORK/regression.diffs" "$WORK/results" "$WORK/tmp_check/log" \
		"$ROOT/test/results/" 2>/dev/null || true
	[ $status = 0 ] && rm -rf "$WORK"
fi
exit $status
