#!/bin/bash
# test.sh: the phonehome package under OpenWrt's real package tools, for both formats: the
# .ipk with opkg (OpenWrt <= 24.10) and the signed .apk with apk-tools v3 (25.12+), on
# OpenWrt-like roots made of static busybox, Debian's dropbear client and key tool, the
# real `uci` binary and OpenWrt's own shell libraries (functions.sh, rc.common,
# service.sh, uci.sh, jshn.sh). Only procd/ubus/validate_data have a stand-in
# (tests/stand-ins/procd.sh): they do not exist here.
#
# For each format:
# - image: the package goes into an offline root as OpenWrt's image build puts it there
#   (install without scripts, postinst with IPKG_INSTROOT, init scripts enabled), on the
#   host, which must stay untouched; then the first boot runs /etc/uci-defaults as
#   /etc/init.d/boot does (chroot, no syslog yet, no br-lan yet): cron line, key, the
#   add-device line, and a device id that stays the same when br-lan appears.
# - router: opkg/apk inside a chroot of the root: install; the admin edits the config
#   with uci and the cron schedule; a real poll through the real dbclient to a real
#   OpenSSH sshd opens a tunnel that carries traffic; an upgrade to a higher release
#   keeps schedule, config, key and the very same tunnel process; removal stops the
#   tunnel and drops the cron line but keeps the edited config and the key; reinstall.
# Also: the .apk refused unsigned without --allow-untrusted, the signed one accepted;
# the package formats; the init script's flags from UCI; a root without dropbear.
#
# Everything runs in a sandbox of its own (mount, network and pid namespaces, a tmpfs
# work dir, overlays over the host's /etc /usr /var /root /opt /srv /home /tmp whose
# writes are checked and thrown away), so a run, even a killed one, leaves nothing
# behind; the host paths a leak would touch are also compared before and after, from
# outside. Needs root and the Debian packages busybox-static, dropbear-bin,
# openssh-server, openssl, jq and shellcheck; builds opkg, uci and apk with
# ../shared/openwrt-tools/build.sh (once, into target/openwrt-tools;
# PHONEHOME_OPENWRT_TOOLS names another openwrt-tools directory).
#
# Usage: openwrt-package/test.sh [--binary FILE] [--show-output]
#   --binary FILE   the agent to pack (default: build it, as build-package.sh does)
#   --show-output   print what each opkg/apk/first-boot command printed (opkg then runs
#                   on a pseudo-terminal, so that its lines come in a terminal's order)
# It waits for busybox crond's next minute (up to 60 s) unless PHONEHOME_OWRT_NO_CRON=1.
# Ends with the line "N passed, N failed"; exit status 0 only if nothing failed.

# Functions run only through check, wait_for or eval look unreachable to shellcheck:
# shellcheck disable=SC2317
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

die() {
	echo "test.sh: $*" >&2
	exit 2
}
# shellcheck source-path=SCRIPTDIR source=openwrt-tools.sh
. "$here/openwrt-tools.sh"

# --- outside the sandbox -----------------------------------------------------------------

# The host paths a script escaping its root would write: what OpenWrt's tools and our
# package touch, and root's ssh and home dirs. Inside, the sandbox's overlays catch any
# write to /etc /usr /var /root /home whatsoever; this second look, from outside, leaves
# out /usr/local and /var/lib/phonehome, where other checkouts on this machine install
# the server while this runs.
HOST_PATHS=(/etc/config /etc/crontabs /etc/phonehome /etc/init.d /etc/rc.d /etc/uci-defaults
	/etc/rc.common /etc/opkg.conf /etc/opkg /etc/apk /lib/functions.sh /lib/functions
	/lib/config /lib/apk /lib/upgrade/keep.d /usr/lib/opkg /usr/bin/phonehome /var/spool/cron
	/root/.ssh /home /etc/passwd /etc/group /etc/shadow)

host_snapshot() {
	local p
	for p in "${HOST_PATHS[@]}"; do
		if [ -e "$p" ] || [ -L "$p" ]; then
			find "$p" -printf '%p %y %m %s %T@\n' 2>/dev/null | sort
		else
			echo "$p absent"
		fi
	done
}

outer_main() {
	local binary="" show="" missing="" need tools rc counts counts_file sandbox host_before host_after
	[ "$(id -u)" = 0 ] || die "run as root (it uses namespaces, mounts and chroot)"
	while [ $# -gt 0 ]; do
		case "$1" in
		--binary) [ $# -ge 2 ] || die "--binary needs a file"; binary="$(realpath "$2")"; shift 2 ;;
		--show-output) show=1; shift ;;
		*) die "unknown argument '$1'; usage: test.sh [--binary FILE] [--show-output]" ;;
		esac
	done
	for need in /bin/busybox:busybox-static /usr/bin/dbclient:dropbear-bin /usr/bin/dropbearkey:dropbear-bin \
		/usr/sbin/sshd:openssh-server ssh-keygen:openssh-client jq:jq ss:iproute2 ip:iproute2 \
		pgrep:procps unshare:util-linux shellcheck:shellcheck openssl:openssl; do
		command -v "${need%%:*}" >/dev/null || missing="$missing ${need#*:}"
	done
	[ -z "$show" ] || command -v script >/dev/null || missing="$missing bsdutils"
	[ -z "$missing" ] || die "missing tools; install the Debian packages:$missing"
	tools="$(owrt_tools_build)" || exit 2
	# Built outside the sandbox: cargo may need the registry cache and its lock files.
	if [ -z "$binary" ]; then
		"$here/build-package.sh" --format ipk >/dev/null || die "building the agent failed (output above)"
		binary="$target_dir/x86_64-unknown-linux-gnu/router/phonehome"
	fi
	[ -x "$binary" ] || die "no agent binary at $binary"
	host_before="$(host_snapshot)"
	# The sandbox reports its counts on fd 3: a file it could not write otherwise (its /tmp
	# is an overlay whose writes are thrown away). Killed, this script takes the sandbox
	# with it (unshare --kill-child ends everything inside).
	counts_file="$(mktemp)"
	trap 'rm -f "$counts_file"' EXIT
	PHONEHOME_OWRT_SANDBOX=1 PHONEHOME_OWRT_BINARY="$binary" PHONEHOME_OWRT_TOOLS_DIR="$tools" \
		PHONEHOME_OWRT_SHOW="$show" \
		unshare --mount --net --pid --fork --kill-child --mount-proc /bin/bash "$(realpath "$0")" 3>"$counts_file" &
	sandbox=$!
	# unshare --fork blocks SIGINT and SIGTERM while it waits: SIGKILL, which its
	# --kill-child passes on to everything in the sandbox.
	trap 'kill -KILL "$sandbox" 2>/dev/null; exit 130' INT TERM
	wait "$sandbox"
	rc=$?
	read -r -a counts <"$counts_file" || counts=(0 1)
	host_after="$(host_snapshot)"
	if [ "$host_before" = "$host_after" ]; then
		echo "ok   - the host's ${HOST_PATHS[*]} are as they were before the run"
		counts[0]=$((counts[0] + 1))
	else
		echo "FAIL - the host's files changed during the run:"
		diff <(echo "$host_before") <(echo "$host_after") | sed 's/^/    /'
		counts[1]=$((counts[1] + 1))
		rc=1
	fi
	echo "${counts[0]} passed, ${counts[1]} failed"
	[ "${counts[1]}" = 0 ] || rc=1
	exit "$rc"
}

