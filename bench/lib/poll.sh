# shellcheck shell=bash
# Sections 2 and 3: what one poll costs the device and the server, each against the bare
# ssh login that any "call home" needs anyway (a login and a `cat` of a small file
# through the same sshd). The device runs in its namespace behind NAT, as in the lab.

# row LABEL "cpu rss wall wmax fails" BASE_CPU BASE_RSS
poll_row() {
	local label=$1 cpu rss wall fails
	read -r cpu rss wall _ fails <<<"$2"
	if [[ $cpu == nan ]]; then
		echo "| $label | not measured: every run failed | | | | |"
		return
	fi
	[[ $fails -gt 0 ]] && label="$label ($fails runs failed)"
	echo "| $label | $cpu | $(ratio "$cpu" "$3") | $(thousands "$rss") | $(ratio "$rss" "$4") | $wall |"
}

section_device_poll() {
	local out n=$BENCH_REPS
	out=$(section_file 2-device)
	bench_log "device poll: $n runs each of the bare clients (dbclient, ssh default kex, ssh curve25519)"
	local b_db b_ssh b_x
	local st=$FIX/status.json
	fixture_commands "$SRV_IP"
	b_db=$(time_runs "$n" dev1 "$st" "${BASE_DB[@]}") || true
	b_ssh=$(time_runs "$n" dev1 "$st" "${BASE_SSH[@]}") || true
	b_x=$(time_runs "$n" dev1 "$st" "${BASE_SSH_X[@]}") || true
	local db_cpu db_rss x_cpu x_rss s_cpu
	read -r db_cpu db_rss _ <<<"$b_db"
	read -r x_cpu x_rss _ <<<"$b_x"
	read -r s_cpu _ <<<"$b_ssh"
	local a_db="" a_ssh="" why=""
	if [[ -z $BENCH_AGENT ]]; then
		why=$BENCH_NO_AGENT
	elif [[ $FIX_PHONEHOME != yes ]]; then
		why=$FIX_PHONEHOME_WHY
	else
		bench_log "device poll: $n runs each of phonehome poll with dbclient and with ssh"
		# one poll first: the run dir and known_hosts get created outside the measurement
		agent_cmd dbclient
		in_ns dev1 "${AGENT[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
		a_db=$(time_runs "$n" dev1 /dev/null "${AGENT[@]}") || true
		agent_cmd ssh
		in_ns dev1 "${AGENT[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
		a_ssh=$(time_runs "$n" dev1 /dev/null "${AGENT[@]}") || true
	fi
	local kex
	kex=$(grep -rhoE 'KexAlgorithms=[]^A-Za-z0-9@.,+-]+' "$BENCH_REPO/agent/src" 2>/dev/null | head -n1) || true
	{
		echo "## 2. Device cost of one poll"
		echo
		echo "CPU (user + sys, the process and every child it waited for) and peak RSS (the largest"
		echo "single process of that tree, GNU time's %M) of one poll with no request pending: median"
		echo "of $n runs, each on the device namespace (behind NAT) against the lab's sshd. The"
		echo "baseline is the bare client doing the same login and a forced \`cat\` of a small file,"
		echo "with a status report of the agent's size on stdin, through the same sshd."
		echo
		echo "| what | CPU ms | × baseline | peak RSS KiB | × baseline | wall ms |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: |"
		poll_row "baseline: \`dbclient\` login + cat" "$b_db" "$db_cpu" "$db_rss"
		poll_row "baseline: \`ssh\`, curve25519-sha256, login + cat" "$b_x" "$x_cpu" "$x_rss"
		poll_row "\`ssh\`, OpenSSH default kex (sntrup761x25519), login + cat" "$b_ssh" "$x_cpu" "$x_rss"
		if [[ -n $a_db ]]; then
			poll_row "\`phonehome poll\` with dbclient (vs dbclient baseline)" "$a_db" "$db_cpu" "$db_rss"
			poll_row "\`phonehome poll\` with ssh (vs ssh curve25519 baseline)" "$a_ssh" "$x_cpu" "$x_rss"
		else
			echo "| \`phonehome poll\` | not measured: $why | | | | |"
		fi
		echo
		echo "OpenSSH's default key exchange (post-quantum sntrup761x25519) costs $(ratio "$s_cpu" "$x_cpu") times"
		echo "the CPU of curve25519-sha256 in this run."
		if [[ -n $kex ]]; then
			echo "The agent passes \`-o $kex\` to OpenSSH's client (found in agent/src): a router pays"
			echo "for its poll every minute, and the tunnel's content is the admin's own ssh session,"
			echo "end to end encrypted with whatever key exchange the admin chooses."
		else
			echo "The agent's source sets no \`KexAlgorithms\`: with OpenSSH's client it uses the default"
			echo "(post-quantum) key exchange. dbclient 2022.83 offers curve25519 first."
		fi
		echo
		echo "Reproduce: \`bench/run\` (section 2; \`--quick\` for 5 runs)."
		echo
	} >"$out"
}

