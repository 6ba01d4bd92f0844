#!/usr/bin/env bash
# The compatibility matrix, end to end: every cross-built agent (cross/build.sh; run
# under qemu-user with a real router's CPU model where the CPU is not this one) against
# every dropbear release OpenWrt ships (that release's dbclient as the agent's client,
# that release's dropbear as the device's own sshd) and against the OpenSSH client.
# Each cell is one device behind the lab's NAT: enrol with the line add-device prints,
# poll from a cron-like loop, a tunnel on request, an admin login through it landing on
# the device, the tunnel closed, then a poll with the server unreachable.
# Cells run a few at a time, each in its own network namespace; the table of outcomes
# goes to stdout and, with --table, to a markdown file.
#
# usage: tests/e2e/compat.sh [--arch ARCH]... [--dropbear DIR] [--no-openssh]
#                            [--jobs N] [--table FILE]
#   --arch      an arch of cross/lib.sh (default: all; each needs target/cross/<triple>/phonehome)
#   --dropbear  dir of built releases, DIR/<version>/{dbclient,dropbear,dropbearkey}
#               (default target/dropbear, made by cross/dropbear.sh)
# Root; its own sandbox; leaves nothing behind.
: "${PHONEHOME_E2E_POLL:=2}"
export PHONEHOME_E2E_POLL
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=cross/lib.sh
. "$REPO_DIR/cross/lib.sh"
lab_enter_sandbox "$0" "$@"

ARCHES=()
DROPBEAR_DIR=$REPO_DIR/target/dropbear
OPENSSH=1
JOBS=4
TABLE=''
while [ $# -gt 0 ]; do
    case $1 in
    --arch) ARCHES+=("$2"); shift 2 ;;
    --dropbear) DROPBEAR_DIR=$2; shift 2 ;;
    --no-openssh) OPENSSH=''; shift ;;
    --jobs) JOBS=$2; shift 2 ;;
    --table) TABLE=$2; shift 2 ;;
    *) sed -n '12,17p' "$0" >&2; exit 2 ;;
    esac
done
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=("${CROSS_ARCHES[@]}")

# --- what the cells are ---------------------------------------------------------------