if [ "${PHONEHOME_OWRT_SANDBOX:-}" != 1 ]; then
	outer_main "$@"
fi

# --- inside the sandbox: reporting ------------------------------------------------------

binary="$PHONEHOME_OWRT_BINARY"
tools="$PHONEHOME_OWRT_TOOLS_DIR"
show="${PHONEHOME_OWRT_SHOW:-}"
owrt_files="$(owrt_tools_src)/openwrt-files" || exit 2
passed=0
failed=0
W=/run/owrt-test
DEVICE_MAC=02:00:00:aa:bb:cc
DEVICE_ID=020000aabbcc
LATER_MAC=02:00:00:dd:ee:ff # br-lan, once netifd has made it (after first boot)
VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
RELEASE="$(sed -n 's/^PKG_RELEASE:=//p' "$here/Makefile")"
NEXT=$((RELEASE + 1))

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
	local log
	if [ "$failed" -gt 0 ] && [ -s "$W/sshd/log" ]; then
		echo "--- sshd log"
		tail -n 30 "$W/sshd/log"
	fi
	for log in "$W"/*/var/log/messages; do
		if [ "$failed" = 0 ] || [ ! -s "$log" ]; then continue; fi
		echo "--- syslog of ${log%/var/log/messages}"
		grep phonehome "$log" | tail -n 15
	done
	echo "$passed $failed" >&3
	[ "$failed" -eq 0 ]
	exit
}
fatal() {
	fail "$*"
	finish
}
# show TITLE FILE: with --show-output, what a command printed.
show() {
	[ -n "$show" ] || return 0
	echo "  --- $1"
	sed 's/^/  | /' "$2"
}

# --- the sandbox ------------------------------------------------------------------------

setup_sandbox() {
	local d
	mount --make-rprivate /
	# /run is the sandbox's own tmpfs (the work dir lives there); /tmp gets an overlay like
	# the other guarded dirs, so that a checkout under /tmp (as CI may clone) stays visible.
	mount -t tmpfs -o mode=0755 tmpfs /run
	mkdir -p "$W/tmp"
	# Scratch files of the tools run here go to the sandbox's own dir, not to a $TMPDIR
	# of the host's (whose copy-up the guard would report).
	export TMPDIR="$W/tmp"
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
}

# What exists outside the roots: the guarded dirs' overlay uppers (/tmp among them), /run
# (apart from the test's own dir) and the top level. Taken before a step that runs
# scripts on the host, compared after it: they may have written nothing of it.
outside_roots() {
	find "$W"/guard/*/up -mindepth 1 2>/dev/null
	find /run -mindepth 1 -maxdepth 1 ! -path "$W"
	ls -A /
}
host_untouched() {
	local now
	now="$(outside_roots)"
	if [ "$now" != "$outside_before" ]; then
		echo "  written outside the root:" >&2
		diff <(echo "$outside_before") <(echo "$now") | sed 's/^/    /' >&2
		return 1
	fi
}

# --- the packages -----------------------------------------------------------------------

P="$W/pkgs"
IPK1="$P/phonehome_$VERSION-r${RELEASE}_x86_64.ipk"
IPK2="$P/phonehome_$VERSION-r${NEXT}_x86_64.ipk"
APK1="$P/phonehome-$VERSION-r$RELEASE.apk"
APK2="$P/phonehome-$VERSION-r$NEXT.apk"
APKU="$P/unsigned/phonehome-$VERSION-r$RELEASE.apk"
KEY="$W/keys/phonehome-test.pem"
PUBKEY="$W/keys/phonehome-test.pub.pem"

build_packages() {
	local b=(--binary "$binary")
	mkdir -p "$P/unsigned" "$W/keys" "$W/libc/empty"
	if ! openssl ecparam -name prime256v1 -genkey -noout -out "$KEY" 2>/dev/null ||
		! openssl ec -in "$KEY" -pubout -out "$PUBKEY" 2>/dev/null; then
		fatal "openssl could not make a throwaway signing key"
	fi
	{
		"$here/build-package.sh" --format ipk "${b[@]}" --out "$P" &&
			"$here/build-package.sh" --format ipk "${b[@]}" --release "$NEXT" --out "$P" &&
			"$here/build-package.sh" --format apk "${b[@]}" --sign-key "$KEY" --out "$P" &&
			"$here/build-package.sh" --format apk "${b[@]}" --sign-key "$KEY" --release "$NEXT" --out "$P" &&
			"$here/build-package.sh" --format apk "${b[@]}" --unsigned --out "$P/unsigned"
	} >"$W/build.out" 2>&1 || { cat "$W/build.out"; fatal "build-package.sh failed"; }
	check "build-package.sh printed each package's path as its last line" \
		test "$(grep -c '^/' "$W/build.out")" = 5 -a -f "$IPK1" -a -f "$IPK2" -a -f "$APK1" -a -f "$APK2" -a -f "$APKU"
	# libc, which the package depends on: an empty stand-in package signed with the same key.
	"$tools/apk" mkpkg --sign-key "$KEY" --info name:libc --info version:1.2.5-r4 --info arch:x86_64 \
		--info "description:test stand-in for musl" --files "$W/libc/empty" --output "$W/libc/libc.apk" ||
		fatal "apk mkpkg of the stand-in libc failed"
}

