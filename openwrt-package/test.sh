#!/bin/bash
# test.sh: install, run and remove the phonehome .ipk on an OpenWrt-like root, both
# ways opkg runs maintainer scripts: on the router itself (in a chroot of the root,
# IPKG_INSTROOT unset) and from an image build (on the host, IPKG_INSTROOT=root, where
# nothing may be written outside the root). A poll goes to a real OpenSSH sshd on
# 127.0.0.1 through Debian's real dbclient, and a tunnel it opens is used.
#
# Everything runs in a sandbox of its own (mount, network and pid namespaces, tmpfs
# work dir, overlays over the host's /etc /usr /var /root /opt /srv /home whose writes
# are checked and thrown away), so a run, even a killed one, leaves nothing behind.
# What is not OpenWrt here (no procd, no uci binary, no opkg): see README.md, "Tested
# here". Needs root, busybox (static), dropbear-bin, openssh-server, jq.
#
# Usage: openwrt-package/test.sh [--ipk FILE]   (default: build one with build-ipk.sh)
# It waits for busybox crond's next minute (up to 60 s) unless PHONEHOME_OWRT_NO_CRON=1.
# Ends with the line "N passed, N failed"; exit status 0 only if nothing failed.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

if [ "${PHONEHOME_OWRT_SANDBOX:-}" != 1 ]; then
	[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (it uses namespaces, mounts and chroot)" >&2; exit 2; }
	missing=""
	for need in /bin/busybox:busybox-static /usr/bin/dbclient:dropbear-bin /usr/bin/dropbearkey:dropbear-bin \
		/usr/sbin/sshd:openssh-server ssh-keygen:openssh-client jq:jq ss:iproute2 ip:iproute2 \
		pgrep:procps unshare:util-linux shellcheck:shellcheck; do
		command -v "${need%%:*}" >/dev/null || missing="$missing ${need#*:}"
	done
	if [ -n "$missing" ]; then
		echo "test.sh: missing tools; install the Debian packages:$missing" >&2
		exit 2
	fi
	ipk=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--ipk) ipk="$(realpath "$2")"; shift 2 ;;
		*) echo "test.sh: unknown argument '$1'; usage: test.sh [--ipk FILE]" >&2; exit 2 ;;
		esac
	done
	# Built outside the sandbox: cargo may need the registry cache and its lock files.
	if [ -z "$ipk" ]; then
		ipk="$("$here/build-ipk.sh")" || { echo "test.sh: build-ipk.sh failed" >&2; exit 1; }
	fi
	PHONEHOME_OWRT_SANDBOX=1 PHONEHOME_OWRT_IPK="$ipk" \
		exec unshare --mount --net --pid --fork --kill-child --mount-proc /bin/bash "$here/test.sh"
fi

ipk="$PHONEHOME_OWRT_IPK"
passed=0
failed=0
W=/run/owrt-test
R="$W/root"
INFO="$R/usr/lib/opkg/info"
DEVICE_MAC=02:00:00:aa:bb:cc
DEVICE_ID=020000aabbcc

