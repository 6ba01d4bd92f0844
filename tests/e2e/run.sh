#!/usr/bin/env bash
# The whole story of issue 4, scenarios 1-10, on real parts: the project's installer
# sets up the real sshd in a server namespace; two devices behind a NAT gateway run the
# agent from a cron-like loop with a real ssh client and a real dropbear for the admin;
# the admin reaches a device only through its tunnel.
# Usage: tests/e2e/run.sh [--client dbclient|ssh]   (root; its own sandbox; leaves nothing)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=stolen.sh
. "$(dirname "$0")/stolen.sh"
lab_enter_sandbox "$0" "$@"

client_option "$0" "$@"
ID1=$(dev_id dev1)
ID2=$(dev_id dev2)

# --- helpers of these scenarios ----------------------------------------------------

# One request: forward-device-port ID SPEC --wait, output in $LAB/fwd.out.
forward() {
    in_ns srv timeout 90 forward-device-port "$@" >"$LAB/fwd.out" 2>&1
}

# The effective ClientAlive bound for a device login, from sshd -T (seconds).
client_alive_bound() {
    local t
    t=$(in_ns srv /usr/sbin/sshd -T -f /etc/ssh/sshd_config \
        -C "user=device$ID1,host=gw,addr=$GW_WAN_IP" 2>/dev/null |
        awk '$1=="clientaliveinterval"{i=$2} $1=="clientalivecountmax"{c=$2} END{print i*c}')
    echo "${t:-0}"
}

LATENCIES=()
# request_and_login DEV ID LOCAL:REMOTE: time from forward-device-port to a login.
request_and_login() {
    local dev=$1 id=$2 spec=$3 remote=${3#*:} t0 t1 out
    t0=$(date +%s%N)
    if ! forward "$id" "$spec" --wait=60; then
        fail "forward-device-port $id $spec --wait: $(cat "$LAB/fwd.out")"
        return 1
    fi
    if ! wait_until 30 admin_reaches "$dev" "$remote"; then
        out=$(admin_ssh "$dev" "$remote" true 2>&1)
        fail "admin login to $dev through $remote after --wait: $out"
        return 1
    fi
    t1=$(date +%s%N)
    LATENCIES+=($(((t1 - t0) / 1000000)))
    return 0
}

step "lab: sandbox, NAT, server installed by server-scripts/install-server.sh, client $CLIENT"
lab_up "$CLIENT" || exit 1
pass "lab is up (sshd on $SRV_IP:22, dropbear on dev1 and dev2 127.0.0.1:22)"

# The NAT must really hold, or "through the tunnel" proves nothing.
mkdir -p "$LAB/dev1/www" && echo dev1-lan >"$LAB/dev1/www/index.html"
ip netns exec dev1 busybox httpd -f -p 0.0.0.0:2280 -h "$LAB/dev1/www" &
wait_until 5 tcp_open dev1 10.0.1.2 2280
check "NAT: the gateway reaches dev1's LAN service (control)" tcp_open gw 10.0.1.2 2280
check_not "NAT: the server cannot open TCP to dev1 (10.0.1.2:2280)" tcp_open srv 10.0.1.2 2280
check_not "NAT: the server cannot open TCP to dev1's ssh (10.0.1.2:22)" tcp_open srv 10.0.1.2 22
check "NAT: dev1 reaches the server's sshd" tcp_open dev1 $SRV_IP 22

# --- 1 ---------------------------------------------------------------------------
step "1. enrol dev1: add-device, the printed setup line, a poll loop"
if enrol dev1; then pass "1 add-device printed a setup line; it ran on dev1: $(cut -c1-60 "$LAB/dev1/setup.line")..."; else fail "1 enrol dev1"; fi
out=$(in_ns dev1 "$BIN_DIR/phonehome" --interface eth0 id 2>&1)
if [ "$out" = "$ID1" ]; then pass "1 phonehome id on dev1 = its MAC $ID1"; else fail "1 phonehome id: expected $ID1, got: $out"; fi
agent_loop_start dev1
if wait_until $((3 * POLL + 10)) state_is "$ID1" online; then
    pass "1 dev1 is online in list-devices"
else
    fail "1 dev1 not online in list-devices: $(in_ns srv list-devices 2>&1 | head -5)"
fi
if grep -q "^Accepted publickey for device$ID1 from $GW_WAN_IP " "$SSHD_LOG"; then
    pass "1 sshd logged the login from the NAT address $GW_WAN_IP"
else
    fail "1 no 'Accepted publickey for device$ID1 from $GW_WAN_IP' in the sshd log"
fi
from=$(dev_field "$ID1" from)
if [ "$from" = "$GW_WAN_IP" ]; then pass "1 list-devices shows dev1 calling from the NAT address"; else fail "1 list-devices 'from' is '$from'"; fi
if in_ns srv list-devices --json | jq -e '.sources | index("/var/log/auth.log")' >/dev/null; then
    pass "1 list-devices read the sshd log (/var/log/auth.log) as a heartbeat source"
else
    fail "1 list-devices did not read /var/log/auth.log: $(in_ns srv list-devices --json | jq -c .sources)"
fi
# The log's lines carry this server's own host name, so they count (THREATS 28).
if in_ns srv list-devices --json | jq -e '[.notes[] | select(test("other hosts"))] | length == 0' >/dev/null; then
    pass "1 list-devices counts the sshd lines of this host"
else
    fail "1 list-devices ignored this host's sshd lines: $(in_ns srv list-devices --json | jq -c .notes)"
fi
table=$(in_ns srv list-devices 2>&1)
printf '%s\n' "$table" | sed 's/^/     | /'

# --- 2 and 10 ----------------------------------------------------------------------
step "2. forward-device-port $ID1 22:9876 --wait, then the admin logs in through 9876"
if request_and_login dev1 "$ID1" 22:9876; then
    pass "2 admin logged into dev1 through 9876 and saw 10.0.1.2 ($((LATENCIES[-1])) ms after the request)"
fi
if grep -q -- "-p 9876" "$LAB/fwd.out"; then pass "2 forward-device-port printed how to connect"; else fail "2 no '-p 9876' hint in: $(cat "$LAB/fwd.out")"; fi
owner=$(srv_listeners 9876)
case $owner in
*sshd*) pass "2 the listener on 9876 is the device's sshd session" ;;
*) fail "2 listener on 9876: '$owner'" ;;
esac

