#!/bin/bash
# build-ipk.sh: make the x86_64 .ipk of phonehome here, without the OpenWrt SDK.
#
# The router build proper is the feed Makefile under the SDK (README.md). This is the
# local stand-in for it: the agent built statically with the workspace's `router`
# profile (there is no musl Rust target on this machine; a static glibc binary runs on
# OpenWrt's musl userland just the same), packed as OpenWrt's ipkg-build packs it: a
# gzip'd tar (opkg-lede rejects the `ar` form) of ./debian-binary, ./control.tar.gz and
# ./data.tar.gz, owned by root, sorted, with fixed mtimes, so the same tree gives the
# same bytes. Version, control fields, install lines, conffiles and prerm are read from
# the Makefile, so the two cannot drift apart.
#
# Usage: openwrt-package/build-ipk.sh [--out DIR] [--binary FILE]
#   --out DIR      where the .ipk goes (default: <repo>/target/ipk); its path is printed
#   --binary FILE  pack this agent binary instead of building one
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
makefile="$here/Makefile"
out="$repo/target/ipk"
binary=""
arch=x86_64
rust_target=x86_64-unknown-linux-gnu

die() {
	echo "build-ipk.sh: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
	--binary) [ $# -ge 2 ] || die "--binary needs a file"; binary="$2"; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

# A `NAME:=value` line of the Makefile (first match, leading blanks allowed).
mk_var() {
	sed -n "s/^[[:space:]]*$1:=[[:space:]]*//p" "$makefile" | head -n1
}

# The body of `define NAME` ... `endef` of the Makefile, with make's $$ turned into $.
mk_define() {
	awk -v name="$1" '
		$0 == "define " name { on = 1; next }
		on && $0 == "endef" { exit }
		on { print }
	' "$makefile" | sed 's/\$\$/$/g'
}

name="$(mk_var PKG_NAME)"
version="$(mk_var PKG_VERSION)"
release="$(mk_var PKG_RELEASE)"
license="$(mk_var PKG_LICENSE)"
maintainer="$(mk_var PKG_MAINTAINER)"
section="$(mk_var SECTION)"
url="$(mk_var URL)"
if [ -z "$name" ] || [ -z "$version" ] || [ -z "$release" ]; then
	die "cannot read PKG_NAME, PKG_VERSION, PKG_RELEASE from $makefile"
fi
case "$release" in *[!0-9]* | "") die "PKG_RELEASE '$release' must be a number (apk on OpenWrt 25.12 needs it)" ;; esac
case "$version" in
[0-9]*.[0-9]*.[0-9]*) ;;
*) die "PKG_VERSION '$version' must be major.minor.patch (apk on OpenWrt 25.12 needs it)" ;;
esac
cargo_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
[ "$version" = "$cargo_version" ] ||
	die "PKG_VERSION $version in $makefile differs from the workspace version $cargo_version in $repo/Cargo.toml: make them equal"

# The time of the last commit of what goes into the package, unless SOURCE_DATE_EPOCH.
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct -- Cargo.toml Cargo.lock protocol agent openwrt-package 2>/dev/null)}"
epoch="${epoch:-0}"

if [ -z "$binary" ]; then
	target_dir="${CARGO_TARGET_DIR:-$repo/target}"
	echo "build-ipk.sh: cargo build --locked --profile router -p phonehome --target $rust_target (static)" >&2
	# No build paths in the binary (panic locations): the repository and cargo's home.
	rustflags="-C target-feature=+crt-static --remap-path-prefix=$repo=/phonehome"
	rustflags="$rustflags --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
	(cd "$repo" && RUSTFLAGS="$rustflags" \
		cargo build --locked --profile router -p phonehome --target "$rust_target") ||
		die "cargo build of the agent failed (output above)"
	binary="$target_dir/$rust_target/router/phonehome"
