#!/usr/bin/env bash
# The server as a real Debian server runs it: systemd as PID 1 and journald as the only
# log (Debian 12 installs no rsyslog: there is no /var/log/auth.log). The other stages
# run sshd by hand in a sandbox without systemd, so what install-server.sh does where
# systemd runs, and list-devices' journald source, were never run for real:
#
# - install-server.sh reloads the admin's ssh.service, which stays up;
# - a device's login is a heartbeat that list-devices reads from journald
#   (`journalctl -o json`), including a login that never runs the gate;
# - --device-sshd PORT runs phonehome-sshd.service: enabled, active, restarted by a
#   second run, started again at boot; a device moved to PORT polls through it;
# - with the build without OpenSSL, the unit runs that build;
# - phonehome-watch.service, installed as its header says, runs and logs the events.
#
# The machine is a container booted by systemd-nspawn from a Debian made by debootstrap
# (cached in target/systemd-rootfs/, made outside the sandbox: it needs the Debian
# mirror), with a private network (loopback only) and its root an overlay whose upper
# layer is a tmpfs of the sandbox: a run changes nothing in the cache, and when the
# sandbox ends, the container, its mounts and its processes end with it.
#
# The release is the host's by default (bookworm here), with the build without OpenSSL
# in target/device-sshd (server-scripts/build-sshd.sh makes it outside the sandbox, or
# finds it made by an earlier stage, as install.sh test runs them). With
# --suite SUITE, a newer one (trixie: OpenSSH 10, whose sshd is split into sshd,
# sshd-session and sshd-auth, and logs a login as sshd-session): server-scripts/
# build-sshd.sh then builds that release's sshd without OpenSSL inside the root, with
# the mirror, when the root is made. The container runs the host's builds of the
# server tools and the agent, so SUITE is the host's release or a newer one.
#
# usage: tests/e2e/systemd.sh [--suite SUITE]   (root; systemd-nspawn and debootstrap)

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

