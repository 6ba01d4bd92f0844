# shellcheck shell=bash
# Sections 5 and 6: the time from an admin's request to a login through the tunnel, and
# what a device holding many tunnels pays per poll. Both on the lab: the device behind
# NAT polling from a cron-like loop, the admin on the server logging into the device's
# own dropbear through the server's loopback port.

# ms since the epoch
now_ms() { date +%s%3N; }

# Wait (up to SECS) until the admin lands on dev1 through PORT; true if so
reach_within() {
	local port=$1 secs=$2 deadline
	deadline=$(($(now_ms) + secs * 1000))
	while (($(now_ms) < deadline)); do
		admin_reaches dev1 "$port" && return 0
		sleep 0.1
	done
	return 1
}

# One request: forward-device-port --wait, then logins until one lands. Prints the ms from
# the request to the first successful login, or fails.
request_latency() {
	local port=$1 limit=$2 t0 t1
	t0=$(now_ms)
	if ! in_ns srv timeout $((limit + 10)) forward-device-port "$FIX_ID" "22:$port" --wait="$limit" \
		>>"$BENCH_ERRLOG" 2>&1; then
		bench_log "tunnel: forward-device-port 22:$port --wait failed (see the error log)"
		return 1
	fi
	if ! reach_within "$port" 20; then
		bench_log "tunnel: no login through $port within 20 s after --wait (logs in the error log)"
		{
			echo "--- no login through $port: the device's dropbear log, the tunnel's log"
			tail -n 5 "$FIX_DEV/dropbear.log" "$FIX_DEV/run/tunnels/22-$port.log"
		} >>"$BENCH_ERRLOG" 2>&1
		in_ns srv forward-device-port "$FIX_ID" --close "$port" >>"$BENCH_ERRLOG" 2>&1 || true
		return 1
	fi
	t1=$(now_ms)
	in_ns srv forward-device-port "$FIX_ID" --close "$port" >>"$BENCH_ERRLOG" 2>&1 || true
	echo $((t1 - t0))
}

# The floor: the device opens the same reverse tunnel by hand (no poll to wait for).
hand_tunnel_latency() {
	local port=$1 t0 t1 pid
	t0=$(now_ms)
	# `ip netns exec` and env exec: $! is dbclient itself (through a function it would be
	# a subshell, and killing that would leave the tunnel behind)
	ip netns exec dev1 env HOME="$FIX/devhome" dbclient -i "$FIX_DEV/id_dropbear" -N -T \
		-R "$port:127.0.0.1:22" "benchcat@$SRV_IP/22" </dev/null >>"$BENCH_ERRLOG" 2>&1 &
	pid=$!
	if ! reach_within "$port" 20; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		return 1
	fi
	t1=$(now_ms)
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	echo $((t1 - t0))
}

# sum of the proportional set size (KiB) of processes named NAME
pss_of() {
	local pid total=0 p
	for pid in $(pgrep -x "$1" || true); do
		p=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
		total=$((total + ${p:-0}))
	done
	echo "$total"
}

# latency_series N PORT0 LIMIT INTERVAL: N requests; prints the latencies (ms), one a line
latency_series() {
	local n=$1 p0=$2 limit=$3 interval=$4 i ms pause
	for ((i = 0; i < n; i++)); do
		# a pause of a random part of the poll interval: a request right after a tunnel
		# came up would always land just after a poll (the worst case); this way the
		# requests land at every point of the poll cycle, as an admin's do
		pause=$((RANDOM * 32768 + RANDOM))
		pause=$((pause % (interval * 1000)))
		sleep "$((pause / 1000)).$(printf '%03d' $((pause % 1000)))"
		if ms=$(request_latency $((p0 + i)) "$limit"); then
			echo "$ms"
		fi
	done
}