check_ipk_format() {
	local x="$W/ipk-x"
	mkdir -p "$x/control" "$x/data" "$x/again"
	check "the .ipk holds ./debian-binary, ./control.tar.gz, ./data.tar.gz in that order" \
		test "$(tar -tzf "$IPK1" | tr '\n' ' ')" = "./debian-binary ./control.tar.gz ./data.tar.gz "
	if ! tar -C "$x" -xzf "$IPK1" || ! tar -C "$x/control" -xzf "$x/control.tar.gz" ||
		! tar -C "$x/data" -xzf "$x/data.tar.gz"; then
		fatal "$IPK1 does not unpack"
	fi
	check "debian-binary is 2.0" test "$(cat "$x/debian-binary")" = 2.0
	check "Makefile PKG_VERSION equals the workspace version ($VERSION)" \
		test "$(sed -n 's/^PKG_VERSION:=//p' "$here/Makefile")" = "$VERSION"
	check "control: Package, Version $VERSION-r$RELEASE, Depends libc, Architecture x86_64, Installed-Size" \
		grep -qzE "^Package: phonehome
Version: $VERSION-r$RELEASE
Depends: libc
.*Architecture: x86_64
Installed-Size: [0-9]+
Description: " "$x/control/control"
	check "conffiles: the UCI config" test "$(cat "$x/control/conffiles")" = /etc/config/phonehome
	check "control.tar.gz: the wrappers OpenWrt generates and prerm-pkg from the Makefile" \
		test "$(cd "$x/control" && echo *)" = "conffiles control postinst prerm prerm-pkg"
	check "Installed-Size is the sum of the files' sizes" \
		test "$(sed -n 's/^Installed-Size: //p' "$x/control/control")" = \
		"$(tar -tzvf "$x/data.tar.gz" | awk '$1 !~ /^d/ { s += $3 } END { print s }')"
	check "every file in data.tar.gz is owned by root" \
		test -z "$(tar -tzvf "$x/data.tar.gz" | awk '$2 != "0/0"')"
	check "the key (made on the router) is kept across sysupgrade: lib/upgrade/keep.d/phonehome" \
		test "$(cat "$x/data/lib/upgrade/keep.d/phonehome")" = /etc/phonehome/
	check "the agent carries no build paths (repository, cargo home)" \
		bash -c "! grep -qaFe '$repo' -e '${CARGO_HOME:-$HOME/.cargo}' '$x/data/usr/bin/phonehome'"
	# Packed again with the first one's timestamp (other commits may have landed since).
	local epoch
	epoch="$(TZ=UTC date -d "$(TZ=UTC tar --full-time -tzvf "$IPK1" ./debian-binary | awk '{ print $4, $5 }')" +%s)"
	SOURCE_DATE_EPOCH="$epoch" "$here/build-package.sh" --format ipk --binary "$binary" --out "$x/again" >/dev/null 2>&1
	check "reproducible: the same tree packs to the same .ipk bytes" cmp -s "$IPK1" "$x/again/$(basename "$IPK1")"
}

check_apk_format() {
	local dump="$W/apk-dump"
	"$tools/apk" adbdump "$APK1" >"$dump" 2>&1 || fatal "apk adbdump cannot read $APK1"
	check ".apk: name phonehome, version $VERSION-r$RELEASE, arch x86_64, depends libc" \
		grep -qzE "  name: phonehome
  version: $VERSION-r$RELEASE
.*  arch: x86_64
.*  depends: # 1 items
    - libc" "$dump"
	check ".apk: the scripts OpenWrt maps (post-install, post-upgrade, pre-deinstall), no others" \
		test "$(sed -n '/^scripts:/,/^[^ ]/p' "$dump" | grep -oE '^  [a-z-]+:' | tr -d ' :' | sort | tr '\n' ' ')" = \
		"post-install post-upgrade pre-deinstall "
	check ".apk: post-upgrade is post-install with PKG_UPGRADE=1; pre-deinstall runs default_prerm, then the prerm" \
		bash -c "grep -q 'export PKG_UPGRADE=1' '$dump' && grep -q 'default_postinst' '$dump' && grep -qzE 'default_prerm\\s+\\[ \"\\$\\{PKG_UPGRADE\\}\" = 1 \\] && exit 0' '$dump'"
	check ".apk: lib/apk/packages/phonehome.list, .conffiles and .conffiles_static in the payload" \
		test "$(sed -n '/name: lib\/apk\/packages$/,/^  - name/p' "$dump" | grep -oE 'name: phonehome\.[a-z_]+$' | tr '\n' ' ')" = \
		"name: phonehome.conffiles name: phonehome.conffiles_static name: phonehome.list "
	check ".apk: signed: apk verify accepts it with the public key, refuses it without" \
		bash -c "'$tools/apk' --keys-dir '$W/keys' verify '$APK1' >/dev/null 2>&1 && ! '$tools/apk' --keys-dir /nonexistent verify '$APK1' >/dev/null 2>&1"
	check ".apk: the --unsigned one fails apk verify even with the key" \
		bash -c "! '$tools/apk' --keys-dir '$W/keys' verify '$APKU' >/dev/null 2>&1"
}

check_shell() {
	local x="$W/ipk-x"
	check "shellcheck -s sh: the init script, uci-defaults and prerm shipped" \
		shellcheck -s sh "$x/data/etc/init.d/phonehome" "$x/data/etc/uci-defaults/90-phonehome" \
		"$x/control/prerm-pkg"
	check "shellcheck -x: build-package.sh, openwrt-tools.sh, test.sh and the procd stand-in" \
		bash -c "cd '$repo' && shellcheck -x openwrt-package/build-package.sh openwrt-package/openwrt-tools.sh openwrt-package/test.sh openwrt-package/tests/stand-ins/procd.sh"
}

# --- an OpenWrt-like root ---------------------------------------------------------------