HOST_SUITE=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
CT_SUITE=$HOST_SUITE
if [ $# -eq 2 ] && [ "$1" = --suite ] && [[ $2 =~ ^[a-z]+$ ]]; then
    CT_SUITE=$2
elif [ $# -ne 0 ]; then
    echo "usage: $0 [--suite SUITE]" >&2
    exit 2
fi

# Outside the sandbox: the container's root file system, made once.
CT_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,procps,iproute2
# Where the build without OpenSSL is, outside the container and in it.
if [ "$CT_SUITE" = "$HOST_SUITE" ]; then
    CT_BUILD_SSHD=
    BUILD_HOST=$REPO_DIR/target/device-sshd
    BUILD_CT=/phonehome/target/device-sshd
else
    CT_BUILD_SSHD=$(cat "$REPO_DIR/server-scripts/build-sshd.sh")
    CT_PACKAGES=$CT_PACKAGES,$("$REPO_DIR/server-scripts/build-sshd.sh" --build-deps | tr ' ' ,)
    BUILD_CT=/opt/phonehome-device-sshd
fi
CT_BASE=$REPO_DIR/target/systemd-rootfs/$CT_SUITE-$(printf '%s\n' "$CT_PACKAGES" "$CT_BUILD_SSHD" |
    sha256sum | cut -c1-12)
[ -n "$CT_BUILD_SSHD" ] && BUILD_HOST=$CT_BASE$BUILD_CT

ct_rootfs() {
    [ -x "$CT_BASE/usr/lib/systemd/systemd" ] && return 0
    local mirror log=$REPO_DIR/target/systemd-rootfs/$CT_SUITE.log
    # the host's own Debian mirror (its apt sources), else Debian's
    # shellcheck disable=SC2016 # apt's own $(REPO_URI) syntax
    mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
        grep -v -- -security | grep -m1 '/debian/$') || mirror=http://deb.debian.org/debian/
    echo "systemd: making the container's root ($CT_SUITE, $CT_PACKAGES) from $mirror"
    mkdir -p "$(dirname "$CT_BASE")"
    rm -rf "$CT_BASE.tmp"
    # A private mount namespace: debootstrap's /proc and /sys mounts go with it, and so
    # do the chroot's for the build (the checkout bound read-only at /mnt). The build
    # gets a clean environment: the host's (TMPDIR, say) names paths the root lacks.
    local ok=yes
    unshare --mount --propagation private debootstrap --variant=minbase \
        --include="$CT_PACKAGES" "$CT_SUITE" "$CT_BASE.tmp" "$mirror" >"$log" 2>&1 || ok=
    if [ -n "$ok" ] && [ -n "$CT_BUILD_SSHD" ]; then
        # shellcheck disable=SC2016 # the inner sh's own arguments
        unshare --mount --propagation private sh -c '
            mount -t proc proc "$1/proc" && mount --bind -o ro "$2" "$1/mnt" &&
            chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
                /mnt/server-scripts/build-sshd.sh "$3"' _ "$CT_BASE.tmp" "$REPO_DIR" "$BUILD_CT" \
            >>"$log" 2>&1 || ok=
    fi
    if [ -z "$ok" ]; then
        echo "systemd: making the root failed; last lines of $log:" >&2
        tail -n 15 "$log" >&2
        rm -rf "$CT_BASE.tmp"
        return 1
    fi
    mv "$CT_BASE.tmp" "$CT_BASE"
}

if [ -z "${PHONEHOME_SANDBOX:-}" ]; then
    for c in systemd-nspawn debootstrap; do
        command -v "$c" >/dev/null 2>&1 ||
            { echo "systemd: $c not found (install.sh test installs it)" >&2 && exit 2; }
    done
    ct_rootfs || exit 1
    if [ -z "$CT_BUILD_SSHD" ]; then
        "$REPO_DIR/server-scripts/build-sshd.sh" "$BUILD_HOST" >/dev/null ||
            { echo "systemd: server-scripts/build-sshd.sh $BUILD_HOST failed (its output above)" >&2 && exit 1; }
    fi
fi
lab_enter_sandbox "$0" "$@"

# --- the container ----------------------------------------------------------------

CT_ROOT=$LAB/ct/root
CT_LOG=$LAB/console.log
CT_NSPAWN=
CT_PID=
# The tools as the other e2e scripts take them (lib.sh: PHONEHOME_BIN_DIR, else
# target/release), bound read-only here.
BIN=/phonehome-bin

ct_mounts() {
    lab_run || return 1
    mkdir -p "$LAB/ct/upper" "$LAB/ct/work" "$CT_ROOT"
    mount -t overlay lab-ct -o "lowerdir=$CT_BASE,upperdir=$LAB/ct/upper,workdir=$LAB/ct/work" \
        "$CT_ROOT"
}

# Boot the container; wait until systemd says the boot is over.
ct_boot() {
    lab_daemon systemd-nspawn -q -D "$CT_ROOT" -b --private-network --register=no --keep-unit \
        -M phonehome-ct --bind-ro="$REPO_DIR:/phonehome" \
        --bind-ro="$BIN_DIR:$BIN" --console=read-only \
        </dev/null >>"$CT_LOG" 2>&1
    CT_NSPAWN=$!
    CT_PID=
    wait_until 30 ct_init || { echo "systemd: the container's systemd did not start" >&2 && return 1; }
    local state
    state=$(ct timeout 120 systemctl is-system-running --wait)
    [ "$state" = running ] || {
        echo "systemd: the container's boot ended '$state'; failed units:" >&2
        ct systemctl --failed --no-legend >&2
        return 1
    }
}
ct_init() {
    CT_PID=$(pgrep -P "$CT_NSPAWN" -x systemd) && [ -n "$CT_PID" ]
}

# ct CMD...: run CMD as root in the container (all of its namespaces, its root).
ct() {
    nsenter -t "$CT_PID" -m -u -i -n -p -C -r -w -- \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
}

# Reboot it: nspawn ends when the container reboots; start it again on the same root.
ct_reboot() {
    ct systemctl reboot
    wait_until 60 proc_gone "$CT_NSPAWN" || { echo "systemd: the container did not go down" >&2 && return 1; }
    ct_boot
}

# install_server LOG ARGS...: install-server.sh in the container, as install.sh server
# runs it (the built tools, the server's public name), its output in $LAB/LOG.
install_server() {
    local log=$1
    shift
    ct /phonehome/server-scripts/install-server.sh --bin-dir "$BIN" --host ph.example.org "$@" \
        >"$LAB/$log" 2>&1
}

# active UNIT: systemd says the unit runs.
active() { ct systemctl is-active --quiet "$1"; }
enabled() { ct systemctl is-enabled --quiet "$1"; }
unit_exe() { ct sh -c "readlink /proc/\$(systemctl show -p MainPID --value $1)/exe"; }
listens() { ct ss -Hltn "sport = :$1" | grep -q LISTEN; }

# --- the device, inside the container too --------------------------------------------

DEV_ID=0242ac1100ee
DEV_CONF=/root/device/phonehome.conf

# device_setup FILE: the setup line add-device printed into FILE, run as printed, with
# the device's own paths added (ph.example.org is the container itself, /etc/hosts).
device_setup() {
    local line
    line=$(grep -m1 -o 'phonehome setup .*' "$1") || return 1
    local -a words
    eval "words=($line)"
    ct "$BIN/phonehome" "${words[@]:1}" --config "$DEV_CONF" --run-dir /root/device/run \
        --key /root/device/id_ed25519 --client ssh --device-id "$DEV_ID" \
        --known-hosts /root/device/known_hosts --log stderr --hold no --timeout 15
}
device_poll() { ct "$BIN/phonehome" --config "$DEV_CONF" poll >>"$LAB/agent.log" 2>&1; }

# field F: the device's field F in list-devices --json.
field() {
    ct list-devices --json 2>/dev/null |
        jq -r --arg id "$DEV_ID" --arg f "$1" '.devices[] | select(.id == $id) | .[$f]'
}
field_is() { [ "$(field "$1")" = "$2" ]; }
# seen_since T: list-devices' last heartbeat of the device is at T (seconds) or later.
seen_since() { [ "$(field last_seen_unix)" -ge "$1" ] 2>/dev/null; }

on_failure_show() {
    echo "---- console (last 15 lines)"
    tail -n 15 "$CT_LOG" 2>/dev/null
    echo "---- the container's journal, sshd (last 15 lines)"
    ct journalctl -q --no-pager -n 15 _COMM=sshd 2>/dev/null
    echo "---- agent log (last 10 lines)"
    tail -n 10 "$LAB/agent.log" 2>/dev/null
}
show_logs() { on_failure_show | sed 's/^/     | /'; }

step "boot $CT_SUITE with systemd as PID 1 (systemd-nspawn, loopback only)"
ct_mounts || { echo "systemd: the mounts failed" >&2 && exit 1; }
if ! ct_boot; then
    on_failure_show
    exit 1
fi
pass "the container booted: systemd says 'running'"
check "the admin's ssh.service is active" active ssh.service
check "journald is the only log (no rsyslog, no /var/log/auth.log)" \
    test ! -e "$CT_ROOT/var/log/auth.log" -a ! -e "$CT_ROOT/usr/sbin/rsyslogd"

step "install-server.sh, as install.sh server runs it"
install_server install.out
check "install-server.sh succeeded" grep -q 'phonehome server installed' "$LAB/install.out"
# The server's public name, here; watch-devices runs every poll_interval: 3 s, not 60.
ct sh -c 'echo "127.0.0.1 ph.example.org" >>/etc/hosts'
ct sed -i 's/^poll_interval *=.*/poll_interval = 3/' /etc/phonehome/server.conf
check "poll_interval = 3" grep -qx 'poll_interval = 3' "$CT_ROOT/etc/phonehome/server.conf"
check "it reloaded the admin's sshd" grep -Eq 'reloaded (sshd \(pid|ssh.service)' "$LAB/install.out"
check "ssh.service is still active" active ssh.service

step "a device polls; list-devices reads its heartbeats from journald"
ct install -d -m 0700 /root/device
ct ssh-keygen -q -t ed25519 -N '' -C dev -f /root/device/id_ed25519
ct add-device "$DEV_ID" "$(cut -d' ' -f1,2 "$CT_ROOT/root/device/id_ed25519.pub")" --name ct-dev \
    >"$LAB/add.out" 2>&1
check "add-device enrolled the device" grep -q "added device $DEV_ID" "$LAB/add.out"
ct sshd -T -C "user=device$DEV_ID,host=x,addr=127.0.0.1" >"$LAB/sshd-T.out" 2>&1
check "sshd runs the device's logins with the drop-in's gate" \
    grep -qi '^forcecommand .*phonehome-gate' "$LAB/sshd-T.out"
check "the device's setup line ran" device_setup "$LAB/add.out"
check "the device polled the admin's sshd (port 22)" device_poll
check "list-devices read journald" eval "ct list-devices --json | jq -e '.sources | index(\"journald\")'"
check "list-devices shows the device online" field_is state online
# A login that never runs the gate: only the log can tell.
ct rm -rf /var/lib/phonehome/status/"$DEV_ID"/status.json
ct timeout 5 ssh -N -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -i /root/device/id_ed25519 "device$DEV_ID@127.0.0.1" >/dev/null 2>&1
if wait_until 10 field_is seen_by "sshd log"; then
    pass "a login without the gate: online, seen by the sshd log (journald)"
else
    fail "a login without the gate: seen by '$(field seen_by)', state '$(field state)'"
fi

step "--device-sshd 2222: phonehome-sshd.service"
install_server install-lean.out --device-sshd 2222
check "install-server.sh --device-sshd succeeded" grep -q 'phonehome server installed' "$LAB/install-lean.out"
check "it started phonehome-sshd.service" grep -q 'started phonehome-sshd.service (port 2222)' "$LAB/install-lean.out"
check "phonehome-sshd.service is enabled" enabled phonehome-sshd.service
check "phonehome-sshd.service is active" active phonehome-sshd.service
check "port 2222 listens" wait_until 10 listens 2222
check "the admin's ssh.service is still active" active ssh.service
main_pid=$(ct systemctl show -p MainPID --value phonehome-sshd.service)
ct add-device --print-setup "$DEV_ID" >"$LAB/setup-2222.out" 2>&1
check "add-device --print-setup gives port 2222" grep -q -- '--port 2222' "$LAB/setup-2222.out"
check "the device moved to port 2222" device_setup "$LAB/setup-2222.out"
t=$(date +%s)
check "the device polled through phonehome-sshd" device_poll
check "list-devices has that poll" seen_since "$t"
check "journald has the device's login on port 2222" eval \
    "ct journalctl -q --no-pager -u phonehome-sshd.service | grep -q 'Accepted publickey for device$DEV_ID'"
install_server install-lean2.out --device-sshd 2222
check "a second run succeeded" grep -q 'phonehome server installed' "$LAB/install-lean2.out"
check "a second run restarted phonehome-sshd.service" eval \
    "[ \"\$(ct systemctl show -p MainPID --value phonehome-sshd.service)\" != '$main_pid' ] && active phonehome-sshd.service"

step "phonehome-watch.service, installed as its header says"
ct install -m 0644 /phonehome/server-scripts/phonehome-watch.service /etc/systemd/system/
ct sh -c "[ ! -e /etc/cron.d/phonehome ] || sed -i '/watch-devices/d' /etc/cron.d/phonehome"
ct systemctl daemon-reload
ct systemctl enable --now phonehome-watch >/dev/null 2>&1
check "phonehome-watch.service is enabled" enabled phonehome-watch.service
check "phonehome-watch.service is active" wait_until 5 active phonehome-watch.service
check "its first run recorded the fleet" wait_until 20 eval \
    "ct journalctl -q --no-pager -u phonehome-watch.service | grep -q 'first run: the state of 1 device'"
ct ssh-keygen -q -t ed25519 -N '' -C dev2 -f /root/device/id2
ct add-device 0242ac1100ef "$(cut -d' ' -f1,2 "$CT_ROOT/root/device/id2.pub")" >/dev/null 2>&1
check "its journal has the event of a device added after it started" wait_until 20 eval \
    "ct journalctl -q --no-pager -u phonehome-watch.service | grep -q 'device.added.*0242ac1100ef'"
check "its journal has no error" eval \
    "! ct journalctl -q --no-pager -u phonehome-watch.service | grep -Eqi 'error|denied|read-only'"

step "after a reboot"
if ct_reboot; then
    pass "the container rebooted"
else
    fail "the container did not come back"
    finish
    exit 1
fi
check "phonehome-sshd.service started at boot" active phonehome-sshd.service
check "port 2222 listens" wait_until 10 listens 2222
check "phonehome-watch.service started at boot" active phonehome-watch.service
check "the device polls through phonehome-sshd" device_poll

step "the devices' sshd without OpenSSL ($BUILD_HOST)"
if [ -x "$BUILD_HOST/sbin/sshd" ]; then
    install_server install-nossl.out --device-sshd 2222 --device-sshd-build "$BUILD_CT"
    check "install-server.sh --device-sshd-build succeeded" grep -q 'phonehome server installed' "$LAB/install-nossl.out"
    check "installed $(grep -o 'OpenSSH_[^ ]*, without OpenSSL' "$LAB/install-nossl.out" | head -n 1)" \
        grep -q 'without OpenSSL' "$LAB/install-nossl.out"
    if [ -x "$BUILD_HOST/libexec/sshd-session" ]; then
        check "with its sshd-session and sshd-auth (OpenSSH >= 9.8), where sshd looks for them" \
            test -x "$CT_ROOT/usr/local/lib/phonehome/openssh/libexec/sshd-session" \
            -a -x "$CT_ROOT/usr/local/lib/phonehome/openssh/libexec/sshd-auth"
    fi
    check "phonehome-sshd.service runs the build" eval \
        "[ \"\$(unit_exe phonehome-sshd.service)\" = /usr/local/lib/phonehome/openssh/sbin/sshd ]"
    t=$(date +%s)
    check "the device polls through it" device_poll
    check "list-devices has that poll" seen_since "$t"
    check "the build still runs after a reboot" eval "ct_reboot && active phonehome-sshd.service && device_poll"
else
    fail "no build without OpenSSL in $BUILD_HOST"
fi

step "--device-sshd on a port another program has: refused, or a clear error after"
ct /usr/sbin/sshd -p 2224 -o PidFile=/run/other-sshd.pid
check "another program listens on 2224" wait_until 10 listens 2224
before=$(ct md5sum /etc/phonehome/sshd_config /etc/phonehome/server.conf)
install_server install-taken.log --device-sshd 2224
check "refused (exit 1), naming the program and its pid, nothing changed" eval \
    "[ $? = 1 ] && grep -q 'sshd (pid [0-9]*) listens on port 2224; .*nothing changed' '$LAB/install-taken.log' &&
     [ \"\$(ct md5sum /etc/phonehome/sshd_config /etc/phonehome/server.conf)\" = '$before' ]"
check "the devices' sshd still runs on 2222" eval "active phonehome-sshd.service && listens 2222"
ct pkill -F /run/other-sshd.pid
check "the port is free again" wait_until 10 eval '! listens 2224'
# Taken between that check and the start: systemctl is wrapped to take it first. The
# unit is Type=simple, so systemctl's success alone does not mean sshd listens.
ct install -d /root/wrap
# shellcheck disable=SC2016 # the wrapper's own "$1" and "$@"
printf '#!/bin/sh\n[ "$1" != restart ] || /usr/sbin/sshd -p 2224 -o PidFile=/run/other-sshd.pid\nexec /usr/bin/systemctl "$@"\n' \
    >"$CT_ROOT/root/wrap/systemctl"
chmod 0755 "$CT_ROOT/root/wrap/systemctl"
ct env PATH=/root/wrap:/usr/sbin:/usr/bin:/sbin:/bin /phonehome/server-scripts/install-server.sh \
    --bin-dir "$BIN" --host ph.example.org --device-sshd 2224 >"$LAB/install-race.log" 2>&1
check "taken at the start: exit 1, the devices' sshd did not start, and why" eval \
    "[ $? = 1 ] && grep -q \"the devices' sshd did not start\" '$LAB/install-race.log' &&
     grep -q 'Address already in use' '$LAB/install-race.log'"
check "the admin's sshd was reloaded all the same" grep -Eq 'reloaded (sshd \(pid|ssh.service)' "$LAB/install-race.log"
check "the admin's ssh.service is active" active ssh.service
ct pkill -F /run/other-sshd.pid
check "the port is free again" wait_until 10 eval '! listens 2224'
install_server install-freed.log --device-sshd 2224
check "then it succeeds" grep -q 'phonehome server installed' "$LAB/install-freed.log"
check "and phonehome-sshd.service listens on 2224" eval "listens 2224 && active phonehome-sshd.service"

ct journalctl -q --no-pager >"$LAB/journal.log" 2>&1
finish