# Clients: "dbclient:VERSION" for each built release, and "ssh".
CLIENTS=()
for d in "$DROPBEAR_DIR"/*/; do
    [ -x "$d/dbclient" ] && CLIENTS+=("dbclient:$(basename "$d")")
done
[ -n "$OPENSSH" ] && CLIENTS+=(ssh)

# dbclient_strict VERSION: the release knows -o StrictHostKeyChecking/BatchMode
# (dropbear's CHANGES: both arrived in 2024.84).
dbclient_strict() {
    local y=${1%%.*} n=${1#*.}
    [ "$y" -gt 2024 ] || { [ "$y" -eq 2024 ] && [ "$n" -ge 84 ]; }
}

# What the agent must report as its client for a cell's client.
expected_client() {
    case $1 in
    dbclient:*) echo "dbclient ${1#dbclient:}" ;;
    ssh) echo "ssh $(ssh -V 2>&1 | awk '{print $1}' | tr -d ,)" ;;
    esac
}

# --- one cell ---------------------------------------------------------------------------

# cell_net N: network namespace devN on its own LAN 10.0.N.0/24 behind the gateway.
cell_net() {
    local n=$1 dev=dev$1
    ip netns add "$dev" || return 1
    ip -n "$dev" link set lo up
    ip link add "gw-lan$n" netns gw type veth peer name eth0 netns "$dev" || return 1
    ip -n gw addr add "10.0.$n.1/24" dev "gw-lan$n"
    ip -n gw link set "gw-lan$n" up
    ip -n "$dev" link set eth0 address "$(printf '02:00:00:00:%02x:02' "$n")"
    ip -n "$dev" addr add "10.0.$n.2/24" dev eth0
    ip -n "$dev" link set eth0 up
    ip -n "$dev" route add default via "10.0.$n.1"
    ip netns exec gw iptables -A FORWARD -i "gw-lan$n" -o gw-wan -j ACCEPT
}

# A cell's step: one line in its log; `cell_fail` ends the cell with the reason.
cell_note() { printf '%s\n' "$*" >>"$CELL_D/cell.log"; }
cell_fail() {
    cell_note "FAIL $*"
    printf 'FAIL %s\n' "$*" >"$CELL_D/result"
    exit 1
}

# The agent of this cell, as its device runs it (under qemu where the CPU differs).
# Bounded: an agent that hangs (as the big-endian build did under qemu's netlink) must
# fail its cell, not stall the run.
cell_agent() {
    in_ns "$CELL_DEV" env PATH="$CELL_D/bin:$PATH" timeout 60 "$CELL_D/bin/phonehome" \
        --config "$CELL_D/phonehome.conf" "$@"
}

# The client named by the last status report the server stored for ID (fails if none).
cell_reported() {
    in_ns srv list-devices --json |
        jq -er --arg id "$1" '.devices[] | select(.id == $id) | .report.client // empty'
}

# No poll of this cell's agent is running (the loop may have been stopped mid-poll).
cell_no_poll() { ! pgrep -f -- "$CELL_D/phonehome.conf poll" >/dev/null; }

# cell_run N ARCH CLIENT: the whole scenario of one cell, in a subshell of its own.
cell_run() {
    local n=$1 arch=$2 client=$3
    CELL_DEV=dev$n
    CELL_D=$LAB/dev$n
    mkdir -p "$CELL_D/bin" "$CELL_D/run"
    : >"$CELL_D/cell.log"
    local id port=$((9700 + n)) version='' dbin=/usr/sbin t0=$SECONDS
    id=$(dev_id "$CELL_DEV")
    case $client in dbclient:*) version=${client#dbclient:} dbin=$DROPBEAR_DIR/$version ;; esac
    local dropbear=$dbin/dropbear dropbearkey=$dbin/dropbearkey
    [ -x "$dropbear" ] || dropbear=$(command -v dropbear)
    [ -x "$dropbearkey" ] || dropbearkey=$(command -v dropbearkey)

    cell_net "$n" || cell_fail "network namespace $CELL_DEV"
    # The agent: the cross build of ARCH, behind its runner.
    local agent runner
    agent=$(cross_agent_path "$arch")
    runner=$(cross_runner "$arch")
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$runner" "$agent" >"$CELL_D/bin/phonehome"
    chmod 0755 "$CELL_D/bin/phonehome"
    [ -n "$version" ] && ln -s "$dbin/dbclient" "$CELL_D/bin/dbclient"

    # The device's own sshd (the release's dropbear), which the admin reaches.
    "$dropbearkey" -t ed25519 -f "$CELL_D/dropbear_host_key" >/dev/null 2>&1 || cell_fail "dropbearkey (host key)"
    echo "$CELL_DEV $("$dropbearkey" -y -f "$CELL_D/dropbear_host_key" | grep '^ssh-' | cut -d' ' -f1,2)" \
        >"$CELL_D/admin_known_hosts"
    ip netns exec "$CELL_DEV" "$dropbear" -F -E -s -p 127.0.0.1:22 -r "$CELL_D/dropbear_host_key" \
        -P "$CELL_D/dropbear.pid" >"$CELL_D/dropbear.log" 2>&1 &
    local dropbear_pid=$!
    wait_until 10 tcp_open "$CELL_DEV" 127.0.0.1 22 || cell_fail "the device's dropbear did not listen: $(tail -n 3 "$CELL_D/dropbear.log")"

    # The device key, made the way that device makes it.
    local key cl=dbclient
    if [ -n "$version" ]; then
        key=$CELL_D/id_dropbear
        "$dropbearkey" -t ed25519 -f "$key" >/dev/null 2>&1 || cell_fail "dropbearkey (device key)"
        "$dropbearkey" -y -f "$key" | grep '^ssh-' | cut -d' ' -f1,2 >"$CELL_D/id.pub"
    else
        cl=ssh
        key=$CELL_D/id_openssh
        ssh-keygen -q -t ed25519 -N '' -C "$CELL_DEV" -f "$key" >/dev/null || cell_fail "ssh-keygen"
        cut -d' ' -f1,2 "$key.pub" >"$CELL_D/id.pub"
    fi

    # The agent reads the device id from eth0's MAC (on the emulated CPU too).
    local got
    got=$(in_ns "$CELL_DEV" timeout 20 "$CELL_D/bin/phonehome" --interface eth0 id 2>&1)
    [ "$got" = "$id" ] || cell_fail "phonehome id on $arch: expected $id, got: $got"
    cell_note "ok   phonehome id = $id (MAC of eth0)"

    # Enrol: add-device (one at a time: useradd locks /etc/passwd), then the printed line.
    flock "$LAB/register.lock" ip netns exec srv add-device "$id" "$(cat "$CELL_D/id.pub")" \
        --name "$CELL_DEV" >"$CELL_D/add.out" 2>&1 || cell_fail "add-device: $(cat "$CELL_D/add.out")"
    local line
    line=$(grep -m1 -o 'phonehome setup .*' "$CELL_D/add.out") || cell_fail "no setup line: $(cat "$CELL_D/add.out")"
    local -a words
    eval "words=($line)"
    cell_agent "${words[@]:1}" --run-dir "$CELL_D/run" --key "$key" \
        --known-hosts "$CELL_D/known_hosts" --device-id "$id" --client "$cl" \
        --timeout 15 --keepalive 2 --log stderr >"$CELL_D/setup.out" 2>&1 ||
        cell_fail "the setup line: $(cat "$CELL_D/setup.out")"

    # Polls from a cron-like loop.
    (
        while :; do
            echo "--- poll $(date +%T)"
            cell_agent poll
            echo "--- exit $?"
            sleep "$POLL"
        done
    ) >>"$CELL_D/agent.log" 2>&1 &
    local loop=$!
    wait_until 30 state_is "$id" online || cell_fail "not online in list-devices: $(dev_state "$id")"
    # Online may come from sshd's log of the login before the gate has stored the report.
    wait_until 15 cell_reported "$id"
    local reported
    reported=$(cell_reported "$id")
    [ "$reported" = "$(expected_client "$client")" ] ||
        cell_fail "the status report names the client '$reported', expected '$(expected_client "$client")'"
    cell_note "ok   online; the server got the report of $reported"

    # A tunnel on request; the admin logs in through it and lands on the device.
    in_ns srv timeout 90 forward-device-port "$id" "22:$port" --wait=60 >"$CELL_D/fwd.out" 2>&1 ||
        cell_fail "forward-device-port $id 22:$port --wait: $(cat "$CELL_D/fwd.out")"
    if ! wait_until 45 admin_reaches "$CELL_DEV" "$port"; then
        local out rc=0
        out=$(admin_ssh "$CELL_DEV" "$port" ip -o -4 addr show dev eth0 2>&1) || rc=$?
        cell_fail "admin login through $port: exit $rc: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')" \
            "(dropbear: $(tail -n 3 "$CELL_D/dropbear.log" | tr '\n' ' '))"
    fi
    cell_note "ok   tunnel 22:$port up; the admin logged into the device's dropbear and saw $(dev_ip "$CELL_DEV")"
    if [ -n "$version" ]; then
        local tpid argv
        tpid=$(pgrep -f -- "-R localhost:$port:127.0.0.1:22" | head -n1)
        argv=$(tr '\0' ' ' <"/proc/$tpid/cmdline" 2>/dev/null)
        if dbclient_strict "$version"; then
            [[ $argv == *"StrictHostKeyChecking=yes"*"BatchMode=yes"* ]] ||
                cell_fail "dbclient $version knows StrictHostKeyChecking, the tunnel has: $argv"
        else
            [[ $argv != *StrictHostKeyChecking* && $argv == *"-R localhost:$port"* ]] ||
                cell_fail "dbclient $version predates StrictHostKeyChecking, the tunnel has: $argv"
        fi
        cell_note "ok   the tunnel's argv suits dbclient $version: ${argv#* }"
    fi

    # Closed on request: the port goes within a poll or two, and so does the process.
    in_ns srv forward-device-port "$id" --close "$port" >/dev/null 2>&1 || cell_fail "--close $port"
    wait_until $((2 * POLL + 10)) port_free "$port" || cell_fail "port $port still held after --close"
    wait_until 5 no_tunnel "$port" || cell_fail "the tunnel process for $port is still running"
    cell_note "ok   closed: port $port free, tunnel process gone"

    # The server unreachable (the gateway answers "host unreachable"): the poll fails and
    # says why.
    kill "$loop" 2>/dev/null
    wait "$loop" 2>/dev/null
    wait_until 20 cell_no_poll
    in_ns gw iptables -I FORWARD 1 -i "gw-lan$n" -j REJECT --reject-with icmp-host-unreachable
    local rc=0 err
    cell_agent poll >"$CELL_D/unreachable.log" 2>&1 || rc=$?
    in_ns gw iptables -D FORWARD -i "gw-lan$n" -j REJECT --reject-with icmp-host-unreachable
    err=$(cell_agent status --json 2>/dev/null | jq -r '.last_poll.error // ""')
    if [ "$rc" != 1 ] || [[ $err != *"no route to the server"* ]]; then
        cell_fail "server unreachable: exit $rc, error '$err'"
    fi
    cell_note "ok   server unreachable: exit 1, $(printf '%s' "$err" | cut -c1-150)"

    cell_agent stop >/dev/null 2>&1
    kill "$dropbear_pid" 2>/dev/null
    printf 'ok   %s s\n' "$((SECONDS - t0))" >"$CELL_D/result"
}

# --- the run ----------------------------------------------------------------------------

step "lab: sandbox, NAT, the server installed by server-scripts/install-server.sh"
lab_mounts || { echo "e2e: private mounts failed" >&2; exit 1; }
lab_network || { echo "e2e: network namespaces failed" >&2; exit 1; }
export PATH="/usr/local/sbin:/usr/local/bin:$PATH"
lab_server || { echo "e2e: server setup failed" >&2; show_logs; exit 1; }
lab_admin || exit 1
pass "lab is up (sshd on $SRV_IP:22)"

step "the agents and the clients"
for a in "${ARCHES[@]}"; do
    f=$(cross_agent_path "$a") || { fail "unknown arch $a"; continue; }
    if facts=$(cross_elf_check "$a" "$f"); then
        pass "$a: $f ($facts) runs $(cross_where "$a")"
    else
        fail "$a: no usable agent ($facts); build it with ./install.sh cross $a"
    fi
done
for c in "${CLIENTS[@]}"; do
    case $c in
    dbclient:*) echo "     dbclient ${c#dbclient:}: $("$DROPBEAR_DIR/${c#dbclient:}/dbclient" -V 2>&1 | head -n1), device sshd: its dropbear" ;;
    ssh) echo "     ssh: $(ssh -V 2>&1), device sshd: $(dropbear -V 2>&1 | head -n1)" ;;
    esac
done
[ ${#CLIENTS[@]} -gt 0 ] || fail "no client: no dropbear release in $DROPBEAR_DIR and --no-openssh"
[ "$FAILED" = 0 ] || { finish; exit 1; }

step "cells: ${#ARCHES[@]} agents x ${#CLIENTS[@]} clients, $JOBS at a time (poll every ${POLL}s)"
T_CELLS=$SECONDS
CELLS=()
n=10
for a in "${ARCHES[@]}"; do
    for c in "${CLIENTS[@]}"; do
        n=$((n + 1))
        CELLS+=("$n|$a|$c")
    done
done
# Not a bare `wait`: the lab's sshd and log stand-in are children of this shell too.
PIDS=()
cells_running() {
    local p c=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && c=$((c + 1)); done
    echo "$c"
}
for cell in "${CELLS[@]}"; do
    IFS='|' read -r n a c <<<"$cell"
    while [ "$(cells_running)" -ge "$JOBS" ]; do
        wait -n "${PIDS[@]}" 2>/dev/null
    done
    (cell_run "$n" "$a" "$c") &
    PIDS+=($!)
done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done

step "results (the cells took $((SECONDS - T_CELLS)) s)"
declare -A OUTCOME
for cell in "${CELLS[@]}"; do
    IFS='|' read -r n a c <<<"$cell"
    name="$a ($(cross_where "$a")) x ${c/:/ }"
    r=$(cat "$LAB/dev$n/result" 2>/dev/null || echo "FAIL the cell ended without a result")
    if [[ $r == ok* ]]; then
        pass "$name: enrol, poll, tunnel, admin login, close, unreachable (${r#ok   })"
        sed 's/^/     /' "$LAB/dev$n/cell.log"
        OUTCOME[$a|$c]=ok
    else
        # Not lib.sh's fail: its dump of every device's logs would bury this cell's.
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name: ${r#FAIL }")
        printf 'FAIL %s\n' "$name: ${r#FAIL }"
        sed 's/^/     /' "$LAB/dev$n/cell.log"
        for f in "$LAB/dev$n/agent.log" "$LAB/dev$n"/run/tunnels/*.log "$LAB/dev$n/dropbear.log"; do
            [ -f "$f" ] && { echo "     ---- $f"; tail -n 8 "$f" | sed 's/^/     | /'; }
        done
        OUTCOME[$a|$c]=FAIL
    fi
done

# The table: one row per architecture, one column per client.
compat_table() {
    local c a row
    printf '| agent (router profile, static musl) | runs |'
    for c in "${CLIENTS[@]}"; do
        case $c in dbclient:*) printf ' dbclient %s |' "${c#dbclient:}" ;; ssh) printf ' OpenSSH %s |' "$(ssh -V 2>&1 | sed 's/^OpenSSH_\([^ ,]*\).*/\1/')" ;; esac
    done
    printf '\n| --- | --- |'
    for c in "${CLIENTS[@]}"; do printf ' --- |'; done
    printf '\n'
    for a in "${ARCHES[@]}"; do
        row="| \`$(cross_triple "$a")\` | $(cross_where "$a" | sed 's/ (qemu-user)//') |"
        for c in "${CLIENTS[@]}"; do row+=" ${OUTCOME[$a|$c]:-not run} |"; done
        printf '%s\n' "$row"
    done
}
echo
compat_table
if [ -n "$TABLE" ]; then
    {
        echo "<!-- written by tests/e2e/compat.sh at $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null)$([ -n "$(git -C "$REPO_DIR" status --porcelain -- agent cross tests 2>/dev/null)" ] && echo ' (with uncommitted changes)') -->"
        compat_table
    } >"$TABLE" || fail "cannot write the table to $TABLE"
fi
finish
