# Shared helpers for the project's shell scripts (sourced, not run).

# Run a command as root: directly when we are root, else through sudo.
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# PostgreSQL refuses to run as root: tests and the demo run as this user.
run_unprivileged() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A copy of the tree that the unprivileged user can write to (root only;
# others use the tree as it is).  Prints its path.
unprivileged_tree() {
	local root=$1
	if [ "$(id -u)" != 0 ]; then echo "$root"; return; fi
	local work
	work=$(mktemp -d /tmp/claude-work.XXXXXX)
	cp -a "$root/." "$work/"
	if [ -f "$root/../shared/anthropic-openapi.json" ]; then
		cp "$root/../shared/anthropic-openapi.json" "$work/test/steady/"
	fi
	chown -R postgres: "$work"
	echo "$work"
}

# Install missing dependencies, build and install the extension.
build_and_install() {
	bash "$1/test/install-deps.sh"
	make -C "$1" -s
	as_root make -C "$1" -s install
}

pg_bindir() {
	pg_config --bindir
}