# server_cpu_per_login N CMD...: sshd's CPU (listener and all it reaped) per login, in ms;
# CMD runs in the server namespace with the status report on stdin
server_cpu_per_login() {
	local n=$1 i before after fails=0
	shift
	sshd_quiet "$FIX_SSHD" || true
	before=$(proc_tree_cpu_ms "$FIX_SSHD")
	for ((i = 0; i < n; i++)); do
		in_ns srv "$@" <"$FIX/status.json" >/dev/null 2>>"$BENCH_ERRLOG" || fails=$((fails + 1))
	done
	if ! sshd_quiet "$FIX_SSHD"; then
		bench_log "server poll: sshd still has children 10 s after $n logins (see the error log)"
		ps -o pid,ppid,etime,args -e >>"$BENCH_ERRLOG"
	fi
	after=$(proc_tree_cpu_ms "$FIX_SSHD")
	[[ $fails -eq 0 ]] || bench_log "server poll: $fails of $n logins failed ($*)"
	calc "($after - $before) / $n" 1
}

# throughput N CMD...: N logins, 4 at a time, clients on cpu 1 and sshd on cpu 0; logins/s
server_throughput() {
	local n=$1 t0 t1
	shift
	t0=$(date +%s.%N)
	# shellcheck disable=SC2016 # expanded by the inner sh
	seq "$n" | taskset -c 1 xargs -P 8 -I{} ip netns exec srv sh -c '"$@" <"$0" >/dev/null 2>&1 || echo fail' \
		"$FIX/status.json" "$@" | grep -c fail >"$FIX/tp.fails" || true
	t1=$(date +%s.%N)
	calc "$n / ($t1 - $t0)" 1
}

section_server_poll() {
	local out n=$BENCH_LOGINS
	out=$(section_file 3-server)
	local cat_ms gate_ms="" why="" cat_tp="" gate_tp="" ncpu
	ncpu=$(nproc)
	bench_log "server poll: sshd CPU over $n logins with a forced cat"
	fixture_commands 127.0.0.1
	cat_ms=$(server_cpu_per_login "$n" "${BASE_DB[@]}")
	if [[ $FIX_PHONEHOME == yes ]]; then
		bench_log "server poll: sshd CPU over $n logins running the gate"
		gate_ms=$(server_cpu_per_login "$n" "${GATE_DB[@]}")
	else
		why=$FIX_PHONEHOME_WHY
	fi
	if [[ $ncpu -ge 2 ]]; then
		taskset -pc 0 "$FIX_SSHD" >/dev/null
		bench_log "server poll: throughput, $n logins, sshd on cpu 0, clients on cpu 1"
		cat_tp=$(server_throughput "$n" "${BASE_DB[@]}")
		[[ -n $gate_ms ]] && gate_tp=$(server_throughput "$n" "${GATE_DB[@]}")
		taskset -pc "0-$((ncpu - 1))" "$FIX_SSHD" >/dev/null
	fi
	local cat_cap gate_cap
	cat_cap=$(calc "1000 / $cat_ms" 1)
	{
		echo "## 3. Server cost of one poll"
		echo
		echo "sshd's CPU per login, read from \`/proc/<pid>/stat\` of the sshd listener (utime + stime"
		echo "+ cutime + cstime: the listener reaps each connection's processes, which reap the"
		echo "session and the forced command, so its counters cover the whole login) before and"
		echo "after $n sequential dbclient logins from the server's own loopback. Clock-tick"
		echo "resolution ($(getconf CLK_TCK) Hz) over $n logins. (cgroup v2 is not mounted writable here:"
		echo "\`$(awk '$3 ~ /cgroup/ {printf "%s %s; ", $2, $3}' /proc/mounts | head -c 160)\`...)"
		echo
		echo "| login | sshd CPU ms / login | × baseline | CPU-bound polls/s per core | measured polls/s (sshd pinned to 1 core) |"
		echo "| --- | ---: | ---: | ---: | ---: |"
		echo "| baseline: forced \`cat\` | $cat_ms | 1.00 | $cat_cap | ${cat_tp:-not measured: one cpu} |"
		if [[ -n $gate_ms ]]; then
			gate_cap=$(calc "1000 / $gate_ms" 1)
			echo "| phonehome: the gate (\`poll\`, status report on stdin) | $gate_ms | $(ratio "$gate_ms" "$cat_ms") | $gate_cap | ${gate_tp:-not measured: one cpu} |"
		else
			echo "| phonehome: the gate | not measured: $why | | | |"
		fi
		echo
		local basis=${gate_tp:-${gate_cap:-}}
		if [[ -n $basis ]]; then
			echo "Devices one core serves at one poll a minute: about $(calc "$basis * 60" 0)"
			echo "(measured polls/s × 60; the floor with a bare forced \`cat\` is $(calc "${cat_tp:-$cat_cap} * 60" 0))."
		else
			echo "Devices one core serves at one poll a minute with a bare forced \`cat\` (the floor):"
			echo "about $(calc "${cat_tp:-$cat_cap} * 60" 0). phonehome's own figure: not measured ($why)."
		fi
		echo "The measured rate: $n logins, 8 at a time (\`xargs -P 8\`), clients pinned to cpu 1 and"
		echo "sshd (with everything it forks) to cpu 0, so the rate is what one core of sshd sustains."
		echo
		echo "Reproduce: \`bench/run\` (section 3; \`--quick\` for 30 logins)."
		echo
	} >"$out"
}
