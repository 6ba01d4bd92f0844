# shellcheck shell=bash
# The end-to-end lab: one private sandbox (mount, net and pid namespaces) holding a
# server, a NAT gateway and two devices, each in a network namespace of its own, with
# the real OpenSSH sshd, the real dropbear and the project's own binaries.
#
# Why a sandbox: the scenarios create Unix users, write /etc/ssh and /etc/phonehome,
# start daemons and change firewall rules. Inside `unshare --mount --net --pid` all of
# that is private, and when the sandbox's first process dies (normal exit, failure,
# kill -9 of the outer unshare) the kernel takes every process, mount and namespace
# with it: nothing is left on the host.
#
# Sourced by the scenario scripts; `lab_enter_sandbox "$0" "$@"` must be their first act.

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)
# Where the built binaries are (install-server.sh installs the server ones from here).
BIN_DIR=${PHONEHOME_BIN_DIR:-$REPO_DIR/target/release}
export PHONEHOME_BIN_DIR=$BIN_DIR

# The lab's private state: a tmpfs mounted over /run inside the sandbox.
LAB=/run/lab
SRV_IP=198.51.100.1
GW_WAN_IP=198.51.100.2
# Short poll interval for the tests; production stays at one minute.
POLL=${PHONEHOME_E2E_POLL:-3}
# PHONEHOME_E2E_DEVICE_SSHD=PORT: the server runs the devices' own lean sshd on PORT
# (install-server.sh --device-sshd) beside the admin's; devices connect there.
DEVICE_SSHD=${PHONEHOME_E2E_DEVICE_SSHD:-}
# PHONEHOME_E2E_DEVICE_SSHD_BIN=PATH: that sshd runs the devices' own sshd instead of
# /usr/sbin/sshd (e.g. OpenSSH 10.0 from cross/openssh.sh), and install-server.sh
# configures it for that binary (it finds it first on PATH).
DEVICE_SSHD_BIN=${PHONEHOME_E2E_DEVICE_SSHD_BIN:-/usr/sbin/sshd}
# PHONEHOME_E2E_DEVICE_SSHD_BUILD=DIR: what server-scripts/build-sshd.sh built there
# (Debian's OpenSSH without OpenSSL) runs it, installed by install-server.sh
# --device-sshd-build as in production.
DEVICE_SSHD_BUILD=${PHONEHOME_E2E_DEVICE_SSHD_BUILD:-}
[ -z "$DEVICE_SSHD_BUILD" ] || DEVICE_SSHD_BIN=/usr/local/lib/phonehome/openssh/sbin/sshd
# The port devices (and a thief with a device's key) connect to.
DEVICE_PORT=${DEVICE_SSHD:-22}
SSHD_LOG=$LAB/srv/sshd.log

PASSED=0
FAILED=0
FAILED_NAMES=()

# --- the sandbox -------------------------------------------------------------------

# Re-run the calling script inside a fresh sandbox unless already in one.
lab_enter_sandbox() {
    local script=$1
    shift
    if [ -n "${PHONEHOME_SANDBOX:-}" ]; then
        # Inside: whatever ends the script (finish, an early exit, a signal), keep the
        # logs. Processes, mounts and namespaces need no trap: the kernel ends them
        # with the sandbox. The interrupt's word goes to the stderr the script started
        # with: the trap may run while a command's stderr is /dev/null (wait_until).
        exec {LAB_STDERR}>&2
        trap save_logs EXIT
        trap lab_interrupted INT TERM
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "e2e: must run as root (it creates namespaces); try: sudo $script" >&2
        exit 2
    fi
    export PHONEHOME_SANDBOX=1
    # SIGINT and TERM back to their defaults: started from a background job they are
    # ignored, and bash cannot trap a signal ignored on entry (a Ctrl-C would then reach
    # only the daemons that handle it themselves, and the script would go on).
    exec env --default-signal=INT,TERM unshare --mount --net --pid --fork --kill-child \
        --mount-proc --propagation private bash "$script" "$@"
}