# --- 3 ---------------------------------------------------------------------------
step "3. --close, and TTL expiry"
out=$(in_ns srv forward-device-port "$ID1" --close 9876 2>&1) || fail "3 --close 9876: $out"
if wait_until $((2 * POLL + 10)) port_free 9876; then
    pass "3 after --close, port 9876 is free within a poll"
else
    fail "3 port 9876 still held after --close: $(srv_listeners 9876)"
fi
check_not "3 the admin can no longer log in through 9876" admin_reaches dev1 9876
if wait_until 5 no_tunnel 9876; then pass "3 the device's tunnel process is gone"; else fail "3 tunnel process still running: $(tunnel_pid 9876)"; fi
if forward "$ID1" 22:9877 --ttl 6s --wait=60; then
    pass "3 a request with --ttl 6s opened"
    if wait_until $((6 + 3 * POLL + 10)) port_free 9877; then
        pass "3 the request expired: port 9877 free within a poll of the TTL"
    else
        fail "3 port 9877 still held after its TTL"
    fi
else
    fail "3 forward-device-port --ttl 6s: $(cat "$LAB/fwd.out")"
fi

# --- 4 ---------------------------------------------------------------------------
step "4. the tunnel dies: killed, frozen, NAT mapping dropped"
ALIVE=$(client_alive_bound)
echo "     (sshd frees a dead client's port after ClientAliveInterval x CountMax = ${ALIVE}s)"
if [ "$ALIVE" -gt 0 ]; then
    pass "4 sshd has a ClientAlive bound for device logins (${ALIVE}s)"
else
    fail "4 no ClientAliveInterval for device logins: dead tunnels hold their port for hours"
