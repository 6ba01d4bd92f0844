# TEST STAND-IN for OpenWrt's /lib/functions/procd.sh (package procd) and the
# /sbin/validate_data it calls (package ubox), used only by ../../test.sh: procd, ubus and
# ubox do not exist on this machine. Written for the test, not copied. OpenWrt's real
# /etc/rc.common sources this file for an init script with USE_PROCD=1, as it sources the
# real one; everything else in the test root (rc.common, functions.sh, uci.sh, the uci
# binary, jshn.sh) is OpenWrt's own.
# - What the real file would send to procd over ubus is appended, one line per call, to
#   /var/run/procd-stand-in.log, for the test to read. procd_close_service calls the
#   init script's service_triggers, as the real one does.
# - uci_load_validate reads the section through the real config_load (the real uci
#   binary) and sets each option's variable as validate_data does (the value, else the
#   rule's default; a bool as 0/1; a list as its items joined by spaces), then calls the
#   callback with result 0: it does NOT check the datatypes.

# shellcheck shell=sh
# shellcheck disable=SC3043
# shellcheck source=/dev/null
. "$IPKG_INSTROOT/usr/share/libubox/jshn.sh"

PROCD_STAND_IN_LOG="$IPKG_INSTROOT/var/run/procd-stand-in.log"

procd_log() {
	mkdir -p "$(dirname "$PROCD_STAND_IN_LOG")"
	echo "$*" >>"$PROCD_STAND_IN_LOG"
}

procd_lock() { :; }
procd_open_service() { procd_log "service $1"; }
procd_close_service() {
	service_triggers
	procd_log "service end ${1:-set}"
}
procd_open_instance() { procd_log "instance ${1:-}"; }
procd_set_param() { procd_log "param $*"; }
procd_close_instance() { procd_log "instance end"; }
procd_add_reload_trigger() { procd_log "reload trigger $*"; }
procd_open_validate() { :; }
procd_close_validate() { :; }
procd_kill() { procd_log "kill $*"; }
procd_running() { return 1; }
_procd_status() {
	echo "inactive"
	return 3
}

uci_load_validate() {
	local _package="$1" _type="$2" _name="$3" _function="$4"
	local _rule _opt _rest _expr _def _v
	shift 4
	for _rule in "$@"; do
		eval "local ${_rule%%:*}"
	done
	config_load "$_package"
	for _rule in "$@"; do
		_opt="${_rule%%:*}"
		_rest="${_rule#*:}"
		_expr="${_rest%%:*}"
		_def=""
		[ "$_rest" != "$_expr" ] && _def="${_rest#*:}"
		config_get _v "$_name" "$_opt"
		[ -n "$_v" ] || _v="$_def"
		if [ "$_expr" = bool ]; then
			case "$_v" in
			1 | on | true | yes | enabled) _v=1 ;;
			0 | off | false | no | disabled) _v=0 ;;
			*) _v="" ;;
			esac
		fi
		eval "$_opt=\$_v"
	done
	[ -n "$_function" ] || return 0
	eval "$_function \"\$_name\" 0"
}
