# shellcheck shell=bash
# The bench's server and device, inside the sandbox. It reuses the end-to-end lab
# (tests/e2e/lib.sh: private mounts, a server namespace with the real sshd installed by
# install-server.sh, a device namespace behind NAT) and adds one baseline account to the
# same sshd: `benchcat`, whose forced command is `cat` of a small file and which may open
# remote forwards. Every figure of sections 2, 3, 5 and 6 goes through this one sshd so
# that the baseline and phonehome pay for exactly the same ssh.

# set by fixture_setup
FIX=
FIX_PHONEHOME=        # "yes" when the server tools are installed and dev1 is enrolled
FIX_PHONEHOME_WHY=    # why not, otherwise
FIX_ID=               # dev1's device id
FIX_ACCOUNT=          # dev1's server account

# The short poll interval of section 5 (the lab reads it when sourced).
export PHONEHOME_E2E_POLL=${PHONEHOME_E2E_POLL:-2}

# The port of the devices' own sshd in section 3, of the same on OpenSSH 10.0, and on
# Debian's OpenSSH built without OpenSSL (install.sh server --device-sshd-without-openssl).
LEAN_PORT=2222
LEAN10_PORT=2223
NOSSL_PORT=2224

# lean_sshd_start: the devices' own sshd as install-server.sh --device-sshd configures it,
# on LEAN_PORT beside the lab's sshd; sets LEAN_SSHD to its pid.
lean_sshd_start() {
	"$REPO_DIR/server-scripts/install-server.sh" --bin-dir "$BIN_DIR" --device-sshd "$LEAN_PORT" \
		--no-reload >>"$BENCH_ERRLOG" 2>&1 || return 1
	ip netns exec srv /usr/sbin/sshd -D -E "$LAB/srv/lean-sshd.log" -f /etc/phonehome/sshd_config &
	LEAN_SSHD=$!
	wait_until 10 tcp_open srv 127.0.0.1 "$LEAN_PORT"
}

# lean10_sshd_start: the devices' own sshd on OpenSSH 10.0 ($BENCH_OSSH10, built by
# cross/openssh.sh outside the sandbox), on LEAN10_PORT; sets LEAN10_SSHD to its pid and
# LEAN10_CONF to its configuration: the one install-server.sh --device-sshd writes where
# sshd is that binary (first on PATH: it offers mlkem768x25519 there), its own pid file.
# Run before lean_sshd_start, which writes /etc/phonehome/sshd_config again for 9.2.
lean10_sshd_start() {
	LEAN10_CONF=$LAB/srv/lean10-sshd_config
	PATH="$(dirname "$BENCH_OSSH10"):$PATH" "$REPO_DIR/server-scripts/install-server.sh" \
		--bin-dir "$BIN_DIR" --device-sshd "$LEAN10_PORT" --no-reload >>"$BENCH_ERRLOG" 2>&1 || return 1
	sed "s|^PidFile .*|PidFile $LAB/srv/lean10-sshd.pid|" /etc/phonehome/sshd_config >"$LEAN10_CONF"
	"$BENCH_OSSH10" -t -f "$LEAN10_CONF" >>"$BENCH_ERRLOG" 2>&1 || return 1
	ip netns exec srv "$BENCH_OSSH10" -D -E "$LAB/srv/lean10-sshd.log" -f "$LEAN10_CONF" &
	LEAN10_SSHD=$!
	wait_until 10 tcp_open srv 127.0.0.1 "$LEAN10_PORT"
}

# nossl_sshd_start: the devices' own sshd as install.sh server
# --device-sshd-without-openssl makes it (install-server.sh --device-sshd-build with
# $BENCH_NOSSL_BUILD, built by server-scripts/build-sshd.sh outside the sandbox), on
# NOSSL_PORT; sets NOSSL_SSHD to its pid. Run first: the two after it write
# /etc/phonehome/sshd_config again, and lean_sshd_start sets device_key_types back.
nossl_sshd_start() {
	local conf=$LAB/srv/nossl-sshd_config bin=/usr/local/lib/phonehome/openssh/sbin/sshd
	"$REPO_DIR/server-scripts/install-server.sh" --bin-dir "$BIN_DIR" --device-sshd "$NOSSL_PORT" \
		--device-sshd-build "$BENCH_NOSSL_BUILD" --no-reload >>"$BENCH_ERRLOG" 2>&1 || return 1
	sed "s|^PidFile .*|PidFile $LAB/srv/nossl-sshd.pid|" /etc/phonehome/sshd_config >"$conf"
	"$bin" -t -f "$conf" >>"$BENCH_ERRLOG" 2>&1 || return 1
	ip netns exec srv "$bin" -D -E "$LAB/srv/nossl-sshd.log" -f "$conf" &
	NOSSL_SSHD=$!
	wait_until 10 tcp_open srv 127.0.0.1 "$NOSSL_PORT"
}