fi
if request_and_login dev1 "$ID1" 22:9876; then
    old=$(tunnel_pid 9876)
    kill -9 "$old"
    if wait_until $((2 * POLL + 15)) admin_reaches dev1 9876 && [ "$(tunnel_pid 9876)" != "$old" ]; then
        pass "4 SIGKILL of the tunnel: reopened within a poll"
    else
        fail "4 the tunnel did not come back after SIGKILL"
    fi
    old=$(tunnel_pid 9876)
    old_session=$(srv_listeners 9876 | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)
    kill -STOP "$old"
    if wait_until $((ALIVE + 3 * POLL + 20)) admin_reaches dev1 9876 && [ "$(tunnel_pid 9876)" != "$old" ]; then
        pass "4 SIGSTOP of the tunnel: a new tunnel serves within ClientAlive + a poll"
    else
        fail "4 the tunnel did not come back after SIGSTOP (old pid $old)"
    fi
    if [ -n "$old_session" ] && proc_gone "$old_session"; then
        pass "4 the server ended the frozen client's session (sshd pid $old_session) and freed its port"
    else
        fail "4 the frozen client's sshd session '$old_session' is still there"
    fi
    if ! proc_gone "$old"; then
        fail "4 the frozen tunnel process $old was left behind"
        kill -9 "$old" 2>/dev/null
    else
        pass "4 the frozen tunnel process was cleaned up"
    fi
    # Drop everything between dev1 and the world for a while, and forget the NAT state.
    old=$(tunnel_pid 9876)
    in_ns gw iptables -I FORWARD 1 -i gw-lan1 -j DROP
    in_ns gw iptables -I FORWARD 1 -o gw-lan1 -j DROP
    in_ns gw conntrack -F >/dev/null 2>&1
    sleep 10
    in_ns gw iptables -D FORWARD -i gw-lan1 -j DROP
    in_ns gw iptables -D FORWARD -o gw-lan1 -j DROP
    in_ns gw conntrack -F >/dev/null 2>&1
    if wait_until $((ALIVE + 3 * POLL + 20)) admin_reaches dev1 9876; then
        pass "4 network drop + NAT mapping lost: the tunnel serves again (pid $old -> $(tunnel_pid 9876))"
    else
        fail "4 no tunnel after the network came back"
    fi
fi

# --- 6 ---------------------------------------------------------------------------
step "6. another process holds the requested port"
ip netns exec srv busybox httpd -f -p 127.0.0.1:9890 -h "$LAB/dev1/www" &
squatter=$!
wait_until 5 tcp_open srv 127.0.0.1 9890
t0=$SECONDS
rc=0
forward "$ID1" 22:9890 --wait=30 || rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -qi '9890' "$LAB/fwd.out"; then
    pass "6 --wait on a held port fails in $((SECONDS - t0))s with: $(head -n1 "$LAB/fwd.out")"
else
    fail "6 --wait on a held port: exit $rc: $(cat "$LAB/fwd.out")"
fi
case $(http_get srv 9890) in
*dev1-lan*) pass "6 the squatter still owns 9890" ;;
*) fail "6 the squatter on 9890 no longer answers" ;;
esac
kill "$squatter"
wait "$squatter" 2>/dev/null
# The same, but the listener appears after the request was accepted and while --wait
# waits (the agent's forward then binds only [::1]: sshd reports success).
agent_loop_stop dev1
wait_until 20 no_poll_running dev1
in_ns srv timeout 90 forward-device-port "$ID1" 22:9895 --wait=30 >"$LAB/fwd-late.out" 2>&1 &
waiter=$!
wait_until 10 grep -q 'waiting up to' "$LAB/fwd-late.out"
ip netns exec srv busybox httpd -f -p 127.0.0.1:9895 -h "$LAB/dev1/www" &
squatter=$!
wait_until 5 tcp_open srv 127.0.0.1 9895
agent_loop_start dev1
rc=0
wait "$waiter" || rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q '127.0.0.1' "$LAB/fwd-late.out"; then
    pass "6 a listener that appears during --wait: fails with: $(tail -n1 "$LAB/fwd-late.out")"
else
    fail "6 a listener that appears during --wait: exit $rc: $(cat "$LAB/fwd-late.out")"
fi
kill "$squatter"
wait "$squatter" 2>/dev/null
in_ns srv forward-device-port "$ID1" --close 9895 >/dev/null 2>&1

# --- 9 ---------------------------------------------------------------------------
step "9. two devices, several tunnels each"
if enrol dev2; then pass "9 dev2 enrolled"; else fail "9 enrol dev2"; fi
agent_loop_start dev2
wait_until $((3 * POLL + 10)) state_is "$ID2" online || fail "9 dev2 not online: $(dev_state "$ID2")"
request_and_login dev1 "$ID1" 22:9878 && pass "9 dev1 second tunnel 9878"
request_and_login dev2 "$ID2" 22:9880 && pass "9 dev2 tunnel 9880"
request_and_login dev2 "$ID2" 22:9881 && pass "9 dev2 tunnel 9881"
for p in 9876 9878; do check "9 port $p lands on dev1 (its host key, 10.0.1.2)" admin_reaches dev1 $p; done
for p in 9880 9881; do check "9 port $p lands on dev2 (its host key, 10.0.2.2)" admin_reaches dev2 $p; done
if out=$(in_ns srv forward-device-port "$ID2" 22:9876 2>&1); then
    fail "9 dev1's port 9876 was granted to dev2 too: $out"
