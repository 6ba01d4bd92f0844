#!/bin/sh
# install-server.sh: the logic of `install.sh server`. Installs the phonehome server
# tools, creates the device group and the state directories with their owners and
# modes, writes server.conf (if missing; --host and --port change those two settings of
# an existing one, and say so) and the sshd_config.d drop-in that locks device logins
# down, checks sshd accepts it (restoring the previous drop-in if not), and reloads
# sshd only if it is running.
#
# usage: install-server.sh [--host NAME] [--port N] [--device-sshd PORT]
#                          [--device-sshd-build DIR] [--root DIR] [--bin-dir DIR]
#                          [--no-reload]
#   --host NAME    the name or address devices reach this server at (server_host;
#                  add-device prints it in every setup line). Default for a new
#                  server.conf: this machine's host name
#   --port N       the ssh port devices connect to (server_port; default 22)
#   --device-sshd PORT
#                  also run a lean sshd of its own on PORT for device logins only (no
#                  PAM, no motd, the ed25519 host key only, the drop-in's restrictions
#                  for everyone it lets in), as phonehome-sshd.service, or started
#                  directly where systemd does not run; devices connect there
#                  (server_port = PORT). The admin's sshd and its config stay as they are.
#                  A PORT another program listens on is refused, nothing changed
#   --device-sshd-build DIR
#                  with --device-sshd: run it on the sshd build-sshd.sh made in DIR
#                  (Debian's OpenSSH without OpenSSL, about 0.7 of the CPU per poll),
#                  installed to /usr/local/lib/phonehome/openssh. It checks Ed25519
#                  device keys only: refused while a device has another key type, and
#                  server.conf gets device_key_types = ssh-ed25519 (add-device keeps to
#                  it). Without this option the devices' sshd is the system's sshd and
#                  device_key_types goes back to all
#   --root DIR     install under DIR instead of / (tests; every path is prefixed and
#                  the drop-in and key files point at the prefixed paths)
#   --bin-dir DIR  where the built binaries are (default: target/release of the repo)
#   --no-reload    do not reload sshd
#   --check-args   only check the arguments (install.sh does, before it builds)

set -eu

me=install-server.sh
here=$(cd "$(dirname "$0")" && pwd)
root=/
bin_dir=${CARGO_TARGET_DIR:-$here/../target}/release
reload=yes
host=
port=
device_sshd=
device_sshd_build=
check_only=

die() {
	echo "$me: $*" >&2
	exit 1
}

# The comment block at the top of this file, without its '#'.
usage() {
	sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p;}' "$0"
}

while [ $# -gt 0 ]; do
	case $1 in
	--host) [ $# -ge 2 ] || die "--host needs a value: the name or address devices reach this server at"; host=$2; shift 2 ;;
	--host=*) host=${1#--host=}; shift ;;
	--port) [ $# -ge 2 ] || die "--port needs a value: the ssh port devices connect to (22)"; port=$2; shift 2 ;;
	--port=*) port=${1#--port=}; shift ;;
	--device-sshd) [ $# -ge 2 ] || die "--device-sshd needs a value: the port of the devices' own sshd"; device_sshd=$2; shift 2 ;;
	--device-sshd=*) device_sshd=${1#--device-sshd=}; shift ;;
	--device-sshd-build) [ $# -ge 2 ] || die "--device-sshd-build needs a value: the directory build-sshd.sh built into"; device_sshd_build=$2; shift 2 ;;
	--device-sshd-build=*) device_sshd_build=${1#--device-sshd-build=}; shift ;;
	--root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
	--root=*) root=${1#--root=}; shift ;;
	--bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
	--bin-dir=*) bin_dir=${1#--bin-dir=}; shift ;;
	--no-reload) reload=no; shift ;;
	--check-args) check_only=yes; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

# valid_host NAME: the rule of phonehome_protocol::validate_host (the tools check
# server.conf with it again whenever they read it): an IPv6 literal, or dot-separated
# labels of letters, digits and '-' that neither start nor end with '-' (which covers
# IPv4 addresses).
valid_host() {
	case $1 in
	*:*:*) case $1 in *[!0-9A-Fa-f:.]*) return 1 ;; esac; return 0 ;;
	'' | *:* | .* | *. | *..* | -* | *- | *-.* | *.-* | *[!A-Za-z0-9.-]*) return 1 ;;
	esac
}
if [ -n "$host" ] && ! valid_host "$host"; then
	die "invalid --host '$host': give the host name (letters, digits, '-' and '.') or IP address devices reach this server at, without a port"