nossl_sshd_stop() {
	[[ -n ${NOSSL_SSHD:-} ]] || return 0
	kill "$NOSSL_SSHD" 2>/dev/null
	wait "$NOSSL_SSHD" 2>/dev/null || true
	NOSSL_SSHD=
}

lean10_sshd_stop() {
	[[ -n ${LEAN10_SSHD:-} ]] || return 0
	kill "$LEAN10_SSHD" 2>/dev/null
	wait "$LEAN10_SSHD" 2>/dev/null || true
	LEAN10_SSHD=
}

# lean_sshd_stop: stop it, and point server.conf back at the lab's sshd: --device-sshd set
# server_port to LEAN_PORT, so a device enrolled later (section 8's dev2) would be given
# a port nobody listens on.
lean_sshd_stop() {
	[[ -n ${LEAN_SSHD:-} ]] || return 0
	kill "$LEAN_SSHD" 2>/dev/null
	wait "$LEAN_SSHD" 2>/dev/null || true
	LEAN_SSHD=
	sed -i 's/^server_port = .*/server_port = 22/' /etc/phonehome/server.conf
}

fixture_setup() {
	# shellcheck source=tests/e2e/lib.sh
	. "$BENCH_REPO/tests/e2e/lib.sh"
	set -e
	lab_mounts || bench_die "the lab's private mounts failed"
	lab_network || bench_die "the lab's network namespaces failed"
	export PATH="/usr/local/sbin:/usr/local/bin:$PATH"
	FIX=$LAB/bench
	mkdir -p "$FIX/keys" "$FIX/devhome/.ssh"
	chmod 0755 "$FIX" "$FIX/keys"
	printf '22:20022\n' >"$FIX/inbox.txt"
	chmod 0644 "$FIX/inbox.txt"
	# a status report of about the size the agent sends, for the baseline's stdin
	printf '{"agent_version":"0.1.0","protocol":1,"uptime_secs":12345,"load":[0.1,0.2,0.3],"mem_free_kib":50000,"tunnels":[],"inbox_errors":[]}\n' >"$FIX/status.json"
	useradd -M -d /nonexistent -s /bin/sh benchcat
	usermod -p '*' benchcat
	cat >/etc/ssh/sshd_config.d/zz-bench.conf <<EOF
# the bench's baseline account: one login and a cat, or a plain remote forward
Match User benchcat
	AuthorizedKeysFile $FIX/keys/%u
	ForceCommand cat $FIX/inbox.txt
	AllowTcpForwarding remote
	PermitOpen none
	PermitTTY no
	X11Forwarding no
	AllowAgentForwarding no
EOF
	# the server: with phonehome when its tools build and install, else a bare sshd
	if [[ -n ${BENCH_NO_SERVER_TOOLS:-} ]]; then
		FIX_PHONEHOME_WHY=$BENCH_NO_SERVER_TOOLS
		fixture_bare_sshd
	elif lab_server >"$FIX/lab_server.log" 2>&1; then
		FIX_PHONEHOME=yes
	else
		FIX_PHONEHOME_WHY="the server side did not install: $(tail -n 3 "$FIX/lab_server.log" | tr '\n' ' ')"
		sshd_stop || true
		fixture_bare_sshd
	fi
	lab_admin >/dev/null || bench_die "the lab's admin key failed"
	lab_device dev1 dbclient || bench_die "the lab's device dev1 failed"
	FIX_DEV=$LAB/dev1
	cut -d' ' -f1,2 "$FIX_DEV/id.pub" >"$FIX/keys/benchcat"
	chmod 0644 "$FIX/keys/benchcat"
	# known hosts of the bare clients: every host key of the server, at both addresses
	local k
	: >"$FIX/known_hosts"
	while read -r k; do
		echo "$SRV_IP $k" >>"$FIX/known_hosts"
		echo "127.0.0.1 $k" >>"$FIX/known_hosts"
	done < <(server_host_keys)
	cp "$FIX/known_hosts" "$FIX/devhome/.ssh/known_hosts"
	FIX_SSHD=$(sshd_pid)
	if [[ $FIX_PHONEHOME == yes ]]; then
		FIX_ID=$(dev_id dev1)
		FIX_ACCOUNT=device$FIX_ID
		if ! enrol dev1 >"$FIX/enrol.log" 2>&1; then
			FIX_PHONEHOME=
			FIX_PHONEHOME_WHY="enrolling a device failed: $(tail -n 3 "$FIX/enrol.log" | tr '\n' ' ')"
		fi
	fi
	bench_log "fixture: sshd pid $FIX_SSHD; phonehome ${FIX_PHONEHOME:-not available: $FIX_PHONEHOME_WHY}"
}

