#!/usr/bin/env bash
# The newcomer's path (issue 13): README.md's server and device sections, followed as a
# new user follows them, on machines of their own. The commands come from the README's
# blocks marked `<!-- newcomer:NAME: ... -->` (never retyped here), and the lines the
# tools print (add-device, phonehome setup, connect) are run as printed, unedited.
#
#   server   a Debian box with OpenSSH's sshd and cron running   198.51.100.1
#   dev1     a Linux box behind NAT with OpenSSH's ssh only      10.0.1.2
#   dev2     a Linux box behind NAT with dropbear's dbclient only 10.0.2.2
#   admin    the admin's machine elsewhere on the internet        203.0.113.2
#
# Each is a node (nodes.sh): own /etc, /var, /usr/local, /root, /run and host name, in
# the lab's network namespaces (lib.sh); the README's server name ph.example.org is in
# every node's /etc/hosts, standing in for DNS. Real cron runs the agent (Debian's cron,
# /etc/cron.d/phonehome as install.sh writes it), so the test waits for minute ticks;
# both devices go through it at the same time. It ends with the admin logged into each
# device through its tunnel. It also checks, on the way, what issue 13 listed: the
# installer's help and errors (item 5), the router build installed (item 8), the cron
# line of agent/README (item 10). Last, the README's block for the devices' own sshd
# built without OpenSSL, on the build install.sh test made in its stage before (the
# nodes cannot fetch Debian's source), with one device moved to it as the README says.
#
# Needs root, Debian's cron, and the router build of the agent (`cargo build --profile
# router -p phonehome`; install.sh test builds it first) and the rustup target of the
# static one (`install.sh device` builds it in the nodes, which have no internet).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=nodes.sh
. "$(dirname "$0")/nodes.sh"
# shellcheck source=cross/lib.sh
. "$REPO_DIR/cross/lib.sh"
lab_enter_sandbox "$0" "$@"

README=$REPO_DIR/README.md
AGENT_README=$REPO_DIR/agent/README.md
# The README's server name; every node's /etc/hosts maps it to the server.
HOST=ph.example.org
# The README's example device id: the tunnel block runs with each device's id instead.
EXAMPLE_ID=6466b34bde54
ADM_IP=203.0.113.2
ADM_GW=203.0.113.1
T0=$SECONDS
# Each step says when it started: the wait for cron's minute tick is most of the time.
step() { printf '\n== %s  [%d s]\n' "$*" $((SECONDS - T0)); }

# lib.sh's fail() shows the lab's own sshd and agent logs; here the nodes keep theirs,
# each failure shows its context and node_report runs at the end.
show_logs() { :; }

# readme_block FILE NAME: the lines of the fenced block right after the line that starts
# with `<!-- newcomer:NAME:` in FILE; fails if there is none.
readme_block() {
    awk -v mark="<!-- newcomer:$2:" '
        index($0, mark) == 1 { state = 1; next }
        state == 1 && /^```/ { state = 2; next }
        state == 1 && NF { exit }
        state == 2 && /^```/ { found = 1; exit }
        state == 2 { print }
        END { exit !found }' "$1"
}

# as_newcomer NODE SCRIPT_FILE OUT: root on NODE, in a fresh login shell's environment,
# in the clone, runs SCRIPT_FILE with bash -e (any failing command fails it); its
# output goes to OUT.
as_newcomer() {
    local node=$1 script=$2 out=$3
    # shellcheck disable=SC2016 # $0 and $1 belong to the inner bash
    node_run "$node" env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb \
        LANG=C.UTF-8 PATH="/usr/local/sbin:/usr/local/bin:$PATH" \
        ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
        bash -c 'cd "$0" && exec bash -eo pipefail "$1"' "$REPO_DIR" "$script" >"$out" 2>&1
}

# run_printed NODE LINE OUT: a line a tool printed, run on NODE as the newcomer pastes it.
run_printed() {
    printf '%s\n' "$2" >"${3%.log}.sh"
    as_newcomer "$1" "${3%.log}.sh" "$3"
}

# show FILE...: a file's lines, indented, for a failure's context.
show() {
    local f
    for f in "$@"; do
        echo "     ---- $f"
        sed 's/^/     | /' "$f" 2>/dev/null | tail -n 25
    done
}

