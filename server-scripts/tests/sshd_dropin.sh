#!/bin/bash
# The drop-in and key lines against the real OpenSSH sshd, run by tests/sshd.rs inside
# private mount and pid namespaces (unshare --mount --pid): /etc, /var/lib, /usr/local and /run are
# overlays or tmpfs that vanish with the namespace, so install-server.sh, useradd and
# add-device run for real (root /) without touching the host. sshd listens on
# 127.0.0.1 only. Prints "PASS <check>" per check; exits non-zero at the first failure.
#
# usage: sshd_dropin.sh BIN_DIR WORK_DIR SSHD_PORT REMOTE_PORT OTHER_PORT
# Needs python3 (install.sh test installs it) to re-encode RSA keys (THREATS 24).
set -euo pipefail
bin_dir=$1 work=$2 sshd_port=$3 rport=$4 other=$5
id=6466b34bde54
dev=device$id

fail() {
	echo "FAIL $*" >&2
	[ -f "$work/sshd.log" ] && sed 's/^/sshd.log: /' "$work/sshd.log" >&2
	exit 1
}
pass() { echo "PASS $*"; }

mount -t tmpfs tmpfs "$work"
for d in etc var/lib usr/local; do
	mkdir -p "$work/upper/$d" "$work/work/$d"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/upper/$d,workdir=$work/work/$d" "/$d"
done
mount -t tmpfs tmpfs /run
# Device uids from a private range, so they name no process of the host or other tests.
sed -i '/^UID_MIN/d; /^UID_MAX/d' /etc/login.defs
printf 'UID_MIN 62000\nUID_MAX 62999\n' >>/etc/login.defs
mkdir -p "$work/home/.ssh"
export HOME=$work/home

cleanup() {
	if [ -f "$work/sshd.pid" ]; then kill "$(cat "$work/sshd.pid")" 2>/dev/null || true; fi
	jobs -p | xargs -r kill 2>/dev/null || true
}
trap cleanup EXIT

# 1. install-server.sh validates the drop-in against Debian's real sshd_config.
"$(dirname "$0")/../install-server.sh" --bin-dir "$bin_dir" --no-reload >"$work/install.log" 2>&1 ||
	fail "install-server.sh: $(cat "$work/install.log")"
grep -q 'sshd -t: ok' "$work/install.log" || fail "install-server.sh did not run sshd -t"
pass "install-server.sh with root /, sshd -t ok"
sed -i 's/^poll_interval = 60/poll_interval = 2/; s/^admin_user = .*/admin_user = admin/' /etc/phonehome/server.conf

# 2. A device with a fresh key.
ssh-keygen -q -t ed25519 -N '' -f "$work/devkey"
out=$(/usr/local/bin/add-device "$id" "$(cat "$work/devkey.pub")") || fail "add-device: $out"
grep -q "phonehome setup --server" <<<"$out" || fail "add-device printed no setup line"
pass "add-device with root /"

# 3. sshd -T: the restrictions apply to the device user, and only to it.
T() { /usr/sbin/sshd -T -C "user=$1,host=x,addr=127.0.0.1"; }
dt=$(T "$dev")
for want in "forcecommand exec /usr/local/lib/phonehome/phonehome-gate" "allowtcpforwarding remote" \
	"permitopen none" "permittty no" "permituserrc no" "x11forwarding no" "allowagentforwarding no" \
	"allowstreamlocalforwarding no" "authenticationmethods publickey" "passwordauthentication no" \
	"authorizedkeysfile /etc/phonehome/authorized_keys/%u" "clientaliveinterval 15" "gatewayports no" \
	"permittunnel no"; do
	grep -qx "$want" <<<"$dt" || fail "sshd -T for $dev lacks '$want'"
done
pass "sshd -T: device user restricted"
rt=$(T root)
for want in "forcecommand none" "x11forwarding yes" "allowtcpforwarding yes" "permitopen any" \
	"authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2" "permittty yes"; do
	grep -qx "$want" <<<"$rt" || fail "sshd -T for root lacks '$want' (the Match block leaked)"
done
pass "sshd -T: root unaffected"

# 4. A throwaway sshd on 127.0.0.1 with that configuration.
mkdir -p /run/sshd
/usr/sbin/sshd -o "Port=$sshd_port" -o ListenAddress=127.0.0.1 -o "PidFile=$work/sshd.pid" -E "$work/sshd.log" ||
	fail "sshd did not start"
for _ in $(seq 50); do [ -s "$work/sshd.pid" ] && break; sleep 0.1; done
S() { ssh -i "$work/devkey" -p "$sshd_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
	-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 "$@"; }