# No server tools: the Debian sshd config with the bench's drop-in, fresh host keys.
fixture_bare_sshd() {
	rm -f /etc/ssh/ssh_host_*
	ssh-keygen -A >/dev/null
	sshd_start || bench_die "sshd did not start: $(tail -n 5 "$SSHD_LOG")"
}

# The command lines measured, as arrays (bench/lib/rusage.c runs them directly: no shell in the
# figures). Set by fixture_commands HOST once the fixture is up.
# shellcheck disable=SC2034 # the arrays are used by the section scripts
fixture_commands() {
	local host=$1
	# the bare clients doing one login and `cat` (the floor of a poll)
	BASE_DB=(env HOME="$FIX/devhome" dbclient -i "$FIX_DEV/id_dropbear" -T "benchcat@$host/22" cat)
	BASE_SSH=(ssh -F none -i "$FIX_DEV/id_openssh" -o BatchMode=yes -o StrictHostKeyChecking=yes
		-o UserKnownHostsFile="$FIX/known_hosts" -o IdentitiesOnly=yes -T -p 22 "benchcat@$host" cat)
	BASE_SSH_X=("${BASE_SSH[@]:0:${#BASE_SSH[@]}-2}" -o KexAlgorithms=curve25519-sha256 "benchcat@$host" cat)
	# the same login as a device's poll, with the bare dbclient (what the gate costs sshd)
	GATE_DB=(env HOME="$FIX/devhome" dbclient -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/22" poll)
	# the same through the devices' own sshd (install-server.sh --device-sshd)
	GATE_LEAN=(env HOME="$FIX/devhome" dbclient -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/$LEAN_PORT" poll)
	# and through the same on OpenSSH 10.0 (section 3, when cross/openssh.sh built it)
	GATE_LEAN10=(env HOME="$FIX/devhome" dbclient -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/$LEAN10_PORT" poll)
	# and through the same built without OpenSSL (section 3, --device-sshd-without-openssl)
	GATE_NOSSL=(env HOME="$FIX/devhome" dbclient -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/$NOSSL_PORT" poll)
	# both again with a dbclient that offers post-quantum key exchange (dropbear >= 2025.87,
	# OpenWrt 25.12), when cross/dropbear.sh has built one: it picks sntrup761x25519 where
	# sshd offers it
	PQ_DBCLIENT=$(pq_dbclient)
	GATE_PQ=() GATE_LEAN_PQ=() GATE_LEAN10_PQ=()
	if [[ -n $PQ_DBCLIENT ]]; then
		GATE_PQ=(env HOME="$FIX/devhome" "$PQ_DBCLIENT" -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/22" poll)
		GATE_LEAN_PQ=(env HOME="$FIX/devhome" "$PQ_DBCLIENT" -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/$LEAN_PORT" poll)
		GATE_LEAN10_PQ=(env HOME="$FIX/devhome" "$PQ_DBCLIENT" -i "$FIX_DEV/id_dropbear" -T "$FIX_ACCOUNT@$host/$LEAN10_PORT" poll)
	fi
}

# pq_dbclient: the newest dbclient of target/dropbear/<version>/ (cross/dropbear.sh builds
# them there, in the checkout; or in the bench's cargo target dir) from 2025.87 on, the
# first release with post-quantum key exchange; nothing if none
pq_dbclient() {
	local d v best='' best_n=0
	for d in "$BENCH_TARGET"/dropbear/* "$BENCH_DIR"/../target/dropbear/*; do
		v=${d##*/}
		[[ -x $d/dbclient && $v =~ ^[0-9]{4}\.[0-9]{2}$ ]] || continue
		# YYYY.NN as the number YYYYNN
		((${v/./} >= 202587 && ${v/./} > best_n)) || continue
		best=$d/dbclient best_n=${v/./}
	done
	[[ -z $best ]] || echo "$best"
}

# agent_cmd CLIENT [BINARY [RUN_SUFFIX]]: the agent's poll as dev1 runs it (the lab's
# dev_flags, client chosen here); BINARY defaults to BENCH_AGENT, each suffix its own run dir
# shellcheck disable=SC2034 # AGENT is used by the section scripts
agent_cmd() {
	local client=$1 bin=${2:-$BENCH_AGENT} key=$FIX_DEV/id_dropbear
	[[ $client == ssh ]] && key=$FIX_DEV/id_openssh
	AGENT=("$bin" --config "$FIX_DEV/phonehome.conf" --run-dir "$FIX_DEV/run-$client${3:-}"
		--key "$key" --known-hosts "$FIX_DEV/known_hosts" --device-id "$FIX_ID"
		--client "$client" --timeout 15 --keepalive 5 --log stderr poll)
}
