#!/bin/sh
# install-server.sh: the logic of `install.sh server`. Installs the phonehome server
# tools, creates the device group and the state directories with their owners and
# modes, writes server.conf (if missing) and the sshd_config.d drop-in that locks device
# logins down, checks sshd accepts it (restoring the previous drop-in if not), and
# reloads sshd only if it is running.
#
# usage: install-server.sh [--root DIR] [--bin-dir DIR] [--no-reload]
#   --root DIR     install under DIR instead of / (tests; every path is prefixed and
#                  the drop-in and key files point at the prefixed paths)
#   --bin-dir DIR  where the built binaries are (default: target/release of the repo)
#   --no-reload    do not reload sshd
set -eu

me=install-server.sh
here=$(cd "$(dirname "$0")" && pwd)
root=/
bin_dir=${CARGO_TARGET_DIR:-$here/../target}/release
reload=yes

die() {
	echo "$me: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
	--root=*) root=${1#--root=}; shift ;;
	--bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
	--bin-dir=*) bin_dir=${1#--bin-dir=}; shift ;;
	--no-reload) reload=no; shift ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

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

commands="add-device remove-device forward-device-port list-devices phonehome-gate"
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

# server.conf: written once, never overwritten (the admin owns it afterwards).
install -d -m 0755 "$P/etc/phonehome" "$P/etc/phonehome/authorized_keys"
if [ ! -e "$conf" ]; then
	host=$(hostname -f 2>/dev/null || hostname)
	tmp=$conf.tmp.$$
	cat >"$tmp" <<EOF
# phonehome server settings (name = value). See server-scripts/README.md.
server_host = $host
server_port = 22
port_range = 20000-29999
poll_interval = 60
default_ttl = 3600
admin_user = ${SUDO_USER:-root}
device_group = phonehome-devices
gate = $P/usr/local/lib/phonehome/phonehome-gate
# Held polls (instant tunnels): seconds each device's session stays open after its poll
# (0: off); every held session costs server memory (BENCHMARKS.md, section 7).
hold = 0
hold_sessions = 1000
EOF
	chmod 0644 "$tmp"
	mv "$tmp" "$conf"
	echo "wrote $conf (edit server_host and admin_user if needed)"
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
for c in add-device remove-device forward-device-port list-devices; do
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
install -d -m 0700 "$state/devices" "$state/locks"
[ -e "$state/revoked" ] || install -m 0600 /dev/null "$state/revoked"

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
	AuthorizedKeysFile $P/etc/phonehome/authorized_keys/%u
	AuthorizedKeysCommand none
	AuthorizedPrincipalsFile none
	AuthenticationMethods publickey
	PubkeyAuthentication yes
	PasswordAuthentication no
	KbdInteractiveAuthentication no
	HostbasedAuthentication no
	ForceCommand $gate_cmd
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

# Expired requests stop being served at once (the gate checks), but their listen
# grants stay in the key file until it is rewritten: prune them every minute.
if [ -d "$P/etc/cron.d" ]; then
	root_arg=
	[ -z "$P" ] || root_arg=" --root $P"
	printf '# phonehome: withdraw the listen grants of expired port requests (install-server.sh)\n* * * * * root %s/usr/local/bin/forward-device-port --prune%s >/dev/null\n' \
		"$P" "$root_arg" >"$P/etc/cron.d/phonehome.tmp"
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
echo "phonehome server installed under $root"
