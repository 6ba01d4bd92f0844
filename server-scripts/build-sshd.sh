#!/bin/bash
# build-sshd.sh: OpenSSH's sshd for the devices' own sshd, built from Debian's source
# package of the openssh-server installed here (the same release and the same Debian
# patches, security fixes included), configured without OpenSSL, PAM, Kerberos and
# SELinux. Without libcrypto a device login costs sshd about 0.7 of the CPU
# (server-scripts/README.md, "The build, not the configuration"); what a device login
# uses stays: Ed25519 keys, curve25519 and mlkem768x25519 key exchange,
# ChaCha20-Poly1305, AES-CTR and HMAC-SHA2, all OpenSSH's own code. RSA and ECDSA keys
# are not: install-server.sh refuses the switch while a device has one, and add-device
# refuses them afterwards (device_key_types in server.conf).
#
# The source comes through apt, from the deb-src twins of this machine's own apt
# sources (a private apt configuration: the machine's own is not touched), so apt
# checks it against the signed Sources index as it checks every package. The build is
# rebuilt when openssh-server changes: install.sh server runs this every time, and
# reuses OUT_DIR while the version and the options are the same.
#
# usage: build-sshd.sh OUT_DIR
#        build-sshd.sh --build-deps     (prints the Debian packages the build needs)
#   OUT_DIR gets sbin/sshd (and libexec/sshd-session, sshd-auth where the release has
#   them) and debian-version; it prints OUT_DIR. The binaries expect to be installed in
#   /usr/local/lib/phonehome/openssh (install-server.sh puts them there), where OpenSSH
#   >= 9.8 finds sshd-session and sshd-auth.
set -euo pipefail

me=build-sshd.sh
# Where install-server.sh --device-sshd-build installs it (sshd finds its helpers there).
PREFIX=/usr/local/lib/phonehome/openssh
# The Debian packages the build needs: dpkg-source, autoconf (Debian's patches change
# configure.ac), the compiler.
BUILD_DEPS=(dpkg-dev autoconf gcc make libc6-dev)

die() {
	echo "$me: $*" >&2
	exit 1
}
if [ "${1:-}" = --build-deps ]; then
	echo "${BUILD_DEPS[*]}"
	exit 0
fi
if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $me OUT_DIR | --build-deps" >&2; exit 2; fi
{ command -v dpkg-query && command -v apt-get; } >/dev/null 2>&1 ||
	die "this builds Debian's OpenSSH source through apt: not a Debian system; run the devices' own sshd on the system's sshd instead (leave out --device-sshd-without-openssl)"
# installed, not merely known to dpkg (a removed package keeps its version)
[ "$(dpkg-query -W -f '${db:Status-Abbrev}' openssh-server 2>/dev/null)" = "ii " ] ||
	die "openssh-server is not installed: apt-get install openssh-server"
version=$(dpkg-query -W -f '${Version}' openssh-server)
case $version in *[!A-Za-z0-9.+:~-]*) die "openssh-server has an unexpected version '$version'" ;; esac
missing=()
for p in "${BUILD_DEPS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] ||
	die "missing Debian packages ${missing[*]}: apt-get install ${missing[*]} (install.sh server installs them)"

mkdir -p "$1"
out=$(cd "$1" && pwd)
configure_args=(--prefix="$PREFIX" --libexecdir="$PREFIX/libexec" --sysconfdir=/etc/ssh
	--with-privsep-path=/run/sshd --with-privsep-user=sshd --with-pid-dir=/run
	--without-openssl --without-zlib --without-pam --without-kerberos5 --without-selinux
	--without-libedit --without-security-key-builtin)
# what the build in OUT_DIR is: the Debian version and the options
stamp=$(printf '%s\n' "$version" "${configure_args[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ] && [ -x "$out/sbin/sshd" ]; then
	echo "$out"
	exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private apt: deb-src lines for the machine's own deb sources, lists of its own.
mkdir -p "$work/apt/sources" "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
for f in /etc/apt/sources.list.d/*.sources; do
	[ -e "$f" ] || continue
	sed 's/^Types:.*$/Types: deb-src/' "$f" >"$work/apt/sources/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[ -e "$f" ] || continue
	sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >"$work/apt/sources/$(basename "$f").list"
done
cat >"$work/apt/apt.conf" <<EOF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$work/apt/sources";
Dir::State::Lists "$work/apt/lists";
Dir::Cache "$work/apt/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
EOF
log=$work/build.log
echo "$me: fetching Debian's source of openssh $version (apt-get source, deb-src of this machine's sources)" >&2
if ! APT_CONFIG=$work/apt/apt.conf apt-get -q update >"$log" 2>&1; then
	tail -n 15 "$log" >&2
	die "apt-get update of the deb-src lists failed (above)"
fi
if ! (cd "$work/src" && APT_CONFIG=$work/apt/apt.conf apt-get -q source --download-only "openssh=$version") >"$log" 2>&1; then
	tail -n 15 "$log" >&2
	die "apt-get source openssh=$version failed (above): is that version still in the archive? Upgrade openssh-server (apt-get install openssh-server) and run this again"
fi
dsc=$(ls "$work/src"/openssh_*.dsc)
(cd "$work/src" && dpkg-source -x "$dsc" openssh) >"$log" 2>&1 || { tail -n 15 "$log" >&2; die "dpkg-source -x $dsc failed (above)"; }
src=$work/src/openssh
echo "$me: building sshd of openssh $version without OpenSSL (a minute or two)" >&2
targets=(sshd)
for t in sshd-session sshd-auth; do grep -q "^$t\$(EXEEXT):" "$src/Makefile.in" && targets+=("$t"); done
if ! { (cd "$src" && autoconf && autoheader && ./configure "${configure_args[@]}") &&
	make -C "$src" -j"$(nproc)" "${targets[@]}"; } >"$log" 2>&1; then
	tail -n 25 "$log" >&2
	die "OpenSSH $version did not build without OpenSSL (configure and make output above)"
fi
rm -f "$out/.stamp"
rm -rf "$out/sbin" "$out/libexec"
install -d "$out/sbin" "$out/libexec"
install -m 0755 -s "$src/sshd" "$out/sbin/sshd"
for t in "${targets[@]:1}"; do install -m 0755 -s "$src/$t" "$out/libexec/$t"; done
v=$("$out/sbin/sshd" -V 2>&1 | head -n1) || true
[[ $v == *"without OpenSSL"* ]] || die "$out/sbin/sshd -V says '$v', not a build without OpenSSL"
echo "$version" >"$out/debian-version"
echo "$stamp" >"$out/.stamp"
echo "$me: built $v ($version) in $out" >&2
echo "$out"
