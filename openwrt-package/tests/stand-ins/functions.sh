# TEST STAND-IN for OpenWrt's /lib/functions.sh (package base-files), used only by
# ../../test.sh: this machine has no OpenWrt userland and no `uci` binary. Written for
# the test, not copied. It holds what phonehome's scripts and the maintainer-script
# wrappers call, with the behaviour read from OpenWrt's own file:
# - config_load reads /etc/config/PACKAGE (a UCI file is shell syntax for `config`,
#   `option` and `list`, which is what `uci export` feeds the real one), and loads
#   nothing when IPKG_INSTROOT is set; a list is also kept joined by spaces.
# - default_postinst: on a running device (no IPKG_INSTROOT) each /etc/uci-defaults
#   file of the package is sourced in a subshell from its directory and deleted if it
#   succeeds; then the package's postinst-pkg; then its init scripts are enabled and
#   started (image build: only enabled, through $IPKG_INSTROOT/etc/rc.common).
# - default_prerm: the package's prerm-pkg (in a subshell), then its init scripts are
#   disabled and stopped (image build: only disabled).
# No `uci commit`, no users/groups, no alternatives, no kmods.

# shellcheck shell=sh
# shellcheck disable=SC3043,SC2013

config() {
	CONFIG_SECTION="$2"
	CONFIG_SECTIONS="${CONFIG_SECTIONS:+$CONFIG_SECTIONS }$2"
	eval "CONFIG_${2}_TYPE=\$1"
}

option() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\$2"
}

list() {
	local len
	eval "len=\${CONFIG_${CONFIG_SECTION}_${1}_LENGTH:-0}"
	len=$((len + 1))
	eval "CONFIG_${CONFIG_SECTION}_${1}_ITEM$len=\$2"
	eval "CONFIG_${CONFIG_SECTION}_${1}_LENGTH=$len"
	eval "CONFIG_${CONFIG_SECTION}_$1=\"\${CONFIG_${CONFIG_SECTION}_$1:+\$CONFIG_${CONFIG_SECTION}_$1 }\$2\""
}

config_load() {
	[ -n "$IPKG_INSTROOT" ] && return 0
	# shellcheck source=/dev/null
	[ -f "/etc/config/$1" ] && . "/etc/config/$1"
	return 0
}

config_get() {
	eval "$1=\${CONFIG_${2}_${3}:-\$4}"
}

config_get_bool() {
	local _v
	config_get _v "$2" "$3" "$4"
	case "$_v" in
	1 | on | true | yes | enabled) _v=1 ;;
	0 | off | false | no | disabled) _v=0 ;;
	*) _v="$4" ;;
	esac
	eval "$1=\$_v"
}

default_postinst() {
	local root="${IPKG_INSTROOT}" pkgname i ret=0
	pkgname="$(basename "${1%.*}")"
	local filelist="$root/usr/lib/opkg/info/$pkgname.list"

	if [ -z "$root" ]; then
		for i in $(grep -s "^/etc/uci-defaults/" "$filelist"); do
			# shellcheck source=/dev/null
			( [ -f "$i" ] && cd "$(dirname "$i")" && . "$i" ) && rm -f "$i"
		done
	fi
	if [ -f "$root/usr/lib/opkg/info/$pkgname.postinst-pkg" ]; then
		# shellcheck source=/dev/null
		( . "$root/usr/lib/opkg/info/$pkgname.postinst-pkg" )
		ret=$?
	fi
	for i in $(grep -s "^/etc/init.d/" "$filelist"); do
		if [ -n "$root" ]; then
			/bin/sh "$root/etc/rc.common" "$root$i" enable
		else
			"$i" enable
			"$i" start
		fi
	done
	return $ret
}

default_prerm() {
	local root="${IPKG_INSTROOT}" pkgname i ret=0
	pkgname="$(basename "${1%.*}")"
	local filelist="$root/usr/lib/opkg/info/$pkgname.list"

	if [ -f "$root/usr/lib/opkg/info/$pkgname.prerm-pkg" ]; then
		# shellcheck source=/dev/null
		( . "$root/usr/lib/opkg/info/$pkgname.prerm-pkg" )
		ret=$?
	fi
	for i in $(grep -s "^/etc/init.d/" "$filelist"); do
		if [ -n "$root" ]; then
			/bin/sh "$root/etc/rc.common" "$root$i" disable
		else
			"$i" disable
			"$i" stop
		fi
	done
	return $ret
}