# On failure: what each node says about itself.
node_report() {
    local dev
    show "$LAB/node/srv/sshd.log"
    for dev in dev1 dev2; do
        echo "     ---- $dev: phonehome status; cron; /etc/cron.d"
        node_sh "$dev" 'phonehome status; pgrep -a cron; ls -l /etc/cron.d' 2>&1 | sed 's/^/     | /'
    done
    node_run srv list-devices 2>&1 | sed 's/^/     | /'
}

step "the README's marked blocks"
SERVER_BLOCK=$(readme_block "$README" server)
check "README.md has the server block (newcomer:server)" [ -n "$SERVER_BLOCK" ]
DEVICE_BLOCK=$(readme_block "$README" device)
check "README.md has the device block (newcomer:device)" [ -n "$DEVICE_BLOCK" ]
LEAN_BLOCK=$(readme_block "$README" server-lean)
check "README.md has the lean sshd block (newcomer:server-lean)" [ -n "$LEAN_BLOCK" ]
TUNNEL_BLOCK=$(readme_block "$README" tunnel)
check "README.md has the tunnel block (newcomer:tunnel), with the example id $EXAMPLE_ID" \
    grep -q "$EXAMPLE_ID" <<<"$TUNNEL_BLOCK"
CRON_LINE=$(readme_block "$AGENT_README" cron | grep -v '^#' | grep .)
check "agent/README.md has the cron block (newcomer:cron)" [ -n "$CRON_LINE" ]
printf '%s\n' "$SERVER_BLOCK" "$DEVICE_BLOCK" "$TUNNEL_BLOCK" | sed 's/^/     > /'
[ "$FAILED" = 0 ] || { finish; exit 1; }

step "four machines: a server, two devices behind NAT, the admin's"
lab_mounts || { echo "newcomer: private mounts failed" >&2; exit 1; }
lab_network || { echo "newcomer: network namespaces failed" >&2; exit 1; }
# The admin's machine: its own link to the server, as another host on the internet.
admin_network() {
    ip netns add adm &&
        ip link add srv-adm netns srv type veth peer name eth0 netns adm &&
        ip -n srv addr add "$ADM_GW/30" dev srv-adm && ip -n srv link set srv-adm up &&
        ip -n adm link set lo up && ip -n adm addr add "$ADM_IP/30" dev eth0 &&
        ip -n adm link set eth0 up && ip -n adm route add default via "$ADM_GW"
}
admin_network || { echo "newcomer: the admin's network failed" >&2; exit 1; }
node_up srv srv newcomer-server || exit 1
node_up dev1 dev1 newcomer-openssh dbclient dropbearkey dropbearconvert || exit 1
node_up dev2 dev2 newcomer-dropbear ssh ssh-keygen ssh-keyscan scp sftp || exit 1
node_up adm adm newcomer-admin || exit 1
for n in srv dev1 dev2 adm; do
    # DNS, and a cron with nothing else to do than what the README's commands add.
    node_sh "$n" "echo '$SRV_IP $HOST' >>/etc/hosts; rm -f /etc/cron.d/* /etc/crontab"
done
check "dev1 has ssh and no dbclient" node_sh dev1 'command -v ssh && ! command -v dbclient' >/dev/null
check "dev2 has dbclient and no ssh" node_sh dev2 'command -v dbclient && ! command -v ssh' >/dev/null

# The server: fresh host keys, sshd and cron running, as on any Debian server.
node_sh srv 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null' || exit 1
node_run srv /usr/sbin/sshd -E "$LAB/node/srv/sshd.log" || exit 1
node_run srv cron || exit 1
# The admin: a key of their own, which root on the server and on the devices accepts.
node_sh adm 'mkdir -m 0700 -p /root/.ssh && ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519 &&
    printf "Host *\n  BatchMode yes\n  ConnectTimeout 10\n" >/root/.ssh/config' || exit 1
ADMIN_KEY=$(node_run adm cat /root/.ssh/id_ed25519.pub)
node_sh srv "mkdir -m 0700 -p /root/.ssh && echo '$ADMIN_KEY' >/root/.ssh/authorized_keys" || exit 1
node_sh srv "for f in /etc/ssh/ssh_host_*_key.pub; do echo \"$HOST \$(cut -d' ' -f1,2 \$f)\"; done" \
    >"$LAB/srv-known" && node_run adm tee /root/.ssh/known_hosts <"$LAB/srv-known" >/dev/null
