#!/usr/bin/env bash
# phonehome's one entry point: install the server side, bootstrap a generic Linux
# device, run the narrated demo, or run every test. Run as root on Debian/Ubuntu;
# it installs what it needs from apt and builds with cargo.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO_DIR"
export CARGO_TERM_COLOR=never
# Builds go to the repo's own target/ whatever the caller's environment says, so that
# install-server.sh and the tests find the binaries where this script put them.
export CARGO_TARGET_DIR="$REPO_DIR/target"
# The router CPUs and how the agent is built for them (cross_host_arch, build_device_agent).
# shellcheck source=cross/lib.sh
. "$REPO_DIR/cross/lib.sh"
export PHONEHOME_BIN_DIR="$CARGO_TARGET_DIR/release"

usage() {
    cat <<'EOF'
usage: ./install.sh COMMAND [OPTIONS]

  server [--host NAME] [--port N] [--root DIR]
                             build, then install the server tools, the gate, the device
                             group, state dirs and the sshd drop-in; NAME and N are what
                             devices connect to (server-scripts/install-server.sh --help)
  device --server HOST [--root DIR] [--client auto|dbclient|ssh]
         [--interface IF] [--device-id ID]
                             bootstrap a generic Linux device: install the agent (router
                             build), generate its key, add the cron line, print the
                             add-device command
  demo                       install what is needed, then watch a NATed router call home
                             and an admin log into it through its tunnel (leaves nothing behind)
  cross [ARCH...]            build the agent for router CPUs (router profile, static musl) into
                             target/cross/<triple>/phonehome: x86_64 aarch64 armv7 mipsel mips
                             (default: all); installs the rustup targets, rust-src, cargo-zigbuild
                             and qemu-user-static it needs, and runs each under qemu
  test                       install what is needed and run every test: unit, integration,
                             shellcheck, end to end (both ssh clients; the README's own
                             server and device sections with real cron), the cross builds
                             under qemu and every dropbear release (compatibility matrix),
                             package, bench smoke
EOF
}

say() { printf '%s\n' "$*"; }
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

# need_value WHAT OPTION [VALUE...]: OPTION must be followed by a value (not by
# another option); else say what it needs.
need_value() {
    local what=$1
    shift
    if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#-}" != "$2" ]; then
        die "$1 needs a value: $what"
    fi
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (it installs packages and creates namespaces): run it with sudo"
}

# --- dependencies ------------------------------------------------------------------

# command -> Debian package that provides it
declare -A PKG_OF=(
    [sshd]=openssh-server [ssh]=openssh-client [ssh-keygen]=openssh-client
    [dropbear]=dropbear-bin [dbclient]=dropbear-bin [dropbearkey]=dropbear-bin
    [dropbearconvert]=dropbear-bin [busybox]=busybox-static [iptables]=iptables
    [ip]=iproute2 [ss]=iproute2 [unshare]=util-linux [nsenter]=util-linux
    [useradd]=passwd [timeout]=coreutils [jq]=jq [conntrack]=conntrack [cc]=gcc
    [shellcheck]=shellcheck [pgrep]=procps [ps]=procps [gzip]=gzip [tar]=tar
    [python3]=python3 [strip]=binutils [taskset]=util-linux [awk]=mawk [/usr/bin/time]=time
    [openssl]=openssl [script]=bsdutils [cron]=cron
    [readelf]=binutils [flock]=util-linux [qemu-aarch64-static]=qemu-user-static
    [qemu-arm-static]=qemu-user-static [qemu-mipsel-static]=qemu-user-static
    [qemu-mips-static]=qemu-user-static [systemd-nspawn]=systemd-container
    [debootstrap]=debootstrap
)

# Commands the lab (demo and tests) runs.
LAB_COMMANDS=(sshd ssh ssh-keygen dropbear dbclient dropbearkey dropbearconvert busybox
    iptables ip ss unshare nsenter useradd timeout jq conntrack cc pgrep python3)
# And what `test` adds: shellcheck, and what openwrt-package/test.sh and bench/run use
# (openwrt-package/test.sh builds OpenWrt's opkg, uci and apk with ../shared/openwrt-tools;
# its compilers and libraries are BUILD_PACKAGES below), Debian's cron for
# tests/e2e/newcomer.sh (it runs only inside that test's nodes), script for
# tests/e2e/demo-interrupt.sh, systemd-nspawn and debootstrap for tests/e2e/systemd.sh (a
# booted bookworm container; systemd runs only inside it).
TEST_COMMANDS=(shellcheck python3 strip taskset awk ps gzip tar /usr/bin/time openssl script cron
    systemd-nspawn debootstrap)