fi
valid_port() { # valid_port OPTION VALUE
	case $2 in
	'' | 0* | *[!0-9]* | ??????*) die "invalid $1 '$2': a port number from 1 to 65535" ;;
	esac
	[ "$2" -le 65535 ] || die "invalid $1 '$2': a port number from 1 to 65535"
}
[ -z "$port" ] || valid_port --port "$port"
if [ -n "$device_sshd" ]; then
	valid_port --device-sshd "$device_sshd"
	[ "$device_sshd" != 22 ] || die "--device-sshd 22: the admin's sshd has port 22; give the device sshd another port"
	[ -z "$port" ] || [ "$port" = "$device_sshd" ] ||
		die "--port $port and --device-sshd $device_sshd disagree: devices connect to the device sshd; give one of them"
	port=$device_sshd
fi
# port_pids PORT: the processes listening on TCP port PORT (ss -p: root sees them all).
port_pids() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }
# On the live system, the port is free or the devices' sshd's own (a re-run; both ways of
# running it write its pidfile): else the new sshd could not bind it, and SIGHUP would end
# the old one.
if [ -n "$device_sshd" ] && [ -z "${root%/}" ] && [ "$reload" = yes ] && command -v ss >/dev/null 2>&1; then
	ours=$(cat /run/phonehome-sshd.pid 2>/dev/null || true)
	for pid in $(port_pids "$device_sshd"); do
		[ "$pid" = "$ours" ] ||
			die "--device-sshd $device_sshd: $(cat "/proc/$pid/comm" 2>/dev/null || echo 'another program') (pid $pid) listens on port $device_sshd; stop it or pick another port; nothing changed"
	done
fi
[ -z "$device_sshd_build" ] || [ -n "$device_sshd" ] ||
	die "--device-sshd-build needs --device-sshd PORT: it is the sshd that instance runs"
[ -z "$check_only" ] || exit 0
if [ -n "$device_sshd_build" ]; then
	{ [ -x "$device_sshd_build/sbin/sshd" ] && [ -s "$device_sshd_build/debian-version" ]; } ||
		die "--device-sshd-build $device_sshd_build: no sbin/sshd and debian-version there; build it with server-scripts/build-sshd.sh DIR (install.sh server --device-sshd-without-openssl does)"
fi

[ "$(id -u)" = 0 ] || die "must run as root: it creates a group, root-owned files and sshd configuration"
case $root in
/*) ;;
*) root=$(pwd)/$root ;;
esac
case $root in
*[!A-Za-z0-9/._+-]*) die "invalid root '$root': use letters, digits and / . _ - + only" ;;
esac
# P prefixes every path; empty for the live system.
P=${root%/}
[ -z "$P" ] || mkdir -p "$P"

commands="add-device remove-device forward-device-port list-devices watch-devices phonehome-gate"
for c in $commands; do
	[ -x "$bin_dir/$c" ] || die "$bin_dir/$c not found: build first with 'cargo build --release -p phonehome-server' or pass --bin-dir"
done
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || die "sshd not found: install openssh-server (apt-get install openssh-server)"
sshd_bin=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)

conf=$P/etc/phonehome/server.conf
setting() { # setting NAME DEFAULT: the value in server.conf, else DEFAULT
	v=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\\(.*[^[:space:]]\\)[[:space:]]*\$/\\1/p" "$conf" 2>/dev/null | tail -n 1)
	echo "${v:-$2}"
}

# An sshd without OpenSSL checks Ed25519 keys only: refused, with nothing changed, while
# an enrolled device has another key type (it could no longer log in). Checked and
# written under add-device's registry lock, held from here to the device_key_types
# line: an add-device in between waits, then reads the new setting under that lock.
key_types=all
if [ -n "$device_sshd_build" ] && "$device_sshd_build/sbin/sshd" -V 2>&1 | grep -q 'without OpenSSL'; then
	key_types=ssh-ed25519
	command -v flock >/dev/null 2>&1 || die "flock not found: install util-linux"
	registry_lock=$P/var/lib/phonehome/locks/registry.lock
	install -d -m 0755 "$P/var/lib/phonehome"
	install -d -m 0700 "${registry_lock%/*}"
	[ -e "$registry_lock" ] || install -m 0600 /dev/null "$registry_lock"
	exec 9>>"$registry_lock"
	flock 9 || die "could not lock $registry_lock"
	others=$(for f in "$P"/etc/phonehome/authorized_keys/*; do
		# add-device's key lines end with the key's type and base64 (keys::key_line)
		[ ! -f "$f" ] || awk -v a="${f##*/}" 'NF && $(NF - 1) != "ssh-ed25519" { print a " (" $(NF - 1) ")"; exit }' "$f"
	done)
	[ -z "$others" ] || die "--device-sshd-build: its sshd (without OpenSSL) checks ssh-ed25519 device keys only, and these devices have another key: $(echo "$others" | tr '\n' ' ')- give each an ed25519 key (remove-device, then add-device with the new key), or leave out --device-sshd-build; nothing changed"
