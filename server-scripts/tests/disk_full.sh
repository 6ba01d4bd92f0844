#!/bin/bash
# THREATS 20, run by tests/disk_full.rs inside a private mount namespace: each temp root
# is copied onto a small tmpfs mounted over itself and filled up, then the commands run.
# Each must fail with a clear error (or, for the gate and list-devices, degrade as
# documented) and leave every file as it was. Prints "PASS <check>" per check.
#
# usage: disk_full.sh BIN_DIR ROOT GATE_ROOT DEVICE_ID NEW_PORT
set -euo pipefail
bin=$1 root=$2 groot=$3 id=$4 port=$5

fail() { echo "FAIL $*" >&2; exit 1; }
pass() { echo "PASS $*"; }

fill() { # fill DIR: put DIR on a 512 KiB tmpfs holding its old content, then fill it
	local save
	save=$(mktemp -d)
	cp -a "$1/." "$save/"
	mount -t tmpfs -o size=512k tmpfs "$1"
	cp -a "$save/." "$1/"
	rm -rf "$save"
	dd if=/dev/zero of="$1/filler" bs=4k >/dev/null 2>&1 || true
	dd if=/dev/zero of="$1/filler2" bs=1 >/dev/null 2>&1 || true
	if echo x >"$1/probe" 2>/dev/null; then fail "could not fill $1"; fi
}
sums() { (cd "$1" && find . -type f ! -name 'filler*' ! -path './var/lib/phonehome/locks/*' -print0 | sort -z | xargs -0 sha256sum); }

fill "$root"
fill "$groot"
before=$(sums "$root")
export PHONEHOME_ROOT=$root

set +e
out=$("$bin/forward-device-port" "$id" "22:$port" 2>&1); rc=$?
set -e
[ $rc = 1 ] || fail "forward-device-port exit $rc: $out"
grep -q "the disk is full" <<<"$out" || fail "forward-device-port: $out"
[ "$(wc -l <<<"$out")" = 1 ] || fail "not one line: $out"
[ "$(sums "$root")" = "$before" ] || fail "forward-device-port changed files"
pass "forward-device-port: clear error, requests and key file intact"

set +e
out=$("$bin/forward-device-port" "$id" --close all 2>&1); rc=$?
set -e
{ [ $rc = 1 ] && grep -q "the disk is full" <<<"$out"; } || fail "--close: $rc $out"
[ "$(sums "$root")" = "$before" ] || fail "--close changed files"
pass "forward-device-port --close: clear error, nothing changed"

set +e
out=$("$bin/add-device" 0242ac110002 "$(sed -n 4p "$(dirname "$0")/fixtures/keys.pub")" 2>&1); rc=$?
set -e
{ [ $rc = 1 ] && grep -q "the disk is full" <<<"$out"; } || fail "add-device: $rc $out"
[ "$(sums "$root")" = "$before" ] || fail "add-device changed files: $out"
pass "add-device: clear error ($out), nothing changed"

set +e
out=$("$bin/remove-device" "$id" 2>&1); rc=$?
set -e
{ [ $rc = 1 ] && grep -q "the disk is full" <<<"$out"; } || fail "remove-device: $rc $out"
[ "$(sums "$root")" = "$before" ] || fail "remove-device changed files"
[ -e "$root/etc/phonehome/authorized_keys/device$id" ] || fail "key file gone"
pass "remove-device: clear error before anything changed"

out=$("$bin/list-devices" 2>&1) || fail "list-devices: $out"
grep -q "disk holding .* is full" <<<"$out" || fail "list-devices did not say the disk is full: $out"
grep -q "no log data" <<<"$out" || fail "list-devices did not say no log data: $out"
grep -q "offline" <<<"$out" && fail "list-devices called a device offline: $out"
grep -q "unknown" <<<"$out" || fail "list-devices: $out"
pass "list-devices: 'no log data', 'unknown', never 'offline'"

export PHONEHOME_ROOT=/nonexistent
err=$(mktemp)
out=$(SSH_ORIGINAL_COMMAND=poll "$bin/phonehome-gate" --root "$groot" <<<'{"protocol":1,"agent_version":"1"}' 2>"$err") ||
	fail "gate: $(cat "$err")"
[ "$out" = "22:$port" ] || fail "gate answered '$out'"
grep -q "heartbeat not recorded" "$err" || fail "gate stderr: $(cat "$err")"
rm -f "$err"
pass "gate: still answers, says the heartbeat was not recorded"
