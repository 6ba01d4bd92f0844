# shellcheck shell=bash
# Puts BENCHMARKS.md together: the machine and the versions first (figures mean nothing
# without them), then each section's fragment, and "not measured" for a section the run
# never reached.

report_machine() {
	local sshd_v db_v rustc_v cpu
	sshd_v=$( (/usr/sbin/sshd -V 2>&1 || true) | head -n1)
	db_v=$( (dbclient -V 2>&1 || true) | head -n1)
	rustc_v=$(rustc -V 2>/dev/null || echo unknown)
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	echo "| | |"
	echo "| --- | --- |"
	echo "| date (UTC) | $(date -u '+%Y-%m-%d %H:%M') |"
	echo "| mode | \`bench/run --$BENCH_MODE${BENCH_REV:+ --rev $BENCH_REV}\` |"
	echo "| cores (nproc) | $(nproc) |"
	echo "| CPU | ${cpu:-unknown} |"
	echo "| memory | $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
	echo "| kernel | $(uname -sr) |"
	echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |"
	echo "| sshd | $sshd_v |"
	echo "| ssh | $( (ssh -V 2>&1 || true) | head -n1) |"
	echo "| dbclient | $db_v |"
	echo "| rustc | $rustc_v |"
	if [[ -n ${BENCH_REV:-} ]]; then
		echo "| phonehome | commit $BENCH_REV (\`--rev\`) |"
	else
		local repo=${BENCH_REPO:?} dirty=""
		[[ -n $(git -C "$repo" status --porcelain -- agent server-scripts protocol tests 2>/dev/null) ]] &&
			dirty=" (with uncommitted changes)"
		echo "| phonehome | working tree at $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty |"
	fi
}

report_write() {
	local dest=$1 started=$2 s f elapsed
	elapsed=$(($(date -u +%s) - started))
	{
		echo "# phonehome benchmarks"
		echo
		echo "Written by \`bench/run\` (do not edit by hand; run it again). Every figure is set"
		echo "beside a baseline measured in the same run, as a ratio: absolute times drift on"
		echo "shared machines, ratios much less. The run took $((elapsed / 60)) min $((elapsed % 60)) s."
		echo
		report_machine
		echo
		echo "Everything that runs a server, a client or an account ran inside the bench's own"
		echo "mount, network and pid namespaces (the end-to-end lab of \`tests/e2e/lib.sh\`: the"
		echo "server in one network namespace, the device behind NAT in another), on private"
		echo "copies of /etc, /var, /run, /usr/local; nothing outlives the run."
		echo
		for s in 1-size:"1. Agent size" 2-device:"2. Device cost of one poll" \
			3-server:"3. Server cost of one poll" 4-listdevices:"4. list-devices" \
			5-latency:"5. Request to tunnel" 6-tunnels:"6. Many tunnels" \
			7-cross:"7. Agent size on router CPUs" 8-hold:"8. Held polls (instant tunnels)"; do
			f=$BENCH_SECTIONS/${s%%:*}.md
			if [[ -s $f ]]; then
				cat "$f"
			elif ! wanted "${s%%-*}"; then
				echo "## ${s#*:}"
				echo
				echo "not measured: skipped (\`--only $BENCH_ONLY\`)."
				echo
			else
				echo "## ${s#*:}"
				echo
				echo "not measured: the run stopped before this section finished (see the bench's log)."
				echo
			fi
		done
	} >"$dest"
}
