# shellcheck shell=bash
# Section 1: what the agent binary weighs on a router, against the floor of Rust's std.
# Each dependency is built in a throwaway crate of its own (never in the workspace, where
# feature unification would hide what one crate costs), with the workspace's router
# profile and its Cargo.lock, so that the versions are the ones the agent ships with.

# The router profile, copied from the workspace so the throwaway crates match it.
size_profile() {
	awk '/^\[/ { p = /^\[profile\./ } p' "$BENCH_REPO/Cargo.toml"
}

# size_crate DIR NAME DEPS MAIN: writes a throwaway crate
size_crate() {
	local dir=$1 name=$2 deps=$3 main=$4
	mkdir -p "$dir/src"
	cat >"$dir/Cargo.toml" <<EOF
[package]
name = "$name"
version = "0.1.0"
edition = "2021"

[dependencies]
$deps

[workspace]

$(size_profile)
EOF
	printf '%s\n' "$main" >"$dir/src/main.rs"
	cp "$BENCH_REPO/Cargo.lock" "$dir/Cargo.lock"
}

# size_cargo TARGET_DIR [VAR=VALUE...] CARGO_ARGS...: cargo, offline first
size_cargo() {
	local tdir=$1
	shift
	local -a vars=()
	while [[ $1 == *=* && $1 != -* ]]; do vars+=("$1"); shift; done
	{ env "${vars[@]}" CARGO_TARGET_DIR="$tdir" cargo "$@" --offline ||
		env "${vars[@]}" CARGO_TARGET_DIR="$tdir" cargo "$@"; } >>"$BENCH_ERRLOG" 2>&1
}

# size_build DIR NAME [static]: builds with the router profile, prints the stripped size
size_build() {
	local dir=$1 name=$2 mode=${3:-dynamic} bin
	# offline first (the crates the workspace locks); the registry for a crate it does not
	# lock (mac_address, which the agent no longer uses)
	local -a flags=(build --profile router --manifest-path "$dir/Cargo.toml")
	if [[ $mode == static ]]; then
		size_cargo "$BENCH_TARGET/bench-size-static" RUSTFLAGS='-C target-feature=+crt-static' \
			"${flags[@]}" --target x86_64-unknown-linux-gnu || return 1
		bin="$BENCH_TARGET/bench-size-static/x86_64-unknown-linux-gnu/router/$name"
	else
		size_cargo "$BENCH_TARGET/bench-size" "${flags[@]}" || return 1
		bin="$BENCH_TARGET/bench-size/router/$name"
	fi
	strip "$bin" 2>/dev/null || true
	stat -c %s "$bin"
}

# Each variant: name, dependency lines, a main that really uses them (so the linker keeps
# the code a real program would pull in).
size_variants() {
	cat <<'EOF'
hello||fn main() { println!("hello"); }
getopts|getopts = "0.2"|fn main() { let mut o = getopts::Options::new(); o.optopt("c", "config", "file", "FILE"); o.optflag("h", "help", "help"); let m = o.parse(std::env::args().skip(1)).unwrap_or_else(|e| { eprintln!("{e}"); std::process::exit(2) }); if m.opt_present("h") { print!("{}", o.usage("x")); } println!("{:?}", m.opt_str("c")); }
log + simplelog|log = "0.4"\nsimplelog = { version = "0.12", default-features = false }|fn main() { simplelog::SimpleLogger::init(log::LevelFilter::Info, simplelog::Config::default()).unwrap(); log::info!("hello {}", std::env::args().count()); log::warn!("w"); }
serde + serde_json|serde = { version = "1", features = ["derive"] }\nserde_json = "1"|#[derive(serde::Serialize, serde::Deserialize, Debug)] struct R { a: String, b: u64, c: Vec<u16>, d: Option<bool> } fn main() { let s = std::env::args().nth(1).unwrap_or_else(|| r#"{"a":"x","b":1,"c":[1],"d":null}"#.into()); let r: R = serde_json::from_str(&s).unwrap(); println!("{}", serde_json::to_string(&r).unwrap()); }
mac_address|mac_address = "1"|fn main() { match mac_address::mac_address_by_name("eth0") { Ok(Some(m)) => println!("{m}"), Ok(None) => println!("none"), Err(e) => println!("{e}") } println!("{:?}", mac_address::get_mac_address().ok()); }
libc|libc = "0.2"|fn main() { let t = std::env::args().count() as i32; let r = unsafe { libc::kill(libc::getpid(), t * 0) }; println!("{} {r}", unsafe { libc::getuid() }); }
all of the above|getopts = "0.2"\nlog = "0.4"\nsimplelog = { version = "0.12", default-features = false }\nserde = { version = "1", features = ["derive"] }\nserde_json = "1"\nmac_address = "1"\nlibc = "0.2"|#[derive(serde::Serialize, serde::Deserialize, Debug)] struct R { a: String, b: u64 } fn main() { let mut o = getopts::Options::new(); o.optopt("c", "config", "file", "FILE"); let m = o.parse(std::env::args().skip(1)).unwrap_or_else(|e| { eprintln!("{e}"); std::process::exit(2) }); simplelog::SimpleLogger::init(log::LevelFilter::Info, simplelog::Config::default()).unwrap(); let r: R = serde_json::from_str(&m.opt_str("c").unwrap_or_else(|| r#"{"a":"x","b":1}"#.into())).unwrap(); log::info!("{} {:?} {}", serde_json::to_string(&r).unwrap(), mac_address::get_mac_address().ok(), unsafe { libc::getuid() }); }
EOF
}