# What the cross builds and their runs under emulation need from apt (the Rust pieces are
# cross/build.sh's business).
CROSS_COMMANDS=(readelf flock qemu-aarch64-static qemu-arm-static qemu-mipsel-static qemu-mips-static)

# Install the Debian packages providing any missing command (a name on PATH or in
# /usr/sbin, or an absolute path). Never asks anything.
ensure_commands() {
    local c missing=()
    for c in "$@"; do
        case $c in
        /*) [ -x "$c" ] && continue ;;
        *) { command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ]; } && continue ;;
        esac
        missing+=("${PKG_OF[$c]}")
    done
    apt_install "${missing[@]}"
}

# The Debian packages of the build scripts `test` runs that install what they lack
# themselves (../shared/openwrt-tools/build.sh, ../shared/dropbear-versions/build.sh,
# cross/openssh.sh's BUILD_DEPS; server-scripts/build-sshd.sh's are its own --build-deps):
# installed before the host snapshot, or the tests would change the host they must leave
# as it was.
BUILD_PACKAGES=(cmake make gcc pkg-config libjson-c-dev libzstd-dev meson ninja-build
    libssl-dev zlib1g-dev autoconf curl)

# ensure_packages PKG...: install those of the Debian packages that are not installed.
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    apt_install "${missing[@]}"
}

# apt_install PKG...: install these Debian packages (none: nothing to do).
apt_install() {
    local missing=("$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ${missing[*]} and no apt-get here: install them by hand"
    say "== installing with apt-get: ${missing[*]}"
    # Packaged daemons (sshd, dropbear) must not start on the host: the lab runs its own.
    local policy=/usr/sbin/policy-rc.d made_policy=''
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || rc=$?
    if [ "$rc" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" </dev/null || rc=$?
    fi
    [ -n "$made_policy" ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc); see its output above"
}

# device_static_path: where that build lands (empty without such an arch).
device_static_path() {
    local arch
    arch=$(cross_host_arch)
    [ -n "$arch" ] && cross_bin "$CARGO_TARGET_DIR" "$arch" phonehome
    return 0
}

# build_device_agent: builds the agent for this machine, prints its path (what it says
# goes to stderr). The build routers run (router profile, static musl, cross/lib.sh's
# stable way) where rustup has, or can add, this CPU's musl std: its start costs a poll
# about 0.7 ms of CPU less than the host's dynamic glibc build (agent/README, "Cost of
# one poll"). Else the host's build.
# find_rustup: the rustup on PATH, or beside the cargo find_cargo found when it is not
# on PATH (sudo, a fresh login); nothing without one.
find_rustup() {
    command -v rustup && return 0
    [ ! -x "$(dirname "$CARGO")/rustup" ] || echo "$(dirname "$CARGO")/rustup"
}

build_device_agent() {
    local arch triple rustup
    arch=$(cross_host_arch)
    rustup=$(find_rustup)
    if [ -n "$arch" ] && [ -n "$rustup" ]; then
        triple=$(cross_triple "$arch")
        if RUSTUP=$rustup cross_rustup_target "$triple"; then
            say "== cargo build --profile router --target $triple -p phonehome (static, as routers run it)" >&2
            if (cd "$REPO_DIR" && PATH="$(dirname "$CARGO"):$PATH" \
                cross_cargo "$arch" stable "$CARGO_TARGET_DIR" --locked -p phonehome) </dev/null >&2; then
                device_static_path
                return 0
            fi
            say "the static build failed (above): building the host's own (glibc, dynamic) instead" >&2
        else
            say "so: building the host's own (glibc, dynamic) instead" >&2
        fi
    fi
    say "== cargo build --profile router -p phonehome" >&2
    "$CARGO" build --profile router --locked -p phonehome </dev/null >&2 || return 1
    echo "$CARGO_TARGET_DIR/router/phonehome"
}

CARGO=
# The oldest Rust the workspace builds with (Cargo.toml's rust-version, which Cargo.lock
# is resolved for): the OpenWrt packages feed's lang/rust.
MSRV=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$REPO_DIR/Cargo.toml")
find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        CARGO=cargo
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        CARGO="${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
    else
        die "cargo not found. Install Rust (>= $MSRV) with rustup: https://rustup.rs (Debian 12's own 'apt-get install cargo' is 1.63, too old), then run this again"
    fi
}

# rustfmt and clippy, which the test stages run (a minimal rustup profile lacks them).
ensure_rust_components() {
    local c missing=()
    for c in fmt clippy; do
        "$CARGO" "$c" --version >/dev/null 2>&1 || missing+=("$([ "$c" = fmt ] && echo rustfmt || echo clippy)")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v rustup >/dev/null 2>&1 || die "cargo ${missing[*]} missing and no rustup to add them: install them with your Rust"
    say "== rustup component add ${missing[*]}"
    rustup component add "${missing[@]}" </dev/null || die "rustup component add ${missing[*]} failed"
}

# The musl std and crates that `device` builds the agent with (build_device_agent), added
# before the tests: the newcomer test runs `install.sh device` in a node without internet.
ensure_device_target() {
    local arch triple rustup
    arch=$(cross_host_arch)
    rustup=$(find_rustup)
    [ -n "$arch" ] && [ -n "$rustup" ] || return 0
    triple=$(cross_triple "$arch")
    RUSTUP=$rustup cross_rustup_target "$triple" || die "rustup target add $triple failed"
    # And every crate of Cargo.lock, for every target: the host's builds download only
    # what the host's build needs, and the musl build's own (dlmalloc) would otherwise be
    # fetched first inside that offline node, and fail there.
    say "== cargo fetch --locked (the crates of every target, for the offline builds)"
    "$CARGO" fetch --locked --manifest-path "$REPO_DIR/Cargo.toml" </dev/null || die "cargo fetch --locked failed (its output above)"
}

# The MSRV toolchain for the stage that proves Cargo.lock still builds with it. Without
# rustup there is no second toolchain to ask for; the stage says so and is skipped.
ensure_msrv_toolchain() {
    command -v rustup >/dev/null 2>&1 || return 0
    rustup run "$MSRV" rustc --version >/dev/null 2>&1 && return 0
    say "== rustup toolchain install $MSRV --profile minimal"
    rustup toolchain install "$MSRV" --profile minimal </dev/null || die "rustup toolchain install $MSRV failed"
}

# cargo check with the MSRV toolchain, in a target dir of its own (it shares no
# artifacts with the current toolchain's).
msrv_check() {
    CARGO_TARGET_DIR="$REPO_DIR/target/msrv" rustup run "$MSRV" cargo check --workspace --all-targets --locked
}

# Release build of the whole workspace into target/release (a no-op when up to date).
build_release() {
    find_cargo
    say "== cargo build --release --workspace"
    "$CARGO" build --release --workspace --locked </dev/null
}

# --- server ------------------------------------------------------------------------

cmd_server() {
    local installer=server-scripts/install-server.sh a
    [ -x "$installer" ] || die "$installer is missing from this checkout"
    for a in "$@"; do
        case $a in
        -h | --help)
            say "./install.sh server [--host NAME] [--port N] [--device-sshd PORT [--device-sshd-without-openssl]]"
            say "        [--root DIR] [--no-reload]: builds the server tools (cargo build --release), then runs"
            say "$installer with them. --device-sshd-without-openssl builds Debian's OpenSSH source of the"
            say "installed openssh-server without OpenSSL (server-scripts/build-sshd.sh) for the devices' own"
            say "sshd (--device-sshd-build below); run it again after every openssh-server update."
            say ""
            exec "$installer" --help
            ;;
        esac
    done
    # --device-sshd-without-openssl is this script's: it builds the sshd that
    # --device-sshd-build installs (server-scripts/build-sshd.sh).
    local args=() own_sshd='' port=''
    for a in "$@"; do
        case $a in
        --device-sshd-without-openssl) own_sshd=$CARGO_TARGET_DIR/device-sshd; continue ;;
        --device-sshd | --device-sshd=*) port=yes ;;
        esac
        args+=("$a")
    done
    [ -z "$own_sshd" ] || [ -n "$port" ] ||
        die "server: --device-sshd-without-openssl needs --device-sshd PORT: it is the sshd of that port"
    # Bad arguments fail before the build, not after it.
    "$installer" --check-args "${args[@]}" ${own_sshd:+--device-sshd-build "$own_sshd"} || exit 2
    build_release
    if [ -n "$own_sshd" ]; then
        local deps
        read -r -a deps <<<"$(server-scripts/build-sshd.sh --build-deps)"
        ensure_packages "${deps[@]}"
        server-scripts/build-sshd.sh "$own_sshd" >/dev/null ||
            die "server: the devices' sshd without OpenSSL did not build (above); leave out --device-sshd-without-openssl to run the system's sshd for them"
        args+=(--device-sshd-build "$own_sshd")
    fi
    exec "$installer" --bin-dir "$PHONEHOME_BIN_DIR" "${args[@]}"
}

# --- device ------------------------------------------------------------------------

cmd_device() {
    local server='' root=/ client=auto iface='' devid=''
    while [ $# -gt 0 ]; do
        case $1 in
        --server) need_value "the name or address of your phonehome server" "$@"; server=$2; shift 2 ;;
        --root) need_value "a directory" "$@"; root=$2; shift 2 ;;
        --client) need_value "auto, dbclient or ssh" "$@"; client=$2; shift 2 ;;
        --interface) need_value "an interface name (its MAC is the device id)" "$@"; iface=$2; shift 2 ;;
        --device-id) need_value "a device id (12 hex digits)" "$@"; devid=$2; shift 2 ;;
        *) die "device: unknown option '$1' (see ./install.sh --help)" ;;
        esac
    done
    [ -n "$server" ] || die "device: --server HOST is required (the public address of your phonehome server)"
    case $client in auto | dbclient | ssh) ;; *) die "device: --client must be auto, dbclient or ssh, not '$client'" ;; esac
    if [ "$client" = auto ]; then
        if command -v dbclient >/dev/null 2>&1; then client=dbclient; else client=ssh; fi
    fi
    command -v "$client" >/dev/null 2>&1 ||
        die "device: the ssh client '$client' is not installed (Debian: apt-get install $([ "$client" = ssh ] && echo openssh-client || echo dropbear-bin))"

    # The router build; without cargo, one already built here.
    local agent=$CARGO_TARGET_DIR/router/phonehome static
    static=$(device_static_path)
    [ -n "$static" ] && [ -x "$static" ] && agent=$static
    if [ -x "$agent" ] && ! command -v cargo >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        say "no cargo here: installing the router build already in $agent"
    else
        find_cargo
        agent=$(build_device_agent) || die "device: the agent did not build (cargo's output above)"
    fi
    root=${root%/}
    local etc=$root/etc/phonehome key
    install -d -m 0755 "$root/usr/local/bin"
    install -d -m 0700 "$etc"
    install -m 0755 "$agent" "$root/usr/local/bin/phonehome"
    say "installed $root/usr/local/bin/phonehome"

    # The key the agent pairs with this client (agent/src/identity.rs: id_dropbear for
    # dbclient, id_ed25519 for ssh), so that the setup line add-device prints needs no
    # --key or --client.
    local pub other
    if [ "$client" = dbclient ]; then
        other=$etc/id_ed25519
        key=$etc/id_dropbear
        if [ ! -f "$key" ]; then
            dropbearkey -t ed25519 -f "$key" >/dev/null 2>&1 ||
                dropbearkey -t rsa -s 2048 -f "$key" >/dev/null ||
                die "device: dropbearkey could not generate $key"
        fi
        pub=$(dropbearkey -y -f "$key" | grep -m1 '^ssh-\|^ecdsa-' | cut -d' ' -f1,2)
    else
        other=$etc/id_dropbear
        key=$etc/id_ed25519
        [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C phonehome -f "$key" ||
            die "device: ssh-keygen could not generate $key"
        pub=$(cut -d' ' -f1,2 "$key.pub")
    fi
    chmod 0600 "$key"
    say "device key: $key"

    local idargs=()
    [ -n "$iface" ] && idargs+=(--interface "$iface")
    [ -n "$devid" ] && idargs+=(--device-id "$devid")
    local id
    id=$("$root/usr/local/bin/phonehome" "${idargs[@]}" id) ||
        die "device: 'phonehome id' could not tell this device's id (give --interface IF or --device-id ID)"

    # The key path the device will use: as seen from the device's own root.
    local devkey=${key#"$root"}
    local cronline="* * * * * root /usr/local/bin/phonehome poll"
    if [ "$root" = "" ]; then
        printf '%s\n' "# phonehome: call home every minute" "$cronline" >/etc/cron.d/phonehome
        chmod 0644 /etc/cron.d/phonehome
        say "cron: /etc/cron.d/phonehome"
        command -v cron >/dev/null 2>&1 || say "note: no cron daemon found; install one (apt-get install cron)"
    else
        say "cron: not written outside / ; in the target system add to /etc/cron.d/phonehome:"
        say "  $cronline"
    fi

    local extra=''
    [ -n "$iface" ] && extra+=" --interface $iface"
    [ -n "$devid" ] && extra+=" --device-id $devid"
    local run_it="Run it here, as root, as it is"
    [ -n "$extra" ] && run_it="Run it here, as root, adding:$extra"
    cat <<EOF

Device id: $id
Next steps:
 1. On the server ($server), as root:
      add-device $id '$pub'
 2. add-device prints a 'phonehome setup ...' line. $run_it
    (it writes /etc/phonehome/phonehome.conf and pins the server's host keys; the
    agent logs in with $client and $devkey).
 3. Within a minute, 'list-devices' on the server shows this device.
EOF
    if [ -f "$other" ] && [ "$client" = ssh ]; then
        say "note: ${other#"$root"} (a dbclient key) is here too and the agent prefers it when dbclient is installed: remove it, or add '--client ssh' to the setup line"
    fi
}

# --- demo --------------------------------------------------------------------------

cmd_demo() {
    need_root demo
    exec </dev/null
    ensure_commands "${LAB_COMMANDS[@]}"
    build_release
    exec bash tests/e2e/demo.sh
}

# --- cross -------------------------------------------------------------------------

cmd_cross() {
    need_root cross
    exec </dev/null
    ensure_commands "${CROSS_COMMANDS[@]}"
    find_cargo
    exec bash cross/build.sh "$@"
}

# --- test --------------------------------------------------------------------------

RESULTS=()
ANY_FAILED=0
# Each stage's output is kept in target/stage-logs/ too; the end of a failed stage's
# is printed again after the summary, where a CI that shows only the end of the run
# still sees why it failed.
STAGE_LOGS=''
STAGE_TEE='' # the pid of the running stage's tee: not a test's leftover
FAILED_LOGS=()
STAGE_TAIL_LINES=30
STAGE_TEE_WAIT_TENTHS=100

# stage NAME CMD...: run one stage, time it, record the outcome.
stage() {
    local name=$1 start rc=0 log
    shift
    say ""
    say "######## $name"
    log=$STAGE_LOGS/$(printf '%02d' "${#RESULTS[@]}")-${name//[^A-Za-z0-9]/-}.log
    start=$SECONDS
    # in this shell (a stage may be a function), its output also to the log
    local out
    exec {out}> >(tee "$log")
    STAGE_TEE=$!
    "$@" >&"$out" 2>&1 || rc=$?
    exec {out}>&-
    # tee ends when nothing holds the stage's output any more. A process the stage left
    # running may still hold it: then it is not waited for (the run would hang), and
    # the leftovers check finds that process, and this tee.
    local i
    for ((i = 0; i < STAGE_TEE_WAIT_TENTHS; i++)); do
        kill -0 "$STAGE_TEE" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$STAGE_TEE" 2>/dev/null; then
        say "install.sh: a process this stage started still holds its output (tee, pid $STAGE_TEE)"
    else
        wait "$STAGE_TEE"
    fi
    local took=$((SECONDS - start))
    if [ "$rc" = 0 ]; then
        RESULTS+=("$(printf 'ok     %-40s %5ss' "$name" "$took")")
    else
        RESULTS+=("$(printf 'FAILED %-40s %5ss (exit %s)' "$name" "$took" "$rc")")
        FAILED_LOGS+=("$name" "$log")
        ANY_FAILED=1
    fi
}

# failed_stage_tails: the last lines of each failed stage's output.
failed_stage_tails() {
    local i
    for ((i = 0; i < ${#FAILED_LOGS[@]}; i += 2)); do
        say ""
        say "######## why \"${FAILED_LOGS[i]}\" failed: the last $STAGE_TAIL_LINES lines of ${FAILED_LOGS[i + 1]}"
        tail -n "$STAGE_TAIL_LINES" "${FAILED_LOGS[i + 1]}" | tr -d '\000'
    done
}

# Every shell file in the repo: *.sh, and files whose first line names sh or bash.
shell_files() {
    git ls-files -co --exclude-standard 2>/dev/null | while IFS= read -r f; do
        [ -f "$f" ] || continue
        case $f in
        target/* | target-*/*) continue ;;
        *.sh) printf '%s\n' "$f" ;;
        *)
            head -n1 "$f" 2>/dev/null | grep -qE '^#!.*(/|env )(ba)?sh( |$)' && printf '%s\n' "$f"
            ;;
        esac
    done
}

