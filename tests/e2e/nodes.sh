# shellcheck shell=bash
# Machines of their own inside the lab. A node is a mount and UTS namespace in one of
# the lab's network namespaces: its own /etc, /var, /usr/local, /tmp, /home and /root
# (overlays on the sandbox's), its own /run (a fresh tmpfs; the lab's files stay at
# /run/lab) and host name, and optionally a /usr/bin without some programs. Commands
# can then run there as written for a real machine, at the real paths (/etc/phonehome,
# /usr/local/bin, /etc/cron.d, /run/phonehome), with real daemons (sshd, cron), and a
# server node and two device nodes see none of each other's files. A `sleep infinity`
# holds each node open; node_run enters it. Everything goes with the sandbox.
#
# Sourced after lib.sh, inside the sandbox (lab_enter_sandbox, lab_mounts done).

NODE_DIRS=(/etc /var /usr/local /tmp /home /root)

# node_init NAME HOSTNAME HIDE...: runs inside the node's fresh namespaces (node_up).
node_init() {
    local name=$1 host=$2 d=$LAB/node/$1 dir key
    shift 2
    hostname "$host" || return 1
    for dir in "${NODE_DIRS[@]}"; do
        key=${dir//\//_}
        mkdir -p "$d/ov/$key.up" "$d/ov/$key.work"
        mount -t overlay "node-$name$key" \
            -o "lowerdir=$dir,upperdir=$d/ov/$key.up,workdir=$d/ov/$key.work" "$dir" || return 1
    done
    if [ $# -gt 0 ]; then
        mkdir -p "$d/ov/usr_bin.up" "$d/ov/usr_bin.work"
        mount -t overlay "node-$name-usr-bin" \
            -o "lowerdir=/usr/bin,upperdir=$d/ov/usr_bin.up,workdir=$d/ov/usr_bin.work" /usr/bin || return 1
        for key in "$@"; do rm -f "/usr/bin/$key" || return 1; done
    fi
    # /run: a tmpfs of the node's own, the lab's files bound at /run/lab inside it.
    mkdir -p "$d/run"
    mount -t tmpfs -o mode=0755 "node-$name-run" "$d/run" || return 1
    mkdir -p "$d/run/lab" "$d/run/sshd" "$d/run/lock"
    chmod 0755 "$d/run/sshd"
    mount --bind "$LAB" "$d/run/lab" || return 1
    mount --rbind "$d/run" /run || return 1
}

# node_up NAME NETNS HOSTNAME [HIDE...]: a node in network namespace NETNS; HIDE are
# programs of /usr/bin this machine does not have (a device with only OpenSSH has no
# dbclient). Its pid file is $LAB/node/NAME/pid.
node_up() {
    local name=$1 ns=$2 host=$3 d=$LAB/node/$1
    shift 3
    mkdir -p "$d"
    # The holder: its own mount and UTS namespaces, set up, then asleep. In a session of
    # its own (lab_daemon): a Ctrl-C is the script's to handle.
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner bash
    lab_daemon ip netns exec "$ns" unshare --mount --uts --propagation private \
        bash -c "$(declare -p LAB NODE_DIRS); $(declare -f node_init);"' node_init "$@" && touch "$0" && exec sleep infinity' \
        "$d/ready" "$name" "$host" "$@" >"$d/init.log" 2>&1
    echo $! >"$d/pid"
    wait_until 10 test -e "$d/ready" || {
        echo "node $name did not come up:" >&2
        cat "$d/init.log" >&2
        return 1
    }
}

# node_run NAME CMD...: run CMD on node NAME (its mounts, host name and network).
node_run() {
    local name=$1
    shift
    nsenter -t "$(cat "$LAB/node/$name/pid")" -m -u -n -- "$@"
}

# node_sh NAME SCRIPT: a root shell on node NAME runs the shell text SCRIPT.
node_sh() {
    node_run "$1" bash -c "$2"
}
