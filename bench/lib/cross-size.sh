# shellcheck shell=bash
# Section 7: the agent's size on router CPUs. For each architecture of cross/lib.sh, the
# agent and two baselines are built the same way in this run (same toolchain, way, router
# profile, static musl; cross/lib.sh's cross_cargo): a hello-world, and a hello that
# pulls the crates the agent is made of (getopts, log, simplelog, serde + serde_json,
# mac_address, libc) and uses them trivially. On mipsel (MIPS 24Kc), also what each of
# those crates costs on its own. Builds only: runs outside the sandbox, after section 1.

# shellcheck source=cross/lib.sh
. "$(dirname "$BENCH_DIR")/cross/lib.sh"

# The "same crates" hello: the last variant of section 1 ("all of the above").
cross_size_same_crates() { size_variants | tail -n 1; }

# What of std the agent uses beyond a hello's printing, used trivially: a child process
# with piped stdio read on threads, a channel with a timeout, a Unix datagram socket
# (syslog), a directory listing, the clock. Added to the same-crates hello, it tells how
# much of the agent is std and how much its own code.
CROSS_SIZE_STD_MAIN='fn main() { crates(); use std::io::{Read, Write}; let mut c = std::process::Command::new("/bin/sh").args(["-c", "cat"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap(); let mut i = c.stdin.take().unwrap(); std::thread::spawn(move || { let _ = i.write_all(b"x"); }); let (tx, rx) = std::sync::mpsc::channel(); let mut o = c.stdout.take().unwrap(); std::thread::spawn(move || { let mut v = Vec::new(); let _ = o.read_to_end(&mut v); let _ = tx.send(v); }); let v = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap_or_default(); let _ = c.wait(); let s = std::os::unix::net::UnixDatagram::unbound().ok(); let n = std::fs::read_dir("/sys/class/net").map(|d| d.count()).unwrap_or(0); let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0); println!("{} {} {} {}", v.len(), s.is_some(), n, t); }'

# cross_size_build ARCH WAY DIR NAME: builds a throwaway crate for ARCH, prints the size.
# Every crate of one arch shares one target dir, so that build-std builds std once.
cross_size_build() {
	local arch=$1 way=$2 dir=$3 name=$4 triple tdir bin
	triple=$(cross_triple "$arch")
	tdir=$BENCH_TARGET/bench-cross-size/$triple
	# offline first (the crates the workspace locks); the registry for the rest
	(cd "$dir" && { cross_cargo "$arch" "$way" "$tdir" --offline --manifest-path "$dir/Cargo.toml" ||
		cross_cargo "$arch" "$way" "$tdir" --manifest-path "$dir/Cargo.toml"; }) >>"$BENCH_ERRLOG" 2>&1 || return 1
	bin=$(cross_bin "$tdir" "$arch" "$name")
	cross_elf_check "$arch" "$bin" >>"$BENCH_ERRLOG" || return 1
	stat -c %s "$bin"
}

