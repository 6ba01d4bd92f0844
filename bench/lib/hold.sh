# shellcheck shell=bash
# Section 8: held polls (issue 16). What holding each device's session open until its
# next tick buys (request-to-login latency, hold on against hold off, both devices ticking
# on the clock like cron) and what it costs (the server memory of one held session, the
# device memory, the CPU of one poll held against one not held). Baselines in the same
# run: dev2 polls with `hold = no` beside dev1 with hold on, requests to both at the same
# moments; the held and the plain polls of the CPU figure alternate in rounds.

# seconds to the next multiple of TICK s of the clock, plus OFFSET ms
bench_sleep_to_tick() {
	local tick=$1 offset=$2 step left
	step=$((tick * 1000))
	left=$(((step - $(date +%s%3N) % step + offset) % step))
	sleep "$((left / 1000)).$(printf '%03d' $((left % 1000)))"
}

# 95th percentile of the numbers on stdin (nearest rank)
stat_p95() {
	sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit}; i=int(NR*0.95); if (i<NR*0.95) i++; print a[i]}'
}

# request_both PORT LIMIT: one request to dev1 (holds) and one to dev2 (does not), at the
# same moment; appends each latency (ms) to hold-on.ms and hold-off.ms
request_both() {
	local port=$1 limit=$2
	request_of dev1 "$(dev_id dev1)" "$port" "$limit" >>"$FIX/hold-on.ms" &
	local a=$!
	request_of dev2 "$(dev_id dev2)" $((port + 1)) "$limit" >>"$FIX/hold-off.ms" &
	local b=$!
	wait "$a" "$b" || true
}

# request_of DEV ID PORT LIMIT: ms from forward-device-port --wait to a login through
# the tunnel, or nothing (the failure goes to the error log)
request_of() {
	local dev=$1 id=$2 port=$3 limit=$4 t0 t1 i
	t0=$(date +%s%3N)
	if ! in_ns srv timeout $((limit + 10)) forward-device-port "$id" "22:$port" --wait="$limit" \
		>>"$BENCH_ERRLOG" 2>&1; then
		bench_log "hold: request $id 22:$port failed (see the error log)"
		in_ns srv forward-device-port "$id" --close "$port" >>"$BENCH_ERRLOG" 2>&1 || true
		return 0
	fi
	for ((i = 0; i < 100; i++)); do
		if admin_reaches "$dev" "$port"; then
			t1=$(date +%s%3N)
			echo $((t1 - t0))
			break
		fi
		sleep 0.1
	done
	in_ns srv forward-device-port "$id" --close "$port" >>"$BENCH_ERRLOG" 2>&1 || true
}

# The K devices of the memory and CPU figures: keys, accounts, run dirs (all polling from
# dev1's namespace, behind the NAT). Sets HELD_IDS.
hold_devices() {
	local k=$1 i id d
	HELD_IDS=()
	for ((i = 0; i < k; i++)); do
		id=$(printf '02000000f%03x' "$i")
		d=$FIX/held/$id
		mkdir -p "$d/run"
		dropbearkey -t ed25519 -f "$d/key" >/dev/null 2>&1
		in_ns srv add-device "$id" "$(dropbearkey -y -f "$d/key" | grep '^ssh-' | cut -d' ' -f1,2)" \
			>>"$BENCH_ERRLOG" 2>&1 || bench_log "hold: add-device $id failed"
		HELD_IDS+=("$id")
	done
}

# held_agent ID HOLD INTERVAL: the agent's poll for one of those devices
held_agent() {
	local id=$1 hold=$2 interval=$3 d=$FIX/held/$1 k
	AGENT=("$BENCH_AGENT" --config /dev/null --server "$SRV_IP" --port 22 --account "device$id"
		--key "$d/key" --device-id "$id" --run-dir "$d/run" --client dbclient --log stderr
		--timeout 15 --keepalive 30 --hold "$hold" --interval "$interval")
	while read -r k; do AGENT+=(--host-key "$k"); done < <(server_host_keys)
	AGENT+=(poll)
}

