#!/bin/bash
# build-package.sh: make phonehome's OpenWrt package for this machine (x86_64) without the
# OpenWrt SDK: the .ipk that opkg installs (OpenWrt <= 24.10) or the .apk of apk-tools v3
# (OpenWrt 25.12 and later).
#
# The router build proper is the feed Makefile under the SDK (README.md). This script
# packs what that Makefile says, read once for both formats (version, control fields,
# install lines, conffiles, maintainer scripts), so the two cannot drift apart, and lays
# the package out as OpenWrt's include/package-pack.mk does:
# - .ipk: a gzip'd tar (opkg-lede rejects the `ar` form) of ./debian-binary,
#   ./control.tar.gz (control, conffiles, the postinst/prerm wrappers that hand over to
#   default_postinst/default_prerm of /lib/functions.sh, and prerm-pkg) and
#   ./data.tar.gz; owned by root, sorted, fixed mtimes: the same tree gives the same bytes.
# - .apk: `apk mkpkg` with the scripts mapped as under CONFIG_USE_APK (post-install,
#   post-upgrade = the same with PKG_UPGRADE=1, pre-deinstall = default_prerm + prerm) and
#   lib/apk/packages/NAME.list, NAME.conffiles, NAME.conffiles_static in the payload;
#   signed with --sign-key (its public half goes into the router's /etc/apk/keys), or
#   unsigned only with --unsigned (then it installs only with --allow-untrusted).
# The agent is built statically with the workspace's `router` profile: there is no musl
# Rust target here, and a static glibc binary runs on OpenWrt's musl userland all the same.
#
# Usage: openwrt-package/build-package.sh --format ipk|apk [--out DIR] [--binary FILE]
#            [--sign-key KEY.pem | --unsigned] [--release N]
#   --format ipk|apk  which package manager the package is for
#   --out DIR         where it goes (default: <repo>/target/openwrt-packages); the last
#                     line printed is its path
#   --binary FILE     pack this agent binary instead of building one
#   --sign-key FILE   .apk only: sign with this private key (PEM, e.g. made with
#                     `openssl ecparam -name prime256v1 -genkey -noout -out KEY.pem`)
#   --unsigned        .apk only: make it unsigned
#   --release N       the package release instead of the Makefile's PKG_RELEASE (to try
#                     an upgrade)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
makefile="$here/Makefile"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
arch=x86_64
rust_target=x86_64-unknown-linux-gnu

die() {
	echo "build-package.sh: $*" >&2
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=openwrt-tools.sh
. "$here/openwrt-tools.sh"

format=""
out="$target_dir/openwrt-packages"
binary=""
sign_key=""
unsigned=""
release=""
while [ $# -gt 0 ]; do
	case "$1" in
	--format) [ $# -ge 2 ] || die "--format needs ipk or apk"; format="$2"; shift 2 ;;
	--out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
	--binary) [ $# -ge 2 ] || die "--binary needs a file"; binary="$2"; shift 2 ;;
	--sign-key) [ $# -ge 2 ] || die "--sign-key needs a private key file (PEM)"; sign_key="$2"; shift 2 ;;
	--unsigned) unsigned=1; shift ;;
	--release) [ $# -ge 2 ] || die "--release needs a number"; release="$2"; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

check_options() {
	case "$format" in
	ipk) [ -z "$sign_key$unsigned" ] || die "--sign-key and --unsigned are for --format apk (an .ipk is trusted through its feed's index)" ;;
	apk)
		[ -n "$sign_key" ] || [ -n "$unsigned" ] ||
			die "--format apk needs --sign-key KEY.pem (the router needs its public half in /etc/apk/keys), or --unsigned for a package that installs only with --allow-untrusted"
		[ -z "$sign_key" ] || [ -z "$unsigned" ] || die "--sign-key and --unsigned exclude each other: choose one"
		[ -z "$sign_key" ] || [ -r "$sign_key" ] || die "cannot read the signing key $sign_key"
		;;
	"") die "say which package: --format ipk (opkg, OpenWrt <= 24.10) or --format apk (OpenWrt >= 25.12)" ;;
	*) die "--format '$format' is not ipk or apk" ;;
	esac
	case "$release" in
	*[!0-9]* | 0*) die "--release '$release' must be a positive number" ;;
	esac
	[ -z "$binary" ] || [ -x "$binary" ] || die "--binary $binary is not an executable file"
	mkdir -p "$out" || die "cannot make the output directory $out"
	out="$(cd "$out" && pwd)"
}

# --- the Makefile, read once -------------------------------------------------------------

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

read_makefile() {
	name="$(mk_var PKG_NAME)"
	version="$(mk_var PKG_VERSION)"
	release="${release:-$(mk_var PKG_RELEASE)}"
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
	local cargo_version
	cargo_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
	[ "$version" = "$cargo_version" ] ||
		die "PKG_VERSION $version in $makefile differs from the workspace version $cargo_version in $repo/Cargo.toml: make them equal"
	install_lines="$(mk_define "Package/$name/install")"
	conffiles="$(mk_define "Package/$name/conffiles")"
	postinst_pkg="$(mk_define "Package/$name/postinst")"
	prerm_pkg="$(mk_define "Package/$name/prerm")"
	# One line, as package-pack.mk strips it for apk; control files indent each line.
	description="$(mk_define "Package/$name/description" | sed 's/^[[:space:]]*//')"
	# What the SDK sets SOURCE to for this package: its directory in the feed (src-link
	# phonehome to the repository root).
	source="feeds/phonehome/openwrt-package"
	full_version="$version-r$release"
}