# Ctrl-C or a TERM: say so (never "failed"), and leave; the kernel ends the rest.
# The lab's daemons do not see a Ctrl-C (lab_daemon), so nothing half-dead is left to
# fail later if a foreground command swallowed the signal.
lab_interrupted() {
    trap - INT TERM
    printf '\n%s: interrupted: leaving the sandbox, and everything in it goes with it\n' \
        "$(basename "$0" .sh)" >&"${LAB_STDERR:-2}"
    exit 130
}

# lab_daemon CMD...: start a long-lived lab process in the background, in a session of
# its own so that the terminal's Ctrl-C reaches only the script (which then ends the
# whole sandbox). `$!` is the process itself: setsid execs it (a background job is no
# process group leader, so setsid does not fork).
lab_daemon() {
    setsid "$@" &
}

# The sandbox's own /run (a tmpfs; the lab's files in $LAB), with the host dir that
# PHONEHOME_E2E_LOGS names bound to $LAB/keep (save_logs copies the logs there).
lab_run() {
    local keep=${PHONEHOME_E2E_LOGS:-}
    [ -n "$keep" ] && { mkdir -p "$keep" && keep=$(cd "$keep" && pwd) || keep=''; }
    mount -t tmpfs -o mode=0755 lab-run /run || return 1
    mkdir -p $LAB/keep
    if [ -n "$keep" ]; then
        mount --bind "$keep" $LAB/keep || return 1
    fi
}