section_size() {
	local out tmp hello hello_s agent agent_s
	out=$(section_file 1-size)
	tmp="$BENCH_TARGET/bench-size/crates"
	mkdir -p "$tmp"
	bench_log "size: building the hello-world and one crate per dependency (router profile)"
	local -a rows=()
	local name deps main dir n=0 sz
	while IFS='|' read -r name deps main; do
		n=$((n + 1))
		dir="$tmp/v$n"
		size_crate "$dir" "v$n" "$(printf '%b' "$deps")" "$main"
		if sz=$(size_build "$dir" "v$n"); then
			rows+=("$name|$sz")
		else
			rows+=("$name|")
			bench_log "size: variant '$name' did not build (see $BENCH_ERRLOG)"
		fi
	done < <(size_variants)
	hello=${rows[0]#*|}
	hello_s=$(size_build "$tmp/v1" v1 static) || hello_s=

	# the dynamic agent was built by build_binaries; the static one is built here
	agent=
	agent_s=
	if [[ -n $BENCH_AGENT ]]; then
		bench_log "size: building the agent statically"
		agent=$(stat -c %s "$BENCH_AGENT")
		if RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$BENCH_TARGET/static" \
			cargo build --offline --profile router -p phonehome --target x86_64-unknown-linux-gnu \
			--manifest-path "$BENCH_REPO/Cargo.toml" >>"$BENCH_ERRLOG" 2>&1; then
			agent_s=$(stat -c %s "$BENCH_TARGET/static/x86_64-unknown-linux-gnu/router/phonehome")
		fi
	fi

	{
		echo "## 1. Agent size"
		echo
		echo "Stripped size under the workspace's \`router\` profile (opt-level z, lto, codegen-units 1,"
		echo "panic abort, strip), x86_64, against a hello-world built with the same profile in this run."
		echo "Static means \`RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu\`"
		echo "(glibc linked in; the static musl builds for router CPUs are in section 7)."
		echo
		echo "| binary | dynamic (glibc) | × hello | static | × hello |"
		echo "| --- | ---: | ---: | ---: | ---: |"
		echo "| hello world | $(fmt_bytes "$hello") | 1.00 | ${hello_s:+$(fmt_bytes "$hello_s")} | 1.00 |"
		if [[ -n $agent ]]; then
			echo "| \`phonehome\` | $(fmt_bytes "$agent") | $(ratio "$agent" "$hello") | ${agent_s:+$(fmt_bytes "$agent_s")} | ${agent_s:+$(ratio "$agent_s" "$hello_s")} |"
		else
			echo "| \`phonehome\` | not measured: $BENCH_NO_AGENT | | | |"
		fi
		echo
		echo "What each dependency costs on its own: a throwaway crate per dependency (hello-world plus"
		echo "a main that really uses it), same profile and lock file, dynamic. The sum of the parts is"
		echo "more than the whole: they share std code."
		echo
		echo "| hello world + | stripped size | added bytes | × hello |"
		echo "| --- | ---: | ---: | ---: |"
		local r nm v
		for r in "${rows[@]:1}"; do
			nm=${r%%|*}
			v=${r#*|}
			if [[ -n $v ]]; then
				echo "| $nm | $(fmt_bytes "$v") | $(thousands $((v - hello))) | $(ratio "$v" "$hello") |"
			else
				echo "| $nm | not measured: did not build | | |"
			fi
		done
		echo
		echo "Reproduce: \`bench/run --quick\` (section 1 is the same in every mode), or by hand"
		echo "\`cargo build --profile router -p phonehome\` and \`strip\`; \`stat -c %s target/router/phonehome\`."
		echo
	} >"$out"
}