/usr/local/bin/forward-device-port "$id" "22:$rport" >/dev/null || fail "forward-device-port"
answer=$(echo '{"protocol":1,"agent_version":"test"}' | S "$dev@127.0.0.1" poll 2>"$work/err") ||
	fail "poll: $(cat "$work/err")"
[ "$answer" = "22:$rport" ] || fail "poll answered '$answer'"
pass "poll through the real sshd answers the request (key line accepted)"
grep -q '"agent_version":"test"' "/var/lib/phonehome/status/$id/status.json" || fail "no report recorded"

# 5. Nothing but poll: a shell, another command, a pty, sftp.
if S "$dev@127.0.0.1" </dev/null >/dev/null 2>&1; then fail "a shell login succeeded"; fi
if S "$dev@127.0.0.1" id </dev/null >"$work/out" 2>&1; then fail "'id' ran"; fi
grep -q "only runs" "$work/out" || fail "no refusal from the gate: $(cat "$work/out")"
if S -tt "$dev@127.0.0.1" poll </dev/null >"$work/out" 2>&1; then :; fi
grep -qi "PTY allocation request failed" "$work/out" || fail "a pty was granted: $(cat "$work/out")"
if S -s "$dev@127.0.0.1" sftp </dev/null >/dev/null 2>&1; then fail "sftp subsystem ran"; fi
if S -W "127.0.0.1:$sshd_port" "$dev@127.0.0.1" </dev/null >"$work/out" 2>&1; then fail "-W succeeded"; fi
pass "no shell, command, pty, sftp or -W"

# 6. -R to an unrequested port is refused; to the requested one it works, and --wait sees it.
if timeout 10 ssh -i "$work/devkey" -p "$sshd_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
	-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ExitOnForwardFailure=yes -N \
	-R "localhost:$other:127.0.0.1:22" "$dev@127.0.0.1" 2>"$work/out"; then
	fail "unrequested -R $other accepted"
fi
pass "-R to an unrequested port refused"
for spec in "127.0.0.1:$rport" "0.0.0.0:$rport" "[::1]:$rport" "localhost:0" "$work/sock"; do
	if timeout 10 ssh -i "$work/devkey" -p "$sshd_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ExitOnForwardFailure=yes -N \
		-R "$spec:127.0.0.1:22" "$dev@127.0.0.1" 2>"$work/out"; then
		fail "-R $spec accepted"
	fi
done
[ ! -e "$work/sock" ] || fail "a Unix socket forward was created"
pass "-R with another listen host, port 0 or a Unix socket refused"
lport=$((other + 1))
S -N -L "127.0.0.1:$lport:127.0.0.1:$sshd_port" "$dev@127.0.0.1" 2>/dev/null &
lfwd=$!
sleep 1
banner=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$lport && head -c 7 <&3" 2>/dev/null || true)
kill "$lfwd" 2>/dev/null || true
[ "$banner" != "SSH-2.0" ] || fail "-L reached the server's own sshd through a device key"
grep -q "refused local port forward" "$work/sshd.log" || fail "sshd did not refuse the -L"
pass "-L refused (PermitOpen none)"
S -o ExitOnForwardFailure=yes -N -R "localhost:$rport:127.0.0.1:22" "$dev@127.0.0.1" 2>"$work/tunnel.err" &
tunnel=$!
out=$(/usr/local/bin/forward-device-port "$id" "22:$rport" --wait=15 2>&1) || fail "--wait: $out"
grep -q "tunnel up" <<<"$out" || fail "--wait: $out"
pass "-R to the requested port works; forward-device-port --wait sees the device's listener"
/usr/local/bin/list-devices --json --log "$work/sshd.log" >"$work/list.json" || fail "list-devices"
grep -q '"state": "online"' "$work/list.json" || fail "not online: $(cat "$work/list.json")"
pass "list-devices shows it online"

# 7. remove-device cuts the open tunnel and the key stops working.
[ "$(id -u "$dev")" -ge 62000 ] || fail "device uid outside the private range"
/usr/local/bin/remove-device "$id" >"$work/out" 2>&1 || fail "remove-device: $(cat "$work/out")"
for _ in $(seq 50); do kill -0 "$tunnel" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$tunnel" 2>/dev/null; then fail "the tunnel survived remove-device"; fi
if S "$dev@127.0.0.1" poll </dev/null >/dev/null 2>&1; then fail "login after remove-device"; fi
pass "remove-device cut the tunnel and revoked the key"