# pss_sum NAME...: the summed Pss (KiB) of every process with one of these names
pss_sum() {
	local n total=0
	for n in "$@"; do total=$((total + $(pss_of "$n"))); done
	echo "$total"
}

# held_batch HOLD SECS: every one of the K devices polls once at the same time (hold
# yes|no, interval SECS, so a held session lasts SECS); prints "server_cpu_ms device_cpu_ms"
# summed over the batch. With MEMORY=1 also writes the memory while the sessions are held.
held_batch() {
	local hold=$1 secs=$2 id before after dev_cpu=0 f
	sshd_quiet "$FIX_SSHD" || true
	before=$(proc_tree_cpu_ms "$FIX_SSHD")
	mkdir -p "$FIX/batch"
	rm -f "$FIX/batch/"*
	for id in "${HELD_IDS[@]}"; do
		held_agent "$id" "$hold" "$secs"
		time_once dev1 /dev/null "${AGENT[@]}" >"$FIX/batch/$id" &
	done
	if [[ ${MEMORY:-} == 1 ]]; then
		sleep $((secs / 2))
		{
			pss_sum sshd phonehome-gate
			pss_sum phonehome dbclient
			pgrep -xc phonehome-gate || true
			pss_of phonehome-gate
		} >"$FIX/held.mem"
	fi
	wait
	sshd_quiet "$FIX_SSHD" || bench_log "hold: sshd still has children after the batch"
	after=$(proc_tree_cpu_ms "$FIX_SSHD")
	for f in "$FIX/batch/"*; do
		dev_cpu=$(awk -v c="$dev_cpu" '{printf "%.0f", c + ($1 + $2) * 1000}' "$f")
	done
	echo "$((after - before)) $dev_cpu"
}

section_hold() {
	local why=""
	[[ -z $BENCH_AGENT ]] && why=$BENCH_NO_AGENT
	[[ -z $why && $FIX_PHONEHOME != yes ]] && why=$FIX_PHONEHOME_WHY
	if [[ -n $why ]]; then
		not_measured 8-hold "8. Held polls (instant tunnels)" "$why"
		return 0
	fi
	local tick=10 reqs=$BENCH_HOLD_REQS k=$BENCH_HOLD_DEVICES secs=$BENCH_HOLD_SECS rounds=$BENCH_HOLD_ROUNDS
	[[ $BENCH_MODE == full ]] && tick=60
	set_hold "$tick" 100
	lab_device dev2 dbclient || bench_die "the lab's device dev2 failed"
	enrol dev2 >>"$BENCH_ERRLOG" 2>&1 || bench_die "enrolling dev2 failed"
	cron_start dev1 "$tick" --interval "$tick"
	cron_start dev2 "$tick" --interval "$tick" --hold no
	bench_log "hold: $reqs requests to each of dev1 (hold on) and dev2 (hold off), ticks every $tick s"
	: >"$FIX/hold-on.ms"
	: >"$FIX/hold-off.ms"
	local since dev
	since=$(date +%s)
	sleep $((2 * tick))
	# Both must be polling, or the figures would time a device that never calls in.
	for dev in dev1 dev2; do
		(($(jq -r '.heartbeat.received // 0' "$(status_file "$(dev_id "$dev")")" 2>/dev/null || echo 0) >= since)) ||
			bench_die "hold: $dev has not polled in two ticks: $(tail -n 3 "$LAB/$dev/agent.log" | tr '\n' ' ')"
	done
	local i
	for ((i = 0; i < reqs; i++)); do
		# RANDOM has 15 bits: alone it would reach only the first 32.8 s of a 60 s tick
		bench_sleep_to_tick "$tick" $(((RANDOM * 32768 + RANDOM) % (tick * 1000)))
		request_both $((22000 + 2 * i)) $((2 * tick + 15))
	done
	cron_stop dev1
	cron_stop dev2
	agent dev1 stop >>"$BENCH_ERRLOG" 2>&1 || true
	agent dev2 stop >>"$BENCH_ERRLOG" 2>&1 || true
	set_hold "$secs" 100
	hold_devices "$k"
	bench_log "hold: memory of $k held sessions; CPU of $rounds rounds of $k polls held $secs s against $k plain polls"
	local idle_srv idle_dev
	idle_srv=$(pss_sum sshd phonehome-gate)
	idle_dev=$(pss_sum phonehome dbclient)
	local r on_srv=0 on_dev=0 off_srv=0 off_dev=0 a b
	for ((r = 0; r < rounds; r++)); do
		read -r a b <<<"$(MEMORY=$((r == 0 ? 1 : 0)) held_batch yes "$secs")"
		on_srv=$((on_srv + a)) on_dev=$((on_dev + b))
		read -r a b <<<"$(held_batch no "$secs")"
		off_srv=$((off_srv + a)) off_dev=$((off_dev + b))
	done
	set_hold 0 0
	hold_report "$tick" "$reqs" "$k" "$secs" "$rounds" "$idle_srv" "$idle_dev" \
		"$on_srv" "$on_dev" "$off_srv" "$off_dev" >"$(section_file 8-hold)"
}