run_shellcheck() {
    local files
    mapfile -t files < <(shell_files)
    say "shellcheck on ${#files[@]} files: ${files[*]}"
    shellcheck -x "${files[@]}"
}

# --- the host must not change ----------------------------------------------------------

# Paths of the host a test could touch by mistake (issue 9, threat 33).
HOST_PATHS=(/etc /usr/local /var/lib /var/spool/cron /root/.ssh /home)

# host_snapshot DIR...: every name under the DIRs with its type and mode, the target
# of each link and the SHA-256 of each file, sorted; the repository itself left out.
host_snapshot() {
    local d dirs=()
    for d in "$@"; do [ -e "$d" ] && dirs+=("$d"); done
    [ "${#dirs[@]}" -gt 0 ] || return 0
    {
        find "${dirs[@]}" -xdev -path "$REPO_DIR" -prune -o ! -type f -printf '%y %m %p %l\n'
        find "${dirs[@]}" -xdev -path "$REPO_DIR" -prune -o -type f -printf '%m %p\n'
        find "${dirs[@]}" -xdev -path "$REPO_DIR" -prune -o -type f -print0 | xargs -0 -r sha256sum
    } 2>/dev/null | LC_ALL=C sort
}

# host_unchanged BEFORE: compare the host with the snapshot taken before the tests.
host_unchanged() {
    local after
    after=$(mktemp)
    host_snapshot "${HOST_PATHS[@]}" >"$after"
    if ! cmp -s "$1" "$after"; then
        say "the tests changed the host (${HOST_PATHS[*]}):"
        diff "$1" "$after" | head -n 40
        rm -f "$after"
        return 1
    fi
    rm -f "$after"
    say "host unchanged: $(wc -l <"$1") entries under ${HOST_PATHS[*]}"
}