# make_root DIR ipk|apk [bare]: busybox, the real uci and package manager, OpenWrt's shell
# libraries; dropbear's dbclient and dropbearkey unless "bare". Not yet running syslogd.
# Like a router's, the root is an overlayfs (apk refuses to add a package from a file to a
# root on tmpfs: it would be lost at the next boot).
make_root() {
	local r="$1" fmt="$2" bare="${3:-}" b lib
	mkdir -p "$r" "$r.rom" "$r.overlay/upper" "$r.overlay/work"
	mount -t overlay overlay -o "lowerdir=$r.rom,upperdir=$r.overlay/upper,workdir=$r.overlay/work" "$r" ||
		fatal "cannot mount the overlay root $r"
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib/functions,lib/config,usr/share/libubox} \
		"$r"/{etc/config,etc/crontabs,etc/init.d,etc/rc.d,etc/uci-defaults} \
		"$r"/{dev,proc,sys,tmp,root,var/run,var/log,var/lock}
	chmod 1777 "$r/tmp"
	cp /bin/busybox "$r/bin/busybox"
	chroot "$r" /bin/busybox --install -s || fatal "busybox --install in $r failed"
	if [ -z "$bare" ]; then
		for b in /usr/bin/dbclient /usr/bin/dropbearkey; do
			cp "$b" "$r/usr/bin/" || fatal "no $b (Debian package dropbear-bin)"
			for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
				cp -L --parents "$lib" "$r/"
			done
		done
	fi
	cp "$tools/uci" "$r/sbin/uci"
	cp "$owrt_files/functions.sh" "$r/lib/functions.sh"
	cp "$owrt_files/rc.common" "$r/etc/rc.common"
	cp "$owrt_files/service.sh" "$r/lib/functions/service.sh"
	cp "$owrt_files/uci.sh" "$r/lib/config/uci.sh"
	cp "$owrt_files/jshn.sh" "$r/usr/share/libubox/jshn.sh"
	cp "$here/tests/stand-ins/procd.sh" "$r/lib/functions/procd.sh"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\n' >"$r/etc/group"
	mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
	for b in null zero random urandom tty; do
		touch "$r/dev/$b" && mount --bind "/dev/$b" "$r/dev/$b"
	done
	mount -t proc proc "$r/proc"
	mount -t sysfs sysfs "$r/sys"
	case "$fmt" in
	ipk)
		cp "$tools/opkg" "$r/bin/opkg"
		mkdir -p "$r/usr/lib/opkg/info"
		printf 'dest root /\ndest ram /tmp\nlists_dir ext /var/opkg-lists\noption overlay_root /overlay\narch all 100\narch x86_64 200\n' \
			>"$r/etc/opkg.conf"
		# libc, which the package depends on, as installed in every OpenWrt root.
		printf 'Package: libc\nVersion: 1.2.5-r4\nStatus: install user installed\nArchitecture: x86_64\nInstalled-Time: 0\n\n' \
			>"$r/usr/lib/opkg/status"
		printf 'Package: libc\nVersion: 1.2.5-r4\nArchitecture: x86_64\n' >"$r/usr/lib/opkg/info/libc.control"
		: >"$r/usr/lib/opkg/info/libc.list"
		;;
	apk)
		cp "$tools/apk" "$r/usr/bin/apk"
		mkdir -p "$r/etc/apk/keys"
		cp "$PUBKEY" "$r/etc/apk/keys/"
		"$tools/apk" --root "$r" --no-network --no-logfile --no-cache --arch x86_64 add --initdb \
			"$W/libc/libc.apk" >"$W/apk-initdb.out" 2>&1 || { cat "$W/apk-initdb.out"; fatal "apk add --initdb of libc into $r failed"; }
		;;
	esac
}

start_syslog() {
	chroot "$1" /sbin/syslogd -O /var/log/messages || fatal "busybox syslogd would not start in $1"
}

# in_root ROOT COMMAND...: run inside the root as the router would: no tty, a clean env.
in_root() {
	local r="$1"
	shift
	chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@" </dev/null
}
cron_lines() { # ROOT [SCHEDULE]: how many times the poll line is in the root's crontab
	grep -c "^${2:-\* \* \* \* \*} /etc/init.d/phonehome poll\$" "$1/etc/crontabs/root" 2>/dev/null
}
pubkey_of() { # ROOT: the public key of the device key, 'TYPE BASE64'
	chroot "$1" dropbearkey -y -f /etc/phonehome/id_dropbear 2>/dev/null | grep '^ssh-' | cut -d' ' -f1,2
}
uci_get() { # ROOT OPTION
	in_root "$1" uci -q get "phonehome.main.$2"
}
# The first boot's /etc/uci-defaults, as /etc/init.d/boot runs them (uci_apply_defaults,
# inside rc.common, so with /lib/functions.sh loaded): each file sourced in a subshell
# from its directory, deleted when it succeeds, then `uci commit`.
first_boot() {
	# shellcheck disable=SC2016
	in_root "$1" /bin/sh -c '
		. /lib/functions.sh
		mkdir -p /tmp/.uci
		cd /etc/uci-defaults || exit 0
		files="$(ls)"
		[ -z "$files" ] && exit 0
		for file in $files; do
			( . "./$(basename $file)" ) && rm -f "$file"
		done
		uci commit'
}

# --- a real ssh server and what the tunnels lead to ---------------------------------------

start_sshd() {
	mkdir -p "$W/sshd" "$W/gate" /run/sshd
	ssh-keygen -q -t ed25519 -N '' -f "$W/sshd/host_ed25519"
	cat >"$W/gate/gate.sh" <<-EOF
		#!/bin/sh
		# Stands in for phonehome-gate: records the command and the status (its line, as
		# the gate reads it since protocol 3), answers the inbox framed as the gate
		# frames it (protocol 2: header, lines, end).
		printf '%s\n' "\$SSH_ORIGINAL_COMMAND" >>"$W/gate/commands"
		head -n 1 >"$W/gate/status.json"
		echo 'phonehome-inbox 2'
		cat "$W/gate/inbox"
		echo end
	EOF
	chmod 755 "$W/gate/gate.sh"
	: >"$W/gate/inbox"
	: >"$W/sshd/authorized_keys"
	cat >"$W/sshd/config" <<-EOF
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
	# sshd runs the forced command through root's bash, which reads root's ~/.bashrc (and
	# whatever that starts may write to /root); a failed login goes into /var/log/btmp.
	# Neither is the package's doing: both are kept out of the guarded host dirs.
	[ -f /root/.bashrc ] && mount --bind /dev/null /root/.bashrc
	touch "$W/sshd/btmp"
	[ -f /var/log/btmp ] && mount --bind "$W/sshd/btmp" /var/log/btmp
	/usr/sbin/sshd -D -f "$W/sshd/config" -E "$W/sshd/log" &
	wait_for 50 listening 2222 || fatal "sshd did not listen on 127.0.0.1:2222"
	# The router's service the tunnels lead to: its 127.0.0.1:8022, one answer per connection.
	(while :; do busybox nc -l -p 8022 -e /bin/echo phonehome-tunnel-ok; done) >/dev/null 2>&1 &
}
authorize() { # ROOT: let the root's device key log in, as root, with the gate as its command
	echo "command=\"$W/gate/gate.sh\",no-pty,no-agent-forwarding,no-X11-forwarding $(pubkey_of "$1")" >>"$W/sshd/authorized_keys"
}
sshd_log_mark() { wc -l <"$W/sshd/log"; }
sshd_logged_since() { tail -n "+$(($1 + 1))" "$W/sshd/log" | grep -qF "$2"; } # MARK TEXT
listening() { ss -ltn | grep -q "127.0.0.1:$1 "; }
wait_for() { # TENTHS COMMAND...: until the command succeeds, at most TENTHS tenths of a second
	local n="$1"
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	"$@"
}
through_tunnel() { # PORT: the router's 127.0.0.1:8022 answers through the server's PORT
	busybox nc 127.0.0.1 "$1" </dev/null 2>/dev/null | grep -qx phonehome-tunnel-ok
}
tunnel_pid() { # ROOT REMOTE: the pid the agent recorded for 8022:REMOTE
	jq -r .pid "$1/var/run/phonehome/tunnels/8022-$2.json" 2>/dev/null
}
alive() { [ -n "$1" ] && [ -d "/proc/$1" ] && grep -q dbclient "/proc/$1/cmdline" 2>/dev/null; }

