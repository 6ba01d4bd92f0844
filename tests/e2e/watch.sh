#!/usr/bin/env bash
# watch-devices on real parts (issue 15): the lab of lib.sh (real sshd, a device behind
# NAT polling with dbclient), watch-devices running as a service in the server
# namespace, and webhook receivers (tests/e2e/receiver.py) on the server's loopback:
# HTTPS with a certificate of a throwaway CA made here, and plain HTTP in ntfy format.
# Every event kind comes from a real change: enrolment, the first poll, a tunnel, a
# port taken on the server, requests withdrawn and expired, the device cut off and
# back, a wrong key, a removal. Then: the receiver down and up (everything, in order,
# once), the signature checked by the receiver, a wrong CA (a clear TLS error, the
# events kept, delivered once the CA is right), a full queue (oldest dropped, counted).
# Usage: tests/e2e/watch.sh   (root; its own sandbox; leaves nothing behind)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
lab_enter_sandbox "$0" "$@"

ID1=$(dev_id dev1)
ID2=$(dev_id dev2)
RX=$LAB/rx
WATCH_LOG=$LAB/watch.log
HTTPS=8443
NTFY=8080

# --- helpers -------------------------------------------------------------------------

# The throwaway CAs: the right one signs the receiver's certificate, the other not.
make_cas() {
    mkdir -p "$RX" && cd "$RX" || return 1
    local ca
    for ca in ca other; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
            -keyout "$ca.key" -out "$ca.pem" -subj "/CN=phonehome test $ca" 2>/dev/null || return 1
    done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rx.key -out rx.csr \
        -subj /CN=localhost 2>/dev/null || return 1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >rx.ext
    openssl x509 -req -in rx.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
        -extfile rx.ext -out rx.pem 2>/dev/null || return 1
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >hook.secret
    chmod 0600 hook.secret
    cd - >/dev/null || return 1
}

receiver_start() {
    ip netns exec srv python3 "$E2E_DIR/receiver.py" --port $HTTPS --cert "$RX/rx.pem" \
        --key "$RX/rx.key" --log "$RX/https.log" --secret "$RX/hook.secret" \
        --mode-file "$RX/mode" 2>>"$RX/receiver.err" &
    echo $! >"$RX/https.pid"
    wait_until 10 tcp_open srv 127.0.0.1 $HTTPS
}