section_cross_size() {
	local out tmp arch way triple
	out=$(section_file 7-cross)
	tmp=$BENCH_TARGET/bench-cross-size/crates
	mkdir -p "$tmp"
	bench_log "cross size: cross/build.sh (the toolchains, and the agent of every arch)"
	# It decides each arch's way (prebuilt std or build-std) and records it beside the
	# agent; the baselines below are built the same way.
	if ! bash "$(dirname "$BENCH_DIR")/cross/build.sh" >"$BENCH_TMP/cross-build.log" 2>&1; then
		bench_log "cross size: cross/build.sh failed for some arch:"
		tail -n 5 "$BENCH_TMP/cross-build.log" >&2
	fi
	cat "$BENCH_TMP/cross-build.log" >>"$BENCH_ERRLOG"
	# (a main may hold '|' itself: read leaves the rest of the line in the last field)
	local name d main
	IFS='|' read -r name d main < <(size_variants)
	size_crate "$tmp/hello" hello "" "$main"
	IFS='|' read -r name d main <<<"$(cross_size_same_crates)"
	d=$(printf '%b' "$d")
	size_crate "$tmp/same" same "$d" "$main"
	size_crate "$tmp/same-std" same_std "$d" "${main/fn main()/fn crates()} $CROSS_SIZE_STD_MAIN"
	local -a rows=()
	local h s t a
	for arch in "${CROSS_ARCHES[@]}"; do
		triple=$(cross_triple "$arch")
		way=$(cat "$(dirname "$BENCH_DIR")/target/cross/$triple/way" 2>/dev/null) || {
			rows+=("$arch|$triple|not built||||")
			continue
		}
		bench_log "cross size: $arch ($way): agent, hello, same-crates hello"
		a=$(cross_size_build_agent "$arch" "$way") || a=
		h=$(cross_size_build "$arch" "$way" "$tmp/hello" hello) || h=
		s=$(cross_size_build "$arch" "$way" "$tmp/same" same) || s=
		t=$(cross_size_build "$arch" "$way" "$tmp/same-std" same_std) || t=
		rows+=("$arch|$triple|$way|$h|$s|$t|$a")
	done

	# What each crate costs on MIPS (mipsel, 24Kc): section 1's variants, built for it.
	local -a deps=()
	local dir n=0 sz mips_way
	mips_way=$(cat "$(dirname "$BENCH_DIR")/target/cross/$(cross_triple mipsel)/way" 2>/dev/null) || mips_way=
	if [[ -n $mips_way ]]; then
		bench_log "cross size: each dependency on mipsel"
		while IFS='|' read -r name d main; do
			n=$((n + 1))
			dir="$tmp/mips-v$n"
			size_crate "$dir" "v$n" "$(printf '%b' "$d")" "$main"
			if sz=$(cross_size_build mipsel "$mips_way" "$dir" "v$n"); then deps+=("$name|$sz"); else deps+=("$name|"); fi
		done < <(size_variants)
	fi
	cross_size_report "${#rows[@]}" "${rows[@]}" "${deps[@]}" >"$out"
}

# The agent of ARCH from the sources measured ($BENCH_REPO), the same way; in the
# target dir cross/build.sh uses, so that this is a no-op when it just built them.
cross_size_build_agent() {
	local arch=$1 way=$2 triple tdir bin
	triple=$(cross_triple "$arch")
	tdir=$(dirname "$BENCH_DIR")/target/cross-build/$triple
	(cd "$BENCH_REPO" && cross_cargo "$arch" "$way" "$tdir" --locked --offline -p phonehome \
		--manifest-path "$BENCH_REPO/Cargo.toml") >>"$BENCH_ERRLOG" 2>&1 || return 1
	bin=$(cross_bin "$tdir" "$arch" phonehome)
	cross_elf_check "$arch" "$bin" >>"$BENCH_ERRLOG" || return 1
	stat -c %s "$bin"
}

# cross_size_verdict ROW...: the goal (≤ 1.3× the same-crates hello) against the rows,
# and what keeps the agent above it: std (same crates + std over same crates) and its
# own code (agent over same crates + std), as ranges over the architectures.
cross_size_verdict() {
	printf '%s\n' "$@" | awk -F'|' '
		function span(lo, hi) { return (sprintf("%.2f", lo) == sprintf("%.2f", hi)) ? sprintf("%.2f", lo) : sprintf("%.2f–%.2f", lo, hi) }
		$5 != "" && $6 != "" && $7 != "" {
			r = $7 / $5; st = $6 / $5; own = $7 / $6; n++
			if (n == 1 || r < rlo) rlo = r; if (n == 1 || r > rhi) rhi = r
			if (n == 1 || st < slo) slo = st; if (n == 1 || st > shi) shi = st
			if (n == 1 || own < olo) olo = own; if (n == 1 || own > ohi) ohi = own
			if (r > 1.3) above = above (above ? ", " : "") $1
		}
		END {
			if (!n) { print "Goal (≤ 1.30× the same-crates hello): not measured, no architecture built."; exit }
			printf "Goal: ≤ 1.30× the same-crates hello. Measured: %s×", span(rlo, rhi)
			if (above == "") { print ", every architecture within it." ; exit }
			printf " (above it: %s).\n", above
			printf "What keeps it above: the std the agent needs beyond printing (%s× the same-crates hello\n", span(slo, shi)
			printf "with it), and the agent'"'"'s own code (%s× on top of that): config and known_hosts\n", span(olo, ohi)
			print "parsing, the status report and run-dir records (serde derives for each), reconciliation,"
			print "the ssh argv and stderr table, logging. The biggest single crate is simplelog (the MIPS table"
			print "below), which a few lines of own logger would replace."
		}'
}