section_tunnels() {
	local why=""
	if [[ -z $BENCH_AGENT ]]; then
		why=$BENCH_NO_AGENT
	elif [[ $FIX_PHONEHOME != yes ]]; then
		why=$FIX_PHONEHOME_WHY
	fi
	if [[ -n $why ]]; then
		not_measured 5-latency "5. Request to tunnel" "$why"
		not_measured 6-tunnels "6. Many tunnels" "$why"
		return 0
	fi
	if wanted 5; then section_latency; fi
	if wanted 6; then section_many_tunnels; fi
}

section_latency() {
	local out n=$BENCH_TUNNEL_REQS
	out=$(section_file 5-latency)
	local floor_file=$FIX/floor.ms lat_file=$FIX/lat.ms real_file=$FIX/real.ms i ms
	bench_log "tunnel: $n hand-opened tunnels (the floor)"
	: >"$floor_file"
	for ((i = 0; i < n; i++)); do
		ms=$(hand_tunnel_latency $((21000 + i))) && echo "$ms" >>"$floor_file"
	done
	bench_log "tunnel: $n requests at a ${POLL} s poll interval"
	agent_loop_start dev1 || true
	sleep 1
	latency_series "$n" 21100 $((POLL * 2 + 15)) "$POLL" >"$lat_file"
	agent_loop_stop dev1 || true
	local real_n=0
	: >"$real_file"
	if [[ $BENCH_MODE == full ]]; then
		real_n=5
		bench_log "tunnel: $real_n requests at the real 60 s poll interval (about 5 minutes)"
		local short=$POLL
		POLL=60
		agent_loop_start dev1 || true
		latency_series "$real_n" 21200 135 60 >"$real_file"
		agent_loop_stop dev1 || true
		POLL=$short
	fi
	local f_med f_max l_med l_max l_n r_med r_max r_cnt
	f_med=$(stat_median <"$floor_file")
	f_max=$(stat_max <"$floor_file")
	l_med=$(stat_median <"$lat_file")
	l_max=$(stat_max <"$lat_file")
	l_n=$(wc -l <"$lat_file")
	r_cnt=$(wc -l <"$real_file")
	{
		echo "## 5. Request to tunnel"
		echo
		echo "From \`forward-device-port <id> 22:<port> --wait\` on the server to the first successful"
		echo "admin login (\`ssh -p <port> root@localhost\`, landing on the device's own dropbear)"
		echo "through the tunnel, with the device behind NAT polling from a cron-like loop (poll,"
		echo "then sleep the interval). Each request is closed (\`--close\`) after its login; the"
		echo "next one starts after a pause of a random part of the interval, so that requests land"
		echo "at every point of the poll cycle. The floor: the device opens the"
		echo "same reverse tunnel by hand (\`dbclient -N -R\`) and the admin logs in through it, as"
		echo "soon as possible (no poll to wait for)."
		echo
		echo "| what | runs | median ms | worst ms | × floor (median) |"
		echo "| --- | ---: | ---: | ---: | ---: |"
		echo "| floor: tunnel opened by hand + admin login | $(wc -l <"$floor_file") | $f_med | $f_max | 1.00 |"
		echo "| phonehome, poll every $POLL s | $l_n of $n | $l_med | $l_max | $(ratio "$l_med" "$f_med") |"
		if [[ $real_n -gt 0 ]]; then
			r_med=$(stat_median <"$real_file")
			r_max=$(stat_max <"$real_file")
			echo "| phonehome, poll every 60 s (the real interval) | $r_cnt of $real_n | $r_med | $r_max | $(ratio "$r_med" "$f_med") |"
		else
			echo "| phonehome, poll every 60 s (the real interval) | not measured: only \`--full\` runs it (5 requests, about 5 minutes) | | | |"
		fi
		echo
		echo "Expected: half a poll interval on average (the wait for the next poll), one interval"
		echo "at worst, plus one poll and the tunnel's own login: the floor."
		echo
		echo "Reproduce: \`bench/run\` (section 5), \`bench/run --full\` for the 60 s interval."
		echo
	} >"$out"
}