receiver_stop() {
    local pid
    pid=$(cat "$RX/https.pid") || return 0
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# got PATH: the events a receiver path took (answered 200), one JSON per line (the body).
got() {
    [ -f "$RX/https.log" ] || return 0
    jq -c --arg p "$1" 'select(.path == $p and .mode != "fail") | .body | fromjson' "$RX/https.log" 2>/dev/null
}

# has PATH EVENT DEVICE [JQ-CONDITION]: the receiver path took such an event.
has() {
    # (-s and any: jq 1.6's -e judges by the last input alone)
    got "$1" | jq -e -s --arg e "$2" --arg d "$3" \
        "any(.[]; .event == \$e and (\$d == \"-\" or .device == \$d) and (${4:-true}))" >/dev/null 2>&1
}

# expect NAME SECS PATH EVENT DEVICE [JQ-CONDITION]: wait for the event, pass or fail.
expect() {
    local name=$1 secs=$2
    shift 2
    if wait_until "$secs" has "$@"; then
        pass "$name: $(got "$1" | jq -r -s --arg e "$2" --arg d "$3" \
            "[.[] | select(.event == \$e and (\$d == \"-\" or .device == \$d) and (${4:-true}))] | last | .message" | cut -c1-150)"
    else
        fail "$name: no $2 for $3 at $1 within ${secs}s; got: $(got "$1" | jq -r .event | tr '\n' ' ')"
        echo "     | watch-devices: $(tail -n 5 "$WATCH_LOG" | tr '\n' '|')"
    fi
}

set_conf() { # set_conf NAME VALUE: replace or add a server.conf line
    sed -i "/^$1 *=/d" /etc/phonehome/server.conf
    printf '%s = %s\n' "$1" "$2" >>/etc/phonehome/server.conf
}

# Block (or allow again) new connections from the devices' LANs to the server's sshd.
cut_off() { in_ns gw iptables -I FORWARD -p tcp --dport 22 -m conntrack --ctstate NEW -j REJECT --reject-with tcp-reset; }
reconnect() { in_ns gw iptables -D FORWARD -p tcp --dport 22 -m conntrack --ctstate NEW -j REJECT --reject-with tcp-reset; }

# A listener on 127.0.0.1 and [::1] of PORT in the server namespace (the whole port).
squat() {
    ip netns exec srv python3 -c '
import socket, sys, time
p = int(sys.argv[1])
a = socket.socket(); a.bind(("127.0.0.1", p)); a.listen()
b = socket.socket(socket.AF_INET6); b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
b.bind(("::1", p)); b.listen()
time.sleep(600)' "$1" &
    echo $! >"$RX/squat.pid"
    wait_until 5 tcp_open srv 127.0.0.1 "$1"
}

# --- the lab -------------------------------------------------------------------------

step "lab: server, dev1 (dbclient) behind NAT, receivers, watch-devices as a service"
lab_up dbclient || exit 1
make_cas || { fail "openssl could not make the throwaway CAs"; finish; exit 1; }
echo ok >"$RX/mode"
receiver_start || { fail "the HTTPS receiver did not start: $(cat "$RX/receiver.err")"; finish; exit 1; }
ip netns exec srv python3 "$E2E_DIR/receiver.py" --port $NTFY --log "$RX/ntfy.log" 2>>"$RX/receiver.err" &
wait_until 10 tcp_open srv 127.0.0.1 $NTFY
mkdir -p "$LAB/metrics"
cat >>/etc/phonehome/server.conf <<EOF
webhook = https://127.0.0.1:$HTTPS/hook secret=$RX/hook.secret ca=$RX/ca.pem
webhook = https://127.0.0.1:$HTTPS/wrong-ca ca=$RX/other.pem
webhook = http://127.0.0.1:$NTFY/phonehome format=ntfy
webhook_retry_max = 2
metrics_file = $LAB/metrics/phonehome.prom
EOF
out=$(in_ns srv watch-devices --check 2>&1)
wrong=$(grep -n '/wrong-ca' /etc/phonehome/server.conf | cut -d: -f1)
case $out in
*"webhook on line $wrong "*"FAILED: TLS failure"*"UnknownIssuer"*"not signed by a CA this server trusts"*)
    pass "a wrong CA: --check says so: $(echo "$out" | grep -m1 'TLS failure' | cut -c1-170)" ;;
*) fail "a wrong CA: --check said: $out" ;;
esac
if echo "$out" | grep -q "127.0.0.1:$HTTPS/…), format json: ok, watch.test accepted (HTTP 200)"; then
    pass "--check: the right CA, watch.test accepted"
else
    fail "--check with the right CA: $out"
fi
ip netns exec srv watch-devices --interval 1 >"$WATCH_LOG" 2>&1 &
wait_until 10 grep -q 'first run' "$WATCH_LOG" || fail "watch-devices did not start: $(cat "$WATCH_LOG")"

# --- every event kind from a real change ---------------------------------------------------

step "device.added, device.online: enrolment and the first poll"
enrol dev1 || { fail "enrol dev1"; finish; exit 1; }
expect "device.added" 10 /hook device.added "$ID1"
agent_loop_start dev1
expect "device.online (first heartbeat)" $((3 * POLL + 10)) /hook device.online "$ID1" '.details.first == true'

step "tunnel.up, tunnel.failed, tunnel.closed"
in_ns srv forward-device-port "$ID1" 22:9876 --wait=30 >/dev/null 2>&1 || fail "forward 22:9876"
expect "tunnel.up on a request" 10 /hook tunnel.up "$ID1" '.details.remote == 9876'
agent_loop_stop dev1
wait_until 20 no_poll_running dev1
in_ns srv forward-device-port "$ID1" 22:9877 >/dev/null 2>&1 || fail "forward 22:9877"
squat 9877
agent_loop_start dev1
expect "tunnel.failed: a port taken on the server, with the device's reason" $((4 * POLL + 10)) \
    /hook tunnel.failed "$ID1" '.details.remote == 9877 and (.details.reason | test("9877|forward"; "i"))'
kill "$(cat "$RX/squat.pid")" 2>/dev/null
in_ns srv forward-device-port "$ID1" --close 9877 >/dev/null 2>&1
in_ns srv forward-device-port "$ID1" --close 9876 >/dev/null 2>&1
expect "tunnel.closed when withdrawn" 10 /hook tunnel.closed "$ID1" '.details.remote == 9876 and .details.reason == "withdrawn"'
in_ns srv forward-device-port "$ID1" 22:9878 --ttl 6s --wait=20 >/dev/null 2>&1 || fail "forward 22:9878 --ttl 6s"
expect "tunnel.closed when expired" 20 /hook tunnel.closed "$ID1" '.details.remote == 9878 and .details.reason == "expired"'

step "device.offline, then device.online and agent.error, with the receiver down meanwhile"
receiver_stop
cut_off
t_cut=$(date +%s)
if wait_until $((3 * POLL + 20)) grep -q "device.offline.*$ID1" "$WATCH_LOG"; then
    took=$(($(date +%s) - t_cut))
    pass "device.offline detected ${took}s after dev1 was cut off (offline_after $((3 * POLL))s + polls)"
else
    fail "no device.offline for dev1: $(tail -n 5 "$WATCH_LOG")"
fi
hook=$(grep -n '/hook ' /etc/phonehome/server.conf | cut -d: -f1)
if wait_until 15 grep -q "line $hook .*FAILED: cannot connect.*kept" "$WATCH_LOG"; then
    pass "the receiver is down: $(grep "line $hook .*FAILED: cannot connect" "$WATCH_LOG" | tail -n1 | cut -c1-170)"
else
    fail "the receiver is down, but watch-devices said: $(grep "line $hook " "$WATCH_LOG" | tail -n 3)"
fi
reconnect
wait_until $((3 * POLL + 10)) grep -q "agent.error.*$ID1" "$WATCH_LOG" ||
    fail "no agent.error after dev1 came back: $(tail -n 5 "$WATCH_LOG")"
before=$(got /hook | wc -l)
receiver_start || fail "the receiver did not come back"
expect "device.offline (within offline_after + one run of the last heartbeat)" 15 /hook device.offline "$ID1" \
    "(.time_unix - (.details.last_seen | fromdateiso8601)) <= $((3 * POLL + 3))"
expect "device.online again" 15 /hook device.online "$ID1" '.details.first == false'
expect "agent.error: the poll error the device reported" 15 /hook agent.error "$ID1" '.details.error | test("poll failed")'
after=$(got /hook | wc -l)
pass "the receiver was down: $((after - before)) events arrived when it came back"

step "key.refused: a wrong key for dev2's account, three times"
register dev2 || fail "register dev2"
ssh-keygen -q -t ed25519 -N '' -f "$RX/wrong_key"
for _ in 1 2 3; do
    in_ns srv ssh -F /dev/null -i "$RX/wrong_key" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        "device$ID2@127.0.0.1" poll </dev/null >/dev/null 2>&1
done
expect "key.refused" 20 /hook key.refused "$ID2" '.details.count >= 3'

step "device.removed"
in_ns srv remove-device "$ID2" >/dev/null 2>&1 || fail "remove-device dev2"
expect "device.removed" 10 /hook device.removed "$ID2"

# --- delivery ------------------------------------------------------------------------

step "in order, once, signed; ntfy format; metrics"
ids=$(got /hook | jq -r 'select(.event != "watch.test") | .id')
n=$(echo "$ids" | wc -l)
if [ "$n" -ge 12 ] && [ "$(echo "$ids" | sort -u | wc -l)" = "$n" ] &&
    [ "$(echo "$ids" | sed 's/.*-//' | sort -c 2>&1)" = "" ]; then
    pass "threat 42: $n events at /hook, each once, in the order of their ids"
else
    fail "threat 42: ids at /hook not once and in order: $(echo "$ids" | tr '\n' ' ')"
fi
kinds=$(got /hook | jq -r .event | sort -u | tr '\n' ' ')
pass "event kinds received: $kinds"
if jq -e -s 'map(select(.path == "/hook")) | length > 0 and all(.signature_ok == true)' "$RX/https.log" >/dev/null; then
    pass "every X-Phonehome-Signature-256 verified by the receiver (HMAC-SHA256 in Python)"
else
    fail "a signature did not verify: $(jq -c 'select(.signature_ok != true) | .signature' "$RX/https.log" | head -n 3)"
fi
if jq -e -s "map(select(.event == \"device.offline\")) | .[0] | .priority == \"4\" and (.title | test(\"$ID1\")) and (.body | test(\"is offline\"))" "$RX/ntfy.log" >/dev/null; then
    pass "ntfy format over plain http to loopback: $(jq -r 'select(.event == "device.offline") | .title + " / " + .body' "$RX/ntfy.log" | head -n1 | cut -c1-140)"
else
    fail "ntfy: $(head -c 600 "$RX/ntfy.log")"
fi
prom=$LAB/metrics/phonehome.prom
if grep -q "^phonehome_device_up{device=\"$ID1\",alias=\"dev1\"} 1$" "$prom" &&
    grep -q "^phonehome_agent_info{device=\"$ID1\",alias=\"dev1\",version=\"[^\"]*\",client=\"dbclient" "$prom"; then
    pass "metrics_file: $(grep -m1 '^phonehome_agent_info' "$prom")"
else
    fail "metrics_file: $(head -n 20 "$prom" 2>&1)"
fi

step "a wrong CA: events kept, delivered in order once the CA is right"
queued=$(sed -n "s/^phonehome_webhook_queued_events{line=\"$wrong\",host=\"127.0.0.1\"} //p" "$prom")
if [ "${queued:-0}" -ge "$n" ]; then
    pass "wrong CA: $queued events kept in its outbox ($(grep -m1 "line $wrong .*FAILED" "$WATCH_LOG" | cut -c1-150))"
else
    fail "wrong CA: queued '$queued', expected at least $n: $(grep phonehome_webhook "$prom")"
fi
sed -i "s#/wrong-ca ca=$RX/other.pem#/wrong-ca ca=$RX/ca.pem#" /etc/phonehome/server.conf
caught_up() { [ "$(got /wrong-ca | wc -l)" -ge "$n" ]; }
if wait_until 20 caught_up; then
    if [ "$(got /wrong-ca | jq -r 'select(.event != "watch.test") | .id' | head -n "$n")" = "$ids" ]; then
        pass "after the CA fix: the same $n events, same ids, same order"
    else
        fail "after the CA fix: other events or order: $(got /wrong-ca | jq -r .id | tr '\n' ' ')"
    fi
else
    fail "after the CA fix: $(got /wrong-ca | wc -l) of $n events arrived"
fi

step "a full queue: the oldest dropped, and counted"
set_conf webhook_queue 3
echo fail >"$RX/mode"
sleep 2
mark=$(got /hook | wc -l)
for i in 1 2 3 4 5; do
    ssh-keygen -q -t ed25519 -N '' -C "extra$i" -f "$RX/extra$i"
    in_ns srv add-device "02000000aa0$i" "$(cut -d' ' -f1,2 "$RX/extra$i.pub")" >/dev/null 2>&1 || fail "add-device extra $i"
done
wait_until 10 grep -q "queue full" "$WATCH_LOG"
sleep 2
echo ok >"$RX/mode"
if wait_until 20 has /hook device.added 02000000aa05; then
    tail=$(got /hook | tail -n +"$((mark + 1))" | jq -r '.event + " " + (.device // "-") + " " + ((.details.count // "") | tostring)')
    first=$(echo "$tail" | grep -v '^watch.test' | head -n1)
    case $first in
    "watch.dropped - "*) pass "threat 42: a full queue: '$first' arrives first, then: $(echo "$tail" | tail -n 2 | tr '\n' ';')" ;;
    *) fail "threat 42: after a full queue got: $(echo "$tail" | tr '\n' ';')" ;;
    esac
else
    fail "after the queue was full, the newest event never arrived: $(got /hook | tail -n 4 | jq -r .event | tr '\n' ' ')"
fi

agent_loop_stop dev1
finish
