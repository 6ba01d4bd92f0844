#!/usr/bin/env bash
# The narrated demo (`./install.sh demo`): a router behind NAT calls home, shows up in
# list-devices, gets asked for a tunnel, and an admin logs into it through that tunnel;
# then it goes dark, and watch-devices' alert reaches a webhook receiver.
# It runs in the same private sandbox as the tests: nothing is left behind.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
lab_enter_sandbox "$0" "$@"

ID=$(dev_id dev1)
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
[ -t 1 ] || say() { printf '\n%s\n' "$*"; }
# on_server CMD...: print the command as the admin types it on the server, run it there.
on_server() {
    printf '  server# %s\n' "$*"
    in_ns srv "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}

# through_tunnel PORT CMD...: the admin, on the server, logs into the device via PORT.
through_tunnel() {
    local port=$1
    shift
    printf '  server# ssh -p %s root@localhost %s\n' "$port" "$*"
    admin_ssh dev1 "$port" "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}
die() {
    printf '\ndemo: %s\n' "$*" >&2
    show_logs >&2
    exit 1
}

say "phonehome demo: a router nobody can reach calls home, and an admin logs into it."
cat <<EOF
  Everything below happens in a private sandbox on this machine: its own network
  namespaces, its own /etc (users, sshd config), its own processes. When the demo
  ends, all of it disappears.

  the internet:  server  $SRV_IP       (real OpenSSH sshd)
  a home router:  NAT     $GW_WAN_IP -> 10.0.1.0/24
  behind it:      device  10.0.1.2           (dropbear, like OpenWrt; the phonehome agent)
EOF

say "1. Building the little world and installing the server with server-scripts/install-server.sh"
lab_up dbclient || die "the lab did not come up"
echo "  sshd runs on the server; dropbear listens on the device's own 127.0.0.1:22."

say "2. The server cannot reach the device: it is behind NAT."
printf '  server# (connect to 10.0.1.2:22) ... '
if tcp_open srv 10.0.1.2 22; then echo "connected?!"; else echo "no route through the NAT, as expected."; fi

say "3. The device has a key. On the server, the admin registers it:"
printf '  server# add-device %s "%s" --name garden-router\n' "$ID" "$(cat "$LAB/dev1/id.pub")"
in_ns srv add-device "$ID" "$(cat "$LAB/dev1/id.pub")" --name garden-router >"$LAB/dev1/add.out" 2>&1 ||
    die "add-device failed: $(cat "$LAB/dev1/add.out")"
sed 's/^/    /' "$LAB/dev1/add.out"

say "4. On the device, the line add-device printed configures the agent (pinning the server's host keys):"
device_setup dev1 || die "the setup line failed on the device"
printf '  device# %s\n' "$(cut -c1-150 "$LAB/dev1/setup.line")..."
echo "  then cron runs 'phonehome poll' (here: every ${POLL}s instead of every minute)."
agent_loop_start dev1

say "5. The device calls home. On the server:"
wait_until $((3 * POLL + 10)) grep -q "Accepted publickey for device$ID" "$SSHD_LOG" ||
    die "the device never logged in"
sleep 1
on_server list-devices
echo "  sshd's log: $(grep -m1 "Accepted publickey for device$ID" "$SSHD_LOG" | cut -c1-90)..."
echo "  It came from $GW_WAN_IP: the router's public address, not the device's."

say "6. The admin asks the device for a tunnel to its ssh port, and waits until it is up:"
t0=$(date +%s%N)
on_server forward-device-port "$ID" 22:9876 --wait=60 || die "the tunnel did not open"

say "7. The admin logs into the device through the tunnel and runs a command there:"
through_tunnel 9876 ip -o -4 addr show dev eth0 || die "the login through the tunnel failed"
through_tunnel 9876 ip route show default || die "the login through the tunnel failed"
t1=$(date +%s%N)
echo "  (from request to a shell on the device: $(((t1 - t0) / 1000000)) ms)"

say "8. Done: the admin closes the tunnel. At the device's next poll it is gone:"
on_server forward-device-port "$ID" --close 9876 || die "--close failed"
if wait_until $((2 * POLL + 10)) port_free 9876; then
    echo "  port 9876 on the server: closed."
else
    die "the tunnel is still open"
fi
on_server list-devices

say "9. Alerts: watch-devices (cron runs it every minute) tells the admin's webhooks when a device"
echo "   goes dark, comes back, or a tunnel fails. Here the receiver is a small web server on the"
echo "   server's loopback; in real life Slack, ntfy or your own (server-scripts/README.md)."
ip netns exec srv python3 "$E2E_DIR/receiver.py" --port 9000 --log "$LAB/alerts.log" 2>/dev/null &
wait_until 10 tcp_open srv 127.0.0.1 9000 || die "the receiver did not start"
printf '  server# echo "webhook = http://127.0.0.1:9000/alerts" >>/etc/phonehome/server.conf\n'
echo "webhook = http://127.0.0.1:9000/alerts" >>/etc/phonehome/server.conf
on_server watch-devices --once || die "watch-devices failed"

say "10. The router loses power: its agent stops calling home. After offline_after (3 polls, here"
echo "   $((3 * POLL)) s) the next run of watch-devices sends the alert:"
agent_loop_stop dev1
deadline=$((SECONDS + 3 * POLL + 20))
until grep -q '"device.offline"' "$LAB/alerts.log" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "no alert arrived"
    in_ns srv watch-devices --once >"$LAB/watch.out" 2>&1
    sleep 1
done
printf '  server# watch-devices --once\n'
sed 's/^/    /' "$LAB/watch.out"
echo "  What the receiver got (POST /alerts, X-Phonehome-Event: device.offline):"
jq -r 'select(.event == "device.offline") | .body' "$LAB/alerts.log" | jq . | sed 's/^/    /'

say "That's phonehome. Leaving the sandbox now: every process, user and namespace goes with it."