# cross_size_report NROWS ROW... DEP...: the markdown of section 7.
cross_size_report() {
	local nrows=$1 r arch triple way h s t a
	shift
	local -a rows=("${@:1:$nrows}") deps=("${@:$((nrows + 1))}")
	echo "## 7. Agent size on router CPUs"
	echo
	echo "Stripped, static (musl) under the \`router\` profile, built by \`cross/build.sh\`'s way for"
	echo "each architecture (\`prebuilt\`: rustup's std; \`build-std\`: the nightly builds std from"
	echo "rust-src, cargo-zigbuild links), and beside it three baselines built exactly the same way in"
	echo "this run: a hello-world; a hello that pulls the crates the agent uses and uses them"
	echo "trivially (section 1's \"all of the above\": getopts, log, simplelog, serde + serde_json,"
	echo "mac_address, libc; the agent itself no longer links mac_address); and that hello plus,"
	echo "used as trivially, the parts of std the agent uses beyond printing: a child process with"
	echo "piped stdio read on threads, a channel with a timeout, a Unix datagram socket, a directory"
	echo "listing, the clock. What the agent weighs beyond the third is its own code."
	echo
	echo "| architecture | target | std | hello | + same crates | + same crates + std's processes, threads, sockets | \`phonehome\` | × hello | × same-crates hello | × same crates + std |"
	echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for r in "${rows[@]}"; do
		IFS='|' read -r arch triple way h s t a <<<"$r"
		[[ $way == stable ]] && way=prebuilt
		echo "| $arch | \`$triple\` | $way | ${h:+$(fmt_bytes "$h")} | ${s:+$(fmt_bytes "$s")} | ${t:+$(fmt_bytes "$t")} | ${a:+$(fmt_bytes "$a")} | $([[ -n $a && -n $h ]] && ratio "$a" "$h") | $([[ -n $a && -n $s ]] && ratio "$a" "$s") | $([[ -n $a && -n $t ]] && ratio "$a" "$t") |"
	done
	echo
	cross_size_verdict "${rows[@]}"
	echo
	if [[ ${#deps[@]} -gt 0 ]]; then
		local hello=${deps[0]#*|} nm v
		echo "What each crate costs on MIPS (\`mipsel-unknown-linux-musl\`, 24Kc, soft float): section 1's"
		echo "throwaway crates (hello plus one dependency that a main really uses), built like the agent."
		echo
		echo "| mipsel: hello world + | stripped size | added bytes | × hello |"
		echo "| --- | ---: | ---: | ---: |"
		echo "| (nothing) | ${hello:+$(fmt_bytes "$hello")} | 0 | 1.00 |"
		for r in "${deps[@]:1}"; do
			nm=${r%%|*}
			v=${r#*|}
			if [[ -n $v && -n $hello ]]; then
				echo "| $nm | $(fmt_bytes "$v") | $(thousands $((v - hello))) | $(ratio "$v" "$hello") |"
			else
				echo "| $nm | not measured: did not build | | |"
			fi
		done
		echo
	fi
	echo "Reproduce: \`bench/run --only 7\` (builds only; about 10 minutes on 2 cores from a cold"
	echo "cache), or \`./install.sh cross\` for the agents alone."
	echo
}