# --- the agent --------------------------------------------------------------------------

build_agent() {
	[ -n "$binary" ] && return 0
	echo "build-package.sh: cargo build --locked --profile router -p phonehome --target $rust_target (static)" >&2
	# No build paths in the binary (panic locations): the repository and cargo's home.
	local rustflags="-C target-feature=+crt-static --remap-path-prefix=$repo=/phonehome"
	rustflags="$rustflags --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
	(cd "$repo" && RUSTFLAGS="$rustflags" \
		cargo build --locked --profile router -p phonehome --target "$rust_target") ||
		die "cargo build of the agent failed (output above)"
	binary="$target_dir/$rust_target/router/phonehome"
	[ -x "$binary" ] || die "no agent binary at $binary after the build"
}

check_static() {
	if ldd "$binary" 2>&1 | grep -q '=>'; then
		die "$binary is dynamically linked; OpenWrt has musl, not glibc: build it with RUSTFLAGS='-C target-feature=+crt-static'"
	fi
}

# --- the payload (both formats) --------------------------------------------------------

# The install lines of Package/NAME/install, as the SDK would run them, into $data. The
# quoted $(...) are make's text, matched literally.
# shellcheck disable=SC2016
install_files() {
	local cmd src dst mode
	while read -r cmd src dst; do
		[ -n "$cmd" ] || continue
		case "$cmd" in
		'$(INSTALL_DIR)') install -d -m 0755 "$data${src#\$(1)}"; continue ;;
		'$(INSTALL_BIN)') mode=0755 ;;
		'$(INSTALL_CONF)') mode=0600 ;;
		'$(INSTALL_DATA)') mode=0644 ;;
		*) die "unknown install command '$cmd' in $makefile" ;;
		esac
		case "$src" in
		'$(PKG_INSTALL_DIR)/bin/'*) src="$binary" ;;
		./*) src="$here/${src#./}" ;;
		*) die "unknown install source '$src' in $makefile" ;;
		esac
		install -m "$mode" "$src" "$data${dst#\$(1)}"
	done <<<"$install_lines"
}

# Conffiles the package does not ship are kept across sysupgrade through
# lib/upgrade/keep.d, as package-pack.mk does (none today: files/phonehome.keep keeps the
# key's directory).
add_keep_d() {
	local f keep=""
	while read -r f; do
		[ -n "$f" ] && [ ! -f "$data$f" ] && keep="$keep$f"$'\n'
	done <<<"$conffiles"
	[ -n "$keep" ] || return 0
	install -d -m 0755 "$data/lib/upgrade/keep.d"
	printf '%s' "$keep" >>"$data/lib/upgrade/keep.d/$name"
	chmod 0644 "$data/lib/upgrade/keep.d/$name"
}

# The time of the last commit of what goes into the package, unless SOURCE_DATE_EPOCH.
set_epoch() {
	epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct -- Cargo.toml Cargo.lock protocol agent openwrt-package 2>/dev/null || true)}"
	epoch="${epoch:-0}"
	export SOURCE_DATE_EPOCH="$epoch"
}

# --- .ipk -------------------------------------------------------------------------------

pack_tgz() { # DIR OUTPUT: a sorted, root-owned, fixed-mtime, gzip'd tar of DIR
	tar -C "$1" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
		--format=gnu -cf - . | gzip -9n >"$2"
}

make_ipk() {
	local control="$work/control" installed_size
	mkdir -p "$control"
	installed_size="$(find "$data" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
	{
		echo "Package: $name"
		echo "Version: $full_version"
		echo "Depends: libc"
		echo "Source: $source"
		echo "SourceName: $name"
		echo "License: $license"
		echo "Section: $section"
		echo "URL: $url"
		echo "Maintainer: $maintainer"
		echo "Architecture: $arch"
		echo "Installed-Size: $installed_size"
		printf 'Description:'
		printf '%s\n' "$description" | sed 's/^/ /'
	} >"$control/control"
	printf '%s\n' "$conffiles" >"$control/conffiles"
	# The wrappers package-pack.mk writes: hand over to /lib/functions.sh.
	cat >"$control/postinst" <<-'EOF'
		#!/bin/sh
		[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
		[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
		. ${IPKG_INSTROOT}/lib/functions.sh
		default_postinst $0 $@
	EOF
	cat >"$control/prerm" <<-'EOF'
		#!/bin/sh
		[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
		. ${IPKG_INSTROOT}/lib/functions.sh
		default_prerm $0 $@
	EOF
	[ -z "$postinst_pkg" ] || printf '%s\n' "$postinst_pkg" >"$control/postinst-pkg"
	[ -z "$prerm_pkg" ] || printf '%s\n' "$prerm_pkg" >"$control/prerm-pkg"
	chmod 0644 "$control/control" "$control/conffiles"
	chmod 0755 "$control"/post* "$control"/prerm*
	printf '2.0\n' >"$work/debian-binary"
	pack_tgz "$control" "$work/control.tar.gz"
	pack_tgz "$data" "$work/data.tar.gz"
	touch -d "@$epoch" "$work/debian-binary" "$work/control.tar.gz" "$work/data.tar.gz"
	package="$out/${name}_${full_version}_$arch.ipk"
	tar -C "$work" --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
		-cf - ./debian-binary ./control.tar.gz ./data.tar.gz | gzip -9n >"$package"
	echo "build-package.sh: $(stat -c %s "$package") bytes, installed size $installed_size bytes (agent $(stat -c %s "$binary") bytes)" >&2
}

# --- .apk -------------------------------------------------------------------------------

# The scripts package-pack.mk makes under CONFIG_USE_APK (the package's own postinst and
# prerm bodies follow the default_* call in the same script, without their #! line). The
# single-quoted $... are the scripts' text:
# shellcheck disable=SC2016
write_apk_scripts() {
	local s="$work/scripts"
	mkdir -p "$s"
	{
		echo '#!/bin/sh'
		echo '[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0'
		echo '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0'
		echo '. ${IPKG_INSTROOT}/lib/functions.sh'
		echo 'export root="${IPKG_INSTROOT}"'
		echo "export pkgname=\"$name\""
		echo 'add_group_and_user'
		echo 'default_postinst'
		[ -z "$postinst_pkg" ] || printf '%s\n' "$postinst_pkg" | sed '/^[[:space:]]*#!/d'
	} >"$s/post-install"
	{
		echo '#!/bin/sh'
		echo 'export PKG_UPGRADE=1'
		sed '/^[[:space:]]*#!/d' "$s/post-install"
	} >"$s/post-upgrade"
	{
		echo '#!/bin/sh'
		echo '[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0'
		echo '. ${IPKG_INSTROOT}/lib/functions.sh'
		echo 'export root="${IPKG_INSTROOT}"'
		echo "export pkgname=\"$name\""
		echo 'default_prerm'
		[ -z "$prerm_pkg" ] || printf '%s\n' "$prerm_pkg" | sed '/^[[:space:]]*#!/d'
	} >"$s/pre-deinstall"
	chmod 0755 "$s"/*
}

# lib/apk/packages/NAME.list (every file and link of the payload, before these files are
# added), NAME.conffiles and NAME.conffiles_static (path and SHA-256 of those shipped).
write_apk_lists() {
	local pkgs="$data/lib/apk/packages" f
	mkdir -p "$pkgs"
	(cd "$data" && find . -type f,l -printf '/%P\n' | sort) >"$work/list"
	mv "$work/list" "$pkgs/$name.list"
	printf '%s\n' "$conffiles" >"$pkgs/$name.conffiles"
	: >"$pkgs/$name.conffiles_static"
	while read -r f; do
		[ -f "$data$f" ] || continue
		echo "$f $(sha256sum <"$data$f" | cut -d' ' -f1)" >>"$pkgs/$name.conffiles_static"
	done <<<"$conffiles"
	[ -s "$pkgs/$name.conffiles_static" ] || rm -f "$pkgs/$name.conffiles_static"
	chmod 0644 "$pkgs"/*
}

make_apk() {
	local tools apk sign=()
	tools="$(owrt_tools_build)" || exit 1
	apk="$tools/apk"
	write_apk_scripts
	write_apk_lists
	find "$data" -exec touch -h -d "@$epoch" {} +
	[ -z "$sign_key" ] || sign=(--sign-key "$sign_key")
	package="$out/$name-$full_version.apk"
	rm -f "$package"
	"$apk" mkpkg "${sign[@]}" \
		--info "name:$name" \
		--info "version:$full_version" \
		--info "description:$(printf '%s' "$description" | tr '\n' ' ')" \
		--info "arch:$arch" \
		--info "license:$license" \
		--info "origin:$source" \
		--info "url:$url" \
		--info "maintainer:$maintainer" \
		--script "post-install:$work/scripts/post-install" \
		--script "post-upgrade:$work/scripts/post-upgrade" \
		--script "pre-deinstall:$work/scripts/pre-deinstall" \
		--info "depends:libc" \
		--files "$data" \
		--output "$package" >&2 || die "apk mkpkg failed (output above)"
	echo "build-package.sh: $(stat -c %s "$package") bytes, ${sign_key:+signed with $sign_key}${unsigned:+unsigned} (agent $(stat -c %s "$binary") bytes)" >&2
}

# --- main -------------------------------------------------------------------------------

check_options
read_makefile
build_agent
check_static
set_epoch
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$work/data"
mkdir -p "$data"
install_files
add_keep_d
case "$format" in
ipk) make_ipk ;;
apk) make_apk ;;
esac
echo "$package"