fi

# set_conf NAME VALUE: replace (or append) NAME's line, atomically; say what it was.
set_conf() {
	old=$(setting "$1" '')
	if [ "$old" = "$2" ]; then
		echo "$conf: $1 = $2 (unchanged)"
		return 0
	fi
	tmp=$conf.tmp.$$
	if grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$conf"; then
		sed -E "s|^[[:space:]]*$1[[:space:]]*=.*\$|$1 = $2|" "$conf" >"$tmp"
	else
		cat "$conf" >"$tmp"
		printf '%s = %s\n' "$1" "$2" >>"$tmp"
	fi
	chmod 0644 "$tmp"
	mv "$tmp" "$conf"
	echo "$conf: $1 = $2 (was: ${old:-not set})"
	changed=yes
}

# server.conf: written once; after that the admin owns it. --host and --port change
# just their own line of an existing file, and say what it held.
install -d -m 0755 "$P/etc/phonehome" "$P/etc/phonehome/authorized_keys"
if [ ! -e "$conf" ]; then
	guessed=
	if [ -z "$host" ]; then
		host=$(hostname -f 2>/dev/null || hostname)
		guessed=yes
	fi
	tmp=$conf.tmp.$$
	cat >"$tmp" <<EOF
# phonehome server settings (name = value). See server-scripts/README.md.
# server_host: the name or address devices reach this server at (install.sh server --host).
server_host = $host
server_port = ${port:-22}
port_range = 20000-29999
poll_interval = 60
default_ttl = 3600
admin_user = ${SUDO_USER:-root}
device_group = phonehome-devices
gate = $P/usr/local/lib/phonehome/phonehome-gate
# Held polls (instant tunnels): seconds each device's session stays open after its poll
# (0: off); every held session costs server memory (BENCHMARKS.md, section 8).
hold = 0
hold_sessions = 1000
EOF
	chmod 0644 "$tmp"
	mv "$tmp" "$conf"
	echo "wrote $conf: server_host = $host, server_port = ${port:-22}"
	if [ -n "$guessed" ]; then
		echo "$me: note: server_host is this machine's own name, '$host'; if devices cannot resolve it, run again with --host NAME (the public name or address)" >&2
	fi
else
	changed=
	[ -z "$host" ] || set_conf server_host "$host"
	[ -z "$port" ] || set_conf server_port "$port"
	if [ -n "$changed" ]; then
		echo "  devices set up before keep the old value: 'add-device --print-setup ID' prints their new setup line"
	elif [ -z "$host$port" ]; then
		echo "kept $conf: server_host = $(setting server_host '(not set)'), server_port = $(setting server_port 22) (change them with --host NAME and --port N, or in the file)"
	fi
