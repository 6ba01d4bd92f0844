# shellcheck shell=bash
# Sections 2 and 3: what one poll costs the device and the server, each against the bare
# ssh login that any "call home" needs anyway (a login and a `cat` of a small file
# through the same sshd). The device runs in its namespace behind NAT, as in the lab.

# poll_row LABEL NAME BASE: the row of NAME's samples, each figure also as a ratio to
# the same figure of BASE's samples
poll_row() {
	local label=$1 cpu rss wall fails mean se b_cpu b_rss b_mean
	read -r cpu rss wall _ fails <<<"$(time_stats "$2")"
	read -r mean se <<<"$(time_cpu_mean "$2")"
	read -r b_cpu b_rss _ <<<"$(time_stats "$3")"
	read -r b_mean _ <<<"$(time_cpu_mean "$3")"
	if [[ $cpu == nan ]]; then
		echo "| $label | not measured: every run failed | | | | | | |"
		return
	fi
	[[ $fails -gt 0 ]] && label="$label ($fails runs failed)"
	echo "| $label | $cpu | $(ratio "$cpu" "$b_cpu") | $mean ± $se | $(ratio "$mean" "$b_mean") | $(thousands "$rss") | $(ratio "$rss" "$b_rss") | $wall |"
}

section_device_poll() {
	local out n=$BENCH_POLL_ROUNDS
	out=$(section_file 2-device)
	local st=$FIX/status.json
	fixture_commands "$SRV_IP"
	# BASE_DB without its `env`: bench/lib/rusage.c sets HOME itself, so that env's start (a
	# process of its own the agent's poll does not have) is not in the baseline
	cmd_save b_db dev1 "$st" "${BASE_DB[@]:1}"
	cmd_save b_ssh dev1 "$st" "${BASE_SSH[@]}"
	cmd_save b_x dev1 "$st" "${BASE_SSH_X[@]}"
	cmd_save b_db2 dev1 "$st" "${BASE_DB[@]:1}"
	local -a names=(b_db b_ssh b_x b_db2)
	local why=""
	if [[ -z $BENCH_AGENT ]]; then
		why=$BENCH_NO_AGENT
	elif [[ $FIX_PHONEHOME != yes ]]; then
		why=$FIX_PHONEHOME_WHY
	else
		# one poll first: the run dir and known_hosts get created outside the measurement
		agent_cmd dbclient
		in_ns dev1 "${AGENT[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
		cmd_save a_db dev1 /dev/null "${AGENT[@]}"
		agent_cmd ssh
		in_ns dev1 "${AGENT[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
		cmd_save a_ssh dev1 /dev/null "${AGENT[@]}"
		names+=(a_db a_ssh)
		if [[ -n $BENCH_AGENT_STATIC ]]; then
			local c
			for c in dbclient ssh; do
				agent_cmd "$c" "$BENCH_AGENT_STATIC" -static
				in_ns dev1 "${AGENT[@]}" </dev/null >>"$BENCH_ERRLOG" 2>&1 || true
				cmd_save "s_$c" dev1 /dev/null "${AGENT[@]}"
				names+=("s_$c")
			done
		fi
	fi
	bench_log "device poll: $n rounds of ${names[*]}, interleaved"
	time_interleaved "$n" "${names[@]}"
	local s_cpu x_cpu
	read -r s_cpu _ <<<"$(time_stats b_ssh)"
	read -r x_cpu _ <<<"$(time_stats b_x)"
	local kex
	kex=$(grep -rhoE 'KexAlgorithms=[]^A-Za-z0-9@.,+-]+' "$BENCH_REPO/agent/src" 2>/dev/null | head -n1) || true
	{
		echo "## 2. Device cost of one poll"
		echo
		echo "CPU (user + sys, the process and every child it waited for, from wait4's rusage:"
		echo "bench/lib/rusage.c, started inside the namespace, so that no harness is in the figure)"
		echo "and peak RSS (the largest single process of that tree) of one poll with no request"
		echo "pending over $n rounds (each round runs every row once, in turn, so that a slow spell of"
		echo "a shared machine hits all rows alike), on the device namespace (behind NAT) against the"
		echo "lab's sshd: the median, and the mean with its standard error. The baseline is the bare"
		echo "client doing the same login and a forced \`cat\` of a small file, with a status report"
		echo "of the agent's size on stdin, through the same sshd."
		echo
		echo "| what | CPU ms, median | × baseline | CPU ms, mean ± s.e. | × baseline (means) | peak RSS KiB | × baseline | wall ms |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		poll_row "baseline: \`dbclient\` login + cat" b_db b_db
		poll_row "the same baseline again (A/A: how far this run's noise goes)" b_db2 b_db
		poll_row "baseline: \`ssh\`, curve25519-sha256, login + cat" b_x b_x
		poll_row "\`ssh\`, OpenSSH default kex (sntrup761x25519), login + cat" b_ssh b_x
		if [[ -z $why ]]; then
			if [[ -n $BENCH_AGENT_STATIC ]]; then
				poll_row "\`phonehome poll\`, router build (static musl), with dbclient (vs dbclient baseline)" s_dbclient b_db
				poll_row "\`phonehome poll\`, router build (static musl), with ssh (vs ssh curve25519 baseline)" s_ssh b_x
			else
				echo "| \`phonehome poll\`, router build (static musl) | not measured: $BENCH_NO_AGENT_STATIC | | | | | | |"
			fi
			poll_row "\`phonehome poll\`, host build (glibc, dynamic), with dbclient (vs dbclient baseline)" a_db b_db
			poll_row "\`phonehome poll\`, host build (glibc, dynamic), with ssh (vs ssh curve25519 baseline)" a_ssh b_x
		else
			echo "| \`phonehome poll\` | not measured: $why | | | | | | |"
		fi
		echo
		echo "OpenSSH's default key exchange (post-quantum sntrup761x25519) costs $(ratio "$s_cpu" "$x_cpu") times"
		echo "the CPU of curve25519-sha256 in this run."
		if [[ -n $kex ]]; then
			echo "The agent passes \`-o $kex\` to OpenSSH's client (found in agent/src): it"
			echo "puts curve25519 first and keeps the rest of the default list as a fallback, because"
			echo "the post-quantum default multiplies the CPU of every poll, on the router and on the"
			echo "server (section 3), once a minute per device. What crosses the tunnel is the admin's"
			echo "own ssh session, end to end, with whatever key exchange the admin's client picks."
			echo "dbclient 2022.83 has no post-quantum key exchange; it negotiates curve25519-sha256."
		else
			echo "The agent's source sets no \`KexAlgorithms\`: with OpenSSH's client it uses the default"
			echo "(post-quantum) key exchange. dbclient 2022.83 negotiates curve25519-sha256."
		fi
		echo
		echo "The router build is what OpenWrt runs, and what \`install.sh device\` installs on a"
		echo "generic Linux device (the router profile, statically linked against musl, built for"
		echo "x86_64 as \`cross/build.sh\` builds it); the host build is the same profile for this"
		echo "machine's default target, dynamically linked against glibc, which \`install.sh device\`"
		echo "falls back to without rustup: glibc's start-up is part of its CPU."
		echo
		echo "Peak RSS is the largest process of the poll's tree; in every phonehome row it is the"
		echo "ssh client's own, so the agent itself stays below the client's figure."
		echo
		echo "Reproduce: \`bench/run --only 2\` ($n rounds; \`--quick\` for 5)."
		echo
	} >"$out"
}

# build_openssh10: called by bench/run outside the sandbox (the build fetches the source)
# when section 3 runs. --full builds OpenSSH 10.0p1 with cross/openssh.sh into
# <target>/openssh-10.0p1 (cached there); the default run uses it when it is built;
# --quick leaves it out. Sets BENCH_OSSH10 (its sshd) or BENCH_NO_OSSH10 (why not).
build_openssh10() {
	BENCH_OSSH10='' BENCH_NO_OSSH10=''
	local dir=$BENCH_TARGET/openssh-10.0p1 log=$BENCH_TMP/openssh.log
	if [[ $BENCH_MODE == quick ]]; then
		BENCH_NO_OSSH10="--quick does not build OpenSSH 10.0 (bench/run --full does, with cross/openssh.sh)"
	elif [[ $BENCH_MODE != full && ! -x $dir/sbin/sshd ]]; then
		BENCH_NO_OSSH10="OpenSSH 10.0 is not built (bench/run --full builds it, or: bash cross/openssh.sh $dir)"
	else
		bench_log "OpenSSH 10.0p1 for section 3: cross/openssh.sh $dir"
		if BENCH_OSSH10=$(bash "$BENCH_REPO/cross/openssh.sh" "$dir" 2>"$log"); then
			cat "$log" >>"$BENCH_ERRLOG"
		else
			BENCH_OSSH10=
			BENCH_NO_OSSH10="cross/openssh.sh failed: $(tail -n 1 "$log")"
			cat "$log" >>"$BENCH_ERRLOG"
		fi
	fi
	[[ -z $BENCH_NO_OSSH10 ]] || bench_log "section 3, OpenSSH 10.0: not measured: $BENCH_NO_OSSH10"
	export BENCH_OSSH10 BENCH_NO_OSSH10
}

# build_nossl_sshd: called by bench/run outside the sandbox (the build fetches Debian's
# source through apt) when section 3 runs: the devices' sshd as install.sh server
# --device-sshd-without-openssl builds it (server-scripts/build-sshd.sh, cached in
# <target>/device-sshd while openssh-server stays the same). Sets BENCH_NOSSL_BUILD (the
# build's dir) or BENCH_NO_NOSSL (why not).
build_nossl_sshd() {
	BENCH_NOSSL_BUILD='' BENCH_NO_NOSSL=''
	local log=$BENCH_TMP/build-sshd.log
	bench_log "the devices' sshd without OpenSSL for section 3: server-scripts/build-sshd.sh $BENCH_TARGET/device-sshd"
	if ! BENCH_NOSSL_BUILD=$(bash "$BENCH_REPO/server-scripts/build-sshd.sh" "$BENCH_TARGET/device-sshd" 2>"$log"); then
		BENCH_NOSSL_BUILD=
		BENCH_NO_NOSSL="server-scripts/build-sshd.sh failed: $(tail -n 1 "$log")"
		bench_log "section 3, sshd without OpenSSL: not measured: $BENCH_NO_NOSSL"
	fi
	cat "$log" >>"$BENCH_ERRLOG"
	export BENCH_NOSSL_BUILD BENCH_NO_NOSSL
}

# build_pq_dbclient: called by bench/run outside the sandbox when section 3 runs in --full
# mode: builds the dropbear releases (cross/dropbear.sh, cached in target/dropbear) when
# none of them offers post-quantum key exchange yet, for section 3's post-quantum rows.
# Other modes use what is built, and the rows say how to build it.
build_pq_dbclient() {
	[[ $BENCH_MODE == full && -z $(pq_dbclient) ]] || return 0
	bench_log "dropbear releases for section 3's post-quantum rows: cross/dropbear.sh"
	bash "$BENCH_DIR/../cross/dropbear.sh" >/dev/null 2>>"$BENCH_ERRLOG" ||
		bench_log "cross/dropbear.sh failed; section 3 says so: $(tail -n 1 "$BENCH_ERRLOG")"
}

# server_cpu_batch N CMD...: sshd's CPU (listener and all it reaped) over N logins, in
# ms; CMD runs in the server namespace with the status report on stdin
server_cpu_batch() {
	local n=$1 i before after fails=0
	shift
	sshd_quiet "$FIX_SSHD" || true
	before=$(proc_tree_cpu_ms "$FIX_SSHD")
	for ((i = 0; i < n; i++)); do
		in_ns srv "$@" <"$FIX/status.json" >/dev/null 2>>"$BENCH_ERRLOG" || fails=$((fails + 1))
	done
	if ! sshd_quiet "$FIX_SSHD"; then
		bench_log "server poll: sshd still has children 5 s after $n logins (see the error log)"
		ps -o pid,ppid,etime,args -e >>"$BENCH_ERRLOG"
	fi
	after=$(proc_tree_cpu_ms "$FIX_SSHD")
	[[ $fails -eq 0 ]] || bench_log "server poll: $fails of $n logins failed ($*)"
	echo $((after - before))
}

# cpu_ticks CPU: "BUSY TOTAL" clock ticks of that cpu so far (/proc/stat; idle and
# iowait are not busy)
cpu_ticks() {
	awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# How many logins server_elapsed keeps in flight: enough that sshd's core, not the wait
# between client and server, bounds the rate (the lab's sshds take MaxStartups 200, as
# install-server.sh writes it, so none is dropped)
TP_IN_FLIGHT=16

# server_elapsed LABEL N CMD...: seconds for N logins, TP_IN_FLIGHT at a time, clients on
# cpu 1 (sshd has been pinned to cpu 0), all started inside the server's namespace by one
# xargs (an `ip netns exec` per login would cost the clients' core more than the login);
# appends how busy each cpu was meanwhile to $FIX/tp-LABEL.cpu ("BUSY0 TOTAL0 BUSY1
# TOTAL1", clock ticks), which core_busy sums up
server_elapsed() {
	local label=$1 n=$2 t0 t1 c0 c1
	shift 2
	c0=$(cpu_ticks 0) c1=$(cpu_ticks 1)
	t0=$(date +%s.%N)
	# shellcheck disable=SC2016 # expanded by the inner sh
	seq "$n" | ip netns exec srv taskset -c 1 xargs -P "$TP_IN_FLIGHT" -I{} sh -c '"$@" <"$0" >/dev/null 2>&1 || echo fail' \
		"$FIX/status.json" "$@" | grep -c fail >>"$FIX/tp.fails" || true
	t1=$(date +%s.%N)
	echo "$(cpu_ticks 0) $(cpu_ticks 1) $c0 $c1" |
		awk '{ print $1 - $5, $2 - $6, $3 - $7, $4 - $8 }' >>"$FIX/tp-$label.cpu"
	calc "$t1 - $t0" 3
}

# tp_cell RATE LABEL: the measured column: the rate and how busy both cores were
tp_cell() {
	if [[ -z $1 ]]; then
		echo "not measured: one cpu"
	else
		echo "$1 (cores $(core_busy "$2"))"
	fi
}

# core_busy LABEL: "sshd's core N %, the clients' M %" over LABEL's server_elapsed runs
core_busy() {
	awk '{ b0 += $1; t0 += $2; b1 += $3; t1 += $4 }
		END { if (t0 && t1) printf "%.0f / %.0f %%", 100 * b0 / t0, 100 * b1 / t1 }' "$FIX/tp-$1.cpu" 2>/dev/null
}

section_server_poll() {
	local out n=$BENCH_LOGINS
	out=$(section_file 3-server)
	local cat_ms gate_ms="" why="" cat_tp="" gate_tp="" ncpu
	ncpu=$(nproc)
	fixture_commands 127.0.0.1
	# 10 rounds, each a batch of every kind of login in turn (a slow spell of a shared
	# machine then hits every kind alike)
	local rounds=10 per kq r t_cat=0 t_gate=0 t_x=0 t_pq=0
	per=$(((n + rounds - 1) / rounds))
	kq=$(((per + 3) / 4))
	[[ $FIX_PHONEHOME == yes ]] || why=$FIX_PHONEHOME_WHY
	local t_lean=0 lean_why="" main_sshd=$FIX_SSHD
	[[ -z $why ]] || lean_why=$why
	local t_nossl=0 nossl_why=${BENCH_NO_NOSSL:-}
	if [[ -n $lean_why ]]; then
		nossl_why=$lean_why
	elif [[ -z $nossl_why ]] && ! nossl_sshd_start; then
		nossl_why="the devices' sshd without OpenSSL did not start (see the error log)"
	fi
	local t_l10=0 l10_why=${BENCH_NO_OSSH10:-}
	if [[ -n $lean_why ]]; then
		l10_why=$lean_why
	elif [[ -z $l10_why ]] && ! lean10_sshd_start; then
		l10_why="OpenSSH 10.0's sshd did not start with the devices' configuration (see the error log)"
	fi
	if [[ -z $lean_why ]] && ! lean_sshd_start; then
		lean_why="the devices' own sshd did not start (see the error log)"
		[[ -n $l10_why ]] || l10_why=$lean_why
	fi
	local t_gpq=0 t_lpq=0 t_l10pq=0 pq_why="" pq_v=""
	if [[ -n $lean_why ]]; then
		pq_why=$lean_why
	elif [[ -z $PQ_DBCLIENT ]]; then
		pq_why="no dbclient >= 2025.87 in target/dropbear (bash cross/dropbear.sh builds them)"
	else
		pq_v=$(basename "$(dirname "$PQ_DBCLIENT")")
	fi
	bench_log "server poll: sshd CPU, $rounds rounds of $per dbclient logins (cat, gate${LEAN_SSHD:+, gate on the device sshd}) and $kq OpenSSH logins (each kex)"
	for ((r = 0; r < rounds; r++)); do
		t_cat=$((t_cat + $(server_cpu_batch "$per" "${BASE_DB[@]}")))
		if [[ -z $why ]]; then
			t_gate=$((t_gate + $(server_cpu_batch "$per" "${GATE_DB[@]}")))
		fi
		if [[ -z $lean_why ]]; then
			FIX_SSHD=$LEAN_SSHD
			t_lean=$((t_lean + $(server_cpu_batch "$per" "${GATE_LEAN[@]}")))
			FIX_SSHD=$main_sshd
		fi
		if [[ -z $l10_why ]]; then
			FIX_SSHD=$LEAN10_SSHD
			t_l10=$((t_l10 + $(server_cpu_batch "$per" "${GATE_LEAN10[@]}")))
			FIX_SSHD=$main_sshd
		fi
		if [[ -z $nossl_why ]]; then
			FIX_SSHD=$NOSSL_SSHD
			t_nossl=$((t_nossl + $(server_cpu_batch "$per" "${GATE_NOSSL[@]}")))
			FIX_SSHD=$main_sshd
		fi
		if [[ -z $pq_why ]]; then
			t_gpq=$((t_gpq + $(server_cpu_batch "$kq" "${GATE_PQ[@]}")))
			FIX_SSHD=$LEAN_SSHD
			t_lpq=$((t_lpq + $(server_cpu_batch "$kq" "${GATE_LEAN_PQ[@]}")))
			if [[ -z $l10_why ]]; then
				FIX_SSHD=$LEAN10_SSHD
				t_l10pq=$((t_l10pq + $(server_cpu_batch "$kq" "${GATE_LEAN10_PQ[@]}")))
			fi
			FIX_SSHD=$main_sshd
		fi
		t_x=$((t_x + $(server_cpu_batch "$kq" "${BASE_SSH_X[@]}")))
		t_pq=$((t_pq + $(server_cpu_batch "$kq" "${BASE_SSH[@]}")))
	done
	n=$((per * rounds))
	cat_ms=$(calc "$t_cat / $n" 1)
	if [[ -z $why ]]; then gate_ms=$(calc "$t_gate / $n" 1); fi
	local lean_ms="" lean_tp=""
	if [[ -z $lean_why ]]; then lean_ms=$(calc "$t_lean / $n" 1); fi
	local l10_ms="" l10_tp=""
	if [[ -z $l10_why ]]; then l10_ms=$(calc "$t_l10 / $n" 1); fi
	local nossl_ms="" nossl_tp=""
	if [[ -z $nossl_why ]]; then nossl_ms=$(calc "$t_nossl / $n" 1); fi
	local gpq_ms="" lpq_ms="" l10pq_ms=""
	if [[ -z $pq_why ]]; then
		gpq_ms=$(calc "$t_gpq / ($kq * $rounds)" 1)
		lpq_ms=$(calc "$t_lpq / ($kq * $rounds)" 1)
		if [[ -z $l10_why ]]; then l10pq_ms=$(calc "$t_l10pq / ($kq * $rounds)" 1); fi
	fi
	local x_ms pq_ms
	x_ms=$(calc "$t_x / ($kq * $rounds)" 1)
	pq_ms=$(calc "$t_pq / ($kq * $rounds)" 1)
	kq=$((kq * rounds))
	if [[ $ncpu -ge 2 ]]; then
		# both sshds (and all they fork) on cpu 0, the clients on cpu 1; one batch at a time
		taskset -pc 0 "$FIX_SSHD" >/dev/null
		[[ -z $lean_ms ]] || taskset -pc 0 "$LEAN_SSHD" >/dev/null
		[[ -z $l10_ms ]] || taskset -pc 0 "$LEAN10_SSHD" >/dev/null
		[[ -z $nossl_ms ]] || taskset -pc 0 "$NOSSL_SSHD" >/dev/null
		bench_log "server poll: throughput, $n logins of each kind, sshd on cpu 0, clients on cpu 1"
		# 4 rounds, cat, gate and the gate on the devices' own sshd (9.2, 10.0) in turn
		local s_cat=0 s_gate=0 s_lean=0 s_l10=0 s_nossl=0 q=$(((n + 3) / 4))
		for ((r = 0; r < 4; r++)); do
			s_cat=$(calc "$s_cat + $(server_elapsed cat "$q" "${BASE_DB[@]}")" 3)
			if [[ -n $gate_ms ]]; then
				s_gate=$(calc "$s_gate + $(server_elapsed gate "$q" "${GATE_DB[@]}")" 3)
			fi
			if [[ -n $lean_ms ]]; then
				s_lean=$(calc "$s_lean + $(server_elapsed lean "$q" "${GATE_LEAN[@]}")" 3)
			fi
			if [[ -n $l10_ms ]]; then
				s_l10=$(calc "$s_l10 + $(server_elapsed l10 "$q" "${GATE_LEAN10[@]}")" 3)
			fi
			if [[ -n $nossl_ms ]]; then
				s_nossl=$(calc "$s_nossl + $(server_elapsed nossl "$q" "${GATE_NOSSL[@]}")" 3)
			fi
		done
		cat_tp=$(calc "$q * 4 / $s_cat" 1)
		if [[ -n $gate_ms ]]; then gate_tp=$(calc "$q * 4 / $s_gate" 1); fi
		if [[ -n $lean_ms ]]; then lean_tp=$(calc "$q * 4 / $s_lean" 1); fi
		if [[ -n $l10_ms ]]; then l10_tp=$(calc "$q * 4 / $s_l10" 1); fi
		if [[ -n $nossl_ms ]]; then nossl_tp=$(calc "$q * 4 / $s_nossl" 1); fi
		taskset -pc "0-$((ncpu - 1))" "$FIX_SSHD" >/dev/null
	fi
	lean_sshd_stop
	lean10_sshd_stop
	nossl_sshd_stop
	local cat_cap gate_cap ossh10=""
	# the release cross/openssh.sh builds (10.0p1's source names itself OpenSSH_10.0p2)
	[[ -z $l10_ms ]] || ossh10="OpenSSH $(sed -n 's/^VERSION=//p' "$BENCH_REPO/cross/openssh.sh")"
	cat_cap=$(calc "1000 / $cat_ms" 1)
	{
		echo "## 3. Server cost of one poll"
		echo
		echo "sshd's CPU per login, read from \`/proc/<pid>/stat\` of the sshd listener (utime + stime"
		echo "+ cutime + cstime: the listener reaps each connection's processes, which reap the"
		echo "session and the forced command, so its counters cover the whole login) before and"
		echo "after each batch of sequential logins from the server's own loopback ($n dbclient logins"
		echo "of each kind in all, in 10 interleaved rounds). Clock-tick"
		echo "resolution ($(getconf CLK_TCK) Hz) summed over many logins. This needs no cgroup (this machine has"
		echo "$([[ -e /sys/fs/cgroup/cgroup.controllers ]] && echo "cgroup v2" || echo "cgroup v1 controllers, no writable cgroup v2 hierarchy"))."
		echo
		echo "| login | sshd CPU ms / login | × baseline | CPU-bound polls/s per core | measured polls/s (sshd pinned to 1 core) |"
		echo "| --- | ---: | ---: | ---: | ---: |"
		echo "| baseline: forced \`cat\` | $cat_ms | 1.00 | $cat_cap | $(tp_cell "${cat_tp:-}" cat) |"
		if [[ -n $gate_ms ]]; then
			gate_cap=$(calc "1000 / $gate_ms" 1)
			echo "| phonehome: the gate (\`poll\`, status report on stdin) | $gate_ms | $(ratio "$gate_ms" "$cat_ms") | $gate_cap | $(tp_cell "${gate_tp:-}" gate) |"
		else
			echo "| phonehome: the gate | not measured: $why | | | |"
		fi
		if [[ -n $lean_ms ]]; then
			echo "| phonehome: the gate on the devices' own sshd (\`--device-sshd\`: no PAM, no motd, ed25519 host key only, no sntrup761, no compression) | $lean_ms | $(ratio "$lean_ms" "$cat_ms") | $(calc "1000 / $lean_ms" 1) | $(tp_cell "${lean_tp:-}" lean) |"
		else
			echo "| phonehome: the gate on the devices' own sshd | not measured: $lean_why | | | |"
		fi
		if [[ -n $l10_ms ]]; then
			echo "| phonehome: the gate on the devices' own sshd, on $ossh10 (cross/openssh.sh: sshd, sshd-session, sshd-auth; OpenSSL, no PAM) | $l10_ms | $(ratio "$l10_ms" "$cat_ms") | $(calc "1000 / $l10_ms" 1) | $(tp_cell "${l10_tp:-}" l10) |"
		else
			echo "| phonehome: the gate on the devices' own sshd, on OpenSSH 10.0 | not measured: $l10_why | | | |"
		fi
		local nossl_v=""
		[[ -z $BENCH_NOSSL_BUILD ]] || nossl_v="Debian openssh $(cat "$BENCH_NOSSL_BUILD/debian-version")"
		if [[ -n $nossl_ms ]]; then
			echo "| phonehome: the gate on the devices' own sshd built without OpenSSL (\`--device-sshd-without-openssl\`: $nossl_v, server-scripts/build-sshd.sh) | $nossl_ms | $(ratio "$nossl_ms" "$cat_ms") | $(calc "1000 / $nossl_ms" 1) | $(tp_cell "${nossl_tp:-}" nossl) |"
		else
			echo "| phonehome: the gate on the devices' own sshd built without OpenSSL | not measured: $nossl_why | | | |"
		fi
		if [[ -n $gpq_ms ]]; then
			echo "| the gate, dbclient $pq_v (offers post-quantum kex: sntrup761x25519 on the shared sshd) ($kq logins) | $gpq_ms | $(ratio "$gpq_ms" "$cat_ms") | $(calc "1000 / $gpq_ms" 1) | |"
			echo "| the gate on the devices' own sshd, dbclient $pq_v (curve25519 there) ($kq logins) | $lpq_ms | $(ratio "$lpq_ms" "$cat_ms") | $(calc "1000 / $lpq_ms" 1) | |"
			if [[ -n $l10pq_ms ]]; then
				echo "| the gate on the devices' own sshd on $ossh10, dbclient $pq_v (mlkem768x25519 offered first there; this dbclient has it) ($kq logins) | $l10pq_ms | $(ratio "$l10pq_ms" "$cat_ms") | $(calc "1000 / $l10pq_ms" 1) | |"
			fi
		else
			echo "| the gate with a dbclient that offers post-quantum kex (>= 2025.87) | not measured: $pq_why | | | |"
		fi
		echo "| OpenSSH client, curve25519-sha256, forced \`cat\` ($kq logins) | $x_ms | $(ratio "$x_ms" "$cat_ms") | $(calc "1000 / $x_ms" 1) | |"
		echo "| OpenSSH client, default kex (sntrup761x25519), forced \`cat\` ($kq logins) | $pq_ms | $(ratio "$pq_ms" "$cat_ms") | $(calc "1000 / $pq_ms" 1) | |"
		echo
		local basis=${gate_tp:-${gate_cap:-}}
		if [[ -n $basis ]]; then
			echo "Devices one core serves at one poll a minute: about $(calc "$basis * 60" 0)"
			echo "(measured polls/s × 60; the floor with a bare forced \`cat\` is $(calc "${cat_tp:-$cat_cap} * 60" 0))."
		else
			echo "Devices one core serves at one poll a minute with a bare forced \`cat\` (the floor):"
			echo "about $(calc "${cat_tp:-$cat_cap} * 60" 0). phonehome's own figure: not measured ($why)."
		fi
		echo "The measured rate: $n logins of each kind in 4 interleaved rounds, $TP_IN_FLIGHT at a time (\`xargs -P $TP_IN_FLIGHT\`"
		echo "inside the server's namespace), clients pinned to cpu 1 and sshd (with everything it forks)"
		echo "to cpu 0. \"cores\": how busy sshd's core and the clients' core were meanwhile (\`/proc/stat\`)."
		echo "Where sshd's core is well short of 100 %, the clients' core was the limit (a dbclient login"
		echo "costs its client about as much CPU as the cheaper sshds spend on it): the rate is then a"
		echo "floor of what one core of sshd sustains, and the CPU-bound column, from sshd's own CPU per"
		echo "login, the figure for it."
		echo
		if [[ -n $lean_ms && -n $gate_ms ]]; then
			echo "The devices' own sshd (\`install.sh server --device-sshd PORT\`) against the shared sshd"
			echo "(the admin's, with the drop-in), the same gate and client, in the same rounds:"
			echo
			# with OpenSSH 10.0 measured: two more columns, its lean sshd and × shared
			local h10="" d10="" c10="" tp10="" pq10="" own
			own=$(/usr/sbin/sshd -V 2>&1 | awk 'NR == 1 {sub(/,$/, "", $1); print $1}')
			if [[ -n $l10_ms ]]; then
				h10=" devices' own sshd, $ossh10 | × shared |" d10=" ---: | ---: |"
				c10=" $l10_ms | $(ratio "$l10_ms" "$gate_ms") |"
				tp10=" $(calc "60000 / $l10_ms" 0) | $(ratio "$gate_ms" "$l10_ms") |"
			fi
			echo "| a poll (dbclient $(dbclient -V 2>&1 | awk 'NR == 1 {sub(/^v/, "", $2); print $2}')) | shared sshd ($own) | devices' own sshd ($own) | × shared |$h10"
			echo "| --- | ---: | ---: | ---: |$d10"
			echo "| sshd CPU ms / login | $gate_ms | $lean_ms | $(ratio "$lean_ms" "$gate_ms") |$c10"
			echo "| polls/min per core, CPU-bound (60,000 / ms) | $(calc "60000 / $gate_ms" 0) | $(calc "60000 / $lean_ms" 0) | $(ratio "$gate_ms" "$lean_ms") |$tp10"
			if [[ -n $lean_tp ]]; then
				[[ -z $l10_tp ]] || tp10=" $(calc "$l10_tp * 60" 0) | $(ratio "$l10_tp" "$gate_tp") |"
				echo "| polls/min per core, measured (sshd pinned to 1 core) | $(calc "$gate_tp * 60" 0) | $(calc "$lean_tp * 60" 0) | $(ratio "$lean_tp" "$gate_tp") |$tp10"
			fi
			if [[ -n $gpq_ms ]]; then
				[[ -z $l10pq_ms ]] || pq10=" $l10pq_ms | $(ratio "$l10pq_ms" "$gpq_ms") |"
				echo "| sshd CPU ms / login, dbclient $pq_v | $gpq_ms | $lpq_ms | $(ratio "$lpq_ms" "$gpq_ms") |$pq10"
			fi
			if [[ -n $l10_ms ]]; then
				echo
				echo "$ossh10 is built here by \`cross/openssh.sh\` (Debian's source, whose \`sshd -V\` says"
				echo "$("$BENCH_OSSH10" -V 2>&1 | awk 'NR == 1 {sub(/,$/, "", $1); print $1}'); OpenSSL and zlib, no PAM, Kerberos or SELinux): its listener starts"
				echo "\`sshd-session\` ($(ldd "$(dirname "$BENCH_OSSH10")/../libexec/sshd-session" 2>/dev/null | grep -c '=>') shared libraries) for each"
				echo "connection, which starts \`sshd-auth\` for the pre-auth part, where 9.2 re-executes the"
				echo "whole sshd (Debian's build: $(ldd /usr/sbin/sshd 2>/dev/null | grep -c '=>') libraries). It runs the configuration"
				echo "\`install-server.sh --device-sshd\` writes where sshd is 10.0 (the same, with"
				echo "mlkem768x25519 offered first; dbclient $(dbclient -V 2>&1 | awk 'NR == 1 {sub(/^v/, "", $2); print $2}') picks curve25519 on both). Its listener's"
				echo "counters cover sshd-session and sshd-auth: each is reaped by its parent."
			elif [[ -n $l10_why ]]; then
				echo
				echo "OpenSSH 10.0's lean sshd: not measured: $l10_why."
			fi
			if [[ -n $nossl_ms ]]; then
				echo
				echo "The devices' own sshd built without OpenSSL (\`install.sh server --device-sshd PORT"
				echo "--device-sshd-without-openssl\`: $nossl_v, the same configuration; Ed25519 device"
				echo "keys only), in the same rounds:"
				echo
				echo "| a poll | devices' own sshd ($own) | the same without OpenSSL | × |"
				echo "| --- | ---: | ---: | ---: |"
				echo "| sshd CPU ms / login | $lean_ms | $nossl_ms | $(ratio "$nossl_ms" "$lean_ms") |"
				echo "| polls/min per core, CPU-bound (60,000 / ms) | $(calc "60000 / $lean_ms" 0) | $(calc "60000 / $nossl_ms" 0) | $(ratio "$lean_ms" "$nossl_ms") |"
				if [[ -n $nossl_tp && -n $lean_tp ]]; then
					echo "| polls/min per core, measured (sshd pinned to 1 core) | $(calc "$lean_tp * 60" 0) | $(calc "$nossl_tp * 60" 0) | $(ratio "$nossl_tp" "$lean_tp") |"
				fi
			fi
			echo
			echo "Issue 14's goal is 3,000 polls/min per core on the devices' own sshd."
			echo "Where its CPU goes and what is left to cut: server-scripts/README.md (install-server.sh)."
			echo
		fi
		echo "Reproduce: \`bench/run\` (section 3; \`--quick\` for 30 logins, without OpenSSH 10.0; \`--full\` builds it)."
		echo
	} >"$out"
}
