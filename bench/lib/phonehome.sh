# shellcheck shell=bash
# Builds phonehome's own binaries for the bench (outside the sandbox: cargo needs the
# registry once) and decides which sections can measure phonehome at all. A part that is
# missing or does not build is not faked: its sections say "not measured" and why.

build_binaries() {
	BENCH_AGENT=
	BENCH_NO_AGENT=
	BENCH_NO_SERVER_TOOLS=
	bench_log "building the workspace (release) and the agent (router profile)"
	if ! CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --offline --release --workspace \
		--manifest-path "$BENCH_REPO/Cargo.toml" >>"$BENCH_ERRLOG" 2>&1; then
		BENCH_NO_AGENT="the workspace does not build (cargo build --release: $(grep -m1 '^error' "$BENCH_ERRLOG"))"
		BENCH_NO_SERVER_TOOLS=$BENCH_NO_AGENT
	fi
	if [[ -z $BENCH_NO_AGENT ]]; then
		if grep -qx 'fn main() {}' "$BENCH_REPO/agent/src/main.rs"; then
			BENCH_NO_AGENT="the agent is still the empty placeholder in agent/src/main.rs"
		elif CARGO_TARGET_DIR="$BENCH_TARGET" cargo build --offline --profile router -p phonehome \
			--manifest-path "$BENCH_REPO/Cargo.toml" >>"$BENCH_ERRLOG" 2>&1; then
			BENCH_AGENT=$BENCH_TARGET/router/phonehome
		else
			BENCH_NO_AGENT="the agent does not build under the router profile"
		fi
	fi
	# The agent as routers run it (static musl, built as cross/build.sh builds it), for
	# section 2: the host build above is linked dynamically, whose start-up a router's
	# agent does not pay.
	BENCH_AGENT_STATIC=
	BENCH_NO_AGENT_STATIC=
	if [[ -n $BENCH_AGENT ]]; then
		if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
			BENCH_NO_AGENT_STATIC="rustup has no x86_64-unknown-linux-musl std here (cross/build.sh x86_64 adds it)"
		elif (cd "$BENCH_REPO" && cross_cargo x86_64 stable "$BENCH_TARGET" --offline -p phonehome) >>"$BENCH_ERRLOG" 2>&1; then
			BENCH_AGENT_STATIC=$(cross_bin "$BENCH_TARGET" x86_64 phonehome)
		else
			BENCH_NO_AGENT_STATIC="its static musl build failed (see the error log)"
		fi
	fi
	if [[ -z $BENCH_NO_SERVER_TOOLS ]]; then
		local b
		for b in add-device forward-device-port list-devices phonehome-gate; do
			if [[ ! -x $BENCH_TARGET/release/$b ]]; then
				BENCH_NO_SERVER_TOOLS="the server tool '$b' is not built yet (server-scripts/src/bin/$b.rs)"
				break
			fi
		done
	fi
	if [[ -z $BENCH_NO_SERVER_TOOLS && ! -x $BENCH_REPO/server-scripts/install-server.sh ]]; then
		BENCH_NO_SERVER_TOOLS="server-scripts/install-server.sh is missing"
	fi
	# the lab installs and runs the binaries from here
	export PHONEHOME_BIN_DIR=$BENCH_TARGET/release
	export BENCH_AGENT BENCH_NO_AGENT BENCH_AGENT_STATIC BENCH_NO_AGENT_STATIC BENCH_NO_SERVER_TOOLS
	[[ -n $BENCH_NO_AGENT ]] && bench_log "agent: $BENCH_NO_AGENT"
	[[ -n $BENCH_NO_AGENT_STATIC ]] && bench_log "static agent: $BENCH_NO_AGENT_STATIC"
	[[ -n $BENCH_NO_SERVER_TOOLS ]] && bench_log "server tools: $BENCH_NO_SERVER_TOOLS"
	return 0
}
