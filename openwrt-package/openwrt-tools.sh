# openwrt-tools.sh: where OpenWrt's real package tools (opkg, uci, apk) and shell libraries
# come from, for build-package.sh and test.sh, which source this file. They are built from
# the sources in the shared openwrt-tools directory that sits beside the repository
# (../shared/openwrt-tools, read-only; PHONEHOME_OPENWRT_TOOLS overrides it) into the
# repository's own target/openwrt-tools, once: build.sh returns at once when that build
# is already there. Callers set $repo (the repository root) and define die().

# shellcheck shell=bash

# The shared openwrt-tools directory (build.sh, src/, openwrt-files/), or a clear error.
owrt_tools_src() {
	local dir="${PHONEHOME_OPENWRT_TOOLS:-$repo/../shared/openwrt-tools}"
	if [ ! -f "$dir/build.sh" ] || [ ! -d "$dir/openwrt-files" ]; then
		die "OpenWrt's tools are not at $dir (no build.sh and openwrt-files/ there): set PHONEHOME_OPENWRT_TOOLS to the shared openwrt-tools directory"
	fi
	(cd "$dir" && pwd)
}

# Build (or find, already built) opkg, uci and apk; prints the directory holding them.
owrt_tools_build() {
	local src out
	src="$(owrt_tools_src)" || exit 1
	out="${CARGO_TARGET_DIR:-$repo/target}/openwrt-tools"
	bash "$src/build.sh" "$out" >&2 || die "building OpenWrt's tools failed: bash $src/build.sh $out (output above)"
	echo "$out"
}