fi
[ -x "$binary" ] || die "no agent binary at $binary"
if ldd "$binary" 2>&1 | grep -q '=>'; then
	die "$binary is dynamically linked; OpenWrt has musl, not glibc: build it with RUSTFLAGS='-C target-feature=+crt-static'"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$work/data"
control="$work/control"
mkdir -p "$data" "$control" "$out"

# The install lines of Package/NAME/install, as the SDK would run them. The quoted
# $(...) are make's text, matched literally:
# shellcheck disable=SC2016
mk_define "Package/$name/install" | while read -r cmd src dst; do
	dst="${dst#\$(1)}"
	case "$cmd" in
	'$(INSTALL_DIR)') install -d -m 0755 "$data${src#\$(1)}" ;;
	'$(INSTALL_BIN)') mode=0755 ;;
	'$(INSTALL_CONF)') mode=0600 ;;
	'$(INSTALL_DATA)') mode=0644 ;;
	*) die "unknown install command '$cmd' in $makefile" ;;
	esac
	[ "$cmd" = '$(INSTALL_DIR)' ] && continue
	case "$src" in
	'$(PKG_INSTALL_DIR)/bin/'*) src="$binary" ;;
	./*) src="$here/${src#./}" ;;
	*) die "unknown install source '$src' in $makefile" ;;
	esac
	install -m "$mode" "$src" "$data$dst"
done

# Conffiles that are not in the package (the key, made on the router) are kept across
# sysupgrade through keep.d, as OpenWrt's package-pack.mk does.
mk_define "Package/$name/conffiles" >"$control/conffiles"
keep=""
while read -r f; do
	[ -n "$f" ] && [ ! -e "$data$f" ] && keep="$keep$f"$'\n'
done <"$control/conffiles"
if [ -n "$keep" ]; then
	install -d -m 0755 "$data/lib/upgrade/keep.d"
	printf '%s' "$keep" >"$data/lib/upgrade/keep.d/$name"
	chmod 0644 "$data/lib/upgrade/keep.d/$name"
fi

installed_size="$(find "$data" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
description="$(mk_define "Package/$name/description" | sed 's/^[[:space:]]*/ /')"
{
	echo "Package: $name"
	echo "Version: $version-r$release"
	echo "Depends: libc"
	echo "SourceName: $name"
	echo "License: $license"
	echo "Section: $section"
	echo "URL: $url"
	echo "Maintainer: $maintainer"
	echo "Architecture: $arch"
	echo "Installed-Size: $installed_size"
	printf 'Description:%s\n' "$description"
} >"$control/control"

# The maintainer scripts OpenWrt generates: they hand over to default_postinst and
# default_prerm of /lib/functions.sh, which run the package's own *-pkg scripts.
cat >"$control/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck source=/dev/null
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
EOF
cat >"$control/prerm" <<'EOF'
#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck source=/dev/null
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
EOF
mk_define "Package/$name/prerm" >"$control/prerm-pkg"
chmod 0644 "$control/control" "$control/conffiles"
chmod 0755 "$control/postinst" "$control/prerm" "$control/prerm-pkg"
printf '2.0\n' >"$work/debian-binary"

pack() { # DIR OUTPUT: a sorted, root-owned, fixed-mtime, gzip'd tar of DIR
	tar -C "$1" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
		--format=gnu -cf - . | gzip -9n >"$2"
}
pack "$control" "$work/control.tar.gz"
pack "$data" "$work/data.tar.gz"
touch -d "@$epoch" "$work/debian-binary" "$work/control.tar.gz" "$work/data.tar.gz"

ipk="$out/${name}_$version-r${release}_$arch.ipk"
tar -C "$work" --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
	-cf - ./debian-binary ./control.tar.gz ./data.tar.gz | gzip -9n >"$ipk"
echo "build-ipk.sh: $(stat -c %s "$ipk") bytes, installed size $installed_size bytes (agent $(stat -c %s "$binary") bytes)" >&2
echo "$ipk"
