#!/usr/bin/env bash
# Install what building, testing and the demo need, if it is missing.
# Works as root or as a user with sudo.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/test/lib.sh"

PACKAGES="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libssl-dev
libipc-run-perl openssl curl nodejs npm make gcc python3 python3-prometheus-client"
missing=""
for p in $PACKAGES; do
	# nodejs may come from another repository that bundles npm
	if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
	if [ "$p" = nodejs ] && command -v node >/dev/null; then continue; fi
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# postgres_exporter and promtool for test/t/044_monitoring.pl: without their
# recommends, and with services kept from starting (a container has no init
# to start them, and a failed start would fail the install).
MONITORING="prometheus-postgres-exporter prometheus"
missing=""
for p in $MONITORING; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	policy=/usr/sbin/policy-rc.d
	made_policy=""
	if [ ! -e "$policy" ]; then
		as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
		made_policy=1
		trap 'as_root rm -f '"$policy" EXIT
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
	if [ -n "$made_policy" ]; then
		as_root rm -f "$policy"
		trap - EXIT
	fi
fi

# PostgreSQL 15 tools first on PATH for pg_config
if ! pg_config --version 2>/dev/null | grep -q ' 15\.'; then
	echo "pg_config for PostgreSQL 15 not found" >&2
	exit 1
fi

# Steady validates requests against the official OpenAPI description.
if [ ! -x "$ROOT/test/steady/node_modules/.bin/steady" ]; then
	(cd "$ROOT/test/steady" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