# What the tests may leave running: their servers and clients. Any other program the
# tests start runs in a namespace they made, or is one of these.
TEST_PROGRAMS='sshd|sshd-session|sshd-auth|dropbear|dbclient|ssh|phonehome|phonehome-gate|unshare|nsenter|cron|qemu-.*'

# test_processes: "PID ARGS" of every process that is a test program or runs from the
# checkout's target/ or the tests' temp dir.
test_processes() {
    local pid comm args
    ps -eo pid=,comm=,args= | while read -r pid comm args; do
        [ "$pid" = "$STAGE_TEE" ] && continue
        if [[ $comm =~ ^($TEST_PROGRAMS)$ || $args == *"$REPO_DIR/target/"* ||
            (-n $TEST_TMP && $args == *"$TEST_TMP"*) ]]; then
            printf '%s %s\n' "$pid" "$args"
        fi
    done
}

# new_test_processes BEFORE: those of test_processes whose pid is not in the file BEFORE
# (which may be empty: hence FILENAME, not the NR == FNR idiom, which would then take the
# second file for the first)
new_test_processes() {
    awk 'FILENAME == ARGV[1] { seen[$1]; next } !($1 in seen)' "$1" <(test_processes)
}

# test_leftovers PROCS_BEFORE: nothing the tests started still runs, and the tests'
# temp dir ($TMPDIR while they ran) is empty (issue 9, threat 33).
test_leftovers() {
    local left rc=0
    left=$(new_test_processes "$1")
    if [ -n "$left" ]; then
        sleep 2 # a process of the last stage may still be on its way out
        left=$(new_test_processes "$1")
    fi
    if [ -n "$left" ]; then
        say "processes the tests left running:"
        printf '%s\n' "$left"
        rc=1
    fi
    if [ -n "$(ls -A "$TEST_TMP")" ]; then
        say "files the tests left in their temp dir $TEST_TMP:"
        (cd "$TEST_TMP" && find . -mindepth 1 -maxdepth 2 | sort | head -n 40)
        rc=1
    fi
    [ "$rc" = 0 ] && say "no test process left running; the tests' temp dir is empty"
    return "$rc"
}