else
    pass "9 dev1's port refused to dev2: $(echo "$out" | head -n1)"
fi
in_ns srv forward-device-port "$ID2" --close 9880 >/dev/null 2>&1
wait_until $((2 * POLL + 10)) port_free 9880 || fail "9 9880 not closed"
for p in 9876 9878; do check "9 closing dev2's 9880 left dev1's $p alone" admin_reaches dev1 $p; done
check "9 closing dev2's 9880 left dev2's 9881 alone" admin_reaches dev2 9881
# THREATS 17: ticks that overlap (three at once, beside the loop's own) never give two
# tunnel processes for one request.
for _ in 1 2 3; do agent dev1 poll >>"$LAB/dev1/overlap.log" 2>&1 & done
wait_until 30 no_poll_running dev1
n=$(pgrep -fc -- "-R localhost:9876:127.0.0.1:")
if [ "$n" = 1 ]; then pass "9 (THREATS 17) overlapping ticks: one tunnel process for 22:9876"; else fail "9 (THREATS 17) $n tunnel processes for 22:9876"; fi
check "9 (THREATS 17) the tunnel still serves after the overlap" admin_reaches dev1 9876

# --- 7 ---------------------------------------------------------------------------
step "7. a stolen device key (dev2's) from the server's loopback"
secret_service_start || fail "7 setup: loopback service"
case $(http_get srv 18080) in
*"$SECRET"*) pass "7 control: the server's loopback service answers on the server" ;;
*) fail "7 control: the server's loopback service does not answer" ;;
esac
# shellcheck disable=SC2016 # the marker is for the remote shell
t1_command dev2 "7 (THREATS 1) shell command" 'echo PWNED-$((6*7))'
t1_pty dev2
t1_local_forward dev2
secret_service_stop
# A port requested for dev1 but not yet opened (dev1's loop paused): dev2's key must
# not get it, with any listen host.
agent_loop_stop dev1
wait_until 20 no_poll_running dev1
out=$(in_ns srv forward-device-port "$ID1" 22:9879 2>&1) || fail "7 setup: forward-device-port $ID1 22:9879: $out"
for host in localhost 127.0.0.1 0.0.0.0; do
    t2_refused dev2 "7 (THREATS 2) dev1's requested port 9879 with dev2's key, host $host" 9879 "$host:9879:127.0.0.1:22"
done
t2_refused dev2 "7 (THREATS 2) an unrequested port" 9899 "localhost:9899:127.0.0.1:22"
agent_loop_start dev1

# --- 5 ---------------------------------------------------------------------------
step "5. the server restarts, then stops for a while"
sshd_stop
sshd_start || fail "5 sshd did not restart"
mark=$(wc -l <"$SSHD_LOG")
if wait_until $((3 * POLL + 10)) bash -c "tail -n +$mark '$SSHD_LOG' | grep -q 'Accepted publickey for device$ID1 '"; then
    pass "5 dev1 polls again after an sshd restart"
else
    fail "5 no poll from dev1 after the restart"
fi
check "5 dev1's tunnel serves after the restart" wait_until $((3 * POLL + 15)) admin_reaches dev1 9876
# Stop: the listener and every session (what a reboot does).
sshd_stop
mapfile -t sessions < <(pgrep -x 'sshd|sshd-session|sshd-auth')
[ "${#sessions[@]}" -gt 0 ] && kill "${sessions[@]}"
if wait_until 60 state_is "$ID1" stale; then
    pass "5 with the server down, dev1 turns stale in list-devices"
else
    fail "5 dev1 is '$(dev_state "$ID1")' with the server down, expected stale"
fi
if grep -q -- '--- exit 1' "$LAB/dev1/agent.log"; then pass "5 the agent's polls fail (exit 1) while the server is down"; else fail "5 no failed poll logged"; fi
sleep 3
sshd_start || fail "5 sshd did not start again"
if wait_until $((3 * POLL + 15)) state_is "$ID1" online; then pass "5 back online after the server returns"; else fail "5 not online again: $(dev_state "$ID1")"; fi
check "5 dev1's tunnel 9876 serves again" wait_until $((3 * POLL + 20)) admin_reaches dev1 9876
check "5 dev2's tunnel 9881 serves again" wait_until $((3 * POLL + 20)) admin_reaches dev2 9881