fi
group=$(setting device_group phonehome-devices)
# The gate's default lies under the root, as the tools assume (config.rs).
gate=$(setting gate "$P/usr/local/lib/phonehome/phonehome-gate")
case $group in *[!a-z0-9_-]*) die "invalid device_group '$group' in $conf" ;; esac
case $gate in /*) ;; *) die "gate in $conf must be an absolute path" ;; esac
case $gate in *[!A-Za-z0-9/._+-]*) die "invalid gate path '$gate' in $conf" ;; esac
# Under a root, nothing is installed outside it.
case $gate in "$P"/*) ;; *) die "gate = $gate in $conf lies outside the root $root: set it under $P, or remove the line" ;; esac

# Binaries: the commands on PATH, the gate where the key lines point.
install -d -m 0755 "$P/usr/local/bin" "$(dirname "$gate")"
for c in add-device remove-device forward-device-port list-devices watch-devices; do
	install -m 0755 "$bin_dir/$c" "$P/usr/local/bin/$c"
done
install -m 0755 "$bin_dir/phonehome-gate" "$gate"

# The device group.
prefix_args=
[ -z "$P" ] || prefix_args="--prefix $P"
if ! grep -q "^$group:" "$P/etc/group" 2>/dev/null; then
	# shellcheck disable=SC2086 # prefix_args is empty or two words
	groupadd $prefix_args -r "$group" || die "groupadd $group failed"
	echo "created group $group"
fi

# State: registry and locks root-only; requests world-readable (the gate reads them as
# the device); status/<id> are made per device by add-device, owned by the device.
state=$P/var/lib/phonehome
install -d -m 0755 "$state" "$state/requests" "$state/status"
install -d -m 0700 "$state/locks" "$state/watch"
[ -e "$state/revoked" ] || install -m 0600 /dev/null "$state/revoked"

# What a device login may do, one home for both sshd configs (the drop-in's Match block
# and the devices' own sshd): public key only, keys from the root-owned files add-device
# and forward-device-port generate, the gate as the only command, remote forwarding only
# to the ports each key line grants (permitlisten), nothing else. $1 indents each line.
# sshd runs the forced command as `<the account's shell> -c '<command>'`; with `exec` the
# shell (dash, the accounts' /bin/sh) becomes the gate instead of forking it and waiting
# for it: one process fewer per login, and none left waiting through a held poll.
device_login_rules() {
	while IFS= read -r _rule; do
		printf '%s%s\n' "$1" "$_rule"
	done <<RULES
AuthorizedKeysFile $P/etc/phonehome/authorized_keys/%u
AuthorizedKeysCommand none
AuthorizedPrincipalsFile none
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
ForceCommand exec $gate_cmd
PermitTTY no
PermitUserRC no
PermitTunnel no
X11Forwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
AllowTcpForwarding remote
PermitOpen none
GatewayPorts no
ClientAliveInterval 15
ClientAliveCountMax 3
RULES
}

# The drop-in. Debian's sshd_config includes sshd_config.d/*.conf at its top, and the
# first value obtained for a keyword wins, so these settings take precedence for
# device users; the Match block ends at the end of this file.
gate_cmd=$gate
[ -z "$P" ] || gate_cmd="$gate --root $P"
dropin_dir=$P/etc/ssh/sshd_config.d
dropin=$dropin_dir/phonehome.conf
install -d -m 0755 "$dropin_dir"
new=$dropin.new.$$
cat >"$new" <<EOF
# phonehome: written by install-server.sh; re-run 'install.sh server' to change it.
# Device logins (group $group): public key only, keys from root-owned files that
# add-device and forward-device-port generate, the gate as the only command, remote
# forwarding only to the ports each key line grants (permitlisten), nothing else.

# A fleet polls every minute: room for many unauthenticated connections at once.
MaxStartups 200:30:1000

Match Group $group
$(device_login_rules "	")
EOF
chmod 0644 "$new"

# sshd -t needs its privilege separation directory.
[ -d /run/sshd ] || install -d -m 0755 /run/sshd

check_config() { # check_config: sshd -t on the configuration that will use the drop-in
	if [ -z "$P" ]; then
		"$sshd_bin" -t 2>&1
	else
		# Under a prefix: a throwaway main config with its own host key.
		t=$(mktemp -d)
		ssh-keygen -q -t ed25519 -N '' -f "$t/hostkey" >/dev/null
		printf 'Include %s\nHostKey %s/hostkey\nPidFile none\n' "$dropin" "$t" >"$t/sshd_config"
		rc=0
		"$sshd_bin" -t -f "$t/sshd_config" 2>&1 || rc=$?
		rm -rf "$t"
		return $rc
	fi
}

backup=
if [ -e "$dropin" ]; then
	backup=$dropin.bak.$$
	cp -p "$dropin" "$backup"
fi
mv "$new" "$dropin"
if ! err=$(check_config); then
	if [ -n "$backup" ]; then mv "$backup" "$dropin"; else rm -f "$dropin"; fi
	die "sshd rejected the drop-in, previous configuration restored: $(echo "$err" | tr '\n' ' ')"
fi
[ -z "$backup" ] || rm -f "$backup"
echo "wrote $dropin (sshd -t: ok)"

# The devices' own sshd (--device-sshd): a second instance that lets only the device
# group in, with everything the drop-in's Match block says set for everyone, and none of
# what a login of a person needs (PAM sessions, motd, last log, every host key type).
device_conf=$P/etc/phonehome/sshd_config
device_pidfile=$P/run/phonehome-sshd.pid
# The sshd it runs: the system's, or the build of --device-sshd-build, installed where
# that build expects to be (build-sshd.sh's PREFIX). start_device_sshd restarts it
# (not with --no-reload: then restart it yourself, or a running listener re-executes
# the new binary for each connection).
device_bin=$sshd_bin
if [ -n "$device_sshd_build" ]; then
	dest=$P/usr/local/lib/phonehome/openssh
	install -d -m 0755 "$dest/sbin" "$dest/libexec"
	for f in sbin/sshd libexec/sshd-session libexec/sshd-auth; do
		[ -x "$device_sshd_build/$f" ] || continue
		install -m 0755 "$device_sshd_build/$f" "$dest/$f.new"
		mv "$dest/$f.new" "$dest/$f"
	done
	install -m 0644 "$device_sshd_build/debian-version" "$dest/debian-version"
	device_bin=$dest/sbin/sshd
	echo "installed $("$device_bin" -V 2>&1 | head -n 1) (Debian openssh $(cat "$dest/debian-version")) as $device_bin"
	# It gets no fix from apt: after every dpkg run, say so when openssh-server has moved
	# on from the source it was built from (and to syslog, for unattended upgrades).
	cat >"$dest/check-version.new" <<'CHECK'
#!/bin/sh
# phonehome (install-server.sh --device-sshd-build): run by apt after dpkg. The devices'
# sshd is built from Debian's openssh source; say when openssh-server is newer.
dir=$(dirname "$0")
built=$(cat "$dir/debian-version" 2>/dev/null) || exit 0
now=$(dpkg-query -W -f '${Version}' openssh-server 2>/dev/null) || exit 0
[ "$now" != "$built" ] || exit 0
msg="phonehome: the devices' sshd ($dir/sbin/sshd) was built from openssh $built, openssh-server is now $now: rebuild it with './install.sh server --device-sshd PORT --device-sshd-without-openssl' from the phonehome checkout"
echo "WARNING: $msg" >&2
logger -p auth.warning -t phonehome "$msg" 2>/dev/null
exit 0
CHECK
	chmod 0755 "$dest/check-version.new"
	mv "$dest/check-version.new" "$dest/check-version"
	if [ -d "$P/etc/apt/apt.conf.d" ]; then
		printf '// phonehome (install-server.sh --device-sshd-build): after dpkg, warn when openssh-server\n// is newer than the source the devices'"'"' sshd was built from.\nDPkg::Post-Invoke { "[ ! -x %s ] || %s"; };\n' \
			"$dest/check-version" "$dest/check-version" >"$P/etc/apt/apt.conf.d/80phonehome-sshd.tmp"
		mv "$P/etc/apt/apt.conf.d/80phonehome-sshd.tmp" "$P/etc/apt/apt.conf.d/80phonehome-sshd"
		echo "wrote $P/etc/apt/apt.conf.d/80phonehome-sshd (apt warns when openssh-server moves past the build)"
	fi
elif [ -e "$P/etc/apt/apt.conf.d/80phonehome-sshd" ]; then
	rm -f "$P/etc/apt/apt.conf.d/80phonehome-sshd"
	echo "removed $P/etc/apt/apt.conf.d/80phonehome-sshd (the devices' sshd is the system's again)"
fi
# add-device takes the key types that sshd checks; back to all without the build.
if [ "$key_types" != all ] || [ -n "$(setting device_key_types '')" ]; then
	set_conf device_key_types "$key_types"
fi
exec 9>&- # the registry lock, if taken above
if [ -n "$device_sshd" ]; then
	hostkey=$P/etc/ssh/ssh_host_ed25519_key
	if [ ! -e "$hostkey" ]; then
		install -d -m 0755 "$P/etc/ssh"
		ssh-keygen -q -t ed25519 -N '' -f "$hostkey" || die "ssh-keygen could not make $hostkey"
		echo "made the ed25519 host key $hostkey"
	fi
	# Key exchange: curve25519, and ML-KEM's post-quantum hybrid first where this sshd has
	# it (OpenSSH >= 9.9; dbclient >= 2025.87 offers it). Not sntrup761x25519, the only
	# post-quantum exchange of OpenSSH 9.2-9.8: the dbclient releases that offer it pick it,
	# and it costs sshd about a quarter more CPU per login (server-scripts/README.md).
	# No PAM session; an sshd built without PAM (--device-sshd-build) knows no UsePAM and
	# would say so on every start.
	usepam="UsePAM no"
	if "$device_bin" -t -f /dev/null -o "HostKey=$hostkey" -o UsePAM=no 2>&1 | grep -q 'Unsupported option'; then
		usepam="# UsePAM: this sshd is built without PAM"
	fi
	kex=curve25519-sha256,curve25519-sha256@libssh.org
	if "$device_bin" -t -f /dev/null -o "HostKey=$hostkey" -o KexAlgorithms=mlkem768x25519-sha256 >/dev/null 2>&1; then
		kex=mlkem768x25519-sha256,$kex
	fi
	new=$device_conf.new.$$
	cat >"$new" <<CONF
# phonehome: the devices' own sshd (install-server.sh --device-sshd $device_sshd); re-run
# 'install.sh server --device-sshd PORT' to change it. Only group $group gets in: public
# key only, keys from the files add-device and forward-device-port generate, the gate as
# the only command, remote forwarding only to the ports each key line grants.
# Lean: a poll is one login, every minute, from every device. KexAlgorithms: no
# sntrup761x25519 (OpenSSH 9.2's only post-quantum exchange: about 7 ms more sshd CPU
# per login when a dbclient >= 2025.87 picks it); mlkem768x25519 where sshd has it.
# No compression: a poll moves a few hundred bytes, and zlib is code and memory per session.
Port $device_sshd
HostKey $hostkey
KexAlgorithms $kex
Compression no
PidFile $device_pidfile
AllowGroups $group
$usepam
UseDNS no
PrintMotd no
PrintLastLog no
SyslogFacility AUTH
LogLevel INFO
MaxStartups 200:30:1000
PermitRootLogin no
$(device_login_rules "")
CONF
	chmod 0644 "$new"
	if ! err=$("$device_bin" -t -f "$new" 2>&1); then
		rm -f "$new"
		die "sshd rejected the device sshd's configuration, nothing changed: $(echo "$err" | tr '\n' ' ')"
	fi
	mv "$new" "$device_conf"
	echo "wrote $device_conf (sshd -t: ok)"
fi

# Expired requests stop being served at once (the gate checks), but their listen
# grants stay in the key file until it is rewritten: prune them every minute. And
# watch-devices --once every minute: events to the webhooks of server.conf, metrics
# (phonehome-watch.service runs it as a service instead: then drop that line).
if [ -d "$P/etc/cron.d" ]; then
	root_arg=
	[ -z "$P" ] || root_arg=" --root $P"
	printf '# phonehome: withdraw the listen grants of expired port requests (install-server.sh)\n* * * * * root %s/usr/local/bin/forward-device-port --prune%s >/dev/null\n# phonehome: alerts and metrics (server.conf: webhook, metrics_file); remove if phonehome-watch.service runs\n* * * * * root %s/usr/local/bin/watch-devices --once%s >/dev/null\n' \
		"$P" "$root_arg" "$P" "$root_arg" >"$P/etc/cron.d/phonehome.tmp"
	chmod 0644 "$P/etc/cron.d/phonehome.tmp"
	mv "$P/etc/cron.d/phonehome.tmp" "$P/etc/cron.d/phonehome"
	echo "wrote $P/etc/cron.d/phonehome"
else
	echo "$me: note: no $P/etc/cron.d: run 'forward-device-port --prune' every minute from your scheduler" >&2
fi

if [ -z "$P" ]; then
	main=/etc/ssh/sshd_config
	if ! grep -Eq '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' "$main"; then
		echo "$me: WARNING: $main does not include /etc/ssh/sshd_config.d/*.conf: add 'Include /etc/ssh/sshd_config.d/*.conf' at its top or device logins are NOT locked down" >&2
	fi
fi

# device_sshd_listens: within 5 s, the devices' sshd listens on its port, by the pid it
# wrote. The unit is Type=simple: systemctl returns once sshd runs, before it binds.
device_sshd_listens() {
	command -v ss >/dev/null 2>&1 || return 0
	i=0
	while [ "$i" -lt 50 ]; do
		pid=$(cat "$device_pidfile" 2>/dev/null || true)
		[ -n "$pid" ] && port_pids "$device_sshd" | grep -qx "$pid" && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# start_device_sshd: as a systemd service where systemd runs, else directly (and from
# cron at boot); a running one reloads its configuration.
start_device_sshd() {
	unit=/etc/systemd/system/phonehome-sshd.service
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		cat >"$unit.tmp" <<UNIT
[Unit]
Description=phonehome: the devices' own sshd (port $device_sshd)
After=network.target

[Service]
ExecStartPre=$device_bin -t -f $device_conf
ExecStart=$device_bin -D -f $device_conf
ExecReload=$device_bin -t -f $device_conf
ExecReload=/bin/kill -HUP \$MAINPID
Restart=on-failure
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes

[Install]
WantedBy=multi-user.target
UNIT
		mv "$unit.tmp" "$unit"
		systemctl daemon-reload && systemctl enable --quiet phonehome-sshd.service || return 1
		# A unit that failed to start a few times in a row (its port taken, say) is refused
		# another start for a while ("start request repeated too quickly"): clear that.
		systemctl reset-failed phonehome-sshd.service 2>/dev/null || true
		if ! systemctl restart phonehome-sshd.service || ! device_sshd_listens; then
			# what sshd said (systemd's restart lines would push it out)
			journalctl -q --no-pager -n 5 -u phonehome-sshd.service _COMM=sshd >&2 || true
			return 1
		fi
		echo "started phonehome-sshd.service (port $device_sshd)"
		return 0
	fi
	pid=$(cat "$device_pidfile" 2>/dev/null || true)
	old_bin=
	[ -z "$pid" ] || old_bin=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
	if [ -n "$old_bin" ] && [ "$old_bin" != "$device_bin" ]; then
		# SIGHUP re-executes sshd's own binary: another binary needs a fresh start
		kill "$pid" && echo "stopped the device sshd (pid $pid), which ran $old_bin"
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		# SIGHUP now would keep the old binary running: say so instead
		! kill -0 "$pid" 2>/dev/null ||
			die "the device sshd (pid $pid, $old_bin) did not stop within 5 s of SIGTERM; stop it (kill -KILL $pid) and run this again: the configuration is written, $device_bin is not running yet"
	fi
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -HUP "$pid" && echo "reloaded the device sshd (pid $pid, port $device_sshd)"
	elif "$device_bin" -f "$device_conf"; then
		echo "started the device sshd (port $device_sshd; no systemd here)"
	else
		device_sshd_failed=yes
	fi
	if [ -d /etc/cron.d ]; then
		printf '# phonehome: the devices'"'"' own sshd at boot (no systemd here; install-server.sh)\n@reboot root %s -f %s\n' \
			"$device_bin" "$device_conf" >/etc/cron.d/phonehome-sshd.tmp
		chmod 0644 /etc/cron.d/phonehome-sshd.tmp
		mv /etc/cron.d/phonehome-sshd.tmp /etc/cron.d/phonehome-sshd
		echo "wrote /etc/cron.d/phonehome-sshd (starts it at boot)"
	else
		echo "$me: note: start '$device_bin -f $device_conf' at boot yourself (no systemd, no cron.d)" >&2
	fi
}
# A devices' sshd that does not start (its port taken, say) fails the run, but only
# after the admin's sshd has reloaded the drop-in below.
device_sshd_failed=
if [ -n "$device_sshd" ]; then
	if [ -z "$P" ] && [ "$reload" = yes ]; then
		start_device_sshd || device_sshd_failed=yes
	else
		echo "the device sshd is configured, not started (--no-reload or --root): $device_bin -D -f $device_conf"
	fi
fi

if [ -z "$P" ] && [ "$reload" = yes ]; then
	pid=$(cat /run/sshd.pid 2>/dev/null || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -HUP "$pid" && echo "reloaded sshd (pid $pid)"
	elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
		systemctl reload ssh && echo "reloaded ssh.service"
	elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet sshd 2>/dev/null; then
		systemctl reload sshd && echo "reloaded sshd.service"
	else
		echo "sshd is not running: the drop-in applies when it starts"
	fi
fi
[ -z "$device_sshd_failed" ] ||
	die "the devices' sshd did not start (what it said is above; is port $device_sshd taken? ss -ltnp 'sport = :$device_sshd'): everything else is installed; free the port or pick another --device-sshd, and run this again"
echo "phonehome server installed under $root"
