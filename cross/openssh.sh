#!/usr/bin/env bash
# OpenSSH 10.0p1 (Debian 13's release), built here for the bench's section 3: its sshd is
# split into sshd (the listener), sshd-session and sshd-auth, so a login no longer
# re-executes the whole sshd with all its libraries. The bench runs the devices' own
# sshd configuration with it beside Debian 12's OpenSSH 9.2.
#
# Builds in a temp dir and installs into OUT_DIR only: sbin/sshd, libexec/sshd-session,
# libexec/sshd-auth, bin/ssh, bin/ssh-keygen. sshd finds its helpers at the paths compiled
# in (OUT_DIR/libexec), so OUT_DIR must stay where it was built; a rebuild into the same
# OUT_DIR from the same source and options is skipped. Configured for a lean server:
# OpenSSL (libcrypto) and zlib, no PAM, no Kerberos, no SELinux; the privilege
# separation dir and user of Debian's sshd (/run/sshd, sshd) and its /etc/ssh.
#
# --without-openssl builds it on OpenSSH's own code alone (Ed25519, X25519, ML-KEM,
# ChaCha20-Poly1305, AES-CTR, HMAC-SHA2; no RSA or ECDSA keys, no zlib): what
# bench/sshd-builds.sh measures against the OpenSSL build.
#
# usage: cross/openssh.sh [--without-openssl] OUT_DIR
#        (e.g. target/openssh-10.0p1; prints OUT_DIR/sbin/sshd)
set -euo pipefail

VERSION=10.0p1
URL=http://deb.debian.org/debian/pool/main/o/openssh/openssh_$VERSION.orig.tar.gz
SHA256=021a2e709a0edf4250b1256bd5a9e500411a90dddabea830ed59cef90eb9d85c
# the Debian packages the build needs (the compiler, OpenSSL's and zlib's headers)
BUILD_DEPS=(gcc make libssl-dev zlib1g-dev)

me=cross/openssh.sh
die() {
	echo "$me: $*" >&2
	exit 1
}
crypto=(--with-zlib)
if [ "${1:-}" = --without-openssl ]; then
	crypto=(--without-openssl --without-zlib)
	shift
fi
if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $me [--without-openssl] OUT_DIR" >&2; exit 2; fi
mkdir -p "$1"
out=$(cd "$1" && pwd)

configure_args=(--prefix="$out" --libexecdir="$out/libexec" --sysconfdir=/etc/ssh
	--with-privsep-path=/run/sshd --with-privsep-user=sshd --with-pid-dir=/run
	--without-pam --without-kerberos5 --without-selinux --without-libedit
	--without-security-key-builtin "${crypto[@]}")
# what the build in OUT_DIR is: the source, the options, the place
stamp=$(printf '%s\n' "$SHA256" "$out" "${configure_args[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ] && [ -x "$out/sbin/sshd" ]; then
	echo "$out/sbin/sshd"
	exit 0
fi

missing=()
for p in "${BUILD_DEPS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] ||
	die "missing Debian packages ${missing[*]}: apt-get install ${missing[*]} (./install.sh test installs them)"
command -v curl >/dev/null 2>&1 || die "curl is missing: apt-get install curl"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$work/openssh-$VERSION.tar.gz
curl -fsSL --retry 3 -o "$tarball" "$URL" || die "could not fetch $URL"
got=$(sha256sum "$tarball" | cut -d' ' -f1)
[ "$got" = "$SHA256" ] || die "$URL has sha256 $got, not the pinned $SHA256: refusing it"
tar -xzf "$tarball" -C "$work"
src=$work/openssh-$VERSION
[ -d "$src" ] || die "the tarball holds no openssh-$VERSION/"
log=$work/build.log
if ! { (cd "$src" && ./configure "${configure_args[@]}") && make -C "$src" -j2 sshd sshd-session sshd-auth ssh ssh-keygen; } >"$log" 2>&1; then
	tail -n 25 "$log" >&2
	die "OpenSSH $VERSION did not build (configure and make output above)"
fi
rm -f "$out/.stamp"
install -d "$out/sbin" "$out/libexec" "$out/bin"
install -m 0755 -s "$src/sshd" "$out/sbin/sshd"
install -m 0755 -s "$src/sshd-session" "$src/sshd-auth" "$out/libexec/"
install -m 0755 -s "$src/ssh" "$src/ssh-keygen" "$out/bin/"
v=$("$out/sbin/sshd" -V 2>&1 | head -n1) || true
[[ $v == "OpenSSH_${VERSION%p*}"* ]] || die "$out/sbin/sshd -V says '$v', not OpenSSH_${VERSION%p*}"
echo "$stamp" >"$out/.stamp"
echo "$out/sbin/sshd"