# --- 10 --------------------------------------------------------------------------
step "10. request -> tunnel latency"
for p in 9891 9892 9893; do request_and_login dev1 "$ID1" "22:$p"; done
if [ "${#LATENCIES[@]}" -gt 0 ]; then
    sorted=$(printf '%s\n' "${LATENCIES[@]}" | sort -n)
    median=$(echo "$sorted" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    worst=$(echo "$sorted" | tail -n1)
    pass "10 request -> login latency ($CLIENT, poll every ${POLL}s): median ${median} ms, worst ${worst} ms over ${#LATENCIES[@]} requests"
    echo "LATENCY client=$CLIENT poll=${POLL}s n=${#LATENCIES[@]} median_ms=$median worst_ms=$worst all_ms=${LATENCIES[*]}"
else
    fail "10 no request reached a login"
fi

# --- 8 ---------------------------------------------------------------------------
step "8. remove-device dev1 with tunnels open"
check "8 setup: dev1's tunnel 9876 is open" admin_reaches dev1 9876
out=$(in_ns srv remove-device "$ID1" 2>&1) || fail "8 remove-device $ID1: $out"
if wait_until 10 port_free 9876 9878; then
    pass "8 remove-device cut dev1's open tunnels"
else
    fail "8 still listening after remove-device: $(srv_listeners 9876) $(srv_listeners 9878)"
fi
check_not "8 the admin can no longer reach dev1" admin_reaches dev1 9876
out=$(thief dev1 "device$ID1@127.0.0.1" poll </dev/null 2>&1)
case $out in
*"Permission denied"*) pass "8 dev1's key no longer logs in" ;;
*) fail "8 dev1's key after remove-device: $out" ;;
esac
sleep $((POLL + 2))
if [ -z "$(srv_listeners 9876)" ]; then pass "8 the device's next polls do not bring the tunnel back"; else fail "8 9876 is back"; fi
check "8 dev2 is untouched: 9881 still serves" admin_reaches dev2 9881

# --- THREATS 16 ------------------------------------------------------------------
step "THREATS 16: the server's host keys change (dev2 pinned the old ones)"
sshd_stop
mapfile -t sessions < <(pgrep -x 'sshd|sshd-session|sshd-auth')
[ "${#sessions[@]}" -gt 0 ] && kill "${sessions[@]}"
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A >/dev/null
sshd_start || fail "THREATS 16 sshd did not start with its new keys"
mark=$(wc -l <"$LAB/dev2/agent.log")
hostkey_refused() { tail -n +"$mark" "$LAB/dev2/agent.log" | grep -qi 'host key'; }
if wait_until $((3 * POLL + 40)) hostkey_refused; then
    pass "THREATS 16 dev2's poll fails and says why: $(tail -n +"$mark" "$LAB/dev2/agent.log" | grep -i -m1 'host key' | cut -c1-140)"
else
    fail "THREATS 16 no host key error from dev2's agent: $(tail -n 5 "$LAB/dev2/agent.log")"
fi
sleep $((POLL + 2))
# dbclient 2022.83 spins forever on an unknown host key without a tty: the agent must
# kill it at its timeout (15 s here). No client of dev2 may be older than that.
stuck=''
for pid in $(pgrep -f -- "device$ID2@$SRV_IP"); do
    age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
    [ -n "$age" ] && [ "$age" -gt 17 ] && stuck+="$pid(${age}s) "
done
if [ -z "$stuck" ]; then pass "THREATS 16 no ssh client of dev2 outlives the agent's timeout"; else fail "THREATS 16 stuck clients: $stuck"; fi
check_not "THREATS 16 no tunnel reopened to the server with the changed key" admin_reaches dev2 9881
if ! grep -q "Accepted publickey for device$ID2 " <(tail -n +"$(grep -n 'Server listening' "$SSHD_LOG" | tail -n1 | cut -d: -f1)" "$SSHD_LOG"); then
    pass "THREATS 16 dev2 never authenticated to the server with the changed key"
else
    fail "THREATS 16 dev2 logged in although the host key changed"
fi

agent_loop_stop dev1
agent_loop_stop dev2
finish