# --- the package manager, as the admin types it ----------------------------------------

# pm ROOT FORMAT ACTION [FILE] > output: install/upgrade (a file) or remove, in the root.
# With --show-output, opkg runs on a pseudo-terminal: its own lines are buffered when its
# output is a file, and would come after the scripts' instead of before as on a terminal.
pm() {
	local r="$1" fmt="$2" action="$3" file="${4:-}" cmd
	[ -z "$file" ] || cp "$file" "$r/tmp/"
	case "$fmt/$action" in
	ipk/install) cmd="opkg install /tmp/$(basename "$file")" ;;
	ipk/remove) cmd="opkg remove phonehome" ;;
	apk/install) cmd="apk add /tmp/$(basename "$file")" ;;
	apk/remove) cmd="apk del phonehome" ;;
	esac
	if [ -n "$show" ] && [ "$fmt" = ipk ]; then
		script -qec "chroot $r /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root $cmd" /dev/null \
			</dev/null 2>&1 | tr -d '\r'
		return "${PIPESTATUS[0]}"
	fi
	# shellcheck disable=SC2086 # $cmd is words without blanks of their own
	in_root "$r" $cmd 2>&1
}
installed_version() { # ROOT FORMAT
	case "$2" in
	ipk) in_root "$1" opkg list-installed phonehome | awk '{ print $3 }' ;;
	apk) in_root "$1" apk info -e phonehome >/dev/null && in_root "$1" apk list --installed phonehome 2>/dev/null | grep -o "phonehome-[^ ]*" | sed 's/^phonehome-//' ;;
	esac
}

# --- image: the image builder's offline root, then the first boot -----------------------

# The package into an offline root as OpenWrt's image build installs it: no scripts
# (opkg: IPKG_NO_SCRIPT=1 makes the postinst wrapper exit at once; apk: --no-scripts, the
# target's /bin/sh cannot run on the build host), run on the host.
image_install() {
	local r="$1" fmt="$2" pkg="$3"
	case "$fmt" in
	ipk)
		IPKG_NO_SCRIPT=1 IPKG_INSTROOT="$r" TMPDIR="$r/tmp" "$tools/opkg" --offline-root "$r" \
			--force-postinstall --add-dest root:/ --add-arch all:100 --add-arch x86_64:200 install "$pkg"
		;;
	apk)
		IPKG_INSTROOT="$r" "$tools/apk" --root "$r" --keys-dir "$W/keys" --no-logfile --preserve-env \
			--no-network --no-cache --arch x86_64 add --no-scripts "$pkg"
		;;
	esac
}