section_many_tunnels() {
	local out n=$BENCH_REPS k=20 i
	out=$(section_file 6-tunnels)
	local -a poll=("$BENCH_AGENT" --config "$FIX_DEV/phonehome.conf" poll)
	bench_log "tunnels: poll cost with none, then with $k tunnels ($n runs each)"
	agent_loop_stop dev1 || true
	in_ns srv forward-device-port "$FIX_ID" --close all >>"$BENCH_ERRLOG" 2>&1 || true
	in_ns dev1 "${poll[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
	local none pss_db0 pss_sshd0
	none=$(time_runs "$n" dev1 /dev/null "${poll[@]}") || true
	pss_db0=$(pss_of dbclient)
	pss_sshd0=$(pss_of sshd)
	for ((i = 0; i < k; i++)); do
		in_ns srv forward-device-port "$FIX_ID" "22:$((21300 + i))" >>"$BENCH_ERRLOG" 2>&1 ||
			bench_log "tunnels: request 22:$((21300 + i)) failed (see the error log)"
	done
	in_ns dev1 "${poll[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
	local up=0 tries
	for ((tries = 0; tries < 100; tries++)); do
		up=0
		for ((i = 0; i < k; i++)); do
			[[ -n $(srv_listeners $((21300 + i))) ]] && up=$((up + 1))
		done
		[[ $up -eq $k ]] && break
		sleep 0.2
	done
	# every tunnel really carries a login
	local through=0
	for ((i = 0; i < k; i++)); do
		admin_reaches dev1 $((21300 + i)) && through=$((through + 1))
	done
	local many pss_db pss_sshd
	many=$(time_runs "$n" dev1 /dev/null "${poll[@]}") || true
	pss_db=$(pss_of dbclient)
	pss_sshd=$(pss_of sshd)
	local n_cpu n_rss n_wall m_cpu m_rss m_wall
	read -r n_cpu n_rss n_wall _ <<<"$none"
	read -r m_cpu m_rss m_wall _ <<<"$many"
	in_ns srv forward-device-port "$FIX_ID" --close all >>"$BENCH_ERRLOG" 2>&1 || true
	in_ns dev1 "${poll[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
	{
		echo "## 6. Many tunnels"
		echo
		echo "dev1 holding $k tunnels ($up of $k listening on the server, $through of $k carried an"
		echo "admin login) against the same device holding none: one \`phonehome poll\` (the"
		echo "cron loop stopped; median of $n runs; the poll finds every tunnel alive and"
		echo "leaves it alone). Memory of the tunnels themselves: the sum of the proportional set"
		echo "size (Pss, shared pages split among their users) of every dbclient on the device and"
		echo "of every sshd process on the server, with the tunnels minus without."
		echo
		echo "| poll | CPU ms | × none | peak RSS KiB | × none | wall ms | × none |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
		echo "| no tunnel | $n_cpu | 1.00 | $(thousands "$n_rss") | 1.00 | $n_wall | 1.00 |"
		echo "| $k tunnels | $m_cpu | $(ratio "$m_cpu" "$n_cpu") | $(thousands "$m_rss") | $(ratio "$m_rss" "$n_rss") | $m_wall | $(ratio "$m_wall" "$n_wall") |"
		echo
		echo "| memory of $k open tunnels | total Pss KiB | per tunnel KiB |"
		echo "| --- | ---: | ---: |"
		echo "| device: the dbclient processes | $(thousands $((pss_db - pss_db0))) | $(calc "($pss_db - $pss_db0) / $k" 0) |"
		echo "| server: sshd processes | $(thousands $((pss_sshd - pss_sshd0))) | $(calc "($pss_sshd - $pss_sshd0) / $k" 0) |"
		echo
		echo "Reproduce: \`bench/run\` (section 6)."
		echo
	} >"$out"
}