# The devices: their own ssh server for the admin to land on (OpenSSH's on dev1,
# dropbear on dev2), its host key kept for the admin's known_hosts, and cron.
for dev in dev1 dev2; do
    node_sh "$dev" "mkdir -m 0700 -p /root/.ssh && echo '$ADMIN_KEY' >/root/.ssh/authorized_keys &&
        chmod 0600 /root/.ssh/authorized_keys" || exit 1
    node_run "$dev" cron || exit 1
done
node_sh dev1 "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null &&
    /usr/sbin/sshd -o ListenAddress=127.0.0.1:22 -E $LAB/node/dev1/sshd.log &&
    cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub >$LAB/node/dev1/hostkey" || exit 1
node_sh dev2 "mkdir -p /etc/dropbear && dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1 &&
    /usr/sbin/dropbear -r /etc/dropbear/dropbear_ed25519_host_key -E -s -p 127.0.0.1:22 -P /run/dropbear.pid 2>$LAB/node/dev2/dropbear.log &&
    dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key | grep -m1 -o '^ssh-ed25519 [^ ]*' >$LAB/node/dev2/hostkey" || exit 1
check "sshd runs on the server and dev1, dropbear on dev2" \
    wait_until 10 eval 'tcp_open srv 127.0.0.1 22 && tcp_open dev1 127.0.0.1 22 && tcp_open dev2 127.0.0.1 22'
check "the admin reaches the server as $HOST" node_run adm ssh "root@$HOST" true
check_not "the server cannot reach dev1 (NAT)" tcp_open srv 10.0.1.2 22

step "issue 13, item 5: the installer's help and errors"
OUT=$LAB/out
mkdir -p "$OUT"
printf '%s\n' 'PATH=/usr/bin:/bin HOME=/nonexistent ./install.sh server --help' >"$OUT/help.sh"
check "./install.sh server --help, without cargo: the help, no build" as_newcomer srv "$OUT/help.sh" "$OUT/help.log"
check "  ... and no stray line of the script" eval "grep -q -- '--host NAME' '$OUT/help.log' && ! grep -qE '^set -eu|^== cargo build' '$OUT/help.log'"
printf '%s\n' './install.sh device --server' >"$OUT/noval.sh"
check_not "./install.sh device --server (no value) fails" as_newcomer dev1 "$OUT/noval.sh" "$OUT/noval.log"
check "  ... saying what is missing, no bash noise" \
    eval "grep -q -- '--server needs a value: the name or address of your phonehome server' '$OUT/noval.log' && ! grep -qE 'line [0-9]+:' '$OUT/noval.log'"
sed 's/^/     > /' "$OUT/noval.log"

step "the README's server section, on the server"
printf '%s\n' "$SERVER_BLOCK" >"$OUT/server.sh"
if as_newcomer srv "$OUT/server.sh" "$OUT/server.log"; then pass "the server block ran"; else
    fail "the server block failed"
    show "$OUT/server.log"
fi
sed 's/^/     > /' "$OUT/server.log" | tail -n 8

step "the README's device section, on both devices at once"
printf '%s\n' "$DEVICE_BLOCK" >"$OUT/device.sh"
declare -A PID
for dev in dev1 dev2; do
    as_newcomer "$dev" "$OUT/device.sh" "$OUT/$dev-device.log" &
    PID[$dev]=$!
done
for dev in dev1 dev2; do
    if wait "${PID[$dev]}"; then pass "$dev: the device block ran"; else
        fail "$dev: the device block failed"
        show "$OUT/$dev-device.log"
    fi
done
sed 's/^/     > /' "$OUT/dev1-device.log" | grep -v 'Compiling\|Finished\|Blocking' | tail -n 12
# The build routers run (static musl; install.sh test added its rustup target): no
# dynamic linker at each cron start.
STATIC_AGENT=$(cross_bin "$REPO_DIR/target" "$(cross_host_arch)" phonehome)
check "the device block built the static router build" eval "[ -x '$STATIC_AGENT' ] && ! readelf -l '$STATIC_AGENT' | grep -q INTERP"
for dev in dev1 dev2; do
    check "$dev: the static router build is what was installed (item 8)" \
        node_run "$dev" cmp /usr/local/bin/phonehome "$STATIC_AGENT"
    check "$dev: /etc/cron.d/phonehome runs what agent/README shows (item 10): $CRON_LINE" \
        eval "node_run $dev cat /etc/cron.d/phonehome | grep -qxF -- '$CRON_LINE'"