# What include/rootfs.mk's prepare_rootfs does next, on the host: every package's postinst
# (apk: the post-install scripts from lib/apk/db/scripts.tar) with IPKG_INSTROOT and bash,
# then `rc.common enable` for every init script, then the scripts are deleted. apk 3.0.6
# keeps scripts.tar gzip'd where OpenWrt's build finds it plain: unpacked first.
prepare_rootfs() {
	local r="$1" fmt="$2" script
	(
		cd "$r" || exit 1
		if [ "$fmt" = apk ]; then
			db=./lib/apk/db
			[ -f "$db/scripts.tar" ] || { gzip -dc "$db/scripts.tar.gz" >"$db/scripts.tar" && rm "$db/scripts.tar.gz"; }
			tar -C "$db" -xf "$db/scripts.tar" --wildcards "*.post-install" || exit 1
			for script in "$db"/*.post-install; do
				IPKG_INSTROOT="$r" bash "$script" || { echo "postinst script $script has failed" >&2; exit 1; }
				tar --delete -f "$db/scripts.tar" "$(basename "$script")"
			done
			gzip -9 "$db/scripts.tar"
		else
			for script in ./usr/lib/opkg/info/*.postinst; do
				IPKG_INSTROOT="$r" bash "$script" || { echo "postinst script $script has failed" >&2; exit 1; }
			done
		fi
		for script in ./etc/init.d/*; do
			grep -q '#!/bin/sh /etc/rc.common' "$script" || continue
			IPKG_INSTROOT="$r" bash ./etc/rc.common "$script" enable
			echo "Enabling $(basename "$script")"
		done
	) || return 1
	rm -rf "${r:?}"/tmp/* "$r"/lib/apk/db/*.post-install* "$r"/usr/lib/opkg/info/*.postinst*
}

image_scenario() {
	local fmt="$1" r="$W/$1-image" pkg o="$W/out/$1-image" pub rc mark
	mkdir -p "$o"
	pkg="$IPK1"
	[ "$fmt" = apk ] && pkg="$APK1"
	make_root "$r" "$fmt"
	outside_before="$(outside_roots)"
	image_install "$r" "$fmt" "$pkg" >"$o/install" 2>&1
	rc=$?
	show "$fmt image: install into the offline root" "$o/install"
	check "$fmt image: the package is installed into the offline root (scripts not run)" \
		test "$rc" = 0 -a -x "$r/usr/bin/phonehome" -a -f "$r/etc/uci-defaults/90-phonehome"
	prepare_rootfs "$r" "$fmt" >"$o/prepare" 2>&1
	rc=$?
	show "$fmt image: postinst with IPKG_INSTROOT, rc.common enable" "$o/prepare"
	check "$fmt image: postinst with IPKG_INSTROOT exits 0; the init script is enabled (rc.d/S99phonehome)" \
		test "$rc" = 0 -a "$(readlink "$r/etc/rc.d/S99phonehome")" = ../init.d/phonehome
	check "$fmt image: no key, no cron line, no device id at build time" \
		test ! -e "$r/etc/phonehome/id_dropbear" -a ! -s "$r/etc/crontabs/root" -a -z "$(uci_get "$r" device_id)"
	check "$fmt image: nothing written outside the root" host_untouched

	# First boot: uci-defaults from /etc/init.d/boot, before the log service and br-lan.
	first_boot "$r" >"$o/first-boot" 2>&1
	rc=$?
	show "$fmt image: first boot (uci-defaults)" "$o/first-boot"
	pub="$(pubkey_of "$r")"
	check "$fmt first boot: uci-defaults succeed and are deleted" \
		test "$rc" = 0 -a ! -e "$r/etc/uci-defaults/90-phonehome"
	check "$fmt first boot: the cron line, once" test "$(cron_lines "$r")" = 1
	check "$fmt first boot: an ed25519 key, 0600, made on the router" \
		test "${pub%% *}" = ssh-ed25519 -a "$(stat -c %a "$r/etc/phonehome/id_dropbear")" = 600
	check "$fmt first boot: prints the add-device line with the id from eth0's MAC" \
		grep -qxF "  add-device $DEVICE_ID '$pub'" "$o/first-boot"
	check "$fmt first boot: the id is pinned in UCI (phonehome.main.device_id)" \
		test "$(uci_get "$r" device_id)" = "$DEVICE_ID"
	check "$fmt first boot: the service stays enabled" test -L "$r/etc/rc.d/S99phonehome"

	# Later: syslog runs, and netifd has made br-lan, with a MAC of its own.
	start_syslog "$r"
	ip link add br-lan address "$LATER_MAC" type veth peer name peer1 && ip link set br-lan up
	check "$fmt later: br-lan now exists, and the agent alone would take its MAC (${LATER_MAC//:/})" \
		test "$(in_root "$r" phonehome --log stderr id)" = "${LATER_MAC//:/}"
	check "$fmt later: /etc/init.d/phonehome show_id is still $DEVICE_ID" \
		test "$(in_root "$r" /etc/init.d/phonehome show_id)" = "$DEVICE_ID"
	in_root "$r" /etc/init.d/phonehome enrol >"$o/enrol" 2>&1
	rc=$?
	show "$fmt later: /etc/init.d/phonehome enrol" "$o/enrol"
	check "$fmt later: /etc/init.d/phonehome enrol prints the same add-device line" \
		test "$rc" = 0 -a "$(grep add-device "$o/enrol")" = "$(grep add-device "$o/first-boot")"
	check "$fmt later: enrol logs it to syslog (logread -e phonehome)" \
		grep -q "phonehome.*add-device $DEVICE_ID" "$r/var/log/messages"
	in_root "$r" sh -c "uci set phonehome.main.server=127.0.0.1; uci set phonehome.main.port=2222
		uci add_list phonehome.main.host_key='$(cut -d' ' -f1,2 "$W/sshd/host_ed25519.pub")'
		uci set phonehome.main.enabled=1; uci set phonehome.main.jitter=0; uci commit phonehome"
	mark="$(sshd_log_mark)"
	in_root "$r" /etc/init.d/phonehome poll >/dev/null 2>&1
	check "$fmt later: a poll logs in as device$DEVICE_ID (sshd's log: no such account here)" \
		wait_for 20 sshd_logged_since "$mark" "Invalid user device$DEVICE_ID from 127.0.0.1"
	ip link del br-lan
}

# --- router: opkg / apk on the running router -------------------------------------------

device_scenario() {
	local fmt="$1" r="$W/$1-router" o="$W/out/$1-router" pkg1="$IPK1" pkg2="$IPK2" remote=9876
	local rc pub pid config_sum key_sum
	[ "$fmt" = apk ] && { pkg1="$APK1"; pkg2="$APK2"; remote=9877; }
	mkdir -p "$o"
	make_root "$r" "$fmt"
	start_syslog "$r"

	if [ "$fmt" = apk ]; then
		pm "$r" apk install "$APKU" >"$o/unsigned"
		rc=$?
		show "apk add of the unsigned .apk" "$o/unsigned"
		check "apk router: the unsigned .apk is refused without --allow-untrusted" \
			test "$rc" != 0 -a -z "$(installed_version "$r" apk)" -a ! -e "$r/usr/bin/phonehome"
		check "apk router: ... saying why (UNTRUSTED signature)" grep -qi untrusted "$o/unsigned"
	fi

	# Install.
	pm "$r" "$fmt" install "$pkg1" >"$o/install"
	rc=$?
	show "$fmt router: install" "$o/install"
	pub="$(pubkey_of "$r")"
	check "$fmt router: install exits 0; $VERSION-r$RELEASE installed" \
		test "$rc" = 0 -a "$(installed_version "$r" "$fmt")" = "$VERSION-r$RELEASE"
	check "$fmt router: the agent, the init script, /etc/config/phonehome (0600)" \
		test -x "$r/usr/bin/phonehome" -a -x "$r/etc/init.d/phonehome" -a "$(stat -c %a "$r/etc/config/phonehome")" = 600
	check "$fmt router: phonehome --version prints the workspace version" \
		bash -c "chroot '$r' /usr/bin/phonehome --version | grep -qw '$VERSION'"
	check "$fmt router: uci-defaults ran and were deleted; the cron line, once" \
		test ! -e "$r/etc/uci-defaults/90-phonehome" -a "$(cron_lines "$r")" = 1
	check "$fmt router: an ed25519 key that dropbearkey -y reads, 0600" \
		test "${pub%% *}" = ssh-ed25519 -a "$(stat -c %a "$r/etc/phonehome/id_dropbear")" = 600
	check "$fmt router: the install prints the add-device line; the id is pinned in UCI" \
		test -n "$(grep -F "  add-device $DEVICE_ID '$pub'" "$o/install")" -a "$(uci_get "$r" device_id)" = "$DEVICE_ID"
	check "$fmt router: the service is enabled and started (procd: a service with no instance while disabled)" \
		bash -c "test -L '$r/etc/rc.d/S99phonehome' && grep -qx 'service phonehome' '$r/var/run/procd-stand-in.log' && ! grep -q '^param command' '$r/var/run/procd-stand-in.log'"

	# The admin: settings with uci, the server's host key, a schedule of their own.
	authorize "$r"
	in_root "$r" sh -c "uci set phonehome.main.server=127.0.0.1; uci set phonehome.main.port=2222
		uci set phonehome.main.account=root; uci set phonehome.main.client=dbclient
		uci add_list phonehome.main.host_key='$(cut -d' ' -f1,2 "$W/sshd/host_ed25519.pub")'
		uci set phonehome.main.jitter=0; uci set phonehome.main.enabled=1; uci commit phonehome"
	echo "8022:$remote" >"$W/gate/inbox"
	in_root "$r" /etc/init.d/phonehome poll >"$o/poll" 2>&1
	rc=$?
	[ "$rc" = 0 ] || sed 's/^/  /' "$o/poll"
	check "$fmt router: a poll as cron runs it exits 0 (real agent, dbclient, sshd)" test "$rc" = 0
	check "$fmt router: the agent sent its status report (agent_version $VERSION, client dbclient)" \
		bash -c "jq -e '.agent_version == \"$VERSION\" and (.client | startswith(\"dbclient\"))' '$W/gate/status.json' >/dev/null"
	wait_for 100 listening "$remote"
	check "$fmt router: the requested tunnel carries traffic (server 127.0.0.1:$remote -> router 127.0.0.1:8022)" \
		through_tunnel "$remote"
	pid="$(tunnel_pid "$r" "$remote")"
	check "$fmt router: the agent recorded the tunnel's dbclient process ($pid), alive" alive "$pid"
	check "$fmt router: the agent logged to syslog" grep -q "phonehome\[[0-9]*\]: .*$remote" "$r/var/log/messages"
	if [ "$fmt" = ipk ] && [ "${PHONEHOME_OWRT_NO_CRON:-}" != 1 ]; then
		crond_tick "$r" "$pid"
	fi
	sed -i 's|^\* \* \* \* \* /etc/init.d/phonehome poll$|*/5 * * * * /etc/init.d/phonehome poll|' "$r/etc/crontabs/root"
	config_sum="$(sha256sum <"$r/etc/config/phonehome")"
	key_sum="$(sha256sum <"$r/etc/phonehome/id_dropbear")"

	# Upgrade to the next release.
	pm "$r" "$fmt" install "$pkg2" >"$o/upgrade"
	rc=$?
	show "$fmt router: upgrade to r$NEXT" "$o/upgrade"
	check "$fmt router: upgrade exits 0; $VERSION-r$NEXT installed" \
		test "$rc" = 0 -a "$(installed_version "$r" "$fmt")" = "$VERSION-r$NEXT"
	check "$fmt router: upgrade kept the admin's cron schedule (*/5), and added no other line" \
		test "$(cron_lines "$r" '\*/5 \* \* \* \*')" = 1 -a "$(grep -c phonehome "$r/etc/crontabs/root")" = 1
	check "$fmt router: upgrade kept the edited /etc/config/phonehome" \
		test "$(sha256sum <"$r/etc/config/phonehome")" = "$config_sum"
	if [ "$fmt" = ipk ]; then
		check "ipk router: ... and put the package's default beside it as phonehome-opkg" \
			cmp -s "$r/etc/config/phonehome-opkg" "$here/files/phonehome.config"
	else
		check "apk router: ... and put the package's default beside it as phonehome.apk-new" \
			cmp -s "$r/etc/config/phonehome.apk-new" "$here/files/phonehome.config"
	fi
	check "$fmt router: upgrade kept the key" test "$(sha256sum <"$r/etc/phonehome/id_dropbear")" = "$key_sum"
	check "$fmt router: upgrade kept the tunnel: the same process ($pid), still carrying traffic" \
		bash -c "$(declare -f alive through_tunnel); alive '$pid' && through_tunnel '$remote'"
	check "$fmt router: upgrade says what it kept" grep -q "phonehome: upgraded; kept the key, device id $DEVICE_ID" "$o/upgrade"
	in_root "$r" /etc/init.d/phonehome poll >>"$o/poll" 2>&1
	check "$fmt router: the new agent's first poll takes the tunnel over (same process, no second one)" \
		test "$(tunnel_pid "$r" "$remote")" = "$pid" -a "$(pgrep -fc "dbclient.*:$remote:")" = 1
	in_root "$r" /etc/init.d/phonehome status >"$o/status" 2>&1
	show "$fmt router: /etc/init.d/phonehome status after the upgrade" "$o/status"
	check "$fmt router: /etc/init.d/phonehome status shows the tunnel" grep -q "$remote" "$o/status"

	# Removal.
	pm "$r" "$fmt" remove >"$o/remove"
	rc=$?
	show "$fmt router: remove" "$o/remove"
	check "$fmt router: removal exits 0; the package is gone" \
		test "$rc" = 0 -a -z "$(installed_version "$r" "$fmt")" -a ! -e "$r/usr/bin/phonehome" -a ! -e "$r/etc/init.d/phonehome"
	check "$fmt router: removal stopped the tunnel (process gone, port free)" \
		bash -c "$(declare -f wait_for alive listening); wait_for 50 eval '! alive $pid' && wait_for 50 eval '! listening $remote'"
	check "$fmt router: removal took the cron line out (whatever its schedule)" \
		test "$(grep -c phonehome "$r/etc/crontabs/root")" = 0
	check "$fmt router: removal disabled the service" test ! -e "$r/etc/rc.d/S99phonehome"
	check "$fmt router: removal kept the edited config and the key" \
		test "$(sha256sum <"$r/etc/config/phonehome")" = "$config_sum" -a "$(sha256sum <"$r/etc/phonehome/id_dropbear")" = "$key_sum"

	# Reinstall.
	pm "$r" "$fmt" install "$pkg2" >"$o/reinstall"
	rc=$?
	show "$fmt router: reinstall" "$o/reinstall"
	check "$fmt router: reinstall exits 0; the kept key and id are the ones it prints again" \
		test "$rc" = 0 -a -n "$(grep -F "  add-device $DEVICE_ID '$pub'" "$o/reinstall")" -a "$(sha256sum <"$r/etc/phonehome/id_dropbear")" = "$key_sum"
	check "$fmt router: reinstall kept the config (server set) and says so" \
		grep -q "phonehome: server 127.0.0.1 and its host key are set" "$o/reinstall"
	check "$fmt router: reinstall put the cron line back, once" test "$(cron_lines "$r")" = 1
	in_root "$r" /etc/init.d/phonehome poll >>"$o/poll" 2>&1
	wait_for 100 listening "$remote"
	check "$fmt router: after the reinstall a poll opens the tunnel again" through_tunnel "$remote"
	in_root "$r" /etc/init.d/phonehome stop_tunnels >/dev/null 2>&1
	wait_for 50 eval "! listening $remote"
}

# busybox crond, from the crontab the package wrote, runs the poll at the next minute.
crond_tick() {
	local r="$1" pid="$2" polls crond_pid
	polls="$(wc -l <"$W/gate/commands")"
	chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		/usr/sbin/crond -f -c /etc/crontabs </dev/null >/dev/null 2>&1 &
	crond_pid=$!
	wait_for 700 eval "[ \$(wc -l <'$W/gate/commands') -gt $polls ]"
	check "ipk router: busybox crond ran the cron line at the next minute" \
		test "$(wc -l <"$W/gate/commands")" -gt "$polls"
	kill "$crond_pid"
	wait_for 50 eval "! pgrep -f 'phonehome.* poll\$' >/dev/null"
	check "ipk router: after cron's poll, still the same single tunnel process" \
		test "$(tunnel_pid "$r" 9876)" = "$pid" -a "$(pgrep -fc 'dbclient.*:9876:')" = 1
}

# --- the init script turns UCI options into the agent's flags --------------------------

# On the ipk image root, with a stand-in agent that records its argv.
flags_tests() {
	local r="$W/ipk-image"
	# shellcheck disable=SC2016
	printf '#!/bin/sh\nfor a in "$@"; do printf "%%s\\n" "$a"; done >/tmp/argv\n' >"$W/recorder"
	chmod 755 "$W/recorder"
	mount --bind "$W/recorder" "$r/usr/bin/phonehome"
	argv() { tr '\n' ' ' <"$r/tmp/argv"; }
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
			echo "	option device_id '$DEVICE_ID'"
			echo "	option client 'dbclient'"
			echo "	option jitter '$jitter'"
		} >"$r/etc/config/phonehome"
	}
	local flags="--run-dir /var/run/phonehome --server 127.0.0.1 --port 2222 --account root --key /etc/phonehome/id_dropbear --interface eth0 --device-id $DEVICE_ID --client dbclient --jitter 7 --host-key ssh-ed25519 AAAAone --host-key ssh-rsa AAAAtwo"
	: >"$r/tmp/argv"
	write_config 1 127.0.0.1 7 'ssh-ed25519 AAAAone' 'ssh-rsa AAAAtwo'
	in_root "$r" /etc/init.d/phonehome poll
	check "init: poll turns UCI (read by the real uci) into flags, each host key one --host-key" \
		test "$(argv)" = "$flags poll "
	in_root "$r" /etc/init.d/phonehome show_id
	check "init: show_id runs the agent's id with the same flags" test "$(argv)" = "$flags id "
	: >"$r/tmp/argv"
	in_root "$r" /etc/init.d/phonehome stop_tunnels
	check "init: stop_tunnels with no tunnel open: the agent is not even run" test ! -s "$r/tmp/argv"
	mkdir -p "$r/var/run/phonehome/tunnels"
	echo '{}' >"$r/var/run/phonehome/tunnels/8022-9876.json"
	in_root "$r" /etc/init.d/phonehome stop_tunnels
	check "init: stop_tunnels with a tunnel open runs phonehome stop" test "$(argv)" = "--run-dir /var/run/phonehome stop "
	: >"$r/tmp/argv"
	in_root "$r" /etc/init.d/phonehome stop
	check "init: stop (through the real rc.common) closes the tunnels" \
		test "$(argv)" = "--run-dir /var/run/phonehome stop "
	: >"$r/tmp/argv"
	chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PKG_UPGRADE=1 /etc/init.d/phonehome stop </dev/null
	check "init: stop during a package upgrade (PKG_UPGRADE=1) leaves the tunnels to the new agent" \
		test ! -s "$r/tmp/argv"
	: >"$r/var/run/procd-stand-in.log"
	in_root "$r" /etc/init.d/phonehome start
	check "init: start registers one poll with procd, and the reload trigger" \
		bash -c "grep -qx 'param command /usr/bin/phonehome $flags poll' '$r/var/run/procd-stand-in.log' && grep -qx 'reload trigger phonehome' '$r/var/run/procd-stand-in.log'"
	write_config 0 127.0.0.1 7 'ssh-ed25519 AAAAone'
	: >"$r/tmp/argv"
	in_root "$r" /etc/init.d/phonehome poll
	check "init: poll while disabled, a tunnel open: phonehome stop" test "$(argv)" = "--run-dir /var/run/phonehome stop "
	rm -rf "$r/var/run/phonehome"
	: >"$r/tmp/argv"
	in_root "$r" /etc/init.d/phonehome poll
	check "init: poll while disabled, no tunnel open: the agent is not even run" test ! -s "$r/tmp/argv"
	write_config 1 127.0.0.1 7 'ssh-ed25519'
	in_root "$r" /etc/init.d/phonehome poll 2>"$W/err"
	check "init: a host key of one word: exit 2, says what to write, agent not run" \
		test $? = 2 -a ! -s "$r/tmp/argv" -a -n "$(grep "'TYPE BASE64'" "$W/err")"
	write_config 1 "" 7 'ssh-ed25519 AAAAone'
	in_root "$r" /etc/init.d/phonehome poll 2>"$W/err"
	check "init: no server: exit 2, says which uci command sets it" \
		test $? = 2 -a ! -s "$r/tmp/argv" -a -n "$(grep 'uci set phonehome.main.server' "$W/err")"
	umount "$r/usr/bin/phonehome"
}