# The leftovers check must see a leftover process, or it proves nothing.
leftovers_self_check() {
    local before d pid rc=1 i
    before=$(mktemp) d=$(mktemp -d)
    test_processes >"$before"
    cp /bin/sleep "$d/dbclient"
    "$d/dbclient" 30 &
    pid=$!
    # Against what ran before, and against nothing (a CI machine runs no test program).
    for i in $(seq 50); do
        new_test_processes "$before" | grep -q "^$pid " &&
            new_test_processes /dev/null | grep -q "^$pid " && { rc=0; break; }
        sleep 0.1
    done
    [ "$rc" = 0 ] || say "test_processes does not see a test program left running ($i tries)"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$d" "$before"
    return "$rc"
}

# The snapshot must see a change, or the check above proves nothing.
snapshot_self_check() {
    local t a b
    t=$(mktemp -d) a=$(mktemp) b=$(mktemp)
    printf 'x' >"$t/f"
    host_snapshot "$t" >"$a"
    printf 'y' >"$t/f"
    host_snapshot "$t" >"$b"
    local rc=0
    cmp -s "$a" "$b" && { say "host_snapshot does not see a changed file"; rc=1; }
    rm -rf "$t" "$a" "$b"
    return "$rc"
}

# The agent for every router CPU and every dropbear release, built side by side (the
# dropbear builds use the core the cargo builds leave idle during their long one-thread
# link steps). Both cache in target/.
build_matrix_parts() {
    local rc=0 db_log=$REPO_DIR/target/dropbear-build.log
    mkdir -p "$REPO_DIR/target"
    bash cross/dropbear.sh >"$REPO_DIR/target/dropbear-versions" 2>"$db_log" &
    local db=$!
    bash cross/build.sh || rc=1
    if wait "$db"; then
        say "dropbear releases built in target/dropbear: $(tr '\n' ' ' <"$REPO_DIR/target/dropbear-versions")"
    else
        say "the dropbear releases did not build:"
        tail -n 20 "$db_log"
        rc=1
    fi
    return "$rc"
}