done
check "dev1 (OpenSSH) got an OpenSSH key" node_run dev1 grep -q 'BEGIN OPENSSH PRIVATE KEY' /etc/phonehome/id_ed25519
check "dev2 (dropbear) got a dropbear key" node_run dev2 test -s /etc/phonehome/id_dropbear

step "the lines the tools printed, run as printed"
declare -A CONNECT ID
for dev in dev1 dev2; do
    ID[$dev]=$(dev_id "$dev")
    line=$(grep -m1 -E '^ +add-device [0-9a-f]{12} ' "$OUT/$dev-device.log" | sed 's/^ *//')
    check "$dev: install.sh device printed the add-device line" [ -n "$line" ]
    if run_printed srv "$line" "$OUT/$dev-add.log"; then pass "$dev: add-device, on the server, as printed"; else
        fail "$dev: add-device failed"
        show "$OUT/$dev-add.log"
    fi
    sed 's/^/     > /' "$OUT/$dev-add.log"
    line=$(grep -m1 -E '^ +phonehome setup ' "$OUT/$dev-add.log" | sed 's/^ *//')
    check "$dev: add-device printed the setup line, for $HOST" grep -q -- "--server $HOST " <<<"$line"
    check "  ... without a warning" eval "! grep -qi warn '$OUT/$dev-add.log'"
    if run_printed "$dev" "$line" "$OUT/$dev-setup.log"; then pass "$dev: phonehome setup, on the device, as printed"; else
        fail "$dev: phonehome setup failed"
        show "$OUT/$dev-setup.log"
    fi
    sed 's/^/     > /' "$OUT/$dev-setup.log"
done
check "dev1's agent pairs ssh with /etc/phonehome/id_ed25519" grep -q 'client /usr/bin/ssh, key /etc/phonehome/id_ed25519' "$OUT/dev1-setup.log"
check "dev2's agent pairs dbclient with /etc/phonehome/id_dropbear" grep -q 'client /usr/bin/dbclient, key /etc/phonehome/id_dropbear' "$OUT/dev2-setup.log"

step "the README's tunnel block on the server, for both devices (cron polls once a minute)"
t_ask=$SECONDS
echo "     (asked at $(date -u +%T) UTC; cron runs the agent at second 00 of each minute)"
for dev in dev1 dev2; do
    printf '%s\n' "${TUNNEL_BLOCK//$EXAMPLE_ID/${ID[$dev]}}" >"$OUT/$dev-tunnel.sh"
    as_newcomer srv "$OUT/$dev-tunnel.sh" "$OUT/$dev-tunnel.log" &
    PID[$dev]=$!
done
for dev in dev1 dev2; do
    if wait "${PID[$dev]}"; then pass "$dev: the tunnel block ran: the tunnel is up"; else
        fail "$dev: the tunnel block failed"
        show "$OUT/$dev-tunnel.log"
        node_report
    fi
    sed 's/^/     > /' "$OUT/$dev-tunnel.log"
    CONNECT[$dev]=$(grep -m1 '^connect: ' "$OUT/$dev-tunnel.log" | sed 's/^connect: //')
done
echo "     (request to tunnel, with the wait for cron's next tick: $((SECONDS - t_ask)) s)"

step "the admin, on their own machine, runs the connect line and lands on each device"
for dev in dev1 dev2; do
    line=${CONNECT[$dev]}
    port=$(sed -n 's/.* -p \([0-9]*\) root@localhost$/\1/p' <<<"$line")
    check "$dev: forward-device-port printed a connect line through $HOST" \
        grep -qE "^ssh -J root@$HOST -p [0-9]+ root@localhost$" <<<"$line"
    # The device's host key, as the admin would accept it on the first login.
    node_sh adm "echo '[localhost]:$port $(cat "$LAB/node/$dev/hostkey")' >>/root/.ssh/known_hosts"
    run_printed adm "$line ip -o -4 addr show dev eth0" "$OUT/$dev-admin.log"
    check "$dev: the admin ran '$line ip -o -4 addr show dev eth0' and landed on $(dev_ip "$dev")" \
        grep -q "inet $(dev_ip "$dev")/" "$OUT/$dev-admin.log"
    sed 's/^/     > /' "$OUT/$dev-admin.log"
done