# --- a router without dropbear ----------------------------------------------------------

# No dbclient, no dropbearkey, no ssh-keygen: the package says what to install.
bare_tests() {
	local r="$W/bare" o="$W/out/bare" rc
	mkdir -p "$o"
	make_root "$r" ipk bare
	start_syslog "$r"
	pm "$r" ipk install "$IPK1" >"$o/install"
	rc=$?
	show "ipk install without dropbear" "$o/install"
	check "no dropbear: the install still succeeds, and says to install dropbear, then run enrol" \
		test "$rc" = 0 -a -n "$(grep -F 'install dropbear (or openssh-keygen), then run /etc/init.d/phonehome enrol' "$o/install")"
	check "no dropbear: uci-defaults stay, to run again at the next boot" test -f "$r/etc/uci-defaults/90-phonehome"
	in_root "$r" /etc/init.d/phonehome enrol >"$o/enrol" 2>&1
	check "no dropbear: enrol exits 1 with the same advice" \
		test $? = 1 -a -n "$(grep -F 'install dropbear' "$o/enrol")"
	# With a key from elsewhere, a poll names the missing ssh client.
	mkdir -p "$r/etc/phonehome" && cp "$W/ipk-router/etc/phonehome/id_dropbear" "$r/etc/phonehome/"
	in_root "$r" sh -c "uci set phonehome.main.server=127.0.0.1; uci set phonehome.main.port=2222
		uci add_list phonehome.main.host_key='$(cut -d' ' -f1,2 "$W/sshd/host_ed25519.pub")'
		uci set phonehome.main.enabled=1; uci set phonehome.main.jitter=0; uci commit phonehome"
	in_root "$r" /etc/init.d/phonehome poll >"$o/poll" 2>&1
	check "no dropbear: a poll fails and logs which ssh client to install" \
		bash -c "wait_for() { local n=20; while [ \$n -gt 0 ]; do \"\$@\" && return 0; sleep 0.1; n=\$((n-1)); done; \"\$@\"; }; wait_for grep -q 'no ssh client found: dbclient or ssh not on PATH; install dropbear' '$r/var/log/messages' '$o/poll'"
}

# --- main -------------------------------------------------------------------------------

setup_sandbox
mkdir -p "$W/out"
build_packages
check_ipk_format
check_apk_format
check_shell
start_sshd
for fmt in ipk apk; do
	image_scenario "$fmt"
	device_scenario "$fmt"
done
flags_tests
bare_tests
written="$(find "$W"/guard/*/up -mindepth 1 2>/dev/null)"
check "the whole run wrote nothing outside the roots (overlay uppers of /etc /usr /var /root /opt /srv /home /tmp)" \
	test -z "$written"
[ -z "$written" ] || printf '    %s\n' "$written"
finish