# The agent's real-sshd tests with each dropbear release's dbclient.
dbclient_matrix_tests() {
    local v bad=0 n=0
    [ -s "$REPO_DIR/target/dropbear-versions" ] || { say "no dropbear release was built"; return 1; }
    "$CARGO" test --locked -p phonehome --test real_sshd --no-run >/dev/null 2>&1
    local log
    while read -r v; do
        n=$((n + 1))
        log=$REPO_DIR/target/dbclient-matrix-$v.log
        if PHONEHOME_TEST_DBCLIENT=$REPO_DIR/target/dropbear/$v/dbclient \
            "$CARGO" test --locked -p phonehome --test real_sshd >"$log" 2>&1; then
            say "ok     dbclient $v (PHONEHOME_TEST_DBCLIENT): $(grep -m1 '^test result' "$log")"
        else
            bad=$((bad + 1))
            say "FAILED dbclient $v (PHONEHOME_TEST_DBCLIENT): cargo test -p phonehome --test real_sshd"
            grep -E '^test .*FAILED' "$log"
            sed -n '/^---- /,/^failures:$/p' "$log" | head -n 80
            say "(whole output: $log)"
        fi
    done <"$REPO_DIR/target/dropbear-versions"
    say "dbclient releases: $((n - bad)) passed, $bad failed"
    [ "$bad" = 0 ]
}