# hold_report TICK REQS K SECS ROUNDS IDLE_SRV IDLE_DEV ON_SRV ON_DEV OFF_SRV OFF_DEV
hold_report() {
	local tick=$1 reqs=$2 k=$3 secs=$4 rounds=$5 idle_srv=$6 idle_dev=$7
	local on_srv=$8 on_dev=$9 off_srv=${10} off_dev=${11}
	local on=$FIX/hold-on.ms off=$FIX/hold-off.ms
	local on_n off_n on_med on_p95 on_max off_med off_p95 off_max
	on_n=$(wc -l <"$on") off_n=$(wc -l <"$off")
	on_med=$(stat_median <"$on") on_p95=$(stat_p95 <"$on") on_max=$(stat_max <"$on")
	off_med=$(stat_median <"$off") off_p95=$(stat_p95 <"$off") off_max=$(stat_max <"$off")
	local held_srv held_dev nheld held_gate
	{ read -r held_srv; read -r held_dev; read -r nheld; read -r held_gate; } <"$FIX/held.mem"
	local per_srv per_dev per_gib n=$((rounds * k))
	per_srv=$(calc "($held_srv - $idle_srv) / $k" 0)
	per_dev=$(calc "($held_dev - $idle_dev) / $k" 0)
	per_gib=$(calc "1048576 / $per_srv" 0)
	local s_on s_off d_on d_off
	s_on=$(calc "$on_srv / $n" 1) s_off=$(calc "$off_srv / $n" 1)
	d_on=$(calc "$on_dev / $n" 1) d_off=$(calc "$off_dev / $n" 1)
	echo "## 8. Held polls (instant tunnels)"
	echo
	echo "With \`hold\` in server.conf, the gate keeps each poll's session open until the device's"
	echo "next tick and sends a new request at once (issue 16). Latency: from"
	echo "\`forward-device-port <id> 22:<port> --wait\` to the first admin login through the tunnel,"
	echo "$reqs requests to each of two devices behind NAT, both ticking every $tick s on the clock as"
	echo "cron does (each tick a process of its own): dev1 with \`hold = yes\` (server \`hold = $tick\`),"
	echo "dev2 with \`hold = no\`, the baseline, polling as before held polls. Each pair of requests is"
	echo "made at the same moment, at a random point of the tick."
	echo
	echo "| what | requests | median ms | p95 ms | worst ms | × hold off (median) |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	echo "| hold off: the next tick picks the request up | $off_n of $reqs | $off_med | $off_p95 | $off_max | 1.00 |"
	echo "| hold on: the held session hears it at once | $on_n of $reqs | $on_med | $on_p95 | $on_max | $(ratio "$on_med" "$off_med") |"
	echo
	if [[ $tick != 60 ]]; then
		echo "The tick here is $tick s; \`bench/run --full\` measures the real 60 s cron (30 requests each,"
		echo "about 30 minutes). Without hold the wait is uniform over the tick, so its figures scale"
		echo "with it; with hold they do not."
		echo
	fi
	echo "Cost, against the same $k devices polling without a hold, in $rounds interleaved rounds: each"
	echo "round all $k poll at once, each holding its session $secs s (the gate ends it: \`hold = $secs\`,"
	echo "\`--interval $secs\`), then all $k poll once more with \`hold = no\`. Memory: the sum of the"
	echo "proportional set size (Pss) of every sshd and phonehome-gate process on the server, and of"
	echo "every phonehome and dbclient process on the device, halfway through the held sessions"
	echo "($nheld gates running), minus the same sums before."
	echo
	echo "| memory | Pss KiB, $k sessions held | Pss KiB before | per held session KiB |"
	echo "| --- | ---: | ---: | ---: |"
	echo "| server: sshd + phonehome-gate | $(thousands "$held_srv") | $(thousands "$idle_srv") | $(thousands "$per_srv") |"
	echo "| of which phonehome-gate | $(thousands "$held_gate") | 0 | $(thousands "$(calc "$held_gate / $k" 0)") |"
	echo "| device: phonehome + dbclient | $(thousands "$held_dev") | $(thousands "$idle_dev") | $(thousands "$per_dev") |"
	echo
	echo "Held sessions per GiB of server memory: about $(thousands "$per_gib")."
	echo
	echo "| CPU per poll | server: sshd and all it reaped, ms | × plain | device: agent and client, ms | × plain |"
	echo "| --- | ---: | ---: | ---: | ---: |"
	echo "| plain poll (\`hold = no\`) | $s_off | 1.00 | $d_off | 1.00 |"
	echo "| poll held $secs s | $s_on | $(ratio "$s_on" "$s_off") | $d_on | $(ratio "$d_on" "$d_off") |"
	echo
	echo "Server CPU from \`/proc/<sshd>/stat\` of the listener (as section 3) around each batch; device"
	echo "CPU from bash's \`time\` of each agent (user + sys, its children included), summed."
	echo
	echo "### The trade-off, for an admin choosing \`hold\`"
	echo
	echo "Computed from the figures above, not measured at these sizes: with \`hold = 60\` every device"
	echo "holds a session all the time (less the handover at each tick), so the server keeps one"
	echo "held session per device in memory; \`hold_sessions\` caps that, and a device that finds no"
	echo "free slot polls as without hold that minute."
	echo
	echo "| devices | memory for all held | latency median / p95, all held | median / p95, hold off | at \`hold_sessions = 1000\` |"
	echo "| ---: | ---: | --- | --- | --- |"
	local d mem share
	for d in 100 1000 10000; do
		mem=$(calc "$d * $per_srv / 1024" 0)
		if [[ $d -le 1000 ]]; then
			share="all held ($(thousands "$mem") MiB)"
		else
			share="$(calc "100000 / $d" 0) % held at a time ($(thousands "$(calc "1000 * $per_srv / 1024" 0)") MiB); the others wait as with hold off"
		fi
		echo "| $(thousands "$d") | $(thousands "$mem") MiB | $on_med / $on_p95 ms | $off_med / $off_p95 ms | $share |"
	done
	echo
	echo "The CPU per poll barely changes (table above); the price of a held session is its"
	echo "memory, on the server and on the device (its agent and ssh client stay resident), and"
	echo "its keepalives on the device's link."
	echo
	echo "Reproduce: \`bench/run --only 8\` (the real 60 s cron: \`bench/run --full --only 8\`)."
	echo
}