pass() {
	passed=$((passed + 1))
	echo "ok   - $*"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL - $*"
}
# check NAME COMMAND...: the command's success is the check.
check() {
	local name="$1"
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
finish() {
	if [ "$failed" -gt 0 ] && [ -s "$W/sshd/log" ]; then
		echo "--- sshd log"
		tail -n 30 "$W/sshd/log"
	fi
	if [ "$failed" -gt 0 ] && [ -s "$R/var/log/messages" ]; then
		echo "--- syslog of the root"
		tail -n 30 "$R/var/log/messages"
	fi
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}
fatal() {
	fail "$*"
	finish
}
in_root() { # COMMAND...: run inside the root as the router would, no tty, clean env
	chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@" </dev/null
}
cron_lines() { # how many times the poll line is in the root's crontab
	grep -c '^\* \* \* \* \* /etc/init.d/phonehome poll$' "$R/etc/crontabs/root" 2>/dev/null
}

# --- the sandbox --------------------------------------------------------------------
mount --make-rprivate /
# /run is the sandbox's own tmpfs (the work dir lives there); /tmp gets an overlay like
# the other guarded dirs, so that a checkout under /tmp (as CI may clone) stays visible.
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$W"
ip link set lo up
if ! ip link add eth0 address "$DEVICE_MAC" type veth peer name peer0 || ! ip link set eth0 up; then
	fatal "cannot make the device's eth0 (veth) in the sandbox"
fi
for d in etc usr var root opt srv home tmp; do
	[ -d "/$d" ] || continue
	mkdir -p "$W/guard/$d/up" "$W/guard/$d/work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/guard/$d/up,workdir=$W/guard/$d/work" "/$d" ||
		fatal "cannot put an overlay over /$d"
done
# What exists outside the root: the guarded dirs' overlay uppers (/tmp among them), /run
# (apart from the test's own dir) and the top level. Taken just before each script run from the host
# and compared just after: the script may have written nothing of it.
outside_root() {
	find "$W"/guard/*/up -mindepth 1 2>/dev/null
	find /run -mindepth 1 -maxdepth 1 ! -path "$W"
	ls -A /
}
# shellcheck disable=SC2317
host_untouched() {
	local now
	now="$(outside_root)"
	if [ "$now" != "$outside_before" ]; then
		echo "  written outside the root:" >&2
		diff <(echo "$outside_before") <(echo "$now") | sed 's/^/    /' >&2
		return 1
	fi
}

# --- an OpenWrt-like root -----------------------------------------------------------
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib/functions,etc/config,etc/crontabs,etc/init.d,etc/rc.d} \
	"$R"/{dev,proc,sys,tmp,root,var/run,var/log} "$INFO"
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
chroot "$R" /bin/busybox --install -s || fatal "busybox --install in the root failed"
for b in /usr/bin/dbclient /usr/bin/dropbearkey; do
	cp "$b" "$R/usr/bin/" || fatal "no $b (Debian package dropbear-bin)"
	for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
		cp -L --parents "$lib" "$R/"
	done
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
mount -t tmpfs -o mode=0755 tmpfs "$R/dev"
for n in null zero random urandom tty; do
	touch "$R/dev/$n" && mount --bind "/dev/$n" "$R/dev/$n"
done
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
cp "$here/tests/stand-ins/rc.common" "$R/etc/rc.common"
cp "$here/tests/stand-ins/functions.sh" "$R/lib/functions.sh"
cp "$here/tests/stand-ins/procd.sh" "$R/lib/functions/procd.sh"
chroot "$R" /sbin/syslogd -O /var/log/messages || fatal "busybox syslogd would not start in the root"

# --- the package --------------------------------------------------------------------
mkdir -p "$W/pkg" "$W/control"
tar -C "$W/pkg" -xzf "$ipk" || fatal "$ipk is not a gzip'd tar"
check "the .ipk holds ./debian-binary, ./control.tar.gz, ./data.tar.gz in that order" \
	test "$(tar -tzf "$ipk" | tr '\n' ' ')" = "./debian-binary ./control.tar.gz ./data.tar.gz "
check "debian-binary is 2.0" test "$(cat "$W/pkg/debian-binary")" = 2.0
tar -C "$W/control" -xzf "$W/pkg/control.tar.gz"
ws_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
mk_version="$(sed -n 's/^PKG_VERSION:=//p' "$here/Makefile")"
mk_release="$(sed -n 's/^PKG_RELEASE:=//p' "$here/Makefile")"
check "Makefile PKG_VERSION ($mk_version) equals the workspace version ($ws_version)" test "$mk_version" = "$ws_version"
check "control: Package, Version $ws_version-r$mk_release, Architecture x86_64" \
	grep -qzE "Package: phonehome
Version: $ws_version-r$mk_release
.*Architecture: x86_64
Installed-Size: [0-9]+
Description: " "$W/control/control"
check "control: Depends, License, Section, Maintainer" \
	grep -qzE "Depends: libc
.*License: .+
Section: net
.*Maintainer: .+" "$W/control/control"
check "conffiles: the UCI config and the key" \
	test "$(cat "$W/control/conffiles")" = "/etc/config/phonehome
/etc/phonehome/id_dropbear"
if command -v shellcheck >/dev/null; then
	mkdir -p "$W/data"
	tar -C "$W/data" -xzf "$W/pkg/data.tar.gz"
	check "shellcheck -s sh: the init script, uci-defaults and maintainer scripts shipped" \
		shellcheck -s sh "$W/data/etc/init.d/phonehome" "$W/data/etc/uci-defaults/90-phonehome" \
		"$W/control/postinst" "$W/control/prerm" "$W/control/prerm-pkg"
	check "shellcheck: build-ipk.sh, test.sh and the test's stand-ins" \
		shellcheck "$here/build-ipk.sh" "$here/test.sh" "$here"/tests/stand-ins/*
else
	fail "shellcheck is not installed (Debian package shellcheck)"
fi
mkdir -p "$W/again"
tar -C "$W/again" -xzf "$W/pkg/data.tar.gz" ./usr/bin/phonehome
# Packed again with the first one's timestamp (other commits may have landed since).
ipk_epoch="$(TZ=UTC date -d "$(TZ=UTC tar --full-time -tzvf "$ipk" ./debian-binary | awk '{ print $4, $5 }')" +%s)"
SOURCE_DATE_EPOCH="$ipk_epoch" "$here/build-ipk.sh" --binary "$W/again/usr/bin/phonehome" --out "$W/again" >/dev/null 2>&1
check "reproducible: the same tree packs to the same bytes" cmp -s "$ipk" "$W/again/$(basename "$ipk")"
check "every file in data.tar.gz is owned by root" \
	test -z "$(tar -tzvf "$W/pkg/data.tar.gz" | awk '$2 != "0/0"')"
installed_size="$(sed -n 's/^Installed-Size: //p' "$W/control/control")"

opkg_install() { # unpack into the root and record it as opkg does
	tar -C "$R" -xzf "$W/pkg/data.tar.gz"
	tar -tzf "$W/pkg/data.tar.gz" | grep -v '/$' | sed 's|^\./|/|' >"$INFO/phonehome.list"
	for f in "$W"/control/*; do
		cp -p "$f" "$INFO/phonehome.$(basename "$f")"
	done
	# opkg remembers the md5 of each conffile as installed, to keep modified ones.
	: >"$W/conffiles.md5"
	while read -r f; do
		[ -f "$R$f" ] && echo "$(md5sum <"$R$f" | cut -d' ' -f1) $f" >>"$W/conffiles.md5"
	done <"$INFO/phonehome.conffiles"
}
opkg_remove_files() { # after prerm: delete the package's files, keeping modified conffiles
	while read -r f; do
		sum="$(grep " $f\$" "$W/conffiles.md5" | cut -d' ' -f1)"
		if [ -n "$sum" ] && [ "$(md5sum <"$R$f" | cut -d' ' -f1)" != "$sum" ]; then
			continue
		fi
		rm -f "$R$f"
	done <"$INFO/phonehome.list"
	rm -f "$INFO"/phonehome.*
}

opkg_install
check "installed: the agent, /etc/config/phonehome (0600), the init script, uci-defaults" \
	test -x "$R/usr/bin/phonehome" -a "$(stat -c %a "$R/etc/config/phonehome")" = 600 \
	-a -x "$R/etc/init.d/phonehome" -a -f "$R/etc/uci-defaults/90-phonehome"
check "Installed-Size ($installed_size) is the sum of the files' sizes" \
	test "$installed_size" = "$(tar -tzvf "$W/pkg/data.tar.gz" | awk '$1 !~ /^d/ { s += $3 } END { print s }')"
check "the agent carries no build paths (repository, cargo home)" \
	bash -c "! grep -qaFe '$repo' -e '${CARGO_HOME:-$HOME/.cargo}' '$R/usr/bin/phonehome'"
check "phonehome --version inside the root prints the workspace version" \
	bash -c "chroot '$R' /usr/bin/phonehome --version | grep -qw '$ws_version'"

# --- (b) image build: scripts on the host with IPKG_INSTROOT -------------------------
outside_before="$(outside_root)"
IPKG_INSTROOT="$R" /bin/sh "$INFO/phonehome.postinst" configure >"$W/b-postinst.out" 2>&1
check "image build: postinst exits 0" test $? = 0
check "image build: postinst enabled the init script inside the root (rc.d/S99phonehome)" \
	test "$(readlink "$R/etc/rc.d/S99phonehome")" = ../init.d/phonehome
(cd "$R/etc/uci-defaults" && IPKG_INSTROOT="$R" /bin/sh -c '. ./90-phonehome') >"$W/b-defaults.out" 2>&1
check "image build: uci-defaults exits 0" test $? = 0
check "image build: the cron line landed in the root's crontab, once" test "$(cron_lines)" = 1
check "image build: no key made at build time (each router makes its own)" \
	test ! -e "$R/etc/phonehome/id_dropbear"
check "image build: nothing written outside the root" host_untouched

# --- (a) on the router: first boot, then opkg install on a running router ------------
in_root /bin/sh -c 'cd /etc/uci-defaults && ( . ./90-phonehome ) && rm -f 90-phonehome' >"$W/a-boot.out" 2>&1
check "first boot: uci-defaults exits 0 and is deleted" \
	test $? = 0 -a ! -e "$R/etc/uci-defaults/90-phonehome"
check "first boot: the key exists, 0600, and dropbearkey -y reads it" \
	bash -c "test \"\$(stat -c %a '$R/etc/phonehome/id_dropbear')\" = 600 && chroot '$R' dropbearkey -y -f /etc/phonehome/id_dropbear >/dev/null"
pub="$(chroot "$R" dropbearkey -y -f /etc/phonehome/id_dropbear 2>/dev/null | grep '^ssh-' | cut -d' ' -f1,2)"
check "first boot: an ed25519 key (this dropbear has it)" test "${pub%% *}" = ssh-ed25519
check "first boot: the crontab still holds the poll line once" test "$(cron_lines)" = 1
check "first boot: prints the exact add-device command with the device id and key" \
	grep -qxF "  add-device $DEVICE_ID '$pub'" "$W/a-boot.out"
check "first boot: logged to syslog (logread -e phonehome)" \
	grep -q "phonehome.*add-device $DEVICE_ID" "$R/var/log/messages"

# A reinstall on the running router: default_postinst runs uci-defaults again.
tar -C "$R" -xzf "$W/pkg/data.tar.gz" ./etc/uci-defaults/90-phonehome
in_root /bin/sh /usr/lib/opkg/info/phonehome.postinst configure >"$W/a-postinst.out" 2>&1
check "router: postinst exits 0 and consumed uci-defaults" \
	test $? = 0 -a ! -e "$R/etc/uci-defaults/90-phonehome"
pub2="$(chroot "$R" dropbearkey -y -f /etc/phonehome/id_dropbear 2>/dev/null | grep '^ssh-' | cut -d' ' -f1,2)"
check "router: a second run keeps the key" test "$pub2" = "$pub"
check "router: a second run does not add the cron line again" test "$(cron_lines)" = 1
check "router: postinst enabled the init script" test -L "$R/etc/rc.d/S99phonehome"

# --- the init script turns UCI options into the agent's flags -------------------------
# shellcheck disable=SC2016
printf '#!/bin/sh\nfor a in "$@"; do printf "%%s\\n" "$a"; done >/tmp/argv\n' >"$W/recorder"
chmod 755 "$W/recorder"
mount --bind "$W/recorder" "$R/usr/bin/phonehome"
write_config() { # ENABLED SERVER JITTER HOSTKEY...
	local enabled="$1" server="$2" jitter="$3" hk
	shift 3
	{
		echo "config phonehome 'main'"
		echo "	option enabled '$enabled'"
		echo "	option server '$server'"
		echo "	option port '2222'"
		echo "	option account 'root'"
		echo "	option key '/etc/phonehome/id_dropbear'"
		for hk in "$@"; do echo "	list host_key '$hk'"; done
		echo "	option interface 'eth0'"
		echo "	option client 'dbclient'"
		echo "	option jitter '$jitter'"
	} >"$R/etc/config/phonehome"
}
argv() { tr '\n' ' ' <"$R/tmp/argv"; }
: >"$R/tmp/argv"
write_config 1 127.0.0.1 7 'ssh-ed25519 AAAAone' 'ssh-rsa AAAAtwo'
in_root /etc/init.d/phonehome poll
check "poll: UCI options become flags, each host key one --host-key" test "$(argv)" = \
	"--run-dir /var/run/phonehome --server 127.0.0.1 --port 2222 --account root --key /etc/phonehome/id_dropbear --interface eth0 --client dbclient --jitter 7 --host-key ssh-ed25519 AAAAone --host-key ssh-rsa AAAAtwo poll "
check "poll: exactly 2 --host-key values, each 'TYPE BASE64'" \
	test "$(grep -A1 -x -- --host-key "$R/tmp/argv" | grep -cxE 'ssh-(ed25519|rsa) AAAA(one|two)')" = 2
in_root /etc/init.d/phonehome show_id
check "show_id: runs the agent's id with the interface" test "$(argv)" = \
	"--run-dir /var/run/phonehome --server 127.0.0.1 --port 2222 --account root --key /etc/phonehome/id_dropbear --interface eth0 --client dbclient --jitter 7 --host-key ssh-ed25519 AAAAone --host-key ssh-rsa AAAAtwo id "
in_root /etc/init.d/phonehome stop_tunnels
check "stop_tunnels: phonehome stop" test "$(argv)" = "--run-dir /var/run/phonehome stop "
: >"$R/var/run/procd-stand-in.log"
in_root /etc/init.d/phonehome start
check "start: registers one poll with procd" \
	grep -qx "param command /usr/bin/phonehome --run-dir /var/run/phonehome --server 127.0.0.1 .*--host-key ssh-rsa AAAAtwo poll" "$R/var/run/procd-stand-in.log"
write_config 0 127.0.0.1 7 'ssh-ed25519 AAAAone'
: >"$R/tmp/argv"
in_root /etc/init.d/phonehome poll
check "poll while disabled, no tunnel open: the agent is not even run" test ! -s "$R/tmp/argv"
mkdir -p "$R/var/run/phonehome/tunnels"
echo '{}' >"$R/var/run/phonehome/tunnels/8022-9876.json"
in_root /etc/init.d/phonehome poll
check "poll while disabled, a tunnel open: phonehome stop" test "$(argv)" = "--run-dir /var/run/phonehome stop "
rm -rf "$R/var/run/phonehome"
: >"$R/tmp/argv"
write_config 1 127.0.0.1 7 'ssh-ed25519'
in_root /etc/init.d/phonehome poll 2>"$W/err"
check "poll with a host key of one word: exit 2, says what to write, agent not run" \
	test $? = 2 -a ! -s "$R/tmp/argv" -a -n "$(grep "'TYPE BASE64'" "$W/err")"
write_config 1 "" 7 'ssh-ed25519 AAAAone'
in_root /etc/init.d/phonehome poll 2>"$W/err"
check "poll without a server: exit 2, says which uci command sets it" \
	test $? = 2 -a ! -s "$R/tmp/argv" -a -n "$(grep 'uci set phonehome.main.server' "$W/err")"
umount "$R/usr/bin/phonehome"

# --- a real poll: cron's command line, the real agent, dbclient, a real sshd ---------
mkdir -p "$W/sshd" "$W/gate" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$W/sshd/host_ed25519"
ssh-keygen -q -t ecdsa -N '' -f "$W/sshd/other_ecdsa"
cat >"$W/gate/gate.sh" <<EOF
#!/bin/sh
# Stands in for phonehome-gate: records the command and the status, answers the inbox.
printf '%s\n' "\$SSH_ORIGINAL_COMMAND" >>"$W/gate/commands"
head -c 65536 >"$W/gate/status.json"
cat "$W/gate/inbox"
EOF
chmod 755 "$W/gate/gate.sh"
echo "8022:9876" >"$W/gate/inbox"
echo "command=\"$W/gate/gate.sh\",no-pty,no-agent-forwarding,no-X11-forwarding $pub" >"$W/sshd/authorized_keys"
cat >"$W/sshd/config" <<EOF
ListenAddress 127.0.0.1:2222
HostKey $W/sshd/host_ed25519
AuthorizedKeysFile $W/sshd/authorized_keys
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding remote
ClientAliveInterval 10
LogLevel VERBOSE
EOF
/usr/sbin/sshd -t -f "$W/sshd/config" || fatal "sshd -t refused the test's sshd config"
/usr/sbin/sshd -D -f "$W/sshd/config" -E "$W/sshd/log" &
for _ in $(seq 50); do ss -ltn | grep -q '127.0.0.1:2222 ' && break; sleep 0.1; done
ss -ltn | grep -q '127.0.0.1:2222 ' || fatal "sshd did not listen on 127.0.0.1:2222"
# The service the tunnel leads to, on the router's loopback.
busybox nc -l -p 8022 -e /bin/echo phonehome-tunnel-ok &

write_config 1 127.0.0.1 0 "$(cut -d' ' -f1,2 "$W/sshd/other_ecdsa.pub")" \
	"$(cut -d' ' -f1,2 "$W/sshd/host_ed25519.pub")"
cron_cmd="$(sed -n 's/^\* \* \* \* \* //p' "$R/etc/crontabs/root")"
in_root /bin/sh -c "$cron_cmd" >"$W/poll.out" 2>&1
rc=$?
check "poll as cron runs it ($cron_cmd) exits 0" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/  /' "$W/poll.out"
check "the server saw the command 'poll'" grep -qx poll "$W/gate/commands"
check "the agent sent its status report on stdin (JSON, agent_version $ws_version, client dbclient)" \
	bash -c "jq -e '.agent_version == \"$ws_version\" and (.client | startswith(\"dbclient\"))' '$W/gate/status.json' >/dev/null"
for _ in $(seq 100); do ss -ltn | grep -q '127.0.0.1:9876 ' && break; sleep 0.1; done
check "the requested tunnel listens on the server's 127.0.0.1:9876" bash -c "ss -ltn | grep -q '127.0.0.1:9876 '"
check "through the tunnel: the router's 127.0.0.1:8022 answers" \
	bash -c "busybox nc 127.0.0.1 9876 </dev/null | grep -qx phonehome-tunnel-ok"
tunnels() { pgrep -fc 'dbclient.*9876'; }
in_root /bin/sh -c "$cron_cmd" >>"$W/poll.out" 2>&1
check "a second poll keeps exactly one tunnel process" test "$(tunnels)" = 1
check "the second poll's report lists the tunnel 8022:9876" \
	bash -c "jq -e '.tunnels | map(select(.local == 8022 and .remote == 9876)) | length == 1' '$W/gate/status.json' >/dev/null"
check "the agent logged to syslog (logread -e phonehome)" grep -q 'phonehome\[[0-9]*\]: .*9876' "$R/var/log/messages"
in_root /etc/init.d/phonehome status >"$W/status.out" 2>&1
check "/etc/init.d/phonehome status exits 0 and shows the tunnel" test $? = 0 -a -n "$(grep 9876 "$W/status.out")"

# busybox crond itself, from the crontab the package wrote: the next minute's tick.
if [ "${PHONEHOME_OWRT_NO_CRON:-}" != 1 ]; then
	polls_before="$(wc -l <"$W/gate/commands")"
	chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		/usr/sbin/crond -f -c /etc/crontabs </dev/null >/dev/null 2>&1 &
	crond_pid=$!
	for _ in $(seq 150); do
		[ "$(wc -l <"$W/gate/commands")" -gt "$polls_before" ] && break
		sleep 0.5
	done
	check "busybox crond ran the poll line at the next minute" test "$(wc -l <"$W/gate/commands")" -gt "$polls_before"
	kill "$crond_pid"
	for _ in $(seq 50); do pgrep -f 'phonehome.* poll$' >/dev/null || break; sleep 0.2; done
	check "after cron's poll: still exactly one tunnel process" test "$(tunnels)" = 1
fi

# --- (a) removal on the router --------------------------------------------------------
in_root /bin/sh /usr/lib/opkg/info/phonehome.prerm remove >"$W/a-prerm.out" 2>&1
check "router: prerm exits 0" test $? = 0
check "router: the cron line is gone" test "$(cron_lines)" = 0
for _ in $(seq 50); do [ "$(tunnels)" = 0 ] && break; sleep 0.1; done
check "router: the tunnel process is stopped" test "$(tunnels)" = 0
for _ in $(seq 50); do ss -ltn | grep -q '127.0.0.1:9876 ' || break; sleep 0.1; done
check "router: the server no longer listens on 9876" bash -c "! ss -ltn | grep -q '127.0.0.1:9876 '"
check "router: the init script is disabled" test ! -e "$R/etc/rc.d/S99phonehome"
opkg_remove_files
check "router: the agent and init script are removed" test ! -e "$R/usr/bin/phonehome" -a ! -e "$R/etc/init.d/phonehome"
check "router: the changed config is kept (conffile)" grep -q "option server '127.0.0.1'" "$R/etc/config/phonehome"
check "router: the key is kept" test -s "$R/etc/phonehome/id_dropbear"

# --- (b) removal from an image build --------------------------------------------------
opkg_install
echo '* * * * * /etc/init.d/phonehome poll' >>"$R/etc/crontabs/root"
outside_before="$(outside_root)"
IPKG_INSTROOT="$R" /bin/sh "$INFO/phonehome.postinst" configure >/dev/null 2>&1
IPKG_INSTROOT="$R" /bin/sh "$INFO/phonehome.prerm" remove >"$W/b-prerm.out" 2>&1
check "image build: prerm exits 0" test $? = 0
check "image build: prerm removed the cron line from the root's crontab" test "$(cron_lines)" = 0
check "image build: prerm disabled the init script inside the root" test ! -e "$R/etc/rc.d/S99phonehome"
check "image build: still nothing written outside the root" host_untouched

finish
