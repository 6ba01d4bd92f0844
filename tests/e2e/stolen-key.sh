#!/usr/bin/env bash
# THREATS 1, 2 and 5 against the real sshd configured by the project's installer: a
# device's key in a thief's hands can do nothing but what the gate allows.
# Usage: tests/e2e/stolen-key.sh   (root; runs in its own sandbox, leaves nothing behind)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=stolen.sh
. "$(dirname "$0")/stolen.sh"
lab_enter_sandbox "$0" "$@"

step "lab: server, two devices (OpenSSH-format keys), no agents running"
lab_up ssh || exit 1
register dev1 || { fail "add-device dev1"; finish; exit 1; }
register dev2 || { fail "add-device dev2"; finish; exit 1; }
OWN=21001 OTHER=21002 NONE=21003
out=$(in_ns srv forward-device-port "$(dev_id dev1)" "22:$OWN" 2>&1) || fail "forward-device-port dev1 22:$OWN: $out"
out=$(in_ns srv forward-device-port "$(dev_id dev2)" "22:$OTHER" 2>&1) || fail "forward-device-port dev2 22:$OTHER: $out"

step "THREATS 1, 2: dev1's key, stolen, from the server's loopback"
stolen_matrix dev1 "$OWN" "$OTHER" "$NONE"

step "THREATS 5: remove-device while the stolen key holds a tunnel"
stolen_remove dev1 "$OWN"

finish