step "list-devices, and each agent's own status"
node_run srv list-devices >"$OUT/list.log" 2>&1
sed 's/^/     > /' "$OUT/list.log"
for dev in dev1 dev2; do
    check "$dev is online" grep -qE "^${ID[$dev]} +[^ ]* *online" "$OUT/list.log"
done
node_run dev1 phonehome status >"$OUT/dev1-status.log" 2>&1
node_run dev2 phonehome status >"$OUT/dev2-status.log" 2>&1
sed 's/^/     > /' "$OUT/dev1-status.log" "$OUT/dev2-status.log"
check "dev1 polled with OpenSSH's ssh" grep -q 'last poll: ok.*client ssh OpenSSH_' "$OUT/dev1-status.log"
check "dev2 polled with dbclient" grep -q 'last poll: ok.*client dbclient 20' "$OUT/dev2-status.log"

step "the README's lean sshd block on the server: the devices' own sshd, built without OpenSSL"
# The build comes from Debian's source package (apt-get source): the nodes have no
# internet, so this runs on the build install.sh test made in its stage before.
LEAN_SSHD=/usr/local/lib/phonehome/openssh/sbin/sshd
lean_runs_the_build() {
    local exe
    # shellcheck disable=SC2016 # expanded on the node
    exe=$(node_sh srv 'readlink "/proc/$(cat /run/phonehome-sshd.pid)/exe"') &&
        [ "$exe" = "$LEAN_SSHD" ] && node_run srv "$LEAN_SSHD" -V 2>&1 | grep -q 'without OpenSSL'
}
lean_conf() {
    node_run srv grep -qx 'server_port = 2222' /etc/phonehome/server.conf &&
        node_run srv grep -qx 'device_key_types = ssh-ed25519' /etc/phonehome/server.conf
}
lean_host_key_types() { node_run srv ssh-keyscan -p 2222 127.0.0.1 2>/dev/null | awk '{print $2}' | sort -u; }
if [ ! -x "$REPO_DIR/target/device-sshd/sbin/sshd" ]; then
    echo "     skipped: no build in target/device-sshd (install.sh test makes it; or run"
    echo "     server-scripts/build-sshd.sh target/device-sshd with internet)"
else
    printf '%s\n' "$LEAN_BLOCK" >"$OUT/server-lean.sh"
    if as_newcomer srv "$OUT/server-lean.sh" "$OUT/server-lean.log"; then pass "the lean sshd block ran"; else
        fail "the lean sshd block failed"
        show "$OUT/server-lean.log"
    fi
    sed 's/^/     > /' "$OUT/server-lean.log" | grep -v 'Compiling\|Finished\|Blocking' | tail -n 8
    check "it listens on port 2222" wait_until 10 tcp_open srv 127.0.0.1 2222
    check "  ... and it is the build: the running sshd's binary, its -V" lean_runs_the_build
    # shellcheck disable=SC2016 # expanded by check's eval
    check "  ... offering the ed25519 host key only" eval '[ "$(lean_host_key_types)" = ssh-ed25519 ]'
    check "server.conf sends devices to 2222 and takes Ed25519 device keys only" lean_conf
    # dev1 moves to it as the README says: the setup line add-device --print-setup prints
    # now, run on the device; a poll by hand then goes through port 2222. dev2 stays on
    # the admin's sshd (port 22), which still lets devices in.
    printf '%s\n' "add-device --print-setup ${ID[dev1]}" >"$OUT/dev1-reprint.sh"
    as_newcomer srv "$OUT/dev1-reprint.sh" "$OUT/dev1-reprint.log" || show "$OUT/dev1-reprint.log"
    line=$(grep -m1 -E '^ *phonehome setup ' "$OUT/dev1-reprint.log" | sed 's/^ *//')
    check "dev1: add-device --print-setup prints a setup line for port 2222" grep -q -- "--port 2222 " <<<"$line"
    if run_printed dev1 "$line" "$OUT/dev1-setup2222.log"; then pass "dev1: phonehome setup, as printed"; else
        fail "dev1: phonehome setup for port 2222 failed"
        show "$OUT/dev1-setup2222.log"
    fi
    check "dev1: a poll through the lean sshd on 2222" node_run dev1 phonehome --hold no poll
    check "dev2, not moved: a poll through the admin's sshd on 22 still" node_run dev2 phonehome --hold no poll
fi
[ "$FAILED" = 0 ] || node_report

echo
echo "the newcomer's path took $((SECONDS - T0)) s"
finish