# Private mounts: a tmpfs over /run (the lab's own files, in $LAB), and overlays over
# /etc, /var, /usr/local, /tmp, /home and /root, so useradd, sshd_config.d,
# /etc/phonehome, /var/lib/phonehome and the installed binaries stay in the sandbox
# while whatever lies below (the repo may be cloned under /tmp or /root) stays visible.
# Writes below those dirs land in the overlay, so the log dir for the host
# (PHONEHOME_E2E_LOGS) is bound to $LAB/keep first, before anything covers it.
lab_mounts() {
    case $REPO_DIR in
    /run | /run/*)
        echo "e2e: the repo is under /run, which the sandbox replaces: clone it elsewhere" >&2
        return 1
        ;;
    esac
    lab_run || return 1
    mkdir -p /run/sshd /run/netns $LAB/ov $LAB/srv $LAB/bin
    chmod 0755 /run/sshd
    local d name
    for d in /etc /var /usr/local /tmp /home /root; do
        name=${d//\//_}
        mkdir -p "$LAB/ov/$name.up" "$LAB/ov/$name.work"
        mount -t overlay "lab$name" \
            -o "lowerdir=$d,upperdir=$LAB/ov/$name.up,workdir=$LAB/ov/$name.work" "$d" ||
            return 1
    done
    # /var/run is a symlink to /run on Debian; the overlay keeps it so. Hide what a
    # real installation on this host may have left, so the lab starts clean.
    rm -rf /var/lib/phonehome /etc/phonehome /root/.ssh
    # The admin's commands run on the devices through root's bash, which reads root's
    # ~/.bashrc when started by an ssh server: the host's may run anything (here `pyenv
    # init`, whose rehash waits up to 60 s for a lock file another bash holds).
    rm -f /root/.bashrc
    rm -f /etc/ssh/sshd_config.d/phonehome.conf /etc/cron.d/phonehome /var/log/auth.log
}

# Three kinds of namespaces joined by veth pairs:
#   srv  198.51.100.1/24 ---- gw 198.51.100.2 (wan), 10.0.1.1 (lan1), 10.0.2.1 (lan2)
#   dev1 10.0.1.2/24 via 10.0.1.1      dev2 10.0.2.2/24 via 10.0.2.1
# gw masquerades lan -> wan and drops everything forwarded from wan that is not a reply.
# srv even gets a route to the LANs through gw, so that "unreachable" is the firewall's
# doing, not a missing route.
lab_network() {
    ip link set lo up
    local ns
    for ns in srv gw dev1 dev2; do
        ip netns add $ns || return 1
        ip -n $ns link set lo up
    done
    ip link add srv-wan netns srv type veth peer name gw-wan netns gw || return 1
    ip -n srv addr add $SRV_IP/24 dev srv-wan
    ip -n srv link set srv-wan up
    ip -n srv route add 10.0.0.0/8 via $GW_WAN_IP
    ip -n gw addr add $GW_WAN_IP/24 dev gw-wan
    ip -n gw link set gw-wan up
    local i
    for i in 1 2; do
        ip link add "gw-lan$i" netns gw type veth peer name eth0 netns "dev$i" || return 1
        ip -n gw addr add "10.0.$i.1/24" dev "gw-lan$i"
        ip -n gw link set "gw-lan$i" up
        # A fixed MAC, so that `phonehome id` has something known to find.
        ip -n "dev$i" link set eth0 address "02:00:00:00:0$i:02"
        ip -n "dev$i" addr add "10.0.$i.2/24" dev eth0
        ip -n "dev$i" link set eth0 up
        ip -n "dev$i" route add default via "10.0.$i.1"
    done
    ip netns exec gw sysctl -qw net.ipv4.ip_forward=1
    ip netns exec gw iptables -t nat -A POSTROUTING -o gw-wan -j MASQUERADE || return 1
    ip netns exec gw iptables -P FORWARD DROP
    ip netns exec gw iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ip netns exec gw iptables -A FORWARD -i gw-lan1 -o gw-wan -j ACCEPT
    ip netns exec gw iptables -A FORWARD -i gw-lan2 -o gw-wan -j ACCEPT
}

# Run a command in a namespace. (To background a daemon, call `ip netns exec` itself,
# so that $! is the daemon and not a subshell running this function.)
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# True if a TCP connection to HOST PORT succeeds within 3 s (from the given namespace).
tcp_open() {
    local ns=$1 host=$2 port=$3
    # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
    in_ns "$ns" timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# http_get NS PORT: the body of GET / from 127.0.0.1:PORT in namespace NS (5 s at most).
# (bash's /dev/tcp: busybox-static's wget crashes on glibc name lookup.)
http_get() {
    # shellcheck disable=SC2016 # $0 is expanded by the inner bash
    in_ns "$1" timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
        cat <&3' "$2" 2>/dev/null
}

# Lines of `ss` for TCP listeners on PORT in the server namespace (empty: none).
srv_listeners() {
    in_ns srv ss -Hltnp "sport = :$1" 2>/dev/null
}

# port_free PORT...: nothing listens on any of them in the server namespace.
port_free() {
    local p
    for p in "$@"; do
        [ -z "$(srv_listeners "$p")" ] || return 1
    done
}

port_held() { [ -n "$(srv_listeners "$1")" ]; }

# --- the server --------------------------------------------------------------------

# Install the server side with the project's own installer, then run the real sshd.
lab_server() {
    # Fresh host keys, private to the lab (the overlay hides the host's).
    rm -f /etc/ssh/ssh_host_*
    ssh-keygen -A >/dev/null || return 1
    mkdir -p /etc/phonehome
    cat >/etc/phonehome/server.conf <<EOF
# written by tests/e2e: short poll interval for the tests
server_host = $SRV_IP
server_port = 22
port_range = 20000-29999
poll_interval = $POLL
default_ttl = 3600
admin_user = root
device_group = phonehome-devices
gate = /usr/local/lib/phonehome/phonehome-gate
EOF
    # PHONEHOME_E2E_INSTALL_SERVER: another installer, only to debug the harness itself.
    local -a lean=()
    [ -z "$DEVICE_SSHD" ] || lean=(--device-sshd "$DEVICE_SSHD" --no-reload)
    local path=$PATH
    if [ -n "$DEVICE_SSHD_BUILD" ]; then
        lean+=(--device-sshd-build "$DEVICE_SSHD_BUILD")
    else
        path=$(dirname "$DEVICE_SSHD_BIN"):$PATH
    fi
    if ! PATH=$path \
        "${PHONEHOME_E2E_INSTALL_SERVER:-$REPO_DIR/server-scripts/install-server.sh}" \
        --bin-dir "$BIN_DIR" "${lean[@]}" >"$LAB/srv/install.log" 2>&1; then
        echo "install-server.sh failed:" >&2
        cat "$LAB/srv/install.log" >&2
        return 1
    fi
    grep -q '^poll_interval *= *'"$POLL"'$' /etc/phonehome/server.conf || {
        echo "install-server.sh replaced the lab's server.conf:" >&2
        cat /etc/phonehome/server.conf >&2
        return 1
    }
    authlog_start
    sshd_start
}

# A stand-in for syslog: sshd -E writes bare messages (no /dev/log in the sandbox); this
# stamps each line as rsyslog does (this host's short name) and appends it to
# /var/log/auth.log, so list-devices
# reads a Debian-format auth log holding real sshd messages (and their fingerprints).
authlog_start() {
    : >>"$SSHD_LOG"
    (
        trap '' INT # as lab_daemon: a Ctrl-C is the script's to handle
        tail -n 0 -F "$SSHD_LOG" 2>/dev/null | while IFS= read -r line; do
            line=${line%$'\r'} # sshd -E ends its lines with CR LF; syslog has no CR
            printf '%s %s sshd[%s]: %s\n' "$(date '+%b %e %H:%M:%S')" "${HOSTNAME%%.*}" "$BASHPID" "$line"
        done >>/var/log/auth.log
    ) &
}

sshd_start() {
    : >>"$SSHD_LOG"
    # Not through in_ns: a backgrounded function is a subshell, and $! must be sshd.
    lab_daemon ip netns exec srv /usr/sbin/sshd -D -E "$SSHD_LOG" -f /etc/ssh/sshd_config
    echo $! >$LAB/srv/sshd.pid
    if [ -n "$DEVICE_SSHD" ]; then
        # The devices' own sshd, as install-server.sh configured it; its log goes where
        # the admin's does (the syslog stand-in stamps both into auth.log).
        lab_daemon ip netns exec srv "$DEVICE_SSHD_BIN" -D -E "$SSHD_LOG" -f /etc/phonehome/sshd_config
        echo $! >$LAB/srv/device-sshd.pid
    fi
    wait_until 10 tcp_open srv 127.0.0.1 22 && wait_until 10 tcp_open srv 127.0.0.1 "$DEVICE_PORT"
}

sshd_stop() {
    local pid f
    for f in $LAB/srv/sshd.pid $LAB/srv/device-sshd.pid; do
        pid=$(cat "$f" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        rm -f "$f"
    done
}

sshd_pid() { cat $LAB/srv/sshd.pid; }

# The server's host keys as `TYPE BASE64` lines.
server_host_keys() {
    local f
    for f in /etc/ssh/ssh_host_*_key.pub; do
        cut -d' ' -f1,2 "$f"
    done
}

# dev_field ID FIELD: a device's field in `list-devices --json` (state, seen_by, ...).
dev_field() {
    in_ns srv list-devices --json 2>/dev/null |
        jq -r --arg id "$1" --arg f "$2" '.devices[] | select(.id == $id) | .[$f]' 2>/dev/null
}
# The state list-devices gives a device: online, stale, offline, never-seen, ...
dev_state() { dev_field "$1" state; }
state_is() { [ "$(dev_state "$1")" = "$2" ]; }

# --- the admin ---------------------------------------------------------------------

# The admin's key, used to log into the devices through their tunnels.
lab_admin() {
    mkdir -p /root/.ssh
    chmod 0700 /root/.ssh
    ssh-keygen -q -t ed25519 -N '' -C lab-admin -f /root/.ssh/admin >/dev/null || return 1
    cp /root/.ssh/admin.pub /root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
}

# admin_ssh DEV PORT COMMAND...: log in as root on device DEV through the server's
# loopback port PORT, the device's own host key pinned (so we know where we landed).
admin_ssh() {
    local dev=$1 port=$2
    shift 2
    in_ns srv timeout 20 ssh -F /dev/null -n -p "$port" -i /root/.ssh/admin -o IdentitiesOnly=yes \
        -o BatchMode=yes -o StrictHostKeyChecking=yes -o HostKeyAlias="$dev" \
        -o UserKnownHostsFile="$LAB/$dev/admin_known_hosts" -o ConnectTimeout=5 \
        -o KexAlgorithms=curve25519-sha256 -o LogLevel=ERROR \
        root@localhost "$@"
}

# True when the admin lands on DEV through PORT and sees the device's own LAN address.
admin_reaches() {
    local dev=$1 port=$2 out
    out=$(admin_ssh "$dev" "$port" ip -o -4 addr show dev eth0 2>&1) || return 1
    case $out in
    *"inet $(dev_ip "$dev")/"*) return 0 ;;
    *) return 1 ;;
    esac
}

# --- the devices -------------------------------------------------------------------

dev_ip() { echo "10.0.${1#dev}.2"; }
# The device id: the MAC of its eth0 (02:00:00:00:NN:02, NN in hex), as the agent
# derives it.
dev_id() { printf '02000000%02x02\n' "${1#dev}"; }

# client_option SCRIPT ARGS...: CLIENT from the scenarios' one option, `--client
# dbclient|ssh` (dbclient without it); anything else is a usage error (exit 2).
# shellcheck disable=SC2034 # CLIENT is for the scripts that source this file
client_option() {
    local me=$1
    shift
    CLIENT=dbclient
    if [ $# -eq 2 ] && [ "$1" = --client ] && { [ "$2" = dbclient ] || [ "$2" = ssh ]; }; then
        CLIENT=$2
    elif [ $# -ne 0 ]; then
        echo "usage: $me [--client dbclient|ssh]" >&2
        exit 2
    fi
}

# Per device: its own config, run dir, key and a dropbear on its 127.0.0.1:22.
# CLIENT is dbclient (dropbear key) or ssh (OpenSSH key).
lab_device() {
    local dev=$1 client=$2 d=$LAB/$1
    mkdir -p "$d"
    dropbearkey -t ed25519 -f "$d/dropbear_host_key" >/dev/null 2>&1 || return 1
    echo "$dev $(dropbearkey -y -f "$d/dropbear_host_key" | grep '^ssh-' | cut -d' ' -f1,2)" \
        >"$d/admin_known_hosts"
    lab_daemon ip netns exec "$dev" dropbear -F -E -s -p 127.0.0.1:22 -r "$d/dropbear_host_key" \
        -P "$d/dropbear.pid" >"$d/dropbear.log" 2>&1
    case $client in
    dbclient)
        dropbearkey -t ed25519 -f "$d/id_dropbear" >/dev/null 2>&1 || return 1
        dropbearkey -y -f "$d/id_dropbear" | grep '^ssh-' | cut -d' ' -f1,2 >"$d/id.pub"
        dropbearconvert dropbear openssh "$d/id_dropbear" "$d/id_openssh" >/dev/null 2>&1
        echo "$d/id_dropbear" >"$d/keyfile"
        ;;
    ssh)
        ssh-keygen -q -t ed25519 -N '' -C "$dev" -f "$d/id_openssh" >/dev/null || return 1
        cut -d' ' -f1,2 "$d/id_openssh.pub" >"$d/id.pub"
        echo "$d/id_openssh" >"$d/keyfile"
        ;;
    esac
    chmod 0600 "$d/id_openssh"
    echo "$client" >"$d/client"
    wait_until 10 tcp_open "$dev" 127.0.0.1 22
}

# The agent's flags that differ per device (both devices share one file system).
dev_flags() {
    local dev=$1 d=$LAB/$1
    printf '%s\n' --config "$d/phonehome.conf" --run-dir "$d/run" \
        --key "$(cat "$d/keyfile")" --known-hosts "$d/known_hosts" \
        --device-id "$(dev_id "$dev")" --client "$(cat "$d/client")" \
        --timeout 15 --keepalive 2 --log stderr
}

# phonehome as device DEV runs it: in its namespace, with its config.
agent() {
    local dev=$1
    shift
    in_ns "$dev" env PATH="$LAB/bin:$PATH" "$BIN_DIR/phonehome" --config "$LAB/$dev/phonehome.conf" "$@"
}

# Register DEV on the server: add-device with its public key. Output in $LAB/DEV/add.out.
register() {
    local dev=$1 d=$LAB/$1
    in_ns srv add-device "$(dev_id "$dev")" "$(cat "$d/id.pub")" --name "$dev" \
        >"$d/add.out" 2>&1 || {
        echo "add-device $(dev_id "$dev") failed:" >&2
        cat "$d/add.out" >&2
        return 1
    }
}

# Enrol DEV: register it, then run the exact setup line add-device printed, on the
# device, with the per-device paths appended (both devices share one file system).
enrol() {
    register "$1" && device_setup "$1"
}

# Run on DEV the setup line add-device printed (in $LAB/DEV/add.out).
device_setup() {
    local dev=$1 d=$LAB/$1 line
    line=$(grep -m1 -o 'phonehome setup .*' "$d/add.out") || {
        echo "add-device printed no 'phonehome setup' line:" >&2
        cat "$d/add.out" >&2
        return 1
    }
    echo "$line" >"$d/setup.line"
    local -a words extra
    # The printed line is shell-quoted for a human to paste; let bash read it as such
    # (it comes from our own add-device, in the lab), then add this device's paths.
    eval "words=($line)"
    mapfile -t extra < <(dev_flags "$dev")
    in_ns "$dev" env PATH="$LAB/bin:$PATH" "$BIN_DIR/phonehome" "${words[@]:1}" "${extra[@]}" \
        >"$d/setup.out" 2>&1 || {
        echo "the setup line failed on $dev: phonehome ${words[*]:1} ${extra[*]}" >&2
        cat "$d/setup.out" >&2
        return 1
    }
}

# The cron-equivalent: poll every $POLL seconds in the device's namespace.
agent_loop_start() {
    local dev=$1 d=$LAB/$1
    (
        trap '' INT # as lab_daemon: a Ctrl-C is the script's to handle
        while :; do
            echo "--- poll $(date +%T)"
            agent "$dev" poll
            echo "--- exit $?"
            sleep "$POLL"
        done
    ) >>"$d/agent.log" 2>&1 &
    echo $! >"$d/loop.pid"
}

# No `phonehome poll` of DEV is running (the loop may be stopped mid-poll).
no_poll_running() { ! pgrep -f -- "$LAB/$1/phonehome.conf poll" >/dev/null; }

# The pid of a device's tunnel process for REMOTE (matched on its -R argument).
tunnel_pid() { pgrep -f -- "-R localhost:$1:127.0.0.1:" | head -n1; }
no_tunnel() { [ -z "$(tunnel_pid "$1")" ]; }

# A process is gone when it has no /proc entry or is a zombie waiting to be reaped
# (orphans are reparented to the sandbox's first process, which reaps them lazily).
proc_gone() {
    [ ! -r "/proc/$1/stat" ] && return 0
    [ "$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

agent_loop_stop() {
    local dev=$1 pid
    pid=$(cat "$LAB/$dev/loop.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$LAB/$dev/loop.pid"
}

# --- held polls (issue 16) --------------------------------------------------------

# cron_start DEV INTERVAL [AGENT-FLAGS...]: DEV's own cron: `phonehome poll` at every
# multiple of INTERVAL seconds of the clock, each tick a process of its own, so that a
# held poll lasts until the next tick asks it to end, as under cron. AGENT_BIN names
# another agent binary (an older one, for the compatibility scenarios).
cron_start() {
    local dev=$1 interval=$2 d=$LAB/$1 bin=${AGENT_BIN:-$BIN_DIR/phonehome}
    shift 2
    (
        local step=$((interval * 1000000000)) now left
        while :; do
            now=$(date +%s%N)
            left=$((step - now % step))
            sleep "$((left / 1000000000)).$(printf '%09d' $((left % 1000000000)))"
            {
                echo "--- tick $(date +%T.%N)"
                in_ns "$dev" env PATH="$LAB/bin:$PATH" "$bin" --config "$d/phonehome.conf" poll "$@"
                echo "--- exit $?"
            } >>"$d/agent.log" 2>&1 &
        done
    ) &
    echo $! >"$d/cron.pid"
}

# cron_stop DEV: no more ticks; a held poll is asked to end as the next tick would.
cron_stop() {
    local dev=$1 d=$LAB/$1 pid start held
    pid=$(cat "$d/cron.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
    rm -f "$d/cron.pid"
    read -r pid start held <"$d/run/poll.lock" 2>/dev/null || return 0
    [ "$held" = held ] && [ "$(proc_start "$pid")" = "$start" ] && kill -USR1 "$pid" 2>/dev/null
    wait_until 10 no_poll_running "$dev"
}

# The start time (clock ticks after boot) of a process, as /proc/PID/stat field 22 says.
proc_start() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# The gate processes of a device (held sessions, or a poll being answered).
gates_of() { pgrep -u "device$(dev_id "$1")" -x phonehome-gate | wc -l; }

# The gate's status file of a device id.
status_file() { echo "/var/lib/phonehome/status/$1/status.json"; }

# True while DEV holds a session: its gate says so in the status file and still runs.
holds_session() {
    local f pid start
    f=$(status_file "$(dev_id "$1")")
    [ "$(jq -r '.session.ended' "$f" 2>/dev/null)" = null ] &&
        [ "$(jq -r '.session.pid' "$f")" != null ] || return 1
    pid=$(jq -r .session.pid "$f") start=$(jq -r .session.start_time "$f")
    [ "$(proc_start "$pid")" = "$start" ]
}

# The `since` of DEV's held session (0: none).
session_since() { jq -r '.session.since // 0' "$(status_file "$(dev_id "$1")")" 2>/dev/null || echo 0; }

# set_hold SECS SESSIONS: server.conf's hold and cap, and the slot files for them.
set_hold() {
    sed -i '/^hold/d' /etc/phonehome/server.conf
    printf 'hold = %s\nhold_sessions = %s\n' "$1" "$2" >>/etc/phonehome/server.conf
    in_ns srv forward-device-port --prune >/dev/null
}

# --- assertions --------------------------------------------------------------------

step() { printf '\n== %s\n' "$*"; }

pass() {
    PASSED=$((PASSED + 1))
    printf 'ok   %s\n' "$*"
}

# Record a failed assertion and show what the parts logged, then carry on.
fail() {
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$*")
    printf 'FAIL %s\n' "$*"
    show_logs
}

# check NAME CMD...: pass if CMD succeeds, fail otherwise.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# check_not NAME CMD...: pass if CMD fails.
check_not() {
    local name=$1
    shift
    if "$@"; then fail "$name"; else pass "$name"; fi
}

show_logs() {
    {
        echo "---- sshd log (last 25 lines)"
        tail -n 25 "$SSHD_LOG" 2>/dev/null
        local f
        for f in "$LAB"/dev*/agent.log; do
            [ -f "$f" ] || continue
            echo "---- $f (last 15 lines)"
            tail -n 15 "$f"
        done
        for f in "$LAB"/dev*/run/tunnels/*.log; do
            [ -f "$f" ] || continue
            echo "---- $f (last 5 lines)"
            tail -n 5 "$f"
        done
        echo "----"
    } | sed 's/^/     | /'
}

# wait_until SECS CMD...: poll CMD every 0.3 s until it succeeds or SECS pass.
wait_until() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    while :; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.3
    done
}

# Copy the lab's logs out of the sandbox when PHONEHOME_E2E_LOGS names a host dir
# (bound to $LAB/keep by lab_mounts; systemd.sh's container root, $LAB/ct, is left out).
save_logs() {
    [ -n "${PHONEHOME_E2E_LOGS:-}" ] && mountpoint -q $LAB/keep 2>/dev/null || return 0
    (cd $LAB && find . \( -path ./ov -o -path ./keep -o -path ./ct \) -prune -o -name '*.log' -print0 |
        xargs -0 -r cp --parents -t $LAB/keep) 2>/dev/null
    cp /var/log/auth.log $LAB/keep/ 2>/dev/null
    return 0
}

# The closing line, and the exit status.
finish() {
    save_logs
    echo
    if [ "$FAILED" -gt 0 ]; then
        printf 'failed: %s\n' "${FAILED_NAMES[@]}"
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# Build the whole lab up to running sshd, admin key and device daemons.
lab_up() {
    local client=$1
    lab_mounts || { echo "e2e: private mounts failed" >&2; return 1; }
    lab_network || { echo "e2e: network namespaces failed" >&2; return 1; }
    ln -sf "$BIN_DIR/phonehome" $LAB/bin/phonehome
    export PATH="/usr/local/sbin:/usr/local/bin:$PATH"
    lab_server || { echo "e2e: server setup failed" >&2; show_logs; return 1; }
    lab_admin || return 1
    lab_device dev1 "$client" || { echo "e2e: dev1 setup failed" >&2; return 1; }
    lab_device dev2 "$client" || { echo "e2e: dev2 setup failed" >&2; return 1; }
}