# 8. THREATS 24: an RSA key is judged by its value. The same key with a zero-padded
# exponent is one key: stored canonically, fingerprinted as sshd logs it, revoked once.
# reencode PUBFILE E_PAD N_PAD: the public key line with zero bytes before e and n.
reencode() {
	python3 - "$@" <<'PY'
import base64, struct, sys
kind, b64 = open(sys.argv[1]).read().split()[:2]
blob, fields = base64.b64decode(b64), []
while blob:
    n = struct.unpack(">I", blob[:4])[0]
    fields.append(blob[4:4 + n]); blob = blob[4 + n:]
e, n = b"\0" * int(sys.argv[2]) + fields[1], b"\0" * int(sys.argv[3]) + fields[2]
out = b"".join(struct.pack(">I", len(f)) + f for f in (fields[0], e, n))
print(kind, base64.b64encode(out).decode())
PY
}
id2=0242ac110002 id3=0242ac110003
ssh-keygen -q -t rsa -b 2048 -N '' -f "$work/rsakey"
padded=$(reencode "$work/rsakey.pub" 3 0)
[ "$padded" != "$(cut -d' ' -f1,2 "$work/rsakey.pub")" ] || fail "the re-encoded key is the same text"
out=$(/usr/local/bin/add-device "$id2" "$padded") || fail "add-device with a padded exponent: $out"
fp=$(python3 -c 'import json, sys
print(next(d["fingerprint"] for d in json.load(open(sys.argv[1]))["devices"] if d["id"] == sys.argv[2]))' \
	/var/lib/phonehome/devices.json "$id2")
answer=$(echo '{"protocol":2,"agent_version":"test"}' |
	ssh -i "$work/rsakey" -p "$sshd_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "device$id2@127.0.0.1" poll 2>"$work/err") ||
	fail "RSA login: $(cat "$work/err")"
grep -q '^phonehome-inbox 2$' <<<"$answer" || fail "RSA poll answered '$answer'"
grep -q "Accepted publickey for device$id2 from 127.0.0.1 port [0-9]* ssh2: RSA ${fp}[[:space:]]*$" "$work/sshd.log" ||
	fail "sshd did not log the stored fingerprint $fp"
pass "THREATS 24: a zero-padded RSA key is stored canonically, with the fingerprint sshd logs"
/usr/local/bin/remove-device "$id2" >/dev/null || fail "remove-device $id2"
for form in "$padded" "$(cut -d' ' -f1,2 "$work/rsakey.pub")" "$(reencode "$work/rsakey.pub" 0 7)"; do
	if out=$(/usr/local/bin/add-device "$id3" "$form" 2>&1); then fail "a revoked key came back as $id3"; fi
	grep -q "was revoked" <<<"$out" || fail "revoked key refused for another reason: $out"
done
ssh-keygen -q -t rsa -b 1024 -N '' -f "$work/rsa1024"
if out=$(/usr/local/bin/add-device "$id3" "$(reencode "$work/rsa1024.pub" 0 130)" 2>&1); then
	fail "a 1024-bit key padded to look long was accepted"
fi
grep -q "1024 bits" <<<"$out" || fail "the padded 1024-bit key was refused for another reason: $out"
pass "THREATS 24: a revoked key stays revoked in every spelling; a padded 1024-bit key is refused"

# 9. THREATS 29: remove-device while the device logs in again and again: it ends
# with everything removed, every round.
for round in 1 2 3 4 5; do
	/usr/local/bin/add-device "$id3" "$(cat "$work/devkey.pub")" --force >/dev/null 2>&1 ||
		fail "round $round: add-device"
	for _ in 1 2 3 4 5 6; do
		(while :; do echo '{"protocol":2,"agent_version":"t"}' | S "device$id3@127.0.0.1" poll >/dev/null 2>&1 || sleep 0.05; done) &
	done
	sleep 0.5
	out=$(/usr/local/bin/remove-device "$id3" 2>&1) || fail "round $round: remove-device: $out"
	jobs -p | xargs -r kill 2>/dev/null || true
	wait 2>/dev/null || true
	if getent passwd "device$id3" >/dev/null; then fail "round $round: the account is left"; fi
	! grep -q "\"id\":\"$id3\"" /var/lib/phonehome/devices.json || fail "round $round: the registry record is left"
	[ ! -e "/etc/phonehome/authorized_keys/device$id3" ] || fail "round $round: the key file is left"
done
pass "THREATS 29: remove-device during concurrent logins removed everything, 5 rounds of 6 clients"
