# TEST STAND-IN for OpenWrt's /lib/functions/procd.sh (package procd) and its
# /sbin/validate_data (package ubox), used only by ../../test.sh. Written for the test,
# not copied. procd is not running here: procd_* calls are written to
# /var/run/procd-stand-in.log so the test can read what would have been registered.
# uci_load_validate sets each option's variable from /etc/config as validate_data
# does (the value, else the rule's default; bool as 0/1; a list as its items joined by
# spaces) and calls the callback with result 0: it does NOT check the datatypes.

# shellcheck shell=sh
# shellcheck disable=SC3043

PROCD_STAND_IN_LOG="$IPKG_INSTROOT/var/run/procd-stand-in.log"

procd_log() {
	mkdir -p "$(dirname "$PROCD_STAND_IN_LOG")"
	echo "$*" >>"$PROCD_STAND_IN_LOG"
}

procd_open_service() { procd_log "service $1"; }
procd_close_service() { procd_log "service end"; }
procd_open_instance() { procd_log "instance ${1:-}"; }
procd_set_param() { procd_log "param $*"; }
procd_close_instance() { procd_log "instance end"; }
procd_add_reload_trigger() { procd_log "reload trigger $*"; }
procd_open_validate() { :; }
procd_close_validate() { :; }

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
