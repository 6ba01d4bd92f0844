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
	export BENCH_AGENT BENCH_NO_AGENT BENCH_NO_SERVER_TOOLS
	[[ -n $BENCH_NO_AGENT ]] && bench_log "agent: $BENCH_NO_AGENT"
	[[ -n $BENCH_NO_SERVER_TOOLS ]] && bench_log "server tools: $BENCH_NO_SERVER_TOOLS"
	return 0
}
