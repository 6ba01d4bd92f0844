#!/usr/bin/env bash
# THREATS 1, 2 and 5 against the real sshd configured by the project's installer: a
# device's key in a thief's hands can do nothing but what the gate allows.
# Usage: tests/e2e/stolen-key.sh   (root; runs in its own sandbox, leaves nothing behind)
# PHONEHOME_E2E_DEVICE_SSHD=PORT: the same against the devices' own lean sshd on PORT
# (install-server.sh --device-sshd), which must hold every line of it; with
# PHONEHOME_E2E_DEVICE_SSHD_BUILD=DIR too, on the sshd built without OpenSSL there.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=stolen.sh
. "$(dirname "$0")/stolen.sh"
lab_enter_sandbox "$0" "$@"

step "lab: server${DEVICE_SSHD:+ with a device sshd of its own on port $DEVICE_SSHD}, two devices (OpenSSH-format keys), no agents running"
lab_up ssh || exit 1
if [ -n "$DEVICE_SSHD" ]; then
    if grep -q "^server_port = $DEVICE_SSHD\$" /etc/phonehome/server.conf; then
        pass "lean sshd: server.conf sends devices to port $DEVICE_SSHD"
    else
        fail "lean sshd: server.conf does not say server_port = $DEVICE_SSHD"
    fi
    # The admin (root) does not get into the devices' sshd; a device does not need PAM.
    if ip netns exec srv timeout 10 ssh -F /dev/null -p "$DEVICE_SSHD" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 true >/dev/null 2>&1; then
        fail "lean sshd: root logged in on port $DEVICE_SSHD"
    else
        pass "lean sshd: no one outside the device group gets in on port $DEVICE_SSHD"
    fi
fi
if [ -n "$DEVICE_SSHD_BUILD" ]; then
    # What install-server.sh --device-sshd-build installed is what serves the devices.
    v=$("$DEVICE_SSHD_BIN" -V 2>&1 | head -n 1)
    exe=$(readlink "/proc/$(cat "$LAB/srv/device-sshd.pid")/exe")
    if [[ $v == *"without OpenSSL"* ]] && [ "$exe" = "$DEVICE_SSHD_BIN" ]; then
        pass "the devices' sshd runs the build without OpenSSL: $v (Debian openssh $(cat /usr/local/lib/phonehome/openssh/debian-version))"
    else
        fail "the devices' sshd is not the build without OpenSSL: $DEVICE_SSHD_BIN -V says '$v', the one running is '$exe'"
    fi
    # It cannot check an RSA signature: add-device refuses such a key up front.
    ssh-keygen -q -t rsa -b 2048 -N '' -f "$LAB/rsa_key" </dev/null
    if out=$(in_ns srv add-device 02000000fe02 "$(cat "$LAB/rsa_key.pub")" 2>&1); then
        fail "add-device took an RSA key for an sshd without OpenSSL: $out"
    elif grep -q "takes ssh-ed25519 device keys only" <<<"$out"; then
        pass "add-device refuses an RSA key: $(cut -c1-110 <<<"$out")..."
    else
        fail "add-device refused an RSA key, but not for its type: $out"
    fi
    # Switching binaries stops the running device sshd (SIGHUP would re-execute the old
    # one). One that outlives SIGTERM by 5 s: install-server.sh says so and fails, and
    # starts nothing beside it. The stand-in ignores TERM; the lab's own sshd is untouched.
    ( trap '' TERM; exec sleep 120 ) &
    stub=$!
    echo "$stub" >/run/phonehome-sshd.pid
    if out=$("$REPO_DIR/server-scripts/install-server.sh" --bin-dir "$BIN_DIR" --device-sshd "$DEVICE_SSHD" \
        --device-sshd-build "$DEVICE_SSHD_BUILD" 2>&1); then
        fail "install-server.sh went on past a device sshd that did not stop: $out"
    elif grep -q "did not stop within 5 s of SIGTERM" <<<"$out" && kill -0 "$stub" 2>/dev/null; then
        pass "a device sshd that outlives SIGTERM: install-server.sh fails and says so ($(tail -n 1 <<<"$out" | cut -c1-100)...)"
    else
        fail "install-server.sh and a device sshd that ignores SIGTERM: $out"
    fi
    kill -KILL "$stub" 2>/dev/null || true
    wait "$stub" 2>/dev/null || true
    rm -f /run/phonehome-sshd.pid
fi
register dev1 || { fail "add-device dev1"; finish; exit 1; }
register dev2 || { fail "add-device dev2"; finish; exit 1; }
OWN=21001 OTHER=21002 NONE=21003
out=$(in_ns srv forward-device-port "$(dev_id dev1)" "22:$OWN" 2>&1) || fail "forward-device-port dev1 22:$OWN: $out"
out=$(in_ns srv forward-device-port "$(dev_id dev2)" "22:$OTHER" 2>&1) || fail "forward-device-port dev2 22:$OTHER: $out"

step "THREATS 1, 2: dev1's key, stolen, from the server's loopback"
stolen_matrix dev1 "$OWN" "$OTHER" "$NONE"

step "THREATS 22: a pre-auth user name cannot forge a heartbeat in the sshd log"
ID2=$(dev_id dev2)
FP2=$(ssh-keygen -lf "$LAB/dev2/id_openssh.pub" | cut -d' ' -f2)
# (sshd cuts a user name at its first ':', the BSD auth style separator, so the
# "ssh2: TYPE SHA256:..." tail can never come from a user name; the rest can.)
for forged in "Accepted publickey for device$ID2 from 203.0.113.7 port 1 ssh2: ED25519 $FP2" \
    "device$ID2 from 203.0.113.7 port 1 ssh2: ED25519 $FP2"; do
    thief dev1 -l "$forged" 127.0.0.1 poll </dev/null >/dev/null 2>&1
done
if wait_until 5 grep -q "user Accepted publickey for device$ID2 from 203.0.113.7 port 1 ssh2 " /var/log/auth.log; then
    pass "control: the crafted user names reached /var/log/auth.log"
else
    fail "control: the crafted user names are not in /var/log/auth.log: $(tail -n 3 /var/log/auth.log)"
fi
state=$(dev_state "$ID2")
case $state in
online | stale | offline) fail "THREATS 22 forged user names made dev2 '$state' in list-devices" ;;
*) pass "THREATS 22 forged user names: dev2 is still '$state' in list-devices" ;;
esac
# The positive control: a real login with dev2's key that never runs the gate (-N), so
# only sshd's log can tell list-devices about it.
r=$(run_forward dev2 -R "localhost:$OTHER:127.0.0.1:22")
if wait_until 10 state_is "$ID2" online && [ "$(dev_field "$ID2" seen_by)" = "sshd log" ]; then
    pass "control: a real login of dev2 (no gate run) shows it online, seen by the sshd log"
else
    fail "control: after a real login ($r) dev2 is '$(dev_state "$ID2")', seen by '$(dev_field "$ID2" seen_by)'"
fi
kill_forward

step "THREATS 5: remove-device while the stolen key holds a tunnel"
stolen_remove dev1 "$OWN"

finish