# device_sshd_build_tests LOGS: the devices' own sshd on Debian's OpenSSH built without
# OpenSSL (install.sh server --device-sshd-without-openssl): the stolen-key matrix, then
# the scenarios with dbclient devices; the build is cached in target/device-sshd while
# openssh-server stays the same.
device_sshd_build_tests() {
    local build rc=0
    build=$(server-scripts/build-sshd.sh "$REPO_DIR/target/device-sshd") || return 1
    env PHONEHOME_E2E_LOGS="$1/stolen" PHONEHOME_E2E_DEVICE_SSHD=2222 PHONEHOME_E2E_DEVICE_SSHD_BUILD="$build" \
        bash tests/e2e/stolen-key.sh || rc=1
    env PHONEHOME_E2E_LOGS="$1/run" PHONEHOME_E2E_DEVICE_SSHD=2222 PHONEHOME_E2E_DEVICE_SSHD_BUILD="$build" \
        bash tests/e2e/run.sh --client dbclient || rc=1
    return "$rc"
}

cmd_test() {
    need_root test
    exec </dev/null
    local t0=$SECONDS
    ensure_commands "${LAB_COMMANDS[@]}" "${TEST_COMMANDS[@]}" "${CROSS_COMMANDS[@]}"
    local sshd_deps
    read -r -a sshd_deps <<<"$(server-scripts/build-sshd.sh --build-deps)"
    ensure_packages "${BUILD_PACKAGES[@]}" "${sshd_deps[@]}"
    find_cargo
    ensure_rust_components
    ensure_msrv_toolchain
    ensure_device_target
    # Everything installed above; from here on the host must stay as it is.
    local before
    before=$(mktemp)
    snapshot_self_check || die "the host snapshot is broken"
    host_snapshot "${HOST_PATHS[@]}" >"$before"
    # Every test's temp files go to one fresh dir: what is left there is a defect (the
    # last stage), and the dir is removed either way.
    local procs_before
    procs_before=$(mktemp)
    TEST_TMP=$(mktemp -d /tmp/phonehome-test.XXXXXX)
    chmod 1777 "$TEST_TMP" # as /tmp: the tests' device accounts pass through it too
    # shellcheck disable=SC2064 # the paths are fixed now
    trap "rm -rf '$TEST_TMP' '$procs_before' '$before'" EXIT
    leftovers_self_check || die "the leftovers check is broken"
    test_processes >"$procs_before"
    export TMPDIR=$TEST_TMP
    STAGE_LOGS=$REPO_DIR/target/stage-logs
    rm -rf "$STAGE_LOGS"
    mkdir -p "$STAGE_LOGS"
    stage "cargo fmt --check" "$CARGO" fmt --all -- --check
    stage "cargo clippy -D warnings" "$CARGO" clippy --workspace --all-targets --locked -- -D warnings
    stage "cargo build --release --workspace" "$CARGO" build --release --workspace --locked
    if command -v rustup >/dev/null 2>&1; then
        stage "cargo check with Rust $MSRV (rust-version)" msrv_check
    else
        RESULTS+=("skip   cargo check with Rust $MSRV (no rustup for a second toolchain)")
    fi
    # The agent as install.sh device installs it (tests/e2e/newcomer.sh).
    stage "cargo build --profile router -p phonehome" "$CARGO" build --profile router -p phonehome --locked
    stage "cargo test --workspace" "$CARGO" test --workspace --locked
    stage "shellcheck" run_shellcheck
    local logs=$REPO_DIR/target/e2e-logs
    rm -rf "$logs"
    stage "e2e scenarios (dbclient)" env PHONEHOME_E2E_LOGS="$logs/dbclient" bash tests/e2e/run.sh --client dbclient
    stage "e2e scenarios (OpenSSH ssh)" env PHONEHOME_E2E_LOGS="$logs/ssh" bash tests/e2e/run.sh --client ssh
    stage "e2e stolen device key" env PHONEHOME_E2E_LOGS="$logs/stolen" bash tests/e2e/stolen-key.sh
    stage "e2e stolen device key (the devices' own sshd)" env PHONEHOME_E2E_LOGS="$logs/stolen-lean" \
        PHONEHOME_E2E_DEVICE_SSHD=2222 bash tests/e2e/stolen-key.sh
    stage "e2e the devices' sshd without OpenSSL: stolen key, scenarios (dbclient)" device_sshd_build_tests "$logs/nossl"
    stage "e2e newcomer: README verbatim, real cron" env PHONEHOME_E2E_LOGS="$logs/newcomer" bash tests/e2e/newcomer.sh
    # after the build without OpenSSL (target/device-sshd), which it runs under systemd too
    stage "e2e the server under systemd and journald (nspawn)" env PHONEHOME_E2E_LOGS="$logs/systemd" bash tests/e2e/systemd.sh
    stage "e2e the server on Debian 13 (OpenSSH 10, its build without OpenSSL)" \
        env PHONEHOME_E2E_LOGS="$logs/systemd-trixie" bash tests/e2e/systemd.sh --suite trixie
    stage "e2e demo: Ctrl-C says interrupted" bash tests/e2e/demo-interrupt.sh
    stage "cross builds + dropbear releases" build_matrix_parts
    stage "dbclient releases: agent real-sshd tests" dbclient_matrix_tests
    stage "e2e compat matrix (arches x clients)" env PHONEHOME_E2E_LOGS="$logs/compat" \
        bash tests/e2e/compat.sh --table "$REPO_DIR/target/compat-table.md"
    stage "e2e watch-devices" env PHONEHOME_E2E_LOGS="$logs/watch" bash tests/e2e/watch.sh
    stage "e2e held polls (dbclient)" env CARGO="$CARGO" PHONEHOME_E2E_LOGS="$logs/hold-dbclient" bash tests/e2e/hold.sh --client dbclient
    stage "e2e held polls (OpenSSH ssh)" env CARGO="$CARGO" PHONEHOME_E2E_LOGS="$logs/hold-ssh" bash tests/e2e/hold.sh --client ssh
    if [ -f openwrt-package/test.sh ]; then
        stage "openwrt-package/test.sh" bash openwrt-package/test.sh
    else
        RESULTS+=("skip   openwrt-package/test.sh (not in this checkout)")
    fi
    if [ -f bench/run ]; then
        stage "bench/run --quick" bash bench/run --quick
    else
        RESULTS+=("skip   bench/run --quick (not in this checkout)")
    fi
    stage "the host is unchanged" host_unchanged "$before"
    stage "no test process or temp file is left" test_leftovers "$procs_before"
    say ""
    say "######## summary ($((SECONDS - t0))s in all)"
    printf '%s\n' "${RESULTS[@]}"
    local ok=0 bad=0 r
    for r in "${RESULTS[@]}"; do
        case $r in ok*) ok=$((ok + 1)) ;; FAILED*) bad=$((bad + 1)) ;; esac
    done
    [ "$ANY_FAILED" = 0 ] || say "logs of the end-to-end runs: $logs; of each stage: $STAGE_LOGS"
    say "stages: $ok passed, $bad failed"
    failed_stage_tails
    return "$ANY_FAILED"
}

# --- dispatch ----------------------------------------------------------------------

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
command=$1
shift
case $command in
server) cmd_server "$@" ;;
device) cmd_device "$@" ;;
demo) cmd_demo "$@" ;;
cross) cmd_cross "$@" ;;
test) cmd_test "$@" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    die "unknown command '$command'"
    ;;
esac
